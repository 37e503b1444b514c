"""Independent, shuffled windows from zero state (optionally warmed on `burn_in` steps): the comparison."""

from __future__ import annotations

import math

import numpy as np

from .base import Layout, check_positive
from .sequences import ArrayLike, Batch, Sequences, as_sequences, take


class StatelessLayout(Layout):
    """The data cut into independent windows, shuffled, each starting from zero state.

    Every sequence is cut into consecutive windows (its last one padded). Each epoch the windows
    are shuffled (seeded) and grouped `batch_size` at a time. With `burn_in=N`, each batch also
    carries the N steps before each window (`context`, run without gradient to warm the state);
    `context_resets` marks where the context begins when fewer than N steps precede the window.
    """

    stateful = False

    def __init__(
        self,
        data: ArrayLike | Sequences,
        batch_size: int,
        window: int,
        *,
        targets: ArrayLike | None = None,
        burn_in: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        check_positive(batch_size=batch_size)
        super().__init__(as_sequences(data, targets), batch_size, window)
        if burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {burn_in}")
        self.burn_in = burn_in
        self.shuffle = shuffle
        self.seed = seed
        usable = self.sequences.usable
        begins = self.sequences.starts[:-1]
        firsts, lengths, doc_begin = [], [], []
        for d in np.flatnonzero(usable):
            a = np.arange(0, int(usable[d]), window)
            firsts.append(begins[d] + a)
            lengths.append(np.minimum(window, usable[d] - a))
            doc_begin.append(np.full(len(a), begins[d]))
        if not firsts:
            raise ValueError("no sequence has a step with a target: sequences need at least 2 steps")
        self.first = np.concatenate(firsts)
        self.length = np.concatenate(lengths)
        self.doc_begin = np.concatenate(doc_begin)
        if window > int(self.length.max()) and len(self.first) == 1:
            raise ValueError(
                f"window={window} is longer than the data ({int(self.length.max())} steps): use a smaller window"
            )
        self.n_batches = math.ceil(len(self.first) / batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The window order for `epoch`."""
        if not self.shuffle:
            return np.arange(len(self.first))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.first))

    def _rows(self, k: int, epoch: int) -> np.ndarray:
        return self.order(epoch)[k * self.lanes : (k + 1) * self.lanes]

    def positions(self, k: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        rows = self._rows(k, epoch)
        col = np.arange(self.window)
        pos = self.first[rows, None] + col
        return np.where(col < self.length[rows, None], pos, -1), None

    def batch(self, k: int, epoch: int = 0) -> Batch:
        b = super().batch(k, epoch)
        if self.burn_in:
            rows = self._rows(k, epoch)
            cpos = self.first[rows, None] - self.burn_in + np.arange(self.burn_in)
            valid = cpos >= self.doc_begin[rows, None]
            first_valid = valid & ~np.concatenate([np.zeros((len(rows), 1), bool), valid[:, :-1]], axis=1)
            b.context = take(self.sequences.data, np.where(valid, cpos, -1))
            b.context_resets = first_valid
            # a window at the very start of its sequence has no context: reset after the burn-in
            empty = ~valid.any(axis=1)
            if empty.any():
                b.resets = np.zeros(b.mask.shape, bool)
                b.resets[:, 0] = empty
        return b

    def summary(self) -> str:
        return (
            f"stateless layout: {self.sequences.count} sequence(s), {int(self.length.sum()):,} steps -> "
            f"{len(self.first)} windows of {self.window}, {self.lanes} per batch -> {self.n_batches} batches, "
            f"shuffled: {'yes' if self.shuffle else 'no'}, burn-in {self.burn_in}; every window starts from zero state"
        )
