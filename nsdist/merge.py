"""Parameter averaging: merge the workers' models into the next global model. Average, never sum.

Between two synchronisations of a row every model (one per worker, M in all) holds its own
version W_m of it, and its update counts n_m; a model that did not touch the row still holds
the global row G. Every rule below is per row and needs only the W_m and n_m, not G:
``G + sum_m w_m (W_m - G) / sum_m w_m`` equals ``sum_m w_m W_m / sum_m w_m``. So the workers
exchange rows, not deltas against a copy of G, and a row no model touched keeps its value.
``merge_rows`` sums the models in model order, so the result does not depend on where they ran
or how rows were blocked. A model sends the owner of a block only the rows that it or the owner
changed (``changed``): every other row equals the owner's, which fills it in.

Averaging M models' progress divides every shared row's progress by M: at equal epochs the
model then learns as if trained with alpha / M. Summing instead diverges: a frequent row
converges within a round in every model, and M such moves overshoot. So models scale their
local steps (``shard_rates``) and the ``mean`` merge divides by M:
- a rare row (few occurrences per round) is in SGD's linear regime: at rate M the mean of the
  M moves equals sequential SGD's sum of per-occurrence steps at ``alpha``;
- a frequent row (thousands of updates per round) is at its local equilibrium in every model:
  at rate 1 the mean is what sequential SGD reaches, with less noise, and the M-fold local
  rate that would overshoot it is avoided.
The multiplier falls smoothly from M to 1 with the row's expected kept occurrences per epoch, o
(counts * keep): rate = 1 + (M - 1) / (1 + o / P), P = ``rate_pivot`` (default 5000; unset: M
for every row). It is capped so the local rate stays <= MAX_SHARD_ALPHA (local training
diverged at 0.8). The measurements behind these choices are in docs/quality.md.

Strategies (``train.merge``), for a row r touched by at least one of the M models:
- ``mean``:     r = sum_m W_m[r] / M            (the plain average of the models)
- ``touched``:  r = mean of W_m[r] over the models that touched r   (Spark's fix)
- ``weighted``: r = sum_m n_m[r] W_m[r] / sum_m n_m[r], n_m = updates of r in model m.
  A rare word seen by one model keeps its full update; a frequent word gets the average of
  its updates weighted by how much evidence each model had for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

MAX_SHARD_ALPHA = 0.2  # local learning rate cap (see above)


@dataclass(frozen=True)
class Part:
    """One model's rows of one row block after a round and how often each was updated since it
    was last synchronised: every row of the block (``ids_in``/``ids_out`` None: views of the
    model), or only the rows listed (sorted, relative to the block's first row) when the part
    crosses to another worker; rows left out equal the receiver's own (see ``changed``)."""

    win: np.ndarray  # float32 (rows, dim)
    wout: np.ndarray
    n_in: np.ndarray  # uint32 (rows,)
    n_out: np.ndarray
    stats: list  # per shard of the model: loss, pairs, words, seconds (in block 0's part)
    ids_in: np.ndarray | None = None  # int32 (rows,)
    ids_out: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        ids = sum(i.nbytes for i in (self.ids_in, self.ids_out) if i is not None)
        return self.win.nbytes + self.wout.nbytes + self.n_in.nbytes + self.n_out.nbytes + ids


def changed(part: Part, mask_in: np.ndarray, mask_out: np.ndarray) -> Part:
    """The rows of ``part`` that the receiving owner cannot know: those this model updated
    since they were last synchronised, and those the owner updated itself (``mask_*``: the
    owner's rows with counts > 0, bit-packed). Every other row still holds the value of the
    last synchronisation, in this model and in the owner's, so the owner substitutes its own.

    >>> w = np.arange(8, dtype=np.float32).reshape(4, 2); n = np.array([0, 2, 0, 0], np.uint32)
    >>> p = changed(Part(w, w, n, n, []), np.packbits([0, 0, 0, 1]), np.packbits([0, 0, 0, 0]))
    >>> p.ids_in.tolist(), p.win.tolist(), p.ids_out.tolist()
    ([1, 3], [[2.0, 3.0], [6.0, 7.0]], [1])
    """
    rows = len(part.n_in)
    ids_in = np.flatnonzero((part.n_in > 0) | np.unpackbits(mask_in, count=rows).astype(bool)).astype(np.int32)
    ids_out = np.flatnonzero((part.n_out > 0) | np.unpackbits(mask_out, count=rows).astype(bool)).astype(np.int32)
    if len(ids_in) == len(ids_out) == rows:  # every row: no ids on the wire
        return part
    return Part(part.win[ids_in], part.wout[ids_out], part.n_in[ids_in], part.n_out[ids_out], part.stats,
                ids_in, ids_out)


HOW = {"mean": 0, "touched": 1, "weighted": 2}
CHUNK_ROWS = 1024  # rows merged at a time: the float64 accumulator stays small (0.8 MB at dim 100)


@numba.njit(cache=True, nogil=True)
def _accumulate(num, den, hits, rows, counts, how):  # pragma: no cover - compiled
    """num += w * rows, den += w, hits += [counts > 0], w by the rule (see the module docstring)."""
    for i in range(rows.shape[0]):
        n = counts[i]
        w = 1.0
        if how == 2:
            w = float(n)
        elif how == 1 and n == 0:
            w = 0.0
        if n > 0:
            hits[i] += 1
        den[i] += w
        if w != 0.0:
            for k in range(rows.shape[1]):
                num[i, k] += w * rows[i, k]


@numba.njit(cache=True, nogil=True)
def _write(out, num, den, hits):  # pragma: no cover - compiled
    for i in range(out.shape[0]):
        if hits[i] > 0:
            for k in range(out.shape[1]):
                out[i, k] = np.float32(num[i, k] / den[i])


def merge_rows(targets: list[np.ndarray], rows: list[np.ndarray], counts: list[np.ndarray], how: str,
               ids: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Write the merge of ``rows`` (one array per model, model order) into every array of
    ``targets``, in place; rows no model touched (all counts 0) are left alone. Returns which
    rows were touched. A target may be one of ``rows``: each chunk of rows is read in full
    before it is written. ``ids[i]``, when given: ``rows[i]`` and ``counts[i]`` hold only those
    rows (sorted); the others are taken from ``targets[0]`` with count 0 (``changed``), which
    gives the same bits as the whole array.

    >>> a = np.array([[1.0], [5.0], [7.0]], np.float32); b = np.array([[3.0], [5.0], [9.0]], np.float32)
    >>> n_a, n_b = np.array([1, 0, 3], np.uint32), np.array([3, 0, 0], np.uint32)
    >>> out = a.copy(); merge_rows([out], [a, b], [n_a, n_b], "weighted").tolist(), out.ravel().tolist()
    ([True, False, True], [2.5, 5.0, 7.0])
    >>> sent = np.array([0, 2])  # rows b updated or a did (changed); row 1 is a's
    >>> merge_rows([a], [a, b[sent]], [n_a, n_b[sent]], "mean", ids=[None, sent]).tolist()
    [True, False, True]
    >>> a.ravel().tolist()
    [2.0, 5.0, 8.0]
    """
    how_code = HOW[how]
    ids = ids or [None] * len(rows)
    n, dim = targets[0].shape
    size = min(CHUNK_ROWS, n)
    num, den, hits = np.empty((size, dim), np.float64), np.empty(size, np.float64), np.empty(size, np.int64)
    buf, cbuf = np.empty((size, dim), np.float32), np.empty(size, np.uint32)
    touched = np.zeros(n, bool)
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, n)
        m = hi - lo
        num[:m], den[:m], hits[:m] = 0.0, 0.0, 0
        for r, c, sel in zip(rows, counts, ids):
            if sel is None:
                _accumulate(num[:m], den[:m], hits[:m], r[lo:hi], c[lo:hi], how_code)
                continue
            a, b = np.searchsorted(sel, (lo, hi))
            buf[:m], cbuf[:m] = targets[0][lo:hi], 0
            buf[sel[a:b] - lo], cbuf[sel[a:b] - lo] = r[a:b], c[a:b]
            _accumulate(num[:m], den[:m], hits[:m], buf[:m], cbuf[:m], how_code)
        _write(targets[0][lo:hi], num[:m], den[:m], hits[:m])
        touched[lo:hi] = hits[:m] > 0
        for t in targets[1:]:
            t[lo:hi] = targets[0][lo:hi]
    return touched


def rate_summary(rates: np.ndarray) -> dict:
    """The per-row rate multipliers' min, median and max, for the manifest (empty: none).

    >>> rate_summary(np.array([1.0, 3.0, 2.0]))
    {'min': 1.0, 'median': 2.0, 'max': 3.0}
    """
    if not len(rates):
        return {}
    return {"min": float(rates.min()), "median": float(np.median(rates)), "max": float(rates.max())}


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


@numba.njit(cache=True, nogil=True)
def _fold(num, den, master, ids, rows, counts, k, how):  # pragma: no cover - compiled
    """num, den += one holder's changed rows (see merge_deltas)."""
    for j in range(ids.shape[0]):
        i = ids[j]
        if how == 0:
            w = 1.0 / k[i]
        elif how == 1:
            w = 1.0
        else:
            w = float(counts[j])
        den[i] += w
        for c in range(rows.shape[1]):
            if how == 0:
                num[i, c] += w * (float(rows[j, c]) - float(master[i, c]))
            else:
                num[i, c] += w * rows[j, c]


@numba.njit(cache=True, nogil=True)
def _settle(master, num, den, hits, k, how):  # pragma: no cover - compiled
    for i in range(master.shape[0]):
        if hits[i] == 0 or k[i] == 1:
            continue
        for c in range(master.shape[1]):
            if how == 0:
                master[i, c] = np.float32(float(master[i, c]) + num[i, c])
            else:
                master[i, c] = np.float32(num[i, c] / den[i])


def merge_deltas(master: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: np.ndarray,
                 how: str) -> np.ndarray:
    """Fold the rows that holders changed into the synchronised rows ``master``, in place (the
    partitioned layout, see layout.py); returns which rows changed. ``parts``: per holder, in
    model order, (ids into ``master``, sorted; those rows; their update counts, > 0); ``k``: how
    many models hold each row. A holder that sent nothing for a row still holds the master's
    value, so the rules need only the rows sent:
    - ``mean``: master + sum over senders (W - master) / k, the mean over the k holders;
    - ``touched``: the mean over the senders; ``weighted``: weighted by their update counts.
    A row with one holder takes that holder's row as it is.

    >>> g = np.zeros((3, 1), np.float32); k = np.array([2, 1, 4])
    >>> a = (np.array([0, 1]), np.array([[2.0], [5.0]], np.float32), np.array([1, 1], np.uint32))
    >>> b = (np.array([0, 2]), np.array([[4.0], [8.0]], np.float32), np.array([3, 1], np.uint32))
    >>> merge_deltas(g, [a, b], k, "mean").tolist(), g.ravel().tolist()
    ([True, True, True], [3.0, 5.0, 2.0])
    """
    n, dim = master.shape
    num, den = np.zeros((n, dim), np.float64), np.zeros(n, np.float64)
    hits = np.zeros(n, np.int64)
    k = np.asarray(k, np.int64)
    sole = []
    for ids, rows, counts in parts:
        ids = np.asarray(ids, np.int64)
        _fold(num, den, master, ids, rows, counts, k, HOW[how])
        hits[ids] += 1
        sole.append((ids, rows))
    _settle(master, num, den, hits, k, HOW[how])
    for ids, rows in sole:  # rows of a sole holder: its values, untouched by arithmetic
        mine = k[ids] == 1
        master[ids[mine]] = rows[mine]
    return hits > 0
