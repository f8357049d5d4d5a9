// The topology ops of dynamic sparse training (magnitude prune, SET prune,
// random regrow, gradient regrow, rebuild) written once on ATen tensor ops, so
// they run on the device that holds the pattern: registered for CUDA in
// csrc/cuda/topology_cuda.cpp, and callable on CPU tensors from Python
// (sparse_kernels._C._generic_*, csrc/python_module.cpp) so the tests compare
// them with the CPU ops (csrc/cpu/*_cpu.cpp) without a GPU.
//
// Semantics are the CPU ops' (cpu_kernels.h), bit for bit:
// - magnitude_prune / signed_magnitude_prune: a stable sort by |value| (ties:
//   the lower slot first) then a stable sort by slot group (and sign side), so
//   each group's slots come in the CPU's strict order; the first drop[g] of each
//   go. round(fraction * n) is llround's (half away from zero).
// - rebuild_csr: every kept slot's and grown position's new slot computed
//   directly (its row's start + the kept ones before it + the grown ones with
//   smaller column, by searchsorted on row-major keys), then scattered.
// - gradient_regrow: the CPU op's own sequence of ATen calls (block products,
//   masking, running top-k), with the occupied positions masked by a scatter
//   and the row pointer by searchsorted instead of bincount (no sync).
// - random_regrow: its contract only (exact counts, uniform over the free
//   positions, no duplicates, sorted): the draws come from counter-based
//   SplitMix64 streams (regrow_candidates.h), computed by a CUDA kernel on the
//   device and by a CPU loop here, so a device regrow equals the generic one on
//   the CPU, but not the CPU op (a different use of the stream).
//
// Nothing is copied to the host but scalars: each op reads a few (the
// argument checks' verdict, output sizes; gradient_regrow one per row block
// once k candidates are held, as the CPU op's nonzero does). The argument
// checks: on CPU tensors the CPU ops' own host checks (same messages); on the
// device (or with device_checks) the same conditions as tensor reductions read
// in one sync, and only when one fails are the arguments copied to the host to
// raise the CPU ops' message.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/regrow_candidates.h"
#include "sparse_kernels/topology.h"

namespace sparse_kernels::topology::generic {

// (group, index, free, want, seed) -> (rank, priority): the regrow's candidate
// draws (regrow_candidates.h), int64 tensors on the device of `group`.
using CandidateFn = std::function<std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, uint64_t)>;

// The CPU loop of the candidate draws (the CUDA kernel computes the same).
inline std::tuple<at::Tensor, at::Tensor> regrow_candidates_cpu(const at::Tensor& group,
                                                                const at::Tensor& index,
                                                                const at::Tensor& free,
                                                                const at::Tensor& want,
                                                                uint64_t seed) {
  for (const at::Tensor* t : {&group, &index, &free, &want})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kLong && t->dim() == 1 &&
                    t->is_contiguous(),
                "regrow_candidates_cpu: contiguous 1-D int64 CPU tensors expected");
  TORCH_CHECK(index.numel() == group.numel() && want.numel() == free.numel(),
              "regrow_candidates_cpu: mismatched lengths");
  const int64_t n = group.numel(), groups = free.numel();
  at::Tensor rank = at::empty({n}, group.options()), priority = at::empty({n}, group.options());
  const int64_t *gp = group.data_ptr<int64_t>(), *ip = index.data_ptr<int64_t>();
  const int64_t *fp = free.data_ptr<int64_t>(), *wp = want.data_ptr<int64_t>();
  int64_t *rp = rank.data_ptr<int64_t>(), *pp = priority.data_ptr<int64_t>();
  at::parallel_for(0, n, int64_t{1} << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = gp[i];
      TORCH_CHECK(g >= 0 && g < groups, "regrow_candidates_cpu: group out of range");
      regrow_candidate(seed, g, ip[i], fp[g], wp[g], &rp[i], &pp[i]);
    }
  });
  return {rank, priority};
}

namespace detail {

inline at::TensorOptions long_on(const at::Tensor& t) { return t.options().dtype(at::kLong); }

// [0, cumsum(t)...] in int64 (length n + 1).
inline at::Tensor exclusive_cumsum(const at::Tensor& t) {
  return at::cat({at::zeros({1}, long_on(t)), t.cumsum(0, at::kLong)});
}

inline std::tuple<at::Tensor, at::Tensor> stable_sort(const at::Tensor& t) {
  return t.sort(std::optional<bool>(true), 0, false);
}

// Scalars read from the device in one copy.
inline std::vector<int64_t> fetch(std::initializer_list<at::Tensor> scalars) {
  std::vector<at::Tensor> parts;
  for (const at::Tensor& s : scalars) parts.push_back(s.to(at::kLong).reshape({}));
  const at::Tensor host = at::stack(parts).cpu();
  const int64_t* p = host.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + host.numel());
}

