"""Forecasting runs: splits, leakage-free framing, pack isolation, forecast_rows, end-to-end runs,
transform inversion in the forecast path and the seasonal-naive baseline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from statefulrnn.files import jsonable
from statefulrnn.layout import PackLayout, as_sequences
from statefulrnn.model import SequenceModel
from statefulrnn.series import forecast as fc
from statefulrnn.series import select as sel
from statefulrnn.series import train as tr
from statefulrnn.series.data import Series, SeriesSet
from statefulrnn.series.features import model_inputs, n_inputs
from statefulrnn.series.forecast import (
    backtest_series,
    evaluate_series_run,
    forecast_rows,
    forecast_run,
    load_series_run,
    origin_forecasts,
    rolling_forecasts,
)
from statefulrnn.series.metrics import mae
from statefulrnn.series.read import read_series
from statefulrnn.series.spec import ForecastSpec
from statefulrnn.series.train import calibrate_intervals, train_series
from statefulrnn.series.transform import transforms_from_json
from statefulrnn.train import TrainConfig

SEASON = 8
FEW = settings(max_examples=12, deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


# --- synthetic data --------------------------------------------------------------------------------
def _values(n: int, seed: int = 0, level: float = 10.0) -> np.ndarray:
    """Sine with a daily season of 8 steps, a slight trend and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return level + 2 * np.sin(2 * np.pi * t / SEASON + seed) + 0.01 * t + rng.normal(0, 0.2, n)


def _series(n: int = 300, seed: int = 0, sid: str | None = None, values: np.ndarray | None = None) -> Series:
    values = _values(n, seed, 10.0 + 3 * seed) if values is None else values
    stamps = pd.date_range("2024-01-01", periods=len(values), freq="h").to_numpy()
    return Series(sid or f"s{seed}", stamps, values, freq="h")


def _set(lengths=(300, 260, 340)) -> SeriesSet:
    return SeriesSet(tuple(_series(n, seed=k) for k, n in enumerate(lengths)), target="y")


def _write_csv(data: SeriesSet, path) -> None:
    data.to_frame().to_csv(path, index=False)


def _model(spec: ForecastSpec, seed: int = 0, cell: str = "lstm", hidden: int = 8) -> SequenceModel:
    torch.manual_seed(seed)
    return SequenceModel(cell, n_features=n_inputs(spec), n_outputs=spec.horizon, hidden_size=hidden, num_layers=1)


def _run_alone(model: SequenceModel, x: np.ndarray) -> np.ndarray:
    """Outputs of the model on x (T, F) from zero state, as float64 numpy (T, H)."""
    with torch.no_grad():
        out, _ = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
    return out[0].double().numpy()


def _training_parts(s: Series, spec: ForecastSpec, window: int):
    """What train_series feeds the trainer for one series: (train inputs, train targets), (val ...)."""
    val_start, test_start = spec.splits(s, window)
    t = spec.transform().fit(s.values[:val_start])
    inputs, targets = model_inputs(s, t, spec)
    train = tr._masked(inputs, targets, t.offset, 0, val_start, val_start)
    val = tr._masked(inputs, targets, t.offset, val_start, test_start, test_start)
    return t, train, val


def _target_index(offset: int, rows: int, horizon: int) -> np.ndarray:
    """Original index of the value each target entry (row r, step h) refers to."""
    return offset + 1 + np.arange(rows)[:, None] + np.arange(horizon)[None, :]


def _with(s: Series, values: np.ndarray) -> Series:
    return Series(s.id, s.timestamps, values, s.features, s.feature_names, s.freq, s.filled)


# --- ForecastSpec ------------------------------------------------------------------------------------
def test_splits_put_validation_and_test_windows_at_the_end():
    spec = ForecastSpec(horizon=6, season=SEASON, test_windows=2, val_windows=3)
    assert spec.splits(_series(300), window=16) == (300 - 5 * 6, 300 - 2 * 6)


@FEW
@given(
    horizon=st.integers(1, 6),
    season=st.integers(1, 9),
    windows=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    window=st.integers(1, 20),
    diff=st.integers(0, 2),
    seasonal_diff=st.booleans(),
)
def test_splits_accept_the_shortest_series_and_reject_one_step_less(
    horizon, season, windows, window, diff, seasonal_diff
):
    spec = ForecastSpec(
        horizon=horizon, season=season, diff=diff, seasonal_diff=seasonal_diff, test_windows=windows[0],
        val_windows=windows[1],
    )  # fmt: skip
    need = spec.transform().offset + max(window, 2 * season, 2) + 1
    shortest = need + sum(windows) * horizon
    val_start, test_start = spec.splits(_series(shortest, sid="ok"), window)
    assert val_start == need and test_start == shortest - windows[0] * horizon
    with pytest.raises(ValueError) as e:
        spec.splits(_series(shortest - 1, sid="tiny-7"), window)
    message = str(e.value)
    assert "series 'tiny-7'" in message and f"{shortest - 1} steps" in message and f"{need} needed" in message
    assert "fewer windows" in message and "shorter horizon" in message and "drop the series" in message
    assert "\n" not in message


