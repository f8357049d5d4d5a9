// The one list of op schemas. Backends register implementations with
// TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*.cpp; autograd and fake
// (meta) kernels are registered from Python in sparse_kernels/ops.py.
#include <torch/library.h>

#include <string>

#include "sparse_kernels/build_info.h"

TORCH_LIBRARY(sparse_kernels, m) {
  // y = input @ W^T + bias for CSR W (out x in). The CSC view (col_ptr,
  // row_idx, csr2csc) is passed in so that the backward can use the cached
  // transposed index without hidden state; the forward does not read it.
  m.def(
      "sparse_linear(Tensor input, Tensor values, Tensor row_ptr, "
      "Tensor col_idx, Tensor col_ptr, Tensor row_idx, Tensor csr2csc, "
      "Tensor? bias) -> Tensor");
  // grad_input = grad_output @ W via the CSC view.
  m.def(
      "sparse_linear_input_grad(Tensor grad_output, Tensor values, "
      "Tensor col_ptr, Tensor row_idx, Tensor csr2csc) -> Tensor");
  // SDDMM: gradient of the stored values only.
  m.def(
      "sparse_linear_value_grad(Tensor grad_output, Tensor input, "
      "Tensor row_ptr, Tensor col_idx) -> Tensor");
  // Fused LSTM cell pointwise part: gates [i|f|g|o] (N, 4H), c_prev -> (h, c).
  m.def("lstm_cell(Tensor gates, Tensor c_prev) -> (Tensor, Tensor)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor gates, "
      "Tensor c_prev, Tensor c) -> (Tensor, Tensor)");
  // A whole LSTM layer over all timesteps (the time loop runs in C++).
  // input_gates = x W_ih^T + biases for every step (one sparse product done
  // by the caller); returns (output, h_n, c_n, gates, cells), the last two
  // saved for the backward. batch_sizes: int64 CPU (T,), non-increasing.
  m.def(
      "lstm_layer(Tensor input_gates, Tensor h0, Tensor c0, Tensor hh_values, "
      "Tensor hh_row_ptr, Tensor hh_col_idx, Tensor hh_col_ptr, Tensor hh_row_idx, "
      "Tensor hh_csr2csc, Tensor batch_sizes, bool reverse) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // BPTT through lstm_layer; the value gradient of W_hh is one SDDMM over
  // all T*B rows. -> (grad_input_gates, grad_h0, grad_c0, grad_hh_values).
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, "
      "Tensor gates, Tensor output, Tensor cells, Tensor h0, Tensor c0, "
      "Tensor hh_values, Tensor hh_row_ptr, Tensor hh_col_idx, Tensor hh_col_ptr, "
      "Tensor hh_row_idx, Tensor hh_csr2csc, Tensor batch_sizes, bool reverse) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // ---- Topology updates for dynamic sparse training (sparse_kernels/dst).
  // Prune: keep mask (nnz, bool); groups are contiguous slot ranges (int64).
  m.def("magnitude_prune(Tensor values, Tensor group_ptr, Tensor drop_counts) -> Tensor");
  m.def("signed_magnitude_prune(Tensor values, Tensor group_ptr, float fraction) -> Tensor");
  // Regrow: new positions as a CSR of their own (grow_row_ptr, grow_col_idx);
  // groups are contiguous row ranges (int64). `occupied` marks the stored slots
  // a new position must avoid.
  m.def(
      "random_regrow(Tensor row_ptr, Tensor col_idx, Tensor occupied, int n_cols, "
      "Tensor group_rows, Tensor grow_counts, int seed) -> (Tensor, Tensor)");
  m.def(
      "gradient_regrow(Tensor grad_output, Tensor input, Tensor row_ptr, Tensor col_idx, "
      "Tensor occupied, int k, int block_rows) -> (Tensor, Tensor)");
  // Rebuild: kept slots + grown positions -> (row_ptr, col_idx, perm new -> old or -1).
  m.def(
      "rebuild_csr(Tensor row_ptr, Tensor col_idx, Tensor keep, Tensor grow_row_ptr, "
      "Tensor grow_col_idx) -> (Tensor, Tensor, Tensor)");
  // What this binary was compiled with (JSON).
  m.def("build_info() -> str", [] { return std::string(sparse_kernels::build_info_json()); });
}
