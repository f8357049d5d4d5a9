"""Whole-sequence recurrent layer ops (LSTM, GRU, Elman RNN, RHN): the time
loop and BPTT in C++; checks, fake kernels and autograd."""

from __future__ import annotations

import torch

from ..csr import CSCIndex, csr_transpose
from ._checks import (_check_batch_sizes, _check_float, _check_index_like, _check_recurrent_weight,
                      _check_sliced_view,
                      _check_same, _csc_args, _ops)


# --------------------------------------------------------------------------
# Whole-sequence LSTM layer

def lstm_layer(input_gates: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, hh_values: torch.Tensor,
               hh_row_ptr: torch.Tensor, hh_col_idx: torch.Tensor, hh_csc: CSCIndex,
               batch_sizes: torch.Tensor | None = None, reverse: bool = False, projection=None, *,
               validate: bool = True, hh_plan: tuple[torch.Tensor, int] | None = None,
               hh_sliced: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               save_activations: bool | None = None):
    """One LSTM layer over a whole sequence, the time loop in C++.

    input_gates (T, B, 4H): the input projection x W_ih^T + b_ih + b_hh of
    every step, computed beforehand as one sparse product. c0 (B, H); h0 (B, P)
    with P = proj_size or H. W_hh is CSR (4H x P) with its transposed index
    ``hh_csc``. ``projection`` = (values, row_ptr, col_idx, csc) of W_hr
    (P x H) for proj_size > 0, else None. batch_sizes (T,) int64
    (PackedSequence's; None = all B) marks which rows are active at each step.
    Returns (output (T, B, P), h_n, c_n); differentiable in input_gates, h0,
    c0, hh_values and the projection's values. ``validate`` checks the CSR
    structures and transposed indices in full (O(nnz log nnz)); the modules
    pass False, their CSRWeights having been validated once. ``hh_plan``:
    ``CSRWeight.persistent_lstm_plan()`` of W_hh (the persistent CUDA
    forward's split, made once per topology), so that the CUDA forward copies
    nothing to the host; None plans on each call (one copy of row_ptr).
    ``hh_sliced``: ``CSRWeight.sliced_view(hidden)`` of W_hh (padding column hidden),
    (values, cols, slice_ptr) of its sliced layout (SELL-8, or the blocked form
    on CPUs with AVX-512) holding these very hh_values, which the CPU's float32
    batch-1 step reads instead of the CSR (8 or 16 rows' sums in one
    register); for CPU float32 inputs without a
    projection only. The forward's result is the same up to the order of
    the additions; the backward reads the CSR.
    ``save_activations``: whether the op keeps the gates and cells the
    backward reads (T x B x 5H floats). None (the default) keeps them when
    autograd may need them: grad mode on and an input that requires grad.
    False under grad computes the same result but cannot be differentiated
    (the op raises when autograd would record it).
    """
    _check_float("input_gates", input_gates)
    for name, t in (("h0", h0), ("c0", c0)):
        _check_float(name, t)
        _check_same(name, t, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2 or c0.dim() != 2:
        raise ValueError(f"input_gates must be (T, B, 4H) and h0, c0 (B, *), got {tuple(input_gates.shape)}, "
                         f"{tuple(h0.shape)} and {tuple(c0.shape)}")
    steps, batch, width = input_gates.shape
    hidden = width // 4
    if width != 4 * hidden or c0.shape != (batch, hidden):
        raise ValueError(f"expected input_gates (T, B, 4*hidden) and c0 (B, hidden), got "
                         f"{tuple(input_gates.shape)} and {tuple(c0.shape)}")
    state = hidden
    hr_args = ()
    if projection is not None:
        if not isinstance(projection, (tuple, list)) or len(projection) != 4:
            raise TypeError("projection must be (values, row_ptr, col_idx, csc) of W_hr, or None")
        hr_values, hr_row_ptr, hr_col_idx, hr_csc = projection
        _check_index_like("projection row_ptr", hr_row_ptr, input_gates, "input_gates")
        if hr_row_ptr.numel() < 1:
            raise ValueError("projection row_ptr must have proj_size + 1 entries, got an empty tensor")
        state = hr_row_ptr.numel() - 1
        hr_csc = _check_recurrent_weight(lambda f: f"projection {f}", hr_values, hr_row_ptr, hr_col_idx,
                                         hr_csc, input_gates, (state, hidden), validate)
        hr_args = (hr_values, hr_row_ptr, hr_col_idx, *_csc_args(hr_csc))
    if h0.shape != (batch, state):
        what = "proj_size (the rows of W_hr)" if projection is not None else "hidden"
        raise ValueError(f"expected h0 of shape (B, {what}) = ({batch}, {state}) for input_gates of shape "
                         f"{tuple(input_gates.shape)}, got {tuple(h0.shape)}")
    hh_csc = _check_recurrent_weight(lambda f: f"hh_{f}", hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                                     input_gates, (4 * hidden, state), validate)
    batch_sizes = _check_batch_sizes(batch_sizes, steps, batch)
    plan_args = _check_lstm_plan(hh_plan, input_gates)
    if hh_sliced is not None and projection is not None:
        raise ValueError("hh_sliced is read by the LSTM without a projection only (proj_size = 0)")
    sliced_args = dict(zip(("hh_sliced_values", "hh_sliced_cols", "hh_slice_ptr"),
                           _check_sliced_view("hh_sliced", hh_sliced, hh_values, 4, hidden)))
    if save_activations is None:
        differentiable = (input_gates, h0, c0, hh_values) + ((hr_args[0],) if hr_args else ())
        save_activations = torch.is_grad_enabled() and any(t.requires_grad for t in differentiable)
    elif not isinstance(save_activations, bool):
        raise TypeError(f"save_activations must be a bool or None, got {type(save_activations).__name__}")
    output, h_n, c_n, *_ = _ops.lstm_layer(input_gates, h0, c0, hh_values, hh_row_ptr, hh_col_idx,
                                           *_csc_args(hh_csc),
                                           batch_sizes, bool(reverse), *(hr_args or (None,) * 6), *plan_args,
                                           **sliced_args, save_activations=save_activations)
    return output, h_n, c_n


def _check_lstm_plan(hh_plan, input_gates) -> tuple:
    """(hh_plan, hh_plan_smem) for the op from ``hh_plan`` = (unit_start, smem bytes) or None."""
    if hh_plan is None:
        return ()
    if not (isinstance(hh_plan, (tuple, list)) and len(hh_plan) == 2 and isinstance(hh_plan[0], torch.Tensor)
            and isinstance(hh_plan[1], int)):
        raise TypeError("hh_plan must be (unit_start tensor, shared memory bytes) from "
                        f"CSRWeight.persistent_lstm_plan(), or None; got {type(hh_plan).__name__}")
    unit_start, smem = hh_plan
    if unit_start.dtype != torch.int32 or unit_start.dim() != 1 or unit_start.numel() < 2 or smem <= 0:
        raise ValueError(f"hh_plan must hold a 1-D int32 unit_start of at least 2 entries and a positive byte "
                         f"count, got {unit_start.dtype} of shape {tuple(unit_start.shape)} and {smem}")
    if unit_start.device != input_gates.device:
        raise ValueError(f"hh_plan's unit_start must be on input_gates' device {input_gates.device}, "
                         f"got {unit_start.device}")
    return unit_start, smem


@torch.library.register_fake("sparse_kernels::lstm_layer")
def _(input_gates, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse,
      hr_values=None, hr_row_ptr=None, hr_col_idx=None, hr_col_ptr=None, hr_row_idx=None, hr_csr2csc=None,
      hh_plan=None, hh_plan_smem=0, hh_sliced_values=None, hh_sliced_cols=None, hh_slice_ptr=None,
      save_activations=True):
    steps, batch, _ = input_gates.shape
    hidden, state = c0.shape[1], h0.shape[1]
    output = input_gates.new_empty((steps, batch, state))
    if not save_activations:  # three tensors: an op's outputs never alias each other
        return (output, torch.empty_like(h0), torch.empty_like(c0),
                *(input_gates.new_empty((0,)) for _ in range(3)))
    hidden_full = (input_gates.new_empty((steps, batch, hidden)) if hr_values is not None
                   else input_gates.new_empty((0,)))
    return (output, torch.empty_like(h0), torch.empty_like(c0),
            torch.empty_like(input_gates), input_gates.new_empty((steps, batch, hidden)), hidden_full)


@torch.library.register_fake("sparse_kernels::lstm_layer_backward")
def _(grad_output, grad_h_n, grad_c_n, gates, output, cells, hidden_full, h0, c0, values, row_ptr, col_idx,
      col_ptr, row_idx, csr2csc, batch_sizes, reverse, hr_values=None, hr_row_ptr=None, hr_col_idx=None,
      hr_col_ptr=None, hr_row_idx=None, hr_csr2csc=None):
    grad_hr = torch.empty_like(hr_values) if hr_values is not None else values.new_empty((0,))
    return (torch.empty_like(gates), torch.empty_like(h0), torch.empty_like(c0), torch.empty_like(values),
            grad_hr)


# save_activations' position in lstm_layer's schema (setup_context's inputs hold every argument, defaults filled).
SAVE_ACTIVATIONS_ARG = 22


def _lstm_layer_setup_context(ctx, inputs, output):
    (_, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, *hr) = inputs
    if not inputs[SAVE_ACTIVATIONS_ARG]:
        raise RuntimeError("sparse_kernels::lstm_layer: called with save_activations=False on inputs that require "
                           "grad under grad mode; such a call keeps no activations and cannot be differentiated "
                           "(pass save_activations=True, or run it under torch.no_grad())")
    hr = hr[:6]  # then the forward's plan, sliced view and save_activations, which the backward does not read
    out, _, _, gates, cells, hidden_full = output
    ctx.mark_non_differentiable(gates, cells, hidden_full)  # saved activations, not results
    ctx.projected = len(hr) > 0 and hr[0] is not None
    hr = tuple(hr) if ctx.projected else ()
    ctx.save_for_backward(gates, out, cells, hidden_full, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx,
                          csr2csc, batch_sizes, *hr)
    ctx.reverse = reverse


def _lstm_layer_backward(ctx, grad_output, grad_h_n, grad_c_n, *_saved_grads):
    gates, out, cells, hidden_full, h0, c0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, \
        batch_sizes, *hr = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
    grad_gates, grad_h0, grad_c0, grad_values, grad_hr = _ops.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, gates, out, cells, hidden_full, h0, c0, values, row_ptr, col_idx,
        col_ptr, row_idx, csr2csc, batch_sizes, ctx.reverse, *hr)
    grad_hr = grad_hr if ctx.projected else None
    return (grad_gates, grad_h0, grad_c0, grad_values, None, None, None, None, None, None, None,
            grad_hr, None, None, None, None, None, None, None, None, None, None, None)


