"""State stores: compare-and-set commits, atomic batches, eviction, TTL, durability, URLs, upgrades of old records;
on real SQLite and Redis (the `redis_url` fixture of tests/conftest.py runs a real redis-server)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest

from statefulrnn.stores import ModelMismatch, StateStore, StreamRecord, open_store
from statefulrnn.stores.memory import MemoryStore, entry_bytes
from statefulrnn.stores.sqlite import SQLiteStore


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
    fields = {"prior_state": b"prior", "prior_context": "{}", "digest": "d", "width": 3, **kw}
    return StreamRecord(version=version, seq=seq, steps=seq, state=state, **fields)


def test_commit_is_compare_and_set_on_the_version(store):
    assert store.commit({"a": record(1)}) == set()
    assert store.commit({"a": record(1, seq=9)}) == {"a"}
    assert store.commit({"a": record(3)}) == {"a"}
    assert store.get("a").seq == 0
    assert store.commit({"a": record(2, seq=1, state=None)}) == set()
    got = store.get("a")
    assert (got.version, got.seq, got.state, got.digest, got.width) == (2, 1, None, "d", 3)
    assert (got.prior_state, got.prior_context, got.replayable) == (b"prior", "{}", True)
    assert store.commit({"a": got.successor(prior_state=None, prior_context="", digest="", width=0)}) == set()
    got = store.get("a")
    assert (got.prior_state, got.prior_context, got.digest, got.width, got.replayable) == (None, "", "", 0, False)
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
    [
        "",
        "postgres://x",
        "sqlite://",
        "sqlite:///",
        "memory?max_streams=-1",
        "memory?max_bytes=1GiB",
        "memory?max_stream=5",
        "redis://h:1/0?ttl=x",
        "redis://h:1/0?max_streams=3",
        "sqlite://host/x",
        "sqlite:///x.db?max_streams=-2",
        "sqlite:///x.db?ttl=1.5",
        "sqlite:///x.db?synchronous=sometimes",
    ],
)
def test_bad_store_urls_are_one_line_value_errors(url):
    with pytest.raises(ValueError) as e:
        open_store(url)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_store_urls(tmp_path):
    assert isinstance(open_store("memory"), MemoryStore)
    assert open_store("memory?max_streams=5").max_streams == 5
    assert (open_store("memory").max_bytes, open_store("memory").max_streams) == (1 << 30, 0)
    assert open_store("memory?max_bytes=5000").max_bytes == 5000
    bounded = open_store(f"sqlite:///{tmp_path}/b.db?max_streams=3&ttl=60")
    assert (bounded.max_streams, bounded.ttl, bounded.url) == (3, 60, f"sqlite:///{tmp_path}/b.db?max_streams=3&ttl=60")
    with pytest.raises(ValueError, match="unknown option 'max_stream'; memory takes max_bytes, max_streams"):
        open_store("memory?max_stream=5")
    s = open_store(f"sqlite:///{tmp_path}/x.db?synchronous=normal")
    assert s.path == tmp_path / "x.db" and s.synchronous == "normal"
    with pytest.raises(ValueError, match="directory"):
        open_store(f"sqlite:///{tmp_path}")
    with pytest.raises(ValueError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_memory_store_is_bounded_by_bytes_evicting_the_least_recently_used(tmp_path):
    one = entry_bytes("a", record(1))
    s = MemoryStore(max_bytes=3 * one)
    for i in "abc":
        s.commit({i: record(1)})
    assert s.nbytes == 3 * one and s.evictions == 0
    s.get("a")
    s.commit({"d": record(1)})
    assert set(s.get_many("abcd")) == {"a", "c", "d"} and s.stats() == {"evictions": 1} and s.nbytes <= 3 * one
    s.commit({"a": record(2, state=b"x" * 2 * one)})  # a record grows: older streams make room for it
    assert set(s.get_many("abcd")) == {"a"} and s.evictions == 3 and s.nbytes == entry_bytes("a", s.get("a"))
    assert s.delete("a") and s.nbytes == 0


def test_sqlite_max_streams_evicts_the_least_recently_updated_and_counts(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 's.db'}?max_streams=2")
    s.commit({"a": record(1, updated_at=10.0)})
    s.commit({"b": record(1, updated_at=20.0)})
    s.commit({"a": record(2, updated_at=30.0)})  # an update of a held stream evicts nothing
    assert s.count() == 2 and s.stats() == {"evictions": 0, "expirations": 0}
    s.commit({"c": record(1, updated_at=40.0), "d": record(1, updated_at=50.0)})
    assert set(s.get_many("abcd")) == {"c", "d"} and s.stats()["evictions"] == 2
    assert SQLiteStore(tmp_path / "s.db").count() == 2  # gone from the file, not only hidden


def test_sqlite_ttl_expires_idle_streams_and_counts(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 's.db'}?ttl=100")
    now = time.time()
    s.commit({"old": record(1, updated_at=now - 200), "new": record(1, updated_at=now)})
    assert s.get("old") is None and s.count() == 1 and not s.delete("old")  # expired streams read as absent
    assert s.commit({"old": record(1, updated_at=now)}) == set()  # and a new stream may take the id
    assert s.get("old").version == 1 and s.stats() == {"evictions": 0, "expirations": 1}
    raw = sqlite3.connect(tmp_path / "s.db").execute("SELECT COUNT(*) FROM streams").fetchone()[0]
    assert raw == 2


def test_an_old_sqlite_file_that_kept_outputs_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE streams (id TEXT PRIMARY KEY, version INTEGER NOT NULL, seq INTEGER NOT NULL,
            steps INTEGER NOT NULL, state BLOB, context TEXT NOT NULL, outputs BLOB, digest TEXT NOT NULL,
            updated_at REAL NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO streams VALUES ('a', 4, 4, 9, x'0102', '', zeroblob(100000), 'abc', 1.0);
        """
    )
    conn.close()
    s = SQLiteStore(path)
    got = s.get("a")
    assert (got.version, got.seq, got.steps, got.state, got.digest) == (4, 4, 9, b"\x01\x02", "abc")
    assert not got.replayable  # its retry would need outputs it no longer has: a seq conflict, never wrong outputs
    assert sqlite3.connect(path).execute("SELECT outputs FROM streams").fetchone()[0] is None
    assert s.commit({"a": got.successor(seq=5)}) == set() and s.get("a").seq == 5
    assert SQLiteStore(path).get("a").seq == 5  # opening an upgraded file again changes nothing


