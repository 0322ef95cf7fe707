"""The client side of the cluster: connecting, reductions, and waiting while watching workers."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import os
import signal
import threading
import time

import dask
import distributed
from distributed import Client, KilledWorker, LocalCluster
from distributed.security import Security

from .. import forkserver
from ..config import ClusterConfig
from ..errors import STOP, ConfigError, OutOfMemory, TransientError
from .models import ModelLost

log = logging.getLogger("nsdist")

WATCH_SECONDS = 2.0  # how often the client checks, while it waits, that the models' workers are there
# A worker paused this long (memory above Dask's pause threshold) holds its tasks for good.
PAUSED_SECONDS = 60.0
# Tasks waiting this long for workers that left (gather_alive) wait for good.
STRANDED_SECONDS = 30.0


def _security(cfg: ClusterConfig, address: str | None) -> Security | None:
    """The TLS set-up of a job's connection (None: plain TCP); ConfigError, before anything starts,
    when the address and the TLS keys disagree. One certificate serves every role: the client's,
    and a local cluster's scheduler and workers."""
    scheme = address.partition("://")[0] if address and "://" in address else "tcp"
    if not cfg.tls_ca_file:
        # Dask's own configuration (distributed.comm.tls.*) may hold the files instead.
        if scheme == "tls" and Security().get_connection_args("client").get("ssl_context") is None:
            raise ConfigError(f"the scheduler {address} uses TLS: set cluster.tls_ca_file, cluster.tls_cert and "
                              "cluster.tls_key (PEM files signed by the cluster's CA)")
        return None
    if address and scheme != "tls":
        raise ConfigError(f"cluster.tls_* are set but the scheduler address {address} is not tls://; "
                          f"use tls://{address.partition('://')[2] or address} or unset the TLS keys")
    files = {"tls_ca_file": cfg.tls_ca_file, "tls_client_cert": cfg.tls_cert, "tls_client_key": cfg.tls_key}
    if not address:
        files |= {f"tls_{role}_{kind}": getattr(cfg, f"tls_{kind}")
                  for role in ("scheduler", "worker") for kind in ("cert", "key")}
    return Security(require_encryption=True, **files)


# A local cluster's background work where no dashboard is served and the user's Dask config
# leaves Dask's defaults: every worker's statistical profiler samples its threads' stacks every
# 10 ms (for the dashboard's profile page), and every process measures its event loop's lag every
# 20 ms and its system metrics every 0.5 s (the dashboard's system page). On 2 cores that took
# 3.0-3.3% of a core per idle worker and 5.2% in the client's process (scheduler, nannies),
# 0.6-0.7% and 1.6% with these; a sessions job of 2 workers trained about 3% faster (8
# alternating pairs; benchmarks/README.md). The memory monitor keeps its interval: it is what
# stops a worker over its limit.
QUIET = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
         "distributed.admin.system-monitor.interval": "2s"}


def _quiet_background() -> dict:
    """QUIET, less the keys the user set: in Dask's config files or DASK_* variables, or to
    another value than Dask's default; nothing where Dask serves a dashboard (bokeh installed:
    ``nsdist[dashboard]``), whose pages show that work."""
    if importlib.util.find_spec("bokeh") is not None:
        return {}
    defaults, users = dask.config.merge(*dask.config.defaults), dask.config.collect()
    unset = object()
    return {k: v for k, v in QUIET.items()
            if dask.config.get(k, unset, config=users) is unset
            and dask.config.get(k) == dask.config.get(k, config=defaults)}


