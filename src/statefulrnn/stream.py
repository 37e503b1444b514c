"""StreamingPredictor: many live streams of one trained run, each with its own carried state.

Each stream (a sensor, a user, a chat) keeps one lane of recurrent state in a `StateStore`. A step
request advances a stream by one or more time steps. `apply` advances many streams at once: their
states are gathered into the lanes of one batch, the engine runs once per distinct step count
(requests of one step each, the usual case, make one call), and the lanes are scattered back and
committed to the store together, atomically.

Exactly once: a stream's `seq` is the number its next step request must carry. A request carrying
the previous seq with the same inputs is a retry and gets the outputs of that request again without
touching the state; any other seq is a `SeqConflict` that names the expected one. Writes are
compare-and-set on the record's version, so processes sharing a store cannot lose or double a step;
a request whose stream moved under it is re-read and re-planned.

What a stream keeps is bounded by the model, not by its requests (`max_record_bytes`): not the last
request's outputs but the state and context from before it, and its digest. A retry recomputes its
outputs from them in a fused call as wide as the original's: the same bits on one CPU thread.
What the inputs and outputs of a text or a series run are is the task's business (`tasks.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .engines import Engine, select_engine
from .engines.torch import TorchEngine  # noqa: F401  (re-exported: the default engine)
from .requests import (  # noqa: F401  (re-exported: the names a caller of `apply` handles)
    Contention,
    SeqConflict,
    StepRequest,
    StepResult,
    StreamInfo,
    UnknownStream,
    json_rows,
    pack_snapshot,
    unpack_snapshot,
)
from .runs import Run, load_run, weights_bytes
from .series.data import Series
from .series.features import first_position
from .state import State
from .stores import StateStore, StreamRecord, open_store
from .stores.base import RECORD_FIXED_BYTES
from .tasks import Task, task_for
from .text.generate import generate

_DIGEST_CHARS = 32  # StepRequest.digest: 16 bytes as hex
_NO_REPLAY = {"prior_state": None, "prior_context": "", "digest": "", "width": 0}


@dataclass
class _Lane:
    state: State
    inputs: np.ndarray
    finish: Callable[[np.ndarray], tuple[np.ndarray, str]]
    record: StreamRecord
    width: int = 0  # replays: the width of the fused call to run in (that of the original request)


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
        run: str | Path | Run,
        store: StateStore | str | None = None,
        *,
        device: str = "cpu",
        engine: Engine | str = "torch",
        max_rounds: int = 16,
    ) -> None:
        self.run = run = run if isinstance(run, Run) else load_run(run, device)
        self.task_of_run: Task = task_for(self.run)
        self.task = self.task_of_run.name
        self.model = model = self.run.model
        self.vocab, self.spec, self.transforms, self.intervals = run.vocab, run.spec, run.transforms, run.intervals
        self.engine: Engine = select_engine(engine, model, device) if isinstance(engine, str) else engine
        self.n_outputs = int(model.n_outputs)
        self.max_rounds = max_rounds
        self._zero = State.zeros(model.cell, model.num_layers, 1, model.hidden_size)
        self.store = open_store(store) if isinstance(store, str) else store
        if self.store is None:
            from .stores.memory import MemoryStore

            self.store = MemoryStore()
        self.store.bind_model(self.fingerprint())

    def check_inputs(self, x: Any) -> np.ndarray:
        """Client inputs checked by the run's task (a one-line ValueError saying what is wrong)."""
        return self.task_of_run.check_inputs(x)

    def fingerprint(self) -> str:
        """A hash of the run's model config and weights: states are only meaningful for this model."""
        h = hashlib.sha256(json.dumps(self.run.config["model"], sort_keys=True).encode())
        h.update(weights_bytes(self.model))
        return h.hexdigest()

    @property
    def state_bytes(self) -> int:
        """Bytes of one stream's state: `State.to_bytes()` of one lane (header + layers x hidden x 4,
        twice for LSTM)."""
        return len(self._zero.to_bytes())

    @property
    def max_record_bytes(self) -> int:
        """The most a stream's record holds (`StreamRecord.nbytes`), whatever its requests:

            2 x state_bytes + 2 x the task's max_context_bytes + 32 (request digest) + 40 (five counters)

        The state before the last request is kept (not its outputs) so that a retry can be answered.
        Independent of request length and vocabulary size; stores add their own per-stream overhead
        (the stream id, and e.g. `memory.ENTRY_OVERHEAD`)."""
        return 2 * self.state_bytes + 2 * self.task_of_run.max_context_bytes + _DIGEST_CHARS + RECORD_FIXED_BYTES

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
        if isinstance(history, Series):
            position = first_position(history, self.spec.period) if position is None else position
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
        """Check seqs, run the fused model calls, and build each stream's next record and result.

        Retries are answered here (their results set, nothing planned): each reruns from the stored
        prior state in a call of the width its original ran in (the same bits on one CPU thread).
        """
        lanes: dict[int, _Lane] = {}
        replays: dict[int, _Lane] = {}
        for i in indexes:
            req = requests[i]
            record = records.get(req.stream_id) or StreamRecord(version=0)
            try:
                if req.seq is None or req.seq == record.seq:
                    lanes[i] = self._prepare(req, record)
                elif req.seq == record.seq - 1 and record.replayable:
                    if record.digest != req.digest:
                        why = "that seq was already used with other inputs"
                        results[i] = SeqConflict(req.stream_id, req.seq, record.seq, why)
                        continue
                    prior = replace(record, state=record.prior_state, context=record.prior_context)
                    replays[i] = self._prepare(req, prior)
                    replays[i].width = max(1, record.width)
                else:
                    results[i] = SeqConflict(req.stream_id, req.seq, record.seq)
            except ValueError as e:
                results[i] = e
        model_out: dict[int, tuple[np.ndarray, bytes | None, int]] = {}
        for group in _groups(lanes, by_width=False):
            model_out.update(self._call(lanes, group, len(group), keep_state=True))
        for group in _groups(replays, by_width=True):
            width = replays[group[0]].width
            for start in range(0, len(group), width):
                model_out.update(self._call(replays, group[start : start + width], width, keep_state=False))
        planned = {}
        for i, (z, state, width) in model_out.items():
            req = requests[i]
            lane = lanes[i] if i in lanes else replays[i]
            try:
                outputs, context = lane.finish(z)
            except ValueError as e:
                results[i] = e
                continue
            with np.errstate(over="ignore"):
                outputs = outputs.astype(np.float32)
            if i in replays:
                record = records[req.stream_id]
                results[i] = StepResult(req.stream_id, outputs, record.seq, record.steps, replayed=True)
                continue
            steps = (0 if req.fresh else lane.record.steps) + len(req.inputs)
            record = lane.record.successor(
                seq=lane.record.seq + 1,
                steps=steps,
                state=state,
                context=context,
                prior_state=None if req.fresh else lane.record.state,
                prior_context="" if req.fresh else lane.record.context,
                digest=req.digest,
                width=width,
            )
            planned[i] = (record, StepResult(req.stream_id, outputs, record.seq, steps))
        return planned

    def _call(
        self, lanes: Mapping[int, _Lane], group: list[int], width: int, *, keep_state: bool
    ) -> dict[int, tuple[np.ndarray, bytes | None, int]]:
        """One fused engine call of `width` lanes: `group`'s, then idle ones (zero state and inputs).

        On one CPU thread a lane's bits depend on the call's width (kernels are picked by it), not on its
        place: a retry in a call of its original width reproduces its outputs exactly; with several
        threads, rows split by position can differ by float32 rounding (tests/test_stream.py checks both)."""
        first = lanes[group[0]].inputs
        if len(first) == 0:
            empty = np.empty((0, self.n_outputs), np.float32)
            return {i: (empty, lanes[i].state.to_bytes() if keep_state else None, 1) for i in group}
        idle = width - len(group)
        states = State.concat([lanes[i].state for i in group] + [self._zero] * idle)
        x = np.stack([lanes[i].inputs for i in group] + [np.zeros_like(first)] * idle)
        outputs, new = self.engine.step(states, torch.from_numpy(x))
        outputs = outputs.numpy()
        return {
            i: (outputs[k], new.select(slice(k, k + 1)).to_bytes() if keep_state else None, width)
            for k, i in enumerate(group)
        }

    def _prepare(self, req: StepRequest, record: StreamRecord) -> _Lane:
        state = self._zero if req.fresh or record.state is None else self._state(record.state)
        context = {} if req.fresh or not record.context else json.loads(record.context)
        ready = self.task_of_run.prepare(
            req.inputs, context, stream_id=req.stream_id, series=req.series, position=req.position, fresh=req.fresh
        )
        return _Lane(state, ready.inputs, ready.finish, record)

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

    # --- whole streams -----------------------------------------------------------------------------
    def info(self, stream_id: str) -> StreamInfo | None:
        """The stream's seq, steps and last update, or None if the store has no such stream."""
        record = self.store.get(stream_id)
        return None if record is None else StreamInfo(stream_id, record.seq, record.steps, record.updated_at)

    def reset(self, stream_id: str) -> StreamInfo:
        """Zero a stream's state (a new, unrelated sequence starts); seq is kept, steps restart at 0.

        Raises `UnknownStream` if the store holds no such stream (a reset creates nothing)."""

        def change(record: StreamRecord) -> StreamRecord:
            context = json.loads(record.context) if record.context else {}
            context.pop("tail", None)
            return record.successor(state=None, steps=0, context=json.dumps(context) if context else "", **_NO_REPLAY)

        record = self._update(stream_id, change)
        if record is None:
            raise UnknownStream(stream_id)
        return StreamInfo(stream_id, record.seq, 0, record.updated_at)

    def forget(self, stream_id: str) -> bool:
        """Delete a stream; its next step request starts over at seq 0. False if it did not exist."""
        return self.store.delete(stream_id)

    def snapshot(self, stream_id: str) -> bytes:
        """The stream as bytes: seq, steps and context as JSON, then its `State.to_bytes()`."""
        record = self.store.get(stream_id)
        if record is None:
            raise ValueError(f"no stream '{stream_id}'")
        return pack_snapshot(record.seq, record.steps, record.context, record.state or self._zero.to_bytes())

    def restore(self, stream_id: str, data: bytes) -> StreamInfo:
        """Set a stream from `snapshot` bytes, or its state only from bare `State.to_bytes()` bytes."""
        fields, data = unpack_snapshot(data)
        state = self._state(data).to_bytes()
        record = self._update(stream_id, lambda r: r.successor(state=state, **_NO_REPLAY, **fields), create=True)
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
        return "".join(generate(self.model, self.vocab, prompt, n, **sampling))


def _groups(lanes: Mapping[int, _Lane], *, by_width: bool) -> list[list[int]]:
    """Lane indexes grouped by step count (and, for replays, by the width of their original call)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, lane in lanes.items():
        groups.setdefault((len(lane.inputs), lane.width if by_width else 0), []).append(i)
    return list(groups.values())
