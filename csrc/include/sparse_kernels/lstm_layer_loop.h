// The whole-sequence LSTM layer loop, shared by the backends: the time loop
// runs in C++, calling the backend's own kernels for each step.
//
// The input projection of all timesteps (x W_ih^T + b) is one sparse product
// done before this op (sparse_linear over T*B rows); each step adds the
// recurrent sparse product W_hh h and applies the fused cell, then (with
// proj_size > 0) the sparse projection h = W_hr (o * tanh(c)). The backward
// runs BPTT step by step and computes each weight's value gradient once for
// the whole sequence (one SDDMM over T*B rows per matrix).
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

struct LstmShapes {
  int64_t steps, batch, hidden, state;  // state = proj_size, or hidden without projection
};

inline LstmShapes check_lstm_args(const at::Tensor& input_gates, const at::Tensor& h0,
                                  const at::Tensor& c0, const at::Tensor& values,
                                  const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                  const at::Tensor& batch_sizes, const OptTensor& hr_values,
                                  const OptTensor& hr_row_ptr, const OptTensor& hr_col_idx) {
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
  const int64_t hidden = c0.size(1), state = h0.size(1);
  TORCH_CHECK(input_gates.size(2) == 4 * hidden, "input_gates must have 4*hidden = ", 4 * hidden,
              " features, got ", input_gates.size(2));
  TORCH_CHECK(h0.size(0) == batch && c0.size(0) == batch,
              "h0 and c0 must have batch = ", batch, " rows");
  TORCH_CHECK(row_ptr.numel() == 4 * hidden + 1, "W_hh must have 4*hidden rows");
  TORCH_CHECK(values.numel() == col_idx.numel(), "values and col_idx must have equal length");
  check_compressed_index(row_ptr, col_idx, state, "hh_row_ptr", "hh_col_idx");
  const bool projected = hr_values.has_value();
  TORCH_CHECK(projected == hr_row_ptr.has_value() && projected == hr_col_idx.has_value(),
              "the projection W_hr needs hr_values, hr_row_ptr and hr_col_idx together");
  if (projected) {
    SK_CHECK_SAME_DTYPE(input_gates, (*hr_values));
    SK_CHECK_INDEX((*hr_row_ptr));
    SK_CHECK_INDEX((*hr_col_idx));
    TORCH_CHECK(hr_row_ptr->numel() == state + 1, "W_hr must have proj_size rows");
    TORCH_CHECK(hr_values->numel() == hr_col_idx->numel(),
                "hr_values and hr_col_idx must have equal length");
    check_compressed_index(*hr_row_ptr, *hr_col_idx, hidden, "hr_row_ptr", "hr_col_idx");
  } else {
    TORCH_CHECK(state == hidden, "without a projection h0 must have hidden = ", hidden, " columns");
  }
  check_batch_sizes(batch_sizes, steps, batch);
  return {steps, batch, hidden, state};
}

// -> (output (T, B, P), h_n (B, P), c_n (B, H), gates (T, B, 4H)
//     pre-activations, cells (T, B, H), hidden_full (T, B, H) = o * tanh(c)
//     before the projection (empty without one)); the last three are saved
//     for the backward.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input_gates_, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& batch_sizes, bool reverse, const OptTensor& hr_values,
    const OptTensor& hr_row_ptr, const OptTensor& hr_col_idx) {
  const auto [steps, batch, hidden, state] = check_lstm_args(
      input_gates_, h0, c0, values, row_ptr, col_idx, batch_sizes, hr_values, hr_row_ptr, hr_col_idx);
  const bool projected = hr_values.has_value();
  const at::Tensor input_gates = input_gates_.contiguous();
  const auto options = input_gates.options();
  at::Tensor output = at::zeros({steps, batch, state}, options);
  at::Tensor gates = at::zeros({steps, batch, 4 * hidden}, options);
  at::Tensor cells = at::zeros({steps, batch, hidden}, options);
  at::Tensor hidden_full = projected ? at::zeros({steps, batch, hidden}, options) : at::empty({0}, options);
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
    if (projected) {
      hidden_full[t].narrow(0, 0, b).copy_(h_new);
      h_new = Kernels::sparse_linear(h_new, *hr_values, *hr_row_ptr, *hr_col_idx, std::nullopt);
    }
    h_active.copy_(h_new);
    c_active.copy_(c_new);
    output[t].narrow(0, 0, b).copy_(h_new);
    cells[t].narrow(0, 0, b).copy_(c_new);
  }
  return {output, h, c, gates, cells, hidden_full};
}

// lstm_layer's result without what only the backward reads (gates, cells,
// hidden_full empty) unless `save_activations`: a forward that will not be
// differentiated returns no (T, B, 4H) tensor, whichever loop computed it.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> drop_saved_activations(
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> result,
    bool save_activations) {
  if (!save_activations) {  // three tensors: an op's outputs never alias each other
    const auto options = std::get<0>(result).options();
    std::get<3>(result) = at::empty({0}, options);
    std::get<4>(result) = at::empty({0}, options);
    std::get<5>(result) = at::empty({0}, options);
  }
  return result;
}