def connect(cfg: ClusterConfig) -> tuple[Client, LocalCluster | None]:
    """--scheduler ADDRESS, else DASK_SCHEDULER_ADDRESS, else an embedded LocalCluster; over TLS
    with cluster.tls_*."""
    address = cfg.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    sec = _security(cfg, address)
    cluster = None
    deadline = time.monotonic() + cfg.timeout  # one budget for reaching the scheduler and its workers
    try:
        if address:
            _check_address(address)
            log.info("connecting to the Dask scheduler at %s (giving up at %s, in %.0f s; cluster.timeout)", address,
                     _clock(deadline), cfg.timeout, extra={"scheduler": address, "timeout_seconds": cfg.timeout})
            client = Client(address, timeout=cfg.timeout, security=sec)
        else:
            workers = cfg.workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)
            log.info("starting a local cluster of %d worker process(es) x %d thread(s)%s", workers,
                     cfg.threads_per_worker, " over TLS" if sec else "")
            # Forked from the server the command started (forkserver.py); a worker the nanny
            # restarts later is spawned as Dask does.
            method = "forkserver" if forkserver.running() else dask.config.get("distributed.worker.multiprocessing-method")
            with _workers_ignore_sigint(), dask.config.set({"distributed.worker.multiprocessing-method": method,
                                                            **_quiet_background()}):
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=cfg.threads_per_worker, processes=True,
                    dashboard_address=":0", host="127.0.0.1", security=sec, protocol="tls://" if sec else None,
                )
            client = Client(cluster)
    except ValueError as e:  # distributed parses the address: "invalid address", "unknown scheme"
        raise ConfigError(f"invalid Dask scheduler address {address!r} ({e}); pass tcp://HOST:PORT (or tls://...) "
                          "as --scheduler, DASK_SCHEDULER_ADDRESS or cluster.scheduler") from None
    except OSError as e:
        # A TLS scheduler resets a plain TCP connection: the same error as a scheduler not running.
        hint = "" if sec else " (one that uses TLS needs a tls:// address and cluster.tls_*)"
        raise TransientError(f"cannot reach the Dask scheduler at {address!r} within {cfg.timeout:.0f} s: {e}; "
                             f"is it running{hint}? (cluster.timeout sets the wait)") from None
    try:
        if address:
            log.info("waiting for %d worker(s) at %s until %s", cfg.wait_for_workers, address, _clock(deadline),
                     extra={"scheduler": address, "workers": cfg.wait_for_workers})
        client.wait_for_workers(cfg.wait_for_workers, timeout=max(1.0, deadline - time.monotonic()))
    except (TimeoutError, distributed.TimeoutError) as e:
        client.close()
        raise TransientError(
            f"no {cfg.wait_for_workers} worker(s) joined {address or 'the local cluster'} within "
            f"{cfg.timeout:.0f} s; start workers or raise cluster.timeout"
        ) from e
    return client, cluster


def _readable(url: str, store) -> Exception | None:
    """What reading the size of ``url`` raises on this worker (None: it can read it). Returned,
    not raised: an expected error is the client's to report, not a worker log's traceback."""
    from .. import storage
    from ..errors import NsdistError

    try:
        storage.size(url, store)
    except (NsdistError, OSError) as e:
        return e
    return None


def check_readable(client: Client, url: str, store) -> None:
    """Every worker reads the size of ``url`` with the job's storage options; the first worker's
    error (no credentials there, no route to the store) is raised here."""
    failed = [e for e in client.run(_readable, url, store).values() if e is not None]
    if failed:
        raise failed[0]


def _check_address(address: str) -> None:
    """ValueError for an address distributed cannot parse, before a Client is made of it: a
    Client whose constructor raised is only half built, and closing it when it is collected can
    deadlock the next cluster this process starts."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        parse_host_port(location)


def _clock(deadline: float) -> str:
    """A time.monotonic() deadline as wall-clock time, HH:MM:SS."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() + deadline - time.monotonic()))


# Dask's loggers that complain while a cluster closes (distributed's logging config gives
# tornado.application a level of its own).
DASK_LOGGERS = ("distributed", "tornado", "tornado.application", "asyncio")


