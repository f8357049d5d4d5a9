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

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "sparse_kernels/cpu_gathered.h"
#include "sparse_kernels/cpu_simd.h"

namespace sparse_kernels::cpu {

// Up to `chunks` row ranges holding about equal numbers of nonzeros, so that
// threads get equal work even when row lengths vary.
inline std::vector<int64_t> balanced_row_chunks(const int32_t* ptr, int64_t rows, int64_t chunks) {
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

// Several chunks per thread (claiming them balances what the weights miss).
inline std::vector<int64_t> balanced_row_chunks(const int32_t* ptr, int64_t rows) {
  return balanced_row_chunks(ptr, rows, std::max<int64_t>(1, std::min<int64_t>(rows, 4 * at::get_num_threads())));
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
    // A single batch column of a wider product: a strided dot product.
    // (N = 1 itself takes gathered_rows below.)
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int32_t k = k0; k < k1; ++k)
      sum += v[kPerm ? perm[k] : k] * dense_t[static_cast<int64_t>(idx[k]) * n + j0];
    acc[0] += sum;
  } else {
    // Two nonzeros per iteration into two sets of accumulators: two
    // dependency chains (measured 1.4x faster at batch 20, where the 4-wide
    // tail tile is otherwise latency-bound).
    T acc2[W] = {};
    int32_t k = k0;
    for (; k + 2 <= k1; k += 2) {
      const T w0 = v[kPerm ? perm[k] : k], w1 = v[kPerm ? perm[k + 1] : k + 1];
      const T* d0 = dense_t + static_cast<int64_t>(idx[k]) * n + j0;
      const T* d1 = dense_t + static_cast<int64_t>(idx[k + 1]) * n + j0;
#pragma omp simd
      for (int j = 0; j < W; ++j) {
        acc[j] += w0 * d0[j];
        acc2[j] += w1 * d1[j];
      }
    }
    if (k < k1) {
      const T w = v[kPerm ? perm[k] : k];
      const T* d = dense_t + static_cast<int64_t>(idx[k]) * n + j0;
#pragma omp simd
      for (int j = 0; j < W; ++j) acc[j] += w * d[j];
    }
    for (int j = 0; j < W; ++j) acc[j] += acc2[j];
  }
  for (int j = 0; j < W; ++j) out[j] = acc[j];
}

// The row-outer loop over batch columns [j_start, n): tiles of 16, 8, 4, 1.
// (16 is the widest tile worth having: measured on AVX2, 32-wide tiles ran
// 4x slower, their accumulators no longer kept in registers.)
template <typename T, bool kPerm>
inline __attribute__((always_inline)) void spmm_rows_tail(const int32_t* ptr, const int32_t* idx,
                                                          const T* v, const int32_t* perm,
                                                          const T* dense_t, const T* bias, T* out_t,
                                                          int64_t n, int64_t j_start, int64_t r0,
                                                          int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t k0 = ptr[r], k1 = ptr[r + 1];
    const T b = bias ? bias[r] : T(0);
    T* out_r = out_t + r * n;
    int64_t j0 = j_start;
    for (; j0 + 16 <= n; j0 += 16) row_tile<T, 16, kPerm>(idx, v, perm, k0, k1, dense_t, n, j0, b, out_r + j0);
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

// out_t[r, :] = bias[r] + sum_{k in row r} v[perm ? perm[k] : k] * dense_t[idx[k], :]
// for rows [r0, r1); dense_t is (*, n), out_t (rows, n), both row-major.
// Batch 1: one dot product per row, x indexed by the 32-bit column indices
// as they are, written as a SIMD reduction so that the AVX2 clone handles 8
// nonzeros per step. Measured 1.5-2x faster on this machine (Zen 4, one
// thread, 0.9 M nonzeros: 0.28-0.30 vs 0.42-0.56 ms) than four scalar
// partial sums, and faster than the same loop inside the batch tiles.
template <typename T, bool kPerm>
inline __attribute__((always_inline)) void gathered_rows(const int32_t* ptr, const int32_t* idx, const T* v,
                                                         const int32_t* perm, const T* x, const T* bias,
                                                         T* out, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) sum += v[kPerm ? perm[k] : k] * x[idx[k]];
    out[r] = sum + (bias ? bias[r] : T(0));
  }
}

