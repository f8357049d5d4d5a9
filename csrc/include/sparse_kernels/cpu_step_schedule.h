// One parallel region over a whole time loop: the threads meet at a counter
// per step instead of opening and closing a parallel region per step.
//
// A recurrent layer's step t needs every unit of step t-1, so threads must
// wait for each other once per step. Opening an OpenMP region per step (what
// the per-step ATen calls do) costs several microseconds each time, and
// every product, cell and copy of a step opened its own. Here the caller
// enters one region (run_step_schedule) and every thread runs the same loop:
// at step s it claims chunks of the step's work from an atomic counter, runs
// them, counts them done, and goes on to step s+1 once all chunks of step s
// are done.
//
// Claiming instead of owning chunks makes it safe whatever number of threads
// actually turns up: a lone thread (a nested region runs single-threaded, a
// busy machine may not schedule the other) claims every chunk itself, so no
// thread ever waits for work that nobody runs. A thread only waits while
// another is inside a chunk it has claimed.
//
// body(step, chunk) must not throw: a thread leaving the loop would leave
// the others waiting on its chunks.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SK_SPIN_PAUSE() _mm_pause()
#else
#define SK_SPIN_PAUSE() ((void)0)
#endif

namespace sparse_kernels::cpu {

class StepSchedule {
 public:
  StepSchedule(int64_t steps, int64_t chunks)
      : steps_(steps), chunks_(chunks), claimed_(new std::atomic<int64_t>[steps]),
        done_(new std::atomic<int64_t>[steps]) {
    for (int64_t s = 0; s < steps; ++s) {
      claimed_[s].store(0, std::memory_order_relaxed);
      done_[s].store(0, std::memory_order_relaxed);
    }
  }

  template <typename Body>
  void run(const Body& body) noexcept {
    for (int64_t s = 0; s < steps_; ++s) {
      for (;;) {
        const int64_t chunk = claimed_[s].fetch_add(1, std::memory_order_relaxed);
        if (chunk >= chunks_) break;
        body(s, chunk);
        // Release: the chunk's writes are visible to whoever sees it done.
        done_[s].fetch_add(1, std::memory_order_release);
      }
      // Spin briefly (a step lasts microseconds), then yield the core: on a
      // machine with more threads than cores the thread being waited for
      // may need this one's core to finish.
      for (int64_t spins = 0; done_[s].load(std::memory_order_acquire) < chunks_; ++spins) {
        if (spins < 4096) {
          SK_SPIN_PAUSE();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }

 private:
  const int64_t steps_, chunks_;
  std::unique_ptr<std::atomic<int64_t>[]> claimed_, done_;
};

// `chunks` ranges of [0, n) holding about equal shares of prefix[n], prefix
// being a running total of per-item work (prefix[0] = 0, n + 1 entries).
inline std::vector<int64_t> balanced_bounds(const std::vector<int64_t>& prefix, int64_t chunks) {
  const int64_t n = static_cast<int64_t>(prefix.size()) - 1;
  std::vector<int64_t> bounds{0};
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t target = prefix[n] * c / chunks;
    const int64_t i = std::lower_bound(prefix.begin(), prefix.end(), target) - prefix.begin();
    if (i > bounds.back() && i < n) bounds.push_back(i);
  }
  bounds.push_back(n);
  return bounds;
}

// The number of chunks worth cutting a step of `step_work` multiply-adds
// into: several per thread (claiming balances them), none so small that
// claiming it costs more than running it, at most `items`.
inline int64_t step_chunk_count(int64_t step_work, int64_t items) {
  return std::clamp<int64_t>(step_work >> 14, 1, std::min<int64_t>(items, 8 * at::get_num_threads()));
}

// Runs body(step, chunk) for steps [0, steps) in order, chunks [0, chunks)
// of each step in any order and on any thread; returns when all are done.
template <typename Body>
void run_step_schedule(int64_t steps, int64_t chunks, const Body& body) {
  if (steps <= 0 || chunks <= 0) return;
  StepSchedule schedule(steps, chunks);
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), chunks);
  if (threads <= 1 || at::in_parallel_region()) {
    schedule.run(body);
    return;
  }
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { schedule.run(body); });
}

}  // namespace sparse_kernels::cpu