def test_a_series_far_too_short_reports_zero_training_steps_not_a_negative_count():
    spec = ForecastSpec(horizon=6, season=SEASON)
    with pytest.raises(ValueError, match=r"series 'stub' has 20 steps; .* leave 0 for training"):
        spec.splits(_series(20, sid="stub"), window=16)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"horizon": 0}, "horizon must be an integer >= 1"),
        ({"horizon": 6, "season": 0}, "season must be"),
        ({"horizon": 6, "test_windows": -1}, "test_windows must be"),
        ({"horizon": 6, "seasonal_diff": -2}, "seasonal_diff must be"),
        ({"horizon": 6, "diff": 3}, "diff must be 0, 1 or 2"),
        ({"horizon": 6, "scale": "log"}, "scale=.log. is not one of"),
        ({"horizon": 6, "interval": 1.0}, r"interval must be a coverage in \[0, 1\)"),
        ({"horizon": 2.5}, "horizon must be an integer"),
    ],
)
def test_spec_rejects_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        ForecastSpec(**bad)


def test_n_inputs_counts_value_features_and_phase():
    assert n_inputs(ForecastSpec(horizon=3, season=SEASON)) == 3
    assert n_inputs(ForecastSpec(horizon=3, season=SEASON, phase=False)) == 1
    assert n_inputs(ForecastSpec(horizon=3, season=1)) == 1  # no phase without a season
    assert n_inputs(ForecastSpec(horizon=3, season=SEASON, features=("a", "b"))) == 5


# --- framing: no leakage -----------------------------------------------------------------------------
spec_kinds = st.fixed_dictionaries(
    {
        "horizon": st.integers(1, 12),
        "diff": st.integers(0, 2),
        "seasonal_diff": st.booleans(),
        "scale": st.sampled_from(["minmax", "standard", "none"]),
        "phase": st.booleans(),
    }
)


@FEW
@given(kind=spec_kinds, seed=st.integers(0, 50))
def test_training_sequences_never_read_values_at_or_after_val_start(kind, seed):
    spec = ForecastSpec(season=SEASON, test_windows=2, val_windows=3, **kind)
    s = _series(240, seed=seed)
    val_start, test_start = spec.splits(s, 16)
    t, (x, y), _ = _training_parts(s, spec, 16)

    # every target kept refers to a value before val_start, and the last one before it is kept
    idx = _target_index(t.offset, len(y), spec.horizon)
    assert np.isfinite(y).any() and (idx[np.isfinite(y)] < val_start).all()
    assert np.isfinite(y[idx == val_start - 1]).all()
    assert len(x) == val_start - t.offset  # inputs stop at the last training value

    corrupted = s.values.copy()
    corrupted[val_start:] = np.random.default_rng(seed).normal(1e6, 1e5, len(s) - val_start)
    t2, (x2, y2), _ = _training_parts(_with(s, corrupted), spec, 16)
    assert (t2.center, t2.spread) == (t.center, t.spread)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)  # NaN in the same places, every other entry identical

    # the check is sensitive: corrupting the last training value does change the training data
    touched = s.values.copy()
    touched[val_start - 1] += 100.0
    _, (x3, y3), _ = _training_parts(_with(s, touched), spec, 16)
    assert not (np.array_equal(x3, x) and np.array_equal(y3, y, equal_nan=True))


@FEW
@given(kind=spec_kinds, seed=st.integers(0, 50))
def test_validation_targets_lie_in_the_validation_part_only(kind, seed):
    spec = ForecastSpec(season=SEASON, test_windows=2, val_windows=3, **kind)
    s = _series(240, seed=seed)
    val_start, test_start = spec.splits(s, 16)
    t, _, (x, y) = _training_parts(s, spec, 16)
    idx = _target_index(t.offset, len(y), spec.horizon)
    finite = np.isfinite(y)
    assert len(x) == test_start - t.offset  # the state is warmed over the training part
    assert ((idx[finite] >= val_start) & (idx[finite] < test_start)).all()
    assert finite[(idx >= val_start) & (idx < test_start)].all()  # and every validation value is used

    corrupted = s.values.copy()
    corrupted[test_start:] = -1e9
    _, _, (x2, y2) = _training_parts(_with(s, corrupted), spec, 16)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


class _Stop(Exception):
    pass


def _captured_training_data(data: SeriesSet, spec: ForecastSpec, tmp_path, monkeypatch):
    """The Sequences train_series hands to `pack_layout` (training stopped right there)."""
    seen = {}

    def capture(train, config):
        seen["train"] = train
        raise _Stop

    monkeypatch.setattr(tr, "pack_layout", capture)
    config = TrainConfig(lanes=4, window=16, epochs=1)
    with pytest.raises(_Stop):
        train_series(data, tmp_path / "run", spec, config=config, device="cpu", progress=False)
    return seen["train"]


