// The tile-packed float32 forward product (sparse_kernels/cpu_tiled.h): the
// packing, the AVX2 kernels, their portable twins, and the run-time choice;
// and the value gradient (SDDMM) on the same tiles.
#include "sparse_kernels/cpu_tiled.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sparse_kernels/cpu_gathered.h"
#include "sparse_kernels/cpu_spmm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SK_TILED_HAS_AVX2_KERNEL 1
#else
#define SK_TILED_HAS_AVX2_KERNEL 0
#endif

namespace sparse_kernels::cpu {
namespace {

// One row of W against one tile: out[0:W] = b + sum_k v[k] x_tile[idx[k], 0:W]
// (kAccumulate: out[0:W] += the sum, for the panels of W^T).
// Portable: four independent accumulator sets, so that the compiler's SIMD
// code does not wait on one chain of additions.
template <int W, bool kAccumulate = false>
inline void tile_row_portable(const int32_t* idx, const float* v, int32_t k0, int32_t k1,
                              const float* x_tile, float b, float* out) {
  float acc[4][W];
  for (int j = 0; j < W; ++j) {
    acc[0][j] = kAccumulate ? out[j] : b;
    acc[1][j] = acc[2][j] = acc[3][j] = 0.0f;
  }
  int32_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    for (int c = 0; c < 4; ++c) {
      const float w = v[k + c];
      const float* x = x_tile + static_cast<int64_t>(idx[k + c]) * W;
#pragma omp simd
      for (int j = 0; j < W; ++j) acc[c][j] += w * x[j];
    }
  }
  for (; k < k1; ++k) {
    const float w = v[k];
    const float* x = x_tile + static_cast<int64_t>(idx[k]) * W;
#pragma omp simd
    for (int j = 0; j < W; ++j) acc[0][j] += w * x[j];
  }
  for (int j = 0; j < W; ++j) out[j] = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
}

// Rows [r0, r1) of W against every tile: y = bias + W x, or, with
// accumulate, y += W x (bias unused): the panels of W^T
// (tiled_sparse_linear_panels), the first writing each row, the others adding.
SK_CPU_CLONES void tiled_rows_portable(const int32_t* ptr, const int32_t* idx, const float* v,
                                       const float* bias, const float* x_tiles, int64_t in_features,
                                       float* y_tiles, int64_t out_features, int64_t width,
                                       int64_t r0, int64_t r1, bool accumulate) {
  for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
    const float* x_tile = x_tiles + j0 * in_features;
    float* y_tile = y_tiles + j0 * out_features;
    if (tile_width(j0, width) == 16) {
      for (int64_t r = r0; r < r1; ++r)
        accumulate ? tile_row_portable<16, true>(idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, y_tile + r * 16)
                   : tile_row_portable<16>(idx, v, ptr[r], ptr[r + 1], x_tile, bias ? bias[r] : 0.0f, y_tile + r * 16);
    } else {
      for (int64_t r = r0; r < r1; ++r)
        accumulate ? tile_row_portable<8, true>(idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, y_tile + r * 8)
                   : tile_row_portable<8>(idx, v, ptr[r], ptr[r + 1], x_tile, bias ? bias[r] : 0.0f, y_tile + r * 8);
    }
  }
}

#if SK_TILED_HAS_AVX2_KERNEL
// 16 lanes = two registers per nonzero; four nonzeros per iteration into four
// register pairs (eight chains: two FMA units x four cycles of latency).
template <bool kAccumulate = false>
__attribute__((target("avx2,fma"))) inline void tile_row16_avx2(const int32_t* idx, const float* v,
                                                                 int32_t k0, int32_t k1,
                                                                 const float* x_tile, float b,
                                                                 float* out) {
  __m256 a0 = kAccumulate ? _mm256_loadu_ps(out) : _mm256_set1_ps(b);
  __m256 a1 = kAccumulate ? _mm256_loadu_ps(out + 8) : a0;
  __m256 b0 = _mm256_setzero_ps(), b1 = b0, c0 = b0, c1 = b0, d0 = b0, d1 = b0;
  int32_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    const float* p0 = x_tile + (static_cast<int64_t>(idx[k]) << 4);
    const float* p1 = x_tile + (static_cast<int64_t>(idx[k + 1]) << 4);
    const float* p2 = x_tile + (static_cast<int64_t>(idx[k + 2]) << 4);
    const float* p3 = x_tile + (static_cast<int64_t>(idx[k + 3]) << 4);
    const __m256 w0 = _mm256_broadcast_ss(v + k), w1 = _mm256_broadcast_ss(v + k + 1);
    const __m256 w2 = _mm256_broadcast_ss(v + k + 2), w3 = _mm256_broadcast_ss(v + k + 3);
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0), a0);
    a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8), a1);
    b0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1), b0);
    b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + 8), b1);
    c0 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(p2), c0);
    c1 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(p2 + 8), c1);
    d0 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(p3), d0);
    d1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(p3 + 8), d1);
  }
  for (; k < k1; ++k) {
    const float* p0 = x_tile + (static_cast<int64_t>(idx[k]) << 4);
    const __m256 w0 = _mm256_broadcast_ss(v + k);
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0), a0);
    a1 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8), a1);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(c0, d0)));
  _mm256_storeu_ps(out + 8, _mm256_add_ps(_mm256_add_ps(a1, b1), _mm256_add_ps(c1, d1)));
}

