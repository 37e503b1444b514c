"""ONNX export and the engines: ONNX Runtime equals PyTorch over a stream with carried state, metadata
round trips, a forecaster from the .onnx file alone, engine selection and the export command."""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from dataclasses import asdict

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from statefulrnn import runs as ckpt
from statefulrnn.cli.export import add_export_command
from statefulrnn.engines import onnx_available, select_engine
from statefulrnn.engines.onnx import OnnxEngine
from statefulrnn.engines.torch import TorchEngine, use_onednn
from statefulrnn.export import export_onnx, parse_metadata, read_metadata
from statefulrnn.model import SequenceModel
from statefulrnn.scan import SCAN_CELLS
from statefulrnn.series import ForecastSpec, Series, SeriesSet, forecast_run, model_inputs, n_inputs
from statefulrnn.series.transform import transforms_to_json
from statefulrnn.state import CELLS
from statefulrnn.text import Vocab

TOL = 1e-5
STEPS = (1, 5, 1, 1, 12, 3)  # calls of the stream: steps per call


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def _text_run(path, cell: str, seed: int = 0) -> SequenceModel:
    torch.manual_seed(seed)
    vocab = Vocab("char", ("<unk>", *"abcdefg"))
    model = SequenceModel(cell, vocab_size=len(vocab), embedding_dim=5, hidden_size=12, num_layers=2).eval()
    ckpt.save_model(path, model, {"task": "text"})
    vocab.save(path / "vocab.json")
    return model


def _stream_errors(engine, model: SequenceModel, lanes: int, tokens: bool, seed: int = 0) -> float:
    """Largest difference between `engine` and the model itself over calls of several lengths, state carried."""
    gen = torch.Generator().manual_seed(seed)
    ours, ref = engine.initial_state(lanes), model.initial_state(lanes)
    worst = 0.0
    for steps in STEPS:
        if tokens:
            x = torch.randint(0, model.vocab_size, (lanes, steps), generator=gen)
        else:
            x = torch.randn(lanes, steps, model.n_features, generator=gen)
        y, ours = engine.step(ours, x)
        with torch.no_grad():
            y_ref, ref = model(x, ref)
        assert y.dtype == torch.float32 and y.shape == y_ref.shape
        worst = max(worst, (y - y_ref).abs().max().item(), (ours.h - ref.h).abs().max().item())
        if ref.c is not None:
            worst = max(worst, (ours.c - ref.c).abs().max().item())
    return worst


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_runtime_matches_pytorch_over_a_stream(tmp_path, cell):
    model = _text_run(tmp_path / "run", cell)
    out = export_onnx(tmp_path / "run", tmp_path / "model.onnx")
    engine = select_engine("onnx", out)
    assert isinstance(engine, OnnxEngine)
    for lanes in (3, 1, 17):  # the number of streams is dynamic
        assert _stream_errors(engine, model, lanes, tokens=True, seed=lanes) <= TOL


@pytest.mark.parametrize("cell", CELLS)
def test_feature_models_export_and_torch_engine_matches(cell):
    torch.manual_seed(1)
    model = SequenceModel(cell, n_features=3, n_outputs=2, hidden_size=10, num_layers=2).eval()
    assert _stream_errors(select_engine("onnx", model), model, 4, tokens=False) <= TOL
    for onednn in (None, True, False):
        assert _stream_errors(TorchEngine(model, onednn=onednn), model, 4, tokens=False) <= TOL


def test_exported_graph_has_explicit_state_and_dynamic_axes(tmp_path):
    _text_run(tmp_path / "run", "lstm")
    proto = onnx.load(str(export_onnx(tmp_path / "run", tmp_path / "m.onnx")))
    onnx.checker.check_model(proto)
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.input, *proto.graph.output]
    }
    assert shapes["inputs"] == ["lanes", "steps"]
    assert shapes["h"] == shapes["c"] == shapes["h_out"] == shapes["c_out"] == [2, "lanes", 12]
    assert shapes["outputs"] == ["lanes", "steps", 8]
    assert any(n.op_type == "LSTM" for n in proto.graph.node)  # ONNX Runtime's fused kernel, not a loop


