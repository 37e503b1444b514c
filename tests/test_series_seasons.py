"""Several seasons, the MSTL-deseasoned hybrid, preparation chosen on validation, and seed ensembles."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.files import atomic_write
from statefulrnn.model import SequenceModel
from statefulrnn.runs import load_run, save_model
from statefulrnn.series.data import Series, SeriesSet
from statefulrnn.series.features import first_position, model_inputs, n_inputs, phase_features
from statefulrnn.series.forecast import origin_forecasts, run_mode
from statefulrnn.series.select import candidates, conformal_intervals, label
from statefulrnn.series.spec import ForecastSpec, natural_seasons
from statefulrnn.series.train import train_series
from statefulrnn.series.transform import Transform, mstl_profile, transforms_to_json
from statefulrnn.stream import StreamingPredictor
from statefulrnn.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)
TINY = {"hidden_size": 8}


def two_cycles(n: int, start: str = "2024-01-01 05:00", seed: int = 0, trend: float = 0.02) -> Series:
    """Hourly values with a 4-step and a 6-step cycle, a trend and noise; starts mid-cycle."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 20 + trend * t + 3 * np.sin(2 * np.pi * t / 4) + 2 * np.cos(2 * np.pi * t / 6) + rng.normal(0, 0.2, n)
    stamps = pd.date_range(start, periods=n, freq="h")
    return Series(f"s{seed}", stamps, values, freq="h")


# --- the spec ------------------------------------------------------------------------------------------
def test_seasons_put_the_main_season_first_and_repeat_over_their_lcm():
    spec = ForecastSpec(horizon=4, seasons=(48, 336))
    assert (spec.season, spec.seasons, spec.period, spec.phases) == (48, (48, 336), 336, (48, 336))
    assert ForecastSpec(horizon=4, season=336, seasons=(48, 336)).seasons == (336, 48)
    assert ForecastSpec(horizon=4, season=24).seasons == (24,)
    assert ForecastSpec(horizon=4, season=1).seasons == () and ForecastSpec(horizon=4).period == 1
    assert ForecastSpec(horizon=4, seasons=(4, 6), phase=False).phases == ()
    assert ForecastSpec(horizon=4, seasons=(4, 6)).period == 12
    assert ForecastSpec(horizon=4, seasons=(4, 6), seasonal_diff=True).seasonal_diff == 4


def test_auto_spec_is_unresolved_until_the_data_gives_its_seasons():
    spec = ForecastSpec.auto(24)
    assert not spec.resolved and spec.season == "auto"
    with pytest.raises(ValueError, match="choices to make"):
        spec.transform()
    hourly = spec.with_seasons("h")
    assert hourly.seasons == (24, 168) and hourly.season == 24 and not hourly.resolved
    assert ForecastSpec.auto(24, seasonal_diff=True).with_seasons("h").seasonal_diff == 24
    fixed = ForecastSpec.auto(24, diff=1, seasonal_diff=0, deseason=False, scale="none").with_seasons(None)
    assert fixed.resolved and fixed.seasons == () and fixed.transform().lags == (1,)


@pytest.mark.parametrize(
    "freq, expected",
    [("30min", (48, 336)), ("h", (24, 168)), ("15min", (96, 672)), ("D", (7,)), ("B", (5,)), ("W-SUN", (52,))]
    + [("MS", (12,)), ("ME", (12,)), ("QS-OCT", (4,)), ("YS", ()), ("7D", ()), (None, ()), ("bogus", ())],
)
def test_natural_seasons_follow_the_clock(freq, expected):
    assert natural_seasons(freq) == expected


# --- phase inputs and the deseasoned transform ---------------------------------------------------------
def test_phase_features_of_several_seasons_agree_between_a_series_and_a_stream_position():
    s = two_cycles(50)
    whole = phase_features(s, (4, 6))
    assert whole.shape == (50, 4)
    start = first_position(s, 12)
    np.testing.assert_allclose(phase_features(start, (4, 6), 50), whole, atol=1e-12)
    np.testing.assert_allclose(phase_features(start + 17, (4, 6), 5), whole[17:22], atol=1e-12)
    np.testing.assert_allclose(whole[:, :2], phase_features(s, 4), atol=1e-12)


