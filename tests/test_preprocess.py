"""Tokenizing, blocks, counting, vocabulary, keep-probabilities, noise table, encoding."""

from __future__ import annotations

import collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nsdist import storage
from nsdist.corpus import Block, drop_null_tokens, iter_tokenize, iter_tokens, plan_blocks, read_tokens, tokenize
from nsdist.counts import count_tokens, merge_counts, scan
from nsdist.encode import encode, encode_scanned
from nsdist.errors import DataError
from nsdist.noise import noise_table, sample
from nsdist.vocab import build_vocab, keep_probs


def as_dict(counts):
    return dict(zip(counts.table["word"].to_pylist(), counts.table["count"].to_pylist()))


@pytest.mark.parametrize("text, expected", [
    ("", [[]]),
    ("one", [["one"]]),
    ("a b\n", [["a", "b"], []]),
    ("  a\t b  \r\n\nc\n", [["a", "b"], [], ["c"], []]),
    ("héllo wörld 東京\n", [["héllo", "wörld", "東京"], []]),
    ("x " * 50_000 + "\n", [["x"] * 50_000, []]),
])
def test_tokenize(text, expected):
    assert tokenize(text.encode()).to_pylist() == expected


def test_ascii_and_unicode_paths_agree():
    """ASCII blocks take Arrow's ASCII kernels; one non-ASCII byte switches to the UTF-8 ones."""
    rng = np.random.default_rng(0)
    words = ["The", "cat", "SAT", "", " ", "\t", "\n", "\r\n", "\n\n", "  on", "a\x0bb", "mat\x0c"]
    ascii_text = "".join(rng.choice(words, 5_000)) + "\n"
    for lowercase in (False, True):
        fast = tokenize(ascii_text.encode(), lowercase).to_pylist()
        slow = tokenize((ascii_text + "\u00e9").encode(), lowercase).to_pylist()
        expected = [line.lower().split() if lowercase else line.split() for line in ascii_text.split("\n")]
        assert fast == expected
        assert slow[:-1] == fast[:-1] and slow[-1] == ["\u00e9"]


def random_text(seed: int, alphabet: str, n: int = 1_500) -> bytes:
    words = ["The", "cat", "SAT", "", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\n \n", " \t\n", "a\x0bb",
             "mat\x0c"] + list(alphabet)
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(words, n)).encode("utf-8", errors="surrogateescape")  # \udcff -> b"\xff"


def reference(text: bytes, lowercase: bool) -> list[list[str]]:
    s = text.decode("utf-8", errors="replace")
    return [(line.lower() if lowercase else line).split() for line in s.split("\n")]


# ascii; ascii with \x1c-\x1f (str.split whitespace, not Arrow's ASCII one); UTF-8 with Unicode
# whitespace; invalid UTF-8 bytes.
ALPHABETS = ["", "\x1c\x1f", "\u00e9\u6771\u00a0\u3000\u00c9", "\udcff"]


@pytest.mark.parametrize("alphabet", ALPHABETS)
@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 2**20])
def test_pieces_equal_the_whole_block(alphabet, chunk_bytes):
    """Tokenizing in pieces cut at newlines gives str.split's tokens, whatever the piece size."""
    for seed in range(2):
        text = random_text(seed, alphabet)
        for text in (text, b"\n" + text.strip() + b" "):
            for lowercase in (False, True):
                expected = reference(text, lowercase)
                pieces = list(iter_tokenize(text, lowercase, chunk_bytes))
                if chunk_bytes <= 2:
                    assert len(pieces) > 10
                assert pa.concat_arrays(pieces).to_pylist() == expected
                scanned = scan(pieces)
                got = [[scanned.words[int(i)].as_py() for i in scanned.ids[a:b]]
                       for a, b in zip(scanned.offsets[:-1], scanned.offsets[1:])]
                assert got == [line for line in expected if line]


@pytest.mark.parametrize("text", [b"", b" ", b"\n", b"\n\n", b" \n ", b"a", b"a\n", b" a ", b"\x1c", b"\xff"])
@pytest.mark.parametrize("chunk_bytes", [1, 2**20])
def test_tiny_texts(text, chunk_bytes):
    expected = reference(text, False)
    assert tokenize(text, chunk_bytes=chunk_bytes).to_pylist() == expected
    c = scan(iter_tokenize(text, chunk_bytes=chunk_bytes)).to_counts()
    assert (c.tokens, c.sentences) == (sum(map(len, expected)), sum(1 for line in expected if line))


