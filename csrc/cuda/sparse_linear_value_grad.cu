// CUDA value gradient (SDDMM) of sparse_linear: one thread per stored
// nonzero; its row is found by binary search in row_ptr.
#include "kernels.h"
#include "launch.cuh"

namespace sparse_kernels::cuda {

__device__ __forceinline__ int64_t row_of(const int32_t* row_ptr, int64_t out_features,
                                          int64_t k) {
  // Largest r with row_ptr[r] <= k (empty rows share a pointer value).
  int64_t lo = 0, hi = out_features - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (row_ptr[mid] <= k) lo = mid; else hi = mid - 1;
  }
  return lo;
}

template <typename T>
__global__ void sparse_linear_value_grad_kernel(
    const T* __restrict__ grad_y, const T* __restrict__ x,
    const int32_t* __restrict__ row_ptr, const int32_t* __restrict__ col_idx,
    T* __restrict__ grad_values, int64_t n_rows, int64_t in_features,
    int64_t out_features, int64_t nnz) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= nnz) return;
  const int64_t r = row_of(row_ptr, out_features, k);
  const int64_t c = col_idx[k];
  T acc = T(0);
  for (int64_t n = 0; n < n_rows; ++n) acc += grad_y[n * out_features + r] * x[n * in_features + c];
  grad_values[k] = acc;
}

template <typename T>
cudaError_t sparse_linear_value_grad(const T* grad_y, const T* x,
                                     const int32_t* row_ptr,
                                     const int32_t* col_idx, T* grad_values,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, int64_t nnz,
                                     cudaStream_t stream) {
  if (nnz == 0) return cudaSuccess;
  SK_LAUNCH(sparse_linear_value_grad_kernel<T>, blocks_for(nnz), kThreadsPerBlock, 0,
            stream, grad_y, x, row_ptr, col_idx, grad_values, n_rows, in_features,
            out_features, nnz);
  return cudaGetLastError();
}

template cudaError_t sparse_linear_value_grad<float>(const float*, const float*,
                                                     const int32_t*, const int32_t*,
                                                     float*, int64_t, int64_t, int64_t,
                                                     int64_t, cudaStream_t);
template cudaError_t sparse_linear_value_grad<double>(const double*, const double*,
                                                      const int32_t*, const int32_t*,
                                                      double*, int64_t, int64_t,
                                                      int64_t, int64_t, cudaStream_t);

}  // namespace sparse_kernels::cuda
