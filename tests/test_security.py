"""Security: credentials never leak, nothing read from storage is unpickled, TLS to the scheduler.

Credentials are followed through every path a user gives them (``--set storage_options=``, a
YAML job spec, ``NSDIST_STORAGE_OPTIONS``, ``AWS_*`` variables) in real jobs on a real S3 endpoint
(moto's server), and looked for everywhere they could surface: logs, every object written, error
messages, and the task graph as the scheduler and the workers hold it.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from dask._task_spec import Task
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

import nsdist
from nsdist import checkpoint, evaluate, formats, runs, pipeline, storage
from nsdist.cli import main
from nsdist.cluster import connect
from nsdist.config import JobConfig, load_config, parse_set
from nsdist.corpus import plan_blocks, read_tokens
from nsdist.errors import ConfigError, DataError, TransientError
from nsdist.model import init_model
from nsdist.synth import generate
from nsdist.vocab import Vocab
from nsdist import inputs, warm

from conftest import S3_KEY, S3_REGION, S3_SECRET, _post

SECRET = "NSDIST-FAKE-SECRET-7f3a"
KEY_ID = "NSDIST-FAKE-KEYID-7f3a"
SETS = ["dim=8", "epochs=2", "min_count=1", "shards=2", "syncs_per_epoch=1", "seed=5"]


def _set(items: list[str]) -> list[str]:
    return [a for kv in items for a in ("--set", kv)]


def _sets(*extra: str) -> list[str]:
    return _set([*SETS, *extra])


def _options(endpoint: str, secret: str = SECRET, key: str = KEY_ID) -> dict:
    return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": endpoint, "region_name": S3_REGION}}


def _objects(s3) -> dict[str, bytes]:
    """Every object in the test bucket, read with boto3 (not through nsdist)."""
    boto = s3.boto()
    keys = [o["Key"] for page in boto.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
            for o in page.get("Contents", [])]
    return {k: boto.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture
def corpus(s3, tmp_path):
    files = generate(str(tmp_path / "corpus.txt"), tokens=20_000, seed=1)
    with open(files.corpus, "rb") as f:
        s3.boto().put_object(Bucket=s3.bucket, Key="corpus.txt", Body=f.read())
    return s3.url("corpus.txt")


# ---------------------------------------------------------------- what Dask holds

def _shown(key, spec) -> str:
    """A task as Dask can show it: its key, its repr, and the repr of each argument. Dask's
    repr of a task elides the arguments when the key is long, and shows them when it is short
    (in "Compute Failed" logs, for one): every argument must be fit to be shown."""
    args = [*getattr(spec, "args", ()), *getattr(spec, "kwargs", {}).values()]
    return " ".join([repr(key), repr(spec), *map(repr, args)])


class _SchedulerSeen(SchedulerPlugin):
    """Records every task the scheduler is given."""

    name = "nsdist-test-scheduler-seen"

    def __init__(self):
        self.seen: list[str] = []

    def update_graph(self, scheduler, *, tasks, **kwargs):
        for key in tasks:
            ts = scheduler.tasks.get(key)
            self.seen.append(_shown(key, ts.run_spec if ts is not None else None))


class _WorkerSeen(WorkerPlugin):
    """Records every task a worker runs."""

    name = "nsdist-test-worker-seen"

    def setup(self, worker):
        self.worker, self.seen = worker, []

    def transition(self, key, start, finish, **kwargs):
        ts = self.worker.state.tasks.get(key)
        if finish == "executing" and ts is not None:
            self.seen.append(_shown(key, ts.run_spec))


@pytest.fixture
def seen(client):
    """What the scheduler and the workers of ``client``'s cluster held while the test ran."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    client.register_plugin(_SchedulerSeen())
    client.register_plugin(_WorkerSeen())

    def collect() -> list[str]:
        on_scheduler = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[_SchedulerSeen.name].seen)
        on_workers = client.run(lambda dask_worker: dask_worker.plugins[_WorkerSeen.name].seen)
        return on_scheduler + [r for rs in on_workers.values() for r in rs]

    try:
        yield collect
    finally:
        client.unregister_scheduler_plugin(_SchedulerSeen.name)
        client.unregister_worker_plugin(_WorkerSeen.name)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _dask_logs(client) -> str:
    return json.dumps([client.get_worker_logs(), client.get_scheduler_logs()], default=str)


