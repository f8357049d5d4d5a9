// The fused LSTM loops' per-step product at batch 20, y = W x over 20 lanes,
// one thread: the library's two passes (a 16-lane tile, then an 8-lane tile
// holding lanes 16-19 and four zero lanes) against one pass that reads each
// nonzero's index and value once for both tiles (issue #18, BENCHMARKS.md
// "Session Q"). A standalone program, not part of the build:
//
//   g++ -O3 -std=c++17 -Wno-psabi -o /tmp/batch20_tile_pairs benchmarks/standalone/batch20_tile_pairs.cpp
//   taskset -c 1 /tmp/batch20_tile_pairs [rows cols density [repeats]]
//
// W is random: each entry kept with probability `density`, columns sorted,
// values uniform in (-1, 1); x (cols, 20 lanes) uniform too. Every kernel's
// result is compared with a float64 sum; the program exits with status 1 if
// any lane of any row differs by more than 1e-4 (tests/test_standalone_layouts.py
// runs it as a check of the kernels).
//
// On CPUs with AVX2+FMA (Zen 3; session X), the library's AVX2 kernels and
// one-pass pairs over the same 16- and 8-lane tiles:
//   two_passes_avx2  the library's tile_row16_avx2, then tile_row8_avx2
//   pair_exact_avx2  one pass that sums each lane in the two passes' order
//                    (cpu_tiled.cpp: tile_pair_row_avx2): checked for the
//                    same bits as two_passes_avx2, not only the float64 sum
//   pair4_avx2       one pass, four chains a tile (12 accumulators)
//   pair4_perm_avx2  the same, each run of eight values loaded once and
//                    broadcast from the register by vpermps
//   passes16+4_avx2  the 16-lane pass, then a pass over a 4-lane tile (the
//                    layout the library would need: its tile in L1)
//
// Kernels on CPUs with AVX-512F/VL (each run of 16 values loaded once and broadcast
// from the register by vpermps, as the library's tile kernels do):
//   two_passes   the library's kernels (cpu_tiled.cpp: tile_row16_avx512 over the
//                16-lane tile, then tile_row8_avx512 over the 8-lane tile)
//   fused16+8    one pass over both of today's tiles: per nonzero one index, one
//                64-byte row of the 16-lane tile and one 32-byte row of the 8-lane tile
//   fused16+4    one pass over the 16-lane tile and a 4-lane tile (16 bytes a
//                column, 24 KiB at 1500 columns: L1), the layout the library would
//                need for it
#include <immintrin.h>

// GCC 12 warns that _mm512_castps512_ps256's "undefined" upper source may be
// uninitialized; the cast reads none of it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "random_csr.h"

namespace {

constexpr int kLanes = 20;
constexpr __mmask16 kAll16 = 0xFFFF;
constexpr __mmask8 kAll8 = 0xFF;

#define SK_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))

// The library's 16-lane kernel, rows [0, rows).
SK_AVX512 void pass16(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows, const float* x16,
                      float* y16) {
  __m512i lane[16];
  for (int j = 0; j < 16; ++j) lane[j] = _mm512_set1_epi32(j);
  for (int64_t r = 0; r < rows; ++r) {
    __m512 a = _mm512_setzero_ps(), c1 = a, c2 = a, c3 = a;
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 16 <= k1; k += 16) {
      const __m512 w = _mm512_loadu_ps(v + k);
      const int32_t* ix = idx + k;
#pragma GCC unroll 4
      for (int j = 0; j < 16; j += 4) {
        a = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAll16, lane[j], w),
                            _mm512_loadu_ps(x16 + (static_cast<int64_t>(ix[j]) << 4)), a);
        c1 = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAll16, lane[j + 1], w),
                             _mm512_loadu_ps(x16 + (static_cast<int64_t>(ix[j + 1]) << 4)), c1);
        c2 = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAll16, lane[j + 2], w),
                             _mm512_loadu_ps(x16 + (static_cast<int64_t>(ix[j + 2]) << 4)), c2);
        c3 = _mm512_fmadd_ps(_mm512_maskz_permutexvar_ps(kAll16, lane[j + 3], w),
                             _mm512_loadu_ps(x16 + (static_cast<int64_t>(ix[j + 3]) << 4)), c3);
      }
    }
    for (; k < k1; ++k)
      a = _mm512_fmadd_ps(_mm512_set1_ps(v[k]), _mm512_loadu_ps(x16 + (static_cast<int64_t>(idx[k]) << 4)), a);
    _mm512_storeu_ps(y16 + r * 16, _mm512_add_ps(_mm512_add_ps(a, c1), _mm512_add_ps(c2, c3)));
  }
}

