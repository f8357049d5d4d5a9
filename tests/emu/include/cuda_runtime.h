// CPU emulation of the part of the CUDA runtime and device language that the
// kernels in csrc/cuda/ use. Test-only: the shipped extension never sees this
// file. The emulation build puts tests/emu/include first on the include path
// and compiles each csrc/cuda/*.cu as C++ with SK_CUDA_EMULATION defined, so
// the kernels keep one source for nvcc and for this emulator.
//
// Execution model (implemented in tests/emu/sk_emu.cpp):
//  - a launch runs the grid's blocks one after another; a cooperative launch
//    (SK_LAUNCH_COOPERATIVE) runs all of them at once, each block with its
//    own dynamic shared memory, and grid.sync() (cooperative_groups.h)
//    releases when every thread of the grid waits at it. A cooperative
//    kernel must not use static __shared__ variables (one storage here);
//  - the threads of a block are cooperative fibers on one OS thread; a fiber
//    runs until it reaches a synchronisation point (__syncthreads, a warp
//    shuffle, vote or __syncwarp), then the next one runs, in the schedule's
//    order (forward, reverse or a seeded shuffle), so a missing barrier gives
//    wrong results instead of being hidden by lockstep execution;
//  - a barrier releases when every thread of the block that has not exited
//    waits at it (all at the same call site); a warp collective releases when
//    every lane named in its mask waits at the same collective with the same
//    mask. A mask naming an exited or absent lane, divergent barriers, and a
//    block that cannot make progress are reported as launch failures
//    (cudaGetLastError), with a message from sk_emu_last_error_message();
//  - __shared__ variables live in one linker section that is filled with 0xFF
//    bytes (NaN for floats) before every block, and dynamic shared memory is
//    a per-launch buffer filled the same way: reading shared memory before
//    writing it shows up in the results;
//  - atomics are plain read-modify-writes: fibers never interleave inside one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#if !defined(SK_CUDA_EMULATION)
#error "tests/emu/include/cuda_runtime.h is the CUDA emulator; build with -DSK_CUDA_EMULATION"
#endif

// ---- Runtime types ---------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
};
using cudaStream_t = struct sk_emu_stream*;

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

// ---- Qualifiers ------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))  // GNU form: allowed among the decl-specifiers, as in CUDA
// One storage per kernel instantiation, reused by the blocks as they run one
// after another: per-block shared memory. The section lets the emulator
// poison it before each block (see above). `used`: the poisoning writes the
// storage behind the compiler's back (through the section's bounds), so the
// compiler must not assume it holds its zero initialiser. Without it clang
// (19, -O1) turns an internal array that its kernel never writes into a
// constant and folds the reads to 0: a read of never-written shared memory
// would then go unseen. An object marked used may be accessed in ways the
// compiler cannot see, so its loads stay.
#define __shared__ __attribute__((section("sk_emu_shared"), used)) static
#define __constant__ static

namespace sk_emu {

// Per-launch and per-fiber coordinates.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
unsigned char* dynamic_shared_memory();

// Synchronisation points.
void syncthreads(const char* file, int line);
enum class WarpOp : int { Sync, Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All };
// Exchanges up to 8 bytes with the lanes of `mask`; returns the result bytes.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int param, int width,
                         const char* file, int line);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type over 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// A launch: runs `body` once per thread of every block. Returns the error that
// cudaGetLastError reports next.
using BlockBody = void (*)(void* context);
cudaError_t run_grid(const char* kernel_name, const void* kernel_id, dim3 grid, dim3 block,
                     size_t dynamic_smem, BlockBody body, void* context, bool cooperative = false);
// cooperative_groups' grid-wide barrier.
void grid_sync(const char* file, int line);

template <typename... Params, typename... Args>
cudaError_t launch_as(bool cooperative, const char* name, void (*kernel)(Params...), dim3 grid,
                      dim3 block, size_t smem, Args&&... args) {
  // Converted to the kernel's parameter types once, as a launch copies them.
  struct Context {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> params;
  } context{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  return run_grid(
      name, reinterpret_cast<const void*>(kernel), grid, block, smem,
      [](void* c) {
        auto* ctx = static_cast<Context*>(c);
        std::apply(ctx->kernel, ctx->params);
      },
      &context, cooperative);
}

template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
            cudaStream_t, Args&&... args) {
  launch_as(false, name, kernel, grid, block, smem, std::forward<Args>(args)...);
}

