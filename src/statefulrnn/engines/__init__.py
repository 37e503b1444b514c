"""Engines: the one seam that knows which runtime steps a model.

An engine steps a batch of lanes from their states: `step(state, inputs) -> (outputs, state)`, with
inputs (lanes, steps) int64 token ids or (lanes, steps, n_features) floats, outputs (lanes, steps,
n_outputs) float32 and every tensor on the CPU. Stores, sequence numbers and micro-batching sit above
it unchanged. `select_engine` picks one: "torch", "onnx", or "auto" (ONNX Runtime on CPU when it is
installed, else PyTorch).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

from torch import Tensor
from torch import device as Device

from ..model import SequenceModel
from ..state import State

ENGINES = ("torch", "onnx", "auto")


class Engine(Protocol):
    """Steps a batch of lanes of one model."""

    name: str

    def step(self, state: State, inputs: Tensor) -> tuple[Tensor, State]:
        """Run `inputs` from `state`: (lanes, steps, n_outputs) float32 outputs and the state after them."""
        ...

    def initial_state(self, lanes: int) -> State:
        """The all-zero state of `lanes` lanes."""
        ...


def onnx_available(export: bool = True) -> bool:
    """Whether onnxruntime (and, to export a model first, onnx) is installed, without importing them."""
    needed = ("onnxruntime", "onnx") if export else ("onnxruntime",)
    return all(importlib.util.find_spec(name) is not None for name in needed)


def select_engine(
    kind: str,
    run: str | Path | SequenceModel,
    device: str | Device = "cpu",
    *,
    threads: int | None = None,
) -> Engine:
    """An engine for `run`: a run directory, an exported .onnx file (onnx only) or a `SequenceModel`.

    "auto" is ONNX Runtime on CPU when it is installed, otherwise PyTorch (oneDNN's RNN path off for
    small batches on CPU, cuDNN on GPU). `threads` sets ONNX Runtime's intra-op threads.
    """
    if kind not in ENGINES:
        raise ValueError(f"engine {kind!r} is not one of {', '.join(ENGINES)}")
    device = Device(device)
    is_onnx_file = not isinstance(run, SequenceModel) and Path(run).suffix == ".onnx"
    if kind == "auto":
        kind = "onnx" if device.type == "cpu" and onnx_available(export=not is_onnx_file) else "torch"
    if kind == "onnx":
        if device.type != "cpu":
            raise ValueError(f"the onnx engine runs on the CPU; use --engine torch for device {device}")
        from .onnx import OnnxEngine

        return OnnxEngine.from_source(run, threads=threads)
    if is_onnx_file:
        raise ValueError(f"{run} is an ONNX file: the torch engine needs a run directory (or use --engine onnx)")
    from .torch import TorchEngine

    return TorchEngine.from_source(run, device)


__all__ = ["ENGINES", "Engine", "onnx_available", "select_engine"]
