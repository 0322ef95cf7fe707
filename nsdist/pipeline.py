"""The job: ``train`` reads top to bottom.

1. plan blocks (byte ranges / row groups) on the client, from metadata only;
2. count words per block on the workers, merge by a tree reduction, build the vocabulary;
3. encode blocks into int32 ids, regroup them into ``shards`` equal training shards that
   stay on the workers for all epochs;
4. for each epoch and each round: every worker trains its shards in place on its one model
   (its threads share it); the round's synchronised rows (a frequency prefix, all rows at an
   epoch's end) are merged, per row block, by the worker that owns the block and copied to the
   others; a checkpoint after each epoch. The learning rate follows global progress;
5. write the output files by row blocks, each from a worker's rows of its block (the small
   sample of the vocabulary and the vectors that ``report.html`` shows from the first); with
   ``topk``, the top-k table from every worker, a row block per task (nearest.py); then the
   report, then the manifest, then LATEST.

Everything that talks to Dask is in the ``cluster`` package. With one thread per worker every
result is a deterministic function of the model a round starts from (random states derive from
the seed, epoch, round and shard; merges sum in model order), so training restarted from a
checkpoint after a worker dies gives the same vectors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from importlib.metadata import version

import dask
import numpy as np

from . import __version__, checkpoint, cluster, layout, probe, report, storage
from .config import JobConfig, TrainConfig
from .errors import ConfigError, DataError, Interrupted, OutOfMemory
from .memory import release_memory
from .merge import rate_summary, shard_rates
from .model import Model, check_finite, init_model, make_tables
from .formats import (OutputPlan, abort_outputs, assembly_groups, complete_output, neighbors_part, neighbors_table,
                      plan_outputs, start_outputs, write_block, write_file, write_neighbors, write_vocab)
from .runs import claim_run, new_run_id, publish, resolve_run, run_url
from .plan import PEAK, SHARD_PLAN, topk_blocks
from .nearest import block_topk
from .vocab import Vocab
from .inputs import check_inputs, corpus_fingerprint, flag, plan_inputs, some, what
from .warm import warm_start_model, warm_stats
from .warm_parts import start_peak

log = logging.getLogger("nsdist")


# ---------------------------------------------------------------- task functions
# Module-level, plain inputs and outputs, never mutating their arguments.

def _tables(vocab: Vocab, t: TrainConfig, models: int):
    tables = make_tables(vocab.counts, t.sample, t.ns_exponent)
    rate = shard_rates(vocab.counts, tables.keep, models, t.alpha, t.merge, t.alpha_scale, t.rate_pivot)
    return replace(tables, rate=rate)


def _rate_summary(*tables) -> dict:
    """The models' per-row rate multipliers (merge.shard_rates), for the manifest."""
    return rate_summary(np.concatenate([t.rate for t in tables]))


def _vocab_and_sample(url: str, vocab, store, model: Model) -> dict:
    """Write vocab.tsv and take the report's sample of the model (a few hundred numbers and
    words: the client never holds the vectors). ``vocab``: the vocabulary's parts
    (cluster.VocabParts), read one at a time, each once for both."""
    release_memory()
    vocab = vocab.cached()
    return {"files": write_vocab(url, vocab.blocks(), store), "sample": report.sample(vocab.words, vocab.counts,
                                                                                        model.win)}


def _digest(vocab) -> str:
    return checkpoint.vocab_digest(vocab.blocks())


def _write_block(plan: OutputPlan, store, alpha: float, item: tuple[int, Vocab], model: Model) -> dict:
    """One row block of the outputs (``item``: the block and its words), written from the rows of
    that block of this worker's model, once they are known to be finite."""
    block, words = item
    lo, hi = plan.blocks[block]
    rows = Model(model.win[lo:hi], model.wout[lo:hi])
    check_finite(rows, alpha)
    return write_block(plan, block, words.words, words.counts, rows.win, rows.wout, store)


def _complete_outputs(plan: OutputPlan, store, records: dict, names: tuple[str, ...], model: Model) -> dict:
    """Files written by blocks, each assembled from its parts and hashed (``names``: one task's
    share, formats.assembly_groups)."""
    return {k: v for name in names for k, v in complete_output(plan, name, records[name], store).items()}


