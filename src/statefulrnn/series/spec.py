"""`ForecastSpec`: what a forecasting run predicts and how its series are split and prepared.

Framing (a *direct multi-horizon head*): at step t the model reads the transformed value of step t
(plus features) and outputs the next H transformed values at once. Its state, carried over the
whole history of the series, is its memory. Each series is split in time: training part, then
`val_windows * H` steps for model selection and interval calibration, then `test_windows * H`
steps tested at rolling origins (one every H steps). Transforms are fitted on the training part only.
The spec is saved in the run's config.json, so serving rebuilds it without any training code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import Series
from .metrics import rolling_origins
from .transform import Transform

SERIES_MODEL = {"hidden_size": 64, "num_layers": 1}
"""A series run's model unless told otherwise: small series want a small model."""
SERIES_TRAIN = {"lanes": 16, "window": 48, "epochs": 40, "lr": 3e-3, "eval_window": 512}
"""A series run's training settings unless told otherwise (the rest are `TrainConfig`'s defaults)."""


@dataclass
class ForecastSpec:
    """What to forecast and how the series are prepared (saved in the run's config.json).

    Attributes:
        horizon: steps forecast from each origin (the width of the model's output head).
        season: the seasonal period in steps (24 for hourly data with a daily cycle; 1 for none):
            used by seasonal naive, MASE, seasonal differencing and the phase features.
        diff: first differences applied before scaling (0, 1 or 2).
        seasonal_diff: also difference at lag `season` (applied first).
        scale: "minmax" (to [-1, 1], suits tanh), "standard" or "none"; per series, on training values.
        phase: add sin/cos of the position within the season as inputs (season > 1 only).
        test_windows: rolling-origin test windows of `horizon` steps at the end of each series.
        val_windows: windows before the test part used for model selection and interval calibration.
        interval: coverage of the empirical prediction interval (0 turns intervals off).
        features: extra numeric input columns.
    """

    horizon: int
    season: int = 1
    diff: int = 0
    seasonal_diff: bool = False
    scale: str = "minmax"
    phase: bool = True
    test_windows: int = 4
    val_windows: int = 4
    interval: float = 0.8
    features: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("horizon", "season", "test_windows", "val_windows"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0 <= self.interval < 1:
            raise ValueError(f"interval must be a coverage in [0, 1), got {self.interval}")
        self.features = tuple(self.features)

    def transform(self) -> Transform:
        """A new, unfitted `Transform` with this spec's differencing and scaling."""
        return Transform(seasonal_diff=self.season if self.seasonal_diff else 0, diff=self.diff, scale=self.scale)

    def splits(self, series: Series, window: int) -> tuple[int, int]:
        """(val_start, test_start): where the validation and test parts of `series` begin."""
        test_start = len(series) - self.test_windows * self.horizon
        val_start = test_start - self.val_windows * self.horizon
        need = self.transform().offset + max(window, 2 * self.season, 2) + 1
        if val_start < need:
            raise ValueError(
                f"series '{series.id}' has {len(series)} steps; {self.val_windows} validation and "
                f"{self.test_windows} test windows of horizon {self.horizon} leave {max(val_start, 0)} for training, "
                f"fewer than the {need} needed: use fewer windows, a shorter horizon or window, or drop the series"
            )
        return val_start, test_start

    def test_origins(self, series: Series, window: int) -> np.ndarray:
        """The rolling origins of the test part: one every `horizon` steps, tiling the end of the series."""
        self.splits(series, window)
        return rolling_origins(len(series), self.horizon, self.test_windows)

    def val_origins(self, series: Series, window: int) -> np.ndarray:
        """Every origin of the validation part whose window ends before the test part (one per step)."""
        val_start, test_start = self.splits(series, window)
        return rolling_origins(test_start, self.horizon, test_start - self.horizon + 1 - val_start, step=1)
