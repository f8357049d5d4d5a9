// CUDA recurrent highway network layer: the shared loop of
// sparse_kernels/rhn_layer_loop.h over the CUDA fused cell (rhn_cell.cu) and
// the CUDA sparse products registered in ops_cuda.cpp, which are reached
// through the dispatcher so that this file needs nothing private of that one.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "rhn_kernels.h"
#include "sparse_kernels/checks.h"
#include "sparse_kernels/rhn_layer_loop.h"

namespace sparse_kernels::cuda {
namespace {

void check_cell(const at::Tensor& pre, const at::Tensor& s_prev) {
  SK_CHECK_DIM(pre, 2);
  SK_CHECK_DIM(s_prev, 2);
  SK_CHECK_SAME_DTYPE(pre, s_prev);
  TORCH_CHECK(pre.size(0) == s_prev.size(0) && pre.size(1) == 2 * s_prev.size(1),
              "pre must have shape (N, 2*H) for s_prev of shape (N, H)");
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " kernel launch failed: ", cudaGetErrorString(err));
}

struct CudaRhnKernels {
  // sparse_linear's forward does not read its optional transposed index; the
  // compact indices (the last four arguments) are not cached for the layers.
  // typed<> must name every schema argument, defaulted ones included: a
  // mismatch throws at the first call.
  static at::Tensor sparse_linear(const at::Tensor& x, const at::Tensor& v, const at::Tensor& rp,
                                  const at::Tensor& ci, const std::optional<at::Tensor>& b) {
    using Opt = std::optional<at::Tensor>;
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("sparse_kernels::sparse_linear", "")
            .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const Opt&, const Opt&, const Opt&, const Opt&,
                              const Opt&, const Opt&, const Opt&, const Opt&)>();
    return op.call(x, v, rp, ci, std::nullopt, std::nullopt, std::nullopt, b, std::nullopt,
                   std::nullopt, std::nullopt, std::nullopt);
  }
  // The CUDA input gradient gathers through the transposed index.
  static at::Tensor sparse_linear_input_grad(const at::Tensor& gy, const at::Tensor& v,
                                             const at::Tensor&, const at::Tensor&, int64_t,
                                             const std::optional<at::Tensor>& cp_,
                                             const std::optional<at::Tensor>& ri_,
                                             const std::optional<at::Tensor>& perm_) {
    TORCH_CHECK(cp_ && ri_ && perm_,
                "the CUDA backward of an RHN layer needs each R_l's transposed index "
                "(r_col_ptr, r_row_idx, r_csr2csc)");
    const at::Tensor &cp = *cp_, &ri = *ri_, &perm = *perm_;
    using Opt = std::optional<at::Tensor>;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("sparse_kernels::sparse_linear_input_grad", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const Opt&, const Opt&)>();
    return op.call(gy, v, cp, ri, perm, std::nullopt, std::nullopt);
  }
  static at::Tensor sparse_linear_value_grad(const at::Tensor& gy, const at::Tensor& x,
                                             const at::Tensor& rp, const at::Tensor& ci) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("sparse_kernels::sparse_linear_value_grad", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&)>();
    return op.call(gy, x, rp, ci);
  }
  static at::Tensor rhn_cell(const at::Tensor& pre_, const at::Tensor& s_prev_) {
    check_cell(pre_, s_prev_);
    const at::Tensor pre = pre_.contiguous(), s_prev = s_prev_.contiguous();
    at::Tensor s = at::empty_like(s_prev);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rhn_cell_cuda", [&] {
      check_launch(cuda::rhn_cell<scalar_t>(pre.data_ptr<scalar_t>(), s_prev.data_ptr<scalar_t>(),
                                            s.data_ptr<scalar_t>(), s_prev.size(0), s_prev.size(1),
                                            stream),
                   "rhn_cell");
    });
    return s;
  }
  static std::tuple<at::Tensor, at::Tensor> rhn_cell_backward(const at::Tensor& grad_s_,
                                                              const at::Tensor& pre_,
                                                              const at::Tensor& s_prev_) {
    check_cell(pre_, s_prev_);
    TORCH_CHECK(grad_s_.sizes() == s_prev_.sizes(), "grad_s must have the shape of s_prev");
    const at::Tensor grad_s = grad_s_.contiguous(), pre = pre_.contiguous();
    const at::Tensor s_prev = s_prev_.contiguous();
    at::Tensor grad_pre = at::empty_like(pre), grad_s_prev = at::empty_like(s_prev);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rhn_cell_backward_cuda", [&] {
      check_launch(cuda::rhn_cell_backward<scalar_t>(
                       grad_s.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(),
                       s_prev.data_ptr<scalar_t>(), grad_pre.data_ptr<scalar_t>(),
                       grad_s_prev.data_ptr<scalar_t>(), s_prev.size(0), s_prev.size(1), stream),
                   "rhn_cell_backward");
    });
    return {grad_pre, grad_s_prev};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_layer_cuda(
    const at::Tensor& input_gates, const at::Tensor& h0, at::TensorList values,
    at::TensorList row_ptr, at::TensorList col_idx, at::TensorList, at::TensorList,
    at::TensorList, const at::Tensor& biases, const at::Tensor& batch_sizes, bool reverse) {
  const c10::cuda::CUDAGuard guard(input_gates.device());
  return layer::rhn_layer<CudaRhnKernels>(input_gates, h0, values, row_ptr, col_idx, biases,
                                          batch_sizes, reverse);
}

std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, at::Tensor> rhn_layer_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& pre,
    const at::Tensor& states, at::TensorList values, at::TensorList row_ptr,
    at::TensorList col_idx, at::TensorList col_ptr, at::TensorList row_idx,
    at::TensorList csr2csc, const at::Tensor& batch_sizes, bool reverse) {
  const c10::cuda::CUDAGuard guard(pre.device());
  return layer::rhn_layer_backward<CudaRhnKernels>(grad_output, grad_h_n, pre, states, values,
                                                   row_ptr, col_idx, col_ptr, row_idx, csr2csc,
                                                   batch_sizes, reverse);
}

}  // namespace
}  // namespace sparse_kernels::cuda

TORCH_LIBRARY_IMPL(sparse_kernels, CUDA, m) {
  m.impl("rhn_layer", &sparse_kernels::cuda::rhn_layer_cuda);
  m.impl("rhn_layer_backward", &sparse_kernels::cuda::rhn_layer_backward_cuda);
}
