"""What differs between text and series runs at prediction time, in one place: `TextTask`, `SeriesTask`.

A task checks a client's inputs, turns one step request into model inputs plus a `finish` that turns
the model's outputs back into what the client gets, and says how much context a stream keeps beside
its state. `StreamingPredictor` holds one task and never asks which kind of run it serves.

    text    inputs: token ids or a string; outputs: next-token logits; no context
    series  inputs: raw values (rows [value, feature, ...] with features); outputs: forecasts of the
            next `horizon` values in original units; context: the series' name (or the transform fitted
            on a new stream's history), the last raw values differencing needs, and the position
            within the seasonal cycle
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .runs import Run
from .series.features import phase_features
from .series.transform import Transform
from .text.generate import prompt_ids

_LONGEST_FLOAT = -2.2250738585072014e-308  # the longest JSON spelling of a float64 (24 characters)

Finish = Callable[[np.ndarray], tuple[np.ndarray, str]]


@dataclass
class Prepared:
    """One request made ready for the model: (steps, n_inputs) inputs, and `finish(model outputs) ->
    (client outputs, the stream's new context JSON)`."""

    inputs: np.ndarray
    finish: Finish


class Task(Protocol):
    """The per-task half of serving a run."""

    name: str

    def check_inputs(self, x: Any) -> np.ndarray:
        """Validated inputs as an array, or a one-line ValueError saying what is wrong."""

    def prepare(self, inputs: np.ndarray, context: dict, **request: Any) -> Prepared:
        """Model inputs for checked `inputs` on a stream whose stored context is `context`; `request`
        holds the request's stream_id, series, position and fresh."""

    @property
    def max_context_bytes(self) -> int:
        """The longest context JSON a stream of this run can keep."""


def task_for(run: Run) -> Task:
    """The task of a loaded run; ValueError for a run that cannot be served."""
    if run.task == "text":
        return TextTask(run)
    if run.task == "series":
        return SeriesTask(run)
    raise ValueError(f"{run.path} is a {run.task!r} run; only text and series runs can be served")


class TextTask:
    """Token ids (or a string, tokenised with the run's vocabulary) in, next-token logits out."""

    name = "text"

    def __init__(self, run: Run) -> None:
        self.vocab = run.vocab

    max_context_bytes = 0

    def check_inputs(self, x: Any) -> np.ndarray:
        """int64 (T,) token ids inside the vocabulary."""
        size = len(self.vocab)
        if isinstance(x, str):
            if not x:
                raise ValueError("inputs is an empty string: give at least one token")
            return np.asarray(prompt_ids(self.vocab, x), dtype=np.int64)
        shape = f"a non-empty list of token ids (integers in 0..{size - 1}) or a string"
        if isinstance(x, np.ndarray):
            if x.ndim != 1 or x.size == 0 or x.dtype.kind not in "iu":
                raise ValueError(f"inputs must be {shape}; got an array of {x.dtype} shaped {list(x.shape)}")
            bad = (x < 0) | (x >= size)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ValueError(f"token id {x[k]} at step {k} is outside 0..{size - 1}")
            return x.astype(np.int64)
        if not isinstance(x, list | tuple) or not x:
            raise ValueError(f"inputs must be {shape}")
        for k, v in enumerate(x):  # one flat pass: no recursion into nested lists, however deep
            if not _is_int(v):
                raise ValueError(f"inputs must be {shape}; step {k} holds {_what(v)}")
            if not 0 <= v < size:
                shown = f"{v} " if abs(v) < 10**12 else ""
                raise ValueError(f"token id {shown}at step {k} is outside 0..{size - 1}")
        return np.asarray(x, dtype=np.int64)

    def prepare(self, inputs: np.ndarray, context: dict, **request: Any) -> Prepared:
        """Token ids go in as they are; logits come out as they are."""
        return Prepared(inputs, lambda z: (z, ""))


