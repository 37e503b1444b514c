"""Choosing a forecaster's preparation on validation, and what validation says about the chosen one.

Every origin of each series' validation part (one per step, the windows before the test part) is
forecast from the true history before it; the mean over series of the MASE there ranks candidate
preparations (`candidates`) and tells whether the trained model beats seasonal naive
(`validation_report`). The same validation forecasts calibrate the prediction intervals
(`conformal_intervals`). Nothing here trains: `train.py` runs the candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from itertools import product
from typing import Any

import numpy as np

from ..model import SequenceModel
from .data import SeriesSet
from .forecast import observed_windows, origin_forecasts, run_mode
from .metrics import baseline_forecasts, mase
from .spec import ForecastSpec
from .transform import Transform

SCREEN_FRACTION = 0.25
"""Candidates are screened with this fraction of the training budget (epochs or time); the winner
then trains with the whole budget."""


def candidates(spec: ForecastSpec, data: SeriesSet, window: int) -> list[ForecastSpec]:
    """The preparations to try: every open choice of differencing (none, first, seasonal at each
    season the data holds two cycles of) and deseasoning, with `scale` still open (chosen after).

    A seasonal difference is not combined with deseasoning or a first difference unless the user
    fixed both; the first candidate is the plainest, which wins ties.
    """
    shortest = min(len(s) for s in data) - (spec.val_windows + spec.test_windows) * spec.horizon
    usable = tuple(s for s in spec.seasons if 2 * s + window < shortest)
    diffs = [spec.diff] if spec.diff is not None else [0, 1]
    lags = [spec.seasonal_diff] if spec.seasonal_diff is not None else [0, *usable]
    deseasons = [spec.deseason] if spec.deseason is not None else [False] + ([True] if usable else [])
    out = []
    for lag, d, des in product(lags, diffs, deseasons):
        if lag and des and (spec.seasonal_diff is None or spec.deseason is None):
            continue
        if lag and d and (spec.seasonal_diff is None or spec.diff is None):
            continue
        out.append(replace(spec, diff=d, seasonal_diff=lag, deseason=des, scale=spec.scale or "minmax"))
    return sorted(out, key=lambda c: (c.deseason, c.seasonal_diff > 0, c.diff))


def label(spec: ForecastSpec) -> str:
    """A short name of a preparation, e.g. "deseason(24,168)+diff1, minmax"."""
    parts = []
    if spec.deseason:
        parts.append(f"deseason({','.join(map(str, spec.seasons))})")
    if spec.seasonal_diff:
        parts.append(f"seasonal diff {spec.seasonal_diff}")
    if spec.diff:
        parts.append(f"diff{spec.diff}")
    return f"{'+'.join(parts) or 'levels'}, {spec.scale}"


def validation_forecasts(
    models: SequenceModel | Sequence[SequenceModel],
    data: SeriesSet,
    transforms: dict[str, Transform],
    spec: ForecastSpec,
    config: dict[str, Any],
) -> dict[str, dict[str, np.ndarray]]:
    """Per series: the validation origins, the model's forecasts there (K, H) and the actuals (K, H)."""
    out = {}
    for s in data:
        origins = spec.val_origins(s, config["train"]["window"])
        pred = origin_forecasts(models, s, transforms[s.id], spec, origins, **run_mode(config))
        out[s.id] = {"origins": origins, "model": pred, "actual": observed_windows(s, origins, spec.horizon)}
    return out


def validation_report(forecasts: dict[str, dict[str, np.ndarray]], data: SeriesSet, spec: ForecastSpec) -> dict:
    """Mean validation MASE of the model and of the seasonal naive forecast at each season and of the
    naive one (season 1) at the same origins (the main season's as `seasonal_naive_mase`), per series
    too; whether the model beats them all."""
    periods = (*spec.seasons, 1)
    per = {}
    for s in data:
        f = forecasts[s.id]
        history = s.values[: f["origins"][0]]
        per[s.id] = {"model": mase(f["actual"], f["model"], history, spec.season)}
        for p in periods:
            naive = baseline_forecasts(s.values, f["origins"], spec.horizon, p)["seasonal_naive"]
            per[s.id][f"seasonal_naive_{p}"] = mase(f["actual"], naive, history, spec.season)
    means = {k: float(np.mean([v[k] for v in per.values()])) for k in per[data[0].id]}
    best = min(periods, key=lambda p: means[f"seasonal_naive_{p}"])
    return {
        "mase": means["model"],
        "seasonal_naive_mase": means[f"seasonal_naive_{periods[0]}"],
        "best_naive": {"season": best, "mase": means[f"seasonal_naive_{best}"]},
        "beats_seasonal_naive": bool(means["model"] < means[f"seasonal_naive_{best}"]),
        "series": per,
    }


def conformal_intervals(forecasts: dict[str, dict[str, np.ndarray]], coverage: float) -> dict[str, list[list[float]]]:
    """Interval bounds relative to the forecast, per series and step ahead: split conformal prediction
    with absolute-residual scores over the validation origins, with the finite-sample correction
    (the ceil((n + 1) * coverage)-th smallest score of n), so coverage holds for exchangeable errors."""
    out = {}
    for sid, f in forecasts.items():
        scores = np.abs(f["actual"] - f["model"])
        half = np.zeros(scores.shape[1])
        for h in range(scores.shape[1]):
            known = np.sort(scores[:, h][np.isfinite(scores[:, h])])
            if len(known):
                half[h] = known[min(len(known), math.ceil((len(known) + 1) * coverage)) - 1]
        out[sid] = np.stack([-half, half], axis=1).tolist()
    return out


def selection_lines(selection: dict[str, Any]) -> list[str]:
    """The candidates' validation MASE as printed lines, the chosen one marked."""
    lines = [f"preparation chosen on validation ({selection['budget']} of the budget per candidate):"]
    for c in selection["candidates"]:
        mark = "*" if c["label"] == selection["chosen"] else " "
        lines.append(f" {mark} {c['label']:45} validation MASE {c['val_mase']:.3f}")
    lines.append(
        f"   seasonal naive on the same origins          validation MASE {selection['seasonal_naive_mase']:.3f}"
    )
    return lines
