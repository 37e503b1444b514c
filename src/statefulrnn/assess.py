"""Assessing a trained run on new data, whichever its task, and the text of the results.

`evaluate_run` reads the run's task and calls `evaluate_text` (a stateful pass over a text file) or
`evaluate_series_run` (a rolling-origin backtest against naive and seasonal-naive forecasts). Both
are imported on first use, so importing this module loads neither the text nor the series code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runs import read_config

BACKTEST_KEYS = frozenset({"windows", "horizon", "season", "series", "mean"})


def evaluate_run(
    run: str | Path,
    data: Any,
    *,
    lanes: int | None = None,
    window: int | None = None,
    device: str | None = "auto",
    replace_invalid: bool = False,
) -> dict[str, Any]:
    """Evaluate `run` statefully on `data`, by the run's task.

    A series run: `data` is a CSV/Parquet path or a `SeriesSet`; the result is the rolling-origin
    backtest report (see `format_backtest`); `lanes`, `window` and `replace_invalid` do not apply.
    Any other run is a text run: `data` is a text file; the result holds loss, accuracy, bpc or
    perplexity, tokens and unknown tokens, evaluated with `lanes` x `window` (default: the run's).
    """
    if read_config(Path(run)).get("task") == "series":
        from .series.forecast import evaluate_series_run

        return evaluate_series_run(run, data, device=device)
    from .text.lm import evaluate_text

    return evaluate_text(run, data, lanes=lanes, window=window, device=device, replace_invalid=replace_invalid)


def is_backtest(report: dict[str, Any]) -> bool:
    """True for a rolling-origin backtest report (a series run's evaluation or training summary part)."""
    return BACKTEST_KEYS <= report.keys()


def format_backtest(report: dict[str, Any]) -> str:
    """A backtest report as a text table: each forecaster's mean MAE, RMSE, MASE and sMAPE over the
    series, then the empirical coverage of the prediction interval where the run has one."""
    head = f"{'forecaster':<16} {'MAE':>10} {'RMSE':>10} {'MASE':>7} {'sMAPE%':>7}"
    lines = [
        f"rolling-origin test: {report['windows']} window(s) x horizon {report['horizon']} per series, "
        f"mean over {len(report['series'])} series (season {report['season']})",
        head,
        "-" * len(head),
    ]
    for name, m in report["mean"].items():
        lines.append(f"{name:<16} {m['mae']:10.4g} {m['rmse']:10.4g} {m['mase']:7.3f} {m['smape']:7.3f}")
    if "interval" in report:
        i = report["interval"]
        lines.append(f"{i['nominal']:.0%} interval: {i['coverage']:.1%} of {i['points']} test values covered")
    return "\n".join(lines)


def format_evaluation(report: dict[str, Any]) -> str:
    """The result of `evaluate_run` as text: the backtest table, or one 'name: value' line per metric."""
    if is_backtest(report):
        return format_backtest(report)
    return "\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report.items())


__all__ = ["evaluate_run", "format_backtest", "format_evaluation", "is_backtest"]
