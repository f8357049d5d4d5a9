// CPU fused GRU cell (pointwise part) and its backward, used by the GRU
// layer loop (csrc/cpu/gru_layer_cpu.cpp).
#include <ATen/Parallel.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/rnn_math.h"

namespace sparse_kernels::cpu {

namespace {
void check_gru_cell(const at::Tensor& ig, const at::Tensor& hg, const at::Tensor& h_prev) {
  SK_CHECK_DIM(ig, 2);
  SK_CHECK_DIM(h_prev, 2);
  SK_CHECK_SAME_DTYPE(ig, hg);
  SK_CHECK_SAME_DTYPE(ig, h_prev);
  TORCH_CHECK(ig.sizes() == hg.sizes() && ig.size(0) == h_prev.size(0) &&
                  ig.size(1) == 3 * h_prev.size(1),
              "GRU cell: ig and hg must be (N, 3*H) for h_prev (N, H)");
}
}  // namespace

at::Tensor gru_cell(const at::Tensor& ig_, const at::Tensor& hg_, const at::Tensor& h_prev_) {
  check_gru_cell(ig_, hg_, h_prev_);
  const at::Tensor ig = ig_.contiguous(), hg = hg_.contiguous(), h_prev = h_prev_.contiguous();
  const int64_t n_rows = h_prev.size(0), hidden = h_prev.size(1);
  at::Tensor h = at::empty_like(h_prev);
  AT_DISPATCH_FLOATING_TYPES(ig.scalar_type(), "gru_cell_cpu", [&] {
    const scalar_t *i = ig.data_ptr<scalar_t>(), *g = hg.data_ptr<scalar_t>();
    const scalar_t* hp = h_prev.data_ptr<scalar_t>();
    scalar_t* out = h.data_ptr<scalar_t>();
    at::parallel_for(0, n_rows * hidden, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t n = e / hidden, j = e % hidden;
        const scalar_t *i_n = i + n * 3 * hidden, *g_n = g + n * 3 * hidden;
        out[e] = gru_unit_forward(i_n[j], i_n[hidden + j], i_n[2 * hidden + j], g_n[j],
                                  g_n[hidden + j], g_n[2 * hidden + j], hp[e]);
      }
    });
  });
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cell_backward(const at::Tensor& grad_h_,
                                                                 const at::Tensor& ig_,
                                                                 const at::Tensor& hg_,
                                                                 const at::Tensor& h_prev_) {
  check_gru_cell(ig_, hg_, h_prev_);
  TORCH_CHECK(grad_h_.sizes() == h_prev_.sizes(), "GRU cell: grad_h must match h_prev");
  const at::Tensor grad_h = grad_h_.contiguous(), ig = ig_.contiguous(), hg = hg_.contiguous();
  const at::Tensor h_prev = h_prev_.contiguous();
  const int64_t n_rows = h_prev.size(0), hidden = h_prev.size(1);
  at::Tensor d_ig = at::empty_like(ig), d_hg = at::empty_like(hg), dh_prev = at::empty_like(h_prev);
  AT_DISPATCH_FLOATING_TYPES(ig.scalar_type(), "gru_cell_backward_cpu", [&] {
    const scalar_t *i = ig.data_ptr<scalar_t>(), *g = hg.data_ptr<scalar_t>();
    const scalar_t *hp = h_prev.data_ptr<scalar_t>(), *dh = grad_h.data_ptr<scalar_t>();
    scalar_t *di = d_ig.data_ptr<scalar_t>(), *dg = d_hg.data_ptr<scalar_t>();
    scalar_t* dhp = dh_prev.data_ptr<scalar_t>();
    at::parallel_for(0, n_rows * hidden, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const int64_t n = e / hidden, j = e % hidden, o = n * 3 * hidden;
        gru_unit_backward(i[o + j], i[o + hidden + j], i[o + 2 * hidden + j], g[o + j],
                          g[o + hidden + j], g[o + 2 * hidden + j], hp[e], dh[e], di + o + j,
                          di + o + hidden + j, di + o + 2 * hidden + j, dg + o + j,
                          dg + o + hidden + j, dg + o + 2 * hidden + j, dhp + e);
      }
    });
  });
  return {d_ig, d_hg, dh_prev};
}

}  // namespace sparse_kernels::cpu
