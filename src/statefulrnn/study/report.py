"""The study's report: DIR/REPORT.md (answers, tables, plots, transcripts) and DIR/results.json (every number)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    """Where the study ran: platform, processor and CPU count (and how many this process may use)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
    }


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux; None elsewhere): platform.processor() says only x86_64."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    """Python, torch, numpy and statefulrnn versions."""
    import torch

    from .. import __version__

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "statefulrnn": __version__,
        "torch_threads_default": str(torch.get_num_threads()),
    }


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s' or '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _markdown_table(t: dict[str, Any]) -> str:
    head = "| " + " | ".join(t["columns"]) + " |"
    rule = "|" + "---|" * len(t["columns"])
    body = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t["rows"]]
    return "\n".join([f"**{t['title']}**", "", head, rule, *body])


def _settings(settings: dict[str, Any]) -> str:
    parts = []
    for k, v in settings.items():
        if isinstance(v, dict):
            parts.append(f"{k}: ({_settings(v)})")
        elif k != "seeds":
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def render(study: dict[str, Any], out: Path) -> str:
    """REPORT.md's text for a finished study whose files lie under `out`."""
    m, v = study["machine"], study["versions"]
    lines = [
        "# statefulrnn study: stateful vs stateless",
        "",
        f"{'Quick (reduced) run' if study['quick'] else 'Full run'} of `{study['command']}`, started "
        f"{study['started']}, total wall time {duration(study['wall_s'])}. Every table and figure below was produced "
        "by this run; `results.json` holds every number.",
        "",
        f"- **Machine**: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
        "no GPU used",
        f"- **Versions**: Python {v['python']}, torch {v['torch']} ({v['torch_threads_default']} threads by default), "
        f"numpy {v['numpy']}, statefulrnn {v['statefulrnn']}",
        f"- **Seeds**: {', '.join(map(str, study['seeds']))}",
        "",
        "| # | experiment | wall time | qualitative checks |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(study["experiments"].values(), 1):
        checks = r.get("checks") or {}
        passed = f"{sum(map(bool, checks.values()))}/{len(checks)} hold" if checks else "-"
        lines.append(f"| {i} | [{r['title']}](#{i}-{_anchor(r['title'])}) | {duration(r['wall_s'])} | {passed} |")
    for i, (name, r) in enumerate(study["experiments"].items(), 1):
        lines += ["", f"## {i}. {r['title']}", "", f"**Question.** {r['question']}", "", f"**Measured.** {r['answer']}"]
        lines += [
            "",
            f"*Experiment `{name}`: seeds {', '.join(map(str, r['seeds']))}; wall time {duration(r['wall_s'])}; "
            f"settings: {_settings(r.get('settings', {}))}.*",
        ]
        for t in r.get("tables", []):
            lines += ["", _markdown_table(t)]
        for p in r.get("plots", []):
            rel = os.path.relpath(p, out)
            lines += ["", f"![{Path(rel).stem}]({rel})"]
        for title, text in r.get("text", []):
            lines += ["", f"**{title}**", "", "```text", text, "```"]
        if r.get("checks"):
            lines += ["", "Qualitative checks (what the test suite asserts on the quick form):", ""]
            lines += [f"- {'holds' if ok else 'DOES NOT HOLD'}: {c}" for c, ok in r["checks"].items()]
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -")
    return keep.replace(" ", "-")


def jsonable(o: Any) -> Any:
    """numpy values and paths as JSON values (a `default=` for json.dumps)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_report(out: Path, study: dict[str, Any]) -> Path:
    """Write `out/results.json` and `out/REPORT.md`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(study, indent=1, default=jsonable) + "\n")
    path = out / "REPORT.md"
    path.write_text(render(study, out))
    return path
