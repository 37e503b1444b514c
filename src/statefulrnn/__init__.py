"""statefulrnn: stateful recurrent sequence models whose state is carried exactly across batches.

What a notebook needs is importable from here. The core (state, model, layouts) loads at once; the
trainer, the text and series entry points, runs and streaming load on first use, so `import statefulrnn`
stays light and a serving process never loads the trainer.

    >>> import statefulrnn
    >>> model = statefulrnn.SequenceModel("gru", n_features=3, hidden_size=8, num_layers=1)
    >>> model.initial_state(lanes=2).h.shape
    torch.Size([1, 2, 8])
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .layout import (
    Batch,
    ConcatLayout,
    PackLayout,
    Sequences,
    StatelessLayout,
    as_sequences,
    evaluation_layout,
    training_layout,
)
from .model import ModelConfig, SequenceModel
from .state import CELLS, State

try:
    __version__ = version("statefulrnn")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

_LAZY = {
    "Trainer": "train",
    "TrainConfig": "train_config",
    "evaluate": "evaluation",
    "Run": "runs",
    "load_run": "runs",
    "StreamingPredictor": "stream",
    "train_text": "text.lm",
    "evaluate_text": "text.lm",
    "generate": "text.generate",
    "Vocab": "text.vocab",
    "ForecastSpec": "series.spec",
    "train_series": "series.train",
    "StatefulForecaster": "series.forecaster",
    "forecast_run": "series.forecast",
    "read_series": "series.read",
    "evaluate_run": "assess",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'statefulrnn' has no attribute {name!r}")


__all__ = [
    "CELLS",
    "Batch",
    "ConcatLayout",
    "ModelConfig",
    "PackLayout",
    "SequenceModel",
    "Sequences",
    "State",
    "StatelessLayout",
    "__version__",
    "as_sequences",
    "evaluation_layout",
    "training_layout",
    *_LAZY,
]
