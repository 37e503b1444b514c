"""Import a Keras 3 `.keras` model into a statefulrnn run, without TensorFlow.

A `.keras` file is a zip of config.json (the architecture) and model.weights.h5 (the weights, read
with h5py). Supported: a Sequential model of an optional Embedding, then one or more stacked LSTM,
GRU or SimpleRNN layers of one kind and width, then one Dense (optionally in TimeDistributed), with
Dropout anywhere (it does nothing at inference). Weight mapping, Keras -> PyTorch:

    kernel (in, G*u)            -> weight_ih_l{k} (G*u, in): transposed
    recurrent_kernel (u, G*u)   -> weight_hh_l{k} (G*u, u):  transposed
    LSTM gates  i, f, c, o      -> i, f, g, o                (same order)
    GRU gates   z, r, h         -> r, z, n                   (first two blocks swapped)
    LSTM/SimpleRNN bias (G*u,)  -> bias_ih = bias, bias_hh = 0
    GRU bias (2, 3u), reset_after=True -> bias_ih = bias[0], bias_hh = bias[1] (each reordered)
    Dense kernel (u, out), bias -> head.weight (out, u), head.bias

Keras GRU with reset_after=False applies the reset gate before the recurrent matmul, which PyTorch's
GRU cannot express: it is refused, as are activations other than tanh/sigmoid and masking.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs as ckpt
from .model import SequenceModel
from .text import Vocab

RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
SUPPORTED = (
    "a Sequential model of [InputLayer] -> [Embedding] -> LSTM | GRU (reset_after=True) | SimpleRNN "
    "(one or more, same kind and units, tanh/sigmoid activations) -> Dense or TimeDistributed(Dense) "
    "(linear or softmax), with Dropout anywhere"
)
_IGNORED = ("InputLayer", "Dropout")
HEADS = ("linear", "softmax")


@dataclass
class _Layer:
    kind: str
    name: str
    key: str  # its group in model.weights.h5
    config: dict[str, Any]


def read_keras(path: str | Path) -> tuple[dict[str, Any], dict[str, list[np.ndarray]], dict[str, Any]]:
    """The model config, the weights of each layer (by their group in the .h5 file) and the file metadata."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            metadata = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
            weights = z.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is not a Keras 3 .keras file (a zip with config.json and model.weights.h5): {e}"
        ) from None
    try:
        import h5py
    except ImportError:
        raise ValueError("reading .keras weights needs h5py: pip install 'statefulrnn[keras]'") from None
    with h5py.File(io.BytesIO(weights), "r") as h5:
        layers = h5["layers"] if "layers" in h5 else {}
        arrays = {name: _vars(layers[name]) for name in layers}
    return config, arrays, metadata


def _vars(group: Any) -> list[np.ndarray]:
    """The variables of one layer: `vars/0, 1, ...` of the layer itself, its RNN cell or its wrapped layer."""
    for sub in ("vars", "cell/vars", "layer/vars"):
        if sub in group and len(group[sub]):
            g = group[sub]
            return [np.asarray(g[str(i)], dtype=np.float32) for i in range(len(g))]
    return []


def _layers(config: dict[str, Any]) -> list[_Layer]:
    if config.get("class_name") != "Sequential":
        raise ValueError(f"a {config.get('class_name')} model is not supported; supported: {SUPPORTED}")
    out, used = [], {}
    for spec in config["config"]["layers"]:
        kind, cfg = spec["class_name"], spec["config"]
        if kind == "InputLayer":
            continue
        key = _unique(_snake(kind), used)
        if kind == "TimeDistributed" and cfg["layer"]["class_name"] == "Dense":
            kind, cfg = "Dense", {**cfg["layer"]["config"], "name": cfg["name"]}
        out.append(_Layer(kind, cfg["name"], key, cfg))
    return [layer for layer in out if layer.kind not in _IGNORED]


