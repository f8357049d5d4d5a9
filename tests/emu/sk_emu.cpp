// The CUDA emulator's scheduler: blocks one after another (a cooperative
// launch: all blocks at once), the threads of a block as ucontext fibers
// switched at synchronisation points. See
// tests/emu/include/cuda_runtime.h for the model; test-only code.
#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_runtime.h"

// The linker defines these bounds for a section named like a C identifier.
extern "C" unsigned char __start_sk_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_sk_emu_shared[] __attribute__((weak));

namespace sk_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kDefaultMaxDynamicShared = 48 * 1024;
constexpr size_t kMaxDynamicShared = 227 * 1024;  // sm_90's opt-in limit
// The emulated device's co-residency limit for a cooperative launch (a real
// one has as many as its SMs times the blocks each SM holds).
constexpr unsigned long long kMaxCooperativeBlocks = 64;

enum class State { Ready, AtBarrier, AtGridBarrier, AtWarp, Exited };
enum class Schedule : int { Forward = 0, Reverse = 1, Shuffled = 2 };

struct Fiber {
  ucontext_t context;
  unsigned char* stack = nullptr;  // below it, one guard page
  uint3 index{};
  uint3 block{};  // blockIdx
  int slot = 0;   // which of the resident blocks (always 0 unless cooperative)
  State state = State::Ready;
  // The synchronisation point the fiber waits at.
  const char* file = nullptr;
  int line = 0;
  WarpOp op = WarpOp::Sync;
  unsigned mask = 0;
  uint64_t value = 0;
  int param = 0;
  int width = 32;
  uint64_t result = 0;
};

struct Launch {
  std::string kernel_name;
  dim3 grid, block;
  bool cooperative = false;
  int block_threads = 0;
  // Per resident block: its dynamic shared memory.
  std::vector<std::vector<unsigned char>> dynamic_shared;
  // The resident blocks' threads, block after block (one block at a time,
  // or the whole grid for a cooperative launch).
  std::vector<Fiber> fibers;
  BlockBody body = nullptr;
  void* body_context = nullptr;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  std::string error;  // first violation; the launch stops there
};

Launch* g_launch = nullptr;
cudaError_t g_last_error = cudaSuccess;
std::string g_last_message;
std::string g_last_kernel;  // the kernel of the latest launch, for tests of launch choices
Schedule g_schedule = Schedule::Forward;
uint64_t g_seed = 0;
std::unordered_map<const void*, size_t> g_max_dynamic_shared;

