// Torch-free CUDA launchers: raw device pointers and a stream. Glued to torch
// in ops_cuda.cpp. Keeping torch headers out of the .cu files keeps each one a
// few seconds to compile and lets the kernels be built without torch.
//
// Index conventions are those of csrc/include/sparse_kernels/cpu_kernels.h.
// Every launcher returns the launch's cudaError_t. T is float, double, __half
// or __nv_bfloat16 (accumulation in fp32 for the 16-bit types, see
// accumulate.cuh).
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace sparse_kernels::cuda {

// y (n_rows, out) = x (n_rows, in) @ W^T + bias (bias may be null); nnz
// (= row_ptr[out]) picks the work split without a device read. row_order:
// null, or W's rows sorted by decreasing length (load balance, spmm.cuh).
// Index: int32_t, or uint16_t column indices when in <= 65536.
template <typename T, typename Index = int32_t>
cudaError_t sparse_linear(const T* x, const T* values, const int32_t* row_ptr,
                          const Index* col_idx, const T* bias, T* y,
                          int64_t n_rows, int64_t in_features,
                          int64_t out_features, int64_t nnz, cudaStream_t stream,
                          const int32_t* row_order = nullptr);

// grad_x (n_rows, in) = grad_y (n_rows, out) @ W through the CSC view;
// col_order: null, or W's columns sorted by decreasing length. Index:
// int32_t, or uint16_t row indices when out <= 65536.
template <typename T, typename Index = int32_t>
cudaError_t sparse_linear_input_grad(const T* grad_y, const T* values,
                                     const int32_t* col_ptr,
                                     const Index* row_idx,
                                     const int32_t* csr2csc, T* grad_x,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, int64_t nnz,
                                     cudaStream_t stream,
                                     const int32_t* col_order = nullptr);

// grad_values (nnz) = SDDMM of grad_y and x at the stored nonzeros.
template <typename T>
cudaError_t sparse_linear_value_grad(const T* grad_y, const T* x,
                                     const int32_t* row_ptr,
                                     const int32_t* col_idx, T* grad_values,
                                     int64_t n_rows, int64_t in_features,
                                     int64_t out_features, int64_t nnz,
                                     cudaStream_t stream);

// ---- Wide batches (wide_batch.cuh): the batch on the lanes, over transposed
// operands whose rows (one per feature, the batch along the row) start every
// ld elements; 16-byte loads when the rows are 16-byte aligned. The op glue
// (ops_cuda.cpp) takes these instead of the kernels above when
// use_wide_batch_kernels(n_rows) says so.
//
// The rule: from kWideBatchMinRows batch rows on. Below it the narrow kernels
// win: they need no transposes (two extra passes over the operands, and two
// more launches), and a batch of a few rows fills few lanes of a subwarp.
// Above it the narrow forward reads W once per 4 batch rows with loads
// strided by the input width (issue #14's profile: 0.4x cuBLAS at batch 64),
// while the wide one reads W once per 16-256 batch rows, coalesced.
// Predicted from that profile, not yet measured: benchmarks/gpu_report.py
// times both sides of it (SPARSE_KERNELS_WIDE_MIN_BATCH overrides it).
constexpr int64_t kWideBatchMinRows = 16;

inline bool use_wide_batch_kernels(int64_t n_rows, int64_t min_rows = kWideBatchMinRows) {
  return n_rows >= min_rows;
}

// yT (out, ld_y)[:, :n_rows] = W xT, xT (in, ld_x)[:, :n_rows] = x^T; + bias.
template <typename T, typename Index = int32_t>
cudaError_t sparse_linear_wide(const T* xT, int64_t ld_x, const T* values, const int32_t* row_ptr,
                               const Index* col_idx, const T* bias, T* yT, int64_t ld_y, int64_t n_rows,
                               int64_t out_features, cudaStream_t stream,
                               const int32_t* row_order = nullptr);

// grad_xT (in, ld_grad_x) = W^T grad_yT through the CSC view, grad_yT (out, ld_grad_y).
template <typename T, typename Index = int32_t>
cudaError_t sparse_linear_input_grad_wide(const T* grad_yT, int64_t ld_grad_y, const T* values,
                                          const int32_t* col_ptr, const Index* row_idx, const int32_t* csr2csc,
                                          T* grad_xT, int64_t ld_grad_x, int64_t n_rows, int64_t in_features,
                                          cudaStream_t stream, const int32_t* col_order = nullptr);

// grad_values[k] = grad_yT[r, :n_rows] . xT[col_idx[k], :n_rows] for k in row r.
template <typename T>
cudaError_t sparse_linear_value_grad_wide(const T* grad_yT, int64_t ld_grad_y, const T* xT, int64_t ld_x,
                                          const int32_t* row_ptr, const int32_t* col_idx, T* grad_values,
                                          int64_t n_rows, int64_t out_features, int64_t nnz, cudaStream_t stream,
                                          const int32_t* row_order = nullptr);

// Block-sparse (BSR) W with bh x bw blocks: block_row_ptr (out/bh + 1),
// block_col_idx (nblocks), values (nblocks, bh, bw), each block row-major;
// the transposed block index is (block_col_ptr, block_row_idx,
// block_csr2csc). tensor_cores: allow the WMMA kernels where they apply
// (16 x 16 blocks, fp16/bf16, sm_80+; see bsr.cuh), else the SIMT ones.
// y (n_rows, out) = x (n_rows, in) @ W^T + bias (bias may be null).
template <typename T>
cudaError_t bsr_linear(const T* x, const T* values, const int32_t* block_row_ptr, const int32_t* block_col_idx,
                       const T* bias, T* y, int64_t n_rows, int64_t in_features, int64_t out_features,
                       int64_t bh, int64_t bw, cudaStream_t stream, bool tensor_cores = true);

// grad_x (n_rows, in) = grad_y (n_rows, out) @ W through the transposed block index.
template <typename T>
cudaError_t bsr_linear_input_grad(const T* grad_y, const T* values, const int32_t* block_col_ptr,
                                  const int32_t* block_row_idx, const int32_t* block_csr2csc, T* grad_x,
                                  int64_t n_rows, int64_t in_features, int64_t out_features, int64_t bh,
                                  int64_t bw, cudaStream_t stream, bool tensor_cores = true);

// grad_values (nblocks, bh, bw) = grad_y^T @ x at the stored blocks.
template <typename T>
cudaError_t bsr_linear_value_grad(const T* grad_y, const T* x, const int32_t* block_row_ptr,
                                  const int32_t* block_col_idx, T* grad_values, int64_t n_rows,
                                  int64_t in_features, int64_t out_features, int64_t bh, int64_t bw,
                                  int64_t nblocks, cudaStream_t stream, bool tensor_cores = true);

// The whole-sequence LSTM forward (no projection) in one cooperative launch
// with W_hh in shared memory (lstm_persistent.cu; the split of W_hh over the
// blocks: lstm_persistent.h). input_gates (steps, batch, 4H) is x W_ih^T +
// biases; batch_sizes (steps) and unit_start (blocks + 1, from
// plan_persistent_lstm) are device arrays; smem_bytes is the plan's. Writes
// output, cells (steps, batch, H) and gates (steps, batch, 4H) at the active
// rows only (the caller zero-fills them), and h_n, c_n (batch, H), which
// must hold h0 and c0 on entry, as must both halves of h_buf (2, batch, H).
// Returns cudaErrorCooperativeLaunchTooLarge when the blocks cannot all be
// resident at once (the caller then takes the per-step path).
template <typename T>
cudaError_t lstm_persistent_forward(const T* input_gates, const T* values, const int32_t* row_ptr,
                                    const int32_t* col_idx, const int32_t* batch_sizes,
                                    const int32_t* unit_start, int blocks, size_t smem_bytes, T* output,
                                    T* gates, T* cells, T* h_n, T* c_n, T* h_buf, int64_t steps,
                                    int64_t batch, int64_t hidden, bool reverse, cudaStream_t stream);

template <typename T>
cudaError_t lstm_cell(const T* gates, const T* c_prev, T* h, T* c,
                      int64_t n_rows, int64_t hidden, cudaStream_t stream);

template <typename T>
cudaError_t lstm_cell_backward(const T* grad_h, const T* grad_c, const T* gates,
                               const T* c_prev, const T* c, T* grad_gates,
                               T* grad_c_prev, int64_t n_rows, int64_t hidden,
                               cudaStream_t stream);

// GRU cell: ig, hg (n_rows, 3H) (input and hidden parts), h_prev (n_rows, H).
template <typename T>
cudaError_t gru_cell(const T* ig, const T* hg, const T* h_prev, T* h, int64_t n_rows,
                     int64_t hidden, cudaStream_t stream);

template <typename T>
cudaError_t gru_cell_backward(const T* grad_h, const T* ig, const T* hg, const T* h_prev, T* d_ig,
                              T* d_hg, T* dh_prev, int64_t n_rows, int64_t hidden,
                              cudaStream_t stream);

// Elman cell over n elements: h = tanh(pre) or relu(pre).
template <typename T>
cudaError_t rnn_cell(const T* pre, T* h, int64_t n, bool relu, cudaStream_t stream);

template <typename T>
cudaError_t rnn_cell_backward(const T* grad_h, const T* h, T* grad_pre, int64_t n, bool relu,
                              cudaStream_t stream);

}  // namespace sparse_kernels::cuda