inline at::Tensor all_of(const at::Tensor& t) {
  return t.numel() ? t.all() : at::ones({}, t.options().dtype(at::kBool));
}

// The metadata part of topology::check_group_ptr (same message).
inline void check_group_ptr_meta(const at::Tensor& ptr, const char* name) {
  TORCH_CHECK(ptr.scalar_type() == at::kLong && ptr.dim() == 1 && ptr.is_contiguous() &&
                  ptr.numel() >= 1,
              name, " must be a non-empty contiguous 1-D int64 tensor");
}

// Whether a group descriptor runs from 0 to total without decreasing (0-d bool).
inline at::Tensor group_ptr_ok(const at::Tensor& ptr, int64_t total) {
  const int64_t n = ptr.numel();
  return (ptr[0] == 0).logical_and(ptr[n - 1] == total).logical_and(all_of(ptr.diff() >= 0));
}

// Whether (ptr, idx) is a compressed index with sorted, unique minor indices in
// [0, minor): check_compressed_index's conditions, as a 0-d bool tensor.
inline at::Tensor compressed_index_ok(const at::Tensor& ptr, const at::Tensor& idx, int64_t minor) {
  const int64_t major = ptr.numel() - 1, nnz = idx.numel();
  at::Tensor ok = (ptr[0] == 0).logical_and(ptr[major] == nnz).logical_and(all_of(ptr.diff() >= 0));
  if (nnz == 0) return ok;
  ok = ok.logical_and(all_of(idx >= 0)).logical_and(all_of(idx.to(at::kLong) < minor));
  if (nnz > 1) {
    // Within a row the next index is larger; a row start may be anything.
    at::Tensor starts = at::zeros({nnz + 1}, idx.options().dtype(at::kBool));
    starts.index_fill_(0, ptr.to(at::kLong).clamp(0, nnz), true);
    const at::Tensor increasing = idx.narrow(0, 1, nnz - 1) > idx.narrow(0, 0, nnz - 1);
    ok = ok.logical_and(all_of(increasing.logical_or(starts.narrow(0, 1, nnz - 1))));
  }
  return ok;
}

// After a failed device check: the host check on copies raises the CPU op's
// message; `fallback` if it (unexpectedly) passes.
[[noreturn]] inline void raise_host_check(const std::function<void()>& host_check, const char* fallback) {
  host_check();
  TORCH_CHECK(false, fallback);
}

// The row of each of n slots of a valid row pointer (int64): the rows whose
// end is at or before the slot. (searchsorted, not repeat_interleave: that
// costs a millisecond on small CPU tensors.)
inline at::Tensor rows_of(const at::Tensor& ptr64, int64_t n) {
  const int64_t rows = ptr64.numel() - 1;
  return at::searchsorted(ptr64.narrow(0, 1, rows), at::arange(n, long_on(ptr64)), /*out_int32=*/false,
                          /*right=*/true);
}

// keep (nnz, bool): with the slots ordered by (segment, magnitude, slot), the
// first seg_drop[s] of each segment s are dropped; seg_start[s] is where
// segment s begins in that order (segments hold consecutive positions).
// `segment` undefined: one segment.
inline at::Tensor drop_smallest(const at::Tensor& magnitude, const at::Tensor& segment,
                                const at::Tensor& seg_start, const at::Tensor& seg_drop) {
  const int64_t nnz = magnitude.numel();
  at::Tensor order = std::get<1>(stable_sort(magnitude));  // by (|v|, slot)
  at::Tensor seg_sorted;
  if (segment.defined()) {
    auto [by_segment, which] = stable_sort(segment.index_select(0, order));
    order = order.index_select(0, which);  // by (segment, |v|, slot)
    seg_sorted = by_segment;
  } else {
    seg_sorted = at::zeros({nnz}, long_on(magnitude));
  }
  const at::Tensor position = at::arange(nnz, long_on(magnitude));
  const at::Tensor kept =
      (position - seg_start.index_select(0, seg_sorted)) >= seg_drop.index_select(0, seg_sorted);
  at::Tensor keep = at::empty({nnz}, magnitude.options().dtype(at::kBool));
  keep.index_put_({order}, kept);
  return keep;
}

// The slot group of every slot (int64, nnz), or undefined for one group.
inline at::Tensor slot_groups(const at::Tensor& group_ptr, int64_t nnz) {
  const int64_t groups = group_ptr.numel() - 1;
  if (groups == 1) return at::Tensor();
  return at::searchsorted(group_ptr.narrow(0, 1, groups), at::arange(nnz, long_on(group_ptr)),
                          /*out_int32=*/false, /*right=*/true);
}

