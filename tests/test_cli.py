"""The `statefulrnn` command's surface: every help page, defaults taken from the library, one-line errors."""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from statefulrnn.cli import build_parser, main
from statefulrnn.cli.common import TRAINING_OPTIONS
from statefulrnn.model import ModelConfig
from statefulrnn.train import TrainConfig

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MODEL_OPTIONS = {"cell": "--cell", "hidden_size": "--hidden", "num_layers": "--layers", "dropout": "--dropout"}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command and subcommand parser by its path ('train text'), the top level as ''."""
    found = {"": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update({f"{name} {k}".strip(): v for k, v in subparsers(sub).items()})
    return found


PARSERS = subparsers(build_parser())
COMMANDS = sorted(PARSERS)


def help_entries(text: str) -> dict[str, str]:
    """Each option's help entry (its lines joined) by its long option string."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  -"):
            current = max(re.findall(r"--?[\w-]+", stripped.split("  ")[0].replace(",", " ")), key=len)
            entries[current] = stripped
        elif current and line.startswith("    ") and stripped:
            entries[current] += " " + stripped
        else:
            current = None
    return entries


def printed_default(entries: dict[str, str], option: str) -> str:
    found = re.search(r"\(default: ([^)]*)\)$", entries[option])
    assert found, f"{option} shows no default: {entries[option]!r}"
    return found.group(1)


def test_there_is_a_parser_for_every_command():
    assert {"train text", "train series", "prepare text", "eval", "generate", "forecast", "serve", "layout"} < set(
        COMMANDS
    )
    assert {"demo", "export", "import-keras", "study"} < set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([*command.split(), "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    entries = help_entries(out)
    for action in PARSERS[command]._actions:
        if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
            continue
        option = max(action.option_strings, key=len)
        assert option in entries, f"{command}: {option} missing from --help"
        assert action.help, f"{command}: {option} has no help text"
        d = action.default
        if not (d is None or d is False or d is argparse.SUPPRESS or d == []):  # as the formatter: 0 is shown
            assert printed_default(entries, option) == str(d), (command, option)


def test_train_text_help_prints_the_library_defaults():
    out = subprocess.run(
        [sys.executable, "-m", "statefulrnn", "train", "text", "--help"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    entries = help_entries(out.stdout)
    checked = 0
    for f in fields(TrainConfig):
        option = "--" + f.name.replace("_", "-")
        if f.name not in TRAINING_OPTIONS or f.default is None or f.default is False or option not in entries:
            continue
        assert printed_default(entries, option) == str(f.default), option
        checked += 1
    assert checked == 14  # all but eval_window (not an option) and those without a default (None, False)
    for name, option in {**MODEL_OPTIONS, "embedding_dim": "--embedding-dim"}.items():
        assert printed_default(entries, option) == str(getattr(ModelConfig, name)), option


def test_train_series_defaults_are_the_series_library_defaults():
    from statefulrnn.series import SERIES_MODEL, SERIES_TRAIN, ForecastSpec
    from statefulrnn.series.train import train_series

    got = PARSERS["train series"].get_default
    for name in ("test_windows", "val_windows", "interval"):
        assert got(name) == getattr(ForecastSpec, name), name
    auto = ForecastSpec.auto(1)  # what the command line leaves open: chosen on validation, seasons from the data
    for name in ("season", "diff", "seasonal_diff", "deseason", "scale"):
        assert got(name) in ("auto", ["auto"]) and getattr(auto, name) in (None, "auto"), name
    assert got("ensemble") == inspect.signature(train_series).parameters["ensemble"].default == 1
    for name, option in MODEL_OPTIONS.items():
        assert got(option[2:]) == SERIES_MODEL.get(name, getattr(ModelConfig, name)), name
    for name in TRAINING_OPTIONS:
        assert got(name) == SERIES_TRAIN.get(name, getattr(TrainConfig, name)), name
    assert PARSERS["train text"].get_default("eval_window") == TrainConfig.eval_window


def test_demo_defaults_are_run_demo_defaults():
    from statefulrnn.demo import run_demo

    library = {k: p.default for k, p in inspect.signature(run_demo).parameters.items()}
    got = {a.dest: a.default for a in PARSERS["demo"]._actions}
    assert (got["epochs"], tuple(got["seeds"]), got["threads"]) == (
        library["epochs"],
        library["seeds"],
        library["threads"],
    )
    assert got["device"] == library["device"]


def test_python_dash_m_statefulrnn_help():
    out = subprocess.run(
        [sys.executable, "-m", "statefulrnn", "--help"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage: statefulrnn" in out.stdout
    for command in ("train", "eval", "serve", "export", "study", "demo", "import-keras"):
        assert command in out.stdout


def bad_inputs(t: Path) -> dict[str, list[str]]:
    return {
        "layout": ["layout", "10", "--lanes", "0"],
        "prepare": ["prepare", "text", str(t / "missing.txt"), "--out", str(t / "p")],
        "train text": ["train", "text", str(t / "missing.txt"), "--out", str(t / "r"), "--quiet"],
        "train series": ["train", "series", str(t / "missing.csv"), "--out", str(t / "s"), "--quiet"],
        "eval": ["eval", str(t / "norun"), str(t / "x.txt")],
        "generate": ["generate", str(t / "norun")],
        "forecast": ["forecast", str(t / "norun"), "--history", str(t / "x.csv")],
        "demo": ["demo", "--threads", "0", "--out", str(t / "demo")],
        "serve": ["serve", str(t / "norun"), "--workers", "0"],
        "export": ["export", str(t / "norun"), "--out", str(t / "m.onnx")],
        "import-keras": ["import-keras", str(t / "missing.keras"), "--out", str(t / "k")],
        "study": ["study", "nope", "--out", str(t / "study"), "--quick"],
    }


@pytest.mark.parametrize("group", sorted(bad_inputs(Path("."))))
def test_a_bad_input_is_one_error_line_and_status_2(group, tmp_path, capsys):
    assert main(bad_inputs(tmp_path)[group]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("statefulrnn: error: "), err
    assert "Traceback" not in err


def test_a_bad_input_in_a_real_process(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "statefulrnn", "eval", str(tmp_path / "norun"), str(tmp_path / "x.txt")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"statefulrnn: error: run directory {tmp_path / 'norun'} does not exist"]


def test_the_command_modules_never_import_main():
    cli = Path(__file__).resolve().parents[1] / "src" / "statefulrnn" / "cli"
    for path in cli.glob("*.py"):
        if path.name not in ("__init__.py", "main.py"):
            assert not re.search(r"from \.(main)? import|from \.main|statefulrnn\.cli\.main", path.read_text()), path
