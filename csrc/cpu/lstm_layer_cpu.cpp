// CPU whole-sequence LSTM layer: the fused loop (cpu_lstm_fused.h) where it
// applies, otherwise the shared time loop (sparse_kernels/lstm_layer_loop.h)
// over the CPU kernels (with a projection, or other dtypes). A sliced view of
// W_hh, where given, is checked and read by the fused loop's batch-1 step.
#include <torch/library.h>

#include <optional>

#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_lstm_fused.h"
#include "sparse_kernels/lstm_layer_loop.h"

using sparse_kernels::layer::OptTensor;

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The forward takes the transposed indices only to hand them to the backward.
  m.impl("lstm_layer",
         [](const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& c0,
            const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
            const OptTensor&, const OptTensor&, const OptTensor&, const at::Tensor& batch_sizes,
            bool reverse, const OptTensor& hr_values, const OptTensor& hr_row_ptr,
            const OptTensor& hr_col_idx, const OptTensor&, const OptTensor&, const OptTensor&,
            const OptTensor& /*hh_plan: CUDA's*/, int64_t /*hh_plan_smem*/,
            const OptTensor& hh_sliced_values, const OptTensor& hh_sliced_cols,
            const OptTensor& hh_slice_ptr, bool save_activations) {
           const int64_t hidden = c0.size(-1);
           const std::optional<sparse_kernels::cpu::SlicedView> sliced = sparse_kernels::cpu::sliced_view_arg(
               hh_sliced_values, hh_sliced_cols, hh_slice_ptr, values, 4, hidden, hidden,
               {"lstm_layer", "hh_sliced_values", "hh_sliced_cols", "hh_slice_ptr"});
           if (sparse_kernels::cpu::fused_lstm_layer_applies(input_gates, hr_values.has_value())) {
             sparse_kernels::layer::check_lstm_args(input_gates, h0, c0, values, row_ptr, col_idx,
                                                    batch_sizes, hr_values, hr_row_ptr, hr_col_idx);
             return sparse_kernels::cpu::fused_lstm_layer(input_gates, h0, c0, values, row_ptr, col_idx,
                                                          batch_sizes, reverse, sliced ? &*sliced : nullptr,
                                                          save_activations);
           }
           // The shared loop keeps its per-step gates as workspace: computed, then dropped.
           return sparse_kernels::layer::drop_saved_activations(
               sparse_kernels::layer::lstm_layer<sparse_kernels::cpu::CpuKernels>(
                   input_gates, h0, c0, values, row_ptr, col_idx, batch_sizes, reverse, hr_values,
                   hr_row_ptr, hr_col_idx),
               save_activations);
         });
  m.impl("lstm_layer_backward",
         [](const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
            const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells,
            const at::Tensor& hidden_full, const at::Tensor& h0, const at::Tensor& c0,
            const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
            const OptTensor& col_ptr, const OptTensor& row_idx, const OptTensor& csr2csc,
            const at::Tensor& batch_sizes, bool reverse, const OptTensor& hr_values,
            const OptTensor& hr_row_ptr, const OptTensor& hr_col_idx, const OptTensor& hr_col_ptr,
            const OptTensor& hr_row_idx, const OptTensor& hr_csr2csc) {
           if (sparse_kernels::cpu::fused_lstm_layer_applies(gates, hr_values.has_value())) {
             sparse_kernels::layer::check_lstm_backward_args(
                 grad_output, grad_h_n, grad_c_n, gates, output, cells, hidden_full, h0, c0, values,
                 row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, hr_values, hr_row_ptr,
                 hr_col_idx, hr_col_ptr, hr_row_idx, hr_csr2csc);
             return sparse_kernels::cpu::fused_lstm_layer_backward(grad_output, grad_h_n, grad_c_n, gates,
                                                                   output, cells, h0, c0, values, row_ptr,
                                                                   col_idx, batch_sizes, reverse);
           }
           return sparse_kernels::layer::lstm_layer_backward<sparse_kernels::cpu::CpuKernels>(
               grad_output, grad_h_n, grad_c_n, gates, output, cells, hidden_full, h0, c0, values,
               row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, hr_values, hr_row_ptr,
               hr_col_idx, hr_col_ptr, hr_row_idx, hr_csr2csc);
         });
}
