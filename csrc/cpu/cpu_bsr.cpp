// The runtime-dispatched (target_clones) instances of the CPU block-sparse
// inner loops in sparse_kernels/cpu_bsr.h.
#include "sparse_kernels/cpu_bsr.h"

namespace sparse_kernels::cpu {

SK_CPU_CLONES void bsr_spmm_rows_f32(const int32_t* ptr, const int32_t* idx, const float* v,
                                     const int32_t* perm, int64_t bh, int64_t bw, const float* dense_t,
                                     const float* bias, float* out_t, int64_t n, int64_t r0, int64_t r1) {
  if (perm) {
    bsr_spmm_rows<float, true>(ptr, idx, v, perm, bh, bw, dense_t, bias, out_t, n, r0, r1);
  } else {
    bsr_spmm_rows<float, false>(ptr, idx, v, perm, bh, bw, dense_t, bias, out_t, n, r0, r1);
  }
}

SK_CPU_CLONES void bsr_spmm_rows_f64(const int32_t* ptr, const int32_t* idx, const double* v,
                                     const int32_t* perm, int64_t bh, int64_t bw, const double* dense_t,
                                     const double* bias, double* out_t, int64_t n, int64_t r0, int64_t r1) {
  if (perm) {
    bsr_spmm_rows<double, true>(ptr, idx, v, perm, bh, bw, dense_t, bias, out_t, n, r0, r1);
  } else {
    bsr_spmm_rows<double, false>(ptr, idx, v, perm, bh, bw, dense_t, bias, out_t, n, r0, r1);
  }
}

SK_CPU_CLONES void bsr_value_grad_outer_f32(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                            const float* grad_output, int64_t out_features, const float* input,
                                            int64_t in_features, float* grad_v, int64_t n, int64_t r0,
                                            int64_t r1) {
  bsr_value_grad_outer_range(ptr, idx, bh, bw, grad_output, out_features, input, in_features, grad_v, n, r0, r1);
}

SK_CPU_CLONES void bsr_value_grad_outer_f64(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                            const double* grad_output, int64_t out_features, const double* input,
                                            int64_t in_features, double* grad_v, int64_t n, int64_t r0,
                                            int64_t r1) {
  bsr_value_grad_outer_range(ptr, idx, bh, bw, grad_output, out_features, input, in_features, grad_v, n, r0, r1);
}

SK_CPU_CLONES void bsr_value_grad_lanes_f32(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                            const float* grad_t, const float* input_t, float* grad_v, int64_t n,
                                            int64_t r0, int64_t r1) {
  bsr_value_grad_lanes_range(ptr, idx, bh, bw, grad_t, input_t, grad_v, n, r0, r1);
}

SK_CPU_CLONES void bsr_value_grad_lanes_f64(const int32_t* ptr, const int32_t* idx, int64_t bh, int64_t bw,
                                            const double* grad_t, const double* input_t, double* grad_v,
                                            int64_t n, int64_t r0, int64_t r1) {
  bsr_value_grad_lanes_range(ptr, idx, bh, bw, grad_t, input_t, grad_v, n, r0, r1);
}

}  // namespace sparse_kernels::cpu
