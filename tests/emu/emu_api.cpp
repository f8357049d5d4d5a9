// C interface over the launchers of csrc/cuda/kernels.h, compiled with the
// emulator, for the Python tests (ctypes; raw host pointers play the device
// pointers). Every function returns the launcher's cudaError_t; the message
// of a failure is sk_emu_last_error_message().
#include "kernels.h"
#include "rhn_kernels.h"

namespace k = sparse_kernels::cuda;

// The two sparse products, for an index type (int32_t or uint16_t).
#define SK_EMU_EXPORT_PRODUCTS(T, Index, suffix)                                           \
  extern "C" int sk_emu_sparse_linear_##suffix(const T* x, const T* values,                 \
                                               const int32_t* row_ptr, const Index* col_idx, \
                                               const T* bias, T* y, int64_t n_rows,          \
                                               int64_t in_features, int64_t out_features,   \
                                               int64_t nnz, const int32_t* row_order) {      \
    return k::sparse_linear<T, Index>(x, values, row_ptr, col_idx, bias, y, n_rows,         \
                                      in_features, out_features, nnz, nullptr, row_order);  \
  }                                                                                         \
  extern "C" int sk_emu_sparse_linear_input_grad_##suffix(                                  \
      const T* grad_y, const T* values, const int32_t* col_ptr, const Index* row_idx,       \
      const int32_t* csr2csc, T* grad_x, int64_t n_rows, int64_t in_features,               \
      int64_t out_features, int64_t nnz, const int32_t* col_order) {                        \
    return k::sparse_linear_input_grad<T, Index>(grad_y, values, col_ptr, row_idx, csr2csc, \
                                                 grad_x, n_rows, in_features, out_features, \
                                                 nnz, nullptr, col_order);                  \
  }

// The wide-batch products (wide_batch.cuh), over transposed operands with
// rows every ld elements.
#define SK_EMU_EXPORT_WIDE_PRODUCTS(T, Index, suffix)                                       \
  extern "C" int sk_emu_sparse_linear_wide_##suffix(                                        \
      const T* xT, int64_t ld_x, const T* values, const int32_t* row_ptr,                   \
      const Index* col_idx, const T* bias, T* yT, int64_t ld_y, int64_t n_rows,             \
      int64_t out_features, const int32_t* row_order) {                                     \
    return k::sparse_linear_wide<T, Index>(xT, ld_x, values, row_ptr, col_idx, bias, yT,    \
                                           ld_y, n_rows, out_features, nullptr, row_order); \
  }                                                                                         \
  extern "C" int sk_emu_sparse_linear_input_grad_wide_##suffix(                             \
      const T* grad_yT, int64_t ld_grad_y, const T* values, const int32_t* col_ptr,         \
      const Index* row_idx, const int32_t* csr2csc, T* grad_xT, int64_t ld_grad_x,          \
      int64_t n_rows, int64_t in_features, const int32_t* col_order) {                      \
    return k::sparse_linear_input_grad_wide<T, Index>(grad_yT, ld_grad_y, values, col_ptr,  \
                                                      row_idx, csr2csc, grad_xT, ld_grad_x, \
                                                      n_rows, in_features, nullptr,         \
                                                      col_order);                           \
  }

