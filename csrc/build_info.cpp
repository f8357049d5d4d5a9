#include "sparse_kernels/build_info.h"

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

const char* build_info_json() {
  return "{\"torch_version\": \"" SK_TORCH_VERSION
         "\", \"cpu_paths\": [\"generic\"]"
         ", \"cuda\": " SK_WITH_CUDA_JSON
         ", \"cuda_version\": \"" SK_CUDA_VERSION
         "\", \"cuda_archs\": \"" SK_CUDA_ARCHS "\"}";
}

}  // namespace sparse_kernels
