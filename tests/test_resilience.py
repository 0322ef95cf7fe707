"""Worker loss: a worker process killed mid-training costs time, never a different result."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from nsdist.config import load_config
from nsdist.runs import load, run_url
from nsdist.pipeline import train
from nsdist.synth import generate

# 12 rounds per epoch: the job lasts long enough (seconds) for the kill to land mid-training.
TRAIN = {"dim": 24, "epochs": 3, "min_count": 3, "shards": 2, "syncs_per_epoch": 12, "seed": 5}
ROUND_ENDED = re.compile(r"round-.+-\d+-\d+-\d+$")  # round-{run}-{attempt}-{epoch}-{round}


@pytest.mark.parametrize("layout, groups", [("replicated", None), ("partitioned", 1), ("partitioned", 3)])
def test_killing_a_worker_mid_training_gives_identical_vectors(client, tmp_path, layout, groups):
    """Either layout: its rows cross between workers through actors on the workers, and the
    killed worker's actor with it; the new attempt's actors serve the same rounds. ``groups``:
    partitioned models that take their rows for one of 3 groups of rounds at a time."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=300_000, seed=6)
    killed, reference = _killed_and_reference(client, tmp_path, files.corpus,
                                              {**TRAIN, "train.layout": layout, "train.row_groups": groups})
    assert killed.manifest["metrics"]["layout"] == reference.manifest["metrics"]["layout"] == layout


@pytest.mark.parametrize("layout", ["replicated", "partitioned"])
def test_killing_a_worker_in_a_warm_job_builds_its_start_again(client, publish_run, tmp_path, caplog, layout):
    """A warm start (whole, or by rows in the partitioned layout) is let go once the models are
    built: a worker killed before any checkpoint, the job builds the start again (from the
    parent, under new keys) and trains to the vectors of a job that lost nothing."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=300_000, seed=6)
    cold = load_config(None, {**TRAIN, "epochs": 1}, environ={}, corpus=(files.corpus,), out=str(tmp_path / "cold"))
    words = load(train(cold, client).run_url).vocab
    old = [w for w in words if not w.startswith("c00_")]
    vectors = np.random.default_rng(3).standard_normal((len(old), TRAIN["dim"])).astype(np.float32) / 24
    parent = run_url(str(tmp_path / "p"), publish_run(str(tmp_path / "p"), old, vectors))
    with caplog.at_level(logging.WARNING, logger="nsdist"):
        killed, reference = _killed_and_reference(client, tmp_path, files.corpus, {
            **TRAIN, "train.layout": layout, **({"train.row_groups": 2} if layout == "partitioned" else {})}, parent)
    assert "training again from epoch 1" in caplog.text  # no checkpoint yet: from the start, built again
    record = killed.manifest["parent"]
    assert record == reference.manifest["parent"] and record["cooccur_words"] > 0 and record["known_words"] == len(old)


def _killed_and_reference(client, tmp_path, corpus: str, train_cfg: dict, init_from: str | None = None):
    """The published run of a job whose worker is killed mid-training, and that of the same job
    run without a loss; their vectors are checked equal."""
    cfg = load_config(None, train_cfg, environ={}, corpus=(corpus,), out=str(tmp_path / "killed"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as own:
        own.wait_for_workers(2)
        result = {}
        job = threading.Thread(target=lambda: result.setdefault("run", train(cfg, own, init_from=init_from)))
        job.start()
        # Wait until training is under way (a round has ended: its record stays in memory until
        # the epoch is collected), then kill a worker.
        deadline = time.time() + 300
        while not any(ROUND_ENDED.match(k) for k in own.run_on_scheduler(
                lambda dask_scheduler: [str(t.key) for t in dask_scheduler.tasks.values() if t.state == "memory"])):
            assert time.time() < deadline and job.is_alive()
            time.sleep(0.05)
        pid = next(iter(own.run(os.getpid).values()))
        assert job.is_alive()  # killed mid-training, not after
        os.kill(pid, signal.SIGKILL)
        job.join(timeout=600)
        assert not job.is_alive() and "run" in result
        assert pid not in own.run(os.getpid).values()  # the nanny started a new worker process

    reference_cfg = load_config(None, train_cfg, environ={}, corpus=(corpus,), out=str(tmp_path / "reference"))
    reference = load(train(reference_cfg, client, init_from=init_from).run_url)
    killed = load(result["run"].run_url)
    assert killed.manifest["metrics"]["restarts_after_worker_loss"] == 1
    assert reference.manifest["metrics"]["restarts_after_worker_loss"] == 0
    assert killed.vocab == reference.vocab
    assert np.array_equal(killed.vectors, reference.vectors)
    return killed, reference