@pytest.mark.parametrize("cell", SCAN_CELLS)
def test_scan_cells_export_a_loop_with_explicit_state(tmp_path, cell):
    """minGRU/minLSTM export as one ONNX Loop per layer over a dynamic number of steps (h only, no c),
    and a long call (warming a stream on its history) matches PyTorch's parallel scan."""
    model = _text_run(tmp_path / "run", cell)
    proto = onnx.load(str(export_onnx(tmp_path / "run", tmp_path / "m.onnx")))
    onnx.checker.check_model(proto)
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*proto.graph.input, *proto.graph.output]
    }
    assert set(shapes) == {"inputs", "h", "outputs", "h_out"}
    assert shapes["inputs"] == ["lanes", "steps"] and shapes["h"] == shapes["h_out"] == [2, "lanes", 12]
    assert sum(n.op_type == "Loop" for n in proto.graph.node) == 2
    engine = select_engine("onnx", tmp_path / "m.onnx")
    x = torch.randint(0, model.vocab_size, (3, 400), generator=torch.Generator().manual_seed(0))
    state = model.initial_state(3)._map(lambda t: torch.rand(t.shape))
    y, after = engine.step(state, x)
    with torch.no_grad():
        y_ref, ref = model(x, state)
    assert float((y - y_ref).abs().max()) <= TOL and float((after.h - ref.h).abs().max()) <= TOL


def test_text_metadata_round_trip(tmp_path):
    model = _text_run(tmp_path / "run", "gru")
    meta = read_metadata(export_onnx(tmp_path / "run", tmp_path / "m.onnx"))
    assert meta.cell == "gru" and meta.task == "text"
    assert meta.config == ckpt.read_config(tmp_path / "run")
    assert meta.model_config == model.config
    assert meta.vocab() == Vocab.load(tmp_path / "run" / "vocab.json")
    assert meta.transforms() == {} and meta.forecast_spec() is None
    state = meta.initial_state(5)
    assert state.kind == "gru" and tuple(state.h.shape) == (2, 5, 12)


def test_foreign_metadata_is_refused():
    with pytest.raises(ValueError, match="not exported by statefulrnn"):
        parse_metadata({"producer": "someone else"})
    with pytest.raises(ValueError, match="version 99"):
        parse_metadata({"statefulrnn.format": "statefulrnn-onnx", "statefulrnn.version": "99"})


def _series(n: int = 160) -> Series:
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 8) + 0.02 * t + np.random.default_rng(0).normal(0, 0.2, n)
    return Series("s0", pd.date_range("2024-01-01", periods=n, freq="h").to_numpy(), values, freq="h")


def test_series_forecaster_needs_only_the_onnx_file(tmp_path):
    spec = ForecastSpec(horizon=4, season=8, diff=1, scale="standard")
    series = _series()
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = SequenceModel("lstm", n_features=n_inputs(spec), n_outputs=spec.horizon, hidden_size=8, num_layers=1)
    settings = {"task": "series", "forecast": asdict(spec), "data": {"source": None, "read": {}, "series": 1}}
    ckpt.save_model(run, model, {**settings, "train": {"window": 16, "mode": "stateful"}})
    transform = spec.transform().fit(series.values[:120])
    (run / "transforms.json").write_text(transforms_to_json({"s0": transform}))
    band = [[-0.5 - h, 0.5 + h] for h in range(spec.horizon)]
    ckpt.write_json(run / "intervals.json", {"coverage": 0.8, "series": {"s0": band}})
    expected = forecast_run(run, SeriesSet((series,)), device="cpu")
    onnx_file = export_onnx(run, tmp_path / "forecaster.onnx")
    shutil.rmtree(run)

    engine = select_engine("onnx", onnx_file)
    meta = engine.run
    spec2, t = meta.forecast_spec(), meta.transforms()["s0"]
    assert spec2 == spec and t.to_dict() == transform.to_dict() and meta.intervals == {"s0": band}
    inputs, _ = model_inputs(series, t, spec2)
    z, _ = engine.step(engine.initial_state(1), torch.from_numpy(inputs[None]).float())
    forecast = t.inverse_forecast(z[0, -1].double().numpy(), series.values)
    np.testing.assert_allclose(forecast, expected["forecast"].to_numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(forecast + np.asarray(band)[:, 0], expected["lo"].to_numpy(), rtol=1e-5, atol=1e-4)


def test_select_engine(tmp_path):
    model = _text_run(tmp_path / "run", "rnn")
    assert select_engine("torch", tmp_path / "run").name == "torch"
    assert select_engine("auto", model).name == ("onnx" if onnx_available() else "torch")
    with pytest.raises(ValueError, match="not one of"):
        select_engine("tensorrt", model)
    with pytest.raises(ValueError, match="runs on the CPU"):
        select_engine("onnx", model, "cuda")
    out = export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="torch engine needs a run directory"):
        select_engine("torch", out)
    with pytest.raises(ValueError, match="does not exist"):
        select_engine("onnx", tmp_path / "missing.onnx")


