"""Resume continues exactly where a killed run stopped: the data cursor, the RNG (dropout masks), the
learning-rate schedule (also under a time budget) and so the final weights, bit for bit, as the run that
was never interrupted; a finished run extended on resume decays again before its new end.

A run is "killed" by raising inside the step after `k` (with `checkpoint_every=0` a checkpoint is
written after every step, as a SIGKILL would find it); a fresh Trainer, set up as the CLI sets one up
(seed_everything, then the model), resumes from the run directory.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from statefulrnn import runs
from statefulrnn import train as train_module
from statefulrnn.layout import Sequences
from statefulrnn.model import SequenceModel
from statefulrnn.objectives import NextToken
from statefulrnn.train import TrainConfig, Trainer, seed_everything, training_layout

VOCAB = 9
CONFIGS = {
    "stateful": TrainConfig(lanes=4, window=8, epochs=2, seed=7, shuffle=True, checkpoint_every=0, log_every=1),
    "stateless": TrainConfig(
        mode="stateless", lanes=4, window=8, burn_in=4, epochs=2, seed=7, checkpoint_every=0, log_every=1
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def _sequences() -> Sequences:
    """Twelve documents of random tokens, of different lengths (shuffling reorders them each epoch)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(12, 40, 12)
    data = rng.integers(0, VOCAB, lengths.sum()).astype(np.uint8)
    return Sequences(data, np.concatenate([[0], np.cumsum(lengths)]))


class Killed(Exception):
    """Stands in for SIGKILL: the process dies between two steps."""


class Probe:
    """Records, for every training step: the batch, the torch RNG state before it, the dropout masks
    drawn in it and its loss; with `kill_after=k`, dies at the start of step k + 1."""

    def __init__(self, trainer: Trainer, kill_after: int | None = None) -> None:
        self.steps: list[dict] = []
        inner = trainer.train_step

        def step(batch):
            if kill_after is not None and len(self.steps) == kill_after:
                raise Killed
            record = {
                "batch": {f.name: _copy(getattr(batch, f.name)) for f in dataclasses.fields(batch)},
                "rng": torch.get_rng_state().clone(),
                "masks": [],
            }
            self.steps.append(record)
            sums = inner(batch)
            record["loss"] = sums["loss"].clone()
            record["lr"] = trainer.lr
            return sums

        trainer.train_step = step
        trainer.model.drop.register_forward_hook(self._mask)

    def _mask(self, module, inputs, output) -> None:
        if module.training and self.steps:
            self.steps[-1]["masks"].append((output != 0).clone())


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _trainer(config: TrainConfig, run) -> Trainer:
    """A Trainer set up as train_text sets one up: seed everything, then build the model."""
    seed_everything(config.seed)
    model = SequenceModel("lstm", vocab_size=VOCAB, hidden_size=12, num_layers=2, embedding_dim=6, dropout=0.3)
    return Trainer(model, NextToken(), training_layout(_sequences(), config), None, config, run, progress=False)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _killed_then_resumed(config: TrainConfig, run, k: int) -> tuple[Probe, Trainer]:
    """Train into `run`, die after step k, then resume in a fresh Trainer; the resumed probe and trainer."""
    first = _trainer(config, run)
    probe = Probe(first, kill_after=k)
    with pytest.raises(Killed):
        first.fit()
    assert len(probe.steps) == k and runs.load_checkpoint(run / runs.CHECKPOINT).trainer["cursor"]["step"] == k
    fresh = _trainer(config, run)
    resumed = Probe(fresh)
    fresh.fit(resume=True)
    return resumed, fresh


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def reference(request, tmp_path_factory):
    """The uninterrupted run of a config: its probe, final weights and batches per epoch."""
    config = CONFIGS[request.param]
    trainer = _trainer(config, tmp_path_factory.mktemp("whole"))
    probe = Probe(trainer)
    trainer.fit()
    n = len(trainer.train_layout)
    assert len(probe.steps) == config.epochs * n
    return {"config": config, "probe": probe, "weights": _weights(trainer), "n": n, "trainer": trainer}


def _kill_points(n: int) -> list[int]:
    return [3, n, n + 2]  # mid first epoch, at the epoch boundary, mid second epoch


def _same_batch(a: dict, b: dict) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        for x, y in ((a[f], b[f]) for f in a)
    )


