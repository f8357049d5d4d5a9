// C++ tests of the CPU kernels (sparse_kernels::cpu) against dense ATen
// references, in float32 and float64, on random inputs; plus the dispatcher
// registrations and the argument checks.
//
//   test_cpu_kernels            run every case
//   test_cpu_kernels CASE...    run the named cases (ctest runs one per test)
//   test_cpu_kernels --expect-cases CASE...
//                               fail unless the cases are exactly these (keeps
//                               the list in CMakeLists.txt in sync)
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "check.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_lstm_fused.h"

namespace {

using at::indexing::Slice;
using at::Tensor;

const at::ScalarType kDtypes[] = {at::kFloat, at::kDouble};

// Compares dtype, shape and values (|a - e| <= atol + rtol * |e|).
void check_close(const Tensor& actual, const Tensor& expected, const char* expr,
                 const char* file, int line) {
  std::ostringstream os;
  if (actual.scalar_type() != expected.scalar_type()) {
    os << expr << ": dtype " << actual.scalar_type() << " != " << expected.scalar_type();
  } else if (actual.sizes() != expected.sizes()) {
    os << expr << ": shape " << actual.sizes() << " != " << expected.sizes();
  } else {
    // Loose enough for any summation order (MKL vs the kernels' loops); a
    // real bug is off by O(1).
    const bool f32 = actual.scalar_type() == at::kFloat;
    const double rtol = f32 ? 1e-4 : 1e-10, atol = f32 ? 1e-4 : 1e-10;
    if (at::allclose(actual, expected, rtol, atol, /*equal_nan=*/false)) return;
    const Tensor diff = (actual - expected).abs();
    const int64_t worst = diff.reshape(-1).argmax().item<int64_t>();
    os << expr << " (" << actual.scalar_type() << ", shape " << actual.sizes()
       << "): max |diff| " << diff.max().item<double>() << " at flat index " << worst
       << ": actual " << actual.reshape(-1)[worst].item<double>() << ", expected "
       << expected.reshape(-1)[worst].item<double>() << " (rtol " << rtol << ", atol "
       << atol << ")";
  }
  sk_test::fail(file, line, os.str());
}

#define EXPECT_CLOSE(actual, expected) \
  check_close((actual), (expected), "EXPECT_CLOSE(" #actual ", " #expected ")", __FILE__, __LINE__)

// --- A random sparse weight in CSR form with its CSC view and dense copy.
struct SparseWeight {
  int64_t out, in;
  Tensor dense;                         // (out, in)
  Tensor values, row_ptr, col_idx;      // CSR; int32 indices
  Tensor col_ptr, row_idx, csr2csc;     // CSC view; values[csr2csc[p]] is the
                                        // p-th nonzero in column-major order
  Tensor rows, cols;                    // int64 coordinates of each nonzero
  int64_t nnz() const { return values.numel(); }
};

Tensor exclusive_cumsum_int32(const Tensor& counts) {
  return at::cat({at::zeros({1}, counts.options().dtype(at::kLong)),
                  counts.to(at::kLong).cumsum(0)})
      .to(at::kInt);
}

// Random mask of the given density; with `empty_lines`, every third row and
// every fourth column are forced empty. Nonzero values are random normal.
SparseWeight random_weight(int64_t out, int64_t in, double density, bool empty_lines,
                           at::ScalarType dtype) {
  Tensor mask = at::rand({out, in}, at::kDouble) < density;
  if (empty_lines) {
    for (int64_t r = 1; r < out; r += 3) mask[r].fill_(false);
    for (int64_t c = 2; c < in; c += 4) mask.index_put_({Slice(), c}, false);
  }
  SparseWeight w;
  w.out = out;
  w.in = in;
  const Tensor nz = at::nonzero(mask);  // (nnz, 2), row-major order
  w.rows = nz.select(1, 0).contiguous();
  w.cols = nz.select(1, 1).contiguous();
  w.values = at::randn({nz.size(0)}, at::TensorOptions().dtype(dtype));
  w.dense = at::zeros({out, in}, w.values.options());
  w.dense.index_put_({w.rows, w.cols}, w.values);
  w.row_ptr = exclusive_cumsum_int32(mask.sum(1));
  w.col_idx = w.cols.to(at::kInt);
  // Stable sort by column keeps rows ascending within each column.
  const Tensor perm = at::argsort(w.cols, /*stable=*/true);
  w.csr2csc = perm.to(at::kInt);
  w.row_idx = w.rows.index_select(0, perm).to(at::kInt);
  w.col_ptr = exclusive_cumsum_int32(mask.sum(0));
  return w;
}

struct LinearShape {
  int64_t n, in, out;
  double density;
  bool empty_lines;
};

// N = 0, one input column, nnz = 0, empty rows/columns, out or in = 0, fully
// dense, and one big enough for at::parallel_for to split (grain 16).
const LinearShape kLinearShapes[] = {
    {5, 7, 6, 0.5, true},   {0, 7, 6, 0.5, true},   {4, 1, 9, 0.6, true},
    {4, 1, 9, 0.6, false},  {3, 8, 5, 0.0, false},  {3, 64, 200, 0.2, true},
    {1, 6, 4, 1.0, false},  {2, 5, 0, 0.5, false},  {2, 0, 4, 0.5, false},
};

std::string describe(const LinearShape& s, at::ScalarType dtype, int64_t nnz) {
  std::ostringstream os;
  os << "N=" << s.n << " in=" << s.in << " out=" << s.out << " nnz=" << nnz << " "
     << dtype;
  return os.str();
}

// --- Cases.

// The test's own CSR/CSC construction agrees with ATen's sparse layouts.
void test_csr_helper() {
  for (const auto dtype : kDtypes) {
    for (const auto& s : kLinearShapes) {
      if (s.out == 0 || s.in == 0) continue;
      const SparseWeight w = random_weight(s.out, s.in, s.density, s.empty_lines, dtype);
      const Tensor csr = w.dense.to_sparse_csr();
      EXPECT(at::equal(csr.crow_indices().to(at::kInt), w.row_ptr));
      EXPECT(at::equal(csr.col_indices().to(at::kInt), w.col_idx));
      EXPECT(at::equal(csr.values(), w.values));
      const Tensor csc = w.dense.to_sparse_csc();
      EXPECT(at::equal(csc.ccol_indices().to(at::kInt), w.col_ptr));
      EXPECT(at::equal(csc.row_indices().to(at::kInt), w.row_idx));
      EXPECT(at::equal(csc.values(), w.values.index_select(0, w.csr2csc.to(at::kLong))));
      EXPECT_EQ(w.row_ptr[-1].item<int64_t>(), w.nnz());
      EXPECT_EQ(w.col_ptr[-1].item<int64_t>(), w.nnz());
      if (s.empty_lines && s.out > 1) {  // the forced empty rows are there
        const Tensor row_counts = w.row_ptr.slice(0, 1) - w.row_ptr.slice(0, 0, -1);
        EXPECT((row_counts == 0).any().item<bool>());
      }
    }
  }
}

void test_sparse_linear() {
  for (const auto dtype : kDtypes) {
    for (const auto& s : kLinearShapes) {
      const SparseWeight w = random_weight(s.out, s.in, s.density, s.empty_lines, dtype);
      std::fprintf(stderr, "  sparse_linear %s\n", describe(s, dtype, w.nnz()).c_str());
      const Tensor x = at::randn({s.n, s.in}, w.values.options());
      const Tensor bias = at::randn({s.out}, w.values.options());
      const Tensor ref = at::matmul(x, w.dense.t());
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear(x, w.values, w.row_ptr, w.col_idx,
                                                     std::nullopt),
                  ref);
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear(x, w.values, w.row_ptr, w.col_idx, bias),
                  ref + bias);
      // Non-contiguous input (a transposed view).
      const Tensor xt = at::randn({s.in, s.n}, w.values.options()).t();
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear(xt, w.values, w.row_ptr, w.col_idx, bias),
                  at::matmul(xt, w.dense.t()) + bias);
    }
  }
}

