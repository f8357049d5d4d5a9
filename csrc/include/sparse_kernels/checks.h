// Argument checks shared by the backends. The Python layer (sparse_kernels/ops.py)
// raises clear ValueError/TypeError first; these are the last line of defence
// for callers who go straight to torch.ops.sparse_kernels.
#pragma once

#include <ATen/ATen.h>

#define SK_CHECK_INDEX(t)                                                   \
  TORCH_CHECK((t).scalar_type() == at::kInt && (t).dim() == 1 &&            \
                  (t).is_contiguous(),                                      \
              #t " must be a contiguous 1-D int32 tensor, got ",            \
              (t).scalar_type(), " with shape ", (t).sizes())

#define SK_CHECK_FLOAT(t)                                                   \
  TORCH_CHECK(at::isFloatingType((t).scalar_type()),                        \
              #t " must be a floating-point tensor, got ", (t).scalar_type())

#define SK_CHECK_SAME_DTYPE(a, b)                                           \
  TORCH_CHECK((a).scalar_type() == (b).scalar_type(), #a " and " #b         \
              " must have the same dtype, got ", (a).scalar_type(), " and ", \
              (b).scalar_type())

#define SK_CHECK_DIM(t, d)                                                  \
  TORCH_CHECK((t).dim() == (d), #t " must be " #d "-D, got shape ",         \
              (t).sizes())

// The arguments of a weight gradient grad_output^T @ input read at (or
// around) a CSR pattern: grad_output (N, out), input (N, in), int32 indices.
namespace sparse_kernels {
inline void check_weight_gradient_args(const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& row_ptr, const at::Tensor& col_idx) {
  SK_CHECK_DIM(grad_output, 2);
  SK_CHECK_DIM(input, 2);
  SK_CHECK_FLOAT(grad_output);
  SK_CHECK_SAME_DTYPE(grad_output, input);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(grad_output.size(0) == input.size(0),
              "grad_output and input must have the same number of rows, got ",
              grad_output.size(0), " and ", input.size(0));
  TORCH_CHECK(grad_output.size(1) == row_ptr.numel() - 1,
              "grad_output must have out_features = ", row_ptr.numel() - 1,
              " columns, got ", grad_output.size(1));
}
}  // namespace sparse_kernels

// The block values of a BSR matrix: contiguous (nblocks, bh, bw), one block
// per block_col_idx (or block_row_idx) entry, blocks of at least 1 x 1.
namespace sparse_kernels {
inline void check_block_values(const at::Tensor& values, const at::Tensor& block_index) {
  TORCH_CHECK(values.dim() == 3 && values.is_contiguous(),
              "values must be contiguous 3-D (nblocks, block_height, block_width), got shape ",
              values.sizes());
  TORCH_CHECK(values.size(0) == block_index.numel(), "values must hold one block per block index entry (",
              block_index.numel(), "), got ", values.size(0));
  TORCH_CHECK(values.size(1) >= 1 && values.size(2) >= 1, "blocks must be at least 1 x 1, got ",
              values.size(1), " x ", values.size(2));
}
}  // namespace sparse_kernels
