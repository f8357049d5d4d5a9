// CSR sparse times dense, shared by sparse_linear (W, through its CSR index)
// and sparse_linear_input_grad (W^T, through the cached CSC view):
//
//   out[n, r] = sum_{k in row r} values[value_index[k] or k] * dense[n, idx[k]]  (+ bias[r])
//
// Sputnik-style work split: a subwarp of kLanes threads takes one sparse row
// and a tile of kBatchTile dense rows. The lanes stride over the row's
// nonzeros (consecutive lanes read consecutive values and indices:
// coalesced), each nonzero loaded once and used for the whole batch tile
// (kBatchTile accumulators in registers); a butterfly of warp shuffles then
// sums the lanes' partial results, and lane b writes batch row b of the tile.
// Indices and values are read kSpmmVector at a time (16-byte loads of int32
// indices) where the arrays are aligned for it. Index: int32_t, or uint16_t
// when the dense dimension has at most 65536 columns (half the index bytes).
// kLanes is picked from the mean row length so that short rows (recurrent
// layers at high sparsity) do not leave most of a warp idle. With a row_order
// (the rows sorted by decreasing length, as Sputnik does), neighbouring
// subwarps, and so the warps of a block, get rows of similar length: less
// time waiting for the longest row of a warp, and the long rows start first.
#pragma once

#include "accumulate.cuh"
#include "launch.cuh"

namespace sparse_kernels::cuda {

constexpr int kSpmmThreads = 128;
constexpr int kSpmmBatchTile = 4;
constexpr int kSpmmVector = 4;  // nonzeros per vector load: 16 bytes of int32 indices

// kVec consecutive elements, aligned so that one load moves them all.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// One nonzero (value v, dense column `column`) into the batch tile's sums.
template <typename T, int kBatchTile>
__device__ __forceinline__ void accumulate_nonzero(acc_t<T> (&acc)[kBatchTile], acc_t<T> v,
                                                   const T* column, int64_t n0, int64_t n_rows,
                                                   int64_t dense_cols) {
#pragma unroll
  for (int b = 0; b < kBatchTile; ++b)
    if (n0 + b < n_rows) acc[b] += v * to_acc(column[(n0 + b) * dense_cols]);
}

// kVec > 1: the row's nonzeros are read as aligned vectors of kVec indices
// (and values, when they are not gathered through value_index); the at most
// kVec - 1 nonzeros before the first aligned position and after the last are
// read one by one, so no load leaves [begin, end). The host checks that the
// base pointers are aligned before choosing kVec > 1.
template <typename T, typename Index, int kLanes, int kBatchTile, int kVec>
__global__ void __launch_bounds__(kSpmmThreads)
    csr_spmm_kernel(const T* __restrict__ dense, const T* __restrict__ values,
                    const int32_t* __restrict__ value_index, const int32_t* __restrict__ ptr,
                    const Index* __restrict__ idx, const int32_t* __restrict__ row_order,
                    const T* __restrict__ bias, T* __restrict__ out, int64_t n_rows,
                    int64_t dense_cols, int64_t sparse_rows) {
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "subwarp size");
  static_assert(kVec >= 1 && (kVec & (kVec - 1)) == 0, "vector width");
  using Acc = acc_t<T>;
  const int64_t group = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kLanes;
  const int lane = static_cast<int>(threadIdx.x % kLanes);
  const int64_t tiles = (n_rows + kBatchTile - 1) / kBatchTile;
  // Groups past the end still take part in the shuffles (full-warp masks).
  const bool active = group < sparse_rows * tiles;
  const int64_t slot = active ? group % sparse_rows : 0;
  const int64_t r = row_order != nullptr && active ? row_order[slot] : slot;
  const int64_t n0 = active ? group / sparse_rows * kBatchTile : 0;
  const int32_t begin = active ? ptr[r] : 0;
  const int32_t end = active ? ptr[r + 1] : 0;