// The library's 8-lane kernel (eight accumulators), rows [0, rows).
SK_AVX512 void pass8(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows, const float* x8,
                     float* y8) {
  __m256i lane[8];
  for (int j = 0; j < 8; ++j) lane[j] = _mm256_set1_epi32(j);
  for (int64_t r = 0; r < rows; ++r) {
    __m256 acc[8];
    for (int c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 8 <= k1; k += 8) {
      const __m256 w = _mm256_loadu_ps(v + k);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c)
        acc[c] = _mm256_fmadd_ps(_mm256_maskz_permutexvar_ps(kAll8, lane[c], w),
                                 _mm256_loadu_ps(x8 + (static_cast<int64_t>(idx[k + c]) << 3)), acc[c]);
    }
    for (; k < k1; ++k)
      acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(v[k]), _mm256_loadu_ps(x8 + (static_cast<int64_t>(idx[k]) << 3)),
                               acc[0]);
    __m256 s = acc[0];
    for (int c = 1; c < 8; ++c) s = _mm256_add_ps(s, acc[c]);
    _mm256_storeu_ps(y8 + r * 8, s);
  }
}

// The narrow tile's registers: its weight is the low lanes of the 16-lane
// broadcast (a cast, no instruction).
template <int W>
struct Tail;
template <>
struct Tail<8> {
  using Vec = __m256;
  static constexpr int kShift = 3;
  static SK_AVX512 inline Vec zero() { return _mm256_setzero_ps(); }
  static SK_AVX512 inline Vec fma(__m512 w, const float* p, Vec acc) {
    return _mm256_fmadd_ps(_mm512_castps512_ps256(w), _mm256_loadu_ps(p), acc);
  }
  static SK_AVX512 inline void store(float* out, const Vec* t) {
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3])));
  }
};
template <>
struct Tail<4> {
  using Vec = __m128;
  static constexpr int kShift = 2;
  static SK_AVX512 inline Vec zero() { return _mm_setzero_ps(); }
  static SK_AVX512 inline Vec fma(__m512 w, const float* p, Vec acc) {
    return _mm_fmadd_ps(_mm512_castps512_ps128(w), _mm_loadu_ps(p), acc);
  }
  static SK_AVX512 inline void store(float* out, const Vec* t) {
    _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(t[0], t[1]), _mm_add_ps(t[2], t[3])));
  }
};

// One pass over the 16-lane tile and a narrow tile of W_TAIL (8 or 4) lanes:
// per nonzero one index, one value broadcast, two row loads and two FMAs.
template <int W_TAIL>
SK_AVX512 void fused(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows, const float* x16,
                     const float* xt, float* y16, float* yt) {
  using T = Tail<W_TAIL>;
  __m512i lane[16];
  for (int j = 0; j < 16; ++j) lane[j] = _mm512_set1_epi32(j);
  for (int64_t r = 0; r < rows; ++r) {
    __m512 a[4];
    typename T::Vec t[4];
    for (int c = 0; c < 4; ++c) {
      a[c] = _mm512_setzero_ps();
      t[c] = T::zero();
    }
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 16 <= k1; k += 16) {
      const __m512 w = _mm512_loadu_ps(v + k);
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        const int64_t col = idx[k + j];
        const __m512 wj = _mm512_maskz_permutexvar_ps(kAll16, lane[j], w);
        a[j % 4] = _mm512_fmadd_ps(wj, _mm512_loadu_ps(x16 + (col << 4)), a[j % 4]);
        t[j % 4] = T::fma(wj, xt + (col << T::kShift), t[j % 4]);
      }
    }
    for (; k < k1; ++k) {
      const int64_t col = idx[k];
      const __m512 wk = _mm512_set1_ps(v[k]);
      a[0] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(x16 + (col << 4)), a[0]);
      t[0] = T::fma(wk, xt + (col << T::kShift), t[0]);
    }
    _mm512_storeu_ps(y16 + r * 16, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
    T::store(yt + r * W_TAIL, t);
  }
}

// ---- AVX2+FMA (CPUs without AVX-512: Zen 3): the library's kernels and one-pass pairs.
#define SK_AVX2 __attribute__((target("avx2,fma")))