Launch& active(const char* what) {
  if (g_launch == nullptr || g_launch->current == nullptr) {
    std::fprintf(stderr, "sk_emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return *g_launch;
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler(Launch& launch) {
  Fiber* self = launch.current;
  swapcontext(&self->context, &launch.scheduler);
}

// A violation inside a fiber: record it, never resume the fiber.
[[noreturn]] void fail(Launch& launch, const std::string& message) {
  if (launch.error.empty()) launch.error = message;
  Fiber* self = launch.current;
  self->state = State::Exited;
  swapcontext(&self->context, &launch.scheduler);
  std::abort();  // unreachable: a failed launch never resumes its fibers
}

void fiber_entry() {
  Launch& launch = *g_launch;
  launch.body(launch.body_context);
  launch.current->state = State::Exited;
  swapcontext(&launch.current->context, &launch.scheduler);
}

std::string where(const Fiber& f) {
  return std::string(f.file ? f.file : "?") + ":" + std::to_string(f.line);
}

std::string thread_name(const Launch& launch, const Fiber& f) {
  auto triple = [](unsigned x, unsigned y, unsigned z) {
    return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
  };
  return launch.kernel_name + " block " + triple(f.block.x, f.block.y, f.block.z) + " thread " +
         triple(f.index.x, f.index.y, f.index.z);
}

const char* state_name(State s) {
  switch (s) {
    case State::Ready: return "ready";
    case State::AtBarrier: return "at __syncthreads";
    case State::AtGridBarrier: return "at grid.sync()";
    case State::AtWarp: return "at a warp collective";
    case State::Exited: return "exited";
  }
  return "?";
}

// Source lane of a shuffle for `lane`, or -1 for "own value".
int shuffle_source(const Fiber& f, int lane) {
  const int width = f.width;
  const int base = lane & ~(width - 1);
  switch (f.op) {
    case WarpOp::Shfl: return base + (f.param & (width - 1));
    case WarpOp::ShflUp: return (lane - base) >= f.param ? lane - f.param : -1;
    case WarpOp::ShflDown: return (lane - base) + f.param < width ? lane + f.param : -1;
    case WarpOp::ShflXor: {
      const int src = lane ^ f.param;
      return src < base + width ? src : -1;  // later groups: own value
    }
    default: return -1;
  }
}

// Releases the warp collectives whose lanes have all arrived. Returns whether
// any was released; records an error on a mismatch.
bool release_warp_collectives(Launch& launch) {
  bool released = false;
  const int n = launch.block_threads;
  const int slots = static_cast<int>(launch.fibers.size()) / n;
  for (int slot = 0; slot < slots; ++slot)
  for (int warp_start = 0; warp_start < n; warp_start += 32) {
    const int lanes = std::min(32, n - warp_start);
    Fiber* warp = &launch.fibers[slot * n + warp_start];
    for (int lane = 0; lane < lanes; ++lane) {
      const Fiber& f = warp[lane];
      if (f.state != State::AtWarp) continue;
      bool complete = true;
      for (int other = 0; other < 32; ++other) {
        if (!(f.mask >> other & 1u)) continue;
        if (other >= lanes) {
          launch.error = thread_name(launch, f) + ": warp collective at " + where(f) +
                         " names lane " + std::to_string(other) +
                         ", which does not exist in this block (partial warp)";
          return false;
        }
        const Fiber& g = warp[other];
        if (g.state == State::Exited) {
          launch.error = thread_name(launch, f) + ": warp collective at " + where(f) +
                         " names lane " + std::to_string(other) + ", which has exited";
          return false;
        }
        if (g.state != State::AtWarp) {
          complete = false;
          continue;
        }
        if (g.mask != f.mask || g.op != f.op || g.line != f.line || g.file != f.file) {
          launch.error = thread_name(launch, f) + ": warp collective at " + where(f) +
                         " meets a different one at " + where(g) + " (lane " +
                         std::to_string(other) + ")";
          return false;
        }
      }
      if (!complete) continue;
      // Everyone in the mask is here: compute every participant's result.
      uint64_t ballot = 0;
      for (int other = 0; other < 32; ++other)
        if ((f.mask >> other & 1u) && warp[other].value) ballot |= 1ull << other;
      for (int other = 0; other < 32; ++other) {
        if (!(f.mask >> other & 1u)) continue;
        Fiber& g = warp[other];
        switch (g.op) {
          case WarpOp::Sync: g.result = 0; break;
          case WarpOp::Ballot: g.result = ballot; break;
          case WarpOp::Any: g.result = ballot != 0; break;
          case WarpOp::All: g.result = ballot == f.mask; break;
          default: {
            const int src = shuffle_source(g, other);
            if (src < 0) {
              g.result = g.value;
            } else if (!(f.mask >> src & 1u)) {
              launch.error = thread_name(launch, g) + ": shuffle at " + where(g) +
                             " reads lane " + std::to_string(src) +
                             ", which is not in the mask (undefined value on the device)";
              return false;
            } else {
              g.result = warp[src].value;
            }
          }
        }
      }
      for (int other = 0; other < 32; ++other)
        if (f.mask >> other & 1u) warp[other].state = State::Ready;
      released = true;
    }
  }
  return released;
}

// One block's __syncthreads: fibers [begin, end).
bool release_block_barrier(Launch& launch, Fiber* begin, Fiber* end) {
  const Fiber* first = nullptr;
  for (const Fiber* f = begin; f != end; ++f) {
    if (f->state == State::Exited) continue;  // exited threads count as arrived, as on sm_70+
    if (f->state != State::AtBarrier) return false;
    if (first == nullptr) {
      first = f;
    } else if (f->line != first->line || f->file != first->file) {
      launch.error = thread_name(launch, *f) + " waits at __syncthreads " + where(*f) + " but " +
                     thread_name(launch, *first) + " at " + where(*first);
      return false;
    }
  }
  if (first == nullptr) return false;
  for (Fiber* f = begin; f != end; ++f)
    if (f->state == State::AtBarrier) f->state = State::Ready;
  return true;
}

bool release_barrier(Launch& launch) {
  bool released = false;
  const size_t n = static_cast<size_t>(launch.block_threads);
  for (size_t start = 0; start < launch.fibers.size() && launch.error.empty(); start += n)
    released |= release_block_barrier(launch, &launch.fibers[start], &launch.fibers[start] + n);
  return released;
}

// grid.sync(): releases when every thread of the grid waits at it. Stricter
// than the device, where an exited thread may or may not be counted: a
// thread that exits while others wait at grid.sync() is reported.
bool release_grid_barrier(Launch& launch) {
  const Fiber* first = nullptr;
  for (const Fiber& f : launch.fibers) {
    if (f.state == State::AtGridBarrier) {
      if (first == nullptr) first = &f;
    } else if (f.state != State::Exited) {
      return false;
    }
  }
  if (first == nullptr) return false;
  for (const Fiber& f : launch.fibers) {
    if (f.state == State::Exited) {
      launch.error = thread_name(launch, f) + " exited while " + thread_name(launch, *first) +
                     " waits at grid.sync() " + where(*first);
      return false;
    }
  }
  for (Fiber& f : launch.fibers) f.state = State::Ready;
  return true;
}

void poison_shared(Launch& launch) {
  if (__start_sk_emu_shared != nullptr && __stop_sk_emu_shared != nullptr)
    std::memset(__start_sk_emu_shared, 0xFF, __stop_sk_emu_shared - __start_sk_emu_shared);
  for (auto& buffer : launch.dynamic_shared) std::fill(buffer.begin(), buffer.end(), 0xFF);
}

// Runs the resident block(s) (launch.fibers) until every thread exits.
void run_resident(Launch& launch, std::mt19937_64& rng) {
  poison_shared(launch);
  const int n = static_cast<int>(launch.fibers.size());
  for (Fiber& f : launch.fibers) {
    f.state = State::Ready;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_entry, 0);
  }
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (g_schedule == Schedule::Reverse) std::reverse(order.begin(), order.end());
  while (true) {
    if (g_schedule == Schedule::Shuffled) std::shuffle(order.begin(), order.end(), rng);
    bool ran = false;
    for (int i : order) {
      Fiber& f = launch.fibers[i];
      if (f.state != State::Ready) continue;
      launch.current = &f;
      swapcontext(&launch.scheduler, &f.context);
      launch.current = nullptr;
      ran = true;
      if (!launch.error.empty()) return;
    }
    const bool released = release_warp_collectives(launch) || release_barrier(launch) ||
                          release_grid_barrier(launch);
    if (!launch.error.empty()) return;
    const bool all_exited = std::all_of(launch.fibers.begin(), launch.fibers.end(),
                                        [](const Fiber& f) { return f.state == State::Exited; });
    if (all_exited) return;
    if (!ran && !released) {
      const uint3 b = launch.fibers.front().block;
      std::string message = launch.kernel_name + ": block (" + std::to_string(b.x) + "," +
                            std::to_string(b.y) + "," + std::to_string(b.z) + ")" +
                            (launch.cooperative ? " and the rest of the cooperative grid" : "") +
                            " cannot make progress (a hang on the device):";
      for (const Fiber& f : launch.fibers)
        if (f.state != State::Exited)
          message += " block " + std::to_string(f.block.x) + " thread " + std::to_string(f.index.x) +
                     "," + std::to_string(f.index.y) + "," + std::to_string(f.index.z) + " " +
                     state_name(f.state) + " " + where(f) + ";";
      launch.error = message;
      return;
    }
  }
}

struct Stacks {
  std::vector<unsigned char*> regions;
  ~Stacks() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    for (unsigned char* r : regions) munmap(r - page, kStackBytes + page);
  }
};

// The kernel's demangled symbol (the launch site may only have a pointer).
std::string kernel_symbol(const void* kernel_id, const char* fallback) {
  Dl_info info{};
  if (dladdr(kernel_id, &info) == 0 || info.dli_sname == nullptr) return fallback;
  int status = 0;
  char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
  std::free(demangled);
  return name;
}

}  // namespace

