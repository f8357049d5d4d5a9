// Pointwise GRU and Elman-RNN cell math shared by the CPU and CUDA kernels.
//
// GRU follows nn.GRU: gates [r | z | n], input part ig = W_ih x + b_ih and
// hidden part hg = W_hh h + b_hh (kept apart because r multiplies hg_n):
//   r = sigmoid(ig_r + hg_r), z = sigmoid(ig_z + hg_z),
//   n = tanh(ig_n + r * hg_n), h' = (1 - z) * n + z * h.
#pragma once

#include "sparse_kernels/lstm_math.h"

namespace sparse_kernels {

template <typename T>
SK_HOST_DEVICE T gru_unit_forward(T ig_r, T ig_z, T ig_n, T hg_r, T hg_z, T hg_n, T h_prev) {
  const T r = sigmoid(ig_r + hg_r), z = sigmoid(ig_z + hg_z);
  const T n = std::tanh(ig_n + r * hg_n);
  return (T(1) - z) * n + z * h_prev;
}

// dh: gradient reaching h'. Outputs the gradients of the input part (d_ig_*),
// of the hidden part (d_hg_*) and the direct gradient reaching h_prev through
// z * h_prev (the part through W_hh comes from d_hg by the caller).
template <typename T>
SK_HOST_DEVICE void gru_unit_backward(T ig_r, T ig_z, T ig_n, T hg_r, T hg_z, T hg_n, T h_prev,
                                      T dh, T* d_ig_r, T* d_ig_z, T* d_ig_n, T* d_hg_r,
                                      T* d_hg_z, T* d_hg_n, T* dh_prev) {
  const T r = sigmoid(ig_r + hg_r), z = sigmoid(ig_z + hg_z);
  const T n = std::tanh(ig_n + r * hg_n);
  const T dn_pre = dh * (T(1) - z) * (T(1) - n * n);
  const T dz_pre = dh * (h_prev - n) * z * (T(1) - z);
  const T dr_pre = dn_pre * hg_n * r * (T(1) - r);
  *d_ig_r = dr_pre;
  *d_ig_z = dz_pre;
  *d_ig_n = dn_pre;
  *d_hg_r = dr_pre;
  *d_hg_z = dz_pre;
  *d_hg_n = dn_pre * r;
  *dh_prev = dh * z;
}

// Elman cell: h' = tanh(pre) or relu(pre). The derivative is read from the
// output (tanh' = 1 - h'^2; relu' = [h' > 0], as torch's relu backward).
template <typename T>
SK_HOST_DEVICE T rnn_unit_forward(T pre, bool relu) {
  return relu ? (pre > T(0) ? pre : T(0)) : std::tanh(pre);
}

template <typename T>
SK_HOST_DEVICE T rnn_unit_backward(T h, T dh, bool relu) {
  return relu ? (h > T(0) ? dh : T(0)) : dh * (T(1) - h * h);
}

}  // namespace sparse_kernels
