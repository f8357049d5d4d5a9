// The whole-sequence Elman RNN layer loop (tanh or relu), shared by the
// backends (see lstm_layer_loop.h for the scheme and layer_common.h for
// lengths and direction). input_gates = x W_ih^T + b_ih + b_hh for every
// step is one sparse product done by the caller; each step adds W_hh h and
// applies the nonlinearity. The backward computes W_hh's value gradient once
// for the whole sequence (one SDDMM over T*B rows).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/layer_common.h"

namespace sparse_kernels::layer {

// -> (output (T, B, H), h_n (B, H)); the output is all the backward needs.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> rnn_layer(const at::Tensor& input_gates_, const at::Tensor& h0,
                                             const at::Tensor& values, const at::Tensor& row_ptr,
                                             const at::Tensor& col_idx, const at::Tensor& batch_sizes,
                                             bool reverse, bool relu) {
  check_recurrent_args(input_gates_, h0, values, row_ptr, col_idx, batch_sizes, 1);
  const at::Tensor input_gates = input_gates_.contiguous();
  const int64_t steps = input_gates.size(0);
  at::Tensor output = at::zeros_like(input_gates);
  at::Tensor h = h0.contiguous().clone();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    at::Tensor h_active = h.narrow(0, 0, b);
    at::Tensor pre = Kernels::sparse_linear(h_active, values, row_ptr, col_idx, std::nullopt);
    pre.add_(input_gates[t].narrow(0, 0, b));
    at::Tensor h_new = Kernels::rnn_cell(pre, relu);
    h_active.copy_(h_new);
    output[t].narrow(0, 0, b).copy_(h_new);
  }
  return {output, h};
}

// -> (grad_input_gates, grad_h0, grad_values)
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& output,
    const at::Tensor& h0, const at::Tensor& values, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const OptTensor& col_ptr, const OptTensor& row_idx,
    const OptTensor& csr2csc, const at::Tensor& batch_sizes, bool reverse, bool relu) {
  check_recurrent_args(output, h0, values, row_ptr, col_idx, batch_sizes, 1);
  check_optional_csc_view(row_ptr, col_idx, col_ptr, row_idx, csr2csc, h0.size(1), "W_hh");
  TORCH_CHECK(grad_output.sizes() == output.sizes(), "grad_output must have the shape of output");
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes(), "grad_h_n must have the shape of h0");
  const int64_t steps = output.size(0), batch = output.size(1), hidden = h0.size(1);
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  at::Tensor grad_pre_all = at::zeros_like(output);
  at::Tensor h_prev_all = at::zeros_like(output);
  at::Tensor dh = grad_h_n.contiguous().clone();
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    h_prev_all[t].narrow(0, 0, b).copy_(start_state(output, h0, t, b, bs, steps, reverse));
    at::Tensor dh_active = dh.narrow(0, 0, b);
    dh_active.add_(grad_output[t].narrow(0, 0, b));
    at::Tensor d_pre = Kernels::rnn_cell_backward(dh_active, output[t].narrow(0, 0, b), relu);
    grad_pre_all[t].narrow(0, 0, b).copy_(d_pre);
    dh_active.copy_(Kernels::sparse_linear_input_grad(d_pre, values, row_ptr, col_idx, hidden, col_ptr,
                                                      row_idx, csr2csc));
  }
  at::Tensor grad_values = Kernels::sparse_linear_value_grad(
      grad_pre_all.reshape({steps * batch, hidden}), h_prev_all.reshape({steps * batch, hidden}),
      row_ptr, col_idx);
  return {grad_pre_all, dh, grad_values};
}

}  // namespace sparse_kernels::layer
