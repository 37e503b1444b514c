"""`statefulrnn demo` end to end in a subprocess, shortened (4 weeks of data, 1 epoch, 1 seed, the fast peers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_the_demo_prints_one_table_of_every_forecaster_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["demo", "--out", str(out), "--weeks", "4", "--epochs", "1", "--seeds", "3", "--quiet"]
    args += ["--peers", "AutoTheta", "SeasonalNaive"]
    proc = subprocess.run(
        [sys.executable, "-m", "statefulrnn", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for row in ("naive (last value)", "same hour yesterday", "same hour last week", "AutoTheta (statsforecast)"):
        assert row in text
    assert "AutoETS" not in text and "MSTL" not in text
    assert "ours: statefulrnn defaults (1-seed mean)" in text and "best MASE: " in text
    assert "refit=False" in text
    for name in ("results.json", "table.txt", "forecast.png", "nyc_departures_hourly_2013.csv", "stateful-3"):
        assert (out / name).exists(), name
    assert (out / "forecast.png").stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert results["test_origins"]["JFK"] == [f"2013-12-{d} 00:00:00" for d in range(25, 32)]
    assert {s["length"] for s in results["series"].values()} == {4 * 168}
    peers = results["peers"]["scores"]
    assert peers["seasonal_naive_gap"] == 0.0
    backtest = results["runs"]["stateful-3"]["backtest"]
    for airport in ("EWR", "JFK", "LGA"):  # our backtest and the peers' scoring are one path
        assert backtest["series"][airport]["seasonal_naive"] == peers["series"][airport]["seasonal_naive"]
    best = min(results["table"], key=lambda r: r["mase"])
    assert results["best"] == best["forecaster"] and f"best MASE: {best['forecaster']}" in text
    assert set(results["peers"]["seconds"]) == {"SeasonalNaive", "AutoTheta"}


@pytest.mark.parametrize("bad", [["--weeks", "3"], ["--epochs", "0"], ["--peers", "Prophet"]])
def test_bad_demo_options_are_one_error_line(tmp_path: Path, bad: list[str]) -> None:
    from statefulrnn.cli import main

    assert main(["demo", "--out", str(tmp_path / "d"), "--quiet", *bad]) == 2
    assert not (tmp_path / "d").exists()


def test_the_cli_defaults_are_run_demo_defaults() -> None:
    import inspect

    from statefulrnn.cli.main import build_parser
    from statefulrnn.demo import run_demo

    library = {k: p.default for k, p in inspect.signature(run_demo).parameters.items()}
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    got = {a.dest: a.default for a in demo._actions}
    assert tuple(got["peers"]) == library["peers"] and got["weeks"] == library["weeks"]
    assert (got["epochs"], tuple(got["seeds"]), got["threads"]) == (
        library["epochs"],
        library["seeds"],
        library["threads"],
    )
