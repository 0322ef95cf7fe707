"""Counts -> vocabulary, and the subsampling keep-probabilities (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .counts import Counts


@dataclass(frozen=True)
class Vocab:
    """Words ordered by (-count, word); a word's id is its position."""

    words: pa.Array  # large_string
    counts: np.ndarray  # int64, non-increasing

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def build_vocab(counts: Counts, min_count: int = 5, max_vocab: int | None = None) -> Vocab:
    """Keep words with count >= min_count, the max_vocab most frequent, ties broken by word.

    >>> import pyarrow as pa
    >>> from nsdist.counts import count_tokens
    >>> v = build_vocab(count_tokens(pa.array([["b", "a", "c", "a", "b", "d"]])), min_count=2)
    >>> v.words.to_pylist(), v.counts.tolist()
    (['a', 'b'], [2, 2])
    """
    table = counts.table.filter(pc.greater_equal(counts.table["count"], min_count))
    # Sorting by (-count, word) makes ids independent of partitioning and merge order.
    order = pc.sort_indices(table, sort_keys=[("count", "descending"), ("word", "ascending")])
    if max_vocab is not None:
        order = order[:max_vocab]
    table = table.take(order)
    return Vocab(table["word"].combine_chunks(), table["count"].to_numpy().astype(np.int64))


def keep_probs(counts: np.ndarray, sample: float, total: int | None = None) -> np.ndarray:
    """Probability of keeping each occurrence of a word (word2vec's subsampling formula).

    keep = (sqrt(f / (s*T)) + 1) * (s*T) / f, capped at 1, for a word of count f among T words
    (``total``; default: the sum of ``counts``, the whole vocabulary's).

    >>> keep_probs(np.array([1000, 10, 1]), 1e-3).astype(float).round(3).tolist()
    [0.033, 0.419, 1.0]
    >>> keep_probs(np.array([5, 5]), 0).tolist()
    [1.0, 1.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0 or counts.size == 0:
        return np.ones(counts.shape, dtype=np.float32)
    threshold = sample * (counts.sum() if total is None else float(total))
    keep = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.minimum(keep, 1.0).astype(np.float32)
