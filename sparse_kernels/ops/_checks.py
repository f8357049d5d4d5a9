"""Input checks shared by every op family: raise TypeError/ValueError naming
the argument before any kernel runs."""

from __future__ import annotations

import torch

from ..csr import (BLOCKED_SLICE_ROWS, CSCIndex, INDEX16_MAX_COLS, INDEX_DTYPE, SLICE_ROWS, Index16,
                   csr_transpose, validate_csr)

_ops = torch.ops.sparse_kernels
_FLOAT_DTYPES = (torch.float32, torch.float64)
# Values the CUDA kernels also take (accumulated in fp32, csrc/cuda/accumulate.cuh);
# the CPU kernels have no 16-bit versions.
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_INT32_MAX = 2**31 - 1


def _check_float(name: str, t, *, no_half: str | None = None) -> None:
    """float32 or float64 anywhere; float16 or bfloat16 on a CUDA device,
    unless ``no_half`` names an op whose kernels have no 16-bit version."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype in _FLOAT_DTYPES:
        return
    if t.dtype in _HALF_DTYPES:
        if no_half is not None:
            raise TypeError(f"{name} has dtype {t.dtype}, but {no_half} supports float32 and float64 only "
                            "(its kernels have no 16-bit version)")
        if t.device.type != "cuda":
            raise TypeError(f"{name} has dtype {t.dtype} on {t.device}: 16-bit values need a CUDA device "
                            "(the CPU kernels support float32 and float64)")
        return
    raise TypeError(f"{name} must be float32 or float64 (or float16/bfloat16 on a CUDA device), got {t.dtype}")


def _check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def _check_index_like(name: str, t, ref: torch.Tensor, ref_name: str = "the values") -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != INDEX_DTYPE:
        raise TypeError(f"{name} must have dtype torch.int32, got {t.dtype}")
    if t.dim() != 1 or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous 1-D tensor, got shape {tuple(t.shape)}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def _check_values(values, *, no_half: str | None = None) -> None:
    _check_float("values", values, no_half=no_half)
    if values.dim() != 1 or not values.is_contiguous():
        raise ValueError(f"values must be a contiguous 1-D tensor, got shape {tuple(values.shape)}")


def _check_product_operands(name: str, dense, values, check_values=_check_values, **indices) -> None:
    """A product's dense operand ``name`` and its stored values: floating,
    of one dtype and device; then each index (keyword: its argument name)
    an int32 vector on their device, in the order given."""
    _check_float(name, dense)
    check_values(values)
    _check_same("values", values, name, dense)
    for index_name, index in indices.items():
        _check_index_like(index_name, index, values)


def _check_index16(name: str, ix, ptr: torch.Tensor, idx: torch.Tensor, cols: int,
                   validate: bool) -> Index16 | None:
    """A compact index (csr.index16) of (ptr, idx) over ``cols`` columns, or
    None: kinds, lengths and device; with ``validate`` its contents too
    (O(nnz + rows log rows)): the CUDA kernels read it in place of idx."""
    if ix is None:
        return None
    if not isinstance(ix, (tuple, list)) or len(ix) != 2:
        raise TypeError(f"{name} must be an Index16 (idx, order) from sparse_kernels.csr.index16, got "
                        f"{type(ix).__name__}")
    ix = Index16(*ix)
    for field, t, dtype, length in (("idx", ix.idx, torch.uint16, idx.numel()),
                                    ("order", ix.order, INDEX_DTYPE, ptr.numel() - 1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}.{field} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(f"{name}.{field} must have dtype {dtype}, got {t.dtype}")
        if t.shape != (length,) or not t.is_contiguous():
            raise ValueError(f"{name}.{field} must be contiguous with shape ({length},), got {tuple(t.shape)}")
        if t.device != idx.device:
            raise ValueError(f"{name}.{field} must be on the device of the index ({idx.device}), got {t.device}")
    if cols > INDEX16_MAX_COLS:
        raise ValueError(f"{name} exists only for at most {INDEX16_MAX_COLS} indexed columns, got {cols}")
    if validate:
        if not torch.equal(ix.idx.to(INDEX_DTYPE), idx):
            raise ValueError(f"{name}.idx does not hold the indices it was derived from")
        rows = ptr.numel() - 1
        if not torch.equal(ix.order.sort().values, torch.arange(rows, dtype=INDEX_DTYPE, device=idx.device)):
            raise ValueError(f"{name}.order must be a permutation of the {rows} rows")
    return ix


def _index16_args(ix: Index16 | None):
    """A compact index as the ops' two optional arguments."""
    return (None, None) if ix is None else tuple(ix)


