"""The partitioned layout (layout.py, reference.train_partitioned): models that hold only their
shards' rows train as the replicated models do where the rows are the same, and the merge over
holders follows its rules by hand."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from nsdist import layout
from nsdist.config import TrainConfig
from nsdist.counts import count_tokens
from nsdist.encode import Shard
from nsdist.merge import merge_deltas, shard_rates
from nsdist.model import init_model, make_tables
from nsdist.plan import model_groups, round_groups
from nsdist.reference import train_models, train_partitioned
from nsdist.shard import round_words
from nsdist.vocab import build_vocab, keep_probs


def corpus(seed: int, sentences: int, types: int, topics: int = 1):
    """Sentences of 12 Zipf-distributed words; with ``topics`` > 1 sentence k draws from topic
    k * topics // sentences's own words (a shard then uses only its topics' rows)."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, types + 1)
    lines = []
    for k in range(sentences):
        topic = k * topics // sentences
        ids = rng.choice(types, size=12, p=p / p.sum())
        lines.append([f"t{topic}w{i}" if topics > 1 and i >= 20 else f"w{i}" for i in ids])
    return lines


def encoded(lines, shards: int, rounds: int, min_count: int = 1):
    vocab = build_vocab(count_tokens(pa.array(lines)), min_count=min_count)
    index = {w: i for i, w in enumerate(vocab.words.to_pylist())}
    out = []
    for s in range(shards):
        part = lines[len(lines) * s // shards:len(lines) * (s + 1) // shards]
        ids = np.array([index[w] for line in part for w in line if w in index], np.int32)
        offsets = np.concatenate([[0], np.cumsum([sum(w in index for w in line) for line in part])]).astype(np.int64)
        out.append([Shard(ids, offsets)])
    words = np.array([round_words(p, rounds) for p in out], np.int64)
    return vocab, out, words


def test_one_model_is_the_replicated_model_bit_for_bit():
    """One model holds every row: its local ids are the global ids, its noise table the global
    one, its rates 1, and a merge over one holder leaves its rows as they are."""
    t = TrainConfig(dim=8, epochs=2, min_count=1, sync_rows=4, window=3)
    vocab, shards, words = encoded(corpus(1, 400, 60), 2, t.rounds(1))
    start = init_model(len(vocab), t.dim, t.seed)
    tables = make_tables(vocab.counts, t.sample, t.ns_exponent)
    tables = replace(tables, rate=shard_rates(vocab.counts, tables.keep, 1, t.alpha, t.merge, None, t.rate_pivot))
    rep = train_models(shards, words, tables, t, 1, start)
    part = train_partitioned(shards, words, vocab.counts, t, 1, start)
    assert np.array_equal(rep.model.win, part.model.win) and np.array_equal(rep.model.wout, part.model.wout)
    assert part.moved == [0] * len(part.moved)  # one worker: nothing crosses


def test_rows_every_model_holds_merge_as_the_replicated_mean():
    """When every model holds every row, the partitioned merge is the replicated mean (the delta
    form G + sum (W - G) / M, within float32 rounding of sum W / M)."""
    t = TrainConfig(dim=8, epochs=1, min_count=1, sync_rows=4, window=3, sample=0)
    vocab, shards, words = encoded(corpus(2, 600, 12), 3, t.rounds(3))
    held = [layout.held_rows(s) for s in shards]
    assert all(len(h) == len(vocab) for h in held)  # 12 types in 200 sentences each: all held
    start = init_model(len(vocab), t.dim, t.seed)
    tables = make_tables(vocab.counts, t.sample, t.ns_exponent)
    tables = replace(tables, rate=shard_rates(vocab.counts, tables.keep, 3, t.alpha, t.merge, None, t.rate_pivot))
    rep = train_models(shards, words, tables, t, 3, start)
    part = train_partitioned(shards, words, vocab.counts, t, 3, start)
    assert np.allclose(rep.model.win, part.model.win, atol=1e-5)
    assert np.allclose(rep.model.wout, part.model.wout, atol=1e-5)


def test_models_hold_only_their_topics_rows_and_learn_them():
    """Four topics, one per shard: each model holds the shared words and its topic's own, and a
    topic's words end nearer each other than to another topic's."""
    t = TrainConfig(dim=16, epochs=4, min_count=1, sync_rows=8, window=4, sample=0)
    lines = corpus(3, 2000, 60, topics=4)
    vocab, shards, words = encoded(lines, 4, t.rounds(4))
    held = [layout.held_rows(s) for s in shards]
    names = vocab.words.to_pylist()
    for m, h in enumerate(held):
        topics = {names[i].split("w")[0] for i in h if names[i].startswith("t")}
        assert topics == {f"t{m}"}
    assert max(len(h) for h in held) < 0.5 * len(vocab)
    part = train_partitioned(shards, words, vocab.counts, t, 4, init_model(len(vocab), t.dim, t.seed))
    unit = part.model.win / np.linalg.norm(part.model.win, axis=1, keepdims=True)
    topic = np.array([int(w[1]) if w.startswith("t") else -1 for w in names])
    own = [i for i in range(len(names)) if topic[i] >= 0 and vocab.counts[i] >= 20]
    sims = unit[own] @ unit[own].T
    same = topic[own][:, None] == topic[own][None, :]
    np.fill_diagonal(same, False)
    other = topic[own][:, None] != topic[own][None, :]
    assert sims[same].mean() > sims[other].mean() + 0.2


def test_merge_deltas_by_hand():
    """Row 0: holders 3, senders a (5) and b (2): mean 1 + ((5 - 1) + (2 - 1)) / 3 = 2.667;
    touched (5 + 2) / 2 = 3.5; weighted (1 * 5 + 3 * 2) / 4 = 2.75. Row 1: one holder: its row.
    Row 2: nobody sent it: unchanged."""
    a = (np.array([0, 1]), np.array([[5.0], [9.0]], np.float32), np.array([1, 2], np.uint32))
    b = (np.array([0]), np.array([[2.0]], np.float32), np.array([3], np.uint32))
    k = np.array([3, 1, 2])
    for how, row0 in (("mean", 1 + 5 / 3), ("touched", 3.5), ("weighted", 2.75)):
        g = np.array([[1.0], [4.0], [7.0]], np.float32)
        touched = merge_deltas(g, [a, b], k, how)
        assert touched.tolist() == [True, True, False]
        assert g.ravel().tolist() == [pytest.approx(row0), 9.0, 7.0]


def test_model_tables_restrict_the_noise_to_the_held_rows():
    """Subsampling and rates as the whole vocabulary's tables give those rows; negatives drawn
    from the noise distribution over the held rows only."""
    counts = np.array([100, 50, 20, 5, 1])
    t = TrainConfig(sample=1e-2)
    held, k = np.array([1, 3], np.int32), np.array([3, 2, 2, 1, 1])
    local = layout.model_tables(counts[held], int(counts.sum()), k[held], t)
    assert local.keep.tolist() == keep_probs(counts, 1e-2)[held].tolist()
    assert local.rate.tolist() == layout.holder_rates(counts, keep_probs(counts, 1e-2), k, t.alpha,
                                                      pivot=t.rate_pivot)[held].tolist()
    # An alias table draws column j (1/n each), keeps it with prob[j], else takes alias[j].
    n = len(held)
    p = local.noise_prob.astype(np.float64) / n
    for j in range(n):
        if local.noise_alias[j] != j:
            p[local.noise_alias[j]] += (1.0 - local.noise_prob[j]) / n
    w = counts[held] ** 0.75
    assert np.allclose(p, w / w.sum(), atol=1e-6)


def test_models_that_share_no_shards_hold_their_rows_once():
    groups = model_groups(4, 2)
    assert groups == [[0, 2], [1, 3]]
    held = [np.array([0, 1, 2]), np.array([0, 3])]
    assert layout.holders(held, 4).tolist() == [2, 1, 1, 1]


@pytest.mark.parametrize("chunk_rows, groups, barriers", [(None, 1, False), (37, 1, False), (None, 2, False),
                                                         (37, 4, True)])
def test_the_distributed_partitioned_layout_equals_the_reference(client, tmp_path, round_tasks, monkeypatch,
                                                                   chunk_rows, groups, barriers):
    """Two single-threaded workers train a long-tail corpus in the partitioned layout: each model
    holds only its shards' rows, and the vectors, output vectors and bytes moved per round equal
    reference.train_partitioned on the same shards. A round is a few tasks per worker: M trains,
    a merge per owner, an install per worker and the round's end; ``barriers``: with a barrier
    task between the steps where both merge (as past ``training.DIRECT_WORKERS`` workers).
    ``chunk_rows``: merges and installs go through each range 37 rows at a time (the client
    plans the chunks), with the same bits and bytes. ``groups``: a model holds the rows of 1/groups
    of an epoch's rounds at a time, taking the next group's from the masters, every row merged
    at a group's end. No stage assembles the whole vocabulary."""
    if barriers:
        from nsdist.cluster import training
        monkeypatch.setattr(training, "DIRECT_WORKERS", 1)
    if chunk_rows:
        monkeypatch.setattr(layout, "EXCHANGE_BYTES", 1)
        monkeypatch.setattr(layout, "CHUNK_ROWS", chunk_rows)
    from nsdist.cluster import count_vocab, encode_shards
    from nsdist.config import load_config
    from nsdist.corpus import plan_blocks
    from nsdist.pipeline import train
    from nsdist.runs import load

    rng = np.random.default_rng(7)
    p = 1 / np.arange(1, 3001)
    ids = rng.choice(3000, size=24_000, p=p / p.sum())
    path = tmp_path / "zipf.txt"
    path.write_text("".join(" ".join(f"w{i}" for i in line) + "\n" for line in ids.reshape(-1, 12)))
    cfg = load_config(None, {"dim": 8, "epochs": 2, "min_count": 1, "shards": 4, "sync_rows": 64,
                             "train.layout": "partitioned", "row_groups": groups}, environ={}, corpus=(str(path),),
                      out=str(tmp_path / "out"))
    t = cfg.train
    counted = count_vocab(client, cfg, plan_blocks(cfg.corpus, {}, cfg.blocksize), "ref")
    shards, words, _ = encode_shards(client, cfg, counted, 4, t.rounds(2), "ref")
    vocab = counted.vocab.result()
    ref = train_partitioned(client.gather(shards), words, vocab.counts, t, 2, init_model(len(vocab), t.dim, t.seed),
                            groups)

    from nsdist.cluster import stages

    # No stage of the partitioned layout assembles the whole vocabulary: each reads its parts.
    monkeypatch.setattr(stages.Counted, "vocab", property(lambda self: pytest.fail("the vocabulary was assembled")))
    result = train(cfg, client)
    metrics = result.manifest["metrics"]
    assert metrics["layout"] == "partitioned" and metrics["models"] == 2 and metrics["bit_reproducible"]
    assert metrics["row_groups"] == groups
    assert max(metrics["held_rows"]) < len(vocab)  # no model holds every row
    assert np.array_equal(load(result.run_url).vectors, ref.model.win)
    import os
    assert np.array_equal(np.load(os.path.join(result.run_url, "context.npy")), ref.model.wout)
    assert [m["bytes"] for e in metrics["epochs"] for m in e["merges"]] == ref.moved
    if groups == 1:  # (with groups, every group's end syncs all rows: the owners below)
        assert len(ref.prefixes) >= 3  # the tiers were exercised
    owners = [m["blocks"] for e in metrics["epochs"] for m in e["merges"]]
    rounds = len(owners) // 2
    ends = {r1 - 1 for _, r1 in round_groups(rounds, groups)}
    assert owners == [2 if r in ends else 1 for r in range(rounds)] * 2  # the tiers: the first owner's range
    # 2 trains + 1 merge + 2 installs + the end; a group's last round: + 1 merge (+ 2 barriers).
    assert [len(keys) for keys in round_tasks] == [6 if n == 1 else 9 if barriers else 7 for n in owners]
    assert any(k.startswith("trained-") for keys in round_tasks for k in keys) == barriers


def _long_tail(path, types: int = 60_000, seed: int = 3) -> str:
    """A corpus whose words mostly occur once or twice: a model's shards use a part of them."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, types + 1) ** 0.6
    ids = rng.choice(types, size=48_000, p=p / p.sum())
    path.write_text("".join(" ".join(f"w{i}" for i in line) + "\n" for line in ids.reshape(-1, 12)))
    return str(path)


@contextlib.contextmanager
def _limited(limit: str):
    """Four single-threaded workers whose memory ``limit`` is a number nsdist plans with: Dask's
    own memory management is off (the worker processes alone take more than it)."""
    import dask
    from distributed import LocalCluster

    off = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
    with dask.config.set(off), LocalCluster(n_workers=4, threads_per_worker=1, memory_limit=limit,
                                            dashboard_address=":0", host="127.0.0.1") as lc:
        yield lc


def test_a_model_too_large_for_each_worker_trains_partitioned_and_replicated_is_refused(tmp_path, capfd):
    """Four workers whose memory limit cannot hold the replicated model: forced replicated, the
    job is refused at --dry-run and before a run is claimed (exit 2); auto plans and trains the
    partitioned layout, each model holding part of the rows."""
    from nsdist.cli import main
    from nsdist.runs import load

    corpus, out = _long_tail(tmp_path / "c.txt"), tmp_path / "out"
    with _limited("100MB") as lc:
        base = ["train", "--corpus", corpus, "--out", str(out), "--scheduler", lc.scheduler_address,
                "--set", "dim=256", "--set", "min_count=1", "--set", "epochs=1"]
        capfd.readouterr()
        assert main([*base, "--set", "train.layout=replicated", "--dry-run"]) == 2
        text = capfd.readouterr()
        assert "layout: replicated (train.layout)" in text.out
        assert "error: the job does not fit in the replicated layout" in text.err
        assert "set train.layout=auto or partitioned" in text.err
        assert main([*base, "--set", "train.layout=replicated"]) == 2
        assert "the model (" in capfd.readouterr().err and not out.exists()  # refused before the claim

        assert main([*base, "--dry-run"]) == 0
        plan = capfd.readouterr().out
        assert "layout: partitioned (auto: the replicated model does not fit the workers' memory)" in plan
        assert plan.count(": fits") == 4
        assert main(base) == 0
    emb = load(str(out))
    metrics = emb.manifest["metrics"]
    assert metrics["layout"] == "partitioned" and metrics["models"] == 4
    assert max(metrics["held_rows"]) < 0.6 * len(emb)
    assert np.isfinite(emb.vectors).all() and len(emb) > 25_000


def test_rounds_grow_to_the_groups_a_model_needs_to_fit(tmp_path, capfd):
    """Four workers whose limit holds a model's rows of 16 groups of rounds but not of 8, the most
    that the default rounds (8 for 4 models) allow: the rounds grow to 16, one group each, at
    --dry-run and in the job (calibrated from the planning functions on this corpus: 47.7 MB at
    training's peaks with 8 groups, 44.8 MB with 16). With syncs_per_epoch=8 set, the groups stay
    at 8 and the job is refused before training, leaving no run."""
    from nsdist.cli import main
    from nsdist.runs import load

    corpus, out = _long_tail(tmp_path / "c.txt"), tmp_path / "out"
    with _limited("46MB") as lc:
        base = ["train", "--corpus", corpus, "--out", str(out), "--scheduler", lc.scheduler_address,
                "--set", "dim=256", "--set", "min_count=1", "--set", "epochs=1", "--set", "train.layout=partitioned"]
        capfd.readouterr()
        assert main([*base, "--dry-run"]) == 0
        plan = capfd.readouterr().out
        assert "rounds: 16 per epoch (not 8: as many as the groups a model's rows need to fit) x 1 epoch(s)" in plan
        assert "for each of 16 groups of rounds" in plan and plan.count(": fits") == 4
        assert main([*base, "--set", "syncs_per_epoch=8"]) == 2
        assert "in the partitioned layout a worker holds up to" in capfd.readouterr().err
        assert not list(out.glob("runs/*"))  # refused once the rows are known: the claim removed
        assert main(base) == 0
    metrics = load(str(out)).manifest["metrics"]
    assert metrics["rounds_per_epoch"] == metrics["row_groups"] == 16 and len(metrics["epochs"][0]["merges"]) == 16


def test_a_warm_start_that_would_not_fit_is_refused_before_its_rows_are_summed(tmp_path, capfd):
    """A partitioned warm start holds its new rows' sums and means beside the shards
    (warm_parts.start_peak): a job with 10,549 new words (the corpus's second half over its first)
    whose training fits four workers of 87 MB but whose start does not (calibrated from the
    planning functions on this corpus: 80.9 MB at training's peaks, 103.9 MB while the start is
    built) is refused by --dry-run and by the job, before the start's sums, leaving no run; with
    new words started at random the dry run fits."""
    from nsdist.cli import main

    corpus = _long_tail(tmp_path / "c.txt")
    lines = (tmp_path / "c.txt").read_text().splitlines(keepends=True)
    (tmp_path / "first.txt").write_text("".join(lines[:len(lines) // 2]))
    parent, out = tmp_path / "parent", tmp_path / "out"
    sets = ["--set", "dim=256", "--set", "min_count=1", "--set", "epochs=1", "--set", "train.layout=partitioned"]
    with _limited("87MB") as lc:
        where = ["--scheduler", lc.scheduler_address]
        assert main(["train", "--corpus", str(tmp_path / "first.txt"), "--out", str(parent), *where, *sets]) == 0
        base = ["train", "--corpus", corpus, "--out", str(out), "--init-from", str(parent), *where, *sets]
        capfd.readouterr()
        assert main([*base, "--dry-run"]) == 2
        text = capfd.readouterr()
        assert "warm start: about 10,549 new words (this vocabulary less the parent's 16,501;" in text.out
        assert text.out.count("up to 103.9 MB at peaks, of 0.1 GB: DOES NOT FIT") == 4
        assert "a worker needs up to 103.9 MB while its warm start is built" in text.err
        assert "start new words at random (train.warm_new=random)" in text.err
        assert main([*base, "--dry-run", "--set", "train.warm_new=random"]) == 0
        assert "warm start:" not in capfd.readouterr().out
        assert main(base) == 2
        err = capfd.readouterr().err
        assert "MB while its warm start's 10,549 new words are built, more than the workers' memory limit" in err
        assert "train.warm_new=random" in err and "Traceback" not in err
        assert not list(out.glob("runs/*"))  # refused before the start: nothing to resume, the claim removed