void test_sparse_linear_input_grad() {
  for (const auto dtype : kDtypes) {
    for (const auto& s : kLinearShapes) {
      const SparseWeight w = random_weight(s.out, s.in, s.density, s.empty_lines, dtype);
      std::fprintf(stderr, "  input_grad %s\n", describe(s, dtype, w.nnz()).c_str());
      const Tensor grad_y = at::randn({s.n, s.out}, w.values.options());
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear_input_grad(grad_y, w.values, w.col_ptr,
                                                                w.row_idx, w.csr2csc),
                  at::matmul(grad_y, w.dense));
      const Tensor grad_yt = at::randn({s.out, s.n}, w.values.options()).t();
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear_input_grad(grad_yt, w.values, w.col_ptr,
                                                                w.row_idx, w.csr2csc),
                  at::matmul(grad_yt, w.dense));
    }
  }
}

// The scatter from the CSR: the same product without the transposed index,
// at batch widths that take each of its three paths (inline, row ranges with
// per-thread copies, batch tiles).
void test_sparse_linear_input_grad_csr() {
  for (const auto dtype : kDtypes) {
    for (const auto& s : kLinearShapes) {
      const SparseWeight w = random_weight(s.out, s.in, s.density, s.empty_lines, dtype);
      std::fprintf(stderr, "  input_grad_csr %s\n", describe(s, dtype, w.nnz()).c_str());
      for (const int64_t n : {s.n, int64_t{20}, int64_t{300}}) {
        const Tensor grad_y = at::randn({n, s.out}, w.values.options());
        EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear_input_grad_csr(grad_y, w.values, w.row_ptr,
                                                                      w.col_idx, s.in),
                    at::matmul(grad_y, w.dense));
      }
      const Tensor grad_yt = at::randn({s.out, s.n}, w.values.options()).t();
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear_input_grad_csr(grad_yt, w.values, w.row_ptr,
                                                                    w.col_idx, s.in),
                  at::matmul(grad_yt, w.dense));
    }
  }
}

