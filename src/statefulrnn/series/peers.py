"""The classical forecasters a user would pick instead of ours: Nixtla statsforecast's SeasonalNaive,
AutoETS, AutoTheta and MSTL, forecast at our rolling origins and scored as our backtests are.

Two ways to run them at the origins of a series:
- `refit=True`: refit at every origin on all the history before it (the benchmark's way);
- `refit=False`: fit once on the history before the first origin, then move forward with the true
  values (statsforecast's `cross_validation(refit=False)`: the fitted parameters are kept, the
  states are updated). This is how our models work: trained once, their state carried.

Scores come from `score_forecasts` on `observed_windows`, MASE scaled by the in-sample seasonal naive
error before the first origin, exactly as `backtest_series` scores a trained model; our naive and
seasonal naive are scored alongside (statsforecast's SeasonalNaive must equal ours).

statsforecast is an optional dependency (`pip install 'statefulrnn[demo]'`), imported inside the
functions that need it; nothing the serving side loads imports this module.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from .data import Series
from .forecast import observed_windows
from .metrics import baseline_forecasts, mean_scores, score_forecasts

PEERS = ("SeasonalNaive", "AutoETS", "AutoTheta", "MSTL")
"""The peers, in the order tables show them."""
INSTALL = "pip install 'statefulrnn[demo]'"


def require_statsforecast() -> ModuleType:
    """The statsforecast package, or one clear error line saying how to install it."""
    try:
        import statsforecast
    except ImportError:
        raise ValueError(f"the classical peers need statsforecast (an optional dependency): {INSTALL}") from None
    return statsforecast


@dataclass
class PeerForecasts:
    """Forecasts (K, H) per peer and series id, each peer's fit+predict seconds, and notes on what a
    peer became when it could not run as asked."""

    forecasts: dict[str, dict[str, np.ndarray]]
    seconds: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)


def make_peer(peer: str, season: int, mstl_seasons: Sequence[int] = ()) -> tuple[Any, str]:
    """A fresh statsforecast model for `peer` and a note on what it became (empty when as asked).

    statsforecast's AutoETS ignores seasons above 24 (as R's ets does); MSTL without a season is
    its own trend model, AutoETS(model="ZZN"), alone.
    """
    require_statsforecast()
    from statsforecast.models import MSTL, AutoETS, AutoTheta, SeasonalNaive

    if peer == "SeasonalNaive":
        return SeasonalNaive(season_length=season), ""
    if peer == "AutoETS":
        return AutoETS(season_length=season), "non-seasonal (season > 24)" if season > 24 else ""
    if peer == "AutoTheta":
        return AutoTheta(season_length=season), ""
    if peer == "MSTL":
        if mstl_seasons:
            return MSTL(season_length=list(mstl_seasons)), ""
        return AutoETS(model="ZZN", alias="MSTL"), "no season: AutoETS(ZZN), MSTL's trend model, alone"
    raise ValueError(f"unknown peer {peer!r}: use {', '.join(PEERS)}")


def mstl_fit_seasons(seasons: Sequence[int], shortest: int) -> tuple[list[int], str]:
    """The `seasons` that the shortest history holds two full cycles of, and a note on those dropped."""
    keep = [m for m in seasons if m > 1 and 2 * m < shortest]
    dropped = [m for m in seasons if m not in keep]
    note = f"dropped {dropped} (history {shortest} < 2 cycles)" if dropped else ""
    return keep, note


def peer_forecasts(
    series: Sequence[Series],
    origins: Mapping[str, np.ndarray],
    horizon: int,
    season: int,
    mstl_seasons: Sequence[int] = (),
    *,
    peers: Sequence[str] = PEERS,
    refit: bool = True,
) -> PeerForecasts:
    """Each peer's forecasts (K, H) of values[o : o + H] at every origin o of each series (`origins`
    by series id, K per series, the same K for all), timed; see the module docstring for `refit`."""
    require_statsforecast()
    counts = {len(origins[s.id]) for s in series}
    if len(counts) != 1:
        raise ValueError(f"every series needs the same number of origins, got {sorted(counts)}")
    shortest = min(int(origins[s.id][0]) for s in series)
    seasons, season_note = mstl_fit_seasons(mstl_seasons, shortest)
    out = PeerForecasts({}, {}, {})
    for peer in peers:
        model, note = make_peer(peer, season, seasons)
        note = "; ".join(n for n in (note, season_note if peer == "MSTL" else "") if n)
        if note:
            out.notes[peer] = note
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = _refit_each_origin if refit else _fit_once
            out.forecasts[peer] = run(model, series, origins, horizon)
        out.seconds[peer] = time.perf_counter() - start
    return out


def score_peers(
    series: Sequence[Series], origins: Mapping[str, np.ndarray], peers: PeerForecasts, horizon: int, season: int
) -> dict[str, Any]:
    """Scores of our naive and seasonal naive and of every peer, per series and their mean over series,
    and the largest gap between statsforecast's SeasonalNaive and ours (0 when they agree)."""
    per_series, gap = {}, 0.0
    for s in series:
        o = np.asarray(origins[s.id])
        forecasts = dict(baseline_forecasts(s.values, o, horizon, season))
        forecasts.update({p: f[s.id] for p, f in peers.forecasts.items()})
        if "SeasonalNaive" in peers.forecasts:
            gap = max(gap, float(np.nanmax(np.abs(forecasts["seasonal_naive"] - forecasts["SeasonalNaive"]))))
        per_series[s.id] = score_forecasts(observed_windows(s, o, horizon), forecasts, s.values[: o[0]], season)
    return {"mean": mean_scores(per_series.values()), "series": per_series, "seasonal_naive_gap": gap}


