#include "sparse_kernels/build_info.h"

#include <string>

#include "sparse_kernels/cpu_simd.h"

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

// The CPU SIMD path the runtime dispatch (cpu_spmm.h) takes on this machine.
static const char* active_cpu_path() {
#if SK_CPU_HAS_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
#endif
  return "generic";
}

const char* build_info_json() {
  static const std::string json = std::string("{\"torch_version\": \"" SK_TORCH_VERSION
         "\", \"cpu_paths\": [") + SK_CPU_PATHS_JSON + "], \"cpu_path_active\": \"" +
         active_cpu_path() + "\""
         ", \"cuda\": " SK_WITH_CUDA_JSON
         ", \"cuda_version\": \"" SK_CUDA_VERSION
         "\", \"cuda_archs\": \"" SK_CUDA_ARCHS "\"}";
  return json.c_str();
}

}  // namespace sparse_kernels
