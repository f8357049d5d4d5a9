// CUDA input gradient of bsr_linear, grad_x = grad_y W: the kernels of
// bsr.cuh over W's block columns (the transposed block index), each block
// read transposed. A thread (or warp tile) owns its outputs: no atomics.
#include "bsr.cuh"

namespace sparse_kernels::cuda {

template <typename T>
cudaError_t bsr_linear_input_grad(const T* grad_y, const T* values, const int32_t* block_col_ptr,
                                  const int32_t* block_row_idx, const int32_t* block_csr2csc, T* grad_x,
                                  int64_t n_rows, int64_t in_features, int64_t out_features, int64_t bh,
                                  int64_t bw, cudaStream_t stream, bool tensor_cores) {
  if (bh < 1 || bw < 1) return cudaErrorInvalidValue;
  return launch_bsr_spmm<T, true>(grad_y, values, block_col_ptr, block_row_idx, block_csr2csc, nullptr, grad_x,
                                  n_rows, out_features, in_features, in_features / bw, bh, bw, stream,
                                  tensor_cores);
}

#define SK_INSTANTIATE(T)                                                                                    \
  template cudaError_t bsr_linear_input_grad<T>(const T*, const T*, const int32_t*, const int32_t*,           \
                                                const int32_t*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                                cudaStream_t, bool);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