def _write_outputs(client, cfg: JobConfig, run: _Run, counted, final) -> dict:
    """The run's data files ({name: {size, sha256}}) from the final model on the workers: vocab.tsv
    and the report's sample from the first worker beside the vectors by row blocks dealt over the
    workers (formats.write_block; each block's rows checked finite first), then the files
    written by blocks assembled by a task per share of them."""
    t0, store = time.perf_counter(), cfg.store
    plan = start_outputs(plan_outputs(run.url, counted.summary["vocab_size"], cfg.train.dim, len(final.workers),
                                      cfg.word2vec_max_bytes, counted.word_type), store)
    try:
        started = final.write(_vocab_and_sample, (plan.url, counted.view(), store))
        # Each writer receives its block's words only, read from the vocabulary's parts.
        words = counted.slices(plan.blocks, key=f"words-{run.id}")
        blocks = final.each(_write_block, (plan, store, cfg.train.alpha), list(enumerate(words)), "outputs")
        records = {name: [b["parts"][name] for b in blocks] for name in plan.assembled}
        done = final.each(_complete_outputs, (plan, store, records), assembly_groups(plan.assembled, len(final.workers)),
                          "assemble")
        started = final.result(started)
    except BaseException:
        abort_outputs(plan, store)  # the parts written so far (S3 keeps, and bills, an open upload's)
        raise
    files = {**started["files"], **{k: v for b in blocks for k, v in b["files"].items()},
             **{k: v for d in done for k, v in d.items()}}
    seconds = time.perf_counter() - t0
    log.info("outputs: %d row block(s) on %d worker(s), %.1f s%s", len(plan.blocks), len(final.workers), seconds,
             "" if plan.word2vec else " (no vectors.txt or vectors.bin: the input vectors pass word2vec_max_bytes)",
             extra={"stage": "outputs", "blocks": len(plan.blocks), "workers": len(final.workers),
                    "seconds": seconds, "word2vec": plan.word2vec})
    return {"files": files, "sample": started["sample"], "outputs": plan.record, "outputs_seconds": seconds}


def _write_topk(url: str, vocab: Vocab, k: int, store, kind: str, block: tuple[int, tuple[int, int]],
                unit: np.ndarray) -> dict:
    """One part of the top-k table ({name: {size, sha256}}): the neighbours of the rows of
    ``block`` (part, (lo, hi)), from this worker's unit rows of the final model."""
    part, (lo, hi) = block
    idx, scores = block_topk(unit, lo, hi, k)
    name = neighbors_part(part)
    return {name: write_neighbors(storage.join(url, name), neighbors_table(vocab.words, lo, idx, scores, kind),
                                  store)}


def _finish(client, cfg: JobConfig, run: _Run, counted, final) -> dict:
    """The run's data files, from the final model while it is on the workers (``final``,
    cluster.training.Final): the vectors by row blocks from every worker, then the top-k table
    (``topk`` > 0) from every worker, a row block per task."""
    vocab_size, kind, store = counted.summary["vocab_size"], counted.word_type, cfg.store
    written = _write_outputs(client, cfg, run, counted, final)
    if not cfg.topk:
        return written
    t0, vocab = time.perf_counter(), counted.vocab  # the neighbours' words: the whole vocabulary, assembled
    blocks = topk_blocks(vocab_size, len(final.workers), cfg.topk)
    parts = final.deal(_write_topk, (run.url, vocab, cfg.topk, store, kind), list(enumerate(blocks)), "top-k")
    seconds = time.perf_counter() - t0
    written["files"].update(item for part in parts for item in part.items())
    written["topk_seconds"] = seconds
    log.info("top-k table: %d words x %d neighbours in %d part(s) on %d worker(s), %.1f s (%.0f words/s)",
             vocab_size, min(cfg.topk, vocab_size - 1), len(blocks), len(final.workers), seconds,
             vocab_size / max(seconds, 1e-9),
             extra={"stage": "topk", "words": vocab_size, "topk": cfg.topk, "parts": len(blocks),
                    "workers": len(final.workers), "seconds": seconds})
    return written


# ---------------------------------------------------------------- helpers

def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _write_report(run: str, run_id: str, manifest: dict, sample: dict, store) -> dict:
    """Render ``report.html`` from the manifest about to be published; write it into the run."""
    page = report.render({"run_id": run_id, **manifest}, sample)
    return write_file(storage.join(run, "report.html"), page.encode(), store)


