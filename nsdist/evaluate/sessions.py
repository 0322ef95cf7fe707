"""Leave-last-item-out next-item prediction on held-out sessions (HR@K, NDCG@K), ranking every
row of the model by cosine in bounded memory (or by any scoring rule, one case at a time), as
recommender systems are evaluated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..nearest import row_norms
from .common import _BLOCK_ELEMENTS, _QUESTION_BATCH, _TIE, _check_inputs
from .readers import as_sessions as _as_sessions

def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def hit_rate(ranks, k: int) -> float:
    """HR@K: the share of cases whose target ranks among the first ``k``.

    Parameters
    ----------
    ranks : array of int
        1-based rank of each case's target; 0 marks a case that could not be
        ranked (unknown target, no query), which is a miss.
    k : int
        Cut-off, >= 1.

    Returns
    -------
    float
        In [0, 1]; 0.0 for no cases.

    Examples
    --------
    >>> hit_rate([1, 3, 11, 0], k=10)
    0.5
    """
    ranks = np.asarray(ranks)
    k = _check_k(k)
    return float(np.mean((ranks >= 1) & (ranks <= k))) if ranks.size else 0.0


def ndcg(ranks, k: int) -> float:
    """NDCG@K with one relevant item per case: the mean of ``1 / log2(rank + 1)``
    over the cases, a target ranked after ``k`` (or not ranked) scoring 0.

    With a single relevant item the ideal DCG is 1, so no normalisation is left.

    Parameters
    ----------
    ranks : array of int
        As for :func:`hit_rate`.
    k : int
        Cut-off, >= 1.

    Returns
    -------
    float
        In [0, 1]; 0.0 for no cases.

    Examples
    --------
    >>> ndcg([1, 3, 11, 0], k=10)  # (1/log2(2) + 1/log2(4) + 0 + 0) / 4
    0.375
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    k = _check_k(k)
    if not ranks.size:
        return 0.0
    hit = (ranks >= 1) & (ranks <= k)
    gains = np.zeros(ranks.shape)
    gains[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return float(gains.mean())


def _mean_unit(vectors: np.ndarray, norms: np.ndarray, queries: Sequence[np.ndarray]) -> np.ndarray:
    """One float32 row per query: the mean of the unit vectors of its (non-empty) rows."""
    lengths = np.array([len(q) for q in queries], dtype=np.intp)
    rows = np.concatenate(queries).astype(np.intp)
    unit = vectors[rows].astype(np.float32) / norms[rows, None]
    return np.add.reduceat(unit, np.cumsum(lengths) - lengths, axis=0) / lengths[:, None]


def _outscoring(vectors: np.ndarray, norms: np.ndarray, query: np.ndarray, floor: np.ndarray,
                masked_q: np.ndarray, masked_row: np.ndarray) -> np.ndarray:
    """Per query, how many rows not masked for it score at least its ``floor``.

    The rows are scanned in chunks so that a product holds about
    ``_BLOCK_ELEMENTS`` scores, whatever the number of rows; the masked
    ``(query, row)`` cells are sorted by row so each chunk finds its own by
    bisection.
    """
    n, b = len(vectors), len(query)
    chunk = min(n, max(256, _BLOCK_ELEMENTS // b))
    order = np.argsort(masked_row, kind="stable")
    masked_q, masked_row = masked_q[order], masked_row[order]
    bounds = np.searchsorted(masked_row, np.arange(0, n + chunk, chunk))
    scratch = np.empty(b * chunk, dtype=np.float32)  # reused: no page faults per chunk
    count = np.zeros(b, dtype=np.int64)
    for i, lo in enumerate(range(0, n, chunk)):
        hi = min(lo + chunk, n)
        scores = scratch[:b * (hi - lo)].reshape(b, hi - lo)
        # Normalising the chunk (rows x dim) costs far less than dividing its scores (queries x rows).
        np.matmul(query, (vectors[lo:hi] / norms[lo:hi, None]).T, out=scores)
        cells = slice(bounds[i], bounds[i + 1])
        scores[masked_q[cells], masked_row[cells] - lo] = -np.inf
        count += (scores >= floor[:, None]).sum(axis=1)
    return count


def target_ranks(
    vectors: np.ndarray,
    queries: Sequence[np.ndarray],
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Rank of each target among all rows, by cosine to the mean of its query rows.

    The query of case ``i`` is the mean of the unit vectors of rows
    ``queries[i]``.  Every row is a candidate except the rows in
    ``exclude[i]``; the target itself is always ranked.  The rank is 1 plus
    the number of other candidates scoring at least the target's cosine minus
    ``_TIE`` (1e-6), so ties count against the target, including those that
    float32 rounding would order either way (a model of identical or zero
    vectors ranks every target last, not first).

    Memory is bounded whatever the number of rows: ``batch_size`` queries are
    scored against chunks of about ``2**22 / batch_size`` rows at a time
    (16 MiB of float32 scores; with the default 1024 queries, chunks of 4096
    rows), and only the count of rows above each target is kept -- never a
    score matrix over all rows, nor a normalised copy of the vectors.

    Parameters
    ----------
    vectors : ndarray, shape (n_rows, dim)
        Un-normalised embeddings.
    queries : sequence of int arrays
        Rows averaged into each case's query; none may be empty.
    targets : array of int
        Row of each case's target.
    exclude : sequence of int arrays, optional
        Rows left out of each case's ranking (e.g. items already seen).
    batch_size : int, default 1024
        Queries scored together; only affects speed and memory.

    Returns
    -------
    ndarray of int64
        1-based ranks.

    Examples
    --------
    >>> vectors = np.array([[1, 0], [1, 1], [0, 1], [-1, 0]], dtype=np.float32)
    >>> target_ranks(vectors, [np.array([0])], np.array([2])).tolist()
    [3]
    >>> target_ranks(vectors, [np.array([0])], np.array([2]), [np.array([0, 1])]).tolist()
    [1]
    """
    vectors = np.asarray(vectors)
    targets = np.asarray(targets, dtype=np.intp)
    exclude = [np.empty(0, np.intp)] * len(targets) if exclude is None else exclude
    if not len(queries) == len(targets) == len(exclude):
        raise ValueError(f"{len(queries)} queries, {len(targets)} targets and {len(exclude)} exclusions: "
                         "expected one of each per case")
    batch_size = _QUESTION_BATCH if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    norms = row_norms(vectors)
    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), batch_size):
        at = slice(start, start + batch_size)
        query = _mean_unit(vectors, norms, queries[at])
        target = targets[at]
        floor = np.einsum("ij,ij->i", query, (vectors[target] / norms[target, None]).astype(np.float32)) - _TIE
        # The target's own cell is masked too: its score is the floor itself.
        masked = [*exclude[at], target]
        masked_q = np.concatenate([np.repeat(np.arange(len(target)), [len(e) for e in exclude[at]]),
                                   np.arange(len(target))])
        masked_row = np.concatenate(masked).astype(np.intp)
        ranks[at] = 1 + _outscoring(vectors, norms, query, floor, masked_q, masked_row)
    return ranks


def scored_ranks(score, queries: Sequence[np.ndarray], targets: np.ndarray,
                 exclude: Sequence[np.ndarray]) -> np.ndarray:
    """Rank of each target among all rows by ``score(query rows)`` (every row's score, higher
    first), as :func:`target_ranks` ranks by cosine: the rows in ``exclude[i]`` left out, ties
    (within ``_TIE``) against the target.

    >>> score = lambda rows: np.array([0.5, 0.9, 0.5, 0.1]) + 0 * rows.sum()
    >>> scored_ranks(score, [np.array([3])], np.array([2]), [np.array([], np.intp)]).tolist()
    [3]
    """
    ranks = np.empty(len(targets), dtype=np.int64)
    for i, (query, target, out) in enumerate(zip(queries, targets, exclude)):
        scores = np.array(score(query), dtype=np.float64)  # a copy: the exclusions are written into it
        floor = scores[target] - _TIE
        scores[out] = -np.inf
        scores[target] = -np.inf
        ranks[i] = 1 + np.count_nonzero(scores >= floor)
    return ranks


def _next_item_cases(rows: np.ndarray, lengths: np.ndarray, last: int):
    """Leave-last-out cases of sessions given as known rows (-1: unknown) and lengths.

    Returns ``(targets, queries, exclude, counts)``: per ranked case its target
    row, its query rows (the last ``last`` known rows before the target) and
    its excluded rows (the known rows before the target, the target's own row
    excepted); ``counts`` holds ``sessions`` (length >= 2), ``too_short``,
    ``oov`` (unknown target), ``skipped`` (no known row before a known
    target) and ``repeats`` (targets seen earlier in their session).
    """
    counts = {"sessions": 0, "too_short": 0, "oov": 0, "skipped": 0, "repeats": 0}
    targets: list[int] = []
    queries: list[np.ndarray] = []
    exclude: list[np.ndarray] = []
    ends = np.cumsum(lengths)
    for end, length in zip(ends.tolist(), lengths.tolist()):
        if length < 2:
            counts["too_short"] += 1
            continue
        counts["sessions"] += 1
        target, history = rows[end - 1], rows[end - length:end - 1]
        known = history[history >= 0]
        if target < 0 or not len(known):
            counts["oov" if target < 0 else "skipped"] += 1
            continue
        seen = known == target
        counts["repeats"] += bool(seen.any())
        targets.append(int(target))
        queries.append(known[-last:])
        exclude.append(known[~seen])
    return np.array(targets, dtype=np.intp), queries, exclude, counts


def next_item_eval(
    words: Sequence[str],
    vectors: np.ndarray,
    sessions,
    *,
    last: int = 1,
    k: int = 10,
    batch_size: int | None = None,
    score=None,
) -> dict:
    """Leave-last-item-out next-item prediction: HR@K and NDCG@K.

    For each session of two items or more, the last item is the target and
    the query is the mean of the unit vectors of the last ``last`` items
    before it that the model knows.  All rows are ranked by cosine to the
    query (see :func:`target_ranks`), or by ``score`` of the query's rows
    (:func:`scored_ranks`), except the session's earlier items; the
    target is ranked even when it occurred earlier (such sessions are counted
    in ``repeats``).  A session whose target is unknown (``oov``) or that has
    no known item before its target (``skipped``) is a miss, as in the
    standard protocol; a session shorter than two items is not a case.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, row order.  Item ids are matched as strings: integer ids
        (in ``sessions`` or an int64 Parquet column) are compared as their
        decimal strings, which is how nsdist's vocabulary holds them.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    sessions : sequence of sequences of str or int, or a pyarrow list array
        Items in click order, oldest first.
    last : int, default 1
        Items averaged into the query.
    k : int, default 10
        Cut-off of HR@K and NDCG@K.
    batch_size : int, default 1024
        Queries ranked together (see :func:`target_ranks`).
    score : callable, optional
        ``score(rows)``: every row's score for a query of those rows, higher
        first (``Embeddings.row_scores``, to rank as ``recommend`` does);
        default: cosine with the mean of their unit vectors, in bounded memory.

    Returns
    -------
    dict
        ``hit_rate``, ``ndcg``, ``hits``, ``k``, ``last`` and the counts
        ``sessions`` (the denominator: sessions of two items or more),
        ``ranked``, ``oov``, ``skipped``, ``too_short`` and ``repeats``.

    Examples
    --------
    >>> words = ["10", "11", "20", "21"]
    >>> vectors = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    >>> r = next_item_eval(words, vectors, [[10, 11], [20, 99, 10], [21, 20], [99, 10], [11]], k=1)
    >>> r["hit_rate"], r["hits"], r["sessions"], r["oov"], r["skipped"], r["too_short"]
    (0.5, 2, 4, 0, 1, 1)
    """
    vectors = _check_inputs(words, vectors)
    last, k = int(last), _check_k(k)
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    sessions = _as_sessions(sessions)
    rows = pc.index_in(sessions.flatten(), value_set=pa.array(list(words), pa.string()))
    rows = rows.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
    lengths = pc.list_value_length(sessions).fill_null(0).to_numpy(zero_copy_only=False)
    targets, queries, exclude, counts = _next_item_cases(rows, lengths, last)
    ranks = np.zeros(counts["sessions"], dtype=np.int64)  # unranked cases stay 0: misses
    if len(targets):
        ranks[:len(targets)] = (target_ranks(vectors, queries, targets, exclude, batch_size=batch_size)
                                if score is None else scored_ranks(score, queries, targets, exclude))
    hits = int(np.count_nonzero((ranks >= 1) & (ranks <= k)))
    return {"hit_rate": hit_rate(ranks, k), "ndcg": ndcg(ranks, k), "hits": hits, "k": k, "last": last,
            "ranked": len(targets), **counts}
