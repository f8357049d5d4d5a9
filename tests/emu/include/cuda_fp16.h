// Emulated CUDA half precision (see cuda_runtime.h): the storage type and the
// conversion intrinsics the kernels use (round to nearest even, as on the
// device). Arithmetic happens in float, as in the kernels.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct __half {
  uint16_t __x;
};

inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.__x, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float v) {
  const _Float16 f = static_cast<_Float16>(v);  // IEEE round to nearest even
  __half h;
  std::memcpy(&h.__x, &f, 2);
  return h;
}
