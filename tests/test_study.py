"""The study's quick forms: each experiment's qualitative result, and the report they write.

One module-scoped run of the quick experiments 1 (memory), 2 (alphabet), 4 (batch size) and 5 (cost);
the book and forecasting experiments are left to `statefulrnn study --quick` (they read shared data).
"""

from __future__ import annotations

import json

import pytest

from statefulrnn.cli import main
from statefulrnn.study import run_study
from statefulrnn.study.report import duration

NAMES = ["memory", "alphabet", "batch", "cost"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("study")
    result = run_study(out, NAMES, quick=True, seeds=[0])
    result["out"] = out
    return result


def _curve(result: dict, key: str, name: str) -> list[float]:
    return result["data"]["curves"][key][name][0]


def test_memory_stateful_remembers_beyond_the_window_where_stateless_is_at_chance(study):
    r = study["experiments"]["memory"]
    chance, x = r["data"]["chance"], r["data"]["x"]
    span = r["settings"]["train_span"]
    for cell in ("lstm", "gru"):
        key = f"{cell} W=8"
        beyond = [i for i, v in enumerate(x) if 1 <= v < span]
        within = [i for i, v in enumerate(x) if v < 1]
        stateful, stateless = _curve(r, key, "stateful"), _curve(r, key, "stateless")
        assert min(stateful[i] for i in beyond) > 0.8, key
        assert max(abs(stateless[i] - chance) for i in beyond) < 0.15, key
        assert min(stateless[i] for i in within) > 0.9, key  # inside its window stateless is right too
    assert all(r["checks"].values()), r["checks"]


def test_alphabet_reproduces_the_position_failure_and_both_fixes(study):
    r = study["experiments"]["alphabet"]
    thread, fixed = (r["data"]["scores"][k][0] for k in ("thread (scalar input, from A)", "scalar input, every offset"))
    assert thread["from_a"] == 25  # it learned what it was shown
    assert thread["cold_first"] <= 5  # but not letters: from a fresh state it answers by position
    assert thread["warm_all"] == 325  # warming the state on the letters before fixes it
    assert fixed["cold_first"] == 25 and fixed["cold_all"] == 325  # so does training on every offset
    failure, fixes = (text for _, text in r["text"])
    assert "K -> B" in failure and "New start: M E" in failure
    assert "K -> L\nL -> M" in fixes and "B->C C->D" in fixes
    assert all(r["checks"].values()), r["checks"]


def test_batch_size_does_not_make_stateless_simulate_stateful(study):
    r = study["experiments"]["batch"]
    chance = 1 / r["settings"]["memory"]["symbols"]
    points = {int(k): v[0] for k, v in r["data"]["memory"].items()}
    for lanes, p in points.items():
        assert p["stateless beyond"] < chance + 0.1, lanes
    smallest = min(points)
    assert points[smallest]["stateful beyond"] > points[smallest]["stateless beyond"] + 0.3
    assert all(r["checks"].values()), r["checks"]


def test_cost_stateful_needs_no_more_memory_and_about_the_same_compute(study):
    r = study["experiments"]["cost"]
    got = r["data"]
    assert got["stateful"][0]["state_bytes"] == 1 * 16 * 64 * 2 * 4  # layers x lanes x hidden x (h, c) x float32
    memory = {mode: min(m["training_bytes"] for m in runs) for mode, runs in got.items()}
    assert memory["stateful"] - memory["stateless"] < max(0.1 * memory["stateless"], 2 * 2**20)
    # short measurements on shared cores: compare the best of the repeats, and only a gross slowdown fails
    best = {mode: max(m["tokens_per_s"] for m in runs) for mode, runs in got.items()}
    assert best["stateful"] > 0.6 * best["stateless"]


def test_report_and_results_are_written_with_plots_machine_versions_and_times(study):
    out = study["out"]
    report = (out / "REPORT.md").read_text()
    for r in study["experiments"].values():
        assert f". {r['title']}" in report and r["answer"] in report
        for plot in r["plots"]:
            with open(plot, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            assert f"]({plot[len(str(out)) + 1 :]})" in report
    assert "K -> B" in report  # the alphabet transcripts
    for key in ("Machine", "Versions", "Seeds", "torch", "wall time"):
        assert key in report
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == [0] and saved["quick"] is True
    assert set(saved["experiments"]) == set(NAMES)
    assert all(saved["experiments"][n]["wall_s"] > 0 for n in NAMES)
    assert saved["machine"]["cpu_count"] >= 1 and saved["versions"]["torch"]


def test_duration_reads_naturally():
    assert duration(4.2) == "4.2 s" and duration(42) == "42 s"
    assert duration(185) == "3 min 05 s" and duration(3720) == "1 h 02 min"


def test_cli_rejects_an_unknown_experiment(tmp_path, capsys):
    assert main(["study", "nope", "--out", str(tmp_path), "--quick"]) == 2
    assert "unknown experiment(s) nope" in capsys.readouterr().err
