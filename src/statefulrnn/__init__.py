"""statefulrnn: stateful recurrent sequence models whose state is carried exactly across batches."""

from importlib.metadata import PackageNotFoundError, version

from .layout import Batch, ConcatLayout, PackLayout, Sequences, StatelessLayout, as_sequences
from .model import SequenceModel
from .state import CELLS, State

try:
    __version__ = version("statefulrnn")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "CELLS",
    "Batch",
    "ConcatLayout",
    "PackLayout",
    "SequenceModel",
    "Sequences",
    "State",
    "StatelessLayout",
    "as_sequences",
    "__version__",
]
