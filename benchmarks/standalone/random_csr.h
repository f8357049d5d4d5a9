// What the standalone programs of this folder share: their command line, the
// random CSR matrix they time their kernels on, storage that starts on a cache
// line, and the median of repeated timings.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

namespace standalone {

// Storage on whole 64-byte lines, as the library's tensors have (c10's CPU
// allocator): a std::vector<float>'s data may start 16, 32 or 48 bytes into a
// line, and then every 16-lane row of x read from it spans two lines (1.5-2x
// the time of a tile pass; BENCHMARKS.md, session W). The programs keep every
// array their kernels read as vectors in it.
template <typename T>
struct LineAllocator {
  using value_type = T;
  LineAllocator() = default;
  template <typename U>
  LineAllocator(const LineAllocator<U>&) {}
  T* allocate(std::size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <typename U>
  bool operator==(const LineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const LineAllocator<U>&) const { return false; }
};

template <typename T>
using lines = std::vector<T, LineAllocator<T>>;

// The programs' command line: [rows cols density [repeats]], W 6000 x 1500 at
// 10% by default (W_hh of a 1500-unit LSTM at 90% sparsity).
struct Args {
  int64_t rows, cols;
  double density;
  int repeats;
};

inline Args parse_args(int argc, char** argv, int default_repeats) {
  return {argc > 1 ? std::atol(argv[1]) : 6000, argc > 2 ? std::atol(argv[2]) : 1500,
          argc > 3 ? std::atof(argv[3]) : 0.1, argc > 4 ? std::atoi(argv[4]) : default_repeats};
}

// W (rows x cols) in CSR: each entry kept with probability `density`,
// columns sorted within a row, values uniform in (-1, 1) from `rng`.
struct RandomCsr {
  lines<int32_t> ptr, idx;
  lines<float> values;
  int64_t nnz() const { return static_cast<int64_t>(idx.size()); }
};

inline RandomCsr random_csr(int64_t rows, int64_t cols, double density, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  RandomCsr w;
  w.ptr.assign(rows + 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j)
      if (coin(rng) < density) {
        w.idx.push_back(static_cast<int32_t>(j));
        w.values.push_back(uniform(rng));
      }
    w.ptr[r + 1] = static_cast<int32_t>(w.idx.size());
  }
  return w;
}

// The median wall time of `repeats` calls of f, in seconds.
template <typename F>
double median_seconds(F f, int repeats) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace standalone
