// The CPU kernels, callable directly from C++ (the ctest suite does) and
// registered as the CPU implementations of the ops declared in csrc/ops.cpp.
//
// Sparse weights are CSR with int32 indices: W has shape (out, in),
// row_ptr (out + 1), col_idx (nnz), values (nnz). The transposed (CSC) view is
// col_ptr (in + 1), row_idx (nnz) and csr2csc (nnz): values[csr2csc[p]] is the
// p-th nonzero in column-major order.
//
// The kernels check shapes and dtypes (cheap) but not the CSR structure
// (sorted, in range, no duplicates): the op registrations and the layer loops
// check it before calling them (checks.h: once per index and content, O(1)
// when seen before), so the inner loops never do.
#pragma once

#include <ATen/ATen.h>
#include <optional>
#include <tuple>
#include <vector>

#include "sparse_kernels/cpu_sliced.h"

namespace sparse_kernels::cpu {

// y = input @ W^T + bias; input (N, in) -> (N, out). `sliced`: W's sliced
// view (cpu_sliced.h, checked by the caller), read instead of the CSR at N = 1.
at::Tensor sparse_linear(const at::Tensor& input, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& col_idx,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<SlicedView>& sliced = std::nullopt);

// grad_input = grad_output @ W, through the CSC view: (N, out) -> (N, in).
at::Tensor sparse_linear_input_grad(const at::Tensor& grad_output,
                                    const at::Tensor& values,
                                    const at::Tensor& col_ptr,
                                    const at::Tensor& row_idx,
                                    const at::Tensor& csr2csc);

// The same product from W's CSR, by scatter (no transposed index; faster on
// the CPU, see sparse_linear_input_grad_csr_cpu.cpp): (N, out) -> (N, in).
at::Tensor sparse_linear_input_grad_csr(const at::Tensor& grad_output, const at::Tensor& values,
                                        const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                        int64_t in_features);

// Value gradient at the stored nonzeros only (SDDMM):
// grad_values[k] = sum_n grad_output[n, row(k)] * input[n, col_idx[k]].
at::Tensor sparse_linear_value_grad(const at::Tensor& grad_output,
                                    const at::Tensor& input,
                                    const at::Tensor& row_ptr,
                                    const at::Tensor& col_idx);

// Block-sparse (BSR) W: block_row_ptr / block_col_idx over the grid of
// blocks, values (nblocks, bh, bw). y = input @ W^T + bias: (N, in) -> (N, out).
at::Tensor bsr_linear(const at::Tensor& input, const at::Tensor& values, const at::Tensor& block_row_ptr,
                      const at::Tensor& block_col_idx, const std::optional<at::Tensor>& bias);

// grad_input = grad_output @ W through the transposed block index.
at::Tensor bsr_linear_input_grad(const at::Tensor& grad_output, const at::Tensor& values,
                                 const at::Tensor& block_col_ptr, const at::Tensor& block_row_idx,
                                 const at::Tensor& block_csr2csc);

// The gradient of the stored blocks: (nblocks, block_height, block_width).
at::Tensor bsr_linear_value_grad(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& block_row_ptr, const at::Tensor& block_col_idx,
                                 int64_t block_height, int64_t block_width);

// Fused LSTM cell pointwise part: gates (N, 4H) pre-activations [i|f|g|o],
// c_prev (N, H) -> (h, c).
std::tuple<at::Tensor, at::Tensor> lstm_cell(const at::Tensor& gates,
                                             const at::Tensor& c_prev);

// -> (grad_gates (N, 4H), grad_c_prev (N, H)).
std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& gates,
    const at::Tensor& c_prev, const at::Tensor& c);

