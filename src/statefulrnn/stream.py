"""StreamingPredictor: many live streams of one trained run, each with its own carried state.

Each stream (a sensor, a user, a chat) keeps one lane of recurrent state in a `StateStore`. A step
request advances a stream by one or more time steps. `apply` advances many streams at once: their
states are gathered into the lanes of one batch, the engine runs once per distinct step count
(requests of one step each, the usual case, make one call), and the lanes are scattered back and
committed to the store together, atomically.

Exactly once: a stream's `seq` is the number its next step request must carry. A request carrying
the previous seq with the same inputs is a retry and gets the stored outputs of that request
without touching the state; any other seq is a `SeqConflict` that names the expected one. Writes
are compare-and-set on the record's version, so processes sharing a store cannot lose or double a
step; a request whose stream moved under it is re-read and re-planned.

Inputs: text runs take token ids (or a string, tokenised with the run's vocabulary); series runs take
raw values, one per step (or rows `[value, feature, ...]` when the run has features). Series streams
keep the run's transform, the last raw values that differencing needs and the phase within the season,
so their outputs are forecasts of the next `horizon` values in original units.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .engines import Engine, select_engine
from .engines.torch import TorchEngine  # noqa: F401  (re-exported: the default engine)
from .state import State
from .stores import StateStore, StreamRecord, open_store

_SNAPSHOT = b"SRNNSNAP"
_SNAPSHOT_HEADER = struct.Struct("<8sI")


@dataclass
class StepRequest:
    """Advance `stream_id` by the steps in `inputs` (as returned by `check_inputs`).

    `seq` None applies the request at whatever seq the stream is at (no retry detection). Series
    runs only: `series` names the trained series whose transform a new stream uses; `position` is the
    phase (step index within the season) of a new stream's first input. `fresh` starts the stream
    over from zero state and a new context (warm-up), fitting a transform on the inputs if needed.
    """

    stream_id: str
    inputs: np.ndarray
    seq: int | None = None
    series: str | None = None
    position: int | None = None
    fresh: bool = False

    @property
    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.inputs.dtype.str}{self.inputs.shape}{self.series}{self.position}{self.fresh}".encode())
        h.update(np.ascontiguousarray(self.inputs).tobytes())
        return h.hexdigest()


@dataclass
class StepResult:
    """The outputs (steps, n_outputs) of a committed (or, `replayed`, an earlier) request, and the new seq."""

    stream_id: str
    outputs: np.ndarray
    seq: int
    steps: int
    replayed: bool = False


@dataclass(frozen=True)
class StreamInfo:
    """Where a stream stands."""

    stream_id: str
    seq: int
    steps: int
    updated_at: float


class SeqConflict(ValueError):
    """A step request's seq is neither the stream's next one nor a retry of its last one."""

    def __init__(self, stream_id: str, got: int, expected: int, why: str = "") -> None:
        self.stream_id, self.got, self.expected = stream_id, got, expected
        why = why or ("it was already applied" if got < expected else "earlier requests are missing")
        super().__init__(f"stream '{stream_id}' expects seq {expected}, got {got}: {why}")


class UnknownStream(LookupError):
    """The store holds no stream with this id."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"no stream '{stream_id}'")


class Contention(RuntimeError):
    """The stream kept changing under this request (other writers); try again."""


@dataclass
class _Lane:
    state: State
    inputs: np.ndarray
    finish: Callable[[np.ndarray], tuple[np.ndarray, str]]
    record: StreamRecord


