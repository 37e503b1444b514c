"""Experiment 3, a whole book (seed 002, question 3): character LM on tinyshakespeare against window length.

For each window W, three models of the same size see the same training tokens (same lanes, epochs and
schedule): stateful (state carried across windows), stateless (shuffled windows from zero state) and
stateless with a burn-in of W steps (run without gradient before each window). Each is evaluated as it
is trained: stateful over the validation text with carried state, stateless on its windows from zero
state (warmed on the W steps before, with burn-in). The stateless models are also evaluated with
carried state, to show what their weights could do with the context they were not trained to use.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..layout import Sequences, StatelessLayout
from ..model import SequenceModel
from ..objectives import NextToken
from ..text import text_corpus
from ..train import TrainConfig, evaluate, evaluation_layout, seed_everything, training_layout
from .common import CPU, QUIET, data_dir, fit, fmt, line_plot, spread, table, torch_threads

TITLE = "A whole book (seed 002, question 3)"
QUESTION = (
    "Character LM on tinyshakespeare: validation bits/char against window length for stateful, stateless and "
    "stateless with burn-in at equal token budget. How much does state buy, and at what window does stateless "
    "catch up?"
)
QUICK = {
    "windows": (8, 32),
    "train_chars": 80_000,
    "val_chars": 20_000,
    "epochs": 1,
    "lanes": 16,
    "hidden": 64,
    "layers": 1,
    "embedding": 16,
    "lr": 2e-2,
    "threads": 1,
}
FULL = {
    "windows": (8, 16, 32, 64, 128),
    "train_chars": None,
    "val_chars": None,
    "epochs": 2,
    "lanes": 64,
    "hidden": 256,
    "layers": 2,
    "embedding": 64,
    "lr": 2e-3,
    "threads": None,
}
MODES = {"stateful": ("stateful", 0), "stateless": ("stateless", 0), "stateless + burn-in W": ("stateless", 1)}
CATCH_UP = 0.01


def book_path() -> Path:
    return data_dir() / "text" / "tinyshakespeare" / "input.txt"


def load_book(s: dict[str, Any]) -> tuple[Sequences, Sequences, int]:
    """Train and validation streams (the conventional first 90% / last 10% split, optionally cut) and the vocab size."""
    train, val = text_corpus(book_path(), level="char", val_fraction=0.1)
    t, v = train.tokens[: s["train_chars"]], val.tokens[: s["val_chars"]]
    return Sequences(t, np.array([0, len(t)])), Sequences(v, np.array([0, len(v)])), len(train.vocab)


def train_one(
    mode: str, burn_in: int, window: int, seed: int, data: tuple[Sequences, Sequences, int], s: dict[str, Any]
) -> dict[str, Any]:
    """Train one model and evaluate it as trained and with carried state; bpc, seconds and tokens."""
    train, val, vocab = data
    seed_everything(seed)
    model = SequenceModel(
        "lstm", vocab_size=vocab, hidden_size=s["hidden"], num_layers=s["layers"], embedding_dim=s["embedding"]
    )
    config = TrainConfig(
        mode=mode, lanes=s["lanes"], window=window, epochs=s["epochs"], lr=s["lr"], burn_in=burn_in, seed=seed, **QUIET
    )
    start = time.perf_counter()
    summary = fit(model, NextToken("char"), training_layout(train, config), config)
    seconds = time.perf_counter() - start
    carried = evaluate(model, evaluation_layout(val, 8, 256), NextToken("char"), CPU)["bpc"]
    own = carried
    if mode == "stateless":
        own = evaluate(model, StatelessLayout(val, 256, window, burn_in=burn_in, shuffle=False), NextToken("char"), CPU)
        own = own["bpc"]
    return {"bpc": own, "carried_bpc": carried, "seconds": seconds, "tokens": summary["tokens"]}


def run(out_dir: Path, quick: bool = False, seeds: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Every window x mode x seed; table and plot of validation bpc against the window."""
    s = QUICK if quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_book(s)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {m: {w: [] for w in s["windows"]} for m in MODES}
    with torch_threads(s["threads"]) as threads:
        for seed in seeds:
            for window in s["windows"]:
                for name, (mode, burn) in MODES.items():
                    runs[name][window].append(train_one(mode, burn * window, window, seed, data, s))
    result = _summarise(out_dir, s, seeds, runs, data)
    result["settings"]["threads"] = threads
    return result


