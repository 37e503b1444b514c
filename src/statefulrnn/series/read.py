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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from .data import SeriesSet, checked_series

TIME_COLUMNS = ("ds", "timestamp", "time", "date", "datetime")
TARGET_COLUMNS = ("y", "value", "target")
ID_COLUMNS = ("unique_id", "id", "series_id")
FILLS = ("ffill", "interpolate")
_COMPRESSION = {".gz", ".bz2", ".zip", ".xz", ".zst"}


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
        built.append(checked_series(str(sid), times[idx], values[idx], x, rows[idx], **options))
    return SeriesSet(tuple(built), target=target, feature_names=features, source=source)


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


def _stem(path: Path) -> str:
    name = path.name
    if path.suffix.lower() in _COMPRESSION:
        name = Path(name).stem
    return Path(name).stem


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
