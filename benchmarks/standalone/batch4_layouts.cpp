// Batch 2-4 product y = x W^T on the CPU, one thread: the library's batch-4
// path (x^T padded to an 8-lane tile: one broadcast value and one 256-bit FMA
// a nonzero, half the lanes idle at batch 4) against a 4-lane tile and the
// column-blocked view of batch 1 (session O) run for B rows of x at once
// (issue #18, BENCHMARKS.md "Session U"). A standalone program, not part of
// the build:
//
//   g++ -O3 -std=c++17 -Wno-psabi -o /tmp/batch4_layouts benchmarks/standalone/batch4_layouts.cpp
//   taskset -c 1 /tmp/batch4_layouts [rows cols density [repeats]]
//
// W is random (random_csr.h). Every kernel's result is compared with a float64
// sum; the program exits with status 1 if any differs by more than 1e-4 (so
// tests/test_standalone_layouts.py can run it as a check of the kernels).
//
// Kernels, each at B = 2, 3 and 4 rows of x (the name's suffix):
//   tile8    the library's 8-lane tile loop (cpu_tiled.cpp's AVX2 form): x^T (cols, 8), eight accumulators
//   tile4    the same over x^T (cols, 4) in 128-bit registers (x^T half the bytes: 32 KB at 2048 columns)
//   blk64    slices of 16 rows, 64-column blocks (the library's blocked view): a slot's 16 offsets decoded
//            once, then per row of x two permutes, a blend and an FMA
//   blk32    32-column blocks: one two-source permute per row of x and slot, more padding slots
//   blk16    16-column blocks: one one-source permute per row of x and slot, more padding slots still
//
// The blocked kernels need AVX-512F, VL and BW; on a CPU without them the
// program runs the tiles only and says so.
#include <immintrin.h>

// GCC 12 warns (-Wall) that the "undefined" source operand of the unmasked
// AVX-512 intrinsics' expansions may be uninitialized; none of it is read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "random_csr.h"

namespace {

constexpr uint8_t kPad = 0x40;  // a padding entry's offset (value 0, masked out), as cpu_sliced.h

// Per slice of 16 rows: segments (a column block with entries, its slot count
// = the most entries any of the 16 rows has there), then that many slots of
// 16 (offset in the block, value) pairs, padded with (kPad, 0).
struct Blocked {
  int block = 64;
  std::vector<int64_t> seg_ptr{0};
  standalone::lines<int32_t> seg_block, seg_len;
  standalone::lines<uint8_t> off;
  standalone::lines<float> val;
  double slots_per_nnz(int64_t nnz) const { return nnz ? double(val.size()) / nnz : 0.0; }
  double bytes_per_nnz(int64_t nnz) const { return nnz ? (5.0 * val.size() + 8.0 * seg_block.size()) / nnz : 0.0; }
};

Blocked build_blocked(const standalone::RandomCsr& w, int64_t rows, int64_t cols, int block) {
  Blocked b;
  b.block = block;
  const int64_t blocks = (cols + block - 1) / block;
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    std::vector<std::vector<std::pair<uint8_t, float>>> cell(blocks * 16);
    for (int64_t r = r0; r < std::min(rows, r0 + 16); ++r)
      for (int32_t k = w.ptr[r]; k < w.ptr[r + 1]; ++k)
        cell[(w.idx[k] / block) * 16 + (r - r0)].push_back({static_cast<uint8_t>(w.idx[k] % block), w.values[k]});
    for (int64_t c = 0; c < blocks; ++c) {
      size_t length = 0;
      for (int l = 0; l < 16; ++l) length = std::max(length, cell[c * 16 + l].size());
      if (length == 0) continue;
      b.seg_block.push_back(static_cast<int32_t>(c));
      b.seg_len.push_back(static_cast<int32_t>(length));
      for (size_t q = 0; q < length; ++q)
        for (int l = 0; l < 16; ++l) {
          const auto& e = cell[c * 16 + l];
          b.off.push_back(q < e.size() ? e[q].first : kPad);
          b.val.push_back(q < e.size() ? e[q].second : 0.0f);
        }
    }
    b.seg_ptr.push_back(static_cast<int64_t>(b.seg_block.size()));
  }
  return b;
}

// ---- tiles: out_t (rows, L) = W x_t, x_t (cols, L) ----
__attribute__((noinline, target("avx2,fma"))) void tile8(const standalone::RandomCsr& w, int64_t rows,
                                                         const float* xt, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    __m256 a[8];
    for (__m256& q : a) q = _mm256_setzero_ps();
    int32_t k = w.ptr[r];
    const int32_t end = w.ptr[r + 1];
    for (; k + 8 <= end; k += 8)
      for (int j = 0; j < 8; ++j)
        a[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(&w.values[k + j]),
                               _mm256_loadu_ps(xt + 8 * static_cast<int64_t>(w.idx[k + j])), a[j]);
    for (; k < end; ++k)
      a[0] = _mm256_fmadd_ps(_mm256_broadcast_ss(&w.values[k]), _mm256_loadu_ps(xt + 8 * static_cast<int64_t>(w.idx[k])),
                             a[0]);
    _mm256_storeu_ps(out + 8 * r, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
                                                _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7]))));
  }
}

