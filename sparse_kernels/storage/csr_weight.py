"""CSRWeight: a sparse matrix in CSR form, with its transposed index, compact
index and batch-1 views cached until the pattern changes; and the sizes at
which its batch-1 product reads the view."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .. import csr as csr_format
from .. import ops
from .._extension import build_info
from ..csr import CSCIndex, INDEX_DTYPE, Index16, validate_csr
from .base import SparseWeight, _replace_values, check_init_scale

# The sizes for which CSRWeight's batch-1 product reads the sliced view. It
# saves ~20% per nonzero where the product is bound by fetching x (the matrix
# in cache) but costs a few microseconds per call (checks, the cache's key) and
# 8 bytes per nonzero: W 1024 x 256 at 90% (26k nonzeros) ran 0.95-0.97x with
# it, 4096 x 1024 (419k) 1.14-1.24x, 8192 x 2048 (1.68M, 13.4 MB, read at the
# L3's bandwidth) 0.99-1.03x (benchmarks/lstm_sliced_ab.py --linear), where it
# would double the weight's memory for nothing.
SLICED_MIN_NNZ = 1 << 16
SLICED_MAX_NNZ = 1 << 20
# With the blocked form (AVX-512 CPUs) the view pays up to 1.68M nonzeros and
# more: 1.45-1.49x the CSR at 8192 x 2048 (BENCHMARKS.md, session O).
BLOCKED_MAX_NNZ = 1 << 21

# When sliced_view builds the blocked form (else SELL-8): its padding (slots x
# 16 lanes per stored entry) at most BLOCKED_MAX_FILL, and its bytes (5 per
# lane) at most BLOCKED_MAX_BYTES. Measured one thread (BENCHMARKS.md, session
# O): at 6000 x 1500 the blocked form is 1.46-2.4x the SELL-8 loop from 3% to
# 33% density (2.43-1.32 lanes an entry, 3-20 MB), but 16384 x 4096 at 1% (3.62
# lanes an entry: segments of ~2 slots, their set-up dominates) ran 0.38x, and
# at 3-5% (25-35 MB, past this host's 32 MiB L3, read from DRAM) 0.69-0.85x.
BLOCKED_MAX_FILL = 2.5
BLOCKED_MAX_BYTES = 20 << 20


# Whether this CPU runs the blocked form (the C++ side's answer, fixed for the
# process: AVX-512F/VL/BW present, SPARSE_KERNELS_CPU_BLOCKED not 0); read
# once here, so that a compiled forward sees a constant.
_BLOCKED_VIEW = bool(build_info().get("cpu_blocked_view", False))


def blocked_view_supported() -> bool:
    """Whether sliced_view may build the blocked form here."""
    return _BLOCKED_VIEW


class CSRWeight(SparseWeight):
    """A sparse (out_features x in_features) matrix in CSR form.

    Build one with :meth:`from_dense`, :meth:`from_torch_sparse` or
    :meth:`random`; the structure is validated once here, never in the kernels.
    Calling it computes ``input @ W^T`` (+ bias), like ``F.linear``.
    """

    def __init__(self, values: torch.Tensor, row_ptr: torch.Tensor, col_idx: torch.Tensor,
                 shape, *, validate: bool = True):
        super().__init__()
        shape = csr_format.check_shape(shape)
        if validate:
            validate_csr(row_ptr, col_idx, shape, values)
        self.out_features, self.in_features = shape
        self.values = nn.Parameter(values.detach().contiguous())
        self.register_buffer("row_ptr", row_ptr.contiguous())
        self.register_buffer("col_idx", col_idx.contiguous())
        for name in CSCIndex._fields:
            self.register_buffer(name, None, persistent=False)
        self._csc_key = None
        self._index16 = (None, None)
        self._index16_key = None
        self._lstm_plan = None
        self._lstm_plan_key = None
        self._sliced, self._sliced_key = None, None
        # False for a predefined pattern that sparse training must leave alone
        # (SparseEmbedding's frequency prefixes); see dst.find_sparse_weights.
        self.dynamic = True

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dense(cls, dense: torch.Tensor, mask: torch.Tensor | None = None) -> "CSRWeight":
        """Keep the entries where ``mask`` is true (default: the nonzeros of ``dense``)."""
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
            raise ValueError("dense must be a 2-D tensor (out_features, in_features)")
        if not dense.is_floating_point():
            raise TypeError(f"dense must be a floating-point tensor, got {dense.dtype}")
        if mask is None:
            mask = dense != 0
        elif not isinstance(mask, torch.Tensor) or mask.shape != dense.shape:
            raise ValueError(f"mask must be a tensor of shape {tuple(dense.shape)}")
        mask = mask.to(device=dense.device, dtype=torch.bool)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major order: already CSR order
        counts = torch.bincount(rows, minlength=dense.shape[0])
        row_ptr = torch.zeros(dense.shape[0] + 1, dtype=INDEX_DTYPE, device=dense.device)
        row_ptr[1:] = torch.cumsum(counts, 0)
        return cls(dense.detach()[rows, cols].clone(), row_ptr, cols.to(INDEX_DTYPE), dense.shape)

    @classmethod
    def from_torch_sparse(cls, sparse: torch.Tensor) -> "CSRWeight":
        """From a ``torch.sparse_csr_tensor`` (or a COO tensor, converted)."""
        if not isinstance(sparse, torch.Tensor) or sparse.layout not in (torch.sparse_csr, torch.sparse_coo):
            raise TypeError("sparse must be a torch.sparse_csr or torch.sparse_coo tensor")
        if sparse.dim() != 2:
            raise ValueError(f"sparse must be 2-D, got {sparse.dim()}-D")
        if sparse.layout == torch.sparse_coo:
            sparse = sparse.coalesce().to_sparse_csr()
        crow, col = sparse.crow_indices(), sparse.col_indices()
        if col.numel() > 2**31 - 1:
            raise ValueError("too many nonzeros for int32 indices")
        # torch allows unsorted columns within a row: sort them, keep values paired.
        n_rows, n_cols = sparse.shape
        rows = csr_format.row_indices(crow)
        row_ptr, col_idx, order = csr_format.from_coordinates(rows, col, (n_rows, n_cols))
        return cls(sparse.values().detach()[order].clone(), row_ptr, col_idx, sparse.shape)

    @classmethod
    def random(cls, out_features: int, in_features: int, density: float, *, init: str = "uniform",
               generator: torch.Generator | None = None, dtype=None, device=None,
               bound: float | None = None, row_groups: int = 1, init_scale: str = "dense") -> "CSRWeight":
        """A random topology with exactly round(density * out * in) nonzeros
        (``init``: "uniform" per row, "erdos_renyi" or "block_diagonal" with
        ``row_groups`` gate groups; see sparse_kernels.csr.random_csr),
        values uniform in +-bound (default 1/sqrt(in_features), like nn.Linear),
        times sqrt(in_features / the row's nonzeros) with
        ``init_scale="fan_in"`` (see ``INIT_SCALES``)."""
        check_init_scale(init_scale)
        row_ptr, col_idx = csr_format.random_csr((out_features, in_features), density, init=init,
                                                 generator=generator, device=device, row_groups=row_groups)
        if bound is None:
            bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        values = torch.empty(col_idx.numel(), dtype=dtype, device=device)
        values.uniform_(-bound, bound, generator=generator)
        weight = cls(values, row_ptr, col_idx, (out_features, in_features), validate=False)
        return weight.scale_to_fan_in_() if init_scale == "fan_in" else weight

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        return self.col_idx.numel()

    def extra_repr(self) -> str:
        return (f"shape=({self.out_features}, {self.in_features}), nnz={self.nnz}, "
                f"density={self.density:.4f}, dtype={self.values.dtype}")

    # ------------------------------------------------------------------ slot view
    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def pattern(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.row_ptr, self.col_idx

    def slot_magnitudes(self) -> torch.Tensor:
        return self.values.detach().abs()

    def csr_operands(self):
        """(values, row_ptr, col_idx, transposed index or None): the CSR
        arguments of the whole-layer ops."""
        return self.values, self.row_ptr, self.col_idx, self.backward_index()

    def values_at(self, dense: torch.Tensor) -> torch.Tensor:
        """The entries of a dense (out, in) matrix at this pattern, in slot order."""
        rows = csr_format.row_indices(self.row_ptr)
        return dense.detach().to(rows.device)[rows, self.col_idx.long()]

    def pattern_state(self) -> dict:
        """The persistent pattern buffers by state_dict name."""
        return {"row_ptr": self.row_ptr, "col_idx": self.col_idx}

    # ------------------------------------------------------------------ transposed index
    def _pattern_key(self):
        # In-place edits bump a tensor's version counter, so this also notices a
        # pattern changed by copy_ or load_state_dict.
        return (self.row_ptr.data_ptr(), self.row_ptr._version,
                self.col_idx.data_ptr(), self.col_idx._version, self.col_idx.device)

    def transposed_index(self) -> CSCIndex:
        """The cached CSC view (col_ptr, row_idx, csr2csc), rebuilt only when the
        pattern changed since it was built."""
        key = self._pattern_key()
        if self._csc_key != key or self.col_ptr is None:
            col_ptr, row_idx, csr2csc = csr_format.csr_transpose(self.row_ptr, self.col_idx, self.in_features)
            self.col_ptr, self.row_idx, self.csr2csc = col_ptr, row_idx, csr2csc
            self._csc_key = self._pattern_key()
        return CSCIndex(self.col_ptr, self.row_idx, self.csr2csc)

    def backward_index(self) -> CSCIndex | None:
        """The transposed index where the backward reads it: on CUDA (the input
        gradient gathers through it, no atomics); None on the CPU, whose
        backward scatters from the CSR (faster there, and 8 bytes per nonzero
        less to keep)."""
        return None if self.col_idx.device.type == "cpu" else self.transposed_index()

    def compact_index(self) -> tuple[Index16 | None, Index16 | None]:
        """(compact index of the CSR, of the transposed index) where the
        products read them: on CUDA, csr.index16 of (row_ptr, col_idx) when
        in_features <= 65536 and of (col_ptr, row_idx) when out_features <=
        65536 (else None); (None, None) on other devices, whose kernels read
        int32 indices only."""
        if self.col_idx.device.type != "cuda":
            # Drop a copy left on the GPU by a weight moved off it (plain
            # attributes do not follow .to()); only then, since each
            # attribute write goes through nn.Module.__setattr__, a cost
            # on every CPU forward otherwise.
            if self._index16_key is not None or self._index16 != (None, None):
                self._index16, self._index16_key = (None, None), None
            return None, None
        return self._cached_index16()

    def _cached_index16(self) -> tuple[Index16 | None, Index16 | None]:
        # Device-generic (tests build it on the CPU). Cached under the
        # transposed index's key, so rebuilt exactly when the pattern
        # changes. Plain attributes, not buffers: derived data that no
        # state_dict should hold, and DDP broadcasts buffers while NCCL has
        # no uint16 type. 2 + 4 bytes per nonzero and 4 per row and column.
        key = self._pattern_key()
        if self._index16_key != key:
            csc = self.transposed_index()
            self._index16 = (csr_format.index16(self.row_ptr, self.col_idx, self.in_features),
                             csr_format.index16(csc.col_ptr, csc.row_idx, self.out_features))
            self._index16_key = key
        return self._index16

    def persistent_lstm_plan(self) -> tuple[torch.Tensor, int] | None:
        """As W_hh of an LSTM layer (4H x H, gate rows i|f|g|o): the persistent
        CUDA forward's split of its rows over the device's SMs
        (``lstm_persistent_plan``), passed to ``lstm_layer`` so that a forward
        copies nothing to the host. (unit_start, int32 on the device; shared
        memory bytes per block), made once per topology and value type (one
        host copy of row_ptr then); None off CUDA, where nothing reads it."""
        if self.row_ptr.device.type != "cuda" or self.out_features % 4:
            if self._lstm_plan_key is not None:  # a weight moved off the GPU: drop its device copy
                self._lstm_plan, self._lstm_plan_key = None, None
            return None
        sms = torch.cuda.get_device_properties(self.row_ptr.device).multi_processor_count
        return self._cached_lstm_plan(sms)

    @torch.compiler.disable  # host work on a cache: run eagerly under torch.compile, its results enter as inputs
    def sliced_view(self, segment_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, cols, slice_ptr): the weight in a sliced layout, which the
        CPU's float32 batch-1 products read (ops.lstm_layer's ``hh_sliced``
        with one segment per gate; ops.sparse_linear's ``sliced`` with one
        segment): on CPUs with AVX-512F/VL/BW the blocked form of
        ``csr.blocked_layout`` (slices of 16 rows within segments of
        ``segment_rows`` rows, entries by 64-column block; through the ops
        1.45-1.78x the other form's speed, BENCHMARKS.md session O) where its padding and size are
        within BLOCKED_MAX_FILL and BLOCKED_MAX_BYTES, elsewhere the
        sliced-ELLPACK layout of ``csr.sliced_layout`` (slices of 8 rows,
        padding column in_features). build_info()["cpu_blocked_view"] says
        whether this CPU runs the blocked form; the dtype of ``cols`` (uint8 or
        int32) which form a view is.
        Cached until the pattern or the values change: meant for inference,
        where they stay put (after a training step the next call rebuilds it,
        O(nnz)). Plain attributes, not buffers: derived data no state_dict
        holds. Keeps 8 (SELL-8) or 5 (blocked) bytes per stored or padding entry
        (the layout's entry map is dropped once the values are placed)."""
        # The values are keyed by their storage and version: an in-place step
        # bumps the version, new data (``.data =``, a new Parameter) has
        # another address. The key holds an alias of the storage, so that no
        # new tensor can be given its address while the key lives.
        values, pattern = self.values, (self._pattern_key(), int(segment_rows))
        key = self._sliced_key
        if (key is None or key[0] != pattern or key[1].data_ptr() != values.data_ptr()
                or key[1].dtype != values.dtype or key[1].numel() != values.numel() or key[2] != values._version):
            with torch.inference_mode(False):  # ordinary tensors: the op's checks of them are cached (checks.h)
                self._sliced = self._build_sliced_view(values, pattern[1])
            self._sliced_key = (pattern, values.detach(), values._version)
        return self._sliced

    def _build_sliced_view(self, values: torch.Tensor, segment_rows: int) -> tuple:
        layout = None
        if blocked_view_supported():
            layout = csr_format.blocked_layout(self.row_ptr, self.col_idx, segment_rows, self.in_features)
            lanes = layout.cols.numel()
            if lanes > BLOCKED_MAX_FILL * max(self.nnz, 1) or 5 * lanes > BLOCKED_MAX_BYTES:
                layout = None
        if layout is None:
            layout = csr_format.sliced_layout(self.row_ptr, self.col_idx, segment_rows, self.in_features)
        return csr_format.sliced_values(values, layout), layout.cols, layout.slice_ptr

    @torch.compiler.disable  # host work on a cache: run eagerly under torch.compile, its results enter as inputs
    def _cached_lstm_plan(self, max_blocks: int) -> tuple[torch.Tensor, int]:
        # Device-generic (tests make it on the CPU). Keyed like the compact
        # index, plus what else the plan depends on: the value size (shared
        # memory bytes) and the block count.
        key = (self._pattern_key(), self.values.dtype, max_blocks)
        if self._lstm_plan_key != key:
            plan = torch.ops.sparse_kernels.lstm_persistent_plan(self.row_ptr.cpu(), max_blocks,
                                                                 self.values.element_size())
            self._lstm_plan = (plan[1:].to(device=self.row_ptr.device, dtype=torch.int32), int(plan[0]))
            self._lstm_plan_key = key
        return self._lstm_plan

    def set_pattern(self, row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor,
                    *, validate: bool = True) -> None:
        """Replace the topology (and values). The values Parameter object is
        kept, so optimizers still hold it; their per-element state must be
        remapped by the caller when nnz or the slot order changes."""
        if validate:
            validate_csr(row_ptr, col_idx, self.shape, values)
        self.row_ptr = row_ptr.contiguous()
        self.col_idx = col_idx.contiguous()
        _replace_values(self.values, values)
        self._csc_key = None
        self._index16_key = None
        self._lstm_plan_key = None
        self._sliced_key = None

    # ------------------------------------------------------------------ compute
    def forward(self, input: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(input)
        values, row_ptr, col_idx = self.values, self.row_ptr, self.col_idx
        if col_idx.device.type == "cpu" and self._index16_key is None:
            # What compact_index() and backward_index() return on the CPU,
            # without their calls (a few us of a batch-1 product's ~20 us of
            # Python); compact_index() runs when it has a GPU copy to drop.
            index16 = csc_index16 = csc = None
        else:
            index16, csc_index16 = self.compact_index()
            csc = self.backward_index()
        # One input row on the CPU in float32 (batch-1 inference): the sliced
        # view (eight rows' sums in one register), cached while the values
        # stay put; not while they are being trained (each step would re-copy
        # them), nor for sizes where it does not pay (SLICED_MIN/MAX_NNZ,
        # BLOCKED_MAX_NNZ where the blocked form runs).
        sliced = None
        if (isinstance(input, torch.Tensor) and input.device.type == "cpu" and input.dtype == torch.float32
                and values.dtype == torch.float32 and SLICED_MIN_NNZ <= values.numel()
                and values.numel() <= (BLOCKED_MAX_NNZ if blocked_view_supported() else SLICED_MAX_NNZ)
                and self.out_features > 0
                and input.numel() == self.in_features and not (torch.is_grad_enabled() and values.requires_grad)):
            sliced = self.sliced_view(self.out_features)
        return ops.sparse_linear(input, values, row_ptr, col_idx, bias, csc=csc, index16=index16,
                                 csc_index16=csc_index16, sliced=sliced, validate=False)

    def to_dense(self) -> torch.Tensor:
        dense = self.values.new_zeros(self.shape)
        rows = csr_format.row_indices(self.row_ptr)
        return dense.index_put((rows, self.col_idx.long()), self.values)

    def mask(self) -> torch.Tensor:
        """The boolean dense pattern (for inspection and tests; dense-sized)."""
        m = torch.zeros(self.shape, dtype=torch.bool, device=self.col_idx.device)
        m[csr_format.row_indices(self.row_ptr), self.col_idx.long()] = True
        return m

    def to_torch_sparse(self) -> torch.Tensor:
        # The pattern was validated when it was set; torch's "beta" notice is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.row_ptr, self.col_idx, self.values.detach(), self.shape,
                                           check_invariants=False)

    # ------------------------------------------------------------------ state dict
    def get_extra_state(self):
        return {"format": "csr", "shape": [self.out_features, self.in_features]}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or state.get("format") != "csr":
            raise ValueError(f"not a CSRWeight state: {state!r}")
        if list(state.get("shape", [])) != [self.out_features, self.in_features]:
            raise ValueError(self._shape_mismatch(state))

    def _shape_mismatch(self, state) -> str:
        return (f"state_dict holds a CSR weight of shape {state.get('shape')}, "
                f"this one has shape {[self.out_features, self.in_features]}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A saved weight may hold a different number of nonzeros: validate the
        # incoming pattern, then resize our tensors so the in-place copy fits.
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and extra.get("format", "csr") != "csr":
            error_msgs.append(f"{prefix}: state_dict holds a {extra.get('format')!r} weight, this one is 'csr'")
            return
        if isinstance(extra, dict) and list(extra.get("shape", [])) != list(self.shape):
            error_msgs.append(f"{prefix}: {self._shape_mismatch(extra)}")
            return
        keys = {name: prefix + name for name in ("values", "row_ptr", "col_idx")}
        if all(k in state_dict for k in keys.values()):
            values, row_ptr, col_idx = (state_dict[keys[n]] for n in ("values", "row_ptr", "col_idx"))
            try:
                validate_csr(row_ptr, col_idx, self.shape, values)
            except (TypeError, ValueError) as exc:
                error_msgs.append(f"{prefix}: invalid CSR pattern in state_dict: {exc}")
                return
            if values.numel() != self.nnz:
                self.values.data = self.values.data.new_empty(values.shape)
                self.col_idx = self.col_idx.new_empty(col_idx.shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

