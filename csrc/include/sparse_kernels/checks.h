// Argument checks shared by the backends. The Python layer (the sparse_kernels/ops package)
// raises clear ValueError/TypeError first; these are the last line of defence
// for callers who go straight to torch.ops.sparse_kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <sstream>
#include <optional>
#include <utility>
#include <vector>

#define SK_CHECK_INDEX(t)                                                   \
  TORCH_CHECK((t).scalar_type() == at::kInt && (t).dim() == 1 &&            \
                  (t).is_contiguous(),                                      \
              #t " must be a contiguous 1-D int32 tensor, got ",            \
              (t).scalar_type(), " with shape ", (t).sizes())

#define SK_CHECK_FLOAT(t)                                                   \
  TORCH_CHECK(at::isFloatingType((t).scalar_type()),                        \
              #t " must be a floating-point tensor, got ", (t).scalar_type())

#define SK_CHECK_SAME_DTYPE(a, b)                                           \
  TORCH_CHECK((a).scalar_type() == (b).scalar_type(), #a " and " #b         \
              " must have the same dtype, got ", (a).scalar_type(), " and ", \
              (b).scalar_type())

#define SK_CHECK_DIM(t, d)                                                  \
  TORCH_CHECK((t).dim() == (d), #t " must be " #d "-D, got shape ",         \
              (t).sizes())

// The arguments of a weight gradient grad_output^T @ input read at (or
// around) a CSR pattern: grad_output (N, out), input (N, in), int32 indices.
namespace sparse_kernels {
inline void check_weight_gradient_args(const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& row_ptr, const at::Tensor& col_idx) {
  SK_CHECK_DIM(grad_output, 2);
  SK_CHECK_DIM(input, 2);
  SK_CHECK_FLOAT(grad_output);
  SK_CHECK_SAME_DTYPE(grad_output, input);
  SK_CHECK_INDEX(row_ptr);
  SK_CHECK_INDEX(col_idx);
  TORCH_CHECK(grad_output.size(0) == input.size(0),
              "grad_output and input must have the same number of rows, got ",
              grad_output.size(0), " and ", input.size(0));
  TORCH_CHECK(grad_output.size(1) == row_ptr.numel() - 1,
              "grad_output must have out_features = ", row_ptr.numel() - 1,
              " columns, got ", grad_output.size(1));
}
}  // namespace sparse_kernels

// ---------------------------------------------------------------------------
// The structure of the sparse indices, checked at the op boundaries so that a
// caller going straight to torch.ops.sparse_kernels with a malformed index
// gets a RuntimeError instead of an out-of-bounds access or a silently
// different matrix (the Python layer raises clearer errors first).
//
// A check reads the whole index (O(rows + nnz)), which costs about as much as
// a product at batch 1 (measured: sparse_linear 70 -> 220 us on 1024 x 1024 at
// density 0.1). So each thread remembers the indices it found valid, by
// identity: the tensor's storage (held weakly: a freed storage cannot be
// mistaken for a new one at the same address), offset, length and version
// counter (bumped by every in-place write through torch, e.g. copy_ or
// load_state_dict). A weight used again is then checked in O(1); a new or
// modified index is read in full. CUDA tensors are skipped: reading them here
// would synchronise the device; the Python layer checks those
// (sparse_kernels.csr.validate_csr).
namespace sparse_kernels {
namespace detail {

inline void check_int32_vector(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kInt && t.dim() == 1 && t.is_contiguous(), name,
              " must be a contiguous 1-D int32 tensor, got ", t.scalar_type(), " with shape ",
              t.sizes());
}

// Which tensor, and which content of it, a past check saw.
struct TensorKey {
  std::optional<c10::weak_intrusive_ptr<c10::StorageImpl>> storage;
  int64_t offset = -1, numel = -1, version = -1;

  static bool cacheable(const at::Tensor& t) { return t.has_storage() && !t.is_inference(); }
  static TensorKey of(const at::Tensor& t) {
    return {t.storage().getWeakStorageImpl(), t.storage_offset(), t.numel(), t._version()};
  }
  bool matches(const at::Tensor& t) const {
    return storage.has_value() && numel == t.numel() && offset == t.storage_offset() &&
           storage->_unsafe_get_target() == t.storage().unsafeGetStorageImpl() &&
           !storage->expired() && version == t._version();
  }
};

// The checks passed on this thread: (kind, tensors, bound), bounded in size.
class ValidatedIndices {
 public:
  enum Kind { kCompressed, kCompressedSorted, kBounds, kTransposed, kBlockedView };

  // Whether this exact check (or a stricter one: sorted for unsorted, a
  // smaller bound) already passed on these tensors in their current state.
  bool contains(Kind kind, std::initializer_list<const at::Tensor*> tensors, int64_t bound) const {
    for (const Entry& e : entries_) {
      const bool kind_ok = e.kind == kind || (kind == kCompressed && e.kind == kCompressedSorted);
      if (!kind_ok || e.bound > bound || e.keys.size() != tensors.size()) continue;
      bool same = true;
      size_t i = 0;
      for (const at::Tensor* t : tensors) same = same && e.keys[i++].matches(*t);
      if (same) return true;
    }
    return false;
  }

  void add(Kind kind, std::initializer_list<const at::Tensor*> tensors, int64_t bound) {
    Entry e{kind, bound, {}};
    for (const at::Tensor* t : tensors) {
      if (!TensorKey::cacheable(*t)) return;
      e.keys.push_back(TensorKey::of(*t));
    }
    if (entries_.size() < kCapacity) {
      entries_.push_back(std::move(e));
    } else {
      entries_[next_] = std::move(e);
      next_ = (next_ + 1) % kCapacity;
    }
  }

  static ValidatedIndices& of_this_thread() {
    thread_local ValidatedIndices cache;
    return cache;
  }

 private:
  // Enough for every index of a large model (each weight needs up to four).
  static constexpr size_t kCapacity = 256;
  struct Entry {
    Kind kind;
    int64_t bound;
    std::vector<TensorKey> keys;
  };
  std::vector<Entry> entries_;
  size_t next_ = 0;
};

inline bool all_cacheable(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    if (!TensorKey::cacheable(*t)) return false;
  }
  return true;
}

// The first entry of v outside [0, bound), or -1. Vectorised: one unsigned
// compare per entry (a negative int32 wraps above every bound <= 2^31).
inline int64_t first_out_of_range(const int32_t* v, int64_t n, int64_t bound) {
  const uint32_t ub = static_cast<uint32_t>(std::min<int64_t>(bound, int64_t{1} << 31));
  std::atomic<bool> bad{false};
  at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t i0, int64_t i1) {
    bool chunk_bad = false;
    for (int64_t i = i0; i < i1; ++i) chunk_bad |= static_cast<uint32_t>(v[i]) >= ub;
    if (chunk_bad) bad.store(true);
  });
  if (!bad.load()) return -1;
  int64_t i = 0;
  while (static_cast<uint32_t>(v[i]) < ub) ++i;
  return i;
}
}  // namespace detail