def _interrupt_after_first_checkpoint(monkeypatch):
    """Ctrl-C just after the first checkpoint is complete: the run stays, unpublished, with it."""
    write_state = checkpoint.write_state

    def write_then_interrupt(*args, **kwargs):
        write_state(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(checkpoint, "write_state", write_then_interrupt)


# ---------------------------------------------------------------- credentials

def test_credentials_in_storage_options_never_leak(s3, corpus, client, seen, monkeypatch, tmp_path, capfd, caplog):
    """One run given its credentials by --set, interrupted after a checkpoint, resumed with them
    from NSDIST_STORAGE_OPTIONS; a warm start from it given them in a YAML job spec."""
    caplog.set_level("DEBUG")
    options = _options(s3.endpoint)
    scheduler = ["--scheduler", client.scheduler.address, "-v"]
    out = s3.url("models", "w2v")

    _interrupt_after_first_checkpoint(monkeypatch)
    code = main(["train", "--corpus", corpus, "--out", out, *scheduler, *_sets(),
                 "--set", f"storage_options={json.dumps(options)}"])
    assert code == 130
    monkeypatch.undo()
    unfinished = _objects(s3)
    assert any(k.endswith("checkpoints/epoch-0001/state.json") for k in unfinished), sorted(unfinished)
    (claim,) = [k for k in unfinished if k.endswith("_claim.json")]
    run = s3.url(claim.rsplit("/", 1)[0])

    monkeypatch.setenv("NSDIST_STORAGE_OPTIONS", json.dumps(options))
    assert main(["train", "--resume", run, *scheduler]) == 0
    monkeypatch.delenv("NSDIST_STORAGE_OPTIONS")
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"corpus": [corpus], "out": s3.url("models", "warm"), "storage_options": options}))
    assert main(["train", "--config", str(spec), "--init-from", out, *scheduler, *_sets()]) == 0

    published = _objects(s3)
    assert any(k.endswith("manifest.json") for k in published) and "models/warm/LATEST" in published
    for name, data in {**unfinished, **published}.items():
        assert SECRET.encode() not in data and KEY_ID.encode() not in data, name
    said = capfd.readouterr()
    assert "resuming run" in said.err and "warm start from" in said.err  # -v: debug logs included
    for text in (said.out, said.err, _dask_logs(client)):
        assert SECRET not in text and KEY_ID not in text
    # botocore's own debug log names the key id (Authorization: ... Credential=KEY_ID/...), never the secret.
    assert SECRET not in caplog.text
    tasks = seen()
    leaked = [t for t in tasks if SECRET in t or KEY_ID in t]
    assert not leaked, leaked[:3]
    # The options did travel inside tasks (readers, checkpoints, warm starts), redacted.
    for fn in ("_scan_block", "save", "create", "warm_stats"):
        assert any(fn in t and "'secret': '***'" in t for t in tasks), fn


