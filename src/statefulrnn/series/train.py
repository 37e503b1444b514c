"""Training a forecaster: series in, preparation chosen on validation, a multi-horizon recurrent model
(or a seed ensemble) trained, conformal intervals calibrated, the rolling-origin backtest written; the
only module of the series package that imports the trainer.

A run directory gets transforms.json and selection.json (before training), then from the trainer
config.json, weights, checkpoint and metrics, ensemble members in members/<k>/, and after training
intervals.json and backtest.json (file names in `statefulrnn.runs`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..device import resolve_device
from ..distributed import init_distributed
from ..files import atomic_write, read_json, write_json
from ..layout import Layout, Sequences, StatelessLayout, evaluation_layout, pack_layout
from ..model import SequenceModel
from ..objectives import Regression
from ..runs import BACKTEST, CHECKPOINT, INTERVALS, MEMBERS, SELECTION, TRANSFORMS, Run, read_config
from ..train import TrainConfig, Trainer, resumed_config, seed_everything
from .data import SeriesSet
from .features import fit_transform, model_inputs, n_inputs
from .forecast import backtest_series
from .read import read_series
from .select import (
    SCREEN_FRACTION,
    candidates,
    conformal_intervals,
    label,
    validation_forecasts,
    validation_report,
)
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


@dataclass
class _Prepared:
    """A spec's transforms and the training and validation sequences they make."""

    transforms: dict[str, Transform]
    train: Sequences
    val: Sequences


