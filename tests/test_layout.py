"""The partitioned layout (layout.py, reference.train_partitioned): models that hold only their
shards' rows train as the replicated models do where the rows are the same, and the merge over
holders follows its rules by hand."""

from __future__ import annotations

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
from nsdist.plan import model_groups
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


def test_local_tables_restrict_the_noise_to_the_held_rows():
    counts = np.array([100, 50, 20, 5, 1])
    tables = make_tables(counts, 1e-2, 0.75)
    held = np.array([1, 3], np.int32)
    local = layout.local_tables(tables, counts, held, 0.75)
    assert local.keep.tolist() == tables.keep[held].tolist()
    # An alias table draws column j (1/n each), keeps it with prob[j], else takes alias[j].
    n = len(held)
    p = local.noise_prob.astype(np.float64) / n
    for j in range(n):
        if local.noise_alias[j] != j:
            p[local.noise_alias[j]] += (1.0 - local.noise_prob[j]) / n
    w = counts[held] ** 0.75
    assert np.allclose(p, w / w.sum(), atol=1e-6)
    assert keep_probs(counts, 1e-2)[3] == local.keep[1]


def test_models_that_share_no_shards_hold_their_rows_once():
    groups = model_groups(4, 2)
    assert groups == [[0, 2], [1, 3]]
    held = [np.array([0, 1, 2]), np.array([0, 3])]
    assert layout.holders(held, 4).tolist() == [2, 1, 1, 1]
