"""Failures a new user meets on the newer paths (sessions, graphs, the Python API, reading
outputs): each exits with one line naming the problem and the fix, its documented exit code, and
nothing claimed or published."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster, WorkerPlugin

import nsdist
from nsdist import storage
from nsdist.cli import main
from nsdist.errors import ConfigError, DataError

TINY = ["--set", "dim=8", "--set", "epochs=1", "--set", "min_count=1"]


def _one_line(err: str) -> str:
    """The one error line of a command's stderr (its log lines come before it)."""
    said = [line for line in err.strip().splitlines() if line.startswith("nsdist:")]
    assert len(said) == 1 and "Traceback" not in err and err.strip().endswith(said[0]), err
    return said[0]


@pytest.fixture
def published(tmp_path, publish_run):
    out = str(tmp_path / "out")
    publish_run(out, ["a", "b", "c"], np.eye(3, 4, dtype=np.float32))
    return out


def test_a_reader_whose_stdout_closes_exits_quietly(published):
    """``nsdist info out | head -1``: the reader left, and Unix tools then exit quietly."""
    r, w = os.pipe()
    os.close(r)  # every write to stdout now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "nsdist", "info", published, "--json"], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("command", [["info"], ["runs"], ["neighbors", "{path}", "a"], ["recommend", "{path}", "a"]])
def test_readers_given_a_file_say_it_is_not_an_output(tmp_path, capfd, command):
    path = str(tmp_path / "vectors.txt")
    open(path, "w").write("3 4\n")
    argv = [a.format(path=path) for a in command] if "{path}" in command[1:2] else [*command, path]
    assert main(argv) == 3
    line = _one_line(capfd.readouterr().err)
    assert line == (f"nsdist: error: {path!r} is a file, not an nsdist output; pass the output directory (<out>, "
                    "which has LATEST) or a run (<out>/runs/<run_id>)")
    with pytest.raises(DataError, match="is a file, not an nsdist output"):
        nsdist.load(path)


def test_a_vocabulary_count_that_is_no_number_names_the_file_and_line(published):
    run = storage.join(published, "runs", os.listdir(os.path.join(published, "runs"))[0])
    vocab = os.path.join(run, "vocab.tsv")
    text = open(vocab).read().splitlines()
    text[1] = text[1].rsplit("\t", 1)[0] + "\tx"  # same size: the manifest's size check passes
    open(vocab, "w").write("\n".join(text) + "\n")
    with pytest.raises(DataError, match=rf"^'{vocab}' line 2: count 'x' is not a whole number: the run is corrupt"):
        nsdist.load(published)


def test_a_malformed_scheduler_address_is_a_usage_error(tmp_path, capfd):
    (tmp_path / "c.txt").write_text("a b c\n")
    code = main(["train", "--corpus", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"),
                 "--scheduler", "tcp://bad:port:x"])
    line = _one_line(capfd.readouterr().err)
    assert code == 2 and line.startswith("nsdist: error: invalid Dask scheduler address 'tcp://bad:port:x' (")
    assert line.endswith("pass tcp://HOST:PORT (or tls://...) as --scheduler, DASK_SCHEDULER_ADDRESS or "
                         "cluster.scheduler")
    assert not (tmp_path / "out").exists()


def test_a_closed_client_is_a_usage_error(tmp_path):
    (tmp_path / "c.txt").write_text("a b c\n")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        client = Client(cluster)
        client.close()
        with pytest.raises(ConfigError, match=r"^the Dask client passed as client= is closed; pass an open Client"):
            nsdist.train(str(tmp_path / "c.txt"), str(tmp_path / "out"), client=client)
    assert not (tmp_path / "out" / "runs").exists() or os.listdir(tmp_path / "out" / "runs") == []


def test_an_edge_list_of_comments_claims_nothing(client, tmp_path, capfd):
    edges = tmp_path / "edges.txt"
    edges.write_text("# FromNodeId ToNodeId\n% a comment\n\n")
    out = tmp_path / "out"
    code = main(["train", "--edges", str(edges), "--out", str(out), "--scheduler", client.scheduler.address, *TINY])
    line = _one_line(capfd.readouterr().err)
    assert code == 3 and line == (f"nsdist: error: the edge lists have no edges: {str(edges)!r} holds only blank or "
                                  "comment lines (# or %), self-loops or empty Parquet columns; check that --edges "
                                  "names the right files")
    assert not (out / "runs").exists() or os.listdir(out / "runs") == []


def test_an_empty_edge_list_names_edges_not_corpus(tmp_path, capfd):
    (tmp_path / "e.txt").write_text("")
    code = main(["train", "--edges", str(tmp_path / "e.txt"), "--out", str(tmp_path / "out"),
                 "--scheduler", "tcp://127.0.0.1:1", "--set", "cluster.timeout=1"])
    line = _one_line(capfd.readouterr().err)
    assert code == 3 and "the edge list is empty" in line and line.endswith("or pass another --edges")


