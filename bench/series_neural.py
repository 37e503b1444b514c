"""The neural forecasters a user would compare against: Nixtla neuralforecast's NHITS and LSTM, on the
exact test origins of the forecasting suite, scored as `bench/series_peers.py` scores statsforecast.

For every entry of `bench/series_suite.py` (same files, specs, read options and generated "many" file),
NHITS and LSTM run with neuralforecast's defaults except: h = the entry's horizon; input_size =
max(longest season, 2 x main season, 2 x h) (one whole cycle of the longest season, two of the main one,
and at least the two horizons neuralforecast's examples use; fixed before any result was seen, never
tuned on the test origins); max_steps (default 500, modest for a CPU); random_seed; scaler_type="standard".
Each model is fitted once on the history before the first test origin and then slides forward with the
true values (`cross_validation(n_windows=test_windows, step_size=h, refit=False)`, whose cutoffs are
checked to be `ForecastSpec.test_origins`), as our models are trained once and carry their state. Scores
come from `statefulrnn.series.peers.score_peers` (MASE scaled by the in-sample seasonal naive error before
the first origin, filled actuals left out, mean over the series of an entry). Seconds: fit + predict over
all origins and series of the entry.

neuralforecast is not a dependency of statefulrnn; install it in a separate environment (a CPU build of torch
is enough, and much smaller than the CUDA one):

    python3 -m venv /tmp/nfvenv && /tmp/nfvenv/bin/pip install torch==2.13.0 neuralforecast statsforecast
    /tmp/nfvenv/bin/pip install -e .
    OMP_NUM_THREADS=1 /tmp/nfvenv/bin/python bench/series_neural.py --only taylor seattle --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from series_peers import entry  # noqa: E402
from statefulrnn.series.data import Series  # noqa: E402
from statefulrnn.series.peers import PeerForecasts, forecasts_at_origins, score_peers  # noqa: E402
from statefulrnn.series.read import read_series  # noqa: E402
from statefulrnn.series.spec import ForecastSpec  # noqa: E402
from statefulrnn.study.forecasting import TRAIN, suite_names  # noqa: E402

MODELS = ("NHITS", "LSTM")


def require_neuralforecast() -> Any:
    """The neuralforecast package, or exit with one line saying how to install it."""
    try:
        import neuralforecast
    except ImportError:
        raise SystemExit(
            "bench/series_neural.py needs neuralforecast (not a statefulrnn dependency): "
            "pip install neuralforecast statsforecast, best in a separate virtual environment"
        ) from None
    return neuralforecast


def input_size(spec: ForecastSpec) -> int:
    """The look-back window: one cycle of the longest season, two of the main one, at least 2 horizons."""
    return max(max(spec.seasons, default=1), 2 * spec.season, 2 * spec.horizon)


def make_model(name: str, h: int, size: int, steps: int, seed: int) -> Any:
    """A neuralforecast model with its defaults except horizon, window, steps, seed and scaler; quiet."""
    from neuralforecast.models import LSTM, NHITS

    cls = {"NHITS": NHITS, "LSTM": LSTM}[name]
    return cls(
        h=h,
        input_size=size,
        max_steps=steps,
        random_seed=seed,
        scaler_type="standard",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )


def neural_forecasts(model: Any, series: list[Series], origins: dict[str, np.ndarray], h: int) -> dict[str, np.ndarray]:
    """Forecasts (K, H) per series id at its origins, from one fit before the first origin (refit=False)."""
    from neuralforecast import NeuralForecast

    k = len(origins[series[0].id])
    if any(len(origins[s.id]) != k or int(origins[s.id][-1]) + h != len(s) for s in series):
        raise ValueError("every series needs the same number of origins, the last one H before its end")
    df = pd.concat(pd.DataFrame({"unique_id": s.id, "ds": np.arange(len(s)), "y": s.values}) for s in series)
    nf = NeuralForecast(models=[model], freq=1)
    cv = nf.cross_validation(df=df, n_windows=k, step_size=h, refit=False)
    return forecasts_at_origins(cv, series, origins, h, "neuralforecast")


def run_entry(name: str, tmp: Path, seeds: list[int], steps: int, log: Any = print) -> dict[str, Any]:
    """Backtest NHITS and LSTM for every seed on entry `name`: MASE and seconds per model and seed."""
    file, spec_args, read, over = entry(name, tmp)
    spec = ForecastSpec(**spec_args)
    window = {**TRAIN, **over}["window"]
    series = list(read_series(file, features=spec.features, **read))
    origins = {s.id: spec.test_origins(s, window) for s in series}
    h, size = spec.horizon, input_size(spec)
    mase: dict[str, list[float]] = {m: [] for m in MODELS}
    seconds: dict[str, list[float]] = {m: [] for m in MODELS}
    snaive = float("nan")
    for seed in seeds:
        forecasts = {}
        for m in MODELS:
            start = time.perf_counter()
            forecasts[m] = neural_forecasts(make_model(m, h, size, steps, seed), series, origins, h)
            seconds[m].append(time.perf_counter() - start)
            log(f"{name:9} seed {seed}  {m} fitted and forecast in {seconds[m][-1]:.1f} s")
        scored = score_peers(series, origins, PeerForecasts(forecasts, {}), h, spec.season)["mean"]
        snaive = scored["seasonal_naive"]["mase"]
        for m in MODELS:
            mase[m].append(scored[m]["mase"])
        log(
            f"{name:9} seed {seed}  "
            + "  ".join(f"{m} {mase[m][-1]:.3f} ({seconds[m][-1]:.1f} s)" for m in MODELS)
            + f"  seasonal naive {snaive:.3f}"
        )
    return {
        "horizon": h,
        "season": spec.season,
        "input_size": size,
        "series": len(series),
        "origins": spec.test_windows,
        "seeds": seeds,
        "seasonal_naive": snaive,
        "mase": mase,
        "seconds": seconds,
    }


def _cell(values: list[float], digits: int) -> str:
    med = f"{np.median(values):.{digits}f}"
    return med if len(values) == 1 else f"{med} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def markdown_table(results: dict[str, Any]) -> str:
    """MASE per entry of NHITS and LSTM (median and range over seeds) and their fit+predict seconds."""
    lines = [
        "| series | H | input_size | seasonal naive | NHITS MASE | LSTM MASE | NHITS seconds | LSTM seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m, t = r["mase"], r["seconds"]
        lines.append(
            f"| {name} | {r['horizon']} | {r['input_size']} | {r['seasonal_naive']:.3f} | {_cell(m['NHITS'], 3)} | "
            f"{_cell(m['LSTM'], 3)} | {_cell(t['NHITS'], 1)} | {_cell(t['LSTM'], 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help=f"series to run: {', '.join(suite_names())}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="random seeds (median and range over them)")
    p.add_argument("--max-steps", type=int, default=500, help="training steps of each model (default 500)")
    p.add_argument("--out", type=Path, default=None, help="folder for results.json and table.md (optional)")
    args = p.parse_args(argv)
    for name in args.only or []:
        if name not in suite_names():
            raise SystemExit(f"unknown series {name!r}: use {', '.join(suite_names())}")
    neuralforecast = require_neuralforecast()
    import torch

    torch.set_num_threads(1)
    for quiet in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(quiet).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    note = (
        f"\n\nneuralforecast {neuralforecast.__version__}, torch {torch.__version__}; defaults except h, input_size, "
        f"max_steps={args.max_steps}, scaler_type=standard, seeds {' '.join(map(str, args.seeds))}; fitted once "
        "before the first test origin (refit=False). MASE is scaled by the in-sample seasonal naive error before "
        "the first test origin, mean over series; median (range) over seeds; seconds are fit+predict over all "
        "origins and series of the entry."
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or suite_names():
            results[name] = run_entry(name, Path(tmp), args.seeds, args.max_steps, log=lambda s: print(s, flush=True))
            if args.out:  # after every entry, so a stopped run keeps what it finished
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "results.json").write_text(json.dumps(results, indent=1))
                (args.out / "table.md").write_text(markdown_table(results) + note + "\n")
    print()
    print(markdown_table(results) + note)


if __name__ == "__main__":
    main()