// The library's tile_row16_avx2 (cpu_tiled.cpp): four nonzeros an iteration into four register pairs.
SK_AVX2 void pass16_avx2(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows, const float* x16,
                         float* y16) {
  for (int64_t r = 0; r < rows; ++r) {
    __m256 a[4][2];
    for (int c = 0; c < 4; ++c) a[c][0] = a[c][1] = _mm256_setzero_ps();
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 4 <= k1; k += 4) {
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const float* p = x16 + (static_cast<int64_t>(idx[k + c]) << 4);
        const __m256 w = _mm256_broadcast_ss(v + k + c);
        a[c][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p), a[c][0]);
        a[c][1] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8), a[c][1]);
      }
    }
    for (; k < k1; ++k) {
      const float* p = x16 + (static_cast<int64_t>(idx[k]) << 4);
      const __m256 w = _mm256_broadcast_ss(v + k);
      a[0][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p), a[0][0]);
      a[0][1] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8), a[0][1]);
    }
    for (int h = 0; h < 2; ++h)
      _mm256_storeu_ps(y16 + r * 16 + 8 * h,
                       _mm256_add_ps(_mm256_add_ps(a[0][h], a[1][h]), _mm256_add_ps(a[2][h], a[3][h])));
  }
}

SK_AVX2 inline void store_sum8(float* out, const __m256* t) {
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3])),
                                      _mm256_add_ps(_mm256_add_ps(t[4], t[5]), _mm256_add_ps(t[6], t[7]))));
}

// A narrow tile's registers: 8 lanes in a 256-bit register, 4 in a 128-bit one.
template <int W>
struct Narrow;
template <>
struct Narrow<8> {
  using Vec = __m256;
  static SK_AVX2 inline Vec zero() { return _mm256_setzero_ps(); }
  static SK_AVX2 inline Vec fma(const float* w, const float* x, Vec acc) {
    return _mm256_fmadd_ps(_mm256_broadcast_ss(w), _mm256_loadu_ps(x), acc);
  }
  static SK_AVX2 inline void store(float* out, const Vec* t) { store_sum8(out, t); }
};
template <>
struct Narrow<4> {
  using Vec = __m128;
  static SK_AVX2 inline Vec zero() { return _mm_setzero_ps(); }
  static SK_AVX2 inline Vec fma(const float* w, const float* x, Vec acc) {
    return _mm_fmadd_ps(_mm_broadcast_ss(w), _mm_loadu_ps(x), acc);
  }
  static SK_AVX2 inline void store(float* out, const Vec* t) {
    _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(_mm_add_ps(t[0], t[1]), _mm_add_ps(t[2], t[3])),
                                  _mm_add_ps(_mm_add_ps(t[4], t[5]), _mm_add_ps(t[6], t[7]))));
  }
};

// A narrow tile of W lanes in its own pass, eight nonzeros an iteration into
// eight registers: at W = 8 the library's tile_row8_avx2; at W = 4 a tile of
// 16 bytes a column (24 KiB at 1500 columns: L1).
template <int W>
SK_AVX2 void pass_narrow_avx2(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows,
                              const float* x_tile, float* y_tile) {
  using N = Narrow<W>;
  for (int64_t r = 0; r < rows; ++r) {
    typename N::Vec t[8];
    for (int c = 0; c < 8; ++c) t[c] = N::zero();
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 8 <= k1; k += 8) {
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) t[c] = N::fma(v + k + c, x_tile + static_cast<int64_t>(idx[k + c]) * W, t[c]);
    }
    for (; k < k1; ++k) t[0] = N::fma(v + k, x_tile + static_cast<int64_t>(idx[k]) * W, t[0]);
    N::store(y_tile + r * W, t);
  }
}

// Nonzero (weight w, column col) into a 16-lane register pair a and an
// 8-lane register t; and the 16-lane tile's four register pairs summed and stored.
SK_AVX2 inline void pair_add(__m256 w, int64_t col, const float* x16, const float* x8, __m256 (&a)[2], __m256& t) {
  a[0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x16 + (col << 4)), a[0]);
  a[1] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x16 + (col << 4) + 8), a[1]);
  t = _mm256_fmadd_ps(w, _mm256_loadu_ps(x8 + (col << 3)), t);
}

SK_AVX2 inline void store_pairs16(float* out, const __m256 (&a)[4][2]) {
  for (int h = 0; h < 2; ++h)
    _mm256_storeu_ps(out + 8 * h, _mm256_add_ps(_mm256_add_ps(a[0][h], a[1][h]), _mm256_add_ps(a[2][h], a[3][h])));
}

