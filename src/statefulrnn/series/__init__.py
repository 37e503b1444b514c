"""Numeric time series, end to end: read and check, transform, frame, score, forecast, train.

Data flows one way through these modules (each imports only those above it):

    data.py       `Series`, `SeriesSet`, `infer_freq`, and the checks that make a regular series
    read.py       `read_series` / `series_from_frame`: a CSV, Parquet file or DataFrame in, a `SeriesSet` out
    transform.py  `Transform` fitted on the training part (differencing, scaling to [-1, 1]), `frame`
                  into direct multi-horizon pairs, saved as JSON (`transforms_to_json` / `_from_json`)
    metrics.py    mae, rmse, smape, mase; naive and seasonal-naive baselines; `rolling_origins`, the
                  one way origins are made, and the one backtest scoring path
    spec.py       `ForecastSpec`: horizon, season, preparation, the validation/test splits and origins
    features.py   what the model reads: `model_inputs`, `n_inputs`, `phase_features` (+ `first_position`, `phase_step`)
    forecast.py   running a trained model (or the median of an ensemble): `forecast_rows`, `backtest_series`,
                  `forecast_run`, ...
    select.py     validation: candidate preparations, validation MASE against seasonal naive, conformal intervals
    train.py      `train_series`: preparation chosen on validation, model or ensemble trained (imports the trainer)
    forecaster.py `StatefulForecaster`: fit / predict / cross_validation on long frames, as statsforecast
    plot.py       `plot_forecast`, `plot_forecast_table` (imports matplotlib)

Importing this package never imports training code or matplotlib: the names of `train.py`,
`forecaster.py` and `plot.py` load on first use, so serving can use transforms and specs without the trainer.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .data import Series, SeriesSet, infer_freq
from .features import first_position, model_inputs, n_inputs, phase_features, phase_step
from .forecast import (
    backtest_series,
    evaluate_series_run,
    forecast_rows,
    forecast_run,
    load_series_run,
    origin_forecasts,
    read_intervals,
    rolling_forecasts,
    run_mode,
)
from .metrics import (
    backtest,
    baseline_forecasts,
    interval_hits,
    mae,
    mase,
    mean_scores,
    naive_forecast,
    rmse,
    rolling_origins,
    score,
    score_forecasts,
    seasonal_naive_forecast,
    smape,
)
from .read import read_series, series_from_frame
from .spec import SERIES_MODEL, SERIES_TRAIN, ForecastSpec
from .transform import Transform, frame, transforms_from_json, transforms_to_json

_LAZY = {
    "calibrate_intervals": "train",
    "train_series": "train",
    "StatefulForecaster": "forecaster",
    "plot_forecast": "plot",
    "plot_forecast_table": "plot",
}


def __getattr__(name: str) -> Any:
    """The names of `train.py` (the trainer) and `plot.py` (matplotlib), imported on first use."""
    if name in _LAZY:  # PEP 562; import_module keeps them out of this package's own import graph
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "SERIES_MODEL",
    "SERIES_TRAIN",
    "ForecastSpec",
    "Series",
    "SeriesSet",
    "StatefulForecaster",
    "Transform",
    "backtest",
    "backtest_series",
    "baseline_forecasts",
    "calibrate_intervals",
    "evaluate_series_run",
    "first_position",
    "forecast_rows",
    "forecast_run",
    "frame",
    "infer_freq",
    "interval_hits",
    "load_series_run",
    "mae",
    "mase",
    "mean_scores",
    "model_inputs",
    "n_inputs",
    "naive_forecast",
    "origin_forecasts",
    "phase_features",
    "phase_step",
    "plot_forecast",
    "plot_forecast_table",
    "read_intervals",
    "read_series",
    "rmse",
    "rolling_forecasts",
    "rolling_origins",
    "run_mode",
    "score",
    "score_forecasts",
    "seasonal_naive_forecast",
    "series_from_frame",
    "smape",
    "train_series",
    "transforms_from_json",
    "transforms_to_json",
]