class StreamingPredictor:
    """Serve the streams of a run directory (a text or series run) from a state store.

    Args:
        run: run directory.
        store: a `StateStore` or store URL; default: an in-memory store.
        device: where the model runs.
        engine: "torch", "onnx" or "auto" (see `engines.select_engine`), or a ready `Engine`.
        max_rounds: how often a request is re-planned when other writers move its stream.
    """

    def __init__(
        self,
        run: str | Path,
        store: StateStore | str | None = None,
        *,
        device: str = "cpu",
        engine: Engine | str = "torch",
        max_rounds: int = 16,
    ) -> None:
        self.run = Path(run)
        config = ckpt.read_config(self.run)
        self.task = config.get("task")
        self.vocab = self.spec = None
        self.transforms: dict = {}
        self.intervals: dict = {}
        if self.task == "text":
            from .textlm import load_text_run

            model, self.vocab, self.config = load_text_run(self.run, device)
        elif self.task == "series":
            from .forecast import load_series_run, read_intervals

            model, self.spec, self.transforms, self.config = load_series_run(self.run, device)
            self.intervals = read_intervals(self.run)
        else:
            raise ValueError(f"{self.run} is a {self.task!r} run; only text and series runs can be served")
        self.model = model
        self.engine: Engine = select_engine(engine, model, device) if isinstance(engine, str) else engine
        self.n_outputs = int(model.n_outputs)
        self.max_rounds = max_rounds
        self._zero = State.zeros(model.cell, model.num_layers, 1, model.hidden_size)
        self.store = open_store(store) if isinstance(store, str) else store
        if self.store is None:
            from .stores.memory import MemoryStore

            self.store = MemoryStore()
        self.store.bind_model(self.fingerprint())

    def fingerprint(self) -> str:
        """A hash of the run's model config and weights: states are only meaningful for this model."""
        h = hashlib.sha256(json.dumps(self.config["model"], sort_keys=True).encode())
        h.update((self.run / ckpt.WEIGHTS).read_bytes())
        return h.hexdigest()

    # --- inputs --------------------------------------------------------------------------------
    @property
    def raw_width(self) -> int:
        """Series runs: numbers per input step (the value, then the run's features)."""
        return 1 + len(self.spec.features) if self.spec is not None else 1

    def check_inputs(self, x: Any) -> np.ndarray:
        """Validate client inputs: int64 (T,) token ids for text runs, float64 (T, raw_width) for series.

        Raises ValueError saying what is wrong (shape, non-finite numbers, ids outside the vocabulary).
        """
        if self.task == "text":
            return self._check_tokens(x)
        return self._check_values(x)

    def _check_tokens(self, x: Any) -> np.ndarray:
        from .generate import prompt_ids

        if isinstance(x, str):
            if not x:
                raise ValueError("inputs is an empty string: give at least one token")
            return np.asarray(prompt_ids(self.vocab, x), dtype=np.int64)
        if isinstance(x, list | tuple) and any(isinstance(v, bool) for v in x):
            raise ValueError("inputs must be token ids (integers), not booleans")
        try:
            a = np.asarray(x)
        except (ValueError, TypeError):
            a = np.asarray([None])
        size = len(self.vocab)
        if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
            raise ValueError(f"inputs must be a non-empty list of token ids (integers in 0..{size - 1}) or a string")
        bad = (a < 0) | (a >= size)
        if bad.any():
            raise ValueError(f"token id {a[bad][0]} at step {int(np.flatnonzero(bad)[0])} is outside 0..{size - 1}")
        return a.astype(np.int64)

    def _check_values(self, x: Any) -> np.ndarray:
        width = self.raw_width
        shape = "a list of numbers (one per step)" if width == 1 else f"a list of rows of {width} numbers"
        if isinstance(x, str | bytes) or (isinstance(x, list | tuple) and _has_bool(x)):
            raise ValueError(f"inputs must be {shape}")
        try:
            a = np.asarray(x, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(f"inputs must be {shape}") from None
        if a.ndim == 1 and width == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != width or len(a) == 0:
            raise ValueError(f"inputs must be {shape}; got shape {list(np.shape(a))}")
        if not np.isfinite(a).all():
            raise ValueError(
                f"inputs hold a non-finite number at step {int(np.flatnonzero(~np.isfinite(a))[0] // width)}"
            )
        return a

    # --- stepping --------------------------------------------------------------------------------
    def step(self, stream_id: str, x: Any, *, seq: int | None = None) -> np.ndarray:
        """Advance one stream by the steps in `x`; its outputs (steps, n_outputs)."""
        return self.step_many({stream_id: x}, seqs=None if seq is None else {stream_id: seq})[stream_id]

    def step_many(self, inputs: Mapping[str, Any], *, seqs: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Advance many streams in one fused model call per distinct step count; raises the first error."""
        requests = [
            StepRequest(i, self.check_inputs(x), None if seqs is None else seqs.get(i)) for i, x in inputs.items()
        ]
        out = {}
        for r in self.apply(requests):
            if isinstance(r, Exception):
                raise r
            out[r.stream_id] = r.outputs
        return out

    def warm_up(
        self,
        stream_id: str,
        history: Any,
        *,
        series: str | None = None,
        position: int | None = None,
        seq: int | None = None,
    ) -> np.ndarray:
        """Start a stream over on a history in one call; its outputs (the last row: the prediction after it).

        Series runs: `history` may be a `Series` (its timestamps give the phase); a stream that is
        neither a trained series nor given one gets a transform fitted on this history.
        """
        from .series_data import Series

        if isinstance(history, Series):
            position = _first_position(history, self.spec.season) if position is None else position
            values = history.values if history.features is None else np.column_stack([history.values, history.features])
            series = series or (history.id if history.id in self.transforms else None)
            history = values
        request = StepRequest(stream_id, self.check_inputs(history), seq, series, position, fresh=True)
        result = self.apply([request])[0]
        if isinstance(result, Exception):
            raise result
        return result.outputs

    def apply(self, requests: Sequence[StepRequest]) -> list[StepResult | Exception]:
        """Apply step requests exactly once, committing all of them in one store transaction per round.

        Returns, per request, a `StepResult`, a `SeqConflict`, a ValueError about its inputs, or
        `Contention`. Store errors propagate.
        """
        results: list[StepResult | Exception | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        for _ in range(self.max_rounds):
            if not pending:
                break
            now, later, seen = [], [], set()
            for i in pending:
                (later if requests[i].stream_id in seen else now).append(i)
                seen.add(requests[i].stream_id)
            records = self.store.get_many(seen)
            planned = self._run(requests, now, records, results)
            failed = self.store.commit({requests[i].stream_id: rec for i, (rec, _) in planned.items()})
            for i, (_, result) in planned.items():
                if requests[i].stream_id in failed:
                    later.append(i)
                else:
                    results[i] = result
            pending = sorted(later)
        for i in pending:
            results[i] = Contention(f"stream '{requests[i].stream_id}' kept changing under this request; retry it")
        return results

    def _run(
        self,
        requests: Sequence[StepRequest],
        indexes: list[int],
        records: Mapping[str, StreamRecord],
        results: list,
    ) -> dict[int, tuple[StreamRecord, StepResult]]:
        """Check seqs, run the fused model calls, and build each stream's next record and result."""
        lanes: dict[int, _Lane] = {}
        for i in indexes:
            req = requests[i]
            record = records.get(req.stream_id) or StreamRecord(version=0)
            if req.seq is not None and req.seq != record.seq:
                results[i] = self._replay_or_conflict(req, record)
                continue
            try:
                lanes[i] = self._prepare(req, record)
            except ValueError as e:
                results[i] = e
        by_length: dict[int, list[int]] = {}
        for i, lane in lanes.items():
            by_length.setdefault(len(lane.inputs), []).append(i)
        model_out: dict[int, tuple[np.ndarray, bytes | None]] = {}
        for length, group in by_length.items():
            if length == 0:
                for i in group:
                    model_out[i] = (np.empty((0, self.n_outputs), np.float32), lanes[i].state.to_bytes())
                continue
            states = State.concat([lanes[i].state for i in group])
            x = torch.from_numpy(np.stack([lanes[i].inputs for i in group]))
            outputs, new = self.engine.step(states, x)
            outputs = outputs.numpy()
            for k, i in enumerate(group):
                model_out[i] = (outputs[k], new.select(slice(k, k + 1)).to_bytes())
        planned = {}
        for i, (z, state) in model_out.items():
            req, lane = requests[i], lanes[i]
            try:
                outputs, context = lane.finish(z)
            except ValueError as e:
                results[i] = e
                continue
            with np.errstate(over="ignore"):
                outputs = outputs.astype(np.float32)
            steps = (0 if req.fresh else lane.record.steps) + len(req.inputs)
            record = lane.record.successor(
                seq=lane.record.seq + 1,
                steps=steps,
                state=state,
                context=context,
                outputs=outputs.tobytes(),
                digest=req.digest,
            )
            planned[i] = (record, StepResult(req.stream_id, outputs, record.seq, steps))
        return planned

    def _replay_or_conflict(self, req: StepRequest, record: StreamRecord) -> StepResult | SeqConflict:
        if req.seq == record.seq - 1 and record.outputs:
            if record.digest == req.digest:
                outputs = np.frombuffer(record.outputs, np.float32).reshape(-1, self.n_outputs).copy()
                return StepResult(req.stream_id, outputs, record.seq, record.steps, replayed=True)
            return SeqConflict(req.stream_id, req.seq, record.seq, "that seq was already used with other inputs")
        return SeqConflict(req.stream_id, req.seq, record.seq)

    def _prepare(self, req: StepRequest, record: StreamRecord) -> _Lane:
        state = self._zero if req.fresh or record.state is None else self._state(record.state)
        if self.task == "text":
            return _Lane(state, req.inputs, lambda z: (z, ""), record)
        context = {} if req.fresh or not record.context else json.loads(record.context)
        return self._prepare_series(req, record, state, context)

    def _state(self, data: bytes) -> State:
        state = State.from_bytes(data)
        if (state.kind, state.num_layers, state.lanes, state.hidden_size) != (
            self._zero.kind,
            self._zero.num_layers,
            1,
            self._zero.hidden_size,
        ):
            raise ValueError(f"the stored state is a {state.kind} {tuple(state.h.shape)} state, not one of this model")
        return state

    # --- series streams ------------------------------------------------------------------------
    def _transform_for(self, req: StepRequest, context: dict) -> tuple[str | None, Any]:
        from .series_transform import Transform

        if "transform" in context:
            return context.get("series"), Transform.from_dict(context["transform"])
        name = req.series
        if name is None and req.stream_id in self.transforms:
            name = req.stream_id
        if name is None and len(self.transforms) == 1:
            name = next(iter(self.transforms))
        if name is not None:
            if name not in self.transforms:
                known = ", ".join(sorted(self.transforms)[:10])
                raise ValueError(f"series '{name}' is not a series of the run (it has: {known})")
            return name, self.transforms[name]
        if not req.fresh:
            raise ValueError(
                f"stream '{req.stream_id}' is not a series of the run: give 'series' (a trained series whose "
                "transform to use) or warm the stream up on a history first"
            )
        values, feats = req.inputs[:, 0], req.inputs[:, 1:] if req.inputs.shape[1] > 1 else None
        return None, self.spec.transform().fit(values, feats)

    def _prepare_series(self, req: StepRequest, record: StreamRecord, state: State, context: dict) -> _Lane:
        name, transform = self._transform_for(req, context)
        raw = req.inputs
        offset = transform.offset
        tail = np.asarray(context.get("tail", []), dtype=np.float64)
        position = int(context.get("position", req.position or 0))
        values = np.concatenate([tail, raw[:, 0]])
        m = max(0, len(raw) - max(0, offset - len(tail)))
        inputs = np.empty((0, self.model.n_features), np.float32)
        if m:
            with np.errstate(over="ignore", invalid="ignore"):
                inputs = self._series_features(transform, values, raw, m, position)
        if not np.isfinite(inputs).all():
            raise ValueError("inputs are too large for the model once transformed (they overflow float32)")
        context = {
            "series": name,
            "transform": transform.to_dict(),
            "tail": values[len(values) - min(offset, len(values)) :].tolist() if offset else [],
            "position": position + len(raw),
        }
        origins = len(tail) + np.arange(len(raw) - m, len(raw)) + 1

        def finish(z: np.ndarray) -> tuple[np.ndarray, str]:
            out = np.full((len(raw), self.n_outputs), np.nan)
            if m:
                with np.errstate(over="ignore", invalid="ignore"):
                    out[len(raw) - m :] = transform.inverse_at(z.astype(np.float64), values, origins)
            return out, json.dumps(context)

        return _Lane(state, inputs, finish, record)

    def _series_features(
        self, transform: Any, values: np.ndarray, raw: np.ndarray, m: int, position: int
    ) -> np.ndarray:
        """Model inputs of the last `m` raw steps: transformed value, scaled features, phase (as in training)."""
        spec, offset = self.spec, transform.offset
        columns = [transform.transform(values)[len(values) - offset - m :, None]]
        if len(spec.features):
            padded = np.vstack([np.zeros((offset, raw.shape[1] - 1)), raw[-m:, 1:]])  # features are not differenced
            columns.append(transform.transform_features(padded))
        if spec.phase and spec.season > 1:
            angle = 2 * np.pi * np.mod(position + np.arange(len(raw) - m, len(raw)), spec.season) / spec.season
            columns.append(np.column_stack([np.sin(angle), np.cos(angle)]))
        return np.concatenate(columns, axis=1).astype(np.float32)

    # --- whole streams -----------------------------------------------------------------------------
    def info(self, stream_id: str) -> StreamInfo | None:
        """The stream's seq, steps and last update, or None if the store has no such stream."""
        record = self.store.get(stream_id)
        return None if record is None else StreamInfo(stream_id, record.seq, record.steps, record.updated_at)

    def reset(self, stream_id: str) -> StreamInfo:
        """Zero a stream's state (a new, unrelated sequence starts); seq is kept, steps restart at 0."""

        def change(record: StreamRecord) -> StreamRecord:
            context = json.loads(record.context) if record.context else {}
            context.pop("tail", None)
            return record.successor(state=None, steps=0, outputs=None, digest="", context=_dumps(context))

        record = self._update(stream_id, change)
        return StreamInfo(
            stream_id, 0 if record is None else record.seq, 0, 0.0 if record is None else record.updated_at
        )

    def forget(self, stream_id: str) -> bool:
        """Delete a stream; its next step request starts over at seq 0. False if it did not exist."""
        return self.store.delete(stream_id)

    def snapshot(self, stream_id: str) -> bytes:
        """The stream as bytes: seq, steps and context as JSON, then its `State.to_bytes()`."""
        record = self.store.get(stream_id)
        if record is None:
            raise ValueError(f"no stream '{stream_id}'")
        head = json.dumps({"seq": record.seq, "steps": record.steps, "context": record.context}).encode()
        state = record.state or self._zero.to_bytes()
        return _SNAPSHOT_HEADER.pack(_SNAPSHOT, len(head)) + head + state

    def restore(self, stream_id: str, data: bytes) -> StreamInfo:
        """Set a stream from `snapshot` bytes, or its state only from bare `State.to_bytes()` bytes."""
        data = bytes(data)
        fields: dict[str, Any] = {}
        if data[:8] == _SNAPSHOT:
            if len(data) < _SNAPSHOT_HEADER.size:
                raise ValueError("snapshot bytes are truncated")
            _, n = _SNAPSHOT_HEADER.unpack_from(data)
            try:
                fields = json.loads(data[_SNAPSHOT_HEADER.size : _SNAPSHOT_HEADER.size + n])
                fields = {"seq": int(fields["seq"]), "steps": int(fields["steps"]), "context": str(fields["context"])}
            except (ValueError, KeyError, TypeError):
                raise ValueError("snapshot bytes are corrupt: bad header") from None
            data = data[_SNAPSHOT_HEADER.size + n :]
        state = self._state(data).to_bytes()
        record = self._update(
            stream_id, lambda r: r.successor(state=state, outputs=None, digest="", **fields), create=True
        )
        return StreamInfo(stream_id, record.seq, record.steps, record.updated_at)

    def _update(
        self, stream_id: str, change: Callable[[StreamRecord], StreamRecord], create: bool = False
    ) -> StreamRecord | None:
        for _ in range(self.max_rounds):
            record = self.store.get(stream_id)
            if record is None and not create:
                return None
            new = change(record or StreamRecord(version=0))
            if not self.store.commit({stream_id: new}):
                return new
        raise Contention(f"stream '{stream_id}' kept changing under this update; retry it")

    # --- one-off predictions ---------------------------------------------------------------------
    def forecast(
        self, history: Any, *, series: str | None = None, horizon: int | None = None, position: int | None = None
    ) -> dict[str, list[float]]:
        """Series runs: the forecast after a history (raw values), warming a scratch state in one call;
        `lo`/`hi` too when the run calibrated intervals for `series`."""
        if self.task != "series":
            raise ValueError("forecast needs a series run; this is a text run")
        horizon = horizon or self.spec.horizon
        if not 1 <= horizon <= self.spec.horizon:
            raise ValueError(
                f"horizon {horizon} is outside 1..{self.spec.horizon}, the horizon the run was trained for"
            )
        req = StepRequest("forecast", self.check_inputs(history), series=series, position=position, fresh=True)
        lane = self._prepare(req, StreamRecord(version=0))
        if len(lane.inputs) == 0:
            raise ValueError("the history is too short: the run's differencing consumes all of it")
        z, _ = self.engine.step(lane.state, torch.from_numpy(lane.inputs[None]))
        outputs, context = lane.finish(z[0].numpy())
        f = outputs[-1, :horizon]
        out = {"forecast": f.tolist()}
        name = json.loads(context).get("series")
        if name in self.intervals:
            band = np.asarray(self.intervals[name])[:horizon]
            out.update(lo=(f + band[:, 0]).tolist(), hi=(f + band[:, 1]).tolist())
        return out

    def generate(self, prompt: str, n: int, **sampling: Any) -> str:
        """Text runs: `n` tokens sampled after `prompt` (see `generate.generate` for the sampling options)."""
        if self.task != "text":
            raise ValueError("generate needs a text run; this is a series run")
        from .generate import generate

        return "".join(generate(self.model, self.vocab, prompt, n, **sampling))


def _has_bool(x: Sequence) -> bool:
    return any(isinstance(v, bool) or (isinstance(v, list | tuple) and _has_bool(v)) for v in x)


def _dumps(context: dict) -> str:
    return json.dumps(context) if context else ""


def _first_position(series: Any, season: int) -> int:
    """The phase index of a series' first step, as `forecast.phase_features` counts it."""
    if series.freq is not None:
        import pandas as pd

        try:
            return int(pd.DatetimeIndex(series.timestamps[:1]).to_period(series.freq).asi8[0]) % season
        except (ValueError, TypeError, AttributeError):
            pass
    return 0


def json_rows(outputs: np.ndarray) -> list[list[float | None]]:
    """Outputs as JSON-safe lists: NaN (no prediction yet) and overflowed values become None."""
    outputs = np.asarray(outputs)
    if np.isfinite(outputs).all():
        return outputs.tolist()
    return [[v if math.isfinite(v) else None for v in row] for row in outputs.tolist()]
