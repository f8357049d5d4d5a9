// W^T as CSR (W's columns as rows, rows ascending within each), built per
// call by a counting sort: the CPU keeps no transposed index (16 bytes per
// stored nonzero for training, not 24), so the few kernels that are faster
// over W's columns (the fused LSTM backward, the wide-batch input gradient)
// build this copy, O(nnz), when they run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>

#include "sparse_kernels/cpu_spmm.h"

namespace sparse_kernels::cpu {

// From this many nonzeros on, the counting sort runs on all threads: below it
// a thread's share costs less than the parallel region (~10 us).
constexpr int64_t kMinParallelTransposeNnz = 1 << 16;

// Writes W^T's row pointer (cols + 1), column indices and values (ptr[rows]
// each) into caller-owned arrays. A counting sort over nnz-balanced row
// chunks, one per thread: each chunk counts its own columns, a serial pass
// over (cols x chunks) turns the counts into each chunk's first slot in
// each column, and each chunk then places its nonzeros there. Chunk c's rows
// precede chunk c + 1's, so rows stay ascending within each column and the
// result equals the serial sort's, bit for bit, on any number of threads.
template <typename T>
void transpose_csr_into(const int32_t* ptr, const int32_t* idx, const T* v, int64_t rows, int64_t cols,
                        int32_t* t_ptr, int32_t* t_idx, T* t_values) {
  const int64_t nnz = ptr[rows];
  // The serial pass over the counts must stay small against the nonzeros.
  const int64_t chunks =
      nnz < kMinParallelTransposeNnz || at::in_parallel_region()
          ? 1
          : std::clamp<int64_t>(std::min<int64_t>(at::get_num_threads(), nnz / (4 * cols + 1)), 1, rows);
  const std::vector<int64_t> bounds = balanced_row_chunks(ptr, rows, chunks);
  // slot[c * cols + j]: chunk c's count of column j, then its next slot there.
  const int64_t used = static_cast<int64_t>(bounds.size()) - 1;
  std::vector<int32_t> slot(used * cols, 0);
  at::parallel_for(0, used, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int32_t* count = slot.data() + c * cols;
      for (int64_t k = ptr[bounds[c]]; k < ptr[bounds[c + 1]]; ++k) ++count[idx[k]];
    }
  });
  int32_t running = 0;
  for (int64_t j = 0; j < cols; ++j) {
    t_ptr[j] = running;
    for (int64_t c = 0; c < used; ++c) {
      const int32_t n = slot[c * cols + j];
      slot[c * cols + j] = running;
      running += n;
    }
  }
  t_ptr[cols] = running;
  at::parallel_for(0, used, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int32_t* next = slot.data() + c * cols;
      for (int64_t r = bounds[c]; r < bounds[c + 1]; ++r) {
        for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) {
          const int32_t p = next[idx[k]]++;
          t_idx[p] = static_cast<int32_t>(r);
          t_values[p] = v[k];
        }
      }
    }
  });
}

template <typename T>
struct Transposed {
  std::vector<int32_t> ptr, idx;
  std::vector<T> values;
};

template <typename T>
Transposed<T> transpose_csr(const int32_t* ptr, const int32_t* idx, const T* v, int64_t rows, int64_t cols) {
  Transposed<T> t;
  t.ptr.resize(cols + 1);
  t.idx.resize(ptr[rows]);
  t.values.resize(ptr[rows]);
  transpose_csr_into(ptr, idx, v, rows, cols, t.ptr.data(), t.idx.data(), t.values.data());
  return t;
}

}  // namespace sparse_kernels::cpu
