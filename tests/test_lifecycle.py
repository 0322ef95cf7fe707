"""A job's life: killed and resumed bit-identically; warm-started retraining on new data."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from nsdist.config import load_config
from nsdist.encode import Shard  # noqa: F401  (workers unpickle it)
from nsdist.evaluate import cluster_precision
from nsdist.model import init_model
from nsdist.formats import write_run_files
from nsdist.runs import claim_run, load, new_run_id, publish, run_url
from nsdist.pipeline import train
from nsdist.warm import warm_model
from nsdist.synth import generate
from nsdist.vocab import Vocab
from nsdist import inputs, storage
from killjobs import kill, wait_for_checkpoint

TRAIN = ["dim=24", "epochs=4", "min_count=3", "shards=2", "syncs_per_epoch=2", "seed=7"]


def nsdist_cmd(*argv):
    return [sys.executable, "-m", "nsdist", *argv]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_job_says_how_to_resume(tmp_path, sig, code):
    """Ctrl-C at a terminal (SIGINT to the whole process group) or SIGTERM to the job (a pod
    evicted): one line with the resume command, the documented exit code, nothing published, no
    process left behind, and the command resumes the run."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=400_000, seed=3)
    out = str(tmp_path / "out")
    sets = [a for kv in TRAIN for a in ("--set", kv)]
    job = subprocess.Popen(nsdist_cmd("train", "--corpus", files.corpus, "--out", out, "--workers", "2", *sets),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not glob.glob(os.path.join(out, "runs", "*", "checkpoints", "epoch-0001", "state.json")):
        assert job.poll() is None, job.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    if sig == signal.SIGINT:
        os.killpg(job.pid, sig)
    else:
        job.send_signal(sig)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == code, stderr[-2000:]
    said = [line for line in stderr.splitlines() if line.startswith("nsdist:")]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-3000:]
    match = re.fullmatch(r"nsdist: interrupted: run (\S+) stopped (after epoch \d|before its first checkpoint), "
                         r"nothing published; resume with: nsdist train --resume (\S+)", said[0])
    assert match and os.path.isabs(match[3]), said
    assert not os.path.exists(os.path.join(out, "LATEST"))
    deadline = time.time() + 30
    while True:  # the local cluster's processes go with the job
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "worker processes outlived the interrupted job"
        time.sleep(0.1)
    # `runs --all` finds it too: unpublished, its last checkpoint, the same command.
    listed = subprocess.run(nsdist_cmd("runs", out, "--all"), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.splitlines() == [
        f"  {match[1]}  {listed.stdout.split()[1]}  unpublished, checkpoint {match[2]}; resume: "
        f"nsdist train --resume {match[3]}"], listed.stdout
    resumed = subprocess.run(nsdist_cmd("train", "--resume", match[3], "--workers", "2"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0 and resumed.stdout.strip().splitlines()[-1] == match[3], resumed.stderr[-2000:]
    assert load(out).manifest["run_id"] == match[1]


@pytest.mark.parametrize("layout", ["replicated", "partitioned", "partitioned/2"])
def test_killed_job_resumes_to_identical_vectors(client, tmp_path, layout):
    """SIGKILL after a checkpoint, then --resume: the vectors of an uninterrupted run. In the
    partitioned layout each worker reads only the rows it holds from the checkpoint (``/2``: its
    first group's, of 2 groups of rounds)."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=400_000, seed=3)
    out = str(tmp_path / "out")
    layout, _, groups = layout.partition("/")
    train_keys = [*TRAIN, f"train.layout={layout}", *([f"train.row_groups={groups}"] if groups else [])]
    sets = [a for kv in train_keys for a in ("--set", kv)]
    # A new session: killing its process group takes the LocalCluster's workers down too.
    job = subprocess.Popen(nsdist_cmd("train", "--corpus", files.corpus, "--out", out, "--workers", "2", *sets),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run = wait_for_checkpoint(job, out)
    kill(job)
    assert not os.path.exists(os.path.join(out, "LATEST"))

    if layout == "replicated":  # checked before the layout matters
        # A checkpoint from a version that cut the shards differently is refused, not silently mixed.
        other = run + "-old"
        shutil.copytree(run, other)
        for state in glob.glob(os.path.join(other, "checkpoints", "*", "state.json")):
            with open(state) as f:
                doc = json.load(f)
            doc.pop("shard_plan")
            with open(state, "w") as f:
                json.dump(doc, f)
        refused = subprocess.run(nsdist_cmd("train", "--resume", other, "--workers", "1"), capture_output=True,
                                 text=True, timeout=300)
        assert refused.returncode != 0 and "cut shards differently" in refused.stderr, refused.stderr[-2000:]
        shutil.rmtree(other)

    resumed = subprocess.run(nsdist_cmd("train", "--resume", run, "--workers", "2"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r"resuming run \S+ after epoch [123]", resumed.stderr)
    assert resumed.stdout.strip().splitlines()[-1] == run

    cfg = load_config(None, dict(kv.split("=") for kv in train_keys), environ={}, corpus=(files.corpus,),
                      out=str(tmp_path / "reference"))
    reference = load(train(cfg, client).run_url)
    got = load(out)
    assert got.manifest["metrics"]["layout"] == reference.manifest["metrics"]["layout"] == layout
    assert got.manifest["metrics"].get("row_groups") == reference.manifest["metrics"].get("row_groups")
    assert got.manifest["metrics"].get("row_groups") == (int(groups) if groups else None if layout == "replicated" else 1)
    assert got.vocab == reference.vocab
    assert np.array_equal(got.vectors, reference.vectors)
    assert not os.path.exists(os.path.join(run, "checkpoints"))  # removed once published
    assert [e["epoch"] for e in got.manifest["metrics"]["epochs"]] == [1, 2, 3, 4]


def test_warm_model_keeps_known_rows_and_initialises_new_ones(tmp_path):
    dim = 4
    old = init_model(3, dim, seed=5)
    old_words = pa.array(["a", "b", "c"], pa.large_string())
    out, run_id = str(tmp_path / "out"), new_run_id()
    claim_run(out, run_id)
    parent = run_url(out, run_id)
    files = write_run_files(parent, old_words, np.array([9, 8, 7]), old.win, old.wout + 1)
    publish(out, run_id, {"files": files})
    vocab = Vocab(pa.array(["c", "new", "a"], pa.large_string()), np.array([9, 6, 5]))
    model, stats = warm_model(vocab, parent, None, dim, seed=11)
    assert stats == {"known_words": 2, "new_words": 1, "dropped_words": 1}
    assert np.array_equal(model.win[[0, 2]], old.win[[2, 0]])
    assert np.array_equal(model.wout[[0, 2]], old.wout[[2, 0]] + 1)
    fresh = init_model(3, dim, seed=11)
    assert np.array_equal(model.win[1], fresh.win[1]) and np.array_equal(model.wout[1], fresh.wout[1])


def rewrite(src: str, dst: str, rename: str, drop: str) -> None:
    """Copy a corpus, renaming cluster `rename`'s words (new words) and deleting cluster `drop`'s."""
    with open(src) as f, open(dst, "w") as g:
        for line in f:
            tokens = [t.replace(f"{rename}_", "new_") for t in line.split() if not t.startswith(f"{drop}_")]
            g.write(" ".join(tokens) + "\n")


def test_warm_start_keeps_old_neighbourhoods_and_learns_new_words(client, tmp_path):
    first = generate(str(tmp_path / "day1.txt"), tokens=300_000, seed=1)
    out = str(tmp_path / "model")
    base = {"dim": 32, "epochs": 3, "shards": 2, "seed": 1}
    old = load(train(load_config(None, base, environ={}, corpus=(first.corpus,), out=out), client).run_url)

    second = generate(str(tmp_path / "raw2.txt"), tokens=300_000, seed=2)
    day2 = str(tmp_path / "day2.txt")
    rewrite(second.corpus, day2, rename="c00", drop="c01")
    cfg = load_config(None, {**base, "epochs": 1}, environ={}, corpus=(day2,), out=out)
    new = load(train(cfg, client, init_from=out).run_url)

    assert new.manifest["parent"]["parent_run"].endswith(old.manifest["run_id"])
    assert new.manifest["parent"]["new_words"] >= 20 and new.manifest["parent"]["dropped_words"] >= 20
    assert not any(w.startswith("c01_") for w in new.vocab)
    # Stable words stay where they were (measured: mean cosine to their old vector 0.986 warm,
    # -0.10 when the same day-2 job starts cold), so their old neighbourhoods carry over (top-10
    # overlap 0.62 warm, 0.20 cold; a cluster has 19 equally good neighbours, hence not 1).
    stable = [w for w in old.vocab if w.startswith(("c05_", "c10_", "c20_"))]
    cosine = np.mean([old[w] @ new[w] / np.linalg.norm(old[w]) / np.linalg.norm(new[w]) for w in stable])
    overlap = np.mean([len({w for w, _ in old.most_similar(x, topn=10)}
                           & {w for w, _ in new.most_similar(x, topn=10)}) / 10 for x in stable])
    assert cosine >= 0.9 and overlap >= 0.45, (cosine, overlap)
    # New words, seen in one epoch only, already cluster with each other.
    labels = {w: w.split("_")[0] for w in new.vocab if w.startswith(("new_", "c05_", "c10_", "c20_"))}
    assert cluster_precision(new.vocab, new.vectors, labels) >= 0.6


def test_resume_is_checked_before_any_cluster_starts(tmp_path, monkeypatch, publish_run):
    """What --resume is given is checked from storage alone: an output instead of a run, a run
    that is published, a corpus that changed since the run was claimed (even before its first
    checkpoint); and the output is where the run is, whatever directory its job ran in."""
    from nsdist import runs
    from nsdist.errors import ConfigError, DataError

    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"dim": 8}, environ={}, corpus=(str(corpus),), out="rel-out")
    runs.claim_run("rel-out", "20260101T000000Z-aaaaaa", None, config=cfg.to_dict(),
                      corpus_fingerprint=inputs.corpus_fingerprint(storage.expand(cfg.corpus, {})))
    run = os.path.join(str(tmp_path), "rel-out", "runs", "20260101T000000Z-aaaaaa")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = inputs.resume_config(run, load_config(None, environ={}))
    assert resumed.out == os.path.join(str(tmp_path), "rel-out") and resumed.train.dim == 8
    assert inputs.check_inputs(resumed, resume=run)  # same corpus: fine

    corpus.write_text("a b c d\n")  # changed before the first checkpoint
    with pytest.raises(DataError, match="the corpus changed since run 20260101T000000Z-aaaaaa started"):
        inputs.check_inputs(resumed, resume=run)
    with pytest.raises(ConfigError, match=r"is an output, not a run; pass one of its runs, .*/runs/<run_id>"):
        inputs.resume_config(str(tmp_path / "rel-out"), load_config(None, environ={}))
    with pytest.raises(DataError, match="no run there"):
        inputs.resume_config(str(tmp_path / "nothing"), load_config(None, environ={}))
    published = publish_run(str(tmp_path / "pub"), ["a"], np.ones((1, 8)))
    with pytest.raises(DataError, match=f"run {published} was already published"):
        inputs.check_inputs(resumed, resume=str(tmp_path / "pub" / "runs" / published))