def test_storage_options_show_no_values_and_reach_workers_whole(client):
    options = {"key": KEY_ID, "secret": SECRET, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    cfg = load_config(None, {"storage_options": options}, environ={})
    wrapped = cfg.storage_options
    # Dask shows a task's arguments when its key is short; a plain dict would show the secret here.
    assert SECRET in repr(Task("k", checkpoint.save_model, "s3://b/x", options))
    shown = repr(Task("k", checkpoint.save_model, "s3://b/x", wrapped))
    assert SECRET not in shown and "'secret': '***'" in shown
    assert SECRET not in str(cfg) and SECRET not in f"{wrapped}" and KEY_ID not in repr(cfg)
    # The workers get the values, and the wrapper survives every way a config is rebuilt.
    assert client.submit(lambda o: (type(o).__name__, dict(o)), wrapped, key="opts-roundtrip").result() == (
        "Store", options)
    assert wrapped == options and dict(wrapped) == options
    for again in (dataclasses.replace(cfg), JobConfig(storage_options=options)):
        assert type(again.storage_options) is type(wrapped) and again.storage_options == options
    assert cfg.to_dict()["storage_options"] == {"key": "***", "secret": "***", "client_kwargs": "***"}


def test_credentials_from_the_environment_never_leak(s3_env, corpus, monkeypatch, capfd, caplog):
    """The AWS_* variables of the job and of the workers it starts (an embedded LocalCluster)."""
    caplog.set_level("DEBUG")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    s3fs.S3FileSystem.clear_instance_cache()
    out = s3_env.url("env", "w2v")
    assert main(["train", "--corpus", corpus, "--out", out, "--workers", "1", "-v", *_sets()]) == 0
    assert nsdist.load(out).manifest["config"]["storage_options"] == {}
    for name, data in _objects(s3_env).items():
        assert SECRET.encode() not in data and KEY_ID.encode() not in data, name
    said = capfd.readouterr()  # the job's logs and its workers' (they write to this stderr)
    assert "published" in said.err
    for text in (said.out, said.err):
        assert SECRET not in text and KEY_ID not in text
    assert SECRET not in caplog.text


def _whole(e: BaseException) -> str:
    """An exception as a traceback prints it: with its causes and contexts."""
    return "".join(traceback.format_exception(e))


@pytest.mark.parametrize("userinfo", [False, True], ids=["refused", "credentials-in-url"])
def test_an_unreachable_endpoint_fails_without_the_secret(s3, corpus, dead_endpoint, monkeypatch, capfd, userinfo):
    # Short layers of retries: ours, s3fs's and botocore's.
    monkeypatch.setattr(storage, "RETRIES", 2)
    monkeypatch.setattr(storage, "BACKOFF", 0)
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    endpoint = dead_endpoint.replace("http://", f"http://{KEY_ID}:{SECRET}@") if userinfo else dead_endpoint
    options = {**_options(endpoint), "config_kwargs": {"retries": {"max_attempts": 1}}}
    with pytest.raises(TransientError) as info:
        storage.expand([corpus], options)
    assert "retry" in str(info.value) and SECRET not in _whole(info.value) and KEY_ID not in _whole(info.value)

    code = main(["train", "--corpus", corpus, "--out", s3.url("out"), "-v", *_sets(),
                 "--set", f"storage_options={json.dumps(options)}"])
    said = capfd.readouterr()
    assert code == 75 and said.err.strip().splitlines()[-1].startswith("nsdist: error: storage unavailable")
    assert SECRET not in said.err + said.out and KEY_ID not in said.err + said.out


@pytest.fixture
def denied_writes(s3):
    """Storage options of an IAM user who may read and list the bucket and claim runs, but write
    nothing else: a job gets past the client's checks and fails on a worker, writing its first
    checkpoint. Its secret is moto's (moto checks signatures once IAM checks are on)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3.endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                       region_name=S3_REGION)
    iam.create_user(UserName="reader")
    bucket = f"arn:aws:s3:::{s3.bucket}"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": [bucket, f"{bucket}/*"]},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [f"{bucket}/out/runs/*/_claim.json"]}]}
    iam.put_user_policy(UserName="reader", PolicyName="read-and-claim", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    _post(f"{s3.endpoint}/moto-api/reset-auth", b"0")  # moto checks IAM from now on
    try:
        yield _options(s3.endpoint, key["SecretAccessKey"], key["AccessKeyId"])
    finally:
        _post(f"{s3.endpoint}/moto-api/reset-auth", b"inf")


def test_access_denied_on_a_worker_fails_without_the_secret(s3, corpus, denied_writes, client, capfd):
    secret = denied_writes["secret"]
    code = main(["train", "--corpus", corpus, "--out", s3.url("out"), "--scheduler", client.scheduler.address, "-v",
                 *_sets(), "--set", f"storage_options={json.dumps(denied_writes)}"])
    said = capfd.readouterr()
    assert code == 2 and said.err.strip().splitlines()[-1].lower().startswith("nsdist: error: access denied"), said.err
    written = [w["url"] for w in storage.walk(s3.url("out"), denied_writes)]
    assert len(written) == 1 and written[0].endswith("_claim.json")  # the client's write was allowed
    logs = _dask_logs(client)
    assert "Compute Failed" in logs and "checkpoint-" in logs  # the worker logged the failed task
    for text in (said.out, said.err, logs):
        assert secret not in text


@pytest.mark.parametrize("where", ["--set", "--set without =", "environment", "job spec"])
def test_config_errors_never_echo_a_secret(where, monkeypatch, tmp_path, capfd):
    broken = f"{{key: {KEY_ID}, secret: {SECRET}: oops}}"  # not YAML: a colon inside a plain value
    argv = ["train", "--corpus", "c.txt", "--out", str(tmp_path / "out")]
    if where == "--set":
        argv += ["--set", f"storage_options={broken}"]
    elif where == "--set without =":
        argv += ["--set", f"storage_options.secret:{SECRET}"]
    elif where == "environment":
        monkeypatch.setenv("NSDIST_STORAGE_OPTIONS", broken)
    else:
        (tmp_path / "job.yaml").write_text(f"storage_options: {broken}\n")
        argv += ["--config", str(tmp_path / "job.yaml")]
    assert main(argv) == 2
    said = capfd.readouterr().err
    assert said.startswith("nsdist: error: ") and len(said.strip().splitlines()) == 1, said
    assert SECRET not in said and KEY_ID not in said, said
    named = {"--set": "storage_options", "--set without =": "storage_options.secret",
             "environment": "NSDIST_STORAGE_OPTIONS", "job spec": "job.yaml"}[where]
    assert named in said, said


# ---------------------------------------------------------------- nothing read is unpickled

class _Bomb:
    """Unpickling this creates a file: proof that a reader ran code from the data."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def _numba_cache() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("numba", "core", "caching.py")):
            return True
        frame = frame.f_back
    return False


@pytest.fixture
def unpickling_fails(monkeypatch):
    """Unpickling (pickle's loaders, np.load with pickles allowed) fails the test when called from
    this test's thread (or fsspec's IO thread, which runs its reads). Not storage, so let through:
    Dask's own threads in this process (messages between processes) and numba loading the
    kernels it compiled from its cache; marshal is left to the source check (imports read .pyc
    files with it)."""
    import threading

    import numpy

    calls = []
    ours = {threading.get_ident()}

    def guard(name, original):
        def guarded(*args, **kwargs):
            thread = threading.current_thread()
            if name == "numpy.load" and not kwargs.get("allow_pickle"):
                return original(*args, **kwargs)
            if (thread.ident in ours or thread.name == "fsspecIO") and not _numba_cache():
                calls.append(name)
                raise AssertionError(f"{name} called on data read from storage")
            return original(*args, **kwargs)
        return guarded

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (numpy, "load")]:
        monkeypatch.setattr(module, name, guard(f"{module.__name__}.{name}", getattr(module, name)))
    yield calls
    assert calls == []


