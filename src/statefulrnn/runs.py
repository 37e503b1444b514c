"""The run directory: every file a trained run holds, one atomic writer, checkpoints, and `load_run`.

    RUN/config.json             format/version, model constructor arguments, task and training settings
    RUN/model.safetensors       the weights the run reports (the best on validation, else the last)
    RUN/vocab.json              text runs: the vocabulary
    RUN/transforms.json         series runs: the fitted per-series transforms
    RUN/intervals.json          series runs: interval half-widths per series and step ahead
    RUN/backtest.json           series runs: the rolling-origin test report
    RUN/checkpoint.safetensors  training checkpoint: weights, optimizer, lane states, RNG, data cursor
    RUN/metrics.jsonl           one JSON object per logged step and per epoch
    RUN/summary.json            what the run achieved
    RUN/curves.png              training and validation curves

Every file is written to a temporary name and renamed into place, so a run killed at any moment
leaves either the old file or the new one, never half of one. Nothing here is pickle: weights in
safetensors, everything else JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .device import resolve_device
from .files import atomic_write, jsonable, read_json, write_json  # noqa: F401  (re-exported)
from .model import SequenceModel
from .state import State

FORMAT = "statefulrnn-run"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
VOCAB = "vocab.json"
TRANSFORMS = "transforms.json"
INTERVALS = "intervals.json"
BACKTEST = "backtest.json"
SELECTION = "selection.json"
MEMBERS = "members"
"""A series ensemble keeps member k (k >= 1) as a whole run in RUN/members/k; member 0 is the run itself."""
TASKS = ("text", "series")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: is this a statefulrnn run directory?")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise ValueError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
    return tensors, metadata


def save_model(run: Path, model: SequenceModel, settings: dict[str, Any]) -> None:
    """Write config.json (model arguments + `settings`) and the weights."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    save_config(run, model, settings)
    save_weights(run / WEIGHTS, model)


def run_config(model: SequenceModel, settings: dict[str, Any]) -> dict[str, Any]:
    """What config.json holds: format and version, the model's arguments, and the task's `settings`."""
    return {"format": FORMAT, "version": VERSION, "model": model.config, **settings}


def save_config(run: Path, model: SequenceModel, settings: dict[str, Any]) -> None:
    """Write config.json alone: a resumed run records its new budgets without touching the best weights."""
    write_json(Path(run) / CONFIG, run_config(model, settings))


def weights_bytes(model: torch.nn.Module) -> bytes:
    """A model's weights as the bytes of a safetensors file (what `save_weights` writes)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return st_save(tensors, metadata={"format": FORMAT})


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Write a model's weights as safetensors."""
    atomic_write(Path(path), weights_bytes(model))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors weights file (ValueError if it is missing or damaged)."""
    return _read_safetensors(path)[0]


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load safetensors weights into `model`, with a clear error when they do not fit it."""
    tensors = read_weights(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the model in config.json: {str(e).splitlines()[0]}") from None


def read_config(run: Path, task: str | None = None) -> dict[str, Any]:
    """The run's config.json, checked to be a statefulrnn run of a version this build reads (and, given
    `task`, a run of that task)."""
    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"run directory {run} does not exist")
    config = read_json(run / CONFIG, "run config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{run / CONFIG} is not a statefulrnn run config")
    if config.get("version") != VERSION:
        raise ValueError(f"run format version {config.get('version')} is not supported (this build reads {VERSION})")
    if task is not None and config.get("task") != task:
        raise ValueError(f"{run} is a {config.get('task')} run, not a {task} run")
    return config