torch.library.register_autograd(
    "sparse_kernels::lstm_layer", _lstm_layer_backward, setup_context=_lstm_layer_setup_context)


# --------------------------------------------------------------------------
# Whole-sequence GRU and Elman RNN layers (same machinery as lstm_layer)

def _check_layer_common(name: str, input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                        batch_sizes, gate_count: int, validate: bool):
    # The GRU and Elman cell kernels are float32/float64 only, on CUDA too
    # (SK_DISPATCH_CUDA_F32_F64 in csrc/cuda/ops_cuda.cpp); the other
    # tensors must match input_gates' dtype.
    _check_float("input_gates", input_gates, no_half=name)
    _check_float("h0", h0, no_half=name)
    _check_same("h0", h0, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2:
        raise ValueError(f"{name}: input_gates must be (T, B, {gate_count}H) and h0 (B, H), got "
                         f"{tuple(input_gates.shape)} and {tuple(h0.shape)}")
    steps, batch, width = input_gates.shape
    hidden = h0.shape[1]
    if width != gate_count * hidden or h0.shape[0] != batch:
        raise ValueError(f"{name}: expected input_gates (T, {batch}, {gate_count * hidden}) and h0 "
                         f"({batch}, {hidden}), got {tuple(input_gates.shape)} and {tuple(h0.shape)}")
    hh_csc = _check_recurrent_weight(lambda f: f"hh_{f}", hh_values, hh_row_ptr, hh_col_idx, hh_csc,
                                     input_gates, (gate_count * hidden, hidden), validate)
    return _check_batch_sizes(batch_sizes, steps, batch), hh_csc


def gru_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_csc: CSCIndex, hh_bias=None,
              batch_sizes=None, reverse: bool = False, *, validate: bool = True):
    """One GRU layer over a whole sequence, the time loop in C++ (see lstm_layer).
    input_gates (T, B, 3H) = x W_ih^T + b_ih; W_hh CSR (3H x H) with optional
    dense b_hh. Returns (output (T, B, H), h_n (B, H))."""
    batch_sizes, hh_csc = _check_layer_common("gru_layer", input_gates, h0, hh_values, hh_row_ptr, hh_col_idx,
                                              hh_csc, batch_sizes, 3, validate)
    if hh_bias is not None:
        _check_float("hh_bias", hh_bias)
        _check_same("hh_bias", hh_bias, "input_gates", input_gates)
        if hh_bias.shape != (input_gates.shape[2],):
            raise ValueError(f"hh_bias must have shape ({input_gates.shape[2]},), got {tuple(hh_bias.shape)}")
    output, h_n, _ = _ops.gru_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, *_csc_args(hh_csc),
                                    hh_bias,
                                    batch_sizes, bool(reverse))
    return output, h_n