// The 8-lane kernels' end: nonzeros [k, k1) (fewer than eight) into acc[0],
// then the eight accumulators summed in one fixed order and stored.
__attribute__((target("avx2,fma"), always_inline)) inline void tile_row8_finish(__m256* acc, const int32_t* idx,
                                                                               const float* v, int64_t k,
                                                                               int64_t k1, const float* x_tile,
                                                                               float* out) {
  for (; k < k1; ++k) {
    const float* p = x_tile + (static_cast<int64_t>(idx[k]) << 3);
    acc[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(v + k), _mm256_loadu_ps(p), acc[0]);
  }
  const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])),
                                 _mm256_add_ps(_mm256_add_ps(acc[4], acc[5]), _mm256_add_ps(acc[6], acc[7])));
  _mm256_storeu_ps(out, s);
}

// 8 lanes = one register per nonzero; eight nonzeros per iteration.
template <bool kAccumulate = false>
__attribute__((target("avx2,fma"))) inline void tile_row8_avx2(const int32_t* idx, const float* v,
                                                                int32_t k0, int32_t k1,
                                                                const float* x_tile, float b,
                                                                float* out) {
  __m256 acc[8];
  acc[0] = kAccumulate ? _mm256_loadu_ps(out) : _mm256_set1_ps(b);
  for (int c = 1; c < 8; ++c) acc[c] = _mm256_setzero_ps();
  int32_t k = k0;
  for (; k + 8 <= k1; k += 8) {
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const float* p = x_tile + (static_cast<int64_t>(idx[k + c]) << 3);
      acc[c] = _mm256_fmadd_ps(_mm256_broadcast_ss(v + k + c), _mm256_loadu_ps(p), acc[c]);
    }
  }
  tile_row8_finish(acc, idx, v, k, k1, x_tile, out);
}

// 16 lanes in one AVX-512 register: the AVX2 kernel above with each register
// pair as one register (four accumulators, summed in the same order: the same
// bits), so a nonzero issues one load and one FMA instead of two. Zen 4 runs
// them as two 256-bit halves, so the gain is in the instructions issued:
// 1.10-1.11x in a standalone loop at batch 16 (docs/benchmarks_history.md,
// session I). Runs of 16 nonzeros load their 16 values in one register and
// broadcast each from there (vpermps with the lane index held in a register)
// instead of loading it once more from memory: one load fewer per nonzero,
// whose loads (index, value, x row) bound the loop; 1.06-1.12x standalone
// (BENCHMARKS.md, session N). Same accumulator per nonzero: the same bits.
// Called per run of rows (not inlined into the AVX2 drivers, whose target
// lacks AVX-512), where tile_avx512_enabled().
// The zero-masking form with every lane kept is plain vpermps; the unmasked
// intrinsic's "undefined" source trips GCC 12's -Wmaybe-uninitialized.
constexpr __mmask16 kAllLanes16 = 0xFFFF;
constexpr __mmask8 kAllLanes8 = 0xFF;

// lane[j] = (j, j, ..., j): permutexvar(lane[j], w) broadcasts w[j]; N = 16
// (512-bit registers) or 8 (256-bit). Made once per run of rows, so that the
// indices stay in registers across rows.
template <int N>
struct LaneIndices;
template <>
struct LaneIndices<16> {
  __m512i lane[16];
};
template <>
struct LaneIndices<8> {
  __m256i lane[8];
};

