"""Experiment 1, memory beyond the window: recall a symbol seen L steps back, trained with windows of W.

The stream: now and then a *store* symbol (one of `symbols`), between them *distractors*; the target
at every step is the last store symbol seen, so the answer depends on an input L steps back, L being
the time since that store. Gaps between stores are uniform in 1..train_span*W for training and in
1..eval_span*W for the test (lags beyond the training range test how far the learned memory holds).

Each model is tested as it would be used: stateful with its state carried over the whole stream,
stateless on a sliding window of the last W inputs from zero state (every step sees exactly W steps
of context, the most a window-W stateless model has). The stateless-trained model is also run with
carried state, which separates what state buys in training from what it buys at prediction time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..layout import Sequences
from ..model import SequenceModel
from ..objectives import NextToken
from ..train import TrainConfig, seed_everything, training_layout
from .common import QUIET, fit, fmt, line_plot, spread, table, torch_threads

TITLE = "Memory beyond the window"
QUESTION = (
    "Does a stateful model answer from inputs further back than its training window W, where a stateless "
    "model falls to chance, and where does that stop?"
)
QUICK = {
    "windows": (8,),
    "cells": ("lstm", "gru"),
    "train_span": 4,
    "eval_span": 8,
    "symbols": 4,
    "distractors": 4,
    "hidden": 16,
    "lanes": 16,
    "tokens": 40_000,
    "lr": 2e-2,
    "eval_steps": 40_000,
}
FULL = {**QUICK, "windows": (8, 32), "train_span": 8, "eval_span": 16, "hidden": 32, "lanes": 32}
FULL.update(tokens=1_000_000, lr=1e-2, eval_steps=200_000)
EVALS = {
    "stateful": ("stateful", "carried"),
    "stateless": ("stateless", "window"),
    "stateless-trained, carried state": ("stateless", "carried"),
}
WORKS = 0.9


def recall_stream(
    length: int, max_gap: int, symbols: int, distractors: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets (the last store symbol) and lags (steps since it) of a stream starting with a store.

    Store symbols are ids 0..symbols-1, distractors the next `distractors` ids; gaps between stores
    are uniform in 1..max_gap.
    """
    gaps = rng.integers(1, max_gap + 1, size=length)
    gaps = gaps[: int(np.searchsorted(np.cumsum(gaps), length)) + 1]
    starts = np.concatenate([[0], np.cumsum(gaps)[:-1]])
    stored = rng.integers(0, symbols, size=len(gaps))
    which = np.repeat(np.arange(len(gaps)), gaps)[:length]
    lag = np.arange(length) - starts[which]
    x = symbols + rng.integers(0, distractors, size=length)
    x[lag == 0] = stored[which[lag == 0]]
    return x, stored[which], lag


def train_model(cell: str, mode: str, window: int, seed: int, s: dict[str, Any]) -> SequenceModel:
    """A model trained on a fresh stream (seeded) with `s`'s settings in `mode`."""
    rng = np.random.default_rng([seed, window])
    x, y, _ = recall_stream(s["tokens"], s["train_span"] * window, s["symbols"], s["distractors"], rng)
    data = Sequences(x, np.array([0, len(x)]), y)
    seed_everything(seed)
    model = SequenceModel(
        cell,
        vocab_size=s["symbols"] + s["distractors"],
        n_outputs=s["symbols"],
        hidden_size=s["hidden"],
        num_layers=1,
        embedding_dim=8,
    )
    config = TrainConfig(mode=mode, lanes=s["lanes"], window=window, epochs=1, lr=s["lr"], seed=seed, **QUIET)
    fit(model, NextToken(), training_layout(data, config), config)
    return model


@torch.no_grad()
def predict(model: SequenceModel, x: np.ndarray, window: int, how: str, chunk: int = 8192) -> np.ndarray:
    """Predicted symbol at steps window-1.. of stream `x`: with carried state, or from the last `window` inputs."""
    model.eval()
    if how == "carried":
        return model(torch.from_numpy(x)[None])[0][0, window - 1 :].argmax(-1).numpy()
    rows = np.arange(window - 1, len(x))[:, None] - window + 1 + np.arange(window)[None, :]
    out = [model(torch.from_numpy(x[rows[a : a + chunk]]))[0][:, -1].argmax(-1) for a in range(0, len(rows), chunk)]
    return torch.cat(out).numpy()


