"""Shared fixtures: a real Dask cluster of worker processes, tiny corpora, an S3 endpoint; and
``require_tool``/``require_root`` for the few tests that need a system tool or root."""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request
from dataclasses import dataclass

import pytest
from distributed import Client, LocalCluster

# ---------------------------------------------------------------- system tools and root
# A test that needs a system tool (chromium, tini, unshare) or root skips where it is missing, with
# a one-line reason, so that `python -m pytest` passes on a laptop. CI (.ci/run) installs the tools,
# runs as root and sets this switch, which turns those skips into failures: CI runs every test.
# Not NSDIST_*: the job reads every NSDIST_* variable as a config key.
REQUIRE_SYSTEM_TESTS = "REQUIRE_SYSTEM_TESTS"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SYSTEM_TESTS, "") not in ("", "0"):
        pytest.fail(f"{reason} [{REQUIRE_SYSTEM_TESTS} is set: every system test must run]", pytrace=False)
    # Reported at the test's line, as a skip mark is, rather than at this helper's.
    raise pytest.skip.Exception(reason, _use_item_location=True)


def require_tool(name: str, why: str) -> str:
    """The path of the system tool ``name``; if it is not on PATH, skip the test (fail it under
    ``REQUIRE_SYSTEM_TESTS``), saying ``why`` the test needs it and how to install it."""
    path = shutil.which(name)
    if path is None:
        _unavailable(f"needs {name}, not on PATH: {why}")
    return path


def require_root(why: str) -> None:
    """Skip the test unless it runs as root (fail it under ``REQUIRE_SYSTEM_TESTS``)."""
    if os.geteuid() != 0:
        _unavailable(f"needs root: {why}")


@pytest.fixture(scope="session")
def client(dead_endpoint):
    """A LocalCluster with two single-threaded worker processes, shared by the session.

    The workers' S3 endpoint is a refusing port on 127.0.0.1: S3 tests must hand workers
    their endpoint and credentials in ``storage_options``, and a task that loses them fails
    locally instead of reaching AWS.
    """
    guard = {"AWS_ENDPOINT_URL": dead_endpoint, "AWS_ENDPOINT_URL_S3": dead_endpoint,
             "AWS_EC2_METADATA_DISABLED": "true"}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", env=guard) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.fixture
def round_tasks(monkeypatch):
    """The keys of the tasks the coordinator submits for each round (either layout's
    ``submit_round``), one list per round in order: a round's coordination cost, exactly."""
    from nsdist.cluster import partitioned, training

    rounds, submit = [], training._Attempt.submit

    def counted(submit_round):
        def submit_counted_round(attempt, epoch, r):
            keys = []
            rounds.append(keys)
            attempt.submit = lambda *args, key, **kw: keys.append(key) or submit(attempt, *args, key=key, **kw)
            try:
                return submit_round(attempt, epoch, r)
            finally:
                del attempt.submit
        return submit_counted_round

    for layout in (training._Attempt, partitioned._Partitioned):
        monkeypatch.setattr(layout, "submit_round", counted(layout.submit_round))
    return rounds


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


# ---------------------------------------------------------------- S3: a real endpoint (moto's server)
# Tests talk HTTP to moto's server on 127.0.0.1, through the same s3fs/botocore stack users
# run, from this process, from Dask worker processes and from CLI subprocesses. Every S3
# test runs with dummy credentials and an explicit endpoint, so nothing can reach real AWS.

S3_BUCKET = "nsdist-test"
S3_KEY, S3_SECRET, S3_REGION = "testing-access-key", "testing-secret-key-0123456789", "us-east-1"
# Variables that could point botocore at real credentials or endpoints; cleared for S3 tests.
_AWS_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
             "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL",
             "FSSPEC_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION")
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL")


def _post(url: str, data: bytes = b"") -> None:
    # An explicit content type: urllib's default (a form) would make the server parse the body away.
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(request, timeout=30).read()


