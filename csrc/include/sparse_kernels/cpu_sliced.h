// A sliced-ELLPACK (SELL-8) view of a CSR weight (sparse_kernels/csr.py,
// sliced_layout): what the CPU's float32 batch-1 products read in place of
// the CSR when a caller passes one (the LSTM step's W_hh, sparse_linear's W),
// and the checks and loop they share (csrc/cpu/cpu_sliced.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

namespace sparse_kernels::cpu {

// values, cols and slice_ptr as the layout holds them; the values those of
// the very weight of the call (the caller keeps the view per value version:
// CSRWeight.sliced_view). Padding entries have value 0 and the pad column.
struct SlicedView {
  at::Tensor values, cols, slice_ptr;
};

// What the error messages call the view's three arguments, and the op.
struct SlicedViewNames {
  const char* op;
  const char* values;
  const char* cols;
  const char* slice_ptr;
};

// Checks a view's structure: float32 weights, CPU tensors, dtypes, `slices`
// + 1 offsets from 0 to the length in steps of 8 (8 rows a slice), and every
// column within [0, pad_col] (checks.h's check_index_bounds, cached per
// tensor, so that a cached view costs O(slices) after its first call).
void check_sliced_view(const SlicedView& view, const at::Tensor& weight_values, int64_t slices, int64_t pad_col,
                       const SlicedViewNames& names);

// The view an op was given as three optional arguments (all three or none,
// else an error naming them), checked as above; nullopt when none.
std::optional<SlicedView> sliced_view_arg(const std::optional<at::Tensor>& values,
                                          const std::optional<at::Tensor>& cols,
                                          const std::optional<at::Tensor>& slice_ptr,
                                          const at::Tensor& weight_values, int64_t slices, int64_t pad_col,
                                          const SlicedViewNames& names);

// Lanes of `count` slices from slice `first` (8 sums each) into out[8 i + j]:
// the AVX2 kernel (cpu_gathered.h) where it runs, else a portable loop.
// x[pad column] must be finite (callers keep a zero there).
void sliced_lanes(const float* v, const int32_t* cols, const int64_t* slice_ptr, int64_t first, int64_t count,
                  const float* x, float* out);

// SPARSE_KERNELS_CPU_SLICED=0 makes the products ignore a view (A/B runs);
// read once per process.
bool sliced_view_enabled();

}  // namespace sparse_kernels::cpu