def train_series(
    source: str | Path | SeriesSet | None,
    run: str | Path | None = None,
    spec: ForecastSpec | None = None,
    *,
    read: dict[str, Any] | None = None,
    model_args: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    ensemble: int = 1,
    device: str | None = "auto",
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> Run:
    """Train a forecaster on the series of a file (or a `SeriesSet`), then backtest it at rolling
    origins against naive and seasonal-naive baselines; the trained `Run` (its `summary["backtest"]`
    holds the report, `summary["validation"]` the validation MASE next to seasonal naive's, its model
    the weights the summary reports). With `run` (a directory) everything is also written there;
    without it nothing is written and `resume` is unavailable.

    Preparation fields of `spec` left as None (see `ForecastSpec.auto`) are chosen on the validation
    windows: each candidate trains with a quarter of the budget, the best trains with all of it.
    `ensemble` > 1 trains that many models (seeds seed, seed+1, ...) whose median is the forecast.
    `read` holds `read_series` options (id_col, time_col, target, fill, freq). With `resume=True`,
    continues `run` from its checkpoint with its saved settings (only `overrides` of epochs,
    max_time, max_tokens and patience may change them). Started by torchrun as one of several
    processes, trains data-parallel (see `distributed.py`); only rank 0 backtests and returns the report.
    """
    run = None if run is None else Path(run)
    if resume and run is None:
        raise ValueError("resume needs the run directory")
    selection = None
    if resume:
        saved = read_config(run, task="series")
        source = source or saved["data"]["source"]
        if source is None:
            raise ValueError(f"{run} was trained on in-memory series: pass them again to resume")
        read, spec, model_args = saved["data"]["read"], ForecastSpec(**saved["forecast"]), saved["model"]
        config, ensemble = resumed_config(saved, overrides), int(saved.get("ensemble", 1))
        if (run / SELECTION).is_file():
            selection = read_json(run / SELECTION, "selection")
    if spec is None:
        raise ValueError("give a ForecastSpec (at least the horizon)")
    if source is None:
        raise ValueError("give the series file")
    if not isinstance(ensemble, int) or ensemble < 1:
        raise ValueError(f"ensemble must be a number of models >= 1, got {ensemble!r}")
    config = replace(config) if config else TrainConfig(**SERIES_TRAIN)
    read = dict(read or {})
    data = source if isinstance(source, SeriesSet) else read_series(source, features=spec.features, **read)
    spec = spec.with_seasons(data.freq)
    device_ = resolve_device(device)
    dist = init_distributed(device_)
    device_ = dist.device if dist is not None else device_
    args = {**SERIES_MODEL, **(model_args or {})}
    args.pop("vocab_size", None)
    if not spec.resolved:
        spec, selection = _choose(data, spec, args, config, device_, progress)
    prepared = _prepare(data, spec, config.window)
    settings = {
        "task": "series",
        "forecast": asdict(spec),
        "ensemble": ensemble,
        "data": {
            "source": None if isinstance(source, SeriesSet) else str(Path(source).resolve()),
            "read": read,
            "series": len(data),
        },
    }
    main = dist is None or dist.is_main
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
    if run is not None and not resume and main:
        atomic_write(run / TRANSFORMS, transforms_to_json(prepared.transforms).encode())
        if selection is not None:
            write_json(run / SELECTION, selection)
    fit = {"device": device_, "dist": dist, "settings": settings, "progress": progress}
    result = _fit(prepared, spec, args, config, run, resume=resume, **fit)
    for k in range(1, ensemble):
        member = None if run is None else run / MEMBERS / str(k)
        again = resume and member is not None and (member / CHECKPOINT).is_file()
        config_k = replace(resumed_config(result.config, overrides) if resume else config, seed=config.seed + k)
        result.members.append(_fit(prepared, spec, args, config_k, member, resume=again, **fit).model)
    if not main:
        return result
    forecasts = validation_forecasts(result.models, data, prepared.transforms, spec, result.config)
    validation = validation_report(forecasts, data, spec)
    result.intervals = conformal_intervals(forecasts, spec.interval) if spec.interval else {}
    report = None
    if spec.test_windows:
        report = backtest_series(result.models, data, prepared.transforms, spec, result.config, result.intervals)
    if run is not None:
        write_json(run / INTERVALS, {"coverage": spec.interval, "series": result.intervals})
        if report is not None:
            write_json(run / BACKTEST, report)
    summary = result.summary
    summary.update(run=None if run is None else str(run), backtest=report, validation=validation)
    summary.update(preparation=label(spec), seasons=list(spec.seasons), ensemble=ensemble, selection=selection)
    if not validation["beats_seasonal_naive"]:
        best = validation["best_naive"]
        summary["warning"] = (
            f"the model's validation MASE ({validation['mase']:.3f}) is not below that of seasonal naive at season "
            f"{best['season']} ({best['mase']:.3f}) on the same origins: forecast with seasonal naive, or try "
            "other --season values, more --epochs or --ensemble"
        )
    return result


def calibrate_intervals(
    model: SequenceModel | list[SequenceModel],
    data: SeriesSet,
    transforms: dict[str, Transform],
    spec: ForecastSpec,
    config: dict,
) -> dict[str, list[list[float]]]:
    """Interval bounds relative to the forecast, per series and horizon step, from the validation
    origins (split conformal prediction, `select.conformal_intervals`)."""
    return conformal_intervals(validation_forecasts(model, data, transforms, spec, config), spec.interval)


def _choose(
    data: SeriesSet, spec: ForecastSpec, args: dict[str, Any], config: TrainConfig, device: Any, progress: bool
) -> tuple[ForecastSpec, dict[str, Any]]:
    """The open preparation choices of `spec` made on validation, and the record of every candidate."""
    screen = replace(config, epochs=max(1, math.ceil(config.epochs * SCREEN_FRACTION)))
    if config.max_time is not None:
        screen.max_time = config.max_time * SCREEN_FRACTION
    tried: list[dict[str, Any]] = []

    def score(candidate: ForecastSpec) -> float:
        try:
            prepared = _prepare(data, candidate, config.window)
        except ValueError as e:  # e.g. too short to deseason: the candidate is out, the reason kept
            tried.append({"label": label(candidate), "val_mase": math.inf, "error": str(e)})
            return math.inf
        fitted = _fit(prepared, candidate, args, replace(screen), None, device=device, dist=None, progress=False)
        v = validation_report(
            validation_forecasts(fitted.model, data, prepared.transforms, candidate, fitted.config), data, candidate
        )
        tried.append({"label": label(candidate), "spec": asdict(candidate), "val_mase": v["mase"]})
        tried[-1]["seasonal_naive_mase"] = v["seasonal_naive_mase"]
        return v["mase"]

    pool = candidates(spec, data, config.window)
    if progress:
        from tqdm.auto import tqdm

        pool = tqdm(pool, desc="choosing preparation", unit="candidate", leave=False)
    best = min(pool, key=score)
    if not math.isfinite(min(c["val_mase"] for c in tried)):
        raise ValueError("no preparation could be trained: " + "; ".join(c.get("error", "") for c in tried))
    if spec.scale is None and score(replace(best, scale="standard")) < min(c["val_mase"] for c in tried[:-1]):
        best = replace(best, scale="standard")
    naive = next(c["seasonal_naive_mase"] for c in tried if "seasonal_naive_mase" in c)
    budget = f"{screen.epochs} of {config.epochs} epochs" + ("" if config.max_time is None else ", time / 4")
    return best, {
        "chosen": label(best),
        "budget": budget,
        "seasonal_naive_mase": naive,
        "candidates": tried,
    }


def _prepare(data: SeriesSet, spec: ForecastSpec, window: int) -> _Prepared:
    """Fit each series' transform on its training part; the masked training and validation sequences."""
    transforms, train_parts, val_parts = {}, [], []
    for s in data:
        val_start, test_start = spec.splits(s, window)
        transforms[s.id] = t = fit_transform(s, spec, val_start)
        inputs, targets = model_inputs(s, t, spec)
        train_parts.append(_masked(inputs, targets, t.offset, 0, val_start, val_start))
        val_parts.append(_masked(inputs, targets, t.offset, val_start, test_start, test_start))
    return _Prepared(transforms, _stack(train_parts), _stack(val_parts))


def _fit(
    prepared: _Prepared,
    spec: ForecastSpec,
    args: dict[str, Any],
    config: TrainConfig,
    run: Path | None,
    *,
    device: Any,
    dist: Any,
    progress: bool,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
) -> Run:
    """Train one model on prepared sequences; the `Run` holding its best weights and config."""
    seed_everything(config.seed)
    model = SequenceModel(**{**args, "n_features": n_inputs(spec), "n_outputs": spec.horizon})
    layout = pack_layout(prepared.train, config)
    config.lanes = layout.lanes  # the lanes trained on, recorded in config.json
    settings = settings or {"task": "series", "forecast": asdict(spec), "data": {"source": None, "read": {}}}
    trainer = Trainer(
        model,
        Regression(),
        layout,
        validation_layout(prepared.val, config),
        config,
        run,
        device=device,
        settings=settings,
        progress=progress,
        dist=dist,
    )
    summary = trainer.fit(resume=resume)
    summary["layout"] = layout.summary()
    return Run(
        trainer.model.eval(), trainer.run_config(), run, spec=spec, transforms=prepared.transforms, summary=summary
    )


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
