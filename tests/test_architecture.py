"""The package's shape: data flows one way, serving never loads training, modules stay small.

These walk the source with `ast` (every import, including those inside functions) and import the
serving side in a fresh interpreter, so a new upward import fails here rather than in review.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "statefulrnn"
PACKAGE = "statefulrnn"
MAX_LINES = 400
TRAINING = ("statefulrnn.train", "statefulrnn.distributed", "statefulrnn.text.lm", "statefulrnn.series.train")


def is_training(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TRAINING)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in its body (TYPE_CHECKING blocks aside)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != PACKAGE:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) for name, path in mods.items()}


def test_the_import_graph_has_no_cycle() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "statefulrnn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    known = {"statefulrnn", "statefulrnn.a", "statefulrnn.b"}
    global SRC
    saved, SRC = SRC, pkg
    try:
        assert imports_of(pkg / "a.py", known) == {"statefulrnn.b"}
        assert imports_of(pkg / "b.py", known) == {"statefulrnn.a"}
    finally:
        SRC = saved


@pytest.mark.parametrize("layer", ["state", "scan", "model", "layout"])
def test_the_core_imports_nothing_above_it(layer: str) -> None:
    g = graph()
    core = {m for m in g if m.split(".")[1:2] in (["state"], ["scan"], ["model"], ["layout"])}
    for m in core:
        if m.split(".")[1] == layer:
            assert g[m] <= core, f"{m} imports {sorted(g[m] - core)}"


def test_serving_modules_never_import_training_even_inside_functions() -> None:
    g = graph()
    serving = [m for m in g if m.split(".")[1:2] in (["stream"], ["server"], ["engines"], ["stores"])]
    assert serving
    for m in serving:
        seen, todo = set(), [m]
        while todo:
            cur = todo.pop()
            for nxt in g[cur]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        leaks = sorted(x for x in seen if is_training(x))
        assert not leaks, f"{m} reaches training modules: {leaks}"


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_serving_a_run_loads_no_training_code(tmp_path: Path) -> None:
    """In a fresh interpreter: load a text and a series run, step streams, generate and forecast."""
    import numpy as np
    import torch

    from statefulrnn.model import SequenceModel
    from statefulrnn.runs import save_model
    from statefulrnn.series.transform import Transform, transforms_to_json
    from statefulrnn.text import Vocab

    text_run, series_run = tmp_path / "text", tmp_path / "series"
    torch.manual_seed(0)
    vocab = Vocab.build("hello world\n", "char")
    save_model(text_run, SequenceModel(vocab_size=len(vocab), hidden_size=8), {"task": "text"})
    vocab.save(text_run / "vocab.json")
    spec = {"horizon": 3, "season": 4, "diff": 0, "seasonal_diff": False, "scale": "minmax", "phase": True}
    spec.update(test_windows=1, val_windows=1, interval=0.0, features=[])
    save_model(
        series_run, SequenceModel(n_features=3, n_outputs=3, hidden_size=8), {"task": "series", "forecast": spec}
    )
    t = Transform(scale="minmax").fit(np.arange(20.0))
    (series_run / "transforms.json").write_text(transforms_to_json({"s": t}))
    code = f"""
import json, sys
from statefulrnn.server import create_app
from statefulrnn.stream import StreamingPredictor
p = StreamingPredictor({str(text_run)!r})
p.step("a", "hello", seq=0)
p.generate("he", 5, seed=1)
q = StreamingPredictor({str(series_run)!r})
q.step("b", [1.0, 2.0, 3.0], seq=0)
q.forecast([1.0, 2.0, 3.0, 4.0, 5.0], series="s")
create_app(p)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("statefulrnn"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "statefulrnn.stream" in loaded and "statefulrnn.server" in loaded
    leaks = [m for m in loaded if is_training(m)]
    assert not leaks, f"serving loaded training modules: {leaks}"


def test_the_cli_parser_loads_no_training_code() -> None:
    """`statefulrnn serve` with one worker serves from the CLI's own process: parsing must not load the trainer."""
    code = (
        "import json, sys; from statefulrnn.cli.main import build_parser; build_parser();"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('statefulrnn'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "statefulrnn.cli.main" in loaded
    assert not [m for m in loaded if is_training(m)], loaded
