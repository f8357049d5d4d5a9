// Helpers shared by the whole-sequence layer loops (LSTM, GRU, Elman RNN).
//
// Variable lengths (PackedSequence) come as batch_sizes (T,), int64 on the
// CPU, non-increasing: at step t only rows [0, batch_sizes[t]) are active and
// the state of the other rows is left untouched. With reverse=true the steps
// run from T-1 down to 0, so a row starts from h0 at its own last element,
// as torch.nn's recurrent layers do.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

namespace sparse_kernels::layer {

inline void check_batch_sizes(const at::Tensor& batch_sizes, int64_t steps, int64_t batch) {
  TORCH_CHECK(batch_sizes.scalar_type() == at::kLong && batch_sizes.dim() == 1 &&
                  batch_sizes.numel() == steps && batch_sizes.device().is_cpu(),
              "batch_sizes must be a 1-D int64 CPU tensor with one entry per step");
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(bs[t] >= 0 && bs[t] <= batch && (t == 0 || bs[t] <= bs[t - 1]),
                "batch_sizes must be non-increasing and within [0, batch]");
  }
}

// The step processed just before step t (or -1 at the start of the sequence).
inline int64_t previous_step(int64_t t, int64_t steps, bool reverse) {
  const int64_t p = reverse ? t + 1 : t - 1;
  return (p >= 0 && p < steps) ? p : -1;
}

// The state that the b rows active at step t started from: the previous
// step's value for rows that were active then, the initial state otherwise
// (only in the reverse direction can a row start in the middle).
inline at::Tensor start_state(const at::Tensor& all_steps, const at::Tensor& initial, int64_t t,
                              int64_t b, const int64_t* bs, int64_t steps, bool reverse) {
  const int64_t p = previous_step(t, steps, reverse);
  const int64_t carried = p >= 0 ? std::min(b, bs[p]) : 0;
  at::Tensor state = initial.narrow(0, 0, b).clone();
  if (carried > 0) state.narrow(0, 0, carried).copy_(all_steps[p].narrow(0, 0, carried));
  return state;
}

}  // namespace sparse_kernels::layer
