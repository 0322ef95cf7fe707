"""The coordinator: the only module that talks to ``dask.distributed``.

Read top to bottom, ``train`` is the whole job:

1. plan blocks (byte ranges / row groups) on the client, from metadata only;
2. count words per block on the workers, merge by a tree reduction, build the vocabulary;
3. encode blocks into int32 ids, regroup them into ``shards`` equal training shards that
   stay on the workers for all epochs;
4. for each epoch and each round: every worker trains its shards in place on its one model
   (replica.py; its threads share it); the round's synchronised rows (a frequency prefix, all
   rows at an epoch's end) are merged, per row block, by the worker that owns the block and
   copied to the others. The learning rate follows global progress, not each model's;
5. write the output files from a worker, then the manifest, then LATEST.

With one thread per worker every result is a deterministic function of the model a round
starts from (random states derive from the seed, epoch, round and shard; merges sum in model
order), so training restarted from a checkpoint after a worker dies gives the same vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import time
from dataclasses import dataclass, replace

import dask
import distributed
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from distributed import Client, KilledWorker, LocalCluster
from distributed.client import FutureCancelledError

from . import __version__, replica, storage
from .config import ClusterConfig, JobConfig, TrainConfig, config_from_dict
from .corpus import Block, iter_tokens, plan_blocks
from .counts import Counts, Scanned, merge_counts, scan
from .encode import Shard, encode_scanned
from .errors import ConfigError, DataError, TransientError
from .memory import WorkerMemory, release_memory
from .merge import shard_rates
from .model import Model, init_model, make_tables
from .outputs import claim_run, new_run_id, publish, read_npy, resolve_run, run_url, write_npy, write_run_files
from .plan import block_workers, model_groups, row_blocks, schedule, shard_plan, sync_rows
from .replica import ReplicaLost
from .shard import RoundSpec, round_words
from .vocab import Vocab, build_vocab

log = logging.getLogger("nsdist")


# ---------------------------------------------------------------- the cluster

def connect(cfg: ClusterConfig) -> tuple[Client, LocalCluster | None]:
    """--scheduler ADDRESS, else DASK_SCHEDULER_ADDRESS, else an embedded LocalCluster."""
    address = cfg.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    cluster = None
    try:
        if address:
            client = Client(address, timeout=cfg.timeout)
        else:
            workers = cfg.workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=cfg.threads_per_worker, processes=True,
                dashboard_address=":0", host="127.0.0.1",
            )
            client = Client(cluster)
    except OSError as e:
        raise TransientError(f"cannot reach the Dask scheduler at {address!r}: {e}; is it running?") from e
    try:
        client.wait_for_workers(cfg.wait_for_workers, timeout=cfg.timeout)
    except (TimeoutError, distributed.TimeoutError) as e:
        client.close()
        raise TransientError(
            f"no {cfg.wait_for_workers} worker(s) joined {address or 'the local cluster'} within "
            f"{cfg.timeout:.0f} s; start workers or raise cluster.timeout"
        ) from e
    return client, cluster


def _threads(client: Client) -> int:
    return sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())


# ---------------------------------------------------------------- task functions
# Module-level, plain inputs and outputs, never mutating their arguments.

def _scan_block(block: Block, storage_options, lowercase: bool, column: str) -> Scanned:
    # 1 MiB pieces: Arrow needs about 10x a piece's size, so a whole block at once would not fit.
    scanned = scan(iter_tokens(block, storage_options, lowercase, column))
    release_memory()  # the scan's transient memory (about 3x the block): ~20% of the scan time
    return scanned


def _encode_piece(lo: int, hi: int, vocab: Vocab, max_len: int, block: Scanned) -> Shard:
    """Encode the chunks that start in token range [lo, hi) of a scanned block: one piece of a
    shard (each block's scan is freed once its pieces exist; a shard is never concatenated)."""
    release_memory()  # what earlier scans and pieces freed, before this piece is allocated
    return encode_scanned([(block, lo, hi)], vocab.words, max_len)


def _vocab_summary(vocab: Vocab, counts: Counts) -> dict:
    return {"vocab_size": len(vocab), "vocab_tokens": vocab.total, "raw_tokens": counts.tokens,
            "sentences": counts.sentences, "distinct_words": counts.table.num_rows}


def _tables(vocab: Vocab, t: TrainConfig, models: int):
    tables = make_tables(vocab.counts, t.sample, t.ns_exponent)
    rate = shard_rates(vocab.counts, tables.keep, models, t.alpha, t.merge, t.alpha_scale, t.rate_pivot)
    return replace(tables, rate=rate)


def _rate_summary(tables) -> dict:
    """The models' per-row rate multipliers (merge.shard_rates), for the manifest."""
    r = tables.rate
    return {"min": float(r.min()), "median": float(np.median(r)), "max": float(r.max())} if len(r) else {}


def _write_outputs(url: str, vocab: Vocab, storage_options, model: Model) -> dict:
    release_memory()
    return write_run_files(url, vocab.words, vocab.counts, model.win, model.wout, storage_options)


# ---------------------------------------------------------------- helpers

# How shards and rounds are cut from the corpus (bump when that changes: a resumed run must
# train on the same shards). 3: shards grouped into models, rounds planned per model.
SHARD_PLAN = 3


def _tree_levels(client: Client, fn, futures: list, key: str, fan_in: int = 8) -> tuple[list, int]:
    """Reduce futures with ``fn(*group)`` level by level on the workers, in order, until at most
    ``fan_in`` remain (the root's inputs); returns them and the number of levels submitted.
    The shape depends only on len(futures) and fan_in, so float results are reproducible."""
    level = 0
    while len(futures) > fan_in:
        futures = [
            client.submit(fn, *futures[i:i + fan_in], key=f"{key}-{level}-{i}")
            for i in range(0, len(futures), fan_in)
        ]
        level += 1
    return futures, level


def _tree_reduce(client: Client, fn, futures: list, key: str, fan_in: int = 8):
    """Reduce futures with ``fn(*group)`` in a tree on the workers; returns one future."""
    futures, level = _tree_levels(client, fn, futures, key, fan_in)
    return futures[0] if len(futures) == 1 else client.submit(fn, *futures, key=f"{key}-{level}-0")


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _fingerprint(files: list[tuple[str, int]]) -> str:
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


@dataclass
class TrainResult:
    run_id: str
    run_url: str
    manifest: dict


# ---------------------------------------------------------------- the stages

def count_vocab(client: Client, cfg: JobConfig, blocks: list[Block], tag: str, shards: int | None = None):
    """Read each block once, count, merge the counts in a tree, build the vocabulary.

    Returns (vocab future, summary, scanned block futures, tokens per block). The scanned blocks
    stay on the workers until ``encode_shards`` has turned them into ``shards`` shards (placed
    for that count; default one per worker).
    """
    t = cfg.train
    read_args = (dict(cfg.storage_options), t.lowercase, cfg.parquet_column)
    workers = sorted(client.scheduler_info()["workers"])
    places = block_workers([b.length for b in blocks], shards or len(workers), workers, cfg.blocksize)
    scanned = [client.submit(_scan_block, b, *read_args, key=f"scan-{tag}-{i}", workers=[w] if w else None,
                             allow_other_workers=True) for i, (b, w) in enumerate(zip(blocks, places))]
    counted = [client.submit(Scanned.to_counts, s, key=f"count-{s.key}") for s in scanned]
    tokens = [client.submit(getattr, c, "tokens", key=f"n-{c.key}") for c in counted]
    counts = _tree_reduce(client, merge_counts, counted, key=f"merge-counts-{tag}")
    vocab = client.submit(build_vocab, counts, t.min_count, t.max_vocab, key=f"vocab-{tag}")
    block_tokens = client.gather(tokens)  # after the whole graph is submitted: the merges start early
    summary = client.submit(_vocab_summary, vocab, counts, key=f"summary-{tag}").result()
    return vocab, summary, scanned, block_tokens


def encode_shards(client: Client, cfg: JobConfig, scanned: list, block_tokens: list[int], vocab, n_shards: int,
                  rounds: int, tag: str):
    """Encode the scanned blocks into ``n_shards`` training shards of about equal token counts:
    (shards, words[shard, round]). A shard is a list of piece futures, one per block it draws
    from (``_encode_piece``), in order; training takes the pieces as one shard
    (``shard.round_slices``), so no worker ever holds a shard and its scanned blocks twice.
    Empties ``scanned``: each scanned block is freed as soon as its pieces are built."""
    t = cfg.train
    # Deal the shards round-robin over the workers (training runs where a shard is held); left to
    # itself the scheduler may build several next to the same scanned blocks, on one worker.
    workers = sorted(client.scheduler_info()["workers"])
    shards = []
    for s, plan in enumerate(shard_plan(block_tokens, n_shards)):
        place = {"workers": [workers[s % len(workers)]] if workers else None, "allow_other_workers": True}
        shards.append([client.submit(_encode_piece, lo, hi, vocab, t.max_sentence_length, scanned[b],
                                     key=f"shard-{tag}-{s}-{b}", **place) for b, lo, hi in plan]
                      # more shards than tokens: an empty one
                      or [client.submit(Shard, np.zeros(0, np.int32), np.zeros(1, np.int64), key=f"shard-{tag}-{s}",
                                        **place)])
    scanned.clear()
    words = client.gather([client.submit(round_words, pieces, rounds, key=f"rw-{tag}-{s}")
                           for s, pieces in enumerate(shards)])
    return shards, np.array(words, dtype=np.int64).reshape(n_shards, rounds)


MAX_RECOVERIES = 3  # restarts from a saved model after losing workers, per job
# A lost worker shows as one of these: our own check, Dask giving up on a task, or Dask
# forgetting a task whose worker died (its future is then cancelled).
LOST = (ReplicaLost, KilledWorker, FutureCancelledError)
WATCH_SECONDS = 2.0  # how often the client checks, while it waits, that the models' workers are there


def _gather(client: Client, futures, workers: list[str]):
    """``client.gather(futures)``; raises ReplicaLost as soon as one of ``workers`` has left the
    cluster. Tasks on models are pinned to their worker (work stealing must not move them to a
    worker without the model), so after a loss they would wait for it forever."""
    flat = distributed.futures_of(futures)
    while True:
        try:
            distributed.wait(flat, timeout=WATCH_SECONDS)
            return client.gather(futures)
        except (TimeoutError, distributed.TimeoutError):
            present = set(client.run_on_scheduler(_worker_addresses))
            gone = sorted(set(workers) - present)
            if gone:
                raise ReplicaLost(f"worker {', '.join(gone)} left the cluster") from None


def _worker_addresses(dask_scheduler=None) -> list[str]:
    return list(dask_scheduler.workers)


@dataclass(frozen=True)
class Training:
    """What the training loop needs, fixed for a job: the shards (piece futures, on the
    workers), words per shard and round, the tables (a future), the vocabulary size, the number
    of models the shards are grouped into (``plan.model_groups``), and the row blocks merged in
    parallel per round."""

    shards: list
    words: np.ndarray  # words[shard, round]
    tables: object
    rows: int
    models: int
    blocks: int
    tag: str

    @property
    def rounds(self) -> int:
        return self.words.shape[1]


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
    """Each model lives on the worker holding its first shard (lost shards are recomputed first);
    a model trains with as many threads as that worker has, at most one per shard."""
    distributed.wait(distributed.futures_of(run.shards))
    holders = client.who_has(distributed.futures_of(run.shards))
    if not all(holders.get(pieces[0].key) for pieces in run.shards):
        raise ReplicaLost("a shard is on no worker")
    nthreads = {w: info["nthreads"] for w, info in client.scheduler_info()["workers"].items()}
    groups = model_groups(len(run.shards), run.models)
    home = [sorted(holders[run.shards[g[0]][0].key])[0] for g in groups]
    return _Layout(groups, home, [max(1, min(nthreads.get(w, 1), len(g))) for w, g in zip(home, groups)])


class _Attempt:
    """One attempt at training epochs ``start``.. on models that live on the workers (replica.py):
    every round each model trains its shards in place; the round's synchronised rows
    (``plan.sync_rows``) are merged in ``run.blocks`` row blocks, each by the worker that owns
    it, and copied to the others. Epoch e + 1 is submitted before epoch e is collected, so the
    workers never wait for the client between epochs."""

    def __init__(self, client: Client, cfg: JobConfig, run: Training, attempt: int, start: int, source: tuple):
        self.client, self.cfg, self.run, self.attempt = client, cfg, run, attempt
        self.layout = _place_models(client, run)
        self.workers = self.layout.workers
        t = cfg.train
        self.total = t.epochs * int(run.words.sum())
        self.done = start * int(run.words.sum())
        build, args = source
        ready = {w: self.submit(replica.create, run.tag, attempt, start * run.rounds,
                                [m for m, h in enumerate(self.layout.home) if h == w], build, *args,
                                key=f"replica-{run.tag}-{attempt}-{i}", worker=w)
                 for i, w in enumerate(self.workers)}
        self.after = [[ready[w]] for w in self.layout.home]  # per model: what its next task waits for
        self.last_end = time.perf_counter()

    def submit(self, fn, *args, key: str, worker: str, **kw):  # strictly where the models are: see _gather
        return self.client.submit(fn, *args, key=key, workers=[worker], allow_other_workers=False, **kw)

    def gather(self, futures):
        return _gather(self.client, futures, self.workers)

    def submit_round(self, epoch: int, r: int):
        """Train every model, merge the synchronised row blocks, install them everywhere."""
        run, t, lay, key = self.run, self.cfg.train, self.layout, f"{self.run.tag}-{self.attempt}-{epoch}-{r}"
        g = epoch * run.rounds + r
        end = self.done + int(run.words[:, r].sum())
        a0, a1 = schedule(t.alpha, t.min_alpha, self.done, self.total), schedule(t.alpha, t.min_alpha, end, self.total)
        self.done = end
        ranges = row_blocks(sync_rows(r, run.rounds, run.rows, t.sync_rows), run.blocks)
        specs = {s: RoundSpec(epoch, r, run.rounds, s, a0, a1, t.window, t.negative, t.seed, t.kernel)
                 for s in range(len(run.shards))}
        trained = [self.submit(replica.train, run.tag, self.attempt, g, m, ranges, [run.shards[s] for s in group],
                               run.tables, [specs[s] for s in group], lay.threads[m], *self.after[m],
                               key=f"train-{key}-{m}", worker=lay.home[m])
                   for m, group in enumerate(lay.groups)]
        owners = [self.workers[b % len(self.workers)] for b in range(len(ranges))]
        merged = []
        for b, (lo, hi) in enumerate(ranges):
            # The owner's models' parts are views; the others send only what the owner lacks:
            # the rows they changed, and the rows the owner's models changed (its mask).
            local = [m for m, h in enumerate(lay.home) if h == owners[b]]
            masks = self.submit(replica.mask, run.tag, self.attempt, g, lo, hi, *[trained[m] for m in local],
                                key=f"mask-{key}-{b}", worker=owners[b])
            parts = [self.submit(operator.getitem, d, b, key=f"part-{b}-{d.key}", worker=owners[b]) if m in local
                     else self.submit(replica.send, d, b, masks, key=f"part-{b}-{d.key}", worker=lay.home[m])
                     for m, d in enumerate(trained)]
            merged.append(self.submit(replica.merge, run.tag, self.attempt, g, b, len(ranges), lo, hi, t.merge,
                                      *parts, key=f"merge-{key}-{b}", worker=owners[b]))
        # A worker installs others' blocks after merging its own: the parts it received are
        # freed before the merged blocks arrive (Dask fetches a task's inputs once it is ready).
        own = {w: [m for m, o in zip(merged, owners) if o == w] for w in self.workers}
        installs = [self.submit(replica.install, run.tag, self.attempt, g, b, len(ranges), lo, hi, merged[b], *own[w],
                                key=f"install-{key}-{b}-{i}", worker=w)
                    for b, (lo, hi) in enumerate(ranges) for i, w in enumerate(self.workers) if w != owners[b]]
        infos = [self.submit(replica.info, m, key=f"info-{m.key}", worker=owners[b]) for b, m in enumerate(merged)]
        # The next round waits for every install (they read the owners' models) or, on one
        # worker, for the merges.
        self.after = [installs or merged for _ in lay.groups]
        return infos, installs

    def submit_epoch(self, epoch: int, checkpoint_url: str | None):
        rounds = [self.submit_round(epoch, r) for r in range(self.run.rounds)]
        save = None
        if checkpoint_url:  # from the first worker's model, before its next round changes it
            w = self.workers[0]
            save = self.submit(replica.save, self.run.tag, self.attempt, (epoch + 1) * self.run.rounds,
                               _save_arrays, (checkpoint_url, dict(self.cfg.storage_options)), *self.after[0],
                               key=f"checkpoint-{self.run.tag}-{self.attempt}-{epoch}", worker=w, priority=10)
            self.after = [a + [save] if h == w else a for a, h in zip(self.after, self.layout.home)]
        return epoch, rounds, save, checkpoint_url, self.done

    def collect(self, epoch: int, rounds: list, save, url: str | None, done: int) -> tuple[dict, int | None]:
        """The epoch's metrics, and the bytes of its checkpoint once saved (None: no checkpoint)."""
        t = self.cfg.train
        infos, installed = self.gather([[i for i, _ in rounds], [x for _, x in rounds]])
        stats = [s for blk in infos for s in blk[0]["stats"]]
        # One record per merge (round): its row blocks' merges summed (seconds: compute time;
        # bytes: what crossed between worker processes: parts into the merges, merged blocks out).
        merges = [{"seconds": sum(i["seconds"] for i in blk), "bytes": sum(i["bytes"] for i in blk) + sum(inst)}
                  for blk, inst in zip(infos, installed)]
        # From the previous epoch's end (not from this collection's start: the next epoch is
        # already running while the client checkpoints this one).
        now = time.perf_counter()
        seconds, self.last_end = now - self.last_end, now
        m = {
            "epoch": epoch + 1,
            "loss": sum(s["loss"] for s in stats) / max(sum(s["pairs"] for s in stats), 1),
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
                 m["loss"], m["words_per_second"], seconds, m["merge_seconds"], m["merge_bytes"] / 1e6)
        return m, (self.gather(save) if save is not None else None)

    def finish(self, write, args: tuple):
        """``write(*args, model)`` on the final model, by the first worker."""
        run = self.run
        return self.gather(self.submit(replica.save, run.tag, self.attempt, self.cfg.train.epochs * run.rounds, write,
                                       args, *self.after[0], key=f"write-{run.tag}-{self.attempt}",
                                       worker=self.workers[0]))


def train_epochs(client: Client, cfg: JobConfig, run: Training, source: tuple, start: int = 0,
                 checkpoint=None, on_saved=None, finish: tuple | None = None):
    """Epochs start..epochs-1 on models that live on the workers (``_Attempt``).

    ``source``: (build, args): ``build(*args)`` is the model before epoch ``start`` (built on
    every worker holding a model). ``checkpoint(epoch)``: a URL to save the model to after
    ``epoch``, or None; ``on_saved(epoch, nbytes, metrics)`` runs once that save and the
    epoch's metrics are in. ``finish``: (write, args): ``write(*args, model)`` runs on the final
    model (the outputs). Returns (finish's result, per-epoch metrics, restarts, threads per model).

    When a worker is lost, training restarts from the last saved model (or ``source``), at most
    MAX_RECOVERIES times: every task is a deterministic function of the model it starts from
    (with one thread per model) and the merges sum in model order, so the vectors are the same
    as without the loss.
    """
    metrics: list[dict] = []
    saved: list[tuple[int, str]] = []  # (epoch, url) of each model saved
    for attempt in range(MAX_RECOVERIES + 1):
        try:
            job = _Attempt(client, cfg, run, attempt, start, source)
            pending = None
            for epoch in range(start, cfg.train.epochs):
                submitted = job.submit_epoch(epoch, checkpoint(epoch) if checkpoint else None)
                if pending is not None:
                    _collected(job, pending, metrics, saved, on_saved)
                pending = submitted
            if pending is not None:
                _collected(job, pending, metrics, saved, on_saved)
            result = job.finish(*finish) if finish else None
            client.run(replica.drop, run.tag, on_error="ignore")  # a worker leaving now has nothing to free
            return result, metrics, attempt, job.layout.threads
        except LOST as e:
            # The attempt's futures go with it: the scheduler forgets its tasks, and any that
            # still run find their models gone (attempt numbers differ) and fail.
            client.run(replica.drop, run.tag, on_error="ignore")
            if attempt == MAX_RECOVERIES:
                raise TransientError(f"lost workers {attempt + 1} times while training ({e}); check the "
                                     "workers' memory and logs, then --resume the run") from e
            if saved:
                start, source = saved[-1][0] + 1, (_load_arrays, (saved[-1][1], dict(cfg.storage_options)))
            metrics[:] = [m for m in metrics if m["epoch"] <= start]
            log.warning("lost a worker (%s: %s); training again from epoch %d", type(e).__name__, e, start + 1)
    raise AssertionError("unreachable")


def _collected(job: _Attempt, pending: tuple, metrics: list, saved: list, on_saved) -> None:
    m, nbytes = job.collect(*pending)
    metrics.append(m)
    if nbytes is not None:
        epoch, url = pending[0], pending[3]
        saved.append((epoch, url))
        if on_saved is not None:
            on_saved(epoch, nbytes, metrics)


# ---------------------------------------------------------------- checkpoints and warm starts

def _checkpoint_url(run: str, epoch: int) -> str:
    return storage.join(run, "checkpoints", f"epoch-{epoch + 1:04d}")


def _save_arrays(url: str, storage_options, model: Model) -> int:
    for name, array in (("win.npy", model.win), ("wout.npy", model.wout)):
        with storage.open_write(storage.join(url, name), storage_options) as f:
            write_npy(f, array)
    return model.nbytes


def _load_arrays(url: str, storage_options) -> Model:
    return Model(read_npy(storage.join(url, "win.npy"), storage_options),
                 read_npy(storage.join(url, "wout.npy"), storage_options))


def _vocab_digest(vocab: Vocab) -> str:
    """Identity of a vocabulary: a resumed run must recount exactly the same one."""
    h = hashlib.sha256()
    for buf in vocab.words.buffers():
        if buf is not None:
            h.update(buf)
    h.update(np.ascontiguousarray(vocab.counts).tobytes())
    return h.hexdigest()


def latest_checkpoint(run: str, storage_options=None) -> dict | None:
    """The newest complete checkpoint of a run (its state.json is written last), or None."""
    for name in reversed(storage.listdir(storage.join(run, "checkpoints"), storage_options)):
        state_url = storage.join(run, "checkpoints", name, "state.json")
        if storage.exists(state_url, storage_options):
            return storage.read_json(state_url, storage_options)
    return None


def _warm_rows(vocab: Vocab, parent: str, storage_options) -> tuple[np.ndarray, np.ndarray, dict]:
    """Which of this vocabulary's words the published ``parent`` knows (mask), their rows there,
    and the counts of known, new and dropped words."""
    old_words = pa.array([line.rstrip("\n").rpartition("\t")[0]
                          for line in storage.lines(storage.join(parent, "vocab.tsv"), storage_options)])
    old_ids = pc.index_in(vocab.words, value_set=pc.cast(old_words, vocab.words.type))
    known = pc.is_valid(old_ids).to_numpy(zero_copy_only=False)
    stats = {"known_words": int(known.sum()), "new_words": int((~known).sum()),
             "dropped_words": int(len(old_words) - known.sum())}
    return known, pc.filter(old_ids, known).to_numpy(), stats


def _warm_stats(vocab: Vocab, parent: str, storage_options) -> dict:
    return _warm_rows(vocab, parent, storage_options)[2]


def _warm_model(vocab: Vocab, parent: str, storage_options, dim: int, seed: int) -> tuple[Model, dict]:
    """Initial model for a new vocabulary from a published run: known words keep both vectors,
    new words get fresh ones, dropped words disappear."""
    known, src, stats = _warm_rows(vocab, parent, storage_options)
    fresh = init_model(len(vocab), dim, seed)
    for name, target in (("vectors.npy", fresh.win), ("context.npy", fresh.wout)):  # one old matrix at a time
        old = read_npy(storage.join(parent, name), storage_options)
        if old.shape[1] != dim:
            raise DataError(f"--init-from model has dim {old.shape[1]}, this job dim {dim}; set dim={old.shape[1]}")
        target[known] = old[src]
        del old
    return fresh, stats


def _warm_replica(vocab: Vocab, parent: str, storage_options, dim: int, seed: int) -> Model:
    return _warm_model(vocab, parent, storage_options, dim, seed)[0]


# ---------------------------------------------------------------- the job

def check_inputs(cfg: JobConfig) -> list[tuple[str, int]]:
    """Fail fast, before any cluster starts: the corpus files (url, size) of a job."""
    if not cfg.corpus:
        raise ConfigError("no corpus given; pass --corpus URL (or set corpus in the job spec)")
    if not cfg.out:
        raise ConfigError("no output given; pass --out URL (or set out in the job spec)")
    return storage.expand(cfg.corpus, dict(cfg.storage_options))


def resume_config(run: str, current: JobConfig) -> JobConfig:
    """The configuration of a run to resume: as it was claimed, with this invocation's storage
    options and cluster (neither is part of what the run computes)."""
    claim = storage.read_json(storage.join(run, "_claim.json"), dict(current.storage_options))
    if "config" not in claim:
        raise DataError(f"{run!r} was not started by this nsdist version (no config in _claim.json); retrain")
    saved = claim["config"]
    return config_from_dict({k: v for k, v in saved.items() if k not in ("storage_options", "cluster")},
                            storage_options=current.storage_options, cluster=current.cluster)


def train(cfg: JobConfig, client: Client, resume: str | None = None, init_from: str | None = None) -> TrainResult:
    """Run a whole training job on ``client``'s cluster and publish it under ``cfg.out``.

    ``resume``: URL of a run that failed; continue from its last checkpoint (``cfg`` must be
    ``resume_config(resume, ...)``). ``init_from``: URL of a published model to warm-start from.
    """
    t = cfg.train
    opts = dict(cfg.storage_options)
    t_start = time.perf_counter()
    files = check_inputs(cfg)
    client.register_plugin(WorkerMemory())
    fingerprint = _fingerprint(files)
    blocks = plan_blocks(cfg.corpus, opts, cfg.blocksize)
    state = None
    if resume:
        run = resume.rstrip("/")
        run_id = run.rsplit("/", 1)[-1]
        if storage.exists(storage.join(run, "manifest.json"), opts):
            raise DataError(f"run {run_id} was already published; nothing to resume")
        state = latest_checkpoint(run, opts)
        if state and state.get("shard_plan") != SHARD_PLAN:
            raise DataError(f"run {run_id} was checkpointed by an nsdist that cut shards differently; start a new run")
        if state and state["corpus_fingerprint"] != fingerprint:
            raise DataError(f"the corpus changed since run {run_id} started (files or sizes differ); start a new run")
    else:
        run_id = new_run_id()
        run = run_url(cfg.out, run_id)
        claim_run(cfg.out, run_id, opts, config=cfg.to_dict(), init_from=init_from)
    parent = resolve_run(init_from, opts) if init_from else None
    tag = run_id  # task key prefix: readable on the dashboard, unique per job
    log.info("run %s: corpus %d file(s), %d block(s), %.1f MB", run_id, len(files), len(blocks),
             sum(s for _, s in files) / 1e6)

    n_shards = state["shards"] if state else (t.shards or _threads(client))
    # One model per worker (its threads share it); the models are what the rounds average.
    n_models = state["models"] if state else max(1, min(len(client.scheduler_info()["workers"]), n_shards))
    t0 = time.perf_counter()
    vocab, summary, scanned, block_tokens = count_vocab(client, cfg, blocks, tag, n_shards)
    count_seconds = time.perf_counter() - t0
    if summary["vocab_size"] == 0:
        raise DataError(
            f"empty vocabulary: no word occurs min_count={t.min_count} times in "
            f"{summary['raw_tokens']} tokens; lower min_count or check the corpus"
        )
    log.info("vocabulary: %d words (of %d distinct), %d tokens, counted in %.1f s (%.0f tokens/s)",
             summary["vocab_size"], summary["distinct_words"], summary["raw_tokens"], count_seconds,
             summary["raw_tokens"] / max(count_seconds, 1e-9))
    digest = client.submit(_vocab_digest, vocab, key=f"digest-{tag}").result()
    if state and state["vocab_sha256"] != digest:
        raise DataError(f"the vocabulary of run {run_id} cannot be reproduced from the corpus; start a new run")

    t0 = time.perf_counter()
    shards, words = encode_shards(client, cfg, scanned, block_tokens, vocab, n_shards, t.rounds(n_models), tag)
    shard_bytes = sum(client.gather([client.submit(operator.attrgetter("nbytes"), p, key=f"nbytes-{p.key}")
                                     for p in distributed.futures_of(shards)]))
    # Row blocks merged in parallel: one per model's worker by default (results do not depend on it).
    merge_blocks = t.merge_blocks or n_models
    encode_seconds = time.perf_counter() - t0
    log.info("encoded %d words into %d shard(s) in %.1f s", int(words.sum()), n_shards, encode_seconds)
    if words.sum() == 0:
        raise DataError("the corpus has no sentences with known words; check the corpus and min_count")

    tables = client.submit(_tables, vocab, t, n_models, key=f"tables-{tag}")
    rates = client.submit(_rate_summary, tables, key=f"rates-{tag}").result()
    warm = None
    if state:
        source = (_load_arrays, (_checkpoint_url(run, state["epoch"] - 1), opts))
        log.info("resuming run %s after epoch %d", run_id, state["epoch"])
    elif parent:
        source = (_warm_replica, (vocab, parent, opts, t.dim, t.seed))
        warm = {"parent_run": parent, **client.submit(_warm_stats, vocab, parent, opts, key=f"warm-{tag}").result()}
        log.info("warm start from %s: %d known, %d new, %d dropped words", parent, warm["known_words"],
                 warm["new_words"], warm["dropped_words"])
    else:
        source = (init_model, (summary["vocab_size"], t.dim, t.seed))
    prior = list(state["metrics"]) if state else []
    start = state["epoch"] if state else 0
    warm = state.get("warm_start") if state else warm

    def checkpoint(epoch: int) -> str | None:
        if cfg.checkpoint_every <= 0 or (epoch + 1) % cfg.checkpoint_every or epoch + 1 == t.epochs:
            return None
        return _checkpoint_url(run, epoch)

    def on_saved(epoch: int, nbytes: int, metrics: list) -> None:
        done = {"epoch": epoch + 1, "shards": n_shards, "models": n_models, "shard_plan": SHARD_PLAN, "corpus_fingerprint": fingerprint,
                "vocab_sha256": digest, "metrics": prior + metrics, "warm_start": warm}
        storage.write_bytes(storage.join(_checkpoint_url(run, epoch), "state.json"), storage.dump_json(done), opts)
        log.info("checkpoint after epoch %d: %s (%.1f MB)", epoch + 1, _checkpoint_url(run, epoch), nbytes / 1e6)

    # The outputs are written from a model, by a worker, once the last round is merged.
    training = Training(shards, words, tables, summary["vocab_size"], n_models, merge_blocks, tag)
    written, metrics, restarts, threads = train_epochs(client, cfg, training, source, start, checkpoint, on_saved,
                                                       finish=(_write_outputs, (run, vocab, opts)))
    history = prior + metrics

    # -- publish: data files from a worker, manifest last, then LATEST
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.to_dict(),
        "corpus": {"files": [u for u, _ in files], "bytes": sum(s for _, s in files),
                   "fingerprint": fingerprint, "blocks": len(blocks), "shards": n_shards, "shard_bytes": shard_bytes,
                   **summary},
        "metrics": {"epochs": history, "count_seconds": count_seconds, "encode_seconds": encode_seconds,
                    "total_seconds": time.perf_counter() - t_start, "resumed_after_epoch": start or None,
                    "restarts_after_worker_loss": restarts,
                    "rounds_per_epoch": int(words.shape[1]), "merge_blocks": merge_blocks, "rate_multiplier": rates,
                    "models": n_models, "threads_per_model": threads,
                    # Threads sharing a model race (Hogwild): the bits then depend on timing.
                    "bit_reproducible": max(threads) == 1,
                    "client_peak_rss_bytes": _peak_rss()},
        "parent": warm,
        "files": written,
        "versions": {"nsdist": __version__, "dask": dask.__version__, "distributed": distributed.__version__,
                     "numpy": np.__version__},
    }
    publish(cfg.out, run_id, manifest, opts)
    if storage.exists(storage.join(run, "checkpoints"), opts):
        storage.remove(storage.join(run, "checkpoints"), opts, recursive=True)
    log.info("published %s", run)
    return TrainResult(run_id, run, {"run_id": run_id, **manifest})
