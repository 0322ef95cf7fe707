"""The models that live on the workers: one per worker process, trained in place between merges.

The shards are grouped into M models (``plan.model_groups``); a model lives on the worker that
holds its shards, and that worker's threads train all of them on it. Per round:

1. ``train``: the model's shards train their slices of the round in place on the model, one
   after another in shard order (one thread: deterministic), or in ``threads`` threads at once
   on the same arrays (Hogwild, as word2vec and gensim do: faster, not bit-reproducible);
2. ``merge`` (one task per worker that owns row blocks of the round): for each of its blocks in
   turn, the owner asks every other model for the rows it or the owner changed
   (``merge.changed``; ``Peer.part`` on the model's worker) and averages them
   (``merge.merge_rows``) into its models;
3. ``install`` (one task per worker): fetch the blocks other workers merged (``Peer.merged``),
   a few at a time, and copy their changed rows into its models in block order.

The rows cross between workers through ``Peer``, a Dask actor on every worker: a call goes
straight to the worker that holds the rows, so a round costs the scheduler a few tasks per
worker, not a task per block and worker.

Rows past the round's prefix (``plan.sync_rows``) keep training locally and their counts keep
growing until a later round synchronises them; the last round of each epoch synchronises every
row, so all models are equal at epoch boundaries (checkpoints, outputs).

After the last round, ``save`` hands the final model to a function (the outputs, on one worker)
and ``serve`` hands a task the final model's unit rows (the top-k table's blocks, on every
worker): each worker computes them once, beside its models, and frees them with them.

A worker therefore holds one model whatever its thread count, its shards and, in flight, the
rows of one block's merge. The price is that a model is state, not a Dask result that lineage can
recompute. Every operation checks the model's position (attempt, round, which blocks were
refreshed) and raises ``ModelLost`` when it does not match: when the worker died and a task
was moved or recomputed elsewhere, or when Dask recomputes a task whose model has moved on. The
coordinator then restarts from the last checkpoint (training.train_epochs), which reproduces
the same vectors when every worker trains with one thread.

The registry is per worker process and per job (``tag``); ``drop`` frees a job's models.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from distributed import get_worker
from distributed.protocol import to_serialize
from distributed.utils import sync

from ..encode import Shard
from ..memory import release_memory
from ..merge import Part, changed, merge_rows
from ..model import Model, Tables
from ..shard import RoundSpec, train_round
from ..nearest import unit_rows

_LOCK = threading.Lock()
_JOBS: dict[tuple[str, str], _Job] = {}  # (worker address, job tag) -> this worker's models of the job
_DROPPED: set[tuple[str, str, int]] = set()  # (worker address, job tag, attempt) of models freed here
_UNIT_LOCK = threading.Lock()  # one computation of a job's unit rows per worker, whatever its threads


class ModelLost(RuntimeError):
    """A model is missing or not where the task expects it (its worker died or a task ran out
    of order): training must restart from a saved model."""


@dataclass
class _Held:
    model: Model
    n_in: np.ndarray  # uint32 (V,): updates of each win row since the row was last synchronised
    n_out: np.ndarray
    ready: int  # the round it trains next (epoch * rounds + round)
    trained: int = -1  # the round it last trained
    refreshed: set = field(default_factory=set)  # row blocks merged or installed since then


@dataclass
class _Job:
    attempt: int
    held: dict[int, _Held]  # model index -> model
    merged: dict = field(default_factory=dict)  # (round, block) -> Merged: blocks this worker merged
    unit: np.ndarray | None = None  # the final model's rows scaled to length 1, once a task asked


def _address() -> str:
    try:
        return get_worker().address
    except ValueError:  # not in a worker (tests call the functions directly)
        return ""


def _job(tag: str, attempt: int) -> _Job:
    job = _JOBS.get((_address(), tag))
    if job is None or job.attempt != attempt:
        raise ModelLost(f"no models of job {tag} (attempt {attempt}) on this worker")
    return job


def _held(tag: str, attempt: int, index: int) -> _Held:
    held = _job(tag, attempt).held.get(index)
    if held is None:
        raise ModelLost(f"model {index} of job {tag} is not on this worker")
    return held


def create(tag: str, attempt: int, start: int, models: list[int], build, *args) -> int:
    """Give this worker the models ``models`` (one, unless a lost worker's model moved here), all
    equal to ``build(*args)``, ready to train round ``start``. Replaces this job's models of an
    earlier attempt. Returns bytes."""
    release_memory()  # what preprocessing freed, before the model takes its place
    model = build(*args)
    rows = len(model.win)
    held = {m: _Held(model if i == 0 else Model(model.win.copy(), model.wout.copy()),
                            np.zeros(rows, np.uint32), np.zeros(rows, np.uint32), start)
                for i, m in enumerate(models)}
    with _LOCK:
        _JOBS[(_address(), tag)] = _Job(attempt, held)
        _DROPPED.discard((_address(), tag, attempt))
    return model.nbytes * len(models)


def drop(tag: str, dask_worker=None) -> int:
    """Free this worker's models of job ``tag`` (``client.run``); returns how many there were.
    The job's tasks that run here later do nothing and return None (``_stopped``): a job that
    stopped (a lost worker, an error, an interrupt) leaves no failing tasks behind."""
    address = dask_worker.address if dask_worker is not None else _address()
    with _LOCK:
        job = _JOBS.pop((address, tag), None)
        if job is not None:
            _DROPPED.add((address, tag, job.attempt))
    return len(job.held) if job else 0


def _stopped(tag: str, attempt: int) -> bool:
    return (_address(), tag, attempt) in _DROPPED


def _train_shards(held: _Held, shards: list[list[Shard]], tables: Tables, specs: list[RoundSpec],
                  threads: int, rows: np.ndarray | None = None) -> list[dict]:
    """Train every shard's round slice on the model; returns each shard's statistics. ``rows``:
    the global ids of the model's rows, when it holds only those (parts.py)."""
    if threads <= 1 or len(shards) <= 1:
        return [train_round(held.model, pieces, tables, spec, held.n_in, held.n_out, held=rows)[2]
                for pieces, spec in zip(shards, specs)]

    # Hogwild: the threads update the shared rows without locks (the kernels release the GIL).
    # Each counts its updates apart, so the counts are exact whatever the interleaving.
    def one(i: int):
        return train_round(held.model, shards[i], tables, specs[i], held=rows)

    with ThreadPoolExecutor(min(threads, len(shards)), thread_name_prefix="nsdist-hogwild") as pool:
        results = list(pool.map(one, range(len(shards))))
    for n_in, n_out, _ in results:
        held.n_in += n_in
        held.n_out += n_out
    return [stats for _, _, stats in results]


def train(tag: str, attempt: int, g: int, index: int, shards: list[list[Shard]], tables: Tables,
          specs: list[RoundSpec], threads: int, *after) -> list[dict] | None:
    """Train round ``g`` of model ``index``'s shards (each a list of pieces) in place on it;
    returns the shards' statistics. ``after``: the previous round's end, only waited for."""
    if _stopped(tag, attempt):
        return None
    job = _job(tag, attempt)
    held = _held(tag, attempt, index)
    if held.ready != g:
        raise ModelLost(f"model {index} is at round {held.ready}, not {g}")
    job.merged = {}  # the previous round's merged blocks: every worker has installed them
    release_memory()  # the rows received in the last round
    held.ready = -1  # in training: a second train of any round fails
    stats = _train_shards(held, shards, tables, specs, threads)
    held.trained, held.refreshed = g, set()
    return stats


def _refresh(tag: str, attempt: int, g: int, block: int) -> list[_Held]:
    """This worker's models, all trained in round g and not yet refreshed for ``block``."""
    held = list(_job(tag, attempt).held.values())
    for r in held:
        if r.trained != g or block in r.refreshed:
            raise ModelLost(f"a model is not waiting for block {block} of round {g}")
    return held


def _done(held: list[_Held], g: int, block: int, blocks: int, lo: int, hi: int) -> None:
    for r in held:
        r.n_in[lo:hi] = 0  # synchronised: counting starts again
        r.n_out[lo:hi] = 0
        r.refreshed.add(block)
        if len(r.refreshed) == blocks:
            r.ready = g + 1


def _mask(held: list[_Held], lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of [lo, hi) these models updated since they were last synchronised,
    bit-packed (win, wout): the other models send the owner these rows along with their own."""
    return tuple(np.packbits(np.any([getattr(r, n)[lo:hi] > 0 for r in held], axis=0)) for n in ("n_in", "n_out"))


def _part(held: _Held, lo: int, hi: int) -> Part:
    """Views of the model's rows [lo, hi) and of their update counts."""
    m = held.model
    return Part(m.win[lo:hi], m.wout[lo:hi], held.n_in[lo:hi], held.n_out[lo:hi], [])


class Peer:
    """The Dask actor on every worker (``client.submit(Peer, actor=True)``): other workers'
    tasks call it for rows of this worker's models, straight from worker to worker. It holds
    nothing itself: the models are in this module's registry."""

    def part(self, tag: str, attempt: int, g: int, index: int, block: int, lo: int, hi: int,
             masks: tuple[np.ndarray, np.ndarray]) -> Part | None:
        """Model ``index``'s part of ``block`` for its owner: only the rows it needs
        (``merge.changed``; ``masks``: the owner's changed rows). None: the job stopped."""
        if _stopped(tag, attempt):
            return None
        held = _held(tag, attempt, index)
        if held.trained != g or block in held.refreshed:
            raise ModelLost(f"model {index} is not waiting for block {block} of round {g}")
        return changed(_part(held, lo, hi), *masks)

    def merged(self, tag: str, attempt: int, g: int, block: int) -> Merged | None:
        """The merged rows of ``block`` of round ``g``, which this worker owns. None: the job
        stopped."""
        if _stopped(tag, attempt):
            return None
        merged = _job(tag, attempt).merged.get((g, block))
        if merged is None:
            raise ModelLost(f"block {block} of round {g} is not merged on this worker")
        return merged


async def _call(worker, peer: tuple[str, str], method: str, args: tuple):
    """``Peer.method(*args)`` on the worker at ``peer`` (address, actor key), through this
    worker's connections; the exception it raised is raised here."""
    # Worker.actor_execute is Dask's internal handler behind its Actor handles. The handle API is
    # not used: a handle's call waits for the actor's future, forever once its worker is gone,
    # and cannot be waited on a round's many calls at once. Relying on the handler is safe only
    # because dask and distributed are pinned to one release (pyproject.toml);
    # tests/test_models.py::test_the_peer_call_is_dasks_actor_execute fails if its shape changes.
    try:
        answer = await worker.rpc(peer[0]).actor_execute(actor=peer[1], function=method,
                                                         args=[to_serialize(a) for a in args], kwargs={})
    except OSError as e:  # its worker left
        raise ModelLost(f"worker {peer[0]} did not answer ({type(e).__name__}: {e})") from None
    except KeyError:  # no such actor there: a worker that took the address of one that left
        raise ModelLost(f"worker {peer[0]} holds no actor {peer[1]}") from None
    if answer["status"] != "OK":
        raise answer["exception"]
    return answer["result"]


async def _calls(worker, tag: str, attempt: int, calls: list, stopped) -> list | None:
    """Every call at once; None as soon as the job stops while they wait (a worker that left
    is seen by the coordinator, which stops the job)."""
    pending = [asyncio.ensure_future(_call(worker, *c)) for c in calls]
    while True:
        done, waiting = await asyncio.wait(pending, timeout=1.0, return_when=asyncio.FIRST_EXCEPTION)
        if not waiting or any(t.exception() is not None for t in done):
            for t in waiting:
                t.cancel()
            return [t.result() for t in pending]  # the first error, if any
        if stopped(tag, attempt):
            for t in waiting:
                t.cancel()
            return None


def _ask(tag: str, attempt: int, calls: list[tuple[tuple[str, str], str, tuple]], stopped=None) -> list | None:
    """The answers of ``calls`` (peer, method, args) to other workers' ``Peer`` actors, asked
    straight from this worker, all at once. They bypass Dask's ``Actor`` handle, whose call waits
    for the actor's future forever when its worker is gone. None: the job stopped (``stopped``:
    whether it did, given tag and attempt; this module's models by default)."""
    if not calls:
        return []
    worker = get_worker()
    return sync(worker.loop, _calls, worker, tag, attempt, calls, stopped or _stopped)


@dataclass(frozen=True)
class Merged:
    """The rows of a block that the merge changed (``ids_*`` None: all of them; views into the
    owner's model)."""

    win: np.ndarray
    wout: np.ndarray
    ids_in: np.ndarray | None
    ids_out: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.win, self.wout, self.ids_in, self.ids_out) if a is not None)


