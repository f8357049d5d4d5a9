// The random draws of the device random regrow (topology_generic.h), one
// function of (seed, group, index) for the host and the device: the CUDA kernel
// (csrc/cuda/regrow_candidates.cu) and the CPU loop of the generic code compute
// the same bits, so a device regrow equals the generic one run on the CPU.
// Torch-free (nvcc compiles it into a .cu file).
//
// Group g's stream is the CPU ops' SplitMix64 stream of (seed, g)
// (topology.h): its n-th output (from 0) is mix(state0 + (n + 1) * gamma), so
// any entry is computed directly, in any order, by any thread.
//
// Candidate n of group g (F free positions, k to grow):
// - k <= F / 2 ("sample"): a draw of F's bit width from the top bits of output
//   n, kept when below F (exactly uniform on [0, F), accepted with probability
//   > 1/2); priority n. The regrow keeps the first k distinct kept draws, a
//   uniform k-subset of [0, F) (sequential sampling without replacement).
// - k > F / 2 ("enumerate"): rank n itself (n < F), priority the top 63 bits of
//   output n; the k smallest priorities are a uniform k-subset.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SK_RNG_HD __host__ __device__ __forceinline__
#else
#define SK_RNG_HD inline
#endif

namespace sparse_kernels::topology {

constexpr uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ULL;

SK_RNG_HD uint64_t splitmix_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Output n (from 0) of SplitMix64(seed, stream) in topology.h.
SK_RNG_HD uint64_t splitmix_output(uint64_t seed, uint64_t stream, uint64_t n) {
  const uint64_t state0 = seed ^ (kSplitMixGamma * (stream + 1));
  return splitmix_mix(state0 + (n + 1) * kSplitMixGamma);
}

// Bits needed to write x (0 for x = 0).
SK_RNG_HD int bit_width(uint64_t x) {
  int b = 0;
  while (b < 64 && (x >> b) != 0) ++b;
  return b;
}

// Candidate n of group g (see above): rank in [0, F) or -1 (a rejected draw),
// and its priority (smaller = taken first). F >= 1, 0 < k <= F.
SK_RNG_HD void regrow_candidate(uint64_t seed, int64_t group, int64_t n, int64_t free, int64_t want,
                                int64_t* rank, int64_t* priority) {
  const uint64_t bits = splitmix_output(seed, static_cast<uint64_t>(group), static_cast<uint64_t>(n));
  if (2 * want > free) {
    *rank = n;
    *priority = static_cast<int64_t>(bits >> 1);
    return;
  }
  const int width = bit_width(static_cast<uint64_t>(free - 1));
  const uint64_t draw = width == 0 ? 0 : bits >> (64 - width);
  *rank = draw < static_cast<uint64_t>(free) ? static_cast<int64_t>(draw) : -1;
  *priority = n;
}

}  // namespace sparse_kernels::topology
