// The blocked sliced view's lanes (sparse_kernels/cpu_sliced.h, the blocked
// form): slices of 16 rows, their entries by 64-column block of x. Each
// segment loads its block of x into four registers once; each slot then
// picks its 16 lanes' x values with two 32-entry permutes and a blend (bit 5
// of the offset chooses the half), so a nonzero costs a share of five vector
// instructions instead of a scalar load and an insert (the SELL-8 loop).
// Measured standalone (benchmarks/standalone/batch1_layouts.cpp, one thread,
// W 6000 x 1500 at 10%): 1.7-1.9x the SELL-8 loop for about the same bytes
// (1.71 slots a nonzero, 8.6 bytes against 8.9); BENCHMARKS.md, session O.
#include <cstdlib>
#include <cstring>
#include <utility>

#include "sparse_kernels/cpu_sliced.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SK_BLOCKED_HAS_AVX512_KERNEL 1
#else
#define SK_BLOCKED_HAS_AVX512_KERNEL 0
#endif

namespace sparse_kernels::cpu {
namespace {

// The slices' segments: slice_ptr's three runs (cpu_sliced.h).
struct BlockedIndex {
  const int64_t* first_segment;  // [slices + 1]
  const int64_t* first_slot;     // [segments + 1]
  const int64_t* block;          // [segments]
  BlockedIndex(const int64_t* slice_ptr, int64_t slices)
      : first_segment(slice_ptr),
        first_slot(slice_ptr + slices + 1),
        block(slice_ptr + slices + 2 + slice_ptr[slices]) {}
};

void blocked_lanes_portable(const float* v, const uint8_t* lane_bytes, const BlockedIndex& index, int64_t first,
                            int64_t count, const float* x, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    float sum[16] = {};
    for (int64_t g = index.first_segment[first + i]; g < index.first_segment[first + i + 1]; ++g) {
      const float* xb = x + 64 * index.block[g];
      for (int64_t e = 16 * index.first_slot[g]; e < 16 * index.first_slot[g + 1]; ++e)
        if (lane_bytes[e] != kBlockedPad) sum[e % 16] += v[e] * xb[lane_bytes[e]];
    }
    std::memcpy(out + 16 * i, sum, sizeof(sum));
  }
}

#if SK_BLOCKED_HAS_AVX512_KERNEL
// x[block + offset] of a slot's 16 lanes; 0 at padding lanes (masked, so that
// padding adds exactly 0 whatever x holds). maskz forms throughout: GCC 12's
// unmasked AVX-512 intrinsics warn -Wmaybe-uninitialized.
__attribute__((target("avx512f,avx512vl,avx512bw"), always_inline)) inline __m512 slot_x(const uint8_t* bytes,
                                                                                          const __m512 (&xb)[4]) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __mmask16 live = _mm_cmpneq_epi8_mask(b, _mm_set1_epi8(static_cast<char>(kBlockedPad)));
  const __m512i offset = _mm512_maskz_cvtepu8_epi32(0xFFFF, b);
  const __mmask16 high = _mm512_test_epi32_mask(offset, _mm512_set1_epi32(32));
  return _mm512_mask_blend_ps(high, _mm512_maskz_permutex2var_ps(live, xb[0], offset, xb[1]),
                              _mm512_maskz_permutex2var_ps(live, xb[2], offset, xb[3]));
}

// Two slots an iteration into two accumulators; successive segments swap in
// the other pair, so four chains of multiply-adds share the slice.
__attribute__((target("avx512f,avx512vl,avx512bw,fma"))) void blocked_lanes_avx512(
    const float* v, const uint8_t* lane_bytes, const BlockedIndex& index, int64_t first, int64_t count,
    const float* x, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = index.first_segment[first + i]; g < index.first_segment[first + i + 1]; ++g) {
      const float* x_block = x + 64 * index.block[g];
      const __m512 xb[4] = {_mm512_loadu_ps(x_block), _mm512_loadu_ps(x_block + 16),
                            _mm512_loadu_ps(x_block + 32), _mm512_loadu_ps(x_block + 48)};
      int64_t q = index.first_slot[g];
      const int64_t end = index.first_slot[g + 1];
      for (; q + 2 <= end; q += 2) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16 * q), slot_x(lane_bytes + 16 * q, xb), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16 * q + 16), slot_x(lane_bytes + 16 * q + 16, xb), a1);
      }
      if (q < end) a2 = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16 * q), slot_x(lane_bytes + 16 * q, xb), a2);
      std::swap(a0, a3);
      std::swap(a1, a2);
    }
    _mm512_storeu_ps(out + 16 * i, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}
#endif

}  // namespace

bool blocked_view_supported() {
#if SK_BLOCKED_HAS_AVX512_KERNEL
  static const bool supported = [] {
    const char* env = std::getenv("SPARSE_KERNELS_CPU_BLOCKED");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma");
  }();
  return supported;
#else
  return false;
#endif
}

void blocked_lanes(const float* v, const uint8_t* lane_bytes, const int64_t* slice_ptr, int64_t slices,
                   int64_t first, int64_t count, const float* x, float* out) {
  const BlockedIndex index(slice_ptr, slices);
#if SK_BLOCKED_HAS_AVX512_KERNEL
  if (blocked_view_supported()) {
    blocked_lanes_avx512(v, lane_bytes, index, first, count, x, out);
    return;
  }
#endif
  blocked_lanes_portable(v, lane_bytes, index, first, count, x, out);
}

}  // namespace sparse_kernels::cpu
