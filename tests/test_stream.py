"""StreamingPredictor: carried state per stream equals one offline pass; exactly-once seqs; fused batches."""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from statefulrnn.model import SequenceModel
from statefulrnn.runs import atomic_write, save_model
from statefulrnn.series import ForecastSpec, Series, model_inputs, n_inputs
from statefulrnn.series.transform import transforms_to_json
from statefulrnn.state import CELLS, State
from statefulrnn.stores import ModelMismatch
from statefulrnn.stores.sqlite import SQLiteStore
from statefulrnn.stream import SeqConflict, StepRequest, StreamingPredictor, TorchEngine, UnknownStream
from statefulrnn.text import Vocab

TEXT = "the quick brown fox jumps over the lazy dog.\n"
SPEC = ForecastSpec(horizon=3, season=4, seasonal_diff=True, diff=1, features=("temp",))


def make_text_run(path: Path, cell: str = "lstm", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vocab = Vocab.build(TEXT)
    model = SequenceModel(cell, vocab_size=len(vocab), hidden_size=16, num_layers=2, embedding_dim=8)
    save_model(path, model, {"task": "text"})
    vocab.save(path / "vocab.json")
    return path


def make_series(n: int = 120) -> Series:
    t = np.arange(n)
    values = 10 + 3 * np.sin(2 * np.pi * t / 4) + 0.05 * t + np.cos(t * 0.37)
    temp = np.cos(t * 0.11)[:, None]
    stamps = pd.date_range("2024-01-01", periods=n, freq="h")
    return Series("a", stamps, values, temp, ("temp",), freq="h")


def make_series_run(path: Path, series: Series) -> Path:
    torch.manual_seed(1)
    model = SequenceModel("gru", n_features=n_inputs(SPEC), n_outputs=SPEC.horizon, hidden_size=16, num_layers=2)
    save_model(path, model, {"task": "series", "forecast": asdict(SPEC), "data": {"read": {}}, "train": {"window": 8}})
    a = SPEC.transform().fit(series.values[:80], series.features[:80])
    b = SPEC.transform().fit(2 * series.values[:80], series.features[:80])
    atomic_write(path / "transforms.json", transforms_to_json({series.id: a, "b": b}).encode())
    return path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    return make_text_run(tmp_path_factory.mktemp("runs") / "text")


@pytest.fixture(scope="module")
def series() -> Series:
    return make_series()


@pytest.fixture(scope="module")
def series_run(tmp_path_factory, series) -> Path:
    return make_series_run(tmp_path_factory.mktemp("runs") / "series", series)


def offline(predictor: StreamingPredictor, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        out, _ = predictor.model(torch.tensor([ids]))
    return out[0].numpy()


def test_steps_in_chunks_equal_one_offline_pass(text_run):
    p = StreamingPredictor(text_run)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(p.vocab), 40).tolist()
    chunks, at = [], 0
    for size in (1, 5, 1, 13, 2, 18):
        chunks.append(p.step("s", ids[at : at + size]))
        at += size
    np.testing.assert_allclose(np.concatenate(chunks), offline(p, ids), atol=1e-5)
    assert p.info("s").seq == 6 and p.info("s").steps == 40


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_streams_like_one_offline_pass_and_replays_retries(tmp_path, cell, engine):
    """Each cell, the scan cells included: chunked calls of several streams batched together equal one
    offline pass per stream, and a retry replays the original outputs bit for bit."""
    p = StreamingPredictor(make_text_run(tmp_path / cell, cell), engine=engine)
    rng = np.random.default_rng(3)
    ids = {s: rng.integers(0, len(p.vocab), 30).tolist() for s in ("a", "b", "c")}
    got: dict[str, list[np.ndarray]] = {s: [] for s in ids}
    at = 0
    for seq, size in enumerate((1, 7, 1, 2, 19)):
        out = p.apply([StepRequest(s, p.check_inputs(ids[s][at : at + size]), seq=seq) for s in ids])
        for s, result in zip(ids, out):
            got[s].append(result.outputs)
        at += size
    for s in ids:
        np.testing.assert_allclose(np.concatenate(got[s]), offline(p, ids[s]), atol=1e-5)
    again = p.apply([StepRequest("b", p.check_inputs(ids["b"][11:]), seq=4)])[0]
    assert again.replayed and np.array_equal(again.outputs, got["b"][-1])


def test_step_many_is_one_engine_call_per_distinct_length(text_run):
    p = StreamingPredictor(text_run)
    calls = []

    class Counting(TorchEngine):
        def step(self, states, inputs):
            calls.append(tuple(inputs.shape))
            return super().step(states, inputs)

    p.engine = Counting(p.model)
    rng = np.random.default_rng(1)
    history = {f"s{i}": rng.integers(0, len(p.vocab), 3).tolist() for i in range(6)}
    p.step_many(history)
    more = {f"s{i}": rng.integers(0, len(p.vocab), 1 if i % 2 else 4).tolist() for i in range(6)}
    calls.clear()
    out = p.step_many(more)
    assert sorted(calls) == [(3, 1), (3, 4)]
    for i in range(6):
        np.testing.assert_allclose(out[f"s{i}"], offline(p, history[f"s{i}"] + more[f"s{i}"])[3:], atol=1e-5)


def test_a_retry_replays_stored_outputs_and_a_gap_is_a_conflict(text_run):
    p = StreamingPredictor(text_run)
    first = p.step("s", "the", seq=0)
    second = p.step("s", "fox", seq=1)
    snap = p.snapshot("s")
    again = p.apply([StepRequest("s", p.check_inputs("fox"), seq=1)])[0]
    assert again.replayed and again.seq == 2 and np.array_equal(again.outputs, second)
    assert p.snapshot("s") == snap
    with pytest.raises(SeqConflict, match="other inputs") as e:
        p.step("s", "dog", seq=1)
    assert e.value.expected == 2
    for bad in (0, 3, 7):
        with pytest.raises(SeqConflict) as e:
            p.step("s", "a", seq=bad)
        assert e.value.expected == 2
    np.testing.assert_allclose(
        np.concatenate([first, second]), offline(p, p.check_inputs("thefox").tolist()), atol=1e-5
    )


def test_reset_forget_snapshot_restore(text_run, tmp_path):
    p = StreamingPredictor(text_run)
    fresh = p.step("fresh", "dog")
    p.step("s", "the quick ")
    assert p.reset("s").seq == 1
    with pytest.raises(SeqConflict):
        p.step("s", "the quick ", seq=0)  # the reset cleared the stored outputs: no replay across it
    np.testing.assert_allclose(p.step("s", "dog", seq=1), fresh, atol=1e-6)
    snap = p.snapshot("s")
    q = StreamingPredictor(text_run, SQLiteStore(tmp_path / "streams.db"))
    q.restore("moved", snap)
    assert q.info("moved").seq == p.info("s").seq
    np.testing.assert_allclose(q.step("moved", "fox", seq=2), p.step("s", "fox", seq=2), atol=1e-6)
    state = State.from_bytes(snap[-len(p._zero.to_bytes()) :])
    q.restore("bare", state.to_bytes())
    assert q.info("bare").seq == 0
    with pytest.raises(ValueError):
        q.restore("bad", b"not a state")
    assert p.forget("s") and p.info("s") is None and not p.forget("s")
    p.step("s", "a", seq=0)


@pytest.mark.parametrize(
    "bad",
    [[], [1.5], [True, 2], [[1, 2]], ["a"], [10**30], [-1], [999], "", "~~~", None, {"a": 1}],
)
def test_bad_token_inputs_are_value_errors(text_run, bad):
    p = StreamingPredictor(text_run)
    with pytest.raises(ValueError):
        p.check_inputs(bad)


@pytest.mark.parametrize("bad", [[], [[1.0]], [[1.0, float("nan")]], [[1, 2, 3]], ["x"], [[True, 1.0]], [1e400], "1"])
def test_bad_series_inputs_are_value_errors(series_run, bad):
    p = StreamingPredictor(series_run)
    with pytest.raises(ValueError):
        p.check_inputs(bad)


def nested(depth: int, leaf=1.0) -> list:
    x = [leaf]
    for _ in range(depth):
        x = [x]
    return x


@pytest.mark.parametrize("depth", [2, 40, 400, 1000, 100_000])
def test_deeply_nested_inputs_are_one_line_value_errors_not_recursion(text_run, series_run, depth):
    """Fuzzing found nesting 323-989 deep raised RecursionError (a 500 and a 180 KB traceback)."""
    for run, shape in ((text_run, "token ids"), (series_run, "rows of 2 numbers")):
        p = StreamingPredictor(run)
        for bad in (nested(depth), [[1.0, 2.0], nested(depth)], [1, nested(depth)]):
            with pytest.raises(ValueError) as e:
                p.check_inputs(bad)
            assert shape in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 200


def test_series_inputs_take_numbers_or_rows_of_numbers_and_no_booleans(series_run):
    p = StreamingPredictor(series_run)
    assert p.check_inputs([[1, 2.5], (3, 4)]).tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert p.check_inputs(np.array([[1, 2]])).dtype == np.float64
    for bad, why in (
        ([[1.0, False]], "boolean"),
        ([[1.0, None]], "null"),
        ([1.0, 2.0], r"got shape \[2\]"),
        ([[1.0, 2.0], 3.0], "not a row"),
        ([[1.0, 2.0, 3.0]], "shape"),
    ):
        with pytest.raises(ValueError, match=why):
            p.check_inputs(bad)
    with pytest.raises(ValueError, match="out of range"):
        p.check_inputs([[10**400, 1.0]])


def test_reset_of_an_unknown_stream_raises_unknown_stream_and_creates_nothing(text_run):
    p = StreamingPredictor(text_run)
    with pytest.raises(UnknownStream) as e:
        p.reset("nobody")
    assert e.value.stream_id == "nobody" and p.info("nobody") is None and p.store.count() == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("length", [1, 40])
def test_retries_replay_the_outputs_whatever_batch_their_original_ran_in(text_run, length, threads):
    """A retry is recomputed from the prior state, in a call as wide as the original (idle lanes
    padding it). On one thread the bits depend only on the width of the call, so they are equal; on
    several, BLAS may split rows among threads by position, so they agree to float32 rounding."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p = StreamingPredictor(text_run)
        rng = np.random.default_rng(length)
        streams = [f"s{i}" for i in range(7)]
        p.step_many({s: rng.integers(0, len(p.vocab), 3).tolist() for s in streams})
        inputs = {s: rng.integers(0, len(p.vocab), length) for s in streams}
        first = p.apply([StepRequest(s, inputs[s], seq=1) for s in streams])
        records = {s: p.store.get(s) for s in streams}
        assert all(r.width == 7 for r in records.values())
        alone = p.apply([StepRequest("s3", inputs["s3"], seq=1)])[0]
        together = p.apply([StepRequest(s, inputs[s], seq=1) for s in ("s0", "s6", "s2")])
    finally:
        torch.set_num_threads(before)
    for got, want in [(alone, first[3]), *zip(together, (first[0], first[6], first[2]))]:
        assert got.replayed and not want.replayed and got.seq == want.seq == 2
        if threads == 1:
            assert np.array_equal(got.outputs, want.outputs)
        else:
            np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-5, atol=1e-6)
    assert {s: p.store.get(s) for s in streams} == records


def test_series_retries_replay_the_same_outputs_and_records_stay_bounded(series_run, series):
    p = StreamingPredictor(series_run)
    rows = np.column_stack([series.values, series.features])
    p.apply([StepRequest("a", rows[:2], seq=0), StepRequest("b", rows[:3], seq=0, series="b")])
    last = p.apply([StepRequest("a", rows[2:30], seq=1), StepRequest("b", rows[3:31], seq=1)])
    again = p.apply([StepRequest("b", rows[3:31], seq=1), StepRequest("a", rows[2:30], seq=1)])
    for got, want in zip(again, last[::-1]):
        assert got.replayed and np.array_equal(got.outputs, want.outputs, equal_nan=True)
    fresh = p.warm_up("c", rows[:50], seq=0)
    assert np.array_equal(p.warm_up("c", rows[:50], seq=0), fresh, equal_nan=True)
    p.warm_up("far", rows[:50], position=2**62 - 1)
    for stream in ("a", "b", "c", "far"):
        record = p.store.get(stream)
        assert 0 < record.nbytes <= p.max_record_bytes, (stream, record.nbytes, p.max_record_bytes)
    assert p.task_of_run.max_context_bytes < 1024 and p.max_record_bytes < 2 * p.state_bytes + 2048


def test_series_stream_equals_offline_forecasts_in_original_units(series_run, series):
    p = StreamingPredictor(series_run)
    t = p.transforms["a"]
    inputs, _ = model_inputs(series, t, SPEC)
    with torch.no_grad():
        z = p.model(torch.tensor(inputs[None], dtype=torch.float32))[0][0].double().numpy()
    reference = t.inverse_at(z, series.values, t.offset + 1 + np.arange(len(inputs)))
    head = Series("a", series.timestamps[:50], series.values[:50], series.features[:50], ("temp",), freq="h")
    rows = np.column_stack([series.values, series.features])
    got = [p.warm_up("a", head)]
    for start, stop in ((50, 51), (51, 70), (70, 71), (71, 120)):
        got.append(p.step("a", rows[start:stop].tolist()))
    got = np.concatenate(got)
    assert np.isnan(got[: t.offset]).all()
    np.testing.assert_allclose(got[t.offset :], reference, rtol=1e-4, atol=1e-4)
    forecast = p.forecast(rows.tolist(), series="a", position=0)
    np.testing.assert_allclose(forecast["forecast"], reference[-1], rtol=1e-4, atol=1e-4)


def test_a_cold_series_stream_fills_its_differencing_tail_first(series_run, series):
    p = StreamingPredictor(series_run)
    rows = np.column_stack([series.values, series.features])[:30]
    with pytest.raises(ValueError, match="not a series of the run"):
        p.step("cold", rows[:2].tolist())
    outs = [p.apply([StepRequest("cold", rows[i : i + 2], series="b")])[0].outputs for i in range(0, 30, 2)]
    out, offset = np.concatenate(outs), p.transforms["b"].offset
    assert np.isnan(out[:offset]).all() and np.isfinite(out[offset:]).all()
    warm = p.warm_up("fitted", rows)
    assert np.isnan(warm[:offset]).all() and np.isfinite(warm[offset:]).all()
    huge = np.column_stack([[0, 0, 0, 0, 1e300, -1e300, 1e300, 0], np.zeros(8)])
    result = p.apply([StepRequest("huge", huge, series="a")])[0]
    assert isinstance(result, ValueError) and "too large" in str(result)


def test_two_predictors_on_one_sqlite_file_never_lose_or_double_a_step(text_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    predictors = [StreamingPredictor(text_run, url), StreamingPredictor(text_run, url)]
    token = predictors[0].check_inputs("e").tolist()

    def client(p: StreamingPredictor) -> None:
        for _ in range(10):
            p.step("shared", token)

    threads = [threading.Thread(target=client, args=(predictors[i % 2],)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    info = predictors[1].info("shared")
    assert (info.seq, info.steps) == (60, 60)
    last = predictors[0].step("shared", token)
    np.testing.assert_allclose(last[-1], offline(predictors[0], token * 61)[-1], atol=1e-5)


def test_a_store_refuses_streams_of_another_model(text_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    StreamingPredictor(text_run, url).step("s", "the")
    other = make_text_run(tmp_path / "other", seed=5)
    with pytest.raises(ModelMismatch):
        StreamingPredictor(other, url)
