"""What nsdist sets up on every worker: its allocator settings, a log that keeps nsdist's
expected errors to their one line on the client, and Dask's view of its objects."""

from __future__ import annotations

import logging
import os
import re

import pyarrow as pa
from dask.sizeof import sizeof
from distributed import WorkerPlugin

from .. import errors
from ..counts import Scanned
from ..encode import Shard
from ..memory import set_malloc_thresholds
from ..merge import Part
from ..warm import Neighbours, NewRows, NewSums
from .models import Merged


class WorkerMemory(WorkerPlugin):
    """Set up a worker for nsdist's memory use (``client.register_plugin``; workers that join
    later get it too).

    - Arrow allocates through malloc, whose freed pages ``release_memory`` returns. With Arrow's
      default pool (mimalloc) scanning a block kept more of its transient memory: real text, 2
      workers, peak growth 88 MB against 73-75 MB with malloc.
    - glibc keeps allocations under 4 MiB in its heap, with its default trim threshold,
      instead of what Dask's nanny sets (``MALLOC_TRIM_THRESHOLD_=65536``, which
      also fixes the mmap threshold at 128 KiB): every array then came from a fresh mmap and
      every free gave pages back, and page faults made scanning 1.6x slower (8 MiB blocks, in
      one process: 78 ms against 47 ms each). nsdist returns memory itself between stages
      (``release_memory``).
    """

    name = "nsdist-memory"
    idempotent = True

    def setup(self, worker) -> None:
        pa.set_memory_pool(pa.system_memory_pool())
        set_malloc_thresholds(trim=128 * 2**10, mmap=4 * 2**20)  # trim: glibc's default


class ExpectedErrors(WorkerPlugin):
    """Keep the worker's log free of nsdist's own errors (``QuietExpectedErrors`` on the
    ``distributed.worker`` logger): a task that raises one (a corrupt corpus file: DataError)
    fails the job with one line on the client, which says what to fix, and Dask's "Compute
    Failed" record would repeat it on every worker's stderr with a traceback. Unexpected
    exceptions keep that record."""

    name = "nsdist-expected-errors"
    idempotent = True

    def setup(self, worker) -> None:
        self.teardown(worker)  # one filter, however often the plugin is set up
        logging.getLogger("distributed.worker").addFilter(QuietExpectedErrors())

    def teardown(self, worker) -> None:
        logger = logging.getLogger("distributed.worker")
        for f in [f for f in logger.filters if isinstance(f, QuietExpectedErrors)]:
            logger.removeFilter(f)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep
_FRAME_FILE = re.compile(r'File "([^"]+)", line \d+')


class QuietExpectedErrors(logging.Filter):
    """Drops the worker's "Compute Failed" record of a task whose exception is nsdist's error of
    bad input (``_nsdist_errors``) raised in nsdist's code. The record holds only text (its args are
    key, state, task, ``repr(exception)``, traceback), so both are read from there: the
    exception's class name and the file of the traceback's last frame."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith("Compute Failed")
                and isinstance(record.args, tuple) and len(record.args) == 5):
            return True
        exception, traceback = record.args[3], record.args[4]
        frames = _FRAME_FILE.findall(traceback) if isinstance(traceback, str) else []
        expected = (isinstance(exception, str) and exception.partition("(")[0] in _nsdist_errors()
                    and bool(frames) and os.path.realpath(frames[-1]).startswith(_PACKAGE))
        return not expected


def _nsdist_errors() -> set[str]:
    """Names of the errors of bad input (ConfigError, DataError and their subclasses). Storage
    refusals and transient failures stay in the worker's log: they are about that worker's
    credentials, network or store, which its operator reads there."""
    found, todo = set(), [errors.ConfigError, errors.DataError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo += cls.__subclasses__()
    return found


# Dask's memory accounting (dashboard, spilling) would otherwise count these as a few bytes. Parts
# and merged blocks that hold every row of their block are views of a worker's model: no
# memory of their own.
sizeof.register(Scanned)(lambda s: s.nbytes)
sizeof.register(Shard)(lambda s: s.nbytes)
sizeof.register(Part)(lambda p: p.nbytes if p.ids_in is not None else 0)
sizeof.register(Merged)(lambda m: m.nbytes if m.ids_in is not None else 0)
sizeof.register(Neighbours)(lambda n: n.nbytes)
sizeof.register(NewSums)(lambda n: n.nbytes)
sizeof.register(NewRows)(lambda n: n.nbytes)
