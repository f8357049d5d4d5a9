// The fused CPU LSTM layer backward (sparse_kernels/cpu_lstm_fused.h), the
// mirror of the fused forward: one parallel region over the whole BPTT.
//
// Step k of the backward (latest forward step first) has two parts:
//   A(k): per unit u, the cell backward of its active lanes, from dh(u) plus
//         the output's gradient: the four gate gradients (into grad_gates and
//         a tile buffer dg_k) and dc(u) in place;
//   B(k): dh for the step before, dh(c) = sum over column c of W_hh of
//         W[r, c] dg_k[r], a gathered product over the column (a transposed
//         index built once per call: W^T's rows are W's columns).
// B(k) for column c needs dg_k of every row, i.e. all of A(k); A(k+1) for
// unit u needs only dh(u), i.e. B(k) of column u. So a chunk of units runs
// B(k) for its columns, then A(k+1) for the same units, and one counter per
// step (cpu_step_schedule.h) separates the phases: A(0); B(0)+A(1); ...;
// B(S-1). dh and dg are double-buffered (one phase reads one buffer while
// another chunk writes the other). The value gradient is one SDDMM over all
// steps afterwards, as in the shared loop.
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "sparse_kernels/cpu_csr_transpose.h"
#include "sparse_kernels/cpu_fast_math.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_lstm_fused.h"
#include "sparse_kernels/cpu_simd.h"
#include "sparse_kernels/cpu_step_schedule.h"
#include "sparse_kernels/cpu_tiled.h"
#include "sparse_kernels/lstm_math.h"

namespace sparse_kernels::cpu {
namespace {

// The cell backward over n lanes: g, dg = [i | f | g | o] `stride` apart.
SK_CPU_CLONES void cell_backward_lanes_f32(const float* g, int64_t stride, const float* cp,
                                           const float* cc, const float* dh, const float* dc, float* dg,
                                           float* dcp, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j)
    lstm_unit_backward<float, FastActivations>(g[j], g[stride + j], g[2 * stride + j], g[3 * stride + j],
                                               cp[j], cc[j], dh[j], dc[j], dg + j, dg + stride + j,
                                               dg + 2 * stride + j, dg + 3 * stride + j, dcp + j);
}

void cell_backward_lanes(const float* g, int64_t stride, const float* cp, const float* cc, const float* dh,
                         const float* dc, float* dg, float* dcp, int64_t n) {
  cell_backward_lanes_f32(g, stride, cp, cc, dh, dc, dg, dcp, n);
}

void cell_backward_lanes(const double* g, int64_t stride, const double* cp, const double* cc,
                         const double* dh, const double* dc, double* dg, double* dcp, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    lstm_unit_backward<double>(g[j], g[stride + j], g[2 * stride + j], g[3 * stride + j], cp[j], cc[j],
                               dh[j], dc[j], dg + j, dg + stride + j, dg + 2 * stride + j,
                               dg + 3 * stride + j, dcp + j);
}

template <typename T>
struct FusedLstmBackward {
  const T* grad_output;  // (T, B, H)
  const T* gates;        // (T, B, 4H) pre-activations
  const T* cells;        // (T, B, H)
  const T* c0;           // (B, H)
  const int64_t* bs;
  const int64_t* order;  // the backward's steps: order[k] = t
  int64_t steps, batch, hidden, width;
  bool reverse;
  const Transposed<T>* w_t;
  T* grad_gates;  // (T, B, 4H), out
  T* dh[2];       // tile layout (width lanes x H), or plain at batch 1
  T* dg[2];       // tile layout (width lanes x 4H)
  T* dc;          // tile layout, in place

  int64_t lanes_at(int64_t j0) const { return width == 1 ? 1 : tile_width(j0, width); }

  // The cell state lane j started step t from (the forward's start_state).
  T c_prev(int64_t t, int64_t j, int64_t u) const {
    const int64_t p = reverse ? t + 1 : t - 1;
    if (p >= 0 && p < steps && j < bs[p]) return cells[(p * batch + j) * hidden + u];
    return c0[j * hidden + u];
  }

