"""Forecasting runs: series in, a multi-horizon recurrent model trained, rolling-origin tests, forecasts out.

Framing (a *direct multi-horizon head*): at step t the model reads the transformed value of step t
(plus features) and outputs the next H transformed values at once. Its state, carried over the
whole history of the series, is its memory. Each series is split in time: training part, then
`val_windows * H` steps for model selection and interval calibration, then `test_windows * H`
steps tested at rolling origins (one every H steps). Transforms are fitted on the training part only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import checkpoint as ckpt
from .distributed import init_distributed
from .layout import Sequences
from .metrics import naive_forecast, score, seasonal_naive_forecast
from .model import SequenceModel
from .objectives import Regression
from .series_data import Series, SeriesSet, read_series
from .series_transform import Transform, frame, transforms_from_json, transforms_to_json
from .train import (
    TrainConfig,
    Trainer,
    evaluation_layout,
    resolve_device,
    resumed_config,
    seed_everything,
    training_layout,
)

TRANSFORMS = "transforms.json"
INTERVALS = "intervals.json"
BACKTEST = "backtest.json"
SERIES_MODEL = {"hidden_size": 64, "num_layers": 1}
SERIES_TRAIN = {"lanes": 16, "window": 48, "epochs": 40, "lr": 3e-3, "eval_window": 512}


@dataclass
class ForecastSpec:
    """What to forecast and how the series are prepared (saved in the run's config.json).

    Attributes:
        horizon: steps forecast from each origin (the width of the model's output head).
        season: the seasonal period in steps (24 for hourly data with a daily cycle; 1 for none):
            used by seasonal naive, MASE, seasonal differencing and the phase features.
        diff: first differences applied before scaling (0, 1 or 2).
        seasonal_diff: also difference at lag `season` (applied first).
        scale: "minmax" (to [-1, 1], suits tanh), "standard" or "none"; per series, on training values.
        phase: add sin/cos of the position within the season as inputs (season > 1 only).
        test_windows: rolling-origin test windows of `horizon` steps at the end of each series.
        val_windows: windows before the test part used for model selection and interval calibration.
        interval: coverage of the empirical prediction interval (0 turns intervals off).
        features: extra numeric input columns.
    """

    horizon: int
    season: int = 1
    diff: int = 0
    seasonal_diff: bool = False
    scale: str = "minmax"
    phase: bool = True
    test_windows: int = 4
    val_windows: int = 4
    interval: float = 0.8
    features: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("horizon", "season", "test_windows", "val_windows"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0 <= self.interval < 1:
            raise ValueError(f"interval must be a coverage in [0, 1), got {self.interval}")
        self.features = tuple(self.features)

    def transform(self) -> Transform:
        return Transform(seasonal_diff=self.season if self.seasonal_diff else 0, diff=self.diff, scale=self.scale)

    def splits(self, series: Series, window: int) -> tuple[int, int]:
        """(val_start, test_start): where the validation and test parts of `series` begin."""
        test_start = len(series) - self.test_windows * self.horizon
        val_start = test_start - self.val_windows * self.horizon
        need = self.transform().offset + max(window, 2 * self.season, 2) + 1
        if val_start < need:
            raise ValueError(
                f"series '{series.id}' has {len(series)} steps; {self.val_windows} validation and "
                f"{self.test_windows} test windows of horizon {self.horizon} leave {max(val_start, 0)} for training, "
                f"fewer than the {need} needed: use fewer windows, a shorter horizon or window, or drop the series"
            )
        return val_start, test_start


# --- preparing series --------------------------------------------------------------------------
def phase_features(series: Series, season: int) -> np.ndarray:
    """(T, 2) sin/cos of each step's position within the season, from its timestamp where possible."""
    index = np.arange(len(series), dtype=np.float64)
    if series.freq is not None:
        try:
            index = pd.DatetimeIndex(series.timestamps).to_period(series.freq).asi8.astype(np.float64)
        except (ValueError, TypeError, AttributeError):
            pass
    angle = 2 * np.pi * np.mod(index, season) / season
    return np.column_stack([np.sin(angle), np.cos(angle)])


def model_inputs(series: Series, transform: Transform, spec: ForecastSpec) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (T - offset, n_features) and targets (T - offset, H) of a series in model units."""
    z = transform.transform(series.values)
    extra = []
    if series.features is not None and spec.features:
        extra.append(transform.transform_features(series.features))
    if spec.phase and spec.season > 1:
        extra.append(phase_features(series, spec.season)[transform.offset :])
    feats = np.concatenate(extra, axis=1) if extra else None
    return frame(z, spec.horizon, feats)


def n_inputs(spec: ForecastSpec) -> int:
    return 1 + len(spec.features) + (2 if spec.phase and spec.season > 1 else 0)


def _masked(inputs: np.ndarray, targets: np.ndarray, offset: int, lo: int, hi: int, end: int) -> tuple:
    """Rows up to original index `end`, targets kept only where their original index is in [lo, hi)."""
    rows = end - offset
    idx = offset + 1 + np.arange(rows)[:, None] + np.arange(targets.shape[1])[None, :]
    t = np.where((idx >= lo) & (idx < hi), targets[:rows], np.nan)
    return inputs[:rows], t


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> Sequences:
    data = np.concatenate([p[0] for p in parts]).astype(np.float32)
    targets = np.concatenate([p[1] for p in parts]).astype(np.float32)
    starts = np.cumsum([0] + [len(p[0]) for p in parts])
    return Sequences(data, starts, targets)


# --- running the model ---------------------------------------------------------------------------
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
    model: SequenceModel, series: Series, transform: Transform, spec: ForecastSpec, origins: np.ndarray, **run: Any
) -> np.ndarray:
    """Original-unit forecasts (K, H) of values[o : o + H] for each origin o, from the true history before o."""
    inputs, _ = model_inputs(series, transform, spec)
    z = forecast_rows(model, inputs, np.asarray(origins) - 1 - transform.offset, **run)
    return transform.inverse_at(z, series.values, np.asarray(origins))


def _actuals(series: Series, origins: np.ndarray, horizon: int) -> np.ndarray:
    y = np.where(series.filled, np.nan, series.values)
    return np.stack([y[o : o + horizon] for o in origins])


# --- training ------------------------------------------------------------------------------------
def train_series(
    source: str | Path | SeriesSet | None,
    run: str | Path,
    spec: ForecastSpec | None = None,
    *,
    read: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    device: str | None = "auto",
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a forecaster on the series of a file (or a `SeriesSet`) into run directory `run`, then
    backtest it at rolling origins against naive and seasonal-naive baselines.

    `read` holds `read_series` options (id_col, time_col, target, fill, freq). With `resume=True`,
    continues `run` from its checkpoint with its saved settings (only `overrides` of epochs,
    max_time, max_tokens and patience may change them). Started by torchrun as one of several
    processes, trains data-parallel (see `distributed.py`); only rank 0 backtests and returns the report.
    """
    run = Path(run)
    if resume:
        saved = ckpt.read_config(run)
        if saved.get("task") != "series":
            raise ValueError(f"{run} is a {saved.get('task')} run, not a series run")
        source = source or saved["data"]["source"]
        if source is None:
            raise ValueError(f"{run} was trained on in-memory series: pass them again to resume")
        read, spec, model_args = saved["data"]["read"], ForecastSpec(**saved["forecast"]), saved["model"]
        config = resumed_config(saved, overrides)
    if spec is None:
        raise ValueError("give a ForecastSpec (at least the horizon)")
    if source is None:
        raise ValueError("give the series file")
    config = replace(config) if config else TrainConfig(**SERIES_TRAIN)
    read = dict(read or {})
    data = source if isinstance(source, SeriesSet) else read_series(source, features=spec.features, **read)
    transforms, train_parts, val_parts = {}, [], []
    for s in data:
        val_start, test_start = spec.splits(s, config.window)
        t = spec.transform().fit(s.values[:val_start], None if s.features is None else s.features[:val_start])
        transforms[s.id] = t
        inputs, targets = model_inputs(s, t, spec)
        train_parts.append(_masked(inputs, targets, t.offset, 0, val_start, val_start))
        val_parts.append(_masked(inputs, targets, t.offset, val_start, test_start, test_start))
    train, val = _stack(train_parts), _stack(val_parts)
    device_ = resolve_device(device)
    dist = init_distributed(device_)
    device_ = dist.device if dist is not None else device_
    seed_everything(config.seed)
    args = {**SERIES_MODEL, **(model_args or {})}
    args.update(n_features=n_inputs(spec), n_outputs=spec.horizon)
    args.pop("vocab_size", None)
    model = SequenceModel(**args)
    lanes_per_series = max(1, math.ceil(config.lanes / len(data)))
    longest = int(train.usable.max())
    max_length = max(config.window, math.ceil(longest / lanes_per_series)) if lanes_per_series > 1 else None
    usable = train.usable[train.usable > 0]
    pieces = int(np.ceil(usable / max_length).sum()) if max_length else len(usable)
    if config.mode == "stateful" and pieces < config.lanes:
        config.lanes = pieces  # short data: no more lanes than pieces of series (recorded in config.json)
    layout = training_layout(train, config, pack=True, max_length=max_length)
    if config.mode == "stateless":
        from .layout import StatelessLayout

        val_layout = StatelessLayout(val, config.eval_lanes * 8, config.window, burn_in=config.burn_in, shuffle=False)
    else:
        val_layout = evaluation_layout(val, config.eval_lanes, config.eval_window, pack=True)
    settings = {
        "task": "series",
        "forecast": asdict(spec),
        "data": {
            "source": None if isinstance(source, SeriesSet) else str(Path(source).resolve()),
            "read": read,
            "series": len(data),
        },
    }
    run.mkdir(parents=True, exist_ok=True)
    if not resume and (dist is None or dist.is_main):
        ckpt.atomic_write(run / TRANSFORMS, transforms_to_json(transforms).encode())
    trainer = Trainer(
        model,
        Regression(),
        layout,
        val_layout,
        config,
        run,
        device=device_,
        settings=settings,
        progress=progress,
        dist=dist,
    )
    summary = trainer.fit(resume=resume)
    if dist is not None and not dist.is_main:
        return summary
    model, saved = ckpt.load_model(run, device_)
    intervals = calibrate_intervals(model, data, transforms, spec, saved) if spec.interval else {}
    ckpt.write_json(run / INTERVALS, {"coverage": spec.interval, "series": intervals})
    report = backtest_series(model, data, transforms, spec, saved, intervals)
    ckpt.write_json(run / BACKTEST, report)
    summary.update(layout=layout.summary(), run=str(run), backtest=report)
    return summary


def run_mode(config: dict[str, Any]) -> dict[str, Any]:
    train = config.get("train", {})
    mode = train.get("mode", "stateful")
    return {"mode": mode, "context": train.get("window", 1) + train.get("burn_in", 0) if mode == "stateless" else 0}


def calibrate_intervals(
    model: SequenceModel, data: SeriesSet, transforms: dict[str, Transform], spec: ForecastSpec, config: dict
) -> dict[str, list[list[float]]]:
    """Interval bounds relative to the forecast, per series and horizon step, from validation residuals.

    Every step of the validation part is an origin; the `coverage` quantile of the absolute error
    per step ahead is the half-width (split conformal prediction with absolute-residual scores).
    """
    out = {}
    for s in data:
        val_start, test_start = spec.splits(s, config["train"]["window"])
        origins = np.arange(val_start, test_start - spec.horizon + 1)
        pred = origin_forecasts(model, s, transforms[s.id], spec, origins, **run_mode(config))
        resid = _actuals(s, origins, spec.horizon) - pred
        half = np.nan_to_num(np.nanquantile(np.abs(resid), spec.interval, axis=0))
        out[s.id] = np.stack([-half, half], axis=1).tolist()
    return out


def test_origins(series: Series, spec: ForecastSpec, window: int) -> np.ndarray:
    """The rolling origins of the test part: one every `horizon` steps, tiling the end of the series."""
    _, test_start = spec.splits(series, window)
    return test_start + spec.horizon * np.arange(spec.test_windows)


def rolling_forecasts(
    model: SequenceModel,
    series: Series,
    transform: Transform,
    spec: ForecastSpec,
    config: dict,
    intervals: dict[str, list] | None = None,
) -> dict[str, np.ndarray]:
    """Forecasts (K, H) of the model and the baselines at the test origins, the actuals, and the
    model's interval bounds when calibrated: what `backtest_series` scores and plots show."""
    origins = test_origins(series, spec, config["train"]["window"])
    out = {
        "origins": origins,
        "actual": _actuals(series, origins, spec.horizon),
        "model": origin_forecasts(model, series, transform, spec, origins, **run_mode(config)),
        "naive": np.stack([naive_forecast(series.values[:o], spec.horizon) for o in origins]),
        "seasonal_naive": np.stack(
            [seasonal_naive_forecast(series.values[:o], spec.horizon, spec.season) for o in origins]
        ),
    }
    if intervals and series.id in intervals:
        band = np.asarray(intervals[series.id])
        out["lo"], out["hi"] = out["model"] + band[:, 0], out["model"] + band[:, 1]
    return out


def backtest_series(
    model: SequenceModel,
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
    per_series, totals = {}, {}
    covered, counted = 0, 0
    for s in data:
        f = rolling_forecasts(model, s, transforms[s.id], spec, config, intervals)
        history = s.values[: f["origins"][0]]
        scores = {k: score(f["actual"], f[k], history, spec.season) for k in ("model", "naive", "seasonal_naive")}
        if "lo" in f:
            ok = np.isfinite(f["actual"])
            covered += int(((f["actual"] >= f["lo"]) & (f["actual"] <= f["hi"]))[ok].sum())
            counted += int(ok.sum())
        per_series[s.id] = scores
        for k, sc in scores.items():
            for m, v in sc.items():
                totals.setdefault(k, {}).setdefault(m, []).append(v)
    mean = {k: {m: float(np.mean(v)) for m, v in ms.items()} for k, ms in totals.items()}
    report = {"horizon": spec.horizon, "season": spec.season, "windows": spec.test_windows, "mean": mean}
    report["series"] = per_series
    if counted:
        report["interval"] = {"nominal": spec.interval, "coverage": covered / counted, "points": counted}
    return report


# --- using a trained run ---------------------------------------------------------------------------
def load_series_run(run: str | Path, device: str | None = "auto") -> tuple[SequenceModel, ForecastSpec, dict, dict]:
    """The model (best weights), spec, fitted transforms and config of a series run."""
    run = Path(run)
    model, config = ckpt.load_model(run, resolve_device(device))
    if config.get("task") != "series":
        raise ValueError(f"{run} is a {config.get('task')} run, not a series run")
    if not (run / TRANSFORMS).is_file():
        raise ValueError(f"{run / TRANSFORMS} is missing: the run is incomplete; train it again")
    transforms = transforms_from_json((run / TRANSFORMS).read_text())
    return model, ForecastSpec(**config["forecast"]), transforms, config


def _transform_for(s: Series, transforms: dict[str, Transform], spec: ForecastSpec) -> Transform:
    """The run's transform of a known series, or one fitted on this history for a new series."""
    if s.id in transforms:
        return transforms[s.id]
    return spec.transform().fit(s.values, s.features)


def forecast_run(
    run: str | Path, history: str | Path | SeriesSet, *, horizon: int | None = None, device: str | None = "auto"
) -> pd.DataFrame:
    """Forecast the next `horizon` steps after each series of `history`: unique_id, ds, step, forecast
    (and lo/hi bounds for series the run calibrated intervals on)."""
    model, spec, transforms, config = load_series_run(run, device)
    horizon = horizon or spec.horizon
    if not 1 <= horizon <= spec.horizon:
        raise ValueError(f"horizon {horizon} is outside 1..{spec.horizon}, the horizon the run was trained for")
    read = config["data"]["read"]
    data = history if isinstance(history, SeriesSet) else read_series(history, features=spec.features, **read)
    bands = read_intervals(Path(run))
    frames = []
    for s in data:
        t = _transform_for(s, transforms, spec)
        if len(s) <= t.offset + 1:
            raise ValueError(f"series '{s.id}' has {len(s)} values; the run needs more than {t.offset + 1}")
        inputs, _ = model_inputs(s, t, spec)
        z = forecast_rows(model, inputs, np.array([len(inputs) - 1]), **run_mode(config))
        f = t.inverse_forecast(z[0], s.values)[:horizon]
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
    model, spec, transforms, config = load_series_run(run, device)
    data = path if isinstance(path, SeriesSet) else read_series(path, features=spec.features, **config["data"]["read"])
    fitted = {}
    for s in data:
        if s.id in transforms:
            fitted[s.id] = transforms[s.id]
        else:
            val_start, _ = spec.splits(s, config["train"]["window"])
            fitted[s.id] = spec.transform().fit(
                s.values[:val_start], None if s.features is None else s.features[:val_start]
            )
    return backtest_series(model, data, fitted, spec, config, read_intervals(Path(run)))


def read_intervals(run: Path) -> dict[str, list]:
    if not (run / INTERVALS).exists():
        return {}
    return ckpt.read_json(run / INTERVALS, "intervals").get("series", {})


def plot_forecast_table(history: SeriesSet, table: pd.DataFrame, out: str | Path, max_series: int = 6) -> Path:
    """PNG of each series' history tail with the `forecast_run` table's forecast and interval (first few series)."""
    from .plots import plot_forecast

    panels = []
    for s in list(history)[:max_series]:
        part = table[table["unique_id"] == s.id]
        dated = bool(part["ds"].notna().all())
        x = part["ds"].to_numpy() if dated else len(s) + part["step"].to_numpy() - 1
        hx = s.timestamps if dated else np.arange(len(s))
        tail = max(0, len(s) - 5 * len(part))
        panel = {"id": s.id, "history": (hx[tail:], s.values[tail:]), "forecasts": {"forecast": (x, part["forecast"])}}
        if "lo" in part and part["lo"].notna().all():
            panel["band"] = (x, part["lo"], part["hi"])
        panels.append(panel)
    return plot_forecast(panels, Path(out))
