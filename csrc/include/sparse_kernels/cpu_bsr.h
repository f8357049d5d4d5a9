// The CPU block-sparse (BSR) inner loops, with the batch on the SIMD lanes.
//
// A BSR matrix W (out x in) with blocks of bh x bw is a CSR pattern over the
// grid of blocks (block_row_ptr, block_col_idx) plus values (nblocks, bh, bw),
// each block dense and row-major. As in cpu_spmm.h the activations are used
// transposed, (features, N), so a stored weight multiplies a contiguous run
// of batch values. A block adds register reuse that single nonzeros cannot
// have: one loaded run of x (a batch tile of one input feature) feeds up to
// four output rows of the block at once, and a block needs one index load
// for bh * bw weights.
//
// Forward (kTrans = false): out_t rows are W's rows, the reduction runs over
// the block's bw columns. Input gradient (kTrans = true): the same loop over
// W's block columns (the transposed block index, values read through
// block_csr2csc), out_t rows are W's columns and each block is read
// transposed. The value gradient is a small dense GEMM per stored block,
// grad_t[rows] (bh x N) times input_t[cols]^T (N x bw), register-tiled.
//
// SIMD is chosen at run time (cpu_simd.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "sparse_kernels/cpu_simd.h"

namespace sparse_kernels::cpu {

// Widest batch tile: 16 floats or 8 doubles, two AVX2 registers per output
// row, so four rows of accumulators take eight of the sixteen registers.
template <typename T>
inline constexpr int kBsrWideTile = 64 / static_cast<int>(sizeof(T));

// R output rows of one block row (or column) over batch columns [j0, j0 + W):
// acc[r][:] = bias + sum over the blocks k0..k1 and their reduction index c
// of w(k, i0 + r, c) * dense_t[block(k) * red + c, j0:j0 + W].
template <typename T, int R, int W, bool kTrans>
inline __attribute__((always_inline)) void bsr_tile(const int32_t* idx, const T* v, const int32_t* perm,
                                                    int32_t k0, int32_t k1, int64_t bh, int64_t bw,
                                                    int64_t i0, const T* dense_t, int64_t n, int64_t j0,
                                                    const T* bias, T* out) {
  const int64_t red = kTrans ? bh : bw;          // reduction length of one block
  const int64_t out_stride = kTrans ? 1 : bw;    // value stride along the output index
  const int64_t red_stride = kTrans ? bw : 1;    // value stride along the reduction index
  const int64_t block_size = bh * bw;
  T acc[R][W];
  for (int r = 0; r < R; ++r) {
    const T b = bias ? bias[r] : T(0);
    for (int j = 0; j < W; ++j) acc[r][j] = b;
  }
  for (int32_t k = k0; k < k1; ++k) {
    const T* vb = v + static_cast<int64_t>(kTrans ? perm[k] : k) * block_size + i0 * out_stride;
    const T* xb = dense_t + static_cast<int64_t>(idx[k]) * red * n + j0;
    for (int64_t c = 0; c < red; ++c) {
      const T* x = xb + c * n;
      const T* w = vb + c * red_stride;
      for (int r = 0; r < R; ++r) {
        const T wr = w[r * out_stride];
#pragma omp simd
        for (int j = 0; j < W; ++j) acc[r][j] += wr * x[j];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < W; ++j) out[r * n + j] = acc[r][j];
}

// One batch column j (a remainder column, or the whole batch when N < 4):
// one dot product per output row, over the block's reduction index (for
// the forward at N = 1, contiguous in both the values and x).
template <typename T, bool kTrans>
inline __attribute__((always_inline)) void bsr_column(const int32_t* idx, const T* v, const int32_t* perm,
                                                      int32_t k0, int32_t k1, int64_t bh, int64_t bw,
                                                      int64_t out_dim, const T* dense_t, int64_t n, int64_t j,
                                                      const T* bias, T* out) {
  const int64_t red = kTrans ? bh : bw;
  const int64_t out_stride = kTrans ? 1 : bw;
  const int64_t red_stride = kTrans ? bw : 1;
  const int64_t block_size = bh * bw;
  for (int64_t i = 0; i < out_dim; ++i) {
    T acc = bias ? bias[i] : T(0);
    for (int32_t k = k0; k < k1; ++k) {
      const T* w = v + static_cast<int64_t>(kTrans ? perm[k] : k) * block_size + i * out_stride;
      const T* x = dense_t + static_cast<int64_t>(idx[k]) * red * n + j;
      T part = T(0);
#pragma omp simd reduction(+ : part)
      for (int64_t c = 0; c < red; ++c) part += w[c * red_stride] * x[c * n];
      acc += part;
    }
    out[i * n + j] = acc;
  }
}

// All output rows of one block row over the batch tile [j0, j0 + W), four at
// a time. The batch tile is the outer loop (in the caller) so that its runs
// of x stay in L1 across the row chunks.
template <typename T, int W, bool kTrans>
inline __attribute__((always_inline)) void bsr_rows_tile(const int32_t* idx, const T* v, const int32_t* perm,
                                                         int32_t k0, int32_t k1, int64_t bh, int64_t bw,
                                                         int64_t out_dim, const T* dense_t, int64_t n,
                                                         int64_t j0, const T* bias, T* out) {
  int64_t i0 = 0;
  for (; i0 + 4 <= out_dim; i0 += 4)
    bsr_tile<T, 4, W, kTrans>(idx, v, perm, k0, k1, bh, bw, i0, dense_t, n, j0, bias ? bias + i0 : nullptr,
                              out + i0 * n + j0);
  const T* b = bias ? bias + i0 : nullptr;
  T* o = out + i0 * n + j0;
  switch (out_dim - i0) {
    case 3: bsr_tile<T, 3, W, kTrans>(idx, v, perm, k0, k1, bh, bw, i0, dense_t, n, j0, b, o); break;
    case 2: bsr_tile<T, 2, W, kTrans>(idx, v, perm, k0, k1, bh, bw, i0, dense_t, n, j0, b, o); break;
    case 1: bsr_tile<T, 1, W, kTrans>(idx, v, perm, k0, k1, bh, bw, i0, dense_t, n, j0, b, o); break;
    default: break;
  }
}

// out_t[block row br] for br in [r0, r1): the forward (kTrans = false; ptr,
// idx = block_row_ptr, block_col_idx; out rows bh per block row) or the
// input gradient (kTrans = true; ptr, idx = block_col_ptr, block_row_idx,
// perm = block_csr2csc; out rows bw per block column). dense_t is x^T
// (in, n) or grad_y^T (out, n); out_t (rows, n); bias (rows) or null.
template <typename T, bool kTrans>
inline __attribute__((always_inline)) void bsr_spmm_rows(const int32_t* ptr, const int32_t* idx, const T* v,
                                                         const int32_t* perm, int64_t bh, int64_t bw,
                                                         const T* dense_t, const T* bias, T* out_t, int64_t n,
                                                         int64_t r0, int64_t r1) {
  constexpr int kWide = kBsrWideTile<T>;
  const int64_t out_dim = kTrans ? bw : bh;
  for (int64_t br = r0; br < r1; ++br) {
    const int32_t k0 = ptr[br], k1 = ptr[br + 1];
    const T* b = bias ? bias + br * out_dim : nullptr;
    T* out = out_t + br * out_dim * n;
    int64_t j0 = 0;
    for (; j0 + kWide <= n; j0 += kWide)
      bsr_rows_tile<T, kWide, kTrans>(idx, v, perm, k0, k1, bh, bw, out_dim, dense_t, n, j0, b, out);
    if constexpr (kWide > 8) {
      if (j0 + 8 <= n) {
        bsr_rows_tile<T, 8, kTrans>(idx, v, perm, k0, k1, bh, bw, out_dim, dense_t, n, j0, b, out);
        j0 += 8;
      }
    }
    if (j0 + 4 <= n) {
      bsr_rows_tile<T, 4, kTrans>(idx, v, perm, k0, k1, bh, bw, out_dim, dense_t, n, j0, b, out);
      j0 += 4;
    }
    for (; j0 < n; ++j0) bsr_column<T, kTrans>(idx, v, perm, k0, k1, bh, bw, out_dim, dense_t, n, j0, b, out);
  }
}

// grad_v[RI x RC sub-block at (i0, c0)] of one stored block:
// dot(g row i, x row c) over the n batch values, vectorised over the batch
// (kLanes partial sums per pair, added at the end).
template <typename T, int RI, int RC>
inline __attribute__((always_inline)) void bsr_value_grad_tile(const T* g, const T* x, int64_t n, T* out,
                                                               int64_t bw) {
  constexpr int kLanes = 32 / static_cast<int>(sizeof(T));  // one AVX2 register
  T acc[RI][RC][kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int r = 0; r < RI; ++r) {
      for (int c = 0; c < RC; ++c) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) acc[r][c][l] += g[r * n + j + l] * x[c * n + j + l];
      }
    }
  }
  for (int r = 0; r < RI; ++r) {
    for (int c = 0; c < RC; ++c) {
      T sum = T(0);
      for (int l = 0; l < kLanes; ++l) sum += acc[r][c][l];
      for (int64_t jj = j; jj < n; ++jj) sum += g[r * n + jj] * x[c * n + jj];
      out[r * bw + c] = sum;
    }
  }
}