void test_sparse_linear_value_grad() {
  for (const auto dtype : kDtypes) {
    for (const auto& s : kLinearShapes) {
      const SparseWeight w = random_weight(s.out, s.in, s.density, s.empty_lines, dtype);
      std::fprintf(stderr, "  value_grad %s\n", describe(s, dtype, w.nnz()).c_str());
      const Tensor x = at::randn({s.n, s.in}, w.values.options());
      const Tensor grad_y = at::randn({s.n, s.out}, w.values.options());
      // Dense weight gradient grad_y^T @ x, sampled at the nonzeros.
      const Tensor ref = at::matmul(grad_y.t(), x).index({w.rows, w.cols});
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear_value_grad(grad_y, x, w.row_ptr, w.col_idx),
                  ref);
      // Also the gradient autograd gives for values through the dense weight.
      const Tensor v = w.values.clone().requires_grad_(true);
      const Tensor dense = at::zeros({s.out, s.in}, w.values.options());
      dense.index_put_({w.rows, w.cols}, v);
      (at::matmul(x, dense.t()) * grad_y).sum().backward();
      EXPECT_CLOSE(sparse_kernels::cpu::sparse_linear_value_grad(grad_y, x, w.row_ptr, w.col_idx),
                  v.grad());
    }
  }
}

// --- Block-sparse (BSR) weights: a random block mask over the grid of blocks.
struct BsrShape {
  int64_t n, grid_rows, grid_cols, bh, bw;
  double density;
};

