"""In-process store: a bounded LRU map. Fast, lost on exit, not shared between processes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from . import StateStore, StreamRecord


class MemoryStore(StateStore):
    """Keeps at most `max_streams` streams (0: no bound); writing a new one past the bound evicts
    the least recently used stream, and `evictions` counts them. An evicted stream starts over at seq 0."""

    def __init__(self, max_streams: int = 100_000) -> None:
        if max_streams < 0:
            raise ValueError(f"max_streams must be >= 0 (0: no bound), got {max_streams}")
        self.max_streams = max_streams
        self.evictions = 0
        self.url = f"memory?max_streams={max_streams}"
        self._records: OrderedDict[str, StreamRecord] = OrderedDict()
        self._meta_values: dict[str, str] = {}
        self._lock = threading.Lock()

    def get_many(self, ids: Iterable[str]) -> dict[str, StreamRecord]:
        out = {}
        with self._lock:
            for i in ids:
                record = self._records.get(i)
                if record is not None:
                    self._records.move_to_end(i)
                    out[i] = record
        return out

    def commit(self, records: Mapping[str, StreamRecord]) -> set[str]:
        with self._lock:
            failed = {i for i, r in records.items() if _version(self._records.get(i)) != r.version - 1}
            for i, r in records.items():
                if i not in failed:
                    self._records[i] = r
                    self._records.move_to_end(i)
            while self.max_streams and len(self._records) > self.max_streams:
                self._records.popitem(last=False)
                self.evictions += 1
        return failed

    def delete(self, stream_id: str) -> bool:
        with self._lock:
            return self._records.pop(stream_id, None) is not None

    def count(self) -> int:
        return len(self._records)

    def stats(self) -> dict[str, int]:
        return {"evictions": self.evictions}

    def _meta(self, key: str, value: str) -> str:
        with self._lock:
            return self._meta_values.setdefault(key, value)


def _version(record: StreamRecord | None) -> int:
    return 0 if record is None else record.version
