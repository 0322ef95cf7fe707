"""The top-k table: its kernel against a brute-force reference, the table a job publishes, and
the recommend query (method and command)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.dataset
import pytest
from distributed import get_task_stream

import nsdist
import nsdist.runs
from nsdist import storage
from nsdist.cli import main
from nsdist.config import load_config
from nsdist.errors import ConfigError, DataError, UnknownWord
from nsdist.runs import load
from nsdist.pipeline import train
from nsdist.nearest import block_topk, tile_shape, unit_rows


def reference(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best other rows by cosine (float64, zero rows score 0), ties by lower row:
    a full sort of every row of the whole similarity matrix."""
    v = vectors.astype(np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1
    scores = (v / norms) @ (v / norms).T
    np.fill_diagonal(scores, -np.inf)
    n = len(v)
    k = min(k, n - 1)
    idx = np.array([np.lexsort((np.arange(n), -row))[:k] for row in scores], np.int64).reshape(n, k)
    return idx, np.take_along_axis(scores, idx, axis=1)


def tied_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Rows of four entries +-1 (norm 2: every cosine a multiple of 1/4, exact in float32 whatever
    the summation order), so that many rows are equal and most scores tie; every 7th row zero."""
    rng = np.random.default_rng(seed)
    v = np.zeros((n, dim), np.float32)
    for i in range(n):
        if i % 7:
            v[i, rng.choice(dim, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    return v


# Tiles of 4 MiB (one tile), and tiny ones: 7 x 13 scores, remainders in both directions.
@pytest.mark.parametrize("tile_bytes", [4 * 2**20, 4 * 7 * 13, 4])
@pytest.mark.parametrize("lo,hi", [(0, 200), (37, 151)])
def test_block_topk_equals_brute_force_on_random_vectors(tile_bytes, lo, hi):
    vectors = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    want_idx, want_scores = reference(vectors, 7)
    idx, scores = block_topk(unit_rows(vectors), lo, hi, 7, tile_bytes)
    assert idx.shape == scores.shape == (hi - lo, 7) and idx.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(idx, want_idx[lo:hi])
    np.testing.assert_allclose(scores, want_scores[lo:hi], atol=1e-6)
    assert not (idx == np.arange(lo, hi)[:, None]).any()  # never the row itself


@pytest.mark.parametrize("tile_bytes", [4 * 2**20, 4 * 5 * 11])
def test_block_topk_breaks_ties_by_row_and_scores_zero_rows_zero(tile_bytes):
    vectors = tied_vectors(120, 6, seed=1)
    want_idx, want_scores = reference(vectors, 10)
    assert (np.diff(want_scores, axis=1) == 0).mean() > 0.5  # the case is about ties
    idx, scores = block_topk(unit_rows(vectors), 0, 120, 10, tile_bytes)
    assert np.array_equal(idx, want_idx)
    assert np.array_equal(scores, want_scores.astype(np.float32))
    zero = np.flatnonzero(~vectors.any(axis=1))
    assert len(zero) > 10 and (scores[zero] == 0).all()


def test_block_topk_with_k_past_the_other_rows():
    vectors = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    idx, scores = block_topk(unit_rows(vectors), 0, 5, 20)
    assert idx.shape == (5, 4)  # every other row, ranked
    assert [sorted(r) for r in idx.tolist()] == [[j for j in range(5) if j != i] for i in range(5)]
    assert np.array_equal(idx, reference(vectors, 20)[0])
    assert block_topk(unit_rows(vectors[:1]), 0, 1, 3)[0].shape == (1, 0)  # one row: no neighbours
    assert block_topk(unit_rows(vectors), 2, 2, 3)[0].shape == (0, 3)


def test_unit_rows_and_tile_shape():
    vectors = np.array([[3, 4], [0, 0], [0, -2]], np.float32)
    assert np.array_equal(unit_rows(vectors, step=2), np.array([[0.6, 0.8], [0, 0], [0, -1]], np.float32))
    rows, cols = tile_shape(10_000, 1_000_000, 64 * 2**20)
    assert rows * cols * 4 <= 64 * 2**20 and rows == 512
    assert tile_shape(10, 10**9, 400) == (10, 10)


# ---------------------------------------------------------------- the table a job publishes

def corpus(lines: int = 1500, seed: int = 0) -> str:
    """Sentences of Zipf-distributed words, a few of them non-ASCII."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(150)] + ["Über", "東京"]
    p = 1 / np.arange(1, len(words) + 1)
    return "".join(" ".join(rng.choice(words, size=rng.integers(1, 20), p=p / p.sum())) + "\n" for _ in range(lines))


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def job(client, tmp_path_factory):
    """A job with topk=5 on the shared 2-worker cluster: its result, its log records and the
    workers its top-k tasks ran on (Dask's task stream)."""
    d = tmp_path_factory.mktemp("topk-job")
    (d / "c.txt").write_text(corpus())
    cfg = load_config(None, {"dim": 16, "epochs": 1, "min_count": 2, "shards": 2, "syncs_per_epoch": 2, "topk": 5},
                      environ={}, corpus=(str(d / "c.txt"),), out=str(d / "out"))
    records, logger = Records(), logging.getLogger("nsdist")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        with get_task_stream(client) as stream:
            result = train(cfg, client)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    where = {t["worker"] for t in stream.data if t["key"].startswith("top-k-")}
    return result, records.records, where


def test_a_job_publishes_the_top_k_table_of_every_word(job):
    result, records, where = job
    parts = sorted(name for name in result.manifest["files"] if name.startswith("neighbors/"))
    assert parts == [f"neighbors/part-{i:05d}.parquet" for i in range(len(parts))] and len(parts) >= 2
    assert sorted(os.listdir(os.path.join(result.run_url, "neighbors"))) == [p.split("/")[1] for p in parts]
    assert len(where) == 2  # the blocks were dealt over both workers
    table = pyarrow.dataset.dataset(os.path.join(result.run_url, "neighbors"), format="parquet").to_table()
    assert table.schema == pa.schema([("item", pa.string()), ("neighbor", pa.string()), ("score", pa.float32()),
                                      ("rank", pa.int16())])
    emb = load(result.run_url)
    assert table.num_rows == 5 * len(emb) and len(emb) > 100
    got: dict[str, list] = {}
    for item, neighbor, score, rank in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        got.setdefault(item, []).append((rank, neighbor, score))
    assert list(got) == emb.vocab  # parts in order, items in vocabulary order
    for word in emb.vocab:
        want = emb.most_similar(word, topn=5)
        assert [r for r, _, _ in got[word]] == [1, 2, 3, 4, 5]
        assert [n for _, n, _ in got[word]] == [w for w, _ in want], word
        np.testing.assert_allclose([s for _, _, s in got[word]], [s for _, s in want], atol=1e-5)
    # nsdist's own reader: the parts the manifest lists, in order; the same rows.
    assert nsdist.read_neighbors(os.path.dirname(os.path.dirname(result.run_url))).equals(table)
    assert result.metrics["topk_seconds"] > 0
    assert nsdist.runs.run_info(result.run_url)["timings"]["topk_seconds"] == result.metrics["topk_seconds"]
    assert "topk_seconds" in open(os.path.join(result.run_url, "report.html")).read()
    [line] = [r for r in records if getattr(r, "stage", None) == "topk"]
    assert line.parts == len(parts) and line.words == len(emb) and line.seconds == result.metrics["topk_seconds"]
    assert line.getMessage().startswith(f"top-k table: {len(emb)} words x 5 neighbours in {len(parts)} part(s)")


def test_the_parts_are_checked_like_every_file_of_the_run(job, tmp_path):
    result, _, _ = job
    out = str(tmp_path / "out")
    shutil.copytree(os.path.dirname(os.path.dirname(result.run_url)), out)
    assert len(load(out, verify=True)) > 100
    part = os.path.join(out, "runs", result.run_id, "neighbors", "part-00001.parquet")
    data = bytearray(open(part, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    open(part, "wb").write(bytes(data))
    load(out)  # sizes only: still loads
    with pytest.raises(DataError, match=r"part-00001.parquet' does not match its sha256 in the manifest"):
        load(out, verify=True)
    with pytest.raises(DataError, match="does not match its sha256"):
        nsdist.read_neighbors(out, verify=True)
    os.remove(part)
    with pytest.raises(DataError, match=r"part-00001.parquet' is listed in the manifest but missing"):
        load(out)


def test_a_run_without_the_table_says_how_to_publish_one(tmp_path, publish_run):
    out = str(tmp_path / "out")
    publish_run(out, ["a", "b"], np.ones((2, 3)))
    with pytest.raises(DataError, match=r"has no top-k table; train with --set topk=K"):
        nsdist.read_neighbors(out)


def test_topk_is_a_checked_config_key():
    assert load_config(None, {"topk": 20}, environ={}).topk == 20
    assert load_config(None, {}, environ={"NSDIST_TOPK": "7"}).topk == 7
    for bad in (-1, 2**15):
        with pytest.raises(ConfigError, match=r"topk must be between 0 \(no table\) and 32767"):
            load_config(None, {"topk": bad}, environ={})


# ---------------------------------------------------------------- recommend

WORDS = ["a", "b", "c", "d", "e"]
VECTORS = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 2, 0], [0.7, 0.7, 0], [0, 0, 1]], np.float32)


