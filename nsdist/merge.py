"""Parameter averaging: merge shard deltas into a new global model. Average, never sum.

Strategies (``train.merge``), for a row r and the shards s that return a delta d_s[r]:
- ``mean``:     r += sum_s d_s[r] / S            (plain average over all S shards)
- ``touched``:  r += mean of d_s[r] over the shards that touched r   (Spark's fix)
- ``weighted``: r += sum_s n_s[r] d_s[r] / sum_s n_s[r], n_s = updates of r in shard s.
  A rare word seen by one shard keeps its full update; a frequent word gets the average of
  its updates weighted by how much evidence each shard had for it.
"""

from __future__ import annotations

import time

import numpy as np

from .model import Model
from .shard import Delta


def _merge_matrix(base: np.ndarray, parts, how: str) -> np.ndarray:
    """parts: (rows, delta, counts) per shard, in shard order (fixed order: deterministic sums)."""
    out = base.copy()
    num = np.zeros_like(base)
    den = np.zeros(len(base), np.float64)
    for rows, delta, counts in parts:
        if how == "weighted":
            w = counts.astype(np.float32)
            num[rows] += delta * w[:, None]
            den[rows] += w
        else:
            num[rows] += delta
            den[rows] += 1.0
    if how == "mean":
        den[:] = len(parts)
    touched = np.flatnonzero(den)
    out[touched] += num[touched] / den[touched, None].astype(np.float32)
    return out


def merge_deltas(model: Model, *deltas: Delta, how: str = "weighted") -> Model:
    """New global model from the old one and the shards' deltas (inputs are not modified)."""
    t0 = time.perf_counter()
    win = _merge_matrix(model.win, [(d.rows_in, d.d_in, d.n_in) for d in deltas], how)
    wout = _merge_matrix(model.wout, [(d.rows_out, d.d_out, d.n_out) for d in deltas], how)
    info = {"merge_seconds": time.perf_counter() - t0, "merge_bytes": sum(d.nbytes for d in deltas)}
    return Model(win, wout, info)