@dataclass
class TrainResult:
    """A published run: its id, URL and manifest (config, corpus statistics, metrics, files)."""

    run_id: str
    run_url: str
    manifest: dict
    storage_options: Mapping[str, Any] | None = None

    @property
    def metrics(self) -> dict:
        """Per-epoch loss, words/s and merge cost, and the stages' timings."""
        return self.manifest["metrics"]

    def load(self, verify: bool = False):
        """The run's vectors (``nsdist.load`` of this run)."""
        from .runs import load

        return load(self.run_url, self.storage_options, verify=verify)


# ---------------------------------------------------------------- the job

@dataclass
class _Run:
    """The run a job writes: new (claimed) or resumed (its last checkpoint's ``state``)."""

    id: str
    url: str
    state: dict | None
    parent: str | None  # the published run a warm start reads
    claim: dict | None = None  # a new run's claim, made once its corpus is counted (``_claim``)


def _open_run(cfg: JobConfig, fingerprint: str, resume: str | None, init_from: str | None) -> _Run:
    """Claim a new run, or check that a failed one can be resumed on this corpus."""
    store = cfg.store
    parent = resolve_run(storage.absolute(init_from), store) if init_from else None
    if not resume:
        run_id = new_run_id()
        return _Run(run_id, run_url(cfg.out, run_id), None, parent,
                    {"config": cfg.to_dict(), "init_from": init_from, "corpus_fingerprint": fingerprint})
    url = resume.rstrip("/")
    run_id = url.rsplit("/", 1)[-1]
    state = checkpoint.latest(url, store)
    if state and state.get("shard_plan") != SHARD_PLAN:
        raise DataError(f"run {run_id} was checkpointed by an nsdist that cut shards differently; start a new run")
    if state and state["corpus_fingerprint"] != fingerprint:
        raise DataError(f"the corpus changed since run {run_id} started (files or sizes differ); start a new run")
    return _Run(run_id, url, state, parent)


def _claim(cfg: JobConfig, run: _Run) -> None:
    """Claim a new run under ``out`` (an exclusive create): once its corpus is counted and the
    job is known to fit, so that a job refused before training leaves nothing behind."""
    if run.claim is None:
        return
    try:
        claim_run(cfg.out, run.id, cfg.store, **run.claim)
    except (FileNotFoundError, PermissionError, NotADirectoryError) as e:  # the first write under out
        raise ConfigError(f"cannot write the run under {cfg.out!r} ({e}); pass a writable directory, or an "
                          "s3:// prefix in an existing bucket, as --out (and check the credentials)") from None
    run.claim = None


def _check_words(summary: dict, files: list[tuple[str, int]], store) -> None:
    if summary["raw_tokens"] == 0:
        raise DataError(f"the corpus has no words: {some(files, store)} "
                        f"{'holds' if len(files) == 1 else 'hold'} only blank lines or whitespace (Parquet: empty "
                        "or null token lists); "
                        "check that --corpus names the right files")


def _check_vocab(summary: dict, t: TrainConfig, seconds: float) -> None:
    if summary["vocab_size"] == 0:
        raise DataError(
            f"empty vocabulary: no word occurs min_count={t.min_count} times in "
            f"{summary['raw_tokens']} tokens; lower min_count or check the corpus"
        )
    log.info("vocabulary: %d words (of %d distinct), %d tokens, counted in %.1f s (%.0f tokens/s)",
             summary["vocab_size"], summary["distinct_words"], summary["raw_tokens"], seconds,
             summary["raw_tokens"] / max(seconds, 1e-9), extra={"stage": "count", "seconds": seconds, **summary})


