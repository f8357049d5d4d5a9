// CUDA fused LSTM cell (pointwise part) and its backward: one thread per unit,
// the gate math in the accumulation type (fp32 for 16-bit values).
#include "accumulate.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "sparse_kernels/lstm_math.h"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void lstm_cell_kernel(const T* __restrict__ gates,
                                 const T* __restrict__ c_prev, T* __restrict__ h,
                                 T* __restrict__ c, int64_t n_rows, int64_t hidden) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * hidden) return;
  const int64_t n = e / hidden, j = e % hidden;
  const T* g = gates + n * 4 * hidden;
  acc_t<T> h_e, c_e;
  lstm_unit_forward(to_acc(g[j]), to_acc(g[hidden + j]), to_acc(g[2 * hidden + j]),
                    to_acc(g[3 * hidden + j]), to_acc(c_prev[e]), &h_e, &c_e);
  h[e] = from_acc<T>(h_e);
  c[e] = from_acc<T>(c_e);
}

template <typename T>
__global__ void lstm_cell_backward_kernel(
    const T* __restrict__ grad_h, const T* __restrict__ grad_c,
    const T* __restrict__ gates, const T* __restrict__ c_prev,
    const T* __restrict__ c, T* __restrict__ grad_gates,
    T* __restrict__ grad_c_prev, int64_t n_rows, int64_t hidden) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n_rows * hidden) return;
  const int64_t n = e / hidden, j = e % hidden;
  const T* g = gates + n * 4 * hidden;
  T* dg = grad_gates + n * 4 * hidden;
  acc_t<T> di, df, dgg, dout, dc_prev;
  lstm_unit_backward(to_acc(g[j]), to_acc(g[hidden + j]), to_acc(g[2 * hidden + j]),
                     to_acc(g[3 * hidden + j]), to_acc(c_prev[e]), to_acc(c[e]),
                     to_acc(grad_h[e]), to_acc(grad_c[e]), &di, &df, &dgg, &dout, &dc_prev);
  dg[j] = from_acc<T>(di);
  dg[hidden + j] = from_acc<T>(df);
  dg[2 * hidden + j] = from_acc<T>(dgg);
  dg[3 * hidden + j] = from_acc<T>(dout);
  grad_c_prev[e] = from_acc<T>(dc_prev);
}

template <typename T>
cudaError_t lstm_cell(const T* gates, const T* c_prev, T* h, T* c, int64_t n_rows,
                      int64_t hidden, cudaStream_t stream) {
  const int64_t work = n_rows * hidden;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(lstm_cell_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream, gates,
            c_prev, h, c, n_rows, hidden);
  return cudaGetLastError();
}

template <typename T>
cudaError_t lstm_cell_backward(const T* grad_h, const T* grad_c, const T* gates,
                               const T* c_prev, const T* c, T* grad_gates,
                               T* grad_c_prev, int64_t n_rows, int64_t hidden,
                               cudaStream_t stream) {
  const int64_t work = n_rows * hidden;
  if (work == 0) return cudaSuccess;
  SK_LAUNCH(lstm_cell_backward_kernel<T>, blocks_for(work), kThreadsPerBlock, 0, stream,
            grad_h, grad_c, gates, c_prev, c, grad_gates, grad_c_prev, n_rows, hidden);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                              \
  template cudaError_t lstm_cell<T>(const T*, const T*, T*, T*, int64_t, int64_t,      \
                                    cudaStream_t);                                     \
  template cudaError_t lstm_cell_backward<T>(const T*, const T*, const T*, const T*,   \
                                             const T*, T*, T*, int64_t, int64_t,       \
                                             cudaStream_t);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
