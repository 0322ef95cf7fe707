"""A warm start built by rows, so that no worker holds the parent's vocabulary, its matrices or
this job's whole model: the partitioned layout's start from a published run (pure functions;
``cluster/warm.py`` places them). The rows are ``warm.warm_start_model``'s, bit for bit:

1. **Parent rows by join.** The parent's vocab.tsv is read in blocks of lines
   (``formats.vocab_lines``); each block's words, numbered by their rows in the parent, and each of
   this job's id ranges, numbered by their ids, are split by a hash of the word (``numbered``); each
   bucket joins its two sides (``join_bucket``), and each range gathers its words' parent rows
   (``range_parents``: -1, a word the parent does not know).
2. **Co-occurrence sums by group of rounds.** A model's shards, one group of rounds at a time, over
   the rows the model holds in it, sum per new row the parent's vectors of the known words beside it
   (``warm.cooccur_sums``): only the parent rows of known words beside a new word are read
   (``beside_new``). The sums meet in bins of ids dealt over the workers, each worker reducing
   its bins one after another (``bins``, ``bins_per_worker``, ``warm.merge_sums``); they become
   the rows' starts (``warm.means``), which each worker hands, from all its bins, to each owner's
   range (``rows_in``) and to each model for the rows it holds first (``rows_at``; ``joined``).
3. **Rows.** Each row of a model's first group and of an owner's range starts as its parent
   row or a fresh draw (``warm.start_rows``); then the new rows with known neighbours take the
   means of those neighbours, a part at a time (``cluster.parts.start_new``).

The sums of each new row are float64 sums of float32 vectors, added in another order than the
whole-model start adds them (by model and group, not by shard): the same bits wherever those sums
are exact, which they are unless the vectors summed differ in scale by more than 2^29.
"""

from __future__ import annotations

from dataclasses import fields

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import vocab_parts as vp
from .encode import Shard
from .plan import PEAK
from .warm import NewRows, NewSums


def numbered(words: pa.Array, first: int, n: int) -> list[tuple[pa.Array, np.ndarray]]:
    """Consecutive words numbered from ``first`` (their ids, or rows in the parent), in ``n``
    buckets (``vocab_parts.split``).

    >>> [(w.to_pylist(), r.tolist()) for w, r in numbered(pa.array(["a", "b", "a2"]), 10, 2)]
    [(['a', 'a2'], [10, 12]), (['b'], [11])]
    """
    return vp.split(words, np.arange(first, first + len(words), dtype=np.int64), n)


def join_bucket(mine: int, *pieces: tuple[pa.Array, np.ndarray]) -> list[np.ndarray]:
    """One bucket's join: per piece of this job's (the first ``mine`` ``pieces``, each words and
    their ids), each word's row in the parent (-1: none), from the parent's pieces (the rest, each
    words and their rows).

    >>> join_bucket(1, (pa.array(["b", "x"]), np.array([0, 1])), (pa.array(["a", "b"]), np.array([5, 6])))
    [array([ 6, -1])]
    """
    theirs = pieces[mine:]
    words = pa.concat_arrays([pc.cast(w, pa.large_string()) for w, _ in theirs]) if theirs else pa.array(
        [], pa.large_string())
    rows = np.concatenate([r for _, r in theirs]) if theirs else np.zeros(0, np.int64)
    out = []
    for w, _ in pieces[:mine]:
        at = pc.fill_null(pc.index_in(pc.cast(w, pa.large_string()), value_set=words), -1).to_numpy()
        out.append(np.where(at >= 0, rows[np.maximum(at, 0)] if len(rows) else -1, -1).astype(np.int64))
    return out


def range_parents(lo: int, hi: int, pieces: list[tuple[pa.Array, np.ndarray]], *answers: np.ndarray) -> np.ndarray:
    """The parent row of each id in [lo, hi) (-1: a new word), from the range's ``pieces`` (per
    bucket its words and ids, ``numbered``) and each bucket's answer for them (``join_bucket``).

    >>> range_parents(4, 7, [(pa.array(["x"]), np.array([5])), (pa.array(["a", "b"]), np.array([4, 6]))],
    ...               np.array([-1]), np.array([0, 2]))
    array([ 0, -1,  2])
    """
    rows = np.full(hi - lo, -1, np.int64)
    for (_, ids), got in zip(pieces, answers):
        rows[ids - lo] = got
    return rows


@numba.njit(cache=True, nogil=True)
def _mark(ids, offsets, slot, window, mark):  # pragma: no cover - compiled
    for k in range(len(offsets) - 1):
        lo, hi = offsets[k], offsets[k + 1]
        for i in range(lo, hi):
            if slot[ids[i]] < 0:
                continue
            a, b = (lo, hi) if window == 0 else (max(lo, i - window), min(hi, i + window + 1))
            for j in range(a, b):
                if slot[ids[j]] < 0:
                    mark[ids[j]] = True