// Batches through every tile width (16/8/4 and single columns), blocks 1 x 8
// to 16 x 16, odd and non-square ones, no blocks, N = 0, one block column.
const BsrShape kBsrShapes[] = {
    {37, 6, 5, 1, 8, 0.4}, {21, 5, 4, 4, 4, 0.5}, {1, 4, 3, 8, 8, 0.5},  {19, 3, 3, 16, 16, 0.5},
    {33, 4, 3, 3, 5, 0.5}, {24, 2, 3, 5, 12, 0.6}, {3, 3, 4, 4, 4, 0.0}, {0, 3, 4, 2, 2, 0.5},
    {6, 4, 1, 8, 2, 0.7},
};

void test_bsr_linear() {
  for (const auto dtype : kDtypes) {
    for (const auto& s : kBsrShapes) {
      const Tensor mask = at::rand({s.grid_rows, s.grid_cols}, at::kDouble) < s.density;
      const Tensor nz = at::nonzero(mask);
      const Tensor rows = nz.select(1, 0).contiguous(), cols = nz.select(1, 1).contiguous();
      const Tensor block_row_ptr = exclusive_cumsum_int32(mask.sum(1));
      const Tensor block_col_idx = cols.to(at::kInt);
      const auto options = at::TensorOptions().dtype(dtype);
      const Tensor values = at::randn({nz.size(0), s.bh, s.bw}, options);
      // The dense weight: blocks placed on a (grid_rows, grid_cols, bh, bw) grid.
      Tensor grid = at::zeros({s.grid_rows, s.grid_cols, s.bh, s.bw}, options);
      grid.index_put_({rows, cols}, values);
      const Tensor dense = grid.transpose(1, 2).reshape({s.grid_rows * s.bh, s.grid_cols * s.bw});
      const Tensor perm = at::argsort(cols, /*stable=*/true);
      const Tensor block_csr2csc = perm.to(at::kInt);
      const Tensor block_row_idx = rows.index_select(0, perm).to(at::kInt);
      const Tensor block_col_ptr = exclusive_cumsum_int32(mask.sum(0));
      std::fprintf(stderr, "  bsr N=%ld grid=%ldx%ld block=%ldx%ld nblocks=%ld %s\n", static_cast<long>(s.n),
                   static_cast<long>(s.grid_rows), static_cast<long>(s.grid_cols), static_cast<long>(s.bh),
                   static_cast<long>(s.bw), static_cast<long>(nz.size(0)), c10::toString(dtype));
      const Tensor x = at::randn({s.n, s.grid_cols * s.bw}, options);
      const Tensor bias = at::randn({s.grid_rows * s.bh}, options);
      const Tensor grad_y = at::randn({s.n, s.grid_rows * s.bh}, options);
      EXPECT_CLOSE(sparse_kernels::cpu::bsr_linear(x, values, block_row_ptr, block_col_idx, bias),
                   at::matmul(x, dense.t()) + bias);
      EXPECT_CLOSE(sparse_kernels::cpu::bsr_linear(x, values, block_row_ptr, block_col_idx, std::nullopt),
                   at::matmul(x, dense.t()));
      EXPECT_CLOSE(sparse_kernels::cpu::bsr_linear_input_grad(grad_y, values, block_col_ptr, block_row_idx,
                                                              block_csr2csc),
                   at::matmul(grad_y, dense));
      const Tensor dense_grad = at::matmul(grad_y.t(), x)
                                    .reshape({s.grid_rows, s.bh, s.grid_cols, s.bw})
                                    .transpose(1, 2)
                                    .index({rows, cols});
      EXPECT_CLOSE(sparse_kernels::cpu::bsr_linear_value_grad(grad_y, x, block_row_ptr, block_col_idx, s.bh, s.bw),
                   dense_grad);
    }
  }
}

// (N, H) shapes: N = 0, H = 1, one large enough for parallel_for (grain 1024).
const std::pair<int64_t, int64_t> kCellShapes[] = {{3, 5}, {0, 4}, {2, 1}, {64, 33}, {1, 1}};

