// What the standalone programs of this folder share: their command line, the
// random CSR matrix they time their kernels on, and the median of repeated
// timings.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

namespace standalone {

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
  std::vector<int32_t> ptr, idx;
  std::vector<float> values;
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
