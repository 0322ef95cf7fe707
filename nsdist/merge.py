"""Parameter averaging: merge shard deltas into a new global model. Average, never sum.

The merge runs on the workers as a tree of fixed shape: ``sum_deltas`` adds up to fan-in
deltas (or partial sums) row by row into a ``Partial``; the root, ``apply_sum``, sums its own
inputs the same way and adds the averaged total to the old model. With at most fan-in shards the
tree is that one task (``merge_deltas``). Every rule below is per row, so a partial carries, for
the union of its touched rows, the numerator sum_s w_s d_s[r] and the denominator sum_s w_s.

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
The multiplier falls smoothly from S to 1 with the row's expected kept occurrences per epoch, o
(counts * keep): rate = 1 + (S - 1) / (1 + o / P), P = ``rate_pivot`` (default 5000; unset: S
for every row). It is capped so the local rate stays <= MAX_SHARD_ALPHA: at 0.8 local training
diverged (32 shards, uniform rate). Until 2026-11-24 o counted occurrences per round, so the
multipliers grew with the rounds per epoch (2 per shard): 1000 per round at 8 shards x 16 rounds
was 16000 per epoch.

Measured (rounds per epoch 4 at 2 shards, 16 at 8):
- real text, 11.3M tokens, questions-words / WordSim-353 / SimLex-999, seeds 1-5, 8 shards minus
  1 shard, mean: P = 5000 per epoch -0.73 analogy points, +0.022 / +0.005 Spearman; the old
  1000 per round -0.79 points, -0.014 / -0.015; 300 per round -0.32 points, +0.000 / -0.001
  (these two before rounds were balanced by words).
  Uniform rate (seed 1): -1.7 points.
- planted corpus, 300k tokens, seeds 1-3, batch kernel: 8 shards minus 1 shard -3.0 / +7.3 / +4.4
  analogy points, cluster precision +0.045 / +0.041 / +0.051; small per-round pivots under-train
  it (2 shards, P = 80 per round: -0.10 cluster precision; 300 per round: -0.02 to -0.035).

Strategies (``train.merge``), for a row r and the shards s that return a delta d_s[r]:
- ``mean``:     r += sum_s d_s[r] / S            (plain average over all S shards)
- ``touched``:  r += mean of d_s[r] over the shards that touched r   (Spark's fix)
- ``weighted``: r += sum_s n_s[r] d_s[r] / sum_s n_s[r], n_s = updates of r in shard s.
  A rare word seen by one shard keeps its full update; a frequent word gets the average of
  its updates weighted by how much evidence each shard had for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

MAX_SHARD_ALPHA = 0.2  # local learning rate cap (see above)

from .model import Model
from .shard import Delta


@dataclass(frozen=True)
class Partial:
    """Several shards' deltas summed per row: what one node of the merge tree passes up.

    For each matrix: the sorted union of touched rows, sum_s w_s * d_s[row] (float32) and
    sum_s w_s (float64), with w = the shard's update count of the row (``weighted``) or 1.
    """

    rows_in: np.ndarray
    num_in: np.ndarray
    den_in: np.ndarray
    rows_out: np.ndarray
    num_out: np.ndarray
    den_out: np.ndarray
    shards: int  # deltas summed
    seconds: float  # compute time of this node and the nodes below it (summed, not wall time)
    moved: int  # bytes of the deltas and partials fed into this node and the nodes below it
    tasks: int  # merge tasks in this subtree
    levels: int  # its depth in merge tasks (1: it summed deltas)
    delta_bytes: int  # bytes of the shard deltas at its leaves

    @property
    def nbytes(self) -> int:
        arrays = (self.rows_in, self.num_in, self.den_in, self.rows_out, self.num_out, self.den_out)
        return sum(a.nbytes for a in arrays)


@numba.njit(cache=True, nogil=True)
def _accumulate(num, den, index, values, scale, weight):  # pragma: no cover - compiled
    """num[index] += values * scale, den[index] += weight (index unique within one call)."""
    for i in range(index.shape[0]):
        r = index[i]
        s = np.float32(scale[i])
        for k in range(num.shape[1]):
            num[r, k] += values[i, k] * s
        den[r] += weight[i]


@numba.njit(cache=True, nogil=True)
def _apply(out, rows, num, den):  # pragma: no cover - compiled
    for i in range(rows.shape[0]):
        d = np.float32(den[i])
        r = rows[i]
        for k in range(out.shape[1]):
            out[r, k] += num[i, k] / d


def _terms(item, matrix: int, weighted: bool):
    """(rows, values, scale, weight) of one input for win (0) or wout (1)."""
    if isinstance(item, Partial):  # already weighted: add its sums as they are
        rows, num, den = (item.rows_in, item.num_in, item.den_in) if matrix == 0 else (
            item.rows_out, item.num_out, item.den_out)
        return rows, num, np.ones(len(rows)), den
    rows, delta, counts = (item.rows_in, item.d_in, item.n_in) if matrix == 0 else (
        item.rows_out, item.d_out, item.n_out)
    w = counts.astype(np.float64) if weighted else np.ones(len(rows))
    return rows, delta, w, w


def _sums(items, how: str) -> list:
    """[rows, num, den] of win then wout: the inputs added row by row in the order given."""
    sums = []
    for matrix in (0, 1):
        terms = [_terms(x, matrix, how == "weighted") for x in items]
        rows = np.unique(np.concatenate([t[0] for t in terms])).astype(np.int32)
        dim = max((t[1].shape[1] for t in terms if t[1].ndim == 2), default=0)
        num = np.zeros((len(rows), dim), np.float32)
        den = np.zeros(len(rows), np.float64)
        for part_rows, values, scale, weight in terms:
            _accumulate(num, den, np.searchsorted(rows, part_rows), values, scale, weight)
        sums += [rows, num, den]
    return sums


def _lineage(items) -> dict:
    """What the tree below a node cost: shards, seconds, bytes moved, tasks, depth, delta bytes."""
    below = [x for x in items if isinstance(x, Partial)]
    return {
        "shards": sum(x.shards for x in below) + len(items) - len(below),
        "seconds": sum(x.seconds for x in below),
        "moved": sum(x.nbytes for x in items) + sum(x.moved for x in below),
        "tasks": sum(x.tasks for x in below),
        "levels": max((x.levels for x in below), default=0),
        "delta_bytes": sum(x.delta_bytes if isinstance(x, Partial) else x.nbytes for x in items),
    }


def sum_deltas(*items: Delta | Partial, how: str = "weighted") -> Partial:
    """One inner node of the merge tree: sum shard deltas (or partial sums) row by row.

    Float sums are associative only up to rounding, so the tree's shape and the order of its
    inputs are fixed by the caller (shard order): same seed and shard count, same bits.
    """
    t0 = time.perf_counter()
    sums = _sums(items, how)
    seconds = time.perf_counter() - t0
    below = _lineage(items)
    return Partial(*sums, **{**below, "seconds": below["seconds"] + seconds, "tasks": below["tasks"] + 1,
                             "levels": below["levels"] + 1})


def apply_sum(model: Model, *items: Delta | Partial, how: str = "weighted") -> Model:
    """The root of the merge tree: the old model plus the averaged sum of ``items`` (deltas or
    partial sums, at most fan-in of them; inputs unchanged). ``model.info`` records the whole
    merge: seconds (summed over its tasks), bytes of deltas and partials passed between tasks,
    tasks, depth and the shards' delta bytes."""
    t0 = time.perf_counter()
    if len(items) == 1 and isinstance(items[0], Partial):  # already summed below
        total = items[0]
        sums = [total.rows_in, total.num_in, total.den_in, total.rows_out, total.num_out, total.den_out]
    else:
        sums = _sums(items, how)
    below = _lineage(items)
    out = []
    for base, (rows, num, den) in ((model.win, sums[:3]), (model.wout, sums[3:])):
        new = base.copy()
        _apply(new, rows, num, np.full(len(rows), float(below["shards"])) if how == "mean" else den)
        out.append(new)
    info = {"merge_seconds": below["seconds"] + time.perf_counter() - t0, "merge_bytes": below["moved"],
            "merge_tasks": below["tasks"] + 1, "merge_depth": below["levels"] + 1,
            "merge_delta_bytes": below["delta_bytes"]}
    return Model(out[0], out[1], info)


