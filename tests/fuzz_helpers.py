"""Shared pieces of the property-based bad-input tests (tests/test_fuzz_*.py
and the subprocess fuzzer tests/fuzz_raw_ops.py): the case counter that
conftest reports, hypothesis strategies for CSR problems, and the catalogue
of ways to break a CSR structure.

Every fuzz test calls ``tried(name, calls)`` once per hypothesis example,
``calls`` being the calls it makes with that example (a valid one, or each
broken variant of its arguments), so that the figures printed at the end of
the run (conftest.pytest_terminal_summary) count what was really tried.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from sparse_kernels import csr

# test name -> hypothesis examples run (shrinking replays included), and the
# calls they made
EXAMPLES: collections.Counter = collections.Counter()
CASES: collections.Counter = collections.Counter()

DTYPES = (torch.float32, torch.float64)
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-9, rtol=1e-9)}


def tried(name: str, calls: int = 1) -> None:
    EXAMPLES[name] += 1
    CASES[name] += calls


def expect_error(fn, kinds, names):
    """Call fn; it must raise one of ``kinds`` whose message names one of
    ``names`` (the argument at fault). Returns the exception."""
    try:
        fn()
    except kinds as exc:
        message = str(exc)
        assert any(n in message for n in names), f"{type(exc).__name__} does not name any of {names}: {message}"
        return exc
    raise AssertionError(f"no error raised; expected {[k.__name__ for k in kinds]} naming one of {names}")


# --------------------------------------------------------------------------- strategies
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, allow_nan=False))
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**31 - 1)


def random_pattern(rows: int, cols: int, density: float, seed: int, init: str = "uniform"):
    g = torch.Generator().manual_seed(seed)
    return csr.random_csr((rows, cols), density, init=init, generator=g)


def randn(shape, dtype, seed: int) -> torch.Tensor:
    """Fresh random values (never zeros), reproducible from the example's seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------- broken CSR structures
@dataclass
class Broken:
    """A CSR (ptr, idx) broken in one way. ``names``: the argument names an
    error message may name (a check may notice the damage through either
    index); ``kind``: the exception the Python layer must raise."""
    label: str
    ptr: object
    idx: object
    names: tuple
    kind: type = ValueError


def broken_csrs(ptr: torch.Tensor, idx: torch.Tensor, minor: int, ptr_name: str = "row_ptr",
                idx_name: str = "col_idx") -> list[Broken]:
    """Every way below that applies to break the valid CSR (ptr, idx) of a
    matrix with ``minor`` columns (at least the dtype and shape ones)."""
    nnz, major = idx.numel(), ptr.numel() - 1
    lengths = ptr.diff()
    both = (ptr_name, idx_name)
    options = []

    def add(label, p=None, i=None, names=both, kind=ValueError):
        options.append(Broken(label, ptr if p is None else p, idx if i is None else i, names, kind))

    add("ptr shifted by one", p=ptr + 1, names=(ptr_name,))
    add("ptr ends past nnz", p=torch.cat([ptr[:-1], ptr[-1:] + 1]), names=both)
    if nnz:
        add("ptr ends before nnz", p=torch.cat([ptr[:-1], ptr[-1:] - 1]), names=both)
        k = nnz // 2
        for label, value in (("column = n_cols", minor), ("column far out", 2**31 - 1), ("column -1", -1),
                             ("column int32 min", -2**31)):
            i = idx.clone()
            i[k] = value
            add(label, i=i, names=(idx_name,))
    if major >= 2:
        # An interior entry above its successor: decreasing.
        p = ptr.clone()
        p[1] = ptr[2] + 1
        add("ptr decreasing", p=p, names=(ptr_name,))
        add("ptr negative entry", p=torch.cat([ptr[:1], ptr[1:2] * 0 - 5, ptr[2:]]), names=(ptr_name,))
    long_rows = (lengths >= 2).nonzero().flatten()
    if long_rows.numel():
        start = int(ptr[int(long_rows[0])])
        i = idx.clone()
        i[start], i[start + 1] = idx[start + 1], idx[start]
        add("row unsorted", i=i, names=(idx_name,))
        i = idx.clone()
        i[start + 1] = idx[start]
        add("column repeated in a row", i=i, names=(idx_name,))
    add("index int64", i=idx.long(), names=(idx_name,), kind=TypeError)
    add("ptr int64", p=ptr.long(), names=(ptr_name,), kind=TypeError)
    add("index float", i=idx.float(), names=(idx_name,), kind=TypeError)
    add("index int16", i=idx.short(), names=(idx_name,), kind=TypeError)
    add("index not a tensor", i=idx.tolist(), names=(idx_name,), kind=TypeError)
    add("ptr 2-D", p=ptr.unsqueeze(0), names=(ptr_name,))
    if nnz >= 2:
        add("index non-contiguous", i=torch.stack([idx, idx], 1)[:, 0], names=(idx_name,))
    if major >= 1:
        add("ptr empty", p=ptr[:0], names=both)
    return options


# --------------------------------------------------------------------------- broken BSR structures
# The place for the BSR (block sparse rows) container being written beside
# CSRWeight: a broken_bsrs(block_ptr, block_col, blocks, block_shape) with the
# contract of broken_csrs (a block column out of range or negative, block_ptr
# not running from 0 to the number of blocks or decreasing, unsorted or
# repeated block columns, blocks of the wrong shape or dtype, a block shape
# that does not divide the matrix), then one test in tests/test_fuzz_ops.py
# like test_sparse_linear_rejects_broken_csr, the container in
# test_csr_weight_rejects_broken_patterns_everywhere (tests/test_fuzz_modules.py)
# and its raw ops in tests/fuzz_raw_ops.py.
