// CUDA value gradient (SDDMM) of sparse_linear at the stored nonzeros:
//   grad_values[k] = sum_n grad_y[n, r] * x[n, col_idx[k]]   for k in row r.
//
// One block per row r of W: the lanes of each warp take 32 consecutive
// nonzeros of the row (coalesced index loads, a gather from each x row),
// the block's warps split the batch rows n between them, and the warps'
// partial sums meet in shared memory. grad_y[n, r] is one broadcast load per
// warp. Nonzeros are written once, no atomics.
//
// Wide batches (sddmm_wide_kernel, issue #14): the batch on the lanes, over
// the transposed operands grad_yT (out, ld) and xT (in, ld) (wide_batch.cuh).
// A subwarp of kLanes takes one row r and kChunk = min(kLanes, 16) of its
// nonzeros at a time (their columns staged in shared memory); for each batch
// tile a lane loads its kVec elements of grad_yT[r] once and of xT[col] for
// each of the nonzeros (16-byte loads), keeping kChunk partial sums, one per
// nonzero. After the whole batch the lanes kChunk apart add their sums, and
// a transposing butterfly (kChunk - 1 shuffles) leaves lane j the total of
// nonzero j, which it writes (coalesced). (32 partial sums per lane made
// ptxas spill; 16 do not, for one more shuffle per nonzero and batch.)
#include "accumulate.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "wide_batch.cuh"

namespace sparse_kernels::cuda {

constexpr int kSddmmWarps = 4;
constexpr int kSddmmThreads = 32 * kSddmmWarps;

template <typename T>
__global__ void __launch_bounds__(kSddmmThreads)
    sddmm_row_kernel(const T* __restrict__ grad_y, const T* __restrict__ x,
                     const int32_t* __restrict__ row_ptr, const int32_t* __restrict__ col_idx,
                     T* __restrict__ grad_values, int64_t n_rows, int64_t in_features,
                     int64_t out_features) {
  using Acc = acc_t<T>;
  __shared__ Acc partial[kSddmmWarps][32];
  const int64_t r = blockIdx.x;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
  const int32_t begin = row_ptr[r], end = row_ptr[r + 1];
  // The chunk loop is uniform over the block: every thread meets every barrier.
  for (int32_t chunk = begin; chunk < end; chunk += 32) {
    const int32_t k = chunk + lane;
    Acc acc = Acc(0);
    if (k < end) {
      const T* x_col = x + col_idx[k];
      for (int64_t n = warp; n < n_rows; n += kSddmmWarps)
        acc += to_acc(grad_y[n * out_features + r]) * to_acc(x_col[n * in_features]);
    }
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && k < end) {
      Acc total = partial[0][lane];
#pragma unroll
      for (int w = 1; w < kSddmmWarps; ++w) total += partial[w][lane];
      grad_values[k] = from_acc<T>(total);
    }
    __syncthreads();  // partial is overwritten by the next chunk
  }
}

template <typename T>
cudaError_t sparse_linear_value_grad(const T* grad_y, const T* x,
                                     const int32_t* row_ptr,
                                     const int32_t* col_idx, T* grad_values,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, int64_t nnz,
                                     cudaStream_t stream) {
  if (nnz == 0) return cudaSuccess;
  SK_LAUNCH(sddmm_row_kernel<T>, static_cast<unsigned>(out_features), kSddmmThreads, 0, stream,
            grad_y, x, row_ptr, col_idx, grad_values, n_rows, in_features, out_features);
  return cudaGetLastError();
}

// Sums vals[j] over kCount consecutive lanes for every j at once: at each
// step (kHalf = kCount/2, ..., 1) a lane keeps half of its values and adds
// its partner's copy of them. Afterwards lane l holds in vals[0] the total
// of vals[l % kCount]. A template recursion, so that every index is a
// constant and vals stays in registers. kLanes: the subwarp's shuffle width.
template <int kHalf, int kLanes, typename Acc, int kCount>
__device__ __forceinline__ void transpose_reduce(Acc (&vals)[kCount], int lane) {
  if constexpr (kHalf >= 1) {
    const bool upper = (lane & kHalf) != 0;
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const Acc send = upper ? vals[i] : vals[i + kHalf];
      const Acc keep = upper ? vals[i + kHalf] : vals[i];
      vals[i] = keep + __shfl_xor_sync(kFullWarp, send, kHalf, kLanes);
    }
    transpose_reduce<kHalf / 2, kLanes>(vals, lane);
  }
}

// One batch tile's products for the staged nonzeros: kMasked for the last,
// partial tile (element loads inside the batch only), else 16-byte loads.
template <bool kMasked, typename T, int kChunk, int kVec>
__device__ __forceinline__ void sddmm_tile(acc_t<T> (&partial)[kChunk], const T* grad_y_row, const T* xT,
                                           int64_t ld_x, const int32_t* cols, int count, int64_t n0,
                                           int64_t n_cols) {
  using Acc = acc_t<T>;
  Acc g[kVec];
  if constexpr (kMasked) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) g[i] = n0 + i < n_cols ? to_acc(grad_y_row[n0 + i]) : Acc(0);
  } else {
    const WidePack<T, kVec> p = *reinterpret_cast<const WidePack<T, kVec>*>(grad_y_row + n0);
#pragma unroll
    for (int i = 0; i < kVec; ++i) g[i] = to_acc(p.v[i]);
  }
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    if (j < count) {
      const T* x_row = xT + static_cast<int64_t>(cols[j]) * ld_x + n0;
      if constexpr (kMasked) {
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          if (n0 + i < n_cols) partial[j] += g[i] * to_acc(x_row[i]);
      } else {
        const WidePack<T, kVec> p = *reinterpret_cast<const WidePack<T, kVec>*>(x_row);
#pragma unroll
        for (int i = 0; i < kVec; ++i) partial[j] += g[i] * to_acc(p.v[i]);
      }
    }
  }
}