def _write_npy(url: str, array, options) -> None:
    with storage.open_write(url, options) as f:
        np.save(f, array, allow_pickle=True)


@dataclasses.dataclass
class _Stored:
    out: str  # with a published run
    run: str  # an unfinished run with a checkpoint
    cfg: JobConfig  # the unfinished run's
    text: str  # corpora
    parquet: str
    analogies: str


def _published_and_unfinished(s3, publish_run) -> _Stored:
    """A published run and an unfinished one with a checkpoint, both written by nsdist's writers,
    and the files a job or an evaluation reads."""
    so = s3.storage_options
    rng = np.random.default_rng(0)
    words = ["ünïcode", "東京"] + [f"w{i}" for i in range(30)]
    out = s3.url("out")
    publish_run(out, words, rng.standard_normal((len(words), 4)), storage_options=so)
    text, parquet = s3.url("c.txt"), s3.url("c.parquet")
    storage.write_bytes(text, "w1 w2 東京\nw3 w1\n".encode(), so)
    storage.write_bytes(s3.url("q.txt"), b": family\nw1 w2 w3 w4\n", so)
    table = pa.table({"tokens": [["w1", "w2"], ["東京"]]})
    with storage.open_write(parquet, so) as f:
        pq.write_table(table, f)
    cfg = load_config(None, {"dim": 4}, environ={}, corpus=(text,), out=out)
    cfg = dataclasses.replace(cfg, storage_options=so)
    run_id = runs.new_run_id()
    runs.claim_run(out, run_id, so, config=cfg.to_dict(),
                      corpus_fingerprint=inputs.corpus_fingerprint(storage.expand([text], so)))
    run = runs.run_url(out, run_id)
    checkpoint.save_model(checkpoint.url(run, 0), so, init_model(len(words), 4, 1))
    checkpoint.write_state(checkpoint.url(run, 0), {"epoch": 1, "corpus_fingerprint": "f" * 64,
                                                    "vocab_sha256": "v" * 64}, so)
    return _Stored(out, run, cfg, text, parquet, s3.url("q.txt"))


