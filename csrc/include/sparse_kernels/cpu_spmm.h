// The CPU sparse-times-dense inner loops, with the batch on the SIMD lanes.
//
// Activations are used transposed, (features, N): then every stored nonzero
// multiplies a contiguous run of N batch values, which the compiler
// vectorises, instead of gathering one value per row of the batch. The same
// loop serves the forward product (CSR rows of W against x^T) and the input
// gradient (CSC columns of W against grad_y^T, values read through
// csr2csc); the value gradient is a contiguous dot product per nonzero.
//
// SIMD is chosen at run time (cpu_simd.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "sparse_kernels/cpu_simd.h"

namespace sparse_kernels::cpu {

// Row ranges holding about equal numbers of nonzeros, so that threads get
// equal work even when row lengths vary (several chunks per thread).
inline std::vector<int64_t> balanced_row_chunks(const int32_t* ptr, int64_t rows) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, 4 * at::get_num_threads()));
  const int64_t nnz = rows ? ptr[rows] : 0;
  // Each row also costs its output writes: weigh rows by nnz + 1 per N.
  const int64_t total = nnz + rows;
  std::vector<int64_t> bounds{0};
  int64_t r = 0;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t target = total * c / chunks;
    while (r < rows && ptr[r] + r < target) ++r;
    if (r > bounds.back()) bounds.push_back(r);
  }
  bounds.push_back(rows);
  return bounds;
}

// One row's output over batch columns [j0, j0 + W): acc += v * dense_t[idx, j0:j0+W]
// for every stored nonzero of the row; W is a compile-time width so that the
// accumulators live in vector registers.
template <typename T, int W, bool kPerm>
inline __attribute__((always_inline)) void row_tile(const int32_t* idx, const T* v,
                                                    const int32_t* perm, int32_t k0, int32_t k1,
                                                    const T* dense_t, int64_t n, int64_t j0, T b,
                                                    T* out) {
  T acc[W];
  for (int j = 0; j < W; ++j) acc[j] = b;
  if constexpr (W == 1) {
    // Batch 1: a gathered dot product; four partial sums break the
    // dependency chain of the additions.
    T part[4] = {T(0), T(0), T(0), T(0)};
    int32_t k = k0;
    for (; k + 4 <= k1; k += 4) {
      for (int u = 0; u < 4; ++u) {
        const int32_t kk = k + u;
        part[u] += v[kPerm ? perm[kk] : kk] * dense_t[static_cast<int64_t>(idx[kk]) * n + j0];
      }
    }
    for (; k < k1; ++k) part[0] += v[kPerm ? perm[k] : k] * dense_t[static_cast<int64_t>(idx[k]) * n + j0];
    acc[0] += (part[0] + part[1]) + (part[2] + part[3]);
  } else {
    for (int32_t k = k0; k < k1; ++k) {
      const T w = v[kPerm ? perm[k] : k];
      const T* d = dense_t + static_cast<int64_t>(idx[k]) * n + j0;
#pragma omp simd
      for (int j = 0; j < W; ++j) acc[j] += w * d[j];
    }
  }
  for (int j = 0; j < W; ++j) out[j] = acc[j];
}

