"""The run directory: everything a trained model needs, in safetensors and JSON (no pickle).

    RUN/config.json            format/version, model constructor arguments, task and training settings
    RUN/model.safetensors      the weights the run reports (the best on validation, else the last)
    RUN/vocab.json             text runs: the vocabulary (series runs: transform.json)
    RUN/checkpoint.safetensors training checkpoint: weights, optimizer, lane states, RNG, data cursor
    RUN/metrics.jsonl          one JSON object per logged step and per epoch
    RUN/curves.png             training and validation curves

Every file is written to a temporary name and renamed into place, so a run killed at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .model import SequenceModel
from .state import State

FORMAT = "statefulrnn-run"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old content or the new, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jsonable(obj: Any) -> Any:
    """`obj` with NaN and infinities as None, so strict JSON parsers read it (MASE is inf on flat history)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented strict JSON (non-finite floats as null), atomically."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False, default=str)
    atomic_write(Path(path), (text + "\n").encode())


def read_json(path: Path, what: str = "file") -> Any:
    """Read a JSON file, turning a missing or garbled file into one clear ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: is this a statefulrnn run directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is corrupt ({e}): restore it or train again") from None


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


def save_config(run: Path, model: SequenceModel, settings: dict[str, Any]) -> None:
    """Write config.json alone: a resumed run records its new budgets without touching the best weights."""
    write_json(Path(run) / CONFIG, {"format": FORMAT, "version": VERSION, "model": model.config, **settings})


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Write a model's weights as safetensors."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(Path(path), st_save(tensors, metadata={"format": FORMAT}))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load safetensors weights into `model`, with a clear error when they do not fit it."""
    tensors, _ = _read_safetensors(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit the model in config.json: {str(e).splitlines()[0]}") from None


def read_config(run: Path) -> dict[str, Any]:
    """The run's config.json, checked to be a statefulrnn run of a version this build reads."""
    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"run directory {run} does not exist")
    config = read_json(run / CONFIG, "run config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{run / CONFIG} is not a statefulrnn run config")
    if config.get("version") != VERSION:
        raise ValueError(f"run format version {config.get('version')} is not supported (this build reads {VERSION})")
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