def _read_everything(stored: _Stored) -> None:
    """Every reader of stored data, in this process: outputs, checkpoints, --resume, --init-from,
    corpora, evaluation files."""
    out, run, cfg, so = stored.out, stored.run, stored.cfg, stored.cfg.storage_options
    emb = runs.load(out, so, verify=True)  # LATEST, manifest, .npy, vocab.tsv, checksums
    formats.read_npy(storage.join(runs.resolve_run(out, so), "context.npy"), so)
    assert len(runs.list_runs(out, so, unpublished=True)) == 2
    assert checkpoint.latest(run, so)["epoch"] == 1
    checkpoint.load_model(checkpoint.url(run, 0), so)
    resumed = inputs.resume_config(run, cfg)
    inputs.check_inputs(resumed, resume=run)
    vocab = Vocab(pa.array(emb.vocab[:5] + ["new"], pa.large_string()), np.arange(6, 0, -1))
    warm.warm_model(vocab, runs.resolve_run(out, so), so, 4, 1)
    for block in plan_blocks([stored.text, stored.parquet], so):
        assert len(read_tokens(block, so))
    assert evaluate.read_analogies(storage.lines(stored.analogies, so))


def test_no_reader_unpickles(s3, publish_run, unpickling_fails):
    _read_everything(_published_and_unfinished(s3, publish_run))


def test_pickles_in_storage_are_refused_not_run(s3, publish_run, tmp_path, unpickling_fails):
    """Each stored file replaced by a pickle (JSON files) or an object array (.npy)."""
    stored = _published_and_unfinished(s3, publish_run)
    out, run, cfg, so = stored.out, stored.run, stored.cfg, stored.cfg.storage_options
    _Bomb.path = str(tmp_path / "unpickled")
    bomb = pickle.dumps(_Bomb())
    objects = np.empty((32, 4), dtype=object)
    objects[:] = 0.0
    objects[0, 0] = _Bomb()
    published = runs.resolve_run(out, so)
    cases = [
        (storage.join(out, "LATEST"), lambda: runs.load(out, so)),
        (storage.join(published, "manifest.json"), lambda: runs.read_manifest(published, so)),
        (storage.join(run, "_claim.json"), lambda: inputs.resume_config(run, cfg)),
        (storage.join(checkpoint.url(run, 0), "state.json"), lambda: checkpoint.latest(run, so)),
        (storage.join(checkpoint.url(run, 0), "win.npy"), lambda: checkpoint.load_model(checkpoint.url(run, 0), so)),
        (storage.join(published, "context.npy"), lambda: warm.warm_model(
            Vocab(pa.array(["w1"], pa.large_string()), np.ones(1, np.int64)), published, so, 4, 1)),
    ]
    for url, read in cases:
        original = storage.read_bytes(url, so)
        if url.endswith(".npy"):
            _write_npy(url, objects, so)
        else:
            storage.write_bytes(url, bomb, so)
        with pytest.raises(DataError):
            read()
        storage.write_bytes(url, original, so)
    assert not os.path.exists(_Bomb.path)


_UNPICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle", "joblib"}
_YAML_UNSAFE = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all", "Loader",
                "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"}


