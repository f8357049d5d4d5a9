// CPU whole-sequence GRU layer: the shared loop (gru_layer_loop.h) over the
// CPU kernels.
#include <torch/library.h>

#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/gru_layer_loop.h"

using sparse_kernels::layer::OptTensor;

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The forward takes W_hh's transposed index only to hand it to the backward.
  m.impl("gru_layer",
         [](const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& values,
            const at::Tensor& row_ptr, const at::Tensor& col_idx, const OptTensor&,
            const OptTensor&, const OptTensor&, const OptTensor& hh_bias,
            const at::Tensor& batch_sizes, bool reverse) {
           return sparse_kernels::layer::gru_layer<sparse_kernels::cpu::CpuKernels>(
               input_gates, h0, values, row_ptr, col_idx, hh_bias, batch_sizes, reverse);
         });
  m.impl("gru_layer_backward",
         &sparse_kernels::layer::gru_layer_backward<sparse_kernels::cpu::CpuKernels>);
}