inline void check_drop_counts_host(const at::Tensor& group_ptr, const at::Tensor& drop_counts) {
  const int64_t groups = group_ptr.numel() - 1;
  const int64_t* gp = group_ptr.data_ptr<int64_t>();
  const int64_t* drop = drop_counts.data_ptr<int64_t>();
  for (int64_t g = 0; g < groups; ++g)
    TORCH_CHECK(drop[g] >= 0 && drop[g] <= gp[g + 1] - gp[g], "drop_counts[", g, "] = ", drop[g],
                " must be in [0, ", gp[g + 1] - gp[g], "] (the size of its group)");
}

}  // namespace detail

// W's transposed index (col_ptr, row_idx, csr2csc; int32) from its CSR
// (row_ptr, col_idx) over `cols` columns, on the pattern's device: the
// definition of sparse_kernels.csr.csr_transpose (a stable sort by column, so
// each column lists its rows in increasing order). For the CUDA registration
// of sparse_linear_input_grad_csr, which has no cached view to read.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> transposed_index(const at::Tensor& row_ptr,
                                                                       const at::Tensor& col_idx, int64_t cols) {
  const int64_t nnz = col_idx.numel();
  const at::Tensor col64 = col_idx.to(at::kLong);
  // bincount's length is max(cols, largest column + 1): the caller's index is valid.
  const at::Tensor counts = at::bincount(col64, {}, cols).narrow(0, 0, cols);
  const at::Tensor col_ptr = detail::exclusive_cumsum(counts).to(at::kInt);
  const at::Tensor order = std::get<1>(detail::stable_sort(col64));
  const at::Tensor rows = detail::rows_of(row_ptr.to(at::kLong), nnz);
  return {col_ptr, rows.index_select(0, order).to(at::kInt), order.to(at::kInt)};
}

// ----------------------------------------------------------------------------
// magnitude_prune: keep (nnz, bool); in each slot group g the drop_counts[g]
// entries of smallest |value| go (ties: the lower slot first).
inline at::Tensor magnitude_prune(const at::Tensor& values_, const at::Tensor& group_ptr_,
                                  const at::Tensor& drop_counts_, bool device_checks = false) {
  SK_CHECK_FLOAT(values_);
  SK_CHECK_DIM(values_, 1);
  const int64_t nnz = values_.numel();
  const bool host = values_.device().is_cpu() && group_ptr_.device().is_cpu() &&
                    drop_counts_.device().is_cpu() && !device_checks;
  if (host) {
    check_group_ptr(group_ptr_, nnz, "group_ptr");
    check_counts(drop_counts_, group_ptr_.numel() - 1, "drop_counts");
    detail::check_drop_counts_host(group_ptr_, drop_counts_);
  } else {
    detail::check_group_ptr_meta(group_ptr_, "group_ptr");
    check_counts(drop_counts_, group_ptr_.numel() - 1, "drop_counts");
  }
  const at::Tensor values = values_.contiguous();
  const at::Tensor group_ptr = group_ptr_.to(values.device());
  const at::Tensor drop = drop_counts_.to(values.device());
  const int64_t groups = group_ptr.numel() - 1;
  if (!host) {
    at::Tensor ok = detail::group_ptr_ok(group_ptr, nnz);
    if (groups > 0) ok = ok.logical_and(detail::all_of((drop >= 0).logical_and(drop <= group_ptr.diff())));
    if (!detail::fetch({ok})[0])
      detail::raise_host_check(
          [&] {
            const at::Tensor gp = group_ptr.cpu(), dc = drop.cpu();
            check_group_ptr(gp, nnz, "group_ptr");
            detail::check_drop_counts_host(gp, dc);
          },
          "magnitude_prune: invalid group_ptr or drop_counts");
  }
  return detail::drop_smallest(values.abs(), detail::slot_groups(group_ptr, nnz),
                               group_ptr.narrow(0, 0, groups), drop);
}

