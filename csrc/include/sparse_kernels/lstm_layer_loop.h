// The whole-sequence LSTM layer loop, shared by the backends: the time loop
// runs in C++, calling the backend's own kernels for each step.
//
// The input projection of all timesteps (x W_ih^T + b) is one sparse product
// done before this op (sparse_linear over T*B rows); each step adds the
// recurrent sparse product W_hh h and applies the fused cell. The backward
// runs BPTT step by step and computes W_hh's value gradient once for the
// whole sequence (one SDDMM over T*B rows).
//
// Variable lengths and direction: see layer_common.h.
//
// Kernels must provide static sparse_linear, sparse_linear_input_grad,
// sparse_linear_value_grad, lstm_cell and lstm_cell_backward with the
// signatures of csrc/include/sparse_kernels/cpu_kernels.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/layer_common.h"

namespace sparse_kernels::layer {



struct LayerShapes {
  int64_t steps, batch, hidden;
};

inline LayerShapes check_layer_args(const at::Tensor& input_gates, const at::Tensor& h0,
                             const at::Tensor& c0, const at::Tensor& values,
                             const at::Tensor& row_ptr, const at::Tensor& col_idx,
                             const at::Tensor& batch_sizes) {
  SK_CHECK_DIM(input_gates, 3);
  SK_CHECK_DIM(h0, 2);
  SK_CHECK_DIM(c0, 2);
  SK_CHECK_FLOAT(input_gates);
  SK_CHECK_SAME_DTYPE(input_gates, h0);
  SK_CHECK_SAME_DTYPE(input_gates, c0);
  SK_CHECK_SAME_DTYPE(input_gates, values);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  const int64_t steps = input_gates.size(0), batch = input_gates.size(1);
  const int64_t hidden = c0.size(1);
  TORCH_CHECK(input_gates.size(2) == 4 * hidden, "input_gates must have 4*hidden = ", 4 * hidden,
              " features, got ", input_gates.size(2));
  TORCH_CHECK(h0.size(0) == batch && c0.size(0) == batch && h0.size(1) == hidden,
              "h0 and c0 must have shape (batch, hidden) = (", batch, ", ", hidden, ")");
  TORCH_CHECK(row_ptr.numel() == 4 * hidden + 1, "W_hh must have 4*hidden rows");
  TORCH_CHECK(values.numel() == col_idx.numel(), "values and col_idx must have equal length");
  check_batch_sizes(batch_sizes, steps, batch);
  return {steps, batch, hidden};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input_gates_, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& batch_sizes, bool reverse) {
  const auto [steps, batch, hidden] =
      check_layer_args(input_gates_, h0, c0, values, row_ptr, col_idx, batch_sizes);
  const at::Tensor input_gates = input_gates_.contiguous();
  at::Tensor output = at::zeros({steps, batch, hidden}, input_gates.options());
  at::Tensor gates = at::zeros({steps, batch, 4 * hidden}, input_gates.options());
  at::Tensor cells = at::zeros({steps, batch, hidden}, input_gates.options());
  at::Tensor h = h0.contiguous().clone(), c = c0.contiguous().clone();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    at::Tensor h_active = h.narrow(0, 0, b), c_active = c.narrow(0, 0, b);
    at::Tensor gates_t = gates[t].narrow(0, 0, b);
    // Pre-activations: input projection + recurrent sparse product.
    at::add_out(gates_t, input_gates[t].narrow(0, 0, b),
                Kernels::sparse_linear(h_active, values, row_ptr, col_idx, std::nullopt));
    auto [h_new, c_new] = Kernels::lstm_cell(gates_t, c_active);
    h_active.copy_(h_new);
    c_active.copy_(c_new);
    output[t].narrow(0, 0, b).copy_(h_new);
    cells[t].narrow(0, 0, b).copy_(c_new);
  }
  return {output, h, c, gates, cells};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells,
    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& col_ptr,
    const at::Tensor& row_idx, const at::Tensor& csr2csc, const at::Tensor& batch_sizes,
    bool reverse) {
  const auto [steps, batch, hidden] =
      check_layer_args(gates, h0, c0, values, row_ptr, col_idx, batch_sizes);
  for (const at::Tensor* t : {&grad_output, &output, &cells}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == steps && t->size(1) == batch &&
                    t->size(2) == hidden,
                "grad_output, output and cells must have shape (steps, batch, hidden)");
  }
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes() && grad_c_n.sizes() == c0.sizes(),
              "grad_h_n and grad_c_n must have the shapes of h0 and c0");
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  at::Tensor grad_gates = at::zeros_like(gates);
  at::Tensor dh = grad_h_n.contiguous().clone(), dc = grad_c_n.contiguous().clone();
  // The state each step started from, for the single SDDMM at the end.
  at::Tensor h_prev_all = at::zeros_like(output);
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    const at::Tensor c_prev = start_state(cells, c0, t, b, bs, steps, reverse);
    h_prev_all[t].narrow(0, 0, b).copy_(start_state(output, h0, t, b, bs, steps, reverse));
    at::Tensor dh_active = dh.narrow(0, 0, b), dc_active = dc.narrow(0, 0, b);
    dh_active.add_(grad_output[t].narrow(0, 0, b));
    auto [dgates, dc_prev] = Kernels::lstm_cell_backward(dh_active, dc_active, gates[t].narrow(0, 0, b),
                                                c_prev, cells[t].narrow(0, 0, b));
    grad_gates[t].narrow(0, 0, b).copy_(dgates);
    dc_active.copy_(dc_prev);
    // h_prev fed only this step's recurrent product (its output use was
    // added above when that step was processed).
    dh_active.copy_(Kernels::sparse_linear_input_grad(dgates, values, col_ptr, row_idx, csr2csc));
  }
  at::Tensor grad_values = Kernels::sparse_linear_value_grad(grad_gates.reshape({steps * batch, 4 * hidden}),
                                                    h_prev_all.reshape({steps * batch, hidden}),
                                                    row_ptr, col_idx);
  return {grad_gates, dh, dc, grad_values};
}

}  // namespace sparse_kernels::layer
