"""Placing the partitioned layout (layout.py) on the workers: its fixed inputs, and its rounds.

``partition`` runs once per job, after encoding: each model's rows in each group of rounds (the
ids its shards' sentences of those rounds hold), how many models hold each row in the first
group (counted by the row's owner from each model's rows in its range) and the counts of those
rows, all on the workers; the client holds futures only. The shards keep their global ids: a
model maps each round's sentences to its rows as it trains them. ``_Partitioned`` is
``training._Attempt`` with the rounds of parts.py, a few tasks per worker: train; merge (each
owner asks every model for the changed rows of its range and folds them into its masters);
install (each model asks every owner for the merged rows it holds, or at a group's end for the
next group's rows), both a chunk of rows at a time (``layout.chunks``). Its checkpoints, outputs and top-k
table read the whole model from the owners' masters through their ``parts.Peer`` actors, a chunk
of rows at a time (``_Rows``): no worker holds it whole.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from distributed import Client

from .. import layout, progress
from ..merge import rate_summary
from ..model import Model
from ..nearest import unit_rows
from ..plan import group_end, group_of, model_groups, round_groups, schedule, sync_rows
from ..shard import piece_slice, round_spec
from . import models, parts
from .models import ModelLost
from .training import _Attempt


@dataclass(frozen=True)
class Parts:
    """The partitioned layout's inputs, fixed for a job (futures on the workers)."""

    shards: list  # per shard: its pieces (global ids: a model maps each round's sentences to its rows)
    groups: int  # groups of an epoch's rounds a model holds its rows for (plan.round_groups)
    rows: list  # per model: (its held ids, their holder counts, their counts) in the first group
    held: list  # [group][model]: the ids the model holds in the group of rounds
    ranges: list[tuple[int, int]]  # per model: the rows whose masters its worker keeps
    inrange: list[list]  # [owner][group][model]: the model's held ids in the owner's range
    counts: list  # per owner: the vocabulary's counts of its range
    total: int  # the corpus's words in the vocabulary
    sizes: list  # per model: the most rows it holds in a group (a future of an int)
    probe: tuple  # (pieces, tables): the first model's first shard in its first group, in its local ids
    rates: object  # a future of the rate multipliers' summary (the first group's)


def _held(rounds: int, r0: int, r1: int, shards: list) -> np.ndarray:
    """The rows that rounds [r0, r1) of a model's ``shards`` (each a list of pieces) use."""
    return layout.held_rows([p for pieces in shards for p in layout.group_pieces(pieces, rounds, r0, r1)])


def _most(*held: np.ndarray) -> int:
    return max(len(h) for h in held)


def _in_range(held: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return held[np.searchsorted(held, lo):np.searchsorted(held, hi)]


def _count(lo: int, hi: int, *inrange: np.ndarray) -> np.ndarray:
    return layout.holders([ids - lo for ids in inrange], hi - lo)


def _k_at(k: np.ndarray, lo: int, ids: np.ndarray) -> np.ndarray:
    return k[ids - lo]


def _rows(held: np.ndarray, k_parts: list, c_parts: list) -> tuple:
    def join(arrays, dtype):
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype)

    return held, join(k_parts, np.int32), join(c_parts, np.int64)


def _range_counts(vocab, lo: int, hi: int) -> np.ndarray:
    return vocab.slice(lo, hi).counts


def _tables(t, total: int, rows: tuple):
    """A model's tables over its rows (``_rows``: ids, holder counts, counts)."""
    _, k, counts = rows
    return layout.model_tables(counts, total, k, t)


def _rates(t, total: int, rows: tuple) -> np.ndarray:
    """A model's per-row rate multipliers in its first group."""
    return _tables(t, total, rows).rate


def _rate_summary(*rates: np.ndarray) -> dict:
    return rate_summary(np.concatenate(rates))


