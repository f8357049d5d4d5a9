// The CPU LSTM layer forward and backward as fused time loops (no projection).
//
// The shared loop (lstm_layer_loop.h) calls, per step, the sparse product
// (transpose h, product, transpose back), an add, the cell and four copies:
// at H = 1500 and batch 1 each of them opened a parallel region and
// allocated its result, and two threads ran the layer only 1.3x faster than
// one. Here one parallel region spans the sequence (cpu_step_schedule.h):
// per step, each chunk of units computes its units' four gate rows
// (i, f, g, o of unit u: rows u, H + u, 2H + u, 3H + u of W_hh) against the
// previous state, adds the input projection, applies the cell and writes the
// unit's h, c and the saved tensors. Nothing of shape (B, 4H) is built per
// step, nothing is allocated in the loop.
//
// The state h lives in the x-tile layout of cpu_tiled.h (batch on the lanes,
// two buffers: one read, one written per step), or as a plain vector at
// batch 1 (the gathered dot products). c lives in the same layout, updated
// in place (a unit's c is touched by one chunk per step).
//
// Returns what lstm_layer returns: (output, h_n, c_n, gates, cells, empty).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "sparse_kernels/cpu_sliced.h"

namespace sparse_kernels::cpu {

// The floats from the forward's first h buffer to its second (both in one
// allocation, which starts on a cache line): the state of `width` lanes x
// `hidden` units, then zeros the sliced views read (sliced_x_length), rounded
// up to whole 64-byte lines so that the second buffer's rows of x start on a
// line as the first's do. At width * hidden + 1 every 16-lane row of x read on
// odd steps straddled two lines: 1.5-2x the time of that step's tile product
// (BENCHMARKS.md, session W).
inline int64_t fused_h_stride(int64_t width, int64_t hidden) {
  const int64_t needed = std::max(width * hidden + 1, sliced_x_length(hidden));
  return (needed + 15) / 16 * 16;
}

// Whether the fused loop serves this call: float32/float64, no projection,
// a non-empty problem, and SPARSE_KERNELS_CPU_FUSED_LSTM unset or not "0"
// (read once; the switch exists for A/B measurements).
bool fused_lstm_layer_applies(const at::Tensor& input_gates, bool projected);

// The arguments are checked by the caller (check_lstm_args, check_sliced_view).
// `sliced`: W_hh's sliced view (cpu_sliced.h; one gate per segment, pad
// column H), or null; it is read only at batch 1 in float32.
// save_activations false: gates and cells come back empty (0 elements) and
// are never written (a forward nobody differentiates).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_lstm_layer(
    const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& batch_sizes, bool reverse,
    const SlicedView* sliced = nullptr, bool save_activations = true);

// The backward of either forward (they save the same tensors); checked by
// the caller (check_lstm_backward_args). -> (grad_input_gates, grad_h0,
// grad_c0, grad_hh_values, empty). See lstm_layer_backward_fused_cpu.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& batch_sizes, bool reverse);

}  // namespace sparse_kernels::cpu