// signed_magnitude_prune: in each slot group, round(fraction * n_pos) of the
// non-negative values and round(fraction * n_neg) of the negative ones (NaN
// counts as negative, as `v >= 0` is false), the closest to zero of each side
// first (ties: the lower slot).
inline at::Tensor signed_magnitude_prune(const at::Tensor& values_, const at::Tensor& group_ptr_,
                                         double fraction, bool device_checks = false) {
  SK_CHECK_FLOAT(values_);
  SK_CHECK_DIM(values_, 1);
  TORCH_CHECK(fraction >= 0.0 && fraction <= 1.0, "fraction must be in [0, 1], got ", fraction);
  const int64_t nnz = values_.numel();
  const bool host = values_.device().is_cpu() && group_ptr_.device().is_cpu() && !device_checks;
  if (host) {
    check_group_ptr(group_ptr_, nnz, "group_ptr");
  } else {
    detail::check_group_ptr_meta(group_ptr_, "group_ptr");
  }
  const at::Tensor values = values_.contiguous();
  const at::Tensor group_ptr = group_ptr_.to(values.device());
  const int64_t groups = group_ptr.numel() - 1;
  if (!host && !detail::fetch({detail::group_ptr_ok(group_ptr, nnz)})[0])
    detail::raise_host_check([&] { check_group_ptr(group_ptr.cpu(), nnz, "group_ptr"); },
                             "signed_magnitude_prune: invalid group_ptr");
  const at::Tensor positive = values >= 0;
  const at::Tensor start = group_ptr.narrow(0, 0, groups), end = group_ptr.narrow(0, 1, groups);
  const at::Tensor positives_before = detail::exclusive_cumsum(positive);
  const at::Tensor n_pos = positives_before.index_select(0, end) - positives_before.index_select(0, start);
  const at::Tensor n_neg = (end - start) - n_pos;
  // std::llround(fraction * n): half away from zero (x >= 0; x - trunc(x) is exact).
  const auto share = [fraction](const at::Tensor& n) {
    const at::Tensor x = n.to(at::kDouble) * fraction;
    const at::Tensor whole = x.trunc();
    return (whole + ((x - whole) >= 0.5).to(at::kDouble)).to(at::kLong);
  };
  // Segments 2g (the non-negative side of group g) and 2g + 1 (the negative side).
  at::Tensor segment = (~positive).to(at::kLong);
  const at::Tensor group = detail::slot_groups(group_ptr, nnz);
  if (group.defined()) segment = segment + 2 * group;
  const at::Tensor seg_start = at::stack({start, start + n_pos}, 1).reshape({-1});
  const at::Tensor seg_drop = at::stack({share(n_pos), share(n_neg)}, 1).reshape({-1});
  return detail::drop_smallest(values.abs(), segment, seg_start, seg_drop);
}

