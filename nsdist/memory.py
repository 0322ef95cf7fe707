"""Giving a worker's freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pyarrow as pa
from distributed import WorkerPlugin


def release_memory() -> None:
    """Return freed memory to the OS: Arrow's pool keeps freed pages for reuse, and glibc keeps
    freed heap pages in its per-thread arenas (Dask receives data on one thread and frees it on
    another). Without this a worker's RSS stays near its preprocessing peak through training
    (real text, 2 workers: up to 60 MB above what it holds). Costs about 0.1 ms.
    """
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class WorkerMemory(WorkerPlugin):
    """Set up a worker for nsdist's memory use (``client.register_plugin``; workers that join
    later get it too): Arrow allocates through malloc, whose freed pages ``release_memory``
    returns. With Arrow's default pool (mimalloc) scanning a block kept more of its transient
    memory: real text, 2 workers, peak growth 88 MB against 73-75 MB with malloc."""

    name = "nsdist-memory"
    idempotent = True

    def setup(self, worker) -> None:
        pa.set_memory_pool(pa.system_memory_pool())


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_MALLOC_TRIM = _malloc_trim()
