"""Data-parallel training throughput: `statefulrnn train text --nproc N` for N = 1, 2, ... on one machine.

Each timed run is the real CLI on tinyshakespeare (2-layer LSTM 256, 64 lanes, window 64 by default)
with a short token budget. A configuration PxT is P processes of T threads each (OMP_NUM_THREADS);
the default compares one process on one core, one process on all cores, and one process per core.
Reported: training tokens/s of all ranks together from the run summary, and the steady rate from
metrics.jsonl without the first logged window (warm-up). Configurations alternate in a fresh random
order every repeat; the load average is recorded because other jobs may share the CPUs.

    python bench/distributed_throughput.py                         # about 3 minutes on 2 idle cores
    python bench/distributed_throughput.py --configs 1x8 2x4 4x2 8x1 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare" / "input.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, default=TEXT, help="training text (default: tinyshakespeare)")
    p.add_argument("--configs", nargs="+", default=None, help="PxT: P processes of T threads (default 1x1 1xC Cx1)")
    p.add_argument("--lanes", type=int, default=64)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="training steps per timed run (the token budget)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    return p.parse_args(argv)


def one_run(args: argparse.Namespace, config: str, out: Path) -> dict:
    """One `statefulrnn train text` run of configuration PxT; summary tokens/s and the steady tokens/s of its log."""
    nproc, threads = map(int, config.split("x"))
    command = [sys.executable, "-m", "statefulrnn", "train", "text", str(args.text), "--out", str(out)]
    command += ["--hidden", str(args.hidden), "--layers", str(args.layers), "--lanes", str(args.lanes)]
    command += ["--window", str(args.window), "--max-tokens", str(args.steps * args.lanes * args.window)]
    command += ["--val-fraction", "0.01", "--checkpoint-every", "1e9", "--log-every", "5", "--device", args.device]
    command += ["--quiet", "--json", "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = os.getloadavg()[0]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if r["kind"] == "step"]
    rates = rates[1:]
    return {
        "config": config,
        "tokens_per_s": summary["tokens_per_s"],
        "steady_tokens_per_s": statistics.median(rates) if rates else None,
        "steps": summary["steps"],
        "load_before": load,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.text.is_file():
        raise SystemExit(f"{args.text} is missing: pass --text")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    configs = args.configs or list(dict.fromkeys(["1x1", f"1x{cores}", f"{cores}x1"]))
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = list(configs)
            random.shuffle(order)
            for config in order:
                r = one_run(args, config, Path(tmp) / f"r{repeat}-{config}")
                runs.append(r)
                print(
                    f"repeat {repeat} {config}: {r['tokens_per_s']:,.0f} tok/s "
                    f"(steady {r['steady_tokens_per_s'] or 0:,.0f}), load {r['load_before']:.1f}",
                    file=sys.stderr,
                )
    base = statistics.median(r["steady_tokens_per_s"] for r in runs if r["config"] == configs[0])
    print(
        f"\n{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}; "
        f"{args.layers}-layer LSTM {args.hidden}, lanes {args.lanes}, window {args.window}, {args.steps} steps per run"
    )
    print("| processes x threads | tokens/s (summary) median | steady tokens/s median (min..max) | vs first |")
    print("|---|---|---|---|")
    for config in configs:
        mine = [r for r in runs if r["config"] == config]
        steady = sorted(r["steady_tokens_per_s"] for r in mine)
        total = statistics.median(r["tokens_per_s"] for r in mine)
        med = statistics.median(steady)
        print(f"| {config} | {total:,.0f} | {med:,.0f} ({steady[0]:,.0f}..{steady[-1]:,.0f}) | {med / base:.2f}x |")
    loads = [r["load_before"] for r in runs]
    print(f"\nload average (1 min) before each run: {min(loads):.1f}..{max(loads):.1f} on {cores} cores")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
