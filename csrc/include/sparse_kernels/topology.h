// Helpers shared by the CPU topology kernels (prune / regrow / rebuild):
// a small counter-based PRNG so that a topology update is a pure function of
// (pattern, seed) -- identical on every rank and for any thread count -- and
// the checks on the int64 group descriptors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace sparse_kernels::topology {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, passes BigCrush, and seeding a
// stream per group with (seed, group) keeps groups independent of scheduling.
struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed, uint64_t stream = 0)
      : state(seed ^ (0x9E3779B97F4A7C15ULL * (stream + 1))) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, without modulo bias (Lemire 2019).
  uint64_t below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
};

// A group descriptor: int64, 1-D, contiguous, CPU, starting at 0, non-decreasing,
// ending at `total`.
inline void check_group_ptr(const at::Tensor& ptr, int64_t total, const char* name) {
  TORCH_CHECK(ptr.scalar_type() == at::kLong && ptr.dim() == 1 && ptr.is_contiguous() &&
                  ptr.numel() >= 1,
              name, " must be a non-empty contiguous 1-D int64 tensor");
  const int64_t* p = ptr.data_ptr<int64_t>();
  TORCH_CHECK(p[0] == 0 && p[ptr.numel() - 1] == total, name, " must run from 0 to ", total,
              ", got ", p[0], " .. ", p[ptr.numel() - 1]);
  for (int64_t g = 0; g + 1 < ptr.numel(); ++g)
    TORCH_CHECK(p[g] <= p[g + 1], name, " must be non-decreasing");
}

inline void check_counts(const at::Tensor& counts, int64_t groups, const char* name) {
  TORCH_CHECK(counts.scalar_type() == at::kLong && counts.dim() == 1 &&
                  counts.is_contiguous() && counts.numel() == groups,
              name, " must be a contiguous 1-D int64 tensor with one entry per group (", groups,
              "), got ", counts.scalar_type(), " with shape ", counts.sizes());
}

inline void check_mask(const at::Tensor& mask, int64_t nnz, const char* name) {
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 1 && mask.is_contiguous() &&
                  mask.numel() == nnz,
              name, " must be a contiguous 1-D bool tensor with nnz = ", nnz, " entries");
}

}  // namespace sparse_kernels::topology