def test_train_series_feeds_the_trainer_nothing_from_after_val_start(tmp_path, monkeypatch):
    spec = ForecastSpec(horizon=6, season=SEASON, diff=1, seasonal_diff=True, test_windows=2, val_windows=3)
    data = _set()
    before = _captured_training_data(data, spec, tmp_path, monkeypatch)
    corrupted = []
    for s in data:
        val_start, _ = spec.splits(s, 16)
        v = s.values.copy()
        v[val_start:] = 1e9
        corrupted.append(_with(s, v))
    after = _captured_training_data(SeriesSet(tuple(corrupted)), spec, tmp_path, monkeypatch)
    np.testing.assert_array_equal(after.starts, before.starts)
    np.testing.assert_array_equal(after.data, before.data)
    np.testing.assert_array_equal(after.targets, before.targets)
    assert before.count == 3 and np.isfinite(before.data).all()


# --- pack isolation ----------------------------------------------------------------------------------
def _run_packed(model: SequenceModel, layout: PackLayout, resets: bool = True) -> np.ndarray:
    """Run every batch of the layout in order, carrying the state lane by lane; outputs by flat position."""
    n = len(layout.sequences.data)
    flat = np.full((n, model.n_outputs), np.nan)
    state = None
    with torch.no_grad():
        for b in layout.batches():
            x = torch.from_numpy(np.ascontiguousarray(b.inputs, dtype=np.float32))
            r = None if (b.resets is None or not resets) else torch.from_numpy(b.resets)
            out, state = model(x, state, r)
            flat[b.positions[b.mask]] = out.double().numpy()[b.mask]
    return flat


@FEW
@given(
    lengths=st.lists(st.integers(5, 70), min_size=2, max_size=4),
    lanes=st.integers(1, 2),
    window=st.integers(3, 16),
    cell=st.sampled_from(["lstm", "gru", "rnn"]),
    seed=st.integers(0, 1000),
)
def test_a_series_packed_after_others_gives_the_same_outputs_as_alone(lengths, lanes, window, cell, seed):
    spec = ForecastSpec(horizon=4, season=SEASON)
    model = _model(spec, seed=seed % 7, cell=cell).eval()
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(n, n_inputs(spec))).astype(np.float32) for n in lengths]
    targets = [np.zeros((n, spec.horizon), np.float32) for n in lengths]
    lanes = min(lanes, len(lengths) - 1)  # fewer lanes than series: some lane holds two
    window = min(window, min(lengths))
    layout = PackLayout(as_sequences(seqs, targets), lanes, window)
    flat = _run_packed(model, layout)
    starts = layout.sequences.starts
    later = 0
    for d, x in enumerate(seqs):
        alone = forecast_rows(model, x, np.arange(len(x)))
        packed = flat[starts[d] : starts[d + 1]]
        np.testing.assert_allclose(packed, alone, rtol=0, atol=1e-6)
        np.testing.assert_allclose(_run_alone(model, x), alone, rtol=0, atol=1e-6)
        pos, _ = layout._pack(0)
        later += int(np.argwhere(pos == starts[d])[0, 1] > 0)
    assert later >= 1  # at least one series really was packed after another one


def test_pack_isolation_check_is_sensitive_to_leaked_state():
    spec = ForecastSpec(horizon=4, season=SEASON)
    model = _model(spec, seed=1).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (40, 25)]
    layout = PackLayout(as_sequences(seqs, [np.zeros((len(x), 4), np.float32) for x in seqs]), 1, 8)
    leaky = _run_packed(model, layout, resets=False)
    second = leaky[40:65]
    assert np.abs(second - forecast_rows(model, seqs[1], np.arange(25))).max() > 1e-4


def test_real_series_inputs_packed_two_to_a_lane_match_running_each_alone():
    spec = ForecastSpec(horizon=6, season=SEASON, diff=1)
    model = _model(spec, seed=3).eval()
    data = _set((120, 90))
    parts = []
    for s in data:
        t = spec.transform().fit(s.values[:80])
        parts.append(model_inputs(s, t, spec))
    seqs = [p[0].astype(np.float32) for p in parts]
    targets = [np.nan_to_num(p[1]).astype(np.float32) for p in parts]
    layout = PackLayout(as_sequences(seqs, targets), 1, 16)
    flat = _run_packed(model, layout)
    first, second = len(seqs[0]), len(seqs[1])
    np.testing.assert_allclose(flat[first:], forecast_rows(model, seqs[1], np.arange(second)), atol=1e-6, rtol=0)


# --- forecast_rows -----------------------------------------------------------------------------------
@FEW
@given(n=st.integers(2, 60), picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=6), seed=st.integers(0, 99))
def test_stateful_forecast_rows_equal_running_each_prefix_separately(n, picks, seed):
    spec = ForecastSpec(horizon=5, season=SEASON)
    model = _model(spec, seed=seed % 5)
    x = np.random.default_rng(seed).normal(size=(n, 3))
    rows = np.array([p % n for p in picks])
    got = forecast_rows(model, x, rows)
    assert got.shape == (len(rows), 5) and got.dtype == np.float64
    for k, r in enumerate(rows):
        np.testing.assert_allclose(got[k], _run_alone(model, x[: r + 1])[-1], rtol=0, atol=1e-6)


