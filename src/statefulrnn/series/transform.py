"""Making a series fit for a tanh network, and undoing it on forecasts; supervised framing (`frame`).

A `Transform` is fitted per series on its training part only, so that no statistic of the test
period leaks into training:

    values --minus seasonal profile--> --seasonal difference (lag s)--> --first difference (d times)-->
           --scale--> transformed

The seasonal profile (`deseason`, off by default) is one cycle of every seasonal component that an
MSTL decomposition (statsmodels) finds in the training part, summed over the seasons and repeated
at each step's position in the cycle; positions count from `start`, the position of values[0]
(`features.first_position`), so a served stream that knows its position undoes it exactly.

Scaling is min-max to [-1, 1] (the usual choice for tanh units; later values may fall outside),
standardisation, or none. Differencing eats the first `offset` = s + d values: transformed[i]
belongs to values[i + offset]. Features are scaled the same way but never differenced.

`frame` turns a transformed series into the model's supervised problem as a direct multi-horizon
forecast: at step t the network sees the current value (and the features known at t) and its
head predicts the next H values at once, targets[t] = transformed[t+1 : t+1+H], NaN past the end
of the series (the trainer masks NaN targets). A stateful network carries its state from step to
step, so no lag window is stacked into the input. One model pass from a history gives the whole
forecast; `Transform.inverse_forecast` maps it back to the original units, feeding earlier
forecast steps into later ones where the seasonal lag is shorter than the horizon.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SCALES = ("minmax", "standard", "none")
_KIND = "statefulrnn.series.Transform"
_SET_KIND = "statefulrnn.series.Transforms"
_VERSION = 1


class Transform:
    """Per-series differencing then scaling: fit on train, transform, invert forecasts, save as JSON.

    `seasonal_diff` is the seasonal lag (0: none), `diff` the number of first differences (0, 1, 2),
    `scale` one of "minmax" (to [-1, 1]), "standard" (zero mean, unit variance) or "none", and
    `deseason` the seasonal periods whose MSTL profile is subtracted first (empty: none).
    """

    def __init__(
        self, *, seasonal_diff: int = 0, diff: int = 0, scale: str = "minmax", deseason: Sequence[int] = ()
    ) -> None:
        if not isinstance(seasonal_diff, int | np.integer) or seasonal_diff < 0:
            raise ValueError(f"seasonal_diff must be a lag >= 0 (0 for none), got {seasonal_diff!r}")
        if not isinstance(diff, int | np.integer) or not 0 <= diff <= 2:
            raise ValueError(f"diff must be 0, 1 or 2 first differences, got {diff!r}")
        if scale not in SCALES:
            raise ValueError(f"scale={scale!r} is not one of {', '.join(SCALES)}")
        self.seasonal_diff = int(seasonal_diff)
        self.diff = int(diff)
        self.scale = scale
        self.deseason = tuple(int(p) for p in deseason)
        if any(p < 2 for p in self.deseason):
            raise ValueError(f"deseason periods must be >= 2, got {self.deseason}")
        self.profile: np.ndarray | None = None
        self.center: float | None = None
        self.spread: float | None = None
        self.feature_center: np.ndarray | None = None
        self.feature_spread: np.ndarray | None = None

    def __repr__(self) -> str:
        state = f"center={self.center}, spread={self.spread}" if self.fitted else "unfitted"
        return (
            f"Transform(seasonal_diff={self.seasonal_diff}, diff={self.diff}, scale={self.scale!r}, "
            f"deseason={self.deseason}, {state})"
        )

    @property
    def lags(self) -> tuple[int, ...]:
        """The differencing lags in the order they are applied."""
        return ((self.seasonal_diff,) if self.seasonal_diff else ()) + (1,) * self.diff

    @property
    def offset(self) -> int:
        """How many leading values differencing consumes: transformed[i] belongs to values[i + offset]."""
        return sum(self.lags)

    @property
    def fitted(self) -> bool:
        return self.center is not None

    def fit(self, train_values: np.ndarray, train_features: np.ndarray | None = None, start: int = 0) -> Transform:
        """Learn the seasonal profile (if any) and the scaling of the prepared training values (and of the
        features); `start` is the position of the first value in the seasonal cycle. Returns self."""
        y = _finite_1d(train_values, "training values")
        if len(y) <= self.offset:
            raise ValueError(
                f"the training part has {len(y)} values; differencing with lags {self.lags} needs more than "
                f"{self.offset}"
            )
        if self.deseason:
            self.deseason, self.profile = mstl_profile(y, self.deseason, start)
        self.center, self.spread = (float(a) for a in _stats(self._difference(self._deseasoned(y, start)), self.scale))
        if train_features is not None:
            f = _features(train_features, len(y))
            if not np.isfinite(f).all():
                raise ValueError("training features contain NaN or inf; fill them first (read_series(fill=...))")
            self.feature_center, self.feature_spread = _stats(f, self.scale)
        return self

    def transform(self, values: np.ndarray, start: int = 0) -> np.ndarray:
        """Deseason, difference and scale `values` (T,) into (T - offset,) model units; `start` is the
        position of values[0] in the seasonal cycle."""
        self._check_fitted()
        y = np.asarray(values, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"values must be 1-D (T,), got shape {y.shape}")
        return (self._difference(self._deseasoned(y, start)) - self.center) / self.spread

    def transform_features(self, features: np.ndarray) -> np.ndarray:
        """Scale features (T, F) and drop their first `offset` rows, to align them with `transform`."""
        self._check_fitted()
        if self.feature_center is None:
            raise ValueError("this transform was fitted without features; pass train_features to fit()")
        f = _features(features, None)
        if f.shape[1] != len(self.feature_center):
            raise ValueError(
                f"features have {f.shape[1]} columns; the transform was fitted on {len(self.feature_center)}"
            )
        return (f[self.offset :] - self.feature_center) / self.feature_spread

    def inverse_forecast(self, forecast: np.ndarray, history: np.ndarray, start: int = 0) -> np.ndarray:
        """The original-unit forecast of the H values after `history` from a transformed forecast.

        `forecast` is (H,) or (n, H): n forecasts (say, samples) from the same origin. Scaling is
        undone, then each difference, using the last values of `history` (at least `offset`), then
        the seasonal profile is added back; `start` is the position of history[0].
        """
        f = np.asarray(forecast, dtype=np.float64)
        if f.ndim not in (1, 2):
            raise ValueError(f"forecast must be (H,) or (n, H), got shape {f.shape}")
        y = np.asarray(history, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"history must be 1-D (T,), got shape {y.shape}")
        if len(y) < self.offset:
            raise ValueError(
                f"history has {len(y)} values; undoing the differencing (lags {self.lags}) needs at least {self.offset}"
            )
        rows = np.atleast_2d(f)
        out = self.inverse_at(rows, y, np.full(len(rows), len(y)), start)
        return out[0] if f.ndim == 1 else out

    def inverse_at(self, forecasts: np.ndarray, values: np.ndarray, origins: np.ndarray, start: int = 0) -> np.ndarray:
        """Invert many forecasts at once: row i forecasts values[origins[i] : origins[i] + H].

        Row i is undifferenced with the true history values[:origins[i]], as when a model is
        evaluated at every step or at rolling origins; forecasts (N, H), origins (N,); `start` is
        the position of values[0] in the seasonal cycle.
        """
        self._check_fitted()
        z = np.asarray(forecasts, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"forecasts must be (N, H), got shape {z.shape}")
        y = np.asarray(values, dtype=np.float64)
        o = np.asarray(origins, dtype=np.int64).reshape(-1)
        if len(o) != len(z):
            raise ValueError(f"{len(o)} origins for {len(z)} forecasts")
        if len(o) and (o.min() < self.offset or o.max() > len(y)):
            raise ValueError(
                f"each origin needs {self.offset} to {len(y)} values of history (lags {self.lags}); "
                f"got origins {o.min()}..{o.max()}"
            )
        z = z * self.spread + self.center
        levels = [self._deseasoned(y, start)]
        for lag in self.lags:
            levels.append(levels[-1][lag:] - levels[-1][:-lag])
        first = np.cumsum((0, *self.lags))  # levels[k][i] belongs to values[i + first[k]]
        for k in reversed(range(len(self.lags))):
            lag, level = self.lags[k], levels[k]
            tails = level[(o - first[k])[:, None] + np.arange(-lag, 0)]
            if not np.isfinite(tails).all():
                raise ValueError("the history needed to undo the differencing holds NaN or inf")
            ext = np.concatenate([tails, np.empty_like(z)], axis=1)
            for h in range(z.shape[1]):
                ext[:, lag + h] = z[:, h] + ext[:, h]
            z = ext[:, lag:]
        if self.profile is not None:
            z = z + self.profile[(start + o[:, None] + np.arange(z.shape[1])[None, :]) % len(self.profile)]
        return z

    def inverse(self, transformed: np.ndarray, head: np.ndarray, start: int = 0) -> np.ndarray:
        """Rebuild a whole series from its transformed values and its first `offset` values."""
        head = np.asarray(head, dtype=np.float64).reshape(-1)
        if len(head) != self.offset:
            raise ValueError(f"head must hold the first {self.offset} values, got {len(head)}")
        return np.concatenate([head, self.inverse_forecast(np.asarray(transformed, dtype=np.float64), head, start)])

    def to_dict(self) -> dict:
        """The spec and fitted statistics as plain JSON types."""
        self._check_fitted()
        out = {"kind": _KIND, "version": _VERSION, "seasonal_diff": self.seasonal_diff, "diff": self.diff}
        out.update(scale=self.scale, center=self.center, spread=self.spread)
        if self.profile is not None:
            out.update(deseason=list(self.deseason), profile=self.profile.tolist())
        if self.feature_center is not None:
            out.update(feature_center=self.feature_center.tolist(), feature_spread=self.feature_spread.tolist())
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> Transform:
        """Rebuild a fitted transform from `to_dict` output, checking every field."""
        if not isinstance(data, Mapping) or data.get("kind") != _KIND:
            raise ValueError(f"not a statefulrnn transform (expected kind '{_KIND}')")
        if data.get("version") != _VERSION:
            raise ValueError(f"transform version {data.get('version')!r} is not {_VERSION}; refit or upgrade")
        try:
            t = cls(seasonal_diff=data["seasonal_diff"], diff=data["diff"], scale=data["scale"])
            t.center, t.spread = float(data["center"]), float(data["spread"])
            if "profile" in data:
                t.deseason = tuple(int(p) for p in data["deseason"])
                t.profile = np.asarray(data["profile"], dtype=np.float64).reshape(-1)
            if "feature_center" in data:
                t.feature_center = np.asarray(data["feature_center"], dtype=np.float64).reshape(-1)
                t.feature_spread = np.asarray(data["feature_spread"], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"transform JSON is incomplete or malformed: {e}") from None
        if not t.spread or not np.isfinite([t.center, t.spread]).all():
            raise ValueError("transform JSON has a non-finite center or a zero spread")
        if t.profile is not None and (
            not t.deseason or len(t.profile) != math.lcm(*t.deseason) or not np.isfinite(t.profile).all()
        ):
            raise ValueError("transform JSON has a seasonal profile that does not match its periods")
        return t

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Transform:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"transform JSON does not parse: {e}") from None
        return cls.from_dict(data)

    def _deseasoned(self, y: np.ndarray, start: int) -> np.ndarray:
        if self.profile is None:
            return y
        return y - self.profile[(int(start) + np.arange(len(y))) % len(self.profile)]

    def _difference(self, y: np.ndarray) -> np.ndarray:
        for lag in self.lags:
            y = y[lag:] - y[:-lag]
        return y

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("the transform is not fitted; call fit(train_values) first")


def mstl_profile(values: np.ndarray, periods: Sequence[int], start: int = 0) -> tuple[tuple[int, ...], np.ndarray]:
    """(periods used, profile): the last cycle of each seasonal component of an MSTL decomposition of
    `values` (statsmodels), summed over one cycle of all periods (their lcm), indexed by position.

    Periods without two full cycles in `values` are dropped; with none left this is an error.
    """
    usable = tuple(sorted(int(p) for p in periods if 2 * int(p) <= len(values)))
    if not usable:
        raise ValueError(
            f"deseasoning needs two full cycles of a season; the training part has {len(values)} values and "
            f"the seasons are {tuple(periods)}: use a shorter season or turn deseason off"
        )
    from statsmodels.tsa.seasonal import MSTL  # only when fitting: serving reads the saved profile

    seasonal = np.asarray(MSTL(np.asarray(values, dtype=np.float64), periods=usable).fit().seasonal)
    seasonal = seasonal.reshape(len(values), len(usable))
    cycle = math.lcm(*usable)
    positions = int(start) + np.arange(len(values))
    profile = np.zeros(cycle)
    for k, p in enumerate(usable):
        one = np.empty(p)
        one[positions[-p:] % p] = seasonal[-p:, k]
        profile += one[np.arange(cycle) % p]
    return usable, profile


def transforms_to_json(transforms: Mapping[str, Transform]) -> str:
    """One JSON document holding the fitted transform of every series, keyed by series id."""
    series = {str(k): t.to_dict() for k, t in transforms.items()}
    return json.dumps({"kind": _SET_KIND, "version": _VERSION, "series": series}, indent=1)


def transforms_from_json(text: str) -> dict[str, Transform]:
    """Read back `transforms_to_json` output."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"transforms JSON does not parse: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != _SET_KIND or not isinstance(data.get("series"), dict):
        raise ValueError(f"not a statefulrnn transforms file (expected kind '{_SET_KIND}' with a 'series' map)")
    return {k: Transform.from_dict(v) for k, v in data["series"].items()}