template <int N>
__attribute__((target("avx512f,avx512vl,avx2,fma"), always_inline)) inline LaneIndices<N> lane_indices() {
  LaneIndices<N> l;
  for (int j = 0; j < N; ++j) {
    if constexpr (N == 16) {
      l.lane[j] = _mm512_set1_epi32(j);
    } else {
      l.lane[j] = _mm256_set1_epi32(j);
    }
  }
  return l;
}

template <bool kAccumulate = false>
__attribute__((target("avx512f,avx512vl,avx2,fma"), always_inline)) inline void tile_row16_avx512(
    const LaneIndices<16>& lanes, const int32_t* idx, const float* v, int32_t k0, int32_t k1, const float* x_tile,
    float b, float* out) {
  __m512 a = kAccumulate ? _mm512_loadu_ps(out) : _mm512_set1_ps(b);
  __m512 c1 = _mm512_setzero_ps(), c2 = c1, c3 = c1;
  int64_t k = k0;
  for (; k + 16 <= k1; k += 16) {
    const __m512 w = _mm512_loadu_ps(v + k);
    const int32_t* ix = idx + k;
#pragma GCC unroll 4
    for (int j = 0; j < 16; j += 4) {
      a = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAllLanes16, lanes.lane[j], w),
                          _mm512_loadu_ps(x_tile + (static_cast<int64_t>(ix[j]) << 4)), a);
      c1 = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAllLanes16, lanes.lane[j + 1], w),
                           _mm512_loadu_ps(x_tile + (static_cast<int64_t>(ix[j + 1]) << 4)), c1);
      c2 = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAllLanes16, lanes.lane[j + 2], w),
                           _mm512_loadu_ps(x_tile + (static_cast<int64_t>(ix[j + 2]) << 4)), c2);
      c3 = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAllLanes16, lanes.lane[j + 3], w),
                           _mm512_loadu_ps(x_tile + (static_cast<int64_t>(ix[j + 3]) << 4)), c3);
    }
  }
  for (; k + 4 <= k1; k += 4) {
    a = _mm512_fmadd_ps(_mm512_set1_ps(v[k]), _mm512_loadu_ps(x_tile + (static_cast<int64_t>(idx[k]) << 4)), a);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(v[k + 1]),
                         _mm512_loadu_ps(x_tile + (static_cast<int64_t>(idx[k + 1]) << 4)), c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(v[k + 2]),
                         _mm512_loadu_ps(x_tile + (static_cast<int64_t>(idx[k + 2]) << 4)), c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(v[k + 3]),
                         _mm512_loadu_ps(x_tile + (static_cast<int64_t>(idx[k + 3]) << 4)), c3);
  }
  for (; k < k1; ++k)
    a = _mm512_fmadd_ps(_mm512_set1_ps(v[k]), _mm512_loadu_ps(x_tile + (static_cast<int64_t>(idx[k]) << 4)), a);
  _mm512_storeu_ps(out, _mm512_add_ps(_mm512_add_ps(a, c1), _mm512_add_ps(c2, c3)));
}

// The 8-lane kernel (tile_row8_avx2) on AVX-512 CPUs: the same eight
// accumulators in the same order (the same bits), each run of eight values
// loaded once and broadcast from the register (vpermps on 256 bits, AVX-512VL,
// whose 32 registers hold the eight lane indices beside the eight
// accumulators); 1.2x standalone at batch 20's 8-lane tile (session N).
template <bool kAccumulate = false>
__attribute__((target("avx512f,avx512vl,avx2,fma"), always_inline)) inline void tile_row8_avx512(
    const LaneIndices<8>& lanes, const int32_t* idx, const float* v, int32_t k0, int32_t k1, const float* x_tile,
    float b, float* out) {
  __m256 acc[8];
  acc[0] = kAccumulate ? _mm256_loadu_ps(out) : _mm256_set1_ps(b);
  for (int c = 1; c < 8; ++c) acc[c] = _mm256_setzero_ps();
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    const __m256 w = _mm256_loadu_ps(v + k);
    const int32_t* ix = idx + k;
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const float* p = x_tile + (static_cast<int64_t>(ix[c]) << 3);
      acc[c] = _mm256_fmadd_ps(_mm256_maskz_permutexvar_ps(kAllLanes8, lanes.lane[c], w), _mm256_loadu_ps(p), acc[c]);
    }
  }
  tile_row8_finish(acc, idx, v, k, k1, x_tile, out);
}

