"""The trainer: what reaches the model in each mode, evaluation isolation, schedules, checkpoints."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn import precision as precision_module
from statefulrnn import runs as ckpt
from statefulrnn.layout import ConcatLayout, Sequences, StatelessLayout
from statefulrnn.model import SequenceModel
from statefulrnn.objectives import NextToken, Regression
from statefulrnn.precision import bf16_support
from statefulrnn.train import (
    TrainConfig,
    Trainer,
    evaluate,
    evaluation_layout,
    learning_rate,
    resumed_config,
    training_layout,
)


def _tokens(n: int = 600, vocab: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.uint8)


def _model(vocab: int = 7, seed: int = 0, cell: str = "lstm") -> SequenceModel:
    torch.manual_seed(seed)
    return SequenceModel(cell, vocab_size=vocab, hidden_size=12, num_layers=2, embedding_dim=5)


class Recorder:
    """Wraps model.forward to record what each training call received and returned."""

    def __init__(self, model: SequenceModel) -> None:
        self.calls: list[dict] = []
        self.model = model
        self.inner = model.forward

    def __call__(self, x, state=None, resets=None):
        out, new = self.inner(x, state, resets)
        self.calls.append(
            {"x": x.clone(), "state": state, "resets": resets, "out_state": new, "training": torch.is_grad_enabled()}
        )
        return out, new


def test_stateful_mode_carries_detached_state_lane_by_lane_and_resets_each_epoch():
    data = _tokens()
    model = _model()
    config = TrainConfig(lanes=4, window=10, epochs=2, checkpoint_every=1e9)
    layout = training_layout(Sequences(data, np.array([0, len(data)])), config)
    rec = Recorder(model)
    model.forward = rec
    Trainer(model, NextToken(), layout, None, config, progress=False).fit()
    n = len(layout)
    assert len(rec.calls) == 2 * n
    for i, call in enumerate(rec.calls):
        k, epoch = i % n, i // n
        expected = layout.batch(k, epoch).inputs.astype(np.int64)
        assert np.array_equal(call["x"].numpy(), expected)
        if k == 0:
            assert call["state"] is None  # every epoch starts from zero state
        else:
            prev = rec.calls[i - 1]["out_state"]
            assert torch.equal(call["state"].h, prev.h) and torch.equal(call["state"].c, prev.c)
            assert not call["state"].h.requires_grad  # detached: truncated BPTT
    # lane continuity: lane i of batch k+1 continues lane i of batch k in the stream
    first, second = layout.batch(0).positions, layout.batch(1).positions
    assert np.array_equal(second[:, 0], first[:, -1] + 1)


def test_stateless_mode_starts_every_window_from_zero_in_shuffled_order():
    data = _tokens()
    model = _model()
    config = TrainConfig(mode="stateless", lanes=4, window=10, epochs=2, checkpoint_every=1e9)
    layout = training_layout(Sequences(data, np.array([0, len(data)])), config)
    assert isinstance(layout, StatelessLayout)
    rec = Recorder(model)
    model.forward = rec
    Trainer(model, NextToken(), layout, None, config, progress=False).fit()
    assert all(call["state"] is None for call in rec.calls)
    n = len(layout)
    epoch0 = np.concatenate([c["x"].numpy() for c in rec.calls[:n]])
    epoch1 = np.concatenate([c["x"].numpy() for c in rec.calls[n:]])
    assert not np.array_equal(epoch0, epoch1)  # reshuffled
    assert sorted(map(tuple, epoch0)) == sorted(map(tuple, epoch1))  # same windows


def test_stateless_burn_in_runs_context_without_gradient_then_the_window_from_its_state():
    data = _tokens()
    model = _model()
    config = TrainConfig(mode="stateless", lanes=4, window=10, burn_in=6, epochs=1, checkpoint_every=1e9)
    layout = training_layout(Sequences(data, np.array([0, len(data)])), config)
    rec = Recorder(model)
    model.forward = rec
    Trainer(model, NextToken(), layout, None, config, progress=False).fit()
    assert len(rec.calls) == 2 * len(layout)
    for ctx_call, win_call in zip(rec.calls[::2], rec.calls[1::2]):
        assert ctx_call["x"].shape[1] == 6 and ctx_call["state"] is None
        assert not ctx_call["out_state"].h.requires_grad
        assert win_call["state"] is ctx_call["out_state"]


def test_evaluation_never_touches_the_training_state():
    data = _tokens()
    model = _model()
    config = TrainConfig(lanes=4, window=10, epochs=1, checkpoint_every=1e9)
    seqs = Sequences(data, np.array([0, len(data)]))
    trainer = Trainer(model, NextToken(), training_layout(seqs, config), None, config, progress=False)
    for batch in list(trainer.train_layout.batches())[:3]:
        trainer.train_step(batch)
    before = (trainer.state.h.clone(), trainer.state.c.clone())
    val = evaluation_layout(Sequences(_tokens(200, seed=1), np.array([0, 200])), lanes=2, window=16)
    first = evaluate(model, val, NextToken())
    assert torch.equal(trainer.state.h, before[0]) and torch.equal(trainer.state.c, before[1])
    assert model.training  # evaluation restores train mode
    # and the result does not depend on the training state
    trainer.state = trainer.state.reset(torch.ones(4, dtype=torch.bool))
    assert evaluate(model, val, NextToken()) == first


def test_stateful_evaluation_equals_one_whole_pass_per_lane():
    data = _tokens(401, seed=3)
    model = _model().eval()
    seqs = Sequences(data, np.array([0, len(data)]))
    layout = ConcatLayout(seqs, 1, 16)
    metrics = evaluate(model, layout, NextToken())
    with torch.no_grad():
        out, _ = model(torch.from_numpy(data[:-1].astype(np.int64))[None])
        loss = torch.nn.functional.cross_entropy(out[0], torch.from_numpy(data[1:].astype(np.int64)))
    assert metrics["loss"] == pytest.approx(float(loss), rel=1e-5)


def test_training_learns_a_deterministic_sequence():
    pattern = np.tile(np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.uint8), 60)
    model = _model()
    seqs = Sequences(pattern, np.array([0, len(pattern)]))
    config = TrainConfig(lanes=4, window=8, epochs=15, lr=1e-2, checkpoint_every=1e9)
    val = evaluation_layout(seqs, lanes=2, window=16)
    before = evaluate(model, val, NextToken())
    summary = Trainer(model, NextToken(), training_layout(seqs, config), val, config, progress=False).fit()
    assert summary["val"]["accuracy"] > 0.95 > before["accuracy"]


def test_eval_every_evaluates_within_epochs_and_keeps_the_best_of_all_evaluations(tmp_path, capsys):
    seqs = Sequences(_tokens(1200, seed=1), np.array([0, 1200]))
    val = evaluation_layout(Sequences(_tokens(300, seed=2), np.array([0, 300])), lanes=2, window=16)
    config = TrainConfig(lanes=4, window=10, epochs=2, lr=0.05, eval_every=1e-9, checkpoint_every=1e9)
    trainer = Trainer(_model(), NextToken(), training_layout(seqs, config), val, config, tmp_path, progress=True)
    summary = trainer.fit()
    printed = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if "val loss" in line]
    records = [json.loads(line) for line in (tmp_path / ckpt.METRICS).read_text().splitlines()]
    n = len(trainer.train_layout)
    # after every batch but each epoch's last, whose evaluation is the epoch's own
    assert [r["step"] for r in records if r["kind"] == "eval"] == [e * n + b for e in range(2) for b in range(1, n)]
    evaluated = [r for r in records if r["kind"] in ("eval", "epoch")]
    assert [r["elapsed_s"] for r in evaluated] == sorted(r["elapsed_s"] for r in evaluated)
    best = min(evaluated, key=lambda r: r["val"]["loss"])
    assert best["kind"] == "eval"  # so the check below needs the mid-epoch evaluations
    assert summary["val"] == best["val"] and summary["best_step"] == best["step"]
    expected = [f"step {r['step']}, " if r["kind"] == "eval" else f"epoch {r['epoch'] + 1}: " for r in evaluated]
    assert len(printed) == len(expected) and all(map(str.startswith, printed, expected))
    assert evaluate(trainer.model, val, NextToken()) == best["val"]
    saved = _model(seed=9)
    ckpt.load_weights(tmp_path / ckpt.WEIGHTS, saved)
    assert evaluate(saved, val, NextToken()) == best["val"]


def test_eval_every_must_be_positive():
    with pytest.raises(ValueError, match="eval_every must be positive"):
        TrainConfig(eval_every=0)


def _lrs(config: TrainConfig, total: int, tokens_per_step: int = 0, seconds_per_step: float = 0.0) -> list[float]:
    """The rate of every step of a run of `total` steps that spends tokens and seconds at a steady pace."""
    return [learning_rate(config, s, s * tokens_per_step, s * seconds_per_step, total, 10) for s in range(total)]


def test_learning_rate_schedules_through_the_trainer():
    seqs = Sequences(_tokens(), np.array([0, 600]))
    for schedule in ("wsd", "cosine", "step", "constant"):
        config = TrainConfig(
            lanes=4, window=10, epochs=4, warmup=5, schedule=schedule, lr=1.0, gamma=0.5, decay_fraction=0.2
        )
        trainer = Trainer(_model(), NextToken(), training_layout(seqs, config), None, config, progress=False)
        lrs = [trainer.lr_at(s) for s in range(trainer.total_steps)]
        assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
        assert lrs[4] == (pytest.approx(1.0, rel=0.02) if schedule == "cosine" else 1.0)  # cosine is under way
        n = len(trainer.train_layout)
        if schedule == "wsd":
            stable = next(s for s in range(4 * n) if 1 - (s + 1) / (4 * n) < 0.2)  # the last 20% decays
            assert 0.75 * 4 * n < stable <= 0.8 * 4 * n
            assert set(lrs[4:stable]) == {1.0} and lrs[stable] < 1.0 and lrs[-1] == pytest.approx(0.1)
        elif schedule == "cosine":
            assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
            assert lrs[2 * n - 1] == pytest.approx(0.55)  # half the budget: half way down
        elif schedule == "step":
            assert lrs[n + 1] == pytest.approx(0.5) and lrs[3 * n] == pytest.approx(0.125)
        else:
            assert set(lrs[5:]) == {1.0}


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(2, 400),
    decay=st.floats(0.05, 1.0),
    min_lr=st.floats(0.0, 1.0),
    warmup=st.integers(0, 50),
    lr=st.floats(1e-4, 1.0),
)
def test_wsd_warms_up_holds_the_peak_then_falls_linearly_to_min_lr_at_the_end_of_an_epoch_budget(
    total, decay, min_lr, warmup, lr
):
    config = TrainConfig(lr=lr, decay_fraction=decay, min_lr=min_lr, warmup=warmup)
    lrs = _lrs(config, total)
    decaying = [s for s in range(total) if 1 - (s + 1) / total < decay]
    assert decaying == list(range(total - len(decaying), total))  # the decay is the tail of the budget
    for s in range(total):
        if s < warmup:
            assert lrs[s] <= lr * (s + 1) / warmup * (1 + 1e-12)  # the ramp caps every schedule
        elif s not in decaying:
            assert lrs[s] == lr  # the stable phase: the peak rate exactly
    assert lrs[-1] == pytest.approx(lr * min(min_lr, total / max(warmup, 1)), rel=1e-9, abs=1e-15)
    tail = [lrs[s] for s in decaying if s >= warmup]
    assert all(a >= b for a, b in zip(tail, tail[1:])) and all(x >= lr * min_lr for x in tail)
    steps = np.diff(tail)
    assert np.allclose(steps, steps[0] if len(steps) else 0, rtol=1e-6, atol=1e-12 * lr)  # a straight line


@settings(max_examples=100, deadline=None)
@given(steps=st.integers(20, 300), decay=st.floats(0.1, 0.5), kind=st.sampled_from(["tokens", "time"]))
def test_wsd_decays_towards_a_token_or_time_budget_that_ends_the_run_before_the_epochs(steps, decay, kind):
    """The budget ends after `steps` steps at 100 tokens and 0.5 s a step, long before the 10 000 steps of the
    epochs; the decay starts at 1 - decay of that budget, counted in tokens or seconds spent before the step."""
    budget = {"max_tokens": 100 * steps} if kind == "tokens" else {"max_time": 0.5 * steps}
    config = TrainConfig(lr=1.0, decay_fraction=decay, **budget)
    lrs = _lrs(config, 10_000, tokens_per_step=100, seconds_per_step=0.5)[:steps]
    first = next(s for s in range(steps) if 1 - s / steps < decay)
    assert (1 - decay) * steps - 1 <= first <= (1 - decay) * steps + 1
    assert set(lrs[:first]) == {1.0} and lrs[first] < 1.0
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * (1 / steps) / decay)  # one step's worth above min_lr
    assert learning_rate(config, steps, 100 * steps, 0.5 * steps, 10_000, 10) == pytest.approx(0.1)


@settings(max_examples=100, deadline=None)
@given(
    step=st.integers(0, 999),
    tokens=st.integers(0, 10**6),
    elapsed=st.floats(0, 1000),
    max_tokens=st.integers(1, 10**6),
    max_time=st.floats(1, 1000),
    schedule=st.sampled_from(["wsd", "cosine"]),
)
def test_the_budget_that_ends_the_run_first_sets_the_rate(step, tokens, elapsed, max_tokens, max_time, schedule):
    one = TrainConfig(schedule=schedule)
    rates = [
        learning_rate(replace(one, **budget), step, tokens, elapsed, 1000, 10)
        for budget in ({}, {"max_tokens": max_tokens}, {"max_time": max_time})
    ]
    both = learning_rate(replace(one, max_tokens=max_tokens, max_time=max_time), step, tokens, elapsed, 1000, 10)
    assert both == min(rates)


def test_the_trainer_steps_with_the_scheduled_rate_and_a_time_budget_decays_on_elapsed_time(monkeypatch):
    """A fake clock (0.25 s per step) makes the time budget (10.1 s: 41 steps) end the run before its 4 epochs;
    the optimizer's rate follows elapsed time: the peak to 80% of 10.1 s (step 33 starts at 8.25 s), then a
    straight fall that ends one step above min_lr."""
    seqs = Sequences(_tokens(), np.array([0, 600]))
    config = TrainConfig(lanes=4, window=10, epochs=4, max_time=10.1, lr=0.5, decay_fraction=0.2, checkpoint_every=1e9)
    trainer = Trainer(_model(), NextToken(), training_layout(seqs, config), None, config, progress=False)
    monkeypatch.setattr(Trainer, "_clock", lambda self: 0.25 * self.cursor["step"])
    used: list[float] = []
    inner = trainer.optimizer.step

    def step(*args, **kwargs):
        used.append(trainer.optimizer.param_groups[0]["lr"])
        return inner(*args, **kwargs)

    trainer.optimizer.step = step
    summary = trainer.fit()
    assert summary["stopped"] == "max-time" and summary["steps"] == 41 < 0.9 * trainer.total_steps
    assert used[:33] == [0.5] * 33 and used[33] < 0.5
    assert used[-1] == pytest.approx(0.5 * (0.1 + 0.9 * (1 - 10.0 / 10.1) / 0.2))
    fall = np.diff(used[32:])
    assert np.all(fall < 0) and np.allclose(fall[1:], fall[1])  # a straight line down


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"schedule": "linear"}, "schedule must be wsd, cosine, step, constant"),
        ({"decay_fraction": 0.0}, r"decay_fraction must be in \(0, 1\]"),
        ({"decay_fraction": 1.5}, r"decay_fraction must be in \(0, 1\]"),
        ({"min_lr": -0.1}, "min_lr is a fraction of lr"),
        ({"warmup": -1}, "warmup must be 0 or more"),
    ],
)
def test_bad_schedule_settings_are_one_clear_line(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        TrainConfig(**bad)
    assert "\n" not in str(e.value)


def test_checkpoint_round_trip_restores_everything(tmp_path):
    seqs = Sequences(_tokens(), np.array([0, 600]))
    config = TrainConfig(lanes=4, window=10, epochs=1, checkpoint_every=1e9)
    trainer = Trainer(_model(), NextToken(), training_layout(seqs, config), None, config, tmp_path, progress=False)
    for batch in list(trainer.train_layout.batches())[:3]:
        trainer.train_step(batch)
        trainer.cursor["batch"] += 1
        trainer.cursor["step"] += 1
    trainer.save_checkpoint()
    other = Trainer(_model(seed=5), NextToken(), training_layout(seqs, config), None, config, tmp_path, progress=False)
    other.restore()
    for a, b in zip(trainer.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(other.state.h, trainer.state.h) and torch.equal(other.state.c, trainer.state.c)
    assert other.cursor == trainer.cursor
    sa, sb = trainer.optimizer.state_dict(), other.optimizer.state_dict()
    for idx in sa["state"]:
        for name, value in sa["state"][idx].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][idx][name]))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_gives_a_clear_error(tmp_path, damage):
    seqs = Sequences(_tokens(), np.array([0, 600]))
    config = TrainConfig(lanes=4, window=10, epochs=1, checkpoint_every=1e9)
    trainer = Trainer(_model(), NextToken(), training_layout(seqs, config), None, config, tmp_path, progress=False)
    trainer.save_checkpoint()
    path = tmp_path / ckpt.CHECKPOINT
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 64 + data[64:], "empty": b""}[damage])
    with pytest.raises(ValueError, match="checkpoint|corrupt|truncated"):
        trainer.restore()


def test_regression_objective_ignores_missing_targets_and_padding():
    outputs = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    targets = torch.tensor([[[0.0, math.nan], [3.0, 5.0]]])
    mask = torch.tensor([[True, False]])
    sums = Regression().sums(outputs, targets, mask)
    assert float(sums["count"]) == 1 and float(sums["loss"]) == 1.0
    mask = torch.tensor([[True, True]])
    sums = Regression().sums(outputs, targets, mask)
    assert float(sums["count"]) == 3 and float(sums["loss"]) == 2.0


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be fp32, bf16 or auto"):
        TrainConfig(precision="fp16")


PATTERN = np.array([0, 3, 1, 4, 1, 5, 2, 6], dtype=np.uint8)  # what follows a 1 depends on the token before it


def _periodic(n: int, shift: int = 0) -> np.ndarray:
    return np.resize(np.roll(PATTERN, -shift), n)


def _bf16_trains_like_fp32(mode: str, cell: str = "lstm") -> None:
    """bf16 autocasts the training forward pass only, and learns what fp32 learns."""
    seqs = Sequences(_periodic(800), np.array([0, 300, 800]))  # a boundary: stateful lanes reset mid-window
    val = evaluation_layout(Sequences(_periodic(200, 3), np.array([0, 200])), lanes=2, window=16)
    untrained = evaluate(_model(cell=cell), val, NextToken())["loss"]
    results = {}
    for precision in ("fp32", "bf16"):
        model = _model(cell=cell)
        burn_in = 4 if mode == "stateless" else 0
        config = TrainConfig(
            mode=mode, lanes=4, window=10, epochs=6, lr=2e-2, burn_in=burn_in, precision=precision,
            checkpoint_every=1e9,
        )  # fmt: skip
        rec = Recorder(model)
        model.forward = rec
        trainer = Trainer(model, NextToken(), training_layout(seqs, config), val, config, progress=False)
        summary = trainer.fit()
        assert summary["precision"] == precision
        trained = {c["out_state"].h.dtype for c in rec.calls if c["training"]}
        assert trained == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in model.parameters())
        if mode == "stateful":
            assert trainer.state.h.dtype == torch.float32  # carried and checkpointed as float32
        results[precision] = (summary["val"]["loss"], torch.cat([p.detach().flatten() for p in model.parameters()]))
    (fp32_loss, fp32_w), (bf16_loss, bf16_w) = results["fp32"], results["bf16"]
    assert not torch.equal(fp32_w, bf16_w)  # bf16 really changed the arithmetic...
    assert untrained > 1.8  # about ln 7 before training
    assert fp32_loss < 0.25 * untrained and bf16_loss < 0.25 * untrained  # ...both learned the pattern...
    assert bf16_loss == pytest.approx(fp32_loss, abs=0.05)  # ...and equally well: it rounds, it does not break


def _trainer(precision: str, cell: str = "lstm", run=None) -> Trainer:
    data = _periodic(200)
    config = TrainConfig(lanes=2, window=10, epochs=1, precision=precision, checkpoint_every=1e9)
    layout = training_layout(Sequences(data, np.array([0, len(data)])), config)
    return Trainer(_model(cell=cell), NextToken(), layout, None, config, run, progress=False)


BF16_LSTM, BF16_WHY = bf16_support("cpu", "lstm")  # tried once: oneDNN decides, not CPUID

if BF16_LSTM:

    @pytest.mark.parametrize("mode", ["stateful", "stateless"])
    def test_bf16_training_autocasts_the_forward_pass_and_keeps_weights_state_and_loss_float32(mode):
        _bf16_trains_like_fp32(mode)

else:  # this CPU (or oneDNN capped by ONEDNN_MAX_CPU_ISA) has no bf16 LSTM: bf16 must be refused clearly

    def test_bf16_lstm_is_refused_in_one_line_on_this_cpu():
        with pytest.raises(ValueError) as e:
            _trainer("bf16")
        message = str(e.value)
        assert "\n" not in message and "--precision fp32" in message and BF16_WHY in message
        assert _trainer("auto").config.precision == "fp32"


def _force_probe(monkeypatch, ok: bool, native: bool | None = None, speedup: float = 2.0) -> None:
    """Make the bf16 probe answer `ok` (and the device `native`, bf16 `speedup` times faster)."""
    monkeypatch.setattr(
        precision_module, "bf16_support", lambda device, cell: (ok, "forced" if ok else "no bf16 kernel")
    )
    monkeypatch.setattr(precision_module, "bf16_native", lambda device: ok if native is None else native)
    monkeypatch.setattr(precision_module, "bf16_cell", lambda device, cell: ok)
    monkeypatch.setattr(precision_module, "bf16_speedup", lambda device, cell, shape=None: speedup)


@pytest.mark.parametrize("mode", ["stateful", "stateless"])
def test_where_the_probe_supports_bf16_it_trains_in_bf16(monkeypatch, mode):
    # every CPU runs PyTorch's own tanh RNN in bf16 (natively or emulated), so this path runs on every machine
    _force_probe(monkeypatch, ok=True)
    _bf16_trains_like_fp32(mode, cell="rnn")


def test_where_the_probe_refuses_bf16_it_is_one_line_naming_the_fix_and_auto_is_fp32(monkeypatch):
    _force_probe(monkeypatch, ok=False)
    with pytest.raises(ValueError) as e:
        _trainer("bf16")
    message = str(e.value)
    assert "\n" not in message and "no bf16 kernel" in message and "use --precision fp32" in message
    config = TrainConfig(precision="auto")
    trainer = _trainer("auto")
    assert trainer.config.precision == "fp32" and config.precision == "auto"
    assert _trainer("fp32").config.precision == "fp32"


@pytest.mark.parametrize(
    ("ok", "native", "speedup", "chosen"),
    [(True, True, 2.0, "bf16"), (True, True, 1.0, "fp32"), (True, False, 2.0, "fp32"), (False, True, 2.0, "fp32")],
)
def test_auto_takes_bf16_only_where_it_works_is_native_and_measured_faster(monkeypatch, ok, native, speedup, chosen):
    _force_probe(monkeypatch, ok=ok, native=native, speedup=speedup)
    assert _trainer("auto", cell="gru").config.precision == chosen


def test_auto_is_resolved_once_recorded_and_kept_on_resume(monkeypatch, tmp_path):
    _force_probe(monkeypatch, ok=True, speedup=2.0)
    trainer = _trainer("auto", cell="gru", run=tmp_path)
    summary = trainer.fit()
    saved = json.loads((tmp_path / ckpt.CONFIG).read_text())
    assert saved["train"]["precision"] == "bf16" and summary["precision"] == "bf16"
    config = resumed_config(saved, {"epochs": 2})
    assert config.precision == "bf16"  # a resume continues in the recorded precision...

    def no_timing(device, cell, shape=None):
        raise AssertionError("resume must not measure again")

    monkeypatch.setattr(precision_module, "bf16_speedup", no_timing)  # ...without deciding again
    data = _periodic(200)
    layout = training_layout(Sequences(data, np.array([0, len(data)])), config)
    model = SequenceModel("gru", vocab_size=7, hidden_size=12, num_layers=2, embedding_dim=5)
    resumed = Trainer(model, NextToken(), layout, None, config, tmp_path, progress=False)
    assert resumed.fit(resume=True)["precision"] == "bf16"
    assert json.loads((tmp_path / ckpt.CONFIG).read_text())["train"]["precision"] == "bf16"


def test_auto_times_bf16_at_the_runs_own_shape(monkeypatch):
    _force_probe(monkeypatch, ok=True)
    shapes = []
    monkeypatch.setattr(precision_module, "bf16_speedup", lambda device, cell, shape=None: shapes.append(shape) or 2.0)
    assert _trainer("auto", cell="gru").config.precision == "bf16"
    assert shapes == [(2, 5, 12, 2)]  # lanes, embedding (the recurrent input), hidden size, layers


def test_fit_leaves_the_model_holding_the_weights_its_summary_reports(tmp_path):
    """A run that overfits: validation is best early, so the last weights are not the reported ones."""
    train, val = _tokens(400, seed=1), _tokens(200, seed=2)  # random tokens: validation only gets worse
    config = TrainConfig(lanes=4, window=10, epochs=6, lr=3e-2, checkpoint_every=1e9)
    layout = training_layout(Sequences(train, np.array([0, len(train)])), config)
    val_layout = evaluation_layout(Sequences(val, np.array([0, len(val)])), 2, 20)
    model = _model()
    trainer = Trainer(model, NextToken(), layout, val_layout, config, tmp_path / "run", progress=False)
    summary = trainer.fit()
    assert summary["best_epoch"] < config.epochs - 1, "the data was meant to make an earlier epoch the best"
    again = evaluate(model, val_layout, NextToken())
    assert again["loss"] == summary["val"]["loss"]
    saved = ckpt.read_weights(tmp_path / "run" / ckpt.WEIGHTS)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    last = ckpt.load_checkpoint(tmp_path / "run" / ckpt.CHECKPOINT).model  # resume continues from the last
    assert any(not torch.equal(last[k], v) for k, v in model.state_dict().items())
