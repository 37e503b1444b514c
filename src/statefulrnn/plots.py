"""PNG plots people would rather look at than read: training curves (forecast plots: `series/plot.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(metrics_log: Path, out: Path) -> Path | None:
    """Training loss per logged step, train loss per epoch and every validation loss, against the step."""
    metrics_log = Path(metrics_log)
    if not metrics_log.exists():
        return None
    records = [json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    if not steps and not epochs:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6, label="train (batch)")
    train = [(r["step"], r["train"]["loss"]) for r in epochs if r.get("train")]
    if train:
        ax.plot(*zip(*train), "o-", label="train (epoch mean)")
    val = [(r["step"], r["val"]["loss"]) for r in records if r["kind"] in ("epoch", "eval") and r.get("val")]
    if val:
        ax.plot(*zip(*val), "s-", label="validation (stateful)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("training curves")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
