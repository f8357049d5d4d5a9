"""The CUDA kernels of csrc/cuda/, run on the CPU through the emulator, called
with torch CPU tensors (ctypes over tests/emu/emu_api.cpp). Outputs are filled
with NaN before each launch, so an element a kernel fails to write shows up.
Test-only."""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from . import build as emu_build

SCHEDULES = {"forward": 0, "reverse": 1, "shuffled": 2}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}
_P, _I = ctypes.c_void_p, ctypes.c_int64


def _index_suffix(index: torch.Tensor) -> str:
    """The launchers take int32 indices, or uint16 ones (the "_idx16" exports)."""
    return {torch.int32: "", torch.uint16: "_idx16"}[index.dtype]


class EmulatorError(RuntimeError):
    """A launch the emulator reported as failed (bad configuration, divergent
    barrier, a warp collective naming an exited lane, a hang)."""


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class EmulatedKernels:
    def __init__(self, library: Path):
        self.library = library
        self._lib = ctypes.CDLL(str(library))
        self._lib.sk_emu_set_schedule.argtypes = [ctypes.c_int, ctypes.c_uint64]
        self._lib.sk_emu_last_error_message.restype = ctypes.c_char_p
        self._lib.sk_emu_last_kernel.restype = ctypes.c_char_p

    def last_kernel(self) -> str:
        """The demangled name of the kernel the latest launch ran."""
        return self._lib.sk_emu_last_kernel().decode()

    def set_schedule(self, name: str, seed: int = 0) -> None:
        self._lib.sk_emu_set_schedule(SCHEDULES[name], seed)

    def _call(self, name: str, dtype: torch.dtype, *args) -> None:
        fn = getattr(self._lib, f"sk_emu_{name}_{_SUFFIX[dtype]}")
        fn.restype = ctypes.c_int
        err = fn(*[a if isinstance(a, (ctypes.c_void_p, type(None))) else _I(a) for a in args])
        if err != 0:
            raise EmulatorError(f"{name}: error {err}: {self._lib.sk_emu_last_error_message().decode()}")

    @staticmethod
    def _contig(*ts):
        return [None if t is None else t.detach().contiguous() for t in ts]

    def sparse_linear(self, x, values, row_ptr, col_idx, bias=None, row_order=None):
        x, values, row_ptr, col_idx, bias, row_order = self._contig(x, values, row_ptr, col_idx, bias, row_order)
        out_f = row_ptr.numel() - 1
        y = torch.full((x.shape[0], out_f), float("nan"), dtype=x.dtype)
        self._call("sparse_linear" + _index_suffix(col_idx), x.dtype, _ptr(x), _ptr(values), _ptr(row_ptr), _ptr(col_idx),
                   _ptr(bias), _ptr(y), x.shape[0], x.shape[1], out_f, col_idx.numel(), _ptr(row_order))
        return y

    def sparse_linear_input_grad(self, grad_y, values, col_ptr, row_idx, csr2csc, col_order=None):
        grad_y, values, col_ptr, row_idx, csr2csc, col_order = self._contig(
            grad_y, values, col_ptr, row_idx, csr2csc, col_order)
        in_f = col_ptr.numel() - 1
        gx = torch.full((grad_y.shape[0], in_f), float("nan"), dtype=grad_y.dtype)
        self._call("sparse_linear_input_grad" + _index_suffix(row_idx), grad_y.dtype, _ptr(grad_y), _ptr(values), _ptr(col_ptr),
                   _ptr(row_idx), _ptr(csr2csc), _ptr(gx), grad_y.shape[0], in_f, grad_y.shape[1],
                   row_idx.numel(), _ptr(col_order))
        return gx

    def sparse_linear_value_grad(self, grad_y, x, row_ptr, col_idx):
        grad_y, x, row_ptr, col_idx = self._contig(grad_y, x, row_ptr, col_idx)
        gv = torch.full((col_idx.numel(),), float("nan"), dtype=x.dtype)
        self._call("sparse_linear_value_grad", x.dtype, _ptr(grad_y), _ptr(x), _ptr(row_ptr), _ptr(col_idx),
                   _ptr(gv), x.shape[0], x.shape[1], grad_y.shape[1], col_idx.numel())
        return gv

    # ---- Wide-batch products (wide_batch.cuh): the op glue's transposes done
    # here with torch. `pad`: rows of the transposed operands padded to 16
    # bytes, as the op glue makes them (the 16-byte-load kernels); False:
    # rows of exactly N elements (the one-element fallback when N * size is
    # not a multiple of 16).
    @staticmethod
    def transposed(a: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """(N, C) -> (C, ld) holding a^T in its first N columns; the padding is NaN."""
        per16 = 16 // a.element_size()
        ld = -(-a.shape[0] // per16) * per16 if pad else a.shape[0]
        t = torch.full((a.shape[1], ld), float("nan"), dtype=a.dtype)
        t[:, : a.shape[0]] = a.t()
        return t

    def sparse_linear_wide(self, x, values, row_ptr, col_idx, bias=None, row_order=None, pad=True):
        x, values, row_ptr, col_idx, bias, row_order = self._contig(x, values, row_ptr, col_idx, bias, row_order)
        out_f = row_ptr.numel() - 1
        xT = self.transposed(x, pad)
        yT = self.transposed(torch.empty(x.shape[0], out_f, dtype=x.dtype), pad).fill_(float("nan"))
        self._call("sparse_linear_wide" + _index_suffix(col_idx), x.dtype, _ptr(xT), xT.shape[1], _ptr(values),
                   _ptr(row_ptr), _ptr(col_idx), _ptr(bias), _ptr(yT), yT.shape[1], x.shape[0], out_f,
                   _ptr(row_order))
        return yT[:, : x.shape[0]].t().contiguous()

    def sparse_linear_input_grad_wide(self, grad_y, values, col_ptr, row_idx, csr2csc, col_order=None, pad=True):
        grad_y, values, col_ptr, row_idx, csr2csc, col_order = self._contig(
            grad_y, values, col_ptr, row_idx, csr2csc, col_order)
        in_f = col_ptr.numel() - 1
        gyT = self.transposed(grad_y, pad)
        gxT = self.transposed(torch.empty(grad_y.shape[0], in_f, dtype=grad_y.dtype), pad).fill_(float("nan"))
        self._call("sparse_linear_input_grad_wide" + _index_suffix(row_idx), grad_y.dtype, _ptr(gyT), gyT.shape[1],
                   _ptr(values), _ptr(col_ptr), _ptr(row_idx), _ptr(csr2csc), _ptr(gxT), gxT.shape[1],
                   grad_y.shape[0], in_f, _ptr(col_order))
        return gxT[:, : grad_y.shape[0]].t().contiguous()

    def sparse_linear_value_grad_wide(self, grad_y, x, row_ptr, col_idx, row_order=None, pad=True):
        grad_y, x, row_ptr, col_idx, row_order = self._contig(grad_y, x, row_ptr, col_idx, row_order)
        gyT, xT = self.transposed(grad_y, pad), self.transposed(x, pad)
        gv = torch.full((col_idx.numel(),), float("nan"), dtype=x.dtype)
        self._call("sparse_linear_value_grad_wide", x.dtype, _ptr(gyT), gyT.shape[1], _ptr(xT), xT.shape[1],
                   _ptr(row_ptr), _ptr(col_idx), _ptr(gv), x.shape[0], grad_y.shape[1], col_idx.numel(),
                   _ptr(row_order))
        return gv

    def bsr_linear(self, x, values, block_row_ptr, block_col_idx, bias=None, tensor_cores=True):
        x, values, block_row_ptr, block_col_idx, bias = self._contig(x, values, block_row_ptr, block_col_idx, bias)
        bh, bw = values.shape[1:]
        out_f = (block_row_ptr.numel() - 1) * bh
        y = torch.full((x.shape[0], out_f), float("nan"), dtype=x.dtype)
        self._call("bsr_linear", x.dtype, _ptr(x), _ptr(values), _ptr(block_row_ptr), _ptr(block_col_idx),
                   _ptr(bias), _ptr(y), x.shape[0], x.shape[1], out_f, bh, bw, int(tensor_cores))
        return y

    def bsr_linear_input_grad(self, grad_y, values, block_col_ptr, block_row_idx, block_csr2csc,
                              tensor_cores=True):
        grad_y, values, block_col_ptr, block_row_idx, block_csr2csc = self._contig(
            grad_y, values, block_col_ptr, block_row_idx, block_csr2csc)
        bh, bw = values.shape[1:]
        in_f = (block_col_ptr.numel() - 1) * bw
        gx = torch.full((grad_y.shape[0], in_f), float("nan"), dtype=grad_y.dtype)
        self._call("bsr_linear_input_grad", grad_y.dtype, _ptr(grad_y), _ptr(values), _ptr(block_col_ptr),
                   _ptr(block_row_idx), _ptr(block_csr2csc), _ptr(gx), grad_y.shape[0], in_f, grad_y.shape[1],
                   bh, bw, int(tensor_cores))
        return gx

    def bsr_linear_value_grad(self, grad_y, x, block_row_ptr, block_col_idx, block_height, block_width,
                              tensor_cores=True):
        grad_y, x, block_row_ptr, block_col_idx = self._contig(grad_y, x, block_row_ptr, block_col_idx)
        nblocks = block_col_idx.numel()
        gv = torch.full((nblocks, block_height, block_width), float("nan"), dtype=x.dtype)
        self._call("bsr_linear_value_grad", x.dtype, _ptr(grad_y), _ptr(x), _ptr(block_row_ptr),
                   _ptr(block_col_idx), _ptr(gv), x.shape[0], x.shape[1], grad_y.shape[1], block_height,
                   block_width, nblocks, int(tensor_cores))
        return gv

    def lstm_cell(self, gates, c_prev):
        gates, c_prev = self._contig(gates, c_prev)
        h = torch.full_like(c_prev, float("nan"))
        c = torch.full_like(c_prev, float("nan"))
        self._call("lstm_cell", gates.dtype, _ptr(gates), _ptr(c_prev), _ptr(h), _ptr(c), *c_prev.shape)
        return h, c

    def lstm_cell_backward(self, grad_h, grad_c, gates, c_prev, c):
        grad_h, grad_c, gates, c_prev, c = self._contig(grad_h, grad_c, gates, c_prev, c)
        grad_gates = torch.full_like(gates, float("nan"))
        grad_c_prev = torch.full_like(c_prev, float("nan"))
        self._call("lstm_cell_backward", gates.dtype, _ptr(grad_h), _ptr(grad_c), _ptr(gates), _ptr(c_prev),
                   _ptr(c), _ptr(grad_gates), _ptr(grad_c_prev), *c_prev.shape)
        return grad_gates, grad_c_prev

    def lstm_persistent_forward(self, input_gates, h0, c0, values, row_ptr, col_idx, batch_sizes,
                                reverse: bool, max_blocks: int):
        """The persistent whole-sequence LSTM forward (lstm_persistent.cu) ->
        (output, h_n, c_n, gates, cells, plan) with plan = (blocks, shared
        memory bytes per block). Outputs start as NaN where the kernel must
        write and as zeros/h0/c0 where the op's contract says so (the caller
        zero-fills output, gates and cells; h_n, c_n, h_buf start as h0, c0)."""
        input_gates, h0, c0, values, row_ptr, col_idx = self._contig(input_gates, h0, c0, values, row_ptr, col_idx)
        steps, batch, hidden = input_gates.shape[0], input_gates.shape[1], c0.shape[1]
        bs = torch.as_tensor(batch_sizes, dtype=torch.int64)
        active = torch.arange(batch)[None, :] < bs[:, None]  # (steps, batch)
        nan = float("nan")
        output = torch.zeros(steps, batch, hidden, dtype=h0.dtype).masked_fill_(active[..., None], nan)
        cells = torch.zeros(steps, batch, hidden, dtype=h0.dtype).masked_fill_(active[..., None], nan)
        gates = torch.zeros(steps, batch, 4 * hidden, dtype=h0.dtype).masked_fill_(active[..., None], nan)
        h_n, c_n = h0.clone(), c0.clone()
        h_buf = torch.stack([h0, h0]).contiguous()
        smem, blocks = torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
        bs32 = bs.to(torch.int32)  # held here: the launch reads it
        self._call("lstm_persistent_forward", h0.dtype, _ptr(input_gates), _ptr(values), _ptr(row_ptr),
                   _ptr(col_idx), _ptr(bs32), max_blocks, _ptr(output), _ptr(gates), _ptr(cells),
                   _ptr(h_n), _ptr(c_n), _ptr(h_buf), steps, batch, hidden, int(reverse), _ptr(smem),
                   _ptr(blocks))
        return output, h_n, c_n, gates, cells, (int(blocks), int(smem))

    def gru_cell(self, ig, hg, h_prev):
        ig, hg, h_prev = self._contig(ig, hg, h_prev)
        h = torch.full_like(h_prev, float("nan"))
        self._call("gru_cell", ig.dtype, _ptr(ig), _ptr(hg), _ptr(h_prev), _ptr(h), *h_prev.shape)
        return h

    def gru_cell_backward(self, grad_h, ig, hg, h_prev):
        grad_h, ig, hg, h_prev = self._contig(grad_h, ig, hg, h_prev)
        d_ig, d_hg = torch.full_like(ig, float("nan")), torch.full_like(hg, float("nan"))
        dh_prev = torch.full_like(h_prev, float("nan"))
        self._call("gru_cell_backward", ig.dtype, _ptr(grad_h), _ptr(ig), _ptr(hg), _ptr(h_prev), _ptr(d_ig),
                   _ptr(d_hg), _ptr(dh_prev), *h_prev.shape)
        return d_ig, d_hg, dh_prev

    def rnn_cell(self, pre, relu: bool):
        (pre,) = self._contig(pre)
        h = torch.full_like(pre, float("nan"))
        self._call("rnn_cell", pre.dtype, _ptr(pre), _ptr(h), pre.numel(), int(relu))
        return h

    def rnn_cell_backward(self, grad_h, h, relu: bool):
        grad_h, h = self._contig(grad_h, h)
        grad_pre = torch.full_like(h, float("nan"))
        self._call("rnn_cell_backward", h.dtype, _ptr(grad_h), _ptr(h), _ptr(grad_pre), h.numel(), int(relu))
        return grad_pre

    def rhn_cell(self, pre, s_prev):
        pre, s_prev = self._contig(pre, s_prev)
        s = torch.full_like(s_prev, float("nan"))
        self._call("rhn_cell", pre.dtype, _ptr(pre), _ptr(s_prev), _ptr(s), *s_prev.shape)
        return s

    def rhn_cell_backward(self, grad_s, pre, s_prev):
        grad_s, pre, s_prev = self._contig(grad_s, pre, s_prev)
        grad_pre, grad_s_prev = torch.full_like(pre, float("nan")), torch.full_like(s_prev, float("nan"))
        self._call("rhn_cell_backward", pre.dtype, _ptr(grad_s), _ptr(pre), _ptr(s_prev), _ptr(grad_pre),
                   _ptr(grad_s_prev), *s_prev.shape)
        return grad_pre, grad_s_prev

    def regrow_candidates(self, group, index, free, want, seed: int):
        """The random regrow's draws (int64 tensors; see topology_kernels.h):
        -> (rank, priority), filled with a marker first so that an entry the
        kernel fails to write shows up."""
        group, index, free, want = self._contig(group, index, free, want)
        rank = torch.full_like(group, -(2**62))
        priority = torch.full_like(group, -(2**62))
        fn = self._lib.sk_emu_regrow_candidates
        fn.restype = ctypes.c_int
        err = fn(_ptr(group), _ptr(index), _ptr(free), _ptr(want), _I(group.numel()), ctypes.c_uint64(seed),
                 _ptr(rank), _ptr(priority))
        if err != 0:
            raise EmulatorError(f"regrow_candidates: error {err}: {self._lib.sk_emu_last_error_message().decode()}")
        return rank, priority


_loaded: dict[str | None, EmulatedKernels] = {}


def load(plant_missing_barrier: str | None = None) -> EmulatedKernels:
    """The emulated kernels (built on first use, cached in build/emu/)."""
    if plant_missing_barrier not in _loaded:
        _loaded[plant_missing_barrier] = EmulatedKernels(emu_build.build(plant_missing_barrier))
    return _loaded[plant_missing_barrier]
