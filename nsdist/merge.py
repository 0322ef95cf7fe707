"""Parameter averaging: merge shard deltas into a new global model. Average, never sum.

Averaging S shards' deltas divides every shared row's progress by S: at equal epochs the
model then learns as if trained with alpha / S (planted corpus, 300k tokens, 5 epochs: analogy
accuracy 0.73 with 1 shard; plain mean 0.55 with 2 shards; per-row weighted mean 0.47 with 2
and 0.04 with 8). Summing the deltas instead diverges (4 shards on the planted corpus; 8 shards
on real text): a frequent row converges within a round in every shard, and S such moves
overshoot.

So shards scale their local steps (``shard_rates``) and the ``mean`` merge divides by S:
- a rare row (few occurrences per round) is in SGD's linear regime: at rate S the mean of the
  S deltas equals sequential SGD's sum of per-occurrence steps at ``alpha``;
- a frequent row (thousands of updates per round) is at its local equilibrium in every shard:
  at rate 1 the mean is what sequential SGD reaches, with less noise, and the S-fold local
  rate that would overshoot it is avoided.
The multiplier falls smoothly from S to 1 with the row's expected kept occurrences per round
(over all shards), o: rate = 1 + (S - 1) / (1 + o / P), P = ``rate_pivot`` (default 1000;
unset: S for every row). It is capped so the local rate stays <= MAX_SHARD_ALPHA: at 0.8
local training diverged (32 shards, uniform rate).

Measured (analogy accuracy; rounds per epoch 4 at 2 shards, 16 at 8; one run each):
- real text, 11.3M tokens, questions-words (1 shard: 0.134 / 0.128 for seeds 1 / 2), 8 shards:
  uniform rate 0.117 / 0.102; P = 1000: 0.127 / 0.120; P = 300: 0.130 / 0.124; P = 80: 0.129
  / 0.122. At 4 rounds per epoch: uniform 0.094 / 0.095.
- planted corpus, 300k tokens (1 shard: 0.735, cluster precision 0.89): uniform and P = 1000
  both gain with shards (8 shards: 0.909 / 0.951 and 0.905 / 0.948), but small pivots under-train:
  2 shards lose 0.10 cluster precision at P = 80 and 0.02-0.05 at P = 300 (batch / pair kernel),
  which is why the default is 1000.

Strategies (``train.merge``), for a row r and the shards s that return a delta d_s[r]:
- ``mean``:     r += sum_s d_s[r] / S            (plain average over all S shards)
- ``touched``:  r += mean of d_s[r] over the shards that touched r   (Spark's fix)
- ``weighted``: r += sum_s n_s[r] d_s[r] / sum_s n_s[r], n_s = updates of r in shard s.
  A rare word seen by one shard keeps its full update; a frequent word gets the average of
  its updates weighted by how much evidence each shard had for it.
"""

from __future__ import annotations

import time

import numba
import numpy as np

MAX_SHARD_ALPHA = 0.2  # local learning rate cap (see above)

from .model import Model
from .shard import Delta


@numba.njit(cache=True, nogil=True)
def _accumulate(num, den, rows, delta, counts, weighted):  # pragma: no cover - compiled
    """num[rows] += w * delta, den[rows] += w; w = counts (weighted) or 1. Rows are unique."""
    for i in range(rows.shape[0]):
        r = rows[i]
        w = np.float32(counts[i]) if weighted else np.float32(1.0)
        for k in range(num.shape[1]):
            num[r, k] += delta[i, k] * w
        den[r] += w


@numba.njit(cache=True, nogil=True)
def _apply(out, num, den):  # pragma: no cover - compiled
    for r in range(out.shape[0]):
        if den[r] > 0:
            d = np.float32(den[r])
            for k in range(out.shape[1]):
                out[r, k] += num[r, k] / d


def _merge_matrix(base: np.ndarray, parts, how: str) -> np.ndarray:
    """parts: (rows, delta, counts) per shard, in shard order (fixed order: deterministic sums).

    Compiled loops over the touched rows: numpy's fancy-indexed adds took 0.1 s per matrix and
    merge at 31k x 100, a tenth of an epoch's time with 2 workers.
    """
    out = base.copy()
    num = np.zeros_like(base)
    den = np.zeros(len(base), np.float64)
    for rows, delta, counts in parts:
        _accumulate(num, den, rows, delta, counts, how == "weighted")
    if how == "mean":
        den[:] = len(parts)
    _apply(out, num, den)
    return out


def merge_deltas(model: Model, *deltas: Delta, how: str = "weighted") -> Model:
    """New global model from the old one and the shards' deltas (inputs are not modified)."""
    t0 = time.perf_counter()
    win = _merge_matrix(model.win, [(d.rows_in, d.d_in, d.n_in) for d in deltas], how)
    wout = _merge_matrix(model.wout, [(d.rows_out, d.d_out, d.n_out) for d in deltas], how)
    info = {"merge_seconds": time.perf_counter() - t0, "merge_bytes": sum(d.nbytes for d in deltas)}
    return Model(win, wout, info)


def shard_rates(counts: np.ndarray, keep: np.ndarray, shards: int, rounds: int, alpha: float,
                how: str = "mean", scale: float | None = None, pivot: float | None = None) -> np.ndarray:
    """Per-row multiplier of the shards' local learning rate (float32, one per vocabulary word).

    ``counts``: corpus counts; ``keep``: subsampling keep-probabilities. ``scale`` forces one
    uniform multiplier. Without ``pivot`` every row gets the shard count (capped); with it the
    multiplier falls from there to 1 as o / pivot grows (o: the row's expected kept occurrences
    per round, counts * keep / rounds). Only the ``mean`` merge divides every row by S; the
    per-row merges keep the full update of rows one shard touched, so scaling would multiply
    those: they get 1.

    >>> shard_rates(np.array([10**6, 1]), np.ones(2), shards=8, rounds=16, alpha=0.025).tolist()
    [8.0, 8.0]
    >>> r = shard_rates(np.array([10**6, 160, 1]), np.ones(3), 8, 16, 0.025, pivot=10)
    >>> [round(float(x), 2) for x in r]
    [1.0, 4.5, 7.96]
    >>> round(float(shard_rates(np.array([1]), np.ones(1), 64, 4, 0.025)[0]), 2)  # capped: 0.2 / 0.025
    8.0
    >>> one = (np.array([5]), np.ones(1), 4, 4, 0.025)
    >>> shard_rates(*one, "weighted").tolist(), shard_rates(*one, scale=2).tolist()
    ([1.0], [2.0])
    """
    n = len(counts)
    if scale is not None:
        return np.full(n, scale, np.float32)
    top = max(1.0, min(shards, MAX_SHARD_ALPHA / alpha))
    if how != "mean" or top == 1.0:
        return np.ones(n, np.float32)
    if pivot is None:
        return np.full(n, top, np.float32)
    occurrences = np.asarray(counts, np.float64) * np.asarray(keep, np.float64) / rounds
    return (1.0 + (top - 1.0) / (1.0 + occurrences / pivot)).astype(np.float32)