template <typename T, bool kPerm>
inline __attribute__((always_inline)) void spmm_rows_impl(const int32_t* ptr, const int32_t* idx,
                                                          const T* v, const int32_t* perm,
                                                          const T* dense_t, const T* bias, T* out_t,
                                                          int64_t n, int64_t r0, int64_t r1) {
  // Wide batches: the 16-wide batch tiles outermost, so that the dense
  // columns one tile reads (cols x 64 bytes) stay in L2 while every row
  // streams past; row-outer order would fetch each nonzero's bytes from a
  // random row of the whole (cols x N) operand. Narrow batches (and the
  // tail) go row-outer: one pass over the rows.
  if (n == 1) {
    gathered_rows<T, kPerm>(ptr, idx, v, perm, dense_t, bias, out_t, r0, r1);
    return;
  }
  const int64_t wide = n > 32 ? n / 16 * 16 : 0;
  for (int64_t j0 = 0; j0 < wide; j0 += 16) {
    for (int64_t r = r0; r < r1; ++r) {
      row_tile<T, 16, kPerm>(idx, v, perm, ptr[r], ptr[r + 1], dense_t, n, j0, bias ? bias[r] : T(0),
                             out_t + r * n + j0);
    }
  }
  if (wide < n) spmm_rows_tail<T, kPerm>(ptr, idx, v, perm, dense_t, bias, out_t, n, wide, r0, r1);
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

// The transposed product by scatter, one batch tile [j0, j0 + W):
// out_t[idx[k], j0:j0+W] += v[k] * dense_t[r, j0:j0+W] for every nonzero k
// of the rows [r0, r1). Each row's W dense values stay in registers across
// its nonzeros, values and indices stream in storage order (no csr2csc
// indirection, no CSC index at all), and the working set is out_t's
// (cols x W) tile, small enough for L2 at W <= 16.
template <typename T, int W>
inline __attribute__((always_inline)) void scatter_tile(const int32_t* ptr, const int32_t* idx,
                                                        const T* v, const T* dense_t, T* out_t,
                                                        int64_t n, int64_t j0, int64_t r0,
                                                        int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t k0 = ptr[r], k1 = ptr[r + 1];
    if (k0 == k1) continue;
    T g[W];
    for (int j = 0; j < W; ++j) g[j] = dense_t[r * n + j0 + j];
    for (int32_t k = k0; k < k1; ++k) {
      const T w = v[k];
      T* o = out_t + static_cast<int64_t>(idx[k]) * n + j0;
#pragma omp simd
      for (int j = 0; j < W; ++j) o[j] += w * g[j];
    }
  }
}

// out_t (cols, n) += W[r0:r1]^T dense_t[r0:r1] (dense_t (rows, n), both
// row-major), batch columns [c0, c1) only: the batch is tiled so that each
// pass over the rows scatters into one L2-sized tile of out_t.
template <typename T>
inline __attribute__((always_inline)) void scatter_rows(const int32_t* ptr, const int32_t* idx,
                                                        const T* v, const T* dense_t, T* out_t,
                                                        int64_t n, int64_t c0, int64_t c1,
                                                        int64_t r0, int64_t r1) {
  if (n == 1) {
    // Batch 1: one float per row and column, so no batch tile to address
    // (the only batch columns are then [c0, c1) = [0, 1)).
    // The tile loop's idx * n + j0 per nonzero and per-row set-up made the op
    // 1.2x slower on one thread and 1.5x on two (W 8192 x 2048 and 6000 x 1500
    // at 10%, BENCHMARKS.md "Session S"). Eight nonzeros' entries of out_t
    // are loaded before any of them is stored: a row's columns are distinct
    // (the op checks that they strictly increase), so no store of a group
    // feeds a load of it. On Zen 3 the one-at-a-time loop ran 1.6-1.9x
    // slower standalone (each load issued behind the store before it;
    // BENCHMARKS.md "Session X"); on Zen 4 the two were level (session S).
    // The same additions in the same order as scatter_tile<T, 1>.
    for (int64_t r = r0; r < r1; ++r) {
      const T g = dense_t[r];
      int32_t k = ptr[r];
      const int32_t k1 = ptr[r + 1];
      for (; k + 8 <= k1; k += 8) {
        T sums[8];
        for (int u = 0; u < 8; ++u) sums[u] = out_t[idx[k + u]] + v[k + u] * g;
        for (int u = 0; u < 8; ++u) out_t[idx[k + u]] = sums[u];
      }
      for (; k < k1; ++k) out_t[idx[k]] += v[k] * g;
    }
    return;
  }
  int64_t j0 = c0;
  for (; j0 + 16 <= c1; j0 += 16) scatter_tile<T, 16>(ptr, idx, v, dense_t, out_t, n, j0, r0, r1);
  if (j0 + 8 <= c1) {
    scatter_tile<T, 8>(ptr, idx, v, dense_t, out_t, n, j0, r0, r1);
    j0 += 8;
  }
  if (j0 + 4 <= c1) {
    scatter_tile<T, 4>(ptr, idx, v, dense_t, out_t, n, j0, r0, r1);
    j0 += 4;
  }
  for (; j0 < c1; ++j0) scatter_tile<T, 1>(ptr, idx, v, dense_t, out_t, n, j0, r0, r1);
}

