"""The vocabulary built and looked up in parts, so that no worker needs all of it (pure functions).

``build_vocab`` needs every distinct word in one place; here the same vocabulary (the same ids,
bit for bit) comes out of three exchanges between the workers, each a function below:

1. **Counts by word buckets.** Each worker merges the counts of the blocks it scanned
   (``local_counts``: one dictionary of its distinct words, and each block's map into it),
   splits them by a hash of the word (``split_local``), and each bucket sums its pieces
   (``merge_bucket``). A word's whole count is then in one bucket.
2. **Ids by sorted ranges (a sample sort).** Each bucket sorts its kept words by (-count, word)
   (``sort_bucket``); a sample of their keys picks splitters (``splitters``); each bucket cuts its
   sorted words at them (``cut_bucket``) and each range merges its cuts (``merge_range``). Range r
   then holds ids offset[r] .. offset[r + 1] - 1 of the vocabulary, in order, and says where each
   bucket's words landed.
3. **Lookups by join.** Each bucket learns its words' ids (``bucket_ids``) and answers each
   worker for the words that worker sent (``answer``); a worker scatters the answers into its
   dictionary (``local_ids``), and each block maps its own distinct words through it
   (``block_lookup``) for ``encode.encode_scanned``.

Keys compare as Arrow's sort compares them (counts as integers, words by UTF-8 bytes, the same
order as Python's ``str`` comparison), so the ranges concatenated are ``build_vocab``'s vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .counts import Scanned
from .vocab import Vocab

ORDER = [("count", "descending"), ("word", "ascending")]  # build_vocab's order of ids
SAMPLES = 32  # keys each bucket offers for the splitters: ranges within a few percent of equal


@dataclass(frozen=True)
class Local:
    """A worker's scanned blocks merged: its distinct words (count 0: only shown, sessions), their
    counts, and per block the position of each of the block's words in ``words``."""

    words: pa.Array  # large_string
    counts: np.ndarray  # int64
    maps: list  # per block: int32 (block distinct words,)
    tokens: int
    sentences: int


@dataclass(frozen=True)
class Bucket:
    """The words of one hash bucket, summed over the workers, and per worker the rows its words
    took here (so answers go back in the order each worker sent them)."""

    words: pa.Array
    counts: np.ndarray
    rows: list  # per worker: int64 (words it sent,)


@dataclass(frozen=True)
class Sorted:
    """A bucket's kept words in vocabulary order, and their rows in the bucket."""

    words: pa.Array
    counts: np.ndarray
    rows: np.ndarray  # int64


@dataclass(frozen=True)
class Range:
    """Ids offset .. offset + len - 1 of the vocabulary, before the offset is known: its words and
    counts in order, and per bucket the rank here of each word it sent (in its sent order)."""

    words: pa.Array
    counts: np.ndarray
    ranks: list  # per bucket: int64

    def __len__(self) -> int:
        return len(self.counts)


def local_counts(*blocks: Scanned, into: Local | None = None) -> Local:
    """The blocks' words and counts merged into one dictionary (first-seen order), after the
    words of ``into`` when given: a worker folds its blocks in as they are scanned, so each block's
    own dictionary (two thirds of a scanned block's bytes) is freed once folded, and a word keeps
    its position as later blocks come in.

    >>> from nsdist.counts import scan
    >>> a, b = scan([pa.array([["x", "y", "x"]])]), scan([pa.array([["y", "z"]])])
    >>> m = local_counts(a, b)
    >>> m.words.to_pylist(), m.counts.tolist(), [x.tolist() for x in m.maps], m.tokens
    (['x', 'y', 'z'], [2, 2, 1], [[0, 1], [1, 2]], 5)
    >>> f = local_counts(b, into=local_counts(a))
    >>> f.words.to_pylist(), f.counts.tolist(), [x.tolist() for x in f.maps], f.tokens
    (['x', 'y', 'z'], [2, 2, 1], [[0, 1], [1, 2]], 5)
    """
    into = into or Local(pa.array([], pa.large_string()), np.zeros(0, np.int64), [], 0, 0)
    if not blocks:
        return into
    known = len(into.counts)
    # Arrow's dictionary keeps first-seen order: ``into``'s words (distinct) come out first, in place.
    encoded = pc.dictionary_encode(pa.concat_arrays([into.words, *[b.words for b in blocks]]))
    index = encoded.indices.to_numpy()[known:].astype(np.int32)
    counts = np.zeros(len(encoded.dictionary), np.int64)
    counts[:known] = into.counts
    counts += np.bincount(index, weights=np.concatenate([b.counts for b in blocks]),
                          minlength=len(counts)).astype(np.int64)
    bounds = np.cumsum([0] + [len(b.words) for b in blocks])
    return Local(encoded.dictionary, counts, into.maps + [index[bounds[i]:bounds[i + 1]] for i in range(len(blocks))],
                 into.tokens + sum(len(b.ids) for b in blocks), into.sentences + sum(b.sentences for b in blocks))


