// The batch-1 input gradient by scatter, grad_x = W^T grad_y, one thread:
// three loops (issue #18, BENCHMARKS.md "Session S" and "Session X"), among
// them the library's (csrc/include/sparse_kernels/cpu_spmm.h, scatter_rows at
// n = 1: loads8 since session X). A standalone program, not part of the build:
//
//   g++ -O3 -std=c++17 -Wno-psabi -o /tmp/batch1_scatter benchmarks/standalone/batch1_scatter.cpp
//   taskset -c 1 /tmp/batch1_scatter [rows cols density [repeats]]
//
// W is random: each entry kept with probability `density`, columns sorted,
// values uniform in (-1, 1); grad_y uniform too. Every kernel's result is
// compared with a float64 sum; the program exits with status 1 if any entry
// differs by more than 1e-4 (tests/test_standalone_layouts.py runs it as a
// check of the kernels).
//
// Kernels:
//   one_by_one   one load, multiply-add and store of grad_x per nonzero (the
//                library's loop from session S to W; named "library" then)
//   loads8       eight nonzeros' grad_x entries loaded before any is stored
//                (the columns of one row are distinct, so no store feeds a load
//                of the same group): the library's loop since session X
//   avx512       16 nonzeros of a row at a time: vgatherdps of grad_x, one FMA,
//                vscatterdps back (no conflicts within a row, for the same
//                reason); the last run of a row masked
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "random_csr.h"

namespace {

using Kernel = void (*)(const int32_t*, const int32_t*, const float*, const float*, float*, int64_t);

__attribute__((noinline)) void one_by_one(const int32_t* ptr, const int32_t* idx, const float* v, const float* g,
                                       float* out, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float gr = g[r];
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) out[idx[k]] += v[k] * gr;
  }
}

__attribute__((noinline)) void loads8(const int32_t* ptr, const int32_t* idx, const float* v, const float* g,
                                      float* out, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float gr = g[r];
    int32_t k = ptr[r];
    for (; k + 8 <= ptr[r + 1]; k += 8) {
      float sums[8];
      for (int u = 0; u < 8; ++u) sums[u] = out[idx[k + u]] + v[k + u] * gr;
      for (int u = 0; u < 8; ++u) out[idx[k + u]] = sums[u];
    }
    for (; k < ptr[r + 1]; ++k) out[idx[k]] += v[k] * gr;
  }
}

__attribute__((noinline, target("avx512f"))) void avx512(const int32_t* ptr, const int32_t* idx, const float* v,
                                                         const float* g, float* out, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 gr = _mm512_set1_ps(g[r]);
    int32_t k = ptr[r];
    const int32_t end = ptr[r + 1];
    for (; k + 16 <= end; k += 16) {
      const __m512i cols = _mm512_loadu_si512(idx + k);
      // The masked form with every lane set: GCC 12 warns that the unmasked
      // intrinsic's "undefined" source may be uninitialized.
      const __m512 old = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, cols, out, 4);
      const __m512 sums = _mm512_fmadd_ps(_mm512_loadu_ps(v + k), gr, old);
      _mm512_i32scatter_ps(out, cols, sums, 4);
    }
    if (k < end) {
#ifdef PLANT_SHORT_TAIL
      // A planted bug for the test: the masked tail drops a row's last nonzero.
      const __mmask16 m = static_cast<__mmask16>((1u << (end - k - 1)) - 1);
#else
      const __mmask16 m = static_cast<__mmask16>((1u << (end - k)) - 1);
#endif
      const __m512i cols = _mm512_maskz_loadu_epi32(m, idx + k);
      const __m512 old = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, cols, out, 4);
      _mm512_mask_i32scatter_ps(out, m, cols, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, v + k), gr, old), 4);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const standalone::Args args = standalone::parse_args(argc, argv, 51);
  const int64_t rows = args.rows, cols = args.cols;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const standalone::RandomCsr w = standalone::random_csr(rows, cols, args.density, rng);
  standalone::lines<float> g(rows);
  for (float& e : g) e = uniform(rng);
  std::vector<double> ref(cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t k = w.ptr[r]; k < w.ptr[r + 1]; ++k) ref[w.idx[k]] += static_cast<double>(w.values[k]) * g[r];

  __builtin_cpu_init();
  const bool has_avx512 = __builtin_cpu_supports("avx512f");
  std::printf("W %ldx%ld, density %.3f, %ld nonzeros, batch 1, one thread, medians of %d\n", (long)rows, (long)cols,
              args.density, (long)w.nnz(), args.repeats);
  std::printf("%-12s %10s %10s %12s %10s\n", "kernel", "us", "ns/nnz", "vs one_by_one", "max error");
  standalone::lines<float> out(cols);
  bool ok = true;
  double baseline = 0.0;
  const double per = static_cast<double>(std::max<int64_t>(w.nnz(), 1));
  auto measure = [&](const char* name, Kernel kernel) {
    auto call = [&] {
      std::fill(out.begin(), out.end(), 0.0f);
      kernel(w.ptr.data(), w.idx.data(), w.values.data(), g.data(), out.data(), rows);
    };
    const double seconds = standalone::median_seconds(call, args.repeats);
    call();
    double error = 0.0;
    for (int64_t c = 0; c < cols; ++c) error = std::max(error, std::fabs(out[c] - ref[c]));
    if (!(error <= 1e-4)) ok = false;
    if (baseline == 0.0) baseline = seconds;
    std::printf("%-12s %10.1f %10.3f %11.2fx %10.1e\n", name, seconds * 1e6, seconds / per * 1e9,
                seconds > 0 ? baseline / seconds : 0.0, error);
  };
  measure("one_by_one", one_by_one);
  measure("loads8", loads8);
  if (has_avx512) measure("avx512", avx512);
  else std::printf("no AVX-512F on this CPU: the avx512 kernel is not run\n");
  if (!ok) std::printf("FAILED: a kernel's result differs from the float64 sum by more than 1e-4\n");
  return ok ? 0 : 1;
}
