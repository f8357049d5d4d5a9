"""DynamicSparsity: prune/regrow schedules for any model holding sparse
weights (CSRWeight, BSRWeight), added to an existing training loop in three lines:

    dst = DynamicSparsity(model, optimizer, method="st-rnn", total_steps=..., update_every=100)
    ...
    loss.backward(); optimizer.step(); dst.step()

The topology work (prune, regrow, rebuild) runs in the C++ topology ops
(sparse_kernels.ops), nothing dense is formed, and the optimizer's
per-element state follows every rebuild (remap_optimizer_state).

Every weight is handled through its slot view (storage.SparseWeight): a
CSRWeight's slots are its entries, a BSRWeight's its blocks, so a
block-sparse weight is pruned by block Frobenius norm, regrown block by
block (RigL: by the Frobenius norm of the dense gradient's blocks, streamed
in row blocks) and its optimizer state remapped block by block. Counts
(prune/regrow budgets, stats) are in slots; densities in entries.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import torch
from torch import nn

from .. import ops
from ..storage import BSRWeight, SparseWeight
from .capture import GradientCapture
from .optim_state import remap_optimizer_state
from .patterns import block_diagonal_csr

__all__ = ["DynamicSparsity", "METHODS", "find_sparse_weights"]

METHODS = ("st-rnn", "set", "rigl", "snfs", "gradual", "iht", "predefined")
_GRADIENT_GROWTH = ("rigl", "snfs")
# Prune-and-regrow at a fixed nnz: an update's cut is temporary (what it
# regrows starts at 0 and trains back), so a model is scored before one, not
# just after. The others' updates are the sparsification itself (gradual
# pruning, IHT's threshold): a model is scored after them.
REGROWING_METHODS = ("st-rnn", "set", "rigl", "snfs")
REDISTRIBUTIONS = ("none", "momentum")
_GRANULARITIES = ("tensor", "gate", "row")
_SEED_BOUND = 2**62


def find_sparse_weights(model: nn.Module) -> dict[str, SparseWeight]:
    """Every CSRWeight or BSRWeight submodule (of SparseLinear, SparseLSTMCell,
    SparseLSTM..., or a bare one) by qualified name, each once; weights whose
    pattern is predefined (``dynamic = False``: SparseEmbedding's) are left out."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found, seen = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, SparseWeight) and getattr(module, "dynamic", True) and id(module) not in seen:
            seen.add(id(module))
            found[name or "weight"] = module
    return found


def _cosine(rate: float, step: int, end: int) -> float:
    """RigL's / ST-RNN's decay: rate/2 (1 + cos(pi t / end)), zero from end on."""
    if end <= 0 or step >= end:
        return 0.0
    return 0.5 * rate * (1.0 + math.cos(math.pi * step / end))


class DynamicSparsity:
    """Dynamic sparse training of every CSRWeight and BSRWeight of ``model``
    (a BSRWeight's unit is the block: see the module docstring; "set" prunes
    its blocks by norm, as a block has no sign).

    method:
      "st-rnn"     Selfish-RNN / ST-RNN (Liu et al.): magnitude prune, random
                   regrow, prune rate cosine-decayed to zero; nnz constant.
      "set"        SET: drop a fraction of the smallest positive and of the
                   largest negative weights, random regrow (random init).
      "rigl"       RigL: magnitude prune, regrow the absent positions of
                   largest |dL/dW| (streamed top-k, nothing dense); updates
                   stop at ``stop_fraction`` (default 0.75) of total_steps.
      "snfs"       sparse momentum (Dettmers & Zettlemoyer): magnitude prune
                   per layer, the regrow budget redistributed across layers
                   by each layer's mean |momentum|, regrow where the momentum
                   of the absent weights is largest. That momentum is never
                   stored densely: it is streamed, like RigL's gradient, from
                   the (output gradient, input) rows of the last
                   ``momentum_window`` steps before an update, each step's
                   rows scaled by beta^age (beta: the optimizer's momentum or
                   Adam's beta1), i.e. the momentum truncated to that window
                   (beta^window of the older history is dropped).
      "gradual"    dense-to-sparse gradual pruning, never regrown; the storage
                   shrinks with the density. ``schedule="cubic"`` (Zhu-Gupta):
                   the density falls from the initial one to exactly
                   ``final_density`` between ``start_step`` and ``end_step``.
                   ``schedule="narang"`` (Narang et al.): every stored weight
                   with |w| below a threshold that rises linearly from
                   ``start_step`` (slope theta) and faster from ``ramp_step``
                   (slope 1.5 theta) to ``end_step`` is pruned; theta is set
                   at the first update from the magnitude quantile that would
                   leave ``final_density`` (so the final density is
                   approximate, as in the paper).
      "iht"        iterative hard thresholding (Shao): every update, all but
                   the ``target_density`` largest magnitudes of a layer are set
                   to zero (their optimizer state too); the stored support is
                   unchanged, so thresholded weights may come back.
      "predefined" Demeester: every weight gets a fixed block-diagonal
                   pattern (``n_blocks`` blocks, per gate for LSTM weights)
                   at construction, never updated.

    Common options: ``total_steps`` (the schedule's horizon; a loaded
    state_dict brings back the horizon it was saved with, as torch's lr
    schedulers do, so a resumed run that trains longer keeps the schedule it
    started with, not one stretched mid-run), ``update_every``
    (steps between updates: an epoch's length for "every epoch"),
    ``prune_rate`` (the initial fraction pruned, decayed by ``decay`` =
    "cosine" | "constant"), ``seed`` (the torch.Generator behind every random
    choice: the same on every rank gives the same topology everywhere),
    ``granularity`` ("tensor" | "gate" | "row": where prune and regrow counts
    are kept), ``allow_repick`` (may regrow what was just pruned),
    ``grow_init`` ("zero" | "uniform" in +-1/sqrt(in_features) | a callable
    ``(weight, count, generator) -> count values`` (count slots: for a
    BSRWeight count blocks, count * bh * bw values)), ``redistribute``
    ("momentum" | "none"; default "momentum" for "snfs", "none" otherwise):
    "momentum" hands each update's regrow budget to the layers in proportion
    to the mean |momentum| of their stored weights (Dettmers & Zettlemoyer's
    redistribution); with a regrowing method other than "snfs" that is Liu et
    al.'s Table 7 "ST-LSTM + sparse momentum" (st-rnn: the counts move between
    layers, each layer still regrows at random). It needs the optimizer's
    momentum (SGD momentum, Adam's first moment) and ``granularity="tensor"``.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, method: str = "st-rnn", *,
                 total_steps: int, update_every: int = 100, prune_rate: float = 0.5, seed: int = 0,
                 decay: str = "cosine", granularity: str = "tensor", allow_repick: bool = False,
                 grow_init: str | None = None, stop_fraction: float | None = None, block_rows: int = 256,
                 final_density: float = 0.1, start_step: int = 0, end_step: int | None = None,
                 target_density: float | None = None, n_blocks: int | None = None, schedule: str = "cubic",
                 ramp_step: int | None = None, momentum_window: int = 8, redistribute: str | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        for name, value in (("total_steps", total_steps), ("update_every", update_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= float(prune_rate) <= 1.0:
            raise ValueError(f"prune_rate must be in [0, 1], got {prune_rate}")
        if decay not in ("cosine", "constant"):
            raise ValueError(f"decay must be 'cosine' or 'constant', got {decay!r}")
        if granularity not in _GRANULARITIES:
            raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")
        if granularity != "tensor" and method in _GRADIENT_GROWTH:
            raise ValueError(f"method {method!r} regrows per tensor: granularity must be 'tensor'")
        grow_init = grow_init or ("uniform" if method == "set" else "zero")
        if not callable(grow_init) and grow_init not in ("zero", "uniform"):
            raise ValueError(f"grow_init must be 'zero', 'uniform' or a callable, got {grow_init!r}")
        if stop_fraction is None:
            stop_fraction = 0.75 if method == "rigl" else 1.0
        if not 0.0 < float(stop_fraction) <= 1.0:
            raise ValueError(f"stop_fraction must be in (0, 1], got {stop_fraction}")
        if not 0.0 <= float(final_density) <= 1.0:
            raise ValueError(f"final_density must be in [0, 1], got {final_density}")
        if not isinstance(momentum_window, int) or isinstance(momentum_window, bool) or momentum_window < 1:
            raise ValueError(f"momentum_window must be a positive int, got {momentum_window!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if redistribute is None:
            redistribute = "momentum" if method == "snfs" else "none"
        if redistribute not in REDISTRIBUTIONS:
            raise ValueError(f"redistribute must be one of {REDISTRIBUTIONS}, got {redistribute!r}")
        if redistribute == "momentum" and method not in REGROWING_METHODS:
            raise ValueError(f"redistribute='momentum' moves the regrow budget between layers: method must be "
                             f"one of {REGROWING_METHODS}, got {method!r}")
        if redistribute == "momentum" and granularity != "tensor":
            raise ValueError("redistribute='momentum' moves whole layers' counts: granularity must be 'tensor'")
        self.model, self.optimizer, self.method = model, optimizer, method
        self.weights = find_sparse_weights(model)
        if not self.weights:
            raise ValueError("model holds no CSRWeight or BSRWeight (sparse weights) to train")
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, w in self.weights.items() if id(w.values) not in in_optimizer]
        if missing:
            raise ValueError(f"the optimizer does not hold the values of {missing}")
        self.total_steps, self.update_every = total_steps, update_every
        self.prune_rate, self.decay, self.granularity = float(prune_rate), decay, granularity
        self.allow_repick, self.grow_init, self.block_rows = bool(allow_repick), grow_init, int(block_rows)
        self.momentum_window = momentum_window if method == "snfs" else 1
        self.redistribute = redistribute
        if redistribute == "momentum" and not any(self._momentum_beta(w) > 0 for w in self.weights.values()):
            warnings.warn("redistribute='momentum': the optimizer keeps no momentum for the sparse weights, so "
                          "every layer scores 0 and the regrow budget stays where it was pruned")
        self.stop_step = int(round(float(stop_fraction) * total_steps))
        self.final_density, self.start_step = float(final_density), int(start_step)
        self.end_step = int(end_step) if end_step is not None else total_steps
        if schedule not in ("cubic", "narang"):
            raise ValueError(f"schedule must be 'cubic' or 'narang', got {schedule!r}")
        self.schedule = schedule
        self.ramp_step = int(ramp_step) if ramp_step is not None else (self.start_step + self.end_step) // 2
        if not self.start_step <= self.ramp_step <= self.end_step:
            raise ValueError(f"need start_step <= ramp_step <= end_step, got {self.start_step}, "
                             f"{self.ramp_step}, {self.end_step}")
        self.theta: dict[str, float] = {}  # Narang's start slope per layer, set at the first update
        self.initial_density = {n: w.density for n, w in self.weights.items()}
        self.target_density = {n: (w.density if target_density is None else float(target_density))
                               for n, w in self.weights.items()}
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.updates = 0
        self.storage_resized = False  # did the last step() change some layer's nnz?
        self._layer_stats = {n: dict(pruned=0, regrown=0, total_pruned=0, total_regrown=0, change_rate=0.0)
                             for n in self.weights}
        self._capture = None
        if method == "predefined":
            self._apply_predefined(n_blocks)
        self._arm_capture()

    @property
    def regrows(self) -> bool:
        """Whether an update prunes and regrows at a fixed nnz (REGROWING_METHODS)."""
        return self.method in REGROWING_METHODS

    # ------------------------------------------------------------------ schedule
    def current_prune_rate(self, step: int | None = None) -> float:
        step = self.steps if step is None else step
        if self.decay == "constant":
            return self.prune_rate if step < self.stop_step else 0.0
        return _cosine(self.prune_rate, step, self.stop_step)

    def is_update_step(self, step: int) -> bool:
        if self.method == "predefined":
            return False
        if self.method == "gradual":
            return step % self.update_every == 0 and self.start_step <= step <= self.end_step
        if self.method == "iht":
            # Shao: threshold after every BPTT update, the last one included,
            # so that the trained model ends sparse.
            return step % self.update_every == 0
        return step % self.update_every == 0 and step < self.stop_step

    def _gradual_density(self, name: str, step: int) -> float:
        d0, df = self.initial_density[name], min(self.final_density, self.initial_density[name])
        span = max(self.end_step - self.start_step, 1)
        progress = min(max((step - self.start_step) / span, 0.0), 1.0)
        return df + (d0 - df) * (1.0 - progress) ** 3

    def narang_threshold(self, name: str, step: int) -> float:
        """Narang et al.'s threshold epsilon at ``step`` (0 before the layer's
        slope is set or before start_step); frozen from end_step on."""
        theta = self.theta.get(name)
        if theta is None or step < self.start_step:
            return 0.0
        step = min(step, self.end_step)
        freq, phi = self.update_every, 1.5 * theta
        if step < self.ramp_step:
            return theta * (step - self.start_step + 1) / freq
        return (theta * (self.ramp_step - self.start_step + 1) + phi * (step - self.ramp_step + 1)) / freq

    @staticmethod
    def _slot_rms(w: SparseWeight) -> torch.Tensor:
        """Per slot the root mean square of its entries (|w| for a single
        entry): a magnitude on the scale of one weight for any slot size."""
        return w.slot_magnitudes() / math.sqrt(w.slot_size)

    def _set_narang_slope(self, name: str, w: SparseWeight) -> None:
        # q: the magnitude below which a fraction 1 - final_density of all
        # positions (absent ones count as zeros) lies; Narang et al. derive
        # theta from it so that the threshold reaches q around end_step.
        magnitudes = self._slot_rms(w).sort().values
        grid, slots = math.prod(w.grid_shape), w.num_slots
        below = int(round((1.0 - self.final_density) * grid)) - (grid - slots)
        q = float(magnitudes[min(max(below, 0), slots - 1)]) if slots else 0.0
        span = 2 * (self.ramp_step - self.start_step) + 3 * (self.end_step - self.ramp_step)
        self.theta[name] = 2.0 * q * self.update_every / max(span, 1)

    # ------------------------------------------------------------------ loop hook
    def step(self) -> bool:
        """Call once after every optimizer.step(). Returns True when the
        topology was updated at this step; ``storage_resized`` then says
        whether some layer's nnz changed (SNFS, gradual), after which a
        DistributedDataParallel wrapper of the model must be rebuilt."""
        self.steps += 1
        updated = False
        self.storage_resized = False
        if self.is_update_step(self.steps):
            nnz_before = [w.nnz for w in self.weights.values()]
            self._update()
            # SNFS moves nnz between layers and gradual pruning shrinks them:
            # a DistributedDataParallel wrapper sized its buckets for the old
            # shapes and must be rebuilt (see README, "Training at scale").
            self.storage_resized = nnz_before != [w.nnz for w in self.weights.values()]
            self.updates += 1
            updated = True
            self._drop_capture()  # its rows are spent
        self._arm_capture()
        return updated

    def skip_step(self) -> None:
        """Call instead of :meth:`step` when the loop skipped optimizer.step()
        (a NaN/inf loss or gradient): the schedule does not advance, and the
        layer inputs/gradients captured for gradient regrow during that step
        are dropped so the next update never sees them."""
        if self._capture is not None:
            self._capture.discard(self._capture.step)
        self._arm_capture()

    def _drop_capture(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None

    def _arm_capture(self) -> None:
        """Gradient regrow reads the inputs/output gradients of the step
        before an update (of the ``momentum_window`` steps before it for
        SNFS): hook them only then."""
        window = range(self.steps + 1, self.steps + 1 + self.momentum_window)
        if self.method not in _GRADIENT_GROWTH or not any(self.is_update_step(s) for s in window):
            return self._drop_capture()
        if self._capture is None:
            self._capture = GradientCapture(self.model, self.weights)
        self._capture.step = self.steps + 1  # the step whose backward comes next

    # ------------------------------------------------------------------ updates
    def _draw_seed(self) -> int:
        return int(torch.randint(_SEED_BOUND, (1,), generator=self.generator))

    def _row_groups(self, w: SparseWeight) -> torch.Tensor:
        rows = w.grid_shape[0]
        if self.granularity == "row":
            return torch.arange(rows + 1, dtype=torch.int64)
        if self.granularity == "gate" and rows % 4 == 0:
            return torch.arange(0, rows + 1, rows // 4, dtype=torch.int64) if rows else torch.zeros(1, dtype=torch.int64)
        return torch.tensor([0, rows], dtype=torch.int64)

    @torch.no_grad()
    def _update(self) -> None:
        if self.method == "iht":
            return self._hard_threshold()
        rate = self.current_prune_rate()
        plans = {}
        for name, w in self.weights.items():
            # On the pattern's device: the topology ops run there (CPU or CUDA).
            row_groups = self._row_groups(w).to(w.pattern[0].device)
            slot_groups = w.pattern[0].long()[row_groups]
            grid_cols = w.grid_shape[1]
            # Entries for a CSR weight (signed), block norms for a BSR weight.
            values = w.values.detach() if w.slot_size == 1 and w.values.dim() == 1 else w.slot_magnitudes()
            if self.method == "gradual" and self.schedule == "narang":
                if name not in self.theta:
                    self._set_narang_slope(name, w)
                below = int((self._slot_rms(w) < self.narang_threshold(name, self.steps)).sum())
                keep = ops.magnitude_prune(values, [below])
            elif self.method == "gradual":
                target = int(round(self._gradual_density(name, self.steps) * math.prod(w.grid_shape)))
                keep = ops.magnitude_prune(values, [max(w.num_slots - target, 0)])
            elif self.method == "set" and not isinstance(w, BSRWeight):
                keep = ops.signed_magnitude_prune(values, rate, slot_groups)
            else:
                sizes = slot_groups.diff()
                drop = (sizes.double() * rate).round().long()
                if not self.allow_repick:
                    # Without re-picking, a group can give up only as many as it has room to regrow.
                    room = row_groups.diff() * grid_cols - sizes
                    drop = torch.minimum(drop, room)
                keep = ops.magnitude_prune(values, drop, slot_groups)
            plans[name] = (keep, row_groups, slot_groups)
        grow = self._grow_counts(plans)
        for name, w in self.weights.items():
            keep, row_groups, _ = plans[name]
            self._rebuild(name, w, keep, row_groups, grow[name])

    def _grow_counts(self, plans) -> dict[str, torch.Tensor]:
        """Per layer and row group: how many to regrow."""
        counts = {}
        for name, (keep, row_groups, slot_groups) in plans.items():
            if self.method == "gradual":
                counts[name] = torch.zeros(row_groups.numel() - 1, dtype=torch.int64, device=row_groups.device)
            else:  # give back what each group lost: nnz stays exact
                dropped = torch.zeros(keep.numel() + 1, dtype=torch.int64, device=keep.device)
                dropped[1:] = (~keep).long().cumsum(0)
                counts[name] = dropped[slot_groups].diff()
                if not self.allow_repick:  # SET near density 1: only the free room can be regrown
                    room = row_groups.diff() * self.weights[name].grid_shape[1] - slot_groups.diff()
                    counts[name] = torch.minimum(counts[name], room)
        if self.redistribute == "momentum":
            counts = self._redistribute(plans, counts)
        return counts

    def _redistribute(self, plans, counts):
        """Sparse momentum (Dettmers & Zettlemoyer; Liu et al. Table 7): the
        total regrow budget goes to layers in proportion to the mean |momentum|
        of their stored weights, capped by each layer's free room. Layers
        trade slots only with layers of the same slot shape (entries with
        CSR layers, same-shaped blocks with BSR layers), so nnz stays exact."""
        by_shape = {}
        for n, w in self.weights.items():
            by_shape.setdefault(tuple(w.slot_shape), []).append(n)
        result = {}
        for names in by_shape.values():
            result.update(self._redistribute_among(names, plans, counts))
        return result

    def _redistribute_among(self, names, plans, counts):
        budget = sum(int(counts[n].sum()) for n in names)
        score = torch.tensor([self._mean_momentum(self.weights[n]) for n in names], dtype=torch.float64)
        if budget == 0 or float(score.sum()) <= 0:
            return {n: counts[n] for n in names}
        room = []
        for n in names:
            w, (keep, _, _) = self.weights[n], plans[n]
            occupied = int(keep.numel() if not self.allow_repick else keep.sum())
            room.append(math.prod(w.grid_shape) - occupied)
        room = torch.tensor(room, dtype=torch.int64)
        share = torch.zeros(len(names), dtype=torch.int64)
        # Proportional shares, capped; what a full layer cannot take goes to the rest.
        remaining, open_layers = budget, room > 0
        while remaining > 0 and bool(open_layers.any()):
            weights = torch.where(open_layers, score, torch.zeros_like(score))
            if float(weights.sum()) <= 0:
                weights = open_layers.double()
            want = torch.floor(weights / weights.sum() * remaining).long()
            want[int(torch.argmax(weights))] += remaining - int(want.sum())  # rounding remainder
            take = torch.minimum(want, room - share)
            share += take
            remaining -= int(take.sum())
            open_layers = share < room
        return {n: share[i].reshape(1) for i, n in enumerate(names)}

    def _momentum_beta(self, w: SparseWeight) -> float:
        """The decay of the optimizer's momentum for w.values (SGD momentum,
        Adam/AdamW beta1), 0 when it has none."""
        for group in self.optimizer.param_groups:
            if any(p is w.values for p in group["params"]):
                if "betas" in group:
                    return float(group["betas"][0])
                return float(group.get("momentum", 0.0))
        return 0.0

    def _mean_momentum(self, w: SparseWeight) -> float:
        state = self.optimizer.state.get(w.values, {})
        buf = state.get("momentum_buffer", state.get("exp_avg"))
        if buf is None or buf.numel() == 0:
            return 0.0
        return float(buf.abs().mean())

    def _rebuild(self, name: str, w: SparseWeight, keep: torch.Tensor, row_groups: torch.Tensor,
                 grow_counts: torch.Tensor) -> None:
        row_ptr, col_idx = w.pattern  # the topology ops run on its device
        occupied = keep if self.allow_repick else torch.ones_like(keep)
        k = int(grow_counts.sum())
        # Every rank takes every layer's rows (a collective in a distributed job).
        captured = None
        if self._capture is not None:
            # RigL: the last step's gradient; SNFS: the windowed momentum.
            decay = self._momentum_beta(w) if self.method == "snfs" else 0.0
            captured = self._capture.take(name, now=self.steps, decay=decay)
        if self.method in _GRADIENT_GROWTH and captured is not None and k:
            grad_output, inputs = (t.to(device=row_ptr.device, dtype=w.values.dtype) for t in captured)
            if isinstance(w, BSRWeight):
                grow = ops.block_gradient_regrow(grad_output, inputs, row_ptr, col_idx, occupied, k,
                                                 w.block_shape, self.block_rows)
            else:
                grow = ops.gradient_regrow(grad_output, inputs, row_ptr, col_idx, occupied, k, self.block_rows)
        else:
            if self.method in _GRADIENT_GROWTH and k:
                warnings.warn(f"{self.method}: no gradient rows were captured for {name!r} (not called as a "
                              f"module, or a GRU/RHN recurrent weight); its {k} positions regrow at random")
            # Random regrow; also RigL's fallback for a layer that saw no gradient this step.
            grow = ops.random_regrow(row_ptr, col_idx, occupied, w.grid_shape[1], grow_counts,
                                     self._draw_seed(), group_rows=row_groups)
        grow_values = None
        grown_shape = (k, *w.slot_shape)
        if callable(self.grow_init) and k:
            grow_values = torch.as_tensor(self.grow_init(w, k, self.generator),
                                          dtype=w.values.dtype).reshape(grown_shape)
        elif self.grow_init == "uniform" and k:
            bound = 1.0 / math.sqrt(w.in_features) if w.in_features else 0.0
            grow_values = torch.empty(grown_shape, dtype=w.values.dtype).uniform_(-bound, bound,
                                                                                 generator=self.generator)
        old_slots = w.num_slots
        perm = w.rebuild(keep, *grow, grow_values)
        remap_optimizer_state(self.optimizer, w.values, perm, old_slots)
        stats = self._layer_stats[name]
        pruned, regrown = int((~keep).sum()), int((perm < 0).sum())
        stats.update(pruned=pruned, regrown=regrown, total_pruned=stats["total_pruned"] + pruned,
                     total_regrown=stats["total_regrown"] + regrown,
                     change_rate=regrown / w.num_slots if w.num_slots else 0.0)

    @torch.no_grad()
    def _hard_threshold(self) -> None:
        for name, w in self.weights.items():
            k = int(round(self.target_density[name] * math.prod(w.grid_shape)))  # in slots
            magnitudes = w.values.detach() if w.values.dim() == 1 else w.slot_magnitudes()
            keep = ops.magnitude_prune(magnitudes, [max(w.num_slots - k, 0)]).to(w.values.device)
            zeroed = ~keep
            w.values[zeroed] = 0
            for key, value in self.optimizer.state.get(w.values, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == w.values.shape:
                    value[zeroed] = 0
            stats = self._layer_stats[name]
            n = int(zeroed.sum())
            stats.update(pruned=n, regrown=0, total_pruned=stats["total_pruned"] + n,
                         change_rate=n / w.num_slots if w.num_slots else 0.0)

    def _apply_predefined(self, n_blocks: int | None) -> None:
        for name, w in self.weights.items():
            blocks = n_blocks or max(1, int(round(1.0 / max(w.density, 1e-12))))
            rows, cols = w.grid_shape  # BSR: the bands are cut on the grid of blocks
            row_groups = 4 if rows % 4 == 0 and rows >= 4 else 1
            row_ptr, col_idx = block_diagonal_csr(rows, cols, blocks, row_groups)
            bound = float(w.values.detach().abs().max()) if w.nnz else 1.0 / math.sqrt(max(w.in_features, 1))
            values = torch.empty(col_idx.numel(), *w.slot_shape, dtype=w.values.dtype).uniform_(
                -bound, bound, generator=self.generator)
            old_slots = w.num_slots
            device = w.values.device
            w.set_pattern(row_ptr.to(device), col_idx.to(device), values.to(device), validate=False)
            remap_optimizer_state(self.optimizer, w.values, torch.full((w.num_slots,), -1, dtype=torch.int64),
                                  old_slots)

    # ------------------------------------------------------------------ introspection
    def stats(self) -> dict:
        """Per-layer density, nnz, pruned/regrown counts (last update and
        total), topology change rate (fraction of the stored positions that
        are new after the last update); plus step, updates and the current
        prune rate."""
        layers = {}
        for name, w in self.weights.items():
            layers[name] = dict(self._layer_stats[name], density=w.density, nnz=w.nnz)
        return dict(method=self.method, step=self.steps, updates=self.updates,
                    prune_rate=self.current_prune_rate(), layers=layers)

    def pattern_checksum(self) -> str:
        """A digest of every layer's pattern (for checking ranks agree)."""
        digest = hashlib.sha256()
        for name, w in self.weights.items():
            digest.update(name.encode())
            for t in w.pattern:
                digest.update(t.cpu().numpy().tobytes())
        return digest.hexdigest()

    def verify_ranks(self, group=None) -> bool:
        """True when every rank of the torch.distributed group holds the same
        patterns (one all_gather of a digest); True outside a distributed job."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return True
        mine = self.pattern_checksum()
        everyone = [None] * dist.get_world_size(group)
        dist.all_gather_object(everyone, mine, group=group)
        return all(c == mine for c in everyone)

    # The steps that place the schedule in time. A loaded state keeps its own
    # (as torch's lr schedulers keep T_max & co.), so a run resumed with a
    # longer total_steps goes on with the schedule it started with instead of
    # stretching it mid-run (which would restart ST-RNN's prune rate or move
    # gradual pruning's density curve).
    _HORIZON = ("total_steps", "update_every", "stop_step", "start_step", "end_step", "ramp_step")

    def state_dict(self) -> dict:
        """Plain containers and tensors (torch.load(weights_only=True) safe).
        The patterns themselves live in the model's state_dict."""
        return dict(method=self.method, steps=self.steps, updates=self.updates,
                    horizon={k: getattr(self, k) for k in self._HORIZON},
                    generator=self.generator.get_state(),
                    layer_stats={n: dict(s) for n, s in self._layer_stats.items()},
                    initial_density=dict(self.initial_density), target_density=dict(self.target_density),
                    theta=dict(self.theta),
                    captured=self._capture.state_dict() if self._capture is not None else {})

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("method") != self.method:
            raise ValueError(f"not a DynamicSparsity state for method {self.method!r}: "
                             f"{state.get('method') if isinstance(state, dict) else state!r}")
        if set(state["layer_stats"]) != set(self.weights):
            raise ValueError(f"state names layers {sorted(state['layer_stats'])}, the model has {sorted(self.weights)}")
        self.steps, self.updates = int(state["steps"]), int(state["updates"])
        # States saved before the horizon was kept leave the constructor's.
        for key, value in state.get("horizon", {}).items():
            if key in self._HORIZON:
                setattr(self, key, int(value))
        self.generator.set_state(state["generator"])
        self._layer_stats = {n: dict(s) for n, s in state["layer_stats"].items()}
        self.initial_density = dict(state["initial_density"])
        self.target_density = dict(state["target_density"])
        self.theta = dict(state.get("theta", {}))
        # Rows captured before the load belong to another history; the
        # checkpoint's own (steps since the last update) come back.
        self._drop_capture()
        self._arm_capture()
        if self._capture is not None:
            self._capture.load_state_dict(state.get("captured", {}))