// Fused GRU cell (pointwise): input part ig (N, 3H) = x W_ih^T + b_ih, hidden
// part hg (N, 3H) = W_hh h + b_hh, h_prev (N, H) -> h (N, H).
at::Tensor gru_cell(const at::Tensor& ig, const at::Tensor& hg, const at::Tensor& h_prev);
// -> (grad_ig, grad_hg, the gradient reaching h_prev directly through z * h_prev).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(const at::Tensor& grad_h,
                                                                 const at::Tensor& ig,
                                                                 const at::Tensor& hg,
                                                                 const at::Tensor& h_prev);

// Elman cell: pre-activation (N, H) -> tanh or relu; backward from the output h.
at::Tensor rnn_cell(const at::Tensor& pre, bool relu);
at::Tensor rnn_cell_backward(const at::Tensor& grad_h, const at::Tensor& h, bool relu);

// Fused recurrent-highway micro-layer (see sparse_kernels/rhn_math.h):
// pre (N, 2H) pre-activations [transform | gate], s_prev (N, H) -> s (N, H).
at::Tensor rhn_cell(const at::Tensor& pre, const at::Tensor& s_prev);

// -> (grad_pre (N, 2H), grad_s_prev (N, H) through the carry path only).
std::tuple<at::Tensor, at::Tensor> rhn_cell_backward(const at::Tensor& grad_s,
                                                     const at::Tensor& pre,
                                                     const at::Tensor& s_prev);

// The CPU kernels as the Kernels parameter of the shared layer loops
// (lstm_layer_loop.h, gru_layer_loop.h, rnn_layer_loop.h, rhn_layer_loop.h).
struct CpuKernels {
  static at::Tensor sparse_linear(const at::Tensor& x, const at::Tensor& v, const at::Tensor& rp,
                                  const at::Tensor& ci, const std::optional<at::Tensor>& b) {
    return cpu::sparse_linear(x, v, rp, ci, b);
  }
  // The transposed index, when the caller has one, is not read: the scatter
  // from the CSR is the faster CPU product.
  static at::Tensor sparse_linear_input_grad(const at::Tensor& gy, const at::Tensor& v,
                                             const at::Tensor& rp, const at::Tensor& ci,
                                             int64_t cols, const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&) {
    return cpu::sparse_linear_input_grad_csr(gy, v, rp, ci, cols);
  }
  static at::Tensor sparse_linear_value_grad(const at::Tensor& gy, const at::Tensor& x,
                                             const at::Tensor& rp, const at::Tensor& ci) {
    return cpu::sparse_linear_value_grad(gy, x, rp, ci);
  }
  static std::tuple<at::Tensor, at::Tensor> lstm_cell(const at::Tensor& g, const at::Tensor& c) {
    return cpu::lstm_cell(g, c);
  }
  static std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
      const at::Tensor& dh, const at::Tensor& dc, const at::Tensor& g, const at::Tensor& cp,
      const at::Tensor& c) {
    return cpu::lstm_cell_backward(dh, dc, g, cp, c);
  }
  static at::Tensor gru_cell(const at::Tensor& ig, const at::Tensor& hg, const at::Tensor& h) {
    return cpu::gru_cell(ig, hg, h);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(
      const at::Tensor& dh, const at::Tensor& ig, const at::Tensor& hg, const at::Tensor& h) {
    return cpu::gru_cell_backward(dh, ig, hg, h);
  }
  static at::Tensor rnn_cell(const at::Tensor& pre, bool relu) { return cpu::rnn_cell(pre, relu); }
  static at::Tensor rhn_cell(const at::Tensor& pre, const at::Tensor& s) { return cpu::rhn_cell(pre, s); }
  static std::tuple<at::Tensor, at::Tensor> rhn_cell_backward(const at::Tensor& ds, const at::Tensor& pre,
                                                              const at::Tensor& s) {
    return cpu::rhn_cell_backward(ds, pre, s);
  }
  static at::Tensor rnn_cell_backward(const at::Tensor& dh, const at::Tensor& h, bool relu) {
    return cpu::rnn_cell_backward(dh, h, relu);
  }
};