def _probe_pieces(rounds: int, r0: int, r1: int, held: np.ndarray, *pieces) -> list:
    return [piece_slice(p, 0, p.sentences, held) for p in layout.group_pieces(pieces, rounds, r0, r1)]


def partition(client: Client, shards: list, vocab, total: int, t, n_models: int, rows: int, homes: list[str],
              tag: str, rounds: int, groups: int) -> Parts:
    """The partitioned layout's inputs from the encoded ``shards`` (piece futures), the
    vocabulary's parts (``vocab``: stages.VocabParts, ``total`` words in it), ``n_models`` models
    on ``homes``; ``rows``: the vocabulary size; a model holds its rows for ``groups`` groups of
    the epoch's ``rounds`` at a time."""
    def on(m: int) -> dict:
        return {"workers": [homes[m % len(homes)]], "allow_other_workers": True}

    mine, spans = model_groups(len(shards), n_models), round_groups(rounds, groups)
    ranges = layout.owners(rows, n_models)
    held = [[client.submit(_held, rounds, r0, r1, [shards[s] for s in g], key=f"held-{tag}-{j}-{m}", **on(m))
             for m, g in enumerate(mine)] for j, (r0, r1) in enumerate(spans)]
    inrange = [[[client.submit(_in_range, held[j][m], lo, hi, key=f"inrange-{tag}-{o}-{j}-{m}", **on(m))
                 for m in range(n_models)] for j in range(len(spans))] for o, (lo, hi) in enumerate(ranges)]
    # The first group's holder counts and counts, given by each owner for the models' rows in its
    # range: no model's worker receives the whole vocabulary. Later groups' come with their rows.
    k_range = [client.submit(_count, lo, hi, *inrange[o][0], key=f"holders-{tag}-{o}", **on(o))
               for o, (lo, hi) in enumerate(ranges)]
    counts = [client.submit(_range_counts, vocab, lo, hi, key=f"counts-{tag}-{o}", **on(o))
              for o, (lo, hi) in enumerate(ranges)]
    first = [client.submit(_rows, held[0][m],
                           [client.submit(_k_at, k_range[o], ranges[o][0], inrange[o][0][m], key=f"k-{tag}-{o}-{m}", **on(o))
                            for o in range(n_models)],
                           [client.submit(_k_at, counts[o], ranges[o][0], inrange[o][0][m], key=f"c-{tag}-{o}-{m}", **on(o))
                            for o in range(n_models)], key=f"rows-{tag}-{m}", **on(m)) for m in range(n_models)]
    probe = (client.submit(_probe_pieces, rounds, *spans[0], held[0][0], *shards[0], key=f"probe-pieces-{tag}", **on(0)),
             client.submit(_tables, t, total, first[0], key=f"probe-tables-{tag}", **on(0)))
    sizes = [client.submit(_most, *[h[m] for h in held], key=f"nheld-{tag}-{m}", **on(m)) for m in range(n_models)]
    rates = client.submit(_rate_summary, *[client.submit(_rates, t, total, first[m], key=f"rate-{tag}-{m}", **on(m))
                                           for m in range(n_models)], key=f"rates-{tag}")
    return Parts(shards, len(spans), first, held, ranges, inrange, counts, total, sizes, probe, rates)


class _Fetch:
    """The owners' masters after a round, read by a task through the owners' ``parts.Peer``
    actors (``where``: the job's tag, attempt and each owner's peer), rows [a, b) or some row
    ids at a time: a task that writes or scans the whole model holds what it asked for, never a
    range of it, let alone all of it."""

    def __init__(self, where: tuple, ranges: list[tuple[int, int]]):
        self.tag, self.attempt, self.peers = where
        self.ranges, self.starts = ranges, np.array([lo for lo, _ in ranges])

    def ask(self, owner: int, method: str, *args) -> np.ndarray:
        if parts.has_masters(self.tag, self.attempt, owner):
            return getattr(parts, method)(self.tag, self.attempt, owner, *args)
        got = models._ask(self.tag, self.attempt, [(self.peers[owner], method, (self.tag, self.attempt, owner, *args))],
                          parts._stopped)
        if got is None or got[0] is None:
            raise ModelLost("the masters are gone (the job stopped)")
        return got[0]


