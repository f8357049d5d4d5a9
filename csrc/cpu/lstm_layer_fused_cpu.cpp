// The fused CPU LSTM layer forward (sparse_kernels/cpu_lstm_fused.h).
#include "sparse_kernels/cpu_lstm_fused.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "sparse_kernels/checks.h"
#include "sparse_kernels/cpu_fast_math.h"
#include "sparse_kernels/cpu_gathered.h"
#include "sparse_kernels/cpu_sliced.h"
#include "sparse_kernels/cpu_simd.h"
#include "sparse_kernels/cpu_step_schedule.h"
#include "sparse_kernels/cpu_tiled.h"
#include "sparse_kernels/lstm_math.h"

namespace sparse_kernels::cpu {
namespace {

// Units per block of the batch-1 path: the block's 4 x 64 pre-activations
// are one SIMD cell loop.
constexpr int64_t kUnitBlock = 64;
static_assert(kUnitBlock % 16 == 0, "step_batch1 writes whole slices of a sliced view into pre");

// The cell over n lanes: pre = [i | f | g | o], `stride` apart.
SK_CPU_CLONES void cell_lanes_f32(const float* pre, int64_t stride, const float* c_prev, float* h,
                                  float* c, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j)
    lstm_unit_forward<float, FastActivations>(pre[j], pre[stride + j], pre[2 * stride + j],
                                              pre[3 * stride + j], c_prev[j], h + j, c + j);
}

void cell_lanes(const float* pre, int64_t stride, const float* c_prev, float* h, float* c, int64_t n) {
  cell_lanes_f32(pre, stride, c_prev, h, c, n);
}

// double keeps libm's activations, as the float64 gradchecks expect.
void cell_lanes(const double* pre, int64_t stride, const double* c_prev, double* h, double* c, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    lstm_unit_forward<double>(pre[j], pre[stride + j], pre[2 * stride + j], pre[3 * stride + j],
                              c_prev[j], h + j, c + j);
}

// Unit ranges of about equal work (the four gate rows' nonzeros, plus one
// per unit for its cell), `chunks` of them, each starting at a multiple of
// `align` units (a slice of the sliced view is 8 or 16 units of one gate).
std::vector<int64_t> unit_chunks(const int32_t* ptr, int64_t hidden, int64_t chunks, int64_t align) {
  const int64_t groups = (hidden + align - 1) / align;
  std::vector<int64_t> prefix(groups + 1, 0);
  for (int64_t q = 0; q < groups; ++q) {
    int64_t work = 0;
    for (int64_t u = q * align; u < std::min(hidden, (q + 1) * align); ++u) {
      work += 1;
      for (int g = 0; g < 4; ++g) work += ptr[g * hidden + u + 1] - ptr[g * hidden + u];
    }
    prefix[q + 1] = prefix[q] + work;
  }
  std::vector<int64_t> bounds = balanced_bounds(prefix, chunks);
  for (int64_t& b : bounds) b = std::min(hidden, b * align);
  return bounds;
}

template <typename T>
struct FusedLstm {
  // Inputs.
  const T* input_gates;  // (T, B, 4H)
  const T* values;
  const int32_t* ptr;
  const int32_t* idx;
  int64_t batch, hidden, width;
  // Outputs (T, B, *); gates and cells (what the backward reads) null when
  // the caller saves no activations (a forward that will not be differentiated).
  T* output;
  T* gates;
  T* cells;
  // State: h in two buffers (read / written), c in place; x-tile layout of
  // `width` lanes, or plain vectors at batch 1.
  T* h_buffers[2];
  T* c;
  // W_hh's sliced view (float32 only; null without one): slices of 8 or 16
  // units of one gate (view->rows_per_slice()), `slices_per_gate` per gate;
  // the h buffers hold zeros past `hidden` (sliced_x_length).
  const SlicedView* sliced = nullptr;
  int64_t slices_per_gate = 0;