@FEW
@given(
    n=st.integers(2, 60),
    context=st.integers(1, 20),
    picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=6),
    seed=st.integers(0, 99),
)
def test_stateless_forecast_rows_see_only_the_last_context_rows_from_zero_state(n, context, picks, seed):
    spec = ForecastSpec(horizon=5, season=SEASON)
    model = _model(spec, seed=seed % 5)
    x = np.random.default_rng(seed).normal(size=(n, 3))
    rows = np.array([p % n for p in picks])
    got = forecast_rows(model, x, rows, mode="stateless", context=context)
    assert got.shape == (len(rows), 5)
    for k, r in enumerate(rows):
        expected = _run_alone(model, x[max(0, r - context + 1) : r + 1])[-1]
        np.testing.assert_allclose(got[k], expected, rtol=0, atol=1e-6)


def test_stateless_context_really_cuts_the_history_off():
    spec = ForecastSpec(horizon=5, season=SEASON)
    model = _model(spec, seed=2)
    x = np.random.default_rng(0).normal(size=(80, 3))
    stateful = forecast_rows(model, x, np.array([79]))
    stateless = forecast_rows(model, x, np.array([79]), mode="stateless", context=4)
    assert np.abs(stateful - stateless).max() > 1e-4
    x2 = x.copy()
    x2[:76] = 0.0  # only rows 76..79 are in the context
    np.testing.assert_array_equal(forecast_rows(model, x2, np.array([79]), mode="stateless", context=4), stateless)


def test_forecast_rows_puts_the_model_in_eval_mode():
    spec = ForecastSpec(horizon=2, season=1)
    torch.manual_seed(0)
    model = SequenceModel("lstm", n_features=1, n_outputs=2, hidden_size=8, num_layers=1, dropout=0.5)
    x = np.random.default_rng(0).normal(size=(30, n_inputs(spec)))
    a = forecast_rows(model.train(), x, np.arange(30))
    b = forecast_rows(model, x, np.arange(30))
    np.testing.assert_array_equal(a, b)
    assert not model.training


