// CPU random regrow: exactly k new positions per row group, uniform among the
// unoccupied positions of its rows, no duplicates, even at density near 1.
//
// The k positions are k distinct ranks in [0, F) (F = free positions of the
// group) drawn with Floyd's algorithm (O(k) memory), or, when k > F / 2, the
// complement of F - k such ranks (then F < 2k, so enumerating F is O(k)).
// Sorted ranks are mapped to (row, column) by one walk over the stored columns
// of the group's rows: O(nnz + k log k), nothing dense.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <unordered_set>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/topology.h"

namespace sparse_kernels::cpu {
namespace {

// k distinct values of [0, universe), sorted ascending (Floyd 1987).
std::vector<uint64_t> floyd_sample(uint64_t universe, uint64_t k, topology::SplitMix64& rng) {
  std::unordered_set<uint64_t> chosen;
  chosen.reserve(k * 2);
  std::vector<uint64_t> out;
  out.reserve(k);
  for (uint64_t j = universe - k; j < universe; ++j) {
    const uint64_t t = rng.below(j + 1);
    const uint64_t pick = chosen.insert(t).second ? t : j;
    if (pick == j) chosen.insert(j);
    out.push_back(pick);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint64_t> sample_ranks(uint64_t universe, uint64_t k, topology::SplitMix64& rng) {
  if (2 * k <= universe) return floyd_sample(universe, k, rng);
  const std::vector<uint64_t> excluded = floyd_sample(universe, universe - k, rng);
  std::vector<uint64_t> out;
  out.reserve(k);
  size_t e = 0;
  for (uint64_t r = 0; r < universe; ++r) {
    if (e < excluded.size() && excluded[e] == r) {
      ++e;
      continue;
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> random_regrow(const at::Tensor& row_ptr,
                                                 const at::Tensor& col_idx,
                                                 const at::Tensor& occupied, int64_t n_cols,
                                                 const at::Tensor& group_rows,
                                                 const at::Tensor& grow_counts, int64_t seed) {
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(n_cols >= 0 && n_cols <= INT32_MAX, "n_cols must be in [0, 2**31 - 1], got ", n_cols);
  const int64_t rows = row_ptr.numel() - 1;
  TORCH_CHECK(rows >= 0, "row_ptr must have rows + 1 entries");
  topology::check_mask(occupied, col_idx.numel(), "occupied");
  // The walk over a row's stored columns needs them sorted and in range.
  check_compressed_index(row_ptr, col_idx, n_cols, "row_ptr", "col_idx");
  topology::check_group_ptr(group_rows, rows, "group_rows");
  const int64_t groups = group_rows.numel() - 1;
  topology::check_counts(grow_counts, groups, "grow_counts");
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const bool* occ = occupied.data_ptr<bool>();
  const int64_t* gr = group_rows.data_ptr<int64_t>();
  const int64_t* want = grow_counts.data_ptr<int64_t>();

  // Free positions per group, checked before any sampling.
  std::vector<uint64_t> free_count(groups);
  for (int64_t g = 0; g < groups; ++g) {
    int64_t taken = 0;
    for (int64_t s = rp[gr[g]]; s < rp[gr[g + 1]]; ++s) taken += occ[s];
    free_count[g] = static_cast<uint64_t>((gr[g + 1] - gr[g]) * n_cols - taken);
    TORCH_CHECK(want[g] >= 0 && static_cast<uint64_t>(want[g]) <= free_count[g], "grow_counts[", g,
                "] = ", want[g], " must be in [0, ", free_count[g],
                "] (the unoccupied positions of its rows)");
  }

  std::vector<int64_t> row_counts(rows, 0);
  std::vector<std::vector<int32_t>> group_cols(groups);
  at::parallel_for(0, groups, 16, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      if (want[g] == 0) continue;
      topology::SplitMix64 rng(static_cast<uint64_t>(seed), static_cast<uint64_t>(g));
      const std::vector<uint64_t> ranks = sample_ranks(free_count[g], want[g], rng);
      std::vector<int32_t>& cols = group_cols[g];
      cols.reserve(ranks.size());
      size_t next = 0;
      uint64_t base = 0;  // free positions in the group's rows before row r
      for (int64_t r = gr[g]; r < gr[g + 1] && next < ranks.size(); ++r) {
        int64_t taken = 0;
        for (int32_t s = rp[r]; s < rp[r + 1]; ++s) taken += occ[s];
        const uint64_t row_free = static_cast<uint64_t>(n_cols - taken);
        // The j-th free column c satisfies c = j + #(occupied columns <= c).
        int64_t skipped = 0;
        int32_t s = rp[r];
        while (next < ranks.size() && ranks[next] < base + row_free) {
          const int64_t j = static_cast<int64_t>(ranks[next] - base);
          while (true) {
            while (s < rp[r + 1] && !occ[s]) ++s;
            if (s < rp[r + 1] && ci[s] <= j + skipped) {
              ++skipped;
              ++s;
              continue;
            }
            break;
          }
          cols.push_back(static_cast<int32_t>(j + skipped));
          ++row_counts[r];
          ++next;
        }
        base += row_free;
      }
    }
  });

  at::Tensor grow_row_ptr = at::empty({rows + 1}, row_ptr.options());
  int32_t* grp = grow_row_ptr.data_ptr<int32_t>();
  grp[0] = 0;
  for (int64_t r = 0; r < rows; ++r) grp[r + 1] = grp[r] + static_cast<int32_t>(row_counts[r]);
  at::Tensor grow_col_idx = at::empty({static_cast<int64_t>(grp[rows])}, col_idx.options());
  int32_t* out = grow_col_idx.data_ptr<int32_t>();
  for (int64_t g = 0; g < groups; ++g) {
    std::copy(group_cols[g].begin(), group_cols[g].end(), out + grp[gr[g]]);
  }
  return {grow_row_ptr, grow_col_idx};
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("random_regrow", &sparse_kernels::cpu::random_regrow);
}
