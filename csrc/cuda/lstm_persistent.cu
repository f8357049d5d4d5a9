// Whole-sequence LSTM forward in one cooperative launch, W_hh kept on chip
// across timesteps (after Zhu et al., "Sparse Persistent RNNs", 2018).
//
// The per-step path (lstm_layer_loop.h) launches a sparse product and a cell
// kernel per timestep and rereads W_hh from L2/DRAM every step. Here each
// block loads its share of W_hh (the four gate rows of its hidden units, see
// lstm_persistent.h) into shared memory once, then for every step:
//   - a warp per unit computes the unit's four gate pre-activations for a
//     tile of batch rows (lanes stride over the row's nonzeros, a butterfly
//     of shuffles sums them), adds the precomputed input projection, applies
//     the cell and writes h, c and the saved tensors;
//   - grid.sync() publishes h_t to every block before step t + 1 reads it.
// h is double-buffered in global memory (h_buf: 2 x B x H): step s reads one
// buffer and writes the other, so one barrier per step suffices. h_buf is
// read with __ldcg (L2, not L1): other SMs wrote it, and L1 is not coherent.
// c stays with the thread that owns (unit, batch row) for the whole sequence
// (in c_n, which ends as the final state).
//
// Variable lengths follow layer_common.h: step t runs on its first
// batch_sizes[t] rows; a row's h_n/c_n is its last active value. Rows that
// have not started yet (reverse direction) read h0, which both buffers hold
// until the row's first step. The parity of h_buf flips only on steps that
// ran, so skipped (empty) steps are harmless.
#include <cooperative_groups.h>

#include "accumulate.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "lstm_persistent.h"

namespace sparse_kernels::cuda {

template <typename T>
__global__ void __launch_bounds__(kPersistentThreads)
    lstm_persistent_forward_kernel(const T* __restrict__ input_gates, const T* __restrict__ values,
                                   const int32_t* __restrict__ row_ptr,
                                   const int32_t* __restrict__ col_idx,
                                   const int32_t* __restrict__ batch_sizes,
                                   const int32_t* __restrict__ unit_start, T* __restrict__ output,
                                   T* __restrict__ gates, T* __restrict__ cells, T* h_n,
                                   T* __restrict__ c_n, T* h_buf, int64_t steps, int64_t batch,
                                   int64_t hidden, bool reverse) {
  using Acc = acc_t<T>;
  constexpr int kTile = kPersistentBatchTile;
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  const int64_t u0 = unit_start[blockIdx.x];
  const int64_t units = unit_start[blockIdx.x + 1] - u0;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int warps = static_cast<int>(blockDim.x / 32);

  // ---- Load this block's rows of W_hh into shared memory (once).
  SK_DYNAMIC_SHARED(unsigned char, smem);
  int32_t* local_ptr = reinterpret_cast<int32_t*>(smem);
  if (threadIdx.x == 0) {
    int32_t sum = 0;
    for (int64_t r = 0; r < 4 * units; ++r) {
      local_ptr[r] = sum;
      const int64_t row = (r % 4) * hidden + u0 + r / 4;
      sum += row_ptr[row + 1] - row_ptr[row];
    }
    local_ptr[4 * units] = sum;
  }
  __syncthreads();
  const int64_t nnz = local_ptr[4 * units];
  T* w_values = reinterpret_cast<T*>(smem + persistent_values_offset(units));
  uint16_t* w_cols = reinterpret_cast<uint16_t*>(smem + persistent_cols_offset(units, nnz, sizeof(T)));
  for (int64_t r = warp; r < 4 * units; r += warps) {
    const int64_t row = (r % 4) * hidden + u0 + r / 4;
    const int32_t begin = row_ptr[row], length = row_ptr[row + 1] - begin, dst = local_ptr[r];
    for (int32_t k = lane; k < length; k += 32) {
      w_values[dst + k] = values[begin + k];
      w_cols[dst + k] = static_cast<uint16_t>(col_idx[begin + k]);
    }
  }
  __syncthreads();

  // ---- The time loop.
  int parity = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t active = batch_sizes[t];
    if (active == 0) continue;  // uniform over the grid: every block skips it
    const T* h_prev = h_buf + parity * batch * hidden;
    T* h_next = h_buf + (1 - parity) * batch * hidden;
    for (int64_t u = warp; u < units; u += warps) {
      const int64_t j = u0 + u;
      for (int64_t n0 = 0; n0 < active; n0 += kTile) {
        Acc acc[4][kTile];
#pragma unroll
        for (int g = 0; g < 4; ++g)
#pragma unroll
          for (int b = 0; b < kTile; ++b) acc[g][b] = Acc(0);
#pragma unroll
        for (int g = 0; g < 4; ++g) {
          const int32_t end = local_ptr[4 * u + g + 1];
          for (int32_t k = local_ptr[4 * u + g] + lane; k < end; k += 32) {
            const Acc v = to_acc(w_values[k]);
            const T* column = h_prev + w_cols[k];
#pragma unroll
            for (int b = 0; b < kTile; ++b)
              if (n0 + b < active) acc[g][b] += v * to_acc(__ldcg(column + (n0 + b) * hidden));
          }
        }
#pragma unroll
        for (int g = 0; g < 4; ++g)
#pragma unroll
          for (int b = 0; b < kTile; ++b)
#pragma unroll
            for (int offset = 16; offset > 0; offset /= 2)
              acc[g][b] += __shfl_xor_sync(kFullWarp, acc[g][b], offset);
        // Lane b applies the cell to batch row n0 + b (constant indices keep
        // acc in registers).
#pragma unroll
        for (int b = 0; b < kTile; ++b) {
          const int64_t n = n0 + b;
          if (lane != b || n >= active) continue;
          const int64_t row = t * batch + n;
          Acc pre[4];
#pragma unroll
          for (int g = 0; g < 4; ++g) {
            const int64_t at = row * 4 * hidden + g * hidden + j;
            pre[g] = acc[g][b] + to_acc(input_gates[at]);
            gates[at] = from_acc<T>(pre[g]);
          }
          Acc h, c;
          lstm_unit_forward(pre[0], pre[1], pre[2], pre[3], to_acc(c_n[n * hidden + j]), &h, &c);
          const T h_out = from_acc<T>(h), c_out = from_acc<T>(c);
          output[row * hidden + j] = h_out;
          cells[row * hidden + j] = c_out;
          h_next[n * hidden + j] = h_out;
          h_n[n * hidden + j] = h_out;
          c_n[n * hidden + j] = c_out;
        }
      }
    }
    parity = 1 - parity;
    grid.sync();
  }
}

