"""``nsdist.train``: a whole job from Python, checked and run as ``nsdist train`` runs it."""

from __future__ import annotations

import os
from typing import Any, Mapping

from .config import JobConfig, load_config
from .pipeline import TrainResult


def train(corpus: str | os.PathLike | list | tuple | None, out: str | os.PathLike | None, *, client=None,
          config: str | os.PathLike | Mapping[str, Any] | JobConfig | None = None, resume: str | None = None,
          init_from: str | None = None, storage_options: Mapping[str, Any] | None = None,
          **params: Any) -> TrainResult:
    """Train embeddings on a Dask cluster and publish them under ``out``.

    The job is resolved and checked exactly as ``nsdist train`` does it (the same layers, errors
    and messages), and every input is checked before any cluster work starts.

    Parameters
    ----------
    corpus : str, path or list of them
        Corpus URLs: files, globs or directories (text, ``.gz``/``.bz2``/``.zst``, ``.parquet``),
        local or ``s3://``. None with ``resume`` (the run's own corpus is used), and for a graph
        job, whose edge lists are ``edges=[...]`` (node vectors from random walks over them).
    out : str or path
        Output URL: a local directory or ``s3://bucket/prefix``. None with ``resume``.
    client : distributed.Client, optional
        The cluster to run on. Without one, the client already active in this process is used
        (``distributed.get_client()``), unless ``cluster.scheduler`` is configured; otherwise a
        ``LocalCluster`` is started (``cluster.workers`` processes) and closed after the job.
        nsdist registers two worker plugins on the cluster: one sets the workers' malloc and
        Arrow allocator for its memory use, one keeps its expected errors (bad input) out of the
        workers' logs. Neither changes how other work runs. nsdist's models live in its workers'
        memory for the job's duration and are freed after it, also when it fails.
    config : str, path, mapping or JobConfig, optional
        A job spec: a YAML file, the same keys as a mapping, or a ``JobConfig``.
    resume : str, optional
        The URL of a run that failed (``<out>/runs/<run_id>``): continue from its last
        checkpoint, with its own corpus, output and training configuration.
    init_from : str, optional
        A published model (``<out>`` or a run URL) to warm-start from.
    storage_options : mapping, optional
        fsspec options (S3 endpoint and credentials); never logged or written.
    **params
        Configuration keys, as ``--set`` takes them: training keys bare (``dim=300``), job keys
        (``blocksize=...``), and sections as mappings (``cluster={"workers": 4}``). As on the
        command line, later layers win: defaults < ``config`` < ``NSDIST_*`` environment
        variables < ``params`` < ``corpus``, ``out`` and ``storage_options``.

    Returns
    -------
    TrainResult
        ``run_id``, ``run_url``, the published ``manifest`` and its ``metrics``; ``load()``
        reads the vectors (an ``Embeddings``).

    Raises
    ------
    ConfigError, DataError, TransientError, Interrupted
        As the command line exits 2, 3, 75 and 130; the message names the problem and the fix.

    Examples
    --------
    >>> import nsdist
    >>> result = nsdist.train("corpus.txt", "runs/demo", dim=100, epochs=5)  # doctest: +SKIP
    >>> result.metrics["epochs"][-1]["loss"], result.load().most_similar("king", topn=3)  # doctest: +SKIP
    >>> nodes = nsdist.train(None, "runs/nodes", edges=["s3://bucket/graph/edges.parquet"], directed=False,
    ...                      q=0.5, dim=128, window=10, min_count=1, sample=0)  # doctest: +SKIP
    """
    corpora = () if corpus is None else tuple(os.fspath(c) for c in (
        corpus if isinstance(corpus, (list, tuple)) else [corpus]))
    cfg = load_config(config, params, corpus=corpora, out=None if out is None else os.fspath(out),
                      storage_options=dict(storage_options) if storage_options else None)
    return run(cfg, resume=resume, init_from=init_from, client=client, active=True)


def run(cfg: JobConfig, *, resume: str | None = None, init_from: str | None = None, client=None, active: bool = False,
        quiet: bool = True, connected=None, dry_run: bool = False):
    """Check a resolved job, connect, train (or plan, with ``dry_run``), close: the one path of
    ``nsdist.train``, ``nsdist train`` and ``nsdist demo``.

    The inputs are checked before any cluster starts. ``client``, ``active`` and ``quiet`` are
    ``cluster.session``'s; ``connected(client)`` runs once connected (the CLI logs the dashboard
    link there). Returns the ``TrainResult``, or with ``dry_run`` the plan (``pipeline.dry_run``).
    """
    from . import storage
    from .cluster import session
    from .inputs import absolute_urls, check_inputs, resume_config
    from .dryrun import dry_run as plan_job
    from .pipeline import train as train_job

    resume, init_from = resume and storage.absolute(resume), init_from and storage.absolute(init_from)
    if resume:
        cfg = resume_config(resume, cfg)
    cfg = absolute_urls(cfg)
    files = check_inputs(cfg, init_from, resume)
    with session(cfg.cluster, client, quiet=quiet, active=active) as c:
        if connected is not None:
            connected(c)
        job = plan_job if dry_run else train_job
        return job(cfg, c, resume=resume, init_from=init_from, files=files)
