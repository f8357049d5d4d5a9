// Batch-1 product y = W x on the CPU, one thread: the library's two float32
// loops against column-blocked layouts that read x from registers (issue #18,
// BENCHMARKS.md "Session O"). A standalone program, not part of the build:
//
//   g++ -O3 -std=c++17 -Wno-psabi -o /tmp/batch1_layouts benchmarks/standalone/batch1_layouts.cpp
//   taskset -c 1 /tmp/batch1_layouts [rows cols density [repeats]]
//
// W is random: each entry kept with probability `density`, columns sorted,
// values uniform in (-1, 1). Every kernel's result is compared with a float64
// sum; the program exits with status 1 if any differs by more than 1e-4 (so
// tests/test_standalone_layouts.py can run it as a check of the kernels).
//
// Kernels:
//   csr          the library's CSR loop (cpu_gathered.cpp: x gathered by scalar loads, 8 per register)
//   sell8        the library's sliced-ELLPACK view (slices of 8 rows, the same gathers)
//   blk32x16     slices of 16 rows, 32-column blocks: each slot holds, for each of the 16 rows, one entry
//                of the block (a uint8 offset and its value; value 0 where the row has no more entries
//                there); the block's 32 x values sit in two registers and one vpermt2ps gathers a slot
//   blk64x16     the same with 64-column blocks (four registers, two permutes and a blend a slot):
//                fewer padding slots (fewer bytes) for a few more instructions
//   blk64x8      64-column blocks, slices of 8 rows (the library's slice height), 8-lane sums
//   packed32x16  32-column blocks without padding bytes: a 16-bit lane mask per slot and the entries
//                expanded by vexpandps / vpexpandb from memory
//
// The blocked kernels need AVX-512F, VL and BW (packed32x16 also VBMI2); on a
// CPU without them the program runs the first two and says so.
#include <immintrin.h>

// GCC 12 warns (-Wall) that the "undefined" source operand of the unmasked
// AVX-512 intrinsics' expansions may be uninitialized; none of it is read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "random_csr.h"

namespace {

// ---- the library's loops (copied from csrc/cpu/cpu_gathered.cpp) ----
__attribute__((target("avx2,fma"), always_inline)) inline __m128 load_four(const float* x, uint64_t p0, uint64_t p1) {
  __m128 q = _mm_load_ss(x + (p0 & 0xffffffffu));
  q = _mm_insert_ps(q, _mm_load_ss(x + (p0 >> 32)), 0x10);
  q = _mm_insert_ps(q, _mm_load_ss(x + (p1 & 0xffffffffu)), 0x20);
  return _mm_insert_ps(q, _mm_load_ss(x + (p1 >> 32)), 0x30);
}

__attribute__((target("avx2,fma"), always_inline)) inline __m256 load_gathered8(const float* x, const int32_t* idx) {
  uint64_t p0, p1, p2, p3;
  std::memcpy(&p0, idx, 8);
  std::memcpy(&p1, idx + 2, 8);
  std::memcpy(&p2, idx + 4, 8);
  std::memcpy(&p3, idx + 6, 8);
  return _mm256_set_m128(load_four(x, p2, p3), load_four(x, p0, p1));
}

__attribute__((target("avx2,fma"))) void csr_kernel(const int32_t* ptr, const int32_t* idx, const float* v,
                                                    const float* x, float* out, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int32_t k = ptr[r];
    const int32_t k1 = ptr[r + 1];
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
    out[r] = sum;
  }
}