def _check_csc(csc, values: torch.Tensor, in_features: int, name: str = "csc") -> CSCIndex:
    """The transposed index as a CSCIndex, its tensors' kinds and lengths checked."""
    if not isinstance(csc, (tuple, list)) or len(csc) != 3:
        raise TypeError(f"{name} must be a CSCIndex (col_ptr, row_idx, csr2csc), got {type(csc).__name__}"
                        + (f" of length {len(csc)}" if isinstance(csc, (tuple, list)) else ""))
    csc = CSCIndex(*csc)
    label = {field: field if name == "csc" else f"{name}.{field}" for field in CSCIndex._fields}
    for field, t in zip(CSCIndex._fields, csc):
        _check_index_like(label[field], t, values)
    if csc.col_ptr.numel() != in_features + 1:
        raise ValueError(f"{label['col_ptr']} must have in_features + 1 = {in_features + 1} entries, "
                         f"got {csc.col_ptr.numel()}")
    if csc.row_idx.numel() != values.numel() or csc.csr2csc.numel() != values.numel():
        raise ValueError(f"{label['row_idx']} and {label['csr2csc']} must have one entry per stored value "
                         f"({values.numel()}), got {csc.row_idx.numel()} and {csc.csr2csc.numel()}")
    return csc


def _validate_csc(csc: CSCIndex, shape) -> None:
    """A CSC index of a (rows x cols) matrix, checked in full: (col_ptr,
    row_idx) is a valid CSR of the transpose and csr2csc a permutation of the
    stored slots. O(nnz log nnz); for callers that pass their own."""
    rows, cols = shape
    validate_csr(csc.col_ptr, csc.row_idx, (cols, rows), names=("col_ptr", "row_idx"))
    nnz = csc.row_idx.numel()
    if not torch.equal(csc.csr2csc.sort().values, torch.arange(nnz, dtype=INDEX_DTYPE, device=csc.csr2csc.device)):
        raise ValueError(f"csr2csc must be a permutation of range(nnz = {nnz}) (each stored slot once)")


def _validate_weight(label, values, row_ptr, col_idx, csc: CSCIndex, shape) -> None:
    """A layer's CSR matrix of ``shape`` and its transposed index, in full
    (the ``validate=True`` path of the layer ops); label(field) names the
    arguments ("hh_row_ptr", ...)."""
    validate_csr(row_ptr, col_idx, shape, values, names=(label("row_ptr"), label("col_idx")))
    expected = csr_transpose(row_ptr, col_idx, shape[1])
    if not all(torch.equal(a, b) for a, b in zip(csc, expected)):
        raise ValueError(f"{label('csc')} is not the transposed index of ({label('row_ptr')}, {label('col_idx')})")


# The guard the autograd kernels of torch.library enter before they redispatch.
_below_autograd = torch._C._AutoDispatchBelowAutograd


def _call_op(op, args: tuple, differentiable: tuple):
    """``op(*args)``; entered below the autograd layer when no gradient can
    flow (grad mode off, or no tensor of ``differentiable`` requires grad).
    That is what the op's Python autograd kernel (register_autograd) then
    does itself, after a round trip through Python: 4-6 us of a call, about
    a sixth of the Python around a batch-1 product (docs/benchmarks_history.md,
    session I). Dispatch modes, fake tensors and tracing still see the op
    (only the autograd keys are skipped); while torch.compile traces, the op
    is called as it is."""
    if (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in differentiable)) \
            or torch.compiler.is_compiling():
        return op(*args)
    with _below_autograd():
        return op(*args)


def _csc_args(csc):
    """A transposed index as the ops' three optional arguments."""
    return (None, None, None) if csc is None else tuple(csc)


def _check_batch_sizes(batch_sizes, steps: int, batch: int) -> torch.Tensor:
    """PackedSequence's batch_sizes: int64 on the CPU, one per step,
    non-increasing, within [0, batch]; None = every row at every step."""
    if batch_sizes is None:
        return torch.full((steps,), batch, dtype=torch.int64)
    if not isinstance(batch_sizes, torch.Tensor):
        raise TypeError(f"batch_sizes must be an int64 CPU tensor or None, got {type(batch_sizes).__name__}")
    if batch_sizes.dtype != torch.int64:
        raise TypeError(f"batch_sizes must have dtype torch.int64, got {batch_sizes.dtype}")
    if batch_sizes.device.type != "cpu":
        raise ValueError(f"batch_sizes must be on the CPU (as PackedSequence keeps it), got {batch_sizes.device}")
    if batch_sizes.shape != (steps,):
        raise ValueError(f"batch_sizes must have shape (steps,) = ({steps},), got {tuple(batch_sizes.shape)}")
    if steps and (int(batch_sizes.min()) < 0 or int(batch_sizes.max()) > batch
                  or bool((batch_sizes.diff() > 0).any())):
        raise ValueError(f"batch_sizes must be non-increasing with entries in [0, batch = {batch}], got "
                         f"{batch_sizes.tolist()}")
    return batch_sizes.contiguous()


