// The CPU forward product for batches of 2 and more, float32, on a
// tile-packed operand ("x tiles").
//
// The row-outer kernel of cpu_spmm.h reads, for every stored nonzero, a
// 16-float run of x^T (in, N) at row idx[k]: rows N floats apart, so each
// nonzero touches its own cache line and, at N = 700, its own 4 KiB page; its
// 16-wide outputs land N floats apart too. It ran at 7-9 G multiply-adds/s per
// core. Here the batch is cut into tiles of 16 lanes (the last one 8, the
// batch padded to a multiple of 8) and each tile is packed contiguously:
//
//   x tiles:  tile starting at lane j0 of width W (16 or 8) holds
//             x_tiles[j0 * in + c * W + j] = x[j0 + j, c]   (0 past the batch)
//   y tiles:  y_tiles[j0 * out + r * W + j] = y[j0 + j, r]
//
// so a tile of x is one dense (in x W) block (96 KiB at in = 1500: in L2, a
// few dozen pages), a nonzero reads one aligned 64-byte row of it, and a
// row's outputs are one contiguous store. The AVX2 kernel keeps eight
// accumulator registers (four nonzeros in flight at W = 16, eight at W = 8)
// so that no chain of FMA latencies sets the pace. Measured in a standalone
// loop (one thread, 6000 x 1500 at 10%): 22-26 G multiply-adds/s at N = 32 and
// N = 704, against 7.8-9 for the row-outer kernel. The AVX2 path is chosen at
// run time (__builtin_cpu_supports); elsewhere a portable loop runs (no
// -march flags in the build).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace sparse_kernels::cpu {

// The lane width of the tile starting at lane j0 of a batch padded to width.
inline int64_t tile_width(int64_t j0, int64_t width) { return width - j0 >= 16 ? 16 : 8; }

// The batch width the tiled product runs at: N rounded up to a multiple of 8.
inline int64_t tiled_width(int64_t n) { return (n + 7) / 8 * 8; }

// Whether sparse_linear takes the tiled path for this operand: float32 and a
// batch of at least 2 (batch 1 is cpu_spmm.h's gathered dot product; a batch
// of 2-7 runs as one 8-lane tile, still faster than the narrow tiles of
// cpu_spmm.h: measured 0.82 ms for the row-outer kernel at batch 4 against
// 0.67 ms for this one at batch 16, W 8192 x 2048 at 10%), unless SPARSE_KERNELS_CPU_TILED=0 (read once; for
// A/B measurements).
bool tiled_product_enabled(const at::Tensor& input);

// The kernels the tiles run on this machine (the float32 products of batches
// of 2 and more, and the fused LSTM loops' row lists): "avx512" (AVX-512F and
// VL, unless SPARSE_KERNELS_CPU_AVX512=0), "avx2+fma", or "portable".
// build_info() reports it beside the SIMD clones' path.
const char* tile_kernels_active();

// x (N, F) float32 contiguous -> x tiles (tiled_width(N) * F floats), in parallel.
at::Tensor pack_tiles(const at::Tensor& x);

// y tiles of width tiled_width(N) over `features` rows -> y (N, features).
at::Tensor unpack_tiles(const at::Tensor& y_tiles, int64_t n, int64_t features);

// y tiles = W x tiles + bias for the rows [r0, r1) of W, every tile
// (bias may be null), or, with accumulate, y tiles += W x tiles (bias
// unused); dispatched to the AVX2 or the portable kernel.
void tiled_spmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v, const float* bias,
                         const float* x_tiles, int64_t in_features, float* y_tiles,
                         int64_t out_features, int64_t width, int64_t r0, int64_t r1, bool accumulate = false);

// The row lists of the fused recurrent loops (cpu_lstm_fused.h): for
// i < count, out[i * out_stride + 0:w] = W[rows[i]] x_tile, x_tile one tile
// of width w (16 or 8) in the layout above.
void tiled_row_list_f32(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows,
                        int count, const float* x_tile, int64_t w, float* out, int64_t out_stride);
void tiled_row_list_f64(const int32_t* ptr, const int32_t* idx, const double* v, const int64_t* rows,
                        int count, const double* x_tile, int64_t w, double* out, int64_t out_stride);
// Batch 1: out[i * out_stride] = W[rows[i]] . x.
void gathered_row_list_f32(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows,
                           int count, const float* x, float* out, int64_t out_stride);
void gathered_row_list_f64(const int32_t* ptr, const int32_t* idx, const double* v, const int64_t* rows,
                           int count, const double* x, double* out, int64_t out_stride);

