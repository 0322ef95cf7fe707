"""Nearest rows by cosine: rows scaled to unit length, and the best k of a score matrix, with one
tie rule everywhere: the higher score first, and on equal scores the lower row.

- ``row_norms`` and ``unit_rows``: the norms every cosine divides by (a zero row counts as norm 1,
  so it scores 0 with everything, never NaN), and rows scaled by them;
- ``top_k``: the best k columns of each row of scores (``Embeddings`` queries, planted-cluster
  precision, and ``cosine_top_k``);
- ``cosine_top_k``: the rows nearest to a few query vectors, scanned in blocks of rows (the
  report's sample, without a normalised copy of the model);
- ``block_topk``: the top-k table's kernel, every row of a block against all rows.

``block_topk(unit, lo, hi, k)`` answers rows lo..hi of a (V, dim) matrix of unit rows
(``unit_rows``) against all V rows, without ever holding more than one tile of scores: the
block is cut into tiles of ``rows x cols`` scores (``tile_shape``, at most ``tile_bytes``), each
one a BLAS matrix product of a slice of the block's rows with a slice of all rows, and every
tile is folded at once into each row's running top k (``_fold``). The columns are visited in
increasing order and a score replaces a kept one only when strictly greater, so ties go to the
lower row index whatever the tiling; the row itself is never a candidate.

Why tiles of both rows and columns, and a running top k instead of a partition of whole rows
(the measurements are in docs/serving.md): a budget of scores spent on whole rows leaves few
rows per product at large V, so all rows stream from memory again for every few rows, and a
partition of every row costs more than the product; a tile that stays in cache runs the product
near the core's peak, and the fold compares each score with its row's k-th best and rarely
inserts one.

No IO and no Dask here: the workers call ``block_topk`` on their copy of the unit rows.
"""

from __future__ import annotations

import numba
import numpy as np

TILE_BYTES = 4 * 2**20  # scores per tile: in cache between the product and the fold
TILE_ROWS = 512  # rows per tile: a product this tall runs at the BLAS kernel's peak


def row_norms(vectors: np.ndarray, step: int = 65536) -> np.ndarray:
    """The L2 norm of every row as float32, a zero row's as 1; ``step`` rows at a time.

    >>> row_norms(np.array([[3, 4], [0, 0]], np.float32))
    array([5., 1.], dtype=float32)
    """
    norms = np.empty(len(vectors), np.float32)
    for lo in range(0, len(vectors), step):
        norms[lo:lo + step] = np.linalg.norm(vectors[lo:lo + step], axis=1)
    norms[norms == 0] = 1
    return norms


