"""Capture what a gradient-based regrow needs, without a dense gradient: the
inputs and output gradients of each sparse weight for one training step.

dL/dW of y = x W^T is grad_y^T x, so (grad_y, x) stacked over every call of
the step is enough; RigL's regrow streams its top-k from them in row blocks
(sparse_kernels.ops.gradient_regrow). A SparseLSTM's W_hh is not called as
a module: its input is the previous hidden state of every step and its
output gradient is the gradient of the layer's gates (= of W_ih's output),
taken from SparseLSTM's recurrent hook.
"""

from __future__ import annotations

import torch
from torch import nn

from ..storage import SparseWeight


def previous_hidden(output: torch.Tensor, h0: torch.Tensor, batch_sizes, reverse: bool) -> torch.Tensor:
    """h_prev[t] (T, B, H): the hidden state each step's recurrent product read."""
    if output.shape[0] == 0:
        return output
    if not reverse:
        # Batch sizes do not increase: a row active at t was active at t - 1.
        return torch.cat([h0.unsqueeze(0), output[:-1]])
    prev = torch.cat([output[1:], h0.unsqueeze(0)])
    if batch_sizes is not None and output.shape[0] > 1:
        # Reversed, a sequence starts at its own last step, from h0.
        started = torch.arange(output.shape[1]).unsqueeze(0) < batch_sizes[1:].unsqueeze(1)
        prev[:-1] = torch.where(started.unsqueeze(2).to(output.device), prev[:-1], h0.unsqueeze(0))
    return prev


class GradientCapture:
    """Hooks recording (grad_output, input) rows per weight, tagged with the
    training step they came from (``step``, set by the owner before each
    step), over one or more steps."""

    def __init__(self, model: nn.Module, weights: dict[str, SparseWeight]):
        self._names = {id(w): name for name, w in weights.items()}
        self._rows: dict[str, tuple[list, list]] = {}
        self.step = 0
        self._handles = []
        for module in model.modules():
            if isinstance(module, SparseWeight) and id(module) in self._names:
                self._handles.append(module.register_forward_hook(self._on_linear))
            register = getattr(module, "register_recurrent_hook", None)
            if callable(register):
                self._handles.append(register(self._on_recurrent))

    def _record(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        if not y.requires_grad:
            return
        x = x.detach().reshape(-1, x.shape[-1])
        grads, inputs = self._rows.setdefault(name, ([], []))
        step = self.step

        def on_grad(grad):
            grads.append((step, grad.detach().reshape(-1, grad.shape[-1])))
            inputs.append(x)

        y.register_hook(on_grad)

    def _on_linear(self, module, args, output):
        name = self._names.get(id(module))
        if name is not None and args and isinstance(args[0], torch.Tensor):
            self._record(name, args[0], output)

    def _on_recurrent(self, w_hh, input_gates, output, h0, batch_sizes, reverse):
        name = self._names.get(id(w_hh))
        if name is not None:
            self._record(name, previous_hidden(output.detach(), h0.detach(), batch_sizes, reverse), input_gates)

    def take(self, name: str, *, now: int | None = None, decay: float = 0.0):
        """(grad_output (N, out), input (N, in)), or None when nothing was
        recorded. grad_output^T input is the weight's gradient; with ``now``
        (the current step) and ``decay`` (beta), the rows of step s are scaled
        by beta^(now - s), so grad_output^T input is the momentum
        sum_s beta^(now - s) dL/dW_s over the recorded steps (rows of steps
        with a zero factor are left out). In a torch.distributed job the rows
        of every rank are gathered (every rank calls this for every layer in
        the same order), so that all ranks rank the same global gradient and
        choose the same positions."""
        grads, inputs = self._rows.get(name, ([], []))
        if now is not None:
            scaled = [(g * decay ** (now - s), x) for (s, g), x in zip(grads, inputs)
                      if now == s or decay ** (now - s) != 0.0]
        else:
            scaled = [(g, x) for (_, g), x in zip(grads, inputs)]
        rows = (torch.cat([g for g, _ in scaled]), torch.cat([x for _, x in scaled])) if scaled else None
        if _world_size() > 1:
            rows = _gather_rows(rows)
        return rows

    def discard(self, step: int) -> None:
        """Forget the rows recorded at ``step`` (a step the loop skipped)."""
        for name, (grads, inputs) in self._rows.items():
            kept = [(g, x) for g, x in zip(grads, inputs) if g[0] != step]
            self._rows[name] = ([g for g, _ in kept], [x for _, x in kept])

    def state_dict(self) -> dict:
        """The recorded rows, as tensors and plain containers (so that a
        checkpoint taken between the captured steps and the update resumes
        exactly)."""
        return {name: dict(steps=[s for s, _ in grads], grads=[g for _, g in grads], inputs=list(inputs))
                for name, (grads, inputs) in self._rows.items()}

    def load_state_dict(self, state: dict) -> None:
        self._rows = {name: ([(int(s), g) for s, g in zip(rows["steps"], rows["grads"])], list(rows["inputs"]))
                      for name, rows in state.items() if name in self._names.values()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._rows.clear()


def _world_size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_rows(rows):
    """Concatenate (grad_output, input) rows over the ranks (ranks without
    rows contribute none); None when no rank has any."""
    import torch.distributed as dist
    shapes = [None] * dist.get_world_size()
    mine = None if rows is None else (rows[0].shape, rows[1].shape, rows[0].dtype)
    dist.all_gather_object(shapes, mine)
    present = [s for s in shapes if s is not None]
    if not present:
        return None
    n_max = max(s[0][0] for s in present)
    out_f, in_f, dtype = present[0][0][1], present[0][1][1], present[0][2]
    device = rows[0].device if rows is not None else torch.device("cpu")
    gathered = []
    for which, width in ((0, out_f), (1, in_f)):
        padded = torch.zeros(n_max, width, dtype=dtype, device=device)
        if rows is not None:
            padded[: rows[which].shape[0]] = rows[which]
        parts = [torch.empty_like(padded) for _ in shapes]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([p[: s[0][0]] for p, s in zip(parts, shapes) if s is not None]))
    return gathered[0], gathered[1]