__attribute__((target("avx2,fma"))) void sell8_kernel(const float* v, const int32_t* cols, const int64_t* sp,
                                                      int64_t slices, const float* x, float* out) {
  for (int64_t i = 0; i < slices; ++i) {
    const int64_t o = sp[i], length = (sp[i + 1] - o) / 8;
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

// ---- column-blocked layouts ----
// Per slice of `lanes` rows: segments (a column block with entries, and its
// slot count L = the most entries any of the slice's rows has in the block),
// then L slots of `lanes` (offset within the block, value) pairs, padded with
// (0, 0.0f). packed: no padding pairs, a lane mask per slot instead.
struct Blocked {
  int lanes = 16, block = 32;
  bool packed = false;
  std::vector<int64_t> seg_ptr{0};
  standalone::lines<int32_t> seg_block, seg_len;
  standalone::lines<uint16_t> mask;
  standalone::lines<uint8_t> off;
  standalone::lines<float> val;
  int64_t slots() const { return packed ? static_cast<int64_t>(mask.size()) : static_cast<int64_t>(val.size()) / lanes; }
  double bytes() const { return 4.0 * val.size() + off.size() + 2.0 * mask.size() + 8.0 * seg_block.size(); }
};

Blocked build_blocked(const standalone::lines<int32_t>& ptr, const standalone::lines<int32_t>& idx,
                      const standalone::lines<float>& v, int64_t rows, int64_t cols, int lanes, int block,
                      bool packed) {
  Blocked b;
  b.lanes = lanes;
  b.block = block;
  b.packed = packed;
  const int64_t blocks = (cols + block - 1) / block;
  for (int64_t r0 = 0; r0 < rows; r0 += lanes) {
    std::vector<std::vector<std::pair<uint8_t, float>>> cell(blocks * lanes);
    for (int64_t r = r0; r < std::min(rows, r0 + lanes); ++r)
      for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k)
        cell[(idx[k] / block) * lanes + (r - r0)].push_back({static_cast<uint8_t>(idx[k] % block), v[k]});
    for (int64_t c = 0; c < blocks; ++c) {
      size_t length = 0;
      for (int l = 0; l < lanes; ++l) length = std::max(length, cell[c * lanes + l].size());
      if (length == 0) continue;
      b.seg_block.push_back(static_cast<int32_t>(c));
      b.seg_len.push_back(static_cast<int32_t>(length));
      for (size_t q = 0; q < length; ++q) {
        uint16_t m = 0;
        for (int l = 0; l < lanes; ++l) {
          const auto& e = cell[c * lanes + l];
          if (packed) {
            if (q < e.size()) {
              m |= static_cast<uint16_t>(1u << l);
              b.off.push_back(e[q].first);
              b.val.push_back(e[q].second);
            }
          } else {
            b.off.push_back(q < e.size() ? e[q].first : 0);
            b.val.push_back(q < e.size() ? e[q].second : 0.0f);
          }
        }
        if (packed) b.mask.push_back(m);
      }
    }
    b.seg_ptr.push_back(static_cast<int64_t>(b.seg_block.size()));
  }
  if (packed) {  // the expand loads may read up to 16 entries past the last
    b.off.resize(b.off.size() + 16, 0);
    b.val.resize(b.val.size() + 16, 0.0f);
  }
  return b;
}

// 16 rows, 32-column blocks: two slots an iteration into two accumulators;
// the segments alternate between two accumulator pairs (four chains).
__attribute__((target("avx512f,avx512vl,avx512bw,fma"))) void blk32x16_kernel(const Blocked& b, const float* x,
                                                                             float* out) {
  const uint8_t* off = b.off.data();
  const float* val = b.val.data();
  int64_t slot = 0;
  for (size_t s = 0; s + 1 < b.seg_ptr.size(); ++s) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = b.seg_ptr[s]; g < b.seg_ptr[s + 1]; ++g) {
      const float* xb = x + 32 * static_cast<int64_t>(b.seg_block[g]);
      const __m512 xl = _mm512_loadu_ps(xb), xh = _mm512_loadu_ps(xb + 16);
      const int32_t length = b.seg_len[g];
      int32_t l = 0;
      for (; l + 2 <= length; l += 2, slot += 2) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(off + 16 * slot)));
        const __m512i i1 =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(off + 16 * slot + 16)));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + 16 * slot), _mm512_permutex2var_ps(xl, i0, xh), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + 16 * slot + 16), _mm512_permutex2var_ps(xl, i1, xh), a1);
      }
      if (l < length) {
        const __m512i i0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(off + 16 * slot)));
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(val + 16 * slot), _mm512_permutex2var_ps(xl, i0, xh), a2);
        ++slot;
      }
      std::swap(a0, a3);
      std::swap(a1, a2);
    }
    _mm512_storeu_ps(out + 16 * s, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

// x[block + i[lane]] for 16 lanes, i in [0, 64): two 32-entry permutes, bit 5 picks.
__attribute__((target("avx512f,avx512vl,avx512bw,fma"), always_inline)) inline __m512 lanes64x16(
    const uint8_t* off, const __m512 (&xr)[4]) {
  const __m512i i = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(off)));
#ifdef PLANT_WRONG_HALF  // tests/test_standalone_layouts.py: the check must catch a wrong half of the block
  const __mmask16 high = _mm512_test_epi32_mask(i, _mm512_set1_epi32(16));
#else
  const __mmask16 high = _mm512_test_epi32_mask(i, _mm512_set1_epi32(32));
#endif
  return _mm512_mask_blend_ps(high, _mm512_permutex2var_ps(xr[0], i, xr[1]), _mm512_permutex2var_ps(xr[2], i, xr[3]));
}