def merge_deltas(model: Model, *deltas: Delta, how: str = "weighted") -> Model:
    """New global model from the old one and the shards' deltas, in one task (inputs unchanged)."""
    return apply_sum(model, *deltas, how=how)


def shard_rates(counts: np.ndarray, keep: np.ndarray, shards: int, alpha: float,
                how: str = "mean", scale: float | None = None, pivot: float | None = None) -> np.ndarray:
    """Per-row multiplier of the shards' local learning rate (float32, one per vocabulary word).

    ``counts``: corpus counts; ``keep``: subsampling keep-probabilities. ``scale`` forces one
    uniform multiplier. Without ``pivot`` every row gets the shard count (capped); with it the
    multiplier falls from there to 1 as o / pivot grows (o: the row's expected kept occurrences
    per epoch, counts * keep). Only the ``mean`` merge divides every row by S; the
    per-row merges keep the full update of rows one shard touched, so scaling would multiply
    those: they get 1.

    >>> shard_rates(np.array([10**6, 1]), np.ones(2), shards=8, alpha=0.025).tolist()
    [8.0, 8.0]
    >>> r = shard_rates(np.array([10**6, 160, 1]), np.ones(3), 8, 0.025, pivot=160)
    >>> [round(float(x), 2) for x in r]
    [1.0, 4.5, 7.96]
    >>> round(float(shard_rates(np.array([1]), np.ones(1), 64, 0.025)[0]), 2)  # capped: 0.2 / 0.025
    8.0
    >>> one = (np.array([5]), np.ones(1), 4, 0.025)
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
    occurrences = np.asarray(counts, np.float64) * np.asarray(keep, np.float64)
    return (1.0 + (top - 1.0) / (1.0 + occurrences / pivot)).astype(np.float32)
