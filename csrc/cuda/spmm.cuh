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

template <typename T, int kLanes, int kBatchTile>
__global__ void __launch_bounds__(kSpmmThreads)
    csr_spmm_kernel(const T* __restrict__ dense, const T* __restrict__ values,
                    const int32_t* __restrict__ value_index, const int32_t* __restrict__ ptr,
                    const int32_t* __restrict__ idx, const int32_t* __restrict__ row_order,
                    const T* __restrict__ bias, T* __restrict__ out, int64_t n_rows,
                    int64_t dense_cols, int64_t sparse_rows) {
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "subwarp size");
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
  for (int32_t k = begin + lane; k < end; k += kLanes) {
    const Acc v = to_acc(values[value_index != nullptr ? value_index[k] : k]);
    const T* column = dense + idx[k];
#pragma unroll
    for (int b = 0; b < kBatchTile; ++b)
      if (n0 + b < n_rows) acc[b] += v * to_acc(column[(n0 + b) * dense_cols]);
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

// Launches csr_spmm_kernel with the subwarp size that fits the mean row
// length (nnz / sparse_rows). row_order: null, or a permutation of the
// sparse rows (the order in which subwarps take them).
template <typename T>
cudaError_t launch_csr_spmm(const T* dense, const T* values, const int32_t* value_index,
                            const int32_t* ptr, const int32_t* idx, const int32_t* row_order,
                            const T* bias, T* out, int64_t n_rows, int64_t dense_cols,
                            int64_t sparse_rows, int64_t nnz, cudaStream_t stream) {
  if (n_rows == 0 || sparse_rows == 0) return cudaSuccess;
  const int64_t tiles = (n_rows + kSpmmBatchTile - 1) / kSpmmBatchTile;
  const int64_t mean_row = nnz / sparse_rows;
  auto go = [&](auto kernel, int lanes) {
    SK_LAUNCH(kernel, blocks_for(sparse_rows * tiles * lanes, kSpmmThreads), kSpmmThreads, 0,
              stream, dense, values, value_index, ptr, idx, row_order, bias, out, n_rows,
              dense_cols, sparse_rows);
  };
  if (mean_row <= 4) {
    go(csr_spmm_kernel<T, 4, kSpmmBatchTile>, 4);
  } else if (mean_row <= 8) {
    go(csr_spmm_kernel<T, 8, kSpmmBatchTile>, 8);
  } else if (mean_row <= 16) {
    go(csr_spmm_kernel<T, 16, kSpmmBatchTile>, 16);
  } else {
    go(csr_spmm_kernel<T, 32, kSpmmBatchTile>, 32);
  }
  return cudaGetLastError();
}

}  // namespace sparse_kernels::cuda
