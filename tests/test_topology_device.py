"""The topology ops on the device (csrc/include/sparse_kernels/topology_generic.h:
ATen tensor ops, registered for the CUDA dispatch key in csrc/cuda/topology_cuda.cpp)
against the CPU ops (csrc/cpu/*_cpu.cpp).

Bit for bit: magnitude_prune, signed_magnitude_prune, rebuild_csr, and
gradient_regrow (on the CPU; on CUDA the dense gradient is cuBLAS's, so equal
where scores do not tie within rounding). random_regrow draws from its own
counter-based streams: its contract (exact counts per row group, free
positions only, no duplicates, sorted, uniform, a pure function of inputs and
seed) and, with a GPU, equality of the CUDA op with the generic code on the CPU.

Backends: "generic" runs the generic code on CPU tensors
(sparse_kernels._C._generic_*), "generic-device-checks" the same with its
argument checks done as on the device (tensor reductions read in one sync),
"cuda-registration" the functions registered for the CUDA key called on CPU
tensors (a redispatch); "cuda" the real CUDA ops, skipped without a GPU. The random regrow's one
custom kernel (csrc/cuda/regrow_candidates.cu) runs through the CUDA emulator
against its CPU twin."""

from __future__ import annotations

import math
import shutil
import zlib

import pytest
import torch
from hypothesis import given, settings, strategies as st

from sparse_kernels import _C, csr, ops, reference
from sparse_kernels.csr import validate_csr

_ops = torch.ops.sparse_kernels
TOPOLOGY_OPS = ["magnitude_prune", "signed_magnitude_prune", "random_regrow", "gradient_regrow", "rebuild_csr"]
NO_GPU = "no GPU visible: the CUDA ops run only with one (their generic code runs on the CPU in the other backends)"


class Generic:
    """The generic code on CPU tensors."""

    def __init__(self, device_checks: bool):
        self.device_checks = device_checks

    def magnitude_prune(self, values, group_ptr, drop):
        return _C._generic_magnitude_prune(values, group_ptr, drop, self.device_checks)

    def signed_magnitude_prune(self, values, group_ptr, fraction):
        return _C._generic_signed_magnitude_prune(values, group_ptr, fraction, self.device_checks)

    def random_regrow(self, row_ptr, col_idx, occupied, n_cols, group_rows, counts, seed, oversample=2.3):
        return _C._generic_random_regrow(row_ptr, col_idx, occupied, n_cols, group_rows, counts, seed,
                                         self.device_checks, oversample)

    def gradient_regrow(self, grad_output, input, row_ptr, col_idx, occupied, k, block_rows):
        return _C._generic_gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, block_rows,
                                           self.device_checks)

    def rebuild_csr(self, row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx):
        return _C._generic_rebuild_csr(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx, self.device_checks)


def _seed(*key) -> torch.Generator:
    """A generator seeded from a test's parameters (reproducible across runs)."""
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def _cuda(*ts):
    return [t.cuda() if isinstance(t, torch.Tensor) else t for t in ts]


def _cpu(out):
    return tuple(t.cpu() for t in out) if isinstance(out, tuple) else out.cpu()


class Cuda:
    """The CUDA ops on CUDA copies of the inputs, results brought back."""

    def magnitude_prune(self, values, group_ptr, drop):
        return _cpu(_ops.magnitude_prune(*_cuda(values, group_ptr, drop)))

    def signed_magnitude_prune(self, values, group_ptr, fraction):
        return _cpu(_ops.signed_magnitude_prune(*_cuda(values, group_ptr), fraction))

    def random_regrow(self, row_ptr, col_idx, occupied, n_cols, group_rows, counts, seed, oversample=None):
        return _cpu(_ops.random_regrow(*_cuda(row_ptr, col_idx, occupied, n_cols, group_rows, counts, seed)))

    def gradient_regrow(self, grad_output, input, row_ptr, col_idx, occupied, k, block_rows):
        return _cpu(_ops.gradient_regrow(*_cuda(grad_output, input, row_ptr, col_idx, occupied, k, block_rows)))

    def rebuild_csr(self, row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx):
        return _cpu(_ops.rebuild_csr(*_cuda(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx)))


class CudaRegistration:
    """The functions registered for the CUDA dispatch key, called on CPU
    tensors (a redispatch to that key): their glue, without a GPU."""

    def __getattr__(self, name):
        op = getattr(_ops, name).default
        keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)

        def call(*args, oversample=None):
            return op.redispatch(keys, *args)
        return call


