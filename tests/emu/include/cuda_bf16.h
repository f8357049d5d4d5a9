// Emulated CUDA bfloat16 (see cuda_runtime.h): the storage type and the
// conversion intrinsics the kernels use (round to nearest even).
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct __nv_bfloat16 {
  uint16_t __x;
};

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = static_cast<uint32_t>(b.__x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  __nv_bfloat16 b;
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    b.__x = 0x7fc0;  // NaN
  } else {
    bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
    b.__x = static_cast<uint16_t>(bits >> 16);
  }
  return b;
}