// The reference formula, gates [i|f|g|o].
std::tuple<Tensor, Tensor> lstm_reference(const Tensor& gates, const Tensor& c_prev) {
  const auto g = gates.chunk(4, 1);
  const Tensor c = at::sigmoid(g[1]) * c_prev + at::sigmoid(g[0]) * at::tanh(g[2]);
  const Tensor h = at::sigmoid(g[3]) * at::tanh(c);
  return {h, c};
}

void test_lstm_cell() {
  for (const auto dtype : kDtypes) {
    for (const auto& [n, hidden] : kCellShapes) {
      std::fprintf(stderr, "  lstm_cell N=%lld H=%lld %s\n", (long long)n, (long long)hidden,
                   c10::toString(dtype));
      const auto opts = at::TensorOptions().dtype(dtype);
      const Tensor gates = 2 * at::randn({n, 4 * hidden}, opts);
      const Tensor c_prev = at::randn({n, hidden}, opts);
      const auto [h_ref, c_ref] = lstm_reference(gates, c_prev);
      const auto [h, c] = sparse_kernels::cpu::lstm_cell(gates, c_prev);
      EXPECT_CLOSE(h, h_ref);
      EXPECT_CLOSE(c, c_ref);
      // Non-contiguous inputs: column slices of wider tensors.
      const Tensor gates_nc = 2 * at::randn({n, 4 * hidden + 3}, opts).slice(1, 1, 1 + 4 * hidden);
      const Tensor c_prev_nc = at::randn({n, hidden + 2}, opts).slice(1, 2);
      const auto [h_nc_ref, c_nc_ref] = lstm_reference(gates_nc, c_prev_nc);
      const auto [h_nc, c_nc] = sparse_kernels::cpu::lstm_cell(gates_nc, c_prev_nc);
      EXPECT_CLOSE(h_nc, h_nc_ref);
      EXPECT_CLOSE(c_nc, c_nc_ref);
    }
  }
}

void test_lstm_cell_backward() {
  for (const auto dtype : kDtypes) {
    for (const auto& [n, hidden] : kCellShapes) {
      std::fprintf(stderr, "  lstm_cell_backward N=%lld H=%lld %s\n", (long long)n,
                   (long long)hidden, c10::toString(dtype));
      const auto opts = at::TensorOptions().dtype(dtype);
      const Tensor gates = (2 * at::randn({n, 4 * hidden}, opts)).requires_grad_(true);
      const Tensor c_prev = at::randn({n, hidden}, opts).requires_grad_(true);
      const Tensor grad_h = at::randn({n, hidden}, opts);
      const Tensor grad_c = at::randn({n, hidden}, opts);
      const auto [h_ref, c_ref] = lstm_reference(gates, c_prev);
      ((h_ref * grad_h).sum() + (c_ref * grad_c).sum()).backward();
      const auto [grad_gates, grad_c_prev] = sparse_kernels::cpu::lstm_cell_backward(
          grad_h, grad_c, gates.detach(), c_prev.detach(), c_ref.detach());
      EXPECT_CLOSE(grad_gates, gates.grad());
      EXPECT_CLOSE(grad_c_prev, c_prev.grad());
    }
  }
}

