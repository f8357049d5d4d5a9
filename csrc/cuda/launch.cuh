// Kernel launch indirection. Kernels are launched through SK_LAUNCH, never
// with <<<>>> directly, so that the same kernel source also compiles for the
// CPU emulation of CUDA that the tests run (tests/emu/, built with
// -DSK_CUDA_EMULATION; no GPU on this project's machines).
#pragma once

#include <cuda_runtime.h>

#if defined(SK_CUDA_EMULATION)
#define SK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::sk_emu::launch(#kernel, kernel, (grid), (block), (smem), (stream), __VA_ARGS__)
// Dynamic shared memory: `extern __shared__` has no C++ equivalent.
#define SK_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::sk_emu::dynamic_shared_memory())
#else
#define SK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define SK_DYNAMIC_SHARED(type, name)                        \
  extern __shared__ __align__(16) unsigned char sk_dynamic_smem[]; \
  type* name = reinterpret_cast<type*>(sk_dynamic_smem)
#endif

namespace sparse_kernels::cuda {

constexpr int kThreadsPerBlock = 256;
constexpr unsigned kFullWarp = 0xffffffffu;

inline unsigned int blocks_for(long long work, int threads = kThreadsPerBlock) {
  return static_cast<unsigned int>((work + threads - 1) / threads);
}

}  // namespace sparse_kernels::cuda
