// CPU value gradient of sparse_linear (SDDMM at the stored nonzeros):
// grad_values[k] = sum_n grad_output[n, row(k)] * input[n, col_idx[k]],
// accumulated over all N rows in one pass. The dense gradient is never formed.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"

namespace sparse_kernels::cpu {

at::Tensor sparse_linear_value_grad(const at::Tensor& grad_output_,
                                    const at::Tensor& input_,
                                    const at::Tensor& row_ptr,
                                    const at::Tensor& col_idx) {
  check_weight_gradient_args(grad_output_, input_, row_ptr, col_idx);
  const int64_t n_rows = input_.size(0);
  const int64_t in_features = input_.size(1);
  const int64_t out_features = grad_output_.size(1);
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  at::Tensor grad_values = at::zeros({col_idx.numel()}, input.options());
  if (n_rows == 0 || col_idx.numel() == 0) return grad_values;

  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_linear_value_grad_cpu", [&] {
    const scalar_t* gy = grad_output.data_ptr<scalar_t>();
    const scalar_t* x = input.data_ptr<scalar_t>();
    scalar_t* gv = grad_values.data_ptr<scalar_t>();
    at::parallel_for(0, out_features, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int32_t k = rp[r]; k < rp[r + 1]; ++k) {
          const int64_t c = ci[k];
          scalar_t acc = 0;
          for (int64_t n = 0; n < n_rows; ++n)
            acc += gy[n * out_features + r] * x[n * in_features + c];
          gv[k] = acc;
        }
      }
    });
  });
  return grad_values;
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("sparse_linear_value_grad", &sparse_kernels::cpu::sparse_linear_value_grad);
}
