// CUDA fused GRU cell (pointwise part) and its backward: one thread per unit.
#include "kernels.h"
#include "launch.cuh"
#include "sparse_kernels/rnn_math.h"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void gru_cell_kernel(const T* __restrict__ ig, const T* __restrict__ hg,
                                const T* __restrict__ h_prev, T* __restrict__ h, int64_t n_rows,
                                int64_t hidden) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * hidden) return;
  const int64_t n = e / hidden, j = e % hidden, o = n * 3 * hidden;
  h[e] = gru_unit_forward(ig[o + j], ig[o + hidden + j], ig[o + 2 * hidden + j], hg[o + j],
                          hg[o + hidden + j], hg[o + 2 * hidden + j], h_prev[e]);
}

template <typename T>
__global__ void gru_cell_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ ig,
                                         const T* __restrict__ hg, const T* __restrict__ h_prev,
                                         T* __restrict__ d_ig, T* __restrict__ d_hg,
                                         T* __restrict__ dh_prev, int64_t n_rows, int64_t hidden) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * hidden) return;
  const int64_t n = e / hidden, j = e % hidden, o = n * 3 * hidden;
  gru_unit_backward(ig[o + j], ig[o + hidden + j], ig[o + 2 * hidden + j], hg[o + j],
                    hg[o + hidden + j], hg[o + 2 * hidden + j], h_prev[e], grad_h[e],
                    d_ig + o + j, d_ig + o + hidden + j, d_ig + o + 2 * hidden + j, d_hg + o + j,
                    d_hg + o + hidden + j, d_hg + o + 2 * hidden + j, dh_prev + e);
}

template <typename T>
cudaError_t gru_cell(const T* ig, const T* hg, const T* h_prev, T* h, int64_t n_rows,
                     int64_t hidden, cudaStream_t stream) {
  const int64_t work = n_rows * hidden;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(gru_cell_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream, ig, hg, h_prev, h,
            n_rows, hidden);
  return cudaGetLastError();
}

template <typename T>
cudaError_t gru_cell_backward(const T* grad_h, const T* ig, const T* hg, const T* h_prev, T* d_ig,
                              T* d_hg, T* dh_prev, int64_t n_rows, int64_t hidden,
                              cudaStream_t stream) {
  const int64_t work = n_rows * hidden;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(gru_cell_backward_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream, grad_h, ig,
            hg, h_prev, d_ig, d_hg, dh_prev, n_rows, hidden);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                                   \
  template cudaError_t gru_cell<T>(const T*, const T*, const T*, T*, int64_t, int64_t,      \
                                   cudaStream_t);                                           \
  template cudaError_t gru_cell_backward<T>(const T*, const T*, const T*, const T*, T*, T*, \
                                            T*, int64_t, int64_t, cudaStream_t);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