// U dot products of one gradient row g with U input rows x[u] over [0, n):
// U independent accumulators of 8 lanes, so that each loaded run of g feeds
// U multiply-adds and no single dependency chain of additions sets the pace.
template <typename T, int U>
inline __attribute__((always_inline)) void row_dots(const T* g, const T* const* x, int64_t n, T* out) {
  T acc[U][8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int u = 0; u < U; ++u) {
#pragma omp simd
      for (int l = 0; l < 8; ++l) acc[u][l] += g[j + l] * x[u][j + l];
    }
  }
  for (int u = 0; u < U; ++u) {
    T sum = T(0);
    for (int l = 0; l < 8; ++l) sum += acc[u][l];
    for (int64_t jj = j; jj < n; ++jj) sum += g[jj] * x[u][jj];
    out[u] = sum;
  }
}

// grad_v[k] = dot(grad_t[row(k), :], input_t[idx[k], :]) for the rows [r0, r1).
template <typename T>
inline __attribute__((always_inline)) void sddmm_rows(const int32_t* ptr, const int32_t* idx,
                                                      const T* grad_t, const T* input_t,
                                                      T* grad_v, int64_t n, int64_t r0,
                                                      int64_t r1) {
  if (n == 1) {
    // One row of activations: each value gradient is a single product, a
    // gather of x and a multiply. The dot-product loop below paid its set-up
    // per nonzero: 3.1 ns each against 0.78 here (W 8192 x 2048 at 90%, one
    // thread; AVX2 CPUs take cpu_gathered.h's kernel instead, 0.34 ns).
    for (int64_t r = r0; r < r1; ++r) {
      const T g = grad_t[r];
      for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) grad_v[k] = g * input_t[idx[k]];
    }
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const T* g = grad_t + r * n;
    int32_t k = ptr[r];
    if (n >= 16) {
      // Eight nonzeros of the row at a time (measured 3x faster at N = 700
      // than one dot product after another).
      for (; k + 8 <= ptr[r + 1]; k += 8) {
        const T* x[8];
        for (int u = 0; u < 8; ++u) x[u] = input_t + static_cast<int64_t>(idx[k + u]) * n;
        row_dots<T, 8>(g, x, n, grad_v + k);
      }
    }
    for (; k < ptr[r + 1]; ++k) {
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
void scatter_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v, const float* dense_t,
                      float* out_t, int64_t n, int64_t c0, int64_t c1, int64_t r0, int64_t r1);
void scatter_rows_f64(const int32_t* ptr, const int32_t* idx, const double* v, const double* dense_t,
                      double* out_t, int64_t n, int64_t c0, int64_t c1, int64_t r0, int64_t r1);
void sddmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* grad_t,
                    const float* input_t, float* grad_v, int64_t n, int64_t r0, int64_t r1);
void sddmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* grad_t,
                    const double* input_t, double* grad_v, int64_t n, int64_t r0, int64_t r1);

inline void spmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const float* v,
                               const int32_t* perm, const float* d, const float* b, float* o,
                               int64_t n, int64_t r0, int64_t r1) {
  if (n == 1 && perm == nullptr && gathered_rows_avx2(ptr, idx, v, d, b, o, r0, r1)) return;  // cpu_gathered.h
  spmm_rows_f32(ptr, idx, v, perm, d, b, o, n, r0, r1);
}
inline void spmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const double* v,
                               const int32_t* perm, const double* d, const double* b, double* o,
                               int64_t n, int64_t r0, int64_t r1) {
  spmm_rows_f64(ptr, idx, v, perm, d, b, o, n, r0, r1);
}
inline void scatter_rows_dispatch(const int32_t* ptr, const int32_t* idx, const float* v,
                                  const float* d, float* o, int64_t n, int64_t c0, int64_t c1,
                                  int64_t r0, int64_t r1) {
  scatter_rows_f32(ptr, idx, v, d, o, n, c0, c1, r0, r1);
}
inline void scatter_rows_dispatch(const int32_t* ptr, const int32_t* idx, const double* v,
                                  const double* d, double* o, int64_t n, int64_t c0, int64_t c1,
                                  int64_t r0, int64_t r1) {
  scatter_rows_f64(ptr, idx, v, d, o, n, c0, c1, r0, r1);
}
inline void sddmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const float* g,
                                const float* x, float* gv, int64_t n, int64_t r0, int64_t r1) {
  if (n == 1 && gathered_scale_rows_avx2(ptr, idx, g, x, gv, r0, r1)) return;  // cpu_gathered.h
  sddmm_rows_f32(ptr, idx, g, x, gv, n, r0, r1);
}
inline void sddmm_rows_dispatch(const int32_t* ptr, const int32_t* idx, const double* g,
                                const double* x, double* gv, int64_t n, int64_t r0, int64_t r1) {
  sddmm_rows_f64(ptr, idx, g, x, gv, n, r0, r1);
}

