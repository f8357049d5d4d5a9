// Binds the torch-free CUDA launchers (kernels.h) to the op schemas for the
// CUDA dispatch key: argument checks, output allocation, device guard, stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "kernels.h"
#include "lstm_persistent.h"
#include "sparse_kernels/gru_layer_loop.h"
#include "sparse_kernels/lstm_layer_loop.h"
#include "sparse_kernels/rnn_layer_loop.h"
#include "sparse_kernels/checks.h"
#include "sparse_kernels/topology_generic.h"

namespace sparse_kernels::cuda {
namespace {

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " kernel launch failed: ", cudaGetErrorString(err));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// The kernels' value type for a tensor's element type: at::Half and
// at::BFloat16 have the layout of CUDA's __half and __nv_bfloat16.
template <typename T>
T* data(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// CUDA kernels exist for float32, float64, float16 and bfloat16 (the 16-bit
// types accumulate in fp32).
#define SK_DISPATCH_CUDA_FLOAT(dtype, name, ...)                               \
  [&] {                                                                        \
    if ((dtype) == at::kFloat) {                                               \
      using scalar_t = float;                                                  \
      __VA_ARGS__();                                                           \
    } else if ((dtype) == at::kDouble) {                                       \
      using scalar_t = double;                                                 \
      __VA_ARGS__();                                                           \
    } else if ((dtype) == at::kHalf) {                                         \
      using scalar_t = __half;                                                 \
      __VA_ARGS__();                                                           \
    } else if ((dtype) == at::kBFloat16) {                                     \
      using scalar_t = __nv_bfloat16;                                          \
      __VA_ARGS__();                                                           \
    } else {                                                                   \
      TORCH_CHECK(false, name, ": CUDA supports float32, float64, float16 and bfloat16, got ", dtype); \
    }                                                                          \
  }()

// The GRU and Elman cell kernels exist for float32 and float64 only (their
// math runs in the value type).
#define SK_DISPATCH_CUDA_F32_F64(dtype, name, ...)                             \
  [&] {                                                                        \
    if ((dtype) == at::kFloat) {                                               \
      using scalar_t = float;                                                  \
      __VA_ARGS__();                                                           \
    } else if ((dtype) == at::kDouble) {                                       \
      using scalar_t = double;                                                 \
      __VA_ARGS__();                                                           \
    } else {                                                                   \
      TORCH_CHECK(false, name, ": CUDA supports float32 and float64, got ", dtype); \
    }                                                                          \
  }()

// The optional compact index (ops.cpp, sparse_kernels.csr.index16) as the
// launchers take it: order as a device pointer or null; and whether idx16 is
// given, in which case the <T, uint16_t> kernel reads it instead of the int32
// index (half the index bytes).
const int32_t* order_ptr(const layer::OptTensor& order) {
  return order.has_value() ? order->data_ptr<int32_t>() : nullptr;
}

const uint16_t* index16_ptr(const layer::OptTensor& idx16) {
  return static_cast<const uint16_t*>(idx16->const_data_ptr());
}

// ---- Wide batches (kernels.h's use_wide_batch_kernels): the kernels take
// the batch on the lanes, over operands transposed here.
//
// SPARSE_KERNELS_WIDE_MIN_BATCH overrides the rule's threshold (for timing
// both sides of it on a GPU: benchmarks/gpu_report.py). Read at every call,
// like SPARSE_KERNELS_PERSISTENT_LSTM, so that a benchmark can switch it.
bool wide_batch(int64_t n_rows) {
  const char* v = std::getenv("SPARSE_KERNELS_WIDE_MIN_BATCH");
  return use_wide_batch_kernels(n_rows, v != nullptr ? std::atoll(v) : kWideBatchMinRows);
}

// a (N, C) -> (C, ld) holding a^T in its first N columns, each row padded to
// a multiple of 16 bytes so that the kernels' 16-byte loads are aligned.
int64_t padded_ld(int64_t n, int64_t element_size) {
  const int64_t per16 = 16 / element_size;
  return (n + per16 - 1) / per16 * per16;
}

at::Tensor transposed_padded(const at::Tensor& a) {
  at::Tensor t = at::empty({a.size(1), padded_ld(a.size(0), a.element_size())}, a.options());
  t.narrow(1, 0, a.size(0)).copy_(a.t());
  return t;
}

// An output the kernels write transposed, (cols, ld); untransposed(t, n) gives the (n, cols) result.
at::Tensor transposed_output(int64_t n, int64_t cols, const at::TensorOptions& options) {
  return at::empty({cols, padded_ld(n, static_cast<int64_t>(options.dtype().itemsize()))}, options);
}

at::Tensor untransposed(const at::Tensor& t, int64_t n) { return t.narrow(1, 0, n).t().contiguous(); }

// Defaults for the compact index so that the layer loops (CudaKernels) call
// these with the arguments they always had.
at::Tensor sparse_linear_cuda(const at::Tensor& input_, const at::Tensor& values,
                              const at::Tensor& row_ptr, const at::Tensor& col_idx,
                              const layer::OptTensor& col_ptr, const layer::OptTensor& row_idx,
                              const layer::OptTensor&, const layer::OptTensor& bias,
                              const layer::OptTensor& col_idx16 = std::nullopt,
                              const layer::OptTensor& row_order = std::nullopt,
                              const layer::OptTensor& row_idx16 = std::nullopt,
                              const layer::OptTensor& col_order = std::nullopt) {
  SK_CHECK_DIM(input_, 2);
  SK_CHECK_SAME_DTYPE(input_, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() && values.numel() == col_idx.numel(),
              "values must be contiguous 1-D with one entry per col_idx entry");
  // The CSC view's compact index is unread by the forward (its backward's),
  // but checked as the CPU does.
  check_sparse_linear_index16(row_ptr, col_idx, input_.size(1), col_ptr, row_idx, col_idx16, row_order,
                              row_idx16, col_order);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous();
  const int64_t out_features = row_ptr.numel() - 1;
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t n_rows = input.size(0);
  if (wide_batch(n_rows)) {
    const at::Tensor xT = transposed_padded(input);
    at::Tensor yT = transposed_output(n_rows, out_features, input.options());
    SK_DISPATCH_CUDA_FLOAT(input.scalar_type(), "sparse_linear", [&] {
      const scalar_t* b = bias_c.defined() ? data<scalar_t>(bias_c) : nullptr;
      const int32_t* order = order_ptr(row_order);
      check_launch(
          col_idx16.has_value()
              ? sparse_linear_wide<scalar_t, uint16_t>(data<scalar_t>(xT), xT.size(1), data<scalar_t>(values),
                                                       row_ptr.data_ptr<int32_t>(), index16_ptr(col_idx16), b,
                                                       data<scalar_t>(yT), yT.size(1), n_rows, out_features,
                                                       current_stream(), order)
              : sparse_linear_wide<scalar_t>(data<scalar_t>(xT), xT.size(1), data<scalar_t>(values),
                                             row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(), b,
                                             data<scalar_t>(yT), yT.size(1), n_rows, out_features,
                                             current_stream(), order),
          "sparse_linear");
    });
    return untransposed(yT, n_rows);
  }
  at::Tensor out = at::empty({input.size(0), out_features}, input.options());
  SK_DISPATCH_CUDA_FLOAT(input.scalar_type(), "sparse_linear", [&] {
    const scalar_t* b = bias_c.defined() ? data<scalar_t>(bias_c) : nullptr;
    const int32_t* order = order_ptr(row_order);
    check_launch(
        col_idx16.has_value()
            ? sparse_linear<scalar_t, uint16_t>(
                  data<scalar_t>(input), data<scalar_t>(values), row_ptr.data_ptr<int32_t>(),
                  index16_ptr(col_idx16), b, data<scalar_t>(out), input.size(0), input.size(1),
                  out_features, col_idx.numel(), current_stream(), order)
            : sparse_linear<scalar_t>(data<scalar_t>(input), data<scalar_t>(values),
                                      row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(), b,
                                      data<scalar_t>(out), input.size(0), input.size(1),
                                      out_features, col_idx.numel(), current_stream(), order),
        "sparse_linear");
  });
  return out;
}

at::Tensor sparse_linear_input_grad_cuda(const at::Tensor& grad_output_,
                                         const at::Tensor& values, const at::Tensor& col_ptr,
                                         const at::Tensor& row_idx, const at::Tensor& csr2csc,
                                         const layer::OptTensor& row_idx16 = std::nullopt,
                                         const layer::OptTensor& col_order = std::nullopt) {
  SK_CHECK_DIM(grad_output_, 2);
  SK_CHECK_SAME_DTYPE(grad_output_, values);
  SK_CHECK_INDEX(col_ptr);
  SK_CHECK_INDEX(row_idx);
  SK_CHECK_INDEX(csr2csc);
  check_index16(col_ptr, row_idx, grad_output_.size(1), row_idx16, col_order, "row_idx",
                "row_idx16", "col_order");
  const c10::cuda::CUDAGuard guard(grad_output_.device());
  const at::Tensor grad_output = grad_output_.contiguous();
  const int64_t in_features = col_ptr.numel() - 1;
  const int64_t n_rows = grad_output.size(0);
  if (wide_batch(n_rows)) {
    const at::Tensor gyT = transposed_padded(grad_output);
    at::Tensor gxT = transposed_output(n_rows, in_features, grad_output.options());
    SK_DISPATCH_CUDA_FLOAT(grad_output.scalar_type(), "sparse_linear_input_grad", [&] {
      const int32_t* order = order_ptr(col_order);
      check_launch(
          row_idx16.has_value()
              ? sparse_linear_input_grad_wide<scalar_t, uint16_t>(
                    data<scalar_t>(gyT), gyT.size(1), data<scalar_t>(values), col_ptr.data_ptr<int32_t>(),
                    index16_ptr(row_idx16), csr2csc.data_ptr<int32_t>(), data<scalar_t>(gxT), gxT.size(1),
                    n_rows, in_features, current_stream(), order)
              : sparse_linear_input_grad_wide<scalar_t>(
                    data<scalar_t>(gyT), gyT.size(1), data<scalar_t>(values), col_ptr.data_ptr<int32_t>(),
                    row_idx.data_ptr<int32_t>(), csr2csc.data_ptr<int32_t>(), data<scalar_t>(gxT), gxT.size(1),
                    n_rows, in_features, current_stream(), order),
          "sparse_linear_input_grad");
    });
    return untransposed(gxT, n_rows);
  }
  at::Tensor grad_input = at::empty({grad_output.size(0), in_features}, grad_output.options());
  SK_DISPATCH_CUDA_FLOAT(grad_output.scalar_type(), "sparse_linear_input_grad", [&] {
    const int32_t* order = order_ptr(col_order);
    check_launch(
        row_idx16.has_value()
            ? sparse_linear_input_grad<scalar_t, uint16_t>(
                  data<scalar_t>(grad_output), data<scalar_t>(values), col_ptr.data_ptr<int32_t>(),
                  index16_ptr(row_idx16), csr2csc.data_ptr<int32_t>(), data<scalar_t>(grad_input),
                  grad_output.size(0), in_features, grad_output.size(1), row_idx.numel(),
                  current_stream(), order)
            : sparse_linear_input_grad<scalar_t>(
                  data<scalar_t>(grad_output), data<scalar_t>(values), col_ptr.data_ptr<int32_t>(),
                  row_idx.data_ptr<int32_t>(), csr2csc.data_ptr<int32_t>(),
                  data<scalar_t>(grad_input), grad_output.size(0), in_features,
                  grad_output.size(1), row_idx.numel(), current_stream(), order),
        "sparse_linear_input_grad");
  });
  return grad_input;
}

// The CPU backward's op (grad_y W from W's CSR, by scatter). The CUDA
// backward gathers through the cached transposed index instead
// (sparse_linear_input_grad); a direct call here builds that index on the
// device first (O(nnz log nnz): topology_generic.h's transposed_index), so
// the op means the same on both backends.
at::Tensor sparse_linear_input_grad_csr_cuda(const at::Tensor& grad_output, const at::Tensor& values,
                                             const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                             int64_t in_features) {
  SK_CHECK_DIM(grad_output, 2);
  SK_CHECK_SAME_DTYPE(grad_output, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() && values.numel() == col_idx.numel(),
              "values must be contiguous 1-D with one entry per col_idx entry");
  TORCH_CHECK(row_ptr.numel() == grad_output.size(1) + 1, "row_ptr must have out_features + 1 = ",
              grad_output.size(1) + 1, " entries, got ", row_ptr.numel());
  TORCH_CHECK(in_features >= 0, "in_features must be >= 0, got ", in_features);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const auto [col_ptr, row_idx, csr2csc] =
      topology::generic::transposed_index(row_ptr, col_idx, in_features);
  return sparse_linear_input_grad_cuda(grad_output, values, col_ptr, row_idx, csr2csc);
}

at::Tensor sparse_linear_value_grad_cuda(const at::Tensor& grad_output_,
                                         const at::Tensor& input_, const at::Tensor& row_ptr,
                                         const at::Tensor& col_idx) {
  SK_CHECK_DIM(grad_output_, 2);
  SK_CHECK_DIM(input_, 2);
  SK_CHECK_SAME_DTYPE(grad_output_, input_);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(grad_output_.size(0) == input_.size(0) &&
                  grad_output_.size(1) == row_ptr.numel() - 1,
              "grad_output must have shape (input.size(0), out_features)");
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  at::Tensor grad_values = at::empty({col_idx.numel()}, input.options());
  if (wide_batch(input.size(0))) {
    const at::Tensor gyT = transposed_padded(grad_output), xT = transposed_padded(input);
    SK_DISPATCH_CUDA_FLOAT(input.scalar_type(), "sparse_linear_value_grad", [&] {
      check_launch(sparse_linear_value_grad_wide<scalar_t>(
                       data<scalar_t>(gyT), gyT.size(1), data<scalar_t>(xT), xT.size(1),
                       row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(), data<scalar_t>(grad_values),
                       input.size(0), grad_output.size(1), col_idx.numel(), current_stream()),
                   "sparse_linear_value_grad");
    });
    return grad_values;
  }
  SK_DISPATCH_CUDA_FLOAT(input.scalar_type(), "sparse_linear_value_grad", [&] {
    check_launch(sparse_linear_value_grad<scalar_t>(
                     data<scalar_t>(grad_output), data<scalar_t>(input),
                     row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(),
                     data<scalar_t>(grad_values), input.size(0), input.size(1),
                     grad_output.size(1), col_idx.numel(), current_stream()),
                 "sparse_linear_value_grad");
  });
  return grad_values;
}

// ---- Block-sparse (BSR) products: the checks of the CPU kernels (csrc/cpu/bsr_linear*_cpu.cpp).
at::Tensor bsr_linear_cuda(const at::Tensor& input_, const at::Tensor& values, const at::Tensor& block_row_ptr,
                           const at::Tensor& block_col_idx, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const std::optional<at::Tensor>& bias) {
  const int64_t out_features = check_bsr_linear_args(input_, values, block_row_ptr, block_col_idx, bias);
  const int64_t bh = values.size(1), bw = values.size(2);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous();
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({input.size(0), out_features}, input.options());
  SK_DISPATCH_CUDA_FLOAT(input.scalar_type(), "bsr_linear", [&] {
    check_launch(bsr_linear<scalar_t>(data<scalar_t>(input), data<scalar_t>(values),
                                      block_row_ptr.data_ptr<int32_t>(), block_col_idx.data_ptr<int32_t>(),
                                      bias_c.defined() ? data<scalar_t>(bias_c) : nullptr, data<scalar_t>(out),
                                      input.size(0), input.size(1), out_features, bh, bw, current_stream()),
                 "bsr_linear");
  });
  return out;
}

at::Tensor bsr_linear_input_grad_cuda(const at::Tensor& grad_output_, const at::Tensor& values,
                                      const at::Tensor& block_col_ptr, const at::Tensor& block_row_idx,
                                      const at::Tensor& block_csr2csc) {
  const int64_t in_features =
      check_bsr_input_grad_args(grad_output_, values, block_col_ptr, block_row_idx, block_csr2csc);
  const int64_t bh = values.size(1), bw = values.size(2);
  const c10::cuda::CUDAGuard guard(grad_output_.device());
  const at::Tensor grad_output = grad_output_.contiguous();
  at::Tensor grad_input = at::empty({grad_output.size(0), in_features}, grad_output.options());
  SK_DISPATCH_CUDA_FLOAT(grad_output.scalar_type(), "bsr_linear_input_grad", [&] {
    check_launch(bsr_linear_input_grad<scalar_t>(
                     data<scalar_t>(grad_output), data<scalar_t>(values), block_col_ptr.data_ptr<int32_t>(),
                     block_row_idx.data_ptr<int32_t>(), block_csr2csc.data_ptr<int32_t>(),
                     data<scalar_t>(grad_input), grad_output.size(0), in_features, grad_output.size(1), bh, bw,
                     current_stream()),
                 "bsr_linear_input_grad");
  });
  return grad_input;
}

at::Tensor bsr_linear_value_grad_cuda(const at::Tensor& grad_output_, const at::Tensor& input_,
                                      const at::Tensor& block_row_ptr, const at::Tensor& block_col_idx,
                                      int64_t block_height, int64_t block_width) {
  check_bsr_value_grad_args(grad_output_, input_, block_row_ptr, block_col_idx, block_height, block_width);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor input = input_.contiguous();
  at::Tensor grad_values = at::empty({block_col_idx.numel(), block_height, block_width}, input.options());
  SK_DISPATCH_CUDA_FLOAT(input.scalar_type(), "bsr_linear_value_grad", [&] {
    check_launch(bsr_linear_value_grad<scalar_t>(
                     data<scalar_t>(grad_output), data<scalar_t>(input), block_row_ptr.data_ptr<int32_t>(),
                     block_col_idx.data_ptr<int32_t>(), data<scalar_t>(grad_values), input.size(0),
                     input.size(1), grad_output.size(1), block_height, block_width, block_col_idx.numel(),
                     current_stream()),
                 "bsr_linear_value_grad");
  });
  return grad_values;
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_cuda(const at::Tensor& gates_,
                                                  const at::Tensor& c_prev_) {
  check_lstm_cell_args(gates_, c_prev_);
  const c10::cuda::CUDAGuard guard(gates_.device());
  const at::Tensor gates = gates_.contiguous(), c_prev = c_prev_.contiguous();
  at::Tensor h = at::empty_like(c_prev), c = at::empty_like(c_prev);
  SK_DISPATCH_CUDA_FLOAT(gates.scalar_type(), "lstm_cell", [&] {
    check_launch(lstm_cell<scalar_t>(data<scalar_t>(gates), data<scalar_t>(c_prev),
                                     data<scalar_t>(h), data<scalar_t>(c),
                                     c_prev.size(0), c_prev.size(1), current_stream()),
                 "lstm_cell");
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_backward_cuda(
    const at::Tensor& grad_h_, const at::Tensor& grad_c_, const at::Tensor& gates_,
    const at::Tensor& c_prev_, const at::Tensor& c_) {
  check_lstm_cell_backward_args(grad_h_, grad_c_, gates_, c_prev_, c_);
  const c10::cuda::CUDAGuard guard(gates_.device());
  const at::Tensor grad_h = grad_h_.contiguous(), grad_c = grad_c_.contiguous();
  const at::Tensor gates = gates_.contiguous(), c_prev = c_prev_.contiguous();
  const at::Tensor c = c_.contiguous();
  at::Tensor grad_gates = at::empty_like(gates), grad_c_prev = at::empty_like(c_prev);
  SK_DISPATCH_CUDA_FLOAT(gates.scalar_type(), "lstm_cell_backward", [&] {
    check_launch(lstm_cell_backward<scalar_t>(
                     data<scalar_t>(grad_h), data<scalar_t>(grad_c),
                     data<scalar_t>(gates), data<scalar_t>(c_prev),
                     data<scalar_t>(c), data<scalar_t>(grad_gates),
                     data<scalar_t>(grad_c_prev), c_prev.size(0), c_prev.size(1),
                     current_stream()),
                 "lstm_cell_backward");
  });
  return {grad_gates, grad_c_prev};
}

at::Tensor gru_cell_cuda(const at::Tensor& ig_, const at::Tensor& hg_, const at::Tensor& h_prev_) {
  const at::Tensor ig = ig_.contiguous(), hg = hg_.contiguous(), h_prev = h_prev_.contiguous();
  TORCH_CHECK(ig.sizes() == hg.sizes() && ig.size(1) == 3 * h_prev.size(1),
              "GRU cell: ig and hg must be (N, 3*H) for h_prev (N, H)");
  at::Tensor h = at::empty_like(h_prev);
  SK_DISPATCH_CUDA_F32_F64(ig.scalar_type(), "gru_cell", [&] {
    check_launch(gru_cell<scalar_t>(ig.data_ptr<scalar_t>(), hg.data_ptr<scalar_t>(),
                                    h_prev.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                    h_prev.size(0), h_prev.size(1), current_stream()),
                 "gru_cell");
  });
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_backward_cuda(const at::Tensor& grad_h_,
                                                                      const at::Tensor& ig_,
                                                                      const at::Tensor& hg_,
                                                                      const at::Tensor& h_prev_) {
  const at::Tensor grad_h = grad_h_.contiguous(), ig = ig_.contiguous(), hg = hg_.contiguous();
  const at::Tensor h_prev = h_prev_.contiguous();
  at::Tensor d_ig = at::empty_like(ig), d_hg = at::empty_like(hg), dh_prev = at::empty_like(h_prev);
  SK_DISPATCH_CUDA_F32_F64(ig.scalar_type(), "gru_cell_backward", [&] {
    check_launch(gru_cell_backward<scalar_t>(
                     grad_h.data_ptr<scalar_t>(), ig.data_ptr<scalar_t>(), hg.data_ptr<scalar_t>(),
                     h_prev.data_ptr<scalar_t>(), d_ig.data_ptr<scalar_t>(),
                     d_hg.data_ptr<scalar_t>(), dh_prev.data_ptr<scalar_t>(), h_prev.size(0),
                     h_prev.size(1), current_stream()),
                 "gru_cell_backward");
  });
  return {d_ig, d_hg, dh_prev};
}

at::Tensor rnn_cell_cuda(const at::Tensor& pre_, bool relu) {
  const at::Tensor pre = pre_.contiguous();
  at::Tensor h = at::empty_like(pre);
  SK_DISPATCH_CUDA_F32_F64(pre.scalar_type(), "rnn_cell", [&] {
    check_launch(rnn_cell<scalar_t>(pre.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), pre.numel(),
                                    relu, current_stream()),
                 "rnn_cell");
  });
  return h;
}

at::Tensor rnn_cell_backward_cuda(const at::Tensor& grad_h_, const at::Tensor& h_, bool relu) {
  const at::Tensor grad_h = grad_h_.contiguous(), h = h_.contiguous();
  at::Tensor grad_pre = at::empty_like(h);
  SK_DISPATCH_CUDA_F32_F64(h.scalar_type(), "rnn_cell_backward", [&] {
    check_launch(rnn_cell_backward<scalar_t>(grad_h.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                                             grad_pre.data_ptr<scalar_t>(), h.numel(), relu,
                                             current_stream()),
                 "rnn_cell_backward");
  });
  return grad_pre;
}

// The shared whole-sequence loops (lstm/gru/rnn_layer_loop.h) over the CUDA kernels:
// the plain per-step path. The LSTM forward takes the persistent kernel
// instead where W_hh fits on chip (persistent_lstm_forward below).
struct CudaKernels {
  static at::Tensor sparse_linear(const at::Tensor& x, const at::Tensor& v, const at::Tensor& rp,
                                  const at::Tensor& ci, const std::optional<at::Tensor>& b) {
    return sparse_linear_cuda(x, v, rp, ci, std::nullopt, std::nullopt, std::nullopt, b);
  }
  // The CUDA input gradient gathers through the transposed index (no atomics).
  static at::Tensor sparse_linear_input_grad(const at::Tensor& gy, const at::Tensor& v,
                                             const at::Tensor&, const at::Tensor&, int64_t,
                                             const std::optional<at::Tensor>& cp,
                                             const std::optional<at::Tensor>& ri,
                                             const std::optional<at::Tensor>& perm) {
    TORCH_CHECK(cp && ri && perm,
                "the CUDA backward of a layer needs each recurrent matrix's transposed index "
                "(col_ptr, row_idx, csr2csc)");
    return sparse_linear_input_grad_cuda(gy, v, *cp, *ri, *perm);
  }
  static at::Tensor sparse_linear_value_grad(const at::Tensor& gy, const at::Tensor& x,
                                             const at::Tensor& rp, const at::Tensor& ci) {
    return sparse_linear_value_grad_cuda(gy, x, rp, ci);
  }
  static std::tuple<at::Tensor, at::Tensor> lstm_cell(const at::Tensor& g, const at::Tensor& c) {
    return lstm_cell_cuda(g, c);
  }
  static std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
      const at::Tensor& dh, const at::Tensor& dc, const at::Tensor& g, const at::Tensor& cp,
      const at::Tensor& c) {
    return lstm_cell_backward_cuda(dh, dc, g, cp, c);
  }
  static at::Tensor gru_cell(const at::Tensor& ig, const at::Tensor& hg, const at::Tensor& h) {
    return gru_cell_cuda(ig, hg, h);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(
      const at::Tensor& dh, const at::Tensor& ig, const at::Tensor& hg, const at::Tensor& h) {
    return gru_cell_backward_cuda(dh, ig, hg, h);
  }
  static at::Tensor rnn_cell(const at::Tensor& pre, bool relu) { return rnn_cell_cuda(pre, relu); }
  static at::Tensor rnn_cell_backward(const at::Tensor& dh, const at::Tensor& h, bool relu) {
    return rnn_cell_backward_cuda(dh, h, relu);
  }
};

using layer::OptTensor;
using LstmForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// SPARSE_KERNELS_PERSISTENT_LSTM=0 forces the per-step path (for comparing
// the two on a GPU). Read at every call, so that a benchmark can switch it.
bool persistent_lstm_enabled() {
  const char* v = std::getenv("SPARSE_KERNELS_PERSISTENT_LSTM");
  return v == nullptr || std::string(v) != "0";
}

// The persistent forward (lstm_persistent.cu) where it applies: no
// projection, hidden <= 65536, a device that can launch cooperatively, and
// W_hh split over one block per SM fitting in each SM's shared memory.
// Returns nothing where it does not (the caller takes the per-step path).
// The split of W_hh over the blocks: the caller's cached plan (hh_plan on
// the device, hh_plan_smem; ops.cpp), so that nothing is copied to the host
// and the stream never waits (issue #15); without one it is planned here
// from a host copy of W_hh's row offsets (a synchronising copy per call).
std::optional<LstmForward> persistent_lstm_forward(const at::Tensor& input_gates_, const at::Tensor& h0,
                                                   const at::Tensor& c0, const at::Tensor& values,
                                                   const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                                   const at::Tensor& batch_sizes, bool reverse,
                                                   const OptTensor& hh_plan, int64_t hh_plan_smem) {
  const int64_t steps = input_gates_.size(0), batch = input_gates_.size(1), hidden = c0.size(1);
  if (!persistent_lstm_enabled() || steps == 0 || batch == 0 || hidden == 0 ||
      hidden > kPersistentMaxHidden)
    return std::nullopt;
  const int device = input_gates_.device().index();
  int cooperative = 0, sms = 0, smem_optin = 0;
  check_launch(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device), "device query");
  check_launch(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "device query");
  check_launch(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
               "device query");
  if (cooperative == 0) return std::nullopt;
  at::Tensor unit_start;
  int blocks = 0;
  size_t smem_bytes = 0;
  if (hh_plan.has_value()) {
    TORCH_CHECK(hh_plan->scalar_type() == at::kInt && hh_plan->dim() == 1 && hh_plan->numel() >= 2 &&
                    hh_plan->is_contiguous() && hh_plan->device() == input_gates_.device(),
                "lstm_layer: hh_plan must be a contiguous 1-D int32 tensor of at least 2 entries on ",
                input_gates_.device(), " (the unit_start part of lstm_persistent_plan), got ",
                hh_plan->scalar_type(), " with shape ", hh_plan->sizes(), " on ", hh_plan->device());
    TORCH_CHECK(hh_plan_smem > 0, "lstm_layer: hh_plan_smem must be the plan's shared memory bytes (> 0), got ",
                hh_plan_smem);
    unit_start = *hh_plan;
    blocks = static_cast<int>(hh_plan->numel() - 1);
    smem_bytes = static_cast<size_t>(hh_plan_smem);
  } else {
    const at::Tensor row_ptr_host = row_ptr.to(at::kCPU).contiguous();
    const PersistentLstmPlan plan =
        plan_persistent_lstm(row_ptr_host.data_ptr<int32_t>(), hidden, sms, values.element_size());
    unit_start = at::tensor(plan.unit_start, at::TensorOptions().dtype(at::kInt)).to(input_gates_.device());
    blocks = plan.blocks();
    smem_bytes = plan.smem_bytes;
  }
  if (blocks > sms || smem_bytes > static_cast<size_t>(smem_optin)) return std::nullopt;
  const at::Tensor input_gates = input_gates_.contiguous(), values_c = values.contiguous();
  const at::Tensor row_ptr_c = row_ptr.contiguous(), col_idx_c = col_idx.contiguous();
  const auto options = input_gates.options();
  at::Tensor output = at::zeros({steps, batch, hidden}, options);
  at::Tensor gates = at::zeros({steps, batch, 4 * hidden}, options);
  at::Tensor cells = at::zeros({steps, batch, hidden}, options);
  at::Tensor h_n = h0.contiguous().clone(), c_n = c0.contiguous().clone();
  at::Tensor h_buf = at::stack({h_n, h_n}).contiguous();
  // batch_sizes is a host tensor (the per-step path reads it there): staged
  // through pinned memory so that the copy is asynchronous.
  const at::Tensor sizes =
      batch_sizes.to(at::kInt).pin_memory().to(input_gates.device(), /*non_blocking=*/true);
  cudaError_t err = cudaSuccess;
  SK_DISPATCH_CUDA_FLOAT(input_gates.scalar_type(), "lstm_layer", [&] {
    err = lstm_persistent_forward<scalar_t>(
        data<scalar_t>(input_gates), data<scalar_t>(values_c), row_ptr_c.data_ptr<int32_t>(),
        col_idx_c.data_ptr<int32_t>(), sizes.data_ptr<int32_t>(), unit_start.data_ptr<int32_t>(),
        blocks, smem_bytes, data<scalar_t>(output), data<scalar_t>(gates),
        data<scalar_t>(cells), data<scalar_t>(h_n), data<scalar_t>(c_n), data<scalar_t>(h_buf), steps,
        batch, hidden, reverse, current_stream());
  });
  // Not an error: the blocks do not fit on the device at once.
  if (err == cudaErrorCooperativeLaunchTooLarge) return std::nullopt;
  check_launch(err, "lstm_layer (persistent)");
  return LstmForward{output, h_n, c_n, gates, cells, at::empty({0}, options)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_cuda(
    const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const OptTensor&, const OptTensor&, const OptTensor&, const at::Tensor& batch_sizes,
    bool reverse, const OptTensor& hr_values, const OptTensor& hr_row_ptr,
    const OptTensor& hr_col_idx, const OptTensor&, const OptTensor&, const OptTensor&,
    const OptTensor& hh_plan, int64_t hh_plan_smem, const OptTensor& hh_sliced_values, const OptTensor&,
    const OptTensor&, bool save_activations) {
  const c10::cuda::CUDAGuard guard(input_gates.device());
  TORCH_CHECK(!hh_sliced_values.has_value(),
              "lstm_layer: the sliced view of W_hh (hh_sliced_values) is read by the CPU kernel only; pass None "
              "for CUDA tensors");
  if (!hr_values.has_value()) {
    layer::check_lstm_args(input_gates, h0, c0, values, row_ptr, col_idx, batch_sizes, hr_values,
                           hr_row_ptr, hr_col_idx);
    if (auto result = persistent_lstm_forward(input_gates, h0, c0, values, row_ptr, col_idx,
                                              batch_sizes, reverse, hh_plan, hh_plan_smem))
      return layer::drop_saved_activations(*result, save_activations);
  }
  // Both CUDA forwards keep the gates and cells as their workspace; without
  // save_activations they are dropped after the loop (the CPU's fused loop
  // does not write them at all).
  return layer::drop_saved_activations(
      layer::lstm_layer<CudaKernels>(input_gates, h0, c0, values, row_ptr, col_idx, batch_sizes, reverse,
                                     hr_values, hr_row_ptr, hr_col_idx),
      save_activations);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells,
    const at::Tensor& hidden_full, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const OptTensor& col_ptr, const OptTensor& row_idx, const OptTensor& csr2csc,
    const at::Tensor& batch_sizes, bool reverse, const OptTensor& hr_values,
    const OptTensor& hr_row_ptr, const OptTensor& hr_col_idx, const OptTensor& hr_col_ptr,
    const OptTensor& hr_row_idx, const OptTensor& hr_csr2csc) {
  const c10::cuda::CUDAGuard guard(gates.device());
  return layer::lstm_layer_backward<CudaKernels>(
      grad_output, grad_h_n, grad_c_n, gates, output, cells, hidden_full, h0, c0, values, row_ptr,
      col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, hr_values, hr_row_ptr, hr_col_idx,
      hr_col_ptr, hr_row_idx, hr_csr2csc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_cuda(
    const at::Tensor& input_gates, const at::Tensor& h0, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const OptTensor&, const OptTensor&,
    const OptTensor&, const std::optional<at::Tensor>& hh_bias, const at::Tensor& batch_sizes,
    bool reverse) {
  const c10::cuda::CUDAGuard guard(input_gates.device());
  return layer::gru_layer<CudaKernels>(input_gates, h0, values, row_ptr, col_idx, hh_bias,
                                       batch_sizes, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input_gates,
    const at::Tensor& hidden_gates, const at::Tensor& output, const at::Tensor& h0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const OptTensor& col_ptr, const OptTensor& row_idx, const OptTensor& csr2csc,
    const at::Tensor& batch_sizes, bool reverse) {
  const c10::cuda::CUDAGuard guard(input_gates.device());
  return layer::gru_layer_backward<CudaKernels>(grad_output, grad_h_n, input_gates, hidden_gates,
                                                output, h0, values, row_ptr, col_idx, col_ptr,
                                                row_idx, csr2csc, batch_sizes, reverse);
}

std::tuple<at::Tensor, at::Tensor> rnn_layer_cuda(const at::Tensor& input_gates, const at::Tensor& h0,
                                                  const at::Tensor& values, const at::Tensor& row_ptr,
                                                  const at::Tensor& col_idx, const OptTensor&,
                                                  const OptTensor&, const OptTensor&,
                                                  const at::Tensor& batch_sizes, bool reverse,
                                                  bool relu) {
  const c10::cuda::CUDAGuard guard(input_gates.device());
  return layer::rnn_layer<CudaKernels>(input_gates, h0, values, row_ptr, col_idx, batch_sizes,
                                       reverse, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_layer_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& output,
    const at::Tensor& h0, const at::Tensor& values, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const OptTensor& col_ptr, const OptTensor& row_idx,
    const OptTensor& csr2csc, const at::Tensor& batch_sizes, bool reverse, bool relu) {
  const c10::cuda::CUDAGuard guard(output.device());
  return layer::rnn_layer_backward<CudaKernels>(grad_output, grad_h_n, output, h0, values, row_ptr,
                                                col_idx, col_ptr, row_idx, csr2csc, batch_sizes,
                                                reverse, relu);
}

}  // namespace
}  // namespace sparse_kernels::cuda

TORCH_LIBRARY_IMPL(sparse_kernels, CUDA, m) {
  // The forward with the CPU-only arguments refused (a sliced view of W).
  using Opt = std::optional<at::Tensor>;
  m.impl("sparse_linear",
         [](const at::Tensor& input, const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
            const Opt& col_ptr, const Opt& row_idx, const Opt& csr2csc, const Opt& bias, const Opt& col_idx16,
            const Opt& row_order, const Opt& row_idx16, const Opt& col_order, const Opt& sliced_values,
            const Opt& sliced_cols, const Opt& slice_ptr) {
           TORCH_CHECK(!sliced_values.has_value() && !sliced_cols.has_value() && !slice_ptr.has_value(),
                       "sparse_linear: the sliced view of W (sliced_values, sliced_cols, slice_ptr) is read by the "
                       "CPU kernel only; pass None for CUDA tensors");
           return sparse_kernels::cuda::sparse_linear_cuda(input, values, row_ptr, col_idx, col_ptr, row_idx,
                                                           csr2csc, bias, col_idx16, row_order, row_idx16,
                                                           col_order);
         });
  m.impl("sparse_linear_input_grad", &sparse_kernels::cuda::sparse_linear_input_grad_cuda);
  m.impl("sparse_linear_value_grad", &sparse_kernels::cuda::sparse_linear_value_grad_cuda);
  m.impl("sparse_linear_input_grad_csr", &sparse_kernels::cuda::sparse_linear_input_grad_csr_cuda);
  m.impl("bsr_linear", &sparse_kernels::cuda::bsr_linear_cuda);
  m.impl("bsr_linear_input_grad", &sparse_kernels::cuda::bsr_linear_input_grad_cuda);
  m.impl("bsr_linear_value_grad", &sparse_kernels::cuda::bsr_linear_value_grad_cuda);
  m.impl("lstm_cell", &sparse_kernels::cuda::lstm_cell_cuda);
  m.impl("lstm_cell_backward", &sparse_kernels::cuda::lstm_cell_backward_cuda);
  m.impl("lstm_layer", &sparse_kernels::cuda::lstm_layer_cuda);
  m.impl("lstm_layer_backward", &sparse_kernels::cuda::lstm_layer_backward_cuda);
  m.impl("gru_layer", &sparse_kernels::cuda::gru_layer_cuda);
  m.impl("gru_layer_backward", &sparse_kernels::cuda::gru_layer_backward_cuda);
  m.impl("rnn_layer", &sparse_kernels::cuda::rnn_layer_cuda);
  m.impl("rnn_layer_backward", &sparse_kernels::cuda::rnn_layer_backward_cuda);
}