const uint3& thread_idx() { return active("threadIdx").current->index; }
const uint3& block_idx() { return active("blockIdx").current->block; }
const dim3& block_dim() { return active("blockDim").block; }
const dim3& grid_dim() { return active("gridDim").grid; }
unsigned char* dynamic_shared_memory() {
  Launch& launch = active("dynamic shared memory");
  auto& buffer = launch.dynamic_shared[launch.current->slot];
  return buffer.empty() ? nullptr : buffer.data();
}

void syncthreads(const char* file, int line) {
  Launch& launch = active("__syncthreads");
  Fiber* self = launch.current;
  self->state = State::AtBarrier;
  self->file = file;
  self->line = line;
  yield_to_scheduler(launch);
}

void grid_sync(const char* file, int line) {
  Launch& launch = active("grid.sync()");
  Fiber* self = launch.current;
  self->file = file;
  self->line = line;
  if (!launch.cooperative)
    fail(launch, thread_name(launch, *self) + ": grid.sync() at " + where(*self) +
                     " in a launch that is not cooperative (cudaLaunchCooperativeKernel)");
  self->state = State::AtGridBarrier;
  yield_to_scheduler(launch);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int param, int width,
                         const char* file, int line) {
  Launch& launch = active("a warp collective");
  Fiber* self = launch.current;
  const int linear = static_cast<int>(self - launch.fibers.data());
  const int lane = linear % 32;
  self->file = file;
  self->line = line;
  if (!(mask >> lane & 1u))
    fail(launch, thread_name(launch, *self) + ": warp collective at " + where(*self) +
                     " with a mask that leaves out the calling lane");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail(launch, thread_name(launch, *self) + ": shuffle width " + std::to_string(width) +
                     " at " + where(*self) + " is not a power of two in [1, 32]");
  self->state = State::AtWarp;
  self->op = op;
  self->mask = mask;
  self->value = value;
  self->param = param;
  self->width = width;
  yield_to_scheduler(launch);
  return self->result;
}

