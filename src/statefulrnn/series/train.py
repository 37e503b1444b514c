"""Training a forecaster: series in, a multi-horizon recurrent model trained, intervals calibrated,
the rolling-origin backtest written; the only module of the series package that imports the trainer.

A run directory gets transforms.json (before training), then from the trainer config.json, weights,
checkpoint and metrics, and after it intervals.json and backtest.json (file names in `statefulrnn.runs`).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..device import resolve_device
from ..distributed import init_distributed
from ..files import atomic_write, write_json
from ..layout import Layout, Sequences, StatelessLayout, evaluation_layout, pack_layout
from ..model import SequenceModel
from ..objectives import Regression
from ..runs import BACKTEST, INTERVALS, TRANSFORMS, Run, read_config
from ..train import (
    TrainConfig,
    Trainer,
    resumed_config,
    seed_everything,
)
from .data import SeriesSet
from .features import model_inputs, n_inputs
from .forecast import backtest_series, observed_windows, origin_forecasts, run_mode
from .read import read_series
from .spec import SERIES_MODEL, SERIES_TRAIN, ForecastSpec
from .transform import Transform, transforms_to_json

STATELESS_VAL_WINDOWS_PER_LANE = 8
"""A stateless run validates on windows of `window` steps (48 by default) where a stateful one runs
`eval_lanes` lanes of `eval_window` steps (512 by default); batching 8 windows per evaluation lane
keeps a validation batch of a similar number of steps. The windows are independent (each starts
from zero state), so this sets only how many run at once; it is fixed so that runs stay comparable."""


def validation_layout(val: Sequences, config: TrainConfig) -> Layout:
    """The layout of the validation parts: windows as in training (stateless) or packed stateful lanes."""
    if config.mode == "stateless":
        windows = config.eval_lanes * STATELESS_VAL_WINDOWS_PER_LANE
        return StatelessLayout(val, windows, config.window, burn_in=config.burn_in, shuffle=False)
    return evaluation_layout(val, config.eval_lanes, config.eval_window, pack=True)


def train_series(
    source: str | Path | SeriesSet | None,
    run: str | Path | None = None,
    spec: ForecastSpec | None = None,
    *,
    read: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    device: str | None = "auto",
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> Run:
    """Train a forecaster on the series of a file (or a `SeriesSet`), then backtest it at rolling
    origins against naive and seasonal-naive baselines; the trained `Run` (its `summary["backtest"]`
    holds the report, its model the weights the summary reports). With `run` (a directory) everything
    is also written there; without it nothing is written and `resume` is unavailable.

    `read` holds `read_series` options (id_col, time_col, target, fill, freq). With `resume=True`,
    continues `run` from its checkpoint with its saved settings (only `overrides` of epochs,
    max_time, max_tokens and patience may change them). Started by torchrun as one of several
    processes, trains data-parallel (see `distributed.py`); only rank 0 backtests and returns the report.
    """
    run = None if run is None else Path(run)
    if resume and run is None:
        raise ValueError("resume needs the run directory")
    if resume:
        saved = read_config(run, task="series")
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
    layout = pack_layout(train, config)
    config.lanes = layout.lanes  # the lanes trained on, recorded in config.json
    val_layout = validation_layout(val, config)
    settings = {
        "task": "series",
        "forecast": asdict(spec),
        "data": {
            "source": None if isinstance(source, SeriesSet) else str(Path(source).resolve()),
            "read": read,
            "series": len(data),
        },
    }
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
    if run is not None and not resume and (dist is None or dist.is_main):
        atomic_write(run / TRANSFORMS, transforms_to_json(transforms).encode())
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
    model, saved = trainer.model.eval(), trainer.run_config()  # the reported (best) weights
    result = Run(model, saved, run, spec=spec, transforms=transforms, summary=summary)
    if dist is not None and not dist.is_main:
        return result
    result.intervals = calibrate_intervals(model, data, transforms, spec, saved) if spec.interval else {}
    report = backtest_series(model, data, transforms, spec, saved, result.intervals)
    if run is not None:
        write_json(run / INTERVALS, {"coverage": spec.interval, "series": result.intervals})
        write_json(run / BACKTEST, report)
    summary.update(layout=layout.summary(), run=None if run is None else str(run), backtest=report)
    return result


def calibrate_intervals(
    model: SequenceModel, data: SeriesSet, transforms: dict[str, Transform], spec: ForecastSpec, config: dict
) -> dict[str, list[list[float]]]:
    """Interval bounds relative to the forecast, per series and horizon step, from validation residuals.

    Every step of the validation part is an origin; the `coverage` quantile of the absolute error
    per step ahead is the half-width (split conformal prediction with absolute-residual scores).
    """
    out = {}
    for s in data:
        origins = spec.val_origins(s, config["train"]["window"])
        pred = origin_forecasts(model, s, transforms[s.id], spec, origins, **run_mode(config))
        resid = observed_windows(s, origins, spec.horizon) - pred
        half = np.nan_to_num(np.nanquantile(np.abs(resid), spec.interval, axis=0))
        out[s.id] = np.stack([-half, half], axis=1).tolist()
    return out


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