// A compressed sparse index: CSR (ptr = row_ptr, idx = col_idx, minor =
// columns) or a CSC view (col_ptr, row_idx, rows). ptr runs from 0 to nnz =
// idx.numel() without decreasing and every idx is in [0, minor): what the
// kernels need to stay inside their buffers. With `sorted` (the default),
// idx must also strictly increase within each row (no duplicates): the full
// format of sparse_kernels.csr.validate_csr.
inline void check_compressed_index(const at::Tensor& ptr, const at::Tensor& idx, int64_t minor,
                                   const char* ptr_name, const char* idx_name, bool sorted = true) {
  detail::check_int32_vector(ptr, ptr_name);
  detail::check_int32_vector(idx, idx_name);
  TORCH_CHECK(ptr.numel() >= 1, ptr_name, " must have (rows + 1) >= 1 entries");
  if (!ptr.device().is_cpu() || !idx.device().is_cpu()) return;
  using Cache = detail::ValidatedIndices;
  const Cache::Kind kind = sorted ? Cache::kCompressedSorted : Cache::kCompressed;
  Cache& cache = Cache::of_this_thread();
  const bool cacheable = detail::all_cacheable({&ptr, &idx});
  if (cacheable && cache.contains(kind, {&ptr, &idx}, minor)) return;
  const int32_t* p = ptr.data_ptr<int32_t>();
  const int32_t* v = idx.data_ptr<int32_t>();
  const int64_t major = ptr.numel() - 1, nnz = idx.numel();
  TORCH_CHECK(p[0] == 0, ptr_name, " must start at 0, got ", p[0]);
  TORCH_CHECK(p[major] == nnz, ptr_name, " must end at nnz = ", nnz, " (the length of ", idx_name,
              "), got ", p[major]);
  int64_t first_decrease = -1;
  for (int64_t r = 0; r < major && first_decrease < 0; ++r) {
    if (p[r] > p[r + 1]) first_decrease = r;
  }
  TORCH_CHECK(first_decrease < 0, ptr_name, " must be non-decreasing, got ", p[first_decrease],
              " then ", p[first_decrease + 1], " at entry ", first_decrease);
  const int64_t out = detail::first_out_of_range(v, nnz, minor);
  TORCH_CHECK(out < 0, idx_name, " must hold values in [0, ", minor, "), got ", v[out < 0 ? 0 : out],
              " at entry ", out);
  if (sorted && nnz > 0) {
    std::atomic<int64_t> first_bad{major};
    at::parallel_for(0, major, std::max<int64_t>(1, (int64_t{1} << 16) * major / nnz),
                     [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        bool bad = false;
        for (int32_t k = p[r] + 1; k < p[r + 1]; ++k) bad |= v[k] <= v[k - 1];
        if (bad) {
          int64_t seen = first_bad.load();
          while (r < seen && !first_bad.compare_exchange_weak(seen, r)) {}
          return;
        }
      }
    });
    const int64_t r = first_bad.load();
    if (r < major) {
      std::ostringstream entries;
      for (int32_t k = p[r]; k < p[r + 1] && k < p[r] + 8; ++k) {
        entries << (k > p[r] ? ", " : "") << v[k];
      }
      TORCH_CHECK(false, idx_name, " must be strictly increasing (sorted, no duplicates) within each "
                  "slice of ", ptr_name, "; slice ", r, " holds [", entries.str(),
                  p[r + 1] - p[r] > 8 ? ", ...]" : "]");
    }
  }
  if (cacheable) cache.add(kind, {&ptr, &idx}, minor);
}

