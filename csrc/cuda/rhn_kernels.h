// Torch-free CUDA launchers of the fused recurrent-highway micro-layer cell
// (csrc/cuda/rhn_cell.cu), glued to torch in csrc/cuda/rhn_layer_cuda.cpp.
// Layouts as in csrc/include/sparse_kernels/cpu_kernels.h (rhn_cell).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace sparse_kernels::cuda {

// pre (n_rows, 2*hidden) [transform | gate], s_prev (n_rows, hidden) -> s.
template <typename T>
cudaError_t rhn_cell(const T* pre, const T* s_prev, T* s, int64_t n_rows, int64_t hidden,
                     cudaStream_t stream);

// -> grad_pre (n_rows, 2*hidden), grad_s_prev (n_rows, hidden), carry path only.
template <typename T>
cudaError_t rhn_cell_backward(const T* grad_s, const T* pre, const T* s_prev, T* grad_pre,
                              T* grad_s_prev, int64_t n_rows, int64_t hidden,
                              cudaStream_t stream);

}  // namespace sparse_kernels::cuda
