"""Worker state of the partitioned layout (layout.py): each model holds only its shards' rows,
and each worker keeps the masters of one range of rows.

Per round, as ``reference.train_partitioned`` states it:

1. ``train``: a model trains its shards in place, as in the replicated layout, each round's
   sentences mapped to its local ids (positions in its held rows) as the round starts;
2. ``merge`` (one task per worker that owns ranges in the synchronised prefix): for each of its
   ranges, the owner asks every model for the rows of the range it changed since they were last
   synchronised, with global ids and update counts (``Peer.part`` on the model's worker; rows
   no other model holds stay home until the epoch's last round), and ``merge.merge_deltas``
   folds them, in model order, into the masters;
3. ``install`` (one task per worker): each of its models asks every owner for the merged rows
   it holds and another model holds too (``Peer.shared``: read from the masters, cut by
   ``inrange``, the model's rows in the owner's range, given to the owner once per attempt),
   copies them in, and restarts the update counts of its synchronised rows. At the end of a
   group of rounds (``plan.round_groups``, when there are several), every row was synchronised:
   the model drops its rows and takes the next group's from the masters instead, with their
   counts and holder counts, from which it builds that group's tables (``Peer.taken``).

Both steps go through a range a chunk of rows at a time (the client's ``layout.chunks``), so
what crosses at once is bounded whatever the range. The rows cross between workers through
``Peer``, a Dask actor on every worker, asked as models.py asks its own (``models._ask``): a
round costs the scheduler a few tasks per worker. After an epoch's last round the masters hold
the whole model (``master``), which checkpoints and outputs read as they go (``master_rows``,
``master_pick``). Every operation checks the model's position and raises ``ModelLost`` when it
does not match, as models.py does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..checkpoint import ROW_BUILDS
from ..encode import Shard
from ..layout import holders, model_tables
from ..memory import release_memory
from ..merge import merge_deltas
from ..model import Model, Tables
from ..plan import group_of, round_groups
from ..shard import RoundSpec
from ..warm import NewRows, init_new_rows
from .models import ModelLost, _address, _ask, _Held, _train_shards

_LOCK = threading.Lock()
_JOBS: dict[tuple[str, str], _Job] = {}  # (worker address, job tag) -> this worker's models and masters
_DROPPED: set[tuple[str, str, int]] = set()


@dataclass
class _Model:
    state: _Held  # the local model, its update counts and position (models._Held)
    held: np.ndarray  # int32: the global id of each local row, sorted
    shared: np.ndarray  # bool: whether another model holds the row too
    tables: Tables  # over its rows (layout.model_tables)
    installs: int = 0  # owners' installs received in the round being synchronised


@dataclass
class _Master:
    lo: int
    rows: Model  # the synchronised rows [lo, lo + len)
    counts: np.ndarray  # int64: the vocabulary's counts of those rows
    inrange: list  # [group][model]: the model's held ids in [lo, lo + len) in that group of rounds
    k: dict = field(default_factory=dict)  # group -> how many models hold each row in it (``_holders``)


@dataclass
class _Job:
    attempt: int
    models: dict  # model index -> _Model
    masters: dict  # model index -> _Master: the range its worker owns
    train: object  # the TrainConfig (the tables a model builds for a group)
    total: int  # the corpus's words in the vocabulary (subsampling)
    rounds: int  # per epoch
    groups: int  # groups of rounds a model holds its rows for (plan.round_groups)
    merged: dict = field(default_factory=dict)  # (round, owner) -> the merged rows more than one model holds

    def group(self, g: int) -> int:
        """The group of rounds that round ``g`` (epoch * rounds + round) is in."""
        return group_of(g % self.rounds, self.rounds, self.groups)


def _holders(master: _Master, j: int) -> np.ndarray:
    """How many models hold each row of the range in group ``j`` (int32), kept for the group
    being trained and the next."""
    k = master.k.get(j)
    if k is None:
        k = holders([ids - master.lo for ids in master.inrange[j]], len(master.counts))
        master.k = {**dict(list(master.k.items())[-1:]), j: k}  # the last group asked for, and this one
    return k


def _job(tag: str, attempt: int) -> _Job:
    job = _JOBS.get((_address(), tag))
    if job is None or job.attempt != attempt:
        raise ModelLost(f"no partitioned models of job {tag} (attempt {attempt}) on this worker")
    return job


def _model(tag: str, attempt: int, index: int) -> _Model:
    model = _job(tag, attempt).models.get(index)
    if model is None:
        raise ModelLost(f"model {index} of job {tag} is not on this worker")
    return model


def _stopped(tag: str, attempt: int) -> bool:
    return (_address(), tag, attempt) in _DROPPED


def create(tag: str, attempt: int, start: int, indices: list[int], ranges: list[tuple[int, int]], inrange: list,
           counts: list, source, plan: tuple, *rows) -> int:
    """Give this worker the models ``indices`` and the masters of their ``ranges``, ready to train
    round ``start`` (an epoch's first): only the rows each needs, from ``source``
    (cluster.training.Source, its ``models`` those of ``indices``: ``checkpoint.ROW_BUILDS[build]``
    draws a fresh model's rows, reads a checkpoint's or a warm start's). ``inrange``: per range,
    per group of rounds, every model's held ids in it; ``counts``: per range, the vocabulary's
    counts of its rows; ``plan``: (TrainConfig, the corpus's words in the vocabulary, rounds per
    epoch, groups); ``rows``: per model, (its held ids in the first group, their holder counts,
    their counts). Returns bytes held."""
    release_memory()
    rows_of, args = ROW_BUILDS[source.build], source.args
    t, total, rounds, groups = plan
    job = _Job(attempt, {}, {}, t, total, rounds, len(round_groups(rounds, groups)))
    for m, (lo, hi), ids, c, (held, k_held, c_held), (for_held, for_range) in zip(
            indices, ranges, inrange, counts, rows, source.models or [((), ())] * len(indices)):
        n = len(held)
        job.models[m] = _Model(_Held(rows_of(*args, held, *for_held), np.zeros(n, np.uint32), np.zeros(n, np.uint32),
                                     start), held, k_held > 1, model_tables(c_held, total, k_held, t))
        job.masters[m] = _Master(lo, rows_of(*args, np.arange(lo, hi), *for_range), c, [list(group) for group in ids])
    release_memory()
    with _LOCK:
        _JOBS[(_address(), tag)] = job
        _DROPPED.discard((_address(), tag, attempt))
    return sum(m.state.model.nbytes for m in job.models.values()) + sum(m.rows.nbytes for m in job.masters.values())


def start_new(tag: str, attempt: int, index: int, which: str, new: NewRows, *after) -> int | None:
    """Set the rows of ``new`` (warm.NewRows, a warm start's new rows from their known
    neighbours) in model ``index``'s first rows (``which`` "model") or in its worker's range
    ("range"), in place: they arrive a part at a time after ``create`` (cluster/warm.py), never
    all at once beside the rows they go into. Returns how many rows were set."""
    if _stopped(tag, attempt):
        return None
    job = _job(tag, attempt)
    if which == "model":
        model = _model(tag, attempt, index)
        target, at = model.state.model, np.searchsorted(model.held, new.rows)
    else:
        master = job.masters[index]
        target, at = master.rows, new.rows - master.lo
    init_new_rows(target, replace(new, rows=at))
    return len(new.rows)


def drop(tag: str, dask_worker=None) -> int:
    """Free this worker's models and masters of job ``tag``; later tasks of it do nothing."""
    address = dask_worker.address if dask_worker is not None else _address()
    with _LOCK:
        job = _JOBS.pop((address, tag), None)
        if job is not None:
            _DROPPED.add((address, tag, job.attempt))
    return len(job.models) if job else 0


def trained_out(tag: str, attempt: int, *after) -> int | None:
    """Free this worker's models once training is over (the masters hold the whole model, which
    the outputs read); their rows' bytes."""
    if _stopped(tag, attempt):
        return None
    freed = 0
    for model in _job(tag, attempt).models.values():
        freed += model.state.model.nbytes if model.state.model is not None else 0
        model.state.model, model.tables = None, None
    release_memory()
    return freed


def train(tag: str, attempt: int, g: int, index: int, shards: list[list[Shard]], specs: list[RoundSpec],
          threads: int, *after) -> list[dict] | None:
    """Train round ``g`` of model ``index``'s shards (global ids: each round's sentences are
    mapped to the model's rows as it starts) in place; the shards' statistics."""
    if _stopped(tag, attempt):
        return None
    job = _job(tag, attempt)
    model = _model(tag, attempt, index)
    if model.state.ready != g:
        raise ModelLost(f"model {index} is at round {model.state.ready}, not {g}")
    job.merged = {}  # the previous round's merged rows: every model has installed them
    release_memory()
    model.state.ready = -1
    stats = _train_shards(model.state, shards, model.tables, specs, threads, model.held)
    model.state.trained, model.installs = g, 0
    return stats


def _send(model: _Model, lo: int, hi: int, last: bool) -> tuple:
    """A model's part for the owner of rows [lo, hi) (already cut to the synchronised prefix):
    per matrix (global ids, rows, update counts) of the rows it changed, those of a sole holder
    only in an epoch's ``last`` round."""
    a, b = np.searchsorted(model.held, lo), np.searchsorted(model.held, hi)
    out = []
    for matrix, counts in (("win", model.state.n_in), ("wout", model.state.n_out)):
        changed = counts[a:b] > 0
        if not last:
            changed &= model.shared[a:b]
        sel = a + np.flatnonzero(changed)
        out.append((model.held[sel], getattr(model.state.model, matrix)[sel], counts[sel]))
    return tuple(out)


def _trained(tag: str, attempt: int, g: int, index: int) -> _Model:
    model = _model(tag, attempt, index)
    if model.state.trained != g or model.state.ready == g + 1:
        raise ModelLost(f"model {index} is not waiting for the merges of round {g}")
    return model


def _fold(master: _Master, lo: int, hi: int, parts: list, how: str, j: int) -> tuple:
    """Fold every model's part (model order) into the masters of rows [lo, hi), held in group
    ``j``; per matrix the global ids of the merged rows that more than one model holds (their
    values stay in the masters, where ``share`` reads them)."""
    base, out = lo - master.lo, []
    k = _holders(master, j)[base:base + hi - lo]
    for c, matrix in enumerate(("win", "wout")):
        rows = getattr(master.rows, matrix)[base:base + hi - lo]
        touched = merge_deltas(rows, [(p[c][0] - lo, p[c][1], p[c][2]) for p in parts], k, how)
        out.append(np.flatnonzero(touched & (k > 1)).astype(np.int32) + lo)
    return tuple(out)


def _nbytes(rows: tuple) -> int:
    return sum(a.nbytes for matrix in rows for a in matrix)


def merge(tag: str, attempt: int, g: int, owners: list[tuple[int, int, int, list]], last: bool, how: str,
          peers: list[tuple[str, str]], *after) -> dict | None:
    """The owner's task: for each of its ``owners`` (owner, lo, hi, chunks) of round ``g``, fold
    every model's part (``peers[m]``: where model m lives) into the masters, a chunk of rows at a
    time (``layout.chunks``: what one exchange holds is bounded, whatever the range), and keep the ids
    of the merged rows for the holders (``Peer.shared``). Returns the compute seconds and the
    bytes of the parts received from other workers. ``after``: every model's train of round g,
    only waited for."""
    if _stopped(tag, attempt):
        return None
    t0, received, job = time.perf_counter(), 0, _job(tag, attempt)
    remote = [m for m in range(len(peers)) if m not in job.models]
    for owner, _, _, grid in owners:
        master = job.masters.get(owner)
        if master is None:
            raise ModelLost(f"the masters of model {owner} are not on this worker")
        merged = []
        for a, b in grid:
            answers = _ask(tag, attempt, [(peers[m], "part", (tag, attempt, g, m, a, b, last)) for m in remote],
                           _stopped)
            if answers is None or any(p is None for p in answers):
                return None  # the job stopped
            asked = dict(zip(remote, answers))
            parts = [asked[m] if m in asked else _send(_trained(tag, attempt, g, m), a, b, last)
                     for m in range(len(peers))]
            received += sum(_nbytes(p) for p in answers)
            merged.append(_fold(master, a, b, parts, how, job.group(g)))
            del parts, asked, answers
        job.merged[(g, owner)] = tuple(np.concatenate([m[c] for m in merged]) if merged else np.zeros(0, np.int32)
                                       for c in range(2))
    return {"seconds": time.perf_counter() - t0, "bytes": received}


def share(master: _Master, merged: tuple, inrange: np.ndarray, a: int, b: int) -> tuple:
    """The merged rows in [a, b) that one model holds (``merged``: per matrix the ids merged;
    ``inrange``: the model's held ids in the owner's range), read from the masters."""
    out, inrange = [], inrange[np.searchsorted(inrange, a):np.searchsorted(inrange, b)]  # both sorted
    for ids, matrix in zip(merged, ("win", "wout")):
        ids = ids[np.searchsorted(ids, a):np.searchsorted(ids, b)]
        ids = ids[np.isin(ids, inrange, assume_unique=True)]
        out.append((ids, getattr(master.rows, matrix)[ids - master.lo]))
    return tuple(out)


def _shared(tag: str, attempt: int, g: int, owner: int, index: int, a: int, b: int) -> tuple:
    job = _job(tag, attempt)
    merged = job.merged.get((g, owner))
    if merged is None:
        raise ModelLost(f"the range of model {owner} is not merged for round {g} on this worker")
    master = job.masters[owner]
    return share(master, merged, master.inrange[job.group(g)][index], a, b)


def take(master: _Master, ids: np.ndarray, k: np.ndarray, a: int, b: int) -> tuple:
    """The rows in [a, b) of the sorted ``ids`` (a model's held ids in the range in a group; ``k``:
    the range's holder counts in it): (ids, their rows of both matrices, counts, holder counts)."""
    ids = ids[np.searchsorted(ids, a):np.searchsorted(ids, b)]
    at = ids - master.lo
    return ids, master.rows.win[at], master.rows.wout[at], master.counts[at], k[at]


def _taken(tag: str, attempt: int, g: int, owner: int, index: int, a: int, b: int) -> tuple:
    job = _job(tag, attempt)
    if (g, owner) not in job.merged:
        raise ModelLost(f"the range of model {owner} is not merged for round {g} on this worker")
    master, j = job.masters[owner], job.group(g + 1)
    return take(master, master.inrange[j][index], _holders(master, j), a, b)


class Peer:
    """The Dask actor on every worker in the partitioned layout: other workers' tasks call it
    for a model's part or an owner's merged rows, straight from worker to worker (models.Peer
    says why). It holds nothing itself: the models and masters are in this module's registry."""

    def part(self, tag: str, attempt: int, g: int, index: int, lo: int, hi: int, last: bool) -> tuple | None:
        """Model ``index``'s part for the owner of rows [lo, hi). None: the job stopped."""
        if _stopped(tag, attempt):
            return None
        return _send(_trained(tag, attempt, g, index), lo, hi, last)

    def shared(self, tag: str, attempt: int, g: int, owner: int, index: int, a: int, b: int) -> tuple | None:
        """The merged rows in [a, b) of ``owner``'s range that model ``index`` holds. None: the
        job stopped."""
        if _stopped(tag, attempt):
            return None
        return _shared(tag, attempt, g, owner, index, a, b)

    def taken(self, tag: str, attempt: int, g: int, owner: int, index: int, a: int, b: int) -> tuple | None:
        """The rows in [a, b) of ``owner``'s range that model ``index`` holds in the group after
        round ``g``'s (``take``). None: the job stopped."""
        if _stopped(tag, attempt):
            return None
        return _taken(tag, attempt, g, owner, index, a, b)

    def master_rows(self, tag: str, attempt: int, owner: int, matrix: str, a: int, b: int) -> np.ndarray | None:
        """Rows [a, b) of a matrix of the masters of model ``owner``'s range. None: the job stopped."""
        if _stopped(tag, attempt):
            return None
        return master_rows(tag, attempt, owner, matrix, a, b)

    def master_pick(self, tag: str, attempt: int, owner: int, matrix: str, ids: np.ndarray) -> np.ndarray | None:
        """The rows ``ids`` of a matrix of the masters of model ``owner``'s range. None: the job stopped."""
        if _stopped(tag, attempt):
            return None
        return master_pick(tag, attempt, owner, matrix, ids)


def _install(model: _Model, rows: tuple) -> None:
    """Copy merged rows (per matrix: global ids, values) into a model."""
    for (ids, values), matrix in zip(rows, ("win", "wout")):
        getattr(model.state.model, matrix)[np.searchsorted(model.held, ids)] = values


def _restart(model: _Model, lo: int, hi: int, last: bool) -> None:
    """Restart the update counts of the model's rows in [lo, hi) that were synchronised."""
    a, b = np.searchsorted(model.held, lo), np.searchsorted(model.held, hi)
    for counts in (model.state.n_in, model.state.n_out):
        if last:
            counts[a:b] = 0
        else:
            counts[a:b][model.shared[a:b]] = 0


def install(tag: str, attempt: int, g: int, owners: list[tuple[int, int, int, list]], last: bool,
            peers: list[tuple[str, str]], following: dict | None, *after) -> int | None:
    """Each of this worker's models asks the owners (``owners``: owner, lo, hi, chunks; ``peers[o]``:
    where owner o lives) for the merged rows it holds, the same chunk of every range at once
    (``layout.chunks``), copies them in and is ready for round g + 1. ``following``: at the end
    of a group of rounds when there are several, per model the ids of the rows it holds in the
    next group, which it takes instead (``_regroup``). Returns the bytes received from other
    workers. ``after``: every merge of round g, only waited for."""
    if _stopped(tag, attempt):
        return None
    received, job = 0, _job(tag, attempt)
    grid = {o: c for o, _, _, c in owners}
    for m in sorted(job.models):
        model = _trained(tag, attempt, g, m)
        if following is not None:
            got = _regroup(job, tag, attempt, g, m, following[m], owners, peers)
            if got is None:
                return None
            received += got
            continue
        for j in range(max((len(c) for c in grid.values()), default=0)):
            calls = [(o, *grid[o][j]) for o, _, _, _ in owners if j < len(grid[o])]
            remote = [c for c in calls if c[0] not in job.masters]
            answers = _ask(tag, attempt, [(peers[o], "shared", (tag, attempt, g, o, m, a, b)) for o, a, b in remote],
                           _stopped)
            if answers is None or any(p is None for p in answers):
                return None  # the job stopped
            asked = dict(zip([c[0] for c in remote], answers))
            for o, a, b in calls:
                _install(model, asked[o] if o in asked else _shared(tag, attempt, g, o, m, a, b))
            received += sum(_nbytes(p) for p in answers)
            del asked, answers
        for _, lo, hi, _ in owners:
            _restart(model, lo, hi, last)
        model.state.ready = g + 1
    return received


def _regroup(job: _Job, tag: str, attempt: int, g: int, m: int, ids: np.ndarray, owners: list,
             peers: list) -> int | None:
    """Model ``m`` drops its rows (every one is in the masters after the group's last round)
    and takes the next group's, ``ids``, from the owners a chunk at a time, with their counts
    and holder counts, from which it builds the group's tables. Bytes received, or None: the
    job stopped."""
    old = job.models[m]
    dim = old.state.model.win.shape[1]
    old.state.model = None  # freed before the next group's rows arrive
    release_memory()
    n, received = len(ids), 0
    win, wout = np.empty((n, dim), np.float32), np.empty((n, dim), np.float32)
    counts, k = np.empty(n, np.int64), np.empty(n, np.int32)
    calls = [(o, a, b) for o, _, _, chunks in owners for a, b in chunks]
    for w in range(0, len(calls), max(len(owners), 1)):  # as many calls at once as there are ranges
        wave = calls[w:w + max(len(owners), 1)]
        remote = [c for c in wave if c[0] not in job.masters]
        answers = _ask(tag, attempt, [(peers[o], "taken", (tag, attempt, g, o, m, a, b)) for o, a, b in remote],
                       _stopped)
        if answers is None or any(p is None for p in answers):
            return None
        asked = dict(zip(remote, answers))
        for c in wave:
            got = asked[c] if c in asked else _taken(tag, attempt, g, c[0], m, c[1], c[2])
            at = np.searchsorted(ids, got[0])
            win[at], wout[at], counts[at], k[at] = got[1:]
        received += sum(a.nbytes for p in answers for a in p)
        del asked, answers
    job.models[m] = _Model(_Held(Model(win, wout), np.zeros(n, np.uint32), np.zeros(n, np.uint32), g + 1), ids,
                           k > 1, model_tables(counts, job.total, k, job.train))
    return received


def master(tag: str, attempt: int, g: int, owner: int, *after) -> int | None:
    """Once the masters of model ``owner``'s range hold round g - 1 (an epoch's last: the whole
    model's rows there): its first row. Tasks then read them (``master_rows``, ``master_pick``)
    before the next round's merges change them (partitioned._on_first)."""
    if _stopped(tag, attempt):
        return None
    return _masters(tag, attempt, owner).lo


def _masters(tag: str, attempt: int, owner: int) -> _Master:
    m = _job(tag, attempt).masters.get(owner)
    if m is None:
        raise ModelLost(f"the masters of model {owner} are not on this worker")
    return m


def has_masters(tag: str, attempt: int, owner: int) -> bool:
    """Whether this worker keeps the masters of model ``owner``'s range."""
    job = _JOBS.get((_address(), tag))
    return job is not None and job.attempt == attempt and owner in job.masters


def master_rows(tag: str, attempt: int, owner: int, matrix: str, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of one ``matrix`` (win, wout) of the masters of model ``owner``'s range (a view)."""
    m = _masters(tag, attempt, owner)
    return getattr(m.rows, matrix)[a - m.lo:b - m.lo]


def master_pick(tag: str, attempt: int, owner: int, matrix: str, ids: np.ndarray) -> np.ndarray:
    """The rows ``ids`` (global, in model ``owner``'s range) of one ``matrix`` of its masters."""
    m = _masters(tag, attempt, owner)
    return getattr(m.rows, matrix)[ids - m.lo]


def local(tag: str, attempt: int, g: int, index: int, fn, args: tuple, *after):
    """``fn(*args, model)`` on model ``index``'s local rows before round ``g`` (the probe)."""
    if _stopped(tag, attempt):
        return None
    model = _model(tag, attempt, index)
    if model.state.ready != g:
        raise ModelLost(f"model {index} is at round {model.state.ready}, not {g}")
    return fn(*args, model.state.model)
