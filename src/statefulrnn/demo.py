"""`make demo`: a stateful LSTM forecaster on real data shipped inside a PyPI package, against baselines.

Data: hourly Seattle temperatures of 2010 from `vega_datasets` (NOAA climate normals, public
domain). Both models get the same size, data, seed and token budget; the table compares them with
naive and seasonal-naive forecasts on the same rolling origins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .files import write_json
from .series.forecast import load_series_run, read_intervals, rolling_forecasts
from .series.plot import plot_forecast
from .series.read import read_series
from .series.spec import ForecastSpec
from .series.train import train_series
from .train import TrainConfig

SPEC = ForecastSpec(horizon=24, season=24, seasonal_diff=True, test_windows=7, val_windows=7)


def seattle_csv(out: Path) -> Path:
    """Write the vega_datasets Seattle series as timestamp,value CSV (no network needed)."""
    try:
        from vega_datasets import data
    except ImportError:
        raise ValueError("the demo needs vega_datasets: pip install 'statefulrnn[demo]'") from None
    frame = data.seattle_temps().rename(columns={"date": "timestamp", "temp": "value"})
    path = out / "seattle_temps_hourly_2010.csv"
    frame.to_csv(path, index=False)
    return path


def run_demo(
    out: str | Path,
    *,
    epochs: int = 40,
    seeds: tuple[int, ...] = (0, 1, 2),
    device: str = "auto",
    progress: bool = True,
    threads: int = 1,
) -> dict:
    """Train stateful and stateless LSTMs (one run per seed) on the Seattle series, backtest, plot.

    Writes into `out` a run per mode and seed, forecast.png, results.json (every number) and
    table.txt; returns the results. One thread by default: these small models gain nothing from more,
    and lose a lot to busy cores.
    """
    import torch

    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = seattle_csv(out)
    results: dict[str, Any] = {"data": str(csv), "spec": SPEC.__dict__, "seeds": list(seeds), "runs": {}}
    from tqdm.auto import tqdm

    jobs = [(mode, seed) for mode in ("stateful", "stateless") for seed in seeds]
    bar = tqdm(jobs, desc="training", unit="run", disable=not progress, dynamic_ncols=True)
    for mode, seed in bar:
        bar.set_postfix_str(f"{mode} LSTM, seed {seed}")
        config = TrainConfig(mode=mode, lanes=16, window=48, epochs=epochs, lr=3e-3, eval_window=512, seed=seed)
        summary = train_series(
            csv,
            out / f"{mode}-{seed}",
            SPEC,
            read={"fill": "interpolate"},
            config=config,
            device=device,
            progress=False,
        ).summary
        results["runs"][f"{mode}-{seed}"] = summary
    results["table"] = table(results)
    results["plot"] = str(plot_demo(out, csv, seeds[0]))
    write_json(out / "results.json", results)
    (out / "table.txt").write_text(format_table(results["table"]) + "\n")
    return results


def table(results: dict) -> list[dict]:
    """Rows of rolling-origin metrics: the two baselines, then each model as its mean over seeds."""
    runs = results["runs"]
    first = next(iter(runs.values()))["backtest"]["mean"]
    rows = [
        {"forecaster": "naive (last value)", **first["naive"]},
        {"forecaster": "seasonal naive (same hour yesterday)", **first["seasonal_naive"]},
    ]
    for mode in ("stateful", "stateless"):
        scores = [r["backtest"]["mean"]["model"] for k, r in runs.items() if k.startswith(mode + "-")]
        row = {m: float(np.mean([s[m] for s in scores])) for m in scores[0]}
        row["mase_seeds"] = [s["mase"] for s in scores]
        rows.append({"forecaster": f"{mode} LSTM ({len(scores)}-seed mean)", **row})
    return rows


def format_table(rows: list[dict]) -> str:
    """The demo table as aligned text."""
    head = f"{'forecaster':<38} {'MAE':>7} {'RMSE':>7} {'MASE':>7} {'sMAPE%':>7}  MASE per seed"
    lines = [head, "-" * len(head)]
    for r in rows:
        seeds = " ".join(f"{v:.3f}" for v in r.get("mase_seeds", []))
        lines.append(
            f"{r['forecaster']:<38} {r['mae']:7.3f} {r['rmse']:7.3f} {r['mase']:7.3f} {r['smape']:7.3f}  {seeds}"
        )
    return "\n".join(lines)


def plot_demo(out: Path, csv: Path, seed: int = 0) -> Path:
    """The test windows: history, both models' forecasts at each origin, the stateful interval, actuals."""
    s = read_series(csv, fill="interpolate")[0]
    forecasts: dict[str, tuple] = {}
    band = None
    for mode in ("stateful", "stateless"):
        model, spec, transforms, config = load_series_run(out / f"{mode}-{seed}", "cpu")
        f = rolling_forecasts(model, s, transforms[s.id], spec, config, read_intervals(out / f"{mode}-{seed}"))
        x = s.timestamps[f["origins"][0] : f["origins"][-1] + spec.horizon]
        forecasts[f"{mode} LSTM"] = (x, f["model"].reshape(-1))
        if mode == "stateful":
            forecasts["seasonal naive"] = (x, f["seasonal_naive"].reshape(-1))
            if "lo" in f:
                band = (x, f["lo"].reshape(-1), f["hi"].reshape(-1))
    start = len(s) - len(x)
    tail = start - 3 * SPEC.horizon
    panel = {
        "id": f"{s.id}: rolling-origin test, {SPEC.test_windows} origins x {SPEC.horizon} h",
        "history": (s.timestamps[tail : start + 1], s.values[tail : start + 1]),
        "actual": (x, s.values[start:]),
        "forecasts": forecasts,
        "band": band,
    }
    return plot_forecast([panel], out / "forecast.png", title="statefulrnn demo: Seattle hourly temperature (°F)")
