"""The vocabulary of stepping streams: requests, results, and the ways a request can be refused."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StepRequest:
    """Advance `stream_id` by the steps in `inputs` (as returned by `check_inputs`).

    `seq` None applies the request at whatever seq the stream is at (no retry detection). Series
    runs only: `series` names the trained series whose transform a new stream uses; `position` is the
    phase (step index within the season) of a new stream's first input. `fresh` starts the stream
    over from zero state and a new context (warm-up), fitting a transform on the inputs if needed.
    """

    stream_id: str
    inputs: np.ndarray
    seq: int | None = None
    series: str | None = None
    position: int | None = None
    fresh: bool = False

    @property
    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.inputs.dtype.str}{self.inputs.shape}{self.series}{self.position}{self.fresh}".encode())
        h.update(np.ascontiguousarray(self.inputs).tobytes())
        return h.hexdigest()


@dataclass
class StepResult:
    """The outputs (steps, n_outputs) of a committed (or, `replayed`, an earlier) request, and the new seq."""

    stream_id: str
    outputs: np.ndarray
    seq: int
    steps: int
    replayed: bool = False


@dataclass(frozen=True)
class StreamInfo:
    """Where a stream stands."""

    stream_id: str
    seq: int
    steps: int
    updated_at: float


class SeqConflict(ValueError):
    """A step request's seq is neither the stream's next one nor a retry of its last one."""

    def __init__(self, stream_id: str, got: int, expected: int, why: str = "") -> None:
        self.stream_id, self.got, self.expected = stream_id, got, expected
        why = why or ("it was already applied" if got < expected else "earlier requests are missing")
        super().__init__(f"stream '{stream_id}' expects seq {expected}, got {got}: {why}")


class UnknownStream(LookupError):
    """The store holds no stream with this id."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"no stream '{stream_id}'")


class Contention(RuntimeError):
    """The stream kept changing under this request (other writers); try again."""


def json_rows(outputs: np.ndarray) -> list[list[float | None]]:
    """Outputs as JSON-safe lists: NaN (no prediction yet) and overflowed values become None."""
    outputs = np.asarray(outputs)
    if np.isfinite(outputs).all():
        return outputs.tolist()
    return [[v if math.isfinite(v) else None for v in row] for row in outputs.tolist()]


_SNAPSHOT = b"SRNNSNAP"
_SNAPSHOT_HEADER = struct.Struct("<8sI")


def pack_snapshot(seq: int, steps: int, context: str, state: bytes) -> bytes:
    """A stream as bytes: a header, its seq, steps and context as JSON, then its `State.to_bytes()`."""
    head = json.dumps({"seq": seq, "steps": steps, "context": context}).encode()
    return _SNAPSHOT_HEADER.pack(_SNAPSHOT, len(head)) + head + state


def unpack_snapshot(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(seq/steps/context fields, state bytes) of `pack_snapshot` bytes; bare state bytes give no fields."""
    data = bytes(data)
    if data[:8] != _SNAPSHOT:
        return {}, data
    if len(data) < _SNAPSHOT_HEADER.size:
        raise ValueError("snapshot bytes are truncated")
    _, n = _SNAPSHOT_HEADER.unpack_from(data)
    try:
        fields = json.loads(data[_SNAPSHOT_HEADER.size : _SNAPSHOT_HEADER.size + n])
        fields = {"seq": int(fields["seq"]), "steps": int(fields["steps"]), "context": str(fields["context"])}
    except (ValueError, KeyError, TypeError):
        raise ValueError("snapshot bytes are corrupt: bad header") from None
    return fields, data[_SNAPSHOT_HEADER.size + n :]
