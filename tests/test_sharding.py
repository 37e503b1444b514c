"""Lane sharding without processes: blocks tile the lanes in order; shards are the rows of a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from statefulrnn.distributed import Distributed, lane_block, shard_batch
from statefulrnn.layout import ConcatLayout, StatelessLayout
from statefulrnn.state import State


@pytest.mark.parametrize("lanes", [1, 2, 3, 7, 8, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_blocks_tile_the_lanes_in_order_and_differ_by_at_most_one(lanes, world):
    blocks = [lane_block(lanes, r, world) for r in range(world)]
    assert [i for b in blocks for i in range(lanes)[b]] == list(range(lanes))
    sizes = [b.stop - b.start for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shards_are_the_rows_of_the_global_batch():
    data = np.arange(400) % 11
    layout = ConcatLayout([data[:150], data[150:]], 5, 16, reset_at_boundaries=True)
    batch = next(b for b in layout.batches() if b.resets is not None)  # a sequence starts in lane 1
    parts = [shard_batch(batch, lane_block(5, r, 2)) for r in range(2)]
    for name in ("inputs", "targets", "mask", "positions"):
        assert np.array_equal(np.concatenate([getattr(p, name) for p in parts]), getattr(batch, name))
    resets = [np.zeros_like(p.mask) if p.resets is None else p.resets for p in parts]
    assert np.array_equal(np.concatenate(resets), batch.resets)


def test_an_empty_block_is_one_fully_masked_row():
    layout = StatelessLayout(np.arange(100) % 7, 4, 10, burn_in=3, shuffle=False)
    last = layout.batch(len(layout) - 1)  # 10 windows in batches of 4: the last holds 2
    assert len(last.inputs) == 2
    empty = shard_batch(last, lane_block(2, 2, 3))
    assert empty.inputs.shape == (1, 10) and not empty.mask.any() and empty.context.shape == (1, 3)


def test_a_checkpointed_state_is_resharded_for_any_world_size():
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    state = State("lstm", h, -h)
    for world in (1, 2, 3):
        parts = [
            Distributed(r, world, r, torch.device("cpu"), 1.0).local_state(state) for r in range(world)
        ]  # fmt: skip
        assert torch.equal(State.concat(parts).h, h) and torch.equal(State.concat(parts).c, -h)
