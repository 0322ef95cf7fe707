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


def _tree(model, deltas, how, fan_in=3):
    """The pipeline's reduction shape (pipeline._tree_levels): groups of fan_in in shard order,
    level by level, until at most fan_in inputs remain; the root sums those and applies.
    Returns the new model and the number of inner (sum) nodes."""
    level, nodes = list(deltas), 0
    while len(level) > fan_in:
        level = [sum_deltas(*level[i:i + fan_in], how=how) for i in range(0, len(level), fan_in)]
        nodes += len(level)
    return apply_sum(model, *level, how=how), nodes


@pytest.fixture
def model():
    rng = np.random.default_rng(99)
    return Model(rng.normal(size=(V, DIM)).astype(np.float32), rng.normal(size=(V, DIM)).astype(np.float32))


@pytest.mark.parametrize("how", ["mean", "touched", "weighted"])
@pytest.mark.parametrize("shards", [1, 3, 9, 17])
def test_tree_equals_flat_merge(model, how, shards):
    deltas = [_delta(s, share=0.05 + 0.9 * (s % 4) / 4) for s in range(shards)]
    flat = merge_deltas(model, *deltas, how=how)
    tree, nodes = _tree(model, deltas, how)
    np.testing.assert_allclose(tree.win, flat.win, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tree.wout, flat.wout, rtol=1e-5, atol=1e-6)
    # Same tree, same inputs: the same bits (retries and other clusters reproduce the model).
    again, _ = _tree(model, deltas, how)
    assert np.array_equal(again.win, tree.win) and np.array_equal(again.wout, tree.wout)
    depth = {1: 1, 3: 1, 9: 2, 17: 3}[shards]  # 17 -> 6 -> 2 partials -> root
    assert tree.info["merge_tasks"] == nodes + 1 and tree.info["merge_depth"] == depth
    assert flat.info["merge_tasks"] == flat.info["merge_depth"] == 1
    # Bytes moved: the deltas, plus the partials passed up the tree.
    assert tree.info["merge_delta_bytes"] == flat.info["merge_bytes"] == sum(d.nbytes for d in deltas)
    assert (tree.info["merge_bytes"] > tree.info["merge_delta_bytes"]) == (shards > 3)


@pytest.mark.parametrize("how", ["mean", "touched", "weighted"])
def test_tree_equals_reference_average(model, how):
    """The three rules, written out densely per row."""
    deltas = [_delta(s, share=0.3) for s in range(5)]
    got, _ = _tree(model, deltas, how, fan_in=2)
    for matrix, base, new in ((0, model.win, got.win), (1, model.wout, got.wout)):
        num, den = np.zeros_like(base, np.float64), np.zeros(V)
        for d in deltas:
            rows, values, counts = (d.rows_in, d.d_in, d.n_in) if matrix == 0 else (d.rows_out, d.d_out, d.n_out)
            w = counts.astype(np.float64) if how == "weighted" else np.ones(len(rows))
            num[rows] += values * w[:, None]
            den[rows] += w
        den = np.full(V, len(deltas), np.float64) if how == "mean" else np.maximum(den, 1)
        np.testing.assert_allclose(new, base + num / den[:, None], rtol=1e-5, atol=1e-5)


def test_one_shard_applies_its_delta(model):
    d = _delta(7)
    for how in ("mean", "touched", "weighted"):
        out = merge_deltas(model, d, how=how)
        expected = model.win.copy()
        expected[d.rows_in] += d.d_in
        np.testing.assert_allclose(out.win, expected, rtol=1e-6, atol=1e-6)


def test_root_of_one_partial_equals_summing_at_the_root(model):
    deltas = [_delta(s) for s in range(4)]
    for how in ("mean", "touched", "weighted"):
        a = apply_sum(model, sum_deltas(*deltas, how=how), how=how)
        b = apply_sum(model, *deltas, how=how)
        assert np.array_equal(a.win, b.win) and np.array_equal(a.wout, b.wout)
        assert a.info["merge_tasks"] == 2 and b.info["merge_tasks"] == 1


def test_partials_carry_counts_and_bytes(model):
    deltas = [_delta(s) for s in range(4)]
    left, right = sum_deltas(*deltas[:2], how="weighted"), sum_deltas(*deltas[2:], how="weighted")
    root = sum_deltas(left, right, how="weighted")
    assert isinstance(root, Partial) and root.shards == 4 and root.tasks == 3 and root.levels == 2
    assert root.moved == sum(d.nbytes for d in deltas) + left.nbytes + right.nbytes
    assert root.delta_bytes == sum(d.nbytes for d in deltas)
    # Inputs are not modified (Dask may share them between tasks on one worker).
    again = sum_deltas(*deltas[:2], how="weighted")
    assert np.array_equal(again.num_in, left.num_in) and np.array_equal(again.den_out, left.den_out)
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
        for out in (apply_sum(model, sum_deltas(empty, empty, how=how), how=how),
                    apply_sum(model, empty, how=how), apply_sum(model, empty, _delta(1, share=0.0), how=how)):
            assert np.array_equal(out.win, model.win) and np.array_equal(out.wout, model.wout)
    # An empty shard next to a non-empty one: ``mean`` still divides by both shards.
    d = _delta(3)
    half = apply_sum(model, d, empty, how="mean")
    np.testing.assert_allclose(half.win[d.rows_in], model.win[d.rows_in] + d.d_in / 2, rtol=1e-6, atol=1e-6)
    full = apply_sum(model, d, empty, how="touched")
    np.testing.assert_allclose(full.win[d.rows_in], model.win[d.rows_in] + d.d_in, rtol=1e-6, atol=1e-6)
