"""Where live streams keep their state: one `StateStore` interface, three backends.

A stream's record holds its recurrent state (bytes written by `State.to_bytes`), its sequence
number, the outputs of its last step request and a version. Writes are compare-and-set on the
version, so that several threads, processes or hosts sharing a store never lose or double a step:
`commit` writes every record whose stored version is still the one it was computed from, all in
one atomic transaction, and reports the others.

    memory              in-process, bounded, least recently used streams evicted (counted)
    sqlite:///PATH      the embedded default: a real file in WAL mode, shared by processes on a host
    redis://HOST:PORT/DB  several processes or hosts; atomic updates in a Lua script; optional TTL
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit

__all__ = ["ModelMismatch", "StateStore", "StreamRecord", "open_store"]


@dataclass(frozen=True)
class StreamRecord:
    """What a store keeps per stream.

    Attributes:
        version: bumped by every write; a write succeeds only over the version it was computed from.
        seq: the sequence number the stream's next step request must carry.
        steps: time steps applied since the stream started (or was last reset).
        state: `State.to_bytes()` of the stream's single lane; None means the all-zero start state.
        context: JSON text the predictor keeps beside the state (series runs: transform, tail, phase).
        outputs: the outputs of the last step request, returned again when that request is retried.
        digest: a hash of the last step request's inputs, to tell a retry from a different request.
        updated_at: Unix time of the last write.
    """

    version: int
    seq: int = 0
    steps: int = 0
    state: bytes | None = None
    context: str = ""
    outputs: bytes | None = None
    digest: str = ""
    updated_at: float = 0.0

    def successor(self, **changes) -> StreamRecord:
        """The next version of this record, stamped now, with `changes` applied."""
        return replace(self, version=self.version + 1, updated_at=time.time(), **changes)


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
        """Backend counters worth exporting as metrics (the memory store's evictions)."""
        return {}

    def ping(self) -> None:
        """Raise if the store cannot be reached."""
        self.count()

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""


def open_store(url: str) -> StateStore:
    """A store from its URL: `memory[?max_streams=N]`, `sqlite:///PATH[?synchronous=normal]` (a relative
    path; four slashes for an absolute one) or `redis://HOST:PORT/DB[?ttl=SECONDS&prefix=P]`."""
    if not isinstance(url, str) or not url:
        raise ValueError("give a store URL: memory, sqlite:///PATH or redis://HOST:PORT/DB")
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    scheme = parts.scheme or parts.path
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(max_streams=_int_option(query, "max_streams", 100_000, url))
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        if not parts.path or parts.path == "/" or parts.netloc:
            raise ValueError(f"store URL {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return SQLiteStore(parts.path[1:], synchronous=query.get("synchronous", "full"))
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        base = url.split("?", 1)[0]
        return RedisStore(base, ttl=_int_option(query, "ttl", 0, url), prefix=query.get("prefix", "statefulrnn:"))
    raise ValueError(f"unknown store {url!r}: use memory, sqlite:///PATH or redis://HOST:PORT/DB")


def _int_option(query: dict[str, str], name: str, default: int, url: str) -> int:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"store URL {url!r}: {name} must be a whole number >= 0, got {query[name]!r}")
    return value
