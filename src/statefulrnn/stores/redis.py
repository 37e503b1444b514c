"""Redis store: several server processes or hosts share streams. One hash per stream; a commit is one
Lua script, which Redis runs atomically: it checks each stream's version and writes those that match."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .base import StateStore, StreamRecord

_FIELDS = (
    b"version",
    b"seq",
    b"steps",
    b"state",
    b"context",
    b"prior_state",
    b"prior_context",
    b"digest",
    b"width",
    b"updated_at",
)
_PER_RECORD = len(_FIELDS)

# KEYS: stream keys. ARGV[1]: TTL in seconds (0: none); then 10 values per key, in _FIELDS order.
# Returns the 1-based indexes of the keys whose stored version was not ARGV's version - 1. A write
# replaces the whole hash (DEL, then HSET), so fields of older versions (their stored outputs) go.
_COMMIT = """
local ttl = tonumber(ARGV[1])
local failed = {}
for i = 1, #KEYS do
    local base = 1 + (i - 1) * 10
    local stored = tonumber(redis.call('HGET', KEYS[i], 'version') or '0')
    if stored ~= tonumber(ARGV[base + 1]) - 1 then
        failed[#failed + 1] = i
    end
end
local skip = {}
for _, i in ipairs(failed) do skip[i] = true end
for i = 1, #KEYS do
    if not skip[i] then
        local base = 1 + (i - 1) * 10
        redis.call('DEL', KEYS[i])
        redis.call('HSET', KEYS[i], 'version', ARGV[base + 1], 'seq', ARGV[base + 2], 'steps', ARGV[base + 3],
            'state', ARGV[base + 4], 'context', ARGV[base + 5], 'prior_state', ARGV[base + 6],
            'prior_context', ARGV[base + 7], 'digest', ARGV[base + 8], 'width', ARGV[base + 9],
            'updated_at', ARGV[base + 10])
        if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
    end
end
return failed
"""


class RedisStore(StateStore):
    """Streams as hashes `PREFIX + id` on the Redis server at `url`; `ttl` > 0 expires idle streams."""

    def __init__(self, url: str, *, ttl: int = 0, prefix: str = "statefulrnn:", timeout: float = 10.0) -> None:
        try:
            import redis
        except ImportError:
            raise ValueError("the redis store needs the redis package: pip install 'statefulrnn[serve]'") from None
        if ttl < 0:
            raise ValueError(f"ttl must be >= 0 seconds, got {ttl}")
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except ValueError as e:
            raise ValueError(f"bad redis URL {url!r}: {e}") from None
        self.url = url + (f"?ttl={ttl}" if ttl else "")
        self.ttl = ttl
        self.prefix = prefix
        self._commit = self._redis.register_script(_COMMIT)

    def _key(self, stream_id: str) -> str:
        return self.prefix + "s:" + stream_id

    def get_many(self, ids: Iterable[str]) -> dict[str, StreamRecord]:
        ids = list(dict.fromkeys(ids))
        pipe = self._redis.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(self._key(i), _FIELDS)
        out = {}
        for i, values in zip(ids, pipe.execute()):
            if values[0] is not None:
                out[i] = _record(values)
        return out

    def commit(self, records: Mapping[str, StreamRecord]) -> set[str]:
        if not records:
            return set()
        ids = list(records)
        args: list = [self.ttl]
        for i in ids:
            r = records[i]
            args += [
                r.version,
                r.seq,
                r.steps,
                r.state or b"",
                r.context,
                b"" if r.prior_state is None else r.prior_state,
                r.prior_context,
                r.digest,
                r.width,
                repr(r.updated_at),
            ]
        failed = self._commit(keys=[self._key(i) for i in ids], args=args)
        return {ids[int(k) - 1] for k in failed}

    def delete(self, stream_id: str) -> bool:
        return bool(self._redis.delete(self._key(stream_id)))

    def count(self) -> int:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self._key("")) + "*"
        return sum(1 for _ in self._redis.scan_iter(match=pattern, count=1000))

    def ping(self) -> None:
        self._redis.ping()

    def _meta(self, key: str, value: str) -> str:
        name = self.prefix + "meta:" + key
        self._redis.set(name, value, nx=True)
        return self._redis.get(name).decode()

    def close(self) -> None:
        self._redis.close()


def _record(values: list[bytes | None]) -> StreamRecord:
    version, seq, steps, state, context, prior_state, prior_context, digest, width, updated_at = values
    return StreamRecord(
        version=int(version),
        seq=int(seq),
        steps=int(steps),
        state=state or None,
        context=(context or b"").decode(),
        prior_state=prior_state or None,
        prior_context=(prior_context or b"").decode(),
        digest=(digest or b"").decode(),
        width=int(width or 0),  # absent in hashes written by versions that stored outputs: no replay
        updated_at=float(updated_at or 0),
    )