def test_mstl_profile_repeats_each_season_and_drops_seasons_without_two_cycles():
    s = two_cycles(120)
    periods, profile = mstl_profile(s.values, (4, 6, 100), start=5)
    assert periods == (4, 6) and len(profile) == 12
    truth = 3 * np.sin(2 * np.pi * (np.arange(12) - 5) / 4) + 2 * np.cos(2 * np.pi * (np.arange(12) - 5) / 6)
    assert np.max(np.abs(profile - truth)) < 0.6  # MSTL finds the cycles (noise 0.2, a trend)
    with pytest.raises(ValueError, match="two full cycles"):
        mstl_profile(s.values[:10], (6,))


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 10_000), diff=st.integers(0, 1), horizon=st.integers(1, 9), cut=st.integers(40, 110))
def test_a_deseasoned_transform_inverts_true_targets_exactly_at_any_position(start, diff, horizon, cut):
    s = two_cycles(120, seed=start % 7)
    t = Transform(deseason=(4, 6), diff=diff, scale="standard").fit(s.values[:cut], start=start)
    z = t.transform(s.values, start)
    origins = np.arange(t.offset + 1, len(s) - horizon + 1)
    targets = np.stack([z[o - t.offset : o - t.offset + horizon] for o in origins])
    got = t.inverse_at(targets, s.values, origins, start)
    np.testing.assert_allclose(got, np.stack([s.values[o : o + horizon] for o in origins]), rtol=1e-9, atol=1e-9)
    again = Transform.from_json(t.to_json())
    np.testing.assert_array_equal(again.transform(s.values, start), z)


def test_a_transform_json_with_a_profile_that_does_not_match_its_periods_is_refused():
    t = Transform(deseason=(4, 6)).fit(two_cycles(60).values)
    d = json.loads(t.to_json())
    d["profile"] = d["profile"][:-1]
    with pytest.raises(ValueError, match="does not match its periods"):
        Transform.from_dict(d)


# --- serving a deseasoned run with two seasons ---------------------------------------------------------
SPEC = ForecastSpec(horizon=3, seasons=(4, 6), deseason=True, diff=1, test_windows=2, val_windows=2)


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    s = two_cycles(120)
    torch.manual_seed(3)
    model = SequenceModel("lstm", n_features=n_inputs(SPEC), n_outputs=SPEC.horizon, hidden_size=8, num_layers=1)
    path = tmp_path_factory.mktemp("runs") / "hybrid"
    save_model(path, model, {"task": "series", "forecast": asdict(SPEC), "data": {"read": {}}, "train": {"window": 8}})
    t = SPEC.transform().fit(s.values[:80], start=first_position(s, SPEC.period))
    other = SPEC.transform().fit(2 * s.values[:80], start=first_position(s, SPEC.period))
    atomic_write(path / "transforms.json", transforms_to_json({s.id: t, "other": other}).encode())
    return path, s


def test_a_served_hybrid_stream_equals_the_offline_forecasts(hybrid_run):
    path, s = hybrid_run
    run = load_run(path)
    t = run.transforms[s.id]
    assert n_inputs(SPEC) == 5 and t.profile is not None
    origins = np.arange(t.offset + 1, len(s) + 1)
    reference = origin_forecasts(run.model, s, t, SPEC, origins, **run_mode(run.config))
    p = StreamingPredictor(path)
    head = Series(s.id, s.timestamps[:50], s.values[:50], freq="h")
    got = [p.warm_up(s.id, head)]
    for a, b in ((50, 51), (51, 77), (77, 120)):
        got.append(p.step(s.id, s.values[a:b].tolist()))
    got = np.concatenate(got)
    assert np.isnan(got[: t.offset]).all()
    np.testing.assert_allclose(got[t.offset :], reference, rtol=1e-4, atol=1e-4)
    assert "transform" not in json.loads(p.store.get(s.id).context)  # the run's transform is not copied per stream
    new = p.warm_up("new", s.values[:60], position=first_position(s, SPEC.period))
    assert np.isfinite(new[t.offset :]).all()
    assert "profile" in json.loads(p.store.get("new").context)["transform"]
    assert p.store.get("new").nbytes <= p.max_record_bytes


# --- choosing on validation ----------------------------------------------------------------------------
def _set(n: int = 2, length: int = 200, **kw) -> SeriesSet:
    return SeriesSet(tuple(two_cycles(length, seed=k, **kw) for k in range(n)))


def test_candidates_cover_the_open_choices_only():
    data = _set()
    open_ = candidates(ForecastSpec.auto(3, seasons=(4, 6)), data, 8)
    assert [label(c) for c in open_] == [
        "levels, minmax",
        "diff1, minmax",
        "seasonal diff 4, minmax",
        "seasonal diff 6, minmax",
        "deseason(4,6), minmax",
        "deseason(4,6)+diff1, minmax",
    ]
    fixed = candidates(ForecastSpec.auto(3, seasons=(4, 6), diff=1, deseason=False, scale="standard"), data, 8)
    assert [label(c) for c in fixed] == ["diff1, standard"]
    assert len(candidates(ForecastSpec.auto(3, season=1), data, 8)) == 2  # no season: levels or diff1


