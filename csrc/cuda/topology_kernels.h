// Torch-free CUDA launcher of the device topology ops' one custom kernel
// (csrc/cuda/regrow_candidates.cu), glued to torch in csrc/cuda/topology_cuda.cpp.
// The rest of the device prune / regrow / rebuild is ATen tensor ops
// (csrc/include/sparse_kernels/topology_generic.h).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace sparse_kernels::cuda {

// The n candidates of the random regrow (sparse_kernels/regrow_candidates.h):
// candidate i belongs to group group[i] and is entry index[i] of that group's
// stream; free[g] and want[g] (> 0) are the group's free positions and grow
// count. -> rank[i] (-1: a rejected draw) and priority[i].
cudaError_t regrow_candidates(const int64_t* group, const int64_t* index, const int64_t* free,
                              const int64_t* want, int64_t n, uint64_t seed, int64_t* rank,
                              int64_t* priority, cudaStream_t stream);

}  // namespace sparse_kernels::cuda
