"""Experiment 5, cost (seed 000 claims stateful needs more memory and compute): throughput and peak memory.

Each measurement runs in a fresh process (forked from a helper that has imported torch), so that peak
resident memory (VmHWM, the ru_maxrss of the process) belongs to one mode only. The process builds the
model, data and optimizer, notes its resident memory (the baseline), trains `warmup` then `steps`
windows through `Trainer.train_step` (batches gathered from the layout as in real training) and reports
tokens per second over the timed steps and its peak resident memory. Modes alternate in a seeded
random order in every repeat.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import bar_plot, table

TITLE = "Cost: throughput and memory (seed 000)"
QUESTION = "Does stateful training need more memory and compute than stateless at equal settings?"
QUICK = {
    "hidden": 64,
    "layers": 1,
    "embedding": 16,
    "lanes": 16,
    "window": 32,
    "warmup": 3,
    "steps": 100,
    "repeats": 3,
    "threads": 1,
}
FULL = {**QUICK, "hidden": 256, "layers": 2, "embedding": 64, "lanes": 64, "window": 64, "warmup": 5, "steps": 100}
FULL.update(repeats=3, threads=None)
MODES = {"stateful": ("stateful", 0), "stateless": ("stateless", 0), "stateless + burn-in W": ("stateless", 1)}
VOCAB = 65


def _memory() -> dict[str, int]:
    """Resident and peak resident memory of this process in bytes (VmRSS, VmHWM; ru_maxrss off Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
        kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}
        return {"rss": kb["VmRSS"] * 1024, "peak": kb["VmHWM"] * 1024}
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return {"rss": peak, "peak": peak}


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux; False where not allowed)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process: tokens/s over the timed steps and peak memory above the baseline."""
    import torch

    from ..allocator import pin_malloc
    from ..layout import Sequences
    from ..model import SequenceModel
    from ..objectives import NextToken
    from ..train import TrainConfig, Trainer, seed_everything, training_layout

    pin_malloc()
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    lanes, window, steps = spec["lanes"], spec["window"], spec["warmup"] + spec["steps"]
    tokens = np.random.default_rng(0).integers(0, VOCAB, lanes * window * (steps + 2) + 1)
    seed_everything(0)
    model = SequenceModel(
        "lstm", vocab_size=VOCAB, hidden_size=spec["hidden"], num_layers=spec["layers"], embedding_dim=spec["embedding"]
    )
    config = TrainConfig(mode=spec["mode"], lanes=lanes, window=window, burn_in=spec["burn_in"], epochs=1)
    layout = training_layout(Sequences(tokens, np.array([0, len(tokens)])), config)
    trainer = Trainer(model, NextToken("char"), layout, None, config, None, device=torch.device("cpu"), progress=False)
    baseline = _memory()["rss"]
    reset = _reset_peak()
    start = 0.0
    for k, batch in enumerate(layout.batches()):
        if k == spec["warmup"]:
            start = time.perf_counter()
        if k == steps:
            break
        trainer.train_step(batch)
    elapsed = time.perf_counter() - start
    peak = _memory()["peak"]
    state_bytes = spec["layers"] * lanes * spec["hidden"] * 2 * 4
    return {
        "tokens_per_s": spec["steps"] * lanes * window / elapsed,
        "peak_bytes": peak,
        "baseline_bytes": baseline,
        "training_bytes": peak - baseline,
        "peak_reset": reset,
        "state_bytes": state_bytes,
        "threads": torch.get_num_threads(),
    }


# A helper process imports torch once, then forks a fresh child per measurement (one JSON line in, one out).
_SERVER = """
import json, os, sys, traceback
import torch
import statefulrnn.train
from statefulrnn.study.cost import measure
torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())  # the first AdamW imports for about a second
for line in sys.stdin:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = {"ok": measure(json.loads(line))}
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    print(data.decode() or json.dumps({"error": "the measuring process died"}), flush=True)
"""


class _Measurer:
    """Runs `measure(spec)` in a fresh process per call, forked from one helper that has imported torch."""

    def __enter__(self) -> _Measurer:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        return self

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline() or '{"error": "the measuring helper exited"}')
        if "error" in reply:
            raise RuntimeError(f"cost measurement failed:\n{reply['error']}")
        return reply["ok"]

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run(out_dir: Path, quick: bool = False, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Every mode in its own process, `repeats` times in a seeded random order; table and bar plot."""
    s = QUICK if quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seeds[0])
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in MODES}
    with _Measurer() as measure_in_child:
        for _ in range(s["repeats"]):
            order = list(MODES)
            rng.shuffle(order)
            for name in order:
                mode, burn = MODES[name]
                got[name].append(measure_in_child({**s, "mode": mode, "burn_in": burn * s["window"]}))
    return _summarise(out_dir, s, seeds, got)


