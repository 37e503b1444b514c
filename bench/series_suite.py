"""Forecasting on every series in ../shared/data/series: stateful vs stateless LSTM vs naive baselines.

Each series gets a fixed horizon, season and preparation (chosen from what the data is, before any
result was seen: the seasonal period of its clock, a difference where it trends), the same model
size and the same training budget for both modes, and several seeds. Rolling-origin test over the
last `test_windows` windows of each series; MASE is scaled by the in-sample seasonal naive error.
Also builds a many-series file (60 synthetic daily demand series with weekly season, trend and
noise, of different lengths) and trains one model on all of it in one run.

    python bench/series_suite.py --out runs/series-suite            # about 15 minutes on 2 cores
    python bench/series_suite.py --only seattle co2 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

try:
    from statefulrnn.forecast import ForecastSpec, train_series
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.forecast import ForecastSpec, train_series
from statefulrnn.allocator import pin_malloc
from statefulrnn.train import TrainConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "series"

# name: (file, spec, read options, training overrides)
SUITE = {
    "taylor": (
        "taylor_electricity_halfhourly.csv",
        dict(horizon=48, season=48, seasonal_diff=True, test_windows=7, val_windows=7),
        {},
        {},
    ),
    "seattle": (
        "seattle_temps_hourly_2010.csv",
        dict(horizon=24, season=24, seasonal_diff=True, test_windows=7, val_windows=7),
        {"fill": "interpolate"},
        {},
    ),
    "sunspots": (
        "sunspots_monthly_1749_2009.csv",
        dict(horizon=12, season=132, test_windows=8, val_windows=8),
        {},
        {},
    ),
    "co2": (
        "co2_maunaloa_weekly.csv",
        dict(horizon=52, season=52, seasonal_diff=True, test_windows=3, val_windows=3),
        {"fill": "interpolate"},
        {},
    ),
    "msft": (
        "msft_daily_close.csv",
        dict(horizon=5, season=1, diff=1, test_windows=20, val_windows=20),
        {"freq": None},
        {},
    ),
    "airline": (
        "airline_passengers_monthly.csv",
        dict(horizon=12, season=12, seasonal_diff=True, test_windows=2, val_windows=1),
        {},
        {"window": 24, "lanes": 1},
    ),
    "shampoo": (
        "shampoo_sales_monthly.csv",
        dict(horizon=3, season=1, diff=1, test_windows=4, val_windows=2),
        {},
        {"window": 8, "lanes": 1},
    ),
    "stocks": (
        "stocks_monthly_multi.csv",
        dict(horizon=6, season=12, diff=1, test_windows=2, val_windows=1),
        {},
        {"window": 24, "lanes": 5},
    ),
}


def many_series(path: Path, n: int = 60, seed: int = 0) -> Path:
    """n daily demand-like series of 400..900 days: level, trend, weekly season, AR(1) noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        length = int(rng.integers(400, 900))
        t = np.arange(length)
        weekly = rng.normal(0, 1, 7)
        noise = np.zeros(length)
        for k in range(1, length):
            noise[k] = 0.7 * noise[k - 1] + rng.normal(0, 0.5)
        y = rng.uniform(20, 200) * (1 + rng.uniform(-3e-4, 1e-3) * t) + rng.uniform(2, 10) * weekly[t % 7] + 3 * noise
        start = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(rng.integers(0, 300)))
        ds = pd.date_range(start, periods=length, freq="D")
        frames.append(pd.DataFrame({"unique_id": f"store_{i:02d}", "ds": ds, "y": np.round(y, 2)}))
    pd.concat(frames).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/series-suite"))
    p.add_argument("--only", nargs="*", default=None, help=f"series to run: {', '.join(SUITE)}, many")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args(argv)
    pin_malloc()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or [*SUITE, "many"]
    results = {}
    for name in names:
        if name == "many":
            file = many_series(args.out / "many_series.csv")
            spec, read, over = dict(horizon=7, season=7, test_windows=4, val_windows=4), {}, {"lanes": 32}
        else:
            file, spec, read, over = SUITE[name]
            file = DATA / file
        results[name] = {"spec": spec, "modes": {}}
        for mode in ("stateful", "stateless"):
            runs = []
            for seed in args.seeds:
                config = TrainConfig(
                    **{"lanes": 16, "window": 48, "lr": 3e-3, "eval_window": 512, **over},
                    mode=mode,
                    epochs=args.epochs,
                    seed=seed,
                )
                t0 = time.perf_counter()
                s = train_series(
                    file,
                    args.out / f"{name}-{mode}-{seed}",
                    ForecastSpec(**spec),
                    read=read,
                    config=config,
                    progress=False,
                )
                runs.append({"seed": seed, "wall_s": time.perf_counter() - t0, "backtest": s["backtest"]})
                m = s["backtest"]["mean"]
                print(
                    f"{name:9} {mode:9} seed {seed}: MASE model {m['model']['mase']:.3f}  naive "
                    f"{m['naive']['mase']:.3f}  seasonal naive {m['seasonal_naive']['mase']:.3f}  "
                    f"({runs[-1]['wall_s']:.0f} s)",
                    flush=True,
                )
            results[name]["modes"][mode] = runs
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    (args.out / "table.md").write_text(table(results) + "\n")


def table(results: dict) -> str:
    """Markdown table of mean MASE (and the per-seed range) per series and forecaster."""
    lines = [
        "| series | H | season | naive | seasonal naive | stateful LSTM (min..max) | stateless LSTM (min..max) | "
        "stateful beats s-naive | stateful beats stateless |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        base = r["modes"]["stateful"][0]["backtest"]["mean"]
        cells = {}
        for mode, runs in r["modes"].items():
            v = [x["backtest"]["mean"]["model"]["mase"] for x in runs]
            cells[mode] = (statistics.mean(v), min(v), max(v))
        sf, sl = cells["stateful"], cells.get("stateless", (float("nan"),) * 3)
        sn = base["seasonal_naive"]["mase"]
        lines.append(
            f"| {name} | {r['spec']['horizon']} | {r['spec']['season']} | {base['naive']['mase']:.3f} | {sn:.3f} | "
            f"{sf[0]:.3f} ({sf[1]:.3f}..{sf[2]:.3f}) | {sl[0]:.3f} ({sl[1]:.3f}..{sl[2]:.3f}) | "
            f"{'yes' if sf[0] < sn else 'no'} | {'yes' if sf[0] < sl[0] else 'no'} |"
        )
    lines.append("")
    lines.append(f"torch {torch.__version__}; MASE is the mean over series (stocks: 5, many: 60) and over seeds.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
