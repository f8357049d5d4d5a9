// Batch-1 float32 products with scalar-load gathers on AVX2+FMA CPUs
// (csrc/cpu/cpu_gathered.cpp). Each returns false, having done nothing,
// where the kernel does not apply (no AVX2+FMA, not x86-64 GCC, or
// SPARSE_KERNELS_CPU_SCALAR_GATHER=0); the caller then runs its portable loop.
#pragma once

#include <cstdint>

namespace sparse_kernels::cpu {

// Whether the kernels below run (read once per process).
bool scalar_gather_enabled();

// out[r] = sum_k v[k] * x[idx[k]] (+ bias[r]) for r in [r0, r1): the batch-1
// forward over CSR rows. (Not the transposed product over CSC columns: its
// values need a gather of their own through the permutation, and 16 scalar
// loads per 8 nonzeros lost to the compiler's two vgatherdps, 0.88x at
// 8192 x 2048, 90%, one thread; that product keeps the portable loop.)
bool gathered_rows_avx2(const int32_t* ptr, const int32_t* idx, const float* v, const float* x, const float* bias,
                        float* out, int64_t r0, int64_t r1);

// out[i * out_stride] = W[rows[i]] . x for i < count (the fused LSTM's batch-1 step).
bool gathered_row_list_avx2(const int32_t* ptr, const int32_t* idx, const float* v, const int64_t* rows, int count,
                            const float* x, float* out, int64_t out_stride);

// out[k] = g[r] * x[idx[k]] for the nonzeros k of the rows [r0, r1): the
// value gradient of batch 1 (one gradient row g, one input row x).
bool gathered_scale_rows_avx2(const int32_t* ptr, const int32_t* idx, const float* g, const float* x, float* out,
                              int64_t r0, int64_t r1);

// Lanes of a sliced-ELLPACK (SELL-8) view (sparse_kernels/csr.py,
// sliced_layout): for each of the `count` slices from `first`, out[8 i + j] =
// sum_k v[o + 8 k + j] * x[cols[o + 8 k + j]] with o = slice_ptr[first + i],
// k below the slice's (slice_ptr[first + i + 1] - o) / 8. One register holds
// eight rows' sums, so no horizontal add per row. x[pad column] must be a
// finite value (the fused LSTM keeps a zero there): padding multiplies it by 0.
bool sliced_rows_avx2(const float* v, const int32_t* cols, const int64_t* slice_ptr, int64_t first, int64_t count,
                      const float* x, float* out);

}  // namespace sparse_kernels::cpu
