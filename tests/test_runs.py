"""The run directory: load_run for each task, clear errors for damaged runs, training without a directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from statefulrnn import files, runs
from statefulrnn.model import SequenceModel
from statefulrnn.series import ForecastSpec, Series, SeriesSet, train_series
from statefulrnn.text import train_text
from statefulrnn.train_config import TrainConfig

TINY = {"hidden_size": 8, "num_layers": 1}


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("abcabcabd\n" * 200, encoding="utf-8")
    return path


def _series(n: int = 160) -> SeriesSet:
    t = np.arange(n)
    times = np.datetime64("2024-01-01T00") + t.astype("timedelta64[h]")
    a, b = 5 + np.sin(2 * np.pi * t / 8), 3 + np.cos(2 * np.pi * t / 8)
    return SeriesSet((Series("a", times, a, freq="h"), Series("b", times, b, freq="h")))


def test_a_text_run_trained_into_a_directory_loads_back_the_same_model(book, tmp_path, one_thread):
    trained = train_text(book, tmp_path / "run", model_args=TINY, config=TrainConfig(lanes=4, window=16, epochs=2))
    loaded = runs.load_run(tmp_path / "run", task="text")
    assert loaded.task == "text" and loaded.vocab.tokens == trained.vocab.tokens
    assert loaded.config == json.loads(json.dumps(trained.config))
    assert all(torch.equal(v, trained.model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    assert loaded.summary["best_epoch"] == trained.summary["best_epoch"]
    assert not loaded.model.training


def test_training_without_a_directory_writes_nothing_and_returns_the_run(book, tmp_path, one_thread):
    before = set(tmp_path.iterdir())
    run = train_text(book, model_args=TINY, config=TrainConfig(lanes=4, window=16, epochs=1), progress=False)
    assert run.path is None and run.summary["run"] is None and set(tmp_path.iterdir()) == before
    spec = ForecastSpec(horizon=4, season=8, test_windows=2, val_windows=2)
    series = train_series(_series(), None, spec, model_args=TINY, config=TrainConfig(lanes=4, window=16, epochs=1))
    assert series.path is None and set(series.intervals) == {"a", "b"} and set(series.transforms) == {"a", "b"}
    assert series.summary["backtest"]["mean"]["model"]["mase"] > 0
    with pytest.raises(ValueError, match="resume needs the run directory"):
        train_text(book, resume=True)


def test_a_series_run_loads_its_spec_transforms_and_intervals(tmp_path, one_thread):
    spec = ForecastSpec(horizon=4, season=8, test_windows=2, val_windows=2)
    trained = train_series(_series(), tmp_path / "run", spec, model_args=TINY, config=TrainConfig(lanes=4, epochs=1))
    loaded = runs.load_run(tmp_path / "run")
    assert loaded.task == "series" and loaded.spec == spec
    assert set(loaded.transforms) == {"a", "b"} and loaded.intervals == trained.intervals


def test_load_run_refuses_the_wrong_task_and_damaged_runs_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        runs.load_run(tmp_path / "nothing")
    run = tmp_path / "run"
    runs.save_model(run, SequenceModel(vocab_size=5, **TINY), {"task": "text"})
    with pytest.raises(ValueError, match="vocab.json"):
        runs.load_run(run)
    with pytest.raises(ValueError, match="is a text run, not a series run"):
        runs.load_run(run, task="series")
    (run / runs.CONFIG).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        runs.load_run(run)
    runs.save_model(run, SequenceModel(n_features=3, n_outputs=4, **TINY), {"task": "series", "forecast": {}})
    with pytest.raises(ValueError, match="transforms.json is missing"):
        runs.load_run(run)
    runs.save_model(run, SequenceModel(vocab_size=5, **TINY), {"task": "keras"})
    with pytest.raises(ValueError, match="only text and series runs"):
        runs.load_run(run)
    (run / runs.WEIGHTS).write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        runs.load_run(run)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    files.atomic_write(path, b"old")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, b"new")
    assert path.read_bytes() == b"old" and not (tmp_path / "f.json.tmp").exists()
