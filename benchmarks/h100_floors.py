"""Analytical floors of the CUDA kernels on an H100 (SXM): the compulsory
memory traffic over HBM bandwidth and the arithmetic over the CUDA cores'
rate, whichever is larger. No GPU needed; prints the Markdown table kept in
BENCHMARKS.md (tests/test_cuda_benchmark.py checks that it is current).

    python benchmarks/h100_floors.py

Each operand is counted once (read once from HBM, written once): the floor a
kernel cannot beat, to compare measured times with. Launch latency (a few
microseconds per kernel) is not included; it dominates the per-step kernels
at small batch.
"""

from __future__ import annotations

from dataclasses import dataclass

HBM_BYTES_PER_S = 3.0e12  # H100 SXM HBM3: 3.35 TB/s peak, ~3 TB/s reachable
# Shared memory, all SMs together: 132 SMs x 128 B/clock x 1.83 GHz.
SHARED_BYTES_PER_S = 132 * 128 * 1.83e9
FLOPS = {  # H100 SXM, dense, 2 FLOPs per FMA
    "fp32": 67e12,  # CUDA cores (torch's default fp32 matmul: no TF32)
    "fp64": 34e12,
    "bf16": 67e12,  # our kernels: 16-bit values multiplied and accumulated in fp32 on CUDA cores
    "bf16 tensor cores": 989e12,  # what cuBLAS uses for a dense bf16 GEMM
}
VALUE_BYTES = {"fp32": 4, "fp64": 8, "bf16": 2}
INDEX_BYTES = 4  # int32 row_ptr / col_idx / csr2csc


@dataclass
class Case:
    kernel: str
    shape: str
    dtype: str
    bytes: float
    flops: float
    unit: str = ""  # key of FLOPS; the dtype's by default
    on_chip: bool = False  # the bytes come from shared memory, not HBM

    @property
    def rate(self) -> float:
        return FLOPS[self.unit or self.dtype]

    @property
    def bandwidth(self) -> float:
        return SHARED_BYTES_PER_S if self.on_chip else HBM_BYTES_PER_S

    @property
    def floor_us(self) -> float:
        return 1e6 * max(self.bytes / self.bandwidth, self.flops / self.rate)

    @property
    def bound(self) -> str:
        if self.bytes / self.bandwidth >= self.flops / self.rate:
            return "memory (shared)" if self.on_chip else "memory"
        return f"compute ({self.unit or self.dtype})"


def product_cases(out_f: int, in_f: int, nnz: int, n: int, dtype: str, shape: str) -> list[Case]:
    """The three CSR products of sparse_linear (forward, input gradient, value
    gradient) for W (out_f x in_f, nnz stored) and n batch rows, and the
    dense product for scale (benchmarks/gpu_report.py puts measured times
    beside these)."""
    s = VALUE_BYTES[dtype]
    return [
        Case("sparse_linear", shape, dtype,
             nnz * (s + INDEX_BYTES) + (out_f + 1) * INDEX_BYTES + n * in_f * s + out_f * s + n * out_f * s,
             2 * n * nnz),
        Case("sparse_linear_input_grad", shape, dtype,
             nnz * (s + 2 * INDEX_BYTES) + (in_f + 1) * INDEX_BYTES + n * out_f * s + n * in_f * s,
             2 * n * nnz),
        Case("sparse_linear_value_grad", shape, dtype,
             n * out_f * s + n * in_f * s + (out_f + 1) * INDEX_BYTES + nnz * INDEX_BYTES + nnz * s,
             2 * n * nnz),
        Case("dense x @ W^T (cuBLAS, for scale)", shape, dtype,
             out_f * in_f * s + n * in_f * s + n * out_f * s, 2 * n * out_f * in_f,
             "bf16 tensor cores" if dtype == "bf16" else ""),
    ]


def lstm_cell_cases(hidden: int, n: int, dtype: str, shape: str) -> list[Case]:
    s = VALUE_BYTES[dtype]
    return [
        Case("lstm_cell", shape, dtype, (4 + 1 + 2) * n * hidden * s, 0),
        Case("lstm_cell_backward", shape, dtype, (2 + 4 + 1 + 1 + 4 + 1) * n * hidden * s, 0),
    ]


def cases(out_f: int = 4096, in_f: int = 1024, density: float = 0.1) -> list[Case]:
    nnz = round(out_f * in_f * density)
    hidden = in_f
    result = []
    for dtype in ("fp32", "bf16"):
        s = VALUE_BYTES[dtype]
        for n, role in ((32, "step, batch 32"), (1024, "sequence, T*B = 1024")):
            result += product_cases(out_f, in_f, nnz, n, dtype, f"W {out_f}x{in_f} at density {density}, {role}")
        # The same step product with uint16 column indices (in <= 65536).
        result.append(Case("sparse_linear, uint16 indices", f"W {out_f}x{in_f} at density {density}, step, batch 32",
                           dtype, nnz * (s + 2) + (out_f + 1) * INDEX_BYTES + 32 * in_f * s + out_f * s
                           + 32 * out_f * s, 2 * 32 * nnz))
        n = 32
        shape = f"H {hidden}, batch {n}"
        # One step of the persistent LSTM forward: W_hh (4H x H) read from
        # shared memory (values and uint16 columns); grid.sync() not counted.
        hh_nnz = round(4 * hidden * hidden * density)
        result.append(Case("lstm_persistent_forward, one step", f"W_hh {4 * hidden}x{hidden} at density {density}, "
                           f"batch {n}", dtype, hh_nnz * (s + 2), 2 * n * hh_nnz, on_chip=True))
        result += lstm_cell_cases(hidden, n, dtype, shape)
    return result


def table() -> str:
    lines = [
        "| kernel | shape | values | bytes moved | FLOPs | floor (µs) | bound |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for c in cases():
        flops = f"{c.flops / 1e9:.2f} G" if c.flops else "- (pointwise)"
        lines.append(f"| {c.kernel} | {c.shape} | {c.dtype} | {c.bytes / 1e6:.2f} MB | "
                     f"{flops} | {c.floor_us:.2f} | {c.bound} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
