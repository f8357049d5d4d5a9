// A sliced view of a CSR weight: what the CPU's float32 batch-1 products read
// in place of the CSR when a caller passes one (the LSTM step's W_hh,
// sparse_linear's W), in one of two forms told apart by the dtype of `cols`,
// and the checks and loops they share (csrc/cpu/cpu_sliced.cpp):
//
// - sliced-ELLPACK (SELL-8; int32 cols; sparse_kernels/csr.py, sliced_layout):
//   slices of 8 rows; entry k of a slice's lane j (its j-th row) at
//   slice_ptr[s] + 8 k + j, its column in cols (the padding column pad_col,
//   value 0, where the row has no more); x gathered by scalar loads.
// - blocked (uint8 cols; csr.blocked_layout; BENCHMARKS.md, session O), for
//   CPUs with AVX-512F/VL/BW: slices of 16 rows, their entries grouped by
//   64-column block of x (a segment per block the slice touches), a segment
//   L slots of 16 lanes (L: the most entries one of its rows has in the
//   block). Lane j of slot q holds row j's next entry in the block: its value
//   at values[16 q + j], its column's offset in the block (0-63) at
//   cols[16 q + j], or value 0 and kBlockedPad where the row has no more. The
//   block's 64 x values sit in four registers and one permute per slot picks
//   every lane's (cpu_blocked.cpp): no gather. slice_ptr holds three runs:
//   entries [0, slices] each slice's first segment (S = slice_ptr[slices]
//   segments in all), then S + 1 entries each segment's first slot (the last:
//   the slot count), then S entries each segment's column block.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace sparse_kernels::cpu {

// values, cols and slice_ptr as the layout holds them; the values those of
// the very weight of the call (the caller keeps the view per value version:
// CSRWeight.sliced_view). Padding entries have value 0 and the pad column.
struct SlicedView {
  at::Tensor values, cols, slice_ptr;
  int64_t slices = 0;  // set by check_sliced_view
  bool blocked() const { return cols.scalar_type() == at::kByte; }
  int64_t rows_per_slice() const { return blocked() ? 16 : 8; }
};

// A blocked view's lane byte for "this row has no more entries here".
constexpr uint8_t kBlockedPad = 0x40;

// The length of an x buffer the kernels of either form may read: in_features
// values, then zeros to the padding column and to a whole 64-column block.
inline int64_t sliced_x_length(int64_t in_features) {
  return std::max(in_features + 1, (in_features + 63) / 64 * 64);
}

// What the error messages call the view's three arguments, and the op.
struct SlicedViewNames {
  const char* op;
  const char* values;
  const char* cols;
  const char* slice_ptr;
};

// Checks a view of a weight whose rows are `segments` segments of
// `segment_rows` rows (each cut into slices of the form's height) and whose
// columns are [0, pad_col): float32 weights, CPU tensors, dtypes, the offsets
// (SELL-8: from 0 to the length in steps of 8; blocked: the three runs), and
// every column within [0, pad_col] (SELL-8) or every lane within its block
// and below pad_col (blocked), those two cached per tensor (checks.h), so
// that a cached view costs O(slices) after its first call. Sets view.slices.
void check_sliced_view(SlicedView& view, const at::Tensor& weight_values, int64_t segments, int64_t segment_rows,
                       int64_t pad_col, const SlicedViewNames& names);

// The view an op was given as three optional arguments (all three or none,
// else an error naming them), checked as above; nullopt when none.
std::optional<SlicedView> sliced_view_arg(const std::optional<at::Tensor>& values,
                                          const std::optional<at::Tensor>& cols,
                                          const std::optional<at::Tensor>& slice_ptr,
                                          const at::Tensor& weight_values, int64_t segments,
                                          int64_t segment_rows, int64_t pad_col, const SlicedViewNames& names);

// Lanes of `count` slices from slice `first` (8 sums each) into out[8 i + j]:
// the AVX2 kernel (cpu_gathered.h) where it runs, else a portable loop.
// x[pad column] must be finite (callers keep a zero there).
void sliced_lanes(const float* v, const int32_t* cols, const int64_t* slice_ptr, int64_t first, int64_t count,
                  const float* x, float* out);

// Lanes of `count` slices from slice `first` of a blocked view (16 sums
// each) into out[16 i + j]: the AVX-512 kernel where blocked_view_supported(),
// else a portable loop. x: sliced_x_length(in_features) entries.
void blocked_lanes(const float* v, const uint8_t* lane_bytes, const int64_t* slice_ptr, int64_t slices,
                   int64_t first, int64_t count, const float* x, float* out);

// Either form (view checked): `count` slices from `first`, rows_per_slice()
// sums each, into out.
void view_lanes(const SlicedView& view, int64_t first, int64_t count, const float* x, float* out);

// Whether this CPU runs the blocked form's kernel (AVX-512F, VL and BW), so
// that CSRWeight.sliced_view builds that form; SPARSE_KERNELS_CPU_BLOCKED=0
// says no (A/B runs, tests of the SELL-8 form). Read once per process.
bool blocked_view_supported();

// SPARSE_KERNELS_CPU_SLICED=0 makes the products ignore a view (A/B runs);
// read once per process.
bool sliced_view_enabled();

}  // namespace sparse_kernels::cpu