def body(block: Scanned) -> Scanned:
    """A scanned block without its dictionary and counts (folded into its worker's ``Local``):
    what encoding reads (``encode_scanned`` with a lookup), sharing the block's arrays."""
    return replace(block, words=pa.array([], pa.large_string()), counts=np.zeros(0, np.int64))


@numba.njit(cache=True, nogil=True)
def _fnv(offsets, data, n):  # pragma: no cover - compiled
    out = np.empty(len(offsets) - 1, np.int64)
    for i in range(len(offsets) - 1):
        h = np.uint64(14695981039346656037)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(1099511628211)
        out[i] = np.int64(h % np.uint64(n))
    return out


def bucket_of(words: pa.Array, n: int) -> np.ndarray:
    """Each word's bucket of ``n``: FNV-1a of its UTF-8 bytes, the same in every process.

    >>> bucket_of(pa.array(["a", "b", "a", ""], pa.large_string()), 4).tolist()
    [0, 1, 0, 1]
    """
    words = words if words.type == pa.large_string() else pc.cast(words, pa.large_string())
    _, offsets, data = words.buffers()
    offsets = np.frombuffer(offsets, np.int64)[words.offset:words.offset + len(words) + 1]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return _fnv(offsets, data, n)


def split_local(local: Local, n: int) -> list[tuple[pa.Array, np.ndarray]]:
    """``local``'s words and counts in ``n`` buckets (each in ``local``'s order)."""
    return split(local.words, local.counts, n)


def split(words: pa.Array, values: np.ndarray, n: int) -> list[tuple[pa.Array, np.ndarray]]:
    """``words`` and a value per word in ``n`` buckets by ``bucket_of`` (each in the given order).

    >>> [(w.to_pylist(), v.tolist()) for w, v in split(pa.array(["a", "b", "a"]), np.array([7, 8, 9]), 2)]
    [(['a', 'a'], [7, 9]), (['b'], [8])]
    """
    return [(words.take(pa.array(sel)), values[sel]) for sel in _members(bucket_of(words, n), n)]


def _members(bucket: np.ndarray, n: int) -> list[np.ndarray]:
    """Per bucket, the positions in it, ascending."""
    order = np.argsort(bucket, kind="stable")
    return np.split(order, np.searchsorted(bucket[order], np.arange(1, n)))


def merge_bucket(*pieces: tuple[pa.Array, np.ndarray]) -> Bucket:
    """One bucket's pieces from every worker summed (in any order: sums of integers).

    >>> b = merge_bucket((pa.array(["x", "y"]), np.array([2, 1])), (pa.array(["y"]), np.array([3])))
    >>> b.words.to_pylist(), b.counts.tolist(), [r.tolist() for r in b.rows]
    (['x', 'y'], [2, 4], [[0, 1], [1]])
    """
    words = [w if w.type == pa.large_string() else pc.cast(w, pa.large_string()) for w, _ in pieces]
    encoded = pc.dictionary_encode(pa.concat_arrays(words)) if pieces else None
    if encoded is None:
        return Bucket(pa.array([], pa.large_string()), np.zeros(0, np.int64), [])
    index = encoded.indices.to_numpy().astype(np.int64)
    counts = np.bincount(index, weights=np.concatenate([c for _, c in pieces]), minlength=len(encoded.dictionary))
    bounds = np.cumsum([0] + [len(c) for _, c in pieces])
    return Bucket(encoded.dictionary, counts.astype(np.int64), [index[bounds[i]:bounds[i + 1]] for i in range(len(pieces))])