// The backward's arguments: the forward's, the optional transposed
// indices, and the shapes of what the forward saved.
inline LstmShapes check_lstm_backward_args(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells,
    const at::Tensor& hidden_full, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const OptTensor& col_ptr, const OptTensor& row_idx, const OptTensor& csr2csc,
    const at::Tensor& batch_sizes, const OptTensor& hr_values, const OptTensor& hr_row_ptr,
    const OptTensor& hr_col_idx, const OptTensor& hr_col_ptr, const OptTensor& hr_row_idx,
    const OptTensor& hr_csr2csc) {
  const LstmShapes shapes = check_lstm_args(
      gates, h0, c0, values, row_ptr, col_idx, batch_sizes, hr_values, hr_row_ptr, hr_col_idx);
  const auto [steps, batch, hidden, state] = shapes;
  const bool projected = hr_values.has_value();
  check_optional_csc_view(row_ptr, col_idx, col_ptr, row_idx, csr2csc, state, "W_hh");
  if (projected) {
    check_optional_csc_view(*hr_row_ptr, *hr_col_idx, hr_col_ptr, hr_row_idx, hr_csr2csc, hidden,
                            "W_hr");
  }
  for (const at::Tensor* t : {&grad_output, &output}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == steps && t->size(1) == batch && t->size(2) == state,
                "grad_output and output must have shape (steps, batch, state)");
  }
  TORCH_CHECK(cells.dim() == 3 && cells.size(0) == steps && cells.size(1) == batch &&
                  cells.size(2) == hidden,
              "cells must have shape (steps, batch, hidden)");
  TORCH_CHECK(!projected || hidden_full.sizes() == cells.sizes(),
              "hidden_full must have the shape of cells");
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes() && grad_c_n.sizes() == c0.sizes(),
              "grad_h_n and grad_c_n must have the shapes of h0 and c0");
  return shapes;
}

// -> (grad_input_gates, grad_h0, grad_c0, grad_hh_values, grad_hr_values
//     (empty without a projection)).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells,
    const at::Tensor& hidden_full, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const OptTensor& col_ptr, const OptTensor& row_idx, const OptTensor& csr2csc,
    const at::Tensor& batch_sizes, bool reverse, const OptTensor& hr_values,
    const OptTensor& hr_row_ptr, const OptTensor& hr_col_idx, const OptTensor& hr_col_ptr,
    const OptTensor& hr_row_idx, const OptTensor& hr_csr2csc) {
  const auto [steps, batch, hidden, state] = check_lstm_backward_args(
      grad_output, grad_h_n, grad_c_n, gates, output, cells, hidden_full, h0, c0, values, row_ptr, col_idx,
      col_ptr, row_idx, csr2csc, batch_sizes, hr_values, hr_row_ptr, hr_col_idx, hr_col_ptr, hr_row_idx,
      hr_csr2csc);
  const bool projected = hr_values.has_value();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  at::Tensor grad_gates = at::zeros_like(gates);
  at::Tensor dh = grad_h_n.contiguous().clone(), dc = grad_c_n.contiguous().clone();
  // The state each step started from, and the gradient reaching each step's
  // projected output: the operands of the single SDDMMs at the end.
  at::Tensor h_prev_all = at::zeros_like(output);
  at::Tensor grad_projected = projected ? at::zeros_like(output) : at::Tensor();
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    const at::Tensor c_prev = start_state(cells, c0, t, b, bs, steps, reverse);
    h_prev_all[t].narrow(0, 0, b).copy_(start_state(output, h0, t, b, bs, steps, reverse));
    at::Tensor dh_active = dh.narrow(0, 0, b), dc_active = dc.narrow(0, 0, b);
    dh_active.add_(grad_output[t].narrow(0, 0, b));
    at::Tensor d_hidden = dh_active;
    if (projected) {
      grad_projected[t].narrow(0, 0, b).copy_(dh_active);
      d_hidden = Kernels::sparse_linear_input_grad(dh_active, *hr_values, *hr_row_ptr, *hr_col_idx,
                                                   hidden, hr_col_ptr, hr_row_idx, hr_csr2csc);
    }
    auto [dgates, dc_prev] = Kernels::lstm_cell_backward(d_hidden, dc_active, gates[t].narrow(0, 0, b),
                                                         c_prev, cells[t].narrow(0, 0, b));
    grad_gates[t].narrow(0, 0, b).copy_(dgates);
    dc_active.copy_(dc_prev);
    // h_prev fed only this step's recurrent product (its output use was
    // added above when that step was processed).
    dh_active.copy_(Kernels::sparse_linear_input_grad(dgates, values, row_ptr, col_idx, state, col_ptr,
                                                      row_idx, csr2csc));
  }
  at::Tensor grad_values = Kernels::sparse_linear_value_grad(
      grad_gates.reshape({steps * batch, 4 * hidden}), h_prev_all.reshape({steps * batch, state}),
      row_ptr, col_idx);
  at::Tensor grad_hr_values =
      projected ? Kernels::sparse_linear_value_grad(grad_projected.reshape({steps * batch, state}),
                                                    hidden_full.reshape({steps * batch, hidden}),
                                                    *hr_row_ptr, *hr_col_idx)
                : at::empty({0}, values.options());
  return {grad_gates, dh, dc, grad_values, grad_hr_values};
}

}  // namespace sparse_kernels::layer