def _same_masks(a: dict, b: dict) -> bool:
    return len(a["masks"]) == len(b["masks"]) and all(torch.equal(x, y) for x, y in zip(a["masks"], b["masks"]))


def _same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


# --- (a) the data cursor --------------------------------------------------------------------------------
def test_the_resumed_trainer_draws_the_batches_the_whole_run_drew_after_the_kill(reference, tmp_path):
    whole, n = reference["probe"].steps, reference["n"]
    assert not _same_batch(whole[0]["batch"], whole[n]["batch"])  # epochs differ: an epoch mix-up would show
    for k in _kill_points(n):
        resumed, _ = _killed_then_resumed(reference["config"], tmp_path / f"run{k}", k)
        assert len(resumed.steps) == len(whole) - k
        for i, step in enumerate(resumed.steps):
            assert _same_batch(step["batch"], whole[k + i]["batch"]), f"killed after {k}: step {k + i} differs"


def test_a_resume_that_restarts_the_epoch_at_batch_zero_is_caught(reference, tmp_path, monkeypatch):
    """Negative control: the comparison above fails for a resume that loses the batch cursor."""
    restore = Trainer.restore

    def forgetful(self):
        restore(self)
        self.cursor["batch"] = 0

    monkeypatch.setattr(Trainer, "restore", forgetful)
    whole, k = reference["probe"].steps, 3
    resumed, trainer = _killed_then_resumed(reference["config"], tmp_path / "run", k)
    assert not _same_batch(resumed.steps[0]["batch"], whole[k]["batch"])
    assert not _same_weights(_weights(trainer), reference["weights"])


# --- (b) the RNG: dropout masks ---------------------------------------------------------------------------
def test_the_resumed_trainer_draws_the_dropout_masks_of_the_whole_run(reference, tmp_path):
    whole, n = reference["probe"].steps, reference["n"]
    assert len(whole[0]["masks"]) >= 2 and not _same_masks(whole[0], whole[1])  # dropout is live and varies
    for k in _kill_points(n):
        resumed, _ = _killed_then_resumed(reference["config"], tmp_path / f"run{k}", k)
        for i, step in enumerate(resumed.steps):
            assert torch.equal(step["rng"], whole[k + i]["rng"]), f"killed after {k}: RNG before step {k + i}"
            assert _same_masks(step, whole[k + i]), f"killed after {k}: dropout masks of step {k + i}"
            assert torch.equal(step["loss"], whole[k + i]["loss"]), f"killed after {k}: loss of step {k + i}"


def test_a_resume_without_the_rng_state_draws_other_masks(reference, tmp_path, monkeypatch):
    """Negative control: restoring everything but the RNG state gives other dropout masks."""
    monkeypatch.setattr(train_module.torch, "set_rng_state", lambda state: None)
    whole, k = reference["probe"].steps, 3
    resumed, trainer = _killed_then_resumed(reference["config"], tmp_path / "run", k)
    assert _same_batch(resumed.steps[0]["batch"], whole[k]["batch"])  # the data is right ...
    assert not torch.equal(resumed.steps[0]["rng"], whole[k]["rng"])
    assert not _same_masks(resumed.steps[0], whole[k])  # ... but the masks are not
    assert not _same_weights(_weights(trainer), reference["weights"])


# --- (c) the result ------------------------------------------------------------------------------------
def test_killed_and_resumed_training_ends_with_the_weights_of_the_whole_run_bit_for_bit(reference, tmp_path):
    whole = reference["trainer"]
    for k in _kill_points(reference["n"]):
        _, trainer = _killed_then_resumed(reference["config"], tmp_path / f"run{k}", k)
        assert _same_weights(_weights(trainer), reference["weights"]), f"killed after {k}"
        assert trainer.cursor["step"] == whole.cursor["step"] and trainer.cursor["tokens"] == whole.cursor["tokens"]
        sa, sb = whole.optimizer.state_dict()["state"], trainer.optimizer.state_dict()["state"]
        for idx in sa:
            for name, value in sa[idx].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[idx][name])), (k, idx, name)
        for name in ("model.safetensors", "checkpoint.safetensors"):
            assert (tmp_path / f"run{k}" / name).is_file()


