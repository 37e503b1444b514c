"""The recurrent state of a stack of LSTM, GRU, RNN, minGRU or minLSTM layers, one slice per lane.

A `State` is an immutable value: every operation returns a new one. Tensors are shaped
(layers, lanes, hidden), the layout `torch.nn.LSTM/GRU/RNN` expect for their `hx` argument. Only LSTM
has a cell state `c`; the others, minLSTM included, carry `h` alone.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

CELLS = ("lstm", "gru", "rnn", "mingru", "minlstm")  # byte-format codes: append only

_MAGIC = b"SRNNSTAT"
_VERSION = 1
# magic, version, kind, dtype, layers, lanes, hidden, crc32 of the payload
_HEADER = struct.Struct("<8sHBBIIII")
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_cell(cell: str) -> str:
    """Return `cell` if it names a supported recurrent cell, else raise a ValueError saying which are."""
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not supported; use one of {', '.join(CELLS)}")
    return cell


@dataclass(frozen=True)
class State:
    """Hidden state `h` (and cell state `c` for LSTM only) of every layer and lane."""

    kind: str
    h: torch.Tensor
    c: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_cell(self.kind)
        if self.h.dim() != 3:
            raise ValueError(f"state tensors must be (layers, lanes, hidden), got shape {tuple(self.h.shape)}")
        if (self.kind == "lstm") != (self.c is not None):
            raise ValueError("an lstm state needs both h and c; the other cells' states have h only")
        if self.c is not None and self.c.shape != self.h.shape:
            raise ValueError(f"c has shape {tuple(self.c.shape)} but h has {tuple(self.h.shape)}")

    @classmethod
    def zeros(
        cls,
        kind: str,
        num_layers: int,
        lanes: int,
        hidden_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> State:
        """The state every lane starts from: all zeros."""
        shape = (num_layers, lanes, hidden_size)
        h = torch.zeros(shape, device=device, dtype=dtype)
        c = torch.zeros(shape, device=device, dtype=dtype) if check_cell(kind) == "lstm" else None
        return cls(kind, h, c)

    @classmethod
    def from_torch(cls, kind: str, hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> State:
        """Wrap the `hx` a torch recurrent module returns: `(h, c)` for LSTM, `h` otherwise."""
        if kind == "lstm":
            h, c = hx
            return cls(kind, h, c)
        return cls(kind, hx)

    def to_torch(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The `hx` argument for a torch recurrent module."""
        return (self.h, self.c) if self.c is not None else self.h

    @property
    def num_layers(self) -> int:
        return self.h.shape[0]

    @property
    def lanes(self) -> int:
        return self.h.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.h.shape[2]

    @property
    def device(self) -> torch.device:
        return self.h.device

    @property
    def dtype(self) -> torch.dtype:
        return self.h.dtype

    def _map(self, fn) -> State:
        return State(self.kind, fn(self.h), None if self.c is None else fn(self.c))

    def detach(self) -> State:
        """Cut the autograd graph: the next window's gradient stops here (truncated BPTT)."""
        return self._map(torch.Tensor.detach)

    def reset(self, mask: torch.Tensor | Sequence[bool]) -> State:
        """Zero the lanes where `mask` (one bool per lane) is true; the others are kept as they are.

        >>> s = State("gru", torch.ones(1, 3, 2))
        >>> s.reset([False, True, False]).h[0].tolist()
        [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
        """
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
        if mask.shape != (self.lanes,):
            raise ValueError(f"reset mask must have one entry per lane ({self.lanes}), got shape {tuple(mask.shape)}")
        where = mask.view(1, -1, 1)
        return self._map(lambda t: torch.where(where, torch.zeros((), dtype=t.dtype, device=t.device), t))

    def select(self, lanes: torch.Tensor | Sequence[int] | slice) -> State:
        """The state of some lanes only (to unbatch streams), in the order given."""
        if isinstance(lanes, slice):
            return self._map(lambda t: t[:, lanes])
        index = torch.as_tensor(lanes, dtype=torch.long, device=self.device)
        return self._map(lambda t: t.index_select(1, index))

    @staticmethod
    def concat(states: Sequence[State]) -> State:
        """Stack the lanes of several states into one (to batch streams together)."""
        if not states:
            raise ValueError("concat needs at least one state")
        first = states[0]
        for s in states[1:]:
            if (s.kind, s.num_layers, s.hidden_size) != (first.kind, first.num_layers, first.hidden_size):
                raise ValueError(
                    f"cannot concat a {s.kind} state of {s.num_layers}x{s.hidden_size} with a "
                    f"{first.kind} state of {first.num_layers}x{first.hidden_size}"
                )
        h = torch.cat([s.h for s in states], dim=1)
        c = torch.cat([s.c for s in states], dim=1) if first.c is not None else None
        return State(first.kind, h, c)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> State:
        """Move and/or cast every tensor."""
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def to_bytes(self) -> bytes:
        """Serialise to a self-describing byte string: a header, then the raw tensors (little-endian hosts)."""
        if self.dtype not in _DTYPES:
            raise ValueError(f"cannot serialise a state of dtype {self.dtype}")
        payload = b"".join(_raw_bytes(t) for t in (self.h, self.c) if t is not None)
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            CELLS.index(self.kind),
            _DTYPES.index(self.dtype),
            self.num_layers,
            self.lanes,
            self.hidden_size,
            zlib.crc32(payload),
        )
        return header + payload

    @classmethod
    def from_bytes(cls, data: bytes, *, device: torch.device | str | None = None) -> State:
        """Rebuild a state written by `to_bytes`; raises ValueError on anything else."""
        data = bytes(data)
        if len(data) < _HEADER.size or data[:8] != _MAGIC:
            raise ValueError("not a statefulrnn state: the bytes do not start with the state header")
        _, version, kind, dtype, layers, lanes, hidden, crc = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise ValueError(f"state format version {version} is not supported (this build reads {_VERSION})")
        if kind >= len(CELLS) or dtype >= len(_DTYPES):
            raise ValueError("corrupt state header: unknown cell kind or dtype code")
        kind_name, torch_dtype = CELLS[kind], _DTYPES[dtype]
        n_tensors = 2 if kind_name == "lstm" else 1
        itemsize = torch.tensor([], dtype=torch_dtype).element_size()
        expected = n_tensors * layers * lanes * hidden * itemsize
        payload = data[_HEADER.size :]
        if len(payload) != expected:
            raise ValueError(
                f"state bytes are truncated or padded: expected {expected} payload bytes for a "
                f"{kind_name} state of {layers}x{lanes}x{hidden}, got {len(payload)}"
            )
        if zlib.crc32(payload) != crc:
            raise ValueError("state bytes are corrupt: checksum mismatch")
        flat = torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(torch_dtype)
        tensors = flat.reshape(n_tensors, layers, lanes, hidden).to(device)
        return cls(kind_name, tensors[0], tensors[1] if n_tensors == 2 else None)


def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
