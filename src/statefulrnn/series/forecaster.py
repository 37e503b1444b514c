"""`StatefulForecaster`: the series library behind the DataFrame API of Nixtla's statsforecast.

Long frames in (`unique_id, ds, y`), statsforecast-shaped frames out, so a stateful model sits beside
`StatsForecast(...)` models in one notebook: `predict` gives `unique_id, ds, <alias>` and
`<alias>-lo-<level>, <alias>-hi-<level>`; `cross_validation` gives `unique_id, ds, cutoff, y, <alias>` and
the interval columns. Rows are sorted by unique_id (then cutoff) and ds, on a fresh RangeIndex; unique_id
and ds keep the input's dtypes (integer ds works as statsforecast's `freq=1`).

All the work is `train_series` (preparation chosen, model or seed ensemble trained, conformal intervals
calibrated, all on the validation windows) and `origin_forecasts` (forecasts from the true history,
state carried over all of it); the calls to them are in `_train`, `_forecasts` and `_bands` below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..runs import Run
from ..train_config import TrainConfig
from .data import Series, SeriesSet
from .forecast import fitted_transform, origin_forecasts, run_mode
from .metrics import rolling_origins
from .read import series_from_frame
from .spec import SERIES_MODEL, SERIES_TRAIN, ForecastSpec
from .train import train_series
from .transform import Transform

COLUMNS = ("unique_id", "ds", "y")
MODEL_OPTIONS = ("cell", "hidden_size", "num_layers", "dropout")
READ_OPTIONS = ("fill", "freq")
SET_BY_ARGUMENT = {"horizon": "h=", "season": "season=", "seasons": "season=(24, 168)", "interval": "level="}
SET_BY_ARGUMENT.update(test_windows="cross_validation(df, n_windows)", epochs="epochs=", seed="seed=")
_EPOCH = np.datetime64("1970-01-01", "ns")
_DAY = np.timedelta64(1, "D")


class StatefulForecaster:
    """A stateful recurrent forecaster with statsforecast's `fit` / `predict` / `cross_validation`.

    Args:
        h: steps forecast from each origin (the width of the model's head; `predict` may ask for fewer).
        season: the seasonal period in steps, or several (e.g. (24, 168) for hourly data), or "auto"
            (the natural periods of the data's frequency).
        level: the coverage, in percent, of the prediction interval: one level per model, calibrated
            split-conformally on the validation windows; () for no intervals.
        alias: the name of the forecast column (statsforecast's model alias).
        epochs: training epochs (None: the series default, `SERIES_TRAIN["epochs"]`).
        seed: seeds weights and training order (CPU runs repeat bit for bit).
        device: "auto", "cpu", "cuda", ...
        run_dir: where `fit` writes its run directory (loadable with `forecast_run` or a server);
            cross_validation writes to run_dir/cross_validation. None writes nothing.
        options: any field of `ForecastSpec` (val_windows, diff, seasonal_diff, deseason, scale, phase,
            ...; the preparation fields not given are chosen on the validation windows, as the command
            line does), of `TrainConfig` (window, lanes, lr, mode, ...), of the model (cell, hidden_size,
            num_layers, dropout), `fill` / `freq` as in `series_from_frame`, `ensemble` (the median of
            that many models, seeds seed, seed + 1, ...) and `progress` (show training bars).
    """

    def __init__(
        self,
        h: int,
        season: int | str | Sequence[int] = "auto",
        *,
        level: Sequence[float] = (80,),
        alias: str = "StatefulRNN",
        epochs: int | None = None,
        seed: int = 0,
        device: str = "auto",
        run_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(h, int | np.integer) or isinstance(h, bool) or h < 1:
            raise ValueError(f"h must be an integer >= 1 (the steps to forecast), got {h!r}")
        self.h, self.season, self.alias, self.device = int(h), season, str(alias), device
        self.level = _one_level(level)
        self.run_dir = None if run_dir is None else Path(run_dir)
        groups = {
            "spec": {f.name for f in fields(ForecastSpec)},
            "train": {f.name for f in fields(TrainConfig)},
            "model": set(MODEL_OPTIONS),
            "read": set(READ_OPTIONS),
            "run": {"progress", "ensemble"},
        }
        split: dict[str, dict[str, Any]] = {g: {} for g in groups}
        for key, value in options.items():
            if key in SET_BY_ARGUMENT:
                raise ValueError(f"{key} is set by StatefulForecaster's own argument: use {SET_BY_ARGUMENT[key]}")
            group = next((g for g, names in groups.items() if key in names), None)
            if group is None:
                known = sorted(set().union(*groups.values()) - SET_BY_ARGUMENT.keys())
                raise ValueError(f"unknown option {key!r}; StatefulForecaster takes {', '.join(known)}")
            split[group][key] = value
        self.progress = bool(split["run"].get("progress", False))
        self.ensemble = split["run"].get("ensemble", 1)
        self._model_args, self._read = split["model"], split["read"]
        epochs = SERIES_TRAIN["epochs"] if epochs is None else epochs
        self._config = TrainConfig(**{**SERIES_TRAIN, **split["train"], "epochs": epochs, "seed": seed})
        self._spec = _spec(self.h, season, self.level, split["spec"])
        self.run_: Run | None = None
        self.cv_run_: Run | None = None
        self._fitted: tuple[SeriesSet, _Keys] | None = None

    def __repr__(self) -> str:
        return self.alias  # as statsforecast's models: the name of their column

    def fit(self, df: pd.DataFrame) -> StatefulForecaster:
        """Train one model on every series of `df` (validation windows carved from the end of each
        series select the weights and calibrate the interval); returns self."""
        data, keys = self._read_frame(df)
        self.run_ = self._train(data, self._spec, self.run_dir, "fit")
        self._fitted = (data, keys)
        return self

    def predict(
        self, df: pd.DataFrame | None = None, h: int | None = None, level: Sequence[float] | None = None
    ) -> pd.DataFrame:
        """Forecast `h` steps after the end of each series of the fitted frame, or of `df` (a new
        history: the state is warmed over all of it; a series the model never saw gets a transform
        fitted on its history and NaN interval bounds, as it has no calibration). `level` may name the
        fitted level or none ([] drops the interval columns); other levels need a new fit."""
        if self.run_ is None or self._fitted is None:
            raise ValueError("this StatefulForecaster is not fitted yet: call fit(df) before predict()")
        h = self._check_h(h)
        levels = self._check_level(level)
        data, keys = self._fitted if df is None else self._read_frame(df)
        parts = []
        for s in data:
            try:
                t = fitted_transform(s, self.run_.transforms, self.run_.spec)
            except ValueError as e:  # a new series too short to fit its transform on
                raise ValueError(f"series '{s.id}' ({len(s)} values): {e}; give a longer history") from None
            if len(s) <= t.offset + 1:
                raise ValueError(
                    f"series '{s.id}' has {len(s)} values; forecasting it needs more than {t.offset + 1} "
                    "(its differencing consumes the first ones): give a longer history"
                )
            origin = np.array([len(s)])
            f = self._forecasts(self.run_, s, t, origin)[:, :h]
            parts.append(keys.block(s, f, self._bands(self.run_, s.id, h), origin, cutoff=False))
        return keys.finish(parts, self._names(levels), cutoff=False)

    def cross_validation(
        self,
        df: pd.DataFrame,
        n_windows: int = 1,
        step_size: int | None = None,
        h: int | None = None,
        level: Sequence[float] | None = None,
        refit: bool = False,
    ) -> pd.DataFrame:
        """Forecasts at the last `n_windows` cutoffs of each series, `step_size` apart (default h; note
        statsforecast's default is 1), the last window ending at the series' end, as statsforecast
        places them. One model is trained on the data before each series' first cutoff, then forecasts
        at every cutoff from the true history before it, its state carried over that history with no
        refit (statsforecast's refit=False). `h` (default the forecaster's) and `level` apply to this
        model only; the fitted model, if any, is left as it is (the new run is in `cv_run_`)."""
        if refit:
            raise ValueError("refit=True is not supported: StatefulForecaster trains once, before the first cutoff")
        h = self.h if h is None else h
        if not isinstance(h, int | np.integer) or isinstance(h, bool) or h < 1:
            raise ValueError(f"h must be an integer >= 1, got {h!r}")
        step = h if step_size is None else step_size
        for name, v in (("n_windows", n_windows), ("step_size", step)):
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        levels = self.level if level is None else _one_level(level)
        spec = replace(self._spec, horizon=int(h), interval=levels[0] / 100 if levels else 0.0)
        data, keys = self._read_frame(df)
        origins = {s.id: _cv_origins(s, int(h), int(n_windows), int(step)) for s in data}
        train = SeriesSet(tuple(_head(s, origins[s.id][0]) for s in data), data.target, data.feature_names)
        run_dir = None if self.run_dir is None else self.run_dir / "cross_validation"
        self.cv_run_ = run = self._train(
            train, spec, run_dir, "cross_validation trains on the data before each first cutoff"
        )
        parts = []
        for s in data:
            o = origins[s.id]
            f = self._forecasts(run, s, run.transforms[s.id], o)
            parts.append(keys.block(s, f, self._bands(run, s.id, int(h)), o, cutoff=True))
        return keys.finish(parts, self._names(levels), cutoff=True)

    # --- the calls into the library (the lead re-checks these when train_series / forecast change) ---
    def _train(self, data: SeriesSet, spec: ForecastSpec, run_dir: Path | None, context: str) -> Run:
        model_args = {**SERIES_MODEL, **self._model_args}
        try:
            for s in data:
                spec.splits(s, self._config.window)  # one clear line for a short series, before any training
            return train_series(
                data,
                run_dir,
                spec,
                model_args=model_args,
                config=replace(self._config),
                ensemble=self.ensemble,
                device=self.device,
                progress=self.progress,
            )
        except ValueError as e:
            raise ValueError(f"{context}: {e}") from None

    @staticmethod
    def _forecasts(run: Run, s: Series, t: Transform, origins: np.ndarray) -> np.ndarray:
        return origin_forecasts(run.models, s, t, run.spec, origins, **run_mode(run.config))

    @staticmethod
    def _bands(run: Run, sid: str, h: int) -> np.ndarray:
        """Half-widths (h, 2) relative to the forecast; NaN for a series without calibration."""
        if sid not in run.intervals:
            return np.full((h, 2), np.nan)
        return np.asarray(run.intervals[sid], dtype=np.float64)[:h]

    # --- checks and frames ---
    def _read_frame(self, df: pd.DataFrame) -> tuple[SeriesSet, _Keys]:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas DataFrame with columns unique_id, ds, y; got {type(df).__name__}")
        if "unique_id" not in df.columns and "unique_id" in (df.index.names or ()):
            df = df.reset_index()
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(
                f"df has no column {', '.join(missing)} (columns: {', '.join(map(str, df.columns))}); "
                "StatefulForecaster takes a long frame with columns unique_id, ds, y, as statsforecast does: "
                "rename yours with df.rename(columns={...})"
            )
        keys = _Keys.of(df)
        frame = pd.DataFrame({"unique_id": df["unique_id"].astype(str), "ds": keys.to_time(df["ds"]), "y": df["y"]})
        for f in self._spec.features:
            if f in df.columns:
                frame[f] = df[f]
        data = series_from_frame(
            frame, id_col="unique_id", time_col="ds", target="y", features=self._spec.features, sort=True, **self._read
        )
        return data, keys

    def _check_h(self, h: int | None) -> int:
        trained = self.run_.spec.horizon
        if h is None:
            return trained
        if not isinstance(h, int | np.integer) or isinstance(h, bool) or h < 1:
            raise ValueError(f"h must be an integer >= 1, got {h!r}")
        if h > trained:
            raise ValueError(
                f"h={h} is more than the {trained} steps this forecaster was trained for: "
                f"create StatefulForecaster(h={h}, ...) and fit it again"
            )
        return int(h)

    def _check_level(self, level: Sequence[float] | None) -> tuple[float, ...]:
        if level is None:
            return self.level
        asked = _one_level(level, several=True)
        if not set(asked) <= set(self.level):
            raise ValueError(
                f"this forecaster was calibrated for level={list(self.level)}, not {list(asked)}: intervals are "
                f"calibrated at fit time, so create StatefulForecaster(level={list(asked)[:1]}, ...) and fit it again"
            )
        return asked

    def _names(self, levels: tuple[float, ...]) -> list[str]:
        return [self.alias] + [f"{self.alias}-{side}-{lv}" for side in ("lo", "hi") for lv in levels]


@dataclass(frozen=True)
class _Keys:
    """The input frame's unique_id values and ds kind, so that outputs merge with it (and with statsforecast's)."""

    ids: dict[str, Any]
    id_dtype: Any
    ds_dtype: Any
    integer_ds: bool

    @classmethod
    def of(cls, df: pd.DataFrame) -> _Keys:
        uniques = pd.unique(df["unique_id"])
        ids = {str(v): v for v in uniques}
        if len(ids) != len(uniques):
            raise ValueError("two unique_id values print the same (say 1 and '1'); give every series a distinct id")
        ds = df["ds"]
        integer = pd.api.types.is_integer_dtype(ds) and not pd.api.types.is_bool_dtype(ds)
        if not integer and not pd.api.types.is_datetime64_any_dtype(ds):
            try:
                ds = pd.to_datetime(ds)
            except (ValueError, TypeError):
                raise ValueError("ds must hold timestamps or integers; convert it with pd.to_datetime") from None
        return cls(ids, df["unique_id"].dtype, ds.dtype, integer)

    def to_time(self, ds: pd.Series) -> pd.Series:
        """Integer ds as days after 1970-01-01, so that steps of k infer as "kD" and phases follow ds."""
        if self.integer_ds:
            return pd.Series(_EPOCH + ds.to_numpy(np.int64) * _DAY, index=ds.index)
        return ds

    def from_time(self, t: np.ndarray) -> Any:
        if self.integer_ds:
            return ((t.astype("datetime64[ns]") - _EPOCH) // _DAY).astype(self.ds_dtype)
        out = pd.DatetimeIndex(t)
        if getattr(self.ds_dtype, "tz", None) is not None:
            out = out.tz_localize("UTC")  # series_from_frame keeps aware times as naive UTC
        return out.astype(self.ds_dtype)

    def block(self, s: Series, f: np.ndarray, band: np.ndarray, origins: np.ndarray, *, cutoff: bool) -> pd.DataFrame:
        """The rows of one series: f (K, h) forecast at origins (K,), band (h, 2) its interval."""
        k, h = f.shape
        if cutoff:
            idx = origins[:, None] + np.arange(h)[None, :]
            stamps, cut, y = s.timestamps[idx].ravel(), np.repeat(s.timestamps[origins - 1], h), s.values[idx].ravel()
        else:
            stamps = s.future_timestamps(h)
        out = {"unique_id": np.full(k * h, s.id, dtype=object), "ds": self.from_time(stamps)}
        if cutoff:
            out.update(cutoff=self.from_time(cut), y=y)
        out.update(point=f.ravel(), lo=(f + band[None, :, 0]).ravel(), hi=(f + band[None, :, 1]).ravel())
        return pd.DataFrame(out)

    def finish(self, parts: list[pd.DataFrame], names: list[str], *, cutoff: bool) -> pd.DataFrame:
        """statsforecast's shape: ids restored to their dtype, rows sorted, the model's column names."""
        out = pd.concat(parts, ignore_index=True)
        out["unique_id"] = pd.Series(out["unique_id"].map(self.ids)).astype(self.id_dtype)
        order = ["unique_id", "cutoff", "ds"] if cutoff else ["unique_id", "ds"]
        out = out.sort_values(order, kind="stable").reset_index(drop=True)
        n = (len(names) - 1) // 2
        cols = {"point": names[0]}
        if n:
            cols.update(lo=names[1], hi=names[1 + n])
        out = out.rename(columns=cols).drop(columns=[c for c in ("lo", "hi") if c not in cols])
        keys = ["unique_id", "ds", "cutoff", "y"] if cutoff else ["unique_id", "ds"]
        return out[keys + names]


def _one_level(level: Sequence[float] | float, *, several: bool = False) -> tuple[float, ...]:
    """The interval level as a tuple of at most one coverage in (0, 100) (several: just checked)."""
    levels = (level,) if isinstance(level, int | float | np.number) else tuple(level)
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, int | float | np.number) or not 0 < lv < 100:
            raise ValueError(f"each level must be a coverage in percent between 0 and 100 (say 80), got {lv!r}")
    if len(levels) > 1 and not several:
        raise ValueError(
            f"level={list(levels)}: a StatefulForecaster calibrates one interval level per model; give one "
            "(say level=(80,)) and fit another forecaster for another level"
        )
    return levels


def _spec(h: int, season: int | str | Sequence[int], level: tuple[float, ...], options: dict[str, Any]) -> ForecastSpec:
    """The run's spec: no test part (cross_validation is the test), preparation not given chosen on validation."""
    if isinstance(season, int | str | np.integer):
        given: dict[str, Any] = {"season": season}
    else:
        season = tuple(season)
        given = {"season": season[0], "seasons": season} if len(season) > 1 else {"season": season[0] if season else 1}
    return ForecastSpec.auto(h, interval=level[0] / 100 if level else 0.0, test_windows=0, **given, **options)


def _cv_origins(s: Series, h: int, n_windows: int, step: int) -> np.ndarray:
    """statsforecast's cutoffs as origins (cutoff = timestamps[origin - 1]), the last window ending the series."""
    try:
        return rolling_origins(len(s), h, n_windows, step=step, min_train=1)
    except ValueError as e:
        raise ValueError(f"series '{s.id}' ({len(s)} values): {e}") from None


def _head(s: Series, n: int) -> Series:
    """The first n steps of a series."""
    feats = None if s.features is None else s.features[:n]
    return Series(s.id, s.timestamps[:n], s.values[:n], feats, s.feature_names, s.freq, s.filled[:n])
