"""Data-parallel training on 2 gloo processes (torchrun and plain env:// launches of the real CLI):
same weights and validation metric as one process, resume on any number of processes, a killed rank
ends the job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import free_port

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

TINY = ["--hidden", "16", "--layers", "1", "--embedding-dim", "8", "--lanes", "4", "--window", "16"]
RUN = [*TINY, "--quiet", "--json", "--seed", "3", "--checkpoint-every", "0", "--log-every", "1"]
RUN += ["--schedule", "constant"]  # a half-budget run extended on resume decays where a whole one would not
TOKENS = 2048  # 32 steps of 4 lanes x 16 steps
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def cli(*args: object, prefix: list[str] | None = None, timeout: float = 120) -> dict:
    command = [*(prefix or [sys.executable]), "-m", "statefulrnn", *map(str, args)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    names = ["ROMEO", "JULIET", "NURSE", "FRIAR"]
    words = "the love of night and day doth make my heart to sing thee".split()
    lines = [f"{names[i % 4]}:\n{' '.join(words[(i * 3 + j) % len(words)] for j in range(7))}.\n" for i in range(160)]
    path = tmp_path_factory.mktemp("data") / "play.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, text_file) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "single"
    return run, cli("train", "text", text_file, "--out", run, *RUN, "--max-tokens", TOKENS)


def last_val(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "epoch"][-1]["val"]


def assert_same_training(a: Path, b: Path) -> None:
    """Weights, optimizer moments, lane states and the last validation metrics agree within 1e-5."""
    ca, cb = load_file(str(a / "checkpoint.safetensors")), load_file(str(b / "checkpoint.safetensors"))
    keys = [k for k in ca if k.startswith(("model.", "optimizer.", "state."))]
    assert keys and set(keys) == {k for k in cb if k.startswith(("model.", "optimizer.", "state."))}
    for k in keys:
        assert torch.allclose(ca[k].double(), cb[k].double(), rtol=0, atol=1e-5), k
    va, vb = last_val(a), last_val(b)
    assert va.keys() == vb.keys()
    for k in va:
        assert va[k] == pytest.approx(vb[k], rel=0, abs=1e-5), k


def test_two_ranks_give_the_weights_and_metric_of_one_process(single, text_file, tmp_path):
    reference, ref_summary = single
    run = tmp_path / "two"
    summary = cli("train", "text", text_file, "--out", run, *RUN, "--max-tokens", TOKENS, "--nproc", "2")
    assert summary["processes"] == 2 and ref_summary["processes"] == 1
    assert summary["steps"] == ref_summary["steps"] == TOKENS // 64
    assert summary["tokens"] == ref_summary["tokens"]
    assert_same_training(reference, run)
    assert summary["val"]["loss"] == pytest.approx(ref_summary["val"]["loss"], abs=1e-5)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref_steps = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [s["step"] for s in ref_steps]  # rank 0 logs, once per step
    for s, r in zip(steps, ref_steps):
        if s["kind"] == "step":
            assert s["loss"] == pytest.approx(r["loss"], abs=1e-5)  # the global loss, not rank 0's share


def test_a_distributed_run_resumes_on_two_processes_or_one(single, text_file, tmp_path):
    reference, _ = single
    half = tmp_path / "half"
    cli("train", "text", text_file, "--out", half, *RUN, "--max-tokens", TOKENS // 2, prefix=TORCHRUN)
    state = load_file(str(half / "checkpoint.safetensors"))["state.h"]
    assert state.shape[1] == 4 and state.abs().sum() > 0  # mid-epoch: all 4 lanes of both ranks gathered
    for nproc in (2, 1):
        run = tmp_path / f"resumed-on-{nproc}"
        shutil.copytree(half, run)
        summary = cli(
            "train", "text", "--out", run, "--resume", "--max-tokens", TOKENS, "--quiet", "--json", "--nproc", nproc
        )
        assert summary["steps"] == TOKENS // 64 and summary["processes"] == nproc
        assert_same_training(reference, run)


def wait_for_steps(run: Path, procs: list[subprocess.Popen], steps: int, timeout: float = 90) -> None:
    log, deadline = run / "metrics.jsonl", time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if log.exists() and log.read_text().count('"kind": "step"') >= steps:
            return
        time.sleep(0.05)
    raise AssertionError("the distributed run did not get going")


def test_a_killed_rank_stops_the_other_with_a_clear_error(text_file, tmp_path):
    run, port = tmp_path / "run", free_port()
    base = {
        **ENV,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "STATEFULRNN_DIST_TIMEOUT": "30",
    }
    command = [sys.executable, "-m", "statefulrnn", "train", "text", str(text_file), "--out", str(run), *RUN]
    procs = [
        subprocess.Popen(command, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]  # fmt: skip
    try:
        wait_for_steps(run, procs, 3)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        _, err = procs[0].communicate(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode != 0
    assert time.time() - killed < 45
    assert "lost contact with another process" in err and "statefulrnn: error: rank 0 of 2" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process in /proc")
def test_torchrun_ends_the_job_when_a_rank_is_killed(text_file, tmp_path):
    run = tmp_path / "run"
    agent = subprocess.Popen(
        [*TORCHRUN, "-m", "statefulrnn", "train", "text", str(text_file), "--out", str(run), *RUN],
        env={**ENV, "STATEFULRNN_DIST_TIMEOUT": "30"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_steps(run, [agent], 3)
        rank1 = [pid for pid in children(agent.pid) if environ(pid).get("RANK") == "1"]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGKILL)
        killed = time.time()
        _, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode != 0 and time.time() - killed < 45
    assert "FAILED" in err or "lost contact" in err


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