def load_model(run: Path, device: torch.device | str = "cpu") -> tuple[SequenceModel, dict[str, Any]]:
    """Rebuild the model of a run directory with its reported weights, in eval mode."""
    config = read_config(run)
    try:
        model = SequenceModel(**config["model"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{Path(run) / CONFIG} has a bad model section: {e}") from None
    load_weights(Path(run) / WEIGHTS, model)
    return model.to(device).eval(), config


@dataclass
class Checkpoint:
    """A training checkpoint as read back: weights, optimizer state, lane state and trainer JSON."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    state: State | None
    trainer: dict[str, Any]
    rng: torch.Tensor


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: State | None,
    trainer: dict[str, Any],
) -> None:
    """Write everything needed to continue training exactly where it stopped, in one atomic file."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entries in opt["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    if state is not None:
        tensors["state.h"] = state.h.detach().cpu().contiguous()
        if state.c is not None:
            tensors["state.c"] = state.c.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": FORMAT,
        "kind": "checkpoint",
        "trainer": json.dumps(trainer),
        "optimizer": json.dumps({"param_groups": opt["param_groups"], "scalars": scalars}),
        "state_kind": state.kind if state is not None else "",
    }
    atomic_write(Path(path), st_save(tensors, metadata=meta))


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a training checkpoint; a truncated or foreign file raises ValueError."""
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != FORMAT or meta.get("kind") != "checkpoint":
        raise ValueError(f"{path} is not a statefulrnn training checkpoint")
    try:
        trainer = json.loads(meta["trainer"])
        opt_meta = json.loads(meta["optimizer"])
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, entries in opt_meta["scalars"].items():
            opt_state.setdefault(int(idx), {}).update(entries)
        state = None
        if meta.get("state_kind"):
            state = State(meta["state_kind"], tensors["state.h"], tensors.get("state.c"))
        return Checkpoint(
            model={k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
            optimizer={"state": opt_state, "param_groups": opt_meta["param_groups"]},
            state=state,
            trainer=trainer,
            rng=tensors["rng.torch"],
        )
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is a damaged training checkpoint ({e}): delete it to start over") from None


@dataclass
class Run:
    """A trained run, loaded: its model (the reported weights, eval mode), config and task files.

    Attributes:
        model: the `SequenceModel` with the weights the run's summary reports.
        config: the run's config.json (model arguments, task, data and training settings).
        path: the run directory it was loaded from (None for a run trained without one).
        vocab: text runs: the `Vocab`.
        spec: series runs: the `ForecastSpec`.
        transforms: series runs: the fitted `Transform` of every training series.
        intervals: series runs: interval half-widths per series and step ahead ({} when off).
        summary: what training reported (summary.json), when known.
        members: series ensembles: the other members' models (the run's own model is the first).
    """

    model: SequenceModel
    config: dict[str, Any]
    path: Path | None = None
    vocab: Any = None
    spec: Any = None
    transforms: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    members: list[SequenceModel] = field(default_factory=list)

    @property
    def models(self) -> list[SequenceModel]:
        """Every model of the run: its own, then the ensemble's other members (forecasts take their median)."""
        return [self.model, *self.members]

    @property
    def task(self) -> str:
        """ "text" or "series"."""
        return self.config.get("task", "")


def load_run(path: str | Path, device: torch.device | str | None = "cpu", *, task: str | None = None) -> Run:
    """Load a run directory for prediction: model, vocabulary or transforms, intervals.

    `task` ("text" or "series") refuses a run of the other kind with a clear error. Reads only
    safetensors and JSON; never imports training code.
    """
    path = Path(path)
    read_config(path, task)
    model, config = load_model(path, resolve_device(device))
    kind = config.get("task")
    if kind not in TASKS:
        raise ValueError(f"{path} is a {kind!r} run; only text and series runs can be loaded for prediction")
    run = Run(model, config, path)
    if (path / SUMMARY).is_file():
        run.summary = read_json(path / SUMMARY, "run summary")
    needed = VOCAB if kind == "text" else TRANSFORMS
    if not (path / needed).is_file():
        raise ValueError(f"{path / needed} is missing: the run is incomplete; train it again")
    if kind == "text":
        from .text.vocab import Vocab

        run.vocab = Vocab.load(path / VOCAB)
    else:
        from .series.spec import ForecastSpec
        from .series.transform import transforms_from_json

        run.spec = ForecastSpec(**config["forecast"])
        run.transforms = transforms_from_json((path / TRANSFORMS).read_text(encoding="utf-8"))
        if (path / INTERVALS).is_file():
            run.intervals = read_json(path / INTERVALS, "intervals").get("series", {})
        for k in range(1, int(config.get("ensemble", 1))):
            member = path / MEMBERS / str(k)
            if not (member / WEIGHTS).is_file():
                raise ValueError(f"{member / WEIGHTS} is missing: the ensemble is incomplete; resume its training")
            run.members.append(load_model(member, resolve_device(device))[0])
    return run