def _rows(matrix: np.ndarray, touched: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if touched.all():
        return matrix, None
    ids = np.flatnonzero(touched).astype(np.int32)
    return matrix[ids], ids


def merge(tag: str, attempt: int, g: int, blocks: list[tuple[int, int, int]], n_blocks: int, how: str,
          peers: list[tuple[str, str]], *after) -> dict | None:
    """The owner's task: merge its ``blocks`` (block, lo, hi) of round ``g`` one after another,
    each from every model's part (in model order; ``peers[m]``: where model m lives), into this
    worker's models, and keep the merged rows for the other workers (``Peer.merged``). Returns
    the compute seconds and the bytes received from other workers. ``after``: every model's
    train of round g, only waited for."""
    if _stopped(tag, attempt):
        return None
    t0, received = time.perf_counter(), 0
    job = _job(tag, attempt)
    local = set(job.held)
    for block, lo, hi in blocks:
        held = _refresh(tag, attempt, g, block)
        release_memory()  # the parts of this owner's previous block
        masks = _mask(held, lo, hi)
        remote = [m for m in range(len(peers)) if m not in local]
        answers = _ask(tag, attempt, [(peers[m], "part", (tag, attempt, g, m, block, lo, hi, masks)) for m in remote])
        if answers is None or any(p is None for p in answers):
            return None  # the job stopped
        asked = dict(zip(remote, answers))
        parts = [_part(job.held[m], lo, hi) if m in local else asked[m] for m in range(len(peers))]
        received += sum(p.nbytes for m, p in enumerate(parts) if m not in local)
        job.merged[(g, block)] = _merge_block(held, parts, lo, hi, how)
        _done(held, g, block, n_blocks, lo, hi)
    return {"seconds": time.perf_counter() - t0, "bytes": received}


def _merge_block(held: list[_Held], parts: list[Part], lo: int, hi: int, how: str) -> Merged:
    """Merge ``parts`` (model order) into rows [lo, hi) of every model in ``held``; the rows the
    merge changed, as the other workers copy them."""
    touched = {}
    for matrix, counts, ids in (("win", "n_in", "ids_in"), ("wout", "n_out", "ids_out")):
        touched[matrix] = merge_rows([getattr(r.model, matrix)[lo:hi] for r in held],
                                     [getattr(p, matrix) for p in parts], [getattr(p, counts) for p in parts], how,
                                     [getattr(p, ids) for p in parts])
    first = held[0].model
    (win, ids_in), (wout, ids_out) = _rows(first.win[lo:hi], touched["win"]), _rows(first.wout[lo:hi], touched["wout"])
    return Merged(win, wout, ids_in, ids_out)


def install(tag: str, attempt: int, g: int, blocks: list[tuple[int, int, int, int]], n_blocks: int,
            peers: list[tuple[str, str]], *after) -> int | None:
    """Copy the merged row blocks that other workers own into this worker's models, in block
    order (``blocks``: block, lo, hi, its owner's index in ``peers``); returns the bytes
    received. The blocks are asked for W - 1 at a time (W workers): no more than the W - 1 parts
    of a block that an owner receives at once (``plan.merge_blocks``). ``after``: every merge of
    round g, only waited for."""
    if _stopped(tag, attempt):
        return None
    received, window = 0, max(1, len(peers) - 1)
    for first in range(0, len(blocks), window):
        asked = _ask(tag, attempt, [(peers[owner], "merged", (tag, attempt, g, block))
                                    for block, _, _, owner in blocks[first:first + window]])
        if asked is None or any(m is None for m in asked):
            return None  # the job stopped
        for (block, lo, hi, _), merged in zip(blocks[first:first + window], asked):
            _install_block(_refresh(tag, attempt, g, block), merged, g, block, n_blocks, lo, hi)
            received += merged.nbytes
        del asked, merged
    return received


def _install_block(held: list[_Held], merged: Merged, g: int, block: int, n_blocks: int, lo: int, hi: int) -> None:
    """Copy a merged row block into the models ``held``."""
    for r in held:
        for matrix, ids in (("win", merged.ids_in), ("wout", merged.ids_out)):
            rows = getattr(r.model, matrix)[lo:hi]
            if ids is None:
                rows[:] = getattr(merged, matrix)
            else:
                rows[ids] = getattr(merged, matrix)
    _done(held, g, block, n_blocks, lo, hi)


def barrier(*after) -> float:
    """When the tasks ``after`` all ended, as a Unix time."""
    return time.time()


def ended(stats: list, merges: list, installs: list) -> dict | None:
    """The round's record once it ended (``stats``: every model's train; ``merges``, ``installs``:
    every worker's): when (a Unix time), the shards' statistics, the merges' compute seconds and
    the bytes that crossed between workers."""
    if any(x is None for x in (*stats, *merges, *installs)):
        return None  # the job stopped
    return {"end": time.time(), "stats": [s for shard in stats for s in shard],
            "seconds": sum(m["seconds"] for m in merges),
            "bytes": sum(m["bytes"] for m in merges) + sum(installs)}


def _current(tag: str, attempt: int, g: int) -> Model:
    """The global model after round ``g - 1`` (an epoch's last round: every row synchronised):
    any model of this worker, once refreshed."""
    held = next(iter(_job(tag, attempt).held.values()))
    if held.ready != g:
        raise ModelLost(f"the models are at round {held.ready}, not {g}")
    return held.model


def save(tag: str, attempt: int, g: int, write, args: tuple, *after) -> object:
    """``write(*args, model)`` with the global model before round ``g`` (a checkpoint, the
    outputs). ``after``: the futures of round g - 1's merges and installs, only waited for."""
    if _stopped(tag, attempt):
        return None
    return write(*args, _current(tag, attempt, g))


def _unit(tag: str, attempt: int, g: int) -> np.ndarray:
    """The final model's input rows scaled to length 1 (``topk.unit_rows``): computed by the
    first task that asks, shared by the others, freed with the models (``drop``)."""
    job = _job(tag, attempt)
    with _UNIT_LOCK:
        if job.unit is None:
            job.unit = unit_rows(_current(tag, attempt, g).win)
        return job.unit


def serve(tag: str, attempt: int, g: int, task, args: tuple, item, *after) -> object:
    """``task(*args, item, unit)`` with this worker's unit rows of the global model before round
    ``g`` (the final model: every worker holds the same rows). ``after``: the futures of round
    g - 1's merges and installs, only waited for."""
    if _stopped(tag, attempt):
        return None
    return task(*args, item, _unit(tag, attempt, g))
