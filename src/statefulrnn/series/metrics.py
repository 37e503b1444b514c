"""Forecast accuracy, the naive baselines every model must beat, and rolling-origin backtests.

Every metric takes arrays of any matching (broadcastable) shape and ignores the pairs where the
truth or the forecast is NaN (masked horizons past the end of a series); with no pair left it
returns NaN. Baselines and models are scored on the same origins from `rolling_origins` (the one
place origins are made): origin o means the history is values[:o] and the test is values[o : o + H].
`backtest` runs a forecaster at those origins; `score_forecasts`, `mean_scores` and `interval_hits`
are the one scoring path of every backtest report. Plain numpy, nothing from the package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

ArrayLike = np.ndarray | list | tuple | float


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error."""
    a, b = _pairs(y_true, y_pred)
    return float(np.mean(np.abs(a - b))) if a.size else float("nan")


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error."""
    a, b = _pairs(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def smape(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Symmetric MAPE in percent, 0..200: mean of 200 |y - f| / (|y| + |f|), with 0/0 taken as 0."""
    a, b = _pairs(y_true, y_pred)
    if not a.size:
        return float("nan")
    den = np.abs(a) + np.abs(b)
    ratio = np.divide(2 * np.abs(a - b), den, out=np.zeros_like(den), where=den > 0)
    return float(100 * np.mean(ratio))


def mase(y_true: ArrayLike, y_pred: ArrayLike, insample: ArrayLike, season: int = 1) -> float:
    """MAE scaled by the in-sample MAE of the seasonal-naive forecast (season=1: the naive one).

    Below 1 beats that baseline on average. A perfectly constant in-sample series gives 0 for a
    perfect forecast and inf otherwise.

    >>> mase([3.0, 4.0], [3.5, 4.5], insample=[1.0, 2.0, 3.0])  # naive in-sample error 1.0
    0.5
    """
    scale = _naive_scale(insample, season)
    err = mae(y_true, y_pred)
    if scale == 0:
        return err if np.isnan(err) else (0.0 if err == 0 else float("inf"))
    return err / scale


def score(y_true: ArrayLike, y_pred: ArrayLike, insample: ArrayLike, season: int = 1) -> dict[str, float]:
    """All four metrics at once: mae, rmse, smape, mase."""
    return {
        "mae": mae(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "smape": smape(y_true, y_pred),
        "mase": mase(y_true, y_pred, insample, season),
    }


def naive_forecast(history: ArrayLike, horizon: int) -> np.ndarray:
    """The last value repeated `horizon` times; history (..., L) gives (..., H)."""
    y = _history(history, 1)
    return np.repeat(y[..., -1:], _horizon(horizon), axis=-1)


def seasonal_naive_forecast(history: ArrayLike, horizon: int, season: int) -> np.ndarray:
    """Each step's value one season earlier, the last season repeated; history (..., L) gives (..., H)."""
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    y = _history(history, season)
    idx = y.shape[-1] - season + np.arange(_horizon(horizon)) % season
    return y[..., idx]


def rolling_origins(
    length: int, horizon: int, windows: int, *, step: int | None = None, min_train: int = 1
) -> np.ndarray:
    """The `windows` forecast origins ending the series, oldest first; each tests values[o : o + H].

    The last origin is length - horizon; earlier ones are `step` apart (default: horizon, so the
    test windows tile the end of the series without overlap). Every origin keeps >= min_train values.
    """
    horizon, step = _horizon(horizon), _horizon(horizon) if step is None else step
    if windows < 1 or step < 1:
        raise ValueError(f"windows and step must be >= 1, got windows={windows}, step={step}")
    first = length - horizon - (windows - 1) * step
    if first < min_train:
        need = min_train + horizon + (windows - 1) * step
        raise ValueError(
            f"{windows} windows of horizon {horizon}, {step} apart, with {min_train} training values need a series "
            f"of {need}; it has {length}: use fewer windows or a shorter horizon"
        )
    return first + step * np.arange(windows)


def backtest(
    values: ArrayLike, forecaster: Callable[[np.ndarray], ArrayLike], *, horizon: int, origins: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Run `forecaster(history) -> (H,)` at each origin: the actual and forecast values, both (K, H)."""
    y = np.asarray(values, dtype=np.float64)
    h = _horizon(horizon)
    o = np.asarray(origins, dtype=np.int64).reshape(-1)
    if len(o) and (o.min() < 1 or o.max() + h > len(y)):
        raise ValueError(f"origins must lie in 1..{len(y) - h} for a series of {len(y)} and horizon {h}")
    actual = np.stack([y[i : i + h] for i in o]) if len(o) else np.empty((0, h))
    predicted = np.empty_like(actual)
    for k, i in enumerate(o):
        f = np.asarray(forecaster(y[:i].copy()), dtype=np.float64).reshape(-1)
        if f.shape != (h,):
            raise ValueError(f"the forecaster returned shape {f.shape} at origin {i}; expected ({h},)")
        predicted[k] = f
    return actual, predicted


def baseline_forecasts(values: ArrayLike, origins: ArrayLike, horizon: int, season: int) -> dict[str, np.ndarray]:
    """The naive and seasonal-naive forecasts (K, H) at each origin, each from the history before it."""
    return {
        "naive": backtest(values, lambda y: naive_forecast(y, horizon), horizon=horizon, origins=origins)[1],
        "seasonal_naive": backtest(
            values, lambda y: seasonal_naive_forecast(y, horizon, season), horizon=horizon, origins=origins
        )[1],
    }


def score_forecasts(
    actual: ArrayLike, forecasts: Mapping[str, ArrayLike], insample: ArrayLike, season: int = 1
) -> dict[str, dict[str, float]]:
    """`score` of each named forecast against the same actuals: {name: {mae, rmse, smape, mase}}."""
    return {name: score(actual, f, insample, season) for name, f in forecasts.items()}


def mean_scores(scores: Iterable[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Each forecaster's metrics averaged over series, from one `score_forecasts` result per series."""
    totals: dict[str, dict[str, list[float]]] = {}
    for per_series in scores:
        for name, metrics in per_series.items():
            for metric, value in metrics.items():
                totals.setdefault(name, {}).setdefault(metric, []).append(value)
    return {name: {m: float(np.mean(v)) for m, v in ms.items()} for name, ms in totals.items()}


def interval_hits(actual: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> tuple[int, int]:
    """(covered, counted): the known (finite) actuals inside [lo, hi], and the known actuals."""
    a = np.asarray(actual)
    ok = np.isfinite(a)
    return int(((a >= lo) & (a <= hi))[ok].sum()), int(ok.sum())


def _pairs(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.broadcast_arrays(np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64))
    ok = ~(np.isnan(a) | np.isnan(b))
    return a[ok], b[ok]


def _naive_scale(insample: ArrayLike, season: int) -> float:
    y = np.asarray(insample, dtype=np.float64).reshape(-1)
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    d = np.abs(y[season:] - y[:-season])
    d = d[~np.isnan(d)]
    if not d.size:
        raise ValueError(f"MASE needs more than {season} in-sample values (season {season}); got {len(y)}")
    return float(d.mean())


def _history(history: ArrayLike, need: int) -> np.ndarray:
    y = np.asarray(history, dtype=np.float64)
    if y.ndim == 0 or y.shape[-1] < need:
        raise ValueError(f"the history needs at least {need} values, got {y.shape[-1] if y.ndim else 0}")
    return y


def _horizon(horizon: int) -> int:
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    return int(horizon)
