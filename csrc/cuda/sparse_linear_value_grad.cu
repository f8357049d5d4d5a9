// CUDA value gradient (SDDMM) of sparse_linear at the stored nonzeros:
//   grad_values[k] = sum_n grad_y[n, r] * x[n, col_idx[k]]   for k in row r.
//
// One block per row r of W: the lanes of each warp take 32 consecutive
// nonzeros of the row (coalesced index loads, a gather from each x row),
// the block's warps split the batch rows n between them, and the warps'
// partial sums meet in shared memory. grad_y[n, r] is one broadcast load per
// warp. Nonzeros are written once, no atomics.
#include "accumulate.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace sparse_kernels::cuda {

constexpr int kSddmmWarps = 4;
constexpr int kSddmmThreads = 32 * kSddmmWarps;

template <typename T>
__global__ void __launch_bounds__(kSddmmThreads)
    sddmm_row_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                     const int32_t* __restrict__ row_ptr, const int32_t* __restrict__ col_idx,
                     T* __restrict__ grad_values, int64_t n_rows, int64_t in_features,
                     int64_t out_features) {
  using Acc = acc_t<T>;
  __shared__ Acc partial[kSddmmWarps][32];
  const int64_t r = blockIdx.x;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int32_t begin = row_ptr[r], end = row_ptr[r + 1];
  // The chunk loop is uniform over the block: every thread meets every barrier.
  for (int32_t chunk = begin; chunk < end; chunk += 32) {
    const int32_t k = chunk + lane;
    Acc acc = Acc(0);
    if (k < end) {
      const T* x_col = x + col_idx[k];
      for (int64_t n = warp; n < n_rows; n += kSddmmWarps)
        acc += to_acc(grad_y[n * out_features + r]) * to_acc(x_col[n * in_features]);
    }
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && k < end) {
      Acc total = partial[0][lane];
#pragma unroll
      for (int w = 1; w < kSddmmWarps; ++w) total += partial[w][lane];
      grad_values[k] = from_acc<T>(total);
    }
    __syncthreads();  // partial is overwritten by the next chunk
  }
}

template <typename T>
cudaError_t sparse_linear_value_grad(const T* grad_y, const T* x,
                                     const int32_t* row_ptr,
                                     const int32_t* col_idx, T* grad_values,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, int64_t nnz,
                                     cudaStream_t stream) {
  if (nnz == 0) return cudaSuccess;
  SK_LAUNCH(sddmm_row_kernel<T>, static_cast<unsigned>(out_features), kSddmmThreads, 0, stream,
            grad_y, x, row_ptr, col_idx, grad_values, n_rows, in_features, out_features);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                                  \
  template cudaError_t sparse_linear_value_grad<T>(const T*, const T*, const int32_t*,     \
                                                   const int32_t*, T*, int64_t, int64_t,   \
                                                   int64_t, int64_t, cudaStream_t);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
