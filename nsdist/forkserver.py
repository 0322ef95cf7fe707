"""Local workers forked from one process that has imported nsdist, instead of each spawned anew.

A spawned worker starts a fresh interpreter, imports Dask, nsdist, numba and pyarrow, and
initialises numba's compiler at its first kernel: about a second of CPU per worker, on the cores
the job is about to train on. The ``nsdist`` command starts a fork server (``start``) first
thing when its command line says the job will start a local cluster (and stops it if its config
then names a scheduler), before it parses its arguments and imports the library itself: the
server imports all that once (``cluster.preload``), on one core while the command imports on
another, and the local cluster's workers are forks of it (Dask's ``multiprocessing-method:
forkserver``), ready at once. The server lives as long as the command (``stop``). A local
cluster started from Python (``nsdist.train`` without a client) spawns its workers as Dask
does: a fork server would outlive the job in the caller's process.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing import forkserver

log = logging.getLogger("nsdist")

PRELOAD = "nsdist.cluster.preload"

# What Dask's nanny sets before it spawns a worker (distributed.nanny.pre-spawn-environ's
# defaults, and the hash seed it fixes): a forked worker's environment at start is the server's.
# One BLAS thread per worker; the same hash seed in every worker.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MALLOC_TRIM_THRESHOLD_": "65536", "PYTHONHASHSEED": "6640"}

_STARTED: list[bool] = []  # [True]: started; [False]: it could not start, not tried again until stop()


def start() -> None:
    """Start this process's fork server, with nsdist's workers' imports preloaded, SIGINT ignored
    (Ctrl-C reaches the whole process group: the command stops its workers itself) and the
    environment a spawned worker would start with."""
    if _STARTED or "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: spawned as before
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD])
    saved = dict(os.environ)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    os.environ.update(WORKER_ENV)
    try:
        forkserver.ensure_running()
    except OSError as e:  # no process or socket to be had: the workers are spawned as Dask does
        log.debug("no fork server for the local workers (%s): they are spawned", e)
        _STARTED.append(False)
        return
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if main:
            signal.signal(signal.SIGINT, previous)
    _STARTED.append(True)
    atexit.register(stop)


def running() -> bool:
    """Whether ``start`` started the fork server that this process's local cluster forks from."""
    return _STARTED == [True]


def stop() -> None:
    """End the fork server (the workers forked from it are the cluster's to stop); it would end
    anyway when this process does, a moment later."""
    started = running()
    _STARTED.clear()
    if not started:
        return
    stop_server = getattr(forkserver._forkserver, "_stop", None)  # no public way to end it before exit
    if stop_server is not None:
        stop_server()