@pytest.fixture(scope="session")
def dead_endpoint():
    """An http URL on 127.0.0.1 that refuses connections (a TCP socket bound, not listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free port of 127.0.0.1, one per session (reset per test by ``s3``)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class S3:
    """One test's S3: the endpoint, an empty bucket and the options that reach it."""

    endpoint: str
    bucket: str
    storage_options: dict

    def url(self, *parts: str) -> str:
        return "s3://" + "/".join([self.bucket, *parts])

    def boto(self):
        """A plain boto3 client, to check objects independently of nsdist and s3fs."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name=S3_REGION)

    def env(self, endpoint_var: str = "AWS_ENDPOINT_URL_S3") -> dict:
        """Environment variables that give a fresh process credentials and this endpoint."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": S3_REGION,
                endpoint_var: self.endpoint}


def _isolate_aws_env(monkeypatch, tmp_path) -> None:
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    # No instance-metadata probes (169.254.169.254) and no developer ~/.aws files.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(s3_server, dead_endpoint, monkeypatch, tmp_path):
    """A fresh moto state with bucket ``S3_BUCKET``, reached through ``storage_options``.

    The environment holds dummy credentials and a refusing endpoint, so code that drops
    ``storage_options`` fails on 127.0.0.1 instead of silently working (or reaching AWS).
    """
    import s3fs

    _post(f"{s3_server}/moto-api/reset")
    _post(f"{s3_server}/moto-api/reset-auth", b"inf")  # a test may have switched IAM checks on
    # s3fs caches filesystem instances (and their listings) by options: a cached instance
    # would carry a previous test's endpoint or stale directory listings.
    s3fs.S3FileSystem.clear_instance_cache()
    _isolate_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_endpoint)
    options = {"key": S3_KEY, "secret": S3_SECRET,
               "client_kwargs": {"endpoint_url": s3_server, "region_name": S3_REGION}}
    env = S3(s3_server, S3_BUCKET, options)
    env.boto().create_bucket(Bucket=S3_BUCKET)
    yield env
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(s3, monkeypatch, request):
    """Like ``s3``, but credentials and endpoint come from environment variables only.

    Parametrize indirectly with the endpoint variable (default ``AWS_ENDPOINT_URL_S3``).
    ``storage_options`` is empty. Processes started after this fixture inherit the variables.
    """
    import fsspec.config
    import s3fs

    var = getattr(request, "param", "AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name, value in s3.env(var).items():
        monkeypatch.setenv(name, value)
    if var.startswith("FSSPEC_"):
        # fsspec reads FSSPEC_<PROTOCOL>_<KEY> variables once, at import: new processes see
        # the variable; this one gets the config entry that import would have made.
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3.endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    return S3(s3.endpoint, s3.bucket, {})


@pytest.fixture
def publish_run():
    """publish_run(out, words, vectors, counts=None, storage_options=None, run_id=None) -> run id.

    Publishes hand-made vectors through the real claim/write/publish path, without training.
    """
    import numpy as np
    import pyarrow as pa

    from nsdist import formats, runs

    def _publish(out, words, vectors, counts=None, storage_options=None, run_id=None, **manifest):
        run_id = run_id or runs.new_run_id()
        vectors = np.asarray(vectors, dtype=np.float32)
        counts = np.asarray(counts if counts is not None else np.arange(len(words), 0, -1), dtype=np.int64)
        runs.claim_run(out, run_id, storage_options)
        files = formats.write_run_files(runs.run_url(out, run_id), pa.array(words, pa.string()), counts, vectors,
                                        vectors[:, ::-1].copy(), storage_options)
        runs.publish(out, run_id, {"created": manifest.pop("created", "2026-01-01T00:00:00Z"), "files": files,
                                      "corpus": {"vocab_size": len(words)},
                                      "config": {"train": {"dim": vectors.shape[1]}}, **manifest},
                        storage_options)
        return run_id

    return _publish