// Rows [r0, r1) of W against one tile of W = 16 or 8 lanes (bias may be
// null; accumulate: tiled_rows_portable).
template <int W>
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void tile_rows_avx512(const int32_t* ptr, const int32_t* idx,
                                                                           const float* v, const float* bias,
                                                                           const float* x_tile, float* y_tile,
                                                                           int64_t r0, int64_t r1, bool accumulate) {
  const LaneIndices<W> lanes = lane_indices<W>();
  for (int64_t r = r0; r < r1; ++r) {
    if constexpr (W == 16) {
      accumulate ? tile_row16_avx512<true>(lanes, idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, y_tile + r * 16)
                 : tile_row16_avx512(lanes, idx, v, ptr[r], ptr[r + 1], x_tile, bias ? bias[r] : 0.0f, y_tile + r * 16);
    } else {
      accumulate ? tile_row8_avx512<true>(lanes, idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, y_tile + r * 8)
                 : tile_row8_avx512(lanes, idx, v, ptr[r], ptr[r + 1], x_tile, bias ? bias[r] : 0.0f, y_tile + r * 8);
    }
  }
}

// The rows of a row list against one tile of W = 16 or 8 lanes.
template <int W>
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void tile_row_list_avx512(const int32_t* ptr, const int32_t* idx,
                                                                               const float* v, const int64_t* rows,
                                                                               int count, const float* x_tile,
                                                                               float* out, int64_t out_stride) {
  const LaneIndices<W> lanes = lane_indices<W>();
  for (int i = 0; i < count; ++i) {
    if constexpr (W == 16) {
      tile_row16_avx512(lanes, idx, v, ptr[rows[i]], ptr[rows[i] + 1], x_tile, 0.0f, out + i * out_stride);
    } else {
      tile_row8_avx512(lanes, idx, v, ptr[rows[i]], ptr[rows[i] + 1], x_tile, 0.0f, out + i * out_stride);
    }
  }
}

// Whether the AVX-512 tile kernels run: the CPU has AVX-512F and AVX-512VL
// (and AVX2+FMA), unless SPARSE_KERNELS_CPU_AVX512=0 (read once; for A/B
// measurements and the tests that compare the two paths).
bool tile_avx512_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SPARSE_KERNELS_CPU_AVX512");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }();
  return enabled;
}

__attribute__((target("avx2,fma"))) void tiled_rows_avx2(const int32_t* ptr, const int32_t* idx,
                                                         const float* v, const float* bias,
                                                         const float* x_tiles, int64_t in_features,
                                                         float* y_tiles, int64_t out_features,
                                                         int64_t width, int64_t r0, int64_t r1, bool accumulate) {
  for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
    const float* x_tile = x_tiles + j0 * in_features;
    float* y_tile = y_tiles + j0 * out_features;
    if (tile_avx512_enabled()) {
      if (tile_width(j0, width) == 16) {
        tile_rows_avx512<16>(ptr, idx, v, bias, x_tile, y_tile, r0, r1, accumulate);
      } else {
        tile_rows_avx512<8>(ptr, idx, v, bias, x_tile, y_tile, r0, r1, accumulate);
      }
    } else if (tile_width(j0, width) == 16) {
      for (int64_t r = r0; r < r1; ++r)
        accumulate ? tile_row16_avx2<true>(idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, y_tile + r * 16)
                   : tile_row16_avx2(idx, v, ptr[r], ptr[r + 1], x_tile, bias ? bias[r] : 0.0f, y_tile + r * 16);
    } else {
      for (int64_t r = r0; r < r1; ++r)
        accumulate ? tile_row8_avx2<true>(idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, y_tile + r * 8)
                   : tile_row8_avx2(idx, v, ptr[r], ptr[r + 1], x_tile, bias ? bias[r] : 0.0f, y_tile + r * 8);
    }
  }
}

