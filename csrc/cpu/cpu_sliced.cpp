// The sliced views' checks (both forms), the SELL-8 lane loop and the
// dispatch between the forms (sparse_kernels/cpu_sliced.h; the blocked
// form's kernel is cpu_blocked.cpp).
#include "sparse_kernels/cpu_sliced.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_gathered.h"

namespace sparse_kernels::cpu {

namespace {

void check_sell8_view(SlicedView& view, int64_t slices, int64_t pad_col, const SlicedViewNames& names) {
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

// The blocked form: its lengths (O(1), every call), then the three runs of
// slice_ptr and every lane byte against its segment's block (O(slices +
// segments + entries)), cached per (cols, slice_ptr) state like
// check_index_bounds, so that a batch-1 call with a cached view pays O(1).
void check_blocked_view(SlicedView& view, int64_t slices, int64_t pad_col, const SlicedViewNames& names) {
  const int64_t entries = view.values.numel(), slots = entries / 16;
  TORCH_CHECK(view.cols.numel() == entries && entries % 16 == 0, names.op, ": a blocked view's ", names.values,
              " and ", names.cols, " must have one length, a multiple of 16 (16 rows a slice), got ", entries,
              " and ", view.cols.numel());
  TORCH_CHECK(view.slice_ptr.numel() >= slices + 2, names.op, ": a blocked view's ", names.slice_ptr,
              " must hold at least ", slices + 2, " entries (", slices, " slices of 16 rows), got ",
              view.slice_ptr.numel());
  const int64_t* sp = view.slice_ptr.data_ptr<int64_t>();
  const int64_t segments = sp[slices];
  TORCH_CHECK(segments >= 0 && view.slice_ptr.numel() == slices + 2 + 2 * segments, names.op, ": a blocked view's ",
              names.slice_ptr, " must hold slices + 1 segment offsets, segments + 1 slot offsets and a block per "
              "segment (", slices + 2 + 2 * std::max<int64_t>(segments, 0), " entries for ", segments,
              " segments), got ", view.slice_ptr.numel());
  const int64_t* first_slot = sp + slices + 1;
  const int64_t* block = first_slot + segments + 1;
  TORCH_CHECK(sp[0] == 0 && first_slot[0] == 0 && first_slot[segments] == slots, names.op, ": ", names.slice_ptr,
              " must start at 0 and its slot offsets must run from 0 to the slot count ", slots, ", got ", sp[0],
              ", ", first_slot[0], " and ", first_slot[segments]);
  using Cache = detail::ValidatedIndices;
  Cache& cache = Cache::of_this_thread();
  const bool cacheable = detail::all_cacheable({&view.cols, &view.slice_ptr});
  if (cacheable && cache.contains(Cache::kBlockedView, {&view.cols, &view.slice_ptr}, pad_col)) return;
  for (int64_t s = 0; s < slices; ++s)
    TORCH_CHECK(sp[s + 1] >= sp[s], names.op, ": ", names.slice_ptr, "'s segment offsets must be non-decreasing, "
                "broken at slice ", s);
  const int64_t blocks = (pad_col + 63) / 64;
  for (int64_t g = 0; g < segments; ++g) {
    TORCH_CHECK(first_slot[g + 1] >= first_slot[g], names.op, ": ", names.slice_ptr,
                "'s slot offsets must be non-decreasing, broken at segment ", g);
    TORCH_CHECK(block[g] >= 0 && block[g] < blocks, names.op, ": ", names.slice_ptr, "'s block of segment ", g,
                " must be in [0, ", blocks, ") (", pad_col, " columns), got ", block[g]);
  }
  // The padding mark is 64, one past the last offset of a whole block: every
  // lane byte must be <= 64 (one vectorised pass), and those of a partial last
  // block (pad_col not a multiple of 64) below its width or 64.
  static_assert(kBlockedPad == 64, "the padding mark sits one past a whole block's offsets");
  const uint8_t* bytes = view.cols.data_ptr<uint8_t>();
  uint8_t largest = 0;
  for (int64_t e = 0; e < entries; ++e) largest = std::max(largest, bytes[e]);
  if (largest > kBlockedPad || pad_col % 64 != 0) {
    for (int64_t g = 0; g < segments; ++g) {
      const int64_t limit = std::min<int64_t>(64, pad_col - 64 * block[g]);  // columns of the block that exist
      if (limit == 64 && largest <= kBlockedPad) continue;
      for (int64_t e = 16 * first_slot[g]; e < 16 * first_slot[g + 1]; ++e)
        TORCH_CHECK(bytes[e] == kBlockedPad || bytes[e] < limit, names.op, ": ", names.cols, " entry ", e,
                    " (segment ", g, ", block ", block[g], ") must be a column offset in [0, ", limit,
                    ") or the padding mark ", int(kBlockedPad), ", got ", int(bytes[e]));
    }
  }
  if (cacheable) cache.add(Cache::kBlockedView, {&view.cols, &view.slice_ptr}, pad_col);
}

}  // namespace

void check_sliced_view(SlicedView& view, const at::Tensor& weight_values, int64_t segments, int64_t segment_rows,
                       int64_t pad_col, const SlicedViewNames& names) {
  TORCH_CHECK(weight_values.scalar_type() == at::kFloat, names.op, ": a sliced view (", names.values,
              ") is for float32 weights, got ", weight_values.scalar_type());
  TORCH_CHECK(view.values.device().is_cpu() && view.cols.device().is_cpu() && view.slice_ptr.device().is_cpu(),
              names.op, ": ", names.values, ", ", names.cols, " and ", names.slice_ptr, " must be CPU tensors");
  const bool int32_cols = view.cols.scalar_type() == at::kInt, byte_cols = view.cols.scalar_type() == at::kByte;
  TORCH_CHECK(view.values.scalar_type() == at::kFloat && (int32_cols || byte_cols) &&
                  view.slice_ptr.scalar_type() == at::kLong,
              names.op, ": the sliced view must be float32 values, int32 (SELL-8) or uint8 (blocked) cols and int64 "
              "slice_ptr, got ", view.values.scalar_type(), ", ", view.cols.scalar_type(), " and ",
              view.slice_ptr.scalar_type());
  TORCH_CHECK(view.values.dim() == 1 && view.cols.dim() == 1 && view.slice_ptr.dim() == 1 &&
                  view.values.is_contiguous() && view.cols.is_contiguous() && view.slice_ptr.is_contiguous(),
              names.op, ": the sliced view's tensors must be contiguous and 1-D");
  const int64_t height = view.rows_per_slice();
  view.slices = segments * ((segment_rows + height - 1) / height);
  if (view.blocked()) {
    check_blocked_view(view, view.slices, pad_col, names);
  } else {
    check_sell8_view(view, view.slices, pad_col, names);
  }
}

std::optional<SlicedView> sliced_view_arg(const std::optional<at::Tensor>& values,
                                          const std::optional<at::Tensor>& cols,
                                          const std::optional<at::Tensor>& slice_ptr,
                                          const at::Tensor& weight_values, int64_t segments,
                                          int64_t segment_rows, int64_t pad_col, const SlicedViewNames& names) {
  const int given = values.has_value() + cols.has_value() + slice_ptr.has_value();
  TORCH_CHECK(given == 0 || given == 3, names.op, ": ", names.values, ", ", names.cols, " and ", names.slice_ptr,
              " go together (all or none)");
  if (given == 0) return std::nullopt;
  SlicedView view{*values, *cols, *slice_ptr};
  check_sliced_view(view, weight_values, segments, segment_rows, pad_col, names);
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

void view_lanes(const SlicedView& view, int64_t first, int64_t count, const float* x, float* out) {
  if (view.blocked()) {
    blocked_lanes(view.values.data_ptr<float>(), view.cols.data_ptr<uint8_t>(), view.slice_ptr.data_ptr<int64_t>(),
                  view.slices, first, count, x, out);
  } else {
    sliced_lanes(view.values.data_ptr<float>(), view.cols.data_ptr<int32_t>(), view.slice_ptr.data_ptr<int64_t>(),
                 first, count, x, out);
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
