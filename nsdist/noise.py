"""The negative-sampling noise distribution as an alias table: O(1) per draw.

word2vec's C tool fills a 1e8-entry table (400 MB) and gensim bisects a cumulative table
(O(log V) per draw). Walker's alias method needs two arrays of length V and two random
numbers per draw, whatever the vocabulary size.
"""

from __future__ import annotations

import numba
import numpy as np

from .rng import next_random


def noise_table(counts: np.ndarray, power: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Alias table (prob, alias) for sampling word i with probability ~ counts[i] ** power.

    Draw: i = uniform int in [0, V); keep i if uniform() < prob[i], else take alias[i].

    >>> prob, alias = noise_table(np.array([3, 1]), power=1.0)
    >>> prob.tolist(), alias.tolist()
    ([1.0, 0.5], [0, 0])
    """
    weights = np.asarray(counts, dtype=np.float64) ** power
    if weights.size == 0 or weights.sum() <= 0:
        raise ValueError("noise_table needs at least one word with a positive count")
    scaled = weights * (weights.size / weights.sum())
    prob = np.ones(weights.size, dtype=np.float64)
    alias = np.arange(weights.size, dtype=np.int32)
    _vose(scaled, prob, alias, np.empty(weights.size, np.int64), np.empty(weights.size, np.int64))
    return prob.astype(np.float32), alias


@numba.njit(cache=True, nogil=True)
def _vose(scaled, prob, alias, small, large):  # pragma: no cover - compiled
    # Vose's alias method: pair each under-full column with an over-full one. O(V). ``scaled``:
    # weights scaled to mean 1 (overwritten); ``alias`` starts as 0..n-1; ``small`` and
    # ``large``: scratch of at least n (graph.py reuses them over many rows).
    n = scaled.size
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    # Leftovers are 1 up to rounding error.
    for k in range(nl):
        prob[large[k]] = 1.0
    for k in range(ns):
        prob[small[k]] = 1.0


@numba.njit(cache=True, nogil=True, inline="always")
def draw(prob, alias, state):  # pragma: no cover - compiled
    """One noise word and the next RNG state (state: uint64, see rng.next_random)."""
    u, state = next_random(state)
    # One uniform picks both the column (integer part) and the coin (fraction): saves a draw.
    x = u * prob.size
    i = np.int64(x)
    if x - i < prob[i]:
        return i, state
    return np.int64(alias[i]), state


def sample(prob: np.ndarray, alias: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Draw n noise words (for tests and diagnostics)."""
    return _sample(prob, alias, n, np.uint64(seed))


@numba.njit(cache=True, nogil=True)
def _sample(prob, alias, n, state):  # pragma: no cover - compiled
    out = np.empty(n, np.int64)
    for k in range(n):
        out[k], state = draw(prob, alias, state)
    return out
