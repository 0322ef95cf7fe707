"""A job's inputs, checked before any cluster work: the corpus (or edge list) files, a run to
resume, a model to warm-start from; local paths made absolute, as the run records them; the
blocks the workers read, planned from metadata only."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from . import storage
from .config import JobConfig, config_from_dict
from .corpus import is_parquet, plan_blocks
from .errors import ConfigError, DataError
from .graph.corpus import plan_edge_blocks
from .runs import read_manifest, resolve_run


def plan_inputs(cfg: JobConfig, files: list[tuple[str, int]]) -> list:
    """The blocks of a job's corpus, or of its graph's edge lists (text byte ranges, Parquet row
    groups whose node columns are checked here)."""
    if cfg.edges:
        return plan_edge_blocks(files, cfg.store, cfg.blocksize, cfg.graph)
    return plan_blocks(cfg.corpus, cfg.store, cfg.blocksize, cfg.parquet_column, files,
                       cfg.negatives_column)


def absolute_urls(cfg: JobConfig) -> JobConfig:
    """``cfg`` with its local paths made absolute (corpus, edges, out, save_walks), as its run
    records them: a printed resume command, a claim and a manifest then mean the same from any
    working directory."""
    return replace(cfg, corpus=tuple(map(storage.absolute, cfg.corpus)), edges=tuple(map(storage.absolute, cfg.edges)),
                   out=cfg.out and storage.absolute(cfg.out), save_walks=cfg.save_walks and storage.absolute(cfg.save_walks))


def check_inputs(cfg: JobConfig, init_from: str | None = None, resume: str | None = None) -> list[tuple[str, int]]:
    """Fail fast, before any cluster starts: the corpus files (url, size) of a job; a warm start's
    model this job cannot continue; a run to resume that is published or was started on another
    corpus."""
    if not cfg.corpus and not cfg.edges:
        raise ConfigError("no corpus given; pass --corpus URL, or --edges URL for a graph (or set corpus or edges "
                          "in the job spec)")
    if not cfg.out:
        raise ConfigError("no output given; pass --out URL (or set out in the job spec)")
    store = cfg.store
    try:
        store.check_writable(cfg.out)
    except (NotADirectoryError, PermissionError) as e:
        if not store.is_local(cfg.out):
            raise  # the store's own message (credentials, access) says what to fix
        raise ConfigError(f"cannot write the outputs under {cfg.out!r}: {e}; pass a writable directory or "
                          "prefix as --out") from None
    if init_from:
        parent = resolve_run(init_from, store)
        dim = ((read_manifest(parent, store).get("config") or {}).get("train") or {}).get("dim")
        if dim is not None and dim != cfg.train.dim:
            raise ConfigError(f"--init-from {init_from} has dim {dim}, this job dim {cfg.train.dim}; "
                              f"set dim={dim} or train from scratch")
    files = store.expand(cfg.edges or cfg.corpus)
    text = [u for u, _ in files if not is_parquet(u)]
    if (cfg.negatives_column or cfg.order_column) and text:
        raise DataError(f"negatives_column or order_column is set but corpus file {store.scrub(text[0])!r} "
                        "is not Parquet; sessions are Parquet files (or unset them)")
    if all(size == 0 for _, size in files):
        raise DataError(f"the {what(cfg)} is empty: {some(files, store)} {'has' if len(files) == 1 else 'have'} "
                        f"0 bytes; check that the files were written completely, or pass another {flag(cfg)}")
    if resume:
        run = resume.rstrip("/")
        run_id = run.rsplit("/", 1)[-1]
        if store.exists(storage.join(run, "manifest.json")):
            raise DataError(f"run {run_id} was already published; nothing to resume")
        claimed = store.read_json(storage.join(run, "_claim.json")).get("corpus_fingerprint")
        if claimed is not None and claimed != corpus_fingerprint(files):
            raise DataError(f"the corpus changed since run {run_id} started (files or sizes differ); start a new run")
    return files


def resume_config(run: str, current: JobConfig) -> JobConfig:
    """The configuration of a run to resume: as it was claimed, with this invocation's storage
    options and cluster (neither is part of what the run computes). The output is where the run
    is (``<out>/runs/<run_id>``), whatever directory the job that claimed it ran in."""
    run = run.rstrip("/")
    store = current.store
    if not store.exists(storage.join(run, "_claim.json")):
        if store.exists(storage.join(run, "runs")) or store.exists(storage.join(run, "LATEST")):
            raise ConfigError(f"--resume {run} is an output, not a run; pass one of its runs, "
                              f"{storage.join(run, 'runs', '<run_id>')} (the folder without a manifest.json)")
        raise DataError(f"--resume {run}: no run there (no _claim.json); check the URL")
    if store.exists(storage.join(run, "manifest.json")):
        raise DataError(f"run {run.rsplit('/', 1)[-1]} was already published; nothing to resume")
    claim = store.read_json(storage.join(run, "_claim.json"))
    if "config" not in claim:
        raise DataError(f"{run!r} was not started by this nsdist version (no config in _claim.json); retrain")
    saved = claim["config"]
    out = run.rsplit("/", 2)[0] if run.count("/") >= 2 else "."
    return config_from_dict({k: v for k, v in saved.items() if k not in ("storage_options", "cluster", "out")},
                            out=out, storage_options=current.storage_options, cluster=current.cluster)


def what(cfg: JobConfig) -> str:
    return "edge list" if cfg.edges else "corpus"


def flag(cfg: JobConfig) -> str:
    return "--edges" if cfg.edges else "--corpus"


def some(files: list[tuple[str, int]], store, n: int = 3) -> str:
    """"'a', 'b', 'c' and 2 more": the first files of a list, for a message."""
    shown = ", ".join(repr(store.scrub(url)) for url, _ in files[:n])
    return shown + (f" and {len(files) - n} more" if len(files) > n else "")


def corpus_fingerprint(files: list[tuple[str, int]]) -> str:
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()
