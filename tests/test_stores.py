"""State stores: compare-and-set commits, atomic batches, eviction, durability, URLs; on real SQLite and Redis."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from statefulrnn.stores import ModelMismatch, StateStore, StreamRecord, open_store
from statefulrnn.stores.memory import MemoryStore
from statefulrnn.stores.sqlite import SQLiteStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir) -> tuple[subprocess.Popen, str]:
    """A real redis-server on a free port; skipped where it is absent, unless CI is set."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run installs it with apt")
        pytest.skip("redis-server is not installed")
    import redis

    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path) -> Iterator[StateStore]:
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'streams.db'}")
    else:
        s = open_store(request.getfixturevalue("redis_url") + f"?prefix={request.node.name}:")
    yield s
    s.close()


def record(version: int, seq: int = 0, state: bytes | None = b"state", **kw) -> StreamRecord:
    return StreamRecord(version=version, seq=seq, steps=seq, state=state, outputs=b"out", digest="d", **kw)


def test_commit_is_compare_and_set_on_the_version(store):
    assert store.commit({"a": record(1)}) == set()
    assert store.commit({"a": record(1, seq=9)}) == {"a"}
    assert store.commit({"a": record(3)}) == {"a"}
    assert store.get("a").seq == 0
    assert store.commit({"a": record(2, seq=1, state=None)}) == set()
    got = store.get("a")
    assert (got.version, got.seq, got.state, got.outputs, got.digest) == (2, 1, None, b"out", "d")
    assert store.get("missing") is None


def test_a_batch_commits_the_current_records_and_reports_the_stale(store):
    store.commit({"a": record(1), "b": record(1)})
    failed = store.commit({"a": record(2, seq=1), "b": record(5), "c": record(1, context='{"x": 1}')})
    assert failed == {"b"}
    got = store.get_many(["a", "b", "c", "nope"])
    assert (got["a"].seq, got["b"].version, got["c"].context) == (1, 1, '{"x": 1}')
    assert set(got) == {"a", "b", "c"} and store.count() == 3
    assert store.delete("a") and not store.delete("a") and store.count() == 2


def test_threads_incrementing_through_compare_and_set_lose_nothing(store):
    def bump(n: int) -> None:
        for _ in range(n):
            while True:
                cur = store.get("n") or StreamRecord(version=0)
                if not store.commit({"n": cur.successor(seq=cur.seq + 1)}):
                    break

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("n").seq == 100


def test_a_store_is_bound_to_one_model(store):
    store.bind_model("abc")
    store.bind_model("abc")
    with pytest.raises(ModelMismatch):
        store.bind_model("xyz")


def test_memory_store_evicts_the_least_recently_used_and_counts(tmp_path):
    s = MemoryStore(max_streams=2)
    s.commit({"a": record(1)})
    s.commit({"b": record(1)})
    s.get("a")
    s.commit({"c": record(1)})
    assert set(s.get_many(["a", "b", "c"])) == {"a", "c"} and s.evictions == 1 and s.stats() == {"evictions": 1}


def test_sqlite_is_a_wal_file_that_survives_reopening_and_is_shared(tmp_path):
    path = tmp_path / "s.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    one.commit({"a": record(1, seq=1)})
    assert two.get("a").seq == 1
    assert two.commit({"a": record(1)}) == {"a"}
    one.close()
    two.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert SQLiteStore(path).get("a").seq == 1


def test_redis_ttl_expires_streams(redis_url):
    s = open_store(redis_url + "?ttl=100&prefix=ttl:")
    s.commit({"a": record(1)})
    assert 0 < s._redis.ttl("ttl:s:a") <= 100
    assert s.get("a").version == 1


@pytest.mark.parametrize(
    "url",
    ["", "postgres://x", "sqlite://", "sqlite:///", "memory?max_streams=-1", "redis://h:1/0?ttl=x", "sqlite://host/x"],
)
def test_bad_store_urls_are_value_errors(url):
    with pytest.raises(ValueError):
        open_store(url)


def test_store_urls(tmp_path):
    assert isinstance(open_store("memory"), MemoryStore)
    assert open_store("memory?max_streams=5").max_streams == 5
    s = open_store(f"sqlite:///{tmp_path}/x.db?synchronous=normal")
    assert s.path == tmp_path / "x.db" and s.synchronous == "normal"
    with pytest.raises(ValueError, match="directory"):
        open_store(f"sqlite:///{tmp_path}")
    with pytest.raises(ValueError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/x.db")