__attribute__((noinline, target("avx2,fma"))) void tile4(const standalone::RandomCsr& w, int64_t rows,
                                                         const float* xt, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    __m128 a[8];
    for (__m128& q : a) q = _mm_setzero_ps();
    int32_t k = w.ptr[r];
    const int32_t end = w.ptr[r + 1];
    for (; k + 8 <= end; k += 8)
      for (int j = 0; j < 8; ++j)
        a[j] = _mm_fmadd_ps(_mm_broadcast_ss(&w.values[k + j]),
                            _mm_loadu_ps(xt + 4 * static_cast<int64_t>(w.idx[k + j])), a[j]);
    for (; k < end; ++k)
      a[0] = _mm_fmadd_ps(_mm_broadcast_ss(&w.values[k]), _mm_loadu_ps(xt + 4 * static_cast<int64_t>(w.idx[k])), a[0]);
    _mm_storeu_ps(out + 4 * r, _mm_add_ps(_mm_add_ps(_mm_add_ps(a[0], a[1]), _mm_add_ps(a[2], a[3])),
                                          _mm_add_ps(_mm_add_ps(a[4], a[5]), _mm_add_ps(a[6], a[7]))));
  }
}

// ---- blocked: B rows of x (stride xs, zero past cols), B rows of out (stride os) ----
// x[block + offset] of a slot's 16 lanes for one row of x held in R registers
// (R = block / 16), 0 at padding lanes (masked: padding adds exactly 0).
template <int R>
__attribute__((always_inline, target("avx512f,avx512vl,avx512bw"))) inline __m512 slot_x(const __m512i o,
                                                                                          __mmask16 live,
                                                                                          const __m512* xr) {
  if constexpr (R == 1) {
    return _mm512_maskz_permutexvar_ps(live, o, xr[0]);
  } else if constexpr (R == 2) {
    return _mm512_maskz_permutex2var_ps(live, xr[0], o, xr[1]);
  } else {
    const __mmask16 high = _mm512_test_epi32_mask(o, _mm512_set1_epi32(32));
    return _mm512_mask_blend_ps(high, _mm512_maskz_permutex2var_ps(live, xr[0], o, xr[1]),
                                _mm512_maskz_permutex2var_ps(live, xr[2], o, xr[3]));
  }
}

// Each slot's offsets and values are read once for the B rows of x; two
// accumulators a row (even and odd slots), so 2B chains of FMAs.
template <int B, int R>
__attribute__((noinline, target("avx512f,avx512vl,avx512bw,fma"))) void blocked(const Blocked& b, const float* x,
                                                                                int64_t xs, float* out, int64_t os) {
  int64_t slot = 0;
  for (size_t s = 0; s + 1 < b.seg_ptr.size(); ++s) {
    __m512 even[B], odd[B];
    for (int l = 0; l < B; ++l) even[l] = odd[l] = _mm512_setzero_ps();
    for (int64_t g = b.seg_ptr[s]; g < b.seg_ptr[s + 1]; ++g) {
      __m512 xr[B][R];
      for (int l = 0; l < B; ++l) {
#ifdef PLANT_WRONG_ROW
        // A planted bug for the test: the last row of x reads the first row's block.
        const int source = l == B - 1 ? 0 : l;
#else
        const int source = l;
#endif
        const float* xb = x + source * xs + static_cast<int64_t>(b.block) * b.seg_block[g];
        for (int q = 0; q < R; ++q) xr[l][q] = _mm512_loadu_ps(xb + 16 * q);
      }
      for (int32_t q = 0; q < b.seg_len[g]; ++q, ++slot) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.off.data() + 16 * slot));
        const __mmask16 live = _mm_cmpneq_epi8_mask(bytes, _mm_set1_epi8(static_cast<char>(kPad)));
        const __m512i o = _mm512_maskz_cvtepu8_epi32(0xFFFF, bytes);
        const __m512 v = _mm512_loadu_ps(b.val.data() + 16 * slot);
        for (int l = 0; l < B; ++l) {
          const __m512 p = slot_x<R>(o, live, xr[l]);
          if (q & 1) odd[l] = _mm512_fmadd_ps(v, p, odd[l]); else even[l] = _mm512_fmadd_ps(v, p, even[l]);
        }
      }
    }
    for (int l = 0; l < B; ++l) _mm512_storeu_ps(out + l * os + 16 * s, _mm512_add_ps(even[l], odd[l]));
  }
}

struct Problem {
  const standalone::RandomCsr& w;
  int64_t rows, cols;
  int repeats;
  bool blocked_ok;
  const Blocked* views[3];  // 64, 32, 16 columns
  bool ok = true;
};

void report(Problem& p, const std::string& name, double seconds, double slots, double bytes, double error) {
  const double nnz = static_cast<double>(std::max<int64_t>(p.w.nnz(), 1));
  p.ok = p.ok && error <= 1e-4;
  std::printf("%-12s %10.1f %10.3f %12.2f %10.2f %10.1e\n", name.c_str(), seconds * 1e6, seconds / nnz * 1e9, slots,
              bytes, error);
}

