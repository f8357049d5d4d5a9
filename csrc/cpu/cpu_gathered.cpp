// Batch-1 float32 products on AVX2+FMA CPUs (sparse_kernels/cpu_gathered.h):
// each CSR row of W dotted with one vector x, the x values fetched by scalar
// loads into a vector register rather than by vgatherdps (the forward, the
// fused LSTM's step, and the value gradient: each fetched x times g[row]).
//
// Why: at batch 1 a nonzero is one multiply-add, so the pace is set by
// fetching x[idx[k]]. On the AMD EPYC (Zen 3) build machine the gather
// instruction delivered 8 values in ~11-13 cycles, while 8 scalar loads
// inserted into a register (with the indices read two per 64-bit load) ran
// 1.2x faster row by row (standalone loops, 4096 x 1024 and 8192 x 2048 at
// 90%; BENCHMARKS.md "Session D"). The same loads feed the sliced-ELLPACK
// lanes of the fused LSTM's batch-1 inference step (sliced_rows_avx2).
// SPARSE_KERNELS_CPU_SCALAR_GATHER=0
// keeps the compiler's gather loop (the portable path) for A/B runs.
// Also the one run-time AVX2+FMA check of the explicit kernels (cpu_simd.h).
#include "sparse_kernels/cpu_gathered.h"

#include <cstdlib>
#include <cstring>

#include "sparse_kernels/cpu_simd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SK_GATHERED_HAS_AVX2_KERNEL 1
#else
#define SK_GATHERED_HAS_AVX2_KERNEL 0
#endif

namespace sparse_kernels::cpu {
namespace {

#if SK_GATHERED_HAS_AVX2_KERNEL
// x[idx[0..7]] in one register: four 64-bit loads of index pairs, eight
// scalar loads folded into vinsertps.
__attribute__((target("avx2,fma"), always_inline)) inline __m128 load_four(const float* x, uint64_t p0, uint64_t p1) {
  __m128 q = _mm_load_ss(x + (p0 & 0xffffffffu));
  q = _mm_insert_ps(q, _mm_load_ss(x + (p0 >> 32)), 0x10);
  q = _mm_insert_ps(q, _mm_load_ss(x + (p1 & 0xffffffffu)), 0x20);
  return _mm_insert_ps(q, _mm_load_ss(x + (p1 >> 32)), 0x30);
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 load_gathered8(const float* x,
                                                                               const int32_t* idx) {
  // Four scalar 64-bit loads (not one array: GCC then loads a vector and
  // extracts, spilling registers; measured 1.3x slower in the LSTM step).
  // Indices are >= 0, so each half zero-extends to the index.
  uint64_t p0, p1, p2, p3;
  std::memcpy(&p0, idx, 8);
  std::memcpy(&p1, idx + 2, 8);
  std::memcpy(&p2, idx + 4, 8);
  std::memcpy(&p3, idx + 6, 8);
  return _mm256_set_m128(load_four(x, p2, p3), load_four(x, p0, p1));
}

// sum over k in [k0, k1) of v[k] * x[idx[k]]: two accumulators (two chains
// of multiply-adds), then the sub-8 tail in scalars.
__attribute__((target("avx2,fma"), always_inline)) inline float gathered_dot(const int32_t* idx, const float* v,
                                                                            int32_t k0, int32_t k1, const float* x) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int32_t k = k0;
  for (; k + 16 <= k1; k += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k), load_gathered8(x, idx + k), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k + 8), load_gathered8(x, idx + k + 8), a1);
  }
  if (k + 8 <= k1) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + k), load_gathered8(x, idx + k), a0);
    k += 8;
  }
  const __m256 a = _mm256_add_ps(a0, a1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  float sum = _mm_cvtss_f32(h);
  for (; k < k1; ++k) sum += v[k] * x[idx[k]];
  return sum;
}

__attribute__((target("avx2,fma"))) void gathered_rows_kernel(const int32_t* ptr, const int32_t* idx, const float* v,
                                                              const float* x, const float* bias, float* out,
                                                              int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    out[r] = gathered_dot(idx, v, ptr[r], ptr[r + 1], x) + (bias ? bias[r] : 0.0f);
}

