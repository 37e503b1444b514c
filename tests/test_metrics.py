import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from statefulrnn.series.metrics import (
    backtest,
    mae,
    mase,
    naive_forecast,
    rmse,
    rolling_origins,
    score,
    seasonal_naive_forecast,
    smape,
)


def test_metrics_by_hand():
    y, f = [1.0, 2.0, 3.0], [2.0, 2.0, 5.0]
    assert mae(y, f) == 1.0
    assert rmse(y, f) == pytest.approx(math.sqrt(5 / 3))
    assert smape(y, f) == pytest.approx((200 / 3 + 0 + 50) / 3)
    assert mase([5.0], [4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(1 / (5 / 3))
    assert mase([5.0], [4.0], [1.0, 3.0, 2.0, 4.0], season=2) == pytest.approx(1 / 1)
    assert score(y, f, [0.0, 1.0]) == {"mae": 1.0, "rmse": rmse(y, f), "smape": smape(y, f), "mase": 1.0}


def test_nan_pairs_are_ignored_and_edges():
    assert mae([1.0, np.nan, 3.0], [2.0, 5.0, np.nan]) == 1.0
    assert rmse([[1.0, np.nan]], [[3.0, 0.0]]) == 2.0
    assert math.isnan(mae([np.nan], [1.0])) and math.isnan(smape([], []))
    assert smape([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert smape([1.0], [-1.0]) == 200.0 and smape([0.0], [3.0]) == 200.0
    assert mase([1.0], [1.0], [2.0, 2.0, 2.0]) == 0.0 and mase([1.0], [2.0], [2.0, 2.0]) == math.inf
    with pytest.raises(ValueError, match="more than 3 in-sample"):
        mase([1.0], [1.0], [1.0, 2.0, 3.0], season=3)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(4, 40), elements=st.floats(-1e6, 1e6)), st.integers(1, 3))
def test_mase_properties(y, season):
    assume(np.abs(y[season:] - y[:-season]).max() > 1e-6)  # no underflow of the scale to 0
    assert mase(y, y, y, season) == 0.0
    # the in-sample seasonal-naive forecast is exactly the scale: MASE 1
    assert mase(y[season:], y[:-season], y, season) == pytest.approx(1.0)
    assert 0 <= smape(y, y[::-1]) <= 200


def test_baselines():
    h = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert naive_forecast(h, 3).tolist() == [5, 5, 5]
    assert seasonal_naive_forecast(h, 5, 2).tolist() == [4, 5, 4, 5, 4]
    assert seasonal_naive_forecast(h, 2, 5).tolist() == [1, 2]
    two = np.stack([h, 10 * h])
    assert seasonal_naive_forecast(two, 3, 2).tolist() == [[4, 5, 4], [40, 50, 40]]
    assert naive_forecast(two, 2).tolist() == [[5, 5], [50, 50]]
    with pytest.raises(ValueError, match="at least 6"):
        seasonal_naive_forecast(h, 1, 6)
    with pytest.raises(ValueError, match="horizon"):
        naive_forecast(h, 0)


def test_rolling_origins_tile_the_end():
    o = rolling_origins(100, 12, 3)
    assert o.tolist() == [64, 76, 88]
    assert rolling_origins(100, 12, 3, step=1).tolist() == [86, 87, 88]
    with pytest.raises(ValueError, match="need a series of 37; it has 36"):
        rolling_origins(36, 12, 3, min_train=1)
    with pytest.raises(ValueError, match="windows"):
        rolling_origins(36, 12, 0)


def test_backtest_scores_models_and_baselines_on_the_same_points():
    y = np.arange(30.0) % 7
    origins = rolling_origins(len(y), 7, 2)
    actual, snaive = backtest(y, lambda hist: seasonal_naive_forecast(hist, 7, 7), horizon=7, origins=origins)
    assert actual.shape == snaive.shape == (2, 7)
    np.testing.assert_array_equal(actual, np.stack([y[16:23], y[23:30]]))
    assert mase(actual, snaive, y[: origins[0]], season=7) == 0.0
    _, naive = backtest(y, lambda hist: naive_forecast(hist, 7), horizon=7, origins=origins)
    assert mase(actual, naive, y[: origins[0]], season=7) == math.inf
    with pytest.raises(ValueError, match="expected \\(7,\\)"):
        backtest(y, lambda hist: hist[-3:], horizon=7, origins=origins)
    with pytest.raises(ValueError, match="origins must lie"):
        backtest(y, lambda hist: hist[-7:], horizon=7, origins=[25])