// The schemas (csrc/ops.cpp) and CPU kernels are registered with the
// dispatcher, and a call through it reaches the kernel.
void test_dispatcher() {
  auto& dispatcher = c10::Dispatcher::singleton();
  for (const char* name :
       {"sparse_kernels::sparse_linear", "sparse_kernels::sparse_linear_input_grad",
        "sparse_kernels::sparse_linear_value_grad", "sparse_kernels::bsr_linear",
        "sparse_kernels::bsr_linear_input_grad", "sparse_kernels::bsr_linear_value_grad",
        "sparse_kernels::lstm_cell", "sparse_kernels::lstm_cell_backward"}) {
    const auto op = dispatcher.findSchema({name, ""});
    EXPECT(op.has_value());
    if (!op) {
      std::fprintf(stderr, "    missing schema: %s\n", name);
      continue;
    }
    EXPECT(op->hasKernelForDispatchKey(c10::DispatchKey::CPU));
  }
  const auto linear = dispatcher.findSchemaOrThrow("sparse_kernels::sparse_linear", "");
  const std::string linear_schema = c10::toString(linear.schema());
  EXPECT(linear_schema.find("Tensor? bias") != std::string::npos);

  for (const auto dtype : kDtypes) {
    const SparseWeight w = random_weight(6, 7, 0.5, true, dtype);
    const Tensor x = at::randn({5, 7}, w.values.options());
    const Tensor bias = at::randn({6}, w.values.options());
    const Tensor y =
        linear
            .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const std::optional<Tensor>&, const std::optional<Tensor>&,
                          const std::optional<Tensor>&, const std::optional<Tensor>&,
                          const std::optional<Tensor>&, const std::optional<Tensor>&,
                          const std::optional<Tensor>&, const std::optional<Tensor>&,
                          const std::optional<Tensor>&, const std::optional<Tensor>&,
                          const std::optional<Tensor>&)>()
            .call(x, w.values, w.row_ptr, w.col_idx, w.col_ptr, w.row_idx, w.csr2csc, bias,
                  std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                  std::nullopt);
    EXPECT_CLOSE(y, at::matmul(x, w.dense.t()) + bias);

    const Tensor grad_y = at::randn({5, 6}, w.values.options());
    const Tensor grad_x =
        dispatcher.findSchemaOrThrow("sparse_kernels::sparse_linear_input_grad", "")
            .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, const std::optional<Tensor>&,
                          const std::optional<Tensor>&)>()
            .call(grad_y, w.values, w.col_ptr, w.row_idx, w.csr2csc, std::nullopt, std::nullopt);
    EXPECT_CLOSE(grad_x, at::matmul(grad_y, w.dense));

    const Tensor grad_v =
        dispatcher.findSchemaOrThrow("sparse_kernels::sparse_linear_value_grad", "")
            .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>()
            .call(grad_y, x, w.row_ptr, w.col_idx);
    EXPECT_CLOSE(grad_v, at::matmul(grad_y.t(), x).index({w.rows, w.cols}));

    const Tensor gates = at::randn({3, 8}, w.values.options());
    const Tensor c_prev = at::randn({3, 2}, w.values.options());
    const auto [h, c] =
        dispatcher.findSchemaOrThrow("sparse_kernels::lstm_cell", "")
            .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&)>()
            .call(gates, c_prev);
    const auto [h_ref, c_ref] = lstm_reference(gates, c_prev);
    EXPECT_CLOSE(h, h_ref);
    EXPECT_CLOSE(c, c_ref);
    const Tensor grad_h = at::randn({3, 2}, w.values.options());
    const Tensor grad_c = at::randn({3, 2}, w.values.options());
    const auto [grad_gates, grad_c_prev] =
        dispatcher.findSchemaOrThrow("sparse_kernels::lstm_cell_backward", "")
            .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, const Tensor&)>()
            .call(grad_h, grad_c, gates, c_prev, c);
    const auto [grad_gates_direct, grad_c_prev_direct] =
        sparse_kernels::cpu::lstm_cell_backward(grad_h, grad_c, gates, c_prev, c);
    EXPECT(at::equal(grad_gates, grad_gates_direct));
    EXPECT(at::equal(grad_c_prev, grad_c_prev_direct));
  }

  // build_info reports the torch this binary was compiled against.
  const std::string info = dispatcher.findSchemaOrThrow("sparse_kernels::build_info", "")
                               .typed<std::string()>()
                               .call();
  std::fprintf(stderr, "  build_info: %s\n", info.c_str());
  EXPECT(info.find(std::string("\"torch_version\": \"") + SK_EXPECTED_TORCH_VERSION + "\"") !=
        std::string::npos);
  EXPECT(info.find("\"cuda\": false") != std::string::npos);
}