__attribute__((target("avx2,fma"))) void tiled_row_list_avx2(const int32_t* ptr, const int32_t* idx,
                                                             const float* v, const int64_t* rows,
                                                             int count, const float* x_tile, int64_t w,
                                                             float* out, int64_t out_stride) {
  if (tile_avx512_enabled()) {
    if (w == 16) {
      tile_row_list_avx512<16>(ptr, idx, v, rows, count, x_tile, out, out_stride);
    } else {
      tile_row_list_avx512<8>(ptr, idx, v, rows, count, x_tile, out, out_stride);
    }
    return;
  }
  for (int i = 0; i < count; ++i) {
    const int64_t r = rows[i];
    if (w == 16) {
      tile_row16_avx2(idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, out + i * out_stride);
    } else {
      tile_row8_avx2(idx, v, ptr[r], ptr[r + 1], x_tile, 0.0f, out + i * out_stride);
    }
  }
}

// The value gradient on tiles (tiled_sparse_linear_value_grad): for the rows
// [r0, r1), grad_v[k] = sum over lanes of g[row(k)] * x[idx[k]], both
// operands packed as tiles. The lanes go in blocks of up to 32 (up to four
// registers: two 16-lane tiles, or what is left at the end), so that one
// block of x (in x 32 floats: 192-256 KiB at in = 1500-2048) stays in L2
// while every row of the thread passes over it; each block adds its partial
// sums to grad_v. A row's gradient run is held in registers; eight nonzeros
// are summed at once (eight dot products, then one tree of horizontal adds
// into one register of eight sums), so the reduction costs under one
// instruction per nonzero.
struct LaneBlock {
  int vectors = 0;
  int64_t x_offset[4];  // x_tiles + x_offset[v] + idx * x_stride[v]: vector v of a feature
  int64_t x_stride[4];
  int64_t g_offset[4];  // g_tiles + g_offset[v] + r * x_stride[v]: vector v of gradient row r
};

// The lane stride of vector v in a block of V vectors, known when compiling:
// lane_blocks cuts the tiles (16 lanes each, the batch's last maybe 8) so that
// a block of 4 is two 16-lane tiles, of 2 one 16-lane tile, of 3 a 16-lane
// and the last 8-lane tile, of 1 that 8-lane tile (lane_blocks checks each
// block it makes against this). A constant stride lets one shifted index address
// every vector of a feature: the kernel was bound by the integer multiplies
// and reloads of run-time strides (about 20 instructions a nonzero, 2.7 ns
// per nonzero and block of 32 lanes), not by its loads or FMAs.
constexpr int64_t block_vector_stride(int vectors, int v) {
  return (vectors == 1 || (vectors == 3 && v == 2)) ? 8 : 16;
}

template <int V>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 block_dot(const float* const* x_vectors,
                                                                          const __m256* g, int64_t c) {
  __m256 s = _mm256_mul_ps(g[0], _mm256_loadu_ps(x_vectors[0] + c * block_vector_stride(V, 0)));
  for (int v = 1; v < V; ++v) {
    s = _mm256_fmadd_ps(g[v], _mm256_loadu_ps(x_vectors[v] + c * block_vector_stride(V, v)), s);
  }
  return s;
}

// The eight sums of a0..a7's lanes, in order, in one register.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 lane_sums8(const __m256* a) {
  const __m256 b0 = _mm256_hadd_ps(a[0], a[1]), b1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 b2 = _mm256_hadd_ps(a[4], a[5]), b3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 c0 = _mm256_hadd_ps(b0, b1), c1 = _mm256_hadd_ps(b2, b3);  // per 128-bit half
  return _mm256_add_ps(_mm256_permute2f128_ps(c0, c1, 0x20), _mm256_permute2f128_ps(c0, c1, 0x31));
}

template <int V>
__attribute__((target("avx2,fma"))) void sddmm_block_avx2(const int32_t* ptr, const int32_t* idx, const LaneBlock& b,
                                                         const float* g_tiles, const float* x_tiles, bool first,
                                                         float* grad_v, int64_t r0, int64_t r1) {
  const float* x_vectors[V];
  const float* g_vectors[V];
  for (int v = 0; v < V; ++v) {
    x_vectors[v] = x_tiles + b.x_offset[v];
    g_vectors[v] = g_tiles + b.g_offset[v];
  }
  for (int64_t r = r0; r < r1; ++r) {
    __m256 g[V];
    for (int v = 0; v < V; ++v) g[v] = _mm256_loadu_ps(g_vectors[v] + r * block_vector_stride(V, v));
    int64_t k = ptr[r];
    const int64_t end = ptr[r + 1];
    for (; k + 8 <= end; k += 8) {
      __m256 dots[8];
      for (int u = 0; u < 8; ++u) dots[u] = block_dot<V>(x_vectors, g, idx[k + u]);
      __m256 sums = lane_sums8(dots);
      if (!first) sums = _mm256_add_ps(sums, _mm256_loadu_ps(grad_v + k));
      _mm256_storeu_ps(grad_v + k, sums);
    }
    for (; k < end; ++k) {
      const __m256 s = block_dot<V>(x_vectors, g, idx[k]);
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      h = _mm_hadd_ps(h, h);
      h = _mm_hadd_ps(h, h);
      const float sum = _mm_cvtss_f32(h);
      grad_v[k] = first ? sum : grad_v[k] + sum;
    }
  }
}

