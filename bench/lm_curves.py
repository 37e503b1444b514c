"""Best validation loss against wall time: several language-model recipes, several seeds, one table and plot.

Each arm is the real CLI, `statefulrnn train text TEXT --max-time T --eval-every E --seed S FLAGS`, run in a
subprocess with one thread (two arms at a time on a 2-core machine: `--jobs 2`), on the same split (first 90%
train, last 10% validation, nats/char). The curve of a run is the best validation loss reached by each
wall time (training plus its evaluations: what a user waits for) within that run; a run given a shorter
budget would also decay its rate earlier (the wsd schedule), so the points before the end are slightly
pessimistic for every arm alike. A finished run is not run again: rerunning resumes the table.

    python bench/lm_curves.py                        # the four recipes of issue 16, 3 seeds, 15 min: 3 h of CPU
    python bench/lm_curves.py --max-time 4m --seeds 0 --arm "mingru512=--cell mingru --hidden 512"

Prints a table (median [min-max] over seeds at each time point; the time each arm first reaches the first
arm's median best), writes curves.json into --out and the plot to --png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from statefulrnn.cli.common import duration

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare" / "input.txt"
ARMS = {
    "lstm": "",
    "lstm-awd": "--preset awd --precision bf16",
    "mingru": "--cell mingru --hidden 256 --precision bf16",
    "minlstm": "--cell minlstm --hidden 256 --precision bf16",
}
"""Issue 16's recipes: today's defaults, then each contender at the settings its validation screen chose
(BENCHMARKS.md). bf16 needs a CPU or GPU that runs it natively; elsewhere give the arms with --precision fp32."""
POINTS = (40, 60, 120, 240, 480, 900)
"""Wall times of the table (the first evaluation of `--eval-every 30s` ends at 31-35 s)."""


def train(text: Path, out: Path, flags: str, seed: int, max_time: float, eval_every: float, threads: int) -> Path:
    """One run of the CLI (skipped when `out` already holds a finished one); returns its directory."""
    if (out / "summary.json").is_file():
        return out
    cmd = [sys.executable, "-m", "statefulrnn", "train", "text", str(text), "--out", str(out), "--seed", str(seed)]
    cmd += ["--max-time", f"{max_time}s", "--eval-every", f"{eval_every}s", "--epochs", "1000"]
    cmd += ["--device", "cpu", "--quiet", "--json", *shlex.split(flags)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("running:", shlex.join(cmd[1:]), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{out}: the run failed:\n{result.stderr[-2000:]}")
    return out


def parameters(run: Path) -> int:
    """Values stored in the run's weights (a tied matrix once)."""
    from math import prod

    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as f:
        return sum(prod(f.get_slice(k).get_shape()) for k in f.keys())


def curve(run: Path) -> list[tuple[float, float]]:
    """(elapsed seconds, best validation loss so far) at every evaluation of the run."""
    best, points = float("inf"), []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] in ("eval", "epoch") and r.get("val"):
            best = min(best, r["val"]["loss"])
            points.append((r["elapsed_s"], best))
    return points


def best_by(points: list[tuple[float, float]], t: float) -> float | None:
    """The best validation loss reached by wall time t (None before the first evaluation)."""
    seen = [loss for elapsed, loss in points if elapsed <= t]
    return min(seen) if seen else None


def first_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """The wall time at which the run first reached `target` (None if it never did)."""
    return next((elapsed for elapsed, loss in points if loss <= target), None)


