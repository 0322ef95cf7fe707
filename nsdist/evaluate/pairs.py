"""Rank correlation with human similarity judgements, as gensim's
``KeyedVectors.evaluate_word_pairs`` computes it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from .common import _check_inputs, _restrict, _vocab_index

def _rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks.

    >>> _rankdata(np.array([10.0, 20.0, 10.0, 30.0]))
    array([1.5, 3. , 1.5, 4. ])
    """
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)  # 0-based start of each tie group
    end = np.r_[first[1:], len(x)]  # exclusive end
    # A group occupies ranks first+1 .. end, whose mean is (first + 1 + end) / 2.
    mean_rank = (first + 1 + end) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, NaN when undefined (fewer than 2 points or a constant side).

    Constancy is tested on the raw values because the centred values of a
    constant array need not be exactly zero in floating point.
    """
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(np.dot(xc, yc) / math.sqrt(np.dot(xc, xc) * np.dot(yc, yc)))
    return max(-1.0, min(1.0, r))


def pair_spearman(
    words: Sequence[str],
    vectors: np.ndarray,
    pairs: Iterable[tuple[str, str, float]],
    *,
    restrict_vocab: int | None = 300_000,
    case_insensitive: bool = True,
) -> dict:
    """Correlation between human similarity scores and cosine similarity.

    Like gensim's ``evaluate_word_pairs``: pairs with a word outside the first
    ``restrict_vocab`` words are skipped, and ``case_insensitive`` folds case
    the same way as in :func:`analogy_accuracy`.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, most frequent first.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    pairs : iterable of (w1, w2, score)
        As returned by :func:`read_pairs`.
    restrict_vocab : int or None, default 300000
        Only the first ``restrict_vocab`` words count as known; ``None`` means
        the whole vocabulary.
    case_insensitive : bool, default True
        Upper-case pairs and vocabulary before matching; the first of several
        case variants supplies the vector.

    Returns
    -------
    dict
        ``spearman`` (Spearman's rho, ties given average ranks), ``pearson``,
        ``pairs`` (number used), ``oov`` (number skipped) and ``oov_ratio``
        (``oov / (pairs + oov)``, a fraction).  A correlation is NaN when it
        is undefined: fewer than two usable pairs or a constant side.

    Examples
    --------
    >>> words = ["cat", "tiger", "car"]
    >>> vectors = np.array([[1, 0.2], [1, 0.5], [0, 1]], dtype=np.float32)
    >>> result = pair_spearman(words, vectors, [("cat", "tiger", 9.0), ("cat", "car", 1.0),
    ...                                          ("Tiger", "car", 2.0), ("cat", "dog", 8.0)])
    >>> result["spearman"], result["pairs"], result["oov"], result["oov_ratio"]
    (1.0, 3, 1, 0.25)
    """
    vectors = _check_inputs(words, vectors)
    limit = _restrict(len(words), restrict_vocab)
    index = _vocab_index(words, limit, case_insensitive)
    fold = str.upper if case_insensitive else (lambda w: w)

    left: list[int] = []
    right: list[int] = []
    gold: list[float] = []
    oov = 0
    for w1, w2, score in pairs:
        i, j = index.get(fold(w1), -1), index.get(fold(w2), -1)
        if i < 0 or j < 0:
            oov += 1
            continue
        left.append(i)
        right.append(j)
        gold.append(float(score))

    used = len(gold)
    spearman = pearson = math.nan
    if used:
        # Only the rows actually asked about are gathered, so no full-size
        # normalised copy is needed; float64 keeps the cosines exact enough
        # that rank ties come only from genuinely equal similarities.
        u = vectors[left].astype(np.float64)
        v = vectors[right].astype(np.float64)
        nu = np.linalg.norm(u, axis=1)
        nv = np.linalg.norm(v, axis=1)
        nu[nu == 0] = 1
        nv[nv == 0] = 1
        model = np.einsum("ij,ij->i", u, v) / (nu * nv)
        human = np.array(gold, dtype=np.float64)
        pearson = _pearson(human, model)
        spearman = _pearson(_rankdata(human), _rankdata(model))
    return {
        "spearman": spearman,
        "pearson": pearson,
        "pairs": used,
        "oov": oov,
        "oov_ratio": oov / (used + oov) if used + oov else 0.0,
    }
