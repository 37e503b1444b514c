"""The embedded default store: one SQLite file in WAL mode, shared by the processes of one host.

Each `commit` is one `BEGIN IMMEDIATE` transaction that checks every record's version and writes
state, seq and replay fields together. With `synchronous=full` (the default) a committed step
survives a crash of the process and of the machine; `normal` survives a crash of the process only.

`max_streams` > 0 bounds the streams: a commit that creates streams past it evicts the least
recently updated ones. `ttl` > 0 expires streams not updated for that many seconds: they read as
absent at once and are deleted by the next commit. Both are counted in `stats()` (by this process).

Files written by versions that kept each stream's last outputs (an `outputs` column) are upgraded
in place when opened: the replay columns are added and the stored outputs dropped (space is reused
by SQLite, the file does not shrink without VACUUM). A retry of a request made before the upgrade
is refused as a seq conflict; everything else carries on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .base import StateStore, StreamRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    state BLOB,
    context TEXT NOT NULL,
    prior_state BLOB,
    prior_context TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL,
    width INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INDEX = "CREATE INDEX IF NOT EXISTS streams_updated_at ON streams (updated_at)"
_UPGRADE = (
    "ALTER TABLE streams ADD COLUMN prior_state BLOB",
    "ALTER TABLE streams ADD COLUMN prior_context TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE streams ADD COLUMN width INTEGER NOT NULL DEFAULT 0",
    "UPDATE streams SET outputs = NULL",
)
_FIELDS = (
    "version",
    "seq",
    "steps",
    "state",
    "context",
    "prior_state",
    "prior_context",
    "digest",
    "width",
    "updated_at",
)
_COLUMNS = "id, " + ", ".join(_FIELDS)
_MARKS = ", ".join("?" * (1 + len(_FIELDS)))
_CHUNK = 500
SYNCHRONOUS = ("off", "normal", "full", "extra")


class SQLiteStore(StateStore):
    """Streams in the table `streams` of the SQLite file `path` (created if missing)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        max_streams: int = 0,
        ttl: float = 0,
        timeout: float = 30.0,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS)}")
        if max_streams < 0 or ttl < 0:
            raise ValueError(f"max_streams and ttl must be >= 0 (0: none), got {max_streams} and {ttl}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"store path {self.path} is a directory; give a file name such as {self.path}/streams.db")
        if not self.path.parent.is_dir():
            raise ValueError(f"store directory {self.path.parent} does not exist")
        options = [f"{k}={v}" for k, v in (("max_streams", max_streams), ("ttl", ttl)) if v]
        self.url = f"sqlite:///{self.path}" + ("?" + "&".join(options) if options else "")
        self.synchronous = synchronous
        self.max_streams = max_streams
        self.ttl = ttl
        self.timeout = timeout
        self.evictions = 0
        self.expirations = 0
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        try:
            conn.executescript(_SCHEMA)
            self._upgrade(conn)
            conn.execute(_INDEX)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path} is not a usable SQLite database: {e}") from None

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> None:
        """Add the replay columns to a file of a version that stored outputs, dropping the outputs."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(streams)")}
            if "width" not in columns:
                for statement in _UPGRADE if "outputs" in columns else _UPGRADE[:-1]:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

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

    def _cutoff(self) -> float:
        """Streams last updated before this are expired (-inf without a TTL)."""
        return time.time() - self.ttl if self.ttl else float("-inf")

    def get_many(self, ids: Iterable[str]) -> dict[str, StreamRecord]:
        ids = list(dict.fromkeys(ids))
        conn, out, cutoff = self._conn(), {}, self._cutoff()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {_COLUMNS} FROM streams WHERE id IN ({marks}) AND updated_at >= ?"
            for row in conn.execute(query, [*chunk, cutoff]):
                out[row[0]] = _record(row)
        return out

    def commit(self, records: Mapping[str, StreamRecord]) -> set[str]:
        if not records:
            return set()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            expired = self._expire(conn)
            stored = {}
            ids = list(records)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                stored.update(conn.execute(f"SELECT id, version FROM streams WHERE id IN ({marks})", chunk))
            failed = {i for i, r in records.items() if stored.get(i, 0) != r.version - 1}
            rows = [_row(i, r) for i, r in records.items() if i not in failed]
            conn.executemany(f"INSERT OR REPLACE INTO streams ({_COLUMNS}) VALUES ({_MARKS})", rows)
            evicted = 0
            if self.max_streams and any(row[0] not in stored for row in rows):
                excess = conn.execute("SELECT COUNT(*) FROM streams").fetchone()[0] - self.max_streams
                if excess > 0:
                    evicted = conn.execute(
                        "DELETE FROM streams WHERE id IN (SELECT id FROM streams ORDER BY updated_at LIMIT ?)",
                        (excess,),
                    ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        with self._lock:
            self.expirations += expired
            self.evictions += evicted
        return failed

    def _expire(self, conn: sqlite3.Connection) -> int:
        if not self.ttl:
            return 0
        return conn.execute("DELETE FROM streams WHERE updated_at < ?", (self._cutoff(),)).rowcount

    def delete(self, stream_id: str) -> bool:
        cur = self._conn().execute("DELETE FROM streams WHERE id = ? AND updated_at >= ?", (stream_id, self._cutoff()))
        return cur.rowcount > 0

    def count(self) -> int:
        return (
            self._conn().execute("SELECT COUNT(*) FROM streams WHERE updated_at >= ?", (self._cutoff(),)).fetchone()[0]
        )

    def stats(self) -> dict[str, int]:
        return {"evictions": self.evictions, "expirations": self.expirations}

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
    return (stream_id, *(getattr(r, name) for name in _FIELDS))


def _record(row: tuple) -> StreamRecord:
    _, version, seq, steps, state, context, prior_state, prior_context, digest, width, updated_at = row
    return StreamRecord(
        version=version,
        seq=seq,
        steps=steps,
        state=None if state is None else bytes(state),
        context=context,
        prior_state=None if prior_state is None else bytes(prior_state),
        prior_context=prior_context,
        digest=digest,
        width=width,
        updated_at=updated_at,
    )