// Every entry of a permutation-like index (csr2csc) in [0, bound).
inline void check_index_bounds(const at::Tensor& idx, int64_t bound, const char* name) {
  detail::check_int32_vector(idx, name);
  if (!idx.device().is_cpu()) return;
  using Cache = detail::ValidatedIndices;
  Cache& cache = Cache::of_this_thread();
  const bool cacheable = detail::all_cacheable({&idx});
  if (cacheable && cache.contains(Cache::kBounds, {&idx}, bound)) return;
  const int32_t* v = idx.data_ptr<int32_t>();
  const int64_t out = detail::first_out_of_range(v, idx.numel(), bound);
  TORCH_CHECK(out < 0, name, " must hold values in [0, ", bound, "), got ", v[out < 0 ? 0 : out],
              " at entry ", out);
  if (cacheable) cache.add(Cache::kBounds, {&idx}, bound);
}

// That a transposed index (col_ptr, row_idx, csr2csc) is the CSC view of the
// CSR (row_ptr, col_idx), both already checked by check_compressed_index:
// the slot s = csr2csc[p] of the p-th entry of column c must lie in row
// row_idx[p] and column c. Since the CSC lists each (row, column) once, the
// map p -> s is then a permutation. O(nnz).
inline void check_transposed_index(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                   const at::Tensor& col_ptr, const at::Tensor& row_idx,
                                   const at::Tensor& csr2csc) {
  const int64_t nnz = col_idx.numel();
  TORCH_CHECK(row_idx.numel() == nnz && csr2csc.numel() == nnz,
              "row_idx and csr2csc must have nnz = ", nnz, " entries, got ", row_idx.numel(),
              " and ", csr2csc.numel());
  check_index_bounds(csr2csc, nnz, "csr2csc");
  if (!col_ptr.device().is_cpu() || nnz == 0) return;
  using Cache = detail::ValidatedIndices;
  Cache& cache = Cache::of_this_thread();
  const auto tensors = {&row_ptr, &col_idx, &col_ptr, &row_idx, &csr2csc};
  const bool cacheable = detail::all_cacheable(tensors);
  if (cacheable && cache.contains(Cache::kTransposed, tensors, 0)) return;
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  const int32_t* cp = col_ptr.data_ptr<int32_t>();
  const int32_t* ri = row_idx.data_ptr<int32_t>();
  const int32_t* perm = csr2csc.data_ptr<int32_t>();
  const int64_t cols = col_ptr.numel() - 1, rows = row_ptr.numel() - 1;
  std::atomic<bool> bad{false};
  at::parallel_for(0, cols, std::max<int64_t>(1, (int64_t{1} << 16) * cols / nnz),
                   [&](int64_t c0, int64_t c1) {
    bool chunk_bad = false;
    for (int64_t c = c0; c < c1; ++c) {
      for (int32_t p = cp[c]; p < cp[c + 1]; ++p) {
        const int32_t s = perm[p], r = ri[p];
        chunk_bad |= r >= rows || s < rp[r] || s >= rp[r + 1] || ci[s] != c;
      }
    }
    if (chunk_bad) bad.store(true);
  });
  TORCH_CHECK(!bad.load(), "the transposed index (col_ptr, row_idx, csr2csc) is not the CSC view of "
              "(row_ptr, col_idx)");
  if (cacheable) cache.add(Cache::kTransposed, tensors, 0);
}