  // A(k) for units [u0, u1).
  void cell_part(int64_t k, int64_t u0, int64_t u1) const {
    const int64_t t = order[k], b = bs[t];
    const T* dh_k = dh[k % 2];
    T* dg_k = dg[k % 2];
    for (int64_t j0 = 0; j0 < width; j0 += lanes_at(j0)) {
      const int64_t w = lanes_at(j0);
      const int64_t active = std::max<int64_t>(0, std::min(w, b - j0));
      T* dg_tile = dg_k + j0 * 4 * hidden;
      if (active == 0) {
        for (int g = 0; g < 4; ++g)
          std::memset(dg_tile + (g * hidden + u0) * w, 0, (u1 - u0) * w * sizeof(T));
        continue;
      }
      const T* dh_tile = dh_k + j0 * hidden;
      T* dc_tile = dc + j0 * hidden;
      T g4[4 * 16], cp[16], cc[16], dh_total[16], dg4[4 * 16], dcp[16];
      for (int64_t u = u0; u < u1; ++u) {
        for (int64_t j = 0; j < active; ++j) {
          const int64_t row = t * batch + j0 + j;
          for (int g = 0; g < 4; ++g) g4[g * 16 + j] = gates[row * 4 * hidden + g * hidden + u];
          cp[j] = c_prev(t, j0 + j, u);
          cc[j] = cells[row * hidden + u];
          dh_total[j] = dh_tile[u * w + j] + grad_output[row * hidden + u];
        }
        cell_backward_lanes(g4, 16, cp, cc, dh_total, dc_tile + u * w, dg4, dcp, active);
        for (int g = 0; g < 4; ++g) {
          T* dst = dg_tile + (g * hidden + u) * w;
          for (int64_t j = 0; j < active; ++j) dst[j] = dg4[g * 16 + j];
          for (int64_t j = active; j < w; ++j) dst[j] = T(0);
        }
        for (int64_t j = 0; j < active; ++j) {
          const int64_t row = t * batch + j0 + j;
          for (int g = 0; g < 4; ++g) grad_gates[row * 4 * hidden + g * hidden + u] = dg4[g * 16 + j];
          dc_tile[u * w + j] = dcp[j];
        }
      }
    }
  }

