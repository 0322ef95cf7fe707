"""Storage and whole jobs on a real S3 endpoint (moto's server on 127.0.0.1).

Credentials and endpoint are given both ways users give them: ``storage_options`` (which
travel inside Dask tasks) and environment variables (which each process reads itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import s3fs
from distributed import Client, LocalCluster

import nsdist
from nsdist import runs, storage
from nsdist.cli import main
from nsdist.config import load_config
from nsdist.errors import DataError, TransientError
from nsdist.pipeline import train
from nsdist.synth import generate

from conftest import ENDPOINT_VARS, S3_KEY, S3_REGION, S3_SECRET, _post


# ---------------------------------------------------------------- credentials and endpoint

@pytest.mark.parametrize("shape", ["client_kwargs", "endpoint_url"])
def test_storage_options_carry_credentials_and_endpoint(s3, shape):
    # s3fs accepts the endpoint nested in client_kwargs (botocore's name) or top level.
    options = dict(s3.storage_options)
    if shape == "endpoint_url":
        options = {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": s3.endpoint}
    url = s3.url("a", "b.txt")
    storage.write_bytes(url, b"hello\n", options)
    assert storage.read_bytes(url, options) == b"hello\n"
    assert s3.boto().get_object(Bucket=s3.bucket, Key="a/b.txt")["Body"].read() == b"hello\n"
    assert storage.listdir(s3.url("a"), options) == ["b.txt"]


@pytest.mark.parametrize("s3_env", ENDPOINT_VARS, indirect=True)
def test_environment_carries_credentials_and_endpoint(s3_env):
    url = s3_env.url("env", "x.txt")
    storage.write_bytes(url, b"1 2 3\n")
    assert storage.read_bytes(url) == b"1 2 3\n"
    assert storage.expand([s3_env.url("env")]) == [(url, 6)]


# ---------------------------------------------------------------- the storage module on S3

def test_expand_directories_and_globs(s3):
    so = s3.storage_options
    for key, data in {"c/a.txt": b"a\n", "c/sub/b.txt": b"bb\n", "c/_SUCCESS": b"", "c/.hidden": b"x",
                      "c/d.txt.gz": gzip.compress(b"d\n"), "other/z.txt": b"z\n"}.items():
        s3.boto().put_object(Bucket=s3.bucket, Key=key, Body=data)
    files = dict(storage.expand([s3.url("c")], so))
    assert set(files) == {s3.url("c/a.txt"), s3.url("c/sub/b.txt"), s3.url("c/d.txt.gz")}
    assert files[s3.url("c/sub/b.txt")] == 3
    assert [u for u, _ in storage.expand([s3.url("c/*.txt"), s3.url("other/*.txt")], so)] == [
        s3.url("c/a.txt"), s3.url("other/z.txt")]
    with pytest.raises(DataError, match="does not exist"):
        storage.expand([s3.url("nope.txt")], so)
    with pytest.raises(DataError, match="matches no files"):
        storage.expand([s3.url("c/*.csv")], so)


def test_read_block_on_s3_equals_local(s3, write):
    text = "".join(f"line {i} " + "w " * (i % 17) + "\n" for i in range(2000))
    local = write("corpus.txt", text)
    url = s3.url("corpus.txt")
    storage.write_bytes(url, text.encode(), s3.storage_options)
    size = len(text.encode())
    for offset, length in [(0, 100), (37, 1000), (5000, 4096), (size - 10, 10), (0, size)]:
        assert storage.read_block(url, offset, length, s3.storage_options) == storage.read_block(local, offset, length)
        streamed = storage.iter_block(url, offset, length, s3.storage_options, piece_bytes=1000)
        assert b"".join(p for p, _ in streamed) == storage.read_block(local, offset, length)
    blocks = [storage.read_block(url, o, 4999, s3.storage_options) for o in range(0, size, 4999)]
    assert b"".join(blocks) == text.encode()  # byte ranges split on newlines lose and repeat nothing
    storage.write_bytes(s3.url("c.txt.gz"), gzip.compress(text.encode()), s3.storage_options)
    assert storage.read_block(s3.url("c.txt.gz"), 0, None, s3.storage_options) == text.encode()
    streamed = list(storage.iter_block(s3.url("c.txt.gz"), 0, None, s3.storage_options, piece_bytes=1000))
    assert len(streamed) > 10 and b"".join(p for p, _ in streamed) == text.encode()


def test_write_list_walk_remove(s3):
    so = s3.storage_options
    storage.write_bytes(s3.url("o/one"), b"1", so)
    with storage.open_write(s3.url("o/deep/two"), so) as f:
        f.write(b"22")
    assert storage.listdir(s3.url("o"), so) == ["deep", "one"]
    walked = storage.walk(s3.url("o"), so)
    assert [(w["url"], w["size"]) for w in walked] == [(s3.url("o/deep/two"), 2), (s3.url("o/one"), 1)]
    assert all(w["modified"].tzinfo is not None for w in walked)
    assert storage.sha256(s3.url("o/deep/two"), so) == __import__("hashlib").sha256(b"22").hexdigest()
    storage.remove(s3.url("o"), so, recursive=True)
    assert storage.listdir(s3.url("o"), so) == [] and storage.walk(s3.url("o"), so) == []
    assert not storage.exists(s3.url("o/one"), so)


def test_writes_never_create_buckets(s3):
    # s3fs's makedirs would create a missing bucket; a typo in --out must fail instead.
    with pytest.raises(FileNotFoundError):
        storage.write_bytes("s3://no-such-bucket/x", b"1", s3.storage_options)
    assert "no-such-bucket" not in [b["Name"] for b in s3.boto().list_buckets()["Buckets"]]


# ---------------------------------------------------------------- exclusive create

def test_create_exclusive_on_s3(s3):
    # moto 5.2.5 honours If-None-Match: * on PutObject (s3fs mode "xb"), as AWS does.
    url = s3.url("runs/r1/_claim.json")
    storage.create_exclusive(url, b"first", s3.storage_options)
    with pytest.raises(FileExistsError):
        storage.create_exclusive(url, b"second", s3.storage_options)
    assert storage.read_bytes(url, s3.storage_options) == b"first"


@pytest.mark.parametrize("where", ["s3", "local"])
def test_concurrent_exclusive_creates_have_one_winner(s3, tmp_path, where):
    url = s3.url("claim") if where == "s3" else str(tmp_path / "d" / "claim")
    so = s3.storage_options if where == "s3" else None
    barrier, won, lost = threading.Barrier(8), [], []

    def claim(i):
        barrier.wait()
        try:
            storage.create_exclusive(url, f"writer {i}".encode(), so)
            won.append(i)
        except FileExistsError:
            lost.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(won) == 1 and len(lost) == 7
    assert storage.read_bytes(url, so) == f"writer {won[0]}".encode()


def test_create_exclusive_retry_recognises_its_own_lost_write(s3, monkeypatch):
    # The PUT lands but its response is lost: the retry meets FileExistsError, reads the
    # object back, finds its own bytes and succeeds; someone else's bytes still fail.
    monkeypatch.setattr(storage, "BACKOFF", 0)
    original = s3fs.core.S3File.commit
    failures = []

    def commit_then_drop_response(self):
        original(self)
        if not failures:
            failures.append(1)
            raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(s3fs.core.S3File, "commit", commit_then_drop_response)
    storage.create_exclusive(s3.url("mine"), b"me", s3.storage_options)
    assert failures == [1] and storage.read_bytes(s3.url("mine"), s3.storage_options) == b"me"

    failures.clear()
    s3.boto().put_object(Bucket=s3.bucket, Key="theirs", Body=b"them")
    with pytest.raises(FileExistsError):
        storage.create_exclusive(s3.url("theirs"), b"me", s3.storage_options)


def test_create_exclusive_catches_a_store_that_ignores_if_none_match(s3, monkeypatch):
    # Some S3-compatible stores drop the condition and overwrite; the read-back sees the
    # racing writer's bytes and refuses the claim instead of letting two jobs share it.
    original = s3fs.core.S3File.commit

    def unconditional_commit_then_racing_writer(self):
        self.mode = "wb"
        original(self)
        s3.boto().put_object(Bucket=s3.bucket, Key="raced", Body=b"other job")

    monkeypatch.setattr(s3fs.core.S3File, "commit", unconditional_commit_then_racing_writer)
    with pytest.raises(FileExistsError, match="ignores If-None-Match"):
        storage.create_exclusive(s3.url("raced"), b"me", s3.storage_options)


# ---------------------------------------------------------------- error mapping and retries

def test_missing_objects_and_buckets_are_file_not_found(s3):
    so = s3.storage_options
    for call in (lambda: storage.read_bytes(s3.url("missing"), so), lambda: storage.size(s3.url("missing"), so),
                 lambda: storage.read_block(s3.url("missing"), 0, 10, so),
                 lambda: storage.read_bytes("s3://no-such-bucket/x", so)):
        with pytest.raises(FileNotFoundError):
            call()
    assert storage.exists(s3.url("missing"), so) is False
    with pytest.raises(DataError, match="no published model"):
        nsdist.load(s3.url("nothing-here"), storage_options=so)


def test_access_denied_is_permission_error_without_secrets(s3):
    import boto3

    s3.boto().put_object(Bucket=s3.bucket, Key="x", Body=b"1")
    iam = boto3.client("iam", endpoint_url=s3.endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                       region_name=S3_REGION)
    iam.create_user(UserName="nobody")  # no policies: every S3 action is denied
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    denied = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
              "client_kwargs": {"endpoint_url": s3.endpoint, "region_name": S3_REGION}}
    _post(f"{s3.endpoint}/moto-api/reset-auth", b"0")  # moto checks IAM from now on
    try:
        for call in (lambda: storage.read_bytes(s3.url("x"), denied),
                     lambda: storage.write_bytes(s3.url("y"), b"2", denied),
                     lambda: storage.create_exclusive(s3.url("z"), b"3", denied),
                     lambda: storage.expand([s3.url("*")], denied),
                     lambda: nsdist.load(s3.url(""), storage_options=denied)):
            with pytest.raises(PermissionError) as info:
                call()
            assert key["SecretAccessKey"] not in str(info.value)
    finally:
        _post(f"{s3.endpoint}/moto-api/reset-auth", b"inf")


def test_missing_credentials_name_the_fix(s3, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(PermissionError, match="AWS_ACCESS_KEY_ID"):
        storage.read_bytes(s3.url("x"), {"client_kwargs": {"endpoint_url": s3.endpoint}})


def test_transient_errors_are_retried_in_one_place(monkeypatch):
    monkeypatch.setattr(storage, "BACKOFF", 0)
    calls = []

    @storage.retry
    def flaky(storage_options=None):
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EBUSY, "SlowDown")  # how s3fs reports 503 SlowDown
        return "ok"

    assert flaky() == "ok" and len(calls) == 3

    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    def http(status, code):
        return translate_boto_error(ClientError({"Error": {"Code": code, "Message": code},
                                                 "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"))

    assert storage._is_transient(http(503, "SlowDown")) and storage._is_transient(http(500, "InternalError"))
    assert storage._is_transient(http(409, "ConditionalRequestConflict"))  # untranslated by s3fs
    assert not storage._is_transient(http(400, "InvalidArgument"))
    assert not storage._is_transient(http(404, "NoSuchKey")) and isinstance(http(404, "NoSuchKey"),
                                                                            FileNotFoundError)


def test_unreachable_endpoint_is_transient_and_secret_free(s3, dead_endpoint, monkeypatch, caplog):
    # Keep the layers of retries short: ours, s3fs's and botocore's.
    monkeypatch.setattr(storage, "RETRIES", 2)
    monkeypatch.setattr(storage, "BACKOFF", 0)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    options = {"key": S3_KEY, "secret": S3_SECRET, "config_kwargs": {"retries": {"max_attempts": 1}},
               "client_kwargs": {"endpoint_url": dead_endpoint.replace("http://", f"http://user:{S3_SECRET}@")}}
    t0 = time.perf_counter()
    with pytest.raises(TransientError) as info:
        storage.read_bytes(s3.url("x"), options)
    assert info.value.exit_code == 75 and "retry" in str(info.value)
    assert S3_SECRET not in str(info.value) and time.perf_counter() - t0 < 20
    # Each retry says so, in one line, without the secret.
    retries = [r.getMessage() for r in caplog.records if "attempt 1 of 2" in r.getMessage()]
    assert len(retries) == 1 and retries[0].startswith(f"storage: read_bytes {s3.url('x')} failed (")
    assert retries[0].endswith("attempt 1 of 2, retrying in 0.0 s") and S3_SECRET not in caplog.text


@pytest.fixture
def silent_endpoint():
    """An http URL on 127.0.0.1 that accepts connections and never answers; counts them."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_a_silent_endpoint_fails_within_the_retry_budget(s3, silent_endpoint, monkeypatch, caplog):
    """With default settings, a store that never answers costs each call at most RETRY_SECONDS
    (60 s; 3 s here), not botocore's and s3fs's hidden retries of 60 s reads."""
    url, accepted = silent_endpoint
    monkeypatch.setattr(storage, "RETRY_SECONDS", 3.0)
    # A short read timeout keeps the test short; the retries are left to nsdist's defaults.
    options = {"client_kwargs": {"endpoint_url": url}, "config_kwargs": {"read_timeout": 1}}
    t0 = time.perf_counter()
    with pytest.raises(TransientError, match=r"storage unavailable after \d attempt\(s\) in \d s") as info:
        storage.read_bytes(s3.url("x"), options)
    elapsed = time.perf_counter() - t0
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    attempts = len(retries) + 1
    assert str(info.value).startswith(f"storage unavailable after {attempts} attempt(s)")
    # A GET is one s3fs retry loop inside another, each of S3FS_RETRIES tries; botocore adds none.
    per_attempt = storage.S3FS_RETRIES ** 2
    assert 1 <= len(accepted) <= attempts * per_attempt
    # No retry starts once the budget is spent: at most one attempt (of 1 s reads) runs past it.
    assert elapsed < storage.RETRY_SECONDS + per_attempt + 1, elapsed


