"""The bf16 probe and precision resolution: refuse bf16 clearly where it cannot run, settle "auto"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from statefulrnn import precision
from statefulrnn.precision import bf16_support, choose_precision, resolve_precision


def test_fp32_is_taken_as_is_without_probing(monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("fp32 must not probe")

    monkeypatch.setattr(precision, "bf16_support", no_probe)
    monkeypatch.setattr(precision, "bf16_speedup", no_probe)
    assert resolve_precision("fp32", "cpu", "lstm") == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or auto, got 'fp16'"):
        resolve_precision("fp16", "cpu", "lstm")


def test_the_probe_answers_once_per_process_and_leaves_rng_grad_mode_and_onednn_alone():
    precision._support.cache_clear()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    onednn = (torch.backends.mkldnn.is_available(), torch._C._get_mkldnn_enabled())
    with torch.no_grad():
        ok, reason = bf16_support("cpu", "rnn")
        assert not torch.is_grad_enabled()
    assert isinstance(ok, bool) and reason and "\n" not in reason
    assert bf16_support(torch.device("cpu"), "rnn") == (ok, reason)
    assert precision._support.cache_info().hits >= 1
    assert torch.equal(torch.rand(4), expected)  # a seeded run draws the same numbers with or without the probe
    assert (torch.backends.mkldnn.is_available(), torch._C._get_mkldnn_enabled()) == onednn
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_is_refused_in_one_line_that_names_the_reason_and_the_fix(monkeypatch):
    monkeypatch.setattr(precision, "bf16_support", lambda device, cell: (False, "no bf16 LSTM primitive"))
    with pytest.raises(ValueError) as e:
        resolve_precision("bf16", "cpu", "lstm")
    message = str(e.value)
    assert "\n" not in message
    assert "lstm on cpu" in message and "no bf16 LSTM primitive" in message and "use --precision fp32" in message


def test_auto_is_fp32_without_native_bf16_even_where_bf16_runs(monkeypatch):
    monkeypatch.setattr(precision, "bf16_support", lambda device, cell: (True, "ran"))
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    monkeypatch.setattr(precision, "bf16_cell", lambda device, cell: True)
    monkeypatch.setattr(precision, "bf16_speedup", lambda device, cell, shape=None: 5.0)
    chosen, why = choose_precision("auto", "cpu", "rnn")
    assert chosen == "fp32" and "no native bf16" in why
    assert resolve_precision("bf16", "cpu", "rnn") == "bf16"  # asked for explicitly, it runs (slowly)


def test_auto_needs_a_clear_measured_speed_up(monkeypatch):
    monkeypatch.setattr(precision, "bf16_support", lambda device, cell: (True, "ran"))
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    monkeypatch.setattr(precision, "bf16_cell", lambda device, cell: True)
    for speedup, chosen in ((1.6, "bf16"), (precision.AUTO_MIN_SPEEDUP - 0.01, "fp32"), (0.8, "fp32")):
        monkeypatch.setattr(precision, "bf16_speedup", lambda device, cell, shape=None, s=speedup: s)
        assert resolve_precision("auto", "cpu", "lstm") == chosen


def test_the_real_probe_is_consistent_with_what_this_process_can_run():
    for cell in ("lstm", "gru", "rnn"):
        ok, _ = bf16_support("cpu", cell)
        assert resolve_precision("auto", "cpu", cell) in ("fp32", "bf16")
        if ok:
            assert resolve_precision("bf16", "cpu", cell) == "bf16"
        else:
            with pytest.raises(ValueError, match="--precision fp32"):
                resolve_precision("bf16", "cpu", cell)


def test_auto_is_fp32_where_autocast_leaves_the_cell_in_float32(monkeypatch):
    # CPU autocast has no bf16 GRU: only the head would run in bf16, for no speed
    assert bf16_support("cpu", "gru")[0] and not precision.bf16_cell("cpu", "gru")
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    monkeypatch.setattr(precision, "bf16_speedup", lambda device, cell, shape=None: 5.0)
    assert choose_precision("auto", "cpu", "gru") == ("fp32", "autocast leaves gru in float32 on cpu")


PROBE = """
import json
from statefulrnn.precision import bf16_support, choose_precision
out = {"support": bf16_support("cpu", "lstm"), "auto": choose_precision("auto", "cpu", "lstm")}
try:
    choose_precision("bf16", "cpu", "lstm")
except ValueError as e:
    out["bf16"] = str(e)
print(json.dumps(out))
"""


def test_an_avx2_only_cpu_refuses_bf16_lstm_and_auto_is_fp32():
    # ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN behave exactly as on a CPU without AVX512-BF16/AMX
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    ok, reason = out["support"]
    assert not ok and "primitive descriptor" in reason
    assert out["auto"][0] == "fp32"
    assert "\n" not in out["bf16"] and "use --precision fp32" in out["bf16"] and reason in out["bf16"]
