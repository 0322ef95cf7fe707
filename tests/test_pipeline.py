"""The distributed job on a real LocalCluster of worker processes."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

from nsdist import storage
from nsdist.config import load_config
from nsdist.corpus import plan_blocks
from nsdist.errors import DataError
from nsdist.outputs import list_runs, load
from nsdist import pipeline
from nsdist.pipeline import _tree_levels, _tree_reduce, count_vocab, encode_shards, train


def corpus_text(lines=3000, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)] + ["Über", "ñandú", "東京"]
    p = 1 / np.arange(1, len(words) + 1)
    p /= p.sum()
    return "".join(" ".join(rng.choice(words, size=rng.integers(0, 25), p=p)) + "\n" for _ in range(lines))


def config(corpus, out, **train):
    base = {"dim": 16, "epochs": 2, "min_count": 3, "shards": 3, "syncs_per_epoch": 3}
    return load_config(None, {**base, **train}, environ={}, corpus=tuple(corpus), out=out)


def test_distributed_counts_equal_in_process_count(client, write):
    text = corpus_text()
    cut = text.index("\n", len(text) // 3) + 1
    paths = [write("a.txt", text[:cut]), write("b.txt.gz", text[cut:])]
    cfg = load_config(None, {"min_count": 1}, environ={}, corpus=tuple(paths), out="unused", blocksize=4096)
    blocks = plan_blocks(cfg.corpus, blocksize=cfg.blocksize)
    assert len(blocks) > 5
    vocab, summary, scanned, block_tokens = count_vocab(client, cfg, blocks, "test-count")
    vocab = vocab.result()
    expected = collections.Counter(text.split())
    assert dict(zip(vocab.words.to_pylist(), vocab.counts.tolist())) == dict(expected)
    assert vocab.words.to_pylist() == sorted(expected, key=lambda w: (-expected[w], w))
    assert summary["raw_tokens"] == sum(expected.values())
    assert summary["sentences"] == sum(1 for line in text.splitlines() if line.split())
    assert sum(block_tokens) == summary["raw_tokens"] and len(scanned) == len(blocks)


def test_shards_are_dealt_over_the_workers(client, write):
    """Training runs where a shard is held, so shards must not pile up on one worker."""
    path = write("c.txt", corpus_text())
    cfg = load_config(None, {"min_count": 1}, environ={}, corpus=(path,), out="unused", blocksize=4096)
    blocks = plan_blocks(cfg.corpus, blocksize=cfg.blocksize)
    vocab, summary, scanned, block_tokens = count_vocab(client, cfg, blocks, "test-deal")
    shards, words = encode_shards(client, cfg, scanned, block_tokens, vocab, 4, "test-deal")
    holders = collections.Counter(w for ws in client.who_has(shards).values() for w in ws)
    assert sorted(holders.values()) == [2, 2], holders
    assert words.sum() == summary["vocab_tokens"]


def test_same_seed_and_shards_give_identical_vectors(client, write, tmp_path):
    path = write("c.txt", corpus_text())
    runs = []
    for i, blocksize in enumerate([10**6, 5000]):  # blocks differ; shards and seed do not
        cfg = config([path], str(tmp_path / f"out{i}"))
        cfg = type(cfg)(**{**cfg.__dict__, "blocksize": blocksize})
        runs.append(load(train(cfg, client).run_url))
    assert runs[0].vocab == runs[1].vocab
    assert np.array_equal(runs[0].vectors, runs[1].vectors)
    # The model merged as 3 interleaved row blocks: every rule is per row, so the same bits.
    blocked = load(train(config([path], str(tmp_path / "out3"), merge_blocks=3), client).run_url)
    assert np.array_equal(blocked.vectors, runs[0].vectors)
    other = load(train(config([path], str(tmp_path / "out2"), seed=2), client).run_url)
    assert not np.array_equal(other.vectors, runs[0].vectors)


def test_publish_layout_and_manifest(client, write, tmp_path):
    out = str(tmp_path / "out")
    result = train(config([write("c.txt", corpus_text())], out), client)
    latest = json.loads((tmp_path / "out" / "LATEST").read_text())
    assert latest == {"format": "nsdist-latest", "version": 1, "run": result.run_id}
    manifest = json.loads(open(os.path.join(result.run_url, "manifest.json")).read())
    assert manifest["format"] == "nsdist-manifest" and manifest["config"]["train"]["dim"] == 16
    assert set(manifest["files"]) == {"vectors.txt", "vectors.bin", "vectors.npy", "context.npy",
                                      "vectors.parquet", "vocab.tsv"}
    for name, meta in manifest["files"].items():
        assert os.path.getsize(os.path.join(result.run_url, name)) == meta["size"]
    epochs = manifest["metrics"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(e["words_per_second"] > 0 and e["merge_bytes"] > 0 for e in epochs)
    assert epochs[1]["loss"] < epochs[0]["loss"]
    assert manifest["corpus"]["shards"] == 3
    # 3 shards, one row block per worker (2): per round one merge task per block, each fed the
    # three shards' deltas of its block and nothing else.
    assert manifest["metrics"]["merge_blocks"] == 2
    merges = [m for e in epochs for m in e["merges"]]
    assert merges and all(m["tasks"] == 2 and m["depth"] == 1 and m["bytes"] == m["delta_bytes"] > 0 for m in merges)
    assert manifest["metrics"]["client_peak_rss_bytes"] > 0
    emb = load(out, verify=True)
    assert emb.manifest["run_id"] == result.run_id and emb.vectors.shape == (len(emb.vocab), 16)


def test_failed_run_publishes_nothing(client, write, tmp_path):
    out = str(tmp_path / "out")
    good = train(config([write("c.txt", corpus_text())], out), client)
    before = (tmp_path / "out" / "LATEST").read_bytes()
    with pytest.raises(DataError, match="empty vocabulary"):
        train(config([write("small.txt", "a b c\n")], out, min_count=100), client)
    assert (tmp_path / "out" / "LATEST").read_bytes() == before
    # The failed run keeps its claim (a resume needs it) but was never published.
    assert [r["run_id"] for r in list_runs(out)] == [good.run_id]
    failed = [r for r in storage.listdir(os.path.join(out, "runs")) if r != good.run_id]
    assert len(failed) == 1 and not os.path.exists(os.path.join(out, "runs", failed[0], "manifest.json"))


def test_tree_levels_keep_order_and_keys(client):
    leaves = [client.submit(str, i, key=f"leaf-{i}") for i in range(17)]
    # os.path.join is order-sensitive and variadic, like sum_deltas.
    parts, levels = _tree_levels(client, os.path.join, leaves, key="t", fan_in=3)
    assert levels == 2 and [f.key for f in parts] == ["t-1-0", "t-1-3"]
    assert client.gather(parts) == ["0/1/2/3/4/5/6/7/8", "9/10/11/12/13/14/15/16"]
    assert _tree_levels(client, os.path.join, leaves[:3], key="u", fan_in=3) == (leaves[:3], 0)
    root = _tree_reduce(client, os.path.join, leaves, key="t", fan_in=3)
    assert root.key == "t-2-0" and root.result() == "/".join(map(str, range(17)))


def test_merge_tree_equals_one_merge_task(client, write, tmp_path, monkeypatch):
    """9 shards: two partial sums and a root (fan-in 8) against one task that sums all nine."""
    path = write("c.txt", corpus_text())
    tree = train(config([path], str(tmp_path / "tree"), shards=9, epochs=1, merge_blocks=1), client)
    merges = tree.manifest["metrics"]["epochs"][0]["merges"]
    assert all(m["tasks"] == 3 and m["depth"] == 2 and m["bytes"] > m["delta_bytes"] for m in merges)
    monkeypatch.setattr(pipeline, "MERGE_FAN_IN", 9)
    flat = train(config([path], str(tmp_path / "flat"), shards=9, epochs=1, merge_blocks=1), client)
    assert all(m["tasks"] == 1 for m in flat.manifest["metrics"]["epochs"][0]["merges"])
    a, b = load(tree.run_url), load(flat.run_url)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-4, atol=1e-5)
