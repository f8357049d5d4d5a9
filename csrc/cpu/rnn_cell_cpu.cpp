// CPU Elman RNN cell (tanh or relu) and its backward, used by the RNN layer
// loop (csrc/cpu/rnn_layer_cpu.cpp).
#include <ATen/Parallel.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/rnn_math.h"

namespace sparse_kernels::cpu {

at::Tensor rnn_cell(const at::Tensor& pre_, bool relu) {
  SK_CHECK_FLOAT(pre_);
  const at::Tensor pre = pre_.contiguous();
  at::Tensor h = at::empty_like(pre);
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rnn_cell_cpu", [&] {
    const scalar_t* p = pre.data_ptr<scalar_t>();
    scalar_t* out = h.data_ptr<scalar_t>();
    at::parallel_for(0, pre.numel(), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) out[e] = rnn_unit_forward(p[e], relu);
    });
  });
  return h;
}

at::Tensor rnn_cell_backward(const at::Tensor& grad_h_, const at::Tensor& h_, bool relu) {
  TORCH_CHECK(grad_h_.sizes() == h_.sizes(), "RNN cell: grad_h must match h");
  SK_CHECK_SAME_DTYPE(grad_h_, h_);
  const at::Tensor grad_h = grad_h_.contiguous(), h = h_.contiguous();
  at::Tensor grad_pre = at::empty_like(h);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "rnn_cell_backward_cpu", [&] {
    const scalar_t *dh = grad_h.data_ptr<scalar_t>(), *hv = h.data_ptr<scalar_t>();
    scalar_t* out = grad_pre.data_ptr<scalar_t>();
    at::parallel_for(0, h.numel(), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) out[e] = rnn_unit_backward(hv[e], dh[e], relu);
    });
  });
  return grad_pre;
}

}  // namespace sparse_kernels::cpu
