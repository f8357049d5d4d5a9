// CUDA Elman RNN cell (tanh or relu) and its backward: one thread per unit.
#include "kernels.h"
#include "launch.cuh"
#include "sparse_kernels/rnn_math.h"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void rnn_cell_kernel(const T* __restrict__ pre, T* __restrict__ h, int64_t n, bool relu) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e < n) h[e] = rnn_unit_forward(pre[e], relu);
}

template <typename T>
__global__ void rnn_cell_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ h,
                                         T* __restrict__ grad_pre, int64_t n, bool relu) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e < n) grad_pre[e] = rnn_unit_backward(h[e], grad_h[e], relu);
}

template <typename T>
cudaError_t rnn_cell(const T* pre, T* h, int64_t n, bool relu, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SK_LAUNCH(rnn_cell_kernel<T>, blocks_for(n), kThreadsPerBlock, 0, stream, pre, h, n, relu);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rnn_cell_backward(const T* grad_h, const T* h, T* grad_pre, int64_t n, bool relu,
                              cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SK_LAUNCH(rnn_cell_backward_kernel<T>, blocks_for(n), kThreadsPerBlock, 0, stream, grad_h, h,
            grad_pre, n, relu);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                              \
  template cudaError_t rnn_cell<T>(const T*, T*, int64_t, bool, cudaStream_t);         \
  template cudaError_t rnn_cell_backward<T>(const T*, const T*, T*, int64_t, bool, cudaStream_t);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