template <int B>
void run_batch(Problem& p) {
  const int64_t rows = p.rows, cols = p.cols, nnz = p.w.nnz();
  std::mt19937 rng(100 + B);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int64_t xs = (cols + 63) / 64 * 64, os = (rows + 15) / 16 * 16;
  standalone::lines<float> x(B * xs, 0.0f), xt8(cols * 8, 0.0f), xt4(cols * 4, 0.0f);
  for (int l = 0; l < B; ++l)
    for (int64_t j = 0; j < cols; ++j) xt8[j * 8 + l] = xt4[j * 4 + l] = x[l * xs + j] = uniform(rng);
  std::vector<double> ref(B * rows, 0.0);
  for (int l = 0; l < B; ++l)
    for (int64_t r = 0; r < rows; ++r)
      for (int32_t k = p.w.ptr[r]; k < p.w.ptr[r + 1]; ++k) ref[l * rows + r] += double(p.w.values[k]) * x[l * xs + p.w.idx[k]];
  // out[l * lane_stride + r * row_stride] against the float64 sums, after a run on a NaN-filled buffer.
  standalone::lines<float> out(std::max<int64_t>(B * os, rows * 8));
  auto error_of = [&](auto&& call, int64_t lane_stride, int64_t row_stride) {
    std::fill(out.begin(), out.end(), NAN);
    call();
    double e = 0.0;
    for (int l = 0; l < B; ++l)
      for (int64_t r = 0; r < rows; ++r) {
        const double d = std::fabs(out[l * lane_stride + r * row_stride] - ref[l * rows + r]);
        e = std::isnan(d) ? INFINITY : std::max(e, d);
      }
    return e;
  };
  const std::string suffix = ".b" + std::to_string(B);
  auto tile8_call = [&] { tile8(p.w, rows, xt8.data(), out.data()); };
  auto tile4_call = [&] { tile4(p.w, rows, xt4.data(), out.data()); };
  report(p, "tile8" + suffix, standalone::median_seconds(tile8_call, p.repeats), 1.0, 8.0, error_of(tile8_call, 1, 8));
  report(p, "tile4" + suffix, standalone::median_seconds(tile4_call, p.repeats), 1.0, 8.0, error_of(tile4_call, 1, 4));
  if (!p.blocked_ok) return;
  auto blk64_call = [&] { blocked<B, 4>(*p.views[0], x.data(), xs, out.data(), os); };
  auto blk32_call = [&] { blocked<B, 2>(*p.views[1], x.data(), xs, out.data(), os); };
  auto blk16_call = [&] { blocked<B, 1>(*p.views[2], x.data(), xs, out.data(), os); };
  report(p, "blk64" + suffix, standalone::median_seconds(blk64_call, p.repeats), p.views[0]->slots_per_nnz(nnz),
         p.views[0]->bytes_per_nnz(nnz), error_of(blk64_call, os, 1));
  report(p, "blk32" + suffix, standalone::median_seconds(blk32_call, p.repeats), p.views[1]->slots_per_nnz(nnz),
         p.views[1]->bytes_per_nnz(nnz), error_of(blk32_call, os, 1));
  report(p, "blk16" + suffix, standalone::median_seconds(blk16_call, p.repeats), p.views[2]->slots_per_nnz(nnz),
         p.views[2]->bytes_per_nnz(nnz), error_of(blk16_call, os, 1));
}

}  // namespace

int main(int argc, char** argv) {
  const standalone::Args args = standalone::parse_args(argc, argv, 51);
  std::mt19937 rng(1);
  const standalone::RandomCsr w = standalone::random_csr(args.rows, args.cols, args.density, rng);
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::printf("this CPU has no AVX2+FMA: nothing to run\n");
    return 0;
  }
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw");
  const Blocked blk64 = build_blocked(w, args.rows, args.cols, 64), blk32 = build_blocked(w, args.rows, args.cols, 32),
                blk16 = build_blocked(w, args.rows, args.cols, 16);
  Problem p{w, args.rows, args.cols, args.repeats, avx512, {&blk64, &blk32, &blk16}};
  std::printf("W %ldx%ld, density %.3f, %ld nonzeros (CSR: 8 bytes each), one thread, medians of %d\n",
              static_cast<long>(args.rows), static_cast<long>(args.cols), args.density, static_cast<long>(w.nnz()),
              args.repeats);
  std::printf("%-12s %10s %10s %12s %10s %10s\n", "kernel", "us", "ns/nnz", "slots/nnz", "bytes/nnz", "max error");
  run_batch<2>(p);
  run_batch<3>(p);
  run_batch<4>(p);
  if (!avx512) std::printf("no AVX-512F/VL/BW on this CPU: the blocked kernels were not run\n");
  if (!p.ok) std::printf("FAILED: a kernel's result differs from the float64 sum by more than 1e-4\n");
  return p.ok ? 0 : 1;
}