@pytest.mark.parametrize("alphabet", ALPHABETS[::2])
def test_counts_and_encoding_of_pieces_equal_the_whole_block(write, alphabet):
    text = b"".join(random_text(seed, alphabet, 20_000) for seed in range(3))
    whole = tokenize(text, chunk_bytes=len(text) + 1)
    path = write("c.txt", text.decode("utf-8", errors="replace"))
    (block,) = plan_blocks([path])
    expected = count_tokens(whole)
    assert as_dict(expected) == collections.Counter(t for line in reference(text, False) for t in line)
    words = pa.array(["cat", "The", "\u00e9", "a"])
    reference_shard = encode(whole, words, max_sentence_length=3)
    # An independent oracle for encoding: pure Python chunks of str.split's tokens.
    chunks = [reference_shard.ids[a:b].tolist()
              for a, b in zip(reference_shard.offsets[:-1], reference_shard.offsets[1:])]
    assert chunks == reference_chunks(reference(text, False), words.to_pylist(), 3, 0, float("inf"))
    for chunk_bytes in (64, 1000, 2**20):
        scanned = scan(iter_tokens(block, chunk_bytes=chunk_bytes))
        got = scanned.to_counts()
        assert as_dict(got) == as_dict(expected)
        assert (got.tokens, got.sentences) == (expected.tokens, expected.sentences)
        b = encode_scanned([(scanned, 0, None)], words, max_sentence_length=3)
        assert b.ids.tolist() == reference_shard.ids.tolist() and b.offsets.tolist() == reference_shard.offsets.tolist()


def test_encoding_token_ranges_splits_sentences_without_loss_or_overlap():
    lines = [["a", "x", "b"], [], ["c"], ["x", "x"], ["b", "b", "b", "b", "a"], ["a"]]
    scanned = scan([pa.array(lines)])
    words = pa.array(["a", "b", "c"])
    whole = encode_scanned([(scanned, 0, None)], words, max_sentence_length=2)
    assert whole.ids.tolist() == [0, 1, 2, 1, 1, 1, 1, 0, 0]
    assert whole.offsets.tolist() == [0, 2, 3, 5, 7, 8, 9]
    n = len(scanned.ids)
    for cut in range(n + 1):  # a sentence goes where its first token is
        left = encode_scanned([(scanned, 0, cut)], words, 2)
        right = encode_scanned([(scanned, cut, n)], words, 2)
        assert left.ids.tolist() + right.ids.tolist() == whole.ids.tolist()
        assert left.sentences + right.sentences == whole.sentences
    both = encode_scanned([(scanned, 0, 4), (scanned, 4, n)], words, 2)
    assert both.ids.tolist() == whole.ids.tolist() and both.offsets.tolist() == whole.offsets.tolist()
    assert encode_scanned([], words).offsets.tolist() == [0]
    assert encode_scanned([(scanned, 0, None)], pa.array([], pa.string())).ids.tolist() == []


