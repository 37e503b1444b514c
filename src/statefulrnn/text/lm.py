"""Language-model runs end to end: train on a text (or a prepared corpus), evaluate, reload.

Kept apart from the rest of `statefulrnn.text` because it imports the trainer; the package loads it
only on first use of `train_text`, `evaluate_text` or `load_text_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..device import resolve_device
from ..distributed import init_distributed
from ..layout import evaluation_layout, training_layout
from ..model import SequenceModel
from ..objectives import NextToken
from ..runs import VOCAB, Run, load_run, read_config
from ..train import (
    TrainConfig,
    Trainer,
    evaluate,
    resumed_config,
    seed_everything,
)
from .corpus import text_corpus
from .vocab import Vocab


def train_text(
    source: str | Path | None,
    run: str | Path | None = None,
    *,
    level: str | None = None,
    val: str | Path | None = None,
    val_fraction: float | None = None,
    replace_invalid: bool = False,
    model_args: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    device: str | None = "auto",
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> Run:
    """Train a language model on a text file or prepared corpus directory; the trained `Run`.

    The returned run's model holds the weights its `summary` reports (the best on validation). With
    `run` (a directory), everything is also written there: config, vocabulary, weights, checkpoint,
    metrics, curves; without it nothing is written and `resume` is unavailable.

    `level` defaults to characters for a text file and to the prepared level for a directory. A text
    file without `val` or `val_fraction` holds out its last 10% for validation.

    With `resume=True`, continues `run` from its training checkpoint; its saved settings are used
    (only `overrides` of epochs, max_time, max_tokens and patience may change them).

    Started by torchrun as one of several processes, trains data-parallel (see `distributed.py`).
    """
    run = None if run is None else Path(run)
    vocab = None
    if resume and run is None:
        raise ValueError("resume needs the run directory")
    if resume:
        saved = read_config(run, task="text")
        data = saved["data"]
        source = source or data["source"]
        level, val, val_fraction = data["level"], data["val"], data["val_fraction"]
        replace_invalid = data["replace_invalid"]
        model_args = saved["model"]
        config = resumed_config(saved, overrides)
        vocab = Vocab.load(run / VOCAB)
    elif source is None:
        raise ValueError("give the training text (a file or a prepared directory)")
    config = config or TrainConfig()
    if val is None and val_fraction is None and Path(source).is_file():
        val_fraction = 0.1
    train, valid = text_corpus(
        source, level=level, val=val, val_fraction=val_fraction, replace_invalid=replace_invalid, vocab=vocab
    )
    device_ = resolve_device(device)
    dist = init_distributed(device_)
    device_ = dist.device if dist is not None else device_
    seed_everything(config.seed)
    args = {k: v for k, v in (model_args or {}).items() if k not in ("vocab_size", "n_features")}
    model = SequenceModel(vocab_size=len(train.vocab), **args)
    train_layout = training_layout(train.to_sequences(), config)
    val_layout = None
    if valid is not None:
        val_layout = evaluation_layout(valid.to_sequences(), config.eval_lanes, config.eval_window)
    settings = {
        "task": "text",
        "data": {
            "source": str(Path(source).resolve()),
            "level": train.vocab.level,
            "val": None if val is None else str(val),
            "val_fraction": val_fraction,
            "replace_invalid": replace_invalid,
            "train_tokens": int(len(train.tokens)),
            "val_tokens": None if valid is None else int(len(valid.tokens)),
            "val_unknown": None if valid is None else valid.n_unknown,
        },
    }
    if run is not None and not resume and (dist is None or dist.is_main):
        run.mkdir(parents=True, exist_ok=True)
        train.vocab.save(run / VOCAB)
    trainer = Trainer(
        model,
        NextToken(train.vocab.level),
        train_layout,
        val_layout,
        config,
        run,
        device=device_,
        settings=settings,
        progress=progress,
        dist=dist,
    )
    summary = trainer.fit(resume=resume)
    summary["layout"] = train_layout.summary()
    summary["run"] = None if run is None else str(run)
    return Run(trainer.model.eval(), trainer.run_config(), run, vocab=train.vocab, summary=summary)


def load_text_run(run: str | Path, device: str | None = "auto") -> tuple[SequenceModel, Vocab, dict[str, Any]]:
    """The model (best weights, eval mode), vocabulary and config of a text run.

    A thin wrapper of `statefulrnn.runs.load_run(run, device, task="text")` for existing callers.
    """
    loaded = load_run(run, resolve_device(device), task="text")
    return loaded.model, loaded.vocab, loaded.config


def evaluate_text(
    run: str | Path,
    path: str | Path,
    *,
    lanes: int | None = None,
    window: int | None = None,
    device: str | None = "auto",
    replace_invalid: bool = False,
) -> dict[str, Any]:
    """Stateful evaluation of a text run on a text file: loss, accuracy, bpc or perplexity."""
    model, vocab, config = load_text_run(run, device)
    corpus, _ = text_corpus(path, level=vocab.level, vocab=vocab, replace_invalid=replace_invalid)
    train_cfg = config.get("train", {})
    layout = evaluation_layout(
        corpus.to_sequences(), lanes or train_cfg.get("eval_lanes", 8), window or train_cfg.get("eval_window", 256)
    )
    metrics = evaluate(model, layout, NextToken(vocab.level))
    metrics.update(tokens=int(len(corpus.tokens)), unknown=int(corpus.n_unknown))
    return metrics


__all__ = ["evaluate_text", "load_text_run", "train_text"]
