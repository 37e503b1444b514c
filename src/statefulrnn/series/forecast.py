"""Running a trained forecaster: forecasts at origins, rolling-origin backtests, forecasts of a run.

The model's transformed output is mapped back to the original units with the true history before
each origin. Loading a run goes through `statefulrnn.runs.load_run`; nothing here imports the
trainer, so serving and evaluation stay light. Training and interval calibration are in `train.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..device import resolve_device
from ..files import read_json
from ..model import SequenceModel
from ..runs import INTERVALS, Run, load_run
from .data import Series, SeriesSet
from .features import first_position, fit_transform, model_inputs
from .metrics import baseline_forecasts, interval_hits, mean_scores, score_forecasts
from .read import read_series
from .spec import ForecastSpec
from .transform import Transform

FORECASTERS = ("model", "naive", "seasonal_naive")


@torch.no_grad()
def forecast_rows(
    model: SequenceModel, inputs: np.ndarray, rows: np.ndarray, *, mode: str = "stateful", context: int = 0
) -> np.ndarray:
    """The model's transformed forecasts (len(rows), H) made at input rows `rows` of one series.

    Stateful: the state is warmed on the whole history in one fused call. Stateless: each forecast
    sees only the `context` rows before it, from zero state, as the model was trained.
    """
    model.eval()
    p = next(model.parameters())
    rows = np.asarray(rows, dtype=np.int64)
    if mode == "stateful":
        x = torch.from_numpy(np.ascontiguousarray(inputs[: rows.max() + 1])).to(p.device, p.dtype)
        out, _ = model(x[None])
        return out[0, torch.from_numpy(rows).to(p.device)].double().cpu().numpy()
    out = np.empty((len(rows), model.config["n_outputs"]))
    full = rows >= context - 1
    if full.any():
        idx = rows[full, None] - context + 1 + np.arange(context)[None, :]
        x = torch.from_numpy(np.ascontiguousarray(inputs[idx])).to(p.device, p.dtype)
        out[full] = model(x)[0][:, -1].double().cpu().numpy()
    for k in np.flatnonzero(~full):
        x = torch.from_numpy(np.ascontiguousarray(inputs[: rows[k] + 1])).to(p.device, p.dtype)
        out[k] = model(x[None])[0][0, -1].double().cpu().numpy()
    return out


def origin_forecasts(
    model: SequenceModel | Sequence[SequenceModel],
    series: Series,
    transform: Transform,
    spec: ForecastSpec,
    origins: np.ndarray,
    **run: Any,
) -> np.ndarray:
    """Original-unit forecasts (K, H) of values[o : o + H] for each origin o, from the true history before o.

    Given several models (an ensemble), the median of their forecasts, step by step.
    """
    inputs, _ = model_inputs(series, transform, spec)
    start = first_position(series, spec.period)
    rows, origins = np.asarray(origins) - 1 - transform.offset, np.asarray(origins)
    out = [
        transform.inverse_at(forecast_rows(m, inputs, rows, **run), series.values, origins, start)
        for m in members(model)
    ]
    return out[0] if len(out) == 1 else np.median(np.stack(out), axis=0)


def members(model: SequenceModel | Sequence[SequenceModel]) -> list[SequenceModel]:
    """The models of an ensemble (a single model is an ensemble of one)."""
    return list(model) if isinstance(model, list | tuple) else [model]


def observed_windows(series: Series, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The actuals (K, H) after each origin, NaN where the value was filled rather than observed."""
    y = np.where(series.filled, np.nan, series.values)
    return np.stack([y[o : o + horizon] for o in origins])


def run_mode(config: dict[str, Any]) -> dict[str, Any]:
    """How `forecast_rows` runs the model of a run: its training mode and, stateless, the context it saw."""
    train = config.get("train", {})
    mode = train.get("mode", "stateful")
    return {"mode": mode, "context": train.get("window", 1) + train.get("burn_in", 0) if mode == "stateless" else 0}


def rolling_forecasts(
    model: SequenceModel | Sequence[SequenceModel],
    series: Series,
    transform: Transform,
    spec: ForecastSpec,
    config: dict,
    intervals: dict[str, list] | None = None,
) -> dict[str, np.ndarray]:
    """Forecasts (K, H) of the model and the baselines at the test origins, the actuals, and the
    model's interval bounds when calibrated: what `backtest_series` scores and plots show."""
    origins = spec.test_origins(series, config["train"]["window"])
    out = {
        "origins": origins,
        "actual": observed_windows(series, origins, spec.horizon),
        "model": origin_forecasts(model, series, transform, spec, origins, **run_mode(config)),
        **baseline_forecasts(series.values, origins, spec.horizon, spec.season),
    }
    if intervals and series.id in intervals:
        band = np.asarray(intervals[series.id])
        out["lo"], out["hi"] = out["model"] + band[:, 0], out["model"] + band[:, 1]
    return out