// The same, overloaded on the dtype (for the templated loops).
inline void tiled_row_list(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows,
                           int count, const float* x_tile, int64_t w, float* out, int64_t out_stride) {
  tiled_row_list_f32(ptr, idx, v, rows, count, x_tile, w, out, out_stride);
}
inline void tiled_row_list(const int32_t* ptr, const int32_t* idx, const double* v, const int64_t* rows,
                           int count, const double* x_tile, int64_t w, double* out, int64_t out_stride) {
  tiled_row_list_f64(ptr, idx, v, rows, count, x_tile, w, out, out_stride);
}
inline void gathered_row_list(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows,
                              int count, const float* x, float* out, int64_t out_stride) {
  gathered_row_list_f32(ptr, idx, v, rows, count, x, out, out_stride);
}
inline void gathered_row_list(const int32_t* ptr, const int32_t* idx, const double* v, const int64_t* rows,
                              int count, const double* x, double* out, int64_t out_stride) {
  gathered_row_list_f64(ptr, idx, v, rows, count, x, out, out_stride);
}

// Generic packing (any dtype) of an (N, F) row-major array into x tiles of
// width tiled_width(N), and back; single-threaded (the fused loops pack
// states of one batch, small).
template <typename T>
void pack_tiles_into(const T* src, int64_t n, int64_t features, T* dst) {
  const int64_t width = tiled_width(n);
  for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
    const int64_t w = tile_width(j0, width);
    T* tile = dst + j0 * features;
    for (int64_t c = 0; c < features; ++c)
      for (int64_t j = 0; j < w; ++j) tile[c * w + j] = j0 + j < n ? src[(j0 + j) * features + c] : T(0);
  }
}

template <typename T>
void unpack_tiles_into(const T* src, int64_t n, int64_t features, T* dst) {
  const int64_t width = tiled_width(n);
  for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
    const int64_t w = tile_width(j0, width);
    const T* tile = src + j0 * features;
    for (int64_t j = 0; j < w && j0 + j < n; ++j)
      for (int64_t c = 0; c < features; ++c) dst[(j0 + j) * features + c] = tile[c * w + j];
  }
}

// The recurrent loops' state layout: x tiles of tiled_width(N) lanes, or
// the plain (features) vector at N = 1 (state_width gives the lane count).
inline int64_t state_width(int64_t n) { return n == 1 ? 1 : tiled_width(n); }

template <typename T>
void load_state(const T* src, int64_t n, int64_t features, T* dst) {
  if (n == 1) {
    std::copy(src, src + features, dst);
  } else {
    pack_tiles_into(src, n, features, dst);
  }
}

template <typename T>
void store_state(const T* src, int64_t n, int64_t features, T* dst) {
  if (n == 1) {
    std::copy(src, src + features, dst);
  } else {
    unpack_tiles_into(src, n, features, dst);
  }
}

// The whole product: (N, in) float32 -> (N, out), threads over nnz-balanced row ranges.
at::Tensor tiled_sparse_linear(const at::Tensor& input, const at::Tensor& values,
                               const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const at::Tensor& bias);

// The same product over a W^T built in column panels (transpose_csr_into
// with panel_rows; panel_ptr: panels * rows + 1 entries): (N, in) -> (N, rows),
// each row of y summed panel by panel, so that a panel's nonzeros read only
// its rows of the x tile (panel_rows x 16 floats). At in = 6000 the whole
// tile (375 KiB) is read with too little reuse per line to stay in L2 beside
// W^T's stream: 1.16-1.2x standalone with panels of 2000 (BENCHMARKS.md,
// session V).
at::Tensor tiled_sparse_linear_panels(const at::Tensor& input, const at::Tensor& values,
                                      const at::Tensor& panel_ptr, const at::Tensor& col_idx, int64_t panels);

// The value gradient (the SDDMM at W's stored nonzeros) on tiles of both
// operands: grad_output (N, out) and input (N, in), float32 contiguous ->
// (nnz). Taken where tiled_value_grad_enabled(input): the tiled product's
// conditions and a CPU with AVX2 and FMA (no portable twin: elsewhere the
// row-outer SDDMM of cpu_spmm.h runs). Measured through the op, W 6000 x 1500
// (BENCHMARKS.md, session C): 2-3.8x the row-outer kernel at N = 4-20,
// 1.8-2.2x at 64, 1.05-1.3x at 700 (on par at 67% on one thread).
bool tiled_value_grad_enabled(const at::Tensor& input);
at::Tensor tiled_sparse_linear_value_grad(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& row_ptr, const at::Tensor& col_idx);

}  // namespace sparse_kernels::cpu