  // Batch 1: blocks of units, four gathered dot products per unit.
  void step_batch1(int64_t t, const T* h_cur, T* h_next, int64_t u_begin, int64_t u_end) const {
    const T* ig = input_gates + t * 4 * hidden;
    T* gates_t = gates == nullptr ? nullptr : gates + t * 4 * hidden;
    T* cells_t = cells == nullptr ? nullptr : cells + t * hidden;
    T* out_t = output + t * hidden;
    T pre[4 * kUnitBlock];
    for (int64_t u0 = u_begin; u0 < u_end; u0 += kUnitBlock) {
      const int64_t n = std::min(kUnitBlock, u_end - u0);
      bool done = false;
      if constexpr (std::is_same_v<T, float>) {
        if (sliced != nullptr) {
          // u0 is a multiple of the slice height (unit_chunks' alignment):
          // the block's rows of gate g are that gate's slices from u0 / height,
          // a slice's sums in one register (kUnitBlock is whole slices).
          const int64_t height = sliced->rows_per_slice();
          for (int g = 0; g < 4; ++g)
            view_lanes(*sliced, g * slices_per_gate + u0 / height, (n + height - 1) / height, h_cur,
                       pre + g * kUnitBlock);
          done = true;
        }
      }
      if (!done) {
        // Gate by gate, the block's rows in storage order: one stream of
        // indices and values at a time (measured 1.1x faster than a unit's
        // four gate rows in turn, standalone, 4096 x 1024 at 90%).
        int64_t rows[kUnitBlock];
        for (int g = 0; g < 4; ++g) {
          for (int64_t i = 0; i < n; ++i) rows[i] = g * hidden + u0 + i;
          gathered_row_list(ptr, idx, values, rows, static_cast<int>(n), h_cur, pre + g * kUnitBlock, 1);
        }
      }
      for (int g = 0; g < 4; ++g)
        for (int64_t i = 0; i < n; ++i) pre[g * kUnitBlock + i] += ig[g * hidden + u0 + i];
      cell_lanes(pre, kUnitBlock, c + u0, h_next + u0, c + u0, n);
      if (gates != nullptr) {
        for (int g = 0; g < 4; ++g)
          std::memcpy(gates_t + g * hidden + u0, pre + g * kUnitBlock, n * sizeof(T));
        std::memcpy(cells_t + u0, c + u0, n * sizeof(T));
      }
      std::memcpy(out_t + u0, h_next + u0, n * sizeof(T));
    }
  }

