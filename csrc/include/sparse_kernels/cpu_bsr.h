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
// grad_output[:, rows]^T (bh x N) times input[:, cols] (N x bw), summed as
// outer products with the block's columns on the lanes (register-tiled).
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

// One batch column j (a remainder column, or the whole batch when N < 4).
// Forward: one dot product per output row over the block's columns
// (contiguous in the values, and in x at N = 1). Input gradient: the block
// read transposed has its output index contiguous in the values, so each
// block adds w[c, :] * x[c] to all its output rows at once instead.
template <typename T, bool kTrans>
inline __attribute__((always_inline)) void bsr_column(const int32_t* idx, const T* v, const int32_t* perm,
                                                      int32_t k0, int32_t k1, int64_t bh, int64_t bw,
                                                      int64_t out_dim, const T* dense_t, int64_t n, int64_t j,
                                                      const T* bias, T* out) {
  const int64_t block_size = bh * bw;
  if constexpr (kTrans) {
    for (int64_t i = 0; i < out_dim; ++i) out[i * n + j] = T(0);
    for (int32_t k = k0; k < k1; ++k) {
      const T* vb = v + static_cast<int64_t>(perm[k]) * block_size;
      const T* x = dense_t + static_cast<int64_t>(idx[k]) * bh * n + j;
      for (int64_t c = 0; c < bh; ++c) {
        const T xc = x[c * n];
        const T* w = vb + c * bw;
#pragma omp simd
        for (int64_t i = 0; i < out_dim; ++i) out[i * n + j] += w[i] * xc;
      }
    }
  } else {
    for (int64_t i = 0; i < out_dim; ++i) {
      T acc = bias ? bias[i] : T(0);
      for (int32_t k = k0; k < k1; ++k) {
        const T* w = v + static_cast<int64_t>(k) * block_size + i * bw;
        const T* x = dense_t + static_cast<int64_t>(idx[k]) * bw * n + j;
        T part = T(0);
#pragma omp simd reduction(+ : part)
        for (int64_t c = 0; c < bw; ++c) part += w[c] * x[c * n];
        acc += part;
      }
      out[i * n + j] = acc;
    }
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

// grad_v[RI x W sub-block at (i0, c0)] of one stored block, from the
// row-major activations: a sum over the batch of outer products
// grad_output[j, rows]^T input[j, cols], the block's columns on the SIMD
// lanes and RI rows of accumulators, so there is no horizontal reduction
// at the end (which would cost as much as the products for N ~ 64).
template <typename T, int RI, int W>
inline __attribute__((always_inline)) void bsr_vg_outer_tile(const T* g, int64_t g_stride, const T* x,
                                                               int64_t x_stride, int64_t n, T* out,
                                                               int64_t bw) {
  T acc[RI][W];
  for (int r = 0; r < RI; ++r)
    for (int c = 0; c < W; ++c) acc[r][c] = T(0);
  for (int64_t j = 0; j < n; ++j) {
    const T* xr = x + j * x_stride;
    const T* gr = g + j * g_stride;
    for (int r = 0; r < RI; ++r) {
      const T gv = gr[r];
#pragma omp simd
      for (int c = 0; c < W; ++c) acc[r][c] += gv * xr[c];
    }
  }
  for (int r = 0; r < RI; ++r)
    for (int c = 0; c < W; ++c) out[r * bw + c] = acc[r][c];
}

// Rows [0, bh) of one block's gradient over its columns [c0, c0 + W).
template <typename T, int W>
inline __attribute__((always_inline)) void bsr_vg_outer_columns(const T* g, int64_t g_stride, const T* x,
                                                                  int64_t x_stride, int64_t n, T* out,
                                                                  int64_t bh, int64_t bw) {
  int64_t i0 = 0;
  for (; i0 + 4 <= bh; i0 += 4)
    bsr_vg_outer_tile<T, 4, W>(g + i0, g_stride, x, x_stride, n, out + i0 * bw, bw);
  switch (bh - i0) {
    case 3: bsr_vg_outer_tile<T, 3, W>(g + i0, g_stride, x, x_stride, n, out + i0 * bw, bw); break;
    case 2: bsr_vg_outer_tile<T, 2, W>(g + i0, g_stride, x, x_stride, n, out + i0 * bw, bw); break;
    case 1: bsr_vg_outer_tile<T, 1, W>(g + i0, g_stride, x, x_stride, n, out + i0 * bw, bw); break;
    default: break;
  }
}

// grad_v[k] (bh x bw) = grad_output[:, block row]^T @ input[:, block column]
// for the stored blocks of block rows [r0, r1); grad_output (n, out) and
// input (n, in) row-major. Column chunks are the outer loop so that the
// block's slice of input stays in cache across the row chunks.
template <typename T>
inline __attribute__((always_inline)) void bsr_value_grad_outer_range(const int32_t* ptr, const int32_t* idx,
                                                                     int64_t bh, int64_t bw,
                                                                     const T* grad_output, int64_t out_features,
                                                                     const T* input, int64_t in_features,
                                                                     T* grad_v, int64_t n, int64_t r0,
                                                                     int64_t r1) {
  constexpr int kWide = kBsrWideTile<T>;
  const int64_t block_size = bh * bw;
  for (int64_t br = r0; br < r1; ++br) {
    const T* g = grad_output + br * bh;
    for (int32_t k = ptr[br]; k < ptr[br + 1]; ++k) {
      const T* x = input + static_cast<int64_t>(idx[k]) * bw;
      T* out = grad_v + static_cast<int64_t>(k) * block_size;
      int64_t c0 = 0;
      for (; c0 + kWide <= bw; c0 += kWide)
        bsr_vg_outer_columns<T, kWide>(g, out_features, x + c0, in_features, n, out + c0, bh, bw);
      if constexpr (kWide > 8) {
        if (c0 + 8 <= bw) {
          bsr_vg_outer_columns<T, 8>(g, out_features, x + c0, in_features, n, out + c0, bh, bw);
          c0 += 8;
        }
      }
      if (c0 + 4 <= bw) {
        bsr_vg_outer_columns<T, 4>(g, out_features, x + c0, in_features, n, out + c0, bh, bw);
        c0 += 4;
      }
      for (; c0 < bw; ++c0)
        bsr_vg_outer_columns<T, 1>(g, out_features, x + c0, in_features, n, out + c0, bh, bw);
    }
  }
}

// The value gradient with the batch on the lanes instead, from the
// transposed activations: grad_v[RI x RC sub-block at (i0, c0)] of one
// stored block as dot(g row i, x row c) over the n batch values (kLanes
// partial sums per pair, added at the end). Better than the outer products
// for narrow or short blocks (1 x 8, 4 x 4), whose columns or rows fill
// too few lanes or accumulators, once N is large enough to pay for the
// final reductions.
template <typename T, int RI, int RC>
inline __attribute__((always_inline)) void bsr_vg_lanes_tile(const T* g, const T* x, int64_t n, T* out,
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
inline __attribute__((always_inline)) void bsr_vg_lanes_rows(const T* g, const T* x, int64_t n, T* out,
                                                               int64_t bw) {
  int64_t c0 = 0;
  for (; c0 + 4 <= bw; c0 += 4) bsr_vg_lanes_tile<T, RI, 4>(g, x + c0 * n, n, out + c0, bw);
  switch (bw - c0) {
    case 3: bsr_vg_lanes_tile<T, RI, 3>(g, x + c0 * n, n, out + c0, bw); break;
    case 2: bsr_vg_lanes_tile<T, RI, 2>(g, x + c0 * n, n, out + c0, bw); break;
    case 1: bsr_vg_lanes_tile<T, RI, 1>(g, x + c0 * n, n, out + c0, bw); break;
    default: break;
  }
}

// grad_v[k] (bh x bw) = grad_t[block row rows] (bh x n) @ input_t[block
// column rows]^T (n x bw) for the stored blocks of block rows [r0, r1).
template <typename T>
inline __attribute__((always_inline)) void bsr_value_grad_lanes_range(const int32_t* ptr, const int32_t* idx,
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
      for (; i0 + 2 <= bh; i0 += 2) bsr_vg_lanes_rows<T, 2>(g_row + i0 * n, x, n, out + i0 * bw, bw);
      if (i0 < bh) bsr_vg_lanes_rows<T, 1>(g_row + i0 * n, x, n, out + i0 * bw, bw);
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
void bsr_value_grad_outer_f32(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                              const float* grad_output, int64_t out_features, const float* input,
                              int64_t in_features, float* grad_v, int64_t n, int64_t r0, int64_t r1);
void bsr_value_grad_outer_f64(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                              const double* grad_output, int64_t out_features, const double* input,
                              int64_t in_features, double* grad_v, int64_t n, int64_t r0, int64_t r1);
void bsr_value_grad_lanes_f32(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw, const float* grad_t,
                              const float* input_t, float* grad_v, int64_t n, int64_t r0, int64_t r1);
void bsr_value_grad_lanes_f64(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                              const double* grad_t, const double* input_t, double* grad_v, int64_t n, int64_t r0,
                              int64_t r1);

// Which value-gradient loop suits a block shape and batch (measured on
// AVX2: the outer products win for blocks of at least 4 x 8 and for any
// block at small N; the batch-on-lanes dot products for 1 x 8, 4 x 4... at
// larger N).
inline bool bsr_value_grad_use_outer(int64_t bh, int64_t bw, int64_t n) {
  return n < 16 || (bh >= 4 && bw >= 8);
}

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
inline void bsr_value_grad_outer_dispatch(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                          const float* g, int64_t out_f, const float* x, int64_t in_f,
                                          float* gv, int64_t n, int64_t r0, int64_t r1) {
  bsr_value_grad_outer_f32(ptr, idx, bh, bw, g, out_f, x, in_f, gv, n, r0, r1);
}
inline void bsr_value_grad_outer_dispatch(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                          const double* g, int64_t out_f, const double* x, int64_t in_f,
                                          double* gv, int64_t n, int64_t r0, int64_t r1) {
  bsr_value_grad_outer_f64(ptr, idx, bh, bw, g, out_f, x, in_f, gv, n, r0, r1);
}
inline void bsr_value_grad_lanes_dispatch(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                          const float* g, const float* x, float* gv, int64_t n, int64_t r0,
                                          int64_t r1) {
  bsr_value_grad_lanes_f32(ptr, idx, bh, bw, g, x, gv, n, r0, r1);
}
inline void bsr_value_grad_lanes_dispatch(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                          const double* g, const double* x, double* gv, int64_t n, int64_t r0,
                                          int64_t r1) {
  bsr_value_grad_lanes_f64(ptr, idx, bh, bw, g, x, gv, n, r0, r1);
}

}  // namespace sparse_kernels::cpu
