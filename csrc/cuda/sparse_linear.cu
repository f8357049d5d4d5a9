// CUDA forward of sparse_linear, y = x W^T + bias: the CSR sparse-times-dense
// kernel of spmm.cuh over W's rows; for wide batches the batch-on-lanes one
// of wide_batch.cuh, y^T = W x^T over transposed operands.
#include "kernels.h"
#include "spmm.cuh"
#include "wide_batch.cuh"

namespace sparse_kernels::cuda {

template <typename T, typename Index>
cudaError_t sparse_linear(const T* x, const T* values, const int32_t* row_ptr,
                          const Index* col_idx, const T* bias, T* y,
                          int64_t n_rows, int64_t in_features,
                          int64_t out_features, int64_t nnz, cudaStream_t stream,
                          const int32_t* row_order) {
  return launch_csr_spmm<T, Index>(x, values, nullptr, row_ptr, col_idx, row_order, bias, y, n_rows,
                            in_features, out_features, nnz, stream);
}

template <typename T, typename Index>
cudaError_t sparse_linear_wide(const T* xT, int64_t ld_x, const T* values, const int32_t* row_ptr,
                               const Index* col_idx, const T* bias, T* yT, int64_t ld_y, int64_t n_rows,
                               int64_t out_features, cudaStream_t stream, const int32_t* row_order) {
  return launch_csr_spmm_wide<T, Index>(xT, ld_x, values, nullptr, row_ptr, col_idx, row_order, bias, yT, ld_y,
                                        n_rows, out_features, stream);
}

#define SK_INSTANTIATE_INDEX(T, Index)                                                     \
  template cudaError_t sparse_linear_wide<T, Index>(const T*, int64_t, const T*, const int32_t*, \
                                                    const Index*, const T*, T*, int64_t, int64_t, \
                                                    int64_t, cudaStream_t, const int32_t*);     \
  template cudaError_t sparse_linear<T, Index>(const T*, const T*, const int32_t*,         \
                                               const Index*, const T*, T*, int64_t, int64_t, \
                                               int64_t, int64_t, cudaStream_t, const int32_t*);
#define SK_INSTANTIATE(T) SK_INSTANTIATE_INDEX(T, int32_t) SK_INSTANTIATE_INDEX(T, uint16_t)
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE
#undef SK_INSTANTIATE_INDEX

}  // namespace sparse_kernels::cuda
