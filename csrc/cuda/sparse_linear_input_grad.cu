// CUDA input gradient of sparse_linear, grad_x = grad_y W: the CSR
// sparse-times-dense kernel of spmm.cuh over the rows of W^T, i.e. the
// cached CSC view (col_ptr, row_idx), reading W's values through csr2csc.
// Every output element is written by one subwarp: no atomics. Wide batches:
// grad_x^T = W^T grad_y^T over transposed operands (wide_batch.cuh).
#include "kernels.h"
#include "spmm.cuh"
#include "wide_batch.cuh"

namespace sparse_kernels::cuda {

template <typename T, typename Index>
cudaError_t sparse_linear_input_grad(const T* grad_y, const T* values,
                                     const int32_t* col_ptr,
                                     const Index* row_idx,
                                     const int32_t* csr2csc, T* grad_x,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, int64_t nnz, cudaStream_t stream,
                                     const int32_t* col_order) {
  return launch_csr_spmm<T, Index>(grad_y, values, csr2csc, col_ptr, row_idx, col_order, nullptr, grad_x,
                            n_rows, out_features, in_features, nnz, stream);
}

template <typename T, typename Index>
cudaError_t sparse_linear_input_grad_wide(const T* grad_yT, int64_t ld_grad_y, const T* values,
                                          const int32_t* col_ptr, const Index* row_idx, const int32_t* csr2csc,
                                          T* grad_xT, int64_t ld_grad_x, int64_t n_rows, int64_t in_features,
                                          cudaStream_t stream, const int32_t* col_order) {
  return launch_csr_spmm_wide<T, Index>(grad_yT, ld_grad_y, values, csr2csc, col_ptr, row_idx, col_order, nullptr,
                                        grad_xT, ld_grad_x, n_rows, in_features, stream);
}

#define SK_INSTANTIATE_INDEX(T, Index)                                                     \
  template cudaError_t sparse_linear_input_grad_wide<T, Index>(                            \
      const T*, int64_t, const T*, const int32_t*, const Index*, const int32_t*, T*, int64_t, \
      int64_t, int64_t, cudaStream_t, const int32_t*);                                     \
  template cudaError_t sparse_linear_input_grad<T, Index>(                                 \
      const T*, const T*, const int32_t*, const Index*, const int32_t*, T*, int64_t, int64_t, \
      int64_t, int64_t, cudaStream_t, const int32_t*);
#define SK_INSTANTIATE(T) SK_INSTANTIATE_INDEX(T, int32_t) SK_INSTANTIATE_INDEX(T, uint16_t)
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE
#undef SK_INSTANTIATE_INDEX

}  // namespace sparse_kernels::cuda
