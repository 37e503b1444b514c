"""Experiment 6, forecasting: stateful vs stateless LSTM vs naive baselines on the shared series.

This module holds the forecasting suite that `bench/series_suite.py` runs from the command line. Each
series gets a fixed horizon and its natural seasons (the same ones the statsforecast peers get); the
preparation is left to the defaults (chosen on validation), with the same model size and training
budget for both modes, and several seeds. Rolling-origin test over the last `test_windows` windows of
each series; MASE is scaled by the in-sample seasonal naive error. The "many" entry is a generated file
of 60 daily demand-like series of different lengths (weekly season, trend, AR(1) noise), one model on all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..series.spec import ForecastSpec
from ..series.train import train_series
from ..train import TrainConfig
from .common import bar_plot, data_dir, fmt, spread, table, torch_threads

TITLE = "Forecasting"
QUESTION = (
    "Stateful vs stateless LSTM forecasters (same size, data and budget) on the shared series, against baselines."
)
TRAIN = {"lanes": 16, "window": 48, "lr": 3e-3, "eval_window": 512}
MANY = ({"horizon": 7, "seasons": (7,), "test_windows": 4, "val_windows": 4}, {}, {"lanes": 32})
QUICK = {"names": ("airline", "shampoo"), "epochs": 10, "threads": 1}
FULL = {"names": None, "epochs": 40, "threads": None}

# name: (file, spec, read options, training overrides)
SUITE = {
    "taylor": (
        "taylor_electricity_halfhourly.csv",
        dict(horizon=48, seasons=(48, 336), test_windows=7, val_windows=7),
        {},
        {},
    ),
    "seattle": (
        "seattle_temps_hourly_2010.csv",
        dict(horizon=24, seasons=(24, 168), test_windows=7, val_windows=7),
        {"fill": "interpolate"},
        {},
    ),
    "sunspots": (
        "sunspots_monthly_1749_2009.csv",
        dict(horizon=12, seasons=(132,), test_windows=8, val_windows=8),
        {},
        {},
    ),
    "co2": (
        "co2_maunaloa_weekly.csv",
        dict(horizon=52, seasons=(52,), test_windows=3, val_windows=3),
        {"fill": "interpolate"},
        {},
    ),
    "msft": (
        "msft_daily_close.csv",
        dict(horizon=5, season=1, test_windows=20, val_windows=20),
        {"freq": None},
        {},
    ),
    "airline": (
        "airline_passengers_monthly.csv",
        dict(horizon=12, seasons=(12,), test_windows=2, val_windows=1),
        {},
        {"window": 24, "lanes": 1},
    ),
    "shampoo": (
        "shampoo_sales_monthly.csv",
        dict(horizon=3, season=1, test_windows=4, val_windows=2),
        {},
        {"window": 8, "lanes": 1},
    ),
    "stocks": (
        "stocks_monthly_multi.csv",
        dict(horizon=6, seasons=(12,), test_windows=2, val_windows=1),
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


def suite_names() -> list[str]:
    """Every entry of the suite: the shared series, then the generated "many"."""
    return [*SUITE, "many"]


def run_suite(
    out: Path,
    names: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 40,
    log: Callable[[str], None] | None = print,
    modes: Sequence[str] = ("stateful", "stateless"),
    ensemble: int = 1,
) -> dict[str, Any]:
    """Train and backtest each mode for every seed on each named entry, with the default (validated)
    preparation; runs go to `out/<name>-<mode>-<seed>`.

    Returns {name: {"spec": ..., "modes": {mode: [{"seed", "wall_s", "backtest"}, ...]}}}.
    """
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in names or suite_names():
        if name == "many":
            file, (spec, read, over) = many_series(out / "many_series.csv"), MANY
        elif name in SUITE:
            file, spec, read, over = SUITE[name]
            file = data_dir() / "series" / file
        else:
            raise ValueError(f"unknown series {name!r}: use {', '.join(suite_names())}")
        results[name] = {"spec": spec, "modes": {}}
        for mode in modes:
            runs = []
            for seed in seeds:
                config = TrainConfig(**{**TRAIN, **over}, mode=mode, epochs=epochs, seed=seed)
                start = time.perf_counter()
                s = train_series(
                    file,
                    out / f"{name}-{mode}-{seed}",
                    ForecastSpec.auto(**spec),
                    read=read,
                    config=config,
                    ensemble=ensemble,
                    progress=False,
                ).summary
                runs.append(
                    {
                        "seed": seed,
                        "wall_s": time.perf_counter() - start,
                        "backtest": s["backtest"],
                        "preparation": s["preparation"],
                        "validation": s["validation"],
                    }
                )
                m = s["backtest"]["mean"]
                if log:
                    log(
                        f"{name:9} {mode:9} seed {seed}: MASE model {m['model']['mase']:.3f}  naive "
                        f"{m['naive']['mase']:.3f}  seasonal naive {m['seasonal_naive']['mase']:.3f}  "
                        f"[{s['preparation']}] ({runs[-1]['wall_s']:.0f} s)"
                    )
            results[name]["modes"][mode] = runs
    return results


def seasons(spec: dict[str, Any]) -> str:
    """The seasons of a suite entry's spec as table text ("48, 336"; "none")."""
    return ", ".join(map(str, spec.get("seasons", ()))) or "none"