// cudaLaunchCooperativeKernel: returns the launch's error (too many blocks to
// be co-resident, a bad configuration, a failure inside the kernel).
template <typename... Params, typename... Args>
cudaError_t launch_cooperative(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block,
                               size_t smem, cudaStream_t, Args&&... args) {
  return launch_as(true, name, kernel, grid, block, smem, std::forward<Args>(args)...);
}

cudaError_t set_max_dynamic_shared(const void* kernel_id, int bytes);

}  // namespace sk_emu

// ---- Device built-ins ------------------------------------------------------
#define threadIdx (::sk_emu::thread_idx())
#define blockIdx (::sk_emu::block_idx())
#define blockDim (::sk_emu::block_dim())
#define gridDim (::sk_emu::grid_dim())
constexpr int warpSize = 32;

#if defined(SK_EMU_PLANT_MISSING_BARRIER)
// Test-only variant: barriers vanish, to show that the emulated tests catch
// a missing __syncthreads or __syncwarp (tests/test_cuda_emulated.py,
// tests/test_cuda_wide_emulated.py).
#define __syncthreads() ((void)0)
#define __syncwarp(...) ((void)0)
#else
#define __syncthreads() ::sk_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::sk_emu::sk_syncwarp(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#endif
#define __shfl_sync(mask, var, ...) \
  ::sk_emu::sk_shfl(::sk_emu::WarpOp::Shfl, __FILE__, __LINE__, mask, var, __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) \
  ::sk_emu::sk_shfl(::sk_emu::WarpOp::ShflUp, __FILE__, __LINE__, mask, var, __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) \
  ::sk_emu::sk_shfl(::sk_emu::WarpOp::ShflDown, __FILE__, __LINE__, mask, var, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) \
  ::sk_emu::sk_shfl(::sk_emu::WarpOp::ShflXor, __FILE__, __LINE__, mask, var, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
  static_cast<unsigned>(::sk_emu::warp_collective(::sk_emu::WarpOp::Ballot, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) \
  static_cast<int>(::sk_emu::warp_collective(::sk_emu::WarpOp::Any, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
  static_cast<int>(::sk_emu::warp_collective(::sk_emu::WarpOp::All, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))

namespace sk_emu {
inline void sk_syncwarp(const char* file, int line, unsigned mask = 0xffffffffu) {
  warp_collective(WarpOp::Sync, mask, 0, 0, 32, file, line);
}
template <typename T>
T sk_shfl(WarpOp op, const char* file, int line, unsigned mask, T var, int param,
          int width = warpSize) {
  return from_bits<T>(warp_collective(op, mask, to_bits(var), param, width, file, line));
}
}  // namespace sk_emu

template <typename T>
T __ldg(const T* p) {
  return *p;
}
// A load that bypasses L1 (data other blocks wrote before a grid.sync()).
template <typename T>
T __ldcg(const T* p) {
  return *p;
}

// Atomics: fibers switch only at synchronisation points, so a plain
// read-modify-write is atomic here.
namespace sk_emu {
template <typename T, typename Update>
T atomic_update(T* address, Update update) {
  const T old = *address;
  *address = update(old);
  return old;
}
}  // namespace sk_emu
// clang-format off
template <typename T> T atomicAdd(T* a, T v) { return sk_emu::atomic_update(a, [&](T o) { return o + v; }); }
template <typename T> T atomicSub(T* a, T v) { return sk_emu::atomic_update(a, [&](T o) { return o - v; }); }
template <typename T> T atomicMax(T* a, T v) { return sk_emu::atomic_update(a, [&](T o) { return o < v ? v : o; }); }
template <typename T> T atomicMin(T* a, T v) { return sk_emu::atomic_update(a, [&](T o) { return v < o ? v : o; }); }
template <typename T> T atomicExch(T* a, T v) { return sk_emu::atomic_update(a, [&](T) { return v; }); }
template <typename T> T atomicOr(T* a, T v) { return sk_emu::atomic_update(a, [&](T o) { return o | v; }); }
template <typename T> T atomicAnd(T* a, T v) { return sk_emu::atomic_update(a, [&](T o) { return o & v; }); }
template <typename T> T atomicCAS(T* a, T compare, T v) {
  return sk_emu::atomic_update(a, [&](T o) { return o == compare ? v : o; });
}
// clang-format on

// ---- Runtime API -----------------------------------------------------------
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return ::sk_emu::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
}