def sort_bucket(bucket: Bucket, min_count: int) -> Sorted:
    """The bucket's words seen at least ``min_count`` times (and at least once), in vocabulary order.

    >>> s = sort_bucket(Bucket(pa.array(["b", "a", "c", "d"]), np.array([2, 2, 5, 1]), []), 2)
    >>> s.words.to_pylist(), s.counts.tolist(), s.rows.tolist()
    (['c', 'a', 'b'], [5, 2, 2], [2, 1, 0])
    """
    rows = np.flatnonzero((bucket.counts >= min_count) & (bucket.counts > 0))
    table = pa.table({"word": bucket.words.take(pa.array(rows)), "count": bucket.counts[rows]})
    order = pc.sort_indices(table, sort_keys=ORDER).to_numpy()
    return Sorted(table["word"].combine_chunks().take(pa.array(order)), table["count"].to_numpy()[order], rows[order])


def sample(part: Sorted, n: int = SAMPLES) -> list[tuple[int, str]]:
    """Up to ``n`` evenly spaced keys (count, word) of a sorted bucket."""
    at = np.unique(np.linspace(0, len(part.counts) - 1, n).astype(np.int64)) if len(part.counts) else []
    return [(int(part.counts[i]), part.words[int(i)].as_py()) for i in at]