// ----------------------------------------------------------------------------
// rebuild_csr: the kept slots plus the grown positions as a new sorted CSR, and
// perm (new nnz, int64): the old slot of each new slot, -1 for a grown one.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> rebuild_csr(
    const at::Tensor& row_ptr_, const at::Tensor& col_idx_, const at::Tensor& keep_,
    const at::Tensor& grow_row_ptr_, const at::Tensor& grow_col_idx_, bool device_checks = false) {
  SK_CHECK_INDEX(row_ptr_);
  SK_CHECK_INDEX(col_idx_);
  SK_CHECK_INDEX(grow_row_ptr_);
  SK_CHECK_INDEX(grow_col_idx_);
  TORCH_CHECK(grow_row_ptr_.numel() == row_ptr_.numel(),
              "grow_row_ptr must have as many entries as row_ptr (", row_ptr_.numel(), "), got ",
              grow_row_ptr_.numel());
  check_mask(keep_, col_idx_.numel(), "keep");
  const auto host_pattern_checks = [](const at::Tensor& rp, const at::Tensor& ci, const at::Tensor& grp,
                                      const at::Tensor& gci) {
    check_compressed_index(rp, ci, INT32_MAX, "row_ptr", "col_idx");
    check_compressed_index(grp, gci, INT32_MAX, "grow_row_ptr", "grow_col_idx");
  };
  const at::Device device = row_ptr_.device();
  const bool host = device.is_cpu() && col_idx_.device().is_cpu() && keep_.device().is_cpu() &&
                    grow_row_ptr_.device().is_cpu() && grow_col_idx_.device().is_cpu() && !device_checks;
  if (host) host_pattern_checks(row_ptr_, col_idx_, grow_row_ptr_, grow_col_idx_);
  const at::Tensor row_ptr = row_ptr_.to(device), col_idx = col_idx_.to(device), keep = keep_.to(device);
  const at::Tensor grow_row_ptr = grow_row_ptr_.to(device), grow_col_idx = grow_col_idx_.to(device);
  const int64_t rows = row_ptr.numel() - 1, nnz = col_idx.numel(), grown = grow_col_idx.numel();
  TORCH_CHECK(rows >= 0, "row_ptr must have (rows + 1) >= 1 entries");
  if (!host) {
    const at::Tensor ok = detail::compressed_index_ok(row_ptr, col_idx, INT32_MAX)
                              .logical_and(detail::compressed_index_ok(grow_row_ptr, grow_col_idx, INT32_MAX));
    if (!detail::fetch({ok})[0])
      detail::raise_host_check(
          [&] { host_pattern_checks(row_ptr.cpu(), col_idx.cpu(), grow_row_ptr.cpu(), grow_col_idx.cpu()); },
          "rebuild_csr: invalid pattern");
  }
  const at::Tensor rp = row_ptr.to(at::kLong), grp = grow_row_ptr.to(at::kLong);
  const at::Tensor kept_before = detail::exclusive_cumsum(keep);  // (nnz + 1)
  const at::Tensor kept_per_row =
      kept_before.index_select(0, rp.narrow(0, 1, rows)) - kept_before.index_select(0, rp.narrow(0, 0, rows));
  const at::Tensor new_rp = detail::exclusive_cumsum(kept_per_row + grp.diff());  // (rows + 1), int64
  // Row-major keys (row * 2^31 + column): both patterns are sorted by them.
  const at::Tensor old_row = detail::rows_of(rp, nnz), grow_row = detail::rows_of(grp, grown);
  const at::Tensor old_key = old_row * (int64_t{1} << 31) + col_idx.to(at::kLong);
  const at::Tensor grow_key = grow_row * (int64_t{1} << 31) + grow_col_idx.to(at::kLong);
  // Old slots before each grown position (in key order), and whether it is kept there.
  const at::Tensor old_before = at::searchsorted(old_key, grow_key);
  at::Tensor clash = at::zeros({grown}, keep.options());
  if (nnz > 0 && grown > 0) {
    const at::Tensor at_slot = old_before.clamp_max(nnz - 1);
    clash = (old_before < nnz)
                .logical_and(old_key.index_select(0, at_slot) == grow_key)
                .logical_and(keep.index_select(0, at_slot));
  }
  const std::vector<int64_t> sizes =
      detail::fetch({new_rp[rows], kept_before[nnz], clash.sum()});
  const int64_t new_nnz = sizes[0], kept_total = sizes[1];
  if (sizes[2] > 0) {
    const at::Tensor first = clash.nonzero().reshape({-1})[0];
    const int64_t r = grow_row[first].item<int64_t>(), c = grow_col_idx[first].item<int32_t>();
    TORCH_CHECK(false, "grown position (", r, ", ", c, ") is already stored");
  }
  TORCH_CHECK(new_nnz <= INT32_MAX, "the rebuilt pattern does not fit int32 indices");

  at::Tensor new_col_idx = at::empty({new_nnz}, col_idx.options());
  at::Tensor perm = at::empty({new_nnz}, col_idx.options().dtype(at::kLong));
  if (kept_total > 0) {
    // The kept slots, in order: the j-th is the first slot with j + 1 kept up to it.
    const at::Tensor kept_slots = at::searchsorted(kept_before.narrow(0, 1, nnz),
                                                   at::arange(kept_total, detail::long_on(rp)),
                                                   /*out_int32=*/false, /*right=*/true);
    const at::Tensor row = old_row.index_select(0, kept_slots);
    const at::Tensor grown_before = at::searchsorted(grow_key, old_key.index_select(0, kept_slots));
    const at::Tensor kept_earlier_in_row =
        kept_before.index_select(0, kept_slots) - kept_before.index_select(0, rp.index_select(0, row));
    const at::Tensor dest =
        new_rp.index_select(0, row) + kept_earlier_in_row + (grown_before - grp.index_select(0, row));
    new_col_idx.index_put_({dest}, col_idx.index_select(0, kept_slots));
    perm.index_put_({dest}, kept_slots);
  }
  if (grown > 0) {
    const at::Tensor dest = new_rp.index_select(0, grow_row) +
                          (at::arange(grown, detail::long_on(rp)) - grp.index_select(0, grow_row)) +
                          (kept_before.index_select(0, old_before) -
                           kept_before.index_select(0, rp.index_select(0, grow_row)));
    new_col_idx.index_put_({dest}, grow_col_idx);
    perm.index_fill_(0, dest, -1);
  }
  return {new_rp.to(at::kInt), new_col_idx, perm};
}

