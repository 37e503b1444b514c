"""Reading time series: a CSV or Parquet file in, checked regular series out, one per id.

Accepted layouts (column names are matched case-insensitively; explicit names override):

    long           unique_id, ds, y [, feature columns...]     many series in one file
                   id, timestamp, value [, ...]                 the same, other common names
    single series  timestamp, value                             the series is named after the file

Every problem stops the load with one ValueError line that names the file, the series, the data
row (1-based, header not counted) or the timestamp, and the fix. Gaps against the series'
frequency and missing values are errors unless `fill` asks for them to be filled; unsorted rows
are errors unless `sort=True`. Timezone-aware timestamps are converted to UTC (no DST holes).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

TIME_COLUMNS = ("ds", "timestamp", "time", "date", "datetime")
TARGET_COLUMNS = ("y", "value", "target")
ID_COLUMNS = ("unique_id", "id", "series_id")
FILLS = ("ffill", "interpolate")
_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}
_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_Rows = tuple[np.ndarray, np.ndarray, "np.ndarray | None", np.ndarray]  # timestamps, values, features, file rows


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


def read_series(
    path: str | Path,
    *,
    id_col: str | None = None,
    time_col: str | None = None,
    target: str | None = None,
    features: Sequence[str] | str = (),
    fill: str | None = None,
    freq: str | None = "infer",
    sort: bool = False,
    min_length: int = 1,
) -> SeriesSet:
    """Read and check the series of a CSV (optionally compressed) or Parquet file.

    `features` names extra numeric input columns, or "auto" for every numeric column left over.
    `fill` is None (gaps and missing values are errors), "ffill" (carry the last value forward;
    a leading gap takes the first value) or "interpolate" (linear in steps, ends held constant);
    filling inserts missing timestamps at the frequency. `freq` is "infer", a pandas offset alias to
    check against, or None to take the rows as consecutive steps without checking gaps.
    `min_length` rejects shorter series (a trainer passes window + horizon).
    """
    path = Path(path)
    frame = _read_table(path)
    return series_from_frame(
        frame,
        id_col=id_col,
        time_col=time_col,
        target=target,
        features=features,
        fill=fill,
        freq=freq,
        sort=sort,
        min_length=min_length,
        name=_stem(path),
        source=path.name,
    )


def series_from_frame(
    frame: pd.DataFrame,
    *,
    id_col: str | None = None,
    time_col: str | None = None,
    target: str | None = None,
    features: Sequence[str] | str = (),
    fill: str | None = None,
    freq: str | None = "infer",
    sort: bool = False,
    min_length: int = 1,
    name: str = "series",
    source: str = "data frame",
) -> SeriesSet:
    """Check a DataFrame as `read_series` checks a file; row i of the frame is data row i + 1."""
    if fill not in (None, *FILLS):
        raise ValueError(f"fill={fill!r} is not one of None, 'ffill', 'interpolate'")
    if freq not in (None, "infer"):
        try:
            freq = to_offset(freq).freqstr
        except ValueError:
            raise ValueError(f"freq={freq!r} is not a pandas offset alias (e.g. 'D', 'h', '30min', 'MS')") from None
    if isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.rename_axis(frame.index.name or "timestamp").reset_index()
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        raise ValueError(f"{source}: no data rows (only a header)")
    cols = [str(c) for c in frame.columns]
    frame.columns = cols
    time_col = _pick(cols, time_col, TIME_COLUMNS, "time", "time_col", source)
    id_col = _pick(cols, id_col, ID_COLUMNS, "id", "id_col", source, required=False, exclude=(time_col,))
    target = _pick(cols, target, TARGET_COLUMNS, "target", "target", source, exclude=(time_col, id_col))
    used = {time_col, id_col, target}
    if isinstance(features, str):
        features = [c for c in cols if c not in used and _is_numeric(frame[c])] if features == "auto" else [features]
    for f in features:
        if f not in cols or f in used:
            why = "is the time, id or target column" if f in used else "is not in the file"
            raise ValueError(f"{source}: feature column '{f}' {why}; columns found: {', '.join(cols)}")
    features = tuple(features)

    rows = np.arange(1, len(frame) + 1)
    ids = np.full(len(frame), name, dtype=object)
    if id_col is not None:
        missing = frame[id_col].isna().to_numpy()
        if missing.any():
            raise ValueError(f"{source}: row {rows[missing][0]}: empty id in column '{id_col}'; every row needs one")
        ids = frame[id_col].astype(str).to_numpy(dtype=object)
    times = _parse_times(frame[time_col], ids, rows, time_col, source)
    values = _parse_numbers(frame[target], ids, rows, f"target '{target}'", source)
    feats = None
    if features:
        feats = np.column_stack([_parse_numbers(frame[f], ids, rows, f"feature '{f}'", source) for f in features])

    codes, uniques = pd.factorize(ids)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    options = dict(names=features, fill=fill, freq=freq, sort=sort, min_length=min_length, source=source)
    options.update(sort_key=(id_col, time_col) if id_col else (time_col,), target=target)
    built = []
    for sid, idx in zip(uniques, np.split(order, bounds)):
        x = None if feats is None else feats[idx]
        built.append(_build(str(sid), times[idx], values[idx], x, rows[idx], **options))
    return SeriesSet(tuple(built), target=target, feature_names=features, source=source)


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


def _build(
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


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSION]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise ValueError(f"{path.name}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        except Exception as e:
            raise ValueError(f"{path.name}: cannot read as Parquet: {_first_line(e)}") from None
    if kind in (".csv", ".tsv", ".txt"):
        try:
            return pd.read_csv(path, dtype=str, sep="\t" if kind == ".tsv" else ",")
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path.name}: the file is empty; expected a header line and data rows") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path.name}: not UTF-8 text; save it as UTF-8 CSV") from None
        except (pd.errors.ParserError, ValueError, OSError) as e:
            raise ValueError(f"{path.name}: cannot read as CSV: {_first_line(e)}") from None
    raise ValueError(f"{path.name}: unsupported format '{kind or path.suffix}'; save the data as .csv or .parquet")


def _pick(
    cols: list[str],
    explicit: str | None,
    candidates: tuple[str, ...],
    role: str,
    param: str,
    source: str,
    *,
    required: bool = True,
    exclude: tuple[str | None, ...] = (),
) -> str | None:
    flag = "--" + param.replace("_", "-")
    found = ", ".join(cols)
    if explicit is not None:
        if explicit not in cols:
            raise ValueError(f"{source}: no {role} column '{explicit}'; columns found: {found}; fix {param}= ({flag})")
        return explicit
    lower = {c.lower(): c for c in reversed(cols) if c not in exclude}
    for name in candidates:
        if name in lower:
            return lower[name]
    rest = [c for c in cols if c not in exclude]
    if role == "target" and len(rest) == 1:
        return rest[0]
    if not required:
        return None
    raise ValueError(
        f"{source}: no {role} column (looked for {', '.join(candidates)}); columns found: {found}; "
        f"name it with {param}= ({flag})"
    )


def _parse_times(raw: pd.Series, ids: np.ndarray, rows: np.ndarray, col: str, source: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.to_datetime(raw, utc=True)
        missing = parsed.isna().to_numpy()
        bad = np.zeros(len(raw), bool)
    else:
        if pd.api.types.is_numeric_dtype(raw):
            raw = raw.map(lambda x: x if pd.isna(x) else str(int(x)) if float(x).is_integer() else str(x))
        text = raw.astype(object).where(raw.notna(), None)
        missing = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
            bad = parsed.isna().to_numpy() & ~missing
            if bad.any():
                other = pd.to_datetime(text, errors="coerce", utc=True)
                other_bad = other.isna().to_numpy() & ~missing
                if other_bad.sum() < bad.sum():
                    parsed, bad = other, other_bad
    if missing.any():
        i = np.flatnonzero(missing)[0]
        raise ValueError(
            f"{source}: series '{ids[i]}': row {rows[i]}: missing timestamp in column '{col}'; every row needs one"
        )
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise ValueError(
            f"{source}: series '{ids[i]}': row {rows[i]}: cannot parse timestamp {str(raw.iloc[i])!r} in column "
            f"'{col}'; write times as ISO 8601 (1949-01, 2000-01-31 or 2000-01-31 13:30)"
        )
    return pd.DatetimeIndex(parsed).tz_localize(None).to_numpy()


def _parse_numbers(raw: pd.Series, ids: np.ndarray, rows: np.ndarray, what: str, source: str) -> np.ndarray:
    text = raw.str.strip() if pd.api.types.is_string_dtype(raw) else raw
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    given = raw.notna().to_numpy()
    if pd.api.types.is_string_dtype(raw):
        given = given & (text != "").to_numpy(dtype=bool, na_value=False)
    bad = (given & np.isnan(values)) | np.isinf(values)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        kind = "is not finite" if np.isinf(values[i]) else "is not a number"
        raise ValueError(
            f"{source}: series '{ids[i]}': row {rows[i]}: {what} {kind}: {str(raw.iloc[i])!r}; correct it, or leave "
            "the cell empty to mark it missing"
        )
    return values


def _is_numeric(raw: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return True
    if not pd.api.types.is_string_dtype(raw):
        return False
    given = raw.dropna()
    return len(given) > 0 and pd.to_numeric(given, errors="coerce").notna().all()


def _ts(t: np.datetime64) -> str:
    ts = pd.Timestamp(t)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M:%S").removesuffix(":00")


def _stem(path: Path) -> str:
    name = path.name
    if path.suffix.lower() in _COMPRESSION:
        name = Path(name).stem
    return Path(name).stem


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
