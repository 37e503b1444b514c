"""SequenceModel: exact state carry across windows, resets, the fused fast path, truncated BPTT.

Every cell in CELLS runs every property here, the parallel-scan cells (minGRU, minLSTM) included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from statefulrnn.layout import PackLayout, StatelessLayout
from statefulrnn.model import SequenceModel
from statefulrnn.scan import SCAN_CELLS
from statefulrnn.state import CELLS, State

VOCAB = 6
FEATURES = 2
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
SETTINGS = settings(max_examples=50, deadline=None)
FUSED = tuple(c for c in CELLS if c not in SCAN_CELLS)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def _model(cell: str, tokens: bool, dtype=torch.float32, hidden: int = 4, layers: int = 2, seed: int = 0, **kw):
    torch.manual_seed(seed)
    if tokens:
        m = SequenceModel(cell, vocab_size=VOCAB, embedding_dim=3, hidden_size=hidden, num_layers=layers, **kw)
    else:
        m = SequenceModel(cell, n_features=FEATURES, hidden_size=hidden, num_layers=layers, **kw)
    m.eval()
    return m.double() if dtype == torch.float64 else m


def _inputs(tokens: bool, lanes: int, steps: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if tokens:
        return torch.randint(0, VOCAB, (lanes, steps), generator=g)
    return torch.randn(lanes, steps, FEATURES, generator=g, dtype=torch.float64).to(dtype)


def _random_state(model: SequenceModel, lanes: int, seed: int = 1) -> State:
    g = torch.Generator().manual_seed(seed)
    z = model.initial_state(lanes)
    return z._map(lambda t: torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return 0.0 if a.numel() == 0 else float((a - b).detach().abs().max())


def _state_diff(a: State, b: State) -> float:
    d = _maxdiff(a.h, b.h)
    if a.c is not None or b.c is not None:
        d = max(d, _maxdiff(a.c, b.c))
    return d


def _windowed(model, x, window, state=None, resets=None):
    """Run `x` window by window, carrying the state; returns all outputs and the final state."""
    outs = []
    for a in range(0, x.shape[1], window):
        r = None if resets is None else resets[:, a : a + window]
        out, state = model(x[:, a : a + window], state, r)
        outs.append(out)
    return torch.cat(outs, dim=1), state


cases = st.fixed_dictionaries(
    {
        "tokens": st.booleans(),
        "dtype": st.sampled_from([torch.float32, torch.float64]),
        "hidden": st.integers(1, 6),
        "layers": st.integers(1, 3),
        "lanes": st.integers(1, 4),
        "steps": st.integers(1, 40),
        "window": st.integers(1, 45),
        "dropout": st.sampled_from([0.0, 0.3]),
        "start_from_state": st.booleans(),
        "seed": st.integers(0, 1000),
    }
)


# --- exactness of the state carry ------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@settings(max_examples=150, deadline=None)
@given(case=cases)
def test_windowed_with_carried_state_equals_one_call(cell, case):
    dtype = case["dtype"]
    model = _model(cell, case["tokens"], dtype, case["hidden"], case["layers"], case["seed"], dropout=case["dropout"])
    x = _inputs(case["tokens"], case["lanes"], case["steps"], dtype, case["seed"])
    state = _random_state(model, case["lanes"], case["seed"]) if case["start_from_state"] else None
    full, full_state = model(x, state)
    assert full.shape == (case["lanes"], case["steps"], model.n_outputs) and full.dtype == dtype
    got, got_state = _windowed(model, x, case["window"], state)
    assert _maxdiff(got, full) <= TOL[dtype]
    assert _state_diff(got_state, full_state) <= TOL[dtype]
    assert got_state.dtype == dtype and got_state.lanes == case["lanes"]


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(
    tokens=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    steps=st.integers(2, 30),
    data=st.data(),
)
def test_windows_of_varying_length_equal_one_call(cell, tokens, dtype, steps, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, steps - 1), max_size=6)))
    model = _model(cell, tokens, dtype, hidden=3)
    x = _inputs(tokens, 3, steps, dtype)
    full, full_state = model(x)
    state, outs = None, []
    for a, b in zip([0, *cuts], [*cuts, steps]):
        out, state = model(x[:, a:b], state)
        outs.append(out)
    assert _maxdiff(torch.cat(outs, dim=1), full) <= TOL[dtype]
    assert _state_diff(state, full_state) <= TOL[dtype]


@pytest.mark.parametrize("cell", CELLS)
def test_lanes_are_independent_streams(cell):
    """One batch of lanes gives what each lane gives alone, with its own state (select/concat)."""
    model = _model(cell, tokens=False, dtype=torch.float64)
    x = _inputs(False, 4, 9, torch.float64)
    state = _random_state(model, 4)
    out, new = model(x, state)
    singles = [model(x[i : i + 1], state.select([i])) for i in range(4)]
    assert _maxdiff(torch.cat([o for o, _ in singles]), out) <= 1e-12
    assert _state_diff(State.concat([s for _, s in singles]), new) <= 1e-12
    # reversed lane order
    rev, rev_state = model(x.flip(0), state.select([3, 2, 1, 0]))
    assert _maxdiff(rev.flip(0), out) <= 1e-12
    assert _state_diff(rev_state.select([3, 2, 1, 0]), new) <= 1e-12


# --- resets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(
    tokens=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    len_a=st.integers(1, 15),
    len_b=st.integers(1, 15),
    window=st.integers(1, 12),
    other_lanes=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
@example(tokens=False, dtype=torch.float32, len_a=5, len_b=7, window=4, other_lanes=1, seed=0)  # b mid-window
@example(tokens=True, dtype=torch.float64, len_a=3, len_b=9, window=5, other_lanes=2, seed=1)  # b mid-window
def test_reset_makes_the_next_sequence_start_fresh(cell, tokens, dtype, len_a, len_b, window, other_lanes, seed):
    model = _model(cell, tokens, dtype, hidden=3, seed=seed)
    lanes, steps = 1 + other_lanes, len_a + len_b
    x = _inputs(tokens, lanes, steps, dtype, seed)
    resets = torch.zeros(lanes, steps, dtype=torch.bool)
    resets[0, len_a] = True  # lane 0 holds a = x[0, :len_a], then b = x[0, len_a:]
    state = _random_state(model, lanes, seed)  # lane 0's `a` continues some earlier context
    out, _ = _windowed(model, x, window, state, resets)
    tol = TOL[dtype]
    b_alone, _ = model(x[:1, len_a:])
    assert _maxdiff(out[:1, len_a:], b_alone) <= tol
    a_alone, _ = model(x[:1, :len_a], state.select([0]))
    assert _maxdiff(out[:1, :len_a], a_alone) <= tol
    if other_lanes:
        # lanes without resets are unaffected by lane 0's reset
        undisturbed, _ = model(x[1:], state.select(list(range(1, lanes))))
        assert _maxdiff(out[1:], undisturbed) <= tol


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(
    tokens=st.booleans(),
    lengths=st.lists(st.lists(st.integers(1, 8), min_size=1, max_size=4), min_size=1, max_size=3),
    window=st.integers(1, 10),
)
def test_every_sequence_in_packed_lanes_equals_it_alone(cell, tokens, lengths, window):
    """Lanes hold several sequences back to back, each with a reset; lanes end in padding."""
    dtype = torch.float64
    model = _model(cell, tokens, dtype, hidden=3)
    steps = max(sum(lane) for lane in lengths)
    x = _inputs(tokens, len(lengths), steps, dtype, seed=len(lengths) * 100 + steps)
    resets = torch.zeros(len(lengths), steps, dtype=torch.bool)
    spans = []
    for lane, lane_lengths in enumerate(lengths):
        at = 0
        for n in lane_lengths:
            resets[lane, at] = True
            spans.append((lane, at, n))
            at += n
    out, _ = _windowed(model, x, window, _random_state(model, len(lengths)), resets)
    for lane, at, n in spans:
        alone, _ = model(x[lane : lane + 1, at : at + n])
        assert _maxdiff(out[lane : lane + 1, at : at + n], alone) <= TOL[dtype]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tokens", [True, False])
def test_resets_none_and_all_false_are_identical(cell, tokens):
    model = _model(cell, tokens)
    x = _inputs(tokens, 3, 11)
    no_resets = torch.zeros(3, 11, dtype=torch.bool)
    for state in (None, _random_state(model, 3)):
        out_none, s_none = model(x, state)
        out_false, s_false = model(x, state, no_resets)
        assert torch.equal(out_none, out_false)
        assert _state_diff(s_none, s_false) == 0.0
    # a numpy mask works too
    assert torch.equal(model(x, None, no_resets.numpy())[0], model(x)[0])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reset_at_column_zero_equals_zero_state(cell, dtype):
    model = _model(cell, False, dtype)
    x = _inputs(False, 3, 8, dtype)
    state = _random_state(model, 3)
    resets = torch.zeros(3, 8, dtype=torch.bool)
    resets[[0, 2], 0] = True
    out, new = model(x, state, resets)
    fresh, fresh_state = model(x)
    carried, carried_state = model(x, state)
    tol = TOL[dtype]
    for lane, ref, ref_state in ((0, fresh, fresh_state), (1, carried, carried_state), (2, fresh, fresh_state)):
        assert _maxdiff(out[lane], ref[lane]) <= tol
        assert _state_diff(new.select([lane]), ref_state.select([lane])) <= tol
    # the carried state really matters, so the comparison above can tell the two apart
    assert _maxdiff(fresh[1], carried[1]) > 1e-3


def test_resets_must_match_the_window():
    model = _model("gru", False)
    x = _inputs(False, 2, 5)
    for shape in ((2, 4), (1, 5), (2, 5, 1)):
        with pytest.raises(ValueError, match="resets must be"):
            model(x, None, torch.zeros(shape, dtype=torch.bool))


# --- the fused fast path ---------------------------------------------------------------------------


def _count_rnn_calls(model: SequenceModel):
    lengths: list[int] = []
    handle = model.rnn.register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    return lengths, handle


@pytest.mark.parametrize("cell", FUSED)
@settings(max_examples=25, deadline=None)
@given(
    lanes=st.integers(1, 3),
    steps=st.integers(1, 20),
    data=st.data(),
)
def test_one_fused_call_per_piece(cell, lanes, steps, data):
    model = _model(cell, True, hidden=2, layers=1)
    x = _inputs(True, lanes, steps)
    lengths, handle = _count_rnn_calls(model)
    try:
        model(x)
        assert lengths == [steps], "resets=None must take the single fused call"
        lengths.clear()
        model(x, _random_state(model, lanes))
        assert lengths == [steps]
        lengths.clear()

        cells = data.draw(st.sets(st.tuples(st.integers(0, lanes - 1), st.integers(0, steps - 1)), max_size=8))
        resets = torch.zeros(lanes, steps, dtype=torch.bool)
        for lane, col in cells:
            resets[lane, col] = True
        model(x, None, resets)
        nonzero_columns = {col for _, col in cells if col > 0}
        assert len(lengths) == len(nonzero_columns) + 1
        assert sum(lengths) == steps
    finally:
        handle.remove()


@pytest.mark.parametrize("cell", FUSED)
def test_fused_call_counts_examples(cell):
    model = _model(cell, False, hidden=2, layers=1)
    x = _inputs(False, 2, 10)
    lengths, handle = _count_rnn_calls(model)
    try:
        resets = torch.zeros(2, 10, dtype=torch.bool)
        resets[:, 0] = True  # only column 0: still one call
        model(x, _random_state(model, 2), resets)
        assert lengths == [10]
        lengths.clear()
        resets[0, 3] = resets[1, 3] = resets[1, 7] = True  # two distinct non-zero columns
        model(x, None, resets)
        assert lengths == [3, 4, 3]
    finally:
        handle.remove()


@pytest.mark.parametrize("cell", SCAN_CELLS)
@settings(max_examples=25, deadline=None)
@given(lanes=st.integers(1, 3), steps=st.integers(1, 20), data=st.data())
def test_scan_cells_take_one_call_whatever_the_resets(cell, lanes, steps, data):
    """The scan zeroes a_t where a lane resets, so the window is never cut into pieces."""
    model = _model(cell, True, hidden=2, layers=2)
    x = _inputs(True, lanes, steps)
    resets = torch.zeros(lanes, steps, dtype=torch.bool)
    for lane, col in data.draw(st.sets(st.tuples(st.integers(0, lanes - 1), st.integers(0, steps - 1)), max_size=8)):
        resets[lane, col] = True
    lengths, handle = _count_rnn_calls(model)
    try:
        model(x, _random_state(model, lanes), resets)
    finally:
        handle.remove()
    assert lengths == [steps]


# --- truncated backpropagation through time -------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_resets", [False, True])
def test_detach_stops_the_gradient_at_the_window_boundary(cell, with_resets):
    model = _model(cell, False, torch.float64, hidden=4, layers=2)
    x = _inputs(False, 2, 12, torch.float64).requires_grad_(True)
    first, second = slice(0, 6), slice(6, 12)
    resets = None
    if with_resets:
        resets = torch.zeros(2, 6, dtype=torch.bool)
        resets[1, 4] = True  # lane 1 starts a new sequence late in the second window; lane 0 does not

    def second_window_grad(detach: bool) -> torch.Tensor:
        x.grad = None
        _, state = model(x[:, first])
        if detach:
            state = state.detach()
        out, _ = model(x[:, second], state, resets)
        out.square().sum().backward()
        return x.grad.clone()

    grad = second_window_grad(detach=True)
    assert not grad[:, first].any(), "after detach, the loss of a window must not reach earlier windows"
    assert grad[:, second].abs().sum(dim=-1).gt(0).all()

    grad = second_window_grad(detach=False)
    # without detach, the gradient flows back into the previous window (through steps before any reset)
    assert grad[:, first].abs().sum(dim=-1).gt(0).all()


@pytest.mark.parametrize("cell", CELLS)
def test_reset_stops_the_gradient_within_a_window(cell):
    model = _model(cell, False, torch.float64)
    x = _inputs(False, 1, 8, torch.float64).requires_grad_(True)
    resets = torch.zeros(1, 8, dtype=torch.bool)
    resets[0, 5] = True
    out, _ = model(x, None, resets)
    out[:, 5:].square().sum().backward()
    assert not x.grad[:, :5].any()
    assert x.grad[:, 5:].abs().sum(dim=-1).gt(0).all()


# --- end to end with the layouts --------------------------------------------------------------------


docs = st.lists(st.integers(1, 25), min_size=1, max_size=7)


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(lengths=docs, tokens=st.booleans(), data=st.data())
def test_pack_layout_batches_with_carried_state_equal_each_sequence_alone(cell, lengths, tokens, data):
    """No state crosses from one sequence (piece) into another, across windows and lanes."""
    rng = np.random.default_rng(sum(lengths))
    seqs = [rng.integers(0, VOCAB, n) if tokens else rng.normal(size=(n, FEATURES)) for n in lengths]
    if max(lengths) < 2:
        with pytest.raises(ValueError, match="at least 2 steps"):
            PackLayout(seqs, 1, 1)
        return
    max_length = data.draw(st.none() | st.integers(1, 10))
    piece_lengths = [min(max_length or n, n - 1 - a) for n in lengths for a in range(0, n - 1, max_length or n)]
    lanes = data.draw(st.integers(1, len(piece_lengths)))
    # some lane holds the longest piece, and the fullest lane holds at least the average
    window = data.draw(st.integers(1, max(max(piece_lengths), -(-sum(piece_lengths) // lanes))))
    layout = PackLayout(seqs, lanes, window, max_length=max_length, shuffle=data.draw(st.booleans()), seed=3)
    model = _model(cell, tokens, torch.float64, hidden=3)

    flat = torch.as_tensor(layout.sequences.data)
    out_at = torch.full((len(flat), model.n_outputs), float("nan"), dtype=torch.float64)
    for epoch in (0, 1):
        state = model.initial_state(lanes)
        out_at.fill_(float("nan"))
        for batch in layout.batches(epoch):
            resets = None if batch.resets is None else torch.as_tensor(batch.resets)
            out, state = model(torch.as_tensor(batch.inputs), state, resets)
            mask = torch.as_tensor(batch.mask)
            out_at[torch.as_tensor(batch.positions)[mask]] = out[mask]
        assert len(layout.pieces) == len(piece_lengths)
        for start, n in layout.pieces:
            alone, _ = model(flat[start : start + n].unsqueeze(0))
            assert _maxdiff(out_at[start : start + n], alone[0]) <= TOL[torch.float64]


@pytest.mark.parametrize("cell", CELLS)
@SETTINGS
@given(lengths=st.lists(st.integers(2, 20), min_size=1, max_size=4), data=st.data())
def test_stateless_burn_in_warms_up_on_the_steps_before_the_window(cell, lengths, data):
    """Context (with its resets), then the window (with its resets) = the sequence run alone from the
    first context step; a window at a sequence start equals the window run from zero state."""
    rng = np.random.default_rng(len(lengths))
    seqs = [rng.normal(size=(n, FEATURES)) for n in lengths]
    window = data.draw(st.integers(1, max(lengths) - 1))
    burn_in = data.draw(st.integers(1, 8))
    layout = StatelessLayout(seqs, data.draw(st.integers(1, 4)), window, burn_in=burn_in, seed=1)
    model = _model(cell, False, torch.float64, hidden=3)
    flat = torch.as_tensor(layout.sequences.data)
    starts = layout.sequences.starts
    for batch in layout.batches(0):
        with torch.no_grad():
            _, warm = model(torch.as_tensor(batch.context), None, torch.as_tensor(batch.context_resets))
            out, _ = model(torch.as_tensor(batch.inputs), warm, batch.resets)
        for row in range(len(batch.inputs)):
            first = int(batch.positions[row, 0])
            n = int(batch.mask[row].sum())
            begin = int(starts[np.searchsorted(starts, first, side="right") - 1])
            from_ = max(begin, first - burn_in)
            alone, _ = model(flat[from_ : first + n].unsqueeze(0))
            assert _maxdiff(out[row, :n], alone[0, first - from_ :]) <= TOL[torch.float64]


# --- construction ----------------------------------------------------------------------------------


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceModel("lstm")
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceModel("lstm", vocab_size=3, n_features=2)
    with pytest.raises(ValueError, match="vocab_size"):
        SequenceModel("lstm", vocab_size=0)
    with pytest.raises(ValueError, match="n_outputs"):
        SequenceModel("gru", n_features=2, n_outputs=0)
    with pytest.raises(ValueError, match="hidden_size"):
        SequenceModel("rnn", n_features=2, hidden_size=0)
    with pytest.raises(ValueError, match="dropout"):
        SequenceModel("rnn", n_features=2, dropout=1.0)
    with pytest.raises(ValueError, match="cell="):
        SequenceModel("transformer", n_features=2)


@pytest.mark.parametrize("cell", CELLS)
def test_initial_state_follows_the_model(cell):
    model = _model(cell, True, hidden=5, layers=3)
    s = model.initial_state(4)
    assert (s.kind, s.num_layers, s.lanes, s.hidden_size, s.dtype) == (cell, 3, 4, 5, torch.float32)
    assert not s.h.any()
    assert model.double().initial_state(2).dtype == torch.float64
    assert model.n_outputs == VOCAB
    assert _model(cell, False).n_outputs == FEATURES
    rebuilt = SequenceModel(**model.config)
    assert rebuilt.config == model.config
