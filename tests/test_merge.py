"""The merge rules on the models' rows: the same as the delta formulas G + sum w (W - G) / sum w."""

from __future__ import annotations

import numpy as np
import pytest

from nsdist import merge
from nsdist.merge import merge_rows

V, DIM = 200, 6


def _models(g: np.ndarray, n: int):
    """Each model touches a share of the rows (its counts > 0) and moves only those."""
    out, counts = [], []
    for s in range(n):
        rng = np.random.default_rng(s)
        n = np.where(rng.random(V) < 0.05 + 0.9 * (s % 4) / 4, rng.integers(1, 40, V), 0).astype(np.uint32)
        w = g.copy()
        w[n > 0] += rng.normal(size=(int((n > 0).sum()), DIM)).astype(np.float32)
        out.append(w)
        counts.append(n)
    return out, counts


def _reference(g, models, counts, how):
    """G + sum_s w_s (W_s - G) / sum_s w_s per row touched by any shard, in float64."""
    num, den = np.zeros(g.shape), np.zeros(len(g))
    for w, n in zip(models, counts):
        weight = {"mean": np.ones(len(g)), "touched": (n > 0).astype(float), "weighted": n.astype(float)}[how]
        num += weight[:, None] * (w.astype(np.float64) - g)
        den += weight
    touched = np.any([n > 0 for n in counts], axis=0)
    out = g.astype(np.float64)
    out[touched] += num[touched] / den[touched, None]
    return out, touched


@pytest.fixture
def g():
    return np.random.default_rng(99).normal(size=(V, DIM)).astype(np.float32)


@pytest.mark.parametrize("how", ["mean", "touched", "weighted"])
@pytest.mark.parametrize("n_models", [1, 3, 9])
def test_merge_equals_the_delta_formula(g, how, n_models):
    models, counts = _models(g, n_models)
    out = g.copy()
    merge_rows([out], models, counts, how)
    expected, touched = _reference(g, models, counts, how)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert 0 < touched.sum() < V and np.array_equal(out[~touched], g[~touched])  # untouched: the same bits


@pytest.mark.parametrize("how", ["mean", "touched", "weighted"])
def test_chunks_targets_and_aliasing_do_not_change_the_bits(g, how, monkeypatch):
    models, counts = _models(g, 4)
    whole = g.copy()
    merge_rows([whole], models, counts, how)
    monkeypatch.setattr(merge, "CHUNK_ROWS", 7)  # 200 rows: 29 chunks, the last one short
    a, b = g.copy(), g.copy()
    merge_rows([a, b], models, counts, how)
    assert np.array_equal(a, whole) and np.array_equal(b, whole)
    # The owner writes into its own model, which is also one of the inputs.
    own = [r.copy() for r in models]
    merge_rows([own[2]], own, counts, how)
    assert np.array_equal(own[2], whole)


def test_rules_by_hand():
    g = np.zeros((3, 2), np.float32)
    a = g + np.array([[4, 4], [2, 0], [0, 0]], np.float32)
    b = g + np.array([[0, 8], [0, 0], [0, 0]], np.float32)
    n_a, n_b = np.array([3, 1, 0], np.uint32), np.array([1, 0, 0], np.uint32)
    expected = {"weighted": [[3, 5], [2, 0], [0, 0]],  # (3*[4,4] + 1*[0,8]) / 4
                "touched": [[2, 6], [2, 0], [0, 0]], "mean": [[2, 6], [1, 0], [0, 0]]}
    for how, rows in expected.items():
        out = np.full((3, 2), 7, np.float32)  # a row nobody touched keeps the target's value
        merge_rows([out], [a, b], [n_a, n_b], how)
        np.testing.assert_allclose(out, np.where(np.arange(3)[:, None] < 2, rows, 7))


@pytest.mark.parametrize("how", ["weighted", "touched", "mean"])
def test_merge_averages_never_sums(g, how):
    """Three models that made the same move: the merged row is that move, not three times it."""
    moved = g + np.float32(0.5)
    n = np.full(V, 5, np.uint32)
    out = g.copy()
    merge_rows([out], [moved, moved, moved], [n, n, n], how)
    np.testing.assert_allclose(out, moved, rtol=1e-6)


@pytest.mark.parametrize("how", ["mean", "touched", "weighted"])
def test_changed_rows_give_the_bits_of_whole_blocks(g, how, monkeypatch):
    """Models other than the owner send only the rows they or the owner changed (merge.changed):
    the owner fills in the rest from its own rows, which still hold the last synchronised value."""
    monkeypatch.setattr(merge, "CHUNK_ROWS", 16)  # sparse rows spread over many chunks
    models, counts = _models(g, 4)
    whole = g.copy()
    merge_rows([whole], models, counts, how)
    owner = 1
    masks = [np.packbits(counts[owner] > 0)] * 2
    parts = [merge.Part(w, w, n, n, []) if s == owner else merge.changed(merge.Part(w, w, n, n, []), *masks)
             for s, (w, n) in enumerate(zip(models, counts))]
    assert all(len(p.ids_in) < V for s, p in enumerate(parts) if s != owner)  # fewer rows cross
    own = models[owner].copy()
    touched = merge_rows([own], [p.win for p in parts], [p.n_in for p in parts], how, [p.ids_in for p in parts])
    assert np.array_equal(own, whole)
    assert np.array_equal(touched, np.any([n > 0 for n in counts], axis=0))
