"""Warm starts: the model a new vocabulary starts from, from a published run (``--init-from``):
known words keep both their vectors, dropped words disappear, and a new word starts from the
mean of the parent's vectors of the known words it co-occurs with in the new corpus
(``train.warm_new = cooccur``; Airbnb's start for a new listing), its input vector from their
input vectors and its output vector from their output vectors; or from a fresh random vector
(output zero) when it has no known neighbour, or with ``warm_new = random``. Measured on a
planted daily retrain (docs/recommendations.md, "New items at a warm start"): the output mean
doubles new items' next-item hit rate by the default scoring after one epoch, where a zero output
vector leaves a new item unscored by what it is predicted from; one term per co-occurrence beats
a plain mean over the distinct neighbours.

The co-occurrences are counted on the workers, where the encoded shards are: each shard sums,
per new row, the parent's vectors of the known words within ``window`` of its occurrences
(``cooccur_sums``); the shards' sums are added up in a tree (``merge_sums``, in shard order, so
the bits depend on the shard count only) and only new rows' sums travel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .encode import Shard
from .errors import DataError
from .formats import read_npy, read_npy_rows
from .model import Model, init_model, init_rows
from .runs import read_manifest, read_vocab
from .vocab import Vocab

def warm_rows(vocab: Vocab, parent: str, store) -> tuple[np.ndarray, np.ndarray, dict]:
    """Which of this vocabulary's words the published ``parent`` knows (mask), their rows there,
    and the counts of known, new and dropped words."""
    old_words = pa.array(read_vocab(parent, store)[0], pa.string())
    old_ids = pc.index_in(vocab.words, value_set=pc.cast(old_words, vocab.words.type))
    known = pc.is_valid(old_ids).to_numpy(zero_copy_only=False)
    stats = {"known_words": int(known.sum()), "new_words": int((~known).sum()),
             "dropped_words": int(len(old_words) - known.sum())}
    return known, pc.filter(old_ids, known).to_numpy(), stats


def warm_stats(vocab: Vocab, parent: str, store) -> dict:
    return warm_rows(vocab, parent, store)[2]


def _read_parent(parent: str, store, name: str, dim: int) -> np.ndarray:
    files = read_manifest(parent, store)["files"]
    return _of_dim(read_npy(storage.join(parent, name), store, (files.get(name) or {}).get("sha256")), dim)


@dataclass(frozen=True)
class Parent:
    """A published run that a warm start reads by rows: its URL, the storage options, its
    vocabulary size and the job's dim."""

    url: str
    store: object
    size: int
    dim: int

    def rows_into(self, name: str, rows: np.ndarray, target: np.ndarray, at: np.ndarray) -> None:
        """Rows ``rows`` of its matrix ``name`` written into ``target[at]`` as they are read by
        byte ranges (formats.read_npy_rows: no array of those rows alone is made; the manifest's
        checksum covers only the whole file)."""
        read_npy_rows(storage.join(self.url, name), rows, self.store, expect_rows=self.size, into=(target, at))


def _of_dim(old: np.ndarray, dim: int) -> np.ndarray:
    if old.shape[1] != dim:
        raise DataError(f"--init-from model has dim {old.shape[1]}, this job dim {dim}; set dim={old.shape[1]}")
    return old


def warm_model(vocab: Vocab, parent: str, store, dim: int, seed: int) -> tuple[Model, dict]:
    """Initial model for a new vocabulary from a published run: known words keep both vectors,
    new words get fresh ones, dropped words disappear."""
    known, src, stats = warm_rows(vocab, parent, store)
    fresh = init_model(len(vocab), dim, seed)
    for name, target in (("vectors.npy", fresh.win), ("context.npy", fresh.wout)):  # one old matrix at a time
        old = _read_parent(parent, store, name, dim)
        target[known] = old[src]
        del old
    return fresh, stats


def warm_start_model(vocab: Vocab, parent: str, store, dim: int, seed: int, new: NewSums | None = None) -> Model:
    """``warm_model``'s model, with the new rows of ``new`` (merged ``cooccur_sums``) started
    from the mean of their known neighbours' vectors."""
    model = warm_model(vocab, parent, store, dim, seed)[0]
    if new is not None:
        init_new_rows(model, new)
    return model