__attribute__((target("avx2,fma"))) void gathered_row_list_kernel(const int32_t* ptr, const int32_t* idx,
                                                                  const float* v, const int64_t* rows, int count,
                                                                  const float* x, float* out, int64_t out_stride) {
  for (int i = 0; i < count; ++i) {
    const int64_t r = rows[i];
    out[i * out_stride] = gathered_dot(idx, v, ptr[r], ptr[r + 1], x);
  }
}

__attribute__((target("avx2,fma"))) void gathered_scale_rows_kernel(const int32_t* ptr, const int32_t* idx,
                                                                    const float* g, const float* x, float* out,
                                                                    int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const __m256 gr = _mm256_set1_ps(g[r]);
    int32_t k = ptr[r];
    const int32_t k1 = ptr[r + 1];
    for (; k + 16 <= k1; k += 16) {
      _mm256_storeu_ps(out + k, _mm256_mul_ps(gr, load_gathered8(x, idx + k)));
      _mm256_storeu_ps(out + k + 8, _mm256_mul_ps(gr, load_gathered8(x, idx + k + 8)));
    }
    if (k + 8 <= k1) {
      _mm256_storeu_ps(out + k, _mm256_mul_ps(gr, load_gathered8(x, idx + k)));
      k += 8;
    }
    for (; k < k1; ++k) out[k] = g[r] * x[idx[k]];
  }
}

__attribute__((target("avx2,fma"))) void sliced_rows_kernel(const float* v, const int32_t* cols,
                                                            const int64_t* slice_ptr, int64_t first, int64_t count,
                                                            const float* x, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    const int64_t o = slice_ptr[first + i], length = (slice_ptr[first + i + 1] - o) / 8;
    const float* vs = v + o;
    const int32_t* cs = cols + o;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 2 <= length; k += 2) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vs + 8 * k), load_gathered8(x, cs + 8 * k), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(vs + 8 * k + 8), load_gathered8(x, cs + 8 * k + 8), a1);
    }
    if (k < length) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(vs + 8 * k), load_gathered8(x, cs + 8 * k), a0);
    _mm256_storeu_ps(out + 8 * i, _mm256_add_ps(a0, a1));
  }
}
#endif

}  // namespace

bool cpu_has_avx2_fma() {
#if SK_GATHERED_HAS_AVX2_KERNEL
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

bool scalar_gather_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SPARSE_KERNELS_CPU_SCALAR_GATHER");
    return (env == nullptr || std::strcmp(env, "0") != 0) && cpu_has_avx2_fma();
  }();
  return enabled;
}

bool gathered_rows_avx2(const int32_t* ptr, const int32_t* idx, const float* v, const float* x, const float* bias,
                        float* out, int64_t r0, int64_t r1) {
#if SK_GATHERED_HAS_AVX2_KERNEL
  if (!scalar_gather_enabled()) return false;
  gathered_rows_kernel(ptr, idx, v, x, bias, out, r0, r1);
  return true;
#else
  return false;
#endif
}

bool gathered_row_list_avx2(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows, int count,
                            const float* x, float* out, int64_t out_stride) {
#if SK_GATHERED_HAS_AVX2_KERNEL
  if (!scalar_gather_enabled()) return false;
  gathered_row_list_kernel(ptr, idx, v, rows, count, x, out, out_stride);
  return true;
#else
  return false;
#endif
}

bool gathered_scale_rows_avx2(const int32_t* ptr, const int32_t* idx, const float* g, const float* x, float* out,
                              int64_t r0, int64_t r1) {
#if SK_GATHERED_HAS_AVX2_KERNEL
  if (!scalar_gather_enabled()) return false;
  gathered_scale_rows_kernel(ptr, idx, g, x, out, r0, r1);
  return true;
#else
  return false;
#endif
}

bool sliced_rows_avx2(const float* v, const int32_t* cols, const int64_t* slice_ptr, int64_t first, int64_t count,
                      const float* x, float* out) {
#if SK_GATHERED_HAS_AVX2_KERNEL
  if (!scalar_gather_enabled()) return false;
  sliced_rows_kernel(v, cols, slice_ptr, first, count, x, out);
  return true;
#else
  return false;
#endif
}

}  // namespace sparse_kernels::cpu
