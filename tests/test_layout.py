"""Lane layouts: coverage, lane continuity, targets, resets, masks, shuffling, burn-in, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.layout import ConcatLayout, PackLayout, Sequences, StatelessLayout, as_sequences

SETTINGS = settings(max_examples=80, deadline=None)

doc_lengths = st.lists(st.integers(1, 30), min_size=1, max_size=7)


def _docs(lengths, features: bool = False, seed: int = 0) -> list[np.ndarray]:
    """Sequences whose values identify their flat position (tokens) or are random (features)."""
    rng = np.random.default_rng(seed)
    if features:
        return [rng.normal(size=(n, 3)) for n in lengths]
    at = np.concatenate([[0], np.cumsum(lengths)])
    return [np.arange(at[d], at[d] + n, dtype=np.int64) + 1 for d, n in enumerate(lengths)]


def _starts(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _doc_of(starts: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.searchsorted(starts, pos, side="right") - 1


def _epoch(layout, epoch: int) -> dict[str, np.ndarray]:
    """All batches of an epoch joined along time (stateful layouts: one row per lane)."""
    parts: dict[str, list] = {"pos": [], "resets": [], "mask": [], "inputs": [], "targets": []}
    n = 0
    for k, b in enumerate(layout.batches(epoch)):
        assert b.index == k
        assert b.inputs.shape[:2] == (layout.lanes, layout.window) == b.mask.shape == b.positions.shape
        assert b.resets is None or (b.resets.shape == b.mask.shape and b.resets.any())
        parts["pos"].append(b.positions)
        parts["resets"].append(np.zeros(b.mask.shape, bool) if b.resets is None else b.resets)
        parts["mask"].append(b.mask)
        parts["inputs"].append(b.inputs)
        parts["targets"].append(b.targets)
        n += 1
    assert n == len(layout)
    return {k: np.concatenate(v, axis=1) for k, v in parts.items()}


def _check_inputs_and_targets(rows, flat, starts, targets=None):
    pos, mask = rows["pos"], rows["mask"]
    assert np.array_equal(mask, pos >= 0), "the mask must be False exactly on padding"
    assert np.array_equal(rows["inputs"][mask], flat[pos[mask]])
    if targets is None:
        # next-step targets, never across a sequence boundary
        assert np.array_equal(_doc_of(starts, pos[mask] + 1), _doc_of(starts, pos[mask]))
        assert np.array_equal(rows["targets"][mask], flat[pos[mask] + 1])
    else:
        assert np.array_equal(rows["targets"][mask], targets[pos[mask]])


# --- ConcatLayout -----------------------------------------------------------------------------------


@SETTINGS
@given(
    lengths=doc_lengths,
    reset=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 100),
    data=st.data(),
)
def test_concat_layout_invariants(lengths, reset, shuffle, seed, data):
    seqs = _docs(lengths)
    flat, starts = np.concatenate(seqs), _starts(lengths)
    usable = np.maximum(np.array(lengths) - 1, 0)
    total = int(usable.sum())
    if total == 0:
        with pytest.raises(ValueError, match="lanes"):
            ConcatLayout(seqs, 1, 1)
        return
    lanes = data.draw(st.integers(1, total))
    n = total // lanes
    window = data.draw(st.integers(1, n))
    layout = ConcatLayout(seqs, lanes, window, reset_at_boundaries=reset, shuffle=shuffle, seed=seed)
    assert layout.lane_length == n
    assert layout.dropped == total - lanes * n
    assert len(layout) == math.ceil(n / window)

    for epoch in range(3):
        order = layout.order(epoch)
        assert sorted(order.tolist()) == list(range(len(lengths)))
        if not shuffle:
            assert order.tolist() == list(range(len(lengths)))
        # the stream: the usable steps of every sequence, whole and in `order`
        stream = np.concatenate([np.arange(starts[d], starts[d] + usable[d]) for d in order])
        rows = _epoch(layout, epoch)
        pos, mask = rows["pos"], rows["mask"]
        assert mask[:, :n].all() and not mask[:, n:].any(), "only the tail of the last batch is padding"
        for lane in range(lanes):
            # lane continuity: the lane's steps across batches k, k+1, ... are one contiguous piece of the stream
            assert np.array_equal(pos[lane, :n], stream[lane * n : (lane + 1) * n])
        used = pos[mask]
        assert len(np.unique(used)) == len(used) == lanes * n, "no step used twice"
        dropped = stream[lanes * n :]
        assert len(dropped) == layout.dropped
        assert set(used.tolist()) | set(dropped.tolist()) == set(stream.tolist())
        _check_inputs_and_targets(rows, flat, starts)
        if reset:
            assert np.array_equal(rows["resets"], mask & np.isin(pos, starts[:-1])), "resets exactly at starts"
        else:
            assert not rows["resets"].any()


@settings(max_examples=40, deadline=None)
@given(lengths=doc_lengths, data=st.data())
def test_concat_layout_with_given_targets(lengths, data):
    seqs = _docs(lengths, features=True)
    targets = [np.random.default_rng(n).normal(size=n) for n in lengths]
    total = sum(lengths)  # every step has a target
    lanes = data.draw(st.integers(1, total))
    window = data.draw(st.integers(1, total // lanes))
    layout = ConcatLayout(seqs, lanes, window, targets=targets, reset_at_boundaries=True)
    assert layout.lane_length == total // lanes
    rows = _epoch(layout, 0)
    flat, starts = np.concatenate(seqs), _starts(lengths)
    _check_inputs_and_targets(rows, flat, starts, np.concatenate(targets))
    assert np.array_equal(rows["pos"][:, : layout.lane_length].ravel(), np.arange(lanes * layout.lane_length))


def test_concat_layout_shuffle_reorders_whole_sequences_reproducibly():
    lengths = [5, 9, 3, 7, 4, 6, 8, 2]
    seqs = _docs(lengths)
    starts = _starts(lengths)

    def stream_docs(layout, epoch):
        rows = _epoch(layout, epoch)
        stream = rows["pos"][:, : layout.lane_length].ravel()
        docs = _doc_of(starts, stream)
        # each sequence is one contiguous, ordered run of the stream
        first_seen = [d for i, d in enumerate(docs) if i == 0 or docs[i - 1] != d]
        assert len(first_seen) == len(set(first_seen))
        for d in first_seen:
            run = stream[docs == d]
            assert np.array_equal(run, np.arange(starts[d], starts[d] + len(run)))
        return first_seen, rows

    layout = ConcatLayout(seqs, 3, 4, shuffle=True, seed=7)
    orders = [stream_docs(layout, e)[0] for e in range(4)]
    assert len({tuple(o) for o in orders}) > 1, "shuffle must change the sequence order between epochs"
    again = ConcatLayout(seqs, 3, 4, shuffle=True, seed=7)
    for e in range(4):
        assert stream_docs(again, e)[0] == orders[e]
        assert np.array_equal(_epoch(again, e)["inputs"], _epoch(layout, e)["inputs"])
    other_seed = ConcatLayout(seqs, 3, 4, shuffle=True, seed=8)
    assert [stream_docs(other_seed, e)[0] for e in range(4)] != orders
    fixed = ConcatLayout(seqs, 3, 4)
    assert all(stream_docs(fixed, e)[0] == list(range(len(lengths))) for e in range(3))


# --- PackLayout -------------------------------------------------------------------------------------


def _expected_pieces(lengths, max_length, with_targets: bool) -> list[tuple[int, int]]:
    starts = _starts(lengths)
    pieces = []
    for d, n in enumerate(lengths):
        u = n if with_targets else n - 1
        step = max_length or u
        pieces += [(int(starts[d] + a), min(step, u - a)) for a in range(0, u, step or 1)]
    return pieces


@SETTINGS
@given(
    lengths=doc_lengths,
    max_length=st.none() | st.integers(1, 12),
    with_targets=st.booleans(),
    shuffle=st.booleans(),
    data=st.data(),
)
def test_pack_layout_invariants(lengths, max_length, with_targets, shuffle, data):
    seqs = _docs(lengths, features=with_targets)
    targets = [np.random.default_rng(n).normal(size=n) for n in lengths] if with_targets else None
    flat, starts = np.concatenate(seqs), _starts(lengths)
    pieces = _expected_pieces(lengths, max_length, with_targets)
    if not pieces:
        with pytest.raises(ValueError, match="at least 2 steps"):
            PackLayout(seqs, 1, 1, targets=targets, max_length=max_length)
        return
    lanes = data.draw(st.integers(1, len(pieces)))
    longest = max(n for _, n in pieces)
    window = data.draw(st.integers(1, max(longest, -(-sum(n for _, n in pieces) // lanes))))
    layout = PackLayout(seqs, lanes, window, targets=targets, max_length=max_length, shuffle=shuffle, seed=5)
    assert sorted(map(tuple, layout.pieces.tolist())) == sorted(pieces)

    for epoch in range(3):
        rows = _epoch(layout, epoch)
        pos, mask, resets = rows["pos"], rows["mask"], rows["resets"]
        assert not (resets & ~mask).any(), "no reset on padding"
        assert np.all(np.diff(mask.astype(int), axis=1) <= 0), "padding only after a lane's last piece"
        found = []
        for lane in range(lanes):
            cuts = np.flatnonzero(resets[lane]).tolist()
            real = int(mask[lane].sum())
            assert (cuts[:1] == [0]) if real else not cuts, "a lane starts with a reset"
            for a, b in zip(cuts, cuts[1:] + [real]):
                seg = pos[lane, a:b]
                assert np.array_equal(seg, np.arange(seg[0], seg[0] + len(seg))), "a piece is contiguous"
                found.append((int(seg[0]), len(seg)))
        # every piece exactly once, whole, in one lane, with a reset exactly at its first step
        assert sorted(found) == sorted(pieces)
        fills = mask.sum(axis=1)
        assert fills.max() - fills.min() <= longest, "lanes are balanced"
        _check_inputs_and_targets(rows, flat, starts, None if targets is None else np.concatenate(targets))


def test_pack_layout_shuffle_changes_placement_reproducibly():
    lengths = [12, 3, 7, 5, 9, 4, 6, 8, 2, 10]
    seqs = _docs(lengths)

    def placement(layout, epoch):
        return _epoch(layout, epoch)["pos"]

    layout = PackLayout(seqs, 3, 4, shuffle=True, seed=2)
    first = [placement(layout, e) for e in range(4)]
    assert any(not np.array_equal(first[0], p) or first[0].shape != p.shape for p in first[1:])
    again = PackLayout(seqs, 3, 4, shuffle=True, seed=2)
    assert all(np.array_equal(placement(again, e), first[e]) for e in range(4))
    still = PackLayout(seqs, 3, 4)
    assert all(np.array_equal(placement(still, e), placement(still, 0)) for e in range(3))


# --- StatelessLayout -------------------------------------------------------------------------------


@SETTINGS
@given(
    lengths=doc_lengths,
    with_targets=st.booleans(),
    shuffle=st.booleans(),
    burn_in=st.integers(0, 12),
    seed=st.integers(0, 100),
    data=st.data(),
)
def test_stateless_layout_invariants(lengths, with_targets, shuffle, burn_in, seed, data):
    seqs = _docs(lengths, features=with_targets)
    targets = [np.random.default_rng(n).normal(size=n) for n in lengths] if with_targets else None
    flat, starts = np.concatenate(seqs), _starts(lengths)
    usable = np.array(lengths) - (0 if with_targets else 1)
    if usable.max() < 1:
        with pytest.raises(ValueError, match="at least 2 steps"):
            StatelessLayout(seqs, 1, 1, targets=targets)
        return
    window = data.draw(st.integers(1, int(usable.max()) + 3))
    windows = [
        (int(starts[d] + a), min(window, int(u) - a)) for d, u in enumerate(usable) for a in range(0, max(u, 0), window)
    ]
    batch_size = data.draw(st.integers(1, 6))
    if len(windows) == 1 and windows[0][1] < window:
        with pytest.raises(ValueError, match="window"):
            StatelessLayout(seqs, batch_size, window, targets=targets)
        return
    layout = StatelessLayout(seqs, batch_size, window, targets=targets, burn_in=burn_in, shuffle=shuffle, seed=seed)
    assert len(layout) == math.ceil(len(windows) / batch_size)
    for epoch in range(2):
        seen = []
        for k, b in enumerate(layout.batches(epoch)):
            rows = len(b.inputs)
            assert rows == (batch_size if k < len(layout) - 1 else len(windows) - batch_size * k)
            assert b.inputs.shape[1] == window
            r = {"pos": b.positions, "mask": b.mask, "inputs": b.inputs, "targets": b.targets}
            _check_inputs_and_targets(r, flat, starts, None if targets is None else np.concatenate(targets))
            for row in range(rows):
                n = int(b.mask[row].sum())
                first = int(b.positions[row, 0])
                assert np.array_equal(b.positions[row, :n], np.arange(first, first + n))
                assert not b.mask[row, n:].any()
                seen.append((first, n))
            _check_burn_in(b, flat, starts, burn_in)
        assert sorted(seen) == sorted(windows), "every window exactly once per epoch"
        if not shuffle:
            assert seen == windows


def _check_burn_in(b, flat, starts, burn_in):
    if burn_in == 0:
        assert b.context is None and b.context_resets is None and b.resets is None
        return
    rows = len(b.inputs)
    assert b.context.shape[:2] == b.context_resets.shape == (rows, burn_in)
    at_start = []
    for row in range(rows):
        first = int(b.positions[row, 0])
        begin = int(starts[_doc_of(starts, np.array([first]))[0]])
        before = first - begin  # steps of the same sequence before the window
        real = min(before, burn_in)
        # the context is the `real` steps just before the window, right-aligned; never another sequence
        assert np.array_equal(b.context[row, burn_in - real :], flat[first - real : first])
        expected = np.zeros(burn_in, bool)
        if 0 < before < burn_in:
            expected[burn_in - before] = True  # the first real context step
        elif before >= burn_in:
            expected[0] = b.context_resets[row, 0]  # a reset before a full context changes nothing
        assert np.array_equal(b.context_resets[row], expected)
        at_start.append(before == 0)
    if any(at_start):
        assert b.resets is not None
        assert np.array_equal(b.resets[:, 0], np.array(at_start)), "a window at a sequence start resets"
        assert not b.resets[:, 1:].any()
    else:
        assert b.resets is None


def test_stateless_layout_shuffle_is_seeded():
    seqs = _docs([40, 25, 33])
    layout = StatelessLayout(seqs, 4, 5, seed=11)
    firsts = [np.concatenate([b.positions[:, 0] for b in layout.batches(e)]) for e in range(3)]
    assert not np.array_equal(firsts[0], firsts[1]) and not np.array_equal(firsts[1], firsts[2])
    assert all(sorted(f.tolist()) == sorted(firsts[0].tolist()) for f in firsts)
    again = StatelessLayout(seqs, 4, 5, seed=11)
    for e in range(3):
        assert np.array_equal(np.concatenate([b.positions[:, 0] for b in again.batches(e)]), firsts[e])
    other = StatelessLayout(seqs, 4, 5, seed=12)
    assert not np.array_equal(np.concatenate([b.positions[:, 0] for b in other.batches(0)]), firsts[0])
    ordered = StatelessLayout(seqs, 4, 5, shuffle=False)
    assert np.array_equal(np.concatenate([b.positions[:, 0] for b in ordered.batches(1)]), np.sort(firsts[0]))


# --- bad input ---------------------------------------------------------------------------------------


def _concat(data, lanes=1, window=1, **kw):
    return ConcatLayout(data, lanes, window, **kw)


def _pack(data, lanes=1, window=1, **kw):
    return PackLayout(data, lanes, window, **kw)


def _stateless(data, lanes=1, window=1, **kw):
    return StatelessLayout(data, lanes, window, **kw)


LAYOUTS = pytest.mark.parametrize("make", [_concat, _pack, _stateless], ids=["concat", "pack", "stateless"])
GOOD = [np.arange(20), np.arange(15)]


@LAYOUTS
@pytest.mark.parametrize("empty", [[], np.array([], dtype=np.int64), [np.array([], dtype=np.int64)], np.zeros((0, 3))])
def test_empty_data_raises(make, empty):
    with pytest.raises(ValueError, match="data is empty"):
        make(empty)


@LAYOUTS
@pytest.mark.parametrize("window", [0, -3, 2.5])
def test_bad_window_raises(make, window):
    with pytest.raises(ValueError, match="window"):
        make(GOOD, 1, window)


@pytest.mark.parametrize(
    ("make", "name"), [(_concat, "lanes"), (_pack, "lanes"), (_stateless, "batch_size")], ids=["c", "p", "s"]
)
@pytest.mark.parametrize("lanes", [0, -1])
def test_bad_lanes_raises_naming_the_argument(make, name, lanes):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        make(GOOD, lanes, 2)


def test_more_lanes_than_steps_raises():
    with pytest.raises(ValueError, match="lanes=34"):
        ConcatLayout(GOOD, 34, 1)  # 19 + 14 = 33 usable steps
    ConcatLayout(GOOD, 33, 1)
    with pytest.raises(ValueError, match="lanes=3"):
        PackLayout(GOOD, 3, 1)  # two sequences, two pieces
    PackLayout(GOOD, 2, 1)


@LAYOUTS
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_raise(make, bad):
    seqs = [np.zeros((6, 2)), np.zeros((8, 2))]
    seqs[1][3, 1] = bad
    with pytest.raises(ValueError, match=r"sequence 1 has NaN or infinite values \(first at step 3\)"):
        make(seqs)
    one = np.zeros(10)
    one[7] = bad
    with pytest.raises(ValueError, match=r"sequence 0 .*NaN or infinite.*step 7"):
        make(one)


@LAYOUTS
def test_ragged_feature_widths_raise(make):
    with pytest.raises(ValueError, match="ragged feature widths"):
        make([np.zeros((5, 2)), np.zeros((5, 3))])
    with pytest.raises(ValueError, match="ragged feature widths"):
        make([np.zeros((5, 2)), np.zeros(5)])


def test_window_larger_than_the_data_raises():
    with pytest.raises(ValueError, match="window=20"):
        ConcatLayout(np.arange(20), 1, 20)  # 19 usable steps
    ConcatLayout(np.arange(20), 1, 19)
    with pytest.raises(ValueError, match="window=10"):
        ConcatLayout(np.arange(20), 2, 10)  # two lanes of 9
    with pytest.raises(ValueError, match="window=20"):
        PackLayout([np.arange(20)], 1, 20)
    PackLayout([np.arange(20)], 1, 19)
    with pytest.raises(ValueError, match="window=20"):
        StatelessLayout(np.arange(20), 1, 20)
    StatelessLayout(np.arange(20), 1, 19)


def test_other_bad_arguments_raise():
    with pytest.raises(ValueError, match="targets"):
        ConcatLayout([np.zeros((5, 2))], 1, 1, targets=[np.zeros(4)])
    with pytest.raises(ValueError, match="targets"):
        PackLayout([np.zeros((5, 2)), np.zeros((3, 2))], 1, 1, targets=[np.zeros(5)])
    with pytest.raises(ValueError, match="burn_in"):
        StatelessLayout(GOOD, 1, 2, burn_in=-1)
    with pytest.raises(ValueError, match="max_length"):
        PackLayout(GOOD, 1, 2, max_length=0)
    with pytest.raises(ValueError, match="non-negative"):
        ConcatLayout(np.array([1, 2, -1, 3]), 1, 1)
    with pytest.raises(ValueError, match="dtype"):
        ConcatLayout(np.array(["a", "b", "c"]), 1, 1)
    with pytest.raises(ValueError, match=r"\(T, features\)"):
        ConcatLayout(np.zeros((4, 2, 2)), 1, 1)


@LAYOUTS
def test_batch_index_out_of_range(make):
    layout = make(GOOD, 2, 3)
    with pytest.raises(IndexError):
        layout.batch(len(layout))
    with pytest.raises(IndexError):
        layout.batch(-1)


def test_as_sequences_forms():
    one = as_sequences(np.arange(5))
    assert one.count == 1 and one.starts.tolist() == [0, 5] and one.usable.tolist() == [4]
    many = as_sequences([np.arange(3), np.arange(1), np.arange(4)])
    assert many.starts.tolist() == [0, 3, 4, 8] and many.usable.tolist() == [2, 0, 3]
    assert as_sequences(many) is many
    with_targets = as_sequences([np.zeros((3, 2))], [np.ones(3)])
    assert with_targets.shift == 0 and with_targets.usable.tolist() == [3]
    assert isinstance(with_targets, Sequences)


def test_describe_marks_resets_and_padding():
    text = PackLayout([np.arange(9), np.arange(5), np.arange(4)], 2, 3).describe()
    assert text.startswith("pack layout:")
    assert "*s0[0:3]" in text and "*s2[0:" in text and "pad" in text
    text = ConcatLayout([np.arange(9), np.arange(5)], 2, 3, reset_at_boundaries=True).describe()
    assert "*s1[0:" in text


def test_pack_layout_fills_the_lanes_and_gives_short_data_one_lane_per_piece():
    from statefulrnn.layout import pack_layout
    from statefulrnn.train import TrainConfig

    def series(n: int, count: int):
        return as_sequences([np.zeros((n, 1), np.float32)] * count, [np.zeros((n, 1), np.float32)] * count)

    long = pack_layout(series(1000, 2), TrainConfig(lanes=16, window=48))
    assert long.lanes == 16 and long.pieces[:, 1].max() == 125  # each series cut into 8 pieces of 125
    short = pack_layout(series(60, 2), TrainConfig(lanes=16, window=48))
    assert short.lanes == 4 and short.pieces[:, 1].max() == 48  # pieces never shorter than a window
    stateless = pack_layout(series(60, 2), TrainConfig(mode="stateless", lanes=16, window=48))
    assert isinstance(stateless, StatelessLayout) and stateless.lanes == 16
    many = pack_layout(series(60, 20), TrainConfig(lanes=16, window=48))
    assert many.lanes == 16 and many.pieces[:, 1].max() == 60  # enough series: none is cut
