"""SequenceModel: embedding or features -> recurrent stack -> linear head.

The recurrent stack is one `torch.nn.LSTM`, `GRU` or `RNN` (tanh) module, so every window runs in
PyTorch's fused kernel (oneDNN on CPU, cuDNN on GPU), or a minGRU / minLSTM stack (`scan.py`), whose
window is a matrix multiply per layer and a parallel scan. State goes in and comes out explicitly as a
`State`; nothing is kept inside the module, so one model serves any number of lanes or streams.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .scan import SCAN_MODULES
from .state import State, check_cell

_FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

PRESETS: dict[str, dict[str, Any]] = {
    "awd": {"locked_dropout": 0.1, "weight_drop": 0.2},
}
"""Named regularisation settings (SequenceModel arguments): `--preset NAME` of `statefulrnn train text`.
"awd": AWD-LSTM's locked dropout and weight drop at mild rates; tied weights and embedding dropout cost
the most validation loss in short tinyshakespeare runs, so they are left out. It loses to the defaults in
runs of 3 minutes or less and wins in 15 (1.440 against 1.514 nats/char, one seed; BENCHMARKS.md)."""


@dataclass
class ModelConfig:
    """The arguments of `SequenceModel` with their defaults: the one place model defaults live
    (the CLI reads its defaults from here). `SequenceModel(**asdict(config))` builds the model."""

    cell: str = "lstm"
    vocab_size: int | None = None
    n_features: int | None = None
    hidden_size: int = 256
    num_layers: int = 2
    n_outputs: int | None = None
    dropout: float = 0.0
    embedding_dim: int = 64
    locked_dropout: float = 0.0
    weight_drop: float = 0.0
    embedding_dropout: float = 0.0
    tie_weights: bool = False

    def build(self) -> SequenceModel:
        """The model these arguments describe."""
        return SequenceModel(**asdict(self))


class SequenceModel(nn.Module):
    """A recurrent sequence model that gives an output at every time step.

    Args:
        cell: "lstm", "gru", "rnn" (Elman RNN with tanh), or the parallel-scan cells "mingru" and
            "minlstm" (h only, gates from the input alone; see `statefulrnn.scan`).
        vocab_size: number of token ids, for token input (text); ids go through an embedding.
        n_features: number of real-valued input features per step (time series). Give exactly one
            of `vocab_size` and `n_features`.
        hidden_size: units per recurrent layer (the size of `h`, and of `c` for LSTM).
        num_layers: stacked recurrent layers.
        n_outputs: outputs per step; defaults to `vocab_size` (next-token logits) or `n_features`.
        dropout: applied to the inputs of every recurrent layer and to the head's input; 0 disables
            it entirely (no extra kernels).
        embedding_dim: size of the token embedding (token input only).
        locked_dropout: variational ("locked") dropout (Gal & Ghahramani 2016; AWD-LSTM): one mask per
            lane drawn per window (forward call) and used at every step of it, on the embedding output
            (or input features), between recurrent layers and on the head's input. Between layers of a
            fused cell the stack then runs one fused call per layer; for the scan cells it applies to
            the stack's input and output only. 0 disables it.
        weight_drop: DropConnect on the hidden-to-hidden weights (`weight_hh_l*`) of the fused LSTM,
            GRU or RNN: a fresh mask per window, and the fused kernel still runs (AWD-LSTM's WeightDrop).
            Not available for the scan cells, which have no hidden-to-hidden weights. 0 disables it.
        embedding_dropout: drops whole rows of the embedding matrix (every occurrence of a token in
            the window), one mask per window (token input only). 0 disables it.
        tie_weights: the head's weight is the embedding matrix (Press & Wolf 2017; token input whose
            outputs are next-token logits only); where `hidden_size` differs from `embedding_dim`, a
            linear projection hidden -> embedding_dim comes first. The embedding is then initialised
            uniform in [-0.1, 0.1], as in AWD-LSTM.

    Every regulariser is active in training mode only: in eval mode (evaluation, streaming, export)
    the model computes exactly what it would without them.
    """

    def __init__(
        self,
        cell: str = ModelConfig.cell,
        *,
        vocab_size: int | None = None,
        n_features: int | None = None,
        hidden_size: int = ModelConfig.hidden_size,
        num_layers: int = ModelConfig.num_layers,
        n_outputs: int | None = None,
        dropout: float = ModelConfig.dropout,
        embedding_dim: int = ModelConfig.embedding_dim,
        locked_dropout: float = ModelConfig.locked_dropout,
        weight_drop: float = ModelConfig.weight_drop,
        embedding_dropout: float = ModelConfig.embedding_dropout,
        tie_weights: bool = ModelConfig.tie_weights,
    ) -> None:
        super().__init__()
        check_cell(cell)
        if (vocab_size is None) == (n_features is None):
            raise ValueError("give exactly one of vocab_size (token input) and n_features (real-valued input)")
        for name, value in (("vocab_size", vocab_size), ("n_features", n_features), ("n_outputs", n_outputs)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be at least 1, got {hidden_size} and {num_layers}")
        for name, rate in (
            ("dropout", dropout),
            ("locked_dropout", locked_dropout),
            ("weight_drop", weight_drop),
            ("embedding_dropout", embedding_dropout),
        ):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        _check_regularisers(cell, vocab_size, n_outputs, weight_drop, embedding_dropout, tie_weights)
        self.cell = cell
        self.vocab_size = vocab_size
        self.n_features = n_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.n_outputs = n_outputs or vocab_size or n_features
        self.dropout = dropout
        self.embedding_dim = embedding_dim if vocab_size is not None else None
        self.locked_dropout, self.weight_drop = locked_dropout, weight_drop
        self.embedding_dropout, self.tie_weights = embedding_dropout, tie_weights

        self.embedding = nn.Embedding(vocab_size, embedding_dim) if vocab_size is not None else None
        input_size = embedding_dim if vocab_size is not None else n_features
        between = dropout if num_layers > 1 else 0.0
        if cell in SCAN_MODULES:
            self.rnn = SCAN_MODULES[cell](input_size, hidden_size, num_layers, dropout=between)
        else:
            self.rnn = _FUSED[cell](input_size, hidden_size, num_layers, batch_first=True, dropout=between)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(hidden_size, self.n_outputs)
        self.project = None
        if tie_weights:
            self._tie(embedding_dim)
        self._layers = _single_layers(self.rnn) if cell in _FUSED and locked_dropout and num_layers > 1 else []

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the model (saved as JSON in a run)."""
        return {
            "cell": self.cell,
            "vocab_size": self.vocab_size,
            "n_features": self.n_features,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "n_outputs": self.n_outputs,
            "dropout": self.dropout,
            "embedding_dim": self.embedding_dim or ModelConfig.embedding_dim,
            "locked_dropout": self.locked_dropout,
            "weight_drop": self.weight_drop,
            "embedding_dropout": self.embedding_dropout,
            "tie_weights": self.tie_weights,
        }

    def initial_state(self, lanes: int) -> State:
        """All-zero state for `lanes` lanes, on the model's device and dtype."""
        p = self.head.weight
        return State.zeros(self.cell, self.num_layers, lanes, self.hidden_size, device=p.device, dtype=p.dtype)

    def forward(
        self,
        x: torch.Tensor,
        state: State | None = None,
        resets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Run a window and return `(outputs, new_state)`.

        Args:
            x: (lanes, T) token ids, or (lanes, T, n_features) floats.
            state: the state carried from the previous window; None starts every lane from zero.
            resets: optional (lanes, T) bools; where true, that lane's state is zeroed just before
                that step (a new sequence starts there).

        Returns:
            outputs (lanes, T, n_outputs) and the state after the last step.
        """
        inputs = self.drop(self._locked(self._embed(x)))  # (lanes, T, input_size)
        if self.cell in SCAN_MODULES:  # resets are handled inside the scan: one call whatever they are
            if resets is not None:
                resets = _resets(resets, inputs.shape[:2])
            hidden, h_n = self.rnn(inputs, None if state is None else state.h, resets)
            return self._head(hidden), State(self.cell, h_n)
        run = self._window_runner(inputs.shape[0])
        if resets is None:
            hidden, hx = run(inputs, None if state is None else state.to_torch())  # (lanes, T, hidden)
            return self._head(hidden), State.from_torch(self.cell, hx)
        hidden, state = self._run_with_resets(inputs, state, resets, run)
        return self._head(hidden), state

    def _run_with_resets(
        self, inputs: torch.Tensor, state: State | None, resets: torch.Tensor, run: Any
    ) -> tuple[torch.Tensor, State]:
        """Cut the window at every column where some lane resets; one fused call per piece."""
        lanes, steps = inputs.shape[:2]
        resets = _resets(resets, (lanes, steps))
        columns = resets.any(dim=0).nonzero().flatten().tolist()
        if state is None:
            state = self.initial_state(lanes)
        bounds = sorted(set(columns) | {0, steps})
        pieces = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if columns and start == columns[0]:
                columns.pop(0)
                state = state.reset(resets[:, start].to(state.device))
            hidden, hx = run(inputs[:, start:stop], state.to_torch())
            state = State.from_torch(self.cell, hx)
            pieces.append(hidden)
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)), state

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings (with embedding dropout in training), or the features as given."""
        if self.embedding is None:
            return x
        weight = self.embedding.weight
        if self.training and self.embedding_dropout:
            keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - self.embedding_dropout)
            weight = weight * keep / (1 - self.embedding_dropout)
        return F.embedding(x, weight)

    def _locked(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (lanes, T, n) times one dropout mask per lane, the same at every step (training only)."""
        if not (self.training and self.locked_dropout):
            return x
        return x * _locked_mask(x.shape[0], x.shape[-1], self.locked_dropout, x)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(self._locked(hidden))
        return self.head(hidden if self.project is None else self.project(hidden))

    def _tie(self, embedding_dim: int) -> None:
        """Make the head's weight the embedding matrix, projecting hidden -> embedding_dim if needed."""
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.hidden_size != embedding_dim:
            self.head = nn.Linear(embedding_dim, self.n_outputs)
            self.project = nn.Linear(self.hidden_size, embedding_dim, bias=False)
        self.head.weight = self.embedding.weight
        # safetensors refuses tensors that share storage: the weights hold the matrix once, as embedding.weight
        self.register_state_dict_post_hook(_drop_tied_key)
        self.register_load_state_dict_pre_hook(_restore_tied_key)

    def _window_runner(self, lanes: int) -> Any:
        """The recurrent stack for one window: the module itself, or, in training with weight drop or
        locked dropout between layers, the same fused kernels with this window's dropped weights and masks."""
        between = bool(self._layers) and self.training
        if not (self.training and self.weight_drop) and not between:
            return self.rnn
        weights = dict(self.rnn.named_parameters())
        if self.training and self.weight_drop:
            for name in weights:
                if name.startswith("weight_hh"):
                    weights[name] = F.dropout(weights[name], self.weight_drop, training=True)
        if not between:
            return lambda inputs, hx: _quiet_call(self.rnn, weights, inputs, hx)
        w = self.head.weight
        masks = [_locked_mask(lanes, self.hidden_size, self.locked_dropout, w) for _ in self._layers[1:]]
        between_rate = self.dropout if self.training else 0.0  # the per-step dropout nn.LSTM applies between layers
        return lambda inputs, hx: _layer_by_layer(self._layers, weights, masks, between_rate, inputs, hx)


def _check_regularisers(
    cell: str, vocab_size: int | None, n_outputs: int | None, weight_drop: float, embedding_dropout: float, tie: bool
) -> None:
    if weight_drop and cell in SCAN_MODULES:
        raise ValueError(f"weight_drop needs hidden-to-hidden weights, which {cell} has not; use lstm, gru or rnn")
    if embedding_dropout and vocab_size is None:
        raise ValueError("embedding_dropout needs token input (vocab_size); use locked_dropout for features")
    if tie and (vocab_size is None or (n_outputs or vocab_size) != vocab_size):
        raise ValueError("tie_weights needs token input whose outputs are next-token logits (n_outputs = vocab_size)")


def _locked_mask(lanes: int, size: int, rate: float, like: torch.Tensor) -> torch.Tensor:
    """A (lanes, 1, size) dropout mask, scaled by 1 / (1 - rate)."""
    return like.new_empty(lanes, 1, size).bernoulli_(1 - rate) / (1 - rate)


def _single_layers(rnn: nn.RNNBase) -> list[nn.RNNBase]:
    """One single-layer module per layer of `rnn`, with no weights of their own (meta device): each
    runs in the fused kernel with its layer's weights through `functional_call`. A plain list, so they
    are not sub-modules (not in the state dict, not moved by `.to`)."""
    kind, extra = type(rnn), {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    sizes = [rnn.input_size] + [rnn.hidden_size] * (rnn.num_layers - 1)
    return [kind(n, rnn.hidden_size, 1, bias=rnn.bias, batch_first=True, device="meta", **extra) for n in sizes]


def _quiet_call(module: nn.Module, weights: dict[str, torch.Tensor], inputs: torch.Tensor, hx: Any) -> Any:
    """`module(inputs, hx)` with `weights` in place of its parameters, without cuDNN's warning that
    they are not one contiguous block (they cannot be: they are fresh tensors every window)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        return functional_call(module, weights, (inputs, hx))


def _layer_by_layer(
    layers: list[nn.RNNBase],
    weights: dict[str, torch.Tensor],
    masks: list[torch.Tensor],
    rate: float,
    inputs: torch.Tensor,
    hx: Any,
) -> tuple[torch.Tensor, Any]:
    """The stack run one fused call per layer, with a locked dropout mask (and per-step dropout at `rate`)
    on each layer's input but the first."""
    lstm = isinstance(layers[0], nn.LSTM)
    finals = []
    x = inputs
    for i, layer in enumerate(layers):
        if i:
            x = F.dropout(x * masks[i - 1].to(x.dtype), rate) if rate else x * masks[i - 1].to(x.dtype)
        own = {k.replace(f"_l{i}", "_l0"): v for k, v in weights.items() if k.endswith(f"_l{i}")}
        h = None if hx is None else ((hx[0][i : i + 1], hx[1][i : i + 1]) if lstm else hx[i : i + 1])
        x, out = _quiet_call(layer, own, x, h)
        finals.append(out)
    if lstm:
        return x, (torch.cat([f[0] for f in finals]), torch.cat([f[1] for f in finals]))
    return x, torch.cat(finals)


def _drop_tied_key(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    state_dict.pop(prefix + "head.weight", None)


def _restore_tied_key(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    if prefix + "embedding.weight" in state_dict:
        state_dict.setdefault(prefix + "head.weight", state_dict[prefix + "embedding.weight"])


def _resets(resets: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """`resets` as a bool tensor, checked against the window's (lanes, T)."""
    resets = torch.as_tensor(resets, dtype=torch.bool)
    if resets.shape != tuple(shape):
        raise ValueError(f"resets must be (lanes, T) = {tuple(shape)}, got {tuple(resets.shape)}")
    return resets
