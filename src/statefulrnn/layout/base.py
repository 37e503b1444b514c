"""What every layout shares: lazy batches gathered from `Sequences`, and the `describe()` picture."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .sequences import Batch, Sequences, gather


class Layout:
    """What every layout shares: lazy batches gathered from `Sequences`, and `describe()`."""

    stateful = True

    def __init__(self, sequences: Sequences, lanes: int, window: int) -> None:
        check_positive(lanes=lanes, window=window)
        self.sequences = sequences
        self.lanes = lanes
        self.window = window
        self.n_batches = 0

    def __len__(self) -> int:
        return self.n_batches

    def positions(self, k: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """Input positions (rows, window) into the flat data (-1 = padding), and the resets."""
        raise NotImplementedError

    def batch(self, k: int, epoch: int = 0) -> Batch:
        """Batch `k` of `epoch`, gathered from the data."""
        if not 0 <= k < self.n_batches:
            raise IndexError(f"batch {k} out of range: this layout has {self.n_batches} batches")
        pos, resets = self.positions(k, epoch)
        inputs, targets, mask = gather(self.sequences, pos)
        if resets is not None and not resets.any():
            resets = None
        return Batch(k, inputs, targets, mask, resets, pos)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The batches of one epoch in training order, from batch `start` (to resume mid-epoch)."""
        for k in range(start, self.n_batches):
            yield self.batch(k, epoch)

    def summary(self) -> str:
        raise NotImplementedError

    def describe(self, epoch: int = 0, max_batches: int = 4, max_lanes: int = 8) -> str:
        """A table of which part of which sequence lies in which lane of which batch.

        Cells read `s3[120:184]` (steps 120..183 of sequence 3); `*` marks a reset before the
        first step of a piece, `pad` is padding that the loss ignores.
        """
        ks = list(range(self.n_batches))
        if len(ks) > max_batches:
            ks = ks[: max_batches - 1] + [ks[-1]]
        cells = {}
        rows = 0
        for k in ks:
            pos, resets = self.positions(k, epoch)
            rows = max(rows, len(pos))
            for lane in range(min(len(pos), max_lanes)):
                cells[lane, k] = _describe_row(self.sequences, pos[lane], None if resets is None else resets[lane])
        head = ["lane" if self.stateful else "row"] + [f"batch {k}" for k in ks]
        table = [head]
        for lane in range(min(rows, max_lanes)):
            table.append([str(lane)] + [cells.get((lane, k), "") for k in ks])
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines = [self.summary(), ""]
        for r in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if len(ks) < self.n_batches:
            hidden = range(ks[-2] + 1, ks[-1])
            lines.append(f"(batch{'es' if len(hidden) > 1 else ''} {hidden[0]}..{hidden[-1]} not shown)")
        if rows > max_lanes:
            lines.append(f"({rows - max_lanes} more {'lanes' if self.stateful else 'rows'} not shown)")
        lines.append("s<d>[a:b] = steps a..b-1 of sequence d;  * = state reset before this step;  pad = masked padding")
        return "\n".join(lines)


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _describe_row(seqs: Sequences, pos: np.ndarray, resets: np.ndarray | None) -> str:
    doc = np.searchsorted(seqs.starts, pos, side="right") - 1
    parts = []
    t = 0
    while t < len(pos):
        if pos[t] < 0:
            u = t
            while u < len(pos) and pos[u] < 0:
                u += 1
            parts.append("pad" if u - t == len(pos) else f"pad{u - t}")
            t = u
            continue
        u = t + 1
        while u < len(pos) and pos[u] == pos[u - 1] + 1 and doc[u] == doc[t] and not (resets is not None and resets[u]):
            u += 1
        a = int(pos[t] - seqs.starts[doc[t]])
        mark = "*" if resets is not None and resets[t] else ""
        parts.append(f"{mark}s{doc[t]}[{a}:{a + u - t}]")
        t = u
    return " ".join(parts)
