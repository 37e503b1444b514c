"""ONNX export of a run's step model, with the recurrent state as explicit inputs and outputs.

    inputs  (lanes, steps) int64 token ids, or (lanes, steps, n_features) float32
    h       (layers, lanes, hidden) float32           c (LSTM only), same shape
    ->
    outputs (lanes, steps, n_outputs) float32
    h_out   (layers, lanes, hidden)                   c_out (LSTM only)

`lanes` and `steps` are dynamic. Everything a deployment needs besides the weights travels in the
file's metadata_props (keys `statefulrnn.*`): the run config, the cell, the vocabulary of text runs,
and for series runs the fitted transforms and interval bands, so a forecaster needs only the .onnx.

The graph comes from torch's TorchScript exporter (`dynamo=False`, deprecated since torch 2.9 but
working in 2.13): it turns nn.LSTM/GRU/RNN into ONNX's fused LSTM/GRU/RNN ops in well under a second
and needs only `onnx`. The dynamo exporter gives the same ops but needs onnxscript and took ~13 s.
minGRU and minLSTM export their gates as MatMuls over the whole call and the recurrence as one ONNX
Loop per layer (`scan.linear_scan` traces its step-by-step form under export), with `h` alone as state.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .files import atomic_write
from .model import SequenceModel
from .runs import INTERVALS, TRANSFORMS, VOCAB, load_model
from .state import State

if TYPE_CHECKING:
    from .series.spec import ForecastSpec
    from .series.transform import Transform
    from .text.vocab import Vocab

OPSET = 17
FORMAT = "statefulrnn-onnx"
VERSION = 1
PREFIX = "statefulrnn."
INPUTS = ("inputs", "h", "c")
OUTPUTS = ("outputs", "h_out", "c_out")


class StepModule(nn.Module):
    """`SequenceModel.forward` with the state as plain tensors, the signature the ONNX graph gets."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        outputs, state = self.model(inputs, State(self.model.cell, h, c))
        return (outputs, state.h) if state.c is None else (outputs, state.h, state.c)


def model_to_onnx(model: SequenceModel, metadata: Mapping[str, str] | None = None, opset: int = OPSET) -> bytes:
    """The serialized ONNX step model of `model` (weights as float32 on CPU), with `metadata` attached."""
    _require_onnx()
    step = StepModule(_cpu_float_copy(model)).eval()
    lanes, steps = 2, 3
    if model.vocab_size is not None:
        x = torch.zeros(lanes, steps, dtype=torch.long)
    else:
        x = torch.zeros(lanes, steps, model.n_features)
    state = State.zeros(model.cell, model.num_layers, lanes, model.hidden_size)
    args = (x, state.h) if state.c is None else (x, state.h, state.c)
    n = len(args)
    dims = {"inputs": {0: "lanes", 1: "steps"}, "outputs": {0: "lanes", 1: "steps"}}
    dims.update({name: {1: "lanes"} for name in INPUTS[1:n] + OUTPUTS[1:n]})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and batch-size notes (h0/c0 are inputs)
        torch.onnx.export(
            step,
            args,
            buf,
            input_names=list(INPUTS[:n]),
            output_names=list(OUTPUTS[:n]),
            dynamic_axes=dims,
            opset_version=opset,
            dynamo=False,
        )
    return _finish(buf.getvalue(), metadata or {}, model.num_layers, model.hidden_size)


def export_onnx(run: str | Path, out: str | Path, *, opset: int = OPSET) -> Path:
    """Write the step model of run directory `run` to `out` (.onnx) with the run's metadata; returns `out`."""
    run, out = Path(run), Path(out)
    model, config = load_model(run, "cpu")
    meta = {"format": FORMAT, "version": str(VERSION), "cell": model.cell, "config": json.dumps(config)}
    meta["state"] = json.dumps(
        {"layers": model.num_layers, "hidden": model.hidden_size, "lstm_c": model.cell == "lstm"}
    )
    for key, name in _run_files().items():
        if (run / name).is_file():
            meta[key] = (run / name).read_text(encoding="utf-8")
    data = model_to_onnx(model, {PREFIX + k: v for k, v in meta.items()}, opset)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, data)
    return out


@dataclass
class ExportedRun:
    """What an exported file says about its run, parsed from the `statefulrnn.*` metadata_props."""

    cell: str
    config: dict[str, Any]
    vocab_json: str | None = None
    transforms_json: str | None = None
    intervals: dict[str, Any] = field(default_factory=dict)

    @property
    def model_config(self) -> dict[str, Any]:
        return self.config["model"]

    @property
    def task(self) -> str | None:
        return self.config.get("task")

    def vocab(self) -> Vocab | None:
        """The text run's `Vocab`, or None."""
        from .text.vocab import Vocab

        return None if self.vocab_json is None else Vocab.from_json(self.vocab_json)

    def transforms(self) -> dict[str, Transform]:
        """The series run's fitted `Transform` of every series id ({} for other runs)."""
        from .series.transform import transforms_from_json

        return {} if self.transforms_json is None else transforms_from_json(self.transforms_json)

    def forecast_spec(self) -> ForecastSpec | None:
        """The series run's `ForecastSpec`, or None."""
        from .series.spec import ForecastSpec

        return ForecastSpec(**self.config["forecast"]) if "forecast" in self.config else None

    def initial_state(self, lanes: int) -> State:
        """The all-zero state of `lanes` lanes for this model."""
        m = self.model_config
        return State.zeros(self.cell, m["num_layers"], lanes, m["hidden_size"])


def parse_metadata(props: Mapping[str, str], source: str = "the ONNX file") -> ExportedRun:
    """Read the `statefulrnn.*` entries of an ONNX file's metadata (a ValueError if they are not there)."""
    meta = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{source} was not exported by statefulrnn (no {PREFIX}format={FORMAT} metadata)")
    if meta.get("version") != str(VERSION):
        raise ValueError(f"{source} has export format version {meta.get('version')}; this build reads {VERSION}")
    try:
        intervals = json.loads(meta["intervals"]).get("series", {}) if "intervals" in meta else {}
        return ExportedRun(
            meta["cell"], json.loads(meta["config"]), meta.get("vocab"), meta.get("transforms"), intervals
        )
    except (KeyError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{source} has damaged statefulrnn metadata ({e})") from None


def read_metadata(path: str | Path) -> ExportedRun:
    """The run information stored in an exported .onnx file (needs the `onnx` package)."""
    model = _require_onnx().load(str(path), load_external_data=False)
    return parse_metadata({p.key: p.value for p in model.metadata_props}, str(path))


def _run_files() -> dict[str, str]:
    return {"vocab": VOCAB, "transforms": TRANSFORMS, "intervals": INTERVALS}


def _cpu_float_copy(model: SequenceModel) -> SequenceModel:
    copy = SequenceModel(**model.config)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return copy.eval()


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install 'statefulrnn[onnx]'") from None
    return onnx


def _finish(data: bytes, metadata: Mapping[str, str], layers: int, hidden: int) -> bytes:
    """Give the state outputs their (layers, lanes, hidden) shape, which the exporter loses after an
    ONNX Loop (the scan cells), and attach `metadata`."""
    onnx = _require_onnx()
    proto = onnx.load_from_string(data)
    for output in proto.graph.output:
        if output.name in OUTPUTS[1:]:
            dims = output.type.tensor_type.shape.dim
            dims[0].dim_value, dims[2].dim_value = layers, hidden
    if metadata:
        proto.producer_name = "statefulrnn"
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()
