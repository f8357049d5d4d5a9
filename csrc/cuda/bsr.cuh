// CUDA block-sparse (BSR) products, shared by bsr_linear.cu,
// bsr_linear_input_grad.cu and bsr_linear_value_grad.cu.
//
// W (out x in) is a CSR pattern over its grid of bh x bw blocks
// (block_row_ptr, block_col_idx) with values (nblocks, bh, bw), each block
// row-major; activations are row-major (N, features). Two kernel families:
//
//  - SIMT, any value type and block shape: a thread per output entry (batch
//    row n, row i of a block row), looping over the row's blocks and their
//    reduction index. Threads of a warp take consecutive i of one batch row,
//    so the x values they read are broadcasts and their writes coalesce; a
//    block's values are read by every thread of the launch block, from L1.
//
//  - tensor cores (WMMA, m16n16k16, fp32 accumulation) for 16 x 16 blocks of
//    fp16/bf16 values on sm_80 and newer: a warp per 16-row batch tile and
//    block row, one mma per stored block. Tiles are staged through shared
//    memory, which gives WMMA the alignment and leading dimensions it needs
//    whatever the activations' strides, and zero-fills the batch tail.
//
// The forward and the input gradient are one kernel each: the input gradient
// walks W's block columns (the transposed block index, values through
// block_csr2csc) and reads each block transposed.
#pragma once

#include <mma.h>

#include <type_traits>

#include "accumulate.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace sparse_kernels::cuda {

// Largest grid the flattened (rows x batch tiles) launches may use.
constexpr long long kMaxGridBlocks = 2147483647LL;

// Whether this device can run the WMMA kernels (sm_80+: bf16 and the fp16
// m16n16k16 shapes used here). The emulator runs them on the CPU.
inline bool tensor_cores_available() {
#if defined(SK_CUDA_EMULATION)
  return true;
#else
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 8;
#endif
}

template <typename T>
constexpr bool kHasTensorCorePath = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// ---------------------------------------------------------------------------
// SIMT kernel. Launch block b covers row `b / tiles` (a block row, or a
// block column when kTrans) and batch rows [n0, n0 + batch_tile) with
// n0 = (b % tiles) * batch_tile. out_dim = bh (bw when kTrans) entries per
// row, red = bw (bh when kTrans) products per block.
template <typename T, bool kTrans>
__global__ void __launch_bounds__(kThreadsPerBlock)
    bsr_spmm_kernel(const T* __restrict__ dense, const T* __restrict__ values, const int32_t* __restrict__ ptr,
                    const int32_t* __restrict__ idx, const int32_t* __restrict__ perm, const T* __restrict__ bias,
                    T* __restrict__ out, int64_t n_rows, int64_t dense_features, int64_t out_features,
                    int64_t bh, int64_t bw, int64_t tiles, int64_t batch_tile) {
  using Acc = acc_t<T>;
  const int64_t row = blockIdx.x / tiles;
  const int64_t n0 = (blockIdx.x % tiles) * batch_tile;
  const int64_t out_dim = kTrans ? bw : bh;
  const int64_t red = kTrans ? bh : bw;
  const int64_t out_stride = kTrans ? 1 : bw;  // value stride along the output index
  const int64_t red_stride = kTrans ? bw : 1;  // ... and along the reduction index
  const int32_t k0 = ptr[row], k1 = ptr[row + 1];
  const int64_t pairs = out_dim * batch_tile;
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int64_t i = p % out_dim;
    const int64_t n = n0 + p / out_dim;
    if (n >= n_rows) break;  // p only grows: every later pair is past the batch too
    const T* d_row = dense + n * dense_features;
    Acc acc = bias ? to_acc(bias[row * out_dim + i]) : Acc(0);
    for (int32_t k = k0; k < k1; ++k) {
      const int64_t slot = kTrans ? perm[k] : k;
      const T* w = values + slot * bh * bw + i * out_stride;
      const T* d = d_row + static_cast<int64_t>(idx[k]) * red;
      for (int64_t c = 0; c < red; ++c) acc += to_acc(w[c * red_stride]) * to_acc(d[c]);
    }
    out[n * out_features + row * out_dim + i] = from_acc<T>(acc);
  }
}

// Batch rows per SIMT launch block: about kThreadsPerBlock output entries.
inline int64_t simt_batch_tile(int64_t out_dim) {
  return out_dim >= kThreadsPerBlock ? 1 : kThreadsPerBlock / out_dim;
}

