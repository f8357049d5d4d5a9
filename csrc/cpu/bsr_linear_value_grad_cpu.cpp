// CPU value gradient of bsr_linear: for every stored block k at block (br, bc),
// grad_values[k] = grad_output[:, br*bh : (br+1)*bh]^T @ input[:, bc*bw : (bc+1)*bw],
// a small dense GEMM over all N rows. The dense gradient is never formed.
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_bsr.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_spmm.h"

namespace sparse_kernels::cpu {

at::Tensor bsr_linear_value_grad(const at::Tensor& grad_output_, const at::Tensor& input_,
                                 const at::Tensor& block_row_ptr, const at::Tensor& block_col_idx,
                                 int64_t block_height, int64_t block_width) {
  check_bsr_value_grad_args(grad_output_, input_, block_row_ptr, block_col_idx, block_height, block_width);
  SK_CHECK_FLOAT(grad_output_);
  const int64_t bh = block_height, bw = block_width;
  const int64_t n_rows = input_.size(0);
  const int64_t in_features = input_.size(1);
  const int64_t out_features = grad_output_.size(1);
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  at::Tensor grad_values = at::zeros({block_col_idx.numel(), bh, bw}, input.options());
  if (n_rows == 0 || block_col_idx.numel() == 0) return grad_values;

  // Each block's gradient is a GEMM over the N rows: as outer products over
  // the row-major activations (the block's columns are contiguous in every
  // row of input) or as dot products over the transposed ones (batch on
  // the lanes), whichever suits the block shape (bsr_value_grad_use_outer).
  const int32_t* rp = block_row_ptr.data_ptr<int32_t>();
  const int32_t* ci = block_col_idx.data_ptr<int32_t>();
  const int64_t block_rows = block_row_ptr.numel() - 1;
  if (bsr_value_grad_use_outer(bh, bw, n_rows)) {
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "bsr_linear_value_grad_cpu", [&] {
      parallel_over_rows(rp, block_rows, [&](int64_t r0, int64_t r1) {
        bsr_value_grad_outer_dispatch(rp, ci, bh, bw, grad_output.data_ptr<scalar_t>(), out_features,
                                      input.data_ptr<scalar_t>(), in_features, grad_values.data_ptr<scalar_t>(),
                                      n_rows, r0, r1);
      }, n_rows * bh * bw);
    });
    return grad_values;
  }
  const at::Tensor grad_t = transposed(grad_output);
  const at::Tensor input_t = transposed(input);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "bsr_linear_value_grad_cpu", [&] {
    parallel_over_rows(rp, block_rows, [&](int64_t r0, int64_t r1) {
      bsr_value_grad_lanes_dispatch(rp, ci, bh, bw, grad_t.data_ptr<scalar_t>(), input_t.data_ptr<scalar_t>(),
                                    grad_values.data_ptr<scalar_t>(), n_rows, r0, r1);
    }, n_rows * bh * bw);
  });
  return grad_values;
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("bsr_linear_value_grad", &sparse_kernels::cpu::bsr_linear_value_grad);
}
