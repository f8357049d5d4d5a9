// CUDA value gradient of bsr_linear at the stored blocks:
//   grad_values[k] = grad_y[:, block row rows]^T @ x[:, block column cols]   (bh x bw)
//
// SIMT, any type and shape: a thread per stored entry (k, i, j), looping over
// the batch; consecutive threads take consecutive j of one block row, so
// their x reads coalesce and their grad_y reads are broadcasts. Tensor cores
// for 16 x 16 fp16/bf16 blocks on sm_80+: a warp per stored block, one mma
// per 16 batch rows (tiles staged in shared memory, fp32 accumulation).
// Every entry is written once, no atomics; with N = 0 the kernels write zeros.
#include "bsr.cuh"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void __launch_bounds__(kThreadsPerBlock)
    bsr_value_grad_kernel(const T* __restrict__ grad_y, const T* __restrict__ x, const int32_t* __restrict__ ptr,
                          const int32_t* __restrict__ idx, T* __restrict__ grad_values, int64_t n_rows,
                          int64_t in_features, int64_t out_features, int64_t bh, int64_t bw, int64_t entries) {
  using Acc = acc_t<T>;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= entries) return;
  const int64_t block_size = bh * bw;
  const int64_t k = p / block_size;
  const int64_t i = (p % block_size) / bw, j = p % bw;
  const int64_t row = block_row_of(ptr, out_features / bh, k);
  const T* g = grad_y + row * bh + i;
  const T* xc = x + static_cast<int64_t>(idx[k]) * bw + j;
  Acc acc = Acc(0);
  for (int64_t n = 0; n < n_rows; ++n) acc += to_acc(g[n * out_features]) * to_acc(xc[n * in_features]);
  grad_values[p] = from_acc<T>(acc);
}

template <typename T>
__global__ void __launch_bounds__(32 * kWmmaWarps)
    bsr_value_grad_wmma_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                               const int32_t* __restrict__ ptr, const int32_t* __restrict__ idx,
                               T* __restrict__ grad_values, int64_t n_rows, int64_t in_features,
                               int64_t out_features, int64_t nblocks) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) T a_tiles[kWmmaWarps][kWmmaTile];
  __shared__ __align__(32) T b_tiles[kWmmaWarps][kWmmaTile];
  __shared__ __align__(32) float c_tiles[kWmmaWarps][kWmmaTile];
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kWmmaWarps + warp;
  if (k >= nblocks) return;  // a whole warp leaves together
  const int64_t row = block_row_of(ptr, out_features / kWmma, k);
  T* a_tile = a_tiles[warp];
  T* b_tile = b_tiles[warp];
  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int64_t n0 = 0; n0 < n_rows; n0 += kWmma) {
    // a_tile[n][i] = grad_y[n0 + n, row*16 + i]: grad_y^T as a column-major matrix_a.
    stage_tile(a_tile, grad_y, n_rows, out_features, n0, row * kWmma, lane);
    stage_tile(b_tile, x, n_rows, in_features, n0, static_cast<int64_t>(idx[k]) * kWmma, lane);
    __syncwarp();
    wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, T, wmma::col_major> a;
    wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, T, wmma::row_major> b;
    wmma::load_matrix_sync(a, a_tile, kWmma);
    wmma::load_matrix_sync(b, b_tile, kWmma);
    wmma::mma_sync(acc, a, b, acc);
    __syncwarp();  // the tiles are restaged next (mma_sync waits for the warp too; this does not rely on it)
  }
  float* c_tile = c_tiles[warp];
  wmma::store_matrix_sync(c_tile, acc, kWmma, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < kWmmaTile; e += 32) grad_values[k * kWmmaTile + e] = from_acc<T>(c_tile[e]);
#else
  __trap();  // launched only where tensor_cores_available()
#endif
}

template <typename T>
cudaError_t bsr_linear_value_grad(const T* grad_y, const T* x, const int32_t* block_row_ptr,
                                  const int32_t* block_col_idx, T* grad_values, int64_t n_rows,
                                  int64_t in_features, int64_t out_features, int64_t bh, int64_t bw,
                                  int64_t nblocks, cudaStream_t stream, bool tensor_cores) {
  if (bh < 1 || bw < 1) return cudaErrorInvalidValue;
  if (nblocks == 0) return cudaSuccess;
  if constexpr (kHasTensorCorePath<T>) {
    if (tensor_cores && bh == kWmma && bw == kWmma && tensor_cores_available()) {
      const int64_t grid = (nblocks + kWmmaWarps - 1) / kWmmaWarps;
      if (grid > kMaxGridBlocks) return cudaErrorInvalidConfiguration;
      SK_LAUNCH(bsr_value_grad_wmma_kernel<T>, static_cast<unsigned>(grid), 32 * kWmmaWarps, 0, stream, grad_y,
                x, block_row_ptr, block_col_idx, grad_values, n_rows, in_features, out_features, nblocks);
      return cudaGetLastError();
    }
  }
  const int64_t entries = nblocks * bh * bw;
  const int64_t grid = (entries + kThreadsPerBlock - 1) / kThreadsPerBlock;
  if (grid > kMaxGridBlocks) return cudaErrorInvalidConfiguration;
  SK_LAUNCH(bsr_value_grad_kernel<T>, static_cast<unsigned>(grid), kThreadsPerBlock, 0, stream, grad_y, x,
            block_row_ptr, block_col_idx, grad_values, n_rows, in_features, out_features, bh, bw, entries);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                                                    \
  template cudaError_t bsr_linear_value_grad<T>(const T*, const T*, const int32_t*, const int32_t*, T*, int64_t, \
                                                int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t, bool);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
