// The persistent LSTM forward (lstm_persistent.cu): how W_hh is split over
// the blocks of one cooperative launch and laid out in each block's shared
// memory. Torch-free and host-side (the plan) plus host/device (the layout),
// so that the op glue (ops_cuda.cpp), the kernel and the emulated tests share
// one definition.
//
// Block k owns the hidden units [unit_start[k], unit_start[k+1]): for each
// unit j the four gate rows j, H+j, 2H+j, 3H+j of W_hh (nn.LSTM's i, f, g, o
// order), so that it can apply the cell right after the four dot products
// without exchanging gate values with other blocks. The units are split so
// that the blocks hold about equal numbers of nonzeros (each block's time per
// step is its nonzeros times the batch).
//
// Shared memory of a block with `units` units and `nnz` nonzeros:
//   int32 local_ptr[4*units + 1]   (row r = 4*u + gate, prefix sums)
//   T values[nnz]                  (16-byte aligned)
//   uint16 cols[nnz]               (hidden <= 65536: half the index bytes)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparse_kernels/lstm_math.h"  // SK_HOST_DEVICE

namespace sparse_kernels::cuda {

constexpr int kPersistentThreads = 256;
constexpr int kPersistentBatchTile = 4;  // batch rows per pass over a unit's rows
constexpr int64_t kPersistentMaxHidden = 65536;  // column indices kept as uint16

SK_HOST_DEVICE size_t persistent_round16(size_t bytes) { return (bytes + 15) & ~size_t(15); }

SK_HOST_DEVICE size_t persistent_values_offset(int64_t units) {
  return persistent_round16(sizeof(int32_t) * static_cast<size_t>(4 * units + 1));
}

SK_HOST_DEVICE size_t persistent_cols_offset(int64_t units, int64_t nnz, size_t value_bytes) {
  return persistent_values_offset(units) + persistent_round16(value_bytes * static_cast<size_t>(nnz));
}

SK_HOST_DEVICE size_t persistent_smem_bytes(int64_t units, int64_t nnz, size_t value_bytes) {
  return persistent_cols_offset(units, nnz, value_bytes) + sizeof(uint16_t) * static_cast<size_t>(nnz);
}

struct PersistentLstmPlan {
  std::vector<int32_t> unit_start;  // blocks + 1 entries
  size_t smem_bytes = 0;            // the largest block's shared memory
  int blocks() const { return static_cast<int>(unit_start.size()) - 1; }
};

// Splits the hidden units of W_hh (row_ptr: its 4*hidden + 1 CSR offsets,
// on the host) into at most max_blocks contiguous ranges of about equal
// nonzero count, each with at least one unit.
inline PersistentLstmPlan plan_persistent_lstm(const int32_t* row_ptr, int64_t hidden, int max_blocks,
                                               size_t value_bytes) {
  PersistentLstmPlan plan;
  if (hidden <= 0 || max_blocks <= 0) return plan;
  const int64_t blocks = max_blocks < hidden ? max_blocks : hidden;
  auto unit_nnz = [&](int64_t j) {
    int64_t n = 0;
    for (int64_t g = 0; g < 4; ++g) n += row_ptr[g * hidden + j + 1] - row_ptr[g * hidden + j];
    return n;
  };
  // Each unit also costs its cell: count it as one nonzero, so that empty
  // rows still spread over the blocks.
  std::vector<int64_t> prefix(static_cast<size_t>(hidden) + 1, 0);
  for (int64_t j = 0; j < hidden; ++j) prefix[j + 1] = prefix[j] + unit_nnz(j) + 1;
  const int64_t total = prefix[hidden];
  plan.unit_start.assign(static_cast<size_t>(blocks) + 1, 0);
  int64_t j = 0;
  for (int64_t k = 1; k < blocks; ++k) {
    const int64_t target = total * k / blocks;
    while (j < hidden && prefix[j] < target) ++j;
    // At least one unit for this block and for each block after it.
    const int64_t low = plan.unit_start[k - 1] + 1, high = hidden - (blocks - k);
    j = j < low ? low : (j > high ? high : j);
    plan.unit_start[k] = static_cast<int32_t>(j);
  }
  plan.unit_start[blocks] = static_cast<int32_t>(hidden);
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t u0 = plan.unit_start[k], u1 = plan.unit_start[k + 1];
    const int64_t nnz = prefix[u1] - prefix[u0] - (u1 - u0);
    const size_t bytes = persistent_smem_bytes(u1 - u0, nnz, value_bytes);
    if (bytes > plan.smem_bytes) plan.smem_bytes = bytes;
  }
  return plan;
}

}  // namespace sparse_kernels::cuda
