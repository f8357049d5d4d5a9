// CPU input gradient of sparse_linear: grad_input = grad_output @ W, read
// through the cached CSC view so each thread owns whole columns of W (whole
// entries of grad_input): no atomics.
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_spmm.h"

namespace sparse_kernels::cpu {

at::Tensor sparse_linear_input_grad(const at::Tensor& grad_output_,
                                    const at::Tensor& values,
                                    const at::Tensor& col_ptr,
                                    const at::Tensor& row_idx,
                                    const at::Tensor& csr2csc) {
  SK_CHECK_DIM(grad_output_, 2);
  SK_CHECK_FLOAT(grad_output_);
  SK_CHECK_SAME_DTYPE(grad_output_, values);
  SK_CHECK_INDEX(col_ptr);
  SK_CHECK_INDEX(row_idx);
  SK_CHECK_INDEX(csr2csc);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() &&
                  values.numel() == row_idx.numel() &&
                  csr2csc.numel() == row_idx.numel(),
              "values, row_idx and csr2csc must have one entry per nonzero");
  TORCH_CHECK(col_ptr.numel() >= 1, "col_ptr must have in_features + 1 entries");
  const int64_t n_rows = grad_output_.size(0);
  const int64_t out_features = grad_output_.size(1);
  const int64_t in_features = col_ptr.numel() - 1;
  const at::Tensor grad_output = grad_output_.contiguous();
  if (n_rows == 0 || in_features == 0) return at::empty({n_rows, in_features}, grad_output.options());
  // Batch on the SIMD lanes: grad_x^T (in, N) row c = sum over column c of W
  // of value * grad_y^T row; the CSC view makes each output row one thread's.
  const at::Tensor grad_t =
      n_rows == 1 ? grad_output.view({out_features, 1}) : transposed(grad_output);
  at::Tensor grad_input_t = at::empty({in_features, n_rows}, grad_output.options());
  const int32_t* cp = col_ptr.data_ptr<int32_t>();
  const int32_t* ri = row_idx.data_ptr<int32_t>();
  const int32_t* perm = csr2csc.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "sparse_linear_input_grad_cpu", [&] {
    parallel_over_rows(cp, in_features, [&](int64_t c0, int64_t c1) {
      spmm_rows_dispatch(cp, ri, values.data_ptr<scalar_t>(), perm, grad_t.data_ptr<scalar_t>(),
                         static_cast<const scalar_t*>(nullptr), grad_input_t.data_ptr<scalar_t>(),
                         n_rows, c0, c1);
    }, n_rows);
  });
  return untransposed(grad_input_t, n_rows);
}


}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("sparse_linear_input_grad",
         [](const at::Tensor& grad_output, const at::Tensor& values, const at::Tensor& col_ptr,
            const at::Tensor& row_idx, const at::Tensor& csr2csc,
            const std::optional<at::Tensor>& row_idx16, const std::optional<at::Tensor>& col_order) {
           SK_CHECK_DIM(grad_output, 2);
           sparse_kernels::check_compressed_index(col_ptr, row_idx, grad_output.size(1), "col_ptr",
                                                  "row_idx");
           sparse_kernels::check_index_bounds(csr2csc, values.numel(), "csr2csc");
           // CUDA's compact index of the CSC view: unread here, refused when inconsistent.
           sparse_kernels::check_index16(col_ptr, row_idx, grad_output.size(1), row_idx16, col_order,
                                         "row_idx", "row_idx16", "col_order");
           return sparse_kernels::cpu::sparse_linear_input_grad(grad_output, values, col_ptr,
                                                                row_idx, csr2csc);
         });
}