// The transposed index of a CSR matrix with `cols` columns: its own structure
// (col_ptr, row_idx) and that it matches (row_ptr, col_idx).
inline void check_csc_view(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                           const at::Tensor& col_ptr, const at::Tensor& row_idx,
                           const at::Tensor& csr2csc, int64_t cols, const char* matrix) {
  detail::check_int32_vector(col_ptr, "col_ptr");
  TORCH_CHECK(col_ptr.numel() == cols + 1, "the col_ptr of ", matrix, " must have columns + 1 = ",
              cols + 1, " entries, got ", col_ptr.numel());
  check_compressed_index(col_ptr, row_idx, row_ptr.numel() - 1, "col_ptr", "row_idx");
  check_transposed_index(row_ptr, col_idx, col_ptr, row_idx, csr2csc);
}

// An optional transposed index (all three tensors or none): checked as
// check_csc_view when given. The layer loops take one per matrix; only the
// CUDA backward reads it (the CPU scatters from the CSR).
inline void check_optional_csc_view(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                    const std::optional<at::Tensor>& col_ptr,
                                    const std::optional<at::Tensor>& row_idx,
                                    const std::optional<at::Tensor>& csr2csc, int64_t cols,
                                    const char* matrix) {
  const int given = col_ptr.has_value() + row_idx.has_value() + csr2csc.has_value();
  TORCH_CHECK(given == 0 || given == 3, "the transposed index of ", matrix,
              " (col_ptr, row_idx, csr2csc) must be given whole or not at all");
  if (given == 3) check_csc_view(row_ptr, col_idx, *col_ptr, *row_idx, *csr2csc, cols, matrix);
}

// The optional compact index of a CSR (or CSC view) (ptr, idx) whose minor
// dimension has at most 65536 entries (sparse_kernels.csr.index16): idx16,
// the same indices as uint16 (half the index bytes the CUDA products read),
// and order, a permutation of the major rows (longest first: load balance).
// Either may be absent. Kinds, lengths, device and the 65536 bound always.
// On the CPU, whose kernels read neither, also the contents (idx16 == idx,
// order a permutation; O(nnz + rows log rows)), so that what a caller passes
// is never silently inconsistent. On CUDA the contents are the Python
// layer's to check (sparse_kernels.ops, validate=True): reading them here would
// synchronise the device, as for the CSR itself.
inline void check_index16(const at::Tensor& ptr, const at::Tensor& idx, int64_t minor,
                          const std::optional<at::Tensor>& idx16,
                          const std::optional<at::Tensor>& order, const char* idx_name,
                          const char* idx16_name, const char* order_name) {
  if (idx16.has_value()) {
    const at::Tensor& t = *idx16;
    TORCH_CHECK(t.scalar_type() == at::kUInt16 && t.dim() == 1 && t.is_contiguous(), idx16_name,
                " must be a contiguous 1-D uint16 tensor, got ", t.scalar_type(), " with shape ",
                t.sizes());
    TORCH_CHECK(t.numel() == idx.numel(), idx16_name, " must have one entry per ", idx_name,
                " entry (", idx.numel(), "), got ", t.numel());
    TORCH_CHECK(t.device() == idx.device(), idx16_name, " must be on the device of ", idx_name,
                " (", idx.device(), "), got ", t.device());
    TORCH_CHECK(minor <= 65536, idx16_name, " exists only for at most 65536 indexed columns, got ",
                minor);
    if (t.device().is_cpu()) {
      TORCH_CHECK(at::equal(t.to(at::kInt), idx), idx16_name, " must hold the indices of ", idx_name);
    }
  }
  if (order.has_value()) {
    const at::Tensor& t = *order;
    detail::check_int32_vector(t, order_name);
    const int64_t rows = ptr.numel() - 1;
    TORCH_CHECK(t.numel() == rows, order_name, " must have one entry per row (", rows, "), got ",
                t.numel());
    TORCH_CHECK(t.device() == ptr.device(), order_name, " must be on the device of the index (",
                ptr.device(), "), got ", t.device());
    if (t.device().is_cpu()) {
      TORCH_CHECK(at::equal(std::get<0>(t.sort()), at::arange(rows, t.options())), order_name,
                  " must be a permutation of the ", rows, " rows");
    }
  }
}