__attribute__((target("avx512f,avx512vl,avx512bw,fma"))) void blk64x16_kernel(const Blocked& b, const float* x,
                                                                             float* out) {
  const uint8_t* off = b.off.data();
  const float* val = b.val.data();
  int64_t slot = 0;
  for (size_t s = 0; s + 1 < b.seg_ptr.size(); ++s) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = b.seg_ptr[s]; g < b.seg_ptr[s + 1]; ++g) {
      const float* xb = x + 64 * static_cast<int64_t>(b.seg_block[g]);
      const __m512 xr[4] = {_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16), _mm512_loadu_ps(xb + 32),
                            _mm512_loadu_ps(xb + 48)};
      const int32_t length = b.seg_len[g];
      int32_t l = 0;
      for (; l + 2 <= length; l += 2, slot += 2) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(val + 16 * slot), lanes64x16(off + 16 * slot, xr), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(val + 16 * slot + 16), lanes64x16(off + 16 * slot + 16, xr), a1);
      }
      if (l < length) {
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(val + 16 * slot), lanes64x16(off + 16 * slot, xr), a2);
        ++slot;
      }
      std::swap(a0, a3);
      std::swap(a1, a2);
    }
    _mm512_storeu_ps(out + 16 * s, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

__attribute__((target("avx512f,avx512vl,avx512bw,fma"), always_inline)) inline __m256 lanes64x8(
    const uint8_t* off, const __m512 (&xr)[4]) {
  const __m256i i = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(off)));
  const __m512i iz = _mm512_castsi256_si512(i);
  const __m256 lo = _mm512_castps512_ps256(_mm512_permutex2var_ps(xr[0], iz, xr[1]));
  const __m256 hi = _mm512_castps512_ps256(_mm512_permutex2var_ps(xr[2], iz, xr[3]));
  return _mm256_mask_blend_ps(_mm256_test_epi32_mask(i, _mm256_set1_epi32(32)), lo, hi);
}

__attribute__((target("avx512f,avx512vl,avx512bw,fma"))) void blk64x8_kernel(const Blocked& b, const float* x,
                                                                            float* out) {
  const uint8_t* off = b.off.data();
  const float* val = b.val.data();
  int64_t slot = 0;
  for (size_t s = 0; s + 1 < b.seg_ptr.size(); ++s) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t g = b.seg_ptr[s]; g < b.seg_ptr[s + 1]; ++g) {
      const float* xb = x + 64 * static_cast<int64_t>(b.seg_block[g]);
      const __m512 xr[4] = {_mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16), _mm512_loadu_ps(xb + 32),
                            _mm512_loadu_ps(xb + 48)};
      const int32_t length = b.seg_len[g];
      int32_t l = 0;
      for (; l + 2 <= length; l += 2, slot += 2) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(val + 8 * slot), lanes64x8(off + 8 * slot, xr), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(val + 8 * slot + 8), lanes64x8(off + 8 * slot + 8, xr), a1);
      }
      if (l < length) {
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(val + 8 * slot), lanes64x8(off + 8 * slot, xr), a2);
        ++slot;
      }
      std::swap(a0, a3);
      std::swap(a1, a2);
    }
    _mm256_storeu_ps(out + 8 * s, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  }
}

