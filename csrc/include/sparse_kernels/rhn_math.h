// Pointwise math of one recurrent-highway micro-layer (Zilly et al. 2017,
// coupled carry gate), shared by the CPU kernels and (later) CUDA kernels.
//
// The 2*H pre-activations of one row are [a | g]: a feeds the nonlinear
// transform h = tanh(a), g the transform gate t = sigmoid(g); the carry gate
// is coupled (c = 1 - t), so the new state is s = h * t + s_prev * (1 - t).
#pragma once

#include <cmath>

#include "sparse_kernels/lstm_math.h"  // SK_HOST_DEVICE, sigmoid

namespace sparse_kernels {

template <typename T>
SK_HOST_DEVICE T rhn_unit_forward(T a, T g, T s_prev) {
  const T h = std::tanh(a), t = sigmoid(g);
  return h * t + s_prev * (T(1) - t);
}

// Backward of one unit; the activations are recomputed from the
// pre-activations (cheaper than saving them). ds: the gradient reaching s.
// Outputs the two pre-activation gradients and the gradient reaching s_prev
// through the carry path only (its use in the recurrent product R s_prev is
// the caller's).
template <typename T>
SK_HOST_DEVICE void rhn_unit_backward(T a, T g, T s_prev, T ds, T* da, T* dg, T* ds_prev) {
  const T h = std::tanh(a), t = sigmoid(g);
  *da = ds * t * (T(1) - h * h);
  *dg = ds * (h - s_prev) * t * (T(1) - t);
  *ds_prev = ds * (T(1) - t);
}

}  // namespace sparse_kernels
