"""The stateful layouts: lane i of batch k+1 continues lane i of batch k."""

from __future__ import annotations

import math

import numpy as np

from .base import Layout, check_positive
from .sequences import ArrayLike, Sequences, as_sequences


class ConcatLayout(Layout):
    """Sequences back to back in one stream, cut into `lanes` contiguous lanes.

    Lane i holds steps [i*n, (i+1)*n) of the stream, n = usable // lanes; the last
    `usable % lanes` steps of the stream are dropped (`dropped`). Batch k is columns
    [k*window, (k+1)*window) of every lane; the last batch is padded to the window.
    A target is never taken across a sequence boundary. With `reset_at_boundaries`, the state
    is reset where a sequence starts inside a lane; otherwise state flows on across sequences.
    With `shuffle`, the sequence order in the stream is redrawn each epoch (seeded).
    """

    def __init__(
        self,
        data: ArrayLike | Sequences,
        lanes: int,
        window: int,
        *,
        targets: ArrayLike | None = None,
        reset_at_boundaries: bool = False,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(as_sequences(data, targets), lanes, window)
        self.reset_at_boundaries = reset_at_boundaries
        self.shuffle = shuffle
        self.seed = seed
        usable = self.sequences.usable
        total = int(usable.sum())
        if lanes > total:
            raise ValueError(f"lanes={lanes} is more than the {total} usable steps in the data: use fewer lanes")
        self.lane_length = total // lanes
        self.dropped = total - self.lane_length * lanes
        if window > self.lane_length:
            raise ValueError(
                f"window={window} is longer than each lane ({self.lane_length} steps = {total} steps / {lanes} lanes): "
                "use a smaller window or fewer lanes"
            )
        self.n_batches = math.ceil(self.lane_length / window)

    def order(self, epoch: int) -> np.ndarray:
        """The order of the sequences in the stream for `epoch`."""
        n = self.sequences.count
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def positions(self, k: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        order = self.order(epoch)
        usable = self.sequences.usable[order]
        cum = np.concatenate([[0], np.cumsum(usable)])
        col = k * self.window + np.arange(self.window)
        virtual = np.arange(self.lanes)[:, None] * self.lane_length + col[None, :]
        which = np.minimum(np.searchsorted(cum, virtual, side="right") - 1, len(order) - 1)
        offset = virtual - cum[which]
        pos = self.sequences.starts[order[which]] + offset
        valid = np.broadcast_to(col < self.lane_length, pos.shape)
        pos = np.where(valid, pos, -1)
        resets = (offset == 0) & valid if self.reset_at_boundaries else None
        return pos, resets

    def summary(self) -> str:
        s = self.sequences
        pad = self.n_batches * self.window - self.lane_length
        return (
            f"concat layout: {s.count} sequence(s), {int(s.usable.sum()):,} steps -> {self.lanes} lanes x "
            f"{self.lane_length:,} steps, window {self.window} -> {self.n_batches} batches"
            f" (last padded by {pad}); {self.dropped} step(s) dropped;"
            f" resets at boundaries: {'yes' if self.reset_at_boundaries else 'no'}"
        )


class PackLayout(Layout):
    """Whole sequences packed into lanes, each starting with a reset.

    Sequences are placed longest first, each on the currently shortest lane (with `shuffle`, in a
    seeded random order per epoch instead). A sequence longer than `max_length` is cut into pieces
    of at most that length, each starting from zero state. Lanes are padded to a whole number of
    windows (with `shuffle`, to the same width every epoch, so `len()` holds for all); padding is masked.
    """

    def __init__(
        self,
        data: ArrayLike | Sequences,
        lanes: int,
        window: int,
        *,
        targets: ArrayLike | None = None,
        max_length: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(as_sequences(data, targets), lanes, window)
        if max_length is not None:
            check_positive(max_length=max_length)
        self.shuffle = shuffle
        self.seed = seed
        usable = self.sequences.usable
        begins = self.sequences.starts[:-1]
        pieces = []
        for d in np.flatnonzero(usable):
            step = max_length or int(usable[d])
            for a in range(0, int(usable[d]), step):
                pieces.append((int(begins[d] + a), min(step, int(usable[d]) - a)))
        if not pieces:
            raise ValueError("no sequence has a step with a target: sequences need at least 2 steps")
        if lanes > len(pieces):
            raise ValueError(
                f"lanes={lanes} but there are only {len(pieces)} sequence piece(s) to pack: "
                "use fewer lanes, or set max_length to cut long sequences into more pieces"
            )
        self.pieces = np.array(pieces, dtype=np.int64)
        # Greedy placement (each piece on the shortest lane) never fills a lane beyond this, whatever the
        # order; shuffled epochs are all padded to it, so every epoch has the same number of batches.
        lengths = self.pieces[:, 1]
        self._max_fill = int((lengths.sum() - lengths.max()) // lanes + lengths.max())
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        pos, _ = self._pack(0)
        self.n_batches = pos.shape[1] // window
        fullest = int((pos >= 0).sum(axis=1).max())
        if window > fullest:
            raise ValueError(
                f"window={window} is longer than the fullest lane ({fullest} steps): "
                "use a smaller window or fewer lanes"
            )

    def _pack(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        key = epoch if self.shuffle else 0
        if key not in self._cache:
            lengths = self.pieces[:, 1]
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(lengths))
            else:
                order = np.argsort(-lengths, kind="stable")
            fill = np.zeros(self.lanes, dtype=np.int64)
            placed = []
            for p in order:
                lane = int(np.argmin(fill))
                placed.append((lane, int(fill[lane]), p))
                fill[lane] += lengths[p]
            width = math.ceil((self._max_fill if self.shuffle else fill.max()) / self.window) * self.window
            pos = np.full((self.lanes, width), -1, dtype=np.int64)
            resets = np.zeros((self.lanes, width), dtype=bool)
            for lane, at, p in placed:
                start, n = self.pieces[p]
                pos[lane, at : at + n] = np.arange(start, start + n)
                resets[lane, at] = True
            self._cache = {key: (pos, resets)}
        return self._cache[key]

    def positions(self, k: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        pos, resets = self._pack(epoch)
        cols = slice(k * self.window, (k + 1) * self.window)
        return pos[:, cols], resets[:, cols]

    def summary(self) -> str:
        pos, _ = self._pack(0)
        real = int((pos >= 0).sum())
        return (
            f"pack layout: {self.sequences.count} sequence(s) in {len(self.pieces)} piece(s), {real:,} steps -> "
            f"{self.lanes} lanes x {pos.shape[1]:,} steps, window {self.window} -> {self.n_batches} batches; "
            f"{pos.size - real:,} padded step(s) masked"
        )
