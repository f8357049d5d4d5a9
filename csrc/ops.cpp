// The one list of op schemas. Backends register implementations with
// TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*.cpp; autograd and fake
// (meta) kernels are registered from Python in the sparse_kernels/ops package.
#include <torch/library.h>

#include <string>

#include "sparse_kernels/build_info.h"

TORCH_LIBRARY(sparse_kernels, m) {
  // y = input @ W^T + bias for CSR W (out x in). The CSC view (col_ptr,
  // row_idx, csr2csc) is passed in so that the backward can use the cached
  // transposed index without hidden state; the forward does not read it. It
  // is optional: the CPU backward scatters from the CSR and needs none
  // (sparse_linear_input_grad_csr); CUDA's gathers through it.
  //
  // The trailing optional arguments are W's compact index for the CUDA
  // products (sparse_kernels.csr.index16, cached by CSRWeight on CUDA only):
  // col_idx16 (uint16 col_idx, when in <= 65536) and row_order (the rows
  // longest first) for this product; row_idx16 and col_order, the same for
  // the CSC view (when out <= 65536), which only the backward reads. CUDA
  // takes the uint16 kernel when col_idx16 is given; the CPU reads none of
  // them but refuses an inconsistent one.
  m.def(
      "sparse_linear(Tensor input, Tensor values, Tensor row_ptr, "
      "Tensor col_idx, Tensor? col_ptr, Tensor? row_idx, Tensor? csr2csc, "
      "Tensor? bias, Tensor? col_idx16=None, Tensor? row_order=None, "
      "Tensor? row_idx16=None, Tensor? col_order=None, Tensor? sliced_values=None, "
      "Tensor? sliced_cols=None, Tensor? slice_ptr=None) -> Tensor");
  // (The last three: W's sliced-ELLPACK view, sparse_kernels.csr.sliced_layout
  // with one segment and pad column in_features, which the CPU's float32
  // batch-1 forward reads in place of the CSR; CUDA refuses it. The backward
  // reads the CSR.)
  // grad_input = grad_output @ W via the CSC view (a gather per input
  // feature); row_idx16 and col_order: the CSC view's compact index, as above.
  m.def(
      "sparse_linear_input_grad(Tensor grad_output, Tensor values, "
      "Tensor col_ptr, Tensor row_idx, Tensor csr2csc, Tensor? row_idx16=None, "
      "Tensor? col_order=None) -> Tensor");
  // grad_input = grad_output @ W from W's CSR (a scatter per row of W; CPU):
  // no transposed index. in_features: the columns of W.
  m.def(
      "sparse_linear_input_grad_csr(Tensor grad_output, Tensor values, "
      "Tensor row_ptr, Tensor col_idx, int in_features) -> Tensor");
  // SDDMM: gradient of the stored values only.
  m.def(
      "sparse_linear_value_grad(Tensor grad_output, Tensor input, "
      "Tensor row_ptr, Tensor col_idx) -> Tensor");
  // Block-sparse (BSR) W (out x in): a CSR pattern over the grid of
  // bh x bw blocks (block_row_ptr, block_col_idx: out/bh block rows, in/bw
  // block columns) and values (nblocks, bh, bw), each block dense row-major.
  // y = input @ W^T + bias; the transposed block index (block_col_ptr,
  // block_row_idx, block_csr2csc) is passed in for the backward, as for
  // sparse_linear.
  m.def(
      "bsr_linear(Tensor input, Tensor values, Tensor block_row_ptr, Tensor block_col_idx, "
      "Tensor block_col_ptr, Tensor block_row_idx, Tensor block_csr2csc, Tensor? bias) -> Tensor");
  // grad_input = grad_output @ W via the transposed block index.
  m.def(
      "bsr_linear_input_grad(Tensor grad_output, Tensor values, Tensor block_col_ptr, "
      "Tensor block_row_idx, Tensor block_csr2csc) -> Tensor");
  // The gradient of the stored blocks only: (nblocks, block_height, block_width).
  m.def(
      "bsr_linear_value_grad(Tensor grad_output, Tensor input, Tensor block_row_ptr, "
      "Tensor block_col_idx, int block_height, int block_width) -> Tensor");
  // Fused LSTM cell pointwise part: gates [i|f|g|o] (N, 4H), c_prev -> (h, c).
  m.def("lstm_cell(Tensor gates, Tensor c_prev) -> (Tensor, Tensor)");
  m.def(
      "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor gates, "
      "Tensor c_prev, Tensor c) -> (Tensor, Tensor)");
  // The layer ops take each recurrent matrix as CSR plus its optional
  // transposed index (hh_col_ptr, hh_row_idx, hh_csr2csc; all or none), which
  // only the CUDA backward reads (rhn_layer: empty lists for none).
  // A whole LSTM layer over all timesteps (the time loop runs in C++).
  // input_gates = x W_ih^T + biases for every step (one sparse product done
  // by the caller). With proj_size > 0, W_hr (proj x hidden) gives
  // h = W_hr (o * tanh(c)). Returns (output, h_n, c_n, gates, cells,
  // hidden_full); the last three are saved for the backward (hidden_full is
  // empty without a projection). batch_sizes: int64 CPU (T,), non-increasing.
  // hh_plan, hh_plan_smem: the persistent CUDA forward's split of W_hh over
  // the blocks, from lstm_persistent_plan of this very hh_row_ptr (the
  // unit_start part on the device, int32, and the shared memory bytes), so
  // that the call copies nothing to the host; without it the CUDA forward
  // plans itself from a host copy of hh_row_ptr. The CPU ignores both.
  // hh_sliced_values, hh_sliced_cols, hh_slice_ptr: W_hh's sliced-ELLPACK
  // view (sparse_kernels/csr.py, sliced_layout, one gate a segment, padding
  // column H) holding this very hh_values, read by the CPU's float32 batch-1
  // step instead of the CSR (all three or none; CUDA takes none).
  // save_activations=False: a forward nobody will differentiate; gates,
  // cells and hidden_full come back empty (0 elements), and the CPU's fused
  // loop never writes them (the autograd formula refuses such a call).
  m.def(
      "lstm_layer(Tensor input_gates, Tensor h0, Tensor c0, Tensor hh_values, "
      "Tensor hh_row_ptr, Tensor hh_col_idx, Tensor? hh_col_ptr, Tensor? hh_row_idx, "
      "Tensor? hh_csr2csc, Tensor batch_sizes, bool reverse, Tensor? hr_values=None, "
      "Tensor? hr_row_ptr=None, Tensor? hr_col_idx=None, Tensor? hr_col_ptr=None, "
      "Tensor? hr_row_idx=None, Tensor? hr_csr2csc=None, Tensor? hh_plan=None, "
      "int hh_plan_smem=0, Tensor? hh_sliced_values=None, Tensor? hh_sliced_cols=None, "
      "Tensor? hh_slice_ptr=None, bool save_activations=True) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The persistent LSTM forward's plan (csrc/cuda/lstm_persistent.h) for
  // W_hh's CSR offsets hh_row_ptr (int32, 4H + 1 entries; a CUDA one is
  // copied to the host): at most max_blocks blocks, values of value_bytes
  // bytes. -> int64 CPU [smem_bytes, unit_start_0, ..., unit_start_blocks].
  // Host work only; a CSRWeight caches it per topology (storage/csr_weight.py,
  // persistent_lstm_plan).
  m.def("lstm_persistent_plan(Tensor hh_row_ptr, int max_blocks, int value_bytes) -> Tensor");
  // BPTT through lstm_layer; each weight's value gradient is one SDDMM over
  // all T*B rows. -> (grad_input_gates, grad_h0, grad_c0, grad_hh_values,
  // grad_hr_values (empty without a projection)).
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, "
      "Tensor gates, Tensor output, Tensor cells, Tensor hidden_full, Tensor h0, Tensor c0, "
      "Tensor hh_values, Tensor hh_row_ptr, Tensor hh_col_idx, Tensor? hh_col_ptr, "
      "Tensor? hh_row_idx, Tensor? hh_csr2csc, Tensor batch_sizes, bool reverse, "
      "Tensor? hr_values=None, Tensor? hr_row_ptr=None, Tensor? hr_col_idx=None, "
      "Tensor? hr_col_ptr=None, Tensor? hr_row_idx=None, Tensor? hr_csr2csc=None) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // A whole GRU layer (gates r|z|n as nn.GRU). input_gates = x W_ih^T + b_ih
  // for every step; b_hh stays inside the step because r multiplies W_hn h +
  // b_hn. -> (output, h_n, hidden_gates); hidden_gates is saved for the backward.
  m.def(
      "gru_layer(Tensor input_gates, Tensor h0, Tensor hh_values, Tensor hh_row_ptr, "
      "Tensor hh_col_idx, Tensor? hh_col_ptr, Tensor? hh_row_idx, Tensor? hh_csr2csc, "
      "Tensor? hh_bias, Tensor batch_sizes, bool reverse) -> (Tensor, Tensor, Tensor)");
  // -> (grad_input_gates, grad_hidden_gates, grad_h0, grad_hh_values)
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input_gates, "
      "Tensor hidden_gates, Tensor output, Tensor h0, Tensor hh_values, Tensor hh_row_ptr, "
      "Tensor hh_col_idx, Tensor? hh_col_ptr, Tensor? hh_row_idx, Tensor? hh_csr2csc, "
      "Tensor batch_sizes, bool reverse) -> (Tensor, Tensor, Tensor, Tensor)");
  // A whole Elman RNN layer, tanh or relu. input_gates = x W_ih^T + b_ih + b_hh.
  // -> (output, h_n)
  m.def(
      "rnn_layer(Tensor input_gates, Tensor h0, Tensor hh_values, Tensor hh_row_ptr, "
      "Tensor hh_col_idx, Tensor? hh_col_ptr, Tensor? hh_row_idx, Tensor? hh_csr2csc, "
      "Tensor batch_sizes, bool reverse, bool relu) -> (Tensor, Tensor)");
  // -> (grad_input_gates, grad_h0, grad_hh_values)
  m.def(
      "rnn_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor output, Tensor h0, "
      "Tensor hh_values, Tensor hh_row_ptr, Tensor hh_col_idx, Tensor? hh_col_ptr, "
      "Tensor? hh_row_idx, Tensor? hh_csr2csc, Tensor batch_sizes, bool reverse, bool relu) "
      "-> (Tensor, Tensor, Tensor)");
  // A whole recurrent highway network layer (Zilly et al., coupled carry
  // gate) over all timesteps: the time and depth loops run in C++.
  // input_gates = x W^T for every step (one sparse product by the caller; it
  // enters the first micro-layer); R_l CSR (2H x H) and its transposed index,
  // one per micro-layer; biases (depth, 2H). Returns (output, h_n, pre,
  // states), the last two saved for the backward.
  m.def(
      "rhn_layer(Tensor input_gates, Tensor h0, Tensor[] r_values, Tensor[] r_row_ptr, "
      "Tensor[] r_col_idx, Tensor[] r_col_ptr, Tensor[] r_row_idx, Tensor[] r_csr2csc, "
      "Tensor biases, Tensor batch_sizes, bool reverse) -> (Tensor, Tensor, Tensor, Tensor)");
  // BPTT through rhn_layer; each R_l's value gradient is one SDDMM over all
  // T*B rows. -> (grad_input_gates, grad_h0, grad_r_values, grad_biases).
  m.def(
      "rhn_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor pre, Tensor states, "
      "Tensor[] r_values, Tensor[] r_row_ptr, Tensor[] r_col_idx, Tensor[] r_col_ptr, "
      "Tensor[] r_row_idx, Tensor[] r_csr2csc, Tensor batch_sizes, bool reverse) "
      "-> (Tensor, Tensor, Tensor[], Tensor)");
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