@pytest.mark.parametrize("shown", [pa.array(["1 2", "3"]), None], ids=["not a list", "missing"])
def test_a_wrong_negatives_column_names_negatives_column(client, tmp_path, capfd, shown):
    columns = {"items": pa.array([[1, 2, 3], [2, 3, 4]], pa.list_(pa.int64()))}
    if shown is not None:
        columns["shown"] = shown
    pq.write_table(pa.table(columns), tmp_path / "s.parquet")
    code = main(["train", "--corpus", str(tmp_path / "s.parquet"), "--out", str(tmp_path / "out"),
                 "--set", "parquet_column=items", "--set", "negatives_column=shown",
                 "--scheduler", client.scheduler.address])
    line = _one_line(capfd.readouterr().err)
    assert code == 3 and "'shown'" in line and "parquet_column=" not in line
    assert line.endswith("write each session's shown-but-not-clicked items as a list<string> or list<int64> column "
                         "named by negatives_column (or unset it)")


def test_a_run_records_absolute_paths(client, tmp_path, monkeypatch):
    """Started from one directory with relative paths, a run names its corpus, output and parent
    absolutely: its resume command and warm starts work from any other directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text("a b c d a b c d\nb c d a\n" * 20)
    first = nsdist.train("c.txt", "out", client=client, dim=8, epochs=1, min_count=1)
    second = nsdist.train("c.txt", "out", client=client, dim=8, epochs=1, min_count=1, init_from="out")
    for result in (first, second):
        m = result.manifest
        assert m["config"]["corpus"] == [str(tmp_path / "c.txt")] and m["config"]["out"] == str(tmp_path / "out")
        assert m["corpus"]["files"] == [str(tmp_path / "c.txt")]
    assert second.manifest["parent"]["parent_run"] == first.run_url == str(tmp_path / "out" / "runs" / first.run_id)
    claim = json.loads((tmp_path / "out" / "runs" / first.run_id / "_claim.json").read_text())
    assert claim["config"]["corpus"] == [str(tmp_path / "c.txt")]


def test_workers_that_cannot_read_the_corpus_claim_nothing(s3_env, tmp_path, capfd):
    """The client has credentials (the environment) and the workers none: the job stops before
    it claims a run, naming what failed, where, and the fix."""
    storage.write_bytes(s3_env.url("c.txt"), b"a b c a b\nb c a\n")
    no_credentials = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", host="127.0.0.1",
                      env=no_credentials) as cluster:
        code = main(["train", "--corpus", s3_env.url("c.txt"), "--out", s3_env.url("out"),
                     "--scheduler", cluster.scheduler_address, *TINY])
        line = _one_line(capfd.readouterr().err)
    assert code == 2 and line.startswith(f"nsdist: error: access denied: could not read the size of "
                                         f"{s3_env.url('c.txt')}: no usable storage credentials (NoCredentialsError); "
                                         "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    assert storage.walk(s3_env.url("out")) == []


def test_a_model_beyond_the_workers_memory_is_refused_before_training(tmp_path, capfd):
    """The model each worker would hold, with its shards, at training's peaks against the
    workers' memory limit (one worker: no layout shares the model): refused after counting,
    before a run is claimed."""
    import dask

    words = [f"w{i}" for i in range(300)]
    (tmp_path / "c.txt").write_text("".join(" ".join(words[i:i + 10]) + "\n" for i in range(0, 300, 3)) * 3)
    # Dask's own memory management is off: the workers (whose processes alone take more) keep
    # running, and nsdist's check is what refuses.
    off = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
    with dask.config.set(off), LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="2MB",
                                            dashboard_address=None) as cluster:
        code = main(["train", "--corpus", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"),
                     "--scheduler", cluster.scheduler_address, "--set", "dim=512", "--set", "min_count=1"])
        line = _one_line(capfd.readouterr().err)
    assert code == 2 and line.startswith("nsdist: error: the model (300 words x dim 512 x 2 float32 = 1.2 MB) and a "
                                         "worker's shards need up to ")
    assert line.endswith("more than the workers' memory limit of 2.0 MB; give the workers more memory, or train a "
                         "smaller model (a lower dim, a higher min_count, or max_vocab)")
    assert not (tmp_path / "out").exists()  # nothing claimed


def test_the_reported_loss_falls_every_epoch_on_long_session_windows(client, tmp_path):
    """jobs/sessions.yaml (window 50): the loss the kernels tally while training climbs after
    epoch 2 as the learning rate decays (train_loss), while the model's loss on the job's fixed
    pairs, the reported loss, falls every epoch (probe.py)."""
    from nsdist.synth.sessions import generate_sessions

    files = generate_sessions(str(tmp_path / "clicks"), sessions=3000, items=1500, seed=1)
    spec = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs", "sessions.yaml")
    result = nsdist.train(files.train, str(tmp_path / "out"), client=client, config=spec, epochs=8)
    epochs = result.metrics["epochs"]
    losses = [e["loss"] for e in epochs]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert epochs[-1]["train_loss"] > epochs[1]["train_loss"], [e["train_loss"] for e in epochs]


class _DieOn(WorkerPlugin):
    """A worker plugin (test code) that kills its worker process when a task whose key starts
    with ``prefix`` begins to run: what the kernel's OOM killer does to a worker over its limit."""

    name = "die-on"

    def __init__(self, prefix: str):
        self.prefix = prefix

    def setup(self, worker):
        pass

    def teardown(self, worker):
        pass

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and isinstance(key, str) and key.startswith(self.prefix):
            os._exit(137)


