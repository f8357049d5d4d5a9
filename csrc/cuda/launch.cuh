// Kernel launch indirection. Kernels are launched through SK_LAUNCH, never
// with <<<>>> directly, so that the same kernel source also compiles for the
// CPU emulation of CUDA that the tests run (tests/emu/, built with
// -DSK_CUDA_EMULATION; no GPU on this project's machines).
#pragma once

#include <cuda_runtime.h>

#include <tuple>
#include <type_traits>
#include <utility>

#if defined(SK_CUDA_EMULATION)
#define SK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::sk_emu::launch(#kernel, kernel, (grid), (block), (smem), (stream), __VA_ARGS__)
// A cooperative launch (all blocks co-resident, grid.sync() allowed); an
// expression giving the launch's cudaError_t.
#define SK_LAUNCH_COOPERATIVE(kernel, grid, block, smem, stream, ...) \
  ::sk_emu::launch_cooperative(#kernel, kernel, (grid), (block), (smem), (stream), __VA_ARGS__)
// Dynamic shared memory: `extern __shared__` has no C++ equivalent.
#define SK_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::sk_emu::dynamic_shared_memory())
#else
#define SK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define SK_LAUNCH_COOPERATIVE(kernel, grid, block, smem, stream, ...) \
  ::sparse_kernels::cuda::launch_cooperative(kernel, (grid), (block), (smem), (stream), __VA_ARGS__)
#define SK_DYNAMIC_SHARED(type, name)                        \
  extern __shared__ __align__(16) unsigned char sk_dynamic_smem[]; \
  type* name = reinterpret_cast<type*>(sk_dynamic_smem)
#endif

namespace sparse_kernels::cuda {

constexpr int kThreadsPerBlock = 256;
constexpr unsigned kFullWarp = 0xffffffffu;

#if !defined(SK_CUDA_EMULATION)
// cudaLaunchCooperativeKernel takes the kernel's arguments as an array of
// pointers: convert them to the parameter types first, as <<<>>> would.
template <typename... Params, typename... Args>
cudaError_t launch_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                               cudaStream_t stream, Args&&... args) {
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  return std::apply(
      [&](auto&... p) {
        void* pointers[] = {static_cast<void*>(&p)...};
        return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block,
                                           pointers, smem, stream);
      },
      params);
}
#endif

inline unsigned int blocks_for(long long work, int threads = kThreadsPerBlock) {
  return static_cast<unsigned int>((work + threads - 1) / threads);
}

}  // namespace sparse_kernels::cuda
