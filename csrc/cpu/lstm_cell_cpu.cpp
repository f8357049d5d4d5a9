// CPU fused LSTM cell (pointwise part) and its backward.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_fast_math.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/cpu_simd.h"
#include "sparse_kernels/lstm_math.h"

namespace sparse_kernels::cpu {

namespace {
// The cell over the flat (row, unit) elements [begin, end) of an (N, H)
// state: each row's run of units is one SIMD loop (the four gate slices of
// the row are contiguous runs too).
template <typename T, typename Act>
inline __attribute__((always_inline)) void cell_forward_span(const T* g, const T* cp, T* h, T* c,
                                                             int64_t hidden, int64_t begin, int64_t end) {
  for (int64_t n = begin / hidden; n * hidden < end; ++n) {
    // (No std::max/min: they would not inline into the AVX2 clone.)
    const int64_t j0 = begin > n * hidden ? begin - n * hidden : 0;
    const int64_t j1 = end - n * hidden < hidden ? end - n * hidden : hidden;
    const T* g_n = g + n * 4 * hidden;
    const int64_t row = n * hidden;
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j)
      lstm_unit_forward<T, Act>(g_n[j], g_n[hidden + j], g_n[2 * hidden + j], g_n[3 * hidden + j],
                                cp[row + j], h + row + j, c + row + j);
  }
}

template <typename T, typename Act>
inline __attribute__((always_inline)) void cell_backward_span(const T* g, const T* cp, const T* cc,
                                                              const T* dh, const T* dc, T* dg, T* dcp,
                                                              int64_t hidden, int64_t begin, int64_t end) {
  for (int64_t n = begin / hidden; n * hidden < end; ++n) {
    const int64_t j0 = begin > n * hidden ? begin - n * hidden : 0;
    const int64_t j1 = end - n * hidden < hidden ? end - n * hidden : hidden;
    const T* g_n = g + n * 4 * hidden;
    T* dg_n = dg + n * 4 * hidden;
    const int64_t row = n * hidden;
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j)
      lstm_unit_backward<T, Act>(g_n[j], g_n[hidden + j], g_n[2 * hidden + j], g_n[3 * hidden + j],
                                 cp[row + j], cc[row + j], dh[row + j], dc[row + j], dg_n + j,
                                 dg_n + hidden + j, dg_n + 2 * hidden + j, dg_n + 3 * hidden + j,
                                 dcp + row + j);
  }
}

// float: the vectorisable activations (cpu_fast_math.h), SIMD width chosen
// at run time; double: libm, as the float64 gradchecks expect.
SK_CPU_CLONES void cell_forward_span_f32(const float* g, const float* cp, float* h, float* c, int64_t hidden,
                                         int64_t begin, int64_t end) {
  cell_forward_span<float, FastActivations>(g, cp, h, c, hidden, begin, end);
}

SK_CPU_CLONES void cell_backward_span_f32(const float* g, const float* cp, const float* cc, const float* dh,
                                          const float* dc, float* dg, float* dcp, int64_t hidden,
                                          int64_t begin, int64_t end) {
  cell_backward_span<float, FastActivations>(g, cp, cc, dh, dc, dg, dcp, hidden, begin, end);
}

template <typename T>
void cell_forward_span_any(const T* g, const T* cp, T* h, T* c, int64_t hidden, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    cell_forward_span_f32(g, cp, h, c, hidden, begin, end);
  } else {
    cell_forward_span<T, LibmActivations>(g, cp, h, c, hidden, begin, end);
  }
}

template <typename T>
void cell_backward_span_any(const T* g, const T* cp, const T* cc, const T* dh, const T* dc, T* dg, T* dcp,
                            int64_t hidden, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    cell_backward_span_f32(g, cp, cc, dh, dc, dg, dcp, hidden, begin, end);
  } else {
    cell_backward_span<T, LibmActivations>(g, cp, cc, dh, dc, dg, dcp, hidden, begin, end);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lstm_cell(const at::Tensor& gates_,
                                             const at::Tensor& c_prev_) {
  check_lstm_cell_args(gates_, c_prev_);
  SK_CHECK_FLOAT(gates_);
  const at::Tensor gates = gates_.contiguous(), c_prev = c_prev_.contiguous();
  const int64_t n_rows = c_prev.size(0), hidden = c_prev.size(1);
  at::Tensor h = at::empty_like(c_prev), c = at::empty_like(c_prev);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_cell_cpu", [&] {
    const scalar_t* g = gates.data_ptr<scalar_t>();
    const scalar_t* cp = c_prev.data_ptr<scalar_t>();
    scalar_t* h_out = h.data_ptr<scalar_t>();
    scalar_t* c_out = c.data_ptr<scalar_t>();
    // Grain: 1024 units per task (two threads already at H = 1500, batch 1).
    at::parallel_for(0, n_rows * hidden, 1024, [&](int64_t begin, int64_t end) {
      cell_forward_span_any(g, cp, h_out, c_out, hidden, begin, end);
    });
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h_, const at::Tensor& grad_c_,
    const at::Tensor& gates_, const at::Tensor& c_prev_, const at::Tensor& c_) {
  check_lstm_cell_backward_args(grad_h_, grad_c_, gates_, c_prev_, c_);
  SK_CHECK_FLOAT(gates_);
  const at::Tensor grad_h = grad_h_.contiguous(), grad_c = grad_c_.contiguous();
  const at::Tensor gates = gates_.contiguous(), c_prev = c_prev_.contiguous();
  const at::Tensor c = c_.contiguous();
  const int64_t n_rows = c_prev.size(0), hidden = c_prev.size(1);
  at::Tensor grad_gates = at::empty_like(gates);
  at::Tensor grad_c_prev = at::empty_like(c_prev);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_cell_backward_cpu", [&] {
    const scalar_t* g = gates.data_ptr<scalar_t>();
    const scalar_t* cp = c_prev.data_ptr<scalar_t>();
    const scalar_t* cc = c.data_ptr<scalar_t>();
    const scalar_t* dh = grad_h.data_ptr<scalar_t>();
    const scalar_t* dc = grad_c.data_ptr<scalar_t>();
    scalar_t* dg = grad_gates.data_ptr<scalar_t>();
    scalar_t* dcp = grad_c_prev.data_ptr<scalar_t>();
    at::parallel_for(0, n_rows * hidden, 1024, [&](int64_t begin, int64_t end) {
      cell_backward_span_any(g, cp, cc, dh, dc, dg, dcp, hidden, begin, end);
    });
  });
  return {grad_gates, grad_c_prev};
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("lstm_cell", &sparse_kernels::cpu::lstm_cell);
  m.impl("lstm_cell_backward", &sparse_kernels::cpu::lstm_cell_backward);
}