def test_training_chooses_the_candidate_with_the_lowest_validation_mase_and_records_it(tmp_path):
    config = TrainConfig(lanes=2, window=8, epochs=2, eval_window=64, seed=0)
    spec = ForecastSpec.auto(3, seasons=(4,), deseason=False, test_windows=2, val_windows=3)
    run = train_series(_set(), tmp_path / "run", spec, model_args=TINY, config=config, progress=False)
    sel = json.loads((tmp_path / "run" / "selection.json").read_text())
    scored = sel["candidates"]
    assert [c["label"] for c in scored[:3]] == ["levels, minmax", "diff1, minmax", "seasonal diff 4, minmax"]
    assert sel["budget"] == "1 of 2 epochs"
    best_minmax = min(scored[:3], key=lambda c: c["val_mase"])
    standard = scored[3]
    assert standard["label"] == best_minmax["label"].replace("minmax", "standard")
    winner = standard if standard["val_mase"] < best_minmax["val_mase"] else best_minmax
    assert sel["chosen"] == winner["label"] == run.summary["preparation"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["forecast"]
    assert ForecastSpec(**saved).resolved and label(ForecastSpec(**saved)) == winner["label"]
    v = run.summary["validation"]
    assert math.isfinite(v["mase"]) and v["seasonal_naive_mase"] == pytest.approx(sel["seasonal_naive_mase"])


def test_a_model_that_loses_to_seasonal_naive_on_validation_says_so():
    t = np.arange(240)
    pure = Series("p", pd.date_range("2024-01-01", periods=240, freq="h"), 10 + (t % 6 == 0) * 5.0, freq="h")
    config = TrainConfig(lanes=1, window=8, epochs=1, eval_window=64)
    spec = ForecastSpec(horizon=3, season=6, test_windows=1, val_windows=2)
    run = train_series(SeriesSet((pure,)), None, spec, model_args=TINY, config=config, progress=False)
    v = run.summary["validation"]
    assert v["seasonal_naive_mase"] == 0 and not v["beats_seasonal_naive"]
    assert "not below that of seasonal naive at season 6" in run.summary["warning"]
    assert v["best_naive"] == {"season": 6, "mase": 0.0} and v["series"]["p"]["seasonal_naive_1"] > 0


def test_conformal_half_widths_take_the_finite_sample_rank():
    errors = np.arange(1.0, 10.0)[:, None] * np.array([[1.0, 2.0]])  # 9 origins, 2 steps
    forecasts = {"a": {"model": np.zeros((9, 2)), "actual": errors}}
    half = np.asarray(conformal_intervals(forecasts, 0.8)["a"])[:, 1]
    np.testing.assert_array_equal(half, [8.0, 16.0])  # ceil(10 * 0.8) = 8th smallest of 9
    assert np.asarray(conformal_intervals(forecasts, 0.95)["a"])[0, 1] == 9.0  # capped at the largest


# --- seed ensembles -------------------------------------------------------------------------------------
def test_an_ensemble_forecasts_the_median_of_its_members_and_reloads_whole(tmp_path):
    config = TrainConfig(lanes=2, window=8, epochs=1, eval_window=64, seed=5)
    spec = ForecastSpec(horizon=3, seasons=(4, 6), diff=1, test_windows=2, val_windows=2)
    data = _set()
    run = train_series(data, tmp_path / "run", spec, model_args=TINY, config=config, ensemble=3, progress=False)
    assert len(run.models) == 3 and (tmp_path / "run" / "members" / "2" / "model.safetensors").is_file()
    loaded = load_run(tmp_path / "run")
    assert len(loaded.models) == 3
    s, t = data[0], loaded.transforms[data[0].id]
    origins = np.array([150, 170, 190])
    each = np.stack([origin_forecasts(m, s, t, spec, origins, **run_mode(loaded.config)) for m in loaded.models])
    assert not np.allclose(each[0], each[1])  # different seeds, different models
    np.testing.assert_allclose(
        origin_forecasts(loaded.models, s, t, spec, origins, **run_mode(loaded.config)), np.median(each, axis=0)
    )
    inputs, _ = model_inputs(s, t, spec)
    assert inputs.shape[1] == n_inputs(spec) == 5
    resumed = train_series(data, tmp_path / "run", resume=True, overrides={"epochs": 2}, progress=False)
    assert resumed.summary["ensemble"] == 3 and resumed.summary["epochs"] == 2
    members = [json.loads((tmp_path / "run" / "members" / k / "summary.json").read_text()) for k in ("1", "2")]
    assert all(m["epochs"] == 2 for m in members)
