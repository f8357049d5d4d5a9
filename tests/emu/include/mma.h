// Emulated CUDA WMMA (nvcuda::wmma, <mma.h>): the warp-level matrix
// operations the tensor-core kernels use, for the CPU emulator (see
// cuda_runtime.h). Test-only.
//
// How a fragment's elements are spread over the lanes is unspecified in
// CUDA, and the kernels never index fragment elements; here every lane holds
// the whole tile (as float: exact for fp16/bf16 inputs, and the accumulators
// are fp32). load_matrix_sync, store_matrix_sync and mma_sync are warp
// collectives, as on the device: each is a __syncwarp-style synchronisation
// point at its call site, so a lane missing from one (divergence) is
// reported as a launch failure. mma_sync multiplies in fp32, as the tensor
// cores do for fp16/bf16 inputs (products exact, fp32 sums).
#pragma once

#include <source_location>
#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"

namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int kRows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int kCols = std::is_same_v<Use, matrix_a> ? K : N;
  float x[kRows * kCols];  // the whole tile, row-major
};

namespace detail {
inline void warp_point(const std::source_location& where) {
  ::sk_emu::sk_syncwarp(where.file_name(), static_cast<int>(where.line()));
}
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (float& e : f.x) e = v;
}

// matrix_a / matrix_b: the layout is the fragment's.
template <typename Use, int M, int N, int K, typename T, typename Layout, typename Src>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const Src* p, unsigned ldm,
                      std::source_location where = std::source_location::current()) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  static_assert(std::is_same_v<Src, T>, "the pointer's type must be the fragment's");
  detail::warp_point(where);
  using F = fragment<Use, M, N, K, T, Layout>;
  for (int r = 0; r < F::kRows; ++r)
    for (int c = 0; c < F::kCols; ++c)
      f.x[r * F::kCols + c] = detail::to_float(
          std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout,
                       std::source_location where = std::source_location::current()) {
  detail::warp_point(where);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b, const fragment<accumulator, M, N, K, float>& c,
              std::source_location where = std::source_location::current()) {
  detail::warp_point(where);
  float result[M * N];
  for (int r = 0; r < M; ++r) {
    for (int col = 0; col < N; ++col) {
      float sum = c.x[r * N + col];
      for (int k = 0; k < K; ++k) sum += a.x[r * K + k] * b.x[k * N + col];
      result[r * N + col] = sum;
    }
  }
  for (int e = 0; e < M * N; ++e) d.x[e] = result[e];
}

}  // namespace nvcuda::wmma
