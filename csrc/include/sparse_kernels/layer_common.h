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
#include <optional>

#include "sparse_kernels/checks.h"

namespace sparse_kernels::layer {

using OptTensor = std::optional<at::Tensor>;

inline void check_batch_sizes(const at::Tensor& batch_sizes, int64_t steps, int64_t batch) {
  // Contiguous: the loops read it through data_ptr, which ignores strides.
  TORCH_CHECK(batch_sizes.scalar_type() == at::kLong && batch_sizes.dim() == 1 &&
                  batch_sizes.numel() == steps && batch_sizes.device().is_cpu() &&
                  batch_sizes.is_contiguous(),
              "batch_sizes must be a contiguous 1-D int64 CPU tensor with one entry per step");
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(bs[t] >= 0 && bs[t] <= batch && (t == 0 || bs[t] <= bs[t - 1]),
                "batch_sizes must be non-increasing and within [0, batch]");
  }
}

// The arguments of a single-state layer (GRU: gate_count 3, Elman RNN: 1):
// input_gates (T, B, gate_count*H), h0 (B, H), W_hh CSR (gate_count*H rows).
inline void check_recurrent_args(const at::Tensor& input_gates, const at::Tensor& h0,
                                 const at::Tensor& values, const at::Tensor& row_ptr,
                                 const at::Tensor& col_idx, const at::Tensor& batch_sizes,
                                 int64_t gate_count) {
  SK_CHECK_DIM(input_gates, 3);
  SK_CHECK_DIM(h0, 2);
  SK_CHECK_FLOAT(input_gates);
  SK_CHECK_SAME_DTYPE(input_gates, h0);
  SK_CHECK_SAME_DTYPE(input_gates, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  const int64_t hidden = h0.size(1);
  TORCH_CHECK(input_gates.size(2) == gate_count * hidden && h0.size(0) == input_gates.size(1),
              "input_gates must be (T, B, ", gate_count, "*hidden) and h0 (B, hidden)");
  TORCH_CHECK(row_ptr.numel() == gate_count * hidden + 1, "W_hh must have ", gate_count,
              "*hidden rows");
  TORCH_CHECK(values.numel() == col_idx.numel(), "values and col_idx must have equal length");
  check_compressed_index(row_ptr, col_idx, hidden, "hh_row_ptr", "hh_col_idx");
  check_batch_sizes(batch_sizes, input_gates.size(0), input_gates.size(1));
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
