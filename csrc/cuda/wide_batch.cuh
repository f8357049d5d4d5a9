// Sparse products for wide batches (issue #14), in the style of Sputnik
// (Gale et al. 2020): the batch on the lanes.
//
// The narrow-batch kernel (spmm.cuh) puts a row's nonzeros on the lanes and
// reads dense[(n0 + b) * dense_cols + col]: lanes strided by the input width
// (uncoalesced), and the whole matrix read again for every 4 batch rows.
// Here the dense operand comes transposed, denseT (dense_cols, ld) with the
// batch contiguous, so that the lanes of a subwarp read consecutive batch
// elements of one input column: kVec of them per lane in one 16-byte load
// (4 fp32, 2 fp64, 8 fp16/bf16), kLanes * kVec per subwarp (the batch tile,
// 16 to 256 wide). Each sparse row's values and indices are loaded once per
// batch tile: a subwarp stages 32 of them at a time in its slice of shared
// memory (coalesced loads, values converted to the accumulator type once),
// and every lane then reads them as broadcasts; each nonzero costs a lane one
// 16-byte load and kVec FMAs. The result is written transposed as well
// (outT, rows of ld), 16-byte stores. The op glue (ops_cuda.cpp) transposes
// the operands and the result with ATen, into rows padded to 16 bytes.
//
// kLanes (4 to 32) is the subwarp width: the smallest whose tile covers the
// batch, so that batches of 16-64 do not leave lanes idle (subwarp tiling);
// subwarps of one warp take different rows. Rows are taken in row_order
// (longest first, the compact index's order) when one is given.
//
// Every loop that holds a __syncwarp or a shuffle runs the same number of
// times on all 32 lanes (the warp's largest chunk count), so a full-warp
// mask is always right, also for the subwarps of short or absent rows.
#pragma once

#include <cstdint>
#include <type_traits>

#include "accumulate.cuh"
#include "launch.cuh"

namespace sparse_kernels::cuda {

constexpr int kWideThreads = 128;
constexpr int kWideChunk = 32;  // nonzeros staged per pass of a subwarp

// Batch elements per 16-byte load.
template <typename T>
constexpr int wide_vector() {
  return static_cast<int>(16 / sizeof(T));
}

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) WidePack {
  T v[kVec];
};

inline bool wide_aligned(const void* p, int64_t ld, size_t value_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (ld * static_cast<int64_t>(value_bytes)) % 16 == 0;
}

// The subwarp width for a batch of n_cols with kVec elements per lane.
template <int kVec>
int wide_lanes(int64_t n_cols) {
  for (int lanes = 4; lanes < 32; lanes *= 2)
    if (lanes * kVec >= n_cols) return lanes;
  return 32;
}