def reference_chunks(lines, vocab, max_len, lo, hi):
    """Pure Python: the chunks (max_len known words) whose first known word's raw position is in [lo, hi)."""
    ids, pos, out = {w: i for i, w in enumerate(vocab)}, 0, []
    for line in lines:
        known = [(pos + j, ids[w]) for j, w in enumerate(line) if w in ids]
        pos += len(line)
        for c in range(0, len(known), max_len):
            if lo <= known[c][0] < hi:
                out.append([v for _, v in known[c:c + max_len]])
    return out


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_long_lines_spread_over_shards(shards):
    """A one-line corpus (text8) or very long documents must not land in one shard."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(50)]
    lines = [list(rng.choice(vocab + ["oov"], 10_000)), ["w1", "w2"], [], list(rng.choice(vocab, 3_001))]
    scanned = scan([pa.array(lines)])
    from nsdist.plan import shard_plan

    plan = shard_plan([len(scanned.ids)], shards)
    got = [encode_scanned([(scanned, lo, hi) for _, lo, hi in p], pa.array(vocab), 1000) for p in plan]
    n = len(scanned.ids)
    for s, shard in enumerate(got):
        lo, hi = n * s // shards, n * (s + 1) // shards
        expected = reference_chunks(lines, vocab, 1000, lo, hi)
        chunks = [shard.ids[a:b].tolist() for a, b in zip(shard.offsets[:-1], shard.offsets[1:])]
        assert chunks == expected
        assert abs(len(shard.ids) - sum(map(len, expected))) == 0
        assert len(shard.ids) <= 1.2 * n / shards + 1000  # balanced up to a chunk
    assert sum(len(g.ids) for g in got) == sum(1 for line in lines for w in line if w in vocab)


def test_scan_tolerates_nulls():
    s = scan([pa.array([["a", None], None, ["b", "a"]])])
    assert s.words.to_pylist() == ["a", "b"] and s.ids.tolist() == [0, 1, 0] and s.offsets.tolist() == [0, 1, 3]


def test_null_tokens_are_dropped():
    tokens = drop_null_tokens(pa.array([["a", None, "b"], [None], [], ["c"]]))
    assert tokens.to_pylist() == [["a", "b"], [], [], ["c"]]


def test_tokenize_lowercase_and_bad_utf8():
    assert tokenize("Ab CD\n".encode(), lowercase=True).to_pylist() == [["ab", "cd"], []]
    assert tokenize(b"ok \xff\xfe ok").to_pylist() == [["ok", "\ufffd\ufffd", "ok"]]


def test_count_tokens_and_empty_partitions():
    c = count_tokens(tokenize(b"a b a\n\nb c a\n"))
    assert as_dict(c) == {"a": 3, "b": 2, "c": 1}
    assert (c.tokens, c.sentences) == (6, 2)
    empty = count_tokens(tokenize(b""))
    assert (empty.tokens, empty.sentences, empty.table.num_rows) == (0, 0, 0)
    merged = merge_counts(c, empty, count_tokens(tokenize(b"c d\n")), empty)
    assert as_dict(merged) == {"a": 3, "b": 2, "c": 2, "d": 1}
    assert (merged.tokens, merged.sentences) == (8, 3)
    assert merge_counts(empty, empty).table.num_rows == 0


def test_blocks_split_on_newlines_and_cover_every_line(write):
    lines = [" ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 9 + 1)) for i in range(500)]
    path = write("c.txt", "\n".join(lines) + "\n")
    blocks = plan_blocks([path], blocksize=1000)
    assert len(blocks) > 5
    got = [t for b in blocks for t in read_tokens(b).to_pylist() if t]
    assert got == [line.split() for line in lines]


@pytest.mark.parametrize("name", ["c.txt.gz", "c.txt.bz2", "c.txt.zst"])
def test_compressed_files_are_one_block(write, name):
    path = write(name, "a b\nc\n" * 1000)
    blocks = plan_blocks([path], blocksize=100)
    assert blocks == [Block(path, 0, None)]
    assert as_dict(count_tokens(read_tokens(blocks[0]))) == {"a": 1000, "b": 1000, "c": 1000}
    # Streamed in pieces of whole lines, never decompressed whole.
    pieces = list(storage.iter_block(path, 0, None, piece_bytes=100))
    assert len(pieces) > 40 and all(p.endswith(b"\n") for p, _ in pieces[:-1])
    assert b"".join(p for p, _ in pieces) == storage.read_block(path, 0, None)


@pytest.mark.parametrize("piece_bytes", [1, 3, 64, 2**20])
def test_streamed_blocks_equal_read_block(write, piece_bytes):
    """Every (offset, length), including offsets on and beside newlines, blank lines, a line
    longer than the pieces and a last line without a newline."""
    text = b"ab\n\ncdefghijklmnopqrstuvwxyz 0123456789\ne\nfg h\n\n\nij"
    path = write("c.txt", text.decode())
    for offset in range(len(text) + 1):
        for length in range(1, len(text) + 2 - offset):
            pieces = list(storage.iter_block(path, offset, length, piece_bytes=piece_bytes))
            assert b"".join(p for p, _ in pieces) == storage.read_block(path, offset, length), (offset, length)
            assert [f for _, f in pieces] == [False] * (len(pieces) - 1) + [True]
            assert all(p.endswith(b"\n") for p, _ in pieces[:-1])


def test_globs_directories_and_missing(write, tmp_path):
    a = write("d/a.txt", "x\n")
    b = write("d/b.txt", "y\n")
    write("d/_SUCCESS", "")
    assert [bl.url for bl in plan_blocks([str(tmp_path / "d")])] == [a, b]
    assert [bl.url for bl in plan_blocks([str(tmp_path / "d" / "*.txt")])] == [a, b]
    with pytest.raises(DataError, match="does not exist"):
        plan_blocks([str(tmp_path / "nope.txt")])
    with pytest.raises(DataError, match="matches no files"):
        plan_blocks([str(tmp_path / "*.csv")])


def test_parquet_row_groups(tmp_path):
    path = str(tmp_path / "s.parquet")
    table = pa.table({"tokens": [["Buy", "cart"], None, ["cart"], ["view", "buy"]], "user": [1, 2, 3, 4]})
    pq.write_table(table, path, row_group_size=2)
    blocks = plan_blocks([path])
    assert [(b.offset, b.parquet) for b in blocks] == [(0, True), (1, True)]
    got = [read_tokens(b, lowercase=True).to_pylist() for b in blocks]
    assert got == [[["buy", "cart"], []], [["cart"], ["view", "buy"]]]
    with pytest.raises(DataError, match="no column 'items'"):
        read_tokens(blocks[0], column="items")


def test_vocab_order_ties_and_cutoffs():
    c = count_tokens(tokenize(b"b a c a b d c e e e e\n"))
    v = build_vocab(c, min_count=2)
    # count desc, then word asc for ties: e(4), then a/b/c (2 each).
    assert v.words.to_pylist() == ["e", "a", "b", "c"]
    assert v.counts.tolist() == [4, 2, 2, 2]
    assert build_vocab(c, min_count=2, max_vocab=2).words.to_pylist() == ["e", "a"]
    assert build_vocab(c, min_count=1).words.to_pylist() == ["e", "a", "b", "c", "d"]
    assert len(build_vocab(c, min_count=5)) == 0


def test_keep_probs_hand_computed():
    counts = np.array([900, 90, 10])  # T = 1000, threshold s*T = 1 for s = 1e-3
    expected = [(np.sqrt(900) + 1) / 900, (np.sqrt(90) + 1) / 90, (np.sqrt(10) + 1) / 10]
    np.testing.assert_allclose(keep_probs(counts, 1e-3), expected, rtol=1e-6)
    assert keep_probs(np.array([10**6, 1]), 1e-3)[1] == 1.0  # rare words are always kept
    assert keep_probs(counts, 0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("counts", [[1], [5, 5], [1000, 300, 20, 7, 1, 1], list(range(1, 2000))])
def test_noise_sampler_matches_distribution(counts):
    counts = np.array(counts)
    prob, alias = noise_table(counts, 0.75)
    draws = sample(prob, alias, 2_000_000, seed=3)
    expected = counts**0.75 / (counts**0.75).sum()
    observed = np.bincount(draws, minlength=len(counts)) / len(draws)
    # Binomial standard error is at most 0.00036 at 2M draws: 5 sigma.
    np.testing.assert_allclose(observed, expected, atol=0.0018)
    if len(counts) == 6:
        np.testing.assert_allclose(observed, expected, rtol=0.05)


def test_noise_table_rejects_empty():
    with pytest.raises(ValueError):
        noise_table(np.array([]))


def test_encode_drops_unknown_and_splits_long_sentences():
    tokens = pa.array([["a", "zz", "b", "a", "c", "a", "b"], [], ["zz"], ["c"]])
    shard = encode(tokens, pa.array(["a", "b", "c"]), max_sentence_length=3)
    assert shard.ids.dtype == np.int32 and shard.offsets.dtype == np.int64
    assert shard.ids.tolist() == [0, 1, 0, 2, 0, 1, 2]
    # [a b a] [c a b] are chunks of one line (never truncated); [c] is the last line.
    assert shard.offsets.tolist() == [0, 3, 6, 7]
    empty = encode(pa.array([[], ["zz"]], pa.list_(pa.string())), pa.array(["a"]))
    assert empty.ids.tolist() == [] and empty.offsets.tolist() == [0]


@pytest.mark.parametrize("chunk_bytes", [2**20, 2**14])
def test_scan_past_65536_distinct_words(chunk_bytes):
    """Token indices are uint16 while they fit; a block with more distinct words (in one piece
    or only once the pieces are unified) switches to int32 without changing any index."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in rng.permutation(70_000)]
    lines = [" ".join(words[i:i + 50]) for i in range(0, len(words), 50)] + ["w1 w2 w3"]
    scanned = scan(iter_tokenize("\n".join(lines).encode(), chunk_bytes=chunk_bytes))
    assert scanned.ids.dtype == np.int32 and len(scanned.words) == 70_000
    decoded = np.asarray(scanned.words.to_pylist(), dtype=object)[scanned.ids]
    assert decoded.tolist() == [t for line in lines for t in line.split()]
    small = scan(iter_tokenize(b"a b a\nc\n"))
    assert small.ids.dtype == np.uint16 and small.ids.tolist() == [0, 1, 0, 2]