@pytest.fixture(params=["generic", "generic-device-checks", "cuda-registration", "cuda"])
def backend(request):
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(NO_GPU)
        return Cuda()
    if request.param == "cuda-registration":
        import sparse_kernels

        if not sparse_kernels.build_info()["cuda"]:
            pytest.skip("a build without CUDA kernels")
        return CudaRegistration()
    return Generic(device_checks=request.param == "generic-device-checks")


# (rows, cols, density): no rows, no columns, one entry, one column, one row,
# nnz = 0, all occupied, and larger ones; _pattern adds an empty and a full row.
SHAPES = [(0, 0, 0.5), (0, 6, 0.5), (4, 0, 0.5), (1, 1, 0.0), (1, 1, 1.0), (7, 1, 0.5), (1, 9, 0.4),
          (5, 5, 0.0), (5, 5, 1.0), (13, 11, 0.3), (16, 20, 0.1), (24, 17, 0.9), (40, 33, 0.5)]
_shape_ids = [f"{r}x{c}-d{d}" for r, c, d in SHAPES]


def _pattern(rows, cols, density, g):
    """A random sorted CSR pattern whose rows vary (one empty, one full when rows >= 3)."""
    mask = torch.rand(rows, cols, generator=g) < density
    if rows >= 3 and cols:
        mask[rows // 3] = False
        mask[(2 * rows) // 3] = True
    row_ptr = torch.zeros(rows + 1, dtype=torch.int32)
    row_ptr[1:] = mask.sum(1).cumsum(0)
    return row_ptr, mask.nonzero()[:, 1].to(torch.int32).contiguous()


def _values(n, g, dtype, ties: bool):
    if not ties:
        return torch.randn(n, generator=g, dtype=dtype)
    # Few distinct magnitudes, and zeros of both signs.
    v = torch.randint(-4, 5, (n,), generator=g).to(dtype) / 4
    zeros = (v == 0).nonzero().flatten()
    v[zeros[::2]] = -0.0
    return v


def _cuts(total, parts, g):
    """Group boundaries 0 = b0 <= ... <= b_parts = total (empty groups allowed)."""
    inner = torch.sort(torch.randint(0, total + 1, (max(parts - 1, 0),), generator=g)).values
    return torch.cat([torch.tensor([0]), inner, torch.tensor([total])]).long()


def _row_groups(kind, rows, g):
    if kind == "tensor" or rows == 0:
        return torch.tensor([0, rows])
    if kind == "row":
        return torch.arange(rows + 1)
    if kind == "gate" and rows % 4 == 0:
        return torch.arange(0, rows + 1, rows // 4)
    return _cuts(rows, 1 + rows // 3, g)


GROUPS = ["tensor", "row", "gate", "random"]


# ----------------------------------------------------------------------------- prune
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_ids)
@pytest.mark.parametrize("groups", GROUPS + ["slots"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_magnitude_prune_equals_cpu(backend, shape, groups, dtype, ties):
    g = _seed(shape, groups, str(dtype), ties)
    row_ptr, col_idx = _pattern(*shape, g)
    nnz = col_idx.numel()
    values = _values(nnz, g, dtype, ties)
    if groups == "slots":  # cuts that ignore rows
        group_ptr = _cuts(nnz, 1 + nnz // 5, g)
    else:
        group_ptr = row_ptr.long()[_row_groups(groups, shape[0], g)]
    sizes = group_ptr.diff()
    for trial in range(3):
        # Nothing, everything, and random counts in [0, size].
        drop = [torch.zeros_like(sizes), sizes, (torch.rand(sizes.shape, generator=g) * (sizes + 1)).long()][trial]
        want = _ops.magnitude_prune(values, group_ptr, drop)
        got = backend.magnitude_prune(values, group_ptr, drop)
        assert got.dtype == torch.bool and torch.equal(got, want), (trial, drop)


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_ids)
@pytest.mark.parametrize("groups", GROUPS + ["slots"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_signed_magnitude_prune_equals_cpu(backend, shape, groups, ties):
    g = _seed(shape, groups, ties, "signed")
    row_ptr, col_idx = _pattern(*shape, g)
    nnz = col_idx.numel()
    values = _values(nnz, g, torch.float64, ties)
    if groups == "slots":
        group_ptr = _cuts(nnz, 1 + nnz // 5, g)
    else:
        group_ptr = row_ptr.long()[_row_groups(groups, shape[0], g)]
    # 0.5 and 0.25 put x.5 on odd and 2-mod-4 sides: llround's half away from zero.
    for fraction in (0.0, 0.25, 0.3, 0.5, 0.7, 1.0, float(torch.rand(1, generator=g))):
        want = _ops.signed_magnitude_prune(values, group_ptr, fraction)
        got = backend.signed_magnitude_prune(values, group_ptr, fraction)
        assert torch.equal(got, want), fraction


# ----------------------------------------------------------------------------- rebuild
def _grow_among(row_ptr, col_idx, cols, forbidden_slots, count, g):
    """`count` positions (CSR) not stored at the slots of `forbidden_slots`."""
    rows = row_ptr.numel() - 1
    taken = torch.zeros(rows, cols, dtype=torch.bool)
    taken[csr.row_indices(row_ptr)[forbidden_slots], col_idx.long()[forbidden_slots]] = True
    free = (~taken).flatten().nonzero().flatten()
    pick = free[torch.randperm(free.numel(), generator=g)[:count]].sort().values
    grow_row_ptr = torch.zeros(rows + 1, dtype=torch.int32)
    if cols:
        grow_row_ptr[1:] = torch.bincount(pick // cols, minlength=rows).cumsum(0)
    return grow_row_ptr, (pick % max(cols, 1)).to(torch.int32)


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_ids)
@pytest.mark.parametrize("keep_kind", ["random", "none", "all"])
def test_rebuild_csr_equals_cpu(backend, shape, keep_kind):
    g = _seed(shape, keep_kind, "rebuild")
    rows, cols, _ = shape
    row_ptr, col_idx = _pattern(*shape, g)
    nnz = col_idx.numel()
    keep = {"random": torch.rand(nnz, generator=g) < 0.6, "none": torch.zeros(nnz, dtype=torch.bool),
            "all": torch.ones(nnz, dtype=torch.bool)}[keep_kind]
    free = rows * cols - int(keep.sum())
    for count in {0, free // 3, free}:
        # Grown positions may be dropped slots (re-picked) or never held.
        grow = _grow_among(row_ptr, col_idx, cols, keep, count, g)
        want = _ops.rebuild_csr(row_ptr, col_idx, keep, *grow)
        got = backend.rebuild_csr(row_ptr, col_idx, keep, *grow)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.equal(a, b), count


def test_rebuild_csr_refuses_a_grown_position_that_is_kept(backend):
    g = torch.Generator().manual_seed(5)
    row_ptr, col_idx = _pattern(6, 7, 0.5, g)
    keep = torch.ones(col_idx.numel(), dtype=torch.bool)
    r = 4  # the full row (_pattern: row 2 empty, row 4 full)
    grow_row_ptr = torch.zeros(7, dtype=torch.int32)
    grow_row_ptr[r + 1:] = 1
    grow_col_idx = torch.tensor([3], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"grown position \(4, 3\) is already stored"):
        backend.rebuild_csr(row_ptr, col_idx, keep, grow_row_ptr, grow_col_idx)


# ----------------------------------------------------------------------------- gradient regrow
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_ids)
@pytest.mark.parametrize("block_rows", [1, 3, 7, 1000, 2**62])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_gradient_regrow_equals_cpu(backend, shape, block_rows, ties):
    g = _seed(shape, block_rows, ties, "grad")
    rows, cols, _ = shape
    row_ptr, col_idx = _pattern(*shape, g)
    nnz = col_idx.numel()
    grad_output = torch.randn(5, rows, generator=g, dtype=torch.float64)
    input = torch.randn(5, cols, generator=g, dtype=torch.float64)
    if ties:  # whole rows and columns of zero gradient: many equal scores
        grad_output[:, ::3] = 0
        input[:, 1::2] = 0
    occupied = torch.rand(nnz, generator=g) < 0.7
    free = rows * cols - int(occupied.sum())
    for k in sorted({0, 1, free // 2, free} & set(range(free + 1))):
        want = _ops.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, block_rows)
        got = backend.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, block_rows)
        if isinstance(backend, Cuda) and ties:
            # cuBLAS rounds differently and CUDA's topk breaks ties its own way:
            # the same count per row and a valid top-k.
            _check_top_k(grad_output, input, row_ptr, col_idx, occupied, k, got)
            continue
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.equal(a, b), k


def _check_top_k(grad_output, input, row_ptr, col_idx, occupied, k, grow):
    shape = (row_ptr.numel() - 1, input.shape[1])
    validate_csr(*grow, shape)
    assert grow[1].numel() == k
    scores = reference.gradient_regrow_scores(grad_output, input, row_ptr, col_idx, occupied, shape)
    chosen = torch.zeros(shape, dtype=torch.bool)
    chosen[csr.row_indices(grow[0]), grow[1].long()] = True
    assert bool((scores[chosen] >= 0).all())
    if 0 < k < int((scores >= 0).sum()):
        assert float(scores[chosen].min()) >= float(scores[~chosen].max()) - 1e-9


def test_gradient_regrow_float32_equals_cpu(backend):
    g = torch.Generator().manual_seed(11)
    row_ptr, col_idx = _pattern(30, 26, 0.3, g)
    grad_output = torch.randn(8, 30, generator=g)
    input = torch.randn(8, 26, generator=g)
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    want = _ops.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, 40, 4)
    got = backend.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, 40, 4)
    if isinstance(backend, Cuda):
        return _check_top_k(grad_output.double(), input.double(), row_ptr, col_idx, occupied, 40, got)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


# ----------------------------------------------------------------------------- random regrow
def _check_regrow(row_ptr, col_idx, occupied, shape, grow, counts, group_rows):
    grow_row_ptr, grow_col_idx = grow
    assert grow_row_ptr.dtype == torch.int32 and grow_col_idx.dtype == torch.int32
    validate_csr(grow_row_ptr, grow_col_idx, shape)  # sorted, in range, no duplicates
    free = reference.free_positions(row_ptr, col_idx, occupied, shape)
    grow_rows = csr.row_indices(grow_row_ptr)
    assert bool(free[grow_rows, grow_col_idx.long()].all()), "regrew an occupied position"
    per_group = grow_row_ptr.long()[group_rows].diff()
    assert torch.equal(per_group, torch.as_tensor(counts, dtype=torch.int64))


def _free_per_group(row_ptr, col_idx, occupied, cols, group_rows):
    free = reference.free_positions(row_ptr, col_idx, occupied, (row_ptr.numel() - 1, cols)).sum(1)
    before = torch.zeros(free.numel() + 1, dtype=torch.int64)
    before[1:] = free.cumsum(0)
    return before[group_rows].diff()


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_ids)
@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("repick", [False, True])
def test_random_regrow_contract(backend, shape, groups, repick):
    g = _seed(shape, groups, repick, "random")
    rows, cols, _ = shape
    row_ptr, col_idx = _pattern(*shape, g)
    nnz = col_idx.numel()
    occupied = torch.rand(nnz, generator=g) < 0.5 if repick else torch.ones(nnz, dtype=torch.bool)
    group_rows = _row_groups(groups, rows, g)
    free = _free_per_group(row_ptr, col_idx, occupied, cols, group_rows)
    # Nothing, a few (sampled), most (enumerated: k > F / 2), all.
    for counts in (torch.zeros_like(free), (free + 3) // 4, (free * 3 + 3) // 4, free):
        seed = int(torch.randint(2**62, (1,), generator=g))
        grow = backend.random_regrow(row_ptr, col_idx, occupied, cols, group_rows, counts, seed)
        _check_regrow(row_ptr, col_idx, occupied, (rows, cols), grow, counts, group_rows)
        again = backend.random_regrow(row_ptr, col_idx, occupied, cols, group_rows, counts, seed)
        assert torch.equal(again[0], grow[0]) and torch.equal(again[1], grow[1]), "not a function of the seed"
        if not isinstance(backend, (Cuda, CudaRegistration)):
            continue
        # The CUDA op draws exactly what the generic code draws on the CPU.
        generic = Generic(False).random_regrow(row_ptr, col_idx, occupied, cols, group_rows, counts, seed)
        assert torch.equal(generic[0], grow[0]) and torch.equal(generic[1], grow[1])


def test_random_regrow_seed_changes_the_draw(backend):
    g = torch.Generator().manual_seed(3)
    row_ptr, col_idx = _pattern(20, 30, 0.3, g)
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    group_rows = torch.tensor([0, 20])
    draws = {tuple(backend.random_regrow(row_ptr, col_idx, occupied, 30, group_rows, torch.tensor([25]), s)[1]
                   .tolist()) for s in range(5)}
    assert len(draws) == 5


def test_random_regrow_result_does_not_depend_on_the_oversampling():
    """Sampled groups keep the first k distinct draws of their stream: a
    prefix too short to hold them is lengthened (the retry path), and the
    result is the one a long prefix gives."""
    g = torch.Generator().manual_seed(4)
    row_ptr, col_idx = _pattern(64, 50, 0.2, g)
    occupied = torch.rand(col_idx.numel(), generator=g) < 0.5
    group_rows = torch.tensor([0, 10, 10, 40, 64])
    free = _free_per_group(row_ptr, col_idx, occupied, 50, group_rows)
    counts = free // 3  # sampled, and far more than 64 per group: retries with no oversampling
    generic = Generic(False)
    for seed in (0, 1, 2**62 + 5):
        want = generic.random_regrow(row_ptr, col_idx, occupied, 50, group_rows, counts, seed)
        for oversample in (0.0, 0.5, 10.0):
            got = generic.random_regrow(row_ptr, col_idx, occupied, 50, group_rows, counts, seed, oversample)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), oversample


@pytest.mark.parametrize("mode", ["sampled", "enumerated"])
def test_random_regrow_is_uniform(backend, mode):
    """Every free position of a small matrix is picked about equally often,
    for k <= F / 2 (sampled draws) and k > F / 2 (priorities over all F)."""
    g = torch.Generator().manual_seed(6)
    row_ptr, col_idx = _pattern(4, 6, 0.3, g)  # rows: ~2 stored, empty, full, ~2 stored
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    free = reference.free_positions(row_ptr, col_idx, occupied, (4, 6))
    n_free = int(free.sum())
    k = 3 if mode == "sampled" else n_free - 3
    assert (2 * k > n_free) == (mode == "enumerated")
    hits = torch.zeros(4, 6)
    trials = 1500
    group_rows, counts = torch.tensor([0, 4]), torch.tensor([k])
    for seed in range(trials):
        grow_row_ptr, grow_col_idx = backend.random_regrow(row_ptr, col_idx, occupied, 6, group_rows, counts, seed)
        hits[csr.row_indices(grow_row_ptr), grow_col_idx.long()] += 1
    assert bool((hits[~free] == 0).all())
    p = k / n_free
    expected, sigma = trials * p, math.sqrt(trials * p * (1 - p))
    assert float((hits[free] - expected).abs().max()) < 5 * sigma, hits


def test_random_regrow_fills_everything_left(backend):
    g = torch.Generator().manual_seed(8)
    row_ptr, col_idx = _pattern(30, 25, 0.97, g)
    occupied = torch.ones(col_idx.numel(), dtype=torch.bool)
    group_rows = torch.arange(31)
    counts = _free_per_group(row_ptr, col_idx, occupied, 25, group_rows)
    grow = backend.random_regrow(row_ptr, col_idx, occupied, 25, group_rows, counts, 9)
    merged = reference.csr_to_dense(torch.ones(col_idx.numel()), row_ptr, col_idx, (30, 25)) + \
        reference.csr_to_dense(torch.ones(grow[1].numel()), *grow, (30, 25))
    assert bool((merged == 1).all())


# ----------------------------------------------------------------------------- argument checks
def _raises_like_cpu(cpu_call, device_call):
    """The device call fails with the CPU op's message."""
    with pytest.raises(RuntimeError) as cpu_error:
        cpu_call()
    message = str(cpu_error.value).split("\n")[0]
    with pytest.raises(RuntimeError) as device_error:
        device_call()
    assert message in str(device_error.value)


def test_bad_arguments_fail_as_on_the_cpu(backend):
    g = torch.Generator().manual_seed(12)
    row_ptr, col_idx = _pattern(5, 6, 0.5, g)
    nnz = col_idx.numel()
    values = torch.randn(nnz, generator=g, dtype=torch.float64)
    full = torch.ones(nnz, dtype=torch.bool)
    whole = torch.tensor([0, nnz])
    cases = [
        ("magnitude_prune", (values, whole, torch.tensor([nnz + 1]))),
        ("magnitude_prune", (values, whole, torch.tensor([-1]))),
        ("magnitude_prune", (values, torch.tensor([0, nnz + 3]), torch.tensor([1]))),
        ("magnitude_prune", (values, torch.tensor([0, 4, 2, nnz]), torch.tensor([0, 0, 0]))),
        ("signed_magnitude_prune", (values, torch.tensor([1, nnz]), 0.5)),
        ("random_regrow", (row_ptr, col_idx, full, 6, torch.tensor([0, 5]), torch.tensor([10**6]), 0)),
        ("random_regrow", (row_ptr, col_idx, full, 6, torch.tensor([0, 5]), torch.tensor([-1]), 0)),
        ("random_regrow", (row_ptr, col_idx, full, 6, torch.tensor([0, 3, 6]), torch.tensor([0, 0]), 0)),
        ("random_regrow", (row_ptr, col_idx, full, 3, torch.tensor([0, 5]), torch.tensor([0]), 0)),
        ("random_regrow", (row_ptr, col_idx.flip(0).contiguous(), full, 6, torch.tensor([0, 5]),
                           torch.tensor([1]), 0)),
        ("gradient_regrow", (torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64),
                             row_ptr, col_idx, full, 31 - nnz, 2)),
        ("gradient_regrow", (torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64),
                             row_ptr, col_idx, full, 1, 2)),
        ("rebuild_csr", (row_ptr, col_idx, full, torch.tensor([0, 0, 0, 0, 0, 2], dtype=torch.int32),
                         torch.tensor([1, 1], dtype=torch.int32))),
        ("rebuild_csr", (row_ptr, col_idx, full, torch.tensor([0, 0, 0, 0, 0, 3], dtype=torch.int32),
                         torch.tensor([1, 2], dtype=torch.int32))),
    ]
    for name, args in cases:
        _raises_like_cpu(lambda: getattr(_ops, name)(*args), lambda: getattr(backend, name)(*args))


# ----------------------------------------------------------------------------- the custom kernel
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="no C++ compiler to build the CUDA emulator")
@pytest.mark.parametrize("schedule", ["forward", "reverse", "shuffled"])
def test_regrow_candidates_kernel_emulated_equals_its_cpu_twin(schedule):
    from emu import emulated

    kernels = emulated.load()
    kernels.set_schedule(schedule, seed=3)
    g = torch.Generator().manual_seed(13)
    # Groups: tiny, F = 1, enumerated (k > F / 2), sampled, huge F (wide draws).
    free = torch.tensor([5, 1, 40, 1000, 2**40 + 7, 3 * 2**61, 2**31])
    want = torch.tensor([2, 1, 30, 10, 1000, 5, 2**30 - 1])
    per_group = torch.tensor([7, 1, 40, 300, 500, 129, 257])  # odd counts: partial blocks
    group = torch.repeat_interleave(torch.arange(free.numel()), per_group)
    offsets = torch.zeros(free.numel(), dtype=torch.int64)
    offsets[1:] = per_group.cumsum(0)[:-1]
    index = torch.arange(group.numel()) - offsets[group]
    for seed in (0, 12345, 2**63 - 1):
        rank, priority = kernels.regrow_candidates(group, index, free, want, seed)
        want_rank, want_priority = _C._regrow_candidates_cpu(group, index, free, want, seed)
        assert torch.equal(rank, want_rank) and torch.equal(priority, want_priority)
        sampled = 2 * want[group] <= free[group]
        # Sampled: ranks in [0, F) or -1 (rejected), priority = index; enumerated: rank = index.
        assert bool(((rank[sampled] >= -1) & (rank[sampled] < free[group][sampled])).all())
        assert torch.equal(priority[sampled], index[sampled])
        assert torch.equal(rank[~sampled], index[~sampled]) and bool((priority[~sampled] >= 0).all())
        assert bool((rank[sampled] >= 0).float().mean() > 0.5)  # acceptance > 1/2
    assert kernels.regrow_candidates(group[:0], index[:0], free, want, 1)[0].numel() == 0
    assert kernels.last_kernel().startswith("sparse_kernels::cuda::regrow_candidates_kernel")


# ----------------------------------------------------------------------------- registration and use
def test_cuda_kernels_registered_when_built():
    import sparse_kernels

    if not sparse_kernels.build_info()["cuda"]:
        pytest.skip("a build without CUDA kernels (the sparse_kernels.ops wrappers then run a CUDA pattern on the CPU)")
    for name in TOPOLOGY_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"sparse_kernels::{name}", "CUDA"), name
        assert ops.topology._has_device_kernel(name, torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.parametrize("method", ["set", "rigl", "snfs"])
def test_dst_keeps_a_cuda_pattern_on_the_device(method, monkeypatch):
    """DynamicSparsity on a CUDA model: every topology op gets CUDA tensors
    (no host round trip of the pattern) and the rebuilt weights stay valid."""
    from sparse_kernels import SparseLSTM
    from sparse_kernels.dst import DynamicSparsity

    seen = []
    real = ops.topology._ops

    class Spy:
        def __getattr__(self, name):
            op = getattr(real, name)
            if name not in TOPOLOGY_OPS:
                return op

            def call(*args):
                seen.append((name, {a.device.type for a in args if isinstance(a, torch.Tensor)}))
                return op(*args)
            return call

    monkeypatch.setattr(ops.topology, "_ops", Spy())
    torch.manual_seed(0)
    model = SparseLSTM(12, 16, density=0.3).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ds = DynamicSparsity(model, optimizer, method=method, total_steps=100, update_every=2)
    nnz = {name: w.nnz for name, w in ds.weights.items()}
    for _ in range(4):
        out, _ = model(torch.randn(5, 3, 12, device="cuda"))
        out.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        ds.step()
    assert seen and all(devices == {"cuda"} for _, devices in seen), seen
    assert sum(w.nnz for w in ds.weights.values()) == sum(nnz.values())
    for w in ds.weights.values():
        assert w.pattern[0].is_cuda
        validate_csr(*(t.cpu() for t in w.pattern), w.grid_shape)


# ----------------------------------------------------------------------------- fresh random inputs
def _backends():
    import sparse_kernels

    out = [Generic(False), Generic(True)] + ([CudaRegistration()] if sparse_kernels.build_info()["cuda"] else [])
    return out + [Cuda()] if torch.cuda.is_available() else out


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 14), cols=st.integers(0, 14), density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       ties=st.booleans(), n_groups=st.integers(1, 5), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**62))
def test_fresh_random_inputs(rows, cols, density, ties, n_groups, fraction, seed):
    """Hypothesis draws new cases on every run: the prunes, the gradient regrow
    (float64 data without ties on CUDA) and the rebuild equal the CPU ops, and
    the random regrow keeps its contract, on every backend."""
    g = torch.Generator().manual_seed(seed % 2**63)
    row_ptr, col_idx = _pattern(rows, cols, density, g)
    nnz = col_idx.numel()
    values = _values(nnz, g, torch.float64, ties)
    slot_groups = _cuts(nnz, n_groups, g)
    row_groups = _cuts(rows, n_groups, g)
    drop = (torch.rand(n_groups, generator=g) * (slot_groups.diff() + 1)).long()
    keep = _ops.magnitude_prune(values, slot_groups, drop)
    occupied = keep if ties else torch.ones_like(keep)
    free = _free_per_group(row_ptr, col_idx, occupied, cols, row_groups)
    counts = (torch.rand(n_groups, generator=g) * (free + 1)).long()
    grad_output = torch.randn(3, rows, generator=g, dtype=torch.float64)
    input = torch.randn(3, cols, generator=g, dtype=torch.float64)
    k = int(counts.sum().clamp(max=int(free.sum())))
    grow = _grow_among(row_ptr, col_idx, cols, keep, min(k, rows * cols - int(keep.sum())), g)
    for backend in _backends():
        assert torch.equal(backend.magnitude_prune(values, slot_groups, drop), keep)
        assert torch.equal(backend.signed_magnitude_prune(values, slot_groups, fraction),
                           _ops.signed_magnitude_prune(values, slot_groups, fraction))
        got = backend.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, 1 + seed % 5)
        want = _ops.gradient_regrow(grad_output, input, row_ptr, col_idx, occupied, k, 1 + seed % 5)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        got = backend.rebuild_csr(row_ptr, col_idx, keep, *grow)
        assert all(torch.equal(a, b) for a, b in zip(got, _ops.rebuild_csr(row_ptr, col_idx, keep, *grow)))
        regrown = backend.random_regrow(row_ptr, col_idx, occupied, cols, row_groups, counts, seed)
        _check_regrow(row_ptr, col_idx, occupied, (rows, cols), regrown, counts, row_groups)
