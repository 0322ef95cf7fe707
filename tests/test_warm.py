"""A warm start's new words start from the means of the published vectors of the known words
they co-occur with (train.warm_new = cooccur): by hand on a literal corpus, on the cluster equal
to an in-process computation, through a whole job and its resume, and on a planted clickstream."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nsdist import cluster, runs
from nsdist.config import load_config
from nsdist.corpus import plan_blocks
from nsdist.encode import Shard
from nsdist.errors import ConfigError
from nsdist.model import init_model
from nsdist.pipeline import train
from nsdist.synth import generate
from nsdist.synth.sessions import retrain_days
from nsdist.vocab import Vocab
from nsdist import warm_parts as wp
from nsdist.formats import WORD_ESCAPE, vocab_lines
from nsdist.warm import cooccur_sums, merge_sums, neighbours, warm_rows, warm_start_model
from killjobs import kill, wait_for_checkpoint

# The parent knows a, b, c, d; the new vocabulary drops d and adds x and y.
PARENT_WORDS = ["a", "b", "c", "d"]
PARENT = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 4], [8, 8, 8]], np.float32)
VOCAB = Vocab(pa.array(["a", "x", "b", "c", "y"], pa.large_string()), np.array([9, 8, 7, 6, 5]))
A, X, B, C, Y = range(5)


def shard(*sentences: list[int]) -> Shard:
    return Shard(np.array([i for s in sentences for i in s], np.int32),
                 np.cumsum([0, *map(len, sentences)]).astype(np.int64))


@pytest.fixture
def parent(publish_run, tmp_path):
    out = str(tmp_path / "parent")
    return runs.run_url(out, publish_run(out, PARENT_WORDS, PARENT))


@pytest.mark.parametrize("window, x_rows, y_rows", [
    # "a x b c a" | "y x c": with window 1, x sees a and b (sentence 1) and c (y is new: no
    # vector); y sees only x, new: it keeps its random start.
    (1, [A, B, C], []),
    # Window 2: x sees a, b, c, then c; y sees c (two places away).
    (2, [A, B, C, C], [C]),
    # 0, the whole sentence: x sees a, b, c, a, then c; y sees c.
    (0, [A, B, C, A, C], [C]),
])
def test_new_rows_are_the_mean_of_their_known_neighbours_by_hand(parent, window, x_rows, y_rows):
    known = neighbours(VOCAB, parent, None, 3)
    assert known.slot.tolist() == [-1, 0, -1, -1, 1]
    # Two shards, one sentence each: the per-shard sums, merged.
    parts = [cooccur_sums(known, window, shard([A, X, B, C, A])), cooccur_sums(known, window, shard([Y, X, C]))]
    merged = merge_sums(*parts)
    vec = {A: PARENT[0], B: PARENT[1], C: PARENT[2]}
    expected = {X: x_rows, Y: y_rows}
    rows = [r for r in (X, Y) if expected[r]]
    assert merged.rows.tolist() == rows
    assert merged.counts.tolist() == [len(expected[r]) for r in rows]
    assert np.array_equal(merged.win, [np.sum([vec[k] for k in expected[r]], axis=0) for r in rows])
    # publish_run's output vectors are the input vectors reversed.
    assert np.array_equal(merged.wout, [np.sum([vec[k][::-1] for k in expected[r]], axis=0) for r in rows])

    model = warm_start_model(VOCAB, parent, None, 3, seed=5, new=merged)
    fresh = init_model(5, 3, seed=5)
    for r in rows:  # the means of the parent's input and output vectors, one term per co-occurrence
        assert np.array_equal(model.win[r], np.mean([vec[k] for k in expected[r]], axis=0).astype(np.float32))
        assert np.array_equal(model.wout[r], np.mean([vec[k][::-1] for k in expected[r]], axis=0).astype(np.float32))
    for r in {X, Y} - set(rows):  # no known neighbour: the random start, output zero
        assert np.array_equal(model.win[r], fresh.win[r]) and not model.wout[r].any()
    assert np.array_equal(model.win[[A, B, C]], PARENT[:3])
    assert np.array_equal(model.wout[[A, B, C]], PARENT[:3, ::-1])  # publish_run's output vectors


def test_a_shard_without_new_words_adds_nothing(parent):
    known = neighbours(VOCAB, parent, None, 3)
    empty = cooccur_sums(known, 2, shard([A, B, C]), shard([]))
    assert empty.rows.tolist() == [] and empty.win.shape == empty.wout.shape == (0, 3)
    merged = merge_sums(empty, cooccur_sums(known, 2, shard([X, A])))
    assert merged.rows.tolist() == [X] and merged.win.tolist() == [[1.0, 0.0, 0.0]]
    assert merged.wout.tolist() == [[0.0, 0.0, 1.0]]


def test_the_join_by_buckets_equals_the_whole_join(publish_run, tmp_path):
    """warm_parts.py's join, this vocabulary in 3 ranges of ids and the parent's vocab.tsv in 2
    blocks of lines over 4 buckets, gives each word the parent row that warm_rows finds with the
    whole vocabularies, words the parent escaped (a space, a leading %) included."""
    old = ["the", "new york", "%d", "gone", "50%", "b", "\u00e9t\u00e9"]
    vocab = Vocab(pa.array(["b", "x", "%d", "the", "new york", "y", "\u00e9t\u00e9", "50%"], pa.large_string()),
                  np.arange(8, 0, -1))
    out = str(tmp_path / "p")
    parent = runs.run_url(out, publish_run(out, old, np.zeros((len(old), 2))))
    data = open(os.path.join(parent, "vocab.tsv"), "rb").read()
    cut = data.index(b"\n", len(data) // 2) + 1
    blocks = [vocab_lines(b, WORD_ESCAPE)[0] for b in (data[:cut], data[cut:])]
    assert [len(b) for b in blocks] == [3, 4]
    ranges, n = [(0, 3), (3, 4), (4, 8)], 4
    ours = [wp.numbered(vocab.words[lo:hi], lo, n) for lo, hi in ranges]
    theirs = [wp.numbered(b, first, n) for b, first in zip(blocks, (0, 3))]
    answers = [wp.join_bucket(len(ours), *[o[q] for o in ours], *[t[q] for t in theirs]) for q in range(n)]
    got = np.concatenate([wp.range_parents(lo, hi, ours[r], *[a[r] for a in answers])
                          for r, (lo, hi) in enumerate(ranges)])
    known, src, stats = warm_rows(vocab, parent, None)
    assert got.tolist() == [old.index(w) if w in old else -1 for w in vocab.words.to_pylist()]
    assert np.array_equal(got >= 0, known) and np.array_equal(got[known], src)
    assert stats == {"known_words": 6, "new_words": 2, "dropped_words": 1}


def test_warm_new_is_a_checked_config_key():
    assert load_config(None, {}, environ={}).train.warm_new == "cooccur"
    assert load_config(None, {"warm_new": "random"}, environ={}).train.warm_new == "random"
    with pytest.raises(ConfigError, match="train.warm_new must be one of cooccur, random, got 'mean'"):
        load_config(None, {"warm_new": "mean"}, environ={})


def python_sums(path: str, vocab: list[str], known: dict, window: int) -> dict:
    """The co-occurrence sums by plain loops over the corpus's lines (unknown words removed first)."""
    sums: dict = {}
    words = set(vocab)
    with open(path) as f:
        for line in f:
            s = [w for w in line.split() if w in words]
            for i, w in enumerate(s):
                if w in known:
                    continue
                for j in range(max(0, i - window), min(len(s), i + window + 1)):
                    if j != i and s[j] in known:
                        total, n = sums.get(w, (0.0, 0))
                        sums[w] = (total + known[s[j]].astype(np.float64), n + 1)
    return sums