def start_rows(parent: Parent, seed: int, vocab_size: int, ids: np.ndarray, src: np.ndarray) -> Model:
    """Rows ``ids`` (sorted) of ``warm_start_model``'s model, without the whole model nor the
    parent's, but for its new rows with known neighbours: ``src``, the parent row of each (-1: a
    new word). The partitioned layout sets those new rows afterwards, a part at a time
    (``init_new_rows`` in ``cluster.parts.start_new``; warm_parts.py builds both by parts)."""
    model = init_rows(vocab_size, parent.dim, seed, ids)
    known = np.flatnonzero(src >= 0)
    if len(known):
        for name, target in (("vectors.npy", model.win), ("context.npy", model.wout)):
            parent.rows_into(name, src[known], target, known)
    return model


# ---------------------------------------------------------------- new rows from co-occurrences

@dataclass(frozen=True)
class Neighbours:
    """What a shard's co-occurrence sums need: the row of each new word among the new rows (-1:
    a known word) and the parent's input and output vectors in this vocabulary's row order (new
    rows 0)."""

    slot: np.ndarray  # int32 (V,)
    win: np.ndarray  # float32 (V, dim)
    wout: np.ndarray  # float32 (V, dim)

    @property
    def nbytes(self) -> int:
        return self.slot.nbytes + self.win.nbytes + self.wout.nbytes


@dataclass(frozen=True)
class NewSums:
    """Per new row with at least one known neighbour: the sums of the neighbours' input and
    output vectors (one term per co-occurrence) and the number of co-occurrences."""

    rows: np.ndarray  # int64 vocabulary rows, ascending
    win: np.ndarray  # float64 (len(rows), dim)
    wout: np.ndarray  # float64 (len(rows), dim)
    counts: np.ndarray  # int64

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.win.nbytes + self.wout.nbytes + self.counts.nbytes


def neighbours(vocab: Vocab, parent: str, store, dim: int) -> Neighbours:
    """The parent's vectors in this vocabulary's rows, and the new rows' slots; one parent
    matrix read at a time."""
    known, src, _ = warm_rows(vocab, parent, store)
    return Neighbours(new_slots(known), *[_rows(known, src, _read_parent(parent, store, name, dim))
                                       for name in ("vectors.npy", "context.npy")])


def neighbours_of(known: np.ndarray, src: np.ndarray, old_in: np.ndarray, old_out: np.ndarray) -> Neighbours:
    """``Neighbours`` from the known mask, the known words' rows in the parent and its matrices.

    >>> n = neighbours_of(np.array([True, False, True]), np.array([1, 0]), np.eye(2, dtype=np.float32), -np.eye(2))
    >>> n.slot.tolist(), n.win.tolist(), n.wout.tolist()
    ([-1, 0, -1], [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]], [[-0.0, -1.0], [0.0, 0.0], [-1.0, -0.0]])
    """
    return Neighbours(new_slots(known), _rows(known, src, old_in), _rows(known, src, old_out))


def new_slots(known: np.ndarray) -> np.ndarray:
    slot = np.full(len(known), -1, np.int32)
    slot[~known] = np.arange(int((~known).sum()), dtype=np.int32)
    return slot


def _rows(known: np.ndarray, src: np.ndarray, old: np.ndarray) -> np.ndarray:
    """The parent's rows ``src`` of ``old`` at this vocabulary's known rows, zero elsewhere."""
    mat = np.zeros((len(known), old.shape[1]), np.float32)
    mat[known] = old[src]
    return mat


@numba.njit(cache=True, nogil=True)
def _add_neighbours(ids, offsets, slot, window, win, wout, sum_in, sum_out, counts):  # pragma: no cover
    for k in range(len(offsets) - 1):
        lo, hi = offsets[k], offsets[k + 1]
        for i in range(lo, hi):
            s = slot[ids[i]]
            if s < 0:
                continue
            a, b = (lo, hi) if window == 0 else (max(lo, i - window), min(hi, i + window + 1))
            for j in range(a, b):
                w = ids[j]
                if j == i or slot[w] >= 0:  # the word itself, or another new word: no vector to take
                    continue
                counts[s] += 1
                for d in range(win.shape[1]):
                    sum_in[s, d] += win[w, d]
                    sum_out[s, d] += wout[w, d]


