"""Shared fixtures: a real Dask cluster of worker processes, tiny corpora."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def client():
    """A LocalCluster with two single-threaded worker processes, shared by the session."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture
def write(tmp_path):
    """write('name.txt', text_or_bytes) -> path of a file under tmp_path."""

    def _write(name: str, data) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        if name.endswith(".gz"):
            import gzip

            data = gzip.compress(data)
        elif name.endswith(".bz2"):
            import bz2

            data = bz2.compress(data)
        elif name.endswith(".zst"):
            import zstandard

            data = zstandard.ZstdCompressor().compress(data)
        path.write_bytes(data)
        return str(path)

    return _write