def test_the_cluster_sums_equal_in_process_sums(client, publish_run, tmp_path):
    """The sums computed where the shards are, merged in a tree, equal (bit for bit) the same
    functions run in this process on the same shards, and a plain loop over the corpus."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=30_000, seed=4)
    cfg = load_config(None, {"dim": 8, "window": 3, "min_count": 2}, environ={}, corpus=(files.corpus,),
                      out=str(tmp_path / "out"))
    counted = cluster.count_vocab(client, cfg, plan_blocks(cfg.corpus, {}, 20_000), "warm-eq", 3)
    vocab = counted.vocab.result()
    words = vocab.words.to_pylist()
    old = [w for w in words if not w.startswith(("c00_", "c01_"))] + ["gone"]  # c00_, c01_ are new
    vectors = np.random.default_rng(3).standard_normal((len(old), 8)).astype(np.float32)
    parent = runs.run_url(str(tmp_path / "p"), publish_run(str(tmp_path / "p"), old, vectors))
    shards, _, _ = cluster.encode_shards(client, cfg, counted, 3, 2, "warm-eq")

    future, initialised = cluster.new_row_sums(client, cfg, shards, counted.vocab, parent, "warm-eq")
    got = future.result()
    known = neighbours(vocab, parent, None, 8)
    local = merge_sums(*[cooccur_sums(known, 3, *pieces) for pieces in client.gather(shards)])
    assert initialised == len(got.rows) > 20
    for name in ("rows", "win", "wout", "counts"):
        assert np.array_equal(getattr(got, name), getattr(local, name)), name

    by_hand = python_sums(files.corpus, words, dict(zip(old, vectors)), 3)
    assert sorted(by_hand) == sorted(words[r] for r in got.rows)
    for r, total, n in zip(got.rows, got.win, got.counts):
        assert by_hand[words[r]][1] == n
        np.testing.assert_allclose(total, by_hand[words[r]][0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layout", ["replicated", "partitioned", "partitioned/2"])
def test_a_warm_job_starts_new_words_from_their_neighbours(client, publish_run, tmp_path, layout, monkeypatch):
    """Through a whole job: with a learning rate too small to move a float32, the published
    vectors are the start itself, bit for bit the in-process start of the whole model: known words
    their parent vectors, new words the mean of their neighbours, those without one random; the
    manifest counts them. In the partitioned layout the start is built by rows (``/2``: a model
    holds its rows in 2 groups of rounds, and each worker reduces the new rows' sums in several
    bins, one after another, bins of 16 ids), the parent's vocab.tsv read in blocks and joined with
    this vocabulary by parts, a word the parent escaped (%pct) known again. warm_new=random: every
    new word random."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=30_000, seed=4)
    with open(files.corpus, "a") as f:
        f.write("%pct x%y\n" * 3)
    layout, _, groups = layout.partition("/")
    if groups:  # the bins' count and blocks are the client's to choose
        monkeypatch.setattr(wp, "BIN_BYTES", 2**8)
        monkeypatch.setattr(wp, "BIN_ROWS", 16)
    still = {"dim": 8, "window": 3, "min_count": 2, "epochs": 1, "shards": 2, "alpha": 1e-30, "min_alpha": 0}
    placed = {**still, "train.layout": layout, "blocksize": 4096, **({"row_groups": int(groups)} if groups else {})}
    cfg = load_config(None, still, environ={}, corpus=(files.corpus,), out=str(tmp_path / "cold"))
    words = train(cfg, client).load().vocab
    old = [w for w in words if not w.startswith("c00_")] + ["gone", "new york", "%d"]
    vectors = np.random.default_rng(3).standard_normal((len(old), 8)).astype(np.float32)
    parent = runs.run_url(str(tmp_path / "p"), publish_run(str(tmp_path / "p"), old, vectors))
    assert "%25pct\t" in open(os.path.join(parent, "vocab.tsv")).read()
    assert os.path.getsize(os.path.join(parent, "vocab.tsv")) > 2 * placed["blocksize"]  # read in blocks

    got = {}
    for how in ("cooccur", "random"):
        cfg = load_config(None, {**placed, "warm_new": how}, environ={}, corpus=(files.corpus,),
                          out=str(tmp_path / how))
        got[how] = train(cfg, client, init_from=parent)
        assert got[how].manifest["metrics"]["layout"] == layout
    assert got["cooccur"].manifest["metrics"].get("row_groups") == (int(groups or 1) if layout != "replicated" else None)
    record = got["cooccur"].manifest["parent"]
    new = [r for r, w in enumerate(words) if w.startswith("c00_")]
    if groups:
        assert wp.bins_per_worker(len(new), 2, 8) >= 4 and min(new) // 16 < max(new) // 16 - 4
    assert record == {"parent_run": parent, "known_words": len(words) - len(new), "new_words": len(new),
                      "dropped_words": 3, "cooccur_words": len(new)}
    assert got["random"].manifest["parent"] == {**record, "cooccur_words": 0}

    vocab = Vocab(pa.array(words, pa.large_string()), np.array(got["cooccur"].load().counts))
    known = neighbours(vocab, parent, None, 8)
    expected = warm_start_model(vocab, parent, None, 8, 1, merge_sums(
        *[cooccur_sums(known, 3, *pieces) for pieces in local_shards(client, files.corpus, still)]))
    fresh = init_model(len(words), 8, 1)
    assert np.array_equal(got["cooccur"].load().vectors, expected.win)
    assert np.array_equal(got["random"].load().vectors, warm_start_model(vocab, parent, None, 8, 1).win)
    assert np.array_equal(got["random"].load().vectors[new], fresh.win[new])
    assert not np.array_equal(expected.win[new], fresh.win[new])
    assert np.array_equal(expected.win[words.index("%pct")], vectors[old.index("%pct")])