__attribute__((target("avx512f,avx512vl,avx512bw,avx512vbmi2,fma"))) void packed32x16_kernel(const Blocked& b,
                                                                                           const float* x,
                                                                                           float* out) {
  const uint16_t* mk = b.mask.data();
  const uint8_t* off = b.off.data();
  const float* val = b.val.data();
  int64_t slot = 0, e = 0;
  for (size_t s = 0; s + 1 < b.seg_ptr.size(); ++s) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int64_t g = b.seg_ptr[s]; g < b.seg_ptr[s + 1]; ++g) {
      const float* xb = x + 32 * static_cast<int64_t>(b.seg_block[g]);
      const __m512 xl = _mm512_loadu_ps(xb), xh = _mm512_loadu_ps(xb + 16);
      for (int32_t l = 0; l < b.seg_len[g]; ++l, ++slot) {
        const __mmask16 m = mk[slot];
        const __m512i i = _mm512_cvtepu8_epi32(_mm_maskz_expandloadu_epi8(m, off + e));
        const __m512 p = _mm512_mul_ps(_mm512_maskz_expandloadu_ps(m, val + e), _mm512_permutex2var_ps(xl, i, xh));
        if (l & 1) a1 = _mm512_add_ps(a1, p); else a0 = _mm512_add_ps(a0, p);
        e += __builtin_popcount(m);
      }
    }
    _mm512_storeu_ps(out + 16 * s, _mm512_add_ps(a0, a1));
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Plain variables, not a structured binding: C++17 lambdas cannot capture those.
  const standalone::Args args = standalone::parse_args(argc, argv, 301);
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
  // x padded to whole 64-column blocks plus the sliced view's zero padding column.
  standalone::lines<float> x((cols + 63) / 64 * 64 + 1, 0.0f);
  for (int64_t j = 0; j < cols; ++j) x[j] = uniform(rng);
  std::vector<double> ref(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) ref[r] += static_cast<double>(v[k]) * x[idx[k]];

  // The library's SELL-8 view: slices of 8 rows, padding column `cols`.
  const int64_t slices8 = (rows + 7) / 8;
  std::vector<int64_t> sp8(slices8 + 1, 0);
  for (int64_t s = 0; s < slices8; ++s) {
    int64_t longest = 0;
    for (int64_t r = 8 * s; r < std::min(rows, 8 * s + 8); ++r) longest = std::max<int64_t>(longest, ptr[r + 1] - ptr[r]);
    sp8[s + 1] = sp8[s] + 8 * longest;
  }
  standalone::lines<float> v8(sp8[slices8], 0.0f);
  standalone::lines<int32_t> c8(sp8[slices8], static_cast<int32_t>(cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) {
      const int64_t p = sp8[r / 8] + 8 * (k - ptr[r]) + r % 8;
      v8[p] = v[k];
      c8[p] = idx[k];
    }

  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw");
  const bool vbmi2 = avx512 && __builtin_cpu_supports("avx512vbmi2");
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::printf("this CPU has no AVX2+FMA: nothing to run\n");
    return 0;
  }
  std::printf("W %ldx%ld, density %.3f, %ld nonzeros (CSR: 8 bytes each), one thread, medians of %d\n", (long)rows,
              (long)cols, density, (long)nnz, repeats);
  std::printf("%-12s %10s %10s %12s %10s %10s\n", "kernel", "us", "ns/nnz", "slots/nnz", "bytes/nnz", "max error");
  bool ok = true;
  const double per = static_cast<double>(std::max<int64_t>(nnz, 1));  // per-nonzero figures of an empty W: 0
  auto report = [&](const char* name, double seconds, double slots, double bytes, const float* out) {
    double error = 0.0;
    for (int64_t r = 0; r < rows; ++r) error = std::max(error, std::fabs(out[r] - ref[r]));
    ok = ok && error <= 1e-4;
    std::printf("%-12s %10.1f %10.3f %12.2f %10.2f %10.1e\n", name, seconds * 1e6, seconds / per * 1e9, slots, bytes,
                error);
  };
  standalone::lines<float> out((rows + 15) / 16 * 16, 0.0f);
  auto cleared = [&]() -> float* { std::fill(out.begin(), out.end(), NAN); return out.data(); };
  report("csr", standalone::median_seconds([&] { csr_kernel(ptr.data(), idx.data(), v.data(), x.data(), out.data(), rows); }, repeats),
         1.0, 8.0, (csr_kernel(ptr.data(), idx.data(), v.data(), x.data(), cleared(), rows), out.data()));
  report("sell8", standalone::median_seconds([&] { sell8_kernel(v8.data(), c8.data(), sp8.data(), slices8, x.data(), out.data()); }, repeats),
         sp8[slices8] / per, 8.0 * sp8[slices8] / per,
         (sell8_kernel(v8.data(), c8.data(), sp8.data(), slices8, x.data(), cleared()), out.data()));
  if (!avx512) {
    std::printf("no AVX-512F/VL/BW on this CPU: the blocked kernels were not run\n");
    return ok ? 0 : 1;
  }
  struct Variant {
    const char* name;
    int lanes, block;
    bool packed;
    void (*kernel)(const Blocked&, const float*, float*);
  };
  const Variant variants[] = {{"blk32x16", 16, 32, false, blk32x16_kernel},
                              {"blk64x16", 16, 64, false, blk64x16_kernel},
                              {"blk64x8", 8, 64, false, blk64x8_kernel},
                              {"packed32x16", 16, 32, true, vbmi2 ? packed32x16_kernel : nullptr}};
  for (const Variant& variant : variants) {
    if (variant.kernel == nullptr) continue;
    const Blocked b = build_blocked(ptr, idx, v, rows, cols, variant.lanes, variant.block, variant.packed);
    const double seconds = standalone::median_seconds([&] { variant.kernel(b, x.data(), out.data()); }, repeats);
    variant.kernel(b, x.data(), cleared());
    report(variant.name, seconds, b.slots() * variant.lanes / per, b.bytes() / per, out.data());
  }
  if (!ok) std::printf("FAILED: a kernel's result differs from the float64 sum by more than 1e-4\n");
  return ok ? 0 : 1;
}
