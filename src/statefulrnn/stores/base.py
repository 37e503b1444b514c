"""The `StateStore` interface and the record it keeps per stream; the backends import these."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

__all__ = ["RECORD_FIXED_BYTES", "ModelMismatch", "StateStore", "StreamRecord"]

# version, seq, steps, width and updated_at, counted as 8 bytes each by `StreamRecord.nbytes`
RECORD_FIXED_BYTES = 5 * 8


@dataclass(frozen=True)
class StreamRecord:
    """What a store keeps per stream.

    Exactly-once replay keeps no outputs: a retry of the last step request is answered by running
    that request again from `prior_state` and `prior_context` (what the stream held before it), in
    a fused call of the same `width` (bit for bit on one CPU thread, to float32 rounding on several).
    A record's size therefore depends on the model (its state) and, for series runs, on the
    transform and differencing tail, never on how long a request was or how large the vocabulary is.

    Attributes:
        version: bumped by every write; a write succeeds only over the version it was computed from.
        seq: the sequence number the stream's next step request must carry.
        steps: time steps applied since the stream started (or was last reset).
        state: `State.to_bytes()` of the stream's single lane; None means the all-zero start state.
        context: JSON text the predictor keeps beside the state (series runs: transform, tail, phase).
        prior_state: `state` before the last step request (None: the all-zero state).
        prior_context: `context` before the last step request.
        digest: a hash of the last step request's inputs, to tell a retry from a different request.
        width: lanes of the fused model call that ran the last step request; 0 when the last request
            cannot be replayed (none yet, a reset or restore since, or a record written by an older
            version that kept outputs instead).
        updated_at: Unix time of the last write.
    """

    version: int
    seq: int = 0
    steps: int = 0
    state: bytes | None = None
    context: str = ""
    prior_state: bytes | None = None
    prior_context: str = ""
    digest: str = ""
    width: int = 0
    updated_at: float = 0.0

    def successor(self, **changes) -> StreamRecord:
        """The next version of this record, stamped now, with `changes` applied."""
        return replace(self, version=self.version + 1, updated_at=time.time(), **changes)

    @property
    def replayable(self) -> bool:
        """Whether a retry of the last step request can be answered."""
        return self.width > 0 and bool(self.digest)

    @property
    def nbytes(self) -> int:
        """The record's payload: its byte and text fields plus 8 bytes per number (no store overhead)."""
        return (
            len(self.state or b"")
            + len(self.prior_state or b"")
            + len(self.context.encode())
            + len(self.prior_context.encode())
            + len(self.digest)
            + RECORD_FIXED_BYTES
        )


class ModelMismatch(ValueError):
    """The store already holds streams of a different model."""


class StateStore(ABC):
    """Stream records keyed by stream id, written with compare-and-set on `StreamRecord.version`."""

    url: str = ""

    @abstractmethod
    def get_many(self, ids: Iterable[str]) -> dict[str, StreamRecord]:
        """The records of those of `ids` that exist."""

    @abstractmethod
    def commit(self, records: Mapping[str, StreamRecord]) -> set[str]:
        """Write, in one atomic transaction, every record whose stored version is `record.version - 1`
        (0 for a stream that does not exist); return the ids whose stored version had moved on."""

    @abstractmethod
    def delete(self, stream_id: str) -> bool:
        """Remove a stream; False if it did not exist."""

    @abstractmethod
    def count(self) -> int:
        """How many streams the store holds."""

    @abstractmethod
    def _meta(self, key: str, value: str) -> str:
        """Set `key` to `value` unless it is set; return the stored value."""

    def get(self, stream_id: str) -> StreamRecord | None:
        """One stream's record, or None."""
        return self.get_many([stream_id]).get(stream_id)

    def bind_model(self, fingerprint: str) -> None:
        """Tie the store to one model: states of another model would be read as garbage."""
        stored = self._meta("model", fingerprint)
        if stored != fingerprint:
            raise ModelMismatch(
                f"the store {self.url} holds streams of another model (fingerprint {stored[:12]}, this run's is "
                f"{fingerprint[:12]}): use a new store for this run"
            )

    def stats(self) -> dict[str, int]:
        """Backend counters worth exporting as metrics (streams evicted for a bound, expired for a TTL)."""
        return {}

    def ping(self) -> None:
        """Raise if the store cannot be reached."""
        self.count()

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""