def _catches_up(gap: dict[int, float], stateful: dict[int, float]) -> str:
    """'comes within 1% of stateful from W=x on' (every larger window too), or that it does not."""
    close = [gap[w] <= CATCH_UP * stateful[w] for w in gap]
    for k, w in enumerate(gap):
        if all(close[k:]):
            return f"comes within {CATCH_UP:.0%} of stateful from W={w} on"
    return f"does not come within {CATCH_UP:.0%} of stateful at the largest window tested"


def _summarise(out_dir: Path, s: dict, seeds: tuple[int, ...], runs: dict, data: tuple) -> dict[str, Any]:
    windows = list(s["windows"])

    def stat(name: str, w: int, key: str = "bpc") -> dict[str, float]:
        return spread([r[key] for r in runs[name][w]])

    rows = []
    for w in windows:
        rows.append(
            [w]
            + [fmt(stat(n, w)) for n in MODES]
            + [fmt(stat(n, w, "carried_bpc")) for n in ("stateless", "stateless + burn-in W")]
            + [" / ".join(f"{stat(n, w, 'seconds')['mean']:.0f}" for n in MODES)]
        )
    sf = {w: stat("stateful", w)["mean"] for w in windows}
    gap = {w: stat("stateless", w)["mean"] - sf[w] for w in windows}
    gap_burn = {w: stat("stateless + burn-in W", w)["mean"] - sf[w] for w in windows}
    answer = (
        "Stateless minus stateful validation bpc (what state buys; negative: stateless is better): "
        + ", ".join(f"{gap[w]:+.3f} at W={w}" for w in windows)
        + "; with a burn-in of W: "
        + ", ".join(f"{gap_burn[w]:+.3f}" for w in windows)
        + f". Stateless {_catches_up(gap, sf)}; stateless with burn-in {_catches_up(gap_burn, sf)}. Stateful "
        f"bpc is {min(sf.values()):.3f}..{max(sf.values()):.3f} over the windows (best at W={min(sf, key=sf.get)})."
    )
    lines = {name: ([float(w) for w in windows], [stat(name, w)["mean"] for w in windows]) for name in MODES}
    for name in ("stateless", "stateless + burn-in W"):
        lines[f"{name}, evaluated with carried state"] = (
            [float(w) for w in windows],
            [stat(name, w, "carried_bpc")["mean"] for w in windows],
        )
    styles = {
        "stateful": {"color": "tab:blue", "marker": "o"},
        "stateless": {"color": "tab:red", "marker": "s"},
        "stateless + burn-in W": {"color": "tab:green", "marker": "^"},
        "stateless, evaluated with carried state": {"color": "tab:red", "ls": ":", "marker": "s", "ms": 3},
        "stateless + burn-in W, evaluated with carried state": {
            "color": "tab:green",
            "ls": ":",
            "marker": "^",
            "ms": 3,
        },
    }
    plot = line_plot(
        out_dir / "bpc_vs_window.png",
        {"tinyshakespeare, validation": lines},
        xlabel="window W (truncated-BPTT length)",
        ylabel="validation bits per character",
        title="character LM: state vs window length at equal token budget",
        styles=styles,
        logx=True,
    )
    train, val, vocab = data
    columns = [
        "W",
        *MODES,
        "stateless, carried-state eval",
        "burn-in, carried-state eval",
        "train s (sf / sl / burn-in)",
    ]
    tokens = runs["stateful"][windows[0]][0]["tokens"]
    return {
        "title": TITLE,
        "question": QUESTION,
        "answer": answer,
        "settings": {
            **s,
            "seeds": list(seeds),
            "train_tokens": int(len(train.data)),
            "val_tokens": int(len(val.data)),
            "vocab": vocab,
            "trained_tokens_per_run": tokens,
        },
        "tables": [table("validation bits/char (mean over seeds, min..max)", columns, rows)],
        "plots": [str(plot)],
        "checks": {f"stateful beats stateless at W={windows[0]}": gap[windows[0]] > 0},
        "data": {"runs": runs},
    }
