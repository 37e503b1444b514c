"""StatefulForecaster: statsforecast-shaped frames, cutoffs where statsforecast puts them, forecasts
equal to those of the run it trains, intervals around the forecast, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statsforecast import StatsForecast
from statsforecast.models import SeasonalNaive

from statefulrnn.series import SeriesSet, StatefulForecaster, forecast_run, series_from_frame

H, SEASON = 4, 7
TINY = dict(epochs=2, hidden_size=8, window=16, lanes=4, val_windows=2, eval_window=64, device="cpu")
KEYS = ["unique_id", "ds", "cutoff", "y"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def long_frame(lengths=(90, 70, 80), ids=("b", "a", "c"), integer_ds: bool = False, seed: int = 0) -> pd.DataFrame:
    """Weekly-seasonal series of different lengths and starts, ids not in sorted order."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (sid, n) in enumerate(zip(ids, lengths)):
        t = np.arange(n)
        ds = (
            t + 1 + 3 * k if integer_ds else pd.date_range("2021-01-01", periods=n, freq="D") + pd.Timedelta(days=3 * k)
        )
        y = 10 + 3 * k + 2 * np.sin(2 * np.pi * t / SEASON) + 0.02 * t + rng.normal(0, 0.2, n)
        parts.append(pd.DataFrame({"unique_id": sid, "ds": ds, "y": y}))
    return pd.concat(parts, ignore_index=True)


def as_set(df: pd.DataFrame) -> SeriesSet:
    return series_from_frame(df, id_col="unique_id", time_col="ds", target="y")


def renamed(sf: pd.DataFrame, alias: str = "StatefulRNN") -> list[str]:
    return [c.replace("SeasonalNaive", alias) for c in sf.columns]


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return long_frame()


@pytest.fixture(scope="module")
def fitted(df, tmp_path_factory) -> StatefulForecaster:
    return StatefulForecaster(H, SEASON, run_dir=tmp_path_factory.mktemp("fc") / "run", ensemble=2, **TINY).fit(df)


def test_predict_is_shaped_like_statsforecasts_forecast(df, fitted):
    ours = fitted.predict()
    sf = StatsForecast(models=[SeasonalNaive(SEASON)], freq="D").forecast(df=df, h=H, level=[80])
    assert list(ours.columns) == renamed(sf)
    assert list(ours.dtypes) == list(sf.dtypes)
    pd.testing.assert_frame_equal(ours[["unique_id", "ds"]], sf[["unique_id", "ds"]])
    assert isinstance(ours.index, pd.RangeIndex) and np.isfinite(ours.iloc[:, 2:].to_numpy()).all()
    head = fitted.predict(h=2)
    pd.testing.assert_frame_equal(head, ours.groupby("unique_id").head(2).reset_index(drop=True))


def test_predict_equals_forecast_run_from_the_same_model(df, fitted):
    ours = fitted.predict()
    theirs = forecast_run(fitted.run_dir, as_set(df), device="cpu").sort_values(["unique_id", "ds"])
    np.testing.assert_allclose(ours["StatefulRNN"], theirs["forecast"], rtol=1e-6)
    np.testing.assert_allclose(ours["StatefulRNN-lo-80"], theirs["lo"], rtol=1e-6)
    np.testing.assert_allclose(ours["StatefulRNN-hi-80"], theirs["hi"], rtol=1e-6)


def test_predict_on_a_new_history_warms_the_state_and_fits_new_series(df, fitted):
    longer = long_frame(lengths=(90, 85, 80), seed=0)
    new = long_frame(lengths=(60,), ids=("z",), seed=3)
    history = pd.concat([longer[longer.unique_id == "a"], new], ignore_index=True)
    ours = fitted.predict(df=history)
    assert ours.unique_id.tolist() == ["a"] * H + ["z"] * H
    theirs = forecast_run(fitted.run_dir, as_set(history), device="cpu").sort_values(["unique_id", "ds"])
    np.testing.assert_allclose(ours["StatefulRNN"], theirs["forecast"], rtol=1e-6)
    z = ours[ours.unique_id == "z"]
    assert z["StatefulRNN-lo-80"].isna().all() and z["StatefulRNN-hi-80"].isna().all()  # never calibrated
    before = fitted.predict()
    assert ours.ds.iloc[0] == df[df.unique_id == "a"].ds.max() + pd.Timedelta(days=16)
    assert not np.allclose(ours["StatefulRNN"][:H], before[before.unique_id == "a"]["StatefulRNN"])


def test_interval_columns_hold_the_forecast(df, fitted):
    for out in (fitted.predict(), fitted.cross_validation(df, n_windows=2)):
        lo, mid, hi = (out[c].to_numpy() for c in ("StatefulRNN-lo-80", "StatefulRNN", "StatefulRNN-hi-80"))
        assert (lo <= mid).all() and (mid <= hi).all() and (lo < hi).any()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 5),
    n_windows=st.integers(1, 3),
    step_size=st.integers(1, 6),
    integer=st.booleans(),
)
def test_cross_validation_cutoffs_are_statsforecasts(h, n_windows, step_size, integer):
    df = long_frame(integer_ds=integer)
    if integer:
        df["unique_id"] = df["unique_id"].map({"b": 20, "a": 3, "c": 7})
    model = StatefulForecaster(H, SEASON, alias="LSTM", **TINY)
    ours = model.cross_validation(df, n_windows=n_windows, step_size=step_size, h=h)
    sf = StatsForecast(models=[SeasonalNaive(SEASON)], freq=1 if integer else "D")
    theirs = sf.cross_validation(df=df, h=h, n_windows=n_windows, step_size=step_size, level=[80])
    assert list(ours.columns) == renamed(theirs, "LSTM")
    assert list(ours.dtypes) == list(theirs.dtypes)
    pd.testing.assert_frame_equal(ours[KEYS], theirs[KEYS])
    assert model.run_ is None and model.cv_run_.spec.horizon == h


