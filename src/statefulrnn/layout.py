"""Lane layouts: how sequences are cut into (lanes, window) batches for stateful training.

The contract every stateful layout keeps (the one Keras states for `stateful=True`): **lane i of
batch k+1 continues lane i of batch k**, so the state a lane ends a batch with is the right state to
start the next batch with. Three layouts:

- `ConcatLayout`: sequences back to back in one stream, the stream cut into `lanes` contiguous
  pieces (the classic language-model layout). Optionally resets at sequence boundaries.
- `PackLayout`: whole sequences packed into lanes (many series, many books), with a reset at the
  first step of each, so no state leaks from one sequence into the next.
- `StatelessLayout`: the same data as independent, shuffled windows that each start from zero
  state (optionally warmed up on the `burn_in` steps before them), for comparison.

Only numpy here: batches hold numpy arrays, gathered lazily from the (possibly memory-mapped)
data, so a corpus larger than memory can be laid out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
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


class Layout:
    """What every layout shares: lazy batches gathered from `Sequences`, and `describe()`."""

    stateful = True

    def __init__(self, sequences: Sequences, lanes: int, window: int) -> None:
        _check_positive(lanes=lanes, window=window)
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
        inputs, targets, mask = _gather(self.sequences, pos)
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
            _check_positive(max_length=max_length)
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
        _check_positive(batch_size=batch_size)
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
            b.context = _take(self.sequences.data, np.where(valid, cpos, -1))
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


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _take(array: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """array[pos] with zeros where pos is -1 (padding)."""
    out = np.asarray(array[np.maximum(pos, 0)])
    pad = pos < 0
    if pad.any():
        out = out.copy()
        out[pad] = 0
    return out


def _gather(seqs: Sequences, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = pos >= 0
    inputs = _take(seqs.data, pos)
    if seqs.targets is None:
        targets = _take(seqs.data, np.where(mask, pos + 1, -1))
    else:
        targets = _take(seqs.targets, pos)
    return inputs, targets, mask


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