# ---------------------------------------------------------------- whole jobs on S3

def _job(corpus, out, storage_options=None):
    train = {"dim": 16, "epochs": 1, "min_count": 2, "shards": 2, "syncs_per_epoch": 2, "seed": 3}
    cfg = load_config(None, train, environ={}, corpus=(corpus,), out=out)
    # Set directly: config.py currently rejects a storage_options mapping from YAML/overrides.
    return dataclasses.replace(cfg, storage_options=storage_options or {})


@pytest.fixture(scope="module")
def corpus_and_local_model(tmp_path_factory, client):
    """A small synthetic corpus and the model trained on it from and to local files."""
    d = tmp_path_factory.mktemp("s3-reference")
    files = generate(str(d / "corpus.txt"), tokens=50_000, seed=1)
    train(_job(files.corpus, str(d / "out")), client)
    return files, nsdist.load(str(d / "out"))


def test_train_on_s3_with_storage_options(s3, client, corpus_and_local_model):
    files, local = corpus_and_local_model
    so = s3.storage_options
    storage.write_bytes(s3.url("corpus.txt"), open(files.corpus, "rb").read(), so)
    result = train(_job(s3.url("corpus.txt"), s3.url("models/w2v"), so), client)
    assert result.run_url.startswith(s3.url("models/w2v/runs/"))

    emb = nsdist.load(s3.url("models/w2v"), storage_options=so, verify=True)  # follows LATEST
    assert emb.manifest["run_id"] == result.run_id
    assert emb.vocab == local.vocab and np.array_equal(emb.counts, local.counts)
    assert np.array_equal(emb.vectors, local.vectors)  # same seed and shards: bit-identical
    assert [r["run_id"] for r in runs.list_runs(s3.url("models/w2v"), so)] == [result.run_id]

    # The credentials went to the workers inside tasks: they must not come back in logs or outputs.
    manifest = storage.read_bytes(storage.join(result.run_url, "manifest.json"), so).decode()
    assert S3_SECRET not in manifest and json.loads(manifest)["config"]["storage_options"]["secret"] == "***"
    logs = json.dumps([client.get_worker_logs(), client.get_scheduler_logs()], default=str)
    assert S3_SECRET not in logs


