"""The real `statefulrnn` CLI in subprocesses: train, eval, generate, resume after SIGKILL, user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

TINY = ["--hidden", "16", "--layers", "1", "--embedding-dim", "8", "--lanes", "4", "--window", "16", "--quiet"]


def cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # busy CI cores: no spinning threads
    proc = subprocess.run(
        [sys.executable, "-m", "statefulrnn", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"statefulrnn {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def play(n_lines: int = 160) -> str:
    names = ["ROMEO", "JULIET", "NURSE", "FRIAR"]
    words = "the love of night and day doth make my heart to sing thee".split()
    lines = []
    for i in range(n_lines):
        lines.append(f"{names[i % 4]}:\n{' '.join(words[(i * 3 + j) % len(words)] for j in range(7))}.\n")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "play.txt"
    path.write_text(play(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    out = cli("train", "text", text_file, "--out", run, *TINY, "--epochs", "2", "--json")
    summary = json.loads(out.stdout)
    assert summary["val"]["bpc"] > 0 and summary["steps"] > 0
    return run


def test_train_writes_a_complete_run_directory(trained):
    for name in ("config.json", "vocab.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl"):
        assert (trained / name).is_file(), name
    assert (trained / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]
    assert not any(b"pickle" in p.read_bytes()[:200] for p in trained.iterdir() if p.is_file())


def test_eval_reports_bits_per_character(trained, text_file):
    metrics = json.loads(cli("eval", trained, text_file, "--json").stdout)
    assert 0 < metrics["bpc"] < 8 and 0 <= metrics["accuracy"] <= 1
    assert metrics["bpc"] == pytest.approx(metrics["loss"] / 0.6931471805599453)


def test_generate_is_reproducible_with_a_seed(trained):
    a = cli("generate", trained, "--prompt", "ROMEO:", "-n", "60", "--seed", "3").stdout
    b = cli("generate", trained, "--prompt", "ROMEO:", "-n", "60", "--seed", "3").stdout
    c = cli("generate", trained, "--prompt", "ROMEO:", "-n", "60", "--seed", "4").stdout
    assert a == b and a.startswith("ROMEO:") and len(a) >= 60
    assert a != c


def test_bf16_precision_trains_and_is_recorded_for_resume(tmp_path, text_file):
    run = tmp_path / "bf16"
    summary = json.loads(
        cli("train", "text", text_file, "--out", run, *TINY, "--epochs", "1", "--precision", "bf16", "--json").stdout
    )
    assert 0 < summary["val"]["bpc"] < 8
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
    bad = cli("train", "text", text_file, "--out", tmp_path / "x", "--precision", "fp8", check=False)
    assert bad.returncode == 2 and "invalid choice: 'fp8'" in bad.stderr


def _weights(path: Path) -> dict:
    return load_file(str(path))


def test_killed_run_resumes_to_identical_weights(tmp_path, text_file):
    args = ["--epochs", "3", "--checkpoint-every", "0", "--seed", "7", "--dropout", "0.1"]
    reference = tmp_path / "reference"
    cli("train", "text", text_file, "--out", reference, *TINY, *args)

    for kill_after in (3, 25):  # early in epoch 1, and in a later epoch
        run = tmp_path / f"killed{kill_after}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "statefulrnn", "train", "text", str(text_file), "--out", str(run), *TINY, *args,
             "--log-every", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        log = run / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and sum(1 for line in log.read_text().splitlines() if '"step"' in line) >= kill_after:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed: make it longer"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cli("train", "text", "--out", run, "--resume", "--quiet")
        for name in ("model.safetensors",):
            a, b = _weights(reference / name), _weights(run / name)
            assert a.keys() == b.keys()
            for key in a:
                assert (a[key] == b[key]).all(), f"{name}:{key} differs after kill at step {kill_after}"
        ca, cb = _weights(reference / "checkpoint.safetensors"), _weights(run / "checkpoint.safetensors")
        for key in ca:
            if key.startswith(("model.", "optimizer.", "state.")):
                assert (ca[key] == cb[key]).all(), key


def _error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("statefulrnn: error: ")
    return lines[0]


def test_missing_file_is_one_clear_line(tmp_path):
    line = _error(cli("train", "text", tmp_path / "nope.txt", "--out", tmp_path / "r", *TINY, check=False))
    assert "nope.txt" in line


def test_empty_file_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "empty" in _error(cli("train", "text", empty, "--out", tmp_path / "r", *TINY, check=False))


def test_invalid_utf8_names_the_byte_offset_and_the_flag(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(play(40).encode()[:500] + b"\xff\xfe" + play(40).encode())
    line = _error(cli("train", "text", bad, "--out", tmp_path / "r", *TINY, "--epochs", "1", check=False))
    assert "500" in line and "--replace-invalid" in line
    ok = cli("train", "text", bad, "--out", tmp_path / "r", *TINY, "--epochs", "1", "--replace-invalid")
    assert ok.returncode == 0


def test_window_longer_than_the_text_is_one_clear_line(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be, that is the question\n" * 3)
    line = _error(cli("train", "text", short, "--out", tmp_path / "r", *TINY[:-5], "--window", "500", check=False))
    assert "window" in line


def test_corrupt_checkpoint_and_weights_are_one_clear_line(tmp_path, text_file):
    run = tmp_path / "run"
    cli("train", "text", text_file, "--out", run, *TINY, "--epochs", "1")
    path = run / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    assert "checkpoint" in _error(cli("train", "text", "--out", run, "--resume", check=False))
    weights = run / "model.safetensors"
    weights.write_bytes(b"not safetensors at all")
    assert "model.safetensors" in _error(cli("eval", run, text_file, check=False))


def test_unknown_prompt_token_is_one_clear_line(trained):
    assert "vocabulary" in _error(cli("generate", trained, "--prompt", "Ω", "-n", "5", check=False))


def test_help_explains_every_option():
    out = cli("train", "text", "--help").stdout
    for option in ("--mode", "--lanes", "--window", "--burn-in", "--resume", "--seed", "--json", "--max-time"):
        assert option in out
    assert cli("--version").stdout.startswith("statefulrnn ")