def _source(client, cfg: JobConfig, run: _Run, counted, shards: list, training) -> tuple:
    """How each worker builds the model training starts from (cluster.Source): the last
    checkpoint, a warm start from a published run (new words from their known neighbours in
    ``shards``, warm.py; the partitioned layout's by rows, warm_parts.py), or a fresh model; and
    the warm-start record for the manifest. ``counted``: the job's cluster.Counted; ``training``:
    its cluster.Training."""
    t, store, vocab_size = cfg.train, cfg.store, counted.summary["vocab_size"]
    if run.state:
        log.info("resuming run %s after epoch %d", run.id, run.state["epoch"])
        return cluster.Source(checkpoint.load_model, (checkpoint.url(run.url, run.state["epoch"] - 1), store)), \
            run.state.get("warm_start")
    if not run.parent:
        return cluster.Source(init_model, (vocab_size, t.dim, t.seed)), None

    def warm_start(tag: str) -> tuple:
        if training.parts is not None:  # by rows: no worker holds the parent's matrices
            fits = functools.partial(_check_start, client, cfg, counted, training.parts)
            return cluster.by_rows(client, cfg, counted, training.parts, training.rounds, run.parent, tag, fits)
        return _whole_start(client, cfg, counted, shards, run.parent, tag)

    # What the start was read from is let go once the models are built: a worker lost before the
    # first checkpoint builds it again.
    source, warm = warm_start(run.id)
    source = cluster.Once(source, lambda: warm_start(f"{run.id}-again-{new_run_id()}")[0])
    log.info("warm start from %s: %d known, %d new (%d of them from known neighbours), %d dropped words",
             run.parent, warm["known_words"], warm["new_words"], warm["cooccur_words"], warm["dropped_words"])
    return source, warm


def _whole_start(client, cfg: JobConfig, counted, shards: list, parent: str, tag: str) -> tuple:
    """The replicated layout's warm start: the whole model on every worker (warm.warm_start_model,
    its new rows' sums from ``shards``: cluster.new_row_sums), and the warm-start record."""
    t, vocab = cfg.train, counted.vocab  # assembled whole: the warm start joins it with the parent's vocabulary
    warm = {"parent_run": parent, **cluster.compute(client, warm_stats, vocab, parent, cfg.store, key=f"warm-{tag}")}
    new, warm["cooccur_words"] = None, 0
    if t.warm_new == "cooccur" and warm["new_words"]:
        new, warm["cooccur_words"] = cluster.new_row_sums(client, cfg, shards, vocab, parent, tag)
    return cluster.Source(warm_start_model, (vocab, parent, cfg.store, t.dim, t.seed, new)), warm


def train(cfg: JobConfig, client, resume: str | None = None, init_from: str | None = None,
          files: list[tuple[str, int]] | None = None) -> TrainResult:
    """Run a whole training job on ``client``'s cluster and publish it under ``cfg.out``.

    ``resume``: URL of a run that failed; continue from its last checkpoint (``cfg`` must be
    ``resume_config(resume, ...)``). ``init_from``: URL of a published model to warm-start from.
    A KeyboardInterrupt (Ctrl-C, or SIGTERM in the CLI) becomes ``Interrupted``, whose message
    says how to resume. ``files``: what ``check_inputs`` returned, when the caller checked the
    job before connecting (the corpus is listed once).
    """
    t_start = time.perf_counter()
    files = files if files is not None else check_inputs(cfg, init_from, resume)
    fingerprint = corpus_fingerprint(files)
    # Planned before a run is claimed: a corpus that fails its checks here leaves nothing under out.
    blocks = plan_inputs(cfg, files)
    if not blocks:
        raise DataError(f"the {what(cfg)} has no rows: {some(files, cfg.store)} "
                        f"{'has' if len(files) == 1 else 'have'} no Parquet row groups; "
                        f"check that {flag(cfg)} names the right files")
    cluster.setup_workers(client)
    # The workers read the corpus with the job's storage options: a worker that cannot (no
    # credentials, no route to the store) fails the job here, before it claims a run.
    cluster.check_readable(client, files[0][0], cfg.store)
    read = None
    if cfg.edges:  # read before a run is claimed: a graph the workers cannot hold leaves nothing under out
        read = cluster.read_graph(client, cfg, blocks, f"graph-{new_run_id()}")
        if read.n_edges == 0:
            raise DataError(f"the edge lists have no edges: {some(files, cfg.store)} "
                            f"{'holds' if len(files) == 1 else 'hold'} only blank or comment lines (# or %), "
                            "self-loops or empty Parquet columns; check that --edges names the right files")
        cluster.check_adjacency(read, cluster.memory_limits(client))
    run = _open_run(cfg, fingerprint, resume, init_from)
    try:
        return _job(cfg, client, run, files, blocks, fingerprint, t_start, read)
    except OutOfMemory:
        if run.claim is None and not run.state and not checkpoint.latest(run.url, cfg.store):  # nothing to resume
            cfg.store.remove(run.url, recursive=True)
        raise
    except KeyboardInterrupt:
        if run.claim is not None:
            raise Interrupted(f"interrupted before run {run.id} was claimed: nothing written under {cfg.out}") from None
        store = cfg.store
        saved = checkpoint.latest(run.url, store)
        where = f"after epoch {saved['epoch']}" if saved else "before its first checkpoint"
        url = run.url if "://" in run.url else os.path.abspath(run.url)
        raise Interrupted(f"interrupted: run {run.id} stopped {where}, nothing published; resume with: "
                          f"nsdist train --resume {url}") from None
    finally:
        cluster.release_vocab(client, run.id)


