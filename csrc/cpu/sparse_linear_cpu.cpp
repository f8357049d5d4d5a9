// CPU forward of sparse_linear: y = input @ W^T + bias, W in CSR.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"

namespace sparse_kernels::cpu {

at::Tensor sparse_linear(const at::Tensor& input_, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& col_idx,
                         const std::optional<at::Tensor>& bias) {
  SK_CHECK_DIM(input_, 2);
  SK_CHECK_FLOAT(input_);
  SK_CHECK_SAME_DTYPE(input_, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() &&
                  values.numel() == col_idx.numel(),
              "values must be contiguous 1-D with one entry per col_idx entry");
  TORCH_CHECK(row_ptr.numel() >= 1, "row_ptr must have out_features + 1 entries");
  const int64_t n_rows = input_.size(0);
  const int64_t in_features = input_.size(1);
  const int64_t out_features = row_ptr.numel() - 1;
  if (bias.has_value()) {
    SK_CHECK_SAME_DTYPE(input_, (*bias));
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == out_features,
                "bias must have shape (", out_features, "), got ", bias->sizes());
  }
  const at::Tensor input = input_.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({n_rows, out_features}, input.options());
  if (n_rows == 0 || out_features == 0) return out;

  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_linear_cpu", [&] {
    const scalar_t* x = input.data_ptr<scalar_t>();
    const scalar_t* v = values.data_ptr<scalar_t>();
    const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
    scalar_t* y = out.data_ptr<scalar_t>();
    // Threads own disjoint output rows of W (columns of y): no write races.
    at::parallel_for(0, out_features, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int32_t k0 = rp[r], k1 = rp[r + 1];
        const scalar_t b_r = b ? b[r] : scalar_t(0);
        for (int64_t n = 0; n < n_rows; ++n) {
          const scalar_t* x_n = x + n * in_features;
          scalar_t acc = b_r;
          for (int32_t k = k0; k < k1; ++k) acc += v[k] * x_n[ci[k]];
          y[n * out_features + r] = acc;
        }
      }
    });
  });
  return out;
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The CSC arguments exist for the backward; the forward ignores them.
  m.impl("sparse_linear",
         [](const at::Tensor& input, const at::Tensor& values,
            const at::Tensor& row_ptr, const at::Tensor& col_idx,
            const at::Tensor& /*col_ptr*/, const at::Tensor& /*row_idx*/,
            const at::Tensor& /*csr2csc*/,
            const std::optional<at::Tensor>& bias) {
           return sparse_kernels::cpu::sparse_linear(input, values, row_ptr,
                                                     col_idx, bias);
         });
}