def rnn_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, hh_csc: CSCIndex, batch_sizes=None,
              reverse: bool = False, nonlinearity: str = "tanh", *, validate: bool = True):
    """One Elman RNN layer (tanh or relu) over a whole sequence, the time loop
    in C++. input_gates (T, B, H) = x W_ih^T + b_ih + b_hh. Returns (output, h_n)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    batch_sizes, hh_csc = _check_layer_common("rnn_layer", input_gates, h0, hh_values, hh_row_ptr, hh_col_idx,
                                              hh_csc, batch_sizes, 1, validate)
    return _ops.rnn_layer(input_gates, h0, hh_values, hh_row_ptr, hh_col_idx, *_csc_args(hh_csc), batch_sizes,
                          bool(reverse), nonlinearity == "relu")


@torch.library.register_fake("sparse_kernels::gru_layer")
def _(input_gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, hh_bias, batch_sizes, reverse):
    steps, batch, _ = input_gates.shape
    return (input_gates.new_empty((steps, batch, h0.shape[1])), torch.empty_like(h0),
            torch.empty_like(input_gates))


@torch.library.register_fake("sparse_kernels::gru_layer_backward")
def _(grad_output, grad_h_n, input_gates, hidden_gates, output, h0, values, row_ptr, col_idx, col_ptr,
      row_idx, csr2csc, batch_sizes, reverse):
    return (torch.empty_like(input_gates), torch.empty_like(hidden_gates), torch.empty_like(h0),
            torch.empty_like(values))


def _gru_layer_setup_context(ctx, inputs, output):
    input_gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, hh_bias, batch_sizes, reverse = inputs
    out, _, hidden_gates = output
    ctx.mark_non_differentiable(hidden_gates)
    ctx.save_for_backward(input_gates, hidden_gates, out, h0, values, row_ptr, col_idx, col_ptr, row_idx,
                          csr2csc, batch_sizes)
    ctx.reverse, ctx.has_bias = reverse, hh_bias is not None


def _gru_layer_backward(ctx, grad_output, grad_h_n, _grad_hidden_gates):
    (input_gates, hidden_gates, out, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc,
     batch_sizes) = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_ig, grad_hg, grad_h0, grad_values = _ops.gru_layer_backward(
        grad_output, grad_h_n, input_gates, hidden_gates, out, h0, values, row_ptr, col_idx, col_ptr,
        row_idx, csr2csc, batch_sizes, ctx.reverse)
    grad_bias = grad_hg.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[8] else None
    return grad_ig, grad_h0, grad_values, None, None, None, None, None, grad_bias, None, None


torch.library.register_autograd("sparse_kernels::gru_layer", _gru_layer_backward,
                                setup_context=_gru_layer_setup_context)


@torch.library.register_fake("sparse_kernels::rnn_layer")
def _(input_gates, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, relu):
    return torch.empty_like(input_gates), torch.empty_like(h0)


@torch.library.register_fake("sparse_kernels::rnn_layer_backward")
def _(grad_output, grad_h_n, output, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc,
      batch_sizes, reverse, relu):
    return torch.empty_like(output), torch.empty_like(h0), torch.empty_like(values)


def _rnn_layer_setup_context(ctx, inputs, output):
    _, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes, reverse, relu = inputs
    ctx.save_for_backward(output[0], h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes)
    ctx.reverse, ctx.relu = reverse, relu


def _rnn_layer_backward(ctx, grad_output, grad_h_n):
    out, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes = ctx.saved_tensors
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_ig, grad_h0, grad_values = _ops.rnn_layer_backward(
        grad_output, grad_h_n, out, h0, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, batch_sizes,
        ctx.reverse, ctx.relu)
    return grad_ig, grad_h0, grad_values, None, None, None, None, None, None, None, None


torch.library.register_autograd("sparse_kernels::rnn_layer", _rnn_layer_backward,
                                setup_context=_rnn_layer_setup_context)


# --------------------------------------------------------------------------
# Whole-sequence recurrent highway network (RHN) layer

def rhn_layer(input_gates: torch.Tensor, h0: torch.Tensor, r_values, r_row_ptr, r_col_idx, r_csc,
              biases: torch.Tensor, batch_sizes: torch.Tensor | None = None, reverse: bool = False, *,
              validate: bool = True):
    """One recurrent highway network layer (Zilly et al. 2017, coupled carry
    gate) over a whole sequence, the time and depth loops in C++.

    input_gates (T, B, 2H): x W^T of every step, computed beforehand as one
    sparse product; it enters the first micro-layer. h0 (B, H). r_values,
    r_row_ptr, r_col_idx, r_csc: one entry per micro-layer l = 0..L-1, the CSR
    matrix R_l (2H x H) and its transposed index. biases (L, 2H). Per step,
    s_0 = h_{t-1}; pre_l = [input_gates[t] if l == 0] + R_l s_l + b_l, split
    [a | g]; s_{l+1} = tanh(a) * sigmoid(g) + s_l * (1 - sigmoid(g)); h_t = s_L.
    batch_sizes (T,) int64 (PackedSequence's; None = all B) marks the active
    rows of each step. Returns (output (T, B, H), h_n); differentiable in
    input_gates, h0, every r_values[l] and biases. ``validate`` checks the
    CSR structures and transposed indices in full (the modules pass False).
    """
    # The RHN cell kernels are float32/float64 only (rhn_layer_cuda.cpp).
    _check_float("input_gates", input_gates, no_half="rhn_layer")
    for name, t in (("h0", h0), ("biases", biases)):
        _check_float(name, t, no_half="rhn_layer")
        _check_same(name, t, "input_gates", input_gates)
    if input_gates.dim() != 3 or h0.dim() != 2:
        raise ValueError("input_gates must be (T, B, 2H) and h0 (B, H)")
    steps, batch, width = input_gates.shape
    hidden = h0.shape[1]
    if width != 2 * hidden or h0.shape[0] != batch:
        raise ValueError(f"expected input_gates (T, {h0.shape[0]}, {2 * hidden}) for h0 of shape "
                         f"{tuple(h0.shape)}, got {tuple(input_gates.shape)}")
    lists = dict(r_values=r_values, r_row_ptr=r_row_ptr, r_col_idx=r_col_idx, r_csc=r_csc)
    for name, seq in lists.items():
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{name} must be a list with one entry per micro-layer, got {type(seq).__name__}")
    depth = len(r_values)
    if depth == 0:
        raise ValueError("r_values must hold at least one micro-layer")
    if any(len(seq) != depth for seq in lists.values()):
        raise ValueError(f"r_values, r_row_ptr, r_col_idx and r_csc must have equal lengths, got "
                         f"{[len(seq) for seq in lists.values()]}")
    r_csc = list(r_csc)
    for l, (values, row_ptr, col_idx, csc) in enumerate(zip(r_values, r_row_ptr, r_col_idx, r_csc)):
        r_csc[l] = _check_recurrent_weight(lambda f, l=l: f"r_{f}[{l}]", values, row_ptr, col_idx, csc,
                                           input_gates, (2 * hidden, hidden), validate)
    if biases.shape != (depth, 2 * hidden):
        raise ValueError(f"biases must have shape (depth, 2*hidden) = ({depth}, {2 * hidden}), "
                         f"got {tuple(biases.shape)}")
    batch_sizes = _check_batch_sizes(batch_sizes, steps, batch)
    # The transposed indices go whole or not at all (CPU, none given: empty lists).
    if all(csc is None for csc in r_csc):
        col_ptr, row_idx, csr2csc = [], [], []
    else:
        r_csc = [csr_transpose(row_ptr, col_idx, hidden) if csc is None else csc
                 for row_ptr, col_idx, csc in zip(r_row_ptr, r_col_idx, r_csc)]
        col_ptr, row_idx, csr2csc = (list(part) for part in zip(*r_csc))
    output, h_n, _, _ = _ops.rhn_layer(input_gates, h0, list(r_values), list(r_row_ptr), list(r_col_idx),
                                       col_ptr, row_idx, csr2csc, biases, batch_sizes, bool(reverse))
    return output, h_n


@torch.library.register_fake("sparse_kernels::rhn_layer")
def _(input_gates, h0, r_values, r_row_ptr, r_col_idx, r_col_ptr, r_row_idx, r_csr2csc, biases,
      batch_sizes, reverse):
    steps, batch, width = input_gates.shape
    depth = len(r_values)
    return (input_gates.new_empty((steps, batch, width // 2)), torch.empty_like(h0),
            input_gates.new_empty((depth, steps, batch, width)),
            input_gates.new_empty((depth, steps, batch, width // 2)))


@torch.library.register_fake("sparse_kernels::rhn_layer_backward")
def _(grad_output, grad_h_n, pre, states, r_values, r_row_ptr, r_col_idx, r_col_ptr, r_row_idx,
      r_csr2csc, batch_sizes, reverse):
    depth, steps, batch, width = pre.shape
    return (pre.new_empty((steps, batch, width)), torch.empty_like(grad_h_n),
            [torch.empty_like(v) for v in r_values], pre.new_empty((depth, width)))


def _rhn_layer_setup_context(ctx, inputs, output):
    (_, _, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc, _, batch_sizes, reverse) = inputs
    out, _, pre, states = output
    ctx.mark_non_differentiable(pre, states)  # saved activations, not results
    ctx.depth = len(values)
    ctx.has_csc = len(col_ptr) > 0
    ctx.save_for_backward(pre, states, out, batch_sizes, *values, *row_ptr, *col_idx, *col_ptr, *row_idx,
                          *csr2csc)
    ctx.reverse = reverse


def _rhn_layer_backward(ctx, grad_output, grad_h_n, _grad_pre, _grad_states):
    pre, states, out, batch_sizes, *index = ctx.saved_tensors
    depth = ctx.depth
    values, row_ptr, col_idx, col_ptr, row_idx, csr2csc = (
        index[k * depth:(k + 1) * depth] if k < 3 or ctx.has_csc else [] for k in range(6))
    grad_output = torch.zeros_like(out) if grad_output is None else grad_output
    grad_h_n = states.new_zeros(states.shape[2:]) if grad_h_n is None else grad_h_n
    grad_input_gates, grad_h0, grad_values, grad_biases = _ops.rhn_layer_backward(
        grad_output, grad_h_n, pre, states, values, row_ptr, col_idx, col_ptr, row_idx, csr2csc,
        batch_sizes, ctx.reverse)
    no_grad = [None] * depth  # the index lists: one None per micro-layer
    no_csc_grad = no_grad if ctx.has_csc else []
    return (grad_input_gates, grad_h0, grad_values, no_grad, no_grad, no_csc_grad, no_csc_grad, no_csc_grad,
            grad_biases, None, None)


torch.library.register_autograd(
    "sparse_kernels::rhn_layer", _rhn_layer_backward, setup_context=_rhn_layer_setup_context)