@dataclass
class _Timer:
    """Seconds per stage of a job, for its log lines and the manifest."""

    seconds: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - t0


@dataclass(frozen=True)
class _Checkpoints:
    """When a job saves its model (every ``checkpoint_every`` epochs but the last) and the state
    a resumed run continues from, written once the model is saved."""

    cfg: JobConfig
    run: _Run
    state: dict  # shards, models, fingerprint, vocabulary digest, warm start: fixed for the job

    def url_after(self, epoch: int) -> str | None:
        every, epochs = self.cfg.checkpoint_every, self.cfg.train.epochs
        if every <= 0 or (epoch + 1) % every or epoch + 1 == epochs:
            return None
        return checkpoint.url(self.run.url, epoch)

    def saved(self, epoch, metrics: list) -> None:
        checkpoint.write_state(epoch.checkpoint, {"epoch": epoch.number + 1, **self.state, "metrics": metrics},
                               self.cfg.store)
        log.info("checkpoint after epoch %d: %s (%.1f MB)", epoch.number + 1, epoch.checkpoint,
                 epoch.checkpoint_bytes / 1e6, extra={"stage": "checkpoint", "epoch": epoch.number + 1,
                                                      "url": epoch.checkpoint, "bytes": epoch.checkpoint_bytes})


def _job(cfg: JobConfig, client, run: _Run, files: list, blocks: list, fingerprint: str, t_start: float,
         graph_read=None) -> TrainResult:
    """The job, top to bottom: count (a graph: walk), encode, train epochs of rounds, publish.
    ``graph_read``: a graph job's edges, read on the workers (cluster.read_graph)."""
    t, state, timer = cfg.train, run.state or {}, _Timer()
    _log_start(run, files, blocks)
    n_shards = state.get("shards") or t.shards or sum(cluster.threads(client).values())
    # One model per worker (its threads share it); the models are what the rounds average.
    n_models = state.get("models") or max(1, min(len(cluster.workers(client)), n_shards))

    with timer("count"), cluster.out_of_memory(client, "counting", "lower blocksize"):  # a graph: walked
        counted = (cluster.walk_corpus(client, cfg, graph_read, run.id, n_shards) if cfg.edges
                   else cluster.count_vocab(client, cfg, blocks, run.id, n_shards))
    digest = _check_counted(client, cfg, run, counted, files, timer.seconds["count"])
    # From the counts (the shards' size is exact after encoding): the layout (a resumed run keeps
    # its own), and a replicated model that cannot fit is refused here, before the run is claimed.
    limits, vocab_size = cluster.memory_limits(client), counted.summary["vocab_size"]
    chosen = state.get("layout") or layout.choose(t.layout, limits, _replicated_bytes(
        vocab_size, t.dim, _shard_bytes(counted.summary), n_models), n_models)
    if chosen == "replicated":
        _check_memory(limits, vocab_size, t.dim, _shard_bytes(counted.summary), n_models)
    rounds, groups = _rounds_and_groups(client, cfg, run, counted, limits, n_models, chosen)
    _claim(cfg, run)

    with timer("encode"), cluster.out_of_memory(client, "encoding", "lower blocksize"):  # stay for all epochs
        shards, words, shard_bytes = cluster.encode_shards(client, cfg, counted, n_shards, rounds, run.id)
    _check_encoded(words, n_shards, timer.seconds["encode"])
    training, rates, placed = _training(client, cfg, run, counted, shards, words, shard_bytes, n_models, groups)
    with timer("start"):
        source, warm = _source(client, cfg, run, counted, shards, training)
    epochs = {m["epoch"]: m for m in state.get("metrics", [])}
    saves = _Checkpoints(cfg, run, {"shards": n_shards, "models": n_models, "layout": placed["layout"],
                                    "rounds": rounds, "row_groups": placed.get("row_groups", 1),
                                    "shard_plan": SHARD_PLAN,
                                    "corpus_fingerprint": fingerprint, "vocab_sha256": digest, "warm_start": warm})
    with cluster.train_epochs(client, cfg, training, source, state.get("epoch", 0), saves.url_after) as trained:
        for epoch in trained:  # its rounds trained and merged on the workers; after a lost worker, again
            epochs[epoch.number + 1] = epoch.metrics
            if epoch.checkpoint:
                saves.saved(epoch, [epochs[e] for e in sorted(epochs) if e <= epoch.number + 1])
        # The outputs are written from the workers' models, once the last round is merged.
        written = trained.finish(functools.partial(_finish, client, cfg, run, counted))
        threads, restarts = trained.threads, trained.restarts

    metrics = {"epochs": [epochs[e] for e in sorted(epochs)], "count_seconds": timer.seconds["count"],
               "encode_seconds": timer.seconds["encode"], "warm_seconds": timer.seconds["start"] if warm else None,
               "outputs_seconds": written.get("outputs_seconds"), "topk_seconds": written.get("topk_seconds"),
               "total_seconds": time.perf_counter() - t_start, "resumed_after_epoch": state.get("epoch") or None,
               "restarts_after_worker_loss": restarts, "rounds_per_epoch": training.rounds, "rate_multiplier": rates,
               "models": n_models, "threads_per_model": threads, **placed,
               # Threads sharing a model race (Hogwild): the bits then depend on timing.
               "bit_reproducible": max(threads) == 1, "client_peak_rss_bytes": _peak_rss()}
    corpus = {"files": [u for u, _ in files], "bytes": sum(s for _, s in files), "fingerprint": fingerprint,
              "blocks": len(blocks), "shards": n_shards, "shard_bytes": shard_bytes, **counted.summary}
    manifest = {**_manifest(cfg, corpus, metrics, warm, counted, written["files"]), "outputs": written["outputs"]}
    return _publish(cfg, run, manifest, written["sample"])


