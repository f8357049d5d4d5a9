// Accumulation precision: fp32 for fp32 and 16-bit values, fp64 for fp64.
#pragma once

#include <cuda_runtime.h>

namespace sparse_kernels::cuda {

template <typename T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Accumulator<T>::type;

template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}
template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v) {
  return static_cast<T>(v);
}

}  // namespace sparse_kernels::cuda
