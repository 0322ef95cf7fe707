"""Model replicas that live on the workers and are trained in place between merges.

Each shard trains its own replica of the global model, held by the worker that holds the
shard. A round is:

1. ``train``: the shard trains its slice in place on its replica; the result is one ``Part`` per
   row block: views of the replica's rows of that block and the round's update counts (no copy);
2. ``merge`` (one task per row block, on the worker that owns the block): the block's new rows
   from every shard's part (``merge.merge_rows``), written into that worker's replicas;
3. ``install`` (every other worker holding shards): copy the merged rows into its replicas.

So a worker holds one model per shard and its shards plus, in flight, one row block of another
worker (half a model with 2 workers). Real text, 15M tokens, 2 workers: peak growth 1.3-1.4x the
model plus the worker's shards, against 2.8-3.8x when every task trained a private copy of an
immutable model and returned sparse deltas (benchmarks/README.md). Rows go over the network
once each way per round: a reduce-scatter, then an all-gather.

The price is that a replica is state, not a Dask result that lineage can recompute. Every
operation checks the replica's position (attempt, round, which blocks were refreshed) and raises
``ReplicaLost`` when it does not match: when the worker died and a task was moved or recomputed
elsewhere, or when Dask recomputes a task whose replica has moved on. The coordinator then
restarts from the last checkpoint (pipeline.train_epochs), which reproduces the same vectors.

The registry is per worker process and per job (``tag``); ``drop`` frees a job's replicas.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from distributed import get_worker

from .encode import Shard
from .memory import release_memory
from .merge import Part, merge_rows
from .model import Model, Tables
from .shard import RoundSpec, train_round

_LOCK = threading.Lock()
_JOBS: dict[tuple[str, str], _Job] = {}  # (worker address, job tag) -> this worker's replicas of the job


class ReplicaLost(RuntimeError):
    """A replica is missing or not where the task expects it (its worker died or a task ran out
    of order): training must restart from a saved model."""


@dataclass
class _Replica:
    model: Model
    ready: int  # the round it trains next (epoch * rounds + round)
    trained: int = -1  # the round it last trained
    refreshed: set = field(default_factory=set)  # row blocks merged or installed since then


@dataclass
class _Job:
    attempt: int
    replicas: dict[int, _Replica]  # shard -> replica


def _address() -> str:
    try:
        return get_worker().address
    except ValueError:  # not in a worker (tests call the functions directly)
        return ""


def _job(tag: str, attempt: int) -> _Job:
    job = _JOBS.get((_address(), tag))
    if job is None or job.attempt != attempt:
        raise ReplicaLost(f"no replicas of job {tag} (attempt {attempt}) on this worker")
    return job


def _replica(tag: str, attempt: int, shard: int) -> _Replica:
    replica = _job(tag, attempt).replicas.get(shard)
    if replica is None:
        raise ReplicaLost(f"shard {shard}'s replica of job {tag} is not on this worker")
    return replica


def create(tag: str, attempt: int, start: int, shards: list[int], build, *args) -> int:
    """Give this worker one replica per shard in ``shards``, all equal to ``build(*args)``, ready
    to train round ``start``. Replaces this job's replicas of an earlier attempt. Returns bytes."""
    release_memory()  # what preprocessing freed, before the replicas take their place
    model = build(*args)
    replicas = {s: _Replica(model if i == 0 else Model(model.win.copy(), model.wout.copy()), start)
                for i, s in enumerate(shards)}
    with _LOCK:
        _JOBS[(_address(), tag)] = _Job(attempt, replicas)
    return model.nbytes * len(shards)


def drop(tag: str, dask_worker=None) -> int:
    """Free this worker's replicas of job ``tag`` (``client.run``); returns how many there were."""
    address = dask_worker.address if dask_worker is not None else _address()
    with _LOCK:
        job = _JOBS.pop((address, tag), None)
    return len(job.replicas) if job else 0