def splitters(ranges: int, *samples: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``ranges - 1`` keys that cut the pooled samples into equal parts, in vocabulary order.

    >>> splitters(2, [(5, "a"), (1, "z")], [(3, "b"), (1, "c")])
    [(1, 'c')]
    """
    pooled = sorted((k for s in samples for k in s), key=lambda k: (-k[0], k[1]))
    # No words at all: any key will do; (0, "") comes after every kept word (counts are >= 1).
    return [pooled[len(pooled) * r // ranges] if pooled else (0, "") for r in range(1, ranges)]


def _position(part: Sorted, key: tuple[int, str]) -> int:
    """How many of the sorted words come before ``key`` in vocabulary order."""
    count, word = key
    neg = -part.counts
    lo, hi = int(np.searchsorted(neg, -count, "left")), int(np.searchsorted(neg, -count, "right"))
    while lo < hi:  # the words of this count ascend: bisect them
        mid = (lo + hi) // 2
        if part.words[mid].as_py() < word:
            lo = mid + 1
        else:
            hi = mid
    return lo


def cut_bucket(part: Sorted, keys: list[tuple[int, str]]) -> list[tuple[pa.Array, np.ndarray]]:
    """A sorted bucket cut at the splitters: one (words, counts) slice per range."""
    at = [0, *[_position(part, k) for k in keys], len(part.counts)]
    return [(part.words[at[i]:at[i + 1]], part.counts[at[i]:at[i + 1]]) for i in range(len(at) - 1)]


def merge_range(*cuts: tuple[pa.Array, np.ndarray]) -> Range:
    """Every bucket's cut of one range merged in vocabulary order, with each word's rank.

    >>> r = merge_range((pa.array(["a", "c"]), np.array([3, 1])), (pa.array(["b"]), np.array([3])))
    >>> r.words.to_pylist(), r.counts.tolist(), [x.tolist() for x in r.ranks]
    (['a', 'b', 'c'], [3, 3, 1], [[0, 2], [1]])
    """
    words = pa.concat_arrays([w if w.type == pa.large_string() else pc.cast(w, pa.large_string()) for w, _ in cuts])
    counts = np.concatenate([c for _, c in cuts]).astype(np.int64)
    order = pc.sort_indices(pa.table({"word": words, "count": counts}), sort_keys=ORDER).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    bounds = np.cumsum([0] + [len(c) for _, c in cuts])
    return Range(words.take(pa.array(order)), counts[order], [rank[bounds[i]:bounds[i + 1]] for i in range(len(cuts))])


def offsets(sizes: list[int]) -> list[int]:
    """Each range's first id.

    >>> offsets([3, 0, 2])
    [0, 3, 3]
    """
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist() if sizes else []


def bucket_ids(bucket: Bucket, part: Sorted, starts: list[int], max_vocab: int | None,
               *ranks: np.ndarray) -> np.ndarray:
    """The id of each of the bucket's words (-1: not in the vocabulary). ``ranks``: per range,
    the ranks there of the bucket's cut (``Range.ranks``), ``starts`` the ranges' first ids."""
    ids = np.full(len(bucket.counts), -1, np.int64)
    if len(part.rows):
        got = np.concatenate([s + r for s, r in zip(starts, ranks)])
        if max_vocab is not None:
            got = np.where(got < max_vocab, got, -1)
        ids[part.rows] = got
    return ids.astype(np.int32)


def answer(ids: np.ndarray, bucket: Bucket, worker: int) -> np.ndarray:
    """The ids of the words ``worker`` sent to this bucket, in its order."""
    return ids[bucket.rows[worker]]


def local_ids(local: Local, n: int, *answers: np.ndarray) -> np.ndarray:
    """The id of each word of a worker's dictionary, from every bucket's answer."""
    ids = np.full(len(local.counts), -1, np.int32)
    for sel, got in zip(_members(bucket_of(local.words, n), n), answers):
        ids[sel] = got
    return ids


def block_lookup(local: Local, ids: np.ndarray, block: int) -> np.ndarray:
    """The vocabulary id of each of block ``block``'s distinct words (``encode_scanned``'s lookup)."""
    return ids[local.maps[block]]


def vocab_of(max_vocab: int | None, *ranges: Range) -> Vocab:
    """The whole vocabulary from its consecutive parts (Ranges, or Vocab parts: anything with
    words and counts), for the stages that read it whole."""
    words = pa.concat_arrays([r.words for r in ranges]) if ranges else pa.array([], pa.large_string())
    counts = np.concatenate([r.counts for r in ranges]) if ranges else np.zeros(0, np.int64)
    return Vocab(words[:max_vocab], counts[:max_vocab])


def in_process(groups: list[list[Scanned]], n: int, min_count: int, max_vocab: int | None = None):
    """The three exchanges in one process, ``groups`` the blocks of each worker and ``n`` the
    buckets: (the vocabulary, per group the lookup of each block). The statement the cluster's
    task graph (``cluster.stages.count_vocab``) follows step by step.

    >>> from nsdist.counts import scan
    >>> blocks = [[scan([pa.array([["b", "a", "b"]])])], [scan([pa.array([["c", "a", "b"]])])]]
    >>> vocab, lookups = in_process(blocks, 3, 2)
    >>> vocab.words.to_pylist(), vocab.counts.tolist(), [[x.tolist() for x in g] for g in lookups]
    (['b', 'a'], [3, 2], [[[0, 1]], [[-1, 1, 0]]])
    """
    local = []
    for g in groups:  # folded a block at a time, as each worker does while its blocks are scanned
        loc = local_counts()
        for block in g:
            loc = local_counts(block, into=loc)
        local.append(loc)
    split = [split_local(loc, n) for loc in local]
    buckets = [merge_bucket(*[s[q] for s in split]) for q in range(n)]
    ordered = [sort_bucket(b, min_count) for b in buckets]
    keys = splitters(n, *[sample(o) for o in ordered])
    cuts = [cut_bucket(o, keys) for o in ordered]
    ranges = [merge_range(*[c[r] for c in cuts]) for r in range(n)]
    starts = offsets([len(r) for r in ranges])
    ids = [bucket_ids(b, o, starts, max_vocab, *[r.ranks[q] for r in ranges])
           for q, (b, o) in enumerate(zip(buckets, ordered))]
    known = [local_ids(loc, n, *[answer(ids[q], buckets[q], k) for q in range(n)]) for k, loc in enumerate(local)]
    return vocab_of(max_vocab, *ranges), [[block_lookup(loc, kn, j) for j in range(len(g))]
                                          for loc, kn, g in zip(local, known, groups)]
