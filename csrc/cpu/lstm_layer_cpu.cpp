// CPU whole-sequence LSTM layer: the shared time loop
// (sparse_kernels/lstm_layer_loop.h) over the CPU kernels.
#include <torch/library.h>

#include "sparse_kernels/cpu_kernels.h"
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
            const OptTensor& /*hh_plan: CUDA's*/, int64_t /*hh_plan_smem*/) {
           return sparse_kernels::layer::lstm_layer<sparse_kernels::cpu::CpuKernels>(
               input_gates, h0, c0, values, row_ptr, col_idx, batch_sizes, reverse, hr_values,
               hr_row_ptr, hr_col_idx);
         });
  m.impl("lstm_layer_backward",
         &sparse_kernels::layer::lstm_layer_backward<sparse_kernels::cpu::CpuKernels>);
}