// Bad arguments raise c10::Error instead of reading out of bounds.
void test_argument_checks() {
  namespace cpu = sparse_kernels::cpu;
  const SparseWeight w = random_weight(4, 3, 1.0, false, at::kFloat);  // nnz = 12
  const Tensor x = at::randn({2, 3});
  EXPECT_THROWS(cpu::sparse_linear(x, w.values, w.row_ptr.to(at::kLong), w.col_idx, std::nullopt));
  EXPECT_THROWS(cpu::sparse_linear(x.to(at::kDouble), w.values, w.row_ptr, w.col_idx, std::nullopt));
  EXPECT_THROWS(cpu::sparse_linear(x, w.values, w.row_ptr, w.col_idx, at::randn({5})));
  EXPECT_THROWS(cpu::sparse_linear(x.reshape({-1}), w.values, w.row_ptr, w.col_idx, std::nullopt));
  EXPECT_THROWS(cpu::sparse_linear(x.to(at::kInt), w.values.to(at::kInt), w.row_ptr, w.col_idx,
                                  std::nullopt));
  EXPECT_THROWS(cpu::sparse_linear_input_grad(at::randn({2, 4}), w.values, w.col_ptr,
                                             w.row_idx.slice(0, 1), w.csr2csc));
  EXPECT_THROWS(cpu::sparse_linear_value_grad(at::randn({3, 4}), x, w.row_ptr, w.col_idx));
  EXPECT_THROWS(cpu::sparse_linear_value_grad(at::randn({2, 5}), x, w.row_ptr, w.col_idx));
  EXPECT_THROWS(cpu::lstm_cell(at::randn({2, 9}), at::randn({2, 2})));
  EXPECT_THROWS(cpu::lstm_cell(at::randn({2, 8}), at::randn({2, 2}, at::kDouble)));
  const Tensor g = at::randn({2, 8}), cp = at::randn({2, 2});
  EXPECT_THROWS(cpu::lstm_cell_backward(at::randn({2, 3}), cp, g, cp, cp));
  EXPECT_THROWS(cpu::lstm_cell_backward(cp, cp.to(at::kDouble), g, cp, cp));
}


// Topology kernels: exact counts, the smallest magnitudes dropped, regrown
// positions unoccupied and distinct, rebuild's permutation consistent.
void test_topology() {
  const int64_t out = 12, in = 9;
  const SparseWeight w = random_weight(out, in, 0.4, /*empty_lines=*/true, at::kDouble);
  const int64_t nnz = w.nnz();
  const Tensor whole = at::tensor({int64_t{0}, nnz}, at::kLong);
  const int64_t drop = nnz / 3;
  const Tensor keep = sparse_kernels::cpu::magnitude_prune(w.values, whole, at::tensor({drop}, at::kLong));
  EXPECT_EQ((~keep).sum().item<int64_t>(), drop);
  const Tensor mags = w.values.abs();
  if (drop > 0 && drop < nnz)
    EXPECT(mags.masked_select(~keep).max().item<double>() <= mags.masked_select(keep).min().item<double>());
  const Tensor occupied = at::ones({nnz}, at::kBool);
  const Tensor rows = at::tensor({int64_t{0}, out}, at::kLong);
  const int64_t free_positions = out * in - nnz;
  const int64_t grow = std::min<int64_t>(drop, free_positions);
  auto [grow_row_ptr, grow_col_idx] =
      sparse_kernels::cpu::random_regrow(w.row_ptr, w.col_idx, occupied, in, rows, at::tensor({grow}, at::kLong), 42);
  EXPECT_EQ(grow_col_idx.numel(), grow);
  const Tensor taken = w.dense != 0;
  const Tensor grow_rows = at::repeat_interleave(grow_row_ptr.diff().to(at::kLong));
  const Tensor hits =
      at::bincount(grow_rows * in + grow_col_idx.to(at::kLong), {}, out * in).reshape({out, in});
  EXPECT(hits.max().item<int64_t>() <= 1);  // no duplicates
  EXPECT_EQ((hits.gt(0) & taken).sum().item<int64_t>(), int64_t{0});  // nothing occupied
  auto [new_row_ptr, new_col_idx, perm] = sparse_kernels::cpu::rebuild_csr(w.row_ptr, w.col_idx, keep, grow_row_ptr, grow_col_idx);
  EXPECT_EQ(new_col_idx.numel(), nnz - drop + grow);
  EXPECT_EQ(perm.lt(0).sum().item<int64_t>(), grow);
  EXPECT(at::equal(perm.masked_select(perm.ge(0)), keep.nonzero().reshape({-1})));
  EXPECT_THROWS(sparse_kernels::cpu::magnitude_prune(w.values, whole, at::tensor({nnz + 1}, at::kLong)));
  EXPECT_THROWS(sparse_kernels::cpu::random_regrow(w.row_ptr, w.col_idx, occupied, in, rows,
                                   at::tensor({free_positions + 1}, at::kLong), 0));
}

