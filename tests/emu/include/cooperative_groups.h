// The part of CUDA's cooperative_groups that the kernels use: the grid-wide
// barrier of a cooperative launch. Test-only (see cuda_runtime.h).
#pragma once

#include "cuda_runtime.h"

namespace cooperative_groups {

class grid_group {
 public:
#if defined(SK_EMU_PLANT_MISSING_BARRIER)
  // The planted-bug build drops grid barriers as well as __syncthreads.
  void sync() const {}
#else
  void sync() const { ::sk_emu::grid_sync(__FILE__, __LINE__); }
#endif
};

inline grid_group this_grid() { return grid_group{}; }

}  // namespace cooperative_groups