def _summarise(out_dir: Path, s: dict, seeds: tuple[int, ...], got: dict) -> dict[str, Any]:
    mb = 2**20
    med = {
        n: {k: statistics.median(r[k] for r in v) for k in ("tokens_per_s", "peak_bytes", "training_bytes")}
        for n, v in got.items()
    }
    base = med["stateful"]
    rows = []
    for name, v in got.items():
        rates = [r["tokens_per_s"] for r in v]
        rows.append(
            [
                name,
                f"{med[name]['tokens_per_s']:,.0f} ({min(rates):,.0f}..{max(rates):,.0f})",
                f"{med[name]['tokens_per_s'] / base['tokens_per_s']:.2f}",
                f"{med[name]['peak_bytes'] / mb:,.0f}",
                f"{med[name]['training_bytes'] / mb:,.1f}",
                f"{v[0]['state_bytes'] / 1024:,.0f}" if name == "stateful" else "0 (zero state each window)",
            ]
        )
    sl = med["stateless"]
    speed = base["tokens_per_s"] / sl["tokens_per_s"]
    best = {n: max(r["tokens_per_s"] for r in v) for n, v in got.items()}
    extra = (base["training_bytes"] - sl["training_bytes"]) / mb
    answer = (
        f"Stateful trains at {speed:.2f}x the speed of stateless ({base['tokens_per_s']:,.0f} vs "
        f"{sl['tokens_per_s']:,.0f} tokens/s) and uses {extra:+.1f} MB of training memory relative to it "
        f"({base['training_bytes'] / mb:.1f} vs {sl['training_bytes'] / mb:.1f} MB above the baseline). The only "
        f"thing it keeps is the carried state, {got['stateful'][0]['state_bytes'] / 1024:,.0f} KB here. A burn-in "
        f"of W steps (a forward pass without gradient) changes stateless throughput by "
        f"{med['stateless + burn-in W']['tokens_per_s'] / sl['tokens_per_s'] - 1:+.0%}. "
        + (
            "The seed's claim that stateful needs more memory and compute is not supported by these measurements."
            if speed >= 0.9 and extra <= max(0.1 * sl["training_bytes"] / mb, 2.0)
            else f"Here stateful measured {1 - speed:.0%} slower and {extra:+.1f} MB against stateless; see the table."
        )
    )
    plot = bar_plot(
        out_dir / "cost.png",
        list(got),
        {
            "tokens/s (thousands)": {"median": [med[n]["tokens_per_s"] / 1000 for n in got]},
            "training memory above baseline (MB)": {"median": [med[n]["training_bytes"] / mb for n in got]},
        },
        title="training cost at equal settings (median over repeats)",
    )
    columns = [
        "mode",
        "tokens/s median (min..max)",
        "vs stateful",
        "peak RSS (MB)",
        "training memory above baseline (MB)",
        "carried state (KB)",
    ]
    return {
        "title": TITLE,
        "question": QUESTION,
        "answer": answer,
        "settings": {
            **s,
            "seeds": list(seeds),
            "threads": got["stateful"][0]["threads"],
            "peak_reset": all(r["peak_reset"] for v in got.values() for r in v),
        },
        "tables": [
            table(
                f"LSTM {s['layers']}x{s['hidden']}, {s['lanes']} lanes x window {s['window']}, "
                f"{s['steps']} timed steps after {s['warmup']} warm-up, {s['repeats']} repeat(s)",
                columns,
                rows,
            )
        ],
        "plots": [str(plot)],
        "checks": {
            "stateful is at least 0.75x as fast as stateless (best of the repeats)": best["stateful"]
            >= 0.75 * best["stateless"],
            "stateful needs at most 10% (or 2 MB) more training memory than stateless": extra
            <= max(0.1 * sl["training_bytes"] / mb, 2.0),
        },
        "data": got,
    }
