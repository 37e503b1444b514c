"""Sequences stored back to back, and the (lanes, window) `Batch` cut from them. numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = np.ndarray | Sequence


@dataclass(frozen=True)
class Sequences:
    """Sequences stored back to back in one flat array.

    `data` is (N,) token ids or (N, features) floats; sequence d is `data[starts[d]:starts[d+1]]`.
    `targets`, when given, is aligned with `data` (what to predict at each step; NaN entries are
    missing and left out of the loss). Without it, the target of each step is the next step.
    """

    data: np.ndarray
    starts: np.ndarray
    targets: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    @property
    def shift(self) -> int:
        """Distance from an input position to its target position: 1 for next-step targets."""
        return 1 if self.targets is None else 0

    @property
    def usable(self) -> np.ndarray:
        """Steps of each sequence that have a target (all but the last one for next-step)."""
        return np.maximum(np.diff(self.starts) - self.shift, 0)


def as_sequences(
    data: ArrayLike | Sequences,
    targets: ArrayLike | None = None,
) -> Sequences:
    """Validate one array, or a list of arrays, as `Sequences` (a list means separate sequences).

    Raises ValueError naming the problem and its fix: empty data, ragged feature widths, NaN or
    infinite features, targets that do not line up with the data.
    """
    if isinstance(data, Sequences):
        return data
    if isinstance(data, np.ndarray):
        parts, target_parts = [data], None if targets is None else [np.asarray(targets)]
    else:
        parts = [np.asarray(p) for p in data]
        target_parts = None if targets is None else [np.asarray(t) for t in targets]
    if not parts or all(len(p) == 0 for p in parts):
        raise ValueError("data is empty: give at least one non-empty sequence")
    widths = {p.shape[1:] for p in parts}
    if len(widths) > 1:
        raise ValueError(
            f"sequences have ragged feature widths {sorted(widths)}: give every sequence the same features"
        )
    (width,) = widths
    if len(width) > 1:
        raise ValueError(
            f"each sequence must be (T,) tokens or (T, features) floats, got (T, {', '.join(map(str, width))})"
        )
    kind = parts[0].dtype.kind
    if kind == "f":
        for i, p in enumerate(parts):
            if not np.isfinite(p).all():
                row = int(np.argwhere(~np.isfinite(p.reshape(len(p), -1)).all(axis=1))[0, 0]) if p.size else 0
                raise ValueError(
                    f"sequence {i} has NaN or infinite values (first at step {row}): fill or drop them first"
                )
    elif kind not in "iu":
        raise ValueError(f"data must be integer token ids or floats, got dtype {parts[0].dtype}")
    elif any(p.size and p.min() < 0 for p in parts):
        raise ValueError("token ids must be non-negative")
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    flat_targets = None
    if target_parts is not None:
        if len(target_parts) != len(parts) or any(len(t) != len(p) for t, p in zip(target_parts, parts)):
            raise ValueError("targets must have one entry per step of every sequence (same lengths as data)")
        flat_targets = target_parts[0] if len(target_parts) == 1 else np.concatenate(target_parts)
    return Sequences(flat, starts, flat_targets)


@dataclass
class Batch:
    """One (lanes, window) batch.

    `mask` is True on real steps and False on padding (padding never counts in the loss).
    `resets` is None when no lane starts a new sequence inside this batch (the fast path);
    otherwise True where the state must be zeroed just before that step.
    `context`/`context_resets` hold the burn-in steps of a stateless batch (run without gradient).
    """

    index: int
    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    resets: np.ndarray | None
    positions: np.ndarray
    context: np.ndarray | None = None
    context_resets: np.ndarray | None = None


def take(array: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """array[pos] with zeros where pos is -1 (padding)."""
    out = np.asarray(array[np.maximum(pos, 0)])
    pad = pos < 0
    if pad.any():
        out = out.copy()
        out[pad] = 0
    return out


def gather(seqs: Sequences, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = pos >= 0
    inputs = take(seqs.data, pos)
    if seqs.targets is None:
        targets = take(seqs.data, np.where(mask, pos + 1, -1))
    else:
        targets = take(seqs.targets, pos)
    return inputs, targets, mask