# Rows read from the masters at once for small slices (the top-k table's tiles of 2,048 rows: one
# read in 16 at dim 32): small beside a writer's block, which is read as it is asked for.
READ_BYTES = 4 * 2**20


class _Rows:
    """One matrix of the whole model (``matrix``: win or wout; ``unit``: its rows scaled to length
    1) as the writers and ``nearest.block_topk`` read it: rows by slices or lists of row ids,
    each asked of the owners' masters when read (``_Fetch``)."""

    dtype, ndim = np.dtype(np.float32), 2
    flags = type("flags", (), {"c_contiguous": True, "f_contiguous": False})

    def __init__(self, fetch: _Fetch, rows: int, dim: int, matrix: str, unit: bool = False):
        self.fetch, self.shape, self.matrix, self.unit = fetch, (rows, dim), matrix, unit
        self.step = max(layout.CHUNK_ROWS, READ_BYTES // (dim * 4))  # rows of one read
        self.held: tuple[int, int, np.ndarray] | None = None  # the last chunk read: (first row, last + 1, rows)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4

    def astype(self, dtype, copy: bool = True):
        assert np.dtype(dtype) == self.dtype and not copy, dtype  # the writers ask for float32 views
        return self

    def _unit(self, rows: np.ndarray) -> np.ndarray:
        return unit_rows(rows) if self.unit else rows

    def _slice(self, owner: int, a: int, b: int) -> np.ndarray:
        """Rows [a, b) of one owner's range: from the chunk last read, else a chunk of ``step``
        rows from ``a`` is read and kept (writers and the top-k table read in order, in small
        slices); a slice longer than a chunk is read as it is."""
        if b - a > self.step:
            return self.fetch.ask(owner, "master_rows", self.matrix, a, b)
        held = self.held
        if held is None or not held[0] <= a < b <= held[1]:
            self.held = None  # freed before the next chunk arrives
            end = min(self.fetch.ranges[owner][1], a + self.step)
            held = self.held = (a, end, self.fetch.ask(owner, "master_rows", self.matrix, a, end))
        return held[2][a - held[0]:b - held[0]]

    def __getitem__(self, key) -> np.ndarray:
        fetch, out = self.fetch, []
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            assert step == 1, key
            for o, (a, b) in enumerate(fetch.ranges):
                if a < hi and lo < b:
                    out.append(self._unit(self._slice(o, max(lo, a), min(hi, b))))
            if not out:
                return np.zeros((0, self.shape[1]), np.float32)
            return np.concatenate(out) if len(out) > 1 else out[0]
        ids = np.asarray(key, np.int64)
        got = np.empty((len(ids), self.shape[1]), np.float32)
        where = np.searchsorted(fetch.starts, ids, side="right") - 1
        for o in np.unique(where):
            mine = where == o
            got[mine] = self._unit(fetch.ask(int(o), "master_pick", self.matrix, ids[mine]))
        return got


def _apply(fn, args: tuple, where: tuple, ranges: list, dim: int, *after):
    """``fn(*args, model)`` with the whole model read from the masters as it asks for rows."""
    fetch = _Fetch(where, ranges)
    rows = ranges[-1][1]
    return fn(*args, Model(_Rows(fetch, rows, dim, "win"), _Rows(fetch, rows, dim, "wout")))


def _serve(task, args: tuple, item, where: tuple, ranges: list, dim: int, *after):
    """``task(*args, item, unit)`` with the whole model's unit rows read from the masters."""
    return task(*args, item, _Rows(_Fetch(where, ranges), ranges[-1][1], dim, "win", unit=True))


class _Partitioned(_Attempt):
    """An attempt at training in the partitioned layout (parts.py on the workers)."""

    peer = parts.Peer

    def _create(self, source, start: int) -> dict:
        """Per worker, the future of its models and masters ready to train (``parts.create``, then
        the source's ``later`` rows one part at a time: each task waits for the one before, so the
        worker fetches one part at a time)."""
        run, lay, p = self.run, self.layout, self.run.parts
        plan = (self.cfg.train, p.total, run.rounds, p.groups)
        ready = {}
        for i, w in enumerate(self.workers):
            mine = [m for m, h in enumerate(lay.home) if h == w]
            own = source._replace(models=[source.models[m] for m in mine] if source.models else None, later=None)
            ready[w] = self.submit(parts.create, run.tag, self.attempt, start * run.rounds, mine,
                                   [p.ranges[m] for m in mine], [p.inrange[m] for m in mine],
                                   [p.counts[m] for m in mine], own, plan, *[p.rows[m] for m in mine],
                                   key=f"model-{run.tag}-{self.attempt}-{i}", worker=w)
            for m in mine if source.later else []:
                for which, pieces in zip(("model", "range"), source.later[m]):
                    for k, piece in enumerate(pieces):
                        ready[w] = self.submit(parts.start_new, run.tag, self.attempt, m, which, piece, ready[w],
                                               key=f"start-new-{run.tag}-{self.attempt}-{m}-{which}-{k}", worker=w)
        return ready

    def submit_round(self, epoch: int, r: int):
        """Train every model, merge the synchronised prefix into the masters of its owners,
        install the merged rows in their holders; the round's end (a future of its record,
        ``models.ended``). Rows cross through the ``parts.Peer`` actors, as in the replicated
        layout's rounds, each step waiting for the previous one (``_Attempt.step``)."""
        run, t, lay, p = self.run, self.cfg.train, self.layout, self.run.parts
        key, g = f"{run.tag}-{self.attempt}-{epoch}-{r}", epoch * run.rounds + r
        end = self.done + int(run.words[:, r].sum())
        a0, a1 = schedule(t.alpha, t.min_alpha, self.done, self.total), schedule(t.alpha, t.min_alpha, end, self.total)
        self.done = end
        n, last = sync_rows(r, run.rounds, run.rows, t.sync_rows, p.groups), group_end(r, run.rounds, p.groups)
        trained = [self.submit(parts.train, run.tag, self.attempt, g, m, [p.shards[s] for s in group],
                               [round_spec(t, epoch, r, run.rounds, s, a0, a1, walks=bool(self.cfg.edges))
                                for s in group], lay.threads[m], *self.after[m],
                               key=f"train-{key}-{m}", worker=lay.home[m])
                   for m, group in enumerate(lay.groups)]
        owners = [(o, lo, min(hi, n), layout.chunks(lo, min(hi, n), t.dim, len(lay.groups), hi - lo))
                  for o, (lo, hi) in enumerate(p.ranges) if lo < min(hi, n)]
        index = {h: i for i, h in enumerate(self.workers)}
        homes = [self.peers[index[h]] for h in lay.home]  # where each model and its range's masters live
        mine = {w: [x for x in owners if lay.home[x[0]] == w] for w in self.workers}
        merging = [w for w in self.workers if mine[w]]
        step = self.step(trained, len(merging), f"trained-{key}")
        merges = [self.submit(parts.merge, run.tag, self.attempt, g, mine[w], last, t.merge, homes, *step,
                              key=f"merge-{key}-{index[w]}", worker=w) for w in merging]
        step = self.step(merges, len(self.workers), f"merged-{key}")
        # At a group's end (when there are several) each model takes the next group's rows.
        following = p.held[(group_of(r, run.rounds, p.groups) + 1) % p.groups] if last and p.groups > 1 else None
        installs = [self.submit(parts.install, run.tag, self.attempt, g, owners, last, homes,
                                None if following is None else {m: following[m] for m, h in enumerate(lay.home) if h == w},
                                *step, key=f"install-{key}-{i}", worker=w) for i, w in enumerate(self.workers)]
        return self.end_round(epoch, r, key, trained, merges, installs) + (n, len(owners))

    def _masters(self, g: int, label: str) -> tuple[tuple, object]:
        """Where tasks read the owners' masters before round ``g`` (``_Fetch``), and a future
        that is done when they all are."""
        run, lay = self.run, self.layout
        masters = [self.submit(parts.master, run.tag, self.attempt, g, o, *self.after[o],
                               key=f"master-{label}-{run.tag}-{self.attempt}-{g}-{o}", worker=lay.home[o])
                   for o in range(len(lay.groups))]
        ready = self.submit(models.barrier, *masters, key=f"masters-{label}-{run.tag}-{self.attempt}-{g}",
                            worker=self.workers[0])
        index = {h: i for i, h in enumerate(self.workers)}
        return (run.tag, self.attempt, [self.peers[index[h]] for h in lay.home]), ready

    def _on_first(self, epoch: int, label: str, fn, args: tuple):
        run, g = self.run, (epoch + 1) * self.run.rounds
        if label == "probe":  # on the first model's own rows: the probe's pairs are in its local ids
            future = self.submit(parts.local, run.tag, self.attempt, g, 0, fn, args, *self.after[0],
                                 key=f"{label}-{run.tag}-{self.attempt}-{epoch}", worker=self.layout.home[0],
                                 priority=10)
            self.after[0] = self.after[0] + [future]
            return future
        where, ready = self._masters(g, label)
        future = self.submit(_apply, fn, args, where, self.run.parts.ranges, self.cfg.train.dim, ready,
                             key=f"{label}-{run.tag}-{self.attempt}-{epoch}", worker=self.workers[0], priority=10)
        # The masters are read in place: the next round waits until they are written out.
        self.after = [a + [future] for a in self.after]
        return future

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(Exception):  # a client that lost its scheduler has nothing to stop
            self.client.run(parts.drop, self.run.tag, on_error="ignore")

    def finish(self, write, args: tuple):
        # The models are no longer needed (the last epoch's probe has run): their rows go before
        # the outputs are written from the masters.
        freed = [self.submit(parts.trained_out, self.run.tag, self.attempt, *[a for m, h in enumerate(self.layout.home)
                                                                            if h == w for a in self.after[m]],
                             key=f"trained-out-{self.run.tag}-{self.attempt}-{i}", worker=w)
                 for i, w in enumerate(self.workers)]
        self.after = [a + freed for a in self.after]
        where, ready = self._masters(self.cfg.train.epochs * self.run.rounds, "final")
        return self.submit(_apply, write, args, where, self.run.parts.ranges, self.cfg.train.dim, ready,
                           key=f"write-{self.run.tag}-{self.attempt}", worker=self.workers[0])

    def deal(self, task, args: tuple, items: list, label: str, whole: bool = False) -> list:
        """``task(*args, item, unit)`` (``whole``: ``task(*args, item, model)``) for each item,
        dealt over the workers, on the final model read from the masters as it is asked for."""
        run, dim = self.run, self.cfg.train.dim
        where, ready = self._masters(self.cfg.train.epochs * run.rounds, label)
        futures = [self.submit(_apply, task, (*args, item), where, run.parts.ranges, dim, ready,
                               key=f"{label}-{run.tag}-{self.attempt}-{i}", worker=w) if whole
                   else self.submit(_serve, task, args, item, where, run.parts.ranges, dim, ready,
                                    key=f"{label}-{run.tag}-{self.attempt}-{i}", worker=w)
                   for i, item in enumerate(items) for w in [self.workers[i % len(self.workers)]]]
        with progress.stage(label, len(futures), unit=" blocks") as bar:
            bar.follow(futures)
            return self.gather(futures)

