"""ONNX Runtime engine: the exported step model (statefulrnn.export) in a CPU inference session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..export import ExportedRun, model_to_onnx, parse_metadata
from ..model import SequenceModel
from ..state import State


class OnnxEngine:
    """Steps an exported model with ONNX Runtime's CPU provider; tensors in and out are CPU torch tensors.

    Args:
        model: the .onnx file or its bytes.
        layout: (cell, num_layers, hidden_size) of the state; None reads it, and `run`, from the
            file's statefulrnn metadata.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    """

    name = "onnx"

    def __init__(
        self, model: str | Path | bytes, layout: tuple[str, int, int] | None = None, *, threads: int | None = None
    ) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        source = model if isinstance(model, bytes) else os.fspath(model)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.run: ExportedRun | None = None
        if layout is None:
            where = "the ONNX model" if isinstance(model, bytes) else str(model)
            self.run = parse_metadata(self.session.get_modelmeta().custom_metadata_map, where)
            layout = (self.run.cell, self.run.model_config["num_layers"], self.run.model_config["hidden_size"])
        self.cell, self.num_layers, self.hidden_size = layout
        self._names = [i.name for i in self.session.get_inputs()]
        self._tokens = self.session.get_inputs()[0].type == "tensor(int64)"
        self.n_outputs = self.session.get_outputs()[0].shape[-1]

    @classmethod
    def from_source(cls, run: str | Path | SequenceModel, *, threads: int | None = None) -> OnnxEngine:
        """An engine for an exported .onnx file, a run directory or a `SequenceModel` (exported in memory)."""
        if isinstance(run, SequenceModel):
            return cls(model_to_onnx(run), (run.cell, run.num_layers, run.hidden_size), threads=threads)
        path = Path(run)
        if path.suffix == ".onnx":
            if not path.is_file():
                raise ValueError(f"{path} does not exist")
            return cls(path, threads=threads)
        from ..runs import load_model

        return cls.from_source(load_model(path, "cpu")[0], threads=threads)

    def initial_state(self, lanes: int) -> State:
        return State.zeros(self.cell, self.num_layers, lanes, self.hidden_size)

    def step(self, state: State, inputs: torch.Tensor) -> tuple[torch.Tensor, State]:
        x = _numpy(inputs)
        if x.shape[1] == 0:
            return torch.empty(x.shape[0], 0, self.n_outputs), state
        names = self._names
        feeds = {names[0]: np.ascontiguousarray(x, np.int64 if self._tokens else np.float32)}
        feeds[names[1]] = np.ascontiguousarray(_numpy(state.h), np.float32)
        if state.c is not None:
            feeds[names[2]] = np.ascontiguousarray(_numpy(state.c), np.float32)
        result = self.session.run(None, feeds)
        c = torch.from_numpy(result[2]) if len(result) > 2 else None
        return torch.from_numpy(result[0]), State(self.cell, torch.from_numpy(result[1]), c)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("the onnx engine needs onnxruntime: pip install 'statefulrnn[onnx]'") from None
    return onnxruntime


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """A numpy view of a CPU tensor (the usual case, ~0.5 µs); a copy of any other tensor."""
    if isinstance(t, np.ndarray):
        return t
    try:
        return t.numpy()
    except (RuntimeError, TypeError):  # on a GPU, requiring grad, or bfloat16
        t = t.detach().cpu()
        return (t.float() if t.is_floating_point() else t).numpy()
