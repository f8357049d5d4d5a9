#pragma once

namespace sparse_kernels {
// JSON text describing the compiled binary: torch version it was built
// against, CPU code paths, CUDA version and architectures (or none).
const char* build_info_json();
}  // namespace sparse_kernels
