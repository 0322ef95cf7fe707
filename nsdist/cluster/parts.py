"""Worker state of the partitioned layout (layout.py): each model holds only its shards' rows,
and each worker keeps the masters of one range of rows.

Per round, as ``reference.train_partitioned`` states it:

1. ``train``: a model trains its shards (local ids) in place, as in the replicated layout;
2. ``send`` (on the model's worker, one per owner): the rows of the owner's range in the
   synchronised prefix that the model changed since they were last synchronised, with global
   ids and update counts; rows no other model holds stay home until the epoch's last round;
3. ``merge`` (on the owner): ``merge.merge_deltas`` folds the parts, in model order, into the
   masters; ``share`` then cuts, for each model, the merged rows it holds and another model
   holds too (``inrange``: the model's rows in the owner's range, sent once per job);
4. ``install`` (on the model's worker): copy those rows in, and restart the update counts of
   the synchronised rows.

After an epoch's last round the masters hold the whole model (``master``). Every operation
checks the model's position and raises ``ModelLost`` when it does not match, as models.py does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..encode import Shard
from ..layout import local_model, synced
from ..memory import release_memory
from ..merge import merge_deltas
from ..model import Model, Tables, init_model, init_rows
from ..shard import RoundSpec
from .models import ModelLost, _address, _train_shards, _Held

_LOCK = threading.Lock()
_JOBS: dict[tuple[str, str], _Job] = {}  # (worker address, job tag) -> this worker's models and masters
_DROPPED: set[tuple[str, str, int]] = set()


@dataclass
class _Model:
    state: _Held  # the local model, its update counts and position (models._Held)
    held: np.ndarray  # int32: the global id of each local row, sorted
    shared: np.ndarray  # bool: whether another model holds the row too
    installs: int = 0  # owners' installs received in the round being synchronised


@dataclass
class _Master:
    lo: int
    rows: Model  # the synchronised rows [lo, lo + len)
    k: np.ndarray  # how many models hold each of them


@dataclass
class _Job:
    attempt: int
    models: dict  # model index -> _Model
    masters: dict  # model index -> _Master: the range its worker owns


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


def create(tag: str, attempt: int, start: int, indices: list[int], ranges: list[tuple[int, int]], build, args: tuple,
           *rows) -> int:
    """Give this worker the models ``indices`` and the masters of their ``ranges``, from
    ``build(*args)`` (a fresh model: only the rows needed are drawn; a checkpoint or a warm
    start: read whole, then cut), ready to train round ``start``. ``rows``: per model, (its held
    ids, their holder counts, the holder counts of its range). Returns bytes held."""
    release_memory()
    whole = None if build is init_model else build(*args)

    def cut(ids: np.ndarray) -> Model:
        return init_rows(*args, ids) if whole is None else local_model(whole, ids)

    job = _Job(attempt, {}, {})
    for m, (lo, hi), (held, k_held, k_range) in zip(indices, ranges, rows):
        n = len(held)
        job.models[m] = _Model(_Held(cut(held), np.zeros(n, np.uint32), np.zeros(n, np.uint32), start), held, k_held > 1)
        job.masters[m] = _Master(lo, cut(np.arange(lo, hi)), k_range)
    del whole
    release_memory()
    with _LOCK:
        _JOBS[(_address(), tag)] = job
        _DROPPED.discard((_address(), tag, attempt))
    return sum(m.state.model.nbytes for m in job.models.values()) + sum(m.rows.nbytes for m in job.masters.values())


def drop(tag: str, dask_worker=None) -> int:
    """Free this worker's models and masters of job ``tag``; later tasks of it do nothing."""
    address = dask_worker.address if dask_worker is not None else _address()
    with _LOCK:
        job = _JOBS.pop((address, tag), None)
        if job is not None:
            _DROPPED.add((address, tag, job.attempt))
    return len(job.models) if job else 0


def train(tag: str, attempt: int, g: int, index: int, shards: list[list[Shard]], tables: Tables,
          specs: list[RoundSpec], threads: int, *after) -> list[dict] | None:
    """Train round ``g`` of model ``index``'s shards in place; the shards' statistics."""
    if _stopped(tag, attempt):
        return None
    model = _model(tag, attempt, index)
    if model.state.ready != g:
        raise ModelLost(f"model {index} is at round {model.state.ready}, not {g}")
    release_memory()
    model.state.ready = -1
    stats = _train_shards(model.state, shards, tables, specs, threads)
    model.state.trained, model.installs = g, 0
    return stats


