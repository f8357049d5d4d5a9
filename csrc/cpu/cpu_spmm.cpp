// The runtime-dispatched (target_clones) instances of the CPU inner loops in
// sparse_kernels/cpu_spmm.h.
#include "sparse_kernels/cpu_spmm.h"

namespace sparse_kernels::cpu {

SK_CPU_CLONES void spmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v,
                                 const int32_t* perm, const float* dense_t, const float* bias,
                                 float* out_t, int64_t n, int64_t r0, int64_t r1) {
  spmm_rows(ptr, idx, v, perm, dense_t, bias, out_t, n, r0, r1);
}

SK_CPU_CLONES void spmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* v,
                                 const int32_t* perm, const double* dense_t, const double* bias,
                                 double* out_t, int64_t n, int64_t r0, int64_t r1) {
  spmm_rows(ptr, idx, v, perm, dense_t, bias, out_t, n, r0, r1);
}

SK_CPU_CLONES void scatter_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v,
                                    const float* dense_t, float* out_t, int64_t n, int64_t c0,
                                    int64_t c1, int64_t r0, int64_t r1) {
  scatter_rows(ptr, idx, v, dense_t, out_t, n, c0, c1, r0, r1);
}

SK_CPU_CLONES void scatter_rows_f64(const int32_t* ptr, const int32_t* idx, const double* v,
                                    const double* dense_t, double* out_t, int64_t n, int64_t c0,
                                    int64_t c1, int64_t r0, int64_t r1) {
  scatter_rows(ptr, idx, v, dense_t, out_t, n, c0, c1, r0, r1);
}

SK_CPU_CLONES void sddmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* grad_t,
                                  const float* input_t, float* grad_v, int64_t n, int64_t r0,
                                  int64_t r1) {
  sddmm_rows(ptr, idx, grad_t, input_t, grad_v, n, r0, r1);
}

SK_CPU_CLONES void sddmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* grad_t,
                                  const double* input_t, double* grad_v, int64_t n, int64_t r0,
                                  int64_t r1) {
  sddmm_rows(ptr, idx, grad_t, input_t, grad_v, n, r0, r1);
}

}  // namespace sparse_kernels::cpu
