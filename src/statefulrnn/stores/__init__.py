"""Where live streams keep their state: one `StateStore` interface, three backends.

A stream's record holds its recurrent state (bytes written by `State.to_bytes`), its sequence
number, what a retry of its last step request needs (the state and context from before that
request, and the request's digest; never its outputs) and a version. Writes are compare-and-set
on the version, so that several threads, processes or hosts sharing a store never lose or double
a step: `commit` writes every record whose stored version is still the one it was computed from,
all in one atomic transaction, and reports the others.

    memory[?max_bytes=N&max_streams=N]
        in-process; bounded by bytes (default 1 GiB) and optionally by streams; the least
        recently used streams are evicted (counted)
    sqlite:///PATH[?synchronous=full&max_streams=N&ttl=SECONDS]
        the embedded default: a real file in WAL mode, shared by processes on a host; optional
        bound (least recently updated streams evicted) and TTL (idle streams expire), both counted
    redis://HOST:PORT/DB[?ttl=SECONDS&prefix=P]
        several processes or hosts; atomic updates in a Lua script; optional TTL
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .base import ModelMismatch, StateStore, StreamRecord

__all__ = ["ModelMismatch", "StateStore", "StreamRecord", "open_store"]

DEFAULT_MAX_BYTES = 1 << 30
_OPTIONS = {
    "memory": ("max_bytes", "max_streams"),
    "sqlite": ("synchronous", "max_streams", "ttl"),
    "redis": ("ttl", "prefix"),
}


def open_store(url: str) -> StateStore:
    """A store from its URL: `memory[?max_bytes=N&max_streams=N]`,
    `sqlite:///PATH[?synchronous=full&max_streams=N&ttl=SECONDS]` (a relative path; four slashes for
    an absolute one) or `redis://HOST:PORT/DB[?ttl=SECONDS&prefix=P]`. 0 means no bound / no TTL."""
    if not isinstance(url, str) or not url:
        raise ValueError("give a store URL: memory, sqlite:///PATH or redis://HOST:PORT/DB")
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    scheme = parts.scheme or parts.path
    kind = "redis" if scheme in ("redis", "rediss") else scheme
    if kind not in _OPTIONS:
        raise ValueError(f"unknown store {url!r}: use memory, sqlite:///PATH or redis://HOST:PORT/DB")
    unknown = sorted(set(query) - set(_OPTIONS[kind]))
    if unknown:
        raise ValueError(f"store URL {url!r}: unknown option {unknown[0]!r}; {kind} takes {', '.join(_OPTIONS[kind])}")
    if kind == "memory":
        from .memory import MemoryStore

        return MemoryStore(
            max_bytes=_int_option(query, "max_bytes", DEFAULT_MAX_BYTES, url),
            max_streams=_int_option(query, "max_streams", 0, url),
        )
    if kind == "sqlite":
        from .sqlite import SQLiteStore

        if not parts.path or parts.path == "/" or parts.netloc:
            raise ValueError(f"store URL {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return SQLiteStore(
            parts.path[1:],
            synchronous=query.get("synchronous", "full"),
            max_streams=_int_option(query, "max_streams", 0, url),
            ttl=_int_option(query, "ttl", 0, url),
        )
    from .redis import RedisStore

    base = url.split("?", 1)[0]
    return RedisStore(base, ttl=_int_option(query, "ttl", 0, url), prefix=query.get("prefix", "statefulrnn:"))


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