  // B(k) for columns [u0, u1): dh_{k+1} from dg_k; lanes inactive at step k keep dh_k.
  void product_part(int64_t k, int64_t u0, int64_t u1) const {
    const int64_t b = bs[order[k]];
    const T* dh_k = dh[k % 2];
    T* dh_next = dh[(k + 1) % 2];
    const T* dg_k = dg[k % 2];
    const int32_t* ptr = w_t->ptr.data();
    const int32_t* idx = w_t->idx.data();
    const T* v = w_t->values.data();
    if (width == 1) {
      for (int64_t u = u0; u < u1; ++u) gathered_row_list(ptr, idx, v, &u, 1, dg_k, dh_next + u, 1);
      return;
    }
    T sums[16];
    for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
      const int64_t w = tile_width(j0, width);
      const int64_t active = std::max<int64_t>(0, std::min(w, b - j0));
      const T* dh_tile = dh_k + j0 * hidden;
      T* out_tile = dh_next + j0 * hidden;
      if (active == 0) {
        std::memcpy(out_tile + u0 * w, dh_tile + u0 * w, (u1 - u0) * w * sizeof(T));
        continue;
      }
      const T* dg_tile = dg_k + j0 * 4 * hidden;
      for (int64_t u = u0; u < u1; ++u) {
        tiled_row_list(ptr, idx, v, &u, 1, dg_tile, w, sums, 16);
        for (int64_t j = 0; j < active; ++j) out_tile[u * w + j] = sums[j];
        for (int64_t j = active; j < w; ++j) out_tile[u * w + j] = dh_tile[u * w + j];
      }
    }
  }
};

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_fused_backward(
    const at::Tensor& grad_output_, const at::Tensor& grad_h_n_, const at::Tensor& grad_c_n_,
    const at::Tensor& gates_, const at::Tensor& output_, const at::Tensor& cells_, const at::Tensor& h0_,
    const at::Tensor& c0_, const at::Tensor& values_, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& batch_sizes, bool reverse) {
  const at::Tensor grad_output = grad_output_.contiguous(), gates = gates_.contiguous();
  const at::Tensor output = output_.contiguous(), cells = cells_.contiguous();
  const at::Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous(), values = values_.contiguous();
  const at::Tensor grad_h_n = grad_h_n_.contiguous(), grad_c_n = grad_c_n_.contiguous();
  const int64_t steps = gates.size(0), batch = gates.size(1), hidden = c0.size(1);
  const auto options = gates.options();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  std::vector<int64_t> order;  // the backward's order: the forward's, reversed; active steps only
  bool full = true;
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    if (bs[t] > 0) order.push_back(t);
    full = full && bs[t] == batch;
  }
  const int64_t backward_steps = static_cast<int64_t>(order.size());
  at::Tensor grad_gates = full ? at::empty_like(gates) : at::zeros_like(gates);
  const int32_t* ptr = row_ptr.data_ptr<int32_t>();
  const Transposed<T> w_t = transpose_csr(ptr, col_idx.data_ptr<int32_t>(), values.data_ptr<T>(),
                                          4 * hidden, hidden);
  const int64_t width = state_width(batch);
  at::Tensor dh_state = at::empty({2, width * hidden}, options);
  at::Tensor dg_state = at::empty({2, width * 4 * hidden}, options);
  at::Tensor dc_state = at::empty({width * hidden}, options);
  load_state(grad_h_n.data_ptr<T>(), batch, hidden, dh_state.data_ptr<T>());
  load_state(grad_c_n.data_ptr<T>(), batch, hidden, dc_state.data_ptr<T>());
  T* dh_base = dh_state.data_ptr<T>();
  T* dg_base = dg_state.data_ptr<T>();
  FusedLstmBackward<T> loop{grad_output.data_ptr<T>(), gates.data_ptr<T>(), cells.data_ptr<T>(),
                            c0.data_ptr<T>(), bs, order.data(), steps, batch, hidden, width, reverse, &w_t,
                            grad_gates.data_ptr<T>(), {dh_base, dh_base + width * hidden},
                            {dg_base, dg_base + width * 4 * hidden}, dc_state.data_ptr<T>()};
  // Chunks of units, balanced on the product's work per column.
  std::vector<int64_t> prefix(hidden + 1, 0);
  for (int64_t u = 0; u < hidden; ++u) prefix[u + 1] = prefix[u] + (w_t.ptr[u + 1] - w_t.ptr[u]) + 4;
  const std::vector<int64_t> bounds =
      balanced_bounds(prefix, step_chunk_count(prefix[hidden] * width, hidden));
  // Phases 0..S: phase p runs B(p - 1) (p >= 1), then A(p) (p < S).
  run_step_schedule(backward_steps + 1, static_cast<int64_t>(bounds.size()) - 1,
                    [&](int64_t phase, int64_t chunk) {
                      const int64_t u0 = bounds[chunk], u1 = bounds[chunk + 1];
                      if (phase >= 1) loop.product_part(phase - 1, u0, u1);
                      if (phase < backward_steps) loop.cell_part(phase, u0, u1);
                    });
  // The gradients reaching h0 and c0.
  const T* dh_last = loop.dh[backward_steps % 2];
  at::Tensor grad_h0 = at::empty({batch, hidden}, options), grad_c0 = at::empty({batch, hidden}, options);
  store_state(dh_last, batch, hidden, grad_h0.data_ptr<T>());
  store_state(static_cast<const T*>(loop.dc), batch, hidden, grad_c0.data_ptr<T>());
  // The state each step started from (zero where a row was inactive, as
  // its gate gradients are), then one SDDMM for W_hh's values.
  at::Tensor h_prev_all = at::zeros_like(output);
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t b = bs[t];
    if (b == 0) continue;
    const int64_t p = reverse ? t + 1 : t - 1;
    const int64_t carried = (p >= 0 && p < steps) ? std::min(b, bs[p]) : 0;
    T* dst = h_prev_all.data_ptr<T>() + t * batch * hidden;
    if (carried > 0) std::memcpy(dst, output.data_ptr<T>() + p * batch * hidden, carried * hidden * sizeof(T));
    std::memcpy(dst + carried * hidden, h0.data_ptr<T>() + carried * hidden, (b - carried) * hidden * sizeof(T));
  }
  at::Tensor grad_values = sparse_linear_value_grad(grad_gates.view({steps * batch, 4 * hidden}),
                                                    h_prev_all.view({steps * batch, hidden}), row_ptr, col_idx);
  return {grad_gates, grad_h0, grad_c0, grad_values, at::empty({0}, values.options())};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& gates, const at::Tensor& output, const at::Tensor& cells, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& values, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& batch_sizes, bool reverse) {
  if (gates.scalar_type() == at::kFloat) {
    return run_fused_backward<float>(grad_output, grad_h_n, grad_c_n, gates, output, cells, h0, c0, values,
                                     row_ptr, col_idx, batch_sizes, reverse);
  }
  return run_fused_backward<double>(grad_output, grad_h_n, grad_c_n, gates, output, cells, h0, c0, values,
                                    row_ptr, col_idx, batch_sizes, reverse);
}

}  // namespace sparse_kernels::cpu
