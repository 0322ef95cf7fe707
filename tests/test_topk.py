"""The top-k table: its kernel against a brute-force reference, the table a job publishes, and
the recommend query (method and command)."""

from __future__ import annotations

import numpy as np
import pytest

from nsdist.topk import block_topk, tile_shape, unit_rows


def reference(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best other rows by cosine (float64, zero rows score 0), ties by lower row:
    a full sort of every row of the whole similarity matrix."""
    v = vectors.astype(np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1
    scores = (v / norms) @ (v / norms).T
    np.fill_diagonal(scores, -np.inf)
    n = len(v)
    k = min(k, n - 1)
    idx = np.array([np.lexsort((np.arange(n), -row))[:k] for row in scores], np.int64).reshape(n, k)
    return idx, np.take_along_axis(scores, idx, axis=1)


def tied_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Rows of four entries +-1 (norm 2: every cosine a multiple of 1/4, exact in float32 whatever
    the summation order), so that many rows are equal and most scores tie; every 7th row zero."""
    rng = np.random.default_rng(seed)
    v = np.zeros((n, dim), np.float32)
    for i in range(n):
        if i % 7:
            v[i, rng.choice(dim, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    return v


# Tiles of 4 MiB (one tile), and tiny ones: 7 x 13 scores, remainders in both directions.
@pytest.mark.parametrize("tile_bytes", [4 * 2**20, 4 * 7 * 13, 4])
@pytest.mark.parametrize("lo,hi", [(0, 200), (37, 151)])
def test_block_topk_equals_brute_force_on_random_vectors(tile_bytes, lo, hi):
    vectors = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    want_idx, want_scores = reference(vectors, 7)
    idx, scores = block_topk(unit_rows(vectors), lo, hi, 7, tile_bytes)
    assert idx.shape == scores.shape == (hi - lo, 7) and idx.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(idx, want_idx[lo:hi])
    np.testing.assert_allclose(scores, want_scores[lo:hi], atol=1e-6)
    assert not (idx == np.arange(lo, hi)[:, None]).any()  # never the row itself


@pytest.mark.parametrize("tile_bytes", [4 * 2**20, 4 * 5 * 11])
def test_block_topk_breaks_ties_by_row_and_scores_zero_rows_zero(tile_bytes):
    vectors = tied_vectors(120, 6, seed=1)
    want_idx, want_scores = reference(vectors, 10)
    assert (np.diff(want_scores, axis=1) == 0).mean() > 0.5  # the case is about ties
    idx, scores = block_topk(unit_rows(vectors), 0, 120, 10, tile_bytes)
    assert np.array_equal(idx, want_idx)
    assert np.array_equal(scores, want_scores.astype(np.float32))
    zero = np.flatnonzero(~vectors.any(axis=1))
    assert len(zero) > 10 and (scores[zero] == 0).all()


def test_block_topk_with_k_past_the_other_rows():
    vectors = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    idx, scores = block_topk(unit_rows(vectors), 0, 5, 20)
    assert idx.shape == (5, 4)  # every other row, ranked
    assert [sorted(r) for r in idx.tolist()] == [[j for j in range(5) if j != i] for i in range(5)]
    assert np.array_equal(idx, reference(vectors, 20)[0])
    assert block_topk(unit_rows(vectors[:1]), 0, 1, 3)[0].shape == (1, 0)  # one row: no neighbours
    assert block_topk(unit_rows(vectors), 2, 2, 3)[0].shape == (0, 3)


def test_unit_rows_and_tile_shape():
    vectors = np.array([[3, 4], [0, 0], [0, -2]], np.float32)
    assert np.array_equal(unit_rows(vectors, step=2), np.array([[0.6, 0.8], [0, 0], [0, -1]], np.float32))
    rows, cols = tile_shape(10_000, 1_000_000, 64 * 2**20)
    assert rows * cols * 4 <= 64 * 2**20 and rows == 512
    assert tile_shape(10, 10**9, 400) == (10, 10)