def test_workers_dying_while_counting_name_the_stage_and_claim_nothing(tmp_path, capfd, monkeypatch):
    """A worker killed whenever it builds the vocabulary: Dask gives up on the task, or, with
    no worker left at the moment of a death, keeps tasks for the departed worker for good
    (cluster.client.wait_alive). Either way the job ends naming the stage, the workers' limit
    and the fix, and removes its claim (nothing was trained)."""
    import dask

    from nsdist.cluster import client as cluster_client

    monkeypatch.setattr(cluster_client, "STRANDED_SECONDS", 3.0)
    (tmp_path / "c.txt").write_text("a b c a b\nb c a\n" * 50)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                         host="127.0.0.1") as cluster, Client(cluster) as client:
        client.register_plugin(_DieOn("vocab-"))  # the vocabulary, built once the counts are merged
        code = main(["train", "--corpus", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"),
                     "--scheduler", cluster.scheduler_address, *TINY])
        line = _one_line(capfd.readouterr().err)
    assert code == 2 and line.startswith("nsdist: error: workers died while counting ("), line
    assert "), most likely out of memory (memory limit " in line
    assert line.endswith("give the workers more memory or add workers, or lower blocksize")
    assert not (tmp_path / "out").exists()  # nothing claimed: nothing to resume


def test_a_worker_paused_for_long_ends_the_wait_with_its_memory_limit(monkeypatch):
    """A worker whose memory stays above Dask's pause threshold runs none of its tasks: the
    client stops waiting for them after PAUSED_SECONDS, naming the worker and its limit."""
    import time as _time

    import dask
    from distributed.core import Status

    from nsdist.cluster import client as cluster_client
    from nsdist.errors import OutOfMemory

    monkeypatch.setattr(cluster_client, "PAUSED_SECONDS", 1.0)
    monkeypatch.setattr(cluster_client, "WATCH_SECONDS", 0.2)

    def pause(dask_worker=None):
        dask_worker.status = Status.paused

    # Dask's memory monitor off: it would resume a worker paused by hand at once.
    off = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
    with dask.config.set(off), LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="1GB",
                                            dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        worker = sorted(client.scheduler_info()["workers"])[0]
        client.run(pause)
        waiting = client.submit(_time.sleep, 0.01, key="paused-sleep", workers=[worker], allow_other_workers=False)
        with pytest.raises(OutOfMemory, match=rf"^worker {worker} has been paused for 1 s: its memory is above "
                                              r"Dask's pause threshold \(memory limit 1,000 MB\) while training"):
            cluster_client.gather_watching(client, waiting, [worker])
        assert waiting.status == "pending"  # the paused worker ran nothing


class _Held:
    """An actor: what a worker's Peer is to Dask."""


def test_a_task_failed_by_a_lost_actor_is_a_lost_model():
    """Dask errs the tasks that take an actor once the actor's worker leaves (RuntimeError "Worker
    holding Actor was lost"); training must see a lost model, and restart from its checkpoint."""
    import time as _time

    from nsdist.cluster import ModelLost
    from nsdist.cluster import client as cluster_client

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        stays, goes = sorted(client.scheduler_info()["workers"])
        actor = client.submit(_Held, actor=True, workers=[goes], key="held-actor")
        actor.result()
        os.kill(client.run(os.getpid, workers=[goes])[goes], 9)
        deadline = _time.monotonic() + 60
        while actor.status != "error" and _time.monotonic() < deadline:
            _time.sleep(0.1)
        assert actor.status == "error"  # Dask's RuntimeError, not yet a ModelLost
        with pytest.raises(ModelLost, match=rf"^worker {goes} left the cluster \(Worker holding Actor was lost\)"):
            cluster_client.gather_watching(client, actor, [stays, goes])


def test_verbose_shows_the_traceback_of_an_error(tmp_path, capfd):
    path = str(tmp_path / "vectors.txt")
    open(path, "w").write("3 4\n")
    assert main(["info", path]) == 3
    assert "Traceback" not in capfd.readouterr().err
    assert main(["info", path, "-v"]) == 3
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err and "nsdist.errors.DataError" in err
    assert err.strip().splitlines()[-1].startswith(f"nsdist: error: {path!r} is a file, not an nsdist output")