// ----------------------------------------------------------------------------
// gradient_regrow: the k unoccupied positions of largest |grad_output^T @ input|,
// block_rows rows of the dense gradient at a time with a running top-k: the CPU
// op's sequence of ATen calls, so equal to it on the CPU.
inline std::tuple<at::Tensor, at::Tensor> gradient_regrow(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr_,
    const at::Tensor& col_idx_, const at::Tensor& occupied_, int64_t k, int64_t block_rows,
    bool device_checks = false) {
  check_weight_gradient_args(grad_output, input, row_ptr_, col_idx_);
  const int64_t rows = row_ptr_.numel() - 1, cols = input.size(1), nnz = col_idx_.numel();
  check_mask(occupied_, nnz, "occupied");
  const at::Device device = grad_output.device();
  const bool host = device.is_cpu() && input.device().is_cpu() && row_ptr_.device().is_cpu() &&
                    col_idx_.device().is_cpu() && occupied_.device().is_cpu() && !device_checks;
  if (host) check_compressed_index(row_ptr_, col_idx_, cols, "row_ptr", "col_idx");
  TORCH_CHECK(block_rows >= 1, "block_rows must be positive, got ", block_rows);
  TORCH_CHECK(input.device() == device, "grad_output and input must be on the same device");
  const at::Tensor row_ptr = row_ptr_.to(device), col_idx = col_idx_.to(device), occupied = occupied_.to(device);
  if (!host && !detail::fetch({detail::compressed_index_ok(row_ptr, col_idx, cols)})[0])
    detail::raise_host_check(
        [&] { check_compressed_index(row_ptr.cpu(), col_idx.cpu(), cols, "row_ptr", "col_idx"); },
        "gradient_regrow: invalid pattern");
  const at::Tensor rp = row_ptr.to(at::kLong);
  // The occupied count and the slot range of every row block, read at once.
  const int64_t blocks = rows > 0 ? (rows - 1) / block_rows + 1 : 0;  // no overflow for any block_rows
  const at::Tensor bounds_at = (at::arange(blocks + 1, detail::long_on(rp)) * block_rows).clamp_max(rows);
  const at::Tensor fetched =
      at::cat({occupied.sum().to(at::kLong).reshape({1}), rp.index_select(0, bounds_at)}).cpu();
  const int64_t* host_values = fetched.data_ptr<int64_t>();
  const int64_t taken = host_values[0];
  const int64_t* slot_bound = host_values + 1;
  TORCH_CHECK(k >= 0 && k <= rows * cols - taken, "k = ", k, " must be in [0, ",
              rows * cols - taken, "] (the unoccupied positions)");

  const at::Tensor slot_flat = detail::rows_of(rp, nnz) * cols + col_idx.to(at::kLong);
  // Running top-k as (score, flat position). Occupied positions score -1,
  // below every |gradient|, and there are at least k free ones, so they never
  // survive the final selection.
  at::Tensor best_scores = at::empty({0}, grad_output.options());
  at::Tensor best_flat = at::empty({0}, grad_output.options().dtype(at::kLong));
  int64_t block = 0;
  for (int64_t r0 = 0; r0 < rows && k > 0; r0 += block_rows, ++block) {
    const int64_t b = std::min(block_rows, rows - r0);
    at::Tensor dense = grad_output.narrow(1, r0, b).t().mm(input).abs_();  // (b, cols)
    const int64_t s0 = slot_bound[block], s1 = slot_bound[block + 1];
    if (s1 > s0) {
      // Each occupied slot's local position, the others to a spare last entry.
      const at::Tensor local = at::where(occupied.narrow(0, s0, s1 - s0),
                                         slot_flat.narrow(0, s0, s1 - s0) - r0 * cols, b * cols);
      at::Tensor mask = at::zeros({b * cols + 1}, occupied.options());
      mask.index_fill_(0, local, true);
      dense.reshape({-1}).masked_fill_(mask.narrow(0, 0, b * cols), -1);
    }
    at::Tensor flat_scores = dense.reshape({-1});
    at::Tensor candidates;  // local positions that may still enter the top-k
    if (best_scores.numel() == k) {
      // Once k are held, only a score above the smallest held can enter.
      candidates = at::nonzero(flat_scores > best_scores.min()).reshape({-1});
      flat_scores = flat_scores.index_select(0, candidates);
    }
    const int64_t take = std::min<int64_t>(k, flat_scores.numel());
    auto [scores, local] = flat_scores.topk(take, 0, true, false);
    if (candidates.defined()) local = candidates.index_select(0, local);
    best_scores = at::cat({best_scores, scores});
    best_flat = at::cat({best_flat, local + r0 * cols});
    if (best_scores.numel() > k) {
      auto [kept_scores, which] = best_scores.topk(k, 0, true, false);
      best_scores = kept_scores;
      best_flat = best_flat.index_select(0, which);
    }
  }
  const at::Tensor flat = std::get<0>(best_flat.sort());
  // Row r starts at the first position >= r * cols.
  const at::Tensor grow_row_ptr = at::searchsorted(
      flat, at::arange(rows + 1, detail::long_on(flat)) * cols, /*out_int32=*/true);
  at::Tensor grow_col_idx = at::empty({0}, col_idx.options());
  if (flat.numel()) grow_col_idx = (flat - at::floor_divide(flat, cols) * cols).to(at::kInt).contiguous();
  return {grow_row_ptr.to(row_ptr_.device()), grow_col_idx.to(col_idx_.device())};
}