#define SK_EMU_EXPORT(T, suffix)                                                            \
  SK_EMU_EXPORT_PRODUCTS(T, int32_t, suffix)                                                \
  SK_EMU_EXPORT_PRODUCTS(T, uint16_t, idx16_##suffix)                                       \
  SK_EMU_EXPORT_WIDE_PRODUCTS(T, int32_t, suffix)                                           \
  SK_EMU_EXPORT_WIDE_PRODUCTS(T, uint16_t, idx16_##suffix)                                  \
  extern "C" int sk_emu_sparse_linear_value_grad_wide_##suffix(                             \
      const T* grad_yT, int64_t ld_grad_y, const T* xT, int64_t ld_x, const int32_t* row_ptr, \
      const int32_t* col_idx, T* grad_values, int64_t n_rows, int64_t out_features,         \
      int64_t nnz, const int32_t* row_order) {                                              \
    return k::sparse_linear_value_grad_wide<T>(grad_yT, ld_grad_y, xT, ld_x, row_ptr,       \
                                               col_idx, grad_values, n_rows, out_features,  \
                                               nnz, nullptr, row_order);                    \
  }                                                                                         \
  extern "C" int sk_emu_sparse_linear_value_grad_##suffix(                                  \
      const T* grad_y, const T* x, const int32_t* row_ptr, const int32_t* col_idx,          \
      T* grad_values, int64_t n_rows, int64_t in_features, int64_t out_features,            \
      int64_t nnz) {                                                                        \
    return k::sparse_linear_value_grad<T>(grad_y, x, row_ptr, col_idx, grad_values, n_rows, \
                                          in_features, out_features, nnz, nullptr);         \
  }                                                                                         \
  extern "C" int sk_emu_lstm_cell_##suffix(const T* gates, const T* c_prev, T* h, T* c,     \
                                           int64_t n_rows, int64_t hidden) {                \
    return k::lstm_cell<T>(gates, c_prev, h, c, n_rows, hidden, nullptr);                   \
  }                                                                                         \
  extern "C" int sk_emu_lstm_cell_backward_##suffix(                                        \
      const T* grad_h, const T* grad_c, const T* gates, const T* c_prev, const T* c,        \
      T* grad_gates, T* grad_c_prev, int64_t n_rows, int64_t hidden) {                      \
    return k::lstm_cell_backward<T>(grad_h, grad_c, gates, c_prev, c, grad_gates,           \
                                    grad_c_prev, n_rows, hidden, nullptr);                  \
  }                                                                                         \
  extern "C" int sk_emu_bsr_linear_##suffix(const T* x, const T* values, const int32_t* rp,  \
                                            const int32_t* ci, const T* bias, T* y,         \
                                            int64_t n_rows, int64_t in_f, int64_t out_f,    \
                                            int64_t bh, int64_t bw, int64_t tensor_cores) { \
    return k::bsr_linear<T>(x, values, rp, ci, bias, y, n_rows, in_f, out_f, bh, bw,        \
                            nullptr, tensor_cores != 0);                                    \
  }                                                                                         \
  extern "C" int sk_emu_bsr_linear_input_grad_##suffix(                                     \
      const T* grad_y, const T* values, const int32_t* cp, const int32_t* ri,               \
      const int32_t* perm, T* grad_x, int64_t n_rows, int64_t in_f, int64_t out_f,          \
      int64_t bh, int64_t bw, int64_t tensor_cores) {                                       \
    return k::bsr_linear_input_grad<T>(grad_y, values, cp, ri, perm, grad_x, n_rows, in_f,  \
                                       out_f, bh, bw, nullptr, tensor_cores != 0);          \
  }                                                                                         \
  extern "C" int sk_emu_bsr_linear_value_grad_##suffix(                                     \
      const T* grad_y, const T* x, const int32_t* rp, const int32_t* ci, T* grad_values,    \
      int64_t n_rows, int64_t in_f, int64_t out_f, int64_t bh, int64_t bw, int64_t nblocks, \
      int64_t tensor_cores) {                                                               \
    return k::bsr_linear_value_grad<T>(grad_y, x, rp, ci, grad_values, n_rows, in_f, out_f, \
                                       bh, bw, nblocks, nullptr, tensor_cores != 0);        \
  }

