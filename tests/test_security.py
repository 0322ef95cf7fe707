"""Security: credentials never leak, nothing read from storage is unpickled, TLS to the scheduler.

Credentials are followed through every path a user gives them (``--set storage_options=``, a
YAML job spec, ``NSDIST_STORAGE_OPTIONS``, ``AWS_*`` variables) in real jobs on a real S3 endpoint
(moto's server), and looked for everywhere they could surface: logs, every object written, error
messages, and the task graph as the scheduler and the workers hold it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys

import cloudpickle
import pytest
from dask._task_spec import Task
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from nsdist import checkpoint
from nsdist.cli import main
from nsdist.config import JobConfig, load_config
from nsdist.synth import generate

from conftest import S3_REGION

SECRET = "NSDIST-FAKE-SECRET-7f3a"
KEY_ID = "NSDIST-FAKE-KEYID-7f3a"
SETS = ["dim=8", "epochs=2", "min_count=1", "shards=2", "syncs_per_epoch=1", "seed=5"]


def _sets(*extra: str) -> list[str]:
    return [a for kv in [*SETS, *extra] for a in ("--set", kv)]


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
    for fn in ("_scan_block", "save", "create", "_warm_stats"):
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
        "StorageOptions", options)
    assert wrapped == options and dict(wrapped) == options
    for again in (dataclasses.replace(cfg), JobConfig(storage_options=options)):
        assert type(again.storage_options) is type(wrapped) and again.storage_options == options
    assert cfg.to_dict()["storage_options"] == {"key": "***", "secret": "***", "client_kwargs": "***"}
