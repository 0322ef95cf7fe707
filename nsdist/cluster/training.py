"""Training on models that live on the workers: rounds, merges, checkpoints, recovery.

``train_epochs`` runs epochs on one model per worker (models.py): every round each model trains
its shards in place, then the round's synchronised rows are merged block by block, each block
by the worker that owns it, and copied to the others. A round is a few tasks per worker: the
rows themselves cross from worker to worker through the ``models.Peer`` actors. A lost worker
restarts training from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import distributed
import numpy as np
from distributed import Client, KilledWorker
from distributed.client import FutureCancelledError

from .. import checkpoint, probe, progress
from ..config import JobConfig
from ..errors import TransientError
from ..model import diverged
from ..plan import merge_blocks, model_groups, row_blocks, schedule, sync_rows
from ..shard import round_spec
from . import models
from .client import Stranded, gather_watching, threads, wait_alive
from .models import ModelLost

log = logging.getLogger("nsdist")

MAX_RECOVERIES = 3  # restarts from a saved model after losing workers, per job
# Up to this many workers, a round's tasks wait for the previous step's tasks themselves (at most
# W^2 = 64 dependencies a step); past it, for one barrier task, as W^2 grows the scheduler's work
# per round. A barrier costs a round one more hop through the scheduler (a few ms on 2 cores).
DIRECT_WORKERS = 8
# A lost worker shows as one of these: our own check, Dask giving up on a task, or Dask
# forgetting a task whose worker died (its future is then cancelled).
LOST = (ModelLost, KilledWorker, FutureCancelledError)


class Source(NamedTuple):
    """How each worker builds the model training starts from: ``build(*args)``, the whole model
    (the replicated layout), or its rows alone, ``checkpoint.ROW_BUILDS[build](*args, ids, *more)``
    (the partitioned layout: a model's first group's rows, and its owner's range). ``models``: per
    model, the futures of those ``more`` arguments, for its rows and for its range's (a warm start
    by rows, cluster/warm.py); None: none. ``later``: per model, futures of rows set after the
    build a part at a time (``parts.start_new``: a warm start's new rows), for its rows and for
    its range's; None: none. ``after``: futures the partitioned build waits for (a warm start's:
    every worker's new rows cut into parts, so that no worker builds its models beside the bins
    the parts were cut from)."""

    build: Callable
    args: tuple
    models: list | None = None
    later: list | None = None
    after: list | None = None


class Once:
    """A ``Source`` given away once, then built again: the first attempt takes ``first`` (the
    client then holds none of its futures, so Dask frees what it read once the models are
    built), an attempt after a lost worker with no checkpoint saved takes ``again()``."""

    def __init__(self, first: Source, again: Callable[[], Source]):
        self.first, self.again = first, again

    def __call__(self) -> Source:
        first, self.first = self.first, None
        return first if first is not None else self.again()


@dataclass(frozen=True)
class Training:
    """What the training loop needs, fixed for a job: the shards (piece futures, on the
    workers), words per shard and round, the tables (a future), the vocabulary size, the number
    of models the shards are grouped into (``plan.model_groups``), and the row blocks each round's
    synchronised rows are merged in."""

    shards: list
    words: np.ndarray  # words[shard, round]
    tables: object
    rows: int
    dim: int
    models: int
    blocks: int | None  # row blocks per round; None: plan.merge_blocks
    tag: str
    probe: object = None  # a future of probe.Sample: the pairs each epoch's reported loss is scored on
    parts: object = None  # the partitioned layout's inputs (partitioned.Parts); None: replicated

    @property
    def rounds(self) -> int:
        return self.words.shape[1]

    @property
    def model_bytes(self) -> int:
        return 2 * self.rows * self.dim * 4


@dataclass
class _Layout:
    """Where one attempt's models live: model m trains ``groups[m]`` on worker ``home[m]`` with
    ``threads[m]`` threads."""

    groups: list[list[int]]
    home: list[str]
    threads: list[int]

    @property
    def workers(self) -> list[str]:
        return sorted(set(self.home))


def _place_models(client: Client, run: Training) -> _Layout:
    """Model m lives on worker m (of the sorted workers, round-robin): where ``encode_shards``
    dealt its shards, and one model per worker even where Dask built a shard elsewhere (the
    shard, far smaller than a model, then moves). A model trains with as many threads as its
    worker has, at most one per shard. Lost shards are recomputed first."""
    try:
        wait_alive(client, run.shards)  # lost shards are rebuilt first
    except Stranded as e:
        raise TransientError(f"the training shards cannot be rebuilt after losing workers ({e}); --resume the run "
                             "once the workers are back (with more memory if they ran out)") from None
    holders = client.who_has(distributed.futures_of(run.shards))
    if not all(holders.get(pieces[0].key) for pieces in run.shards):
        raise ModelLost("a shard is on no worker")
    nthreads = threads(client)
    alive = sorted(nthreads)
    groups = model_groups(len(run.shards), run.models)
    home = [alive[m % len(alive)] for m in range(run.models)]
    return _Layout(groups, home, [max(1, min(nthreads[w], len(g))) for w, g in zip(home, groups)])


class _Attempt:
    """One attempt at training epochs ``start``.. on models that live on the workers (models.py):
    every round each model trains its shards in place; the round's synchronised rows
    (``plan.sync_rows``) are merged in row blocks (``plan.merge_blocks``), each by the worker
    that owns it, and copied to the others. Epoch e + 1 is submitted before epoch e is collected, so the
    workers never wait for the client between epochs."""

    peer = models.Peer  # the actor on every worker that the rounds ask for rows

    def __init__(self, client: Client, cfg: JobConfig, run: Training, attempt: int, start: int, source: Source):
        self.client, self.cfg, self.run, self.attempt = client, cfg, run, attempt
        self.layout = _place_models(client, run)
        self.workers = self.layout.workers
        t = cfg.train
        self.total = t.epochs * int(run.words.sum())
        self.done = start * int(run.words.sum())
        ready = self._create(source, start)
        # A Peer actor on every worker: the merges and installs ask it for rows (address, key).
        self._actors = [self.submit(self.peer, key=f"peer-{run.tag}-{attempt}-{i}", worker=w, actor=True)
                        for i, w in enumerate(self.workers)]
        self.peers = [(w, a.key) for w, a in zip(self.workers, self._actors)]
        # Per model: what its next task waits for (its worker's actor must exist before other
        # workers ask it for rows).
        self.after = [[ready[w], self._actors[self.workers.index(w)]] for w in self.layout.home]
        self.last_end = time.perf_counter()
        self.bar, self.bar_words, self.last_loss = progress.off(), 0, None  # train_epochs sets the bar

    def _create(self, source: Source, start: int) -> dict:
        """Per worker, the future of its models, built by ``source``, ready for epoch ``start``."""
        run = self.run
        return {w: self.submit(models.create, run.tag, self.attempt, start * run.rounds,
                               [m for m, h in enumerate(self.layout.home) if h == w], source.build, *source.args,
                               key=f"model-{run.tag}-{self.attempt}-{i}", worker=w)
                for i, w in enumerate(self.workers)}

    def _round_ended(self, epoch: int, words: int, future) -> None:
        """A round's end finished (the bar's thread): the bar's words/s and last loss."""
        self.bar_words += words
        rate = self.bar_words / max(time.perf_counter() - self.bar.started, 1e-9)
        loss = f"  loss {self.last_loss:.4f}" if self.last_loss is not None else ""
        self.bar.advance(1, f"epoch {epoch + 1}/{self.cfg.train.epochs}  {rate:,.0f} words/s{loss}")

    def submit(self, fn, *args, key: str, worker: str, **kw):  # strictly where the models are: see gather_watching
        return self.client.submit(fn, *args, key=key, workers=[worker], allow_other_workers=False, **kw)

    def gather(self, futures):
        return gather_watching(self.client, futures, self.workers)

    def submit_round(self, epoch: int, r: int):
        """Train every model, merge the synchronised row blocks on their owners, install them
        everywhere; the round's end (a future of its record, ``models.ended``)."""
        run, t, lay, key = self.run, self.cfg.train, self.layout, f"{self.run.tag}-{self.attempt}-{epoch}-{r}"
        g = epoch * run.rounds + r
        end = self.done + int(run.words[:, r].sum())
        a0, a1 = schedule(t.alpha, t.min_alpha, self.done, self.total), schedule(t.alpha, t.min_alpha, end, self.total)
        self.done = end
        rows = sync_rows(r, run.rounds, run.rows, t.sync_rows)
        ranges = row_blocks(rows, run.blocks or merge_blocks(rows, run.rows, run.models, run.model_bytes))
        specs = {s: round_spec(t, epoch, r, run.rounds, s, a0, a1, walks=bool(self.cfg.edges))
                 for s in range(len(run.shards))}
        trained = [self.submit(models.train, run.tag, self.attempt, g, m, [run.shards[s] for s in group],
                               run.tables, [specs[s] for s in group], lay.threads[m], *self.after[m],
                               key=f"train-{key}-{m}", worker=lay.home[m])
                   for m, group in enumerate(lay.groups)]
        # Rows cross between workers through the Peer actors; each step waits for the previous one
        # (``step``): an owner's merge for every train, an install for every merge.
        w = len(self.workers)
        owned = [[(b, lo, hi) for b, (lo, hi) in enumerate(ranges) if b % w == i] for i in range(w)]
        index = {h: i for i, h in enumerate(self.workers)}
        homes = [self.peers[index[h]] for h in lay.home]  # where each model's rows are asked for
        step = self.step(trained, sum(map(bool, owned)), f"trained-{key}")
        merges = [self.submit(models.merge, run.tag, self.attempt, g, blocks, len(ranges), t.merge, homes, *step,
                              key=f"merge-{key}-{i}", worker=self.workers[i])
                  for i, blocks in enumerate(owned) if blocks]
        installs = []
        if w > 1:
            step = self.step(merges, w, f"merged-{key}")
            installs = [self.submit(models.install, run.tag, self.attempt, g,
                                    [(b, lo, hi, b % w) for b, (lo, hi) in enumerate(ranges) if b % w != i],
                                    len(ranges), self.peers, *step, key=f"install-{key}-{i}", worker=x)
                        for i, x in enumerate(self.workers)]
        return self.end_round(epoch, r, key, trained, merges, installs) + (rows, len(ranges))

    def step(self, futures: list, tasks: int, key: str) -> list:
        """What the ``tasks`` tasks of a round's next step wait for: ``futures`` themselves, or
        where several tasks would each wait for several futures past ``DIRECT_WORKERS`` workers,
        one barrier task that waits for them (keyed ``key``)."""
        if len(futures) <= 1 or tasks <= 1 or len(self.workers) <= DIRECT_WORKERS:
            return futures
        return [self.submit(models.barrier, *futures, key=key, worker=self.workers[0])]

    def end_round(self, epoch: int, r: int, key: str, trained: list, merges: list, installs: list) -> tuple:
        """The round's end (a future of its record, ``models.ended``), which the bar follows; the
        next round's trains wait for every install (they read the owners' models) or, with one
        worker, its merges."""
        done = self.submit(models.ended, trained, merges, installs, key=f"round-{key}", worker=self.workers[0])
        self.bar.follow([done], functools.partial(self._round_ended, epoch, int(self.run.words[:, r].sum())))
        after = [done] if len(self.workers) > DIRECT_WORKERS else installs or merges
        self.after = [list(after) for _ in self.layout.groups]
        return (done,)

    def submit_epoch(self, epoch: int, checkpoint_url: str | None):
        rounds = [self.submit_round(epoch, r) for r in range(self.run.rounds)]
        # From the first worker's model, before its next round changes it: the epoch's reported
        # loss (probe.py) and the checkpoint.
        save = self._on_first(epoch, "checkpoint", checkpoint.save_model, (checkpoint_url, self.cfg.storage_options)
                              ) if checkpoint_url else None
        scored = self._on_first(epoch, "probe", probe.loss, (self.run.probe,)) if self.run.probe is not None else None
        return epoch, rounds, save, checkpoint_url, self.done, scored

    def _on_first(self, epoch: int, label: str, fn, args: tuple):
        """``fn(*args, model)`` on the first worker's model at the end of ``epoch``; the next
        round of the models there waits for it."""
        w = self.workers[0]
        future = self.submit(models.save, self.run.tag, self.attempt, (epoch + 1) * self.run.rounds, fn, args,
                             *self.after[0], key=f"{label}-{self.run.tag}-{self.attempt}-{epoch}", worker=w,
                             priority=10)
        self.after = [a + [future] if h == w else a for a, h in zip(self.after, self.layout.home)]
        return future

    def collect(self, epoch: int, rounds: list, save, url: str | None, done: int, scored=None
                ) -> tuple[dict, int | None]:
        """The epoch's metrics, and the bytes of its checkpoint once saved (None: no checkpoint)."""
        t = self.cfg.train
        records = self.gather([r[0] for r in rounds])
        probed = self.gather(scored) if scored is not None else None
        stats = [s for rec in records for s in rec["stats"]]
        # One record per merge (round): its row blocks' merges summed (seconds: compute time;
        # bytes: what crossed between worker processes: parts into the merges, merged blocks out),
        # and when the round ended (a worker's clock, Unix time).
        merges = [{"seconds": rec["seconds"], "bytes": rec["bytes"], "rows": rows, "blocks": blocks, "end": rec["end"]}
                  for rec, (_, rows, blocks) in zip(records, rounds)]
        # From the previous epoch's end (not from this collection's start: the next epoch is
        # already running while the client checkpoints this one).
        now = time.perf_counter()
        seconds, self.last_end = now - self.last_end, now
        train_loss = sum(s["loss"] for s in stats) / max(sum(s["pairs"] for s in stats), 1)
        m = {
            "epoch": epoch + 1,
            # The model's loss at the epoch's end on the job's fixed pairs (probe.py); without a
            # sample (no pair in the first shard), the loss tallied while training.
            "loss": probed["loss"] / probed["pairs"] if probed and probed["pairs"] else train_loss,
            "loss_positive": probed["positive"] / probed["pairs"] if probed and probed["pairs"] else None,
            "train_loss": train_loss,
            "pairs": sum(s["pairs"] for s in stats),
            "words": sum(s["words"] for s in stats),
            "seconds": seconds,
            "words_per_second": sum(s["words"] for s in stats) / max(seconds, 1e-9),
            "kernel_seconds": sum(s["seconds"] for s in stats),
            "merge_seconds": sum(x["seconds"] for x in merges),
            "merge_bytes": sum(x["bytes"] for x in merges),
            "merges": merges,
            "alpha_end": schedule(t.alpha, t.min_alpha, done, self.total),
        }
        log.info("epoch %d/%d: loss %.4f, %.0f words/s, %.1f s (merge %.2f s, %.1f MB)", epoch + 1, t.epochs,
                 m["loss"], m["words_per_second"], seconds, m["merge_seconds"], m["merge_bytes"] / 1e6,
                 extra={"stage": "epoch", "epochs": t.epochs, **{k: v for k, v in m.items() if k != "merges"}})
        self.last_loss = m["loss"]
        for name in ("train_loss", "loss"):
            if not math.isfinite(m[name]):
                raise diverged(t.alpha, f"loss {m[name]} in epoch {epoch + 1}")
        return m, (self.gather(save) if save is not None else None)

    def stop(self) -> None:
        """Free the models (a worker that left has none). Tasks of this attempt still queued
        find them gone and do nothing (models.drop)."""
        self.bar.check()  # the rounds that ended: the bar shows them (all of them, after finish)
        self.bar = progress.off()  # the rounds still queued end too: they must not move the bar
        with contextlib.suppress(Exception):  # a client that lost its scheduler has nothing to stop
            self.client.run(models.drop, self.run.tag, on_error="ignore")
        self._actors = []  # released: Dask frees the Peer actors

    def finish(self, write, args: tuple):
        """The future of ``write(*args, model)`` on the final model, by the first worker."""
        run = self.run
        return self.submit(models.save, run.tag, self.attempt, self.cfg.train.epochs * run.rounds, write, args,
                           *self.after[0], key=f"write-{run.tag}-{self.attempt}", worker=self.workers[0])

    def deal(self, task, args: tuple, items: list, label: str, whole: bool = False) -> list:
        """``task(*args, item, unit)`` for each item on the final model's unit rows (``whole``:
        ``task(*args, item, model)`` on the model itself), item i on worker i mod W (every worker
        holding a model holds the same final rows); the results in item order. A bar labelled
        ``label`` follows the items."""
        run, g = self.run, self.cfg.train.epochs * self.run.rounds
        after = {home: self.after[m] for m, home in enumerate(self.layout.home)}
        futures = [self.submit(models.save, run.tag, self.attempt, g, task, (*args, item), *after[w],
                               key=f"{label}-{run.tag}-{self.attempt}-{i}", worker=w) if whole
                   else self.submit(models.serve, run.tag, self.attempt, g, task, args, item, *after[w],
                                    key=f"{label}-{run.tag}-{self.attempt}-{i}", worker=w)
                   for i, item in enumerate(items) for w in [self.workers[i % len(self.workers)]]]
        with progress.stage(label, len(futures), unit=" blocks") as bar:
            bar.follow(futures)
            return self.gather(futures)


