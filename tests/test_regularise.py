"""Regularised stateful models: locked (variational) dropout, weight drop, embedding dropout, tied weights.

Each is active in training only: in eval mode the state carry stays exact (windowed == whole), in
training the masks are drawn once per window and a fixed seed gives the same outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn import runs
from statefulrnn.layout import Sequences
from statefulrnn.model import PRESETS, SequenceModel
from statefulrnn.objectives import NextToken
from statefulrnn.scan import SCAN_CELLS
from statefulrnn.state import CELLS
from statefulrnn.train import TrainConfig, Trainer, seed_everything, training_layout

FUSED = tuple(c for c in CELLS if c not in SCAN_CELLS)
VOCAB = 7

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


def _features(lanes: int, steps: int, n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(lanes, steps, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _tokens(lanes: int, steps: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (lanes, steps), generator=torch.Generator().manual_seed(seed))


def _inputs_seen(module: torch.nn.Module) -> tuple[list[torch.Tensor], object]:
    seen: list[torch.Tensor] = []
    return seen, module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))


# --- locked dropout --------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", FUSED)
def test_locked_mask_is_the_same_at_every_step_and_new_every_window(cell):
    torch.manual_seed(0)
    model = SequenceModel(cell, n_features=16, hidden_size=16, num_layers=2, locked_dropout=0.5).double().train()
    first, hook_first = _inputs_seen(model._layers[0])
    second, hook_second = _inputs_seen(model._layers[1])
    x = torch.ones(3, 9, 16, dtype=torch.float64)
    for _ in range(2):  # two windows
        model(x)
    hook_first.remove(), hook_second.remove()
    for seen in (first, second):
        assert len(seen) == 2, "one fused call per layer per window"
        for window in seen:
            zeros = window == 0
            assert zeros.any() and not zeros.all()
            assert torch.equal(zeros, zeros[:, :1].expand_as(zeros)), "the mask must not change across steps"
        assert not torch.equal(seen[0] == 0, seen[1] == 0), "each window draws a new mask"
    assert set(first[0].unique().tolist()) == {0.0, 2.0}  # input ones, kept and scaled by 1 / (1 - 0.5)


@pytest.mark.parametrize("cell", FUSED)
def test_locked_dropout_between_layers_runs_one_fused_call_per_layer_and_piece(cell):
    model = SequenceModel(cell, vocab_size=VOCAB, hidden_size=4, num_layers=3, locked_dropout=0.3).train()
    hooks = [_inputs_seen(layer) for layer in model._layers]
    whole, whole_hook = _inputs_seen(model.rnn)
    resets = torch.zeros(2, 10, dtype=torch.bool)
    resets[1, 4] = True
    model(_tokens(2, 10))
    model(_tokens(2, 10), None, resets)
    assert [[s.shape[1] for s in seen] for seen, _ in hooks] == [[10, 4, 6]] * 3 and not whole
    model.eval()(_tokens(2, 10))  # eval: the single fused call of the whole stack
    assert len(whole) == 1 and [len(seen) for seen, _ in hooks] == [3, 3, 3]
    for _, h in [*hooks, (None, whole_hook)]:
        h.remove()


@pytest.mark.parametrize("cell", FUSED)
def test_a_window_cut_at_resets_keeps_one_mask_and_one_weight_sample(cell):
    """Lanes without a reset get in training exactly what they get from the uncut window, same seed."""
    kw = {"locked_dropout": 0.3, "weight_drop": 0.4, "embedding_dropout": 0.2, "tie_weights": True}
    model = SequenceModel(cell, vocab_size=VOCAB, embedding_dim=5, hidden_size=6, num_layers=2, **kw).double()
    model.train()
    x, state = _tokens(3, 12), model.initial_state(3)
    resets = torch.zeros(3, 12, dtype=torch.bool)
    resets[0, 5] = True
    torch.manual_seed(3)
    plain, plain_state = model(x, state)
    torch.manual_seed(3)
    cut, cut_state = model(x, state, resets)
    assert (cut[1:] - plain[1:]).abs().max() <= 1e-12  # split into pieces: equal up to rounding
    assert (cut_state.h[:, 1:] - plain_state.h[:, 1:]).abs().max() <= 1e-12
    assert (cut[0] - plain[0]).abs().max() > 1e-3
    torch.manual_seed(4)
    assert not torch.equal(model(x, state)[0], plain), "another seed draws other masks"


# --- weight drop -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", FUSED)
@pytest.mark.parametrize("layers", [1, 2])
def test_weight_drop_zeroes_hidden_weights_in_training_only_and_trains_the_raw_weights(cell, layers):
    torch.manual_seed(0)
    model = SequenceModel(cell, n_features=3, hidden_size=32, num_layers=layers, weight_drop=0.5)
    seen = []
    hook = model.rnn.register_forward_hook(lambda m, a, o: seen.append(m.weight_hh_l0.detach().clone()))
    raw = model.rnn.weight_hh_l0
    assert raw.ne(0).all()
    out, _ = model.train()(_features(2, 6).float())
    dropped = seen[-1] == 0
    assert 0.4 < dropped.float().mean() < 0.6
    out.square().sum().backward()
    assert raw.grad is not None and raw.grad[dropped].eq(0).all() and raw.grad[~dropped].ne(0).any()
    model.eval()(_features(2, 6).float())
    assert seen[-1].ne(0).all() and torch.equal(seen[-1], raw.detach())
    hook.remove()
    assert len(seen) == 2, "one call of the fused module per window"


def test_weight_drop_still_runs_the_fused_kernel():
    model = SequenceModel("lstm", n_features=3, hidden_size=8, num_layers=2, weight_drop=0.5).train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(_features(2, 20).float())
    names = [e.name for e in prof.events()]
    assert names.count("aten::lstm") == 1, "one fused LSTM over the window, no per-step cells"
    assert "aten::lstm_cell" not in names


# --- tied weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [5, 9])  # = embedding_dim (no projection), != (projection)
def test_tied_weights_share_storage_and_round_trip_through_safetensors(tmp_path, hidden):
    torch.manual_seed(0)
    model = SequenceModel("lstm", vocab_size=VOCAB, embedding_dim=5, hidden_size=hidden, tie_weights=True).eval()
    assert model.head.weight is model.embedding.weight
    assert (model.project is None) == (hidden == 5)
    assert "head.weight" not in model.state_dict()
    runs.save_model(tmp_path / "run", model, {"task": "text"})
    loaded, _ = runs.load_model(tmp_path / "run")
    assert loaded.head.weight.data_ptr() == loaded.embedding.weight.data_ptr()
    x = _tokens(2, 8)
    assert torch.equal(loaded(x)[0], model(x)[0])
    untied = sum(
        p.numel() for p in SequenceModel("lstm", vocab_size=VOCAB, embedding_dim=5, hidden_size=5).parameters()
    )
    if hidden == 5:
        assert sum(p.numel() for p in model.parameters()) == untied - VOCAB * 5


# --- the stateful contract in eval mode, every combination -----------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    cell=st.sampled_from(CELLS),
    locked=st.sampled_from([0.0, 0.4]),
    weight_drop=st.sampled_from([0.0, 0.4]),
    embedding_dropout=st.sampled_from([0.0, 0.3]),
    tie=st.booleans(),
    dropout=st.sampled_from([0.0, 0.2]),
    hidden=st.integers(2, 6),
    layers=st.integers(1, 3),
    steps=st.integers(1, 25),
    window=st.integers(1, 30),
    seed=st.integers(0, 100),
)
def test_eval_mode_windowed_equals_whole(
    cell, locked, weight_drop, embedding_dropout, tie, dropout, hidden, layers, steps, window, seed
):
    weight_drop = 0.0 if cell in SCAN_CELLS else weight_drop
    torch.manual_seed(seed)
    kw = {"locked_dropout": locked, "weight_drop": weight_drop, "embedding_dropout": embedding_dropout}
    model = SequenceModel(
        cell, vocab_size=VOCAB, embedding_dim=4, hidden_size=hidden, num_layers=layers, dropout=dropout,
        tie_weights=tie, **kw,
    ).double().eval()  # fmt: skip
    x = _tokens(2, steps, seed)
    whole, whole_state = model(x)
    state, outs = None, []
    for a in range(0, steps, window):
        out, state = model(x[:, a : a + window], state)
        outs.append(out)
    assert (torch.cat(outs, dim=1) - whole).abs().max() <= 1e-12
    assert (state.h - whole_state.h).abs().max() <= 1e-12
    plain = SequenceModel(**{**model.config, **dict.fromkeys(kw, 0.0)}).double().eval()
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain(x)[0], whole), "in eval mode the regularisers change nothing"


# --- arguments -------------------------------------------------------------------------------------


def test_regulariser_arguments_are_checked():
    for cell in SCAN_CELLS:
        with pytest.raises(ValueError, match="weight_drop needs hidden-to-hidden"):
            SequenceModel(cell, vocab_size=VOCAB, weight_drop=0.2)
    with pytest.raises(ValueError, match="tie_weights needs token input"):
        SequenceModel("lstm", n_features=2, tie_weights=True)
    with pytest.raises(ValueError, match="tie_weights needs token input"):
        SequenceModel("lstm", vocab_size=VOCAB, n_outputs=3, tie_weights=True)
    with pytest.raises(ValueError, match="embedding_dropout needs token input"):
        SequenceModel("lstm", n_features=2, embedding_dropout=0.1)
    for name in ("locked_dropout", "weight_drop", "embedding_dropout"):
        with pytest.raises(ValueError, match=name):
            SequenceModel("lstm", vocab_size=VOCAB, **{name: 1.0})
    for preset in PRESETS.values():
        assert SequenceModel("lstm", vocab_size=VOCAB, **preset).config.items() >= preset.items()


# --- training: deterministic and resumable ---------------------------------------------------------


class Killed(Exception):
    pass


def _trainer(config: TrainConfig, run, kill_after: int | None = None) -> Trainer:
    seed_everything(config.seed)
    rng = np.random.default_rng(0)
    lengths = rng.integers(12, 40, 8)
    seqs = Sequences(rng.integers(0, VOCAB, lengths.sum()).astype(np.uint8), np.concatenate([[0], np.cumsum(lengths)]))
    kw = {**PRESETS["awd"], "embedding_dropout": 0.1, "tie_weights": True}
    model = SequenceModel("lstm", vocab_size=VOCAB, hidden_size=8, num_layers=2, embedding_dim=6, **kw)
    trainer = Trainer(model, NextToken(), training_layout(seqs, config), None, config, run, progress=False)
    if kill_after is not None:
        inner, done = trainer.train_step, []

        def step(batch):
            if len(done) == kill_after:
                raise Killed
            done.append(1)
            return inner(batch)

        trainer.train_step = step
    return trainer


def test_a_regularised_run_resumes_bit_for_bit(tmp_path):
    config = TrainConfig(lanes=3, window=8, epochs=2, seed=5, checkpoint_every=0, log_every=1)
    whole = _trainer(config, tmp_path / "whole")
    whole.fit()
    killed = _trainer(config, tmp_path / "killed", kill_after=4)
    with pytest.raises(Killed):
        killed.fit()
    resumed = _trainer(config, tmp_path / "killed")
    resumed.fit(resume=True)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.model.head.weight is resumed.model.embedding.weight
    again = _trainer(config, tmp_path / "again")
    again.fit()
    assert all(torch.equal(a[k], v) for k, v in again.model.state_dict().items()), "a fixed seed repeats a run"


def test_cli_preset_fills_in_what_is_not_given():
    import argparse

    from statefulrnn.cli.common import add_model_options, model_args

    parser = argparse.ArgumentParser()
    add_model_options(parser)
    plain = model_args(parser.parse_args([]))
    assert SequenceModel(vocab_size=VOCAB, **plain).config == SequenceModel(vocab_size=VOCAB).config
    args = model_args(parser.parse_args(["--preset", "awd", "--weight-drop", "0.3", "--tie-weights"]))
    assert args["weight_drop"] == 0.3 and args["tie_weights"] is True
    assert all(args[k] == v for k, v in PRESETS["awd"].items() if k != "weight_drop")