template <typename T, int RI>
inline __attribute__((always_inline)) void bsr_value_grad_rows(const T* g, const T* x, int64_t n, T* out,
                                                               int64_t bw) {
  int64_t c0 = 0;
  for (; c0 + 4 <= bw; c0 += 4) bsr_value_grad_tile<T, RI, 4>(g, x + c0 * n, n, out + c0, bw);
  switch (bw - c0) {
    case 3: bsr_value_grad_tile<T, RI, 3>(g, x + c0 * n, n, out + c0, bw); break;
    case 2: bsr_value_grad_tile<T, RI, 2>(g, x + c0 * n, n, out + c0, bw); break;
    case 1: bsr_value_grad_tile<T, RI, 1>(g, x + c0 * n, n, out + c0, bw); break;
    default: break;
  }
}

// grad_v[k] (bh x bw) = grad_t[block row rows] (bh x n) @ input_t[block
// column rows]^T (n x bw) for the stored blocks of block rows [r0, r1).
template <typename T>
inline __attribute__((always_inline)) void bsr_value_grad_rows_range(const int32_t* ptr, const int32_t* idx,
                                                                     int64_t bh, int64_t bw, const T* grad_t,
                                                                     const T* input_t, T* grad_v, int64_t n,
                                                                     int64_t r0, int64_t r1) {
  const int64_t block_size = bh * bw;
  for (int64_t br = r0; br < r1; ++br) {
    const T* g_row = grad_t + br * bh * n;
    for (int32_t k = ptr[br]; k < ptr[br + 1]; ++k) {
      const T* x = input_t + static_cast<int64_t>(idx[k]) * bw * n;
      T* out = grad_v + static_cast<int64_t>(k) * block_size;
      int64_t i0 = 0;
      for (; i0 + 2 <= bh; i0 += 2) bsr_value_grad_rows<T, 2>(g_row + i0 * n, x, n, out + i0 * bw, bw);
      if (i0 < bh) bsr_value_grad_rows<T, 1>(g_row + i0 * n, x, n, out + i0 * bw, bw);
    }
  }
}