template <typename T, bool kTrans>
cudaError_t launch_bsr_spmm_simt(const T* dense, const T* values, const int32_t* ptr, const int32_t* idx,
                                 const int32_t* perm, const T* bias, T* out, int64_t n_rows,
                                 int64_t dense_features, int64_t out_features, int64_t rows, int64_t bh,
                                 int64_t bw, cudaStream_t stream) {
  const int64_t batch_tile = simt_batch_tile(kTrans ? bw : bh);
  const int64_t tiles = (n_rows + batch_tile - 1) / batch_tile;
  if (rows * tiles > kMaxGridBlocks) return cudaErrorInvalidConfiguration;
  SK_LAUNCH((bsr_spmm_kernel<T, kTrans>), static_cast<unsigned>(rows * tiles), kThreadsPerBlock, 0, stream,
            dense, values, ptr, idx, perm, bias, out, n_rows, dense_features, out_features, bh, bw, tiles,
            batch_tile);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------
// Tensor-core kernels (16 x 16 blocks, fp16/bf16 values, fp32 accumulation).
constexpr int kWmma = 16;
constexpr int kWmmaWarps = 4;  // batch tiles (or blocks, for the value gradient) per launch block
constexpr int kWmmaTile = kWmma * kWmma;

// Copies a 16 x 16 tile, rows [r0, r0 + 16) x columns [c0, c0 + 16) of a
// row-major (rows, ld) matrix, into `tile` (row-major, 16 wide); rows past
// `rows` read as zero. Called by the 32 lanes of a warp.
template <typename T>
__device__ __forceinline__ void stage_tile(T* tile, const T* src, int64_t rows, int64_t ld, int64_t r0,
                                           int64_t c0, int lane) {
  for (int e = lane; e < kWmmaTile; e += 32) {
    const int64_t r = r0 + e / kWmma;
    tile[e] = r < rows ? src[r * ld + c0 + e % kWmma] : from_acc<T>(0.0f);
  }
}

// Forward (kTrans = false): y tile (16 batch x 16 outputs) += x tile (16 x 16
// inputs) @ W_k^T, W_k^T as a column-major matrix_b. Input gradient (kTrans):
// grad_x tile += grad_y tile @ W_k, W_k row-major. Launch block b: row
// b / tiles, batch rows from (b % tiles) * 64, one 16-row tile per warp.
template <typename T, bool kTrans>
__global__ void __launch_bounds__(32 * kWmmaWarps)
    bsr_spmm_wmma_kernel(const T* __restrict__ dense, const T* __restrict__ values,
                         const int32_t* __restrict__ ptr, const int32_t* __restrict__ idx,
                         const int32_t* __restrict__ perm, const T* __restrict__ bias, T* __restrict__ out,
                         int64_t n_rows, int64_t dense_features, int64_t out_features, int64_t tiles) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  using BLayout = std::conditional_t<kTrans, wmma::row_major, wmma::col_major>;
  __shared__ __align__(32) T a_tiles[kWmmaWarps][kWmmaTile];
  __shared__ __align__(32) T b_tiles[kWmmaWarps][kWmmaTile];
  __shared__ __align__(32) float c_tiles[kWmmaWarps][kWmmaTile];
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t row = blockIdx.x / tiles;
  const int64_t n0 = ((blockIdx.x % tiles) * kWmmaWarps + warp) * kWmma;
  if (n0 >= n_rows) return;  // a whole warp leaves together
  T* a_tile = a_tiles[warp];
  T* b_tile = b_tiles[warp];
  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int32_t k = ptr[row]; k < ptr[row + 1]; ++k) {
    const int64_t slot = kTrans ? perm[k] : k;
    stage_tile(a_tile, dense, n_rows, dense_features, n0, static_cast<int64_t>(idx[k]) * kWmma, lane);
    for (int e = lane; e < kWmmaTile; e += 32) b_tile[e] = values[slot * kWmmaTile + e];
    __syncwarp();
    wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, T, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, T, BLayout> b;
    wmma::load_matrix_sync(a, a_tile, kWmma);
    wmma::load_matrix_sync(b, b_tile, kWmma);
    wmma::mma_sync(acc, a, b, acc);
    __syncwarp();  // the tiles are restaged next (mma_sync waits for the warp too; this does not rely on it)
  }
  float* c_tile = c_tiles[warp];
  wmma::store_matrix_sync(c_tile, acc, kWmma, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < kWmmaTile; e += 32) {
    const int64_t n = n0 + e / kWmma;
    const int64_t o = row * kWmma + e % kWmma;
    if (n < n_rows) out[n * out_features + o] = from_acc<T>(c_tile[e] + (bias ? to_acc(bias[o]) : 0.0f));
  }
#else
  __trap();  // launched only where tensor_cores_available()
#endif
}

template <typename T, bool kTrans>
cudaError_t launch_bsr_spmm(const T* dense, const T* values, const int32_t* ptr, const int32_t* idx,
                            const int32_t* perm, const T* bias, T* out, int64_t n_rows, int64_t dense_features,
                            int64_t out_features, int64_t rows, int64_t bh, int64_t bw, cudaStream_t stream,
                            bool tensor_cores) {
  if (n_rows == 0 || rows == 0) return cudaSuccess;
  if constexpr (kHasTensorCorePath<T>) {
    if (tensor_cores && bh == kWmma && bw == kWmma && tensor_cores_available()) {
      const int64_t tiles = (n_rows + kWmma * kWmmaWarps - 1) / (kWmma * kWmmaWarps);
      if (rows * tiles > kMaxGridBlocks) return cudaErrorInvalidConfiguration;
      SK_LAUNCH((bsr_spmm_wmma_kernel<T, kTrans>), static_cast<unsigned>(rows * tiles), 32 * kWmmaWarps, 0,
                stream, dense, values, ptr, idx, perm, bias, out, n_rows, dense_features, out_features, tiles);
      return cudaGetLastError();
    }
  }
  return launch_bsr_spmm_simt<T, kTrans>(dense, values, ptr, idx, perm, bias, out, n_rows, dense_features,
                                         out_features, rows, bh, bw, stream);
}

// The block row holding stored block k: the last r with ptr[r] <= k (rows
// before it, empty ones included, start at or before k; later ones after).
__device__ __forceinline__ int64_t block_row_of(const int32_t* ptr, int64_t rows, int64_t k) {
  int64_t lo = 0, hi = rows;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (ptr[mid] <= k) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace sparse_kernels::cuda
