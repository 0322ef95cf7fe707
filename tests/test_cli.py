"""The command line end to end: train on a 2-worker process LocalCluster, publish, read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gensim.models import KeyedVectors

import nsdist
from nsdist.cli import main
from nsdist.synth import generate


def run(*argv):
    """The real console entry point in a fresh process: exit code, stdout, stderr."""
    p = subprocess.run([sys.executable, "-m", "nsdist", *argv], capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


def test_train_publish_and_read_back(tmp_path):
    files = generate(str(tmp_path / "corpus.txt"), tokens=150_000, seed=4)
    out = str(tmp_path / "out")
    spec = tmp_path / "job.yaml"
    spec.write_text("dim: 32\nepochs: 2\ntrain:\n  syncs_per_epoch: 2\n")
    code, stdout, stderr = run("train", "--corpus", files.corpus, "--out", out, "--config", str(spec),
                               "--set", "min_count=3", "--workers", "2")
    assert code == 0, stderr
    run_url = stdout.strip().splitlines()[-1]
    import importlib.util

    served = importlib.util.find_spec("bokeh") is not None  # Dask serves its dashboard only with bokeh
    assert ("dashboard: http://127.0.0.1:" if served else "pip install 'nsdist[dashboard]'") in stderr
    assert "epoch 2/2" in stderr
    assert "starting a local cluster of 2 worker process(es) x 1 thread(s)" in stderr

    emb = nsdist.load(out)
    manifest = json.loads(open(os.path.join(run_url, "manifest.json")).read())
    assert emb.manifest["run_id"] == manifest["run_id"] == os.path.basename(run_url)
    assert manifest["config"]["train"]["min_count"] == 3 and manifest["corpus"]["shards"] == 2
    text = KeyedVectors.load_word2vec_format(os.path.join(run_url, "vectors.txt"))
    binary = KeyedVectors.load_word2vec_format(os.path.join(run_url, "vectors.bin"), binary=True)
    assert text.index_to_key == binary.index_to_key == emb.vocab
    assert np.array_equal(text.vectors, emb.vectors) and np.array_equal(binary.vectors, emb.vectors)
    word = emb.vocab[10]
    ours = [w for w, _ in emb.most_similar(word, topn=5)]
    assert ours == [w for w, _ in text.most_similar(word, topn=5)]
    assert abs(emb.similarity(word, emb.vocab[11]) - float(text.similarity(word, emb.vocab[11]))) < 1e-5

    code, stdout, _ = run("neighbors", out, word, "--topn", "3")
    assert code == 0 and [line.split("\t")[0] for line in stdout.splitlines()] == ours[:3]
    code, stdout, _ = run("evaluate", out, "--analogies", files.analogies, "--pairs", files.pairs, "--json")
    report = json.loads(stdout)
    assert code == 0 and report["analogies"]["total"] > 0 and report["pairs"]["pairs"] > 0


def test_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    cases = [
        (["train", "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--set", "dimm=3"], 2, "unknown config key 'dimm'"),
        (["train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), "--workers", "1"], 3,
         "does not exist"),
        (["neighbors", str(tmp_path / "nothing"), "w"], 3, "no published model"),
        (["evaluate", str(tmp_path / "nothing")], 2, "nothing to evaluate"),
        (["frobnicate"], 2, "invalid choice"),
        (["train", "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--workers", "0"], 2,
         "cluster.workers (--workers) must be >= 1"),
        (["train", "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--threads-per-worker", "0"], 2,
         "cluster.threads_per_worker must be >= 1"),
        (["neighbors", str(tmp_path / "nothing"), "w", "--topn", "-3"], 2, "--topn must be >= 1"),
    ]
    for argv, code, message in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if line.startswith("nsdist: error:")]
        assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "o").exists()


def test_a_corrupt_checkpoint_state_and_unexpected_errors(tmp_path, capsys):
    """A checkpoint state without its epoch is bad data (exit 3, naming the file and the fix). An
    error nsdist has no class for (here: writing under a file) is exit 1 in one line; -v adds
    the traceback. (Unknown words, UnknownWord, exit 2: test_embeddings.py.)"""
    from nsdist import checkpoint, storage

    state = tmp_path / "out" / "runs" / "20260101T000000Z-abcdef" / "checkpoints" / "0001" / "state.json"
    storage.write_bytes(str(state), storage.dump_json({"format": checkpoint.FORMAT, "version": checkpoint.VERSION}))
    assert main(["runs", str(tmp_path / "out"), "--all"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == (f"nsdist: error: {str(state)!r} is incomplete (no {', '.join(checkpoint.STATE_KEYS)}): the "
                   "checkpoint is corrupt; delete its folder to resume from the one before, or start a new run"), err
    (tmp_path / "afile").write_text("")
    assert main(["synth", str(tmp_path / "afile" / "c.txt"), "--tokens", "100"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nsdist: error: NotADirectoryError: ") and err.endswith("(rerun with -v for the traceback)")
    assert len(err.splitlines()) == 1
    assert main(["synth", str(tmp_path / "afile" / "c.txt"), "--tokens", "100", "-v"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_help_without_arguments_and_global_options_after_the_command(tmp_path, capsys, publish_run):
    assert main([]) == 2
    assert "usage: nsdist" in capsys.readouterr().out
    # -v and --log-format work after the command too: a JSON log line from `gc`.
    out = str(tmp_path / "out")
    publish_run(out, ["a", "b"], np.ones((2, 3)))
    assert main(["gc", out, "--keep", "5", "--dry-run", "-v", "--log-format", "json"]) == 0
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["level"] == "info" and line["message"] == f"would delete 0 run(s) under {out}"


def test_help_shows_defaults_examples_and_every_config_key(capsys):
    import pytest

    from nsdist.cli import EXAMPLES
    from nsdist.config import HELP, keys

    assert {k for k, _, _ in keys()} == set(HELP)  # every field has its line, and nothing else
    for command in EXAMPLES:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert exit_.value.code == 0 and text.startswith(f"usage: nsdist {command}")
        assert EXAMPLES[command] in text and "(default: None)" not in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for key, default, meaning in keys():
        assert any(line.split()[:2] == [key, default] and line.endswith(meaning) for line in text.splitlines()), key
    with pytest.raises(SystemExit):
        main(["neighbors", "--help"])
    assert "neighbours to print (default: 10)" in capsys.readouterr().out


def test_a_fresh_install_says_once_that_it_compiles_kernels(tmp_path):
    """A fresh install is one whose numba cache is empty: an empty NUMBA_CACHE_DIR here."""
    corpus = generate(str(tmp_path / "c.txt"), tokens=20_000, seed=2).corpus
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    said = []
    for i in range(2):
        p = subprocess.run([sys.executable, "-m", "nsdist", "train", "--corpus", corpus, "--out", str(tmp_path / "o"),
                            "--workers", "1", "--set", "dim=8", "--set", "epochs=1"],
                           capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stderr
        said.append(p.stderr.count("compiling nsdist's kernels"))
    assert said == [1, 0]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, client, capsys):
    from nsdist.config import load_config
    from nsdist.counts import count_tokens
    from nsdist.corpus import tokenize
    from nsdist.dryrun import dry_run
    from nsdist.vocab import build_vocab

    corpus = generate(str(tmp_path / "c.txt"), tokens=300_000, seed=5).corpus
    truth = build_vocab(count_tokens(tokenize(open(corpus, "rb").read())), min_count=5)
    out = tmp_path / "out"
    argv = ["train", "--corpus", corpus, "--out", str(out), "--scheduler", client.scheduler.address, "--dry-run"]
    assert main([*argv, "--set", "dim=50"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "counted 1 block(s) (100% of the corpus): 300,000 tokens" in text
    assert f"vocabulary {len(truth):,} words" in text
    assert f"= {2 * len(truth) * 50 * 4 / 1e6:,.1f} MB" in text and "4 per epoch x 5 epoch(s)" in text
    workers = sorted(client.scheduler_info()["workers"])
    assert f"  {workers[0]}: shards 0;" in text and f"  {workers[1]}: shards 1;" in text
    assert text.count(": fits") == 2
    assert text.count("MB at peaks, of") == 2 and text.count(" MB besides") == 2  # what the workers' processes hold
    # Many blocks: the sample's estimate of the vocabulary and tokens.
    cfg = load_config(None, {"blocksize": 2**16, "shards": 4}, environ={}, corpus=(corpus,), out=str(out))
    plan = dry_run(cfg, client)
    assert plan["corpus"]["blocks"] > 20 and plan["sample"]["blocks"] == 8 and plan["sample"]["fraction"] < 0.5
    assert abs(plan["sample"]["vocab_size"] / len(truth) - 1) < 0.1, plan["sample"]
    assert abs(plan["sample"]["tokens"] / 300_000 - 1) < 0.1, plan["sample"]
    assert [w["shards"] for w in plan["workers"]] == [[0, 2], [1, 3]] and not out.exists()
    assert all(w["process"] > 50e6 for w in plan["workers"])  # Python, Dask and numba at least


@pytest.mark.parametrize("min_count", [1, 3, 10])
def test_the_dry_runs_vocabulary_estimate_finds_a_long_tail(min_count):
    """A 5% sample of a Zipf corpus sees a fraction of its rare words; the estimate extrapolates
    them (plan.estimate_vocab), erring high where the vocabulary saturates (1.3x at min_count 1
    here) and within 10% from min_count 3 on, where the threshold scaled down to the sample
    (min_count x 5%) is off by 0.1x, 0.5x and 2.4x."""
    from nsdist.plan import estimate_vocab

    rng = np.random.default_rng(3)
    p = 1.0 / np.arange(1, 1_000_001)
    counts = rng.multinomial(2_000_000, p / p.sum())  # 1M ids, 2M tokens: most ids rare
    truth = int((counts >= min_count).sum())
    sample = rng.binomial(counts, 0.05)
    sample = sample[sample > 0]
    assert 0.85 < estimate_vocab(sample, 0.05, min_count, None) / truth < 1.4
    assert not 0.85 < (sample >= min_count * 0.05).sum() / truth < 1.4
    assert estimate_vocab(sample, 0.05, min_count, 1000) == 1000


def test_a_job_lists_its_corpus_once(tmp_path, client, monkeypatch):
    """A listing of a large S3 prefix takes seconds, and a second one could see other files."""
    from nsdist import storage

    corpus = generate(str(tmp_path / "c.txt"), tokens=20_000, seed=2).corpus
    listed = []
    real = storage.expand

    def counting(urls, storage_options=None):
        listed.append(tuple(urls))
        return real(urls, storage_options)

    monkeypatch.setattr(storage, "expand", counting)
    for extra in ([], ["--dry-run"]):
        listed.clear()
        assert main(["train", "--corpus", corpus, "--out", str(tmp_path / "out"), "--scheduler",
                     client.scheduler.address, "--set", "dim=8", "--set", "epochs=1", *extra]) == 0
        assert listed == [(corpus,)], extra


def test_the_demo_trains_on_the_corpus_synth_writes(tmp_path):
    """``nsdist demo``: the corpus it writes is the one ``synth`` writes, and the run trained on
    it is published and scored."""
    code, stdout, stderr = run("demo", "--dir", str(tmp_path / "demo"), "--tokens", "100000", "--set", "dim=16",
                               "--set", "epochs=1")
    assert code == 0, stderr
    reference = generate(str(tmp_path / "reference.txt"), tokens=100_000, seed=1)
    assert (tmp_path / "demo" / "corpus.txt").read_bytes() == open(reference.corpus, "rb").read()
    assert f"synthetic corpus: 100000 tokens in {tmp_path / 'demo' / 'corpus.txt'}" in stderr
    assert "starting a local cluster of 2 worker process(es)" in stderr and "epoch 1/1" in stderr
    published = nsdist.load(str(tmp_path / "demo" / "out"))
    assert published.manifest["corpus"]["files"] == [str(tmp_path / "demo" / "corpus.txt")]
    assert published.manifest["corpus"]["raw_tokens"] == 100_000
    assert f"published {os.path.join(tmp_path, 'demo', 'out', 'runs', published.manifest['run_id'])}" in stdout
    assert "neighbours of c00_w" in stdout


def test_the_demo_checks_its_settings_before_writing_or_starting_anything(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path / "demo"), "--set", "dim=-1"]) == 2
    assert "dim" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "corpus.txt").exists()
