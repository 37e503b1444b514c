"""The embedded default store: one SQLite file in WAL mode, shared by the processes of one host.

Each `commit` is one `BEGIN IMMEDIATE` transaction that checks every record's version and writes
state, seq and stored outputs together. With `synchronous=full` (the default) a committed step
survives a crash of the process and of the machine; `normal` survives a crash of the process only.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import StateStore, StreamRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    state BLOB,
    context TEXT NOT NULL,
    outputs BLOB,
    digest TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "id, version, seq, steps, state, context, outputs, digest, updated_at"
_CHUNK = 500
SYNCHRONOUS = ("off", "normal", "full", "extra")


class SQLiteStore(StateStore):
    """Streams in the table `streams` of the SQLite file `path` (created if missing)."""

    def __init__(self, path: str | Path, *, synchronous: str = "full", timeout: float = 30.0) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS)}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"store path {self.path} is a directory; give a file name such as {self.path}/streams.db")
        if not self.path.parent.is_dir():
            raise ValueError(f"store directory {self.path.parent} does not exist")
        self.url = f"sqlite:///{self.path}"
        self.synchronous = synchronous
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        try:
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} is not a usable SQLite database: {e}") from None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as e:
                raise ValueError(f"cannot open SQLite store {self.path}: {e}") from None
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def get_many(self, ids: Iterable[str]) -> dict[str, StreamRecord]:
        ids = list(dict.fromkeys(ids))
        conn, out = self._conn(), {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_COLUMNS} FROM streams WHERE id IN ({marks})", chunk):
                out[row[0]] = _record(row)
        return out

    def commit(self, records: Mapping[str, StreamRecord]) -> set[str]:
        if not records:
            return set()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = {}
            ids = list(records)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                stored.update(conn.execute(f"SELECT id, version FROM streams WHERE id IN ({marks})", chunk))
            failed = {i for i, r in records.items() if stored.get(i, 0) != r.version - 1}
            conn.executemany(
                f"INSERT OR REPLACE INTO streams ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_row(i, r) for i, r in records.items() if i not in failed],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return failed

    def delete(self, stream_id: str) -> bool:
        return self._conn().execute("DELETE FROM streams WHERE id = ?", (stream_id,)).rowcount > 0

    def count(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM streams").fetchone()[0]

    def _meta(self, key: str, value: str) -> str:
        conn = self._conn()
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _row(stream_id: str, r: StreamRecord) -> tuple:
    return (stream_id, r.version, r.seq, r.steps, r.state, r.context, r.outputs, r.digest, r.updated_at)


def _record(row: tuple) -> StreamRecord:
    _, version, seq, steps, state, context, outputs, digest, updated_at = row
    return StreamRecord(
        version=version,
        seq=seq,
        steps=steps,
        state=None if state is None else bytes(state),
        context=context,
        outputs=None if outputs is None else bytes(outputs),
        digest=digest,
        updated_at=updated_at,
    )