// The largest of v over the 32 lanes.
__device__ __forceinline__ int32_t warp_max(int32_t v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const int32_t other = __shfl_xor_sync(kFullWarp, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

// kVec batch elements of one row of a transposed operand from position n0:
// one vector load when all are inside the batch, else the ones that are
// (the rest read as zero).
template <typename T, int kVec>
__device__ __forceinline__ void load_batch(const T* row, int64_t n0, int64_t n_cols, acc_t<T> (&out)[kVec]) {
  if (n0 + kVec <= n_cols) {
    const WidePack<T, kVec> p = *reinterpret_cast<const WidePack<T, kVec>*>(row + n0);
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = to_acc(p.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = n0 + i < n_cols ? to_acc(row[n0 + i]) : acc_t<T>(0);
  }
}

//   outT[r, n] = sum_{k in row r} values[value_index[k] or k] * denseT[idx[k], n]  (+ bias[r])
// for n < n_cols; group g of the grid takes row slot g % sparse_rows and
// batch tile g / sparse_rows.
template <typename T, typename Index, int kLanes, int kVec>
__global__ void __launch_bounds__(kWideThreads)
    csr_spmm_wide_kernel(const T* __restrict__ denseT, int64_t ld_dense, const T* __restrict__ values,
                         const int32_t* __restrict__ value_index, const int32_t* __restrict__ ptr,
                         const Index* __restrict__ idx, const int32_t* __restrict__ row_order,
                         const T* __restrict__ bias, T* __restrict__ outT, int64_t ld_out, int64_t n_cols,
                         int64_t sparse_rows) {
  static_assert(kLanes >= 4 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "subwarp size");
  using Acc = acc_t<T>;
  constexpr int kGroups = kWideThreads / kLanes;
  __shared__ Acc staged_values[kGroups][kWideChunk];
  __shared__ int32_t staged_cols[kGroups][kWideChunk];
  const int sub = static_cast<int>(threadIdx.x) / kLanes;
  const int lane = static_cast<int>(threadIdx.x) % kLanes;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * kGroups + sub;
  const int64_t tiles = (n_cols + kLanes * kVec - 1) / (kLanes * kVec);
  const bool active = group < sparse_rows * tiles;
  const int64_t slot = active ? group % sparse_rows : 0;
  const int64_t r = row_order != nullptr && active ? row_order[slot] : slot;
  const int64_t n0 = (active ? group / sparse_rows : 0) * (kLanes * kVec) + lane * kVec;
  const int32_t begin = active ? ptr[r] : 0;
  const int32_t end = active ? ptr[r + 1] : 0;
  const int32_t chunks = warp_max((end - begin + kWideChunk - 1) / kWideChunk);

  Acc acc[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) acc[i] = Acc(0);
  for (int32_t c = 0; c < chunks; ++c) {
    const int32_t first = begin + c * kWideChunk;
    const int32_t left = end - first;
    const int count = left <= 0 ? 0 : (left < kWideChunk ? static_cast<int>(left) : kWideChunk);
    for (int j = lane; j < count; j += kLanes) {
      const int32_t k = first + j;
      staged_values[sub][j] = to_acc(values[value_index != nullptr ? value_index[k] : k]);
      staged_cols[sub][j] = static_cast<int32_t>(idx[k]);
    }
    __syncwarp();
    for (int j = 0; j < count; ++j) {
      const Acc v = staged_values[sub][j];
      Acc d[kVec];
      load_batch<T, kVec>(denseT + static_cast<int64_t>(staged_cols[sub][j]) * ld_dense, n0, n_cols, d);
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[i] += v * d[i];
    }
    __syncwarp();  // the next pass overwrites the staged nonzeros
  }
  if (!active || n0 >= n_cols) return;
  const Acc shift = bias != nullptr ? to_acc(bias[r]) : Acc(0);
  T* out = outT + r * ld_out + n0;
  if (n0 + kVec <= n_cols) {
    WidePack<T, kVec> p;
#pragma unroll
    for (int i = 0; i < kVec; ++i) p.v[i] = from_acc<T>(acc[i] + shift);
    *reinterpret_cast<WidePack<T, kVec>*>(out) = p;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      if (n0 + i < n_cols) out[i] = from_acc<T>(acc[i] + shift);
  }
}

// 16-byte vectors when denseT and outT rows are 16-byte aligned (the op
// glue pads them), else one element per lane.
template <typename T, typename Index>
cudaError_t launch_csr_spmm_wide(const T* denseT, int64_t ld_dense, const T* values, const int32_t* value_index,
                                 const int32_t* ptr, const Index* idx, const int32_t* row_order, const T* bias,
                                 T* outT, int64_t ld_out, int64_t n_cols, int64_t sparse_rows,
                                 cudaStream_t stream) {
  if (n_cols == 0 || sparse_rows == 0) return cudaSuccess;
  auto go = [&](auto kernel, int lanes, int vec) -> cudaError_t {
    const int64_t tiles = (n_cols + lanes * vec - 1) / (lanes * vec);
    const int64_t blocks = (sparse_rows * tiles * lanes + kWideThreads - 1) / kWideThreads;
    if (blocks > 2147483647LL) return cudaErrorInvalidValue;
    SK_LAUNCH(kernel, static_cast<unsigned>(blocks), kWideThreads, 0, stream, denseT, ld_dense, values,
              value_index, ptr, idx, row_order, bias, outT, ld_out, n_cols, sparse_rows);
    return cudaGetLastError();
  };
  auto pick = [&](auto vec_constant) -> cudaError_t {
    constexpr int kVec = decltype(vec_constant)::value;
    switch (wide_lanes<kVec>(n_cols)) {
      case 4: return go(csr_spmm_wide_kernel<T, Index, 4, kVec>, 4, kVec);
      case 8: return go(csr_spmm_wide_kernel<T, Index, 8, kVec>, 8, kVec);
      case 16: return go(csr_spmm_wide_kernel<T, Index, 16, kVec>, 16, kVec);
      default: return go(csr_spmm_wide_kernel<T, Index, 32, kVec>, 32, kVec);
    }
  };
  if (wide_aligned(denseT, ld_dense, sizeof(T)) && wide_aligned(outT, ld_out, sizeof(T)))
    return pick(std::integral_constant<int, wide_vector<T>()>{});
  return pick(std::integral_constant<int, 1>{});
}

}  // namespace sparse_kernels::cuda