// The persistent LSTM forward, with the plan of lstm_persistent.h made here
// from the host row_ptr (blocks: at most this many). Returns the launch's
// error; *smem_bytes gets the plan's shared memory per block.
#include "lstm_persistent.h"
#define SK_EMU_EXPORT_PERSISTENT(T, suffix)                                                      \
  extern "C" int sk_emu_lstm_persistent_forward_##suffix(                                       \
      const T* input_gates, const T* values, const int32_t* row_ptr, const int32_t* col_idx,     \
      const int32_t* batch_sizes, int64_t max_blocks, T* output, T* gates, T* cells, T* h_n,     \
      T* c_n, T* h_buf, int64_t steps, int64_t batch, int64_t hidden, int64_t reverse,           \
      int64_t* smem_bytes, int64_t* blocks) {                                                    \
    const k::PersistentLstmPlan plan =                                                           \
        k::plan_persistent_lstm(row_ptr, hidden, static_cast<int>(max_blocks), sizeof(T));       \
    *smem_bytes = static_cast<int64_t>(plan.smem_bytes);                                         \
    *blocks = plan.blocks();                                                                     \
    return k::lstm_persistent_forward<T>(input_gates, values, row_ptr, col_idx, batch_sizes,     \
                                         plan.unit_start.data(), plan.blocks(), plan.smem_bytes, \
                                         output, gates, cells, h_n, c_n, h_buf, steps, batch,    \
                                         hidden, reverse != 0, nullptr);                         \
  }
SK_EMU_EXPORT_PERSISTENT(float, f32)
SK_EMU_EXPORT_PERSISTENT(double, f64)
SK_EMU_EXPORT_PERSISTENT(__half, f16)
SK_EMU_EXPORT_PERSISTENT(__nv_bfloat16, bf16)

SK_EMU_EXPORT(float, f32)
SK_EMU_EXPORT(double, f64)
SK_EMU_EXPORT(__half, f16)
SK_EMU_EXPORT(__nv_bfloat16, bf16)

// The GRU, Elman and highway cells (float and double: the types their ops take).
#define SK_EMU_EXPORT_CELLS(T, suffix)                                                      \
  extern "C" int sk_emu_gru_cell_##suffix(const T* ig, const T* hg, const T* h_prev, T* h,  \
                                          int64_t n_rows, int64_t hidden) {                 \
    return k::gru_cell<T>(ig, hg, h_prev, h, n_rows, hidden, nullptr);                     \
  }                                                                                         \
  extern "C" int sk_emu_gru_cell_backward_##suffix(                                         \
      const T* grad_h, const T* ig, const T* hg, const T* h_prev, T* d_ig, T* d_hg,         \
      T* dh_prev, int64_t n_rows, int64_t hidden) {                                         \
    return k::gru_cell_backward<T>(grad_h, ig, hg, h_prev, d_ig, d_hg, dh_prev, n_rows,     \
                                   hidden, nullptr);                                        \
  }                                                                                         \
  extern "C" int sk_emu_rnn_cell_##suffix(const T* pre, T* h, int64_t n, int64_t relu) {    \
    return k::rnn_cell<T>(pre, h, n, relu != 0, nullptr);                                   \
  }                                                                                         \
  extern "C" int sk_emu_rnn_cell_backward_##suffix(const T* grad_h, const T* h, T* grad_pre, \
                                                   int64_t n, int64_t relu) {               \
    return k::rnn_cell_backward<T>(grad_h, h, grad_pre, n, relu != 0, nullptr);             \
  }                                                                                         \
  extern "C" int sk_emu_rhn_cell_##suffix(const T* pre, const T* s_prev, T* s,              \
                                          int64_t n_rows, int64_t hidden) {                 \
    return k::rhn_cell<T>(pre, s_prev, s, n_rows, hidden, nullptr);                         \
  }                                                                                         \
  extern "C" int sk_emu_rhn_cell_backward_##suffix(const T* grad_s, const T* pre,           \
                                                   const T* s_prev, T* grad_pre,            \
                                                   T* grad_s_prev, int64_t n_rows,          \
                                                   int64_t hidden) {                        \
    return k::rhn_cell_backward<T>(grad_s, pre, s_prev, grad_pre, grad_s_prev, n_rows,      \
                                   hidden, nullptr);                                        \
  }

SK_EMU_EXPORT_CELLS(float, f32)
SK_EMU_EXPORT_CELLS(double, f64)

// The random regrow's candidate draws (topology_kernels.h).
#include "topology_kernels.h"

extern "C" int sk_emu_regrow_candidates(const int64_t* group, const int64_t* index, const int64_t* free,
                                        const int64_t* want, int64_t n, uint64_t seed, int64_t* rank,
                                        int64_t* priority) {
  return k::regrow_candidates(group, index, free, want, n, seed, rank, priority, nullptr);
}
