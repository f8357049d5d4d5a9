// CPU input gradient of bsr_linear: grad_input = grad_output @ W, read
// through the transposed block index so that each thread owns whole block
// columns of W (whole column ranges of grad_input): no atomics.
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_bsr.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_spmm.h"

namespace sparse_kernels::cpu {

at::Tensor bsr_linear_input_grad(const at::Tensor& grad_output_, const at::Tensor& values,
                                 const at::Tensor& block_col_ptr, const at::Tensor& block_row_idx,
                                 const at::Tensor& block_csr2csc) {
  const int64_t in_features =
      check_bsr_input_grad_args(grad_output_, values, block_col_ptr, block_row_idx, block_csr2csc);
  SK_CHECK_FLOAT(grad_output_);
  const int64_t bh = values.size(1), bw = values.size(2);
  const int64_t n_rows = grad_output_.size(0);
  const int64_t out_features = grad_output_.size(1);
  const at::Tensor grad_output = grad_output_.contiguous();
  if (n_rows == 0 || in_features == 0) return at::empty({n_rows, in_features}, grad_output.options());
  // Batch on the SIMD lanes: grad_x^T (in, N), each block read transposed.
  const at::Tensor grad_t =
      n_rows == 1 ? grad_output.view({out_features, 1}) : transposed(grad_output);
  at::Tensor grad_input_t = at::empty({in_features, n_rows}, grad_output.options());
  const int32_t* cp = block_col_ptr.data_ptr<int32_t>();
  const int32_t* ri = block_row_idx.data_ptr<int32_t>();
  const int32_t* perm = block_csr2csc.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "bsr_linear_input_grad_cpu", [&] {
    parallel_over_rows(cp, block_col_ptr.numel() - 1, [&](int64_t c0, int64_t c1) {
      bsr_spmm_rows_dispatch(cp, ri, values.data_ptr<scalar_t>(), perm, bh, bw, grad_t.data_ptr<scalar_t>(),
                             static_cast<const scalar_t*>(nullptr), grad_input_t.data_ptr<scalar_t>(), n_rows,
                             c0, c1);
    }, n_rows * bh * bw);
  });
  return untransposed(grad_input_t, n_rows);
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("bsr_linear_input_grad", &sparse_kernels::cpu::bsr_linear_input_grad);
}