def test_an_old_redis_hash_that_kept_outputs_is_read_without_replay_and_replaced(redis_url):
    s = open_store(redis_url + "?prefix=old:")
    fields = {"version": 2, "seq": 2, "steps": 5, "state": b"st", "context": "", "outputs": b"o" * 1000}
    s._redis.hset("old:s:a", mapping={**fields, "digest": "abc", "updated_at": 1.0})
    got = s.get("a")
    assert (got.version, got.seq, got.state, got.digest, got.replayable) == (2, 2, b"st", "abc", False)
    assert s.commit({"a": got.successor(seq=3)}) == set()
    assert s._redis.hget("old:s:a", "outputs") is None and s.get("a").seq == 3


@pytest.fixture(scope="module")
def big_vocab_run(tmp_path_factory):
    """A 2x256 LSTM text run on a 3,000-character vocabulary: 12 KB of logits per step."""
    import torch

    from statefulrnn.model import SequenceModel
    from statefulrnn.runs import save_model
    from statefulrnn.text import Vocab

    path = tmp_path_factory.mktemp("runs") / "big"
    vocab = Vocab.build("".join(chr(0x4E00 + i) for i in range(3000)))
    torch.manual_seed(0)
    model = SequenceModel("lstm", vocab_size=len(vocab), hidden_size=256, num_layers=2, embedding_dim=16)
    save_model(path, model, {"task": "text"})
    vocab.save(path / "vocab.json")
    return path


def stored_bytes(store: StateStore, stream_id: str) -> int:
    """What the backend itself spends on one stream."""
    if isinstance(store, MemoryStore):
        return entry_bytes(stream_id, store.get(stream_id))
    if isinstance(store, SQLiteStore):
        return store.path.stat().st_size + store.path.with_name(store.path.name + "-wal").stat().st_size
    return store._redis.memory_usage(store._key(stream_id), samples=0)


def test_a_long_request_on_a_large_vocabulary_keeps_a_bounded_record_and_replays_exactly(store, big_vocab_run):
    import numpy as np

    from statefulrnn.stream import SeqConflict, StepRequest, StreamingPredictor

    p = StreamingPredictor(big_vocab_run, store)
    assert p.max_record_bytes == 2 * (28 + 2 * 2 * 256 * 4) + 32 + 40 < 256 * 1024
    rng = np.random.default_rng(0)
    head, ids = rng.integers(0, len(p.vocab), 5), rng.integers(0, len(p.vocab), 4096)
    p.step("s", head, seq=0)
    before = stored_bytes(store, "s")
    outputs = p.step("s", ids, seq=1)
    assert outputs.nbytes > 40_000_000  # what the store used to keep for this stream
    record = store.get("s")
    assert record.nbytes <= p.max_record_bytes and record.seq == 2 and record.width == 1
    after = stored_bytes(store, "s")
    assert (after - before if isinstance(store, SQLiteStore) else after) < 256 * 1024, (before, after)

    again = p.apply([StepRequest("s", p.check_inputs(ids), seq=1)])[0]
    assert again.replayed and (again.seq, again.steps) == (2, 4101)
    assert np.array_equal(again.outputs, outputs)  # the same bits, recomputed from the prior state
    assert store.get("s") == record  # nothing written: the state did not move
    for seq, inputs, why in ((1, ids[:-1], "other inputs"), (0, head, "already applied"), (3, head, "missing")):
        result = p.apply([StepRequest("s", p.check_inputs(inputs), seq=seq)])[0]
        assert isinstance(result, SeqConflict) and result.expected == 2 and why in str(result)
    assert store.get("s") == record