def _log_start(run: _Run, files: list, blocks: list) -> None:
    log.info("run %s: corpus %d file(s), %d block(s), %.1f MB", run.id, len(files), len(blocks),
             sum(s for _, s in files) / 1e6, extra={"run_id": run.id, "files": len(files), "blocks": len(blocks),
                                                    "bytes": sum(s for _, s in files)})


def _check_counted(client, cfg: JobConfig, run: _Run, counted, files: list, seconds: float) -> str:
    """A vocabulary worth training (else DataError), logged; its digest, which a resumed run's
    must equal."""
    _check_words(counted.summary, files, cfg.store)
    _check_vocab(counted.summary, cfg.train, seconds)
    digest = cluster.compute(client, _digest, counted.view(), key=f"digest-{run.id}")
    if run.state and run.state["vocab_sha256"] != digest:
        raise DataError(f"the vocabulary of run {run.id} cannot be reproduced from the corpus; start a new run")
    return digest


def _training(client, cfg: JobConfig, run: _Run, counted, shards: list, words: np.ndarray, shard_bytes: int,
              n_models: int, groups: int | None) -> tuple:
    """What training needs on the workers in the job's layout (``groups``: None, the replicated
    layout; else the partitioned one's groups of rounds): (cluster.Training, the rate
    multipliers' summary, the layout's record for the manifest). A layout that cannot fit the
    workers' memory limits is refused here, before any model is built."""
    t, vocab_size, limits = cfg.train, counted.summary["vocab_size"], cluster.memory_limits(client)
    parts = None
    if groups is None:
        _check_memory(limits, vocab_size, t.dim, shard_bytes, n_models)
        tables, rates = _tables_on_workers(client, cfg, counted, n_models, run.id)
        record = {"layout": "replicated"}
        sampled = (shards[0], tables)
    else:
        parts = cluster.partition(client, shards, counted.view(), counted.summary["vocab_tokens"], t, n_models,
                                  vocab_size, cluster.workers(client), run.id, words.shape[1], groups)
        held = cluster.gather_alive(client, parts.sizes)
        _check_partitioned(limits, held, parts.ranges, t.dim, shard_bytes, n_models)
        rates, tables, sampled = cluster.gather_alive(client, [parts.rates])[0], None, parts.probe
        record = {"layout": "partitioned", "held_rows": held, "row_groups": parts.groups}
        log.info("partitioned layout: each model holds %s of %d rows (in %d group(s) of rounds)",
                 ", ".join(f"{h:,}" for h in held), vocab_size, parts.groups, extra={"stage": "layout", **record})
    # The pairs each epoch's reported loss is scored on, drawn once from the first shard (probe.py;
    # partitioned: in the first model's local ids, from the rounds of its first group).
    pairs = cluster.submit(client, probe.sample, *sampled, t.window, t.negative, t.explicit_negatives,
                           t.explicit_weight, t.seed, key=f"probe-sample-{run.id}")
    training = cluster.Training(shards, words, tables, vocab_size, t.dim, n_models, t.merge_blocks, run.id, pairs,
                                parts)
    return training, rates, record


