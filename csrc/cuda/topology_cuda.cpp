// The topology ops of dynamic sparse training for the CUDA dispatch key: the
// device-generic ATen implementation (sparse_kernels/topology_generic.h) on the
// tensors' device, with the random regrow's draws from the kernel of
// regrow_candidates.cu. The pattern never leaves the device; a few scalars are
// read (argument checks, output sizes).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "sparse_kernels/topology_generic.h"
#include "topology_kernels.h"

namespace sparse_kernels::cuda {
namespace {

namespace generic = sparse_kernels::topology::generic;

std::tuple<at::Tensor, at::Tensor> regrow_candidates_cuda(const at::Tensor& group, const at::Tensor& index,
                                                          const at::Tensor& free, const at::Tensor& want,
                                                          uint64_t seed) {
  if (group.device().is_cpu()) return generic::regrow_candidates_cpu(group, index, free, want, seed);
  const c10::cuda::CUDAGuard guard(group.device());
  at::Tensor rank = at::empty_like(group), priority = at::empty_like(group);
  const cudaError_t err = regrow_candidates(
      group.data_ptr<int64_t>(), index.data_ptr<int64_t>(), free.data_ptr<int64_t>(),
      want.data_ptr<int64_t>(), group.numel(), seed, rank.data_ptr<int64_t>(),
      priority.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "regrow_candidates kernel launch failed: ", cudaGetErrorString(err));
  return {rank, priority};
}

// The device the op runs on: the first CUDA tensor's.
std::optional<c10::cuda::CUDAGuard> guard_for(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    if (t->is_cuda()) return std::optional<c10::cuda::CUDAGuard>(std::in_place, t->device());
  return std::nullopt;
}

at::Tensor magnitude_prune_cuda(const at::Tensor& values, const at::Tensor& group_ptr,
                                const at::Tensor& drop_counts) {
  const auto guard = guard_for({&values});
  return generic::magnitude_prune(values, group_ptr, drop_counts);
}

at::Tensor signed_magnitude_prune_cuda(const at::Tensor& values, const at::Tensor& group_ptr,
                                       double fraction) {
  const auto guard = guard_for({&values});
  return generic::signed_magnitude_prune(values, group_ptr, fraction);
}

std::tuple<at::Tensor, at::Tensor> random_regrow_cuda(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                      const at::Tensor& occupied, int64_t n_cols,
                                                      const at::Tensor& group_rows,
                                                      const at::Tensor& grow_counts, int64_t seed) {
  const auto guard = guard_for({&row_ptr});
  return generic::random_regrow(row_ptr, col_idx, occupied, n_cols, group_rows, grow_counts, seed,
                                &regrow_candidates_cuda);
}

std::tuple<at::Tensor, at::Tensor> gradient_regrow_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                        const at::Tensor& occupied, int64_t k,
                                                        int64_t block_rows) {
  const auto guard = guard_for({&grad_output});
  return generic::gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, block_rows);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rebuild_csr_cuda(const at::Tensor& row_ptr,
                                                                const at::Tensor& col_idx,
                                                                const at::Tensor& keep,
                                                                const at::Tensor& grow_row_ptr,
                                                                const at::Tensor& grow_col_idx) {
  const auto guard = guard_for({&row_ptr});
  return generic::rebuild_csr(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx);
}

}  // namespace
}  // namespace sparse_kernels::cuda

TORCH_LIBRARY_IMPL(sparse_kernels, CUDA, m) {
  m.impl("magnitude_prune", &sparse_kernels::cuda::magnitude_prune_cuda);
  m.impl("signed_magnitude_prune", &sparse_kernels::cuda::signed_magnitude_prune_cuda);
  m.impl("random_regrow", &sparse_kernels::cuda::random_regrow_cuda);
  m.impl("gradient_regrow", &sparse_kernels::cuda::gradient_regrow_cuda);
  m.impl("rebuild_csr", &sparse_kernels::cuda::rebuild_csr_cuda);
}
