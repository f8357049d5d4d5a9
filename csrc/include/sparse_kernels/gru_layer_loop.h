// The whole-sequence GRU layer loop, shared by the backends (see
// lstm_layer_loop.h for the scheme and layer_common.h for lengths and
// direction). input_gates = x W_ih^T + b_ih for every step is one sparse
// product done by the caller; each step computes the hidden part
// hg = W_hh h + b_hh (sparse) and the fused GRU cell. The backward computes
// W_hh's value gradient once for the whole sequence (one SDDMM over T*B rows).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/layer_common.h"

namespace sparse_kernels::layer {

// -> (output (T, B, H), h_n (B, H), hidden_gates (T, B, 3H) saved for the backward)
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer(
    const at::Tensor& input_gates_, const at::Tensor& h0, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const std::optional<at::Tensor>& hh_bias,
    const at::Tensor& batch_sizes, bool reverse) {
  check_recurrent_args(input_gates_, h0, values, row_ptr, col_idx, batch_sizes, 3);
  if (hh_bias.has_value()) {
    // Checked here too, not only by the product: a sequence of no active
    // rows never reaches it.
    SK_CHECK_SAME_DTYPE(input_gates_, (*hh_bias));
    TORCH_CHECK(hh_bias->dim() == 1 && hh_bias->numel() == input_gates_.size(2),
                "hh_bias must have shape (3*hidden,) = (", input_gates_.size(2), "), got ", hh_bias->sizes());
  }
  const at::Tensor input_gates = input_gates_.contiguous();
  const int64_t steps = input_gates.size(0), batch = input_gates.size(1), hidden = h0.size(1);
  at::Tensor output = at::zeros({steps, batch, hidden}, input_gates.options());
  at::Tensor hidden_gates = at::zeros_like(input_gates);
  at::Tensor h = h0.contiguous().clone();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    at::Tensor h_active = h.narrow(0, 0, b);
    at::Tensor hg = hidden_gates[t].narrow(0, 0, b);
    hg.copy_(Kernels::sparse_linear(h_active, values, row_ptr, col_idx, hh_bias));
    at::Tensor h_new = Kernels::gru_cell(input_gates[t].narrow(0, 0, b), hg, h_active);
    h_active.copy_(h_new);
    output[t].narrow(0, 0, b).copy_(h_new);
  }
  return {output, h, hidden_gates};
}

// -> (grad_input_gates, grad_hidden_gates (its sum over T, B is b_hh's
//     gradient), grad_h0, grad_values)
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input_gates,
    const at::Tensor& hidden_gates, const at::Tensor& output, const at::Tensor& h0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const OptTensor& col_ptr, const OptTensor& row_idx, const OptTensor& csr2csc,
    const at::Tensor& batch_sizes, bool reverse) {
  check_recurrent_args(input_gates, h0, values, row_ptr, col_idx, batch_sizes, 3);
  const int64_t steps = input_gates.size(0), batch = input_gates.size(1), hidden = h0.size(1);
  check_optional_csc_view(row_ptr, col_idx, col_ptr, row_idx, csr2csc, hidden, "W_hh");
  TORCH_CHECK(hidden_gates.sizes() == input_gates.sizes(), "hidden_gates must match input_gates");
  TORCH_CHECK(grad_output.sizes() == output.sizes() && output.dim() == 3 &&
                  output.size(0) == steps && output.size(1) == batch && output.size(2) == hidden,
              "grad_output and output must have shape (steps, batch, hidden)");
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes(), "grad_h_n must have the shape of h0");
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  at::Tensor grad_input_gates = at::zeros_like(input_gates);
  at::Tensor grad_hidden_gates = at::zeros_like(hidden_gates);
  at::Tensor h_prev_all = at::zeros_like(output);
  at::Tensor dh = grad_h_n.contiguous().clone();
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    at::Tensor h_prev = h_prev_all[t].narrow(0, 0, b);
    h_prev.copy_(start_state(output, h0, t, b, bs, steps, reverse));
    at::Tensor dh_active = dh.narrow(0, 0, b);
    dh_active.add_(grad_output[t].narrow(0, 0, b));
    auto [d_ig, d_hg, dh_direct] = Kernels::gru_cell_backward(
        dh_active, input_gates[t].narrow(0, 0, b), hidden_gates[t].narrow(0, 0, b), h_prev);
    grad_input_gates[t].narrow(0, 0, b).copy_(d_ig);
    grad_hidden_gates[t].narrow(0, 0, b).copy_(d_hg);
    at::add_out(dh_active, dh_direct,
                Kernels::sparse_linear_input_grad(d_hg, values, row_ptr, col_idx, hidden, col_ptr,
                                                  row_idx, csr2csc));
  }
  at::Tensor grad_values = Kernels::sparse_linear_value_grad(
      grad_hidden_gates.reshape({steps * batch, 3 * hidden}),
      h_prev_all.reshape({steps * batch, hidden}), row_ptr, col_idx);
  return {grad_input_gates, grad_hidden_gates, dh, grad_values};
}

}  // namespace sparse_kernels::layer
