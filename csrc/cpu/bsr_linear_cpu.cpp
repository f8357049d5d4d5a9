// CPU forward of bsr_linear: y = input @ W^T + bias, W block-sparse (BSR).
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_bsr.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_spmm.h"

namespace sparse_kernels::cpu {

at::Tensor bsr_linear(const at::Tensor& input_, const at::Tensor& values, const at::Tensor& block_row_ptr,
                      const at::Tensor& block_col_idx, const std::optional<at::Tensor>& bias) {
  const int64_t out_features = check_bsr_linear_args(input_, values, block_row_ptr, block_col_idx, bias);
  SK_CHECK_FLOAT(input_);
  const int64_t bh = values.size(1), bw = values.size(2);
  const int64_t n_rows = input_.size(0);
  const int64_t in_features = input_.size(1);
  const at::Tensor input = input_.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  if (n_rows == 0 || out_features == 0) return at::empty({n_rows, out_features}, input.options());

  // Batch on the SIMD lanes: work on x^T (in, N) and y^T (out, N).
  const at::Tensor input_t = n_rows == 1 ? input.view({in_features, 1}) : transposed(input);
  at::Tensor out_t = at::empty({out_features, n_rows}, input.options());
  const int32_t* rp = block_row_ptr.data_ptr<int32_t>();
  const int32_t* ci = block_col_idx.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "bsr_linear_cpu", [&] {
    const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
    // Threads own disjoint, block-balanced ranges of block rows: no write races.
    parallel_over_rows(rp, block_row_ptr.numel() - 1, [&](int64_t r0, int64_t r1) {
      bsr_spmm_rows_dispatch(rp, ci, values.data_ptr<scalar_t>(), nullptr, bh, bw, input_t.data_ptr<scalar_t>(),
                             b, out_t.data_ptr<scalar_t>(), n_rows, r0, r1);
    }, n_rows * bh * bw);
  });
  return untransposed(out_t, n_rows);
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The transposed block index exists for the backward; the forward ignores it.
  m.impl("bsr_linear",
         [](const at::Tensor& input, const at::Tensor& values, const at::Tensor& block_row_ptr,
            const at::Tensor& block_col_idx, const at::Tensor& /*block_col_ptr*/,
            const at::Tensor& /*block_row_idx*/, const at::Tensor& /*block_csr2csc*/,
            const std::optional<at::Tensor>& bias) {
           return sparse_kernels::cpu::bsr_linear(input, values, block_row_ptr, block_col_idx, bias);
         });
}
