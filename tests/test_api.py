"""``nsdist.train`` from Python: the command line's checks, the user's client, or a cluster of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import nsdist
from nsdist.cli import main
from nsdist.config import JobConfig, TrainConfig
from nsdist.errors import ConfigError, DataError
from nsdist.synth import generate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("api") / "c.txt"), tokens=30_000, seed=7).corpus


@pytest.mark.parametrize("params, cli", [
    ({"merge": "avg"}, ["--set", "merge=avg"]),
    ({"dim": 0}, ["--set", "dim=0"]),
    ({"dimm": 3}, ["--set", "dimm=3"]),
    ({"cluster": {"workers": 0}}, ["--set", "cluster.workers=0"]),
])
def test_the_same_checks_and_messages_as_the_command_line(params, cli, corpus, tmp_path, capsys):
    out = str(tmp_path / "out")
    with pytest.raises(ConfigError) as raised:
        nsdist.train(corpus, out, **params)
    assert main(["train", "--corpus", corpus, "--out", out, *cli]) == 2
    assert capsys.readouterr().err.strip() == f"nsdist: error: {raised.value}"
    with pytest.raises(DataError, match="does not exist"):
        nsdist.train(str(tmp_path / "missing.txt"), out)
    assert not (tmp_path / "out").exists()


def test_train_on_the_given_or_the_active_client(corpus, tmp_path, client, caplog):
    given = nsdist.train(corpus, str(tmp_path / "a"), client=client, dim=16, epochs=2, min_count=2)
    assert [e["epoch"] for e in given.metrics["epochs"]] == [1, 2] and given.metrics["models"] == 2
    emb = given.load()
    assert emb.manifest["run_id"] == given.run_id and emb.vectors.shape == (len(emb), 16)
    # No client given: the one active in this process (the fixture's), not a new cluster.
    caplog.set_level("INFO", logger="nsdist")
    active = nsdist.train(corpus, str(tmp_path / "b"), config={"train": {"dim": 16, "epochs": 2}}, min_count=2)
    assert f"using the active Dask client (scheduler {client.scheduler.address})" in caplog.text
    assert "starting a local cluster" not in caplog.text
    # Same seed, shards and workers: the same vectors, whichever way the job was given.
    assert np.array_equal(active.load().vectors, emb.vectors)
    assert active.manifest["config"]["train"] == given.manifest["config"]["train"]
    # A JobConfig as the spec; the user's cluster still works for other work afterwards.
    spec = JobConfig(train=TrainConfig(dim=16, epochs=2, min_count=2))
    third = nsdist.train(corpus, str(tmp_path / "c"), client=client, config=spec)
    assert np.array_equal(third.load().vectors, emb.vectors)
    assert client.submit(sum, [1, 2, 3]).result() == 6


def test_without_a_client_a_local_cluster_is_started_and_closed(corpus, tmp_path):
    """In a fresh process (no active client): a LocalCluster of its own, gone after the job."""
    script = f"""
import json, psutil, nsdist
result = nsdist.train({corpus!r}, {str(tmp_path / 'out')!r}, dim=8, epochs=1, min_count=2, cluster={{"workers": 1}})
# multiprocessing's resource tracker lives as long as this process, by design; workers must not.
print(json.dumps({{"url": result.run_url, "models": result.metrics["models"],
                  "children": [p.cmdline() for p in psutil.Process().children()
                               if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline())]}}))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["models"] == 1 and report["children"] == [], report
    assert nsdist.load(str(tmp_path / "out")).manifest["run_id"] in report["url"]
    assert "Traceback" not in p.stderr and "ERROR" not in p.stderr, p.stderr