# --- (d) the learning-rate schedule -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_a_run_killed_mid_decay_resumes_on_the_schedule_of_the_whole_run(mode, tmp_path):
    config = dataclasses.replace(CONFIGS[mode], decay_fraction=0.5)
    trainer = _trainer(config, tmp_path / "whole")
    whole = Probe(trainer).steps
    trainer.fit()
    k = len(whole) - 3  # inside the final decay of the 2-epoch budget
    assert config.schedule == "wsd" and config.lr * config.min_lr < whole[k]["lr"] < whole[k - 1]["lr"] < config.lr
    resumed, fresh = _killed_then_resumed(config, tmp_path / "run", k)
    assert [r["lr"] for r in resumed.steps] == [w["lr"] for w in whole[k:]]
    assert whole[-1]["lr"] == pytest.approx(config.lr * config.min_lr)
    assert _same_weights(_weights(fresh), _weights(trainer))


def _time_budget(monkeypatch, n: int) -> tuple[TrainConfig, int]:
    """A time budget that ends the stateful run after 2n - 3 of its 2n steps, on a clock of 0.25 s a step."""
    monkeypatch.setattr(Trainer, "_clock", lambda self: 0.25 * self.cursor["step"])
    steps = 2 * n - 3
    return dataclasses.replace(CONFIGS["stateful"], max_time=0.25 * (steps - 1) + 0.1, decay_fraction=0.2), steps


def test_under_a_time_budget_the_decay_follows_elapsed_time_and_resumes_exactly(monkeypatch, tmp_path):
    n = len(_trainer(CONFIGS["stateful"], None).train_layout)
    config, steps = _time_budget(monkeypatch, n)
    trainer = _trainer(config, tmp_path / "whole")
    whole = Probe(trainer)
    assert trainer.fit()["stopped"] == "max-time" and len(whole.steps) == steps
    lrs = [w["lr"] for w in whole.steps]
    first = next(i for i, lr in enumerate(lrs) if lr < config.lr)  # starts at 80% of the time, not of the epochs
    assert first == next(i for i in range(steps) if 0.25 * i / config.max_time > 0.8) < 0.8 * 2 * n
    k = steps - 2
    resumed, fresh = _killed_then_resumed(config, tmp_path / "run", k)
    assert [r["lr"] for r in resumed.steps] == lrs[k:]
    assert _same_weights(_weights(fresh), _weights(trainer))


def test_a_resume_that_forgets_the_elapsed_time_leaves_the_decay(monkeypatch, tmp_path):
    """Negative control: the time-budget comparison above fails when the elapsed time is not restored."""
    n = len(_trainer(CONFIGS["stateful"], None).train_layout)
    config, steps = _time_budget(monkeypatch, n)
    trainer = _trainer(config, tmp_path / "whole")
    whole = Probe(trainer)
    trainer.fit()
    restore = Trainer.restore

    def forgetful(self):
        restore(self)
        self.cursor["elapsed"] = 0.0

    monkeypatch.setattr(Trainer, "restore", forgetful)
    resumed, _ = _killed_then_resumed(config, tmp_path / "run", steps - 2)
    assert resumed.steps[0]["lr"] == config.lr > whole.steps[steps - 2]["lr"]


def test_extending_a_finished_run_returns_to_the_peak_and_decays_again_before_the_new_end(tmp_path):
    config = dataclasses.replace(CONFIGS["stateful"], decay_fraction=0.25)
    first = _trainer(config, tmp_path)
    done = Probe(first)
    first.fit()
    n = len(first.train_layout)
    assert done.steps[-1]["lr"] == pytest.approx(config.lr * config.min_lr)  # the 2-epoch run ended decayed
    longer = _trainer(dataclasses.replace(config, epochs=4), tmp_path)
    extended = Probe(longer)
    summary = longer.fit(resume=True)
    assert summary["steps"] == 4 * n and len(extended.steps) == 2 * n  # it continued, it did not start over
    lrs = [r["lr"] for r in extended.steps]
    stable = sum(lr == config.lr for lr in lrs)
    assert lrs[:stable] == [config.lr] * stable and abs(stable - n) <= 1  # the peak until 75% of 4n (3n)
    assert all(a > b for a, b in zip(lrs[stable - 1 :], lrs[stable:]))
    assert lrs[-1] == pytest.approx(config.lr * config.min_lr)