template <typename T, int kLanes, int kVec>
__global__ void __launch_bounds__(kWideThreads)
    sddmm_wide_kernel(const T* __restrict__ grad_yT, int64_t ld_grad_y, const T* __restrict__ xT, int64_t ld_x,
                      const int32_t* __restrict__ row_ptr, const int32_t* __restrict__ col_idx,
                      const int32_t* __restrict__ row_order, T* __restrict__ grad_values, int64_t n_cols,
                      int64_t sparse_rows) {
  using Acc = acc_t<T>;
  constexpr int kGroups = kWideThreads / kLanes;
  constexpr int kChunk = kLanes < 16 ? kLanes : 16;
  __shared__ int32_t staged_cols[kGroups][kChunk];
  const int sub = static_cast<int>(threadIdx.x) / kLanes;
  const int lane = static_cast<int>(threadIdx.x) % kLanes;
  const int64_t slot = static_cast<int64_t>(blockIdx.x) * kGroups + sub;
  const bool active = slot < sparse_rows;
  const int64_t r = row_order != nullptr && active ? row_order[slot] : (active ? slot : 0);
  const int32_t begin = active ? row_ptr[r] : 0;
  const int32_t end = active ? row_ptr[r + 1] : 0;
  const int32_t chunks = warp_max((end - begin + kChunk - 1) / kChunk);
  constexpr int kTile = kLanes * kVec;
  const int64_t full_tiles = n_cols / kTile;  // tiles with every lane's kVec elements inside the batch
  const T* grad_y_row = grad_yT + r * ld_grad_y;
  for (int32_t c = 0; c < chunks; ++c) {
    const int32_t first = begin + c * kChunk;
    const int32_t left = end - first;
    const int count = left <= 0 ? 0 : (left < kChunk ? static_cast<int>(left) : kChunk);
    if (lane < count) staged_cols[sub][lane] = col_idx[first + lane];
    __syncwarp();
    Acc partial[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) partial[j] = Acc(0);
    if (count > 0) {
      for (int64_t t = 0; t < full_tiles; ++t)
        sddmm_tile<false, T, kChunk, kVec>(partial, grad_y_row, xT, ld_x, staged_cols[sub], count,
                                           t * kTile + lane * kVec, n_cols);
      if (full_tiles * kTile < n_cols)
        sddmm_tile<true, T, kChunk, kVec>(partial, grad_y_row, xT, ld_x, staged_cols[sub], count,
                                          full_tiles * kTile + lane * kVec, n_cols);
    }
    // Lanes kChunk apart hold partial sums of the same nonzeros: add them.
#pragma unroll
    for (int offset = kLanes / 2; offset >= kChunk; offset /= 2)
#pragma unroll
      for (int j = 0; j < kChunk; ++j) partial[j] += __shfl_xor_sync(kFullWarp, partial[j], offset, kLanes);
    transpose_reduce<kChunk / 2, kLanes>(partial, lane);
    if (lane < count) grad_values[first + lane] = from_acc<T>(partial[0]);
    __syncwarp();  // the next pass overwrites the staged columns
  }
}

template <typename T>
cudaError_t sparse_linear_value_grad_wide(const T* grad_yT, int64_t ld_grad_y, const T* xT, int64_t ld_x,
                                          const int32_t* row_ptr, const int32_t* col_idx, T* grad_values,
                                          int64_t n_rows, int64_t out_features, int64_t nnz, cudaStream_t stream,
                                          const int32_t* row_order) {
  if (nnz == 0 || out_features == 0) return cudaSuccess;
  auto go = [&](auto kernel, int lanes) -> cudaError_t {
    const int64_t blocks = (out_features * lanes + kWideThreads - 1) / kWideThreads;
    SK_LAUNCH(kernel, static_cast<unsigned>(blocks), kWideThreads, 0, stream, grad_yT, ld_grad_y, xT, ld_x,
              row_ptr, col_idx, row_order, grad_values, n_rows, out_features);
    return cudaGetLastError();
  };
  auto pick = [&](auto vec_constant) -> cudaError_t {
    constexpr int kVec = decltype(vec_constant)::value;
    switch (wide_lanes<kVec>(n_rows)) {
      case 4: return go(sddmm_wide_kernel<T, 4, kVec>, 4);
      case 8: return go(sddmm_wide_kernel<T, 8, kVec>, 8);
      case 16: return go(sddmm_wide_kernel<T, 16, kVec>, 16);
      default: return go(sddmm_wide_kernel<T, 32, kVec>, 32);
    }
  };
  if (wide_aligned(grad_yT, ld_grad_y, sizeof(T)) && wide_aligned(xT, ld_x, sizeof(T)))
    return pick(std::integral_constant<int, wide_vector<T>()>{});
  return pick(std::integral_constant<int, 1>{});
}

#define SK_INSTANTIATE(T)                                                                  \
  template cudaError_t sparse_linear_value_grad_wide<T>(const T*, int64_t, const T*, int64_t, \
                                                        const int32_t*, const int32_t*, T*,   \
                                                        int64_t, int64_t, int64_t,            \
                                                        cudaStream_t, const int32_t*);       \
  template cudaError_t sparse_linear_value_grad<T>(const T*, const T*, const int32_t*,     \
                                                   const int32_t*, T*, int64_t, int64_t,   \
                                                   int64_t, int64_t, cudaStream_t);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
