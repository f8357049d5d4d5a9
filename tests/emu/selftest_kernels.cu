// Kernels that test the emulator itself (not the project's kernels): shuffle
// and vote semantics, atomics, shared-memory poisoning, and the faults it must
// report. Compiled into the emulated test library only.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "launch.cuh"

namespace {

__global__ void shuffle_kernel(int op, int param, int width, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int v = 1000 + t;
  int r = 0;
  switch (op) {
    case 0: r = __shfl_sync(0xffffffffu, v, param, width); break;
    case 1: r = __shfl_up_sync(0xffffffffu, v, param, width); break;
    case 2: r = __shfl_down_sync(0xffffffffu, v, param, width); break;
    default: r = __shfl_xor_sync(0xffffffffu, v, param, width); break;
  }
  out[t] = r;
}

__global__ void vote_kernel(const int* pred, unsigned* ballot, int* any, int* all) {
  const int t = static_cast<int>(threadIdx.x);
  ballot[t] = __ballot_sync(0xffffffffu, pred[t]);
  any[t] = __any_sync(0xffffffffu, pred[t]);
  all[t] = __all_sync(0xffffffffu, pred[t]);
}

__global__ void atomic_kernel(int* counter, float* sum) {
  atomicAdd(counter, 1);
  atomicAdd(sum, 0.5f);
}

__global__ void shared_unwritten_kernel(float* out) {
  __shared__ float scratch[64];
  out[threadIdx.x] = scratch[threadIdx.x];  // never written: the emulator's poison
}

// A block-wide sum through shared memory; thread 0 writes the block's sum.
__global__ void block_sum_kernel(const float* in, float* out) {
  __shared__ float s[128];
  s[threadIdx.x] = in[blockIdx.x * 128 + threadIdx.x];
  __syncthreads();
  for (unsigned stride = 64; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

__global__ void fault_kernel(int which, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (which == 0) {  // a shuffle naming a lane that has exited
    if (t == 5) return;
    out[t] = __shfl_down_sync(0xffffffffu, t, 1);
  } else if (which == 1) {  // a full mask in a partial warp (launched with 48 threads)
    out[t] = __shfl_xor_sync(0xffffffffu, t, 1);
  } else if (which == 2) {  // threads at two different barriers
    if (t % 2 == 0) {
      __syncthreads();
    } else {
      __syncthreads();
    }
  } else if (which == 3) {  // lane 0 at a block barrier, its warp at __syncwarp: a hang
    if (t == 0) {
      __syncthreads();
    } else {
      __syncwarp();
    }
  }
}

// Cooperative: each block publishes a value, grid.sync(), then reads its
// neighbour's; each block also keeps its own value in dynamic shared memory
// across the barrier (one buffer per resident block). which = 1: thread 3 of
// block 0 exits before the barrier (reported).
__global__ void grid_exchange_kernel(int which, int* published, int* seen, int* kept) {
  SK_DYNAMIC_SHARED(int, own);
  const unsigned b = blockIdx.x, blocks = gridDim.x;
  if (threadIdx.x == 0) {
    own[0] = 100 + static_cast<int>(b);
    published[b] = 100 + static_cast<int>(b);
  }
  if (which == 1 && b == 0 && threadIdx.x == 3) return;
  cooperative_groups::this_grid().sync();
  if (threadIdx.x == 0) {
    seen[b] = published[(b + 1) % blocks];
    kept[b] = own[0];
  }
}

}  // namespace

extern "C" {
// cooperative: 1 for a cooperative launch, 0 for a plain one (grid.sync() is
// then reported).
int sk_emu_selftest_grid_exchange(int which, int cooperative, int blocks, int* published, int* seen,
                                  int* kept) {
  if (cooperative) {
    const cudaError_t launched = SK_LAUNCH_COOPERATIVE(grid_exchange_kernel, blocks, 64, sizeof(int), nullptr,
                                                       which, published, seen, kept);
    const cudaError_t last = cudaGetLastError();
    return launched != cudaSuccess ? launched : last;
  }
  SK_LAUNCH(grid_exchange_kernel, blocks, 64, sizeof(int), nullptr, which, published, seen, kept);
  return cudaGetLastError();
}
int sk_emu_selftest_shuffle(int op, int param, int width, int threads, int* out) {
  SK_LAUNCH(shuffle_kernel, 1, threads, 0, nullptr, op, param, width, out);
  return cudaGetLastError();
}
int sk_emu_selftest_vote(const int* pred, unsigned* ballot, int* any, int* all) {
  SK_LAUNCH(vote_kernel, 1, 32, 0, nullptr, pred, ballot, any, all);
  return cudaGetLastError();
}
int sk_emu_selftest_atomic(int blocks, int threads, int* counter, float* sum) {
  SK_LAUNCH(atomic_kernel, blocks, threads, 0, nullptr, counter, sum);
  return cudaGetLastError();
}
int sk_emu_selftest_shared_unwritten(float* out) {
  SK_LAUNCH(shared_unwritten_kernel, 1, 64, 0, nullptr, out);
  return cudaGetLastError();
}
int sk_emu_selftest_block_sum(int blocks, const float* in, float* out) {
  SK_LAUNCH(block_sum_kernel, blocks, 128, 0, nullptr, in, out);
  return cudaGetLastError();
}
int sk_emu_selftest_fault(int which, int threads, int* out) {
  SK_LAUNCH(fault_kernel, 1, threads, 0, nullptr, which, out);
  return cudaGetLastError();
}
}
