// CPU gradient regrow (RigL): the k unoccupied positions with the largest
// |dL/dW| where dL/dW = grad_output^T @ input. The dense gradient is computed
// block_rows rows at a time (one BLAS product per block) and folded into a
// running top-k, so memory stays O(nnz + block_rows * in + k): the full dense
// gradient never exists.
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/topology.h"

namespace sparse_kernels::cpu {

std::tuple<at::Tensor, at::Tensor> gradient_regrow(const at::Tensor& grad_output,
                                                   const at::Tensor& input,
                                                   const at::Tensor& row_ptr,
                                                   const at::Tensor& col_idx,
                                                   const at::Tensor& occupied, int64_t k,
                                                   int64_t block_rows) {
  check_weight_gradient_args(grad_output, input, row_ptr, col_idx);
  const int64_t rows = row_ptr.numel() - 1, cols = input.size(1);
  topology::check_mask(occupied, col_idx.numel(), "occupied");
  check_compressed_index(row_ptr, col_idx, cols, "row_ptr", "col_idx");
  TORCH_CHECK(block_rows >= 1, "block_rows must be positive, got ", block_rows);
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const bool* occ = occupied.data_ptr<bool>();
  int64_t taken = 0;
  for (int64_t s = 0; s < col_idx.numel(); ++s) taken += occ[s];
  TORCH_CHECK(k >= 0 && k <= rows * cols - taken, "k = ", k, " must be in [0, ",
              rows * cols - taken, "] (the unoccupied positions)");

  // Running top-k as (score, flat position). Occupied positions score -1,
  // below every |gradient|, and there are at least k free ones, so they never
  // survive the final selection.
  at::Tensor best_scores = at::empty({0}, grad_output.options());
  at::Tensor best_flat = at::empty({0}, grad_output.options().dtype(at::kLong));
  for (int64_t r0 = 0; r0 < rows && k > 0; r0 += block_rows) {
    const int64_t b = std::min(block_rows, rows - r0);
    at::Tensor block = grad_output.narrow(1, r0, b).t().mm(input).abs_();  // (b, cols)
    AT_DISPATCH_FLOATING_TYPES(block.scalar_type(), "gradient_regrow_mask", [&] {
      scalar_t* g = block.data_ptr<scalar_t>();
      for (int64_t r = r0; r < r0 + b; ++r)
        for (int32_t s = rp[r]; s < rp[r + 1]; ++s)
          if (occ[s]) g[(r - r0) * cols + ci[s]] = scalar_t(-1);
    });
    at::Tensor flat_scores = block.reshape({-1});
    at::Tensor candidates;  // local positions that may still enter the top-k
    if (best_scores.numel() == k) {
      // Once k are held, only a score above the smallest held can enter:
      // usually few, so the selection below stays cheap even for large k.
      candidates = at::nonzero(flat_scores > best_scores.min()).reshape({-1});
      flat_scores = flat_scores.index_select(0, candidates);
    }
    const int64_t take = std::min<int64_t>(k, flat_scores.numel());
    auto [scores, local] = flat_scores.topk(take, 0, true, false);
    if (candidates.defined()) local = candidates.index_select(0, local);
    best_scores = at::cat({best_scores, scores});
    best_flat = at::cat({best_flat, local + r0 * cols});
    if (best_scores.numel() > k) {
      auto [kept_scores, which] = best_scores.topk(k, 0, true, false);
      best_scores = kept_scores;
      best_flat = best_flat.index_select(0, which);
    }
  }
  at::Tensor flat = std::get<0>(best_flat.sort());
  at::Tensor grow_rows = at::floor_divide(flat, cols);
  at::Tensor grow_row_ptr = at::zeros({rows + 1}, row_ptr.options());
  if (flat.numel())
    grow_row_ptr.narrow(0, 1, rows).copy_(at::bincount(grow_rows, {}, rows).cumsum(0));
  return {grow_row_ptr, (flat - grow_rows * cols).to(at::kInt).contiguous()};
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("gradient_regrow", &sparse_kernels::cpu::gradient_regrow);
}