def _check_recurrent_weight(label, values, row_ptr, col_idx, csc, ref: torch.Tensor, shape,
                            validate: bool) -> CSCIndex | None:
    """One sparse matrix of a layer op, label(field) naming its arguments
    ("hh_values", "hh_row_ptr", ...): kinds, lengths, the transposed index's,
    and with ``validate`` the whole structure. Returns the transposed index
    the op needs: None on the CPU when not given (its backward scatters from
    the CSR), built when not given elsewhere."""
    rows, cols = shape
    _check_float(label("values"), values)
    _check_same(label("values"), values, "input_gates", ref)
    if values.dim() != 1 or not values.is_contiguous():
        raise ValueError(f"{label('values')} must be a contiguous 1-D tensor, got shape {tuple(values.shape)}")
    _check_index_like(label("row_ptr"), row_ptr, values, label("values"))
    _check_index_like(label("col_idx"), col_idx, values, label("values"))
    if row_ptr.numel() != rows + 1:
        raise ValueError(f"{label('row_ptr')} must have rows + 1 = {rows + 1} entries, got {row_ptr.numel()}")
    if col_idx.numel() != values.numel():
        raise ValueError(f"{label('col_idx')} and {label('values')} must have equal lengths (nnz), got "
                         f"{col_idx.numel()} and {values.numel()}")
    if csc is None:
        if validate:
            validate_csr(row_ptr, col_idx, shape, values, names=(label("row_ptr"), label("col_idx")))
        return None if values.device.type == "cpu" else csr_transpose(row_ptr, col_idx, cols)
    csc = _check_csc(csc, values, cols, label("csc"))
    if validate:
        _validate_weight(label, values, row_ptr, col_idx, csc, shape)
    return csc


def _check_sliced_view(name: str, sliced, weight_values: torch.Tensor, segments: int, segment_rows: int) -> tuple:
    """The op's three arguments for ``sliced`` = (values, cols, slice_ptr), a
    weight's sliced view (CSRWeight.sliced_view) over ``segments`` segments of
    ``segment_rows`` rows, in either form: SELL-8 (int32 cols; slices of 8
    rows, slice_ptr of slices + 1 offsets) or blocked (uint8 cols; slices of 16
    rows, slice_ptr of three runs), or () for None. The op checks the columns
    and offsets (cached)."""
    if sliced is None:
        return ()
    if not (isinstance(sliced, (tuple, list)) and len(sliced) == 3 and all(isinstance(t, torch.Tensor) for t in sliced)):
        raise TypeError(f"{name} must be (values, cols, slice_ptr) from CSRWeight.sliced_view(), or None; "
                        f"got {type(sliced).__name__}")
    if weight_values.device.type != "cpu" or weight_values.dtype != torch.float32:
        raise ValueError(f"{name} is read by the CPU's float32 kernels only; got {weight_values.dtype} weights on "
                         f"{weight_values.device}")
    values, cols, slice_ptr = sliced
    if cols.dtype == torch.uint8:  # the blocked form
        slices = segments * -(-segment_rows // BLOCKED_SLICE_ROWS)
        if (values.dtype != torch.float32 or slice_ptr.dtype != torch.int64 or values.dim() != 1
                or cols.shape != values.shape or values.numel() % 16 or slice_ptr.dim() != 1
                or slice_ptr.numel() < slices + 2):
            raise ValueError(f"{name} (blocked form) must be float32 values and uint8 cols of one length, a "
                             f"multiple of 16, and int64 slice_ptr of at least {slices + 2} entries ({slices} "
                             f"slices of 16 rows), got {values.dtype} {tuple(values.shape)}, {cols.dtype} "
                             f"{tuple(cols.shape)} and {slice_ptr.dtype} {tuple(slice_ptr.shape)}")
        return values, cols, slice_ptr
    slices = segments * -(-segment_rows // SLICE_ROWS)
    if (values.dtype != torch.float32 or cols.dtype != torch.int32 or slice_ptr.dtype != torch.int64
            or values.dim() != 1 or cols.shape != values.shape or slice_ptr.shape != (slices + 1,)):
        raise ValueError(f"{name} must be float32 values and int32 (or uint8: the blocked form) cols of one length "
                         f"and int64 slice_ptr of {slices + 1} entries (one per slice of 8 rows, plus one), got "
                         f"{values.dtype} {tuple(values.shape)}, {cols.dtype} {tuple(cols.shape)} and "
                         f"{slice_ptr.dtype} {tuple(slice_ptr.shape)}")
    return values, cols, slice_ptr
