// CPU magnitude prune: in each contiguous slot group (a whole tensor, an LSTM
// gate's rows, one row), drop the k stored values of smallest |w|, or SET's
// signed variant. Groups run in parallel; within a group a partial selection
// (nth_element) costs O(n), no full sort.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/topology.h"

namespace sparse_kernels::cpu {
namespace {

// Mark the `count` slots of [first, last) that come first under `before` as
// dropped (keep = false). `before` must be a strict total order (ties broken by
// slot), so the result does not depend on the selection algorithm.
template <typename Before>
void drop_first(std::vector<int64_t>& slots, int64_t count, bool* keep, Before before) {
  if (count <= 0) return;
  if (count < static_cast<int64_t>(slots.size()))
    std::nth_element(slots.begin(), slots.begin() + count, slots.end(), before);
  for (int64_t i = 0; i < count; ++i) keep[slots[i]] = false;
}

// The strict total order "closer to zero first, then the lower slot".
template <typename scalar_t>
struct CloserToZero {
  const scalar_t* v;
  bool operator()(int64_t a, int64_t b) const {
    const scalar_t ma = std::abs(v[a]), mb = std::abs(v[b]);
    return ma < mb || (ma == mb && a < b);
  }
};

}  // namespace

at::Tensor magnitude_prune(const at::Tensor& values_, const at::Tensor& group_ptr,
                           const at::Tensor& drop_counts) {
  SK_CHECK_FLOAT(values_);
  SK_CHECK_DIM(values_, 1);
  const int64_t nnz = values_.numel();
  topology::check_group_ptr(group_ptr, nnz, "group_ptr");
  const int64_t groups = group_ptr.numel() - 1;
  topology::check_counts(drop_counts, groups, "drop_counts");
  const int64_t* gp = group_ptr.data_ptr<int64_t>();
  const int64_t* drop = drop_counts.data_ptr<int64_t>();
  for (int64_t g = 0; g < groups; ++g)
    TORCH_CHECK(drop[g] >= 0 && drop[g] <= gp[g + 1] - gp[g], "drop_counts[", g, "] = ", drop[g],
                " must be in [0, ", gp[g + 1] - gp[g], "] (the size of its group)");
  const at::Tensor values = values_.contiguous();
  at::Tensor keep = at::ones({nnz}, values.options().dtype(at::kBool));
  bool* kp = keep.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "magnitude_prune_cpu", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> slots;
      for (int64_t g = begin; g < end; ++g) {
        slots.resize(gp[g + 1] - gp[g]);
        std::iota(slots.begin(), slots.end(), gp[g]);
        drop_first(slots, drop[g], kp, CloserToZero<scalar_t>{v});
      }
    });
  });
  return keep;
}

at::Tensor signed_magnitude_prune(const at::Tensor& values_, const at::Tensor& group_ptr,
                                  double fraction) {
  SK_CHECK_FLOAT(values_);
  SK_CHECK_DIM(values_, 1);
  TORCH_CHECK(fraction >= 0.0 && fraction <= 1.0, "fraction must be in [0, 1], got ", fraction);
  const int64_t nnz = values_.numel();
  topology::check_group_ptr(group_ptr, nnz, "group_ptr");
  const int64_t groups = group_ptr.numel() - 1;
  const int64_t* gp = group_ptr.data_ptr<int64_t>();
  const at::Tensor values = values_.contiguous();
  at::Tensor keep = at::ones({nnz}, values.options().dtype(at::kBool));
  bool* kp = keep.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "signed_magnitude_prune_cpu", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> positive, negative;
      for (int64_t g = begin; g < end; ++g) {
        positive.clear();
        negative.clear();
        for (int64_t s = gp[g]; s < gp[g + 1]; ++s) (v[s] >= 0 ? positive : negative).push_back(s);
        const auto share = [fraction](size_t n) {
          return static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
        };
        // Both sides: the entries closest to zero go first.
        const CloserToZero<scalar_t> closer_to_zero{v};
        drop_first(positive, share(positive.size()), kp, closer_to_zero);
        drop_first(negative, share(negative.size()), kp, closer_to_zero);
      }
    });
  });
  return keep;
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("magnitude_prune", &sparse_kernels::cpu::magnitude_prune);
  m.impl("signed_magnitude_prune", &sparse_kernels::cpu::signed_magnitude_prune);
}