# --- end to end: train_series, forecast_run, evaluate_series_run, resume ----------------------------
TINY_CONFIG = {"lanes": 4, "window": 16, "epochs": 2, "eval_window": 64, "log_every": 5}
E2E_SPEC = {"horizon": 6, "season": SEASON, "test_windows": 2, "val_windows": 3, "interval": 0.8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    data = _set()
    path = root / "series.csv"
    _write_csv(data, path)
    run = root / "run"
    summary = train_series(
        path,
        run,
        ForecastSpec(**E2E_SPEC),
        model_args={"hidden_size": 8},
        config=TrainConfig(**TINY_CONFIG),
        device="cpu",
        progress=False,
    ).summary
    return {"run": run, "csv": path, "data": data, "summary": summary}


def test_train_series_writes_a_complete_run_directory(trained):
    run = trained["run"]
    for name in (
        "config.json", "model.safetensors", "transforms.json", "intervals.json", "backtest.json", "metrics.jsonl",
        "curves.png",
    ):  # fmt: skip
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "series" and config["forecast"]["horizon"] == 6 and config["forecast"]["season"] == 8
    assert config["model"]["n_outputs"] == 6 and config["model"]["n_features"] == 3
    assert config["model"]["hidden_size"] == 8
    assert set(transforms_from_json((run / "transforms.json").read_text())) == {"s0", "s1", "s2"}
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [0, 1]
    summary = trained["summary"]
    assert summary["epochs"] == 2 and summary["steps"] > 0 and summary["val"]["loss"] > 0


def test_backtest_scores_the_model_and_both_baselines_for_every_series(trained):
    report = json.loads((trained["run"] / "backtest.json").read_text())
    assert report == json.loads(json.dumps(trained["summary"]["backtest"]))
    assert report["horizon"] == 6 and report["season"] == 8 and report["windows"] == 2
    assert set(report["series"]) == {"s0", "s1", "s2"}
    for scores in [*report["series"].values(), report["mean"]]:
        assert set(scores) == {"model", "naive", "seasonal_naive"}
        for metrics in scores.values():
            assert set(metrics) == {"mae", "rmse", "smape", "mase"}
            assert all(np.isfinite(v) and v >= 0 for v in metrics.values())
            assert metrics["rmse"] >= metrics["mae"]
    assert report["interval"]["nominal"] == 0.8 and report["interval"]["points"] == 3 * 2 * 6


def test_backtest_coverage_is_the_share_of_actuals_inside_the_published_forecast_interval(trained):
    """Recount coverage independently: forecast_run from the history before each test origin gives the
    interval a user would have seen there; count the actuals that fell inside it."""
    report = json.loads((trained["run"] / "backtest.json").read_text())
    spec = ForecastSpec(**E2E_SPEC)
    covered = counted = 0
    for k in range(spec.test_windows):
        origins = {s.id: spec.splits(s, TINY_CONFIG["window"])[1] + k * spec.horizon for s in trained["data"]}
        history = SeriesSet(tuple(_series(values=s.values[: origins[s.id]], sid=s.id) for s in trained["data"]))
        table = forecast_run(trained["run"], history, device="cpu")
        for s in trained["data"]:
            part = table[table["unique_id"] == s.id]
            actual = s.values[origins[s.id] : origins[s.id] + spec.horizon]
            covered += int(((part["lo"].to_numpy() <= actual) & (actual <= part["hi"].to_numpy())).sum())
            counted += len(actual)
    assert report["interval"]["points"] == counted
    assert report["interval"]["coverage"] == covered / counted


def test_backtest_baselines_match_a_direct_computation(trained):
    report = json.loads((trained["run"] / "backtest.json").read_text())
    spec = ForecastSpec(**E2E_SPEC)
    for s in trained["data"]:
        y = s.values
        _, test_start = spec.splits(s, TINY_CONFIG["window"])
        origins = test_start + 6 * np.arange(2)
        actual = np.stack([y[o : o + 6] for o in origins])
        naive = np.stack([np.full(6, y[o - 1]) for o in origins])
        seasonal = np.stack([y[o - 8 : o - 2] for o in origins])  # horizon 6 < season 8
        history = y[: origins[0]]
        scale = np.abs(history[8:] - history[:-8]).mean()
        got = report["series"][s.id]
        assert got["naive"]["mae"] == pytest.approx(np.abs(actual - naive).mean())
        assert got["seasonal_naive"]["mae"] == pytest.approx(np.abs(actual - seasonal).mean())
        assert got["naive"]["mase"] == pytest.approx(np.abs(actual - naive).mean() / scale)


def test_intervals_are_ordered_per_series_and_step(trained):
    intervals = json.loads((trained["run"] / "intervals.json").read_text())
    assert intervals["coverage"] == 0.8 and set(intervals["series"]) == {"s0", "s1", "s2"}
    for band in intervals["series"].values():
        band = np.asarray(band)
        assert band.shape == (6, 2) and np.isfinite(band).all() and (band[:, 0] <= band[:, 1]).all()


def test_forecast_run_gives_horizon_rows_per_series_after_the_history(trained):
    table = forecast_run(trained["run"], trained["csv"], device="cpu")
    assert list(table.columns) == ["unique_id", "ds", "step", "forecast", "lo", "hi"]
    assert len(table) == 3 * 6 and table.groupby("unique_id").size().to_dict() == {"s0": 6, "s1": 6, "s2": 6}
    assert np.isfinite(table[["forecast", "lo", "hi"]].to_numpy()).all()
    assert (table["lo"] <= table["hi"]).all()
    for s in trained["data"]:
        part = table[table["unique_id"] == s.id]
        assert part["step"].tolist() == [1, 2, 3, 4, 5, 6]
        expected = pd.date_range(s.timestamps[-1], periods=7, freq="h")[1:]
        assert (pd.DatetimeIndex(part["ds"]) == expected).all()


def test_forecast_run_agrees_with_the_backtest_path_and_shorter_horizons(trained):
    model, spec, transforms, config = load_series_run(trained["run"], "cpu")
    table = forecast_run(trained["run"], trained["data"], device="cpu")
    short = forecast_run(trained["run"], trained["data"], horizon=2, device="cpu")
    for s in trained["data"]:
        direct = origin_forecasts(model, s, transforms[s.id], spec, np.array([len(s)]))[0]
        got = table[table["unique_id"] == s.id]["forecast"].to_numpy()
        np.testing.assert_allclose(got, direct, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(short[short["unique_id"] == s.id]["forecast"].to_numpy(), got[:2])
    with pytest.raises(ValueError, match="outside 1..6"):
        forecast_run(trained["run"], trained["data"], horizon=7, device="cpu")


def test_forecast_run_fits_a_transform_for_a_new_series_and_gives_no_interval(trained):
    new = SeriesSet((_series(120, seed=9, sid="new"),))
    table = forecast_run(trained["run"], new, device="cpu")
    assert len(table) == 6 and np.isfinite(table["forecast"]).all()
    assert "lo" not in table.columns or table["lo"].isna().all()


def test_evaluate_series_run_on_the_training_file_reproduces_the_backtest(trained):
    report = evaluate_series_run(trained["run"], trained["csv"], device="cpu")
    saved = json.loads((trained["run"] / "backtest.json").read_text())
    assert set(report["series"]) == set(saved["series"])
    for sid, scores in saved["series"].items():
        for who, metrics in scores.items():
            for m, v in metrics.items():
                assert report["series"][sid][who][m] == pytest.approx(v, rel=1e-9, abs=1e-12)
    coverage, saved_coverage = report["interval"].pop("series"), saved["interval"].pop("series")
    assert report["interval"] == pytest.approx(saved["interval"])
    assert coverage == pytest.approx(saved_coverage)


def test_resume_with_more_epochs_continues_the_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    steps_before = trained["summary"]["steps"]
    summary = train_series(None, run, resume=True, overrides={"epochs": 3}, device="cpu", progress=False).summary
    assert summary["epochs"] == 3 and summary["steps"] == steps_before * 3 // 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1, 2]
    assert json.loads((run / "backtest.json").read_text()) == json.loads(json.dumps(summary["backtest"]))
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 3  # the run records the budget it was resumed with
    assert config["model"] == json.loads((trained["run"] / "config.json").read_text())["model"]
    with pytest.raises(ValueError, match="lr cannot change when resuming"):
        train_series(None, run, resume=True, overrides={"lr": 0.1}, device="cpu", progress=False)


def test_resume_refuses_a_run_of_another_task(tmp_path):
    from statefulrnn.runs import save_model

    torch.manual_seed(0)
    save_model(tmp_path / "text", SequenceModel("lstm", vocab_size=5, hidden_size=4, num_layers=1), {"task": "text"})
    with pytest.raises(ValueError, match="is a text run, not a series run"):
        train_series(None, tmp_path / "text", resume=True, device="cpu", progress=False)
    with pytest.raises(ValueError, match="not a series run"):
        forecast_run(tmp_path / "text", _set(), device="cpu")


def test_forecast_lies_inside_its_interval_even_for_a_biased_model(trained, tmp_path):
    """A model whose validation forecasts are all too high: the published interval should still contain the
    published point forecast."""
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    weights = load_file(str(run / "model.safetensors"))
    weights["head.bias"] = weights["head.bias"] + 3.0  # +3 in minmax units: far above every actual
    save_file(weights, str(run / "model.safetensors"), metadata={"format": "statefulrnn-run"})
    model, spec, transforms, config = load_series_run(run, "cpu")
    intervals = calibrate_intervals(model, trained["data"], transforms, spec, config)
    (run / "intervals.json").write_text(json.dumps({"coverage": spec.interval, "series": intervals}))
    table = forecast_run(run, trained["data"], device="cpu")
    assert ((table["lo"] <= table["forecast"]) & (table["forecast"] <= table["hi"])).all()


def test_resume_of_a_run_trained_from_a_series_set_needs_the_series_again(trained, tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = TrainConfig(**{**TINY_CONFIG, "epochs": 1})
    data = read_series(trained["csv"])
    train_series(data, run, ForecastSpec(**E2E_SPEC), model_args={"hidden_size": 8}, config=config, progress=False)
    monkeypatch.chdir(tmp_path)  # any directory but the data file's
    with pytest.raises(ValueError, match="in-memory series: pass them again"):
        train_series(None, run, resume=True, overrides={"epochs": 2}, device="cpu", progress=False)
    summary = train_series(data, run, resume=True, overrides={"epochs": 2}, device="cpu", progress=False).summary
    assert summary["epochs"] == 2


def test_train_series_leaves_the_callers_config_alone(tmp_path):
    config = TrainConfig(**{**TINY_CONFIG, "lanes": 64, "epochs": 1})
    spec = ForecastSpec(**E2E_SPEC)
    train_series(_set(), tmp_path / "run", spec, model_args={"hidden_size": 8}, config=config, progress=False)
    assert config.lanes == 64


# --- interval coverage with known answers ------------------------------------------------------------
# Integer series and errors in quarters: every forecast, bound and comparison below is exact in float64.
COVER_SPEC = {"horizon": 4, "season": 1, "test_windows": 2, "val_windows": 3, "interval": 0.75}
COVER_CONFIG = {"train": {"window": 4, "mode": "stateful"}}


def _cover_series(sid: str, filled: tuple[int, ...] = ()) -> Series:
    """40 integer values: validation part 20..31 (9 origins), test origins 32 and 36."""
    values = 10.0 + np.arange(40) % 7
    stamps = pd.date_range("2024-01-01", periods=40, freq="h").to_numpy()
    mask = np.zeros(40, bool)
    mask[list(filled)] = True
    return Series(sid, stamps, values, freq="h", filled=mask)


def _forecasts_off_by(errors: dict[str, dict[int, np.ndarray]]):
    """A stand-in for origin_forecasts: the true future minus a chosen error (actual - forecast) per origin."""

    def origin_forecasts(model, series, transform, spec, origins, **run):
        return np.stack([series.values[o : o + spec.horizon] - errors[series.id][int(o)] for o in origins])

    return origin_forecasts


def test_coverage_counts_actuals_on_or_inside_a_hand_built_band(monkeypatch):
    spec = ForecastSpec(**COVER_SPEC)
    band = np.array([[-1.0, 2.0], [-2.0, 0.5], [0.0, 0.0], [-0.5, 3.0]])  # asymmetric, one of width 0
    errors = {  # actual - forecast; inside iff band[:, 0] <= error <= band[:, 1]
        "a": {32: np.array([-1.0, 0.5, 0.0, 3.25]), 36: np.array([2.25, -2.25, -0.25, -0.5])},
        "b": {32: np.array([9.0, 9.0, 9.0, 9.0]), 36: np.array([9.0, 9.0, 9.0, 9.0])},
    }
    # a: in (lo edge), in (hi edge), in (width 0), out | out, out, out, in (lo edge) -> 4 of 8; b: no interval
    monkeypatch.setattr(fc, "origin_forecasts", _forecasts_off_by(errors))
    data = SeriesSet((_cover_series("a"), _cover_series("b")))
    report = backtest_series(None, data, {"a": None, "b": None}, spec, COVER_CONFIG, {"a": band.tolist()})
    expected = {"nominal": 0.75, "coverage": 4 / 8, "points": 8, "series": {"a": 4 / 8}}
    assert report["interval"] == {**expected, "series_min": 4 / 8, "series_max": 4 / 8}
    # the bounds themselves: the forecast shifted by the band, per step
    f = rolling_forecasts(None, data[0], None, spec, COVER_CONFIG, {"a": band.tolist()})
    np.testing.assert_array_equal(f["lo"], f["model"] + band[:, 0])
    np.testing.assert_array_equal(f["hi"], f["model"] + band[:, 1])


def test_calibrated_intervals_are_the_residual_quantile_and_give_the_coverage_they_imply(monkeypatch):
    """Split conformal with known residuals: |residual| at step h runs over (h + 1) * {0.25, ..., 2.25} on
    the 9 validation origins, so the finite-sample 0.75 quantile (the ceil(10 * 0.75) = 8th of 9) is
    (h + 1) * 2.0; test errors are set as multiples f of that half-width, so a point is covered exactly
    when |f| <= 1."""
    spec = ForecastSpec(**COVER_SPEC)
    steps = np.arange(1, 5)
    half = 2.0 * steps
    errors: dict[str, dict[int, np.ndarray]] = {}
    for sid in ("a", "b"):
        errors[sid] = {o: (-1.0) ** i * 0.25 * (i + 1) * steps for i, o in enumerate(range(20, 29))}
    f = {
        ("a", 32): [0.0, 1.0, -1.25, 0.5],  # in, in (hi edge), out, in
        ("a", 36): [-1.0, 2.0, 0.25, -3.0],  # in (lo edge), out, in, out
        ("b", 32): [1.25, -0.5, 1.0, -1.0],  # out, in, in, in
        ("b", 36): [0.0, -2.0, 0.75, 1.5],  # in but filled (left out), out, in, out
    }
    for (sid, o), factors in f.items():
        errors[sid][o] = np.array(factors) * half
    monkeypatch.setattr(sel, "origin_forecasts", _forecasts_off_by(errors))  # looked up by calibrate_intervals
    monkeypatch.setattr(fc, "origin_forecasts", _forecasts_off_by(errors))  # ... and by backtest_series
    data = SeriesSet((_cover_series("a"), _cover_series("b", filled=(36,))))
    transforms = {"a": None, "b": None}
    intervals = calibrate_intervals(None, data, transforms, spec, COVER_CONFIG)
    for sid in ("a", "b"):
        np.testing.assert_array_equal(np.asarray(intervals[sid]), np.stack([-half, half], axis=1))
    report = backtest_series(None, data, transforms, spec, COVER_CONFIG, intervals)
    assert {k: report["interval"][k] for k in ("nominal", "coverage", "points")} == {
        "nominal": 0.75,
        "coverage": 9 / 15,
        "points": 15,
    }
    assert report["interval"]["series"] == {"a": 5 / 8, "b": 4 / 7}


@FEW
@given(
    data=st.data(),
    lo=st.lists(st.integers(-8, 0), min_size=4, max_size=4),
    width=st.lists(st.integers(0, 8), min_size=4, max_size=4),
)
def test_coverage_equals_the_share_of_errors_inside_the_band(data, lo, width):
    spec = ForecastSpec(**COVER_SPEC)
    band = np.stack([np.array(lo) / 4, (np.array(lo) + np.array(width)) / 4], axis=1)
    quarters = st.lists(st.integers(-12, 12), min_size=4, max_size=4)
    errors = {"a": {o: np.array(data.draw(quarters)) / 4 for o in (32, 36)}}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fc, "origin_forecasts", _forecasts_off_by(errors))
        report = backtest_series(None, SeriesSet((_cover_series("a"),)), {"a": None}, spec, COVER_CONFIG, {"a": band})
    e = np.stack(list(errors["a"].values()))
    inside = (band[:, 0] <= e) & (e <= band[:, 1])
    assert report["interval"]["points"] == 8 and report["interval"]["coverage"] == inside.sum() / 8


# --- transform inversion in the forecast path ----------------------------------------------------------
INVERT_SPEC = {"season": SEASON, "seasonal_diff": True, "diff": 1, "test_windows": 2, "val_windows": 3}


@pytest.mark.parametrize("horizon", [6, 12])  # shorter and longer than the seasonal lag
def test_true_transformed_targets_invert_to_the_true_future(horizon):
    spec = ForecastSpec(horizon=horizon, **INVERT_SPEC)
    s = _series(260, seed=4)
    val_start, _ = spec.splits(s, 16)
    t = spec.transform().fit(s.values[:val_start])
    assert t.offset == SEASON + 1
    _, targets = model_inputs(s, t, spec)
    origins = np.arange(t.offset + 1, len(s) - horizon + 1)
    z = targets[origins - 1 - t.offset]
    got = t.inverse_at(z, s.values, origins)
    expected = np.stack([s.values[o : o + horizon] for o in origins])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


def _oracle(data: SeriesSet, transforms: dict, spec: ForecastSpec):
    """A stand-in for forecast_rows that returns the true transformed targets of the full series."""
    full = {s.id: model_inputs(s, transforms[s.id], spec) for s in data}

    def rows_of(model, inputs, rows, **run):
        for x, y in full.values():
            if len(inputs) <= len(x) and np.array_equal(inputs, x[: len(inputs)]):
                return y[np.asarray(rows)]
        raise AssertionError("inputs are not a prefix of any known series")

    return rows_of


@pytest.mark.parametrize("horizon", [6, 12])
def test_a_perfect_model_in_transformed_space_scores_zero_error_in_the_backtest(horizon, monkeypatch):
    spec = ForecastSpec(horizon=horizon, **INVERT_SPEC)
    data = _set((260, 240, 300))
    transforms = {}
    for s in data:
        val_start, _ = spec.splits(s, 16)
        transforms[s.id] = spec.transform().fit(s.values[:val_start])
    monkeypatch.setattr(fc, "forecast_rows", _oracle(data, transforms, spec))
    config = {"train": {"window": 16, "mode": "stateful"}}
    for s in data:
        f = rolling_forecasts(None, s, transforms[s.id], spec, config)
        np.testing.assert_allclose(f["model"], f["actual"], rtol=1e-10, atol=1e-9)
    report = backtest_series(None, data, transforms, spec, config)
    assert report["mean"]["model"]["mae"] < 1e-9 and report["mean"]["model"]["mase"] < 1e-9
    assert report["mean"]["naive"]["mae"] > 0.1


def test_forecast_run_of_a_perfect_model_is_the_true_future(tmp_path, monkeypatch):
    spec = ForecastSpec(horizon=12, **INVERT_SPEC)
    data = _set((260, 240, 300))
    run = tmp_path / "run"
    config = TrainConfig(**{**TINY_CONFIG, "epochs": 1})
    train_series(data, run, spec, model_args={"hidden_size": 8}, config=config, device="cpu", progress=False)
    transforms = transforms_from_json((run / "transforms.json").read_text())
    monkeypatch.setattr(fc, "forecast_rows", _oracle(data, transforms, spec))
    cut = 30
    history = SeriesSet(tuple(_series(values=s.values[:-cut], sid=s.id) for s in data))
    table = forecast_run(run, history, device="cpu")
    for s in data:
        part = table[table["unique_id"] == s.id]
        o = len(s) - cut
        np.testing.assert_allclose(part["forecast"].to_numpy(), s.values[o : o + 12], rtol=1e-10, atol=1e-9)
        assert (pd.DatetimeIndex(part["ds"]) == pd.DatetimeIndex(s.timestamps[o : o + 12])).all()


# --- the seasonal naive baseline ---------------------------------------------------------------------
def test_seasonal_naive_is_perfect_on_a_purely_periodic_series(tmp_path):
    rng = np.random.default_rng(0)
    data = SeriesSet(tuple(_series(values=np.tile(rng.normal(5, 2, SEASON), 36), sid=f"p{k}") for k in range(2)))
    spec = ForecastSpec(horizon=6, season=SEASON, test_windows=2, val_windows=2)
    config = TrainConfig(**{**TINY_CONFIG, "epochs": 1})
    summary = train_series(
        data, tmp_path / "run", spec, model_args={"hidden_size": 8}, config=config, device="cpu", progress=False
    ).summary
    report = json.loads((tmp_path / "run" / "backtest.json").read_text())
    assert report == jsonable(summary["backtest"])
    for sid in ("p0", "p1"):
        seasonal = report["series"][sid]["seasonal_naive"]
        assert seasonal["mase"] == 0 and seasonal["mae"] == 0 and seasonal["smape"] == 0
        assert report["series"][sid]["naive"]["mae"] > 0
    assert report["mean"]["seasonal_naive"]["mase"] == 0


def test_seasonal_naive_in_rolling_forecasts_repeats_the_last_season():
    s = _series(200, seed=1)
    spec = ForecastSpec(horizon=12, season=SEASON, test_windows=2, val_windows=2)
    t = spec.transform().fit(s.values[:150])
    model = _model(spec)
    f = rolling_forecasts(model, s, t, spec, {"train": {"window": 16}})
    for k, o in enumerate(f["origins"]):
        last = s.values[o - SEASON : o]
        np.testing.assert_array_equal(f["seasonal_naive"][k], np.concatenate([last, last[:4]]))
        np.testing.assert_array_equal(f["naive"][k], np.full(12, s.values[o - 1]))
        np.testing.assert_array_equal(f["actual"][k], s.values[o : o + 12])
    assert mae(f["actual"], f["model"]) > 0
