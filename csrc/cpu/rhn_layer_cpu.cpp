// CPU recurrent highway network: the fused micro-layer cell (rhn_math.h) and
// the whole-sequence layer (the shared loop of rhn_layer_loop.h over the CPU
// kernels).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/rhn_layer_loop.h"
#include "sparse_kernels/rhn_math.h"

namespace sparse_kernels::cpu {

namespace {
void check_rhn_cell_shapes(const at::Tensor& pre, const at::Tensor& s_prev) {
  SK_CHECK_DIM(pre, 2);
  SK_CHECK_DIM(s_prev, 2);
  SK_CHECK_FLOAT(pre);
  SK_CHECK_SAME_DTYPE(pre, s_prev);
  TORCH_CHECK(pre.size(0) == s_prev.size(0) && pre.size(1) == 2 * s_prev.size(1),
              "pre must have shape (N, 2*H) for s_prev of shape (N, H), got ", pre.sizes(),
              " and ", s_prev.sizes());
}

}  // namespace

at::Tensor rhn_cell(const at::Tensor& pre_, const at::Tensor& s_prev_) {
  check_rhn_cell_shapes(pre_, s_prev_);
  const at::Tensor pre = pre_.contiguous(), s_prev = s_prev_.contiguous();
  const int64_t n_rows = s_prev.size(0), hidden = s_prev.size(1);
  at::Tensor s = at::empty_like(s_prev);
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rhn_cell_cpu", [&] {
    const scalar_t* p = pre.data_ptr<scalar_t>();
    const scalar_t* sp = s_prev.data_ptr<scalar_t>();
    scalar_t* out = s.data_ptr<scalar_t>();
    at::parallel_for(0, n_rows * hidden, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t n = e / hidden, j = e % hidden;
        const scalar_t* p_n = p + n * 2 * hidden;
        out[e] = rhn_unit_forward(p_n[j], p_n[hidden + j], sp[e]);
      }
    });
  });
  return s;
}

std::tuple<at::Tensor, at::Tensor> rhn_cell_backward(const at::Tensor& grad_s_,
                                                     const at::Tensor& pre_,
                                                     const at::Tensor& s_prev_) {
  check_rhn_cell_shapes(pre_, s_prev_);
  TORCH_CHECK(grad_s_.sizes() == s_prev_.sizes() &&
                  grad_s_.scalar_type() == s_prev_.scalar_type(),
              "grad_s must match s_prev in shape and dtype");
  const at::Tensor grad_s = grad_s_.contiguous(), pre = pre_.contiguous();
  const at::Tensor s_prev = s_prev_.contiguous();
  const int64_t n_rows = s_prev.size(0), hidden = s_prev.size(1);
  at::Tensor grad_pre = at::empty_like(pre), grad_s_prev = at::empty_like(s_prev);
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rhn_cell_backward_cpu", [&] {
    const scalar_t* p = pre.data_ptr<scalar_t>();
    const scalar_t* sp = s_prev.data_ptr<scalar_t>();
    const scalar_t* ds = grad_s.data_ptr<scalar_t>();
    scalar_t* dp = grad_pre.data_ptr<scalar_t>();
    scalar_t* dsp = grad_s_prev.data_ptr<scalar_t>();
    at::parallel_for(0, n_rows * hidden, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t n = e / hidden, j = e % hidden;
        const scalar_t* p_n = p + n * 2 * hidden;
        scalar_t* dp_n = dp + n * 2 * hidden;
        rhn_unit_backward(p_n[j], p_n[hidden + j], sp[e], ds[e], dp_n + j, dp_n + hidden + j,
                          dsp + e);
      }
    });
  });
  return {grad_pre, grad_s_prev};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_layer(
    const at::Tensor& input_gates, const at::Tensor& h0, at::TensorList values,
    at::TensorList row_ptr, at::TensorList col_idx, const at::Tensor& biases,
    const at::Tensor& batch_sizes, bool reverse) {
  return layer::rhn_layer<CpuKernels>(input_gates, h0, values, row_ptr, col_idx, biases,
                                         batch_sizes, reverse);
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, at::Tensor> rhn_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& pre,
    const at::Tensor& states, at::TensorList values, at::TensorList row_ptr,
    at::TensorList col_idx, at::TensorList col_ptr, at::TensorList row_idx,
    at::TensorList csr2csc, const at::Tensor& batch_sizes, bool reverse) {
  return layer::rhn_layer_backward<CpuKernels>(grad_output, grad_h_n, pre, states, values,
                                                  row_ptr, col_idx, col_ptr, row_idx, csr2csc,
                                                  batch_sizes, reverse);
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  // The forward takes each R_l's transposed index only to hand it to the backward.
  m.impl("rhn_layer",
         [](const at::Tensor& input_gates, const at::Tensor& h0, at::TensorList values,
            at::TensorList row_ptr, at::TensorList col_idx, at::TensorList, at::TensorList,
            at::TensorList, const at::Tensor& biases, const at::Tensor& batch_sizes,
            bool reverse) {
           return sparse_kernels::cpu::rhn_layer(input_gates, h0, values, row_ptr, col_idx,
                                                 biases, batch_sizes, reverse);
         });
  m.impl("rhn_layer_backward", &sparse_kernels::cpu::rhn_layer_backward);
}