def _unsafe(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every way source can run code from data: an unpickler imported, eval/exec,
    np.load without allow_pickle=False, allow_pickle not False, yaml's loaders other than safe."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [(node.lineno, f"import {n}") for n in names if n.split(".")[0] in _UNPICKLERS]
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                found += [(node.lineno, f"yaml.{a.name}") for a in node.names if a.name in _YAML_UNSAFE]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "yaml" and node.attr in _YAML_UNSAFE:
                found.append((node.lineno, f"yaml.{node.attr}"))
        elif isinstance(node, ast.Call):
            func, kwargs = node.func, {k.arg: k.value for k in node.keywords}
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                found.append((node.lineno, f"{func.id}()"))
            if "allow_pickle" in kwargs and not (isinstance(kwargs["allow_pickle"], ast.Constant)
                                                 and kwargs["allow_pickle"].value is False):
                found.append((node.lineno, "allow_pickle not False"))
            elif (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name)
                  and func.value.id in ("np", "numpy") and "allow_pickle" not in kwargs):
                found.append((node.lineno, "np.load without allow_pickle=False"))
    return sorted(found)


def test_the_unsafe_source_check_finds_each_pattern():
    bad = textwrap.dedent("""\
        import pickle
        from cloudpickle import loads
        import marshal as m
        x = yaml.load(s)
        y = yaml.unsafe_load(s)
        z = yaml.load(s, Loader=Loader)
        from yaml import FullLoader
        eval(s)
        exec(s)
        np.load(f)
        numpy.load(f, allow_pickle=True)
        a.read_array(f, allow_pickle=flag)
        """)
    lines = [line for line, _ in _unsafe(ast.parse(bad))]
    assert sorted(set(lines)) == list(range(1, 13)), _unsafe(ast.parse(bad))
    good = "yaml.safe_load(s)\nyaml.safe_load_all(s)\nnp.load(f, allow_pickle=False)\njson.loads(s)\nre.compile(s)\n"
    assert _unsafe(ast.parse(good)) == []


def test_no_source_can_unpickle_or_eval():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = [os.path.join(d, f) for top in ("nsdist", "deploy") for d, _, fs in os.walk(os.path.join(root, top))
             for f in fs if f.endswith(".py")]
    assert len(files) > 20
    found = [f"{os.path.relpath(path, root)}:{line}: {what}" for path in files
             for line, what in _unsafe(ast.parse(Path(path).read_text(encoding="utf-8"), path))]
    assert found == []


# ---------------------------------------------------------------- TLS to the scheduler