// sparse_linear's four compact-index arguments (CPU and CUDA alike): the
// CSR's (col_idx16, row_order over in_features columns) and the CSC view's
// (row_idx16, col_order over the rows of W), which needs the view itself.
inline void check_sparse_linear_index16(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                        int64_t in_features, const std::optional<at::Tensor>& col_ptr,
                                        const std::optional<at::Tensor>& row_idx,
                                        const std::optional<at::Tensor>& col_idx16,
                                        const std::optional<at::Tensor>& row_order,
                                        const std::optional<at::Tensor>& row_idx16,
                                        const std::optional<at::Tensor>& col_order) {
  check_index16(row_ptr, col_idx, in_features, col_idx16, row_order, "col_idx", "col_idx16", "row_order");
  if (!row_idx16.has_value() && !col_order.has_value()) return;
  TORCH_CHECK(col_ptr.has_value() && row_idx.has_value(), "row_idx16 and col_order index the "
              "transposed index: give col_ptr, row_idx and csr2csc with them");
  SK_CHECK_INDEX((*col_ptr));
  SK_CHECK_INDEX((*row_idx));
  check_index16(*col_ptr, *row_idx, row_ptr.numel() - 1, row_idx16, col_order, "row_idx", "row_idx16",
                "col_order");
}

// The fused LSTM cell's arguments, CPU and CUDA alike: gates (N, 4H) and
// c_prev (N, H) of one dtype; for the backward also grad_h, grad_c and c
// shaped and typed as c_prev.
inline void check_lstm_cell_args(const at::Tensor& gates, const at::Tensor& c_prev) {
  SK_CHECK_DIM(gates, 2);
  SK_CHECK_DIM(c_prev, 2);
  SK_CHECK_SAME_DTYPE(gates, c_prev);
  TORCH_CHECK(gates.size(0) == c_prev.size(0) && gates.size(1) == 4 * c_prev.size(1),
              "gates must have shape (N, 4*H) for c_prev of shape (N, H), got ", gates.sizes(), " and ",
              c_prev.sizes());
}

inline void check_lstm_cell_backward_args(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                          const at::Tensor& gates, const at::Tensor& c_prev,
                                          const at::Tensor& c) {
  check_lstm_cell_args(gates, c_prev);
  const std::pair<const at::Tensor*, const char*> same_as_c_prev[] = {
      {&grad_h, "grad_h"}, {&grad_c, "grad_c"}, {&c, "c"}};
  for (const auto& [t, name] : same_as_c_prev) {
    TORCH_CHECK(t->sizes() == c_prev.sizes() && t->scalar_type() == c_prev.scalar_type(), name,
                " must match c_prev (", c_prev.sizes(), ", ", c_prev.scalar_type(), "), got ", t->sizes(),
                ", ", t->scalar_type());
  }
}

// The block values of a BSR matrix: contiguous (nblocks, bh, bw), one block
// per block_col_idx (or block_row_idx) entry, blocks of at least 1 x 1.
inline void check_block_values(const at::Tensor& values, const at::Tensor& block_index) {
  TORCH_CHECK(values.dim() == 3 && values.is_contiguous(),
              "values must be contiguous 3-D (nblocks, block_height, block_width), got shape ",
              values.sizes());
  TORCH_CHECK(values.size(0) == block_index.numel(), "values must hold one block per block index entry (",
              block_index.numel(), "), got ", values.size(0));
  TORCH_CHECK(values.size(1) >= 1 && values.size(2) >= 1, "blocks must be at least 1 x 1, got ",
              values.size(1), " x ", values.size(2));
}

// The argument checks the BSR ops share across backends (the CPU kernels and
// the CUDA bindings; the CPU also refuses non-float types, CUDA takes 16-bit
// ones). Each returns the dimension the op derives from its block index.

