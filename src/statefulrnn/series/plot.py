"""Forecast plots: one panel per series with history, forecasts, interval band and actuals.

Imports matplotlib (Agg backend), so the package loads it only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from .data import SeriesSet

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_forecast(
    panels: list[dict],
    out: Path,
    title: str = "forecast",
) -> Path:
    """One panel per series: history tail, forecast lines, interval band, actuals where known.

    Each panel is a dict with `id`, `history` (x, y), `forecasts` {label: (x, y)}, and optional
    `band` (x, lo, hi) and `actual` (x, y).
    """
    n = max(len(panels), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.2 * n), dpi=110, squeeze=False)
    for ax, p in zip(axes[:, 0], panels):
        ax.plot(*p["history"], color="0.35", lw=1, label="history")
        if p.get("actual") is not None:
            ax.plot(*p["actual"], color="black", lw=1.2, ls="--", label="actual")
        if p.get("band") is not None:
            x, lo, hi = p["band"]
            ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.2, label="interval")
        for label, (x, y) in p["forecasts"].items():
            ax.plot(x, y, lw=1.5, label=label)
        ax.set_title(str(p["id"]), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_forecast_table(history: SeriesSet, table: pd.DataFrame, out: str | Path, max_series: int = 6) -> Path:
    """PNG of each series' history tail with the `forecast_run` table's forecast and interval (first few series)."""
    panels = []
    for s in list(history)[:max_series]:
        part = table[table["unique_id"] == s.id]
        dated = bool(part["ds"].notna().all())
        x = part["ds"].to_numpy() if dated else len(s) + part["step"].to_numpy() - 1
        hx = s.timestamps if dated else np.arange(len(s))
        tail = max(0, len(s) - 5 * len(part))
        panel = {"id": s.id, "history": (hx[tail:], s.values[tail:]), "forecasts": {"forecast": (x, part["forecast"])}}
        if "lo" in part and part["lo"].notna().all():
            panel["band"] = (x, part["lo"], part["hi"])
        panels.append(panel)
    return plot_forecast(panels, Path(out))