// Whole-sequence RHN layer (see sparse_kernels/rhn_layer_loop.h):
// input_gates (T, B, 2H) = x W^T; h0 (B, H); R_l CSR (2H x H), one per
// micro-layer; biases (L, 2H); batch_sizes (T,) int64 on the CPU.
// -> (output (T, B, H), h_n, pre (L, T, B, 2H), states (L, T, B, H)).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_layer(
    const at::Tensor& input_gates, const at::Tensor& h0, at::TensorList values,
    at::TensorList row_ptr, at::TensorList col_idx, const at::Tensor& biases,
    const at::Tensor& batch_sizes, bool reverse);

// -> (grad_input_gates (T, B, 2H), grad_h0, grad_values (one per R_l),
//     grad_biases (L, 2H)).
std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, at::Tensor> rhn_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& pre,
    const at::Tensor& states, at::TensorList values, at::TensorList row_ptr,
    at::TensorList col_idx, at::TensorList col_ptr, at::TensorList row_idx,
    at::TensorList csr2csc, const at::Tensor& batch_sizes, bool reverse);

}  // namespace sparse_kernels::cpu

// ---------------------------------------------------------------------------
// Topology updates for dynamic sparse training (csrc/cpu/*_cpu.cpp, one per op).
// Groups are contiguous ranges: slot ranges (group_ptr, int64, G + 1) for the
// prune kernels, row ranges (group_rows, int64, G + 1) for the regrow kernels,
// so one kernel covers per-tensor (one group), per-gate and per-row updates.
namespace sparse_kernels::cpu {

// keep (nnz, bool): in each slot group g, the drop_counts[g] entries of smallest
// |value| are dropped (ties: the lower slot is dropped first).
at::Tensor magnitude_prune(const at::Tensor& values, const at::Tensor& group_ptr,
                           const at::Tensor& drop_counts);

// SET's prune: in each slot group, round(fraction * n_pos) of the smallest
// non-negative values and round(fraction * n_neg) of the largest (closest to
// zero) negative values are dropped.
at::Tensor signed_magnitude_prune(const at::Tensor& values, const at::Tensor& group_ptr,
                                  double fraction);

// Exactly grow_counts[g] new positions in the rows of each row group, uniform
// among the positions of those rows that are not occupied (a stored slot k is
// occupied when occupied[k]); no duplicates. A pure function of its inputs and
// seed. -> (grow_row_ptr (rows + 1, int32), grow_col_idx (k, int32)), sorted.
std::tuple<at::Tensor, at::Tensor> random_regrow(const at::Tensor& row_ptr,
                                                 const at::Tensor& col_idx,
                                                 const at::Tensor& occupied, int64_t n_cols,
                                                 const at::Tensor& group_rows,
                                                 const at::Tensor& grow_counts, int64_t seed);

// RigL's regrow: the k unoccupied positions of largest |grad_output^T @ input|,
// the dense gradient computed block_rows rows at a time with a running top-k
// (memory O(nnz + block_rows * in + k)). -> (grow_row_ptr, grow_col_idx).
std::tuple<at::Tensor, at::Tensor> gradient_regrow(const at::Tensor& grad_output,
                                                   const at::Tensor& input,
                                                   const at::Tensor& row_ptr,
                                                   const at::Tensor& col_idx,
                                                   const at::Tensor& occupied, int64_t k,
                                                   int64_t block_rows);

// Merge the kept slots (keep) with new positions (grow CSR) into a new sorted
// CSR. -> (row_ptr, col_idx, perm (new nnz, int64): old slot of each new slot,
// -1 for a grown one). A grown position that is also kept is an error.
std::tuple<at::Tensor, at::Tensor, at::Tensor> rebuild_csr(const at::Tensor& row_ptr,
                                                           const at::Tensor& col_idx,
                                                           const at::Tensor& keep,
                                                           const at::Tensor& grow_row_ptr,
                                                           const at::Tensor& grow_col_idx);

}  // namespace sparse_kernels::cpu
