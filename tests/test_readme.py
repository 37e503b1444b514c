"""The README's Library snippets run as written, on small data made here (book.txt, load.csv)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def library_snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Library\n") : text.index("\n## ", text.index("## Library\n") + 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def make_data(where: Path) -> None:
    lines = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
    rng = np.random.default_rng(0)
    (where / "book.txt").write_text("\n".join(rng.choice(lines) for _ in range(600)) + "\n", encoding="utf-8")
    hours = pd.date_range("2024-01-01", periods=24 * 40, freq="h")
    frames = []
    for k, name in enumerate(["north", "south"]):
        y = 10 + 3 * np.sin(2 * np.pi * (np.arange(len(hours)) + 5 * k) / 24) + rng.normal(0, 0.3, len(hours))
        frames.append(pd.DataFrame({"unique_id": name, "ds": hours, "y": y}))
    pd.concat(frames).to_csv(where / "load.csv", index=False)


def test_the_library_section_has_the_four_snippets() -> None:
    snippets = library_snippets()
    assert len(snippets) == 4
    assert "train_text" in snippets[1] and "train_series" in snippets[2] and "StatefulForecaster" in snippets[3]


def test_the_library_snippets_run_as_written(tmp_path: Path) -> None:
    make_data(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for i, code in enumerate(library_snippets()):
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"snippet {i} failed:\n{code}\n{out.stderr[-3000:]}"
    assert (tmp_path / "runs" / "load" / "model.safetensors").is_file()
    assert not (tmp_path / "runs" / "book").exists()  # the text snippet trains without a run directory