def _pem_files(directory, name: str = "cluster") -> dict[str, str]:
    """A CA and a certificate it signed for 127.0.0.1, with its key: {ca, cert, key} PEM paths."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(subject, issuer, public_key, signing_key, ca: bool):
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    files = {
        "ca": cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True),
        "cert": cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key.public_key(),
                     ca_key, ca=False),
        "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()),
    }
    paths = {}
    for kind, data in files.items():
        paths[kind] = str(directory / f"{name}-{kind}.pem")
        with open(paths[kind], "wb") as f:
            f.write(data)
    return paths


def _tls(pem: dict[str, str]) -> list[str]:
    return [f"cluster.tls_ca_file={pem['ca']}", f"cluster.tls_cert={pem['cert']}", f"cluster.tls_key={pem['key']}"]


@pytest.fixture
def tls_cluster(tmp_path):
    """`dask scheduler` and one `dask worker` processes on 127.0.0.1 speaking TLS only:
    (scheduler address, PEM files)."""
    pem = _pem_files(tmp_path)
    tls = ["--tls-ca-file", pem["ca"], "--tls-cert", pem["cert"], "--tls-key", pem["key"]]
    started = []

    def spawn(name: str, *args: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "wb") as log:
            started.append(subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True))
        return started[-1]

    try:
        scheduler_file = tmp_path / "scheduler.json"
        spawn("scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--protocol", "tls", "--port", "0",
              "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file), *tls)
        deadline = time.monotonic() + 60
        while not (scheduler_file.exists() and scheduler_file.read_text().strip().endswith("}")):
            assert started[0].poll() is None and time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.05)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:")
        spawn("worker", "distributed.cli.dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1",
              "--no-dashboard", "--death-timeout", "30", "--local-directory", str(tmp_path / "worker"), *tls)
        yield address, pem
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_train_on_a_tls_scheduler(tls_cluster, tmp_path, capfd):
    address, pem = tls_cluster
    corpus = generate(str(tmp_path / "corpus.txt"), tokens=20_000, seed=1).corpus
    out = str(tmp_path / "out")
    train = ["train", "--corpus", corpus, "--out", out, *_sets("cluster.timeout=60")]
    assert main([*train, "--scheduler", address, *_set(_tls(pem))]) == 0, capfd.readouterr().err
    assert nsdist.load(out).manifest["config"]["cluster"]["tls_cert"] == pem["cert"]
    capfd.readouterr()

    # A certificate the cluster's CA did not sign is refused (TLS authenticates the client too).
    t0 = time.monotonic()
    stranger = _set(_tls(_pem_files(tmp_path, "stranger")))
    assert main([*train, "--scheduler", address, *stranger, "--set", "cluster.timeout=3"]) == 75
    said = capfd.readouterr().err.strip().splitlines()[-1]
    assert said.startswith(f"nsdist: error: cannot reach the Dask scheduler at '{address}'"), said

    # Without the TLS keys: refused at once, saying what to set.
    assert main([*train, "--scheduler", address]) == 2
    said = capfd.readouterr().err
    assert said.startswith("nsdist: error: the scheduler tls://") and len(said.strip().splitlines()) == 1, said
    assert "cluster.tls_ca_file, cluster.tls_cert and cluster.tls_key" in said
    # Plain TCP to the TLS port: no hang, a transient error within cluster.timeout that names TLS.
    tcp = address.replace("tls://", "tcp://")
    assert main([*train, "--scheduler", tcp, "--set", "cluster.timeout=3"]) == 75
    said = capfd.readouterr().err.strip().splitlines()[-1]
    assert said.startswith(f"nsdist: error: cannot reach the Dask scheduler at '{tcp}'"), said
    assert said.endswith("is it running (one that uses TLS needs a tls:// address and cluster.tls_*)? "
                         "(cluster.timeout sets the wait)"), said
    assert time.monotonic() - t0 < 30


def test_a_local_cluster_with_tls_files_speaks_tls(tmp_path):
    pem = _pem_files(tmp_path)
    corpus = generate(str(tmp_path / "corpus.txt"), tokens=20_000, seed=1).corpus
    cfg = load_config(None, parse_set([*SETS, *_tls(pem), "cluster.workers=1"]), environ={},
                      corpus=(corpus,), out=str(tmp_path / "out"))
    client, cluster = connect(cfg.cluster)
    try:
        addresses = [client.scheduler.address, *client.scheduler_info()["workers"]]
        assert len(addresses) == 2 and all(a.startswith("tls://127.0.0.1:") for a in addresses), addresses
        assert pipeline.train(cfg, client).manifest["corpus"]["vocab_size"] > 100
    finally:
        client.close()
        cluster.close()


def test_tls_settings_are_checked_before_anything_starts(tmp_path, monkeypatch):
    pem = _pem_files(tmp_path)
    keys = {"cluster.tls_ca_file": pem["ca"], "cluster.tls_cert": pem["cert"], "cluster.tls_key": pem["key"]}
    with pytest.raises(ConfigError, match=r"set cluster.tls_key too, or unset the others"):
        load_config(None, {k: v for k, v in keys.items() if k != "cluster.tls_key"}, environ={})
    with pytest.raises(ConfigError, match=r"cluster.tls_cert '/no/cert.pem' is not a file; point it at the PEM"):
        load_config(None, {**keys, "cluster.tls_cert": "/no/cert.pem"}, environ={})
    tls = load_config(None, keys, environ={}).cluster
    with pytest.raises(ConfigError, match=r"address tcp://10.0.0.1:8786 is not tls://; use tls://10.0.0.1:8786"):
        connect(dataclasses.replace(tls, scheduler="tcp://10.0.0.1:8786"))
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "10.0.0.1:8786")  # no scheme: TCP
    with pytest.raises(ConfigError, match=r"use tls://10.0.0.1:8786"):
        connect(tls)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tls://10.0.0.1:8786")
    with pytest.raises(ConfigError, match=r"the scheduler tls://10.0.0.1:8786 uses TLS: set cluster.tls_ca_file"):
        connect(load_config(None, environ={}).cluster)