// The lanes of a batch padded to `width`, cut into blocks of up to four
// registers along its tiles (16 lanes = two registers, the last tile maybe 8).
std::vector<LaneBlock> lane_blocks(int64_t width, int64_t in_features, int64_t out_features) {
  std::vector<LaneBlock> blocks;
  LaneBlock block;
  for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
    const int64_t w = tile_width(j0, width);
    if (block.vectors + w / 8 > 4) {
      blocks.push_back(block);
      block = LaneBlock();
    }
    for (int64_t l = 0; l < w; l += 8) {
      block.x_offset[block.vectors] = j0 * in_features + l;
      block.g_offset[block.vectors] = j0 * out_features + l;
      block.x_stride[block.vectors] = w;
      ++block.vectors;
    }
  }
  if (block.vectors > 0) blocks.push_back(block);
  for (const LaneBlock& b : blocks)
    for (int v = 0; v < b.vectors; ++v)
      TORCH_INTERNAL_ASSERT(b.x_stride[v] == block_vector_stride(b.vectors, v),
                            "tiled SDDMM: lane block of an unexpected shape");
  return blocks;
}

void tiled_sddmm_rows_avx2(const int32_t* ptr, const int32_t* idx, const std::vector<LaneBlock>& blocks,
                           const float* g_tiles, const float* x_tiles, float* grad_v, int64_t r0, int64_t r1) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    const LaneBlock& b = blocks[i];
    const bool first = i == 0;
    switch (b.vectors) {
      case 1: sddmm_block_avx2<1>(ptr, idx, b, g_tiles, x_tiles, first, grad_v, r0, r1); break;
      case 2: sddmm_block_avx2<2>(ptr, idx, b, g_tiles, x_tiles, first, grad_v, r0, r1); break;
      case 3: sddmm_block_avx2<3>(ptr, idx, b, g_tiles, x_tiles, first, grad_v, r0, r1); break;
      default: sddmm_block_avx2<4>(ptr, idx, b, g_tiles, x_tiles, first, grad_v, r0, r1); break;
    }
  }
}

#endif

template <typename T>
inline __attribute__((always_inline)) void tiled_row_list_portable(
    const int32_t* ptr, const int32_t* idx, const T* v, const int64_t* rows, int count, const T* x_tile,
    int64_t w, T* out, int64_t out_stride) {
  for (int i = 0; i < count; ++i) {
    const int64_t r = rows[i];
    T acc[16] = {};
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) {
      const T wv = v[k];
      const T* x = x_tile + static_cast<int64_t>(idx[k]) * w;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) acc[j] += wv * x[j];
    }
    for (int64_t j = 0; j < w; ++j) out[i * out_stride + j] = acc[j];
  }
}

SK_CPU_CLONES void tiled_row_list_portable_f32(const int32_t* ptr, const int32_t* idx, const float* v,
                                               const int64_t* rows, int count, const float* x_tile,
                                               int64_t w, float* out, int64_t out_stride) {
  tiled_row_list_portable(ptr, idx, v, rows, count, x_tile, w, out, out_stride);
}

template <typename T>
inline __attribute__((always_inline)) void gathered_row_list_impl(const int32_t* ptr, const int32_t* idx,
                                                             const T* v, const int64_t* rows, int count,
                                                             const T* x, T* out, int64_t out_stride) {
  for (int i = 0; i < count; ++i) {
    const int64_t r = rows[i];
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) sum += v[k] * x[idx[k]];
    out[i * out_stride] = sum;
  }
}

// Lanes x features blocks of the packing and unpacking loops: 64 features
// of 16 lanes keep both sides' lines in L1.
constexpr int64_t kFeatureBlock = 64;

}  // namespace