def _frame(series: Sequence[Series], ends: Mapping[str, int]) -> pd.DataFrame:
    """The long frame statsforecast reads: each series' values[:end] on integer time steps."""
    return pd.concat(
        pd.DataFrame({"unique_id": s.id, "ds": np.arange(ends[s.id]), "y": s.values[: ends[s.id]]}) for s in series
    )


def _refit_each_origin(
    model: Any, series: Sequence[Series], origins: Mapping[str, np.ndarray], h: int
) -> dict[str, np.ndarray]:
    from statsforecast import StatsForecast

    k_max = len(origins[series[0].id])
    preds = {s.id: np.empty((k_max, h)) for s in series}
    for k in range(k_max):
        # every series at its own k-th origin, fitted together (each on its own history)
        df = _frame(series, {s.id: int(origins[s.id][k]) for s in series})
        fc = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(df=df, h=h)
        alias = next(c for c in fc.columns if c not in ("unique_id", "ds"))
        for uid, part in fc.groupby("unique_id", sort=False):
            preds[str(uid)][k] = part.sort_values("ds")[alias].to_numpy()
    return preds


def _fit_once(model: Any, series: Sequence[Series], origins: Mapping[str, np.ndarray], h: int) -> dict[str, np.ndarray]:
    from statsforecast import StatsForecast

    steps = {tuple(np.diff(np.asarray(origins[s.id]))) for s in series}
    k = len(origins[series[0].id])
    step = int(next(iter(steps))[0]) if k > 1 else h
    if len(steps) != 1 or (k > 1 and set(next(iter(steps))) != {step}):
        raise ValueError("refit=False needs origins evenly spaced by the same step in every series")
    ends = {s.id: int(origins[s.id][-1]) + h for s in series}
    cv = StatsForecast(models=[model], freq=1, n_jobs=1).cross_validation(
        df=_frame(series, ends), h=h, n_windows=k, step_size=step, refit=False
    )
    return forecasts_at_origins(cv, series, origins, h, "statsforecast")


def forecasts_at_origins(
    cv: pd.DataFrame, series: Sequence[Series], origins: Mapping[str, np.ndarray], h: int, who: str
) -> dict[str, np.ndarray]:
    """A Nixtla-style cross_validation frame (integer ds, one model column) as forecasts (K, H) per series
    id, checking that its cutoffs are exactly our origins (cutoff = origin - 1)."""
    alias = next(c for c in cv.columns if c not in ("unique_id", "ds", "cutoff", "y"))
    preds = {}
    for s in series:
        part = cv[cv["unique_id"] == s.id].sort_values(["cutoff", "ds"])
        cutoffs = part["cutoff"].drop_duplicates().to_numpy() + 1
        if not np.array_equal(cutoffs, np.asarray(origins[s.id])):
            raise RuntimeError(f"{who}'s cutoffs {cutoffs} for '{s.id}' are not the origins {origins[s.id]}")
        preds[s.id] = part[alias].to_numpy(dtype=np.float64).reshape(len(origins[s.id]), h)
    return preds
