// The extension is imported as a Python module so that its static
// initialisers (the TORCH_LIBRARY registrations) run. Its only Python
// functions are private test hooks: the device-generic topology ops
// (sparse_kernels/topology_generic.h, which the CUDA build registers for the
// CUDA dispatch key) callable on CPU tensors, so that tests compare them with
// the CPU ops without a GPU. Not part of the CMake library, which has no Python.
#include <torch/extension.h>

#include "sparse_kernels/topology_generic.h"

namespace generic = sparse_kernels::topology::generic;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparse_kernels' compiled ops (registered under torch.ops.sparse_kernels) and private test hooks";
  m.def(
      "_generic_magnitude_prune",
      [](const at::Tensor& values, const at::Tensor& group_ptr, const at::Tensor& drop_counts,
         bool device_checks) { return generic::magnitude_prune(values, group_ptr, drop_counts, device_checks); },
      py::arg("values"), py::arg("group_ptr"), py::arg("drop_counts"), py::arg("device_checks") = false);
  m.def(
      "_generic_signed_magnitude_prune",
      [](const at::Tensor& values, const at::Tensor& group_ptr, double fraction, bool device_checks) {
        return generic::signed_magnitude_prune(values, group_ptr, fraction, device_checks);
      },
      py::arg("values"), py::arg("group_ptr"), py::arg("fraction"), py::arg("device_checks") = false);
  m.def(
      "_generic_random_regrow",
      [](const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& occupied, int64_t n_cols,
         const at::Tensor& group_rows, const at::Tensor& grow_counts, int64_t seed, bool device_checks,
         double oversample) {
        return generic::random_regrow(row_ptr, col_idx, occupied, n_cols, group_rows, grow_counts, seed,
                                      &generic::regrow_candidates_cpu, device_checks, oversample);
      },
      py::arg("row_ptr"), py::arg("col_idx"), py::arg("occupied"), py::arg("n_cols"), py::arg("group_rows"),
      py::arg("grow_counts"), py::arg("seed"), py::arg("device_checks") = false, py::arg("oversample") = 2.3);
  m.def(
      "_generic_gradient_regrow",
      [](const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
         const at::Tensor& col_idx, const at::Tensor& occupied, int64_t k, int64_t block_rows,
         bool device_checks) {
        return generic::gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, block_rows,
                                        device_checks);
      },
      py::arg("grad_output"), py::arg("input"), py::arg("row_ptr"), py::arg("col_idx"), py::arg("occupied"),
      py::arg("k"), py::arg("block_rows"), py::arg("device_checks") = false);
  m.def(
      "_generic_rebuild_csr",
      [](const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& keep,
         const at::Tensor& grow_row_ptr, const at::Tensor& grow_col_idx, bool device_checks) {
        return generic::rebuild_csr(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx, device_checks);
      },
      py::arg("row_ptr"), py::arg("col_idx"), py::arg("keep"), py::arg("grow_row_ptr"),
      py::arg("grow_col_idx"), py::arg("device_checks") = false);
  // The transposed index built with ATen ops (what sparse_linear_input_grad_csr
  // on CUDA gathers through), for comparison with csr.csr_transpose.
  m.def(
      "_generic_transposed_index",
      [](const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t cols) {
        return generic::transposed_index(row_ptr, col_idx, cols);
      },
      py::arg("row_ptr"), py::arg("col_idx"), py::arg("cols"));
  // The random regrow's draws computed by the CPU loop (the CUDA kernel's
  // twin), for the emulated-kernel test.
  m.def(
      "_regrow_candidates_cpu",
      [](const at::Tensor& group, const at::Tensor& index, const at::Tensor& free, const at::Tensor& want,
         int64_t seed) {
        return generic::regrow_candidates_cpu(group, index, free, want, static_cast<uint64_t>(seed));
      },
      py::arg("group"), py::arg("index"), py::arg("free"), py::arg("want"), py::arg("seed"));
}
