"""The partitioned layout: each model holds only the rows its shards use (pure functions).

In the replicated layout every model holds all V rows. In the partitioned one, model m holds
the rows ``held[m]``: the sorted vocabulary ids its shards contain (centers, contexts and shown
items). The frequent words occur in every shard, so they are held everywhere (the "head"); a
rare word only by the models whose shards contain it. Memory per model then falls as models
are added, down to the head plus a model's share of the tail.

A model trains on its rows by *local* ids (positions in ``held[m]``): its shards are mapped to
them once (``localize``), and its tables are the global ones restricted to its rows
(``local_tables``): subsampling as before, negatives drawn from the noise distribution
restricted to the rows it holds (PyTorch-BigGraph's partition-local negatives: the head holds
most of the noise mass, and a tail word is drawn as a negative where it is trained), and local
rates scaled by how many models hold the row (``holder_rates``: averaging a row over its k
holders divides its progress by k, not by M).

A row's synchronised value (the "master") lives with the row block's owner. A round sends the
owner the rows each holder changed, and the owner folds them into the master
(``merge.merge_deltas``), then sends the new values back to the holders. A row held by one
model is its own: it crosses to the owner only at an epoch's end, so that the masters hold the
whole model for checkpoints and outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .encode import Shard
from .merge import MAX_SHARD_ALPHA
from .model import Model, Tables
from .noise import noise_table
from .vocab import keep_probs


def held_rows(pieces: Sequence[Shard]) -> np.ndarray:
    """The sorted vocabulary ids that the shard ``pieces`` contain (int32).

    >>> a = Shard(np.array([4, 1, 4], np.int32), np.array([0, 3]))
    >>> b = Shard(np.array([2], np.int32), np.array([0, 1]), np.array([7], np.int32), np.array([0, 1]))
    >>> held_rows([a, b]).tolist()
    [1, 2, 4, 7]
    """
    arrays = [p.ids for p in pieces] + [p.shown_ids for p in pieces if p.shown_ids is not None]
    if not arrays:
        return np.zeros(0, np.int32)
    return np.unique(np.concatenate(arrays)).astype(np.int32)


def holders(held: Sequence[np.ndarray], rows: int) -> np.ndarray:
    """How many models hold each row (int32, ``rows`` long).

    >>> holders([np.array([0, 2]), np.array([0, 1])], 4).tolist()
    [2, 1, 1, 0]
    """
    k = np.zeros(rows, np.int32)
    for h in held:
        k[h] += 1
    return k


def localize(pieces: Sequence[Shard], held: np.ndarray) -> list[Shard]:
    """The pieces with their ids as positions in ``held`` (which must hold every id).

    >>> p = localize([Shard(np.array([7, 2], np.int32), np.array([0, 2]))], np.array([2, 7], np.int32))
    >>> p[0].ids.tolist()
    [1, 0]
    """
    def local(ids):
        return None if ids is None else np.searchsorted(held, ids).astype(np.int32)

    return [Shard(local(p.ids), p.offsets, local(p.shown_ids), p.shown_offsets) for p in pieces]


def holder_rates(counts: np.ndarray, keep: np.ndarray, k: np.ndarray, alpha: float, how: str = "mean",
                 scale: float | None = None, pivot: float | None = None) -> np.ndarray:
    """``merge.shard_rates`` with each row's holder count ``k`` in place of the model count: a row
    averaged over k models has its progress divided by k.

    >>> holder_rates(np.array([1, 1]), np.ones(2), np.array([1, 3]), 0.025).tolist()
    [1.0, 3.0]
    >>> [round(float(x), 2) for x in holder_rates(np.array([160]), np.ones(1), np.array([8]), 0.025, pivot=160)]
    [4.5]
    """
    n = len(counts)
    if scale is not None:
        return np.full(n, scale, np.float32)
    top = np.clip(np.asarray(k, np.float64), 1.0, max(1.0, MAX_SHARD_ALPHA / alpha))
    if how != "mean":
        return np.ones(n, np.float32)
    if pivot is None:
        return top.astype(np.float32)
    occurrences = np.asarray(counts, np.float64) * np.asarray(keep, np.float64)
    return (1.0 + (top - 1.0) / (1.0 + occurrences / pivot)).astype(np.float32)


def local_tables(tables: Tables, counts: np.ndarray, held: np.ndarray, ns_exponent: float) -> Tables:
    """A model's tables over the rows it holds: the global subsampling and rates of those rows,
    and the noise distribution restricted to them (local ids).

    >>> from nsdist.model import make_tables
    >>> t = local_tables(make_tables(np.array([8, 4, 2, 1]), 0, 1.0), np.array([8, 4, 2, 1]), np.array([1, 3]), 1.0)
    >>> t.keep.tolist(), len(t.noise_prob)
    ([1.0, 1.0], 2)
    """
    if len(held) == 0:  # a model without words trains nothing
        prob, alias = np.zeros(0, np.float32), np.zeros(0, np.int32)
    else:
        prob, alias = noise_table(np.asarray(counts)[held], ns_exponent)
    rate = None if tables.rate is None else tables.rate[held]
    return replace(tables, keep=tables.keep[held], noise_prob=prob, noise_alias=alias, rate=rate)


def local_model(model: Model, held: np.ndarray) -> Model:
    """The rows ``held`` of a whole model (copies)."""
    return Model(model.win[held], model.wout[held])


def synced(held: np.ndarray, n: int) -> int:
    """How many of a model's rows fall in the synchronised prefix [0, n): its rows are sorted, so
    they are its first ``synced`` local rows.

    >>> synced(np.array([0, 3, 9]), 4)
    2
    """
    return int(np.searchsorted(held, n))


def owners(rows: int, models: int) -> list[tuple[int, int]]:
    """The rows [lo, hi) whose synchronised values (masters) model m's worker keeps: contiguous
    and equal, so an owner's share falls as models are added.

    >>> owners(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [(rows * m // models, rows * (m + 1) // models) for m in range(models)]


def partitioned_tables(counts: np.ndarray, t, k: np.ndarray) -> Tables:
    """The job's per-row tables for the partitioned layout (``t``: a TrainConfig): subsampling and
    rates by holder count (``holder_rates``); each model draws its negatives from its own rows
    (``local_tables``), so there is no noise table of the whole vocabulary."""
    keep = keep_probs(counts, t.sample)
    rate = holder_rates(counts, keep, k, t.alpha, t.merge, t.alpha_scale, t.rate_pivot)
    return Tables(keep, np.zeros(0, np.float32), np.zeros(0, np.int32), rate)
