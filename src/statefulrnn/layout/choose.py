"""Which layout a run trains and evaluates on, from its settings: the one place lanes are sized."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from .base import Layout
from .sequences import Sequences
from .stateful import ConcatLayout, PackLayout
from .stateless import StatelessLayout


class LayoutSettings(Protocol):
    """The training settings a layout depends on (`statefulrnn.train.TrainConfig` has them all)."""

    mode: str
    lanes: int
    window: int
    burn_in: int
    seed: int
    shuffle: bool
    reset_at_boundaries: bool


def training_layout(
    data: Sequences, config: LayoutSettings, *, pack: bool = False, max_length: int | None = None
) -> Layout:
    """The layout `config.mode` asks for: concat (or pack, for separate series) lanes, or stateless windows.

    `max_length` (pack only) cuts long series into pieces, so that a few long series fill many lanes.
    """
    if config.mode == "stateless":
        return StatelessLayout(data, config.lanes, config.window, burn_in=config.burn_in, seed=config.seed)
    if pack:
        return PackLayout(
            data, config.lanes, config.window, max_length=max_length, shuffle=config.shuffle, seed=config.seed
        )
    return ConcatLayout(
        data,
        config.lanes,
        config.window,
        reset_at_boundaries=config.reset_at_boundaries,
        shuffle=config.shuffle,
        seed=config.seed,
    )


def evaluation_layout(data: Sequences, lanes: int = 8, window: int = 256, *, pack: bool = False) -> Layout:
    """A stateful layout for evaluation, shrunk to fit short data (fewer lanes, shorter window)."""
    if pack:
        lanes = min(lanes, int((data.usable > 0).sum()))
        longest = int(data.usable.max())
        return PackLayout(data, max(lanes, 1), min(window, longest))
    total = int(data.usable.sum())
    lanes = max(1, min(lanes, total // 2))
    return ConcatLayout(data, lanes, min(window, total // lanes), reset_at_boundaries=True)


def pack_layout(data: Sequences, config: LayoutSettings) -> Layout:
    """The training layout of separate series (forecasting): whole series packed into lanes.

    A few long series would leave most lanes empty, so each series is cut into about
    `lanes / series` pieces (never shorter than a window; each piece starts with a reset).
    Stateful training then uses no more lanes than there are pieces (an empty lane is wasted
    work): read the lanes used from the returned layout's `lanes`.
    """
    per_series = max(1, math.ceil(config.lanes / data.count))
    longest = int(data.usable.max())
    max_length = max(config.window, math.ceil(longest / per_series)) if per_series > 1 else None
    usable = data.usable[data.usable > 0]
    pieces = int(np.ceil(usable / max_length).sum()) if max_length else len(usable)
    if config.mode == "stateful" and pieces < config.lanes:
        return PackLayout(data, pieces, config.window, max_length=max_length, shuffle=config.shuffle, seed=config.seed)
    return training_layout(data, config, pack=True, max_length=max_length)