def test_cross_validation_trains_before_the_first_cutoff_and_carries_the_true_history():
    df = long_frame()
    model = StatefulForecaster(H, SEASON, **TINY)
    first = model.cross_validation(df, n_windows=3)
    changed = df.copy()
    after = changed.groupby("unique_id").cumcount(ascending=False) < 3 * H  # every value after the first cutoff
    changed.loc[after, "y"] += 5.0
    second = model.cross_validation(changed, n_windows=3)
    cutoffs = first.groupby("unique_id").cutoff.transform("min")
    was_first = (first.cutoff == cutoffs).to_numpy()
    cols = ["StatefulRNN", "StatefulRNN-lo-80", "StatefulRNN-hi-80"]
    pd.testing.assert_frame_equal(first.loc[was_first, cols], second.loc[was_first, cols])
    assert (np.abs(first.loc[~was_first, "StatefulRNN"] - second.loc[~was_first, "StatefulRNN"]) > 1e-3).all()


def test_cross_validation_leaves_the_fitted_model(df, fitted):
    before = fitted.predict()
    run = fitted.run_
    fitted.cross_validation(df, n_windows=1, h=2)
    assert fitted.run_ is run and fitted.cv_run_ is not run
    pd.testing.assert_frame_equal(fitted.predict(), before)


def test_no_level_gives_no_interval_columns(df):
    out = StatefulForecaster(H, SEASON, level=(), **TINY).cross_validation(df)
    assert list(out.columns) == [*KEYS, "StatefulRNN"] and len(out) == 3 * H


def test_timezones_and_categorical_ids_survive(df):
    aware = df.assign(ds=df.ds.dt.tz_localize("Asia/Tokyo"), unique_id=df.unique_id.astype("category"))
    out = StatefulForecaster(H, SEASON, **TINY).fit(aware).predict()
    assert out.ds.dtype == aware.ds.dtype and out.unique_id.dtype == aware.unique_id.dtype
    assert out.merge(aware, on=["unique_id", "ds"], how="inner").empty  # the future, not the past
    last = aware.groupby("unique_id", observed=True).ds.max()
    assert (out.groupby("unique_id", observed=True).ds.min() == last + pd.Timedelta(days=1)).all()


@pytest.mark.parametrize("column", ["unique_id", "ds", "y"])
def test_a_missing_column_is_named(df, column):
    with pytest.raises(ValueError, match=f"df has no column {column} .*rename"):
        StatefulForecaster(H, SEASON, **TINY).fit(df.drop(columns=column))


def test_errors_are_one_clear_line(df, fitted):
    cases = [
        (lambda: StatefulForecaster(H, SEASON, **TINY).predict(), "not fitted yet: call fit"),
        (lambda: fitted.predict(h=H + 1), "more than the 4 steps .*StatefulForecaster\\(h=5"),
        (lambda: fitted.predict(level=[95]), "calibrated for level=\\[80\\]"),
        (lambda: StatefulForecaster(H, level=(80, 95)), "one interval level per model"),
        (lambda: StatefulForecaster(H, level=(120,)), "between 0 and 100"),
        (lambda: StatefulForecaster(0), "h must be an integer >= 1"),
        (lambda: StatefulForecaster(H, hiden_size=8), "unknown option 'hiden_size'.*hidden_size"),
        (lambda: StatefulForecaster(H, horizon=8), "horizon is set by .* h="),
        (
            lambda: StatefulForecaster(H, SEASON, **TINY).fit(long_frame(lengths=(90, 20))),
            "^fit: series 'a' has 20 steps; .*: use fewer windows",
        ),
        (lambda: fitted.cross_validation(df, n_windows=20), "series 'a' \\(70 values\\).*fewer windows"),
        (lambda: fitted.predict(df=long_frame(lengths=(1,), ids=("q",))), "series 'q'"),
        (lambda: fitted.predict(df=df[["unique_id", "ds", "y"]].assign(y=np.nan)), "missing value"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="refit=True is not supported"):
        fitted.cross_validation(df, refit=True)
    assert fitted.predict(level=[80]).shape == (3 * H, 5)
    assert list(fitted.predict(level=[]).columns) == ["unique_id", "ds", "StatefulRNN"]


def test_importing_the_package_loads_no_training_code():
    code = (
        "import json, sys, statefulrnn, statefulrnn.series; loaded = sorted(sys.modules);"
        "ok = statefulrnn.StatefulForecaster is statefulrnn.series.StatefulForecaster; print(json.dumps([loaded, ok]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded, same = json.loads(out.stdout.strip().splitlines()[-1])
    assert same and "statefulrnn.series.train" not in loaded and "statefulrnn.series.forecaster" not in loaded