def unit_rows(vectors: np.ndarray, step: int = 65536) -> np.ndarray:
    """``vectors`` scaled to length 1 per row (zero rows stay zero, so they score 0), as a new
    C-contiguous float32 array; computed ``step`` rows at a time (bounded temporaries).

    >>> unit_rows(np.array([[3, 4], [0, 0]], np.float32))
    array([[0.6, 0.8],
           [0. , 0. ]], dtype=float32)
    """
    out = np.empty(vectors.shape, np.float32)
    for lo in range(0, len(vectors), step):
        block = vectors[lo:lo + step]
        np.divide(block, row_norms(block, step)[:, None], out=out[lo:lo + step])
    return out


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` (q, n), best first, ties by lower column:
    (columns, scores), each (q, min(k, n)). O(n) per row: a partition finds each row's k-th best
    score, and the columns tied with it are taken in column order. Columns a caller excludes
    hold -inf; the caller drops -inf results when fewer than k columns are left.

    >>> cols, vals = top_k(np.array([[0.5, 0.9, 0.5, 0.1], [1, 1, 1, 1]], np.float32), 2)
    >>> cols.tolist(), vals.tolist()
    ([[1, 0], [0, 1]], [[0.8999999761581421, 0.5], [1.0, 1.0]])
    """
    q, n = scores.shape
    k = max(0, min(k, n))
    if k == 0 or q == 0:
        return np.zeros((q, 0), np.int64), np.zeros((q, 0), scores.dtype)
    kth = np.partition(scores, n - k, axis=1)[:, n - k, None]
    above, tied = scores > kth, scores == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int64) <= need))
    cols = np.nonzero(chosen)[1].reshape(q, k)  # row-major: each row's columns in ascending order
    vals = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal scores keep the lower column first
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(vals, order, axis=1)


def cosine_top_k(vectors: np.ndarray, ids: np.ndarray, k: int, block: int = 65536
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` with the highest cosine to each row in ``ids`` (itself left
    out), best first, ties by lower row: (rows, cosines), -1 and -inf where fewer exist. Rows are
    scored ``block`` at a time: the temporaries are (queries + k) x block floats for any V, and no
    normalised copy of the model is made.

    >>> rows, cos = cosine_top_k(np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32), np.array([0]), 2)
    >>> rows.tolist(), [round(float(c), 2) for c in cos[0]]
    ([[1, 2]], [0.99, 0.0])
    """
    ids = np.asarray(ids, dtype=np.int64)
    q = vectors[ids].astype(np.float32) / row_norms(vectors[ids])[:, None]
    best_i = np.full((len(ids), 0), -1, np.int64)
    best_s = np.full((len(ids), 0), -np.inf, np.float32)
    for lo in range(0, len(vectors), block):
        chunk = vectors[lo:lo + block]
        scores = (q @ chunk.T) / row_norms(chunk)  # (queries, rows)
        inside = (ids >= lo) & (ids < lo + len(chunk))
        scores[np.flatnonzero(inside), ids[inside] - lo] = -np.inf
        # The kept rows come first and have lower ids than the block's: top_k's rule holds across blocks.
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, lo + len(chunk)), scores.shape)], axis=1)
        keep, best_s = top_k(np.concatenate([best_s, scores.astype(np.float32)], axis=1), k)
        best_i = np.take_along_axis(cand_i, keep, axis=1)
    best_i[~np.isfinite(best_s)] = -1
    return best_i, best_s


def tile_shape(rows: int, items: int, tile_bytes: int = TILE_BYTES) -> tuple[int, int]:
    """(rows, columns) of a score tile for a block of ``rows`` rows against ``items`` rows: at
    most ``tile_bytes`` of float32 scores (at least one), up to TILE_ROWS rows.

    >>> tile_shape(10_000, 1_000_000), tile_shape(100, 300), tile_shape(3, 5, tile_bytes=8)
    ((512, 2048), (100, 300), (2, 1))
    """
    cells = max(1, tile_bytes // 4)
    r = max(1, min(rows, TILE_ROWS, cells))
    return r, max(1, min(items, cells // r))


@numba.njit(cache=True, nogil=True)
def _fold(scores, first_row, first_col, vals, idx):  # pragma: no cover - compiled
    """Fold a tile of scores (rows first_row.., columns first_col..) into each row's running top
    k: ``vals``/``idx`` (rows, k), best first, -inf/-1 where nothing is kept yet."""
    k = vals.shape[1]
    for i in range(scores.shape[0]):
        row = scores[i]
        kth = vals[i, k - 1]
        hits = 0
        for j in range(row.shape[0]):  # a loop without branches: vectorised, and usually all misses
            hits += row[j] > kth
        if hits == 0:
            continue
        own = first_row + i - first_col  # the row's own column in this tile (its self-score)
        for j in range(row.shape[0]):
            s = row[j]
            if s > kth and j != own:
                # Insert after every kept score >= s: an equal score kept earlier has a lower index.
                p = k - 1
                while p > 0 and vals[i, p - 1] < s:
                    vals[i, p] = vals[i, p - 1]
                    idx[i, p] = idx[i, p - 1]
                    p -= 1
                vals[i, p] = s
                idx[i, p] = first_col + j
                kth = vals[i, k - 1]


def block_topk(unit: np.ndarray, lo: int, hi: int, k: int, tile_bytes: int = TILE_BYTES
               ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``unit`` with the highest dot product with each of rows lo..hi (their
    cosine, for unit rows), best first, ties by lower row index, the row itself left out.

    Parameters
    ----------
    unit : ndarray, shape (V, dim)
        C-contiguous float32 rows (``unit_rows``).
    lo, hi : int
        The block of rows to answer.
    k : int
        Neighbours per row; at most V - 1 are returned.
    tile_bytes : int
        Scores held at once (the task's working memory besides its answer).

    Returns
    -------
    idx : ndarray of int64, shape (hi - lo, min(k, V - 1))
    scores : ndarray of float32, same shape

    Examples
    --------
    >>> unit = unit_rows(np.array([[1, 0], [1, 1], [0, 1], [0, 0]], np.float32))
    >>> idx, scores = block_topk(unit, 0, 4, 2)
    >>> idx.tolist()  # row 3 is zero: it scores 0 with every row, and ties go by row
    [[1, 2], [0, 2], [1, 0], [0, 1]]
    >>> scores.round(4)
    array([[0.7071, 0.    ],
           [0.7071, 0.7071],
           [0.7071, 0.    ],
           [0.    , 0.    ]], dtype=float32)
    """
    items = len(unit)
    k = max(0, min(k, items - 1))
    idx = np.full((hi - lo, k), -1, np.int64)
    vals = np.full((hi - lo, k), -np.inf, np.float32)
    if k == 0 or hi <= lo:
        return idx, vals
    rows, cols = tile_shape(hi - lo, items, tile_bytes)
    buffer = np.empty(rows * cols, np.float32)
    for r0 in range(lo, hi, rows):
        r1 = min(hi, r0 + rows)
        for c0 in range(0, items, cols):
            c1 = min(items, c0 + cols)
            # A contiguous (r1 - r0, c1 - c0) view: numpy hands only contiguous outputs to BLAS.
            tile = buffer[:(r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            np.matmul(unit[r0:r1], unit[c0:c1].T, out=tile)
            _fold(tile, r0, c0, vals[r0 - lo:r1 - lo], idx[r0 - lo:r1 - lo])
    return idx, vals
