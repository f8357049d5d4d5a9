// CPU whole-sequence LSTM layer: the shared time loop
// (sparse_kernels/lstm_layer_loop.h) over the CPU kernels.
#include <torch/library.h>

#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/lstm_layer_loop.h"

namespace sparse_kernels::cpu {


std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& batch_sizes, bool reverse) {
  return layer::lstm_layer<CpuKernels>(input_gates, h0, c0, values, row_ptr, col_idx,
                                       batch_sizes, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells,
    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& col_ptr,
    const at::Tensor& row_idx, const at::Tensor& csr2csc, const at::Tensor& batch_sizes,
    bool reverse) {
  return layer::lstm_layer_backward<CpuKernels>(grad_output, grad_h_n, grad_c_n, gates, output,
                                                cells, h0, c0, values, row_ptr, col_idx, col_ptr,
                                                row_idx, csr2csc, batch_sizes, reverse);
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The forward takes W_hh's transposed index only to hand it to the backward.
  m.impl("lstm_layer",
         [](const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& c0,
            const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
            const at::Tensor&, const at::Tensor&, const at::Tensor&,
            const at::Tensor& batch_sizes, bool reverse) {
           return sparse_kernels::cpu::lstm_layer(input_gates, h0, c0, values, row_ptr, col_idx,
                                                  batch_sizes, reverse);
         });
  m.impl("lstm_layer_backward", &sparse_kernels::cpu::lstm_layer_backward);
}