def _snake(name: str) -> str:
    """Keras' `to_snake_case`: weights are stored under the snake-cased class name, not the layer name."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _plan(layers: list[_Layer]) -> tuple[_Layer | None, list[_Layer], _Layer]:
    """Split the layers into embedding, recurrent stack and head, refusing anything else."""
    kinds = [layer.kind for layer in layers]
    embedding = layers.pop(0) if kinds[:1] == ["Embedding"] else None
    stack = []
    while layers and layers[0].kind in RECURRENT:
        stack.append(layers.pop(0))
    if not stack or len(layers) != 1 or layers[0].kind != "Dense":
        found = " -> ".join(kinds) or "no layers"
        raise ValueError(f"unsupported Keras model ({found}); supported: {SUPPORTED}")
    return embedding, stack, layers[0]


def _check(embedding: _Layer | None, stack: list[_Layer], head: _Layer) -> None:
    first = stack[0]
    if embedding is not None and embedding.config.get("mask_zero"):
        raise ValueError(f"Embedding {embedding.name!r} has mask_zero=True: masked steps are not supported")
    for k, layer in enumerate(stack):
        c = layer.config
        if (layer.kind, c["units"]) != (first.kind, first.config["units"]):
            raise ValueError(
                f"recurrent layers must all be one kind with one width; {layer.name!r} is {layer.kind}({c['units']}) "
                f"after {first.kind}({first.config['units']})"
            )
        if c.get("activation", "tanh") != "tanh" or c.get("recurrent_activation", "sigmoid") != "sigmoid":
            raise ValueError(f"{layer.name!r} must use activation='tanh' and recurrent_activation='sigmoid'")
        if c.get("go_backwards"):
            raise ValueError(f"{layer.name!r} has go_backwards=True: only forward recurrent layers are supported")
        if layer.kind == "GRU" and not c.get("reset_after", True):
            raise ValueError(
                f"GRU {layer.name!r} has reset_after=False, which PyTorch's GRU cannot express; retrain with "
                "reset_after=True (the Keras 3 default)"
            )
        if k < len(stack) - 1 and not c.get("return_sequences"):
            raise ValueError(f"{layer.name!r} feeds another recurrent layer and needs return_sequences=True")
    if head.config.get("activation", "linear") not in HEADS:
        raise ValueError(f"Dense {head.name!r} has activation {head.config['activation']!r}; use linear or softmax")


def _gates(w: np.ndarray, kind: str) -> np.ndarray:
    """Reorder gate blocks along the first axis from Keras' order to PyTorch's (GRU: z, r, h -> r, z, n)."""
    if kind != "GRU":
        return w
    z, r, h = np.split(w, 3, axis=0)
    return np.concatenate([r, z, h], axis=0)


def _recurrent_weights(layer: _Layer, arrays: list[np.ndarray], k: int) -> dict[str, np.ndarray]:
    kernel, recurrent = arrays[0], arrays[1]
    rows = kernel.shape[1]
    bias = arrays[2] if len(arrays) > 2 else np.zeros(rows, np.float32)
    if layer.kind == "GRU":
        bias = bias.reshape(-1, rows)
        b_ih, b_hh = bias[0], bias[1] if len(bias) > 1 else np.zeros(rows, np.float32)
    else:
        b_ih, b_hh = bias, np.zeros(rows, np.float32)
    return {
        f"rnn.weight_ih_l{k}": _gates(kernel.T, layer.kind),
        f"rnn.weight_hh_l{k}": _gates(recurrent.T, layer.kind),
        f"rnn.bias_ih_l{k}": _gates(b_ih, layer.kind),
        f"rnn.bias_hh_l{k}": _gates(b_hh, layer.kind),
    }


def keras_to_model(
    config: dict[str, Any], weights: dict[str, list[np.ndarray]]
) -> tuple[SequenceModel, dict[str, Any]]:
    """A `SequenceModel` with the weights of a supported Keras model, and a description of the mapping."""
    embedding, stack, head = _plan(_layers(config))
    _check(embedding, stack, head)
    missing = [layer.name for layer in (embedding, *stack, head) if layer is not None and not weights.get(layer.key)]
    if missing:
        raise ValueError(f"model.weights.h5 holds no weights for layer(s) {', '.join(missing)}")
    cell, units = RECURRENT[stack[0].kind], stack[0].config["units"]
    dense = weights[head.key]
    args: dict[str, Any] = {
        "cell": cell,
        "hidden_size": units,
        "num_layers": len(stack),
        "n_outputs": dense[0].shape[1],
    }
    state: dict[str, np.ndarray] = {}
    if embedding is not None:
        table = weights[embedding.key][0]
        args.update(vocab_size=table.shape[0], embedding_dim=table.shape[1])
        state["embedding.weight"] = table
    else:
        args["n_features"] = weights[stack[0].key][0].shape[0]
    for k, layer in enumerate(stack):
        state.update(_recurrent_weights(layer, weights[layer.key], k))
    state["head.weight"] = dense[0].T
    state["head.bias"] = dense[1] if len(dense) > 1 else np.zeros(dense[0].shape[1], np.float32)
    model = SequenceModel(**args)
    try:
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    except RuntimeError as e:
        raise ValueError(f"the Keras weights do not fit the layers' config: {str(e).splitlines()[-1]}") from None
    info = {
        "layers": [f"{layer.kind}:{layer.name}" for layer in (embedding, *stack, head) if layer is not None],
        "head_activation": head.config.get("activation", "linear"),
        "last_return_sequences": bool(stack[-1].config.get("return_sequences")),
    }
    return model.eval(), info


def import_keras(path: str | Path, out: str | Path, *, vocab: Vocab | str | Path | None = None) -> dict[str, Any]:
    """Write the Keras model at `path` as a statefulrnn run directory `out`; returns a summary.

    With a `vocab` (a `Vocab` or a statefulrnn vocab.json; id i = Keras token i) an Embedding model
    becomes a text run (evaluate, generate, serve); otherwise the run's task is "imported", which
    loads, exports and steps through the engines. The outputs are the Dense layer's pre-activation:
    logits where Keras applies softmax.
    """
    path, out = Path(path), Path(out)
    config, weights, metadata = read_keras(path)
    model, info = keras_to_model(config, weights)
    if vocab is not None and not isinstance(vocab, Vocab):
        vocab = Vocab.load(vocab)
    if vocab is not None and model.vocab_size is None:
        raise ValueError("only a model with an Embedding takes a vocabulary; this one reads real-valued features")
    if vocab is not None and len(vocab) != model.vocab_size:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens but the Keras Embedding has {model.vocab_size}")
    task = "text" if vocab is not None else "imported"
    source = {"format": "keras", "file": str(path.resolve()), "keras_version": metadata.get("keras_version"), **info}
    ckpt.save_model(out, model, {"task": task, "source": source})
    if vocab is not None:
        from .runs import VOCAB

        vocab.save(out / VOCAB)
    return {"run": str(out), "task": task, "model": model.config, **source}