  // Batch >= 2: per tile of lanes, per unit, four tiled row products, then
  // the cell on the tile's lanes; lanes at or past the step's active batch
  // b keep their state.
  void step_tiled(int64_t t, int64_t b, const T* h_cur, T* h_next, int64_t u_begin, int64_t u_end) const {
    for (int64_t j0 = 0; j0 < width; j0 += tile_width(j0, width)) {
      const int64_t w = tile_width(j0, width);
      const T* x_tile = h_cur + j0 * hidden;
      T* h_tile = h_next + j0 * hidden;
      T* c_tile = c + j0 * hidden;
      if (j0 >= b) {
        std::memcpy(h_tile + u_begin * w, x_tile + u_begin * w, (u_end - u_begin) * w * sizeof(T));
        continue;
      }
      const int64_t active = std::min(w, b - j0);
      T pre[4 * 16], h_new[16], c_new[16];
      for (int64_t u = u_begin; u < u_end; ++u) {
        const int64_t rows[4] = {u, hidden + u, 2 * hidden + u, 3 * hidden + u};
        tiled_row_list(ptr, idx, values, rows, 4, x_tile, w, pre, 16);
        for (int64_t j = 0; j < active; ++j) {
          const T* ig = input_gates + (t * batch + j0 + j) * 4 * hidden + u;
          for (int g = 0; g < 4; ++g) pre[g * 16 + j] += ig[g * hidden];
        }
        cell_lanes(pre, 16, c_tile + u * w, h_new, c_new, w);
        for (int64_t j = 0; j < active; ++j) {
          const int64_t row = t * batch + j0 + j;
          c_tile[u * w + j] = c_new[j];
          h_tile[u * w + j] = h_new[j];
          output[row * hidden + u] = h_new[j];
        }
        if (gates != nullptr) {
          for (int64_t j = 0; j < active; ++j) {
            const int64_t row = t * batch + j0 + j;
            for (int g = 0; g < 4; ++g) gates[row * 4 * hidden + g * hidden + u] = pre[g * 16 + j];
            cells[row * hidden + u] = c_new[j];
          }
        }
        for (int64_t j = active; j < w; ++j) h_tile[u * w + j] = x_tile[u * w + j];
      }
    }
  }
};

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_fused(
    const at::Tensor& input_gates, const at::Tensor& h0_, const at::Tensor& c0_, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& batch_sizes, bool reverse,
    const SlicedView* sliced, bool save_activations) {
  const int64_t steps = input_gates.size(0), batch = input_gates.size(1), hidden = c0_.size(1);
  const auto options = input_gates.options();
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  std::vector<int64_t> active_steps;  // processing order, steps with rows only
  bool full = true;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    if (bs[t] > 0) active_steps.push_back(t);
    full = full && bs[t] == batch;
  }
  // Rows a step does not reach stay zero in the saved tensors (as the shared loop leaves them).
  auto make = [&](int64_t features) {
    return full ? at::empty({steps, batch, features}, options) : at::zeros({steps, batch, features}, options);
  };
  // Without saved activations, gates and cells are empty and never written:
  // at batch 20 they are 5/6 of what the loop stores (BENCHMARKS.md, session Y).
  at::Tensor output = make(hidden);
  at::Tensor gates = save_activations ? make(4 * hidden) : at::empty({0}, options);
  at::Tensor cells = save_activations ? make(hidden) : at::empty({0}, options);
  const at::Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const int64_t width = state_width(batch);
  // Past each h buffer's `hidden` entries zeros stay: the SELL-8 view's
  // padding column, the blocked view's last 64-column block.
  const int64_t h_stride = fused_h_stride(width, hidden);
  at::Tensor h_state = at::zeros({2, h_stride}, options);
  at::Tensor c_state = at::empty({width * hidden}, options);
  load_state(h0.data_ptr<T>(), batch, hidden, h_state.data_ptr<T>());
  load_state(c0.data_ptr<T>(), batch, hidden, c_state.data_ptr<T>());
  FusedLstm<T> loop{input_gates.data_ptr<T>(), values.data_ptr<T>(), row_ptr.data_ptr<int32_t>(),
                    col_idx.data_ptr<int32_t>(), batch, hidden, width, output.data_ptr<T>(),
                    save_activations ? gates.data_ptr<T>() : nullptr,
                    save_activations ? cells.data_ptr<T>() : nullptr,
                    {h_state.data_ptr<T>(), h_state.data_ptr<T>() + h_stride}, c_state.data_ptr<T>()};
  const int64_t nnz = col_idx.numel();
  const int64_t step_work = (nnz + 4 * hidden) * width;
  int64_t align = 1;
  if constexpr (std::is_same_v<T, float>) {
    if (sliced != nullptr && batch == 1 && sliced_view_enabled()) {
      loop.sliced = sliced;
      align = sliced->rows_per_slice();
      loop.slices_per_gate = (hidden + align - 1) / align;
    }
  }
  const std::vector<int64_t> bounds =
      unit_chunks(loop.ptr, hidden, step_chunk_count(step_work, hidden), align);
  const int64_t chunk_count = static_cast<int64_t>(bounds.size()) - 1;
  run_step_schedule(static_cast<int64_t>(active_steps.size()), chunk_count, [&](int64_t s, int64_t chunk) {
    const int64_t t = active_steps[s];
    const T* h_cur = loop.h_buffers[s % 2];
    T* h_next = loop.h_buffers[(s + 1) % 2];
    if (batch == 1) {
      loop.step_batch1(t, h_cur, h_next, bounds[chunk], bounds[chunk + 1]);
    } else {
      loop.step_tiled(t, bs[t], h_cur, h_next, bounds[chunk], bounds[chunk + 1]);
    }
  });
  const T* h_last = loop.h_buffers[active_steps.size() % 2];
  at::Tensor h_n = at::empty({batch, hidden}, options), c_n = at::empty({batch, hidden}, options);
  store_state(h_last, batch, hidden, h_n.data_ptr<T>());
  store_state(static_cast<const T*>(loop.c), batch, hidden, c_n.data_ptr<T>());
  return {output, h_n, c_n, gates, cells, at::empty({0}, options)};
}

}  // namespace

bool fused_lstm_layer_applies(const at::Tensor& input_gates, bool projected) {
  static const bool enabled = [] {
    const char* env = std::getenv("SPARSE_KERNELS_CPU_FUSED_LSTM");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  const auto dtype = input_gates.scalar_type();
  return enabled && !projected && (dtype == at::kFloat || dtype == at::kDouble) &&
         input_gates.numel() > 0;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_lstm_layer(
    const at::Tensor& input_gates_, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& batch_sizes, bool reverse,
    const SlicedView* sliced, bool save_activations) {
  const at::Tensor input_gates = input_gates_.contiguous();
  const at::Tensor values_c = values.contiguous();
  if (input_gates.scalar_type() == at::kFloat) {
    return run_fused<float>(input_gates, h0, c0, values_c, row_ptr, col_idx, batch_sizes, reverse, sliced,
                            save_activations);
  }
  return run_fused<double>(input_gates, h0, c0, values_c, row_ptr, col_idx, batch_sizes, reverse, nullptr,
                           save_activations);
}

}  // namespace sparse_kernels::cpu
