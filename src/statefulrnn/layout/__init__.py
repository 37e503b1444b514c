r"""Lane layouts: how sequences are cut into (lanes, window) batches for stateful training.

Starting from one long stream (a book, a year of readings), a layout cuts it into `lanes`
contiguous pieces side by side and walks along them `window` steps at a time. With a 40-step
stream, 3 lanes and window 5 (`statefulrnn layout 40 --lanes 3 --window 5 --batches 3`):

    >>> import numpy as np
    >>> print(ConcatLayout(np.arange(40), lanes=3, window=5).describe().split("\n", 2)[2])
    lane  batch 0    batch 1    batch 2
    0     s0[0:5]    s0[5:10]   s0[10:13] pad2
    1     s0[13:18]  s0[18:23]  s0[23:26] pad2
    2     s0[26:31]  s0[31:36]  s0[36:39] pad2
    s<d>[a:b] = steps a..b-1 of sequence d;  * = state reset before this step;  pad = masked padding

Each batch is a (lanes, window) block: batch k holds columns k*window .. (k+1)*window of every lane.
**Lane i of batch k+1 continues lane i of batch k** (the contract Keras states for `stateful=True`),
so the state lane i ends batch k with is exactly the state it needs to start batch k+1: the trainer
carries it across (detached), and gradients flow only inside a window (truncated BPTT). Padding is
masked out of the loss.

- `ConcatLayout`: sequences back to back in one stream, cut into lanes (the language-model layout
  above); optionally a reset where a new sequence starts inside a lane.
- `PackLayout`: whole sequences packed into lanes (many series, many books), each starting with a
  reset (`*` in `describe()`), so no state leaks from one sequence into the next.
- `StatelessLayout`: the same data as independent, shuffled windows that each start from zero state
  (optionally warmed up on the `burn_in` steps before them), for comparison.
- `training_layout` / `evaluation_layout` / `pack_layout`: the layout a run uses, from its settings.

Only numpy here: batches hold numpy arrays gathered lazily from the (possibly memory-mapped) data,
so a corpus larger than memory can be laid out.
"""

from .base import Layout
from .choose import LayoutSettings, evaluation_layout, pack_layout, training_layout
from .sequences import ArrayLike, Batch, Sequences, as_sequences
from .stateful import ConcatLayout, PackLayout
from .stateless import StatelessLayout

__all__ = [
    "ArrayLike",
    "Batch",
    "ConcatLayout",
    "Layout",
    "LayoutSettings",
    "PackLayout",
    "Sequences",
    "StatelessLayout",
    "as_sequences",
    "evaluation_layout",
    "pack_layout",
    "training_layout",
]