def test_train_on_s3_with_environment_credentials(s3_env, corpus_and_local_model):
    files, local = corpus_and_local_model
    storage.write_bytes(s3_env.url("corpus.txt"), open(files.corpus, "rb").read())
    # Worker processes read the variables at start: this cluster starts after s3_env set them.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        result = train(_job(s3_env.url("corpus.txt"), s3_env.url("models/w2v")), client)
    emb = nsdist.load(s3_env.url("models/w2v"))
    assert emb.manifest["run_id"] == result.run_id
    assert emb.vocab == local.vocab and np.array_equal(emb.vectors, local.vectors)


def _cli(*argv):
    p = subprocess.run([sys.executable, "-m", "nsdist", *argv], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


# Fresh processes, as users run them: each reads the endpoint variable at start (fsspec reads
# FSSPEC_S3_ENDPOINT_URL at import only). AWS_ENDPOINT_URL_S3 is covered by the evaluate test.
@pytest.mark.parametrize("s3_env", ["AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"], indirect=True)
def test_cli_neighbors_on_s3_with_environment_credentials(s3_env, publish_run):
    rng = np.random.default_rng(0)
    words = ["ünïcode", "東京"] + [f"w{i}" for i in range(50)]
    out = s3_env.url("cli/out")
    publish_run(out, words, rng.standard_normal((len(words), 8)))
    expected = [w for w, _ in nsdist.load(out).most_similar("東京", topn=3)]
    code, stdout, stderr = _cli("neighbors", out, "東京", "--topn", "3")  # inherits the environment
    assert code == 0, stderr
    assert [line.split("\t")[0] for line in stdout.splitlines()] == expected


def test_cli_evaluate_runs_and_gc_on_s3(s3_env, publish_run, capsys):
    # Vectors where the analogy a1 : b1 :: a2 : b2 holds exactly (b - a is a shared offset).
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 8))
    offset = rng.standard_normal(8) * 2
    words = ["a1", "a2", "a3", "b1", "b2", "b3"]
    vectors = np.vstack([base[:3], base[:3] + offset])
    out = s3_env.url("cli/out")
    old = publish_run(out, words, vectors, run_id="20260101T000000Z-000001", created="2026-01-01T00:00:00Z")
    new = publish_run(out, words, vectors, run_id="20260102T000000Z-000002", created="2026-01-02T00:00:00Z")
    storage.write_bytes(s3_env.url("q.txt"), b": family\na1 b1 a2 b2\na2 b2 a3 b3\n")

    code, stdout, stderr = _cli("evaluate", out, "--analogies", s3_env.url("q.txt"), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["run_id"] == new and report["analogies"]["accuracy"] == 1.0

    # runs and gc in this process (same environment, faster than more subprocesses)
    assert main(["runs", out, "--json"]) == 0
    assert [(r["run_id"], r["latest"]) for r in json.loads(capsys.readouterr().out)] == [(new, True), (old, False)]
    assert main(["gc", out, "--keep", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["would", "delete", runs.run_url(out, old)]
    assert main(["gc", out, "--keep", "1"]) == 0
    assert capsys.readouterr().out.split() == ["deleted", runs.run_url(out, old)]
    assert storage.listdir(s3_env.url("cli/out/runs")) == [new]
    assert main(["runs", s3_env.url("nothing")]) == 3
    assert "no nsdist output" in capsys.readouterr().err