def send(tag: str, attempt: int, g: int, index: int, lo: int, hi: int, last: bool, *after):
    """Model ``index``'s part for the owner of rows [lo, hi) (already cut to the synchronised
    prefix): per matrix (global ids, rows, update counts) of the rows it changed, those of a
    sole holder only in an epoch's ``last`` round."""
    if _stopped(tag, attempt):
        return None
    model = _model(tag, attempt, index)
    if model.state.trained != g:
        raise ModelLost(f"model {index} has not trained round {g}")
    a, b = np.searchsorted(model.held, lo), np.searchsorted(model.held, hi)
    out = []
    for matrix, counts in (("win", model.state.n_in), ("wout", model.state.n_out)):
        changed = counts[a:b] > 0
        if not last:
            changed &= model.shared[a:b]
        sel = a + np.flatnonzero(changed)
        out.append((model.held[sel], getattr(model.state.model, matrix)[sel], counts[sel]))
    return tuple(out)


def merge(tag: str, attempt: int, g: int, owner: int, lo: int, hi: int, how: str, *parts) -> tuple | None:
    """The owner's merge of rows [lo, hi): fold every model's part into the masters; returns
    per matrix the merged rows that more than one model holds (global ids, rows), and the bytes
    of the parts received from other processes."""
    if _stopped(tag, attempt) or any(p is None for p in parts):
        return None
    master = _job(tag, attempt).masters.get(owner)
    if master is None:
        raise ModelLost(f"the masters of model {owner} are not on this worker")
    base, out = lo - master.lo, []
    k = master.k[base:base + hi - lo]
    for c, matrix in enumerate(("win", "wout")):
        rows = getattr(master.rows, matrix)[base:base + hi - lo]
        touched = merge_deltas(rows, [(p[c][0] - lo, p[c][1], p[c][2]) for p in parts], k, how)
        ids = np.flatnonzero(touched & (k > 1))
        out.append((ids.astype(np.int32) + lo, rows[ids]))
    return tuple(out)


def share(merged: tuple | None, inrange: np.ndarray) -> tuple | None:
    """The merged rows one model holds (``inrange``: its held ids in the owner's range)."""
    if merged is None:
        return None
    out = []
    for ids, rows in merged:
        mine = np.isin(ids, inrange, assume_unique=True)
        out.append((ids[mine], rows[mine]))
    return tuple(out)


def install(tag: str, attempt: int, g: int, index: int, lo: int, hi: int, last: bool, owners: int,
            rows: tuple | None, remote: bool) -> int | None:
    """Copy the merged rows into model ``index`` and restart the update counts of its rows in
    [lo, hi) that were synchronised; after ``owners`` installs it is ready for round g + 1.
    Returns the bytes received (``remote``: from another worker process; else 0)."""
    if _stopped(tag, attempt) or rows is None:
        return None
    model = _model(tag, attempt, index)
    if model.state.trained != g:
        raise ModelLost(f"model {index} is not waiting for the merges of round {g}")
    for (ids, values), matrix in zip(rows, ("win", "wout")):
        getattr(model.state.model, matrix)[np.searchsorted(model.held, ids)] = values
    a, b = np.searchsorted(model.held, lo), np.searchsorted(model.held, hi)
    for counts in (model.state.n_in, model.state.n_out):
        if last:
            counts[a:b] = 0
        else:
            counts[a:b][model.shared[a:b]] = 0
    model.installs += 1
    if model.installs == owners:
        model.state.ready = g + 1
    return sum(ids.nbytes + values.nbytes for ids, values in rows) if remote else 0


def master(tag: str, attempt: int, g: int, owner: int, *after) -> tuple[int, Model] | None:
    """The masters of model ``owner``'s range after round g - 1 (an epoch's last: the whole
    model's rows there): (first row, rows)."""
    if _stopped(tag, attempt):
        return None
    m = _job(tag, attempt).masters.get(owner)
    if m is None:
        raise ModelLost(f"the masters of model {owner} are not on this worker")
    return m.lo, m.rows  # read before the next round's merges change them (partitioned._on_first)


def local(tag: str, attempt: int, g: int, index: int, fn, args: tuple, *after):
    """``fn(*args, model)`` on model ``index``'s local rows before round ``g`` (the probe)."""
    if _stopped(tag, attempt):
        return None
    model = _model(tag, attempt, index)
    if model.state.ready != g:
        raise ModelLost(f"model {index} is at round {model.state.ready}, not {g}")
    return fn(*args, model.state.model)