class Final:
    """The trained model while it is still on the workers: ``write`` runs a function on the first
    worker's copy, ``deal`` runs tasks over every worker's copy of its unit rows, ``each`` over
    every worker's copy of the model."""

    def __init__(self, job: _Attempt):
        self._job = job

    @property
    def workers(self) -> list[str]:
        """The workers that hold the final model."""
        return list(self._job.workers)

    def write(self, write, args: tuple):
        """The future of ``write(*args, model)`` on the final model, by the first worker: it runs
        beside the tasks submitted after it (``result`` waits for it)."""
        return self._job.finish(write, args)

    def result(self, future):
        """The result of a future of ``write``, waited for as the job's own tasks are (a worker
        lost meanwhile fails the wait)."""
        return self._job.gather(future)

    def deal(self, task, args: tuple, items: list, label: str) -> list:
        """``task(*args, item, unit)`` for each item, dealt over the workers, on their copy of the
        final model's rows scaled to length 1 (computed once per worker); the results in item
        order."""
        return self._job.deal(task, args, items, label)

    def each(self, task, args: tuple, items: list, label: str) -> list:
        """``task(*args, item, model)`` for each item, dealt over the workers as ``deal`` deals
        them, on their copy of the final model: the outputs by row blocks (when the model is
        partitioned, the worker that owns a block's rows writes it); the results in item order."""
        return self._job.deal(task, args, items, label, whole=True)