// The dispatched entry points (csrc/cpu/cpu_bsr.cpp).
void bsr_spmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v, const int32_t* perm, int64_t bh,
                       int64_t bw, const float* dense_t, const float* bias, float* out_t, int64_t n, int64_t r0,
                       int64_t r1);
void bsr_spmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* v, const int32_t* perm, int64_t bh,
                       int64_t bw, const double* dense_t, const double* bias, double* out_t, int64_t n,
                       int64_t r0, int64_t r1);
void bsr_value_grad_rows_f32(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw, const float* grad_t,
                             const float* input_t, float* grad_v, int64_t n, int64_t r0, int64_t r1);
void bsr_value_grad_rows_f64(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                             const double* grad_t, const double* input_t, double* grad_v, int64_t n, int64_t r0,
                             int64_t r1);

// perm == nullptr: the forward; else the input gradient through the
// transposed block index.
inline void bsr_spmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const float* v, const int32_t* perm,
                                   int64_t bh, int64_t bw, const float* d, const float* b, float* o, int64_t n,
                                   int64_t r0, int64_t r1) {
  bsr_spmm_rows_f32(ptr, idx, v, perm, bh, bw, d, b, o, n, r0, r1);
}
inline void bsr_spmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const double* v, const int32_t* perm,
                                   int64_t bh, int64_t bw, const double* d, const double* b, double* o, int64_t n,
                                   int64_t r0, int64_t r1) {
  bsr_spmm_rows_f64(ptr, idx, v, perm, bh, bw, d, b, o, n, r0, r1);
}
inline void bsr_value_grad_rows_dispatch(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                         const float* g, const float* x, float* gv, int64_t n, int64_t r0,
                                         int64_t r1) {
  bsr_value_grad_rows_f32(ptr, idx, bh, bw, g, x, gv, n, r0, r1);
}
inline void bsr_value_grad_rows_dispatch(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                         const double* g, const double* x, double* gv, int64_t n, int64_t r0,
                                         int64_t r1) {
  bsr_value_grad_rows_f64(ptr, idx, bh, bw, g, x, gv, n, r0, r1);
}

}  // namespace sparse_kernels::cpu
