"""The classical peers a user would pick instead, on the exact test origins of the forecasting suite.

For every entry of `bench/series_suite.py` (same files, specs, read options and generated "many" file),
Nixtla statsforecast's SeasonalNaive, AutoETS, AutoTheta and MSTL are refit at each test origin
(`ForecastSpec.test_origins`) on all the history before it and forecast the next H steps; they are
scored exactly as `backtest_series` scores our models: actuals with filled values left out, MASE
scaled by the in-sample seasonal naive error of the part before the first test origin (pooled over
the origins of a series), then the mean over the series of the entry. Our own seasonal naive is
scored alongside; statsforecast's SeasonalNaive must match it (a consistency check). The peers and
their scoring live in `statefulrnn.series.peers`, which `make demo` uses too.

    pip install -e '.[bench]'                                  # statsforecast (not a runtime dependency)
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python bench/series_peers.py
    python bench/series_peers.py --only taylor seattle --out runs/series-peers

MSTL gets the series' natural seasonalities (MSTL_SEASONS); those a history cannot hold two full
cycles of are dropped, and with none left (season 1 or too short) MSTL's own trend forecaster,
AutoETS(model="ZZN"), is used alone. statsforecast's AutoETS ignores seasons above 24 (as R's ets does).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from statefulrnn.study.forecasting import MANY, SUITE, TRAIN, many_series, suite_names
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.study.forecasting import MANY, SUITE, TRAIN, many_series, suite_names
from statefulrnn.series.peers import PEERS, mstl_fit_seasons, peer_forecasts, require_statsforecast, score_peers
from statefulrnn.series.read import read_series
from statefulrnn.series.spec import ForecastSpec
from statefulrnn.study.common import data_dir

MSTL_SEASONS = {
    "taylor": [48, 336],  # half-hourly: day, week
    "seattle": [24, 168],  # hourly: day, week
    "sunspots": [132],  # monthly: the ~11-year cycle
    "co2": [52],  # weekly: year
    "msft": [],  # daily closes, season 1: no seasonality
    "airline": [12],  # monthly
    "shampoo": [12],  # monthly, but 36 values: too short for two cycles before the test
    "stocks": [12],  # monthly
    "many": [7],  # daily: week
}


def _statsforecast() -> Any:
    try:
        return require_statsforecast()
    except ValueError as e:
        raise SystemExit(f"bench/series_peers.py: {e} (or pip install -e '.[bench]')") from None


def entry(name: str, tmp: Path) -> tuple[Path, dict, dict, dict]:
    """(file, spec, read options, training overrides) of a suite entry, as `run_suite` resolves it."""
    if name == "many":
        spec, read, over = MANY
        return many_series(tmp / "many_series.csv"), spec, read, over
    if name not in SUITE:
        raise SystemExit(f"unknown series {name!r}: use {', '.join(suite_names())}")
    file, spec, read, over = SUITE[name]
    return data_dir() / "series" / file, spec, read, over


def run_entry(name: str, tmp: Path, log: Any = print) -> dict[str, Any]:
    """Backtest our seasonal naive and the statsforecast peers on entry `name`; MASE and timings."""
    file, spec_args, read, over = entry(name, tmp)
    spec = ForecastSpec(**spec_args)
    window = {**TRAIN, **over}["window"]
    series = list(read_series(file, features=spec.features, **read))
    origins = {s.id: spec.test_origins(s, window) for s in series}
    h, season = spec.horizon, spec.season
    peers = peer_forecasts(series, origins, h, season, MSTL_SEASONS.get(name, []), refit=True)
    scored = score_peers(series, origins, peers, h, season)
    if scored["seasonal_naive_gap"] > 1e-9:
        log(f"  ! {name}: statsforecast SeasonalNaive differs from ours by up to {scored['seasonal_naive_gap']:.3g}")
    shortest = min(int(o[0]) for o in origins.values())
    result = {
        "horizon": h,
        "season": season,
        "series": len(series),
        "origins": spec.test_windows,
        "mstl_seasons": mstl_fit_seasons(MSTL_SEASONS.get(name, []), shortest)[0],
        "mase": {k: v["mase"] for k, v in scored["mean"].items() if k != "naive"},
        "seconds": peers.seconds,
        "notes": peers.notes,
    }
    m, seconds = result["mase"], peers.seconds
    log(
        f"{name:9} MASE s-naive {m['seasonal_naive']:.3f}  SeasonalNaive {m['SeasonalNaive']:.3f}  "
        f"AutoETS {m['AutoETS']:.3f}  AutoTheta {m['AutoTheta']:.3f}  MSTL {m['MSTL']:.3f}  "
        f"({', '.join(f'{p} {seconds[p]:.1f} s' for p in PEERS)})"
    )
    return result


def markdown_table(results: dict[str, Any]) -> str:
    """Mean MASE per entry of our seasonal naive and each peer, and each peer's fit+predict seconds."""
    lines = [
        "| series | H | season | seasonal naive (ours) | SeasonalNaive (sf) | AutoETS | AutoTheta | MSTL (seasons) | "
        "seconds SN / ETS / Theta / MSTL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m, t = r["mase"], r["seconds"]
        seasons = ", ".join(map(str, r["mstl_seasons"])) or "none"
        lines.append(
            f"| {name} | {r['horizon']} | {r['season']} | {m['seasonal_naive']:.3f} | {m['SeasonalNaive']:.3f} | "
            f"{m['AutoETS']:.3f} | {m['AutoTheta']:.3f} | {m['MSTL']:.3f} ({seasons}) | "
            + " / ".join(f"{t[p]:.1f}" for p in PEERS)
            + " |"
        )
    notes = [f"- {name}, {peer}: {note}" for name, r in results.items() for peer, note in r["notes"].items()]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="folder for results.json and table.md (optional)")
    p.add_argument("--only", nargs="*", default=None, help=f"series to run: {', '.join(SUITE)}, many")
    args = p.parse_args(argv)
    statsforecast = _statsforecast()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or suite_names():
            results[name] = run_entry(name, Path(tmp), log=lambda s: print(s, flush=True))
    text = markdown_table(results) + (
        f"\n\nstatsforecast {statsforecast.__version__}; MASE is scaled by the in-sample seasonal naive error before "
        "the first test origin, pooled over origins, mean over series (stocks: 5, many: 60); seconds are fit+predict "
        "over all origins and series of the entry."
    )
    print()
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