def local_shards(client, corpus: str, params: dict) -> list:
    cfg = load_config(None, params, environ={}, corpus=(corpus,), out="unused")
    counted = cluster.count_vocab(client, cfg, plan_blocks(cfg.corpus, {}, cfg.blocksize), "warm-local", 2)
    return client.gather(cluster.encode_shards(client, cfg, counted, 2, 4, "warm-local")[0])


def planted_days(tmp_path, seed: int):
    """Two days of a planted clickstream (100 of 1000 items new on day 2) as Parquet files."""
    (day1, _), (day2, _), cat, new = retrain_days(4000, 1000, 100, seed)
    paths = [str(tmp_path / f"day{d}-{seed}.parquet") for d in (1, 2)]
    for table, path in zip((day1, day2), paths):
        pq.write_table(table, path, row_group_size=1000)
    return paths, dict(zip(map(str, cat.ids.tolist()), cat.group.tolist())), set(map(str, new.tolist()))


SESSIONS = {"parquet_column": "items", "dim": 32, "window": 50, "sample": 0, "ns_exponent": 0.5, "min_count": 2,
            "shards": 2}


def start_cosines(client, tmp_path, seed: int) -> tuple[float, float]:
    """The new items' mean cosine to their group's centroid (the day-1 unit vectors of its items)
    at the start of day 2: from their known neighbours, and random."""
    (day1, day2), group, new = planted_days(tmp_path, seed)
    out = str(tmp_path / f"day1-{seed}")
    cfg = load_config(None, {**SESSIONS, "epochs": 5, "seed": seed}, environ={}, corpus=(day1,), out=out)
    old = train(cfg, client).load()
    cfg = load_config(None, {**SESSIONS, "epochs": 1, "seed": seed}, environ={}, corpus=(day2,), out=out)
    counted = cluster.count_vocab(client, cfg, plan_blocks(cfg.corpus, {}, cfg.blocksize, "items"), f"q{seed}", 2)
    shards = cluster.encode_shards(client, cfg, counted, 2, 4, f"q{seed}")[0]
    parent = runs.resolve_run(out, None)
    sums, _ = cluster.new_row_sums(client, cfg, shards, counted.vocab, parent, f"q{seed}")
    vocab = counted.vocab.result()
    starts = {how: warm_start_model(vocab, parent, None, 32, seed, new).win
              for how, new in (("cooccur", sums.result()), ("random", None))}
    unit = old.vectors / np.linalg.norm(old.vectors, axis=1, keepdims=True)
    labels = np.array([group[w] for w in old.vocab])
    centroid = np.stack([unit[labels == g].mean(axis=0) for g in range(labels.max() + 1)])
    centroid /= np.linalg.norm(centroid, axis=1, keepdims=True)
    rows = [r for r, w in enumerate(vocab.words.to_pylist()) if w in new]
    target = centroid[[group[w] for w in np.array(vocab.words.to_pylist())[rows]]]

    def cosine(win):
        v = win[rows] / np.linalg.norm(win[rows], axis=1, keepdims=True)
        return float(np.mean(np.sum(v * target, axis=1)))

    return cosine(starts["cooccur"]), cosine(starts["random"])