def backtest_series(
    model: SequenceModel | Sequence[SequenceModel],
    data: SeriesSet,
    transforms: dict[str, Transform],
    spec: ForecastSpec,
    config: dict,
    intervals: dict[str, list] | None = None,
) -> dict[str, Any]:
    """Rolling-origin test of the model and the baselines on the last `test_windows` windows of each series.

    Metrics per series and their mean over series; MASE is scaled by the in-sample seasonal naive
    error of the part before the test. Filled (not observed) values are left out.
    """
    per_series, scored = {}, []
    covered, counted, coverage = 0, 0, {}
    for s in data:
        f = rolling_forecasts(model, s, transforms[s.id], spec, config, intervals)
        history = s.values[: f["origins"][0]]
        scores = score_forecasts(f["actual"], {k: f[k] for k in FORECASTERS}, history, spec.season)
        if "lo" in f:
            hits, known = interval_hits(f["actual"], f["lo"], f["hi"])
            covered, counted = covered + hits, counted + known
            if known:
                coverage[s.id] = hits / known
        per_series[s.id] = scores
        scored.append(scores)
    report = {"horizon": spec.horizon, "season": spec.season, "windows": spec.test_windows, "mean": mean_scores(scored)}
    report["series"] = per_series
    if counted:
        report["interval"] = {
            "nominal": spec.interval,
            "coverage": covered / counted,
            "points": counted,
            "series_min": min(coverage.values()),
            "series_max": max(coverage.values()),
            "series": coverage,
        }
    return report


# --- using a trained run ---------------------------------------------------------------------------
def load_series_run(run: str | Path, device: str | None = "auto") -> tuple[SequenceModel, ForecastSpec, dict, dict]:
    """The model (best weights), spec, fitted transforms and config of a series run.

    A thin wrapper of `statefulrnn.runs.load_run(run, device, task="series")` for existing callers.
    """
    loaded = _load(run, device)
    return loaded.model, loaded.spec, loaded.transforms, loaded.config


def read_intervals(run: Path) -> dict[str, list]:
    """The interval half-widths of a run per series ({} when it has none); `load_run` reads them too."""
    if not (Path(run) / INTERVALS).exists():
        return {}
    return read_json(Path(run) / INTERVALS, "intervals").get("series", {})


def fitted_transform(s: Series, transforms: dict[str, Transform], spec: ForecastSpec) -> Transform:
    """The run's transform of a known series, or one fitted on this history for a new series."""
    if s.id in transforms:
        return transforms[s.id]
    return fit_transform(s, spec)


def forecast_run(
    run: str | Path, history: str | Path | SeriesSet, *, horizon: int | None = None, device: str | None = "auto"
) -> pd.DataFrame:
    """Forecast the next `horizon` steps after each series of `history`: unique_id, ds, step, forecast
    (and lo/hi bounds for series the run calibrated intervals on)."""
    loaded = _load(run, device)
    spec, config = loaded.spec, loaded.config
    horizon = horizon or spec.horizon
    if not 1 <= horizon <= spec.horizon:
        raise ValueError(f"horizon {horizon} is outside 1..{spec.horizon}, the horizon the run was trained for")
    read = config["data"]["read"]
    data = history if isinstance(history, SeriesSet) else read_series(history, features=spec.features, **read)
    bands = loaded.intervals
    frames = []
    for s in data:
        t = fitted_transform(s, loaded.transforms, spec)
        if len(s) <= t.offset + 1:
            raise ValueError(f"series '{s.id}' has {len(s)} values; the run needs more than {t.offset + 1}")
        f = origin_forecasts(loaded.models, s, t, spec, np.array([len(s)]), **run_mode(config))[0][:horizon]
        try:
            ds = s.future_timestamps(horizon)
        except ValueError:
            ds = np.full(horizon, np.datetime64("NaT"))
        part = pd.DataFrame({"unique_id": s.id, "ds": ds, "step": np.arange(1, horizon + 1), "forecast": f})
        if s.id in bands:
            band = np.asarray(bands[s.id])[:horizon]
            part["lo"], part["hi"] = f + band[:, 0], f + band[:, 1]
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def evaluate_series_run(run: str | Path, path: str | Path | SeriesSet, *, device: str | None = "auto") -> dict:
    """Rolling-origin test of a series run on the last windows of each series in `path`, with baselines."""
    loaded = _load(run, device)
    spec, transforms, config = loaded.spec, loaded.transforms, loaded.config
    data = path if isinstance(path, SeriesSet) else read_series(path, features=spec.features, **config["data"]["read"])
    fitted = {}
    for s in data:
        if s.id in transforms:
            fitted[s.id] = transforms[s.id]
        else:
            fitted[s.id] = fit_transform(s, spec, spec.splits(s, config["train"]["window"])[0])
    return backtest_series(loaded.models, data, fitted, spec, config, loaded.intervals)


def _load(run: str | Path, device: str | None) -> Run:
    return load_run(Path(run), resolve_device(device), task="series")