// One pass over both tiles that sums every lane in the two passes' order
// (each nonzero into the accumulator it has there): the same bits as
// two_passes_avx2, with 16 accumulators (all of AVX2's registers; the
// compiler keeps some in memory).
SK_AVX2 void pair_exact_avx2(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows,
                             const float* x16, const float* x8, float* y16, float* y8) {
  for (int64_t r = 0; r < rows; ++r) {
    __m256 a[4][2], t[8];
    for (int c = 0; c < 4; ++c) a[c][0] = a[c][1] = _mm256_setzero_ps();
    for (int c = 0; c < 8; ++c) t[c] = _mm256_setzero_ps();
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 8 <= k1; k += 8) {
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) pair_add(_mm256_broadcast_ss(v + k + c), idx[k + c], x16, x8, a[c % 4], t[c]);
    }
    for (; k + 4 <= k1; k += 4) {
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
#ifdef PLANT_PAIR_CHAIN
        // A planted bug for the test: the 8-lane tile's chain of the runs of
        // four differs from pass_narrow_avx2<8>'s (the same sum, other roundings).
        pair_add(_mm256_broadcast_ss(v + k + c), idx[k + c], x16, x8, a[c], t[c]);
#else
        pair_add(_mm256_broadcast_ss(v + k + c), idx[k + c], x16, x8, a[c], t[0]);
#endif
      }
    }
    for (; k < k1; ++k) pair_add(_mm256_broadcast_ss(v + k), idx[k], x16, x8, a[0], t[0]);
    store_pairs16(y16 + r * 16, a);
    store_sum8(y8 + r * 8, t);
  }
}

// One pass, four chains for each tile (12 accumulators): another order.
// kFromRegister: each run of eight values loaded once, each broadcast from
// the register by vpermps (one load fewer a nonzero, one shuffle more).
template <bool kFromRegister>
SK_AVX2 void pair4_avx2(const int32_t* ptr, const int32_t* idx, const float* v, int64_t rows, const float* x16,
                        const float* x8, float* y16, float* y8) {
  __m256i lane[8];
  for (int j = 0; j < 8; ++j) lane[j] = _mm256_set1_epi32(j);
  for (int64_t r = 0; r < rows; ++r) {
    __m256 a[4][2], t[4];
    for (int c = 0; c < 4; ++c) a[c][0] = a[c][1] = t[c] = _mm256_setzero_ps();
    int64_t k = ptr[r];
    const int64_t k1 = ptr[r + 1];
    for (; k + 8 <= k1; k += 8) {
      const __m256 w8 = _mm256_loadu_ps(v + k);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        const __m256 w = kFromRegister ? _mm256_permutevar8x32_ps(w8, lane[c]) : _mm256_broadcast_ss(v + k + c);
        pair_add(w, idx[k + c], x16, x8, a[c % 4], t[c % 4]);
      }
    }
    for (; k < k1; ++k) pair_add(_mm256_broadcast_ss(v + k), idx[k], x16, x8, a[0], t[0]);
    store_pairs16(y16 + r * 16, a);
    _mm256_storeu_ps(y8 + r * 8, _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3])));
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Plain variables, not a structured binding: C++17 lambdas cannot capture those.
  const standalone::Args args = standalone::parse_args(argc, argv, 201);
  const int64_t rows = args.rows, cols = args.cols;
  const double density = args.density;
  const int repeats = args.repeats;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const standalone::RandomCsr w = standalone::random_csr(rows, cols, density, rng);
  const standalone::lines<int32_t>& ptr = w.ptr;
  const standalone::lines<int32_t>& idx = w.idx;
  const standalone::lines<float>& v = w.values;
  const int64_t nnz = w.nnz();
  // x (cols, 20 lanes) and its three tiles: lanes 0-15; lanes 16-19 and four zeros; lanes 16-19.
  standalone::lines<float> x(cols * kLanes);
  for (float& e : x) e = uniform(rng);
  standalone::lines<float> x16(cols * 16), x8(cols * 8, 0.0f), x4(cols * 4);
  for (int64_t c = 0; c < cols; ++c)
    for (int j = 0; j < kLanes; ++j) {
      if (j < 16) x16[c * 16 + j] = x[c * kLanes + j];
      else x8[c * 8 + j - 16] = x4[c * 4 + j - 16] = x[c * kLanes + j];
    }
#ifdef PLANT_WRONG_TAIL_COLUMN
  // A planted bug for the test: the 4-lane tile's rows one column off.
  std::rotate(x4.begin(), x4.begin() + 4, x4.end());
