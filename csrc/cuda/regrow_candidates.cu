// The random draws of the device random regrow: one thread per candidate, each
// an independent entry of its group's SplitMix64 stream
// (sparse_kernels/regrow_candidates.h, shared with the CPU loop of
// topology_generic.h, so both compute the same bits).
#include "launch.cuh"
#include "sparse_kernels/regrow_candidates.h"
#include "topology_kernels.h"

namespace sparse_kernels::cuda {

__global__ void regrow_candidates_kernel(const int64_t* __restrict__ group,
                                         const int64_t* __restrict__ index,
                                         const int64_t* __restrict__ free,
                                         const int64_t* __restrict__ want, int64_t n,
                                         uint64_t seed, int64_t* __restrict__ rank,
                                         int64_t* __restrict__ priority) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t g = group[i];
  topology::regrow_candidate(seed, g, index[i], free[g], want[g], &rank[i], &priority[i]);
}

cudaError_t regrow_candidates(const int64_t* group, const int64_t* index, const int64_t* free,
                              const int64_t* want, int64_t n, uint64_t seed, int64_t* rank,
                              int64_t* priority, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SK_LAUNCH(regrow_candidates_kernel, blocks_for(n), kThreadsPerBlock, 0, stream, group, index,
            free, want, n, seed, rank, priority);
  return cudaGetLastError();
}

}  // namespace sparse_kernels::cuda