def eval_streams(window: int, max_gap: int, seed: int, s: dict[str, Any]) -> list[tuple[np.ndarray, ...]]:
    """Four independent test streams (each starting with a store), seeded apart from the training stream."""
    rng = np.random.default_rng([10**6 + seed, window])
    return [recall_stream(s["eval_steps"] // 4, max_gap, s["symbols"], s["distractors"], rng) for _ in range(4)]


def correct_by_lag(
    model: SequenceModel, streams: list[tuple[np.ndarray, ...]], window: int, how: str
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each prediction is right, and its lag, over the test streams from step window-1 on."""
    correct = np.concatenate([predict(model, x, window, how) == y[window - 1 :] for x, y, _ in streams])
    return correct, np.concatenate([lag[window - 1 :] for _, _, lag in streams])


def accuracy_by_lag(correct: np.ndarray, lag: np.ndarray, window: int, span: int, per_window: int = 4) -> np.ndarray:
    """Accuracy in bins of L/W of width 1/per_window, from 0 to `span` (NaN for an empty bin)."""
    bins = np.minimum(lag * per_window // window, span * per_window - 1)
    hits = np.bincount(bins, weights=correct, minlength=span * per_window)
    counts = np.bincount(bins, minlength=span * per_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts


def holds_until(curve: np.ndarray, per_window: int = 4) -> float:
    """The L/W at which the accuracy curve first drops below `WORKS` (inf if it never does)."""
    low = np.flatnonzero(~(curve >= WORKS))
    return float(low[0] / per_window) if len(low) else float("inf")


def _range_accuracy(curve: np.ndarray, lo: float, hi: float, per_window: int = 4) -> float:
    return float(np.nanmean(curve[int(lo * per_window) : int(hi * per_window)]))


def run(out_dir: Path, quick: bool = False, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Train stateful and stateless LSTM and GRU on the recall task; accuracy against L/W, plots, tables."""
    s = QUICK if quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    chance = 1 / s["symbols"]
    curves: dict[str, dict[str, list[list[float]]]] = {}
    with torch_threads(1):
        for window in s["windows"]:
            for cell in s["cells"]:
                for seed in seeds:
                    models = {mode: train_model(cell, mode, window, seed, s) for mode in ("stateful", "stateless")}
                    streams = eval_streams(window, s["eval_span"] * window, seed, s)
                    for name, (mode, how) in EVALS.items():
                        curve = accuracy_by_lag(
                            *correct_by_lag(models[mode], streams, window, how), window, s["eval_span"]
                        )
                        curves.setdefault(f"{cell} W={window}", {}).setdefault(name, []).append(curve.tolist())
    return _summarise(out_dir, s, seeds, curves, chance)


def _sentence(key: str, inside: dict[str, float], stops: float, s: dict, chance: float) -> str:
    """What one model/window pair measured, in words."""
    carried = inside["stateless-trained, carried state"]
    holds = "stays >= 0.9 over the whole range" if stops == float("inf") else f"falls below 0.9 at L/W = {stops:.2f}"
    text = (
        f"{key}: accuracy for W <= L < {s['train_span']}W is {inside['stateful']:.2f} stateful vs "
        f"{inside['stateless']:.2f} stateless (chance {chance:.2f}); stateful {holds} (tested to L/W = "
        f"{s['eval_span']}). The stateless-trained model run with carried state scores {carried:.2f} there"
    )
    if carried >= WORKS:
        return text + ": its weights can hold the symbol, but used on windows it never has the context."
    return text + "."


def _summarise(out_dir: Path, s: dict, seeds: tuple[int, ...], curves: dict, chance: float) -> dict[str, Any]:
    span, per_window = s["eval_span"], 4
    x = (np.arange(span * per_window) + 0.5) / per_window
    ranges = [(0, 1), (1, s["train_span"]), (s["train_span"], span)]
    rows, checks, lines = [], {}, []
    panels: dict[str, dict[str, tuple]] = {}
    for key, by_eval in curves.items():
        cell = key.split()[0]
        for name, per_seed in by_eval.items():
            arr = np.array(per_seed)
            mean = np.nanmean(arr, axis=0)
            panels.setdefault(cell.upper(), {})[f"{name}, {key.split()[1]}"] = (x.tolist(), mean.tolist())
            cells = [fmt(spread([_range_accuracy(c, lo, hi) for c in arr])) for lo, hi in ranges]
            until = holds_until(mean)
            rows.append([key, name, *cells, "never (within tested range)" if until == float("inf") else f"{until:.2f}"])
        inside = {n: _range_accuracy(np.nanmean(np.array(v), 0), 1, s["train_span"]) for n, v in by_eval.items()}
        checks[f"{key}: stateful beats stateless beyond the window"] = inside["stateful"] >= inside["stateless"] + 0.3
        checks[f"{key}: stateless at chance beyond the window"] = abs(inside["stateless"] - chance) < 0.1
        lines.append(_sentence(key, inside, holds_until(np.nanmean(np.array(by_eval["stateful"]), 0)), s, chance))
    styles = {}
    for w in s["windows"]:
        dash = "-" if w == s["windows"][0] else "--"
        styles[f"stateful, W={w}"] = {"color": "tab:blue", "ls": dash}
        styles[f"stateless, W={w}"] = {"color": "tab:red", "ls": dash}
        styles[f"stateless-trained, carried state, W={w}"] = {"color": "tab:orange", "ls": dash, "lw": 1}
    plot = line_plot(
        out_dir / "accuracy_vs_lag.png",
        panels,
        xlabel="L / W (lag in training windows)",
        ylabel="accuracy",
        title="recall of the symbol stored L steps back",
        styles=styles,
        hlines={f"chance ({chance:.2f})": chance},
        vlines={"L = W": 1.0, "longest lag trained": float(s["train_span"])},
    )
    columns = [
        "model",
        "evaluated",
        "L < W",
        f"W <= L < {s['train_span']}W",
        f"{s['train_span']}W <= L < {span}W (untrained lags)",
    ]
    return {
        "title": TITLE,
        "question": QUESTION,
        "answer": " ".join(lines),
        "settings": {**s, "seeds": list(seeds), "threads": 1},
        "tables": [table("accuracy by lag (mean over seeds, min..max)", columns + ["accuracy < 0.9 from L/W"], rows)],
        "plots": [str(plot)],
        "checks": checks,
        "data": {"x": x.tolist(), "curves": curves, "chance": chance},
    }