def test_engines_pass_empty_calls_through():
    model = SequenceModel("lstm", vocab_size=5, hidden_size=4, num_layers=1).eval()
    for engine in (TorchEngine(model), select_engine("onnx", model)):
        state = engine.initial_state(2)
        y, after = engine.step(state, torch.zeros(2, 0, dtype=torch.long))
        assert y.shape == (2, 0, 5) and after is state


def test_threads_stepping_at_once_leave_the_process_wide_onednn_flag_as_it_was():
    """Two threads inside the oneDNN toggle at once: the second saw the first's setting as the one to
    restore, so oneDNN stayed off for the whole process. Now the toggles take turns."""
    model = SequenceModel("lstm", vocab_size=7, hidden_size=8, num_layers=1, embedding_dim=4).eval()
    inner, meet = model.forward, threading.Barrier(2, timeout=1.0)

    def forward(*args, **kwargs):
        try:
            meet.wait()  # both threads inside the block, if the block lets them
        except threading.BrokenBarrierError:
            pass
        if threading.current_thread().name == "last":
            time.sleep(0.05)  # the second thread leaves the block last
        return inner(*args, **kwargs)

    model.forward = forward
    engine = TorchEngine(model, onednn=False)
    x = torch.zeros(1, 1, dtype=torch.long)
    assert torch.backends.mkldnn.enabled
    first = threading.Thread(target=engine.step, args=(engine.initial_state(1), x), name="first")
    last = threading.Thread(target=engine.step, args=(engine.initial_state(1), x), name="last")
    first.start()
    time.sleep(0.05)
    last.start()
    first.join()
    last.join()
    assert torch.backends.mkldnn.enabled


def test_onednn_is_off_for_small_calls_only():
    assert not use_onednn(1, 1) and not use_onednn(64, 1) and not use_onednn(16, 4)
    assert use_onednn(1024, 1) and use_onednn(16, 16) and use_onednn(1, 64)


def test_export_command(tmp_path, capsys):
    _text_run(tmp_path / "run", "lstm")
    parser = argparse.ArgumentParser()
    add_export_command(parser.add_subparsers())
    args = parser.parse_args(["export", str(tmp_path / "run"), "--out", str(tmp_path / "o" / "m.onnx"), "--json"])
    assert args.run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "onnx" and (tmp_path / "o" / "m.onnx").stat().st_size == summary["bytes"]
    with pytest.raises(SystemExit):
        parser.parse_args(["export", str(tmp_path / "run"), "--format", "tflite", "--out", "x"])


@pytest.mark.parametrize("hidden", [5, 12])  # tied without, and with, the hidden -> embedding projection
def test_regularised_tied_model_exports_and_matches_torch_in_eval(tmp_path, hidden):
    torch.manual_seed(0)
    vocab = Vocab("char", ("<unk>", *"abcdefg"))
    kw = {"locked_dropout": 0.3, "weight_drop": 0.3, "embedding_dropout": 0.1, "tie_weights": True}
    model = SequenceModel("lstm", vocab_size=len(vocab), embedding_dim=5, hidden_size=hidden, **kw).eval()
    ckpt.save_model(tmp_path / "run", model, {"task": "text"})
    vocab.save(tmp_path / "run" / "vocab.json")
    engine = select_engine("onnx", export_onnx(tmp_path / "run", tmp_path / "m.onnx"))
    assert _stream_errors(engine, model, 3, tokens=True) <= TOL
