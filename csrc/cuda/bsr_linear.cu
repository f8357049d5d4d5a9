// CUDA forward of bsr_linear, y = x W^T + bias for a block-sparse W: the
// kernels of bsr.cuh over W's block rows.
#include "bsr.cuh"

namespace sparse_kernels::cuda {

template <typename T>
cudaError_t bsr_linear(const T* x, const T* values, const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const T* bias, T* y, int64_t n_rows, int64_t in_features, int64_t out_features,
                       int64_t bh, int64_t bw, cudaStream_t stream, bool tensor_cores) {
  if (bh < 1 || bw < 1) return cudaErrorInvalidValue;
  return launch_bsr_spmm<T, false>(x, values, block_row_ptr, block_col_idx, nullptr, bias, y, n_rows,
                                   in_features, out_features, out_features / bh, bh, bw, stream, tensor_cores);
}

#define SK_INSTANTIATE(T)                                                                                 \
  template cudaError_t bsr_linear<T>(const T*, const T*, const int32_t*, const int32_t*, const T*, T*, int64_t, \
                                     int64_t, int64_t, int64_t, int64_t, cudaStream_t, bool);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