def spread(values: list[float | None], fmt: str = "{:.3f}") -> str:
    """'median [min-max]' over seeds; '-' where a seed has no value."""
    got = [v for v in values if v is not None]
    if len(got) < len(values) or not got:
        return "-" if not got else f"{fmt.format(statistics.median(got))} ({len(got)}/{len(values)})"
    if len(got) == 1:
        return fmt.format(got[0])
    return f"{fmt.format(statistics.median(got))} [{fmt.format(min(got))}-{fmt.format(max(got))}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path, default=TEXT, help="the book (default: tinyshakespeare in ../shared)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "lm_curves", help="run directories and curves.json")
    ap.add_argument("--png", type=Path, default=None, help="the plot (default: OUT/curves.png)")
    ap.add_argument("--max-time", type=duration, default=900.0, help="budget per run (e.g. 900s, 15m)")
    ap.add_argument("--eval-every", type=duration, default=30.0, help="validation interval (e.g. 30s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="threads per run")
    ap.add_argument(
        "--arm", action="append", default=None, metavar="NAME=FLAGS", help="a recipe (repeatable; default: ARMS)"
    )
    args = ap.parse_args()
    if not args.text.is_file():
        raise SystemExit(f"{args.text}: no such file (give --text a plain-text book)")
    arms = dict(a.split("=", 1) for a in args.arm) if args.arm else ARMS
    jobs = [(name, seed) for seed in args.seeds for name in arms]  # seeds outermost: arms share the load alike
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(
            zip(
                jobs,
                pool.map(
                    lambda job: train(
                        args.text,
                        args.out / job[0] / f"seed{job[1]}",
                        arms[job[0]],
                        job[1],
                        args.max_time,
                        args.eval_every,
                        args.threads,
                    ),  # fmt: skip
                    jobs,
                ),
            )
        )
    points = [t for t in POINTS if t < args.max_time] + [args.max_time]  # the last: the run's end, however late
    curves = {job: curve(run) for job, run in runs.items()}
    first = next(iter(arms))
    target = statistics.median(curves[(first, s)][-1][1] for s in args.seeds)
    rows, report = [], {"max_time": args.max_time, "seeds": args.seeds, "target": target, "arms": {}}
    for name, flags in arms.items():
        sums = [json.loads((runs[(name, s)] / "summary.json").read_text()) for s in args.seeds]
        cs = [curves[(name, s)] for s in args.seeds]
        reach = [first_reach(c, target) for c in cs]
        report["arms"][name] = {
            "flags": flags,
            "parameters": parameters(runs[(name, args.seeds[0])]),
            "tokens_per_s": [s["tokens_per_s"] for s in sums],
            "best": [c[-1][1] for c in cs],
            "reach_target_s": reach,
            "curves": cs,
        }
        rows.append(
            [name, f"{report['arms'][name]['parameters']:,}", spread([s["tokens_per_s"] for s in sums], "{:,.0f}")]
            + [spread([best_by(c, t if t < args.max_time else float("inf")) for c in cs]) for t in points]
            + [spread(reach, "{:.0f}")]
        )
    head = ["arm", "params", "tokens/s"] + [f"best by {t:.0f} s" for t in points] + [f"s to reach {target:.4f}"]
    print(f"\nbest validation nats/char by wall time, median [min-max] over seeds {args.seeds}; flags:")
    for name, flags in arms.items():
        print(f"  {name}: {flags or '(defaults)'}")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(report, indent=1))
    plot(report, args.png or args.out / "curves.png")


def plot(report: dict, png: Path) -> None:
    """Median best-so-far curve per arm with the seeds' range shaded, log time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    grid = [t for t in range(10, int(report["max_time"]) + 1, 5)]
    for name, arm in report["arms"].items():
        at = [[best_by(c, t if t < grid[-1] else float("inf")) for c in arm["curves"]] for t in grid]
        keep = [(t, v) for t, v in zip(grid, at) if all(x is not None for x in v)]
        if not keep:
            continue
        ts = [t for t, _ in keep]
        ax.plot(ts, [statistics.median(v) for _, v in keep], label=f"{name} ({arm['parameters']:,} params)")
        ax.fill_between(ts, [min(v) for _, v in keep], [max(v) for _, v in keep], alpha=0.2)
    ax.axhline(1.45, color="grey", ls="--", lw=0.8, label="goal 1.45")
    ax.set_xscale("log")
    ax.set_xlabel("wall time, s (one thread each)")
    ax.set_ylabel("best validation loss so far, nats/char")
    ax.set_ylim(top=2.2)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(f"tinyshakespeare, median and range over seeds {report['seeds']}")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