def expected_recommendations(items: list[str], exclude: bool) -> list[tuple[str, float]]:
    """The mean of the items' unit vectors, every word's cosine with it, best first, ties by row."""
    unit = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
    mean = unit[[WORDS.index(i) for i in items]].mean(axis=0)
    scores = unit @ (mean / np.linalg.norm(mean))
    order = sorted(range(len(WORDS)), key=lambda r: (-scores[r], r))
    return [(WORDS[r], float(scores[r])) for r in order if not (exclude and WORDS[r] in items)]


def test_recommend_ranks_by_the_mean_of_the_items():
    emb = nsdist.Embeddings(WORDS, [5, 4, 3, 2, 1], VECTORS)
    for exclude in (True, False):
        got = emb.recommend(["a", "c"], topn=10, exclude_seen=exclude)
        want = expected_recommendations(["a", "c"], exclude)
        assert [w for w, _ in got] == [w for w, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
    assert [w for w, _ in emb.recommend(["a", "c"], topn=2)] == ["d", "b"]
    assert [w for w, _ in emb.recommend(["a", "c"], exclude_seen=False)][:4] == ["d", "b", "a", "c"]  # a, c tie
    assert [w for w, _ in emb.recommend("e", topn=1)] == ["a"]  # every other word scores 0: the first row
    with pytest.raises(UnknownWord, match=r"word 'zz' not in vocabulary \(5 words\)"):
        emb.recommend(["a", "zz"])
    with pytest.raises(ConfigError, match="one or more items"):
        emb.recommend([])


def test_recommend_on_the_command_line(tmp_path, capsys, publish_run):
    out = str(tmp_path / "out")
    publish_run(out, WORDS, VECTORS)
    for flags, exclude in (([], True), (["--exclude-seen"], True), (["--include-seen"], False)):
        assert main(["recommend", out, "a", "c", "--topn", "3", "--scoring", "cosine", *flags]) == 0
        want = expected_recommendations(["a", "c"], exclude)[:3]
        assert capsys.readouterr().out.splitlines() == [f"{w}\t{s:.4f}" for w, s in want], flags
    # By default the run's scoring rule, which reads its output vectors too.
    assert main(["recommend", out, "a", "c", "--topn", "3"]) == 0
    want = load(out).recommend(["a", "c"], topn=3)
    assert capsys.readouterr().out.splitlines() == [f"{w}\t{s:.4f}" for w, s in want]
    for argv, message in ((["recommend", out, "a", "zz"], "nsdist: error: word 'zz' not in vocabulary (5 words)"),
                          (["recommend", out, "a", "--topn", "0"], "nsdist: error: --topn must be >= 1, got 0")):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == message
    with pytest.raises(SystemExit):
        main(["recommend", "--help"])
    text = capsys.readouterr().out
    assert "items to print (default: 10;" in text and "leave the given items out (default: True)" in text


def test_the_table_is_written_to_s3_from_the_workers(s3, client, tmp_path):
    so = s3.storage_options
    storage.write_bytes(s3.url("corpus.txt"), corpus(lines=400).encode(), so)
    cfg = load_config(None, {"dim": 8, "epochs": 1, "min_count": 2, "shards": 2, "topk": 3}, environ={},
                      corpus=(s3.url("corpus.txt"),), out=s3.url("models/items"))
    result = train(dataclasses.replace(cfg, storage_options=so), client)
    parts = sorted(name for name in result.manifest["files"] if name.startswith("neighbors/"))
    prefix = f"models/items/runs/{result.run_id}/neighbors/"
    listed = s3.boto().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]
    assert sorted(prefix + p.split("/")[1] for p in parts) == sorted(o["Key"] for o in listed) and len(parts) >= 2
    assert all(o["Size"] == result.manifest["files"]["neighbors/" + o["Key"].rsplit("/", 1)[1]]["size"]
               for o in listed)
    emb = load(s3.url("models/items"), so, verify=True)  # follows LATEST; checks every part's sha256
    table = nsdist.read_neighbors(s3.url("models/items"), so, verify=True)
    assert table.num_rows == 3 * len(emb) and table.column("item").to_pylist()[::3] == emb.vocab
    word = emb.vocab[7]
    rows = table.filter(pa.compute.equal(table.column("item"), word))
    assert rows.column("neighbor").to_pylist() == [w for w, _ in emb.most_similar(word, topn=3)]
