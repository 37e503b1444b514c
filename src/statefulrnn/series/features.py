"""What the model reads from a series: the transformed value, scaled features and the phase in the season.

Training, backtests, forecasts and streaming all build their inputs here, so a served stream sees
exactly what the model was trained on. `phase_features` is the one place the phase inputs are
computed: from a `Series` (positions from its timestamps) or from an integer start position (a
stream that only knows where it is within the season: `first_position` and `phase_step`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import Series
from .spec import ForecastSpec
from .transform import Transform, frame


def first_position(series: Series, season: int) -> int:
    """The position within the season of a series' first step, as `phase_features` counts it."""
    return int(_positions(series)[0]) % season if len(series) else 0


def phase_step(series: Series) -> int:
    """How far a period ordinal moves per step of the series: 1 for most frequencies, but the ordinals
    of a multiple frequency count its base unit (30 per step at "30min", 2 at "2D")."""
    if series.freq is not None:
        try:
            stamps = pd.date_range(series.timestamps[0], periods=2, freq=series.freq)
            return int(np.diff(stamps.to_period(series.freq).asi8)[0])
        except (ValueError, TypeError, AttributeError, IndexError):
            pass
    return 1


def phase_features(
    start: Series | int, season: int | tuple[int, ...], length: int | None = None, *, step: int = 1
) -> np.ndarray:
    """(T, 2) sin/cos of each step's position within the season ((T, 2k) for k seasons, in order).

    `start` is a `Series` (T = its length; positions count its steps from the epoch where its
    frequency allows, so the phase follows the calendar, else from its first step) or the integer
    position of the first step: then `length` steps follow it, `step` apart (a stream: 1 per step;
    `first_position` gives the start).
    """
    if isinstance(start, Series):
        positions = _positions(start)
    else:
        if length is None:
            raise ValueError("phase_features from a start position needs the number of steps (length)")
        positions = int(start) + step * np.arange(length)
    columns = []
    for s in (season,) if isinstance(season, int | np.integer) else season:
        angle = 2 * np.pi * np.mod(positions, s) / s
        columns += [np.sin(angle), np.cos(angle)]
    return np.column_stack(columns) if columns else np.zeros((len(positions), 0))


def _positions(series: Series) -> np.ndarray:
    """Each step's count of steps since the epoch (period ordinals over the frequency's multiple, so that
    "30min" data advances 1 per step, like every other frequency), else its index."""
    if series.freq is not None:
        try:
            ordinals = pd.DatetimeIndex(series.timestamps).to_period(series.freq).asi8
            return (ordinals // phase_step(series)).astype(np.float64)
        except (ValueError, TypeError, AttributeError):
            pass
    return np.arange(len(series), dtype=np.float64)


def fit_transform(series: Series, spec: ForecastSpec, end: int | None = None) -> Transform:
    """A new transform of `spec` fitted on the first `end` steps of a series (its training part; None: all
    of it), its seasonal positions counted from the timestamps as `model_inputs` counts them."""
    end = len(series) if end is None else end
    features = None if series.features is None else series.features[:end]
    return spec.transform().fit(series.values[:end], features, first_position(series, spec.period))


def model_inputs(series: Series, transform: Transform, spec: ForecastSpec) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (T - offset, n_features) and targets (T - offset, H) of a series in model units."""
    z = transform.transform(series.values, first_position(series, spec.period))
    extra = []
    if series.features is not None and spec.features:
        extra.append(transform.transform_features(series.features))
    if spec.phases:
        extra.append(phase_features(series, spec.phases)[transform.offset :])
    feats = np.concatenate(extra, axis=1) if extra else None
    return frame(z, spec.horizon, feats)


def n_inputs(spec: ForecastSpec) -> int:
    """The width of the model's input: the value, the extra features and two phase columns per season."""
    return 1 + len(spec.features) + 2 * len(spec.phases)
