// CUDA fused recurrent-highway micro-layer cell and its backward: one thread
// per unit, the math of sparse_kernels/rhn_math.h.
#include "launch.cuh"
#include "rhn_kernels.h"
#include "sparse_kernels/rhn_math.h"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void rhn_cell_kernel(const T* __restrict__ pre, const T* __restrict__ s_prev,
                                T* __restrict__ s, int64_t n_rows, int64_t hidden) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * hidden) return;
  const int64_t n = e / hidden, j = e % hidden;
  const T* p = pre + n * 2 * hidden;
  s[e] = rhn_unit_forward(p[j], p[hidden + j], s_prev[e]);
}

template <typename T>
__global__ void rhn_cell_backward_kernel(const T* __restrict__ grad_s, const T* __restrict__ pre,
                                         const T* __restrict__ s_prev, T* __restrict__ grad_pre,
                                         T* __restrict__ grad_s_prev, int64_t n_rows,
                                         int64_t hidden) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * hidden) return;
  const int64_t n = e / hidden, j = e % hidden;
  const T* p = pre + n * 2 * hidden;
  T* dp = grad_pre + n * 2 * hidden;
  rhn_unit_backward(p[j], p[hidden + j], s_prev[e], grad_s[e], dp + j, dp + hidden + j,
                    grad_s_prev + e);
}

template <typename T>
cudaError_t rhn_cell(const T* pre, const T* s_prev, T* s, int64_t n_rows, int64_t hidden,
                     cudaStream_t stream) {
  const int64_t work = n_rows * hidden;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(rhn_cell_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream, pre, s_prev, s,
            n_rows, hidden);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rhn_cell_backward(const T* grad_s, const T* pre, const T* s_prev, T* grad_pre,
                              T* grad_s_prev, int64_t n_rows, int64_t hidden,
                              cudaStream_t stream) {
  const int64_t work = n_rows * hidden;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(rhn_cell_backward_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream, grad_s,
            pre, s_prev, grad_pre, grad_s_prev, n_rows, hidden);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                                  \
  template cudaError_t rhn_cell<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t); \
  template cudaError_t rhn_cell_backward<T>(const T*, const T*, const T*, T*, T*, int64_t,  \
                                            int64_t, cudaStream_t);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
