// Pointwise LSTM cell math shared by the CPU kernels and the CUDA kernels.
//
// Gate layout follows nn.LSTM: the 4*H pre-activations of one row are
// [i | f | g | o], each a contiguous run of H values.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SK_HOST_DEVICE __host__ __device__ __forceinline__
#else
// always_inline: GCC inlines a function into one compiled for another
// -march (the AVX2 clones of cpu_simd.h) only when told to.
#define SK_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace sparse_kernels {

template <typename T>
SK_HOST_DEVICE T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// The activations through the math library (every backend's default; the
// CPU's float loops pass cpu_fast_math.h's vectorisable ones instead).
struct LibmActivations {
  template <typename T>
  SK_HOST_DEVICE static T sigmoid(T x) {
    return sparse_kernels::sigmoid(x);
  }
  template <typename T>
  SK_HOST_DEVICE static T tanh(T x) {
    return std::tanh(x);
  }
};

// Forward of one unit: pre-activations -> (h, c).
template <typename T, typename Act = LibmActivations>
SK_HOST_DEVICE void lstm_unit_forward(T gi, T gf, T gg, T go, T c_prev, T* h,
                                      T* c) {
  const T i = Act::sigmoid(gi), f = Act::sigmoid(gf), g = Act::tanh(gg), o = Act::sigmoid(go);
  const T c_new = f * c_prev + i * g;
  *c = c_new;
  *h = o * Act::tanh(c_new);
}

// Backward of one unit. The activations are recomputed from the
// pre-activations (cheaper than storing four more tensors per step).
// dh, dc: gradients reaching h and c; outputs the four pre-activation
// gradients and the gradient reaching c_prev.
template <typename T, typename Act = LibmActivations>
SK_HOST_DEVICE void lstm_unit_backward(T gi, T gf, T gg, T go, T c_prev, T c,
                                       T dh, T dc, T* dgi, T* dgf, T* dgg,
                                       T* dgo, T* dc_prev) {
  const T i = Act::sigmoid(gi), f = Act::sigmoid(gf), g = Act::tanh(gg), o = Act::sigmoid(go);
  const T tc = Act::tanh(c);
  const T dc_total = dc + dh * o * (T(1) - tc * tc);
  *dgo = dh * tc * o * (T(1) - o);
  *dgi = dc_total * g * i * (T(1) - i);
  *dgf = dc_total * c_prev * f * (T(1) - f);
  *dgg = dc_total * i * (T(1) - g * g);
  *dc_prev = dc_total * f;
}

}  // namespace sparse_kernels
