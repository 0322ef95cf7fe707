"""The rounds and merges of training, stated as a plain loop over models in one process.

This is what the distributed training computes (``cluster/training.py``, one model per worker
process), written without Dask: each of ``n_models`` models trains its shards in shard order,
keeping its update counts per row until the row is next synchronised; every round averages a
frequency prefix of the rows (``plan.sync_rows``; every row at an epoch's end) with the merge
rules of ``merge.py``. With one thread per worker the distributed run gives exactly these bits,
and moves exactly the bytes counted here: model m lives on worker m, block b of a round's rows
is merged by model b mod M's worker, only the rows a sender or the owner changed go in, only the
rows the merge changed go out. ``tests/test_pipeline.py`` holds the two to that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import layout, plan
from .config import TrainConfig
from .encode import Shard
from .merge import merge_deltas, merge_rows
from .model import Model, Tables
from .shard import round_spec, train_round


@dataclass(frozen=True)
class Reference:
    """The final model (every model is equal after an epoch's last round), the bytes each round
    moves between worker processes, and the synchronised row counts the rounds used."""

    model: Model
    moved: list[int]
    prefixes: set[int]


def part_bytes(n_in, n_out, own_in, own_out, dim: int) -> int:
    """Bytes of one model's part of a row block (``merge.changed``): its changed rows and the
    owner's, each with its id and count; every row, without ids, when that is all of them.

    >>> part_bytes(np.array([1, 0]), np.array([0, 0]), np.array([0, 0]), np.array([0, 1]), dim=2)
    32
    """
    sent_in, sent_out = (n_in > 0) | (own_in > 0), (n_out > 0) | (own_out > 0)
    if sent_in.all() and sent_out.all():
        return len(n_in) * (2 * dim * 4 + 2 * 4)
    return int(sent_in.sum() + sent_out.sum()) * (dim * 4 + 4 + 4)


def merged_bytes(touched_in, touched_out, dim: int) -> int:
    """Bytes of a merged row block sent to one other worker: the rows some model changed, with
    their ids unless every row goes."""
    return sum(len(t) * dim * 4 if t.all() else int(t.sum()) * (dim * 4 + 4) for t in (touched_in, touched_out))


def _rounds(t: TrainConfig, words: np.ndarray):
    """(epoch, round, learning rate at its start, at its end) of every round of ``t``: one global
    schedule over the words of all epochs (``words[shard, round]``)."""
    total, done = t.epochs * int(words.sum()), 0
    for epoch in range(t.epochs):
        for r in range(words.shape[1]):
            a0 = plan.schedule(t.alpha, t.min_alpha, done, total)
            done += int(words[:, r].sum())
            yield epoch, r, a0, plan.schedule(t.alpha, t.min_alpha, done, total)


def train_models(shards: list[Shard], words: np.ndarray, tables: Tables, t: TrainConfig, n_models: int,
                 start: Model) -> Reference:
    """Every epoch of ``t`` on ``n_models`` copies of ``start``; ``words[shard, round]`` are the
    shards' words per round, which set the global learning-rate schedule."""
    n_shards, rounds = words.shape
    rows = len(start.win)
    models = [Model(start.win.copy(), start.wout.copy()) for _ in range(n_models)]
    counts = [(np.zeros(rows, np.uint32), np.zeros(rows, np.uint32)) for _ in models]
    prefixes, moved = set(), []
    for epoch, r, a0, a1 in _rounds(t, words):
        for model, (n_in, n_out), group in zip(models, counts, plan.model_groups(n_shards, n_models)):
            for s in group:
                train_round(model, shards[s], tables, round_spec(t, epoch, r, rounds, s, a0, a1), n_in, n_out)
        n = plan.sync_rows(r, rounds, rows, t.sync_rows)
        prefixes.add(n)
        moved.append(_round_bytes(counts, n, rows, t))
        for matrix, c in (("win", 0), ("wout", 1)):
            merge_rows([getattr(m, matrix)[:n] for m in models], [getattr(m, matrix)[:n] for m in models],
                       [k[c][:n] for k in counts], t.merge)
        for k in counts:
            k[0][:n], k[1][:n] = 0, 0
    return Reference(models[0], moved, prefixes)


def _round_bytes(counts: list, n: int, rows: int, t: TrainConfig) -> int:
    """What a round that synchronises rows [0, n) moves, from the models' update counts."""
    n_models = len(counts)
    blocks = t.merge_blocks or plan.merge_blocks(n, rows, n_models, 2 * rows * t.dim * 4)
    nbytes = 0
    for b, (lo, hi) in enumerate(plan.row_blocks(n, blocks)):
        own = counts[b % n_models]
        nbytes += sum(part_bytes(k[0][lo:hi], k[1][lo:hi], own[0][lo:hi], own[1][lo:hi], t.dim)
                      for m, k in enumerate(counts) if m != b % n_models)
        touched = [np.any([k[c][lo:hi] > 0 for k in counts], axis=0) for c in (0, 1)]
        nbytes += (n_models - 1) * merged_bytes(*touched, t.dim)
    return nbytes


def train_partitioned(shards: list[Shard], words: np.ndarray, counts: np.ndarray, t: TrainConfig, n_models: int,
                      start: Model, groups: int = 1) -> Reference:
    """``train_models`` in the partitioned layout (layout.py): model m holds only the rows its
    shards use, trains them by local ids on its local tables, and each round the rows its holders
    changed in the synchronised prefix are folded into the masters (``merge.merge_deltas``) and
    copied back to their holders; rows with one holder go to the masters at an epoch's end only.
    ``groups``: a model holds the rows of one group of the epoch's rounds at a time
    (``plan.round_groups``), every row is synchronised at a group's end, and the model takes the
    next group's rows, tables and holder counts from the masters. ``counts``: the vocabulary's
    counts. Returns the masters (the whole model) after the last round."""
    n_shards, rounds = words.shape
    rows = len(start.win)
    spans = plan.round_groups(rounds, groups)
    mine = plan.model_groups(n_shards, n_models)
    held = [[layout.held_rows([p for s in g for p in layout.group_pieces(shards[s], rounds, r0, r1)]) for g in mine]
            for r0, r1 in spans]  # held[group][model]
    k = [layout.holders(h, rows) for h in held]
    master = Model(start.win.copy(), start.wout.copy())
    models, updates, local = _take(master, held[0], k[0], counts, t)
    prefixes, moved = set(), []
    for epoch, r, a0, a1 in _rounds(t, words):
        j = plan.group_of(r, rounds, len(spans))
        for m, group in enumerate(mine):
            for s in group:
                spec = round_spec(t, epoch, r, rounds, s, a0, a1)
                train_round(models[m], shards[s], local[m], spec, *updates[m], held=held[j][m])
        n = plan.sync_rows(r, rounds, rows, t.sync_rows, len(spans))
        prefixes.add(n)
        end = plan.group_end(r, rounds, len(spans))
        regroup = end and len(spans) > 1
        moved.append(_sync(models, held[j], k[j], updates, master, n, end, t.merge, install=not regroup))
        if regroup:
            following = (j + 1) % len(spans)
            models, updates, local = _take(master, held[following], k[following], counts, t)
            moved[-1] += _taken_bytes(held[following], rows, t.dim)
    return Reference(master, moved, prefixes)


def _take(master: Model, held: list[np.ndarray], k: np.ndarray, counts: np.ndarray, t: TrainConfig) -> tuple:
    """Each model's rows ``held[m]`` read from the masters, its update counts from zero, and its
    tables (the holder counts ``k`` of the rows' group)."""
    total = int(counts.sum())
    return ([layout.local_model(master, h) for h in held],
            [(np.zeros(len(h), np.uint32), np.zeros(len(h), np.uint32)) for h in held],
            [layout.model_tables(counts[h], total, k[h], t) for h in held])


def _taken_bytes(held: list[np.ndarray], rows: int, dim: int) -> int:
    """What the models' taking of a group's rows moves between worker processes: per row not
    owned by its model's worker, its id, both matrices' values, count (int64) and holder count
    (int32)."""
    ranges = layout.owners(rows, len(held))
    owner = np.repeat(np.arange(len(ranges)), [hi - lo for lo, hi in ranges])
    return sum(int((owner[h] != m).sum()) for m, h in enumerate(held)) * (4 + 2 * dim * 4 + 8 + 4)


def _sync(models: list[Model], held: list[np.ndarray], k: np.ndarray, updates: list, master: Model, n: int,
          last: bool, how: str, install: bool = True) -> int:
    """One round's merge in the partitioned layout, in place; returns the bytes it moves between
    worker processes (model m lives on worker m, which keeps the masters of ``layout.owners``'
    m-th range: a part crosses unless its holder is the row's owner, and so does a merged row
    going back to a holder). ``last``: the end of a group of rounds, where every row a model
    changed goes to the masters; ``install``: the merged rows go back to their holders (not
    when the models take the next group's rows instead)."""
    ranges = layout.owners(len(k), len(models))
    owner = np.repeat(np.arange(len(ranges)), [hi - lo for lo, hi in ranges])
    nbytes = 0
    for matrix, c in (("win", 0), ("wout", 1)):
        parts, target = [], getattr(master, matrix)
        for m, (model, h, counts) in enumerate(zip(models, held, updates)):
            cut = layout.synced(h, n)
            sel = np.flatnonzero(counts[c][:cut])
            if not last:  # a row one model holds is its own until the group's end
                sel = sel[k[h[sel]] > 1]
            parts.append((h[sel], getattr(model, matrix)[sel], counts[c][sel]))
            nbytes += int((owner[h[sel]] != m).sum()) * (target.shape[1] * 4 + 8)
        touched = merge_deltas(target[:n], parts, k[:n], how)
        for m, (model, h) in enumerate(zip(models, held) if install else ()):
            ids = h[:layout.synced(h, n)]
            back = np.flatnonzero(touched[ids] & (k[ids] > 1))
            getattr(model, matrix)[back] = target[ids[back]]
            nbytes += int((owner[ids[back]] != m).sum()) * (target.shape[1] * 4 + 4)
    for h, counts in zip(held, updates):
        cut = layout.synced(h, n)
        for c in counts:
            c[:cut][(k[h[:cut]] > 1) | last] = 0
    return nbytes
