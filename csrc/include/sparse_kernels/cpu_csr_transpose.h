// W^T as CSR (W's columns as rows, rows ascending within each), built per
// call by a counting sort: the CPU keeps no transposed index (16 bytes per
// stored nonzero for training, not 24), so the few kernels that are faster
// over W's columns (the fused LSTM backward, the wide-batch input gradient)
// build this copy, O(nnz), when they run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sparse_kernels::cpu {

// Writes W^T's row pointer (cols + 1), column indices and values (ptr[rows]
// each) into caller-owned arrays.
template <typename T>
void transpose_csr_into(const int32_t* ptr, const int32_t* idx, const T* v, int64_t rows, int64_t cols,
                        int32_t* t_ptr, int32_t* t_idx, T* t_values) {
  const int64_t nnz = ptr[rows];
  std::fill(t_ptr, t_ptr + cols + 1, 0);
  for (int64_t k = 0; k < nnz; ++k) ++t_ptr[idx[k] + 1];
  for (int64_t c = 0; c < cols; ++c) t_ptr[c + 1] += t_ptr[c];
  std::vector<int32_t> next(t_ptr, t_ptr + cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int32_t k = ptr[r]; k < ptr[r + 1]; ++k) {
      const int32_t p = next[idx[k]]++;
      t_idx[p] = static_cast<int32_t>(r);
      t_values[p] = v[k];
    }
  }
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
