"""SequenceModel: embedding or features -> recurrent stack -> linear head.

The recurrent stack is one `torch.nn.LSTM`, `GRU` or `RNN` (tanh) module, so every window runs in
PyTorch's fused kernel (oneDNN on CPU, cuDNN on GPU), or a minGRU / minLSTM stack (`scan.py`), whose
window is a matrix multiply per layer and a parallel scan. State goes in and comes out explicitly as a
`State`; nothing is kept inside the module, so one model serves any number of lanes or streams.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .scan import SCAN_MODULES
from .state import State, check_cell

_FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


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
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell = cell
        self.vocab_size = vocab_size
        self.n_features = n_features
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.n_outputs = n_outputs or vocab_size or n_features
        self.dropout = dropout
        self.embedding_dim = embedding_dim if vocab_size is not None else None

        self.embedding = nn.Embedding(vocab_size, embedding_dim) if vocab_size is not None else None
        input_size = embedding_dim if vocab_size is not None else n_features
        between = dropout if num_layers > 1 else 0.0
        if cell in SCAN_MODULES:
            self.rnn = SCAN_MODULES[cell](input_size, hidden_size, num_layers, dropout=between)
        else:
            self.rnn = _FUSED[cell](input_size, hidden_size, num_layers, batch_first=True, dropout=between)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(hidden_size, self.n_outputs)

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
        inputs = self.drop(self.embedding(x) if self.embedding is not None else x)  # (lanes, T, input_size)
        if self.cell in SCAN_MODULES:  # resets are handled inside the scan: one call whatever they are
            if resets is not None:
                resets = _resets(resets, inputs.shape[:2])
            hidden, h_n = self.rnn(inputs, None if state is None else state.h, resets)
            return self.head(self.drop(hidden)), State(self.cell, h_n)
        if resets is None:
            hidden, hx = self.rnn(inputs, None if state is None else state.to_torch())  # (lanes, T, hidden)
            return self.head(self.drop(hidden)), State.from_torch(self.cell, hx)
        hidden, state = self._run_with_resets(inputs, state, resets)
        return self.head(self.drop(hidden)), state

    def _run_with_resets(
        self, inputs: torch.Tensor, state: State | None, resets: torch.Tensor
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
            hidden, hx = self.rnn(inputs[:, start:stop], state.to_torch())
            state = State.from_torch(self.cell, hx)
            pieces.append(hidden)
        return (pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)), state


def _resets(resets: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """`resets` as a bool tensor, checked against the window's (lanes, T)."""
    resets = torch.as_tensor(resets, dtype=torch.bool)
    if resets.shape != tuple(shape):
        raise ValueError(f"resets must be (lanes, T) = {tuple(shape)}, got {tuple(resets.shape)}")
    return resets
