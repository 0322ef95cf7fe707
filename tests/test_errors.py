"""Bad input on the command line: one line naming the problem and the fix, the documented exit
code, found before any cluster starts, nothing published and LATEST untouched.

Every case runs against a scheduler address where nothing listens, with a 1 s cluster timeout:
a case that got as far as connecting would exit 75 instead of its own code. (Corpus cases, which
need the workers to read the data, are in test_inputs.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import require_root, require_tool

from nsdist import runs, storage
from nsdist.cli import main
from nsdist.config import load_config
from nsdist import inputs

NOWHERE = ["--scheduler", "tcp://127.0.0.1:1", "--set", "cluster.timeout=1"]


@pytest.fixture
def site(tmp_path, publish_run):
    """A corpus, and an output with one published run (whose LATEST must survive every case)."""
    (tmp_path / "c.txt").write_text("a b c a b\nb c a\n")
    out = tmp_path / "out"
    run_id = publish_run(str(out), ["a", "b", "c"], np.ones((3, 4)))
    return tmp_path, out, run_id


def _fails(argv, code, message, capfd, site):
    tmp, out, run_id = site
    latest, runs = (out / "LATEST").read_bytes(), sorted(os.listdir(out / "runs"))
    assert run_id in runs
    assert main(argv) == code, capfd.readouterr().err
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nsdist: error: "), err
    assert message in lines[0], lines[0]
    assert (out / "LATEST").read_bytes() == latest and sorted(os.listdir(out / "runs")) == runs
    return lines[0]


CONFIG_CASES = [
    (["--set", "dim=0"], "train.dim must be >= 1, got 0"),
    (["--set", "window=-1"], "train.window must be >= 0 (0: the whole sentence or session), got -1"),
    (["--set", "negative=0"], "train.negative must be >= 1"),
    (["--set", "epochs=0"], "train.epochs must be >= 1, got 0"),
    (["--set", "sample=-0.1"], "train.sample must be >= 0"),
    (["--set", "alpha=0"], "train.alpha > 0"),
    (["--set", "alpha=-0.1"], "got alpha=-0.1"),
    (["--set", "min_alpha=0.5"], "0 <= train.min_alpha <= alpha, got alpha=0.025 min_alpha=0.5"),
    (["--set", "shards=0"], "train.shards must be >= 1 or unset, got 0"),
    (["--set", "shards=-2"], "train.shards must be >= 1 or unset, got -2"),
    (["--set", "ns_exponent=.nan"], "train.ns_exponent must be a finite number"),
    (["--set", "ns_exponent=-.inf"], "train.ns_exponent must be a finite number"),
    (["--set", "min_count=-1"], "train.min_count must be >= 0"),
    (["--set", "max_vocab=0"], "train.max_vocab must be >= 1"),
    (["--set", "dim=abc"], "'train.dim' must be of type int"),
    (["--set", "dimm=3"], "unknown config key 'dimm'"),
    (["--set", "kernel=fast"], "train.kernel must be one of batch, pair"),
    (["--workers", "-1"], "cluster.workers (--workers) must be >= 1"),
    (["--threads-per-worker", "0"], "cluster.threads_per_worker must be >= 1"),
    (["--set", "cluster.timeout=-5"], "cluster.timeout must be a positive number"),
]


@pytest.mark.parametrize("extra, message", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_configuration_errors(extra, message, site, capfd):
    tmp, out, _ = site
    argv = ["train", "--corpus", str(tmp / "c.txt"), "--out", str(out), *NOWHERE, *extra]
    _fails(argv, 2, message, capfd, site)


@pytest.mark.parametrize("spec, message", [
    ("- dim\n- 3\n", "must be a YAML mapping of config keys"),
    ("dim: [3\n", "is not valid YAML"),
    ("train: 3\n", "config section 'train' must be a mapping"),
    (None, "cannot read job spec"),
])
def test_job_spec_errors(spec, message, site, capfd):
    tmp, out, _ = site
    path = tmp / "job.yaml"
    if spec is not None:
        path.write_text(spec)
    argv = ["train", "--corpus", str(tmp / "c.txt"), "--out", str(out), "--config", str(path), *NOWHERE]
    _fails(argv, 2, message, capfd, site)


def test_an_environment_variable_is_named(site, capfd, monkeypatch):
    tmp, out, _ = site
    monkeypatch.setenv("NSDIST_DIMM", "3")
    _fails(["train", "--corpus", str(tmp / "c.txt"), "--out", str(out), *NOWHERE], 2,
           "(from the environment variable NSDIST_DIMM: fix or unset it)", capfd, site)


@pytest.mark.parametrize("where, message", [
    ("afile", "is a file, not a directory; pass a writable directory or prefix as --out"),
    ("afile/below", "is a file, not a directory; pass a writable directory or prefix as --out"),
])
def test_outputs_that_cannot_be_written(where, message, site, capfd):
    tmp, out, _ = site
    (tmp / "afile").write_text("not a directory")
    argv = ["train", "--corpus", str(tmp / "c.txt"), "--out", str(tmp / where), *NOWHERE]
    _fails(argv, 2, message, capfd, site)


def test_a_read_only_output_directory(site):
    """A directory on a read-only filesystem (root may write anywhere else): a read-only tmpfs
    mounted in a mount namespace of the job's own."""
    unshare = require_tool("unshare", why="a mount namespace of the job's own (util-linux)")
    require_root(why="unshare --mount, to mount a read-only tmpfs")
    tmp, _, _ = site
    ro = tmp / "ro"
    ro.mkdir()
    job = [sys.executable, "-m", "nsdist", "train", "--corpus", str(tmp / "c.txt"), "--out", str(ro / "out"),
           *NOWHERE]
    script = f"mount -t tmpfs -o ro tmpfs {ro} && exec \"$@\""
    p = subprocess.run([unshare, "--mount", "sh", "-c", script, "sh", *job], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (f"nsdist: error: cannot write the outputs under {str(ro / 'out')!r}: {ro} is not "
                                "writable; pass a writable directory or prefix as --out"), p.stderr


def test_a_corpus_that_does_not_exist(site, capfd):
    tmp, out, _ = site
    _fails(["train", "--corpus", str(tmp / "missing.txt"), "--out", str(out), *NOWHERE], 3,
           "does not exist; check the path or URL", capfd, site)
    _fails(["train", "--corpus", str(tmp / "*.nothing"), "--out", str(out), *NOWHERE], 3,
           "matches no files", capfd, site)


# ---------------------------------------------------------------- lifecycle

def _claim(tmp, out) -> str:
    """A run claimed (never published) under ``out``, as a job that died would leave it."""
    cfg = load_config(None, {"dim": 4}, environ={}, corpus=(str(tmp / "c.txt"),), out=str(out))
    run_id = runs.new_run_id()
    runs.claim_run(str(out), run_id, None, config=cfg.to_dict(),
                      corpus_fingerprint=inputs.corpus_fingerprint(storage.expand(cfg.corpus, {})))
    return run_id


def test_lifecycle_errors(site, capfd):
    tmp, out, run_id = site
    corpus = ["--corpus", str(tmp / "c.txt")]
    # --resume: nothing there; an output instead of a run; a published run; a changed corpus.
    _fails(["train", "--resume", str(out / "runs" / "nope"), *NOWHERE], 3, "no run there (no _claim.json)",
           capfd, site)
    _fails(["train", "--resume", str(out), *NOWHERE], 2, "is an output, not a run; pass one of its runs",
           capfd, site)
    _fails(["train", "--resume", str(out / "runs" / run_id), *NOWHERE], 3, "was already published", capfd, site)
    claimed = _claim(tmp, out)
    (tmp / "c.txt").write_text("a b c a b\nb c a\nc c\n")
    _fails(["train", "--resume", str(out / "runs" / claimed), *NOWHERE], 3,
           f"the corpus changed since run {claimed} started", capfd, site)
    # --init-from: nothing published there; another dim.
    (tmp / "empty" / "runs").mkdir(parents=True)
    for parent in (tmp / "nothing", tmp / "empty"):
        _fails(["train", *corpus, "--out", str(tmp / "new"), "--init-from", str(parent), *NOWHERE], 3,
               "(neither LATEST nor manifest.json); train one first", capfd, site)
    _fails(["train", *corpus, "--out", str(tmp / "new"), "--init-from", str(out), "--set", "dim=8", *NOWHERE], 2,
           "has dim 4, this job dim 8; set dim=4 or train from scratch", capfd, site)
    assert not (tmp / "new").exists()


@pytest.mark.parametrize("latest, message", [
    (b"garbage{", "is not valid JSON"),
    (json.dumps({"format": "nsdist-latest", "version": 1, "run": "../../../etc"}).encode(), "invalid run id"),
    (json.dumps({"format": "nsdist-latest", "version": 1, "run": "a/b"}).encode(), "invalid run id"),
    (json.dumps({"format": "nsdist-latest", "version": 1, "run": "/etc"}).encode(), "invalid run id"),
    (json.dumps({"format": "something-else", "version": 1, "run": "x"}).encode(), "not an nsdist-latest"),
])
def test_a_broken_latest_is_refused_and_never_leaves_runs(latest, message, site, capfd):
    tmp, out, _ = site
    (out / "LATEST").write_bytes(latest)
    for argv in (["neighbors", str(out), "a"], ["info", str(out)],
                 ["train", "--corpus", str(tmp / "c.txt"), "--out", str(tmp / "new"), "--init-from", str(out),
                  "--set", "dim=4", *NOWHERE]):
        assert main(argv) == 3
        err = capfd.readouterr().err.strip()
        assert err.startswith("nsdist: error: ") and message in err and len(err.splitlines()) == 1, err
        assert "LATEST" in err and "pass a run URL" in err, err


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:100], "has 100 bytes, the manifest says"),
    (lambda b: b[:-4] + b"\x00\x00\x80\x7f", "does not match its sha256 in the manifest"),
])
def test_damaged_vectors_are_refused(damage, message, site, capfd):
    tmp, out, run_id = site
    npy = out / "runs" / run_id / "vectors.npy"
    npy.write_bytes(damage(npy.read_bytes()))
    for argv in (["neighbors", str(out), "a"],
                 ["train", "--corpus", str(tmp / "c.txt"), "--out", str(tmp / "new"), "--init-from", str(out),
                  "--set", "dim=4", "--set", "min_count=1", "--workers", "1"]):
        assert main(argv) == 3
        err = capfd.readouterr().err.strip().splitlines()
        assert err[-1].startswith("nsdist: error: ") and message in err[-1], err
        assert not any(line.startswith("nsdist: error") for line in err[:-1]) and "Traceback" not in "".join(err)
    assert not (tmp / "new" / "LATEST").exists()


