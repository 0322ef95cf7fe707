"""The merge tree: partial sums on the workers give the single-task merge's model."""

from __future__ import annotations

import numpy as np
import pytest

from nsdist.merge import Partial, apply_sum, merge_deltas, sum_deltas
from nsdist.model import Model
from nsdist.shard import Delta

V, DIM = 200, 6


def _delta(seed: int, share: float = 0.5) -> Delta:
    rng = np.random.default_rng(seed)
    rows_in = np.flatnonzero(rng.random(V) < share).astype(np.int32)
    rows_out = np.flatnonzero(rng.random(V) < share).astype(np.int32)
    return Delta(rows_in, rng.normal(size=(len(rows_in), DIM)).astype(np.float32),
                 rng.integers(1, 40, len(rows_in)).astype(np.uint32),
                 rows_out, rng.normal(size=(len(rows_out), DIM)).astype(np.float32),
                 rng.integers(1, 40, len(rows_out)).astype(np.uint32), {})


def _tree(deltas, how, fan_in=3):
    """The pipeline's reduction shape: groups of fan_in, level by level, in shard order.
    Returns the root and the number of merge nodes."""
    level, nodes = list(deltas), 0
    while len(level) > 1:
        level = [sum_deltas(*level[i:i + fan_in], how=how) for i in range(0, len(level), fan_in)]
        nodes += len(level)
    return level[0], nodes


@pytest.fixture
def model():
    rng = np.random.default_rng(99)
    return Model(rng.normal(size=(V, DIM)).astype(np.float32), rng.normal(size=(V, DIM)).astype(np.float32))


@pytest.mark.parametrize("how", ["mean", "touched", "weighted"])
@pytest.mark.parametrize("shards", [1, 3, 9, 17])
def test_tree_equals_flat_merge(model, how, shards):
    deltas = [_delta(s, share=0.05 + 0.9 * (s % 4) / 4) for s in range(shards)]
    flat = merge_deltas(model, *deltas, how=how)
    root, nodes = _tree(deltas, how)
    tree = apply_sum(model, root, how)
    np.testing.assert_allclose(tree.win, flat.win, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tree.wout, flat.wout, rtol=1e-5, atol=1e-6)
    # Same tree, same inputs: the same bits (retries and other clusters reproduce the model).
    again = apply_sum(model, _tree(deltas, how)[0], how)
    assert np.array_equal(again.win, tree.win) and np.array_equal(again.wout, tree.wout)
    # One shard: apply_sum sums the lone delta itself.
    assert tree.info["merge_tasks"] == max(nodes, 1) + 1
    assert tree.info["merge_bytes"] >= sum(d.nbytes for d in deltas)


def test_partials_carry_counts_and_bytes(model):
    deltas = [_delta(s) for s in range(4)]
    left, right = sum_deltas(*deltas[:2], how="weighted"), sum_deltas(*deltas[2:], how="weighted")
    root = sum_deltas(left, right, how="weighted")
    assert isinstance(root, Partial) and root.shards == 4 and root.tasks == 3
    assert root.moved == sum(d.nbytes for d in deltas) + left.nbytes + right.nbytes
    # Denominators of the weighted merge are the summed update counts of each row.
    counts = np.zeros(V)
    for d in deltas:
        counts[d.rows_in] += d.n_in
    assert np.array_equal(root.rows_in, np.flatnonzero(counts))
    assert np.array_equal(root.den_in, counts[root.rows_in])


def test_empty_deltas_change_nothing(model):
    empty = Delta(np.zeros(0, np.int32), np.zeros((0, DIM), np.float32), np.zeros(0, np.uint32),
                  np.zeros(0, np.int32), np.zeros((0, DIM), np.float32), np.zeros(0, np.uint32), {})
    for how in ("mean", "touched", "weighted"):
        out = apply_sum(model, sum_deltas(empty, empty, how=how), how)
        assert np.array_equal(out.win, model.win) and np.array_equal(out.wout, model.wout)