def frame(values_scaled: np.ndarray, horizon: int, features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Supervised pairs for a direct multi-horizon model: inputs (T, 1+F) and targets (T, H).

    inputs[t] = [value[t], features[t]...]; targets[t, h] = value[t+1+h], NaN past the end.
    """
    y = np.asarray(values_scaled, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"values must be 1-D (T,), got shape {y.shape}")
    if not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    inputs = y[:, None]
    if features is not None:
        f = _features(features, len(y))
        inputs = np.concatenate([inputs, f], axis=1)
    padded = np.concatenate([y[1:], np.full(horizon, np.nan)])
    targets = sliding_window_view(padded, horizon)[: len(y)].copy()
    return inputs.copy(), targets


def _stats(a: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    if scale == "minmax":
        lo, hi = a.min(axis=0), a.max(axis=0)
        center, spread = (hi + lo) / 2, (hi - lo) / 2
    elif scale == "standard":
        center, spread = a.mean(axis=0), a.std(axis=0)
    else:
        center, spread = np.zeros(a.shape[1:]), np.ones(a.shape[1:])
    return center, np.where(spread > 0, spread, 1.0)


def _finite_1d(values: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D (T,), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{what} contain NaN or inf; fill them first (read_series(fill=...))")
    return y


def _features(features: np.ndarray | Sequence, length: int | None) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or (length is not None and len(f) != length):
        want = f"({length}, F)" if length is not None else "(T, F)"
        raise ValueError(f"features must be {want}, got shape {np.shape(features)}")
    return f
