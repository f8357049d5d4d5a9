// The whole-sequence recurrent highway network (RHN) layer loop, shared by
// the backends: the time loop and the depth loop run in C++, calling the
// backend's own kernels.
//
// Per step t, with s_0 = h_{t-1} and micro-layers l = 0..L-1 (depth L):
//   pre_l = [input_gates[t] if l == 0] + R_l s_l + b_l       (2H: [a | g])
//   s_{l+1} = tanh(a) * sigmoid(g) + s_l * (1 - sigmoid(g))   (fused cell)
// and h_t = s_L. input_gates = x W^T for all steps is one sparse product done
// before this op (sparse_linear over T*B rows). The forward saves every
// pre-activation (pre, (L, T, B, 2H)) and every micro-layer's input state
// (states, (L, T, B, H); states[0][t] = h_{t-1}); the backward runs BPTT
// through depth and time and computes each R_l's value gradient once for the
// whole sequence (one SDDMM over T*B rows per micro-layer).
//
// Variable lengths (PackedSequence) come as batch_sizes (T,), non-increasing,
// on the CPU, exactly as in lstm_layer_loop.h: at step t only rows
// [0, batch_sizes[t]) are active; the state of the others is left untouched.
// Inactive rows keep zero pre-activations and gradients, so they add nothing
// to the SDDMMs.
//
// Kernels must provide static sparse_linear, sparse_linear_input_grad,
// sparse_linear_value_grad, rhn_cell and rhn_cell_backward with the
// signatures of csrc/include/sparse_kernels/cpu_kernels.h.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/layer_common.h"

namespace sparse_kernels::layer {

struct RhnShapes {
  int64_t depth, steps, batch, hidden;
};

// Shapes shared by forward and backward. With the transposed index (the
// backward; optional there: empty lists for none, one entry per micro-layer
// otherwise), each R_l's col_ptr / row_idx / csr2csc are checked too.
inline RhnShapes check_rhn_args(int64_t steps, int64_t batch, const at::Tensor& h,
                                at::TensorList values, at::TensorList row_ptr,
                                at::TensorList col_idx, const at::TensorList* col_ptr,
                                const at::TensorList* row_idx, const at::TensorList* csr2csc,
                                const at::Tensor& batch_sizes) {
  SK_CHECK_DIM(h, 2);
  SK_CHECK_FLOAT(h);
  const int64_t depth = static_cast<int64_t>(values.size()), hidden = h.size(1);
  TORCH_CHECK(depth >= 1, "an RHN layer needs at least one micro-layer (r_values is empty)");
  TORCH_CHECK(static_cast<int64_t>(row_ptr.size()) == depth &&
                  static_cast<int64_t>(col_idx.size()) == depth,
              "r_values, r_row_ptr and r_col_idx must have one entry per micro-layer");
  TORCH_CHECK(h.size(0) == batch, "h0 must have shape (batch, hidden) with batch = ", batch);
  for (int64_t l = 0; l < depth; ++l) {
    SK_CHECK_SAME_DTYPE(h, values[l]);
    SK_CHECK_INDEX(row_ptr[l]);
    SK_CHECK_INDEX(col_idx[l]);
    TORCH_CHECK(values[l].dim() == 1 && values[l].is_contiguous() &&
                    values[l].numel() == col_idx[l].numel(),
                "r_values[", l, "] must be contiguous 1-D with one entry per col_idx entry");
    TORCH_CHECK(row_ptr[l].numel() == 2 * hidden + 1, "R_", l, " must have 2*hidden = ",
                2 * hidden, " rows");
    check_compressed_index(row_ptr[l], col_idx[l], hidden, "r_row_ptr", "r_col_idx");
  }
  if (col_ptr != nullptr &&
      !(col_ptr->empty() && row_idx->empty() && csr2csc->empty())) {
    TORCH_CHECK(static_cast<int64_t>(col_ptr->size()) == depth &&
                    static_cast<int64_t>(row_idx->size()) == depth &&
                    static_cast<int64_t>(csr2csc->size()) == depth,
                "r_col_ptr, r_row_idx and r_csr2csc must be empty or have one entry per "
                "micro-layer");
    for (int64_t l = 0; l < depth; ++l) {
      SK_CHECK_INDEX((*col_ptr)[l]);
      SK_CHECK_INDEX((*row_idx)[l]);
      SK_CHECK_INDEX((*csr2csc)[l]);
      TORCH_CHECK((*col_ptr)[l].numel() == hidden + 1 &&
                      (*row_idx)[l].numel() == values[l].numel() &&
                      (*csr2csc)[l].numel() == values[l].numel(),
                  "the transposed index of R_", l, " does not match its shape or nnz");
      check_csc_view(row_ptr[l], col_idx[l], (*col_ptr)[l], (*row_idx)[l], (*csr2csc)[l], hidden,
                     "R_l");
    }
  }
  check_batch_sizes(batch_sizes, steps, batch);
  return {depth, steps, batch, hidden};
}

// -> (output (T, B, H), h_n (B, H), pre (L, T, B, 2H), states (L, T, B, H)).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_layer(
    const at::Tensor& input_gates_, const at::Tensor& h0, at::TensorList values,
    at::TensorList row_ptr, at::TensorList col_idx, const at::Tensor& biases_,
    const at::Tensor& batch_sizes, bool reverse) {
  SK_CHECK_DIM(input_gates_, 3);
  SK_CHECK_FLOAT(input_gates_);
  SK_CHECK_SAME_DTYPE(input_gates_, h0);
  SK_CHECK_SAME_DTYPE(input_gates_, biases_);
  const auto [depth, steps, batch, hidden] =
      check_rhn_args(input_gates_.size(0), input_gates_.size(1), h0, values, row_ptr, col_idx,
                     nullptr, nullptr, nullptr, batch_sizes);
  TORCH_CHECK(input_gates_.size(2) == 2 * hidden, "input_gates must have 2*hidden = ",
              2 * hidden, " features, got ", input_gates_.size(2));
  TORCH_CHECK(biases_.dim() == 2 && biases_.size(0) == depth && biases_.size(1) == 2 * hidden,
              "biases must have shape (depth, 2*hidden) = (", depth, ", ", 2 * hidden,
              "), got ", biases_.sizes());
  const at::Tensor input_gates = input_gates_.contiguous(), biases = biases_.contiguous();
  at::Tensor output = at::zeros({steps, batch, hidden}, input_gates.options());
  at::Tensor pre = at::zeros({depth, steps, batch, 2 * hidden}, input_gates.options());
  at::Tensor states = at::zeros({depth, steps, batch, hidden}, input_gates.options());
  at::Tensor h = h0.contiguous().clone();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    at::Tensor state = h.narrow(0, 0, b);
    for (int64_t l = 0; l < depth; ++l) {
      states[l][t].narrow(0, 0, b).copy_(state);
      at::Tensor pre_lt = pre[l][t].narrow(0, 0, b);
      // Recurrent sparse product with the bias fused in; the input
      // projection enters the first micro-layer only.
      at::Tensor recurrent = Kernels::sparse_linear(state, values[l], row_ptr[l], col_idx[l],
                                                    biases[l]);
      if (l == 0) {
        at::add_out(pre_lt, input_gates[t].narrow(0, 0, b), recurrent);
      } else {
        pre_lt.copy_(recurrent);
      }
      state = Kernels::rhn_cell(pre_lt, state);
    }
    h.narrow(0, 0, b).copy_(state);
    output[t].narrow(0, 0, b).copy_(state);
  }
  return {output, h, pre, states};
}