class SeriesTask:
    """Raw values in, forecasts of the next `horizon` values in original units out."""

    name = "series"

    def __init__(self, run: Run) -> None:
        self.spec, self.transforms = run.spec, run.transforms
        self.n_outputs = int(run.model.n_outputs)
        self.n_inputs = int(run.model.n_features)

    @property
    def raw_width(self) -> int:
        """Numbers per input step: the value, then the run's features."""
        return 1 + len(self.spec.features)

    @property
    def period(self) -> int:
        """The cycle of the phase inputs and seasonal profile (1 when the run has none): a stream keeps its
        position modulo it."""
        return self.spec.period if self.spec.phases or self.spec.deseason else 1

    def check_inputs(self, x: Any) -> np.ndarray:
        """float64 (T, raw_width) finite values."""
        width = self.raw_width
        shape = "a list of numbers (one per step)" if width == 1 else f"a list of rows of {width} numbers"
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "iuf":
                raise ValueError(f"inputs must be {shape}; got an array of {x.dtype}")
            a = x.astype(np.float64)
        elif isinstance(x, list | tuple) and x:
            _check_rows(x, shape)
            try:
                a = np.asarray(x, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):
                raise ValueError(
                    f"inputs must be {shape}; a number is out of range or the rows differ in length"
                ) from None
        else:
            raise ValueError(f"inputs must be {shape}")
        if a.ndim == 1 and width == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != width or len(a) == 0:
            raise ValueError(f"inputs must be {shape}; got shape {list(a.shape)}")
        if not np.isfinite(a).all():
            raise ValueError(
                f"inputs hold a non-finite number at step {int(np.flatnonzero(~np.isfinite(a))[0] // width)}"
            )
        return a

    @property
    def max_context_bytes(self) -> int:
        """The series name, the transform with every number at its longest, `offset` tail values, the phase."""
        longest = max(self.transforms, key=lambda n: len(json.dumps(n)), default=None)
        fresh = self.spec.transform()  # the shape of a transform fitted on a new stream's history
        fresh.center, fresh.spread = 0.0, 1.0
        if self.spec.features:
            fresh.feature_center = fresh.feature_spread = np.zeros(len(self.spec.features))
        if fresh.deseason:
            fresh.profile = np.zeros(self.spec.period)
        candidates = [fresh, *self.transforms.values()]
        worst = 0
        for t in candidates:
            d = {k: _longest_numbers(v) for k, v in t.to_dict().items()}
            context = {"series": longest, "transform": d, "tail": [_LONGEST_FLOAT] * t.offset}
            worst = max(worst, len(json.dumps({**context, "position": self.period - 1})))
        return worst

    def transform_for(
        self,
        inputs: np.ndarray,
        context: dict,
        *,
        stream_id: str,
        series: str | None,
        fresh: bool,
        position: int | None = None,
    ) -> tuple[str | None, Transform]:
        """The stream's transform: kept in its context, a trained series', or (warm-up) fitted on the inputs."""
        if "transform" in context:
            return context.get("series"), Transform.from_dict(context["transform"])
        if context.get("series") in self.transforms:
            return context["series"], self.transforms[context["series"]]
        name = series
        if name is None and stream_id in self.transforms:
            name = stream_id
        if name is None and len(self.transforms) == 1:
            name = next(iter(self.transforms))
        if name is not None:
            if name not in self.transforms:
                known = ", ".join(sorted(self.transforms)[:10])
                raise ValueError(f"series '{name}' is not a series of the run (it has: {known})")
            return name, self.transforms[name]
        if not fresh:
            raise ValueError(
                f"stream '{stream_id}' is not a series of the run: give 'series' (a trained series whose "
                "transform to use) or warm the stream up on a history first"
            )
        values, feats = inputs[:, 0], inputs[:, 1:] if inputs.shape[1] > 1 else None
        return None, self.spec.transform().fit(values, feats, int(position or 0))

    def prepare(
        self,
        inputs: np.ndarray,
        context: dict,
        *,
        stream_id: str,
        series: str | None,
        position: int | None,
        fresh: bool,
    ) -> Prepared:
        """Transformed values, scaled features and phase of the steps differencing leaves (as in training)."""
        position = int(context.get("position", position or 0)) % self.period
        name, transform = self.transform_for(
            inputs, context, stream_id=stream_id, series=series, fresh=fresh, position=position
        )
        raw, offset = inputs, transform.offset
        tail = np.asarray(context.get("tail", []), dtype=np.float64)
        start = position - len(tail)  # the position of values[0]
        values = np.concatenate([tail, raw[:, 0]])
        m = max(0, len(raw) - max(0, offset - len(tail)))  # the steps with a full differencing history
        x = np.empty((0, self.n_inputs), np.float32)
        if m:
            with np.errstate(over="ignore", invalid="ignore"):
                x = self._features(transform, values, raw, m, position, start)
        if not np.isfinite(x).all():
            raise ValueError("inputs are too large for the model once transformed (they overflow float32)")
        new_context = {
            "series": name,
            "tail": values[len(values) - min(offset, len(values)) :].tolist() if offset else [],
            "position": (position + len(raw)) % self.period,
        }
        if name is None:  # a stream's own transform; a run series' is the run's
            new_context["transform"] = transform.to_dict()
        origins = len(tail) + np.arange(len(raw) - m, len(raw)) + 1

        def finish(z: np.ndarray) -> tuple[np.ndarray, str]:
            out = np.full((len(raw), self.n_outputs), np.nan)  # NaN: differencing still fills its history
            if m:
                with np.errstate(over="ignore", invalid="ignore"):
                    out[len(raw) - m :] = transform.inverse_at(z.astype(np.float64), values, origins, start)
            return out, json.dumps(new_context)

        return Prepared(x, finish)

    def _features(
        self, transform: Transform, values: np.ndarray, raw: np.ndarray, m: int, position: int, start: int
    ) -> np.ndarray:
        """(m, n_inputs) inputs of the last `m` raw steps; `start` is the position of values[0]."""
        spec, offset = self.spec, transform.offset
        columns = [transform.transform(values, start)[len(values) - offset - m :, None]]
        if len(spec.features):
            padded = np.vstack([np.zeros((offset, raw.shape[1] - 1)), raw[-m:, 1:]])  # features are not differenced
            columns.append(transform.transform_features(padded))
        if spec.phases:
            columns.append(phase_features(position + len(raw) - m, spec.phases, m))
        return np.concatenate(columns, axis=1).astype(np.float32)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _what(v: Any) -> str:
    """A short name for what a client sent where a number was expected (never the value itself)."""
    if isinstance(v, bool | np.bool_):
        return "a boolean"
    if isinstance(v, list | tuple):
        return "a list"
    return "null" if v is None else f"a {type(v).__name__}"


def _check_rows(x: Sequence, shape: str) -> None:
    """Series inputs hold numbers, or rows of numbers, and nothing deeper: checked in two flat loops,
    so a deeply nested list is refused at its second level rather than recursed into."""
    rows = isinstance(x[0], list | tuple)
    for k, v in enumerate(x):
        if not rows:
            if not _is_number(v):
                raise ValueError(f"inputs must be {shape}; step {k} holds {_what(v)}")
            continue
        if not isinstance(v, list | tuple):
            raise ValueError(f"inputs must be {shape}; step {k} holds {_what(v)}, not a row")
        for u in v:
            if not _is_number(u):
                raise ValueError(f"inputs must be {shape}; the row of step {k} holds {_what(u)}")


def _longest_numbers(v: Any) -> Any:
    """A transform field with every float at its longest JSON spelling."""
    if isinstance(v, float):
        return _LONGEST_FLOAT
    if isinstance(v, list):
        return [_LONGEST_FLOAT] * len(v)
    return v