@dataclass(frozen=True)
class Epoch:
    """One trained epoch (0-based ``number``): its metrics, and the checkpoint saved after it
    (``checkpoint``: its URL, ``checkpoint_bytes`` its size; None when the epoch saved none)."""

    number: int
    metrics: dict
    checkpoint: str | None
    checkpoint_bytes: int | None


class train_epochs:  # noqa: N801 - used as a function: ``with train_epochs(...) as epochs: for e in epochs``
    """Epochs start..epochs-1 on models that live on the workers (``_Attempt``), as an iterator
    of ``Epoch`` results in order; ``finish(fn)`` then runs ``fn(final)`` while the final model
    is still on the workers (``final``: a ``Final``, to write the outputs from it). Leaving the
    ``with`` block frees the models, whatever happened.

    ``source``: the model before epoch ``start`` (``Source``: built on every worker holding a
    model; or ``Once``, a source given to the first attempt only). ``checkpoint_at(epoch)``: a URL to save the model to after
    ``epoch``, or None.

    When a worker is lost, training restarts from the last saved model (or ``source``), at most
    MAX_RECOVERIES times, and the epochs since then are trained (and yielded) again: every task
    is a deterministic function of the model it starts from (with one thread per model) and the
    merges sum in model order, so the vectors are the same as without the loss.
    ``restarts`` and ``threads`` (per model) are for the manifest.
    """

    def __init__(self, client: Client, cfg: JobConfig, run: Training, source: Source | Once, start: int = 0,
                 checkpoint_at=None):
        self.client, self.cfg, self.run = client, cfg, run
        self.source, self.start, self.first = source, start, start
        self.checkpoint_at = checkpoint_at or (lambda epoch: None)
        self.restarts, self.saved, self.job = 0, [], None  # saved: (epoch, url) of each checkpoint

    def __enter__(self):
        self._stage = progress.stage("training", (self.cfg.train.epochs - self.start) * self.run.rounds,
                                     unit=" rounds")
        self.bar = self._stage.__enter__()
        return self

    def __exit__(self, *exc):
        if self.job is not None:  # the models must not outlive the job
            self.job.stop()
        return self._stage.__exit__(*exc)

    @property
    def threads(self) -> list[int]:
        return self.job.layout.threads

    def __iter__(self):
        while True:
            try:
                yield from self._attempt()
                return
            except LOST as e:
                self._recover(e)

    def finish(self, fn):
        """``fn(final)`` on the final model; a worker lost meanwhile retrains the epochs since the
        last checkpoint (the same bits) and runs ``fn`` again."""
        while True:
            try:
                return fn(Final(self.job))
            except LOST as e:
                self._recover(e)
                for _ in self:
                    pass

    def _attempt(self):
        """Epochs from ``start`` on fresh models: epoch e + 1 is submitted before epoch e is
        collected, so the workers never wait for the client between epochs."""
        self.job = None
        attempt = _Attempt
        if self.run.parts is not None:
            from .partitioned import _Partitioned as attempt  # it builds on _Attempt
        source = self.source() if callable(self.source) else self.source
        self.job = job = attempt(self.client, self.cfg, self.run, self.restarts, self.start, source)
        del source  # the models hold what they were built from
        job.bar, self.bar.done = self.bar, (self.start - self.first) * self.run.rounds
        pending = None
        for epoch in range(self.start, self.cfg.train.epochs):
            submitted = job.submit_epoch(epoch, self.checkpoint_at(epoch))
            if pending is not None:
                yield self._collected(pending)
            pending = submitted
        if pending is not None:
            yield self._collected(pending)

    def _collected(self, pending: tuple) -> Epoch:
        metrics, nbytes = self.job.collect(*pending)
        epoch, url = pending[0], pending[3]
        if nbytes is not None:
            self.saved.append((epoch, url))
        return Epoch(epoch, metrics, url if nbytes is not None else None, nbytes)

    def _recover(self, e: BaseException) -> None:
        """After a lost worker: free this attempt's models (its tasks that still run or wait find
        them gone and do nothing), then start again from the last checkpoint."""
        if self.job is not None:
            self.job.stop()
        if self.restarts == MAX_RECOVERIES:
            raise TransientError(f"lost workers {self.restarts + 1} times while training ({e}); check the "
                                 "workers' memory and logs, then --resume the run") from e
        self.restarts += 1
        if self.saved:
            epoch, url = self.saved[-1]
            self.start, self.source = epoch + 1, Source(checkpoint.load_model, (url, self.cfg.storage_options))
        log.warning("lost a worker (%s: %s); training again from epoch %d", type(e).__name__, e, self.start + 1)
