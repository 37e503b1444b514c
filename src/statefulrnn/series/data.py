"""A regular time series in memory and what makes one: `Series` (one id), `SeriesSet` (the series of
one file), `infer_freq` (the step of a series from its timestamps) and `checked_series`, the checks
every series passes (sorted, on its frequency's grid, no unfilled gaps, long enough).

Parsing files and tables into rows lives in `read.py`; everything downstream (transforms, features,
metrics, forecasting, training) takes these types.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

_Rows = tuple[np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray]  # timestamps, values, features, file rows
_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


@dataclass(frozen=True, eq=False)
class Series:
    """One regular series: timestamps, float64 target values and optional features, row-aligned.

    `filled` marks the steps whose target was inserted or filled by `fill=` (not observed), so
    that evaluation can leave them out.
    """

    id: str
    timestamps: np.ndarray
    values: np.ndarray
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    freq: str | None = None
    filled: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"series '{self.id}': values must be 1-D, got shape {values.shape}")
        timestamps = np.asarray(self.timestamps)
        if not np.issubdtype(timestamps.dtype, np.datetime64):
            timestamps = pd.DatetimeIndex(timestamps).to_numpy()
        if timestamps.shape != values.shape:
            raise ValueError(f"series '{self.id}': {len(timestamps)} timestamps for {len(values)} values")
        features = self.features
        if features is not None:
            features = np.asarray(features, dtype=np.float64)
            if features.ndim != 2 or len(features) != len(values) or features.shape[1] != len(self.feature_names):
                raise ValueError(
                    f"series '{self.id}': features must be ({len(values)}, {len(self.feature_names)}), "
                    f"got {features.shape}"
                )
        filled = np.zeros(len(values), bool) if self.filled is None else np.asarray(self.filled, bool)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "filled", filled)

    def __len__(self) -> int:
        return len(self.values)

    def future_timestamps(self, horizon: int) -> np.ndarray:
        """The `horizon` timestamps after the last one, for labelling a forecast."""
        if self.freq is None:
            raise ValueError(f"series '{self.id}' has no frequency, so its future timestamps are unknown")
        return pd.date_range(self.timestamps[-1], periods=horizon + 1, freq=self.freq)[1:].to_numpy()


@dataclass(frozen=True, eq=False)
class SeriesSet:
    """The series of one file, in order of first appearance, indexable by position or id."""

    series: tuple[Series, ...]
    target: str = "value"
    feature_names: tuple[str, ...] = ()
    source: str = ""

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)

    def __getitem__(self, key: int | str) -> Series:
        if isinstance(key, str):
            for s in self.series:
                if s.id == key:
                    return s
            raise KeyError(f"no series '{key}' in {self.source or 'this set'}; ids: {', '.join(self.ids)}")
        return self.series[key]

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.series]

    @property
    def freq(self) -> str | None:
        """The frequency shared by all series, or None when they differ."""
        freqs = {s.freq for s in self.series}
        return freqs.pop() if len(freqs) == 1 else None

    def to_frame(self) -> pd.DataFrame:
        """The set in long format: unique_id, ds, y, then the feature columns."""
        parts = []
        for s in self.series:
            part = pd.DataFrame({"unique_id": s.id, "ds": s.timestamps, "y": s.values})
            for j, name in enumerate(s.feature_names):
                part[name] = s.features[:, j]
            parts.append(part)
        return pd.concat(parts, ignore_index=True)


def infer_freq(timestamps: np.ndarray | pd.DatetimeIndex) -> str | None:
    """The pandas offset alias of the series' step, tolerating gaps; None if there is no single step.

    Exact inference first; otherwise the commonest step, as business days ("B") when only weekdays
    occur, anchored weeks ("W-SAT"), or month/quarter/year starts or ends.
    """
    idx = pd.DatetimeIndex(timestamps)
    if len(idx) < 2:
        return None
    if len(idx) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exact = pd.infer_freq(idx)
        if exact is not None:
            return getattr(exact, "freqstr", exact)
    deltas = pd.TimedeltaIndex(np.diff(idx.to_numpy()))
    if (deltas <= pd.Timedelta(0)).any():
        return None
    step = deltas.value_counts().sort_index(kind="stable").idxmax()
    if step < pd.Timedelta(days=28):
        if any(d % step for d in deltas.unique()):
            return None
        day = pd.Timedelta(days=1)
        if step == day and (idx.day_of_week < 5).all() and idx[-1] - idx[0] >= pd.Timedelta(days=7):
            return "B"
        if step == 7 * day:
            return f"W-{_WEEKDAYS[idx[0].day_of_week]}"
        if step % day == pd.Timedelta(0):
            return "D" if step == day else f"{step // day}D"
        return to_offset(step).freqstr
    if (idx.normalize() != idx).any():
        return None
    months = np.diff(idx.year * 12 + idx.month)
    k = int(pd.Series(months).mode().min())
    if k <= 0 or (months % k).any():
        return None
    anchor = idx[0].month
    if idx.is_month_start.all():
        offsets = {
            3: pd.offsets.QuarterBegin(startingMonth=(anchor - 1) % 3 + 1),
            12: pd.offsets.YearBegin(month=anchor),
        }
        return offsets.get(k, pd.offsets.MonthBegin(k)).freqstr
    if idx.is_month_end.all():
        offsets = {3: pd.offsets.QuarterEnd(startingMonth=(anchor - 1) % 3 + 10), 12: pd.offsets.YearEnd(month=anchor)}
        return offsets.get(k, pd.offsets.MonthEnd(k)).freqstr
    return None


def checked_series(
    sid: str,
    t: np.ndarray,
    v: np.ndarray,
    x: np.ndarray | None,
    rows: np.ndarray,
    *,
    names: tuple[str, ...],
    fill: str | None,
    freq: str | None,
    sort: bool,
    min_length: int,
    source: str,
    sort_key: tuple[str, ...],
    target: str,
) -> Series:
    """One series from its rows in file order: sorted (or refused), on its frequency's grid, filled
    (or refused), long enough; every problem is one ValueError naming the row and the fix."""
    where = f"{source}: series '{sid}'"
    t, v, x, rows = _ordered(where, t, v, x, rows, sort, sort_key)
    if freq == "infer":
        freq = _inferred(where, t)
    if freq is not None and len(t):
        t, v, x, rows = _on_grid(where, t, v, x, rows, freq, fill)
    filled = np.isnan(v)
    missing = filled if x is None else filled | np.isnan(x).any(axis=1)
    if missing.any():
        if fill is None:
            i = np.flatnonzero(missing)[0]
            col = f"target '{target}'" if np.isnan(v[i]) else f"feature '{names[int(np.isnan(x[i]).argmax())]}'"
            raise ValueError(
                f"{where}: row {rows[i]} ({_ts(t[i])}): missing value in {col} ({missing.sum()} rows with missing "
                "values in all); fill them in, or pass --fill ffill|interpolate (fill= in Python)"
            )
        v = _fill(v[:, None], fill)[:, 0]
        x = None if x is None else _fill(x, fill)
        if np.isnan(v).any() or (x is not None and np.isnan(x).any()):
            col = target if np.isnan(v).any() else names[int(np.isnan(x).any(axis=0).argmax())]
            raise ValueError(f"{where}: column '{col}' has no values at all; nothing to fill from")
    if len(v) < min_length:
        raise ValueError(
            f"{where}: {len(v)} time steps, fewer than the {min_length} needed (window + horizon); use a shorter "
            "window or horizon, or remove this series"
        )
    return Series(sid, t, v, x, names, freq, filled)


def _ordered(
    where: str,
    t: np.ndarray,
    v: np.ndarray,
    x: np.ndarray | None,
    rows: np.ndarray,
    sort: bool,
    sort_key: tuple[str, ...],
) -> _Rows:
    back = np.flatnonzero(np.diff(t) < np.timedelta64(0))
    if back.size and not sort:
        i = back[0]
        raise ValueError(
            f"{where}: timestamps not sorted: row {rows[i + 1]} ({_ts(t[i + 1])}) comes after row {rows[i]} "
            f"({_ts(t[i])}); sort the file by {', '.join(sort_key)}, or pass --sort (sort=True in Python)"
        )
    if back.size:
        order = np.argsort(t, kind="stable")
        t, v, rows, x = t[order], v[order], rows[order], None if x is None else x[order]
    dup = np.flatnonzero(np.diff(t) == np.timedelta64(0))
    if dup.size:
        i = dup[0]
        raise ValueError(
            f"{where}: duplicate timestamp {_ts(t[i])} at rows {rows[i]} and {rows[i + 1]}; "
            "keep one row per timestamp (drop or aggregate the duplicates)"
            + ("" if len(sort_key) > 1 else ", or name the column of series ids with id_col= (--id-col)")
        )
    return t, v, x, rows


def _inferred(where: str, t: np.ndarray) -> str | None:
    freq = infer_freq(t)
    if freq is None and len(t) >= 2:
        seen = pd.TimedeltaIndex(np.diff(t)).value_counts().head(3)
        shown = ", ".join(f"{d} x{n}" for d, n in seen.items())
        raise ValueError(
            f"{where}: cannot infer a regular frequency (steps seen: {shown}); pass freq= a pandas alias "
            "(e.g. 'D', 'h', 'MS') to check gaps against it, or freq=None to take the rows as consecutive steps"
        )
    return freq


def _on_grid(
    where: str, t: np.ndarray, v: np.ndarray, x: np.ndarray | None, rows: np.ndarray, freq: str, fill: str | None
) -> _Rows:
    grid = pd.date_range(t[0], t[-1], freq=freq).to_numpy().astype(t.dtype)
    pos = np.searchsorted(grid, t)
    off = (pos >= len(grid)) | (grid[np.minimum(pos, len(grid) - 1)] != t)
    if off.any():
        i = np.flatnonzero(off)[0]
        start = f" that starts at {_ts(grid[0])}" if len(grid) else ""
        raise ValueError(
            f"{where}: row {rows[i]} ({_ts(t[i])}) is not on the '{freq}' grid{start}; "
            "fix the timestamp or pass the series' real frequency with freq="
        )
    if len(grid) == len(t):
        return t, v, x, rows
    gap = np.ones(len(grid), bool)
    gap[pos] = False
    if fill is None:
        first = grid[gap][0]
        after = np.searchsorted(t, first)
        hint = " (market holidays? freq=None takes the rows as consecutive trading days)" if freq == "B" else ""
        raise ValueError(
            f"{where}: {gap.sum()} missing timestamp(s) at frequency '{freq}', the first {_ts(first)} "
            f"(between rows {rows[after - 1]} and {rows[after]}); add the rows, or pass --fill ffill|interpolate "
            f"(fill= in Python) to insert them{hint}"
        )
    full_v = np.full(len(grid), np.nan)
    full_v[pos] = v
    full_rows = np.zeros(len(grid), rows.dtype)
    full_rows[pos] = rows
    if x is not None:
        full_x = np.full((len(grid), x.shape[1]), np.nan)
        full_x[pos] = x
        x = full_x
    return grid, full_v, x, full_rows


def _fill(a: np.ndarray, how: str) -> np.ndarray:
    df = pd.DataFrame(a)
    if how == "interpolate":
        df = df.interpolate(method="linear", limit_direction="both")
    return df.ffill().bfill().to_numpy(dtype=np.float64)


def _ts(t: np.datetime64) -> str:
    ts = pd.Timestamp(t)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M:%S").removesuffix(":00")
