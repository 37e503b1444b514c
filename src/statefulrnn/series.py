"""Numeric time series, end to end: read and check, transform and frame, score against baselines.

The path a series takes, one module per stage (this module gathers their public names):

    series_data       read_series / series_from_frame -> SeriesSet of checked, regular Series
    series_transform  Transform fitted on the training part (differencing, scaling to [-1, 1]),
                      frame() into direct multi-horizon pairs, inverse_forecast() back to units
    metrics           mae, rmse, smape, mase; naive and seasonal-naive baselines; rolling origins

A typical evaluation: origins = rolling_origins(T, H, K); fit Transform on values[:origins[0]];
score the model and the baselines on the same origins with the same metrics.
"""

from .metrics import (
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
from .series_data import Series, SeriesSet, infer_freq, read_series, series_from_frame
from .series_transform import Transform, frame, transforms_from_json, transforms_to_json

__all__ = [
    "Series",
    "SeriesSet",
    "Transform",
    "backtest",
    "frame",
    "infer_freq",
    "mae",
    "mase",
    "naive_forecast",
    "read_series",
    "rmse",
    "rolling_origins",
    "score",
    "seasonal_naive_forecast",
    "series_from_frame",
    "smape",
    "transforms_from_json",
    "transforms_to_json",
]
