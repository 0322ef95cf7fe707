"""Nearest-neighbour label agreement, for corpora generated with planted clusters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..nearest import top_k, unit_rows
from .common import _BLOCK_ELEMENTS, _check_inputs

def cluster_precision(
    words: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, str],
    *,
    topn: int = 10,
) -> float:
    """Mean fraction of each labelled word's nearest neighbours sharing its label.

    Only words that are both in ``labels`` and in ``words`` take part, as
    queries and as neighbours (matching is exact, case-sensitive).  For each
    of them the ``topn`` most cosine-similar other participants are found
    and the fraction with the same label is taken; the result is the mean
    over participants.  With fewer than ``topn + 1`` participants every other
    participant is a neighbour.  Ties in similarity are broken in favour of
    the word earlier in ``words`` (more frequent), so the result is
    deterministic.

    Parameters
    ----------
    words : sequence of str
        Vocabulary.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    labels : mapping of str to label
        Planted cluster of each word; words missing from ``words`` are
        ignored.
    topn : int, default 10
        Neighbours examined per word.

    Returns
    -------
    float
        In [0, 1]; 0.0 when fewer than two labelled words are present (no
        word has a neighbour).

    Examples
    --------
    Two tight clusters, but ``"c"`` (label L) lies among the R words:

    >>> words = ["a", "b", "c", "x", "y", "unlabelled"]
    >>> vectors = np.array([[1, 0], [1, 0.1], [0.1, 1], [0, 1], [0.03, 1], [1, 0.05]],
    ...                    dtype=np.float32)
    >>> labels = {"a": "L", "b": "L", "c": "L", "x": "R", "y": "R", "zzz": "R"}
    >>> cluster_precision(words, vectors, labels, topn=1)
    0.8
    """
    vectors = _check_inputs(words, vectors)
    topn = int(topn)
    if topn < 1:
        raise ValueError(f"topn must be >= 1, got {topn}")

    rows: list[int] = []
    label_ids: list[int] = []
    label_codes: dict = {}
    seen: set[str] = set()
    for i, word in enumerate(words):
        if word in labels and word not in seen:
            seen.add(word)
            rows.append(i)
            label_ids.append(label_codes.setdefault(labels[word], len(label_codes)))
    n = len(rows)
    if n < 2:
        return 0.0
    k = min(topn, n - 1)
    unit = unit_rows(vectors[rows])
    lab = np.array(label_ids, dtype=np.intp)

    hits = 0
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = unit[start:stop] @ unit.T
        scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not your own neighbour
        # Columns follow ``words`` order, so ties go to the more frequent word (nearest.top_k).
        cols, _ = top_k(scores, k)
        hits += int(np.count_nonzero(lab[start:stop, None] == lab[cols]))
    return hits / (n * k)