@contextlib.contextmanager
def session(cfg: ClusterConfig, client: Client | None = None, quiet: bool = True, active: bool = False):
    """The client a job runs on: ``client`` if given; else, with ``active`` and no configured
    scheduler, the client already active in this process (``distributed.get_client``); else a
    new connection (``connect``), closed on exit together with the local cluster it may have
    started. A client nsdist did not make is left open."""
    if client is None and active and not (cfg.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")):
        with contextlib.suppress(ValueError):
            client = distributed.get_client()
            log.info("using the active Dask client (scheduler %s)", client.scheduler.address)
    if client is not None:
        if client.status in ("closing", "closed"):
            raise ConfigError("the Dask client passed as client= is closed; pass an open Client, or none to use "
                              "cluster.scheduler or a LocalCluster")
        yield client
        return
    client, cluster = connect(cfg)
    try:
        yield client
    finally:
        close(client, cluster, quiet)


def close(client: Client, cluster: LocalCluster | None, quiet: bool = True) -> None:
    """Close a client and the local cluster nsdist started for it. Its workers outlive its
    scheduler for a moment and would log failed heartbeats with tracebacks after a job that
    succeeded: with ``quiet``, they and this process's Dask loggers are silenced while it closes
    (this process's levels are restored after). The local cluster's workers then exit without
    the garbage collector's passes over everything they imported (``_closing``)."""
    levels = {name: logging.getLogger(name).level for name in DASK_LOGGERS}
    if quiet:
        _silence()
    if cluster is not None:
        with contextlib.suppress(Exception):
            client.run(_closing, quiet, on_error="ignore")
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _closing(quiet: bool) -> None:
    """On a worker of the local cluster, just before it closes: silence Dask's loggers (with
    ``quiet``), and freeze what the process holds (``gc.freeze``), so that the collections at
    its exit skip it: the cluster's close waits for every worker's exit, and those passes over
    numba's, pyarrow's and Dask's objects are most of that wait (benchmarks/README.md)."""
    if quiet:
        _silence()
    gc.freeze()


def _silence() -> None:
    # Above CRITICAL: a scheduler that loses its client mid-send (a job stopped by SIGTERM) logs
    # "Closed comm ... while trying to write" at CRITICAL, with a traceback.
    for name in DASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def _workers_ignore_sigint():
    """Start processes that ignore SIGINT: Ctrl-C at a terminal reaches the whole process group,
    and each worker of a local cluster would print its own KeyboardInterrupt traceback; the job
    (this process) stops them instead. A process started while SIGINT is ignored keeps ignoring
    it (Python installs its handler only where SIGINT is not ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def workers(client: Client) -> list[str]:
    """The workers' addresses, sorted: the order shards and blocks are dealt in."""
    return sorted(client.scheduler_info()["workers"])


def memory_limits(client: Client) -> dict[str, int]:
    """Each worker's memory limit in bytes (0: none set)."""
    return {w: info.get("memory_limit") or 0 for w, info in client.scheduler_info()["workers"].items()}


def process_memory(client: Client) -> dict[str, int]:
    """Each worker process's memory in bytes as of its last heartbeat (Python, Dask, numba's
    kernels and what it holds): what a job's own memory comes on top of."""
    return {w: (info.get("metrics") or {}).get("memory") or 0 for w, info in client.scheduler_info()["workers"].items()}


def threads(client: Client) -> dict[str, int]:
    """Threads per worker."""
    return {w: info["nthreads"] for w, info in client.scheduler_info()["workers"].items()}


def submit(client: Client, fn, *args, key: str):
    """A future of ``fn(*args)``, computed on a worker (futures among ``args`` resolved there)."""
    return client.submit(fn, *args, key=key)


def setup_workers(client: Client) -> None:
    """Give every worker, and any that joins later, nsdist's set-up (plugin.WorkerMemory,
    plugin.ExpectedErrors); say when the workers will compile the kernels first (a fresh install)."""
    from .. import compiled
    from .plugin import ExpectedErrors, WorkerMemory

    client.register_plugin(WorkerMemory())
    client.register_plugin(ExpectedErrors())
    fresh = [w for w, yes in client.run(compiled.fresh, on_error="ignore").items() if yes is True]
    if fresh:
        log.info("compiling nsdist's kernels on %d worker(s): a fresh install's first job takes a few seconds "
                 "longer (numba caches them for later jobs)", len(fresh), extra={"stage": "compile"})


def compute(client: Client, fn, *args, key: str):
    """``fn(*args)`` on a worker (futures among ``args`` resolved there); its small result."""
    return client.submit(fn, *args, key=key).result()


def tree_levels(client: Client, fn, futures: list, key: str, fan_in: int = 8) -> tuple[list, int]:
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


def tree_reduce(client: Client, fn, futures: list, key: str, fan_in: int = 8):
    """Reduce futures with ``fn(*group)`` in a tree on the workers; returns one future."""
    futures, level = tree_levels(client, fn, futures, key, fan_in)
    return futures[0] if len(futures) == 1 else client.submit(fn, *futures, key=f"{key}-{level}-0")


def gather_watching(client: Client, futures, workers: list[str]):
    """``client.gather(futures)``; raises ModelLost as soon as one of ``workers`` has left the
    cluster, or a task failed because it did. Tasks on models are pinned to their worker (work stealing must not move them to a
    worker without the model), so after a loss they would wait for it forever; and a worker that
    stays paused (its memory above Dask's pause threshold) would hold them forever: OutOfMemory
    after PAUSED_SECONDS."""
    flat = distributed.futures_of(futures)
    paused_since: dict[str, float] = {}
    while True:
        if STOP.is_set():
            raise KeyboardInterrupt
        try:
            distributed.wait(flat, timeout=WATCH_SECONDS)
            return client.gather(futures)
        except (TimeoutError, distributed.TimeoutError):
            status = client.run_on_scheduler(_worker_status)
            gone = sorted(set(workers) - set(status))
            if gone:
                raise ModelLost(f"worker {', '.join(gone)} left the cluster") from None
            now = time.monotonic()
            paused_since = {w: paused_since.get(w, now) for w in workers if status.get(w) == "paused"}
            stuck = [w for w, since in paused_since.items() if now - since >= PAUSED_SECONDS]
            if stuck:
                raise OutOfMemory(f"worker {stuck[0]} has been paused for {PAUSED_SECONDS:.0f} s: its memory is above "
                                  f"Dask's pause threshold ({_limit(client, stuck[0])}) while training; give the "
                                  "workers more memory, or train a smaller model (a lower dim, a higher min_count "
                                  "or max_vocab)") from None
        except RuntimeError as e:
            # When a worker holding an actor (models.Peer) leaves, Dask errs the actor's future and
            # the tasks that take it ("Worker holding Actor was lost"): a lost model, not a bug.
            gone = sorted(set(workers) - set(client.run_on_scheduler(_worker_status)))
            if gone and not isinstance(e, ModelLost):
                raise ModelLost(f"worker {', '.join(gone)} left the cluster ({e})") from None
            raise


class Stranded(RuntimeError):
    """Tasks wait for workers that left the cluster (``gather_alive``)."""


def gather_alive(client: Client, futures):
    """``client.gather(futures)`` once ``wait_alive``."""
    wait_alive(client, futures)
    return client.gather(futures)


def wait_alive(client: Client, futures) -> None:
    """Wait for ``futures``, raising Stranded when tasks have waited STRANDED_SECONDS for
    workers that left. A task placed on a worker with ``allow_other_workers`` should move to
    another one when its worker dies; when no worker was left at that moment (one worker, or all
    of them killed at once, as a memory limit does), Dask keeps it for the departed worker's
    address ("no-worker") even after a new worker joins, and the wait would never end."""
    flat = distributed.futures_of(futures)
    since = None
    while True:
        if STOP.is_set():
            raise KeyboardInterrupt
        try:
            distributed.wait(flat, timeout=WATCH_SECONDS)
            return
        except (TimeoutError, distributed.TimeoutError):
            stranded = client.run_on_scheduler(_stranded)
            since = (since or time.monotonic()) if stranded else None
            if since is not None and time.monotonic() - since >= STRANDED_SECONDS:
                raise Stranded(f"{stranded} task(s) wait for workers that left the cluster") from None


def _stranded(dask_scheduler=None) -> int:
    """Tasks that wait for a worker ("no-worker") whose restrictions name only departed workers."""
    present = set(dask_scheduler.workers)
    return sum(1 for ts in dask_scheduler.tasks.values()
               if ts.state == "no-worker" and ts.worker_restrictions and not ts.worker_restrictions & present)


def _worker_status(dask_scheduler=None) -> dict[str, str]:
    return {w: ws.status.name for w, ws in dask_scheduler.workers.items()}


def _limit(client: Client, worker: str | None = None) -> str:
    """A worker's memory limit (the smallest, without ``worker``), for messages."""
    limits = memory_limits(client)
    known = [v for w, v in limits.items() if v and (worker is None or w == worker)]
    return f"memory limit {min(known) / 1e6:,.0f} MB" if known else "no memory limit set"


@contextlib.contextmanager
def out_of_memory(client: Client, stage: str, fix: str):
    """Workers that die while ``stage`` runs (Dask gives up on a task: KilledWorker) most likely
    ran out of memory: an OutOfMemory naming the stage, the workers' limit and ``fix``."""
    try:
        yield
    except KilledWorker as e:
        task = getattr(e, "task", None) or (e.args[0] if e.args else "a task")
        raise OutOfMemory(f"workers died while {stage} (Dask gave up on {task} after they died running it), most "
                          f"likely out of memory ({_limit(client)}); give the workers more memory or add workers, "
                          f"or {fix}") from None
    except Stranded as e:
        raise OutOfMemory(f"workers died while {stage} ({e}), most likely out of memory ({_limit(client)}); give "
                          f"the workers more memory or add workers, or {fix}") from None