def test_new_items_start_close_to_their_group(client, tmp_path):
    """Planted clickstream: 100 of 1000 items (50 groups) enter on day 2. From their known
    neighbours, new items start near their group's day-1 centroid; at random, nowhere near it.
    Calibrated: 0.959 / 0.963 / 0.959 with co-occurrence, -0.012 / 0.021 / -0.014 random (seeds
    1 / 2 / 3)."""
    cooccur, random = start_cosines(client, tmp_path, seed=1)
    assert cooccur >= 0.9 and abs(random) <= 0.1, (cooccur, random)


TRAIN = ["dim=16", "epochs=4", "min_count=3", "shards=2", "syncs_per_epoch=2", "seed=7"]


def test_a_killed_warm_job_resumes_from_its_checkpoint(client, publish_run, tmp_path):
    """A warm-started job killed after its first checkpoint resumes from that checkpoint (not
    from the warm start) to the vectors of the uninterrupted job, with the same warm-start record."""
    files = generate(str(tmp_path / "corpus.txt"), tokens=400_000, seed=3)
    cold = load_config(None, dict(kv.split("=") for kv in [*TRAIN, "epochs=1"]), environ={},
                       corpus=(files.corpus,), out=str(tmp_path / "cold"))
    words = train(cold, client).load().vocab
    old = [w for w in words if not w.startswith(("c00_", "c01_"))]
    vectors = np.random.default_rng(3).standard_normal((len(old), 16)).astype(np.float32) / 16
    parent = runs.run_url(str(tmp_path / "p"), publish_run(str(tmp_path / "p"), old, vectors))

    out = str(tmp_path / "out")
    sets = [a for kv in TRAIN for a in ("--set", kv)]
    job = subprocess.Popen([sys.executable, "-m", "nsdist", "train", "--corpus", files.corpus, "--out", out,
                            "--init-from", parent, "--workers", "2", *sets],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run = wait_for_checkpoint(job, out)
    kill(job)
    assert not os.path.exists(os.path.join(out, "LATEST"))
    resumed = subprocess.run([sys.executable, "-m", "nsdist", "train", "--resume", run, "--workers", "2"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming run" in resumed.stderr and "warm start from" not in resumed.stderr

    cfg = load_config(None, dict(kv.split("=") for kv in TRAIN), environ={}, corpus=(files.corpus,),
                      out=str(tmp_path / "reference"))
    reference = train(cfg, client, init_from=parent).load()
    got = runs.load(out)
    assert got.vocab == reference.vocab and np.array_equal(got.vectors, reference.vectors)
    assert got.manifest["parent"] == reference.manifest["parent"]
    assert got.manifest["parent"]["cooccur_words"] == got.manifest["parent"]["new_words"] > 20