// ----------------------------------------------------------------------------
// random_regrow: exactly grow_counts[g] new positions in the rows of each row
// group, uniform among their unoccupied positions, no duplicates, sorted CSR; a
// pure function of the inputs and seed (and the same on every device).
//
// Free positions are numbered row-major over the whole matrix (a group's are a
// contiguous range). Group g picks k = grow_counts[g] of its F free ranks
// (regrow_candidates.h): from a prefix of its stream long enough to hold k
// distinct accepted draws (lengthened until it does), or, when k > F / 2, from
// all F ranks by priority. The j-th free column c of row r is found without a
// dense pass: c = j + #(occupied slots s of row r with col[s] - (occupied
// slots of the row before s) <= j), a searchsorted over the stored slots.
inline std::tuple<at::Tensor, at::Tensor> random_regrow(
    const at::Tensor& row_ptr_, const at::Tensor& col_idx_, const at::Tensor& occupied_, int64_t n_cols,
    const at::Tensor& group_rows_, const at::Tensor& grow_counts_, int64_t seed,
    const CandidateFn& candidates, bool device_checks = false, double oversample = 2.3) {
  SK_CHECK_INDEX(row_ptr_);
  SK_CHECK_INDEX(col_idx_);
  TORCH_CHECK(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2**31 - 1], got ", n_cols);
  const int64_t rows = row_ptr_.numel() - 1, nnz = col_idx_.numel();
  TORCH_CHECK(rows >= 0, "row_ptr must have rows + 1 entries");
  check_mask(occupied_, nnz, "occupied");
  const at::Device device = row_ptr_.device();
  const bool host = device.is_cpu() && col_idx_.device().is_cpu() && occupied_.device().is_cpu() &&
                    group_rows_.device().is_cpu() && grow_counts_.device().is_cpu() && !device_checks;
  if (host) {
    check_compressed_index(row_ptr_, col_idx_, n_cols, "row_ptr", "col_idx");
    check_group_ptr(group_rows_, rows, "group_rows");
  } else {
    detail::check_group_ptr_meta(group_rows_, "group_rows");
  }
  const int64_t groups = group_rows_.numel() - 1;
  check_counts(grow_counts_, groups, "grow_counts");
  const at::Tensor row_ptr = row_ptr_.to(device), col_idx = col_idx_.to(device), occupied = occupied_.to(device);
  const at::Tensor group_rows = group_rows_.to(device), want = grow_counts_.to(device);
  if (!host) {
    const at::Tensor ok = detail::compressed_index_ok(row_ptr, col_idx, n_cols)
                              .logical_and(detail::group_ptr_ok(group_rows, rows));
    if (!detail::fetch({ok})[0])
      detail::raise_host_check(
          [&] {
            check_compressed_index(row_ptr.cpu(), col_idx.cpu(), n_cols, "row_ptr", "col_idx");
            check_group_ptr(group_rows.cpu(), rows, "group_rows");
          },
          "random_regrow: invalid pattern or group_rows");
  }
  const at::TensorOptions i64 = detail::long_on(row_ptr);
  const at::Tensor rp = row_ptr.to(at::kLong);
  const at::Tensor occupied_before = detail::exclusive_cumsum(occupied);  // (nnz + 1)
  const at::Tensor taken_per_row = occupied_before.index_select(0, rp.narrow(0, 1, rows)) -
                                   occupied_before.index_select(0, rp.narrow(0, 0, rows));
  const at::Tensor free_before_row = detail::exclusive_cumsum(n_cols - taken_per_row);  // (rows + 1)
  const at::Tensor free_before_group = free_before_row.index_select(0, group_rows);    // (groups + 1)
  const at::Tensor free = free_before_group.diff();
  const at::Tensor bad = (want < 0).logical_or(want > free);

  // Candidates per group: all F ranks when k > F / 2, else a stream prefix that
  // holds k distinct accepted draws with room to spare: a draw is accepted with
  // probability > 1/2, and k distinct values of F take -F ln(1 - k/F) draws on
  // average. Only the number of retries depends on this estimate (`oversample`:
  // tests shrink it to exercise the retries).
  const at::Tensor k_ok = want.clamp(0).minimum(free);
  const at::Tensor enumerate = (2 * k_ok) > free;
  const at::Tensor f64 = free.to(at::kDouble).clamp_min(1.0), k64 = k_ok.to(at::kDouble);
  const at::Tensor expected_draws = -f64 * at::log1p(-(k64 / f64).clamp_max(0.5));
  at::Tensor prefix = at::where(enumerate, free, (expected_draws * oversample).ceil().to(at::kLong) + 64);
  prefix = at::where(k_ok == 0, at::zeros_like(prefix), prefix);
  const std::vector<int64_t> sizes = detail::fetch({bad.sum(), want.sum(), prefix.sum()});
  if (sizes[0] > 0) {
    const int64_t g = bad.nonzero().reshape({-1})[0].item<int64_t>();
    TORCH_CHECK(false, "grow_counts[", g, "] = ", want[g].item<int64_t>(), " must be in [0, ",
                free[g].item<int64_t>(), "] (the unoccupied positions of its rows)");
  }
  const int64_t total = sizes[1];
  int64_t n_candidates = sizes[2];
  if (total == 0)
    return {at::zeros({rows + 1}, row_ptr.options()), at::empty({0}, col_idx.options())};

  at::Tensor chosen_ranks;  // the chosen global free ranks, sorted
  for (;;) {
    const at::Tensor prefix_start = detail::exclusive_cumsum(prefix);
    const at::Tensor group = detail::rows_of(prefix_start, n_candidates);
    const at::Tensor index = at::arange(n_candidates, i64) - prefix_start.index_select(0, group);
    auto [rank, priority] = candidates(group, index, free.contiguous(), want.contiguous(), static_cast<uint64_t>(seed));
    // Distinct accepted draws: sorted by global rank, the first of each run (the
    // stable sort keeps draw order within a run, so it is the earliest draw).
    const at::Tensor global = at::where(rank >= 0, rank + free_before_group.index_select(0, group),
                                        std::numeric_limits<int64_t>::max());
    auto [sorted_global, order] = detail::stable_sort(global);
    at::Tensor first = at::ones({n_candidates}, occupied.options());
    if (n_candidates > 1)
      first.narrow(0, 1, n_candidates - 1)
          .copy_(sorted_global.narrow(0, 1, n_candidates - 1) != sorted_global.narrow(0, 0, n_candidates - 1));
    const at::Tensor distinct = first.logical_and(sorted_global != std::numeric_limits<int64_t>::max());
    const at::Tensor sorted_group = group.index_select(0, order);
    // Groups hold consecutive global ranks, so their accepted draws are
    // consecutive in this order (the rejected ones last): count by bounds.
    const at::Tensor distinct_before = detail::exclusive_cumsum(distinct);
    const at::Tensor group_bounds = distinct_before.index_select(0, at::searchsorted(sorted_global, free_before_group));
    const at::Tensor distinct_per_group = group_bounds.diff();
    const at::Tensor short_groups = distinct_per_group < want;
    if (detail::fetch({short_groups.sum()})[0] > 0) {
      // Rare: lengthen the short groups' prefixes (the result does not depend on it).
      prefix = at::where(short_groups, 2 * prefix, prefix);
      n_candidates = detail::fetch({prefix.sum()})[0];
      continue;
    }
    // Per group, the k distinct draws of smallest priority: order by (group,
    // priority), the others (repeats, rejections) after every group.
    const at::Tensor key_group = at::where(distinct, sorted_group, groups);
    at::Tensor by = std::get<1>(detail::stable_sort(priority.index_select(0, order)));
    auto [grouped, which] = detail::stable_sort(key_group.index_select(0, by));
    by = by.index_select(0, which);
    const at::Tensor group_start = detail::exclusive_cumsum(distinct_per_group);  // (groups + 1)
    const at::Tensor in_group = grouped.clamp_max(groups - 1);
    const at::Tensor taken =
        (grouped < groups)
            .logical_and((at::arange(n_candidates, i64) - group_start.index_select(0, in_group)) <
                         want.index_select(0, in_group));
    // Compact the `total` taken ones: the j-th is where the running count passes j.
    const at::Tensor taken_upto = taken.cumsum(0, at::kLong);
    const at::Tensor where_taken =
        at::searchsorted(taken_upto, at::arange(total, i64), /*out_int32=*/false, /*right=*/true);
    chosen_ranks = std::get<0>(sorted_global.index_select(0, by.index_select(0, where_taken)).sort());
    break;
  }
  // Global free rank -> (row, j-th free column of the row) -> column.
  const at::Tensor row = at::searchsorted(free_before_row.narrow(0, 1, rows), chosen_ranks,
                                          /*out_int32=*/false, /*right=*/true);
  const at::Tensor j = chosen_ranks - free_before_row.index_select(0, row);
  const at::Tensor slot_row = detail::rows_of(rp, nnz);
  const at::Tensor slot_key =
      slot_row * (int64_t{1} << 32) + col_idx.to(at::kLong) -
      (occupied_before.narrow(0, 0, nnz) - occupied_before.index_select(0, rp.index_select(0, slot_row)));
  const at::Tensor upto = at::searchsorted(slot_key, row * (int64_t{1} << 32) + j, /*out_int32=*/false,
                                           /*right=*/true);
  const at::Tensor column =
      j + occupied_before.index_select(0, upto) - occupied_before.index_select(0, rp.index_select(0, row));
  const at::Tensor grow_row_ptr = at::searchsorted(chosen_ranks, free_before_row, /*out_int32=*/true);
  return {grow_row_ptr, column.to(at::kInt)};
}

}  // namespace sparse_kernels::topology::generic