def _rounds_and_groups(client, cfg: JobConfig, run: _Run, counted, limits: dict, n_models: int,
                       chosen: str) -> tuple[int, int | None]:
    """The rounds per epoch the shards are cut for and, in the partitioned layout, the groups of
    rounds a model holds its rows for (None: replicated): a resumed run's own, else
    ``layout.rounds_and_groups`` from the rows a model is expected to hold in a group
    (layout.expected_rows over the vocabulary's parts) and the shards' bytes from the counts."""
    t, known = cfg.train, [v for v in limits.values() if v]
    if run.state:  # a run checkpointed before its rounds were recorded took train.rounds
        return run.state.get("rounds") or t.rounds(n_models), (
            None if chosen == "replicated" else run.state.get("row_groups", 1))
    if chosen == "replicated":
        return t.rounds(n_models), None
    choices = layout.group_plan(t, n_models)
    held = ([0] * len(choices) if t.row_groups or not known else
            cluster.compute(client, _expected_held, counted.view(), n_models, choices, key=f"held-estimate-{run.id}"))
    masters = -(-counted.summary["vocab_size"] // n_models)
    return layout.rounds_and_groups(t, n_models, dict(zip(choices, held)), masters,
                                    _shard_bytes(counted.summary) // n_models, min(known) if known else None)


def _expected_held(vocab, models: int, choices: list[int]) -> list[int]:
    """Rows a model is expected to hold in one of ``g`` groups of rounds, for each ``g`` of
    ``choices`` (``vocab``: the vocabulary's parts, read one at a time)."""
    held = np.zeros(len(choices), np.int64)
    for part in vocab.blocks():
        held += [layout.expected_rows(part.counts, models * g)[0] for g in choices]
    return held.tolist()


def _shard_bytes(summary: dict) -> int:
    """The shards' bytes from the counts (encode.Shard: an int32 per kept token, an int64 offset
    per sentence), before they are encoded."""
    return 4 * summary["vocab_tokens"] + 8 * summary["sentences"]


def _replicated_bytes(vocab_size: int, dim: int, shard_bytes: int, n_models: int) -> int:
    """A worker's model and shards in the replicated layout."""
    return 2 * vocab_size * dim * 4 + shard_bytes // max(n_models, 1)


def _check_partitioned(limits: dict, held: list[int], ranges: list, dim: int, shard_bytes: int, n_models: int,
                       new: int = 0, groups: int = 1) -> None:
    """OutOfMemory when a worker's rows (its model's in a group of rounds and its masters, and one
    exchange of rows in transit) and shards would pass its memory limit at training's peaks
    (layout.worker_peak), or, with ``new`` new rows from known neighbours, at a warm start's
    (warm_parts.start_peak; ``groups``: of rounds)."""
    known = [v for v in limits.values() if v]
    rows = max(h + hi - lo for h, (lo, hi) in zip(held, ranges))
    per = shard_bytes // max(n_models, 1)
    need = max(layout.worker_peak(h, hi - lo, dim, n_models, per) for h, (lo, hi) in zip(held, ranges))
    start = max((start_peak(new, h, hi - lo, dim, n_models, per, groups) for h, (lo, hi) in zip(held, ranges)),
                default=0) if new else 0
    if known and max(need, start) > min(known):
        when, fix = ("while training", "") if need >= start else (
            f"while its warm start's {new:,} new words are built", ", or start new words at random "
            "(train.warm_new=random)")
        raise OutOfMemory(
            f"in the partitioned layout a worker holds up to {rows:,} rows x dim {dim} x 2 float32 and its shards: up "
            f"to {max(need, start) / 1e6:,.1f} MB {when}, more than the workers' memory limit of "
            f"{min(known) / 1e6:,.1f} MB; add workers or give them more memory{fix}, or train a smaller model (a lower "
            "dim, a higher min_count, or max_vocab)")


def _check_start(client, cfg: JobConfig, counted, parts, new: int) -> None:
    """``_check_partitioned`` for a warm start with ``new`` new rows from known neighbours, before
    any of it is built (``parts``: the job's partitioned.Parts)."""
    _check_partitioned(cluster.memory_limits(client), cluster.gather_alive(client, parts.sizes), parts.ranges,
                       cfg.train.dim, _shard_bytes(counted.summary), len(parts.ranges), new, parts.groups)


def _check_memory(limits: dict, vocab_size: int, dim: int, shard_bytes: int, n_models: int) -> None:
    """OutOfMemory, before any model is built, when a worker's model and shards would pass its
    memory limit at training's peaks (plan.PEAK)."""
    known = [v for v in limits.values() if v]
    model = 2 * vocab_size * dim * 4  # input and output vectors, float32
    need = model + shard_bytes // max(n_models, 1)
    if known and PEAK * need > min(known):
        raise OutOfMemory(
            f"the model ({vocab_size:,} words x dim {dim} x 2 float32 = {model / 1e6:,.1f} MB) and a worker's shards "
            f"need up to {PEAK * need / 1e6:,.1f} MB on every worker while training, more than the workers' memory "
            f"limit of {min(known) / 1e6:,.1f} MB; give the workers more memory, or train a smaller model (a lower "
            "dim, a higher min_count, or max_vocab)")


def _check_encoded(words: np.ndarray, n_shards: int, seconds: float) -> None:
    log.info("encoded %d words into %d shard(s) in %.1f s", int(words.sum()), n_shards, seconds,
             extra={"stage": "encode", "words": int(words.sum()), "shards": n_shards, "seconds": seconds})
    if words.sum() == 0:
        raise DataError("the corpus has no sentences with known words; check the corpus and min_count")


def _tables_on_workers(client, cfg: JobConfig, counted, n_models: int, tag: str):
    """The tables every shard trains with (a future) and their rate multipliers' summary."""
    tables = cluster.submit(client, _tables, counted.vocab, cfg.train, n_models, key=f"tables-{tag}")
    return tables, cluster.compute(client, _rate_summary, tables, key=f"rates-{tag}")


def _manifest(cfg: JobConfig, corpus: dict, metrics: dict, warm: dict | None, counted, files: dict) -> dict:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.to_dict(),
        "corpus": corpus,
        "metrics": metrics,
        "parent": warm,
        "word_type": counted.word_type,  # int64: item or node ids, written as int64 in vectors.parquet
        "graph": counted.graph,  # graph jobs: nodes, edges, nodes without edges (which keep a vector)
        "files": files,
        "versions": {"nsdist": __version__, "dask": dask.__version__, "distributed": version("distributed"),
                     "numpy": np.__version__},
    }


def _publish(cfg: JobConfig, run: _Run, manifest: dict, sample: dict) -> TrainResult:
    """The report (which the manifest lists with the data files), the manifest last, then LATEST;
    the checkpoints are then of no use."""
    store = cfg.store
    manifest["files"] = {**manifest["files"], "report.html": _write_report(run.url, run.id, manifest, sample, store)}
    publish(cfg.out, run.id, manifest, store)
    if store.exists(storage.join(run.url, "checkpoints")):
        store.remove(storage.join(run.url, "checkpoints"), recursive=True)
    log.info("published %s", run.url, extra={"stage": "publish", "run_id": run.id, "url": run.url})
    return TrainResult(run.id, run.url, {"run_id": run.id, **manifest}, store)