def train(tag: str, attempt: int, g: int, blocks: list[tuple[int, int]], pieces: list[Shard], tables: Tables,
          spec: RoundSpec, *after) -> tuple[Part, ...]:
    """Train round ``g`` of a shard (its ``pieces``) in place on its replica; one ``Part`` per row
    block (views of the replica's rows, valid until the block is merged). ``after``: the futures
    of the previous round's merges and installs, only waited for. The shard's statistics ride on
    part 0."""
    replica = _replica(tag, attempt, spec.shard)
    if replica.ready != g:
        raise ReplicaLost(f"shard {spec.shard}'s replica is at round {replica.ready}, not {g}")
    release_memory()  # the rows received in the last round
    replica.ready = -1  # in training: a second train of any round fails
    n_in, n_out, stats = train_round(replica.model, pieces, tables, spec)
    replica.trained, replica.refreshed = g, set()
    win, wout = replica.model.win, replica.model.wout
    return tuple(Part(win[lo:hi], wout[lo:hi], n_in[lo:hi], n_out[lo:hi], stats if b == 0 else {})
                 for b, (lo, hi) in enumerate(blocks))


def _refresh(tag: str, attempt: int, g: int, block: int) -> list[_Replica]:
    """This worker's replicas, all trained in round g and not yet refreshed for ``block``."""
    replicas = list(_job(tag, attempt).replicas.values())
    for r in replicas:
        if r.trained != g or block in r.refreshed:
            raise ReplicaLost(f"a replica is not waiting for block {block} of round {g}")
    return replicas


def _done(replicas: list[_Replica], g: int, block: int, blocks: int) -> None:
    for r in replicas:
        r.refreshed.add(block)
        if len(r.refreshed) == blocks:
            r.ready = g + 1


@dataclass(frozen=True)
class Merged:
    """A row block of the new global model (views into the owner's replica) and the merge's
    record: seconds, bytes of parts received, and (block 0) the shards' statistics."""

    win: np.ndarray
    wout: np.ndarray
    info: dict


def merge(tag: str, attempt: int, g: int, block: int, blocks: int, lo: int, hi: int, how: str,
          *parts: Part) -> Merged:
    """The owner's task for one row block: merge every shard's part (in shard order) and write
    the result into this worker's replicas."""
    t0 = time.perf_counter()
    replicas = _refresh(tag, attempt, g, block)
    for matrix in ("win", "wout"):
        counts = "n_in" if matrix == "win" else "n_out"
        merge_rows([getattr(r.model, matrix)[lo:hi] for r in replicas],
                   [getattr(p, matrix) for p in parts], [getattr(p, counts) for p in parts], how)
    _done(replicas, g, block, blocks)
    received = sum(p.nbytes for p in parts if not any(np.may_share_memory(p.win, r.model.win) for r in replicas))
    first = replicas[0].model
    info = {"seconds": time.perf_counter() - t0, "bytes": received,
            "stats": [p.stats for p in parts] if block == 0 else []}
    return Merged(first.win[lo:hi], first.wout[lo:hi], info)


def install(tag: str, attempt: int, g: int, block: int, blocks: int, lo: int, hi: int, merged: Merged,
            *after) -> int:
    """Copy a merged row block into this worker's replicas; returns the bytes received.
    ``after``: this worker's own merges of the round, only waited for."""
    replicas = _refresh(tag, attempt, g, block)
    for r in replicas:
        r.model.win[lo:hi] = merged.win
        r.model.wout[lo:hi] = merged.wout
    _done(replicas, g, block, blocks)
    return merged.win.nbytes + merged.wout.nbytes


def info(merged: Merged) -> dict:
    return merged.info


def _current(tag: str, attempt: int, g: int) -> Model:
    """The global model after round ``g - 1``: any replica of this worker, once refreshed."""
    replica = next(iter(_job(tag, attempt).replicas.values()))
    if replica.ready != g:
        raise ReplicaLost(f"the replicas are at round {replica.ready}, not {g}")
    return replica.model


def save(tag: str, attempt: int, g: int, write, args: tuple, *after) -> object:
    """``write(*args, model)`` with the global model before round ``g`` (a checkpoint, the
    outputs). ``after``: the futures of round g - 1's merges and installs, only waited for."""
    return write(*args, _current(tag, attempt, g))