cudaError_t set_max_dynamic_shared(const void* kernel_id, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > kMaxDynamicShared) return cudaErrorInvalidValue;
  g_max_dynamic_shared[kernel_id] = static_cast<size_t>(bytes);
  return cudaSuccess;
}

cudaError_t run_grid(const char* launch_name, const void* kernel_id, dim3 grid, dim3 block,
                     size_t dynamic_smem, BlockBody body, void* context, bool cooperative) {
  const std::string kernel_name = kernel_symbol(kernel_id, launch_name);
  g_last_kernel = kernel_name;
  auto record = [&](cudaError_t error, std::string message) {
    if (g_last_error == cudaSuccess) {
      g_last_error = error;
      g_last_message = std::move(message);
    }
    return error;
  };
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return record(cudaErrorInvalidConfiguration,
                  kernel_name + ": invalid launch configuration grid (" +
                      std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
                      std::to_string(grid.z) + ") block (" + std::to_string(block.x) + "," +
                      std::to_string(block.y) + "," + std::to_string(block.z) + ")");
  const auto limit = g_max_dynamic_shared.find(kernel_id);
  const size_t max_smem =
      limit == g_max_dynamic_shared.end() ? kDefaultMaxDynamicShared : limit->second;
  if (dynamic_smem > max_smem)
    return record(cudaErrorInvalidValue, kernel_name + ": " +
                                             std::to_string(dynamic_smem) +
                                             " bytes of dynamic shared memory exceed the limit " +
                                             std::to_string(max_smem));
  const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
  if (cooperative && blocks > kMaxCooperativeBlocks)
    return record(cudaErrorCooperativeLaunchTooLarge,
                  kernel_name + ": a cooperative launch of " + std::to_string(blocks) +
                      " blocks exceeds the emulated device's " +
                      std::to_string(kMaxCooperativeBlocks) + " co-resident blocks");
  if (g_launch != nullptr) {
    std::fprintf(stderr, "sk_emu: a kernel launched from inside a kernel\n");
    std::abort();
  }

  Launch launch;
  launch.kernel_name = kernel_name;
  launch.grid = grid;
  launch.block = block;
  launch.body = body;
  launch.body_context = context;
  launch.cooperative = cooperative;
  launch.block_threads = static_cast<int>(threads);
  const size_t resident = cooperative ? blocks : 1;
  launch.dynamic_shared.assign(resident, std::vector<unsigned char>(dynamic_smem, 0xFF));
  launch.fibers.resize(threads * resident);
  Stacks stacks;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < launch.fibers.size(); ++i) {
    const size_t t = i % threads;
    void* region = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) throw std::runtime_error("sk_emu: cannot map a fiber stack");
    mprotect(region, page, PROT_NONE);  // overflow faults instead of corrupting
    Fiber& f = launch.fibers[i];
    f.slot = static_cast<int>(i / threads);
    f.stack = static_cast<unsigned char*>(region) + page;
    stacks.regions.push_back(f.stack);
    // threadIdx.x varies fastest, then y, then z; warps are runs of 32.
    f.index = uint3{static_cast<unsigned>(t % block.x),
                    static_cast<unsigned>(t / block.x % block.y),
                    static_cast<unsigned>(t / (1ull * block.x * block.y))};
  }
  std::mt19937_64 rng(g_seed);
  g_launch = &launch;
  // Block b of the grid (x fastest).
  auto block_of = [&](unsigned long long b) {
    return uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                 static_cast<unsigned>(b / (1ull * grid.x * grid.y))};
  };
  if (cooperative) {
    for (Fiber& f : launch.fibers) f.block = block_of(static_cast<unsigned long long>(f.slot));
    run_resident(launch, rng);
  } else {
    for (unsigned long long b = 0; b < blocks && launch.error.empty(); ++b) {
      for (Fiber& f : launch.fibers) f.block = block_of(b);
      run_resident(launch, rng);
    }
  }
  g_launch = nullptr;
  if (!launch.error.empty()) return record(cudaErrorLaunchFailure, launch.error);
  return cudaSuccess;
}

}  // namespace sk_emu

cudaError_t cudaGetLastError() {
  const cudaError_t e = sk_emu::g_last_error;
  sk_emu::g_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return sk_emu::g_last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
  }
  return "unknown error";
}

// The C interface the Python tests drive (tests/emu/emu_api.cpp adds the
// kernels' launchers).
extern "C" {
void sk_emu_set_schedule(int schedule, uint64_t seed) {
  sk_emu::g_schedule = static_cast<sk_emu::Schedule>(schedule);
  sk_emu::g_seed = seed;
}
const char* sk_emu_last_error_message() { return sk_emu::g_last_message.c_str(); }
const char* sk_emu_last_kernel() { return sk_emu::g_last_kernel.c_str(); }
}
