// CUDA input gradient of sparse_linear through the CSC view: one thread per
// element (n, c) of grad_x, so no atomics.
#include "kernels.h"
#include "launch.cuh"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void sparse_linear_input_grad_kernel(
    const T* __restrict__ grad_y, const T* __restrict__ values,
    const int32_t* __restrict__ col_ptr, const int32_t* __restrict__ row_idx,
    const int32_t* __restrict__ csr2csc, T* __restrict__ grad_x, int64_t n_rows,
    int64_t in_features, int64_t out_features) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * in_features) return;
  const int64_t n = e / in_features, c = e % in_features;
  const T* gy_n = grad_y + n * out_features;
  T acc = T(0);
  for (int32_t p = col_ptr[c]; p < col_ptr[c + 1]; ++p) acc += values[csr2csc[p]] * gy_n[row_idx[p]];
  grad_x[e] = acc;
}

template <typename T>
cudaError_t sparse_linear_input_grad(const T* grad_y, const T* values,
                                     const int32_t* col_ptr,
                                     const int32_t* row_idx,
                                     const int32_t* csr2csc, T* grad_x,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, cudaStream_t stream) {
  const int64_t work = n_rows * in_features;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(sparse_linear_input_grad_kernel<T>, blocks_for(work), kThreadsPerBlock, 0,
            stream, grad_y, values, col_ptr, row_idx, csr2csc, grad_x, n_rows,
            in_features, out_features);
  return cudaGetLastError();
}

template cudaError_t sparse_linear_input_grad<float>(const float*, const float*,
                                                     const int32_t*, const int32_t*,
                                                     const int32_t*, float*, int64_t,
                                                     int64_t, int64_t, cudaStream_t);
template cudaError_t sparse_linear_input_grad<double>(const double*, const double*,
                                                      const int32_t*, const int32_t*,
                                                      const int32_t*, double*, int64_t,
                                                      int64_t, int64_t, cudaStream_t);

}  // namespace sparse_kernels::cuda