template <typename T>
cudaError_t lstm_persistent_forward(const T* input_gates, const T* values, const int32_t* row_ptr,
                                    const int32_t* col_idx, const int32_t* batch_sizes,
                                    const int32_t* unit_start, int blocks, size_t smem_bytes, T* output,
                                    T* gates, T* cells, T* h_n, T* c_n, T* h_buf, int64_t steps,
                                    int64_t batch, int64_t hidden, bool reverse, cudaStream_t stream) {
  if (hidden > kPersistentMaxHidden || blocks <= 0 || blocks > hidden) return cudaErrorInvalidValue;
  if (steps == 0 || batch == 0) return cudaSuccess;
  const auto kernel = lstm_persistent_forward_kernel<T>;
  if (smem_bytes > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes));
    if (err != cudaSuccess) return err;
  }
  const cudaError_t launched =
      SK_LAUNCH_COOPERATIVE(kernel, blocks, kPersistentThreads, smem_bytes, stream, input_gates, values,
                            row_ptr, col_idx, batch_sizes, unit_start, output, gates, cells, h_n, c_n,
                            h_buf, steps, batch, hidden, reverse);
  // The launch's error is also the runtime's last error: clear it, so that a
  // launch the caller recovers from (too many blocks) leaves none behind.
  const cudaError_t last = cudaGetLastError();
  return launched != cudaSuccess ? launched : last;
}

#define SK_INSTANTIATE(T)                                                                           \
  template cudaError_t lstm_persistent_forward<T>(const T*, const T*, const int32_t*, const int32_t*, \
                                                  const int32_t*, const int32_t*, int, size_t, T*, T*, \
                                                  T*, T*, T*, T*, int64_t, int64_t, int64_t, bool,      \
                                                  cudaStream_t);
SK_FOR_EACH_VALUE_TYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace sparse_kernels::cuda