const char* tile_kernels_active() {
#if SK_TILED_HAS_AVX2_KERNEL
  if (cpu_has_avx2_fma()) return tile_avx512_enabled() ? "avx512" : "avx2+fma";
#endif
  return "portable";
}

bool tiled_product_enabled(const at::Tensor& input) {
  static const bool enabled = [] {
    const char* env = std::getenv("SPARSE_KERNELS_CPU_TILED");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled && input.scalar_type() == at::kFloat && input.size(0) >= 2;
}

// Runs fn(j0, w, c0, c1) over (tile, block of features) pairs in parallel:
// the work items of packing and unpacking, each a (w x 64) transpose.
template <typename Fn>
void for_each_tile_block(int64_t width, int64_t features, const Fn& fn) {
  const int64_t blocks = (features + kFeatureBlock - 1) / kFeatureBlock;
  const int64_t tiles = (width + 15) / 16;  // the tiles start every 16 lanes
  at::parallel_for(0, tiles * blocks, std::max<int64_t>(1, 4096 / (16 * kFeatureBlock)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t j0 = (i / blocks) * 16;
      const int64_t c0 = (i % blocks) * kFeatureBlock;
      fn(j0, tile_width(j0, width), c0, std::min(features, c0 + kFeatureBlock));
    }
  });
}

at::Tensor pack_tiles(const at::Tensor& x) {
  const int64_t n = x.size(0), features = x.size(1), width = tiled_width(n);
  at::Tensor packed = at::empty({width * features}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  for_each_tile_block(width, features, [&](int64_t j0, int64_t w, int64_t c0, int64_t c1) {
    float* tile = dst + j0 * features;
    for (int64_t j = 0; j < w; ++j) {
      const float* row = j0 + j < n ? src + (j0 + j) * features : nullptr;
      for (int64_t c = c0; c < c1; ++c) tile[c * w + j] = row ? row[c] : 0.0f;
    }
  });
  return packed;
}

at::Tensor unpack_tiles(const at::Tensor& y_tiles, int64_t n, int64_t features) {
  at::Tensor y = at::empty({n, features}, y_tiles.options());
  const float* src = y_tiles.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  for_each_tile_block(tiled_width(n), features, [&](int64_t j0, int64_t w, int64_t c0, int64_t c1) {
    const float* tile = src + j0 * features;
    for (int64_t j = 0; j < w && j0 + j < n; ++j) {
      float* row = dst + (j0 + j) * features;
      for (int64_t c = c0; c < c1; ++c) row[c] = tile[c * w + j];
    }
  });
  return y;
}

void tiled_spmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v, const float* bias,
                         const float* x_tiles, int64_t in_features, float* y_tiles,
                         int64_t out_features, int64_t width, int64_t r0, int64_t r1, bool accumulate) {
#if SK_TILED_HAS_AVX2_KERNEL
  if (cpu_has_avx2_fma()) {
    tiled_rows_avx2(ptr, idx, v, bias, x_tiles, in_features, y_tiles, out_features, width, r0, r1, accumulate);
    return;
  }
#endif
  tiled_rows_portable(ptr, idx, v, bias, x_tiles, in_features, y_tiles, out_features, width, r0, r1, accumulate);
}

void tiled_row_list_f32(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows,
                        int count, const float* x_tile, int64_t w, float* out, int64_t out_stride) {
#if SK_TILED_HAS_AVX2_KERNEL
  if (cpu_has_avx2_fma()) {
    tiled_row_list_avx2(ptr, idx, v, rows, count, x_tile, w, out, out_stride);
    return;
  }
#endif
  tiled_row_list_portable_f32(ptr, idx, v, rows, count, x_tile, w, out, out_stride);
}

void tiled_row_list_f64(const int32_t* ptr, const int32_t* idx, const double* v, const int64_t* rows,
                        int count, const double* x_tile, int64_t w, double* out, int64_t out_stride) {
  tiled_row_list_portable(ptr, idx, v, rows, count, x_tile, w, out, out_stride);
}

SK_CPU_CLONES static void gathered_row_list_portable_f32(const int32_t* ptr, const int32_t* idx, const float* v,
                                                         const int64_t* rows, int count, const float* x, float* out,
                                                         int64_t out_stride) {
  gathered_row_list_impl(ptr, idx, v, rows, count, x, out, out_stride);
}