// bsr_linear: input (N, in), blocks over (block_row_ptr, block_col_idx),
// optional bias -> out_features.
inline int64_t check_bsr_linear_args(const at::Tensor& input, const at::Tensor& values,
                                     const at::Tensor& block_row_ptr,
                                     const at::Tensor& block_col_idx,
                                     const std::optional<at::Tensor>& bias) {
  SK_CHECK_DIM(input, 2);
  SK_CHECK_SAME_DTYPE(input, values);
  SK_CHECK_INDEX(block_row_ptr);
  SK_CHECK_INDEX(block_col_idx);
  check_block_values(values, block_col_idx);
  TORCH_CHECK(block_row_ptr.numel() >= 1, "block_row_ptr must have block rows + 1 entries");
  const int64_t bh = values.size(1), bw = values.size(2);
  const int64_t out_features = (block_row_ptr.numel() - 1) * bh;
  TORCH_CHECK(input.size(1) % bw == 0, "input must have a multiple of the block width ", bw,
              " as in_features, got ", input.size(1));
  if (bias.has_value()) {
    SK_CHECK_SAME_DTYPE(input, (*bias));
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == out_features, "bias must have shape (",
                out_features, "), got ", bias->sizes());
  }
  // The block structure, as for CSR (CPU tensors; issue 16 found it unchecked):
  // a block column past in_features / bw would be read out of bounds.
  check_compressed_index(block_row_ptr, block_col_idx, input.size(1) / bw, "block_row_ptr", "block_col_idx");
  return out_features;
}

// bsr_linear_input_grad: grad_output (N, out), blocks through the transposed
// block index -> in_features.
inline int64_t check_bsr_input_grad_args(const at::Tensor& grad_output, const at::Tensor& values,
                                         const at::Tensor& block_col_ptr,
                                         const at::Tensor& block_row_idx,
                                         const at::Tensor& block_csr2csc) {
  SK_CHECK_DIM(grad_output, 2);
  SK_CHECK_SAME_DTYPE(grad_output, values);
  SK_CHECK_INDEX(block_col_ptr);
  SK_CHECK_INDEX(block_row_idx);
  SK_CHECK_INDEX(block_csr2csc);
  check_block_values(values, block_row_idx);
  TORCH_CHECK(block_csr2csc.numel() == block_row_idx.numel(),
              "block_row_idx and block_csr2csc must have one entry per block");
  TORCH_CHECK(block_col_ptr.numel() >= 1, "block_col_ptr must have block columns + 1 entries");
  const int64_t bh = values.size(1);
  TORCH_CHECK(grad_output.size(1) % bh == 0, "grad_output must have a multiple of the block height ",
              bh, " as out_features, got ", grad_output.size(1));
  check_compressed_index(block_col_ptr, block_row_idx, grad_output.size(1) / bh, "block_col_ptr",
                         "block_row_idx");
  check_index_bounds(block_csr2csc, block_row_idx.numel(), "block_csr2csc");
  return (block_col_ptr.numel() - 1) * values.size(2);
}

// bsr_linear_value_grad: grad_output (N, out), input (N, in), the block
// pattern and shape.
inline void check_bsr_value_grad_args(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& block_row_ptr,
                                      const at::Tensor& block_col_idx, int64_t bh, int64_t bw) {
  SK_CHECK_DIM(grad_output, 2);
  SK_CHECK_DIM(input, 2);
  SK_CHECK_SAME_DTYPE(grad_output, input);
  SK_CHECK_INDEX(block_row_ptr);
  SK_CHECK_INDEX(block_col_idx);
  TORCH_CHECK(bh >= 1 && bw >= 1, "the block shape must be at least 1 x 1, got ", bh, " x ", bw);
  TORCH_CHECK(block_row_ptr.numel() >= 1, "block_row_ptr must have block rows + 1 entries");
  TORCH_CHECK(grad_output.size(0) == input.size(0),
              "grad_output and input must have the same number of rows, got ", grad_output.size(0),
              " and ", input.size(0));
  TORCH_CHECK(grad_output.size(1) == (block_row_ptr.numel() - 1) * bh,
              "grad_output must have out_features = ", (block_row_ptr.numel() - 1) * bh,
              " columns, got ", grad_output.size(1));
  TORCH_CHECK(input.size(1) % bw == 0, "input must have a multiple of the block width ", bw,
              " as in_features, got ", input.size(1));
  check_compressed_index(block_row_ptr, block_col_idx, input.size(1) / bw, "block_row_ptr", "block_col_idx");
}
}  // namespace sparse_kernels