// The fused LSTM forward's two h buffers: the second starts on a cache line
// (a whole number of 16-float lines after the first) and each holds the
// state plus the zeros the sliced views read.
void test_fused_h_stride() {
  for (int64_t width : {1, 8, 16, 24, 32, 40})
    for (int64_t hidden : {1, 7, 63, 64, 65, 650, 1024, 1500}) {
      const int64_t stride = sparse_kernels::cpu::fused_h_stride(width, hidden);
      EXPECT_EQ(stride % 16, int64_t{0});
      EXPECT(stride >= width * hidden + 1);
      EXPECT(stride >= sparse_kernels::cpu::sliced_x_length(hidden));
      EXPECT(stride < std::max(width * hidden + 1, sparse_kernels::cpu::sliced_x_length(hidden)) + 16);
    }
}

struct Case {
  const char* name;
  void (*fn)();
};

const Case kCases[] = {
    {"csr_helper", test_csr_helper},
    {"sparse_linear", test_sparse_linear},
    {"sparse_linear_input_grad", test_sparse_linear_input_grad},
    {"sparse_linear_input_grad_csr", test_sparse_linear_input_grad_csr},
    {"sparse_linear_value_grad", test_sparse_linear_value_grad},
    {"bsr_linear", test_bsr_linear},
    {"lstm_cell", test_lstm_cell},
    {"lstm_cell_backward", test_lstm_cell_backward},
    {"dispatcher", test_dispatcher},
    {"argument_checks", test_argument_checks},
    {"topology", test_topology},
    {"fused_h_stride", test_fused_h_stride},
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "--expect-cases") {
    std::set<std::string> expected(args.begin() + 1, args.end()), actual;
    for (const auto& c : kCases) actual.insert(c.name);
    for (const auto& name : actual)
      if (!expected.count(name)) std::fprintf(stderr, "case %s is not registered with ctest\n", name.c_str());
    for (const auto& name : expected)
      if (!actual.count(name)) std::fprintf(stderr, "ctest names unknown case %s\n", name.c_str());
    return expected == actual ? 0 : 1;
  }
  for (const auto& name : args) {
    if (std::none_of(std::begin(kCases), std::end(kCases),
                     [&](const Case& c) { return name == c.name; })) {
      std::fprintf(stderr, "unknown case: %s\n", name.c_str());
      return 2;
    }
  }
  at::manual_seed(20240601);
  for (const auto& c : kCases) {
    if (!args.empty() && std::find(args.begin(), args.end(), c.name) == args.end()) continue;
    const int before = sk_test::failures();
    std::fprintf(stderr, "[ RUN  ] %s\n", c.name);
    try {
      c.fn();
    } catch (const std::exception& e) {
      sk_test::fail(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
    }
    std::fprintf(stderr, "[ %s ] %s\n", sk_test::failures() == before ? " OK " : "FAIL", c.name);
  }
  if (sk_test::failures() > 0) {
    std::fprintf(stderr, "%d check(s) failed\n", sk_test::failures());
    return 1;
  }
  return 0;
}
