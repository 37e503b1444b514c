"""State: construction checks, zeros/reset/select/concat/to/detach, and the byte format."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.state import CELLS, State

FAST = settings(max_examples=40, deadline=None)


def _random_state(kind: str, layers: int, lanes: int, hidden: int, dtype=torch.float32, seed: int = 0) -> State:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(layers, lanes, hidden, generator=g, dtype=torch.float64).to(dtype)
    c = torch.randn(layers, lanes, hidden, generator=g, dtype=torch.float64).to(dtype) if kind == "lstm" else None
    return State(kind, h, c)


def _tensors(s: State) -> list[torch.Tensor]:
    return [s.h] if s.c is None else [s.h, s.c]


def _same(a: State, b: State) -> bool:
    """Same kind, dtype, shape and bit-identical values."""
    if a.kind != b.kind or a.dtype != b.dtype or (a.c is None) != (b.c is None):
        return False
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b)))


# --- construction ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
def test_zeros_shape_dtype_and_cell_state(kind):
    for dtype in (torch.float32, torch.float64):
        s = State.zeros(kind, 3, 5, 7, dtype=dtype)
        assert (s.num_layers, s.lanes, s.hidden_size) == (3, 5, 7)
        assert s.h.shape == (3, 5, 7) and s.dtype == dtype and s.device == torch.device("cpu")
        assert not s.h.any()
        if kind == "lstm":
            assert s.c is not None and s.c.shape == (3, 5, 7) and s.c.dtype == dtype and not s.c.any()
            assert s.c.data_ptr() != s.h.data_ptr()
        else:
            assert s.c is None


def test_construction_is_checked():
    h = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="cell="):
        State("transformer", h)
    with pytest.raises(ValueError, match="cell="):
        State.zeros("LSTM", 1, 2, 3)
    with pytest.raises(ValueError, match="lstm state needs both"):
        State("lstm", h)
    with pytest.raises(ValueError, match="lstm state needs both"):
        State("gru", h, torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"\(layers, lanes, hidden\)"):
        State("rnn", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="c has shape"):
        State("lstm", h, torch.zeros(1, 2, 4))


@pytest.mark.parametrize("kind", CELLS)
def test_torch_round_trip(kind):
    s = _random_state(kind, 2, 3, 4)
    hx = s.to_torch()
    if kind == "lstm":
        assert isinstance(hx, tuple) and hx[0] is s.h and hx[1] is s.c
    else:
        assert hx is s.h
    assert _same(State.from_torch(kind, hx), s)


# --- reset / select / concat / to / detach --------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
@FAST
@given(
    layers=st.integers(1, 3),
    hidden=st.integers(1, 5),
    mask=st.lists(st.booleans(), min_size=1, max_size=6),
    as_tensor=st.booleans(),
)
def test_reset_zeroes_exactly_the_masked_lanes(kind, layers, hidden, mask, as_tensor):
    s = _random_state(kind, layers, len(mask), hidden)
    before = [t.clone() for t in _tensors(s)]
    r = s.reset(torch.tensor(mask) if as_tensor else mask)
    assert r is not s and r.kind == kind and r.dtype == s.dtype
    for old, new, orig in zip(_tensors(s), _tensors(r), before):
        assert torch.equal(old, orig), "reset must not modify the original state"
        for lane, m in enumerate(mask):
            if m:
                assert not new[:, lane].any()
            else:
                assert torch.equal(new[:, lane], orig[:, lane])


def test_reset_mask_must_have_one_entry_per_lane():
    s = State.zeros("lstm", 1, 3, 2)
    for bad in ([True, False], [True] * 4, [[True, False, True]]):
        with pytest.raises(ValueError, match="one entry per lane"):
            s.reset(bad)


@pytest.mark.parametrize("kind", CELLS)
def test_select_lanes_in_given_order(kind):
    s = _random_state(kind, 2, 5, 3)
    picked = s.select([3, 0, 3])
    assert picked.lanes == 3
    for old, new in zip(_tensors(s), _tensors(picked)):
        assert torch.equal(new[:, 0], old[:, 3])
        assert torch.equal(new[:, 1], old[:, 0])
        assert torch.equal(new[:, 2], old[:, 3])
    sliced = s.select(slice(1, 4))
    for old, new in zip(_tensors(s), _tensors(sliced)):
        assert torch.equal(new, old[:, 1:4])
    assert _same(s.select(torch.tensor([4])), State(kind, s.h[:, 4:5], None if s.c is None else s.c[:, 4:5]))


@pytest.mark.parametrize("kind", CELLS)
@FAST
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4), layers=st.integers(1, 3))
def test_concat_stacks_lanes_and_select_splits_them_back(kind, sizes, layers):
    parts = [_random_state(kind, layers, n, 3, seed=i) for i, n in enumerate(sizes)]
    whole = State.concat(parts)
    assert whole.lanes == sum(sizes) and whole.num_layers == layers and whole.kind == kind
    at = 0
    for p in parts:
        assert _same(whole.select(list(range(at, at + p.lanes))), p)
        assert _same(whole.select(slice(at, at + p.lanes)), p)
        at += p.lanes


def test_concat_rejects_mismatches_and_empty():
    with pytest.raises(ValueError, match="at least one"):
        State.concat([])
    a = State.zeros("lstm", 2, 1, 3)
    for other in (State.zeros("gru", 2, 1, 3), State.zeros("lstm", 1, 1, 3), State.zeros("lstm", 2, 1, 4)):
        with pytest.raises(ValueError, match="cannot concat"):
            State.concat([a, other])


@pytest.mark.parametrize("kind", CELLS)
def test_to_dtype_casts_every_tensor(kind):
    s = _random_state(kind, 2, 3, 4, dtype=torch.float32)
    d = s.to(dtype=torch.float64)
    assert d.dtype == torch.float64 and all(t.dtype == torch.float64 for t in _tensors(d))
    assert all(torch.equal(a.double(), b) for a, b in zip(_tensors(s), _tensors(d)))
    back = d.to(dtype=torch.float32)
    assert _same(back, s)
    assert _same(s.to("cpu"), s)


@pytest.mark.parametrize("kind", CELLS)
def test_detach_cuts_the_graph_and_keeps_values(kind):
    w = torch.tensor(2.0, requires_grad=True)
    base = _random_state(kind, 1, 2, 3)
    s = base._map(lambda t: t * w)
    assert all(t.requires_grad for t in _tensors(s))
    d = s.detach()
    assert all(not t.requires_grad for t in _tensors(d))
    assert all(torch.equal(a, b) for a, b in zip(_tensors(s), _tensors(d)))


def test_state_is_immutable():
    s = State.zeros("gru", 1, 1, 1)
    with pytest.raises(AttributeError):
        s.h = torch.ones(1, 1, 1)


# --- bytes -----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(CELLS),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    layers=st.integers(1, 4),
    lanes=st.integers(1, 6),
    hidden=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-30, 1.0, 1e6]),
)
def test_bytes_round_trip_exactly(kind, dtype, layers, lanes, hidden, seed, scale):
    s = _random_state(kind, layers, lanes, hidden, dtype=torch.float64, seed=seed)
    s = s._map(lambda t: (t * scale).to(dtype))
    data = s.to_bytes()
    back = State.from_bytes(data)
    assert _same(back, s)
    assert back.to_bytes() == data
    assert State.from_bytes(bytearray(data)).to_bytes() == data
    assert State.from_bytes(memoryview(data)).to_bytes() == data


@pytest.mark.parametrize("kind", CELLS)
def test_bytes_of_a_non_contiguous_state(kind):
    s = _random_state(kind, 2, 6, 3, dtype=torch.float64)
    for view in (s.select(slice(1, 6, 2)), s._map(lambda t: t.transpose(0, 2).contiguous().transpose(0, 2))):
        assert _same(State.from_bytes(view.to_bytes()), view)


def test_bytes_keep_special_values():
    h = torch.tensor([[[0.0, -0.0, float("inf"), -float("inf"), 1e-45, float("nan")]]], dtype=torch.float32)
    back = State.from_bytes(State("rnn", h).to_bytes())
    assert back.h.view(torch.int32).tolist() == h.view(torch.int32).tolist()


def _valid_bytes(kind: str = "lstm", dtype=torch.float32) -> bytes:
    return _random_state(kind, 2, 3, 4, dtype=dtype).to_bytes()


@pytest.mark.parametrize("cut", [1, 4, 5, 8, 15, 20])
def test_truncated_bytes_raise(cut):
    data = _valid_bytes()
    with pytest.raises(ValueError, match="state"):
        State.from_bytes(data[: len(data) - cut])
    with pytest.raises(ValueError, match="state"):
        State.from_bytes(data[:cut])


def test_truncated_payload_message_says_so():
    data = _valid_bytes()
    with pytest.raises(ValueError, match="truncated"):
        State.from_bytes(data[:-1])


@pytest.mark.parametrize("extra", [b"\x00", b"hello", bytes(64)])
def test_extra_bytes_raise(extra):
    with pytest.raises(ValueError, match="padded"):
        State.from_bytes(_valid_bytes() + extra)


@pytest.mark.parametrize(
    "foreign",
    [
        b"",
        b"hello",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"SRNNSTA",
        bytes(200),
        b"PK\x03\x04" + bytes(60),
    ],
)
def test_foreign_bytes_raise(foreign):
    with pytest.raises(ValueError, match="not a statefulrnn state"):
        State.from_bytes(foreign)


@pytest.mark.parametrize("kind", CELLS)
def test_flipped_payload_byte_fails_the_checksum(kind):
    data = bytearray(_valid_bytes(kind))
    header = struct.calcsize("<8sHBBIIII")
    for at in (header, header + 7, len(data) - 1):
        bad = bytearray(data)
        bad[at] ^= 0x01
        with pytest.raises(ValueError, match="checksum"):
            State.from_bytes(bytes(bad))


def test_wrong_version_raises():
    data = bytearray(_valid_bytes())
    for version in (0, 2, 65535):
        data[8:10] = struct.pack("<H", version)
        with pytest.raises(ValueError, match=f"version {version}"):
            State.from_bytes(bytes(data))


def test_unknown_kind_or_dtype_code_raises():
    data = bytearray(_valid_bytes())
    for offset in (10, 11):  # kind code, dtype code
        bad = bytearray(data)
        bad[offset] = 200
        with pytest.raises(ValueError, match="unknown cell kind or dtype"):
            State.from_bytes(bytes(bad))


def test_header_fields_must_match_the_payload():
    """A header that claims another shape (with a valid checksum) is rejected on the payload size."""
    s = _random_state("gru", 2, 3, 4)
    data = bytearray(s.to_bytes())
    magic, version, kind, dtype, layers, lanes, hidden, crc = struct.unpack_from("<8sHBBIIII", data)
    bad = struct.pack("<8sHBBIIII", magic, version, kind, dtype, layers, lanes, hidden + 1, crc) + data[28:]
    with pytest.raises(ValueError, match="truncated or padded"):
        State.from_bytes(bad)
    # claiming lstm (two tensors) for a one-tensor payload
    bad = struct.pack("<8sHBBIIII", magic, version, 0, dtype, layers, lanes, hidden, crc) + data[28:]
    with pytest.raises(ValueError, match="truncated or padded"):
        State.from_bytes(bad)
    assert zlib.crc32(bytes(data[28:])) == crc


@pytest.mark.parametrize("kind, code", [("lstm", 0), ("gru", 1), ("rnn", 2), ("mingru", 3), ("minlstm", 4)])
def test_cell_codes_in_the_header_never_change(kind, code):
    """States written before minGRU/minLSTM existed still read back as the same cell."""
    data = State.zeros(kind, 1, 2, 3).to_bytes()
    assert data[10] == code and State.from_bytes(data).kind == kind


def test_scan_cells_carry_h_only():
    h = torch.zeros(2, 3, 4)
    for kind in ("mingru", "minlstm"):
        assert State.zeros(kind, 2, 3, 4).c is None
        with pytest.raises(ValueError, match="lstm state needs both"):
            State(kind, h, torch.zeros_like(h))
    with pytest.raises(ValueError, match="cannot concat"):
        State.concat([State.zeros("mingru", 2, 1, 4), State.zeros("gru", 2, 1, 4)])


def test_to_bytes_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match="dtype"):
        State("rnn", torch.zeros(1, 1, 1, dtype=torch.int32)).to_bytes()