// -> (grad_input_gates (T, B, 2H), grad_h0 (B, H), grad_values (one per R_l),
//     grad_biases (L, 2H)).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>, at::Tensor> rhn_layer_backward(
    const at::Tensor& grad_output_, const at::Tensor& grad_h_n, const at::Tensor& pre_,
    const at::Tensor& states_, at::TensorList values, at::TensorList row_ptr,
    at::TensorList col_idx, at::TensorList col_ptr, at::TensorList row_idx,
    at::TensorList csr2csc, const at::Tensor& batch_sizes, bool reverse) {
  SK_CHECK_DIM(grad_output_, 3);
  SK_CHECK_SAME_DTYPE(grad_output_, grad_h_n);
  SK_CHECK_SAME_DTYPE(grad_output_, pre_);
  SK_CHECK_SAME_DTYPE(grad_output_, states_);
  const auto [depth, steps, batch, hidden] =
      check_rhn_args(grad_output_.size(0), grad_output_.size(1), grad_h_n, values, row_ptr,
                     col_idx, &col_ptr, &row_idx, &csr2csc, batch_sizes);
  TORCH_CHECK(grad_output_.size(2) == hidden, "grad_output must have shape (steps, batch, hidden)");
  TORCH_CHECK(pre_.sizes() == at::IntArrayRef({depth, steps, batch, 2 * hidden}) &&
                  states_.sizes() == at::IntArrayRef({depth, steps, batch, hidden}),
              "pre and states must have shapes (depth, steps, batch, 2*hidden) and "
              "(depth, steps, batch, hidden)");
  const at::Tensor grad_output = grad_output_.contiguous();
  const at::Tensor pre = pre_.contiguous(), states = states_.contiguous();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  // One tensor per micro-layer, so that grad_pre[0] is returned as the input
  // gates' gradient without a copy.
  std::vector<at::Tensor> grad_pre;
  for (int64_t l = 0; l < depth; ++l) grad_pre.push_back(at::zeros_like(pre[l]));
  at::Tensor dh = grad_h_n.contiguous().clone();
  const bool has_csc = !col_ptr.empty();
  const auto csc_part = [&](at::TensorList part, int64_t l) {
    return has_csc ? OptTensor(part[l]) : OptTensor();
  };
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t b = bs[t];
    if (b == 0) continue;
    at::Tensor dh_active = dh.narrow(0, 0, b);
    dh_active.add_(grad_output[t].narrow(0, 0, b));
    at::Tensor d_state = dh_active;
    for (int64_t l = depth - 1; l >= 0; --l) {
      auto [d_pre, d_carry] = Kernels::rhn_cell_backward(d_state, pre[l][t].narrow(0, 0, b),
                                                         states[l][t].narrow(0, 0, b));
      grad_pre[l][t].narrow(0, 0, b).copy_(d_pre);
      // s_l fed micro-layer l twice: through the carry and through R_l s_l.
      d_state = d_carry.add_(Kernels::sparse_linear_input_grad(
          d_pre, values[l], row_ptr[l], col_idx[l], hidden, csc_part(col_ptr, l),
          csc_part(row_idx, l), csc_part(csr2csc, l)));
    }
    dh_active.copy_(d_state);
  }
  std::vector<at::Tensor> grad_values;
  at::Tensor grad_biases = at::empty({depth, 2 * hidden}, pre.options());
  for (int64_t l = 0; l < depth; ++l) {
    const at::Tensor rows_grad = grad_pre[l].reshape({steps * batch, 2 * hidden});
    grad_values.push_back(Kernels::sparse_linear_value_grad(
        rows_grad, states[l].reshape({steps * batch, hidden}), row_ptr[l], col_idx[l]));
    grad_biases[l].copy_(rows_grad.sum(0));
  }
  return {grad_pre[0], dh, grad_values, grad_biases};
}

}  // namespace sparse_kernels::layer
