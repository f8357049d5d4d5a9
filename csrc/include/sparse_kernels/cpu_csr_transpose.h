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

// The number of panels transpose_csr_into cuts W^T's columns into.
inline int64_t transpose_panels(int64_t rows, int64_t panel_rows) {
  return panel_rows <= 0 || rows <= panel_rows ? 1 : (rows + panel_rows - 1) / panel_rows;
}

// Writes W^T's row pointer, column indices and values (ptr[rows] each) into
// caller-owned arrays. A counting sort over nnz-balanced row chunks, one per
// thread: each chunk counts its own keys, a serial pass over (keys x chunks)
// turns the counts into each chunk's first slot for each key, and each chunk
// then places its nonzeros there. Chunk c's rows precede chunk c + 1's, so
// rows stay ascending within each key and the result equals the serial
// sort's, bit for bit, on any number of threads.
//
// The key of W's nonzero (r, c) is c (t_ptr: cols + 1 entries), or, with
// panel_rows > 0, (r / panel_rows) * cols + c: W^T in column panels of
// panel_rows of its columns (W's rows), panel by panel
// (t_ptr: transpose_panels(rows, panel_rows) * cols + 1 entries; panel p's
// row j is [t_ptr[p * cols + j], t_ptr[p * cols + j + 1])). The tiled
// product over W^T reads a row of its x tile per nonzero; panels keep the
// rows it reads within one panel's share of the tile (cpu_tiled.h).
template <typename T>
void transpose_csr_into(const int32_t* ptr, const int32_t* idx, const T* v, int64_t rows, int64_t cols,
                        int32_t* t_ptr, int32_t* t_idx, T* t_values, int64_t panel_rows = 0) {
  const int64_t nnz = ptr[rows];
  const int64_t panels = transpose_panels(rows, panel_rows);
  const int64_t keys = panels * cols;
  const int64_t rows_per_panel = panels == 1 ? std::max<int64_t>(rows, 1) : panel_rows;
  // The serial pass over the counts must stay small against the nonzeros.
  const int64_t chunks =
      nnz < kMinParallelTransposeNnz || at::in_parallel_region()
          ? 1
          : std::clamp<int64_t>(std::min<int64_t>(at::get_num_threads(), nnz / (4 * keys + 1)), 1, rows);
  const std::vector<int64_t> bounds = balanced_row_chunks(ptr, rows, chunks);
  // slot[c * keys + j]: chunk c's count of key j, then its next slot there.
  const int64_t used = static_cast<int64_t>(bounds.size()) - 1;
  std::vector<int32_t> slot(used * keys, 0);
  at::parallel_for(0, used, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int32_t* count = slot.data() + c * keys;
      for (int64_t r = bounds[c]; r < bounds[c + 1]; ++r) {
        int32_t* panel_count = count + r / rows_per_panel * cols;
        for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) ++panel_count[idx[k]];
      }
    }
  });
  int32_t running = 0;
  for (int64_t j = 0; j < keys; ++j) {
    t_ptr[j] = running;
    for (int64_t c = 0; c < used; ++c) {
      const int32_t n = slot[c * keys + j];
      slot[c * keys + j] = running;
      running += n;
    }
  }
  t_ptr[keys] = running;
  at::parallel_for(0, used, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      int32_t* next = slot.data() + c * keys;
      for (int64_t r = bounds[c]; r < bounds[c + 1]; ++r) {
        int32_t* panel_next = next + r / rows_per_panel * cols;
        for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) {
          const int32_t p = panel_next[idx[k]]++;
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