def mase(results: dict[str, Any], name: str, mode: str) -> dict[str, float]:
    """Mean, min and max over seeds of the model's mean MASE on entry `name` in `mode`."""
    return spread([r["backtest"]["mean"]["model"]["mase"] for r in results[name]["modes"][mode]])


def markdown_table(results: dict[str, Any]) -> str:
    """Markdown table of mean MASE (and the per-seed range) per series and forecaster, with the
    preparation each seed's validation chose."""
    modes = list(next(iter(results.values()))["modes"])
    lines = [
        "| series | H | seasons | naive | seasonal naive | "
        + " | ".join(f"{m} LSTM (min..max)" for m in modes)
        + " | beats s-naive | preparation chosen (per seed) |",
        "|---|---|---|---|---|" + "---|" * len(modes) + "---|---|",
    ]
    for name, r in results.items():
        base = r["modes"][modes[0]][0]["backtest"]["mean"]
        sn = base["seasonal_naive"]["mase"]
        cells = [mase(results, name, m) for m in modes]
        chosen = "; ".join(run.get("preparation", "?") for run in r["modes"][modes[0]])
        lines.append(
            f"| {name} | {r['spec']['horizon']} | {seasons(r['spec'])} | {base['naive']['mase']:.3f} | {sn:.3f} | "
            + " | ".join(f"{c['mean']:.3f} ({c['min']:.3f}..{c['max']:.3f})" for c in cells)
            + f" | {'yes' if cells[0]['mean'] < sn else 'no'} | {chosen} |"
        )
    return "\n".join(lines)


def run(out_dir: Path, quick: bool = False, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """The suite (two small series in the quick form) as a study experiment: table, bar plot, answer."""
    s = QUICK if quick else FULL
    with torch_threads(s["threads"]) as threads:
        results = run_suite(out_dir / "runs", s["names"], seeds, s["epochs"], log=None)
    names = list(results)
    rows, wins, beats, overlap = [], 0, 0, 0
    for name in names:
        base = results[name]["modes"]["stateful"][0]["backtest"]["mean"]
        sf, sl = mase(results, name, "stateful"), mase(results, name, "stateless")
        sn = base["seasonal_naive"]["mase"]
        wins += sf["mean"] < sl["mean"]
        beats += sf["mean"] < sn
        overlap += sf["min"] <= sl["max"] and sl["min"] <= sf["max"]
        spec = results[name]["spec"]
        rows.append(
            [name, spec["horizon"], seasons(spec), f"{base['naive']['mase']:.3f}", f"{sn:.3f}", fmt(sf), fmt(sl)]
        )
    answer = (
        f"Mean MASE over seeds: stateful is lower than stateless on {wins} of {len(names)} series and lower than "
        f"seasonal naive on {beats} of {len(names)}"
        + (f"; the seed ranges of the two modes overlap on {overlap} of them." if len(seeds) > 1 else ".")
        + " Series by series: "
        + "; ".join(
            f"{n} {mase(results, n, 'stateful')['mean']:.3f} vs {mase(results, n, 'stateless')['mean']:.3f}"
            for n in names
        )
        + " (stateful vs stateless)."
    )
    plot = bar_plot(
        out_dir / "mase.png",
        names,
        {
            "MASE (lower is better)": {
                "seasonal naive": [
                    results[n]["modes"]["stateful"][0]["backtest"]["mean"]["seasonal_naive"]["mase"] for n in names
                ],
                "stateful LSTM": [mase(results, n, "stateful")["mean"] for n in names],
                "stateless LSTM": [mase(results, n, "stateless")["mean"] for n in names],
            }
        },
        title="rolling-origin test, mean over seeds",
    )
    columns = ["series", "H", "season", "naive", "seasonal naive", "stateful LSTM", "stateless LSTM"]
    return {
        "title": TITLE,
        "question": QUESTION,
        "answer": answer,
        "settings": {**s, "names": names, "seeds": list(seeds), "threads": threads, "train": TRAIN},
        "tables": [table("MASE, mean over series within each file (mean over seeds, min..max)", columns, rows)],
        "plots": [str(plot)],
        "checks": {},
        "data": results,
    }