def cooccur_sums(known: Neighbours, window: int, *pieces: Shard) -> NewSums:
    """Per new row, the sums of the parent's input and output vectors of the known words within
    ``window`` of its occurrences in ``pieces`` (one shard; 0: the whole sentence), and their
    number.

    >>> n = neighbours_of(np.array([True, True, False]), np.array([0, 1]), np.eye(2, dtype=np.float32), 2 * np.eye(2))
    >>> s = cooccur_sums(n, 1, Shard(np.array([0, 2, 1, 1], np.int32), np.array([0, 4])))
    >>> s.rows.tolist(), s.win.tolist(), s.wout.tolist(), s.counts.tolist()
    ([2], [[1.0, 1.0]], [[2.0, 2.0]], [2])
    """
    n_new, dim = int((known.slot >= 0).sum()), known.win.shape[1]
    sum_in, sum_out = np.zeros((n_new, dim), np.float64), np.zeros((n_new, dim), np.float64)
    counts = np.zeros(n_new, np.int64)
    for piece in pieces:
        _add_neighbours(piece.ids, piece.offsets, known.slot, window, known.win, known.wout, sum_in, sum_out, counts)
    seen = np.flatnonzero(counts)
    rows = np.flatnonzero(known.slot >= 0)[seen].astype(np.int64)
    return NewSums(rows, sum_in[seen], sum_out[seen], counts[seen])


def merge_sums(*parts: NewSums) -> NewSums:
    """The sums of several shards, added in the order given (so the bits depend on it only).

    >>> a = NewSums(np.array([3]), np.array([[1.0]]), np.array([[0.5]]), np.array([1]))
    >>> b = NewSums(np.array([2, 3]), np.array([[2.0], [4.0]]), np.array([[1.0], [1.0]]), np.array([1, 2]))
    >>> m = merge_sums(a, b)
    >>> m.rows.tolist(), m.win.tolist(), m.wout.tolist(), m.counts.tolist()
    ([2, 3], [[2.0], [5.0]], [[1.0], [1.5]], [1, 3])
    """
    unique = np.unique(np.concatenate([p.rows for p in parts]))
    dim = parts[0].win.shape[1]
    win, wout = np.zeros((len(unique), dim), np.float64), np.zeros((len(unique), dim), np.float64)
    counts = np.zeros(len(unique), np.int64)
    for p in parts:  # a part holds a row once: each row takes its parts' terms in the order given
        at = np.searchsorted(unique, p.rows)
        win[at] += p.win
        wout[at] += p.wout
        counts[at] += p.counts
    return NewSums(unique, win, wout, counts)


@dataclass(frozen=True)
class NewRows:
    """The start of new rows with known neighbours: the means of their neighbours' input and
    output vectors (``init_new_rows``'s values, row by row)."""

    rows: np.ndarray  # int64 vocabulary rows, ascending
    win: np.ndarray  # float32 (len(rows), dim)
    wout: np.ndarray  # float32

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.win.nbytes + self.wout.nbytes


def means(new: NewSums) -> NewRows:
    """The means of ``new``'s sums, as ``init_new_rows`` takes them.

    >>> means(NewSums(np.array([4]), np.array([[3.0]]), np.array([[1.0]]), np.array([2]))).win.tolist()
    [[1.5]]
    """
    return NewRows(new.rows, (new.win / new.counts[:, None]).astype(np.float32),
                   (new.wout / new.counts[:, None]).astype(np.float32))


def init_new_rows(model: Model, new: NewSums | NewRows) -> None:
    """Start each row of ``new`` from the means of its known neighbours' input and output
    vectors (``new``'s sums, or their ``means``), in place."""
    start = means(new) if isinstance(new, NewSums) else new
    model.win[start.rows] = start.win
    model.wout[start.rows] = start.wout


def initialised(new: NewSums | NewRows) -> int:
    """How many new rows start from their neighbours (the manifest's ``cooccur_words``)."""
    return len(new.rows)