  Acc acc[kBatchTile];
#pragma unroll
  for (int b = 0; b < kBatchTile; ++b) acc[b] = Acc(0);
  auto scalar = [&](int32_t k) {
    const Acc v = to_acc(values[value_index != nullptr ? value_index[k] : k]);
    accumulate_nonzero<T, kBatchTile>(acc, v, dense + idx[k], n0, n_rows, dense_cols);
  };
  if constexpr (kVec == 1) {
    for (int32_t k = begin + lane; k < end; k += kLanes) scalar(k);
  } else {
    const int32_t rounded_up = (begin + kVec - 1) & ~(kVec - 1);
    const int32_t head_end = rounded_up < end ? rounded_up : end;
    const int32_t rounded_down = end & ~(kVec - 1);
    const int32_t body_end = rounded_down > head_end ? rounded_down : head_end;
    for (int32_t k = begin + lane; k < head_end; k += kLanes) scalar(k);
    for (int32_t k = body_end + lane; k < end; k += kLanes) scalar(k);
    for (int32_t k0 = head_end + lane * kVec; k0 < body_end; k0 += kLanes * kVec) {
      const Pack<Index, kVec> cols = *reinterpret_cast<const Pack<Index, kVec>*>(idx + k0);
      if (value_index == nullptr) {
        const Pack<T, kVec> vals = *reinterpret_cast<const Pack<T, kVec>*>(values + k0);
#pragma unroll
        for (int j = 0; j < kVec; ++j)
          accumulate_nonzero<T, kBatchTile>(acc, to_acc(vals.v[j]), dense + cols.v[j], n0, n_rows,
                                            dense_cols);
      } else {
        const Pack<int32_t, kVec> at = *reinterpret_cast<const Pack<int32_t, kVec>*>(value_index + k0);
#pragma unroll
        for (int j = 0; j < kVec; ++j)
          accumulate_nonzero<T, kBatchTile>(acc, to_acc(values[at.v[j]]), dense + cols.v[j], n0,
                                            n_rows, dense_cols);
      }
    }
  }
#pragma unroll
  for (int b = 0; b < kBatchTile; ++b)
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset /= 2)
      acc[b] += __shfl_xor_sync(kFullWarp, acc[b], offset, kLanes);
  if (!active) return;
  const Acc shift = bias != nullptr ? to_acc(bias[r]) : Acc(0);
  // Unrolled with constant indices so that acc stays in registers.
#pragma unroll
  for (int b = 0; b < kBatchTile; ++b)
    if (b % kLanes == lane && n0 + b < n_rows)
      out[(n0 + b) * sparse_rows + r] = from_acc<T>(acc[b] + shift);
}

inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Picks the subwarp width from the mean row length: the fewest lanes (4 to
// 32) that cover a mean row in one pass of kVec-wide loads.
template <typename T, typename Index, int kVec>
cudaError_t launch_csr_spmm_vec(const T* dense, const T* values, const int32_t* value_index,
                                const int32_t* ptr, const Index* idx, const int32_t* row_order,
                                const T* bias, T* out, int64_t n_rows, int64_t dense_cols,
                                int64_t sparse_rows, int64_t nnz, cudaStream_t stream) {
  const int64_t tiles = (n_rows + kSpmmBatchTile - 1) / kSpmmBatchTile;
  // grid.x is at most 2^31 - 1 blocks (checked for the widest subwarp).
  if ((sparse_rows * tiles * 32 + kSpmmThreads - 1) / kSpmmThreads > 2147483647LL)
    return cudaErrorInvalidValue;
  const int64_t lanes_wanted = (nnz / sparse_rows + kVec - 1) / kVec;
  auto go = [&](auto kernel, int lanes) {
    SK_LAUNCH(kernel, blocks_for(sparse_rows * tiles * lanes, kSpmmThreads), kSpmmThreads, 0,
              stream, dense, values, value_index, ptr, idx, row_order, bias, out, n_rows,
              dense_cols, sparse_rows);
  };
  if (lanes_wanted <= 4) {
    go(csr_spmm_kernel<T, Index, 4, kSpmmBatchTile, kVec>, 4);
  } else if (lanes_wanted <= 8) {
    go(csr_spmm_kernel<T, Index, 8, kSpmmBatchTile, kVec>, 8);
  } else if (lanes_wanted <= 16) {
    go(csr_spmm_kernel<T, Index, 16, kSpmmBatchTile, kVec>, 16);
  } else {
    go(csr_spmm_kernel<T, Index, 32, kSpmmBatchTile, kVec>, 32);
  }
  return cudaGetLastError();
}

// Vector loads when the index (and value) arrays are aligned for them, as
// fresh allocations are; otherwise (a view at an odd offset) scalar loads.
// row_order: null, or a permutation of the sparse rows (the order in which
// subwarps take them).
template <typename T, typename Index>
cudaError_t launch_csr_spmm(const T* dense, const T* values, const int32_t* value_index,
                            const int32_t* ptr, const Index* idx, const int32_t* row_order,
                            const T* bias, T* out, int64_t n_rows, int64_t dense_cols,
                            int64_t sparse_rows, int64_t nnz, cudaStream_t stream) {
  if (n_rows == 0 || sparse_rows == 0) return cudaSuccess;
  const bool vectors =
      aligned_to(idx, sizeof(Pack<Index, kSpmmVector>)) &&
      (value_index != nullptr ? aligned_to(value_index, sizeof(Pack<int32_t, kSpmmVector>))
                              : aligned_to(values, sizeof(Pack<T, kSpmmVector>)));
  if (vectors)
    return launch_csr_spmm_vec<T, Index, kSpmmVector>(dense, values, value_index, ptr, idx, row_order,
                                               bias, out, n_rows, dense_cols, sparse_rows, nnz,
                                               stream);
  return launch_csr_spmm_vec<T, Index, 1>(dense, values, value_index, ptr, idx, row_order, bias, out,
                                   n_rows, dense_cols, sparse_rows, nnz, stream);
}

}  // namespace sparse_kernels::cuda
