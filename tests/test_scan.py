"""The parallel scan and the minGRU / minLSTM cells: the scan equals the step-by-step recurrence (values
and gradients), a_t = 0 cuts exactly, the cells compute the paper's equations, float32 stays accurate
over long windows, bf16 autocast works, and dropout sits between layers only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.model import SequenceModel
from statefulrnn.scan import SCAN_CELLS, SCAN_MODULES, MinGRU, MinLSTM, g, linear_scan

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (conftest.py)


def loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """The reference: h_t = a_t h_{t-1} + b_t, one step at a time."""
    h, out = h0, []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def coefficients(lanes: int, steps: int, hidden: int, seed: int, zeros: float, dtype=torch.float64):
    """a in [0, 1] with some exact zeros (resets), b positive (as the cells give), h0 of either sign."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(lanes, steps, hidden, generator=gen, dtype=torch.float64)
    a = a.masked_fill(torch.rand(lanes, steps, 1, generator=gen, dtype=torch.float64) < zeros, 0.0)
    b = torch.rand(lanes, steps, hidden, generator=gen, dtype=torch.float64) * 3
    h0 = torch.randn(lanes, hidden, generator=gen, dtype=torch.float64) * 2
    return a.to(dtype), b.to(dtype), h0.to(dtype)


shapes = {
    "lanes": st.integers(1, 4),
    "steps": st.integers(1, 70),
    "hidden": st.integers(1, 5),
    "seed": st.integers(0, 2**16),
    "zeros": st.sampled_from([0.0, 0.1, 0.5]),
}


@settings(max_examples=80, deadline=None)
@given(**shapes, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_scan_equals_the_step_by_step_recurrence(lanes, steps, hidden, seed, zeros, dtype):
    a, b, h0 = coefficients(lanes, steps, hidden, seed, zeros, dtype)
    got = linear_scan(a, b, h0)
    want = loop(a.double(), b.double(), h0.double())
    assert got.dtype == dtype and got.shape == (lanes, steps, hidden)
    tol = 1e-12 if dtype == torch.float64 else 2e-6 * float(want.abs().max())
    assert float((got.double() - want).abs().max()) <= tol


@settings(max_examples=60, deadline=None)
@given(**shapes)
def test_scan_gradients_equal_the_recurrence_gradients(lanes, steps, hidden, seed, zeros):
    a, b, h0 = coefficients(lanes, steps, hidden, seed, zeros)
    weights = torch.randn(lanes, steps, hidden, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    grads = []
    for fn in (linear_scan, loop):
        leaves = [t.clone().requires_grad_(True) for t in (a, b, h0)]
        (fn(*leaves) * weights).sum().backward()
        grads.append([t.grad for t in leaves])
    for got, want in zip(*grads):
        assert float((got - want).abs().max()) <= 1e-11


def test_scan_passes_gradcheck():
    a, b, h0 = coefficients(2, 13, 3, seed=5, zeros=0.2)
    assert torch.autograd.gradcheck(linear_scan, [t.requires_grad_(True) for t in (a, b, h0)])


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(2, 60), data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_a_zero_coefficient_cuts_the_past_off_exactly(steps, data, dtype):
    """From a step with a_t = 0 on, nothing before it matters: other values there leave every later h
    bit for bit the same, the result is the scan started there from zero, and no gradient of a later
    output reaches anything before it."""
    cut = data.draw(st.integers(1, steps - 1))
    a, b, h0 = coefficients(2, steps, 3, data.draw(st.integers(0, 999)), 0.0, dtype)
    a[:, cut] = 0.0
    leaves = [t.clone().requires_grad_(True) for t in (a, b, h0)]
    out = linear_scan(*leaves)
    other = [t.clone() for t in (a, b)]
    for t in other:
        t[:, :cut] = t[:, :cut].flip(1) * 0.5
    assert torch.equal(linear_scan(*other, -3 * h0)[:, cut:], out[:, cut:])
    fresh = linear_scan(a[:, cut:], b[:, cut:], torch.zeros_like(h0))
    assert torch.allclose(out[:, cut:], fresh, rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
    out[:, cut:].sum().backward()
    for leaf in leaves[:2]:
        assert not leaf.grad[:, :cut].any() and leaf.grad[:, cut:].abs().sum() > 0
    assert not leaves[2].grad.any()


def test_g_is_positive_continuous_and_as_the_paper_defines_it():
    v = torch.linspace(-30, 30, 6001, dtype=torch.float64)
    out = g(v)
    assert (out > 0).all()
    assert torch.equal(out[v >= 0], v[v >= 0] + 0.5)
    assert torch.equal(out[v < 0], torch.sigmoid(v[v < 0]))
    assert float((g(torch.tensor([-1e-12, 1e-12], dtype=torch.float64)) - 0.5).abs().max()) < 1e-11


def _reference_layer(cell: str, linear: torch.nn.Linear, x: torch.Tensor, h: torch.Tensor, resets=None):
    """The paper's equations step by step, written from the weights (no scan, no shared helpers)."""
    hid = h.shape[-1]
    w, bias = linear.weight, linear.bias
    out = []
    for t in range(x.shape[1]):
        if resets is not None:
            h = torch.where(resets[:, t, None], torch.zeros_like(h), h)
        k = x[:, t] @ w.T + bias
        v = k[:, -hid:]
        cand = torch.where(v >= 0, v + 0.5, 1 / (1 + torch.exp(-v)))
        if cell == "mingru":
            z = 1 / (1 + torch.exp(-k[:, :hid]))
            h = (1 - z) * h + z * cand
        else:
            f, i = 1 / (1 + torch.exp(-k[:, :hid])), 1 / (1 + torch.exp(-k[:, hid : 2 * hid]))
            h = f / (f + i) * h + i / (f + i) * cand
        out.append(h)
    return torch.stack(out, 1)


def _reference_stack(cell, stack, x, h0, resets=None):
    inp, finals = x, []
    for i, linear in enumerate(stack.layers):
        inp = _reference_layer(cell, linear, inp, h0[i], resets)
        finals.append(inp[:, -1])
    return inp, torch.stack(finals)


@pytest.mark.parametrize("cell", SCAN_CELLS)
@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 3), steps=st.integers(1, 25), seed=st.integers(0, 999), from_state=st.booleans())
@torch.no_grad()
def test_cells_compute_the_papers_equations_layer_after_layer(cell, layers, steps, seed, from_state):
    torch.manual_seed(seed)
    stack = SCAN_MODULES[cell](3, 4, layers).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, steps, 3, generator=gen, dtype=torch.float64) * 2
    h0 = torch.randn(layers, 2, 4, generator=gen, dtype=torch.float64) if from_state else None
    out, h_n = stack(x, h0)
    ref, ref_n = _reference_stack(cell, stack, x, torch.zeros(layers, 2, 4, dtype=torch.float64) if h0 is None else h0)
    assert float((out - ref).abs().max()) <= 1e-12 and float((h_n - ref_n).abs().max()) <= 1e-12