void gathered_row_list_f32(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows, int count,
                           const float* x, float* out, int64_t out_stride) {
  if (gathered_row_list_avx2(ptr, idx, v, rows, count, x, out, out_stride)) return;
  gathered_row_list_portable_f32(ptr, idx, v, rows, count, x, out, out_stride);
}

SK_CPU_CLONES void gathered_row_list_f64(const int32_t* ptr, const int32_t* idx, const double* v,
                                         const int64_t* rows, int count, const double* x, double* out,
                                         int64_t out_stride) {
  gathered_row_list_impl(ptr, idx, v, rows, count, x, out, out_stride);
}

at::Tensor tiled_sparse_linear(const at::Tensor& input, const at::Tensor& values,
                               const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const at::Tensor& bias) {
  const int64_t n = input.size(0), in_features = input.size(1);
  const int64_t out_features = row_ptr.numel() - 1, width = tiled_width(n);
  const at::Tensor x_tiles = pack_tiles(input);
  at::Tensor y_tiles = at::empty({width * out_features}, input.options());
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const float* v = values.data_ptr<float>();
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  parallel_over_rows(rp, out_features, [&](int64_t r0, int64_t r1) {
    tiled_spmm_rows_f32(rp, ci, v, b, x_tiles.data_ptr<float>(), in_features,
                        y_tiles.data_ptr<float>(), out_features, width, r0, r1);
  }, width);
  return unpack_tiles(y_tiles, n, out_features);
}

at::Tensor tiled_sparse_linear_panels(const at::Tensor& input, const at::Tensor& values,
                                      const at::Tensor& panel_ptr, const at::Tensor& col_idx, int64_t panels) {
  const int64_t n = input.size(0), in_features = input.size(1);
  const int64_t rows = (panel_ptr.numel() - 1) / panels, width = tiled_width(n);
  const int32_t* pp = panel_ptr.data_ptr<int32_t>();
  // Each row's nonzeros over all panels, for the threads' nnz-balanced ranges.
  std::vector<int32_t> row_total(rows + 1, 0);
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t r = 0; r < rows; ++r) row_total[r + 1] += pp[p * rows + r + 1] - pp[p * rows + r];
  for (int64_t r = 0; r < rows; ++r) row_total[r + 1] += row_total[r];
  const at::Tensor x_tiles = pack_tiles(input);
  at::Tensor y_tiles = at::empty({width * rows}, input.options());
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const float* v = values.data_ptr<float>();
  // Panel p's rows start at pp + p * rows: the first panel writes each row
  // of y, the others add to it.
  parallel_over_rows(row_total.data(), rows, [&](int64_t r0, int64_t r1) {
    for (int64_t p = 0; p < panels; ++p)
      tiled_spmm_rows_f32(pp + p * rows, ci, v, nullptr, x_tiles.data_ptr<float>(), in_features,
                          y_tiles.data_ptr<float>(), rows, width, r0, r1, p > 0);
  }, width);
  return unpack_tiles(y_tiles, n, rows);
}

bool tiled_value_grad_enabled(const at::Tensor& input) {
#if SK_TILED_HAS_AVX2_KERNEL
  return tiled_product_enabled(input) && cpu_has_avx2_fma();
#else
  return false;
#endif
}

at::Tensor tiled_sparse_linear_value_grad(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& row_ptr, const at::Tensor& col_idx) {
  TORCH_CHECK(tiled_value_grad_enabled(input), "tiled_sparse_linear_value_grad: needs float32 input of batch >= 2 "
              "and a CPU with AVX2 and FMA");
  const int64_t n = input.size(0), in_features = input.size(1), out_features = grad_output.size(1);
  at::Tensor grad_values = at::empty({col_idx.numel()}, input.options());
#if SK_TILED_HAS_AVX2_KERNEL
  const at::Tensor x_tiles = pack_tiles(input), g_tiles = pack_tiles(grad_output);
  const std::vector<LaneBlock> blocks = lane_blocks(tiled_width(n), in_features, out_features);
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  parallel_over_rows(rp, out_features, [&](int64_t r0, int64_t r1) {
    tiled_sddmm_rows_avx2(rp, ci, blocks, g_tiles.data_ptr<float>(), x_tiles.data_ptr<float>(),
                          grad_values.data_ptr<float>(), r0, r1);
  }, n);
#endif
  return grad_values;
}

}  // namespace sparse_kernels::cpu