// out_t[r, :] = bias[r] + sum_{k in row r} v[perm ? perm[k] : k] * dense_t[idx[k], :]
// for rows [r0, r1); dense_t is (*, n), out_t (rows, n), both row-major.
template <typename T, bool kPerm>
inline __attribute__((always_inline)) void spmm_rows_impl(const int32_t* ptr, const int32_t* idx,
                                                          const T* v, const int32_t* perm,
                                                          const T* dense_t, const T* bias, T* out_t,
                                                          int64_t n, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t k0 = ptr[r], k1 = ptr[r + 1];
    const T b = bias ? bias[r] : T(0);
    T* out_r = out_t + r * n;
    int64_t j0 = 0;
    for (; j0 + 32 <= n; j0 += 32) row_tile<T, 32, kPerm>(idx, v, perm, k0, k1, dense_t, n, j0, b, out_r + j0);
    if (j0 + 16 <= n) {
      row_tile<T, 16, kPerm>(idx, v, perm, k0, k1, dense_t, n, j0, b, out_r + j0);
      j0 += 16;
    }
    if (j0 + 8 <= n) {
      row_tile<T, 8, kPerm>(idx, v, perm, k0, k1, dense_t, n, j0, b, out_r + j0);
      j0 += 8;
    }
    if (j0 + 4 <= n) {  // e.g. the 4 left of a batch of 20
      row_tile<T, 4, kPerm>(idx, v, perm, k0, k1, dense_t, n, j0, b, out_r + j0);
      j0 += 4;
    }
    for (; j0 < n; ++j0) row_tile<T, 1, kPerm>(idx, v, perm, k0, k1, dense_t, n, j0, b, out_r + j0);
  }
}

template <typename T>
inline __attribute__((always_inline)) void spmm_rows(const int32_t* ptr, const int32_t* idx,
                                                     const T* v, const int32_t* perm,
                                                     const T* dense_t, const T* bias, T* out_t,
                                                     int64_t n, int64_t r0, int64_t r1) {
  if (perm) {
    spmm_rows_impl<T, true>(ptr, idx, v, perm, dense_t, bias, out_t, n, r0, r1);
  } else {
    spmm_rows_impl<T, false>(ptr, idx, v, perm, dense_t, bias, out_t, n, r0, r1);
  }
}

// grad_v[k] = dot(grad_t[row(k), :], input_t[idx[k], :]) for the rows [r0, r1).
template <typename T>
inline __attribute__((always_inline)) void sddmm_rows(const int32_t* ptr, const int32_t* idx,
                                                      const T* grad_t, const T* input_t,
                                                      T* grad_v, int64_t n, int64_t r0,
                                                      int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = grad_t + r * n;
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) {
      const T* x = input_t + static_cast<int64_t>(idx[k]) * n;
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < n; ++j) acc += g[j] * x[j];
      grad_v[k] = acc;
    }
  }
}

// The dispatched entry points (csrc/cpu/cpu_spmm.cpp).
void spmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v, const int32_t* perm,
                   const float* dense_t, const float* bias, float* out_t, int64_t n, int64_t r0,
                   int64_t r1);
void spmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* v, const int32_t* perm,
                   const double* dense_t, const double* bias, double* out_t, int64_t n, int64_t r0,
                   int64_t r1);
void sddmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* grad_t,
                    const float* input_t, float* grad_v, int64_t n, int64_t r0, int64_t r1);
void sddmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* grad_t,
                    const double* input_t, double* grad_v, int64_t n, int64_t r0, int64_t r1);

inline void spmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const float* v,
                               const int32_t* perm, const float* d, const float* b, float* o,
                               int64_t n, int64_t r0, int64_t r1) {
  spmm_rows_f32(ptr, idx, v, perm, d, b, o, n, r0, r1);
}
inline void spmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const double* v,
                               const int32_t* perm, const double* d, const double* b, double* o,
                               int64_t n, int64_t r0, int64_t r1) {
  spmm_rows_f64(ptr, idx, v, perm, d, b, o, n, r0, r1);
}
inline void sddmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const float* g,
                                const float* x, float* gv, int64_t n, int64_t r0, int64_t r1) {
  sddmm_rows_f32(ptr, idx, g, x, gv, n, r0, r1);
}
inline void sddmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const double* g,
                                const double* x, double* gv, int64_t n, int64_t r0, int64_t r1) {
  sddmm_rows_f64(ptr, idx, g, x, gv, n, r0, r1);
}

// Runs fn(r0, r1) over nnz-balanced row chunks in parallel.
template <typename Fn>
void parallel_over_rows(const int32_t* ptr, int64_t rows, const Fn& fn) {
  const std::vector<int64_t> bounds = balanced_row_chunks(ptr, rows);
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(bounds[c], bounds[c + 1]);
  });
}

}  // namespace sparse_kernels::cpu