// The batch width the tiled products run at: N rounded up to a multiple of
// 8 (N = 1 stays: its gather path has no tiles), so that no batch column is
// left to 1-wide tiles, each a whole pass over the matrix (N = 35 took two
// 16-wide passes and three 1-wide ones; padded, it takes three).
inline int64_t padded_batch(int64_t n) { return n <= 1 ? n : (n + 7) / 8 * 8; }

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols, in
// 32 x 32 blocks (both sides' lines stay in L1 within a block) over threads.
// ATen's strided copy for x.t().contiguous() ran at 5-8 GB/s here on the
// (700 x 6000) operands of a training step's products.
template <typename T>
inline void transpose_blocks(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
  constexpr int64_t kBlock = 32;
  const int64_t col_blocks = (cols + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, rows * kBlock));
  at::parallel_for(0, col_blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * kBlock, c1 = std::min(cols, c0 + kBlock);
      for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
        const int64_t r1 = std::min(rows, r0 + kBlock);
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
      }
    }
  });
}

// x (N, F) -> x^T (F, width), contiguous, zero in the columns [N, width).
inline at::Tensor transposed_to(const at::Tensor& x_, int64_t width) {
  const at::Tensor x = x_.contiguous();
  const int64_t n = x.size(0), features = x.size(1);
  at::Tensor x_t = at::empty({features, width}, x.options());
  if (x.scalar_type() == at::kFloat) {
    transpose_blocks(x.data_ptr<float>(), features, x_t.data_ptr<float>(), width, n, features);
  } else if (x.scalar_type() == at::kDouble) {
    transpose_blocks(x.data_ptr<double>(), features, x_t.data_ptr<double>(), width, n, features);
  } else {
    x_t.narrow(1, 0, n).copy_(x.t());
  }
  if (width > n) x_t.narrow(1, n, width - n).zero_();
  return x_t;
}

// x (N, F) -> x^T (F, N), contiguous: x.t().contiguous(), faster.
inline at::Tensor transposed(const at::Tensor& x) { return transposed_to(x, x.size(0)); }

// x (N, F) -> x^T (F, padded_batch(N)), contiguous, zero in the padding.
inline at::Tensor transposed_padded(const at::Tensor& x) {
  const int64_t n = x.size(0);
  if (n == 1) return x.reshape({x.size(1), 1});
  return transposed_to(x, padded_batch(n));
}

// y_t (F, width) -> y (n, F) = y_t[:, :n]^T, contiguous (n <= width).
inline at::Tensor untransposed(const at::Tensor& y_t, int64_t n) {
  const int64_t features = y_t.size(0), width = y_t.size(1);
  if (n == 1 && width == 1) return y_t.view({1, features});
  at::Tensor y = at::empty({n, features}, y_t.options());
  if (y_t.scalar_type() == at::kFloat && y_t.is_contiguous()) {
    transpose_blocks(y_t.data_ptr<float>(), width, y.data_ptr<float>(), features, features, n);
  } else if (y_t.scalar_type() == at::kDouble && y_t.is_contiguous()) {
    transpose_blocks(y_t.data_ptr<double>(), width, y.data_ptr<double>(), features, features, n);
  } else {
    y.copy_(y_t.narrow(1, 0, n).t());
  }
  return y;
}

// Below this many multiply-adds a product runs on the calling thread: a
// parallel region costs microseconds to open (far more when the threads were
// descheduled, as on a loaded machine), more than a small product itself,
// and the recurrent loops run one product per timestep.
constexpr int64_t kMinParallelWork = 1 << 15;

// Runs fn(r0, r1) over nnz-balanced row chunks in parallel. work_per_entry
// is the multiply-adds per stored entry (the batch width; times the block
// size for a block index): a product of less than kMinParallelWork in all
// runs inline. 0 means unknown: always parallel.
template <typename Fn>
void parallel_over_rows(const int32_t* ptr, int64_t rows, const Fn& fn, int64_t work_per_entry = 0) {
  if (rows == 0) return;
  if (at::get_num_threads() == 1 ||
      (work_per_entry > 0 && (static_cast<int64_t>(ptr[rows]) + rows) * work_per_entry < kMinParallelWork)) {
    fn(0, rows);
    return;
  }
  const std::vector<int64_t> bounds = balanced_row_chunks(ptr, rows);
  at::parallel_for(0, static_cast<int64_t>(bounds.size()) - 1, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(bounds[c], bounds[c + 1]);
  });
}

}  // namespace sparse_kernels::cpu
