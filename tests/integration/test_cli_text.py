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
from safetensors import safe_open
from safetensors.torch import load_file

from statefulrnn.precision import bf16_support

TINY = ["--hidden", "16", "--layers", "1", "--embedding-dim", "8", "--lanes", "4", "--window", "16", "--quiet"]


def cli(*args: str, check: bool = True, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}  # busy CI cores: no spinning
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


PNG = b"\x89PNG\r\n\x1a\n"
RUN_FILES = {  # every file a text run directory may hold, and its format: nothing else, and no pickle
    "config.json": "json",
    "vocab.json": "json",
    "summary.json": "json",
    "metrics.jsonl": "jsonl",
    "model.safetensors": "safetensors",
    "checkpoint.safetensors": "safetensors",
    "curves.png": "png",
}


def test_the_run_directory_holds_only_safetensors_json_and_png(trained):
    names = {p.name for p in trained.iterdir()}
    assert names <= set(RUN_FILES), names - set(RUN_FILES)
    assert {"config.json", "vocab.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl"} <= names
    for name in names:
        path, kind = trained / name, RUN_FILES[name]
        assert path.is_file(), name
        if kind == "json":
            json.loads(path.read_text(encoding="utf-8"))
        elif kind == "jsonl":
            assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        elif kind == "safetensors":
            with safe_open(str(path), framework="pt") as f:
                assert list(f.keys())
                for key in f.keys():
                    f.get_tensor(key)
        else:
            assert path.read_bytes()[:8] == PNG


NO_PICKLE = """
import io, pickle, sys
from pathlib import Path
import torch

def banned(*args, **kwargs):
    raise AssertionError("a run was unpickled")

class Unpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        banned()

for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (torch.serialization, "load")):
    setattr(module, name, banned)
pickle.Unpickler = Unpickler
try:
    getattr(torch, "load")(io.BytesIO(b""))
except AssertionError:
    pass
else:
    raise SystemExit("the ban is not in force")
from statefulrnn.runs import load_checkpoint, load_model
from statefulrnn.cli import main

run, text = sys.argv[1], sys.argv[2]
load_model(Path(run), torch.device("cpu"))
load_checkpoint(Path(run) / "checkpoint.safetensors")
assert main(["eval", run, text, "--json"]) == 0
assert main(["generate", run, "--prompt", "ROMEO:", "-n", "20", "--seed", "1"]) == 0
"""


def test_loading_a_run_never_unpickles(trained, text_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", NO_PICKLE, str(trained), str(text_file)], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"bpc"' in proc.stdout and "ROMEO:" in proc.stdout


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


BF16_LSTM, _ = bf16_support("cpu", "lstm")  # what the CLI below (same environment) will find

if BF16_LSTM:

    def test_bf16_precision_trains_and_is_recorded_for_resume(tmp_path, text_file):
        run = tmp_path / "bf16"
        args = ["--out", run, *TINY, "--epochs", "1", "--precision", "bf16", "--json", "--device", "cpu"]
        summary = json.loads(cli("train", "text", text_file, *args).stdout)
        assert 0 < summary["val"]["bpc"] < 8 and summary["precision"] == "bf16"
        assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
        bad = cli("train", "text", text_file, "--out", tmp_path / "x", "--precision", "fp8", check=False)
        assert bad.returncode == 2 and "invalid choice: 'fp8'" in bad.stderr

else:  # no bf16 LSTM in oneDNN here: the CLI must refuse it in one line, not fail inside the kernel

    def test_bf16_precision_is_refused_in_one_line_on_this_cpu(tmp_path, text_file):
        line = _error(
            cli("train", "text", text_file, "--out", tmp_path / "r", *TINY, "--precision", "bf16", check=False)
        )
        assert "bf16" in line and "use --precision fp32" in line


def test_without_native_bf16_the_cli_refuses_bf16_and_auto_trains_in_fp32(tmp_path, text_file):
    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}  # oneDNN exactly as on a CPU without AVX512-BF16/AMX
    args = [*TINY, "--epochs", "1", "--device", "cpu"]
    line = _error(cli("train", "text", text_file, "--out", tmp_path / "r", *args, "--precision", "bf16",
                      check=False, env=avx2))  # fmt: skip
    assert "primitive descriptor" in line and "use --precision fp32" in line
    run = tmp_path / "auto"
    summary = json.loads(cli("train", "text", text_file, "--out", run, *args, "--precision", "auto", "--json",
                             env=avx2).stdout)  # fmt: skip
    assert summary["precision"] == "fp32" and 0 < summary["val"]["bpc"] < 8
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "fp32"


def test_auto_precision_is_decided_once_printed_recorded_and_kept_on_resume(tmp_path, text_file):
    run = tmp_path / "auto"
    args = ["--out", run, *TINY[:-1], "--epochs", "1", "--precision", "auto", "--device", "cpu"]
    first = cli("train", "text", text_file, *args)
    chosen = json.loads((run / "config.json").read_text())["train"]["precision"]
    assert chosen in ("fp32", "bf16") and f"precision auto: {chosen} (" in first.stderr
    summary = json.loads(cli("train", "text", "--out", run, "--resume", "--epochs", "2", "--quiet", "--json").stdout)
    assert summary["precision"] == chosen and summary["epochs"] == 2
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == chosen


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


def test_eval_every_evaluates_within_the_epoch_and_can_change_on_resume(tmp_path, text_file):
    run = tmp_path / "run"
    cli("train", "text", text_file, "--out", run, *TINY, "--epochs", "1", "--eval-every", "0.001s")

    def kinds() -> list[str]:
        return [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    first = kinds()
    assert first.count("eval") >= 2 and first.count("epoch") == 1
    cli("train", "text", "--out", run, "--resume", "--epochs", "2", "--eval-every", "1h")
    assert kinds()[: len(first)] == first and kinds()[len(first) :].count("eval") == 0
    assert json.loads((run / "config.json").read_text())["train"]["eval_every"] == 3600
    assert "eval_every" in _error(
        cli("train", "text", text_file, "--out", tmp_path / "r", "--eval-every", "0s", check=False)
    )


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
