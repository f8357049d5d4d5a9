// CUDA forward of sparse_linear: one thread per output element (n, r).
// A first, correct version; the Sputnik-style kernel replaces it later.
#include "kernels.h"
#include "launch.cuh"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void sparse_linear_kernel(const T* __restrict__ x,
                                     const T* __restrict__ values,
                                     const int32_t* __restrict__ row_ptr,
                                     const int32_t* __restrict__ col_idx,
                                     const T* __restrict__ bias, T* __restrict__ y,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * out_features) return;
  const int64_t n = e / out_features, r = e % out_features;
  const T* x_n = x + n * in_features;
  T acc = bias ? bias[r] : T(0);
  for (int32_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) acc += values[k] * x_n[col_idx[k]];
  y[e] = acc;
}

template <typename T>
cudaError_t sparse_linear(const T* x, const T* values, const int32_t* row_ptr,
                          const int32_t* col_idx, const T* bias, T* y,
                          int64_t n_rows, int64_t in_features,
                          int64_t out_features, cudaStream_t stream) {
  const int64_t work = n_rows * out_features;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(sparse_linear_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream,
            x, values, row_ptr, col_idx, bias, y, n_rows, in_features, out_features);
  return cudaGetLastError();
}

template cudaError_t sparse_linear<float>(const float*, const float*, const int32_t*,
                                          const int32_t*, const float*, float*, int64_t,
                                          int64_t, int64_t, cudaStream_t);
template cudaError_t sparse_linear<double>(const double*, const double*, const int32_t*,
                                           const int32_t*, const double*, double*,
                                           int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace sparse_kernels::cuda
