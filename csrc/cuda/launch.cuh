// Kernel launch indirection. Kernels are launched through SK_LAUNCH, never
// with <<<>>> directly, so that the same kernel source can later be compiled
// by a CPU emulation of CUDA for tests (no GPU on this project's machines).
#pragma once

#include <cuda_runtime.h>

#define SK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)

namespace sparse_kernels::cuda {

constexpr int kThreadsPerBlock = 256;

inline unsigned int blocks_for(long long work, int threads = kThreadsPerBlock) {
  return static_cast<unsigned int>((work + threads - 1) / threads);
}

}  // namespace sparse_kernels::cuda
