#include "sparse_kernels/build_info.h"

#include <string>

#include "sparse_kernels/cpu_simd.h"
#include "sparse_kernels/cpu_sliced.h"
#include "sparse_kernels/cpu_tiled.h"

// The build (setup.py or CMake) passes these in; the defaults describe a
// CPU-only build of unknown provenance.
#ifndef SK_TORCH_VERSION
#define SK_TORCH_VERSION "unknown"
#endif
#ifndef SK_CUDA_VERSION
#define SK_CUDA_VERSION ""
#endif
#ifndef SK_CUDA_ARCHS
#define SK_CUDA_ARCHS ""
#endif
#ifdef SK_WITH_CUDA
#define SK_WITH_CUDA_JSON "true"
#else
#define SK_WITH_CUDA_JSON "false"
#endif

namespace sparse_kernels {

#if SK_CPU_HAS_CLONES && __GNUC__ >= 12
// a * b + c compiled like every dispatched kernel: the AVX2+FMA clone
// contracts it into one fused multiply-add (one rounding), the portable clone
// rounds the product first. Which result comes back says which clone the
// loader's resolver picked on this CPU; asking the CPU's features instead
// would report what it could run, not what runs.
SK_CPU_CLONES __attribute__((noinline)) static float dispatched_multiply_add(float a, float b, float c) {
  return a * b + c;
}
#endif

// The CPU SIMD path the run-time dispatch (cpu_simd.h) takes on this machine.
static const char* active_cpu_path() {
#if SK_CPU_HAS_CLONES && __GNUC__ >= 12
  // (1 + 2^-13)^2 - (1 + 2^-12) = 2^-26 exactly with one rounding; rounding
  // the product to float first loses the 2^-26 and leaves 0.
  volatile float a = 1.0f + 0x1p-13f;
  if (dispatched_multiply_add(a, a, -(1.0f + 0x1p-12f)) != 0.0f) return SK_CPU_CLONE_PATH;
#elif SK_CPU_HAS_CLONES
  // The "avx2" clones' resolver tests exactly this feature bit.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return SK_CPU_CLONE_PATH;
#endif
  return "generic";
}

const char* build_info_json() {
  static const std::string json = std::string("{\"torch_version\": \"" SK_TORCH_VERSION
         "\", \"cpu_paths\": [") + SK_CPU_PATHS_JSON + "], \"cpu_path_active\": \"" +
         active_cpu_path() + "\", \"cpu_tile_kernels\": \"" + cpu::tile_kernels_active() + "\"" +
         ", \"cpu_blocked_view\": " + (cpu::blocked_view_supported() ? "true" : "false") +
         ", \"cuda\": " SK_WITH_CUDA_JSON
         ", \"cuda_version\": \"" SK_CUDA_VERSION
         "\", \"cuda_archs\": \"" SK_CUDA_ARCHS "\"}";
  return json.c_str();
}

}  // namespace sparse_kernels
