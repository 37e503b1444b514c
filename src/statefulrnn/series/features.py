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
    """The position within the season of a series' first step, as `phase_features` counts it.

    From the period ordinal of its first timestamp at the series' frequency; 0 when it has none.
    """
    if series.freq is not None:
        try:
            return int(pd.DatetimeIndex(series.timestamps[:1]).to_period(series.freq).asi8[0]) % season
        except (ValueError, TypeError, AttributeError):
            pass
    return 0


def phase_step(series: Series) -> int:
    """How far the position moves per step of the series, as `phase_features` counts it.

    1 for most frequencies, but the period ordinals of a multiple frequency count its base unit:
    30 per step at "30min", 2 at "2D". A stream continuing a series advances by this per step.
    """
    if series.freq is not None:
        try:
            stamps = pd.date_range(series.timestamps[0], periods=2, freq=series.freq)
            return int(np.diff(stamps.to_period(series.freq).asi8)[0])
        except (ValueError, TypeError, AttributeError, IndexError):
            pass
    return 1


def phase_features(start: Series | int, season: int, length: int | None = None, *, step: int = 1) -> np.ndarray:
    """(T, 2) sin/cos of each step's position within the season.

    `start` is a `Series` (T = its length; positions are the period ordinals of its timestamps where
    its frequency allows, else the step index) or the integer position of the first step: then
    `length` steps follow it, `step` apart (`phase_step` of the series; `first_position` gives the start).
    """
    if isinstance(start, Series):
        positions = np.arange(len(start), dtype=np.float64)
        if start.freq is not None:
            try:
                positions = pd.DatetimeIndex(start.timestamps).to_period(start.freq).asi8.astype(np.float64)
            except (ValueError, TypeError, AttributeError):
                pass
    else:
        if length is None:
            raise ValueError("phase_features from a start position needs the number of steps (length)")
        positions = int(start) + step * np.arange(length)
    angle = 2 * np.pi * np.mod(positions, season) / season
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
    """The width of the model's input: the value, the extra features and two phase columns (if any)."""
    return 1 + len(spec.features) + (2 if spec.phase and spec.season > 1 else 0)