# ---------------------------------------------------------------- storage

def test_storage_without_credentials_or_endpoint(s3, dead_endpoint, tmp_path, monkeypatch, capfd):
    """S3 outputs are tried before any cluster starts: missing credentials are a configuration
    error (2), an endpoint that refuses is transient (75, after the retries)."""
    import s3fs

    from nsdist import storage

    (tmp_path / "c.txt").write_text("a b c\n")
    out = s3.url("out")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    endpoint = json.dumps({"client_kwargs": {"endpoint_url": s3.endpoint}})
    assert main(["train", "--corpus", str(tmp_path / "c.txt"), "--out", out, "--set",
                 f"storage_options={endpoint}", *NOWHERE]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no usable storage credentials" in err and "AWS_ACCESS_KEY_ID" in err, err

    monkeypatch.setattr(storage, "BACKOFF", 0.01)
    refused = json.dumps({"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": dead_endpoint}})
    assert main(["train", "--corpus", str(tmp_path / "c.txt"), "--out", out, "--set",
                 f"storage_options={refused}", *NOWHERE]) == 75
    err = capfd.readouterr().err.strip().splitlines()
    retries = [line for line in err if "retrying in" in line]
    assert len(retries) == storage.RETRIES - 1 and all(f"of {storage.RETRIES}" in line for line in retries), err
    assert err[-1].startswith(f"nsdist: error: storage unavailable after {storage.RETRIES} attempt(s)"), err
    assert err[-1].endswith("retry the job") and len(err) == storage.RETRIES, err
    assert not list(s3.boto().list_objects_v2(Bucket=s3.bucket).get("Contents", []))


@pytest.mark.parametrize("flag, text, message", [
    ("--analogies", "a b c\n", "line 1: expected an analogy 'a b c d'"),
    ("--pairs", "a\tb\tmany\n", "line 1: score 'many' is not a finite number"),
    ("--clusters", "a\n", "clusters:1: expected 'word<TAB>label' (2 or more fields), got 1 fields: 'a'"),
    ("--analogies", b"\xff\xfe a b c d\n", "'utf-8' codec can't decode byte 0xff"),
])
def test_malformed_evaluation_files(flag, text, message, site, capfd):
    tmp, out, _ = site
    path = tmp / "truth.txt"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    said = _fails(["evaluate", str(out), flag, str(path)], 3, f"{path}: {message}", capfd, site)
    assert said.endswith("; fix the file or pass another"), said