#endif
  std::vector<double> ref(rows * kLanes, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k)
      for (int j = 0; j < kLanes; ++j) ref[r * kLanes + j] += static_cast<double>(v[k]) * x[idx[k] * kLanes + j];

  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("fma");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx512 && !avx2) {
    std::printf("this CPU has neither AVX-512F/VL nor AVX2+FMA: nothing to run\n");
    return 0;
  }
  std::printf("W %ldx%ld, density %.3f, %ld nonzeros, batch %d, one thread, medians of %d\n", (long)rows, (long)cols,
              density, (long)nnz, kLanes, repeats);
  std::printf("%-16s %10s %10s %12s %10s\n", "kernel", "us", "ns/nnz", "vs two", "max error");
  standalone::lines<float> y16(rows * 16), yt(rows * 8);
  bool ok = true, same_bits = true;
  double baseline = 0.0;
  const double per = static_cast<double>(std::max<int64_t>(nnz, 1));
  auto report = [&](const char* name, double seconds, int tail_width) {
    double error = 0.0;
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < kLanes; ++j) {
        const float got = j < 16 ? y16[r * 16 + j] : yt[r * tail_width + j - 16];
        error = std::max(error, std::fabs(got - ref[r * kLanes + j]));
      }
    if (!(error <= 1e-4)) ok = false;
    if (baseline == 0.0) baseline = seconds;
    std::printf("%-16s %10.1f %10.3f %11.2fx %10.1e\n", name, seconds * 1e6, seconds / per * 1e9,
                seconds > 0 ? baseline / seconds : 0.0, error);
  };
  auto cleared = [&] {
    std::fill(y16.begin(), y16.end(), NAN);
    std::fill(yt.begin(), yt.end(), NAN);
  };
  // Timed, then run once more on cleared outputs and checked.
  auto measure = [&](const char* name, auto kernel, int tail_width) {
    const double seconds = standalone::median_seconds(kernel, repeats);
    cleared();
    kernel();
    report(name, seconds, tail_width);
  };
  if (avx512) {
    auto two = [&] {
      pass16(ptr.data(), idx.data(), v.data(), rows, x16.data(), y16.data());
      pass8(ptr.data(), idx.data(), v.data(), rows, x8.data(), yt.data());
    };
    auto f8 = [&] { fused<8>(ptr.data(), idx.data(), v.data(), rows, x16.data(), x8.data(), y16.data(), yt.data()); };
    auto f4 = [&] { fused<4>(ptr.data(), idx.data(), v.data(), rows, x16.data(), x4.data(), y16.data(), yt.data()); };
    measure("two_passes", two, 8);
    measure("fused16+8", f8, 8);
    measure("fused16+4", f4, 4);
  }
  if (avx2) {
    baseline = 0.0;
    auto two = [&] {
      pass16_avx2(ptr.data(), idx.data(), v.data(), rows, x16.data(), y16.data());
      pass_narrow_avx2<8>(ptr.data(), idx.data(), v.data(), rows, x8.data(), yt.data());
    };
    measure("two_passes_avx2", two, 8);
    const std::vector<float> two16(y16.begin(), y16.end()), two8(yt.begin(), yt.end());
    auto exact = [&] {
      pair_exact_avx2(ptr.data(), idx.data(), v.data(), rows, x16.data(), x8.data(), y16.data(), yt.data());
    };
    measure("pair_exact_avx2", exact, 8);
    // Its point is the two passes' bits: any difference is a failure.
    if (!std::equal(two16.begin(), two16.end(), y16.begin()) || !std::equal(two8.begin(), two8.end(), yt.begin())) {
      std::printf("FAILED: pair_exact_avx2 differs from two_passes_avx2 in some bit\n");
      same_bits = false;
    }
    auto p4 = [&] {
      pair4_avx2<false>(ptr.data(), idx.data(), v.data(), rows, x16.data(), x8.data(), y16.data(), yt.data());
    };
    auto p4r = [&] {
      pair4_avx2<true>(ptr.data(), idx.data(), v.data(), rows, x16.data(), x8.data(), y16.data(), yt.data());
    };
    measure("pair4_avx2", p4, 8);
    measure("pair4_perm_avx2", p4r, 8);
    auto two4 = [&] {
      pass16_avx2(ptr.data(), idx.data(), v.data(), rows, x16.data(), y16.data());
      pass_narrow_avx2<4>(ptr.data(), idx.data(), v.data(), rows, x4.data(), yt.data());
    };
    measure("passes16+4_avx2", two4, 4);
  }
  if (!ok) std::printf("FAILED: a kernel's result differs from the float64 sum by more than 1e-4\n");
  return ok && same_bits ? 0 : 1;
}
