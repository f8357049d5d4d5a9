// CPU whole-sequence Elman RNN layer: the shared loop (rnn_layer_loop.h) over
// the CPU kernels.
#include <torch/library.h>

#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/rnn_layer_loop.h"

using sparse_kernels::layer::OptTensor;

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The forward takes W_hh's transposed index only to hand it to the backward.
  m.impl("rnn_layer",
         [](const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& values,
            const at::Tensor& row_ptr, const at::Tensor& col_idx, const OptTensor&,
            const OptTensor&, const OptTensor&, const at::Tensor& batch_sizes, bool reverse,
            bool relu) {
           return sparse_kernels::layer::rnn_layer<sparse_kernels::cpu::CpuKernels>(
               input_gates, h0, values, row_ptr, col_idx, batch_sizes, reverse, relu);
         });
  m.impl("rnn_layer_backward",
         &sparse_kernels::layer::rnn_layer_backward<sparse_kernels::cpu::CpuKernels>);
}
