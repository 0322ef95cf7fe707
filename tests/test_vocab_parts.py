"""The vocabulary built in parts (vocab_parts.py) is build_vocab's, id for id, and every block's
lookup maps its words to those ids; on the cluster as in process."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pyarrow as pa
import pytest

from nsdist import vocab_parts as vp
from nsdist.cluster import count_vocab, encode_shards
from nsdist.config import load_config
from nsdist.corpus import iter_tokens, plan_blocks
from nsdist.counts import merge_counts, scan, scan_sessions
from nsdist.encode import encode_scanned
from nsdist.vocab import build_vocab

# Many ties (a Zipf tail at counts 1-3), words of every width, including non-ASCII ones whose
# UTF-8 bytes order them after every ASCII word.
WORDS = ["a", "b", "ab", "ba", "é", "z", "zz", "日本", "x1", "x10", "x2", "Ω", "", "aa", "b b"]


def zipf_blocks(seed: int, n_blocks: int) -> list:
    rng = np.random.default_rng(seed)
    vocab = WORDS + [f"w{i}" for i in range(300)]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    out = []
    for _ in range(n_blocks):
        sentences = [[vocab[i] for i in rng.choice(len(vocab), rng.integers(1, 12), p=p / p.sum())]
                     for _ in range(rng.integers(1, 40))]
        out.append(scan([pa.array(sentences, pa.list_(pa.large_string()))]))
    return out


def expected_lookup(block, vocab) -> list[int]:
    index = {w: i for i, w in enumerate(vocab.words.to_pylist())}
    return [index.get(w, -1) for w in block.words.to_pylist()]


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("min_count,max_vocab", [(1, None), (2, None), (1, 40), (3, 7), (1000, None)])
def test_the_parts_give_build_vocab_and_every_block_its_ids(n, min_count, max_vocab):
    blocks = zipf_blocks(n * 100 + min_count, 9)
    groups = [blocks[0:4], [], blocks[4:5], blocks[5:9]]  # a worker may have scanned nothing
    vocab, lookups = vp.in_process(groups, n, min_count, max_vocab)
    want = build_vocab(merge_counts(*[b.to_counts() for b in blocks]), min_count, max_vocab)
    assert vocab.words.to_pylist() == want.words.to_pylist()
    assert vocab.counts.tolist() == want.counts.tolist()
    for group, found in zip(groups, lookups):
        for block, lookup in zip(group, found):
            assert lookup.dtype == np.int32 and lookup.tolist() == expected_lookup(block, want)


def test_the_ranges_split_the_vocabulary_about_evenly():
    """The sample sort's splitters cut the ids into ranges of similar size, so no range's owner
    holds much more than V / n words."""
    blocks = [scan([pa.array([[f"w{i}" for i in range(k, 20_000, 7)]], pa.list_(pa.large_string()))])
              for k in range(7)]
    n = 4
    split = [vp.split_local(vp.local_counts(b), n) for b in blocks]
    ordered = [vp.sort_bucket(vp.merge_bucket(*[s[q] for s in split]), 1) for q in range(n)]
    keys = vp.splitters(n, *[vp.sample(o) for o in ordered])
    sizes = [len(vp.merge_range(*[vp.cut_bucket(o, keys)[r] for o in ordered])) for r in range(n)]
    assert sum(sizes) == 20_000
    assert max(sizes) < 1.25 * 20_000 / n, sizes


def test_a_word_only_shown_gets_the_id_its_clicks_elsewhere_give_it():
    """Sessions: an item shown but never clicked in one block has count 0 there; its id comes
    from the blocks where it was clicked, and the block's shown list encodes to it."""
    one = scan_sessions(pa.array([["a", "b"], ["a"]]), pa.array([["c"], ["b"]]))
    two = scan_sessions(pa.array([["c", "c", "a"]]), pa.array([["d"]]))
    vocab, lookups = vp.in_process([[one], [two]], 2, 1)
    assert vocab.words.to_pylist() == ["a", "c", "b"]  # d was never clicked: not a word
    assert lookups[0][0].tolist() == expected_lookup(one, vocab) == [0, 2, 1]
    shard = encode_scanned([(one, 0, None)], None, lookup=lookups[0][0])
    assert shard.shown_ids.tolist() == encode_scanned([(one, 0, None)], vocab.words).shown_ids.tolist() == [1, 2]


def test_the_cluster_builds_the_same_vocabulary_and_shards(client, tmp_path):
    rng = np.random.default_rng(5)
    words = WORDS + [f"w{i}" for i in range(2000)]
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    lines = [" ".join(w for w in rng.choice(words, rng.integers(1, 15), p=p / p.sum()) if w and " " not in w)
             for _ in range(4000)]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(None, {"min_count": 2, "max_vocab": 500}, environ={}, corpus=(str(path),), out="unused",
                      blocksize=8192)
    blocks = plan_blocks(cfg.corpus, blocksize=cfg.blocksize)
    assert len(blocks) > 4
    counted = count_vocab(client, cfg, blocks, "parts")
    # The workers keep each block's token indices only: its own dictionary is folded and freed.
    assert all(len(b.words) == 0 and len(b.counts) == 0 for b in client.gather(counted.blocks))
    vocab = counted.vocab.result()
    tokens = collections.Counter(w for line in lines for w in line.split())
    want = sorted((w for w in tokens if tokens[w] >= 2), key=lambda w: (-tokens[w], w))[:500]
    assert vocab.words.to_pylist() == want and vocab.counts.tolist() == [tokens[w] for w in want]
    assert counted.summary == {"vocab_size": 500, "vocab_tokens": sum(tokens[w] for w in want),
                               "raw_tokens": sum(tokens.values()), "sentences": sum(1 for x in lines if x.split()),
                               "distinct_words": len(tokens)}
    shards, _, _ = encode_shards(client, cfg, counted, 3, 2, "parts")
    got = np.concatenate([p.ids for pieces in client.gather(shards) for p in pieces])
    scans = [scan(iter_tokens(b)) for b in blocks]
    assert np.array_equal(got, encode_scanned([(s, 0, None) for s in scans], vocab.words).ids)


def _read_twice(view) -> tuple:
    """In a task: each part read twice through a cached copy, with words and counts picked in
    between; what a copy would send on, and what the task's own argument holds afterwards."""
    seen, reader = [], view.cached()
    for i in range(len(view.starts) - 1):
        first = reader.part(i)
        words, counts = reader.words[[view.starts[i]]], reader.counts[[view.starts[i]]]
        seen.append((reader.part(i) is first and reader._held[0] == i, words.tolist(), counts.tolist()))
    return seen, pickle.loads(pickle.dumps(reader))._held, view._held


def test_a_cached_copy_reads_a_vocabulary_part_once_for_its_words_and_counts(client, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a a a b b c\nd d e\n" * 50, encoding="utf-8")
    cfg = load_config(None, {"min_count": 1}, environ={}, corpus=(str(path),), out="unused", blocksize=64)
    counted = count_vocab(client, cfg, plan_blocks(cfg.corpus, blocksize=cfg.blocksize), "twice")
    view = counted.view()
    assert len(view.starts) - 1 == len(counted.sizes) > 1
    seen, sent, argument = client.submit(_read_twice, view, pure=False).result()
    vocab = counted.vocab.result()
    assert seen == [(True, [vocab.words[s].as_py()], [int(vocab.counts[s])]) for s in view.starts[:-1]]
    # Dask keeps a task's arguments while its result is held: they never hold a part.
    assert sent is None and argument is None
