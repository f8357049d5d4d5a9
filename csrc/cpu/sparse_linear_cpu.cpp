// CPU forward of sparse_linear: y = input @ W^T + bias, W in CSR.
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_sliced.h"
#include "sparse_kernels/cpu_spmm.h"
#include "sparse_kernels/cpu_tiled.h"

namespace sparse_kernels::cpu {

namespace {

// One input row through W's sliced view (either form, cpu_sliced.h): a
// slice's 8 or 16 sums in one register (no horizontal add per row), threads
// over runs of slices balanced by their stored entries. x is copied with
// zeros past in_features (the SELL-8 padding column, the last 64-column
// block), so that padding adds exactly 0 whatever x holds. The copy is a
// tensor, whose storage starts on a cache line (a std::vector's need not):
// the blocked form loads each 64-column block as four 64-byte vectors.
at::Tensor sliced_linear_row(const at::Tensor& input, const SlicedView& view, int64_t out_features,
                             const at::Tensor& bias) {
  const int64_t in_features = input.size(1), slices = view.slices, height = view.rows_per_slice();
  const at::Tensor x_buffer = at::zeros({sliced_x_length(in_features)}, input.options());
  float* x = x_buffer.data_ptr<float>();
  std::copy_n(input.data_ptr<float>(), in_features, x);
  at::Tensor lanes = at::empty({slices * height}, input.options());
  const int64_t* sp = view.slice_ptr.data_ptr<int64_t>();
  float* out = lanes.data_ptr<float>();
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  auto run = [&](int64_t s0, int64_t s1) {
    view_lanes(view, s0, s1 - s0, x, out + height * s0);
    if (b != nullptr)
      for (int64_t r = height * s0; r < std::min(height * s1, out_features); ++r) out[r] += b[r];
  };
  // Entries before each slice: SELL-8's offsets; the blocked form's slot
  // offsets of each slice's first segment (16 entries a slot).
  auto entries_before = [&](int64_t s) {
    return view.blocked() ? 16 * sp[slices + 1 + sp[s]] : sp[s];
  };
  const int64_t entries = entries_before(slices);
  const int64_t threads = at::get_num_threads();
  if (threads == 1 || entries + height * slices < kMinParallelWork) {
    run(0, slices);
  } else {
    // Chunk c starts at the first slice whose offset reaches c / threads of the entries.
    std::vector<int64_t> bounds(threads + 1, slices);
    for (int64_t c = 0; c < threads; ++c) {
      int64_t lo = 0, hi = slices;  // the first slice s with entries_before(s) >= target
      const int64_t target = entries * c / threads;
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (entries_before(mid) < target) lo = mid + 1; else hi = mid;
      }
      bounds[c] = lo;
    }
    at::parallel_for(0, threads, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        if (bounds[c] < bounds[c + 1]) run(bounds[c], bounds[c + 1]);
    });
  }
  return lanes.narrow(0, 0, out_features).view({1, out_features});
}

}  // namespace

at::Tensor sparse_linear(const at::Tensor& input_, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& col_idx,
                         const std::optional<at::Tensor>& bias, const std::optional<SlicedView>& sliced) {
  SK_CHECK_DIM(input_, 2);
  SK_CHECK_FLOAT(input_);
  SK_CHECK_SAME_DTYPE(input_, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() &&
                  values.numel() == col_idx.numel(),
              "values must be contiguous 1-D with one entry per col_idx entry");
  TORCH_CHECK(row_ptr.numel() >= 1, "row_ptr must have out_features + 1 entries");
  const int64_t n_rows = input_.size(0);
  const int64_t out_features = row_ptr.numel() - 1;
  if (bias.has_value()) {
    SK_CHECK_SAME_DTYPE(input_, (*bias));
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == out_features,
                "bias must have shape (", out_features, "), got ", bias->sizes());
  }
  const at::Tensor input = input_.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  if (n_rows == 0 || out_features == 0) return at::empty({n_rows, out_features}, input.options());
  if (sliced.has_value() && n_rows == 1 && sliced_view_enabled())
    return sliced_linear_row(input, *sliced, out_features, bias_c);
  if (tiled_product_enabled(input)) return tiled_sparse_linear(input, values, row_ptr, col_idx, bias_c);

  // Batch on the SIMD lanes: work on x^T (in, N') and y^T (out, N'), N'
  // the batch padded to whole tiles.
  const at::Tensor input_t = transposed_padded(input);
  const int64_t width = input_t.size(1);
  at::Tensor out_t = at::empty({out_features, width}, input.options());
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_linear_cpu", [&] {
    const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
    // Threads own disjoint, nnz-balanced row ranges of W: no write races.
    parallel_over_rows(rp, out_features, [&](int64_t r0, int64_t r1) {
      spmm_rows_dispatch(rp, ci, values.data_ptr<scalar_t>(), nullptr, input_t.data_ptr<scalar_t>(),
                         b, out_t.data_ptr<scalar_t>(), width, r0, r1);
    }, width);
  });
  return untransposed(out_t, n_rows);
}


}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The CSC arguments exist for the CUDA backward; the CPU reads none of
  // them (its backward scatters from the CSR) but refuses a wrong one, so
  // that what a caller passes is never silently inconsistent.
  m.impl("sparse_linear",
         [](const at::Tensor& input, const at::Tensor& values,
            const at::Tensor& row_ptr, const at::Tensor& col_idx,
            const std::optional<at::Tensor>& col_ptr,
            const std::optional<at::Tensor>& row_idx,
            const std::optional<at::Tensor>& csr2csc,
            const std::optional<at::Tensor>& bias,
            const std::optional<at::Tensor>& col_idx16,
            const std::optional<at::Tensor>& row_order,
            const std::optional<at::Tensor>& row_idx16,
            const std::optional<at::Tensor>& col_order,
            const std::optional<at::Tensor>& sliced_values,
            const std::optional<at::Tensor>& sliced_cols,
            const std::optional<at::Tensor>& slice_ptr) {
           // The op boundary checks the structure (O(1) for an index already
           // seen, see checks.h); the layer loops call the kernel directly,
           // having checked it once per sequence.
           SK_CHECK_DIM(input, 2);
           sparse_kernels::check_compressed_index(row_ptr, col_idx, input.size(1), "row_ptr",
                                                  "col_idx");
           sparse_kernels::check_optional_csc_view(row_ptr, col_idx, col_ptr, row_idx, csr2csc,
                                                   input.size(1), "W");
           // The compact indices (CUDA's) are checked like the CSC view: read
           // by no CPU kernel, refused when inconsistent.
           sparse_kernels::check_sparse_linear_index16(row_ptr, col_idx, input.size(1), col_ptr,
                                                       row_idx, col_idx16, row_order, row_idx16,
                                                       col_order);
           // W's sliced view (float32; one segment of out_features rows,
           // padding column in_features), read at batch 1 in place of the CSR.
           const int64_t out_features = row_ptr.numel() - 1;
           const auto sliced = sparse_kernels::cpu::sliced_view_arg(
               sliced_values, sliced_cols, slice_ptr, values, 1, out_features, input.size(1),
               {"sparse_linear", "sliced_values", "sliced_cols", "slice_ptr"});
           return sparse_kernels::cpu::sparse_linear(input, values, row_ptr,
                                                     col_idx, bias, sliced);
         });
}
