"""Keras import: real Keras 3 models (torch backend, no TensorFlow) saved as .keras, imported, and run
statefully over a multi-window stream against Keras' own stateful layers; unsupported models refused."""

from __future__ import annotations

import argparse
import os
import zipfile

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no TensorFlow needed

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from statefulrnn.cli.export import add_import_keras_command  # noqa: E402
from statefulrnn.engines import select_engine  # noqa: E402
from statefulrnn.keras_import import import_keras  # noqa: E402
from statefulrnn.runs import load_model  # noqa: E402
from statefulrnn.text import Vocab  # noqa: E402
from statefulrnn.text.lm import load_text_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
L = keras.layers
TOL = 1e-5
VOCAB, FEATURES, UNITS, OUTPUTS, LANES = 9, 3, 6, 5, 3
WINDOWS = (5, 1, 8, 2, 1)
CASES = {
    # cell: (token input, head, last layer returns sequences, head wrapped in TimeDistributed)
    "LSTM": (True, "softmax", True, False),
    "GRU": (False, None, True, True),
    "SimpleRNN": (True, None, False, False),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def _keras_model(cell: str, batch: int | None = None, seed: int = 0) -> keras.Sequential:
    """Embedding/Input -> 2 stacked `cell` layers (Dropout between) -> Dense; stateful when `batch` is given."""
    tokens, activation, last_sequences, wrapped = CASES[cell]
    rnn = getattr(L, cell)
    stateful = batch is not None
    shape = (batch, None) if tokens else (batch, None, FEATURES)
    head = L.Dense(OUTPUTS, activation=activation)
    layers = [
        keras.Input(batch_shape=shape, dtype="int32" if tokens else "float32"),
        *([L.Embedding(VOCAB, 4)] if tokens else []),
        rnn(UNITS, return_sequences=True, stateful=stateful),
        L.Dropout(0.3),
        rnn(UNITS, return_sequences=last_sequences, stateful=stateful),
        L.TimeDistributed(head) if wrapped else head,
    ]
    model = keras.Sequential(layers)
    if not stateful:
        rng = np.random.default_rng(seed)  # non-zero biases, so that the bias mapping is tested too
        model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _windows(tokens: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    for steps in WINDOWS:
        if tokens:
            yield rng.integers(0, VOCAB, (LANES, steps)).astype(np.int32)
        else:
            yield rng.normal(size=(LANES, steps, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("cell", list(CASES))
def test_imported_model_matches_keras_stateful_layers(tmp_path, cell):
    tokens, activation, last_sequences, _ = CASES[cell]
    original = _keras_model(cell)
    original.save(tmp_path / "model.keras")
    summary = import_keras(tmp_path / "model.keras", tmp_path / "run")
    assert summary["task"] == "imported" and summary["head_activation"] == (activation or "linear")
    model, config = load_model(tmp_path / "run")
    assert model.cell == {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}[cell] and model.num_layers == 2
    assert config["source"]["format"] == "keras"

    stateful = _keras_model(cell, batch=LANES)
    stateful.set_weights(original.get_weights())
    state = None
    for x in _windows(tokens):
        expected = keras.ops.convert_to_numpy(stateful(x))
        with torch.no_grad():
            y, state = model(torch.from_numpy(x).long() if tokens else torch.from_numpy(x), state)
        y = torch.softmax(y, -1) if activation == "softmax" else y
        y = y if last_sequences else y[:, -1]
        assert np.abs(y.numpy() - expected).max() <= TOL


def test_imported_text_run_loads_and_exports(tmp_path):
    _keras_model("LSTM").save(tmp_path / "lm.keras")
    vocab = Vocab("char", ("<unk>", *"abcdefgh"))
    vocab.save(tmp_path / "vocab.json")
    assert import_keras(tmp_path / "lm.keras", tmp_path / "run", vocab=tmp_path / "vocab.json")["task"] == "text"
    model, loaded, _ = load_text_run(tmp_path / "run", "cpu")
    assert loaded == vocab
    onnx_engine, x = select_engine("onnx", tmp_path / "run"), torch.randint(0, VOCAB, (2, 7))
    y, _ = onnx_engine.step(onnx_engine.initial_state(2), x)
    with torch.no_grad():
        assert (y - model(x)[0]).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="has 5 tokens but the Keras Embedding has 9"):
        import_keras(tmp_path / "lm.keras", tmp_path / "bad", vocab=Vocab("char", ("<unk>", *"abcd")))


def _save(layers, path):
    keras.Sequential(layers).save(path)
    return path


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([keras.Input((None, 2)), L.Bidirectional(L.LSTM(4, return_sequences=True)), L.Dense(1)], "Bidirectional"),
        ([keras.Input((None, 2)), L.Conv1D(4, 3), L.LSTM(4), L.Dense(1)], "Conv1D -> LSTM -> Dense"),
        ([keras.Input((None, 2)), L.LSTM(4, return_sequences=True)], "supported: a Sequential model"),
        ([keras.Input((None, 2)), L.GRU(4, reset_after=False), L.Dense(1)], "reset_after=False"),
        ([keras.Input((None, 2)), L.LSTM(4, return_sequences=True), L.GRU(4), L.Dense(1)], "one kind with one width"),
        ([keras.Input((None, 2)), L.LSTM(4, return_sequences=True), L.LSTM(5), L.Dense(1)], "one kind with one width"),
        ([keras.Input((None,)), L.Embedding(5, 3, mask_zero=True), L.LSTM(4), L.Dense(5)], "mask_zero"),
        ([keras.Input((None, 2)), L.SimpleRNN(4, activation="relu"), L.Dense(1)], "activation='tanh'"),
        ([keras.Input((None, 2)), L.LSTM(4), L.Dense(1, activation="sigmoid")], "linear or softmax"),
    ],
)
def test_unsupported_models_are_refused_clearly(tmp_path, layers, message):
    path = _save(layers, tmp_path / "m.keras")
    with pytest.raises(ValueError, match=message):
        import_keras(path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_not_a_keras_file(tmp_path):
    (tmp_path / "x.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a Keras 3 .keras file"):
        import_keras(tmp_path / "x.keras", tmp_path / "run")
    with zipfile.ZipFile(tmp_path / "y.keras", "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="not a Keras 3 .keras file"):
        import_keras(tmp_path / "y.keras", tmp_path / "run")


def test_import_keras_command(tmp_path, capsys):
    _keras_model("GRU").save(tmp_path / "m.keras")
    parser = argparse.ArgumentParser()
    add_import_keras_command(parser.add_subparsers())
    args = parser.parse_args(["import-keras", str(tmp_path / "m.keras"), "--out", str(tmp_path / "run")])
    assert args.run(args) == 0
    assert "2-layer gru 6" in capsys.readouterr().out
    assert load_model(tmp_path / "run")[0].n_features == FEATURES
    with pytest.raises(ValueError, match="only a model with an Embedding takes a vocabulary"):
        import_keras(tmp_path / "m.keras", tmp_path / "run2", vocab=Vocab("char", ("<unk>", "a")))
