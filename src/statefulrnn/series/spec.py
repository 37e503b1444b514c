"""`ForecastSpec`: what a forecasting run predicts and how its series are split and prepared.

Framing (a *direct multi-horizon head*): at step t the model reads the transformed value of step t
(plus features) and outputs the next H transformed values at once. Its state, carried over the
whole history of the series, is its memory. Each series is split in time: training part, then
`val_windows * H` steps for model selection and interval calibration, then `test_windows * H`
steps tested at rolling origins (one every H steps). Transforms are fitted on the training part only.

The preparation fields (`diff`, `seasonal_diff`, `deseason`, `scale`) may be left as None: training
then chooses them on the validation windows (`series/select.py`) and saves the chosen values. The
spec is saved in the run's config.json, so serving rebuilds it without any training code.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .data import Series
from .metrics import rolling_origins
from .transform import SCALES, Transform

SERIES_MODEL = {"hidden_size": 64, "num_layers": 1}
"""A series run's model unless told otherwise: small series want a small model."""
SERIES_TRAIN = {"lanes": 16, "window": 48, "epochs": 40, "lr": 3e-3, "eval_window": 512}
"""A series run's training settings unless told otherwise (the rest are `TrainConfig`'s defaults)."""
PREPARATION = ("diff", "seasonal_diff", "deseason", "scale")
"""The fields training chooses on validation when they are left as None."""


@dataclass
class ForecastSpec:
    """What to forecast and how the series are prepared (saved in the run's config.json).

    Attributes:
        horizon: steps forecast from each origin (the width of the model's output head).
        season: the main seasonal period in steps (24 for hourly data with a daily cycle; 1 for none),
            used by seasonal naive and MASE; "auto" takes the natural periods of the data's
            frequency (`natural_seasons`) when training starts.
        seasons: every seasonal period the model is given (phase inputs, seasonal differencing lags,
            decomposition), e.g. (48, 336) for half-hourly data with daily and weekly cycles; empty
            means just `season`. The first is `season`.
        diff: first differences applied before scaling (0, 1 or 2); None: chosen on validation.
        seasonal_diff: the lag of a seasonal difference applied first (0: none; True means `season`);
            None: chosen on validation among 0 and the seasons.
        deseason: subtract the seasonal profile an MSTL decomposition (statsmodels) finds in the
            training part before anything else, so the network models what the seasons leave
            (a hybrid in the manner of ES-RNN); None: chosen on validation.
        scale: "minmax" (to [-1, 1], suits tanh), "standard" or "none"; per series, on training
            values; None: chosen on validation.
        phase: add sin/cos of the position within each season as inputs.
        test_windows: rolling-origin test windows of `horizon` steps at the end of each series (0: no
            test part, every step up to validation is trained on).
        val_windows: windows before the test part used for model selection and interval calibration.
        interval: coverage of the conformal prediction interval (0 turns intervals off).
        features: extra numeric input columns.
    """

    horizon: int
    season: int | str = 1
    seasons: tuple[int, ...] = ()
    diff: int | None = 0
    seasonal_diff: int | bool | None = 0
    deseason: bool | None = False
    scale: str | None = "minmax"
    phase: bool = True
    test_windows: int = 4
    val_windows: int = 4
    interval: float = 0.8
    features: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("horizon", "val_windows"):
            _check_int(name, getattr(self, name), 1)
        _check_int("test_windows", self.test_windows, 0)
        if self.season != "auto":
            _check_int("season", self.season, 1)
            self.seasons = tuple(int(s) for s in (self.seasons or (self.season,)) if int(s) > 1)
            for s in self.seasons:
                _check_int("each season", s, 2)
            if self.seasons and self.season == 1:
                self.season = self.seasons[0]
            elif self.seasons and self.seasons[0] != self.season:
                self.seasons = (int(self.season), *(s for s in self.seasons if s != self.season))
            self.season = int(self.season)
        elif self.seasons:  # given seasons are not "auto"
            self.season = int(self.seasons[0])
            self.__post_init__()
            return
        if isinstance(self.seasonal_diff, bool | np.bool_) and self.season != "auto":  # True: the main season
            self.seasonal_diff = self.season if self.seasonal_diff else 0
        if self.seasonal_diff is not None and not isinstance(self.seasonal_diff, bool):
            _check_int("seasonal_diff", self.seasonal_diff, 0)
        if self.diff is not None and self.diff not in (0, 1, 2):
            raise ValueError(f"diff must be 0, 1 or 2 first differences (or None to choose), got {self.diff!r}")
        if self.scale is not None and self.scale not in SCALES:
            raise ValueError(f"scale={self.scale!r} is not one of {', '.join(SCALES)} (or None to choose)")
        if not 0 <= self.interval < 1:
            raise ValueError(f"interval must be a coverage in [0, 1), got {self.interval}")
        self.features = tuple(self.features)

    @classmethod
    def auto(cls, horizon: int, **fixed: object) -> ForecastSpec:
        """A spec whose seasons come from the data's frequency and whose preparation is chosen on
        validation, except for the fields given in `fixed`: what the command line does by default.

        >>> ForecastSpec.auto(24, diff=0).resolved
        False
        """
        return cls(horizon, **{"season": "auto", **dict.fromkeys(PREPARATION), **fixed})

    @property
    def period(self) -> int:
        """The cycle every season fits in (their least common multiple): positions repeat modulo it."""
        return math.lcm(*self.seasons) if self.seasons else 1

    @property
    def phases(self) -> tuple[int, ...]:
        """The seasons given to the model as sin/cos phase inputs."""
        return self.seasons if self.phase else ()

    @property
    def resolved(self) -> bool:
        """Whether every preparation choice is made (training resolves the rest on validation)."""
        return self.season != "auto" and all(getattr(self, k) is not None for k in PREPARATION)

    def with_seasons(self, freq: str | None) -> ForecastSpec:
        """This spec with season="auto" replaced by the natural periods of `freq`."""
        if self.season != "auto":
            return self
        found = natural_seasons(freq)
        return replace(self, season=found[0] if found else 1, seasons=found)

    def transform(self) -> Transform:
        """A new, unfitted `Transform` with this spec's preparation (every choice must be made)."""
        if not self.resolved:
            unset = [k for k in PREPARATION if getattr(self, k) is None]
            raise ValueError(f"the spec still has choices to make ({', '.join(unset) or 'season'}): train to choose")
        return Transform(
            seasonal_diff=self.seasonal_diff,
            diff=self.diff,
            scale=self.scale,
            deseason=self.seasons if self.deseason else (),
        )

    def max_offset(self) -> int:
        """The most leading values any preparation this spec allows can consume."""
        if self.resolved:
            return self.transform().offset
        lag = max(self.seasons, default=0) if self.seasonal_diff is None else int(self.seasonal_diff)
        return lag + (2 if self.diff is None else self.diff)

    def splits(self, series: Series, window: int) -> tuple[int, int]:
        """(val_start, test_start): where the validation and test parts of `series` begin."""
        test_start = len(series) - self.test_windows * self.horizon
        val_start = test_start - self.val_windows * self.horizon
        season = self.season if isinstance(self.season, int) else 1
        need = self.max_offset() + max(window, 2 * season, 2) + 1
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
        return rolling_origins(len(series), self.horizon, self.test_windows) if self.test_windows else np.zeros(0, int)

    def val_origins(self, series: Series, window: int) -> np.ndarray:
        """Every origin of the validation part whose window ends before the test part (one per step)."""
        val_start, test_start = self.splits(series, window)
        return rolling_origins(test_start, self.horizon, test_start - self.horizon + 1 - val_start, step=1)


