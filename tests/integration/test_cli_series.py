"""The real `statefulrnn` CLI in subprocesses on series: train, forecast, eval, help, and data errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SEASON = 8
IDS = ("a", "b", "c")
AUTO = ["--horizon", "6", "--season", "8", "--epochs", "2", "--hidden", "8", "--quiet"]
TRAIN = [*AUTO, "--diff", "0", "--seasonal-diff", "0", "--deseason", "no", "--scale", "minmax"]  # fixed: fast


def cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "statefulrnn", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"statefulrnn {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


def series_frame(lengths: dict[str, int] | None = None, seed: int = 0) -> pd.DataFrame:
    """Long format (unique_id, ds, y): hourly sine-plus-noise series with a season of 8 steps."""
    lengths = lengths or {"a": 300, "b": 290, "c": 310}
    rng = np.random.default_rng(seed)
    parts = []
    for k, (sid, n) in enumerate(lengths.items()):
        t = np.arange(n)
        y = 20 + 5 * k + 3 * np.sin(2 * np.pi * t / SEASON + k) + 0.01 * t + rng.normal(0, 0.3, n)
        ds = pd.date_range("2024-03-01", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S")
        parts.append(pd.DataFrame({"unique_id": sid, "ds": ds, "y": np.round(y, 4).astype(str)}))
    return pd.concat(parts, ignore_index=True)


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    return write(series_frame(), tmp_path_factory.mktemp("data") / "series.csv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, csv_file) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "run"
    out = cli("train", "series", csv_file, "--out", run, *TRAIN, "--json")
    return run, json.loads(out.stdout)


def _error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("statefulrnn: error: "), proc.stderr
    return lines[0]


def train_error(path: Path, tmp_path: Path, *extra: str) -> str:
    run = tmp_path / "run"
    line = _error(cli("train", "series", path, "--out", run, *TRAIN, *extra, check=False))
    assert not run.exists(), "a data error must stop before the run directory is created"
    return line


# --- the happy path ----------------------------------------------------------------------------------
def test_train_series_prints_json_with_a_backtest(trained):
    run, summary = trained
    assert summary["epochs"] == 2 and summary["stopped"] == "epochs" and summary["steps"] > 0
    report = summary["backtest"]
    assert report["horizon"] == 6 and report["season"] == 8 and set(report["series"]) == set(IDS)
    for scores in [*report["series"].values(), report["mean"]]:
        assert set(scores) == {"model", "naive", "seasonal_naive"}
        for metrics in scores.values():
            assert all(np.isfinite(metrics[m]) and metrics[m] >= 0 for m in ("mae", "rmse", "smape", "mase"))
    assert report["interval"]["nominal"] == 0.8 and report["interval"]["points"] == 3 * 4 * 6
    for name in ("config.json", "model.safetensors", "transforms.json", "intervals.json", "backtest.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "backtest.json").read_text()) == report


def test_reported_coverage_is_the_share_of_test_actuals_inside_the_forecast_intervals(trained, tmp_path):
    """Recount the backtest's coverage from outside: `forecast` on the history before each test origin
    (the last 4 windows of 6 steps) prints the interval a user would have had; count the actuals inside."""
    run, summary = trained
    frame = series_frame()
    covered = counted = 0
    for k in range(4):
        cut = {sid: len(part) - (4 - k) * 6 for sid, part in frame.groupby("unique_id")}
        history = pd.concat([part.iloc[: cut[sid]] for sid, part in frame.groupby("unique_id", sort=False)])
        path = write(history, tmp_path / f"history{k}.csv")
        records = pd.DataFrame(json.loads(cli("forecast", run, "--history", path, "--json").stdout))
        for sid, part in frame.groupby("unique_id"):
            actual = part["y"].astype(float).to_numpy()[cut[sid] : cut[sid] + 6]
            got = records[records["unique_id"] == sid].sort_values("step")
            assert got["step"].tolist() == [1, 2, 3, 4, 5, 6]
            covered += int(((got["lo"].to_numpy() <= actual) & (actual <= got["hi"].to_numpy())).sum())
            counted += len(actual)
    interval = summary["backtest"]["interval"]
    assert interval["points"] == counted == 3 * 4 * 6
    assert interval["coverage"] == covered / counted


def test_forecast_writes_a_csv_and_a_plot(trained, csv_file, tmp_path):
    run, _ = trained
    out_csv, out_png = tmp_path / "f.csv", tmp_path / "f.png"
    proc = cli("forecast", run, "--history", csv_file, "--out", out_csv, "--plot", out_png)
    assert "18 forecast rows for 3 series" in proc.stdout
    table = pd.read_csv(out_csv)
    assert list(table.columns) == ["unique_id", "ds", "step", "forecast", "lo", "hi"]
    assert sorted(table["unique_id"].unique()) == list(IDS) and len(table) == 18
    assert np.isfinite(table[["forecast", "lo", "hi"]].to_numpy()).all() and (table["lo"] <= table["hi"]).all()
    history = pd.read_csv(csv_file)
    for sid in IDS:
        part = table[table["unique_id"] == sid]
        last = pd.Timestamp(history[history["unique_id"] == sid]["ds"].iloc[-1])
        assert part["step"].tolist() == [1, 2, 3, 4, 5, 6]
        assert pd.to_datetime(part["ds"]).tolist() == list(pd.date_range(last, periods=7, freq="h")[1:])
    png = out_png.read_bytes()
    assert len(png) > 1000 and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecast_json_with_a_shorter_horizon(trained, csv_file):
    run, _ = trained
    records = json.loads(cli("forecast", run, "--history", csv_file, "--horizon", "3", "--json").stdout)
    assert len(records) == 9 and {r["step"] for r in records} == {1, 2, 3}
    assert all(np.isfinite(r["forecast"]) for r in records)


def test_eval_json_reproduces_the_training_backtest(trained, csv_file):
    run, summary = trained
    report = json.loads(cli("eval", run, csv_file, "--json").stdout)
    assert set(report["series"]) == set(IDS)
    for sid, scores in summary["backtest"]["series"].items():
        for who, metrics in scores.items():
            for m, v in metrics.items():
                assert report["series"][sid][who][m] == pytest.approx(v, rel=1e-9)


def test_help_of_train_series_mentions_every_option():
    from statefulrnn.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    series = train._subparsers._group_actions[0].choices["series"]
    options = [s for a in series._actions for s in a.option_strings if s.startswith("--")]
    for expected in ("--horizon", "--season", "--fill", "--freq", "--id-col", "--test-windows", "--interval"):
        assert expected in options
    out = cli("train", "series", "--help").stdout
    assert len(options) > 30
    for option in options:
        assert option in out, option


# --- data errors: one clear line, exit status 2 --------------------------------------------------------
def _gap_file(tmp_path: Path) -> Path:
    frame = series_frame()
    drop = frame.index[frame["unique_id"] == "b"][120]
    return write(frame.drop(index=drop), tmp_path / "gap.csv")


@pytest.fixture(scope="module")
def gap_error(tmp_path_factory) -> str:
    tmp_path = tmp_path_factory.mktemp("gap")
    return train_error(_gap_file(tmp_path), tmp_path)


def test_a_missing_timestamp_is_one_line_naming_the_series_and_fill(gap_error):
    assert "series 'b'" in gap_error and "missing timestamp" in gap_error and "fill" in gap_error


def test_a_missing_timestamp_message_names_the_cli_option(gap_error):
    assert "--fill" in gap_error


def test_fill_interpolate_makes_the_gap_train_and_prints_the_backtest_table(tmp_path):
    run = tmp_path / "run"
    out = cli("train", "series", _gap_file(tmp_path), "--out", run, *TRAIN, "--epochs", "1", "--fill", "interpolate")
    assert "rolling-origin test" in out.stdout and "MASE" in out.stdout
    assert all(name in out.stdout for name in ("model", "naive", "seasonal_naive"))
    assert json.loads((run / "config.json").read_text())["data"]["read"]["fill"] == "interpolate"


def test_a_non_numeric_target_is_one_line_naming_the_row(tmp_path):
    frame = series_frame()
    at = frame.index[frame["unique_id"] == "c"][40]
    frame.loc[at, "y"] = "abc"
    line = train_error(write(frame, tmp_path / "bad.csv"), tmp_path)
    assert "series 'c'" in line and f"row {at + 1}" in line and "'abc'" in line and "not a number" in line


def test_duplicate_timestamps_are_one_line_naming_both_rows(tmp_path):
    frame = series_frame()
    rows = frame.index[frame["unique_id"] == "a"]
    frame.loc[rows[11], "ds"] = frame.loc[rows[10], "ds"]
    line = train_error(write(frame, tmp_path / "dup.csv"), tmp_path)
    assert "series 'a'" in line and "duplicate timestamp" in line and "rows 11 and 12" in line


def test_a_series_too_short_for_the_windows_is_one_line_with_the_fix(tmp_path):
    line = train_error(write(series_frame({"a": 300, "tiny": 40, "c": 300}), tmp_path / "short.csv"), tmp_path)
    assert "series 'tiny'" in line and "40 steps" in line and "fewer windows" in line


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    assert "nope.csv" in train_error(tmp_path / "nope.csv", tmp_path)


def test_a_text_run_passed_to_forecast_is_one_line(tmp_path, csv_file):
    import torch

    from statefulrnn.text.lm import train_text
    from statefulrnn.train import TrainConfig

    text = tmp_path / "play.txt"
    text.write_text("to be or not to be, that is the question\n" * 60)
    run = tmp_path / "text-run"
    model = {"hidden_size": 8, "num_layers": 1, "embedding_dim": 4}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPUs may be busy: one thread, no spinning
    try:
        train_text(text, run, model_args=model, config=TrainConfig(lanes=2, window=16, epochs=1), progress=False)
    finally:
        torch.set_num_threads(threads)
    line = _error(cli("forecast", run, "--history", csv_file, check=False))
    assert "text run" in line and "not a series run" in line


def test_unsorted_timestamps_suggest_an_option_that_exists(tmp_path):
    frame = series_frame()
    rows = frame.index[frame["unique_id"] == "a"]
    frame.loc[[rows[10], rows[11]], "ds"] = frame.loc[[rows[11], rows[10]], "ds"].to_numpy()
    line = train_error(write(frame, tmp_path / "unsorted.csv"), tmp_path)
    assert "not sorted" in line
    proc = cli("train", "series", tmp_path / "unsorted.csv", "--out", tmp_path / "run", *TRAIN, "--sort", check=False)
    assert "unrecognized arguments" not in proc.stderr


def test_open_preparation_is_chosen_on_validation_and_printed_with_seasonal_naive(tmp_path, csv_file):
    out = cli("train", "series", csv_file, "--out", tmp_path / "auto", *AUTO, "--season", "8", "16").stdout
    assert "preparation chosen on validation (1 of 2 epochs of the budget per candidate):" in out
    chosen = [line for line in out.splitlines() if line.startswith(" * ")]
    assert len(chosen) == 1
    selection = json.loads((tmp_path / "auto" / "selection.json").read_text())
    assert selection["chosen"] in chosen[0] and len(selection["candidates"]) >= 6
    assert f"model: {selection['chosen']}, seasons (8, 16); validation MASE" in out
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())["forecast"]
    assert saved["seasons"] == [8, 16] and saved["season"] == 8 and None not in saved.values()


def test_fixed_preparation_trains_one_model_and_an_ensemble_takes_several(tmp_path, csv_file):
    fixed = ["--diff", "1", "--seasonal-diff", "0", "--deseason", "no", "--scale", "standard"]
    run = tmp_path / "fixed"
    summary = json.loads(
        cli("train", "series", csv_file, "--out", run, *AUTO, *fixed, "--ensemble", "2", "--json").stdout
    )
    assert summary["selection"] is None and summary["preparation"] == "diff1, standard"
    assert summary["ensemble"] == 2 and (run / "members" / "1" / "model.safetensors").is_file()
    assert not (run / "selection.json").exists()
    v = summary["validation"]
    assert v["beats_seasonal_naive"] == (v["mase"] < v["seasonal_naive_mase"])
    assert ("warning" in summary) != v["beats_seasonal_naive"]
    line = _error(cli("train", "series", csv_file, "--out", tmp_path / "bad", *TRAIN, "--season", "x", check=False))
    assert "--season takes 'auto' or whole numbers" in line
