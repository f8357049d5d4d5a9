// Branch-free float exp, sigmoid and tanh for the CPU's pointwise loops.
//
// std::exp and std::tanh are libm calls that GCC does not vectorise (glibc
// declares their SIMD variants only under -ffast-math), so a loop over the
// units of an LSTM cell ran one unit at a time: 27 ns per unit, about a
// sixth of a training step at H = 1500. These are plain arithmetic that a
// `#pragma omp simd` loop turns into SIMD code.
//
// exp: Cephes' expf (range reduction by ln 2 in two parts, a degree-6
// polynomial, the exponent built in the bits), about 2 ulp; inf, -inf and
// NaN give inf, 0 and NaN. sigmoid(x) =
// 1 / (1 + exp(-x)); tanh(x) = 2 sigmoid(2x) - 1, accurate to ~1e-7
// absolute (not relative near 0, where tanh(x) ~ x: fine for activations,
// whose consumers add them to O(1) terms). float only: double keeps libm
// (the float64 gradchecks test against it).
#pragma once

#include <cstdint>

namespace sparse_kernels::cpu {

inline __attribute__((always_inline)) float fast_expf(float x) {
  // Integer selects only: GCC will not if-convert a float comparison
  // under -ftrapping-math (and a float select here also stopped it), and a
  // loop with a branch does not vectorise.
  // |x| is clamped to 100 on the bits (float order is integer order for
  // magnitudes; exp(+-100) is inf / 0 in float anyway), except a NaN,
  // which stays NaN and so makes the result NaN.
  const int32_t bits = __builtin_bit_cast(int32_t, x);
  int32_t magnitude = bits & 0x7fffffff;
  const int32_t limit = magnitude > 0x7f800000 ? magnitude : 0x42C80000;  // 100.0f
  magnitude = magnitude < limit ? magnitude : limit;
  const float xc = __builtin_bit_cast(float, (bits & static_cast<int32_t>(0x80000000u)) | magnitude);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick: the sum's low mantissa
  // bits hold the integer.
  const float shifted = xc * 1.44269504088896341f + 12582912.0f;
  const float fn = shifted - 12582912.0f;
  int32_t n = __builtin_bit_cast(int32_t, shifted) - 0x4B400000;
  float r = xc - fn * 0.693359375f;
  r = r + fn * 2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  // 2^n in the exponent bits: n = -127 gives 0, n = 128 gives inf.
  n = n < -127 ? -127 : n;
  n = n > 128 ? 128 : n;
  const float result = y * __builtin_bit_cast(float, (n + 127) << 23);
  return result;
}

struct FastActivations {
  static inline __attribute__((always_inline)) float sigmoid(float x) { return 1.0f / (1.0f + fast_expf(-x)); }
  static inline __attribute__((always_inline)) float tanh(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }
};

}  // namespace sparse_kernels::cpu