def natural_seasons(freq: str | None) -> tuple[int, ...]:
    """The usual seasonal periods of a pandas frequency: (24, 168) hourly, (48, 336) half-hourly,
    (7,) daily, (5,) business days, (52,) weekly, (12,) monthly, (4,) quarterly; () when unknown.

    >>> natural_seasons("30min"), natural_seasons("h"), natural_seasons("MS"), natural_seasons(None)
    ((48, 336), (24, 168), (12,), ())
    """
    if freq is None:
        return ()
    try:
        with warnings.catch_warnings():  # pandas warns about deprecated aliases ("Y", "H") it still reads
            warnings.simplefilter("ignore", FutureWarning)
            offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        return ()
    name = offset.name.upper()
    if name.startswith("B"):
        return (5,) if offset.n == 1 else ()
    if name.startswith("W"):
        return (52,) if offset.n == 1 else ()
    if name.startswith(("M", "SM")) and not name.startswith("MIN"):
        return (12 // offset.n,) if 12 % offset.n == 0 and offset.n < 12 else ()
    if name.startswith(("Q", "BQ")):
        return (4,) if offset.n == 1 else ()
    try:
        step = pd.Timedelta(offset)
    except (ValueError, TypeError):
        return ()
    day = pd.Timedelta(days=1)
    if step >= day:
        return (7,) if step == day else ()
    per_day = day / step
    if per_day != int(per_day):
        return ()
    return (int(per_day), 7 * int(per_day))


def _check_int(name: str, v: object, least: int) -> None:
    if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
