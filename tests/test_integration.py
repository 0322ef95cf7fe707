"""The whole flow on a real multi-process cluster (``dask scheduler`` + ``dask worker``
processes on 127.0.0.1) against a real S3 endpoint (moto's server), through the CLI:

train from an S3 corpus -> publish to S3 -> read back through LATEST (== a LocalCluster run with
the same seed and shards) -> retrain with --init-from -> kill that job mid-training and
--resume it (== the same retrain uninterrupted).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nsdist
from nsdist import storage
from nsdist.config import load_config
from nsdist.pipeline import train
from nsdist.synth import generate
from killjobs import kill, wait_for_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SETS = ["dim=24", "min_count=3", "shards=2", "syncs_per_epoch=2", "seed=3"]


def _local_cluster_module():
    spec = importlib.util.spec_from_file_location("nsdist_local_cluster", ROOT / "deploy" / "local" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def process_cluster(s3_env, tmp_path):
    """Scheduler + 2 single-threaded workers, started after s3_env put the credentials in the env."""
    address, cluster = _local_cluster_module().start_cluster(workers=2, threads=1, directory=tmp_path / "cluster")
    yield address
    cluster.stop()


def cli(*argv, timeout=600):
    return subprocess.run([sys.executable, "-m", "nsdist", *argv], capture_output=True, text=True, timeout=timeout)


def sets(*extra):
    return [a for kv in [*SETS, *extra] for a in ("--set", kv)]


def upload(s3, local: str, name: str) -> str:
    url = s3.url(name)
    storage.write_bytes(url, Path(local).read_bytes())
    return url


def test_s3_corpus_to_s3_model_on_a_process_cluster(s3_env, process_cluster, client, tmp_path):
    s3 = s3_env
    day1 = generate(str(tmp_path / "day1.txt"), tokens=200_000, seed=1)
    corpus = upload(s3, day1.corpus, "corpus/day1.txt")
    out = s3.url("models", "w2v")

    first = cli("train", "--scheduler", process_cluster, "--corpus", corpus, "--out", out, *sets("epochs=2"))
    assert first.returncode == 0, first.stderr[-3000:]
    published = nsdist.load(out)  # follows LATEST on S3
    first_run = first.stdout.strip().splitlines()[-1]
    assert first_run == f"{out}/runs/{published.manifest['run_id']}"

    # The same job on an embedded LocalCluster, from a local copy, gives the same vectors.
    cfg = load_config(None, dict(kv.split("=") for kv in [*SETS, "epochs=2"]), environ={},
                      corpus=(day1.corpus,), out=str(tmp_path / "local"))
    local = nsdist.load(train(cfg, client).run_url)
    assert published.vocab == local.vocab and np.array_equal(published.vectors, local.vectors)

    # Retrain on day 2, warm-started from the first run: once uninterrupted (the reference) ...
    day2 = generate(str(tmp_path / "day2.txt"), tokens=400_000, seed=2)
    corpus2 = upload(s3, day2.corpus, "corpus/day2.txt")
    retrain = ["train", "--scheduler", process_cluster, "--corpus", corpus2, "--init-from", first_run,
               *sets("epochs=5")]
    reference = cli(*retrain, "--out", s3.url("reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    # ... and once killed after its first checkpoint, then resumed.
    job = subprocess.Popen([sys.executable, "-m", "nsdist", *retrain, "--out", out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run = wait_for_checkpoint(job, out)
    kill(job)
    assert nsdist.load(out).manifest["run_id"] == published.manifest["run_id"]  # LATEST untouched

    resumed = cli("train", "--resume", run, "--scheduler", process_cluster)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run" in resumed.stderr
    retrained = nsdist.load(out)
    assert retrained.manifest["run_id"] == run.rsplit("/", 1)[-1]
    assert retrained.manifest["parent"]["parent_run"] == first_run
    expected = nsdist.load(s3.url("reference"))
    assert retrained.vocab == expected.vocab and np.array_equal(retrained.vectors, expected.vectors)

    # Reading back through the CLI with environment credentials only.
    word = retrained.vocab[5]
    neighbours = cli("neighbors", out, word, "--topn", "3")
    assert neighbours.returncode == 0 and len(neighbours.stdout.splitlines()) == 3


def test_s3_edge_list_to_s3_node_vectors_on_a_process_cluster(s3_env, process_cluster, client, tmp_path):
    """An edge list on S3 becomes published node vectors in one job on a scheduler + workers
    cluster; the same job on a LocalCluster from a local copy gives the same vectors."""
    from nsdist.synth.graph import generate_graph

    s3 = s3_env
    planted = generate_graph(str(tmp_path / "graph"), nodes=1000, seed=2)
    edges = upload(s3, planted.train, "graph/edges.parquet")
    out = s3.url("models", "nodes")
    graph_sets = ["directed=false", "walk_length=20", "min_count=1", "sample=0", "epochs=1"]
    job = cli("train", "--scheduler", process_cluster, "--edges", edges, "--out", out, *sets(*graph_sets))
    assert job.returncode == 0, job.stderr[-3000:]
    published = nsdist.load(out)
    assert published.manifest["graph"]["nodes"] == 1000 and published.manifest["word_type"] == "int64"
    cfg = load_config(None, dict(kv.split("=") for kv in [*SETS, *graph_sets]), environ={},
                      edges=(planted.train,), out=str(tmp_path / "local"))
    local = nsdist.load(train(cfg, client).run_url)
    assert published.vocab == local.vocab and np.array_equal(published.vectors, local.vectors)