@pytest.mark.parametrize("cell", SCAN_CELLS)
@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 2), steps=st.integers(1, 20), seed=st.integers(0, 999), data=st.data())
def test_hand_written_backward_equals_autograd_through_the_equations(cell, layers, steps, seed, data):
    """Gradients for the weights, the inputs and h0, with resets anywhere, match autograd run through
    the step-by-step reference."""
    torch.manual_seed(seed)
    stack = SCAN_MODULES[cell](3, 4, layers).double()
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, steps, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    h0 = torch.randn(layers, 2, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    resets = torch.rand(2, steps, generator=gen) < data.draw(st.sampled_from([0.0, 0.2, 0.5]))
    weights = torch.randn(2, steps, 4, generator=gen, dtype=torch.float64)
    leaves = [x, h0, *stack.parameters()]
    grads = []
    for run in (stack, lambda *args: _reference_stack(cell, stack, *args)):
        out, h_n = run(x, h0, resets)
        loss = (out * weights).sum() + h_n.square().sum()
        grads.append(torch.autograd.grad(loss, leaves))
    for got, want in zip(*grads):
        assert float((got - want).abs().max()) <= 1e-10


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_parameters_per_layer(cell):
    stack = SCAN_MODULES[cell](5, 7, 2)
    blocks = {"mingru": 2, "minlstm": 3}[cell]
    assert sum(p.numel() for p in stack.parameters()) == blocks * 7 * (5 + 1) + blocks * 7 * (7 + 1)
    assert (stack.input_size, stack.hidden_size, stack.num_layers) == (5, 7, 2)


@pytest.mark.parametrize("spread", [1.0, 10.0])
def test_float32_scan_stays_accurate_over_long_windows_with_saturated_gates(spread):
    """4,000 steps with gates from sigmoid(N(0, spread)) (many a ~ 0 or ~ 1): float32 within 2e-6 of
    float64 relative to the largest h (the log-space form, cumsum + logcumsumexp, was 1.5e-4 and 7.6e-4 off)."""
    gen = torch.Generator().manual_seed(3)
    k = torch.randn(3, 4000, 8, generator=gen, dtype=torch.float64) * spread
    v = torch.randn(3, 4000, 8, generator=gen, dtype=torch.float64) * spread
    a, b, h0 = torch.sigmoid(-k), torch.sigmoid(k) * g(v), torch.randn(3, 8, generator=gen, dtype=torch.float64)
    want = loop(a, b, h0)
    got = linear_scan(a.float(), b.float(), h0.float())
    assert torch.isfinite(got).all()
    assert float((got.double() - want).abs().max()) <= 2e-6 * float(want.abs().max())


@pytest.mark.parametrize("cell", SCAN_CELLS)
@torch.no_grad()
def test_float32_cells_stay_close_to_float64_over_a_long_window(cell):
    torch.manual_seed(0)
    stack = SCAN_MODULES[cell](4, 6, 2)
    with torch.no_grad():
        for layer in stack.layers:
            layer.weight.mul_(10.0)  # saturated gates
    x = torch.randn(2, 3000, 4, generator=torch.Generator().manual_seed(1))
    out32, h32 = stack(x)
    out64, h64 = stack.double()(x.double())
    assert torch.isfinite(out32).all()
    scale = max(1.0, float(out64.abs().max()))
    assert float((out32.double() - out64).abs().max()) <= 1e-5 * scale
    assert float((h32.double() - h64).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_bf16_autocast_runs_the_matmuls_in_bf16_and_the_scan_in_float32(cell):
    torch.manual_seed(0)
    model = SequenceModel(cell, vocab_size=11, hidden_size=16, num_layers=2, embedding_dim=8)
    x = torch.randint(0, 11, (3, 600), generator=torch.Generator().manual_seed(2))
    ref, ref_state = model(x)
    with torch.autocast("cpu", torch.bfloat16):
        out, state = model(x)
        out.float().square().mean().backward()
    ref, ref_state, out, state = ref.detach(), ref_state.detach(), out.detach(), state.detach()
    assert out.dtype == state.h.dtype == torch.bfloat16  # as the fused cells give under autocast
    assert torch.isfinite(out.float()).all()
    # bf16 rounds the matmuls (~3 significant digits); the 600-step scan adds no drift on top
    assert float((out.float() - ref).abs().max()) <= 0.05
    assert float((state.h.float() - ref_state.h).abs().max()) <= 0.05
    grads = [p.grad for p in model.rnn.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)
    # the state carried between bf16 windows continues the same sequence
    with torch.autocast("cpu", torch.bfloat16), torch.no_grad():
        first, carried = model(x[:, :300])
        second, _ = model(x[:, 300:], carried)
    assert float((second.float() - ref[:, 300:]).abs().max()) <= 0.05


@pytest.mark.parametrize("stack_type", [MinGRU, MinLSTM])
def test_dropout_applies_between_layers_only(stack_type):
    """As in torch's nn.LSTM: layer 2 sees layer 1's outputs with dropout; layer 1 sees its input as is."""
    torch.manual_seed(0)
    stack = stack_type(3, 64, 2, dropout=0.5)
    x = torch.randn(4, 10, 3)
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append(args[0])) for layer in stack.layers]
    try:
        stack.eval()(x)
        stack.train()(x)
    finally:
        for h in hooks:
            h.remove()
    eval_in1, eval_in2, train_in1, train_in2 = seen
    assert torch.equal(eval_in1, x) and torch.equal(train_in1, x)
    dropped = train_in2 == 0
    assert 0.35 < dropped.float().mean() < 0.65
    torch.testing.assert_close(train_in2[~dropped], 2 * eval_in2[~dropped])
    one_layer = stack_type(3, 8, 1, dropout=0.5).train()
    torch.manual_seed(1)
    assert torch.equal(one_layer(x)[0], one_layer.eval()(x)[0])


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_empty_windows_and_no_lanes(cell):
    stack = SCAN_MODULES[cell](3, 4, 2)
    h0 = torch.randn(2, 5, 4)
    out, h_n = stack(torch.zeros(5, 0, 3), h0)
    assert out.shape == (5, 0, 4) and h_n is h0
    out, h_n = stack(torch.zeros(0, 9, 3), torch.zeros(2, 0, 4))  # no lanes at all
    assert out.shape == (0, 9, 4) and h_n.shape == (2, 0, 4)
