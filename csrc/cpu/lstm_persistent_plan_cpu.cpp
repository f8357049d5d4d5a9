// lstm_persistent_plan: the persistent CUDA LSTM forward's split of W_hh over
// the blocks (csrc/cuda/lstm_persistent.h, torch-free host code), made from a
// host copy of W_hh's row offsets; the plan is always a CPU tensor. A
// CSRWeight on CUDA makes it once per topology from row_ptr.cpu() and keeps
// the result (sparse_kernels/storage/csr_weight.py), so that no forward copies to the
// host. Registered for CPU and CUDA row_ptr alike (host work either way; a
// CUDA row_ptr is copied to the host first), here rather than in
// csrc/cuda/ so that CPU-only builds have it too.
#include <torch/library.h>

#include "../cuda/lstm_persistent.h"
#include "sparse_kernels/checks.h"

namespace {

at::Tensor lstm_persistent_plan_cpu(const at::Tensor& row_ptr, int64_t max_blocks, int64_t value_bytes) {
  SK_CHECK_INDEX(row_ptr);
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.numel() >= 1 && (row_ptr.numel() - 1) % 4 == 0,
              "lstm_persistent_plan: hh_row_ptr must be 1-D with 4 * hidden + 1 entries, got ",
              row_ptr.numel());
  TORCH_CHECK(max_blocks >= 1 && max_blocks <= (1 << 20), "lstm_persistent_plan: max_blocks must be in [1, 2^20], got ",
              max_blocks);
  TORCH_CHECK(value_bytes == 2 || value_bytes == 4 || value_bytes == 8,
              "lstm_persistent_plan: value_bytes must be 2, 4 or 8, got ", value_bytes);
  const at::Tensor rp = row_ptr.to(at::kCPU).contiguous();
  const int64_t hidden = (rp.numel() - 1) / 4;
  const sparse_kernels::cuda::PersistentLstmPlan plan = sparse_kernels::cuda::plan_persistent_lstm(
      rp.data_ptr<int32_t>(), hidden, static_cast<int>(max_blocks), static_cast<size_t>(value_bytes));
  at::Tensor out = at::empty({static_cast<int64_t>(plan.unit_start.size()) + 1}, at::dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  o[0] = static_cast<int64_t>(plan.smem_bytes);
  for (size_t k = 0; k < plan.unit_start.size(); ++k) o[k + 1] = plan.unit_start[k];
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("lstm_persistent_plan", &lstm_persistent_plan_cpu);
}

TORCH_LIBRARY_IMPL(sparse_kernels, CUDA, m) {
  m.impl("lstm_persistent_plan", &lstm_persistent_plan_cpu);
}