def beside_new(slot: np.ndarray, window: int, *pieces: Shard) -> np.ndarray:
    """Which known rows (``slot`` -1) stand within ``window`` (0: the sentence) of a new row in
    ``pieces``: the only parent vectors ``warm.cooccur_sums`` reads.

    >>> beside_new(np.array([-1, 0, -1, -1], np.int32), 1, Shard(np.array([0, 1, 2, 3], np.int32), np.array([0, 4]))).tolist()
    [True, False, True, False]
    """
    mark = np.zeros(len(slot), np.bool_)
    for piece in pieces:
        _mark(piece.ids, piece.offsets, slot, window, mark)
    return mark


BIN_ROWS = 4096  # the new rows' sums are reduced in bins of blocks of this many ids, dealt over the workers
BIN_BYTES = 128 * 2**20  # about the most of the new rows' float64 sums one bin holds (benchmarks/README.md)


def bins_per_worker(new_words: int, workers: int, dim: int) -> int:
    """How many bins each worker reduces, one after another, so that a bin's sums (two float64
    vectors and a count per new row) take about ``BIN_BYTES``: all the bins at once were the
    warm start's peak where a third of the rows are new.

    >>> bins_per_worker(3_393_561, 8, 32), bins_per_worker(1_000, 8, 32)
    (2, 1)
    """
    return max(1, -(-new_words * (16 * dim + 16) // (workers * BIN_BYTES)))


def start_peak(new: int, held: int, masters: int, dim: int, models: int, shard_bytes: int, groups: int) -> int:
    """A worker's memory at the peaks of a partitioned warm start with ``new`` new rows, all from
    known neighbours (the most there can be), for the memory checks beside training's
    (``layout.worker_peak``; ``held``: rows a model holds in a group of rounds): the larger of
    its two phases, counted as training's is, ``PEAK`` times what comes and goes.

    * Summing: the model's co-occurrence sums of its new rows in every group (float64; new words
      are rare, so about new / models of them), and, coming and going, one bin's pieces, their
      sum and its float32 means, a group's parent vectors and each group's parent rows; the shards.
    * Building: the masters and the first group's rows, as in training, and the new rows' means
      the worker's bins hold (float32), which go to their owners and models a part at a time.

    >>> start_peak(3_393_561, 294_000, 1_298_677, 32, 8, 55_000_000, 16) // 10**6  # benchmarks/README.md
    1064
    >>> start_peak(0, 294_000, 1_298_677, 32, 8, 55_000_000, 16) // 10**6
    476
    """
    per = -(-new // max(models, 1))
    sums = per * (16 * dim + 16)  # two float64 vectors, a row id and a count per new row
    binned = -(-sums // bins_per_worker(new, models, dim))
    summing = shard_bytes + sums + int(PEAK * (2.5 * binned + held * (8 * dim + 8 * groups)))
    building = 2 * (masters + held) * dim * 4 + shard_bytes + int(PEAK * (held * 24 + per * (8 * dim + 8)))
    return max(summing, building)


def bins(new: NewSums, n: int, block: int = BIN_ROWS) -> list[NewSums]:
    """``new`` cut into ``n`` bins: bin b holds the rows r with (r // block) % n == b. New
    words are the vocabulary's tail, the last owners' ranges: bins spread their sums over every
    worker.

    >>> [b.rows.tolist() for b in bins(NewSums(np.array([1, 4097, 8200]), np.ones((3, 1)), np.ones((3, 1)), np.ones(3)), 2)]
    [[1, 8200], [4097]]
    """
    at = (new.rows // block) % n
    return [_pick(new, at == b) for b in range(n)]


def rows_in(new, lo: int, hi: int):
    """The rows [lo, hi) of ``new`` (warm.NewSums or NewRows, rows ascending).

    >>> rows_in(NewRows(np.array([2, 5]), np.ones((2, 1)), np.ones((2, 1))), 3, 9).rows.tolist()
    [5]
    """
    a, b = np.searchsorted(new.rows, (lo, hi))
    return _pick(new, slice(a, b))


def rows_at(new, ids: np.ndarray):
    """The rows of ``new`` among ``ids`` (both ascending).

    >>> rows_at(NewRows(np.array([2, 5]), np.ones((2, 1)), np.ones((2, 1))), np.array([5, 7])).rows.tolist()
    [5]
    """
    return _pick(new, np.isin(new.rows, ids, assume_unique=True))


def joined(*parts: NewRows) -> NewRows:
    """Parts of disjoint rows as one, rows ascending.

    >>> joined(NewRows(np.array([7]), np.ones((1, 1)), np.ones((1, 1))), NewRows(np.array([2]), np.zeros((1, 1)), np.zeros((1, 1)))).win.tolist()
    [[0.0], [1.0]]
    """
    rows = np.concatenate([p.rows for p in parts])
    order = np.argsort(rows, kind="stable")
    return NewRows(rows[order], np.concatenate([p.win for p in parts])[order],
                   np.concatenate([p.wout for p in parts])[order])


def _pick(new, sel):
    return type(new)(*[getattr(new, f.name)[sel] for f in fields(new)])
