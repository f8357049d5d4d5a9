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

from ..storage import CSRWeight


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
    """Hooks recording (grad_output, input) rows per weight for one step."""

    def __init__(self, model: nn.Module, weights: dict[str, CSRWeight]):
        self._names = {id(w): name for name, w in weights.items()}
        self._rows: dict[str, tuple[list, list]] = {}
        self._handles = []
        for module in model.modules():
            if isinstance(module, CSRWeight) and id(module) in self._names:
                self._handles.append(module.register_forward_hook(self._on_linear))
            register = getattr(module, "register_recurrent_hook", None)
            if callable(register):
                self._handles.append(register(self._on_recurrent))

    def _record(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        if not y.requires_grad:
            return
        x = x.detach().reshape(-1, x.shape[-1])
        grads, inputs = self._rows.setdefault(name, ([], []))

        def on_grad(grad):
            grads.append(grad.detach().reshape(-1, grad.shape[-1]))
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

    def take(self, name: str):
        """(grad_output (N, out), input (N, in)) of this step, or None."""
        grads, inputs = self._rows.get(name, ([], []))
        if not grads:
            return None
        return torch.cat(grads), torch.cat(inputs)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._rows.clear()
