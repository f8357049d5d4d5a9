// CPU input gradient of sparse_linear: grad_input = grad_output @ W, read
// through the cached CSC view so each thread owns whole columns of W (whole
// entries of grad_input): no atomics.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"

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
  at::Tensor grad_input = at::empty({n_rows, in_features}, grad_output.options());
  if (n_rows == 0 || in_features == 0) return grad_input;

  const int32_t* cp = col_ptr.data_ptr<int32_t>();
  const int32_t* ri = row_idx.data_ptr<int32_t>();
  const int32_t* perm = csr2csc.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "sparse_linear_input_grad_cpu", [&] {
    const scalar_t* gy = grad_output.data_ptr<scalar_t>();
    const scalar_t* v = values.data_ptr<scalar_t>();
    scalar_t* gx = grad_input.data_ptr<scalar_t>();
    at::parallel_for(0, in_features, 16, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int32_t p0 = cp[c], p1 = cp[c + 1];
        for (int64_t n = 0; n < n_rows; ++n) {
          const scalar_t* gy_n = gy + n * out_features;
          scalar_t acc = 0;
          for (int32_t p = p0; p < p1; ++p) acc += v[perm[p]] * gy_n[ri[p]];
          gx[n * in_features + c] = acc;
        }
      }
    });
  });
  return grad_input;
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("sparse_linear_input_grad", &sparse_kernels::cpu::sparse_linear_input_grad);
}
