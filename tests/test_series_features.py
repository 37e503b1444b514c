"""The series package's shared pieces: phase features from a series or a position, origins from the spec,
the backtest scoring helpers, lane sizing, and the lazy training names."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from statefulrnn.series.data import Series
from statefulrnn.series.features import first_position, phase_features, phase_step
from statefulrnn.series.metrics import (
    baseline_forecasts,
    interval_hits,
    mean_scores,
    naive_forecast,
    score,
    score_forecasts,
    seasonal_naive_forecast,
)
from statefulrnn.series.spec import ForecastSpec


def _series(n: int, freq: str | None = "h", start: str = "2024-01-01 05:00") -> Series:
    stamps = pd.date_range(start, periods=n, freq=freq or "h").to_numpy()
    return Series("s", stamps, np.arange(n, dtype=np.float64), freq=freq)


@pytest.mark.parametrize("freq", ["h", "D", "30min", "2D", "W-SUN", None])
@pytest.mark.parametrize("season", [1, 7, 24, 48])
def test_phase_from_a_series_equals_phase_from_its_first_position_bit_for_bit(freq, season):
    s = _series(100, freq)
    from_series = phase_features(s, season)
    start, step = first_position(s, season), 1  # positions count steps, whatever the frequency's multiple
    assert phase_step(s) == {"30min": 30, "2D": 2}.get(freq, 1)  # period ordinals count the base unit
    from_position = phase_features(start, season, len(s), step=step)
    assert from_series.shape == (100, 2)
    np.testing.assert_array_equal(from_series, from_position)
    # a stream that has seen k steps continues where the series left off
    k = 37
    np.testing.assert_array_equal(phase_features(start + step * k, season, 10, step=step), from_series[k : k + 10])


def test_phase_of_a_series_without_frequency_counts_from_zero():
    s = _series(10, None)
    assert first_position(s, 4) == 0
    np.testing.assert_array_equal(phase_features(s, 4)[:, 1], np.cos(2 * np.pi * (np.arange(10) % 4) / 4))
    with pytest.raises(ValueError, match="length"):
        phase_features(3, 4)


def test_spec_origins_are_the_test_tiles_and_every_validation_step():
    spec = ForecastSpec(horizon=6, season=4, test_windows=3, val_windows=2)
    s = _series(200)
    val_start, test_start = spec.splits(s, 16)
    np.testing.assert_array_equal(spec.test_origins(s, 16), test_start + 6 * np.arange(3))
    np.testing.assert_array_equal(spec.val_origins(s, 16), np.arange(val_start, test_start - 6 + 1))
    with pytest.raises(ValueError, match="fewer than the"):
        spec.test_origins(_series(30), 16)


def test_backtest_helpers_score_and_average_as_by_hand():
    y = np.arange(40.0) % 5 + 1
    origins = np.array([30, 35])
    base = baseline_forecasts(y, origins, 5, 5)
    np.testing.assert_array_equal(base["naive"], np.stack([naive_forecast(y[:o], 5) for o in origins]))
    np.testing.assert_array_equal(
        base["seasonal_naive"], np.stack([seasonal_naive_forecast(y[:o], 5, 5) for o in origins])
    )
    actual = np.stack([y[o : o + 5] for o in origins])
    scores = score_forecasts(actual, base, y[:30], 5)
    assert list(scores) == ["naive", "seasonal_naive"] and scores["naive"] == score(actual, base["naive"], y[:30], 5)
    assert scores["seasonal_naive"]["mae"] == 0.0
    mean = mean_scores([{"m": {"mae": 1.0, "rmse": 2.0}}, {"m": {"mae": 3.0, "rmse": 4.0}}])
    assert mean == {"m": {"mae": 2.0, "rmse": 3.0}}
    assert interval_hits(np.array([1.0, np.nan, 5.0]), np.array([0.0, 0.0, 0.0]), np.array([1.0, 9.0, 4.0])) == (1, 2)


def test_the_series_package_loads_no_training_code_until_asked():
    code = (
        "import sys, statefulrnn.series, statefulrnn.series.forecast;"
        "bad = [m for m in sys.modules if m in ('statefulrnn.train', 'statefulrnn.distributed',"
        " 'statefulrnn.series.train', 'matplotlib')];"
        "assert not bad, bad;"
        "from statefulrnn.series import train_series, calibrate_intervals;"
        "assert 'statefulrnn.series.train' in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("freq, season", [("30min", 48), ("h", 24), ("2D", 7), ("MS", 12)])
def test_phase_features_follow_the_season_in_steps_and_match_a_stream(freq, season):
    """Period ordinals of a multiple frequency count its base unit (30 per "30min" step): the phase
    must still repeat every `season` steps, and a stream started at `first_position` must see the same."""
    times = pd.date_range("2000-06-05 00:30", periods=5 * season + 3, freq=freq)
    s = Series("x", times.to_numpy(), np.arange(len(times), dtype=np.float64), freq=freq)
    f = phase_features(s, season)
    np.testing.assert_allclose(f[:season], f[season : 2 * season], atol=1e-12)
    assert len({tuple(np.round(r, 9)) for r in f[:season]}) == season  # every position in the season differs
    np.testing.assert_allclose(phase_features(first_position(s, season), season, len(s)), f, atol=1e-9)
