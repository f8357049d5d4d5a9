// CPU rebuild: merge the kept slots with the grown positions row by row (both
// sorted) into a new CSR, and return the slot permutation new -> old (-1 for a
// grown slot) with which values and optimizer state are carried over.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_kernels.h"
#include "sparse_kernels/topology.h"

namespace sparse_kernels::cpu {

std::tuple<at::Tensor, at::Tensor, at::Tensor> rebuild_csr(const at::Tensor& row_ptr,
                                                           const at::Tensor& col_idx,
                                                           const at::Tensor& keep,
                                                           const at::Tensor& grow_row_ptr,
                                                           const at::Tensor& grow_col_idx) {
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  SK_CHECK_INDEX(grow_row_ptr);
  SK_CHECK_INDEX(grow_col_idx);
  TORCH_CHECK(grow_row_ptr.numel() == row_ptr.numel(),
              "grow_row_ptr must have as many entries as row_ptr (", row_ptr.numel(), "), got ",
              grow_row_ptr.numel());
  topology::check_mask(keep, col_idx.numel(), "keep");
  // The merge below needs both patterns sorted within rows.
  check_compressed_index(row_ptr, col_idx, INT32_MAX, "row_ptr", "col_idx");
  check_compressed_index(grow_row_ptr, grow_col_idx, INT32_MAX, "grow_row_ptr", "grow_col_idx");
  const int64_t rows = row_ptr.numel() - 1;
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const bool* kp = keep.data_ptr<bool>();
  const int32_t* grp = grow_row_ptr.data_ptr<int32_t>();
  const int32_t* gci = grow_col_idx.data_ptr<int32_t>();
  TORCH_CHECK(rows < 0 || grp[rows] == grow_col_idx.numel(),
              "grow_row_ptr must end at len(grow_col_idx)");

  at::Tensor new_row_ptr = at::empty({rows + 1}, row_ptr.options());
  int32_t* nrp = new_row_ptr.data_ptr<int32_t>();
  if (rows >= 0) nrp[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t kept = 0;
    for (int32_t s = rp[r]; s < rp[r + 1]; ++s) kept += kp[s];
    const int64_t next = nrp[r] + kept + (grp[r + 1] - grp[r]);
    TORCH_CHECK(next <= INT32_MAX, "the rebuilt pattern does not fit int32 indices");
    nrp[r + 1] = static_cast<int32_t>(next);
  }
  const int64_t nnz = rows >= 0 ? nrp[rows] : 0;
  at::Tensor new_col_idx = at::empty({nnz}, col_idx.options());
  at::Tensor perm = at::empty({nnz}, col_idx.options().dtype(at::kLong));
  int32_t* nci = new_col_idx.data_ptr<int32_t>();
  int64_t* pm = perm.data_ptr<int64_t>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int32_t s = rp[r], t = grp[r];
      int64_t out = nrp[r];
      while (true) {
        while (s < rp[r + 1] && !kp[s]) ++s;
        const bool has_old = s < rp[r + 1], has_new = t < grp[r + 1];
        if (!has_old && !has_new) break;
        TORCH_CHECK(!(has_old && has_new && ci[s] == gci[t]), "grown position (", r, ", ", gci[t],
                    ") is already stored");
        if (has_old && (!has_new || ci[s] < gci[t])) {
          nci[out] = ci[s];
          pm[out++] = s++;
        } else {
          nci[out] = gci[t++];
          pm[out++] = -1;
        }
      }
    }
  });
  return {new_row_ptr, new_col_idx, perm};
}

}  // namespace sparse_kernels::cpu

TORCH_LIBRARY_IMPL(sparse_kernels, CPU, m) {
  m.impl("rebuild_csr", &sparse_kernels::cpu::rebuild_csr);
}
