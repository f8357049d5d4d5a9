// The sliced-ELLPACK view's checks and lane loop (sparse_kernels/cpu_sliced.h).
#include "sparse_kernels/cpu_sliced.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_gathered.h"

namespace sparse_kernels::cpu {

void check_sliced_view(const SlicedView& view, const at::Tensor& weight_values, int64_t slices, int64_t pad_col,
                       const SlicedViewNames& names) {
  TORCH_CHECK(weight_values.scalar_type() == at::kFloat, names.op, ": a sliced view (", names.values,
              ") is for float32 weights, got ", weight_values.scalar_type());
  TORCH_CHECK(view.values.device().is_cpu() && view.cols.device().is_cpu() && view.slice_ptr.device().is_cpu(),
              names.op, ": ", names.values, ", ", names.cols, " and ", names.slice_ptr, " must be CPU tensors");
  TORCH_CHECK(view.values.scalar_type() == at::kFloat && view.cols.scalar_type() == at::kInt &&
                  view.slice_ptr.scalar_type() == at::kLong,
              names.op, ": the sliced view must be float32 values, int32 cols and int64 slice_ptr, got ",
              view.values.scalar_type(), ", ", view.cols.scalar_type(), " and ", view.slice_ptr.scalar_type());
  TORCH_CHECK(view.values.dim() == 1 && view.cols.dim() == 1 && view.slice_ptr.dim() == 1 &&
                  view.values.is_contiguous() && view.cols.is_contiguous() && view.slice_ptr.is_contiguous(),
              names.op, ": the sliced view's tensors must be contiguous and 1-D");
  TORCH_CHECK(view.slice_ptr.numel() == slices + 1, names.op, ": ", names.slice_ptr, " must have ", slices + 1,
              " entries (one per slice of 8 rows, plus one), got ", view.slice_ptr.numel());
  const int64_t* sp = view.slice_ptr.data_ptr<int64_t>();
  TORCH_CHECK(sp[0] == 0 && sp[slices] == view.values.numel() && view.cols.numel() == view.values.numel(),
              names.op, ": ", names.slice_ptr, " must run from 0 to the length of ", names.values, " (",
              view.values.numel(), ") and ", names.cols, " must have that length, got ", sp[0], ", ", sp[slices],
              " and ", view.cols.numel());
  for (int64_t s = 0; s < slices; ++s)
    TORCH_CHECK(sp[s + 1] >= sp[s] && (sp[s + 1] - sp[s]) % 8 == 0, names.op, ": ", names.slice_ptr,
                " must be non-decreasing in steps of 8 (8 rows a slice), broken at slice ", s);
  const std::string what = std::string(names.op) + ": " + names.cols + " (column " + std::to_string(pad_col) +
                           " is the padding)";
  check_index_bounds(view.cols, pad_col + 1, what.c_str());
}

std::optional<SlicedView> sliced_view_arg(const std::optional<at::Tensor>& values,
                                          const std::optional<at::Tensor>& cols,
                                          const std::optional<at::Tensor>& slice_ptr,
                                          const at::Tensor& weight_values, int64_t slices, int64_t pad_col,
                                          const SlicedViewNames& names) {
  const int given = values.has_value() + cols.has_value() + slice_ptr.has_value();
  TORCH_CHECK(given == 0 || given == 3, names.op, ": ", names.values, ", ", names.cols, " and ", names.slice_ptr,
              " go together (all or none)");
  if (given == 0) return std::nullopt;
  SlicedView view{*values, *cols, *slice_ptr};
  check_sliced_view(view, weight_values, slices, pad_col, names);
  return view;
}

void sliced_lanes(const float* v, const int32_t* cols, const int64_t* slice_ptr, int64_t first, int64_t count,
                  const float* x, float* out) {
  if (sliced_rows_avx2(v, cols, slice_ptr, first, count, x, out)) return;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t o = slice_ptr[first + i], length = (slice_ptr[first + i + 1] - o) / 8;
    for (int j = 0; j < 8; ++j) {
      float sum = 0.0f;
      for (int64_t k = 0; k < length; ++k) sum += v[o + 8 * k + j] * x[cols[o + 8 * k + j]];
      out[8 * i + j] = sum;
    }
  }
}

bool sliced_view_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SPARSE_KERNELS_CPU_SLICED");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled;
}

}  // namespace sparse_kernels::cpu
