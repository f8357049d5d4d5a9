// CPU input gradient of sparse_linear from W's CSR: grad_input = grad_output @ W
// by scattering each row of W, weighted by that row's output gradient, into
// the input features it touches. Values and indices stream in storage order,
// so the CPU needs no transposed (CSC) index: 8 fewer bytes per nonzero kept
// for training, and no csr2csc indirection (a random read per nonzero).
// Wide float32 batches instead build W^T once per call (cpu_csr_transpose.h,
// O(nnz)) and run the tiled forward product over it (cpu_tiled.h): the
// scatter wrote each nonzero's 32-lane run of grad_x^T at a random row, N
// floats apart, and ran at ~2.5 G multiply-adds/s per core at N = 700.
#include <torch/library.h>

#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_csr_transpose.h"
#include "sparse_kernels/cpu_spmm.h"
#include "sparse_kernels/cpu_tiled.h"

namespace sparse_kernels::cpu {

// From this batch on, transposing W (an O(nnz) counting sort over the
// threads, 10-14 ms on one thread for 1.7 M nonzeros) and running the tiled
// product beats the scatter:
// measured one thread, W 8192 x 2048 at 10%, 0.85x at batch 64, 2.1-3x at
// 256-700 (BENCHMARKS.md, issue #18).
constexpr int64_t kTransposedInputGradMinBatch = 128;

// Past this many rows of W (rows of the packed grad_output tile, 64 bytes
// each at 16 lanes: 128 KiB), W^T is built in column panels of at most this
// many and its product runs panel by panel (cpu_tiled.h): one tile of 6000
// rows read whole ran 1.16-1.2x slower (BENCHMARKS.md, session V).
constexpr int64_t kInputGradPanelRows = 2048;

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

at::Tensor input_grad_through_transpose(const at::Tensor& grad_output, const at::Tensor& values,
                                        const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                        int64_t in_features) {
  const int64_t out_features = row_ptr.numel() - 1, nnz = col_idx.numel();
  // Near-equal panels of at most kInputGradPanelRows rows of W.
  const int64_t panel_rows = ceil_div(out_features, transpose_panels(out_features, kInputGradPanelRows));
  const int64_t panels = transpose_panels(out_features, panel_rows);
  const at::Tensor t_ptr = at::empty({panels * in_features + 1}, row_ptr.options());
  const at::Tensor t_idx = at::empty({nnz}, col_idx.options());
  const at::Tensor t_values = at::empty({nnz}, values.options());
  transpose_csr_into(row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(), values.data_ptr<float>(),
                     out_features, in_features, t_ptr.data_ptr<int32_t>(), t_idx.data_ptr<int32_t>(),
                     t_values.data_ptr<float>(), panels == 1 ? 0 : panel_rows);
  if (panels == 1) return tiled_sparse_linear(grad_output, t_values, t_ptr, t_idx, at::Tensor());
  return tiled_sparse_linear_panels(grad_output, t_values, t_ptr, t_idx, panels);
}

}  // namespace

at::Tensor sparse_linear_input_grad_csr(const at::Tensor& grad_output_, const at::Tensor& values,
                                        const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                        int64_t in_features) {
  SK_CHECK_DIM(grad_output_, 2);
  SK_CHECK_FLOAT(grad_output_);
  SK_CHECK_SAME_DTYPE(grad_output_, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() && values.numel() == col_idx.numel(),
              "values must be contiguous 1-D with one entry per col_idx entry");
  TORCH_CHECK(row_ptr.numel() == grad_output_.size(1) + 1,
              "row_ptr must have out_features + 1 = ", grad_output_.size(1) + 1, " entries, got ",
              row_ptr.numel());
  TORCH_CHECK(in_features >= 0, "in_features must be >= 0, got ", in_features);
  const int64_t rows = grad_output_.size(0);
  const int64_t out_features = grad_output_.size(1);
  const at::Tensor grad_output = grad_output_.contiguous();
  if (rows == 0 || in_features == 0 || col_idx.numel() == 0) {
    return at::zeros({rows, in_features}, grad_output.options());
  }
  if (rows >= kTransposedInputGradMinBatch && tiled_product_enabled(grad_output)) {
    return input_grad_through_transpose(grad_output, values.contiguous(), row_ptr, col_idx, in_features);
  }
  // Batch on the SIMD lanes: grad_y^T (out, N') rows are scattered into
  // grad_x^T (in, N') rows, N' the batch padded to whole tiles.
  const at::Tensor grad_t = transposed_padded(grad_output);
  const int64_t n = grad_t.size(1);
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const int64_t nnz = col_idx.numel();
  const int64_t threads = at::get_num_threads();
  at::Tensor grad_input_t;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "sparse_linear_input_grad_csr_cpu", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    const scalar_t* g = grad_t.data_ptr<scalar_t>();
    if (threads == 1 || (nnz + out_features) * n < kMinParallelWork) {
      grad_input_t = at::zeros({in_features, n}, grad_output.options());
      scatter_rows_dispatch(rp, ci, v, g, grad_input_t.data_ptr<scalar_t>(), n, 0, n, 0, out_features);
    } else if (n >= 32 * threads) {
      // Wide batches: threads own disjoint 32-wide batch tiles and scatter
      // every row into them; no write races, no partial sums.
      grad_input_t = at::zeros({in_features, n}, grad_output.options());
      scalar_t* out = grad_input_t.data_ptr<scalar_t>();
      at::parallel_for(0, (n + 31) / 32, 1, [&](int64_t t0, int64_t t1) {
        scatter_rows_dispatch(rp, ci, v, g, out, n, t0 * 32, std::min(n, t1 * 32), 0, out_features);
      });
    } else {
      // Narrow batches: threads own nnz-balanced row ranges, each scattering
      // into its own zeroed copy of grad_x^T (in x N: small here), summed at
      // the end. A chunk's copy is indexed by the chunk, not by the thread
      // number, so nested or oversubscribed parallelism cannot race.
      const std::vector<int64_t> bounds = [&] {
        std::vector<int64_t> b{0};
        for (int64_t c = 1; c < threads; ++c) {
          const int64_t target = (nnz + out_features) * c / threads;
          int64_t r = b.back();
          while (r < out_features && rp[r] + r < target) ++r;
          b.push_back(r);
        }
        b.push_back(out_features);
        return b;
      }();
      at::Tensor partial = at::zeros({threads, in_features, n}, grad_output.options());
      scalar_t* out = partial.data_ptr<scalar_t>();
      at::parallel_for(0, threads, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          scatter_rows_dispatch(rp, ci, v, g, out + c * in_features * n, n, 0, n, bounds[c], bounds[c + 1]);
        }
      });
      grad_input_t = partial.sum(0);
    }
  });
  return untransposed(grad_input_t, rows);
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("sparse_linear_input_grad_csr",
         [](const at::Tensor& grad_output, const at::Tensor& values, const at::Tensor& row_ptr,
            const at::Tensor& col_idx, int64_t in_features) {
           SK_CHECK_DIM(grad_output, 2);
           TORCH_CHECK(in_features >= 0, "in_features must be >= 0, got ", in_features);
           sparse_kernels::check_compressed_index(row_ptr, col_idx, in_features, "row_ptr", "col_idx");
           return sparse_kernels::cpu::sparse_linear_input_grad_csr(grad_output, values, row_ptr,
                                                                    col_idx, in_features);
         });
}
