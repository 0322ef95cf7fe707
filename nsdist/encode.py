"""Token lists -> int32 word ids + sentence offsets (a "shard", kept on the workers)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .counts import scan


@dataclass(frozen=True)
class Shard:
    """Encoded sentences: sentence k is ids[offsets[k]:offsets[k+1]]."""

    ids: np.ndarray  # int32 word ids, out-of-vocabulary words removed
    offsets: np.ndarray  # int64, starts with 0, ends with len(ids)

    @property
    def sentences(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.offsets.nbytes


def encode(tokens: pa.ListArray, words: pa.Array, max_sentence_length: int = 10000) -> Shard:
    """Map tokens to vocabulary ids, drop unknown words and split long sentences into chunks.

    Unknown words are removed before windowing, as in word2vec. Sentences with more than
    ``max_sentence_length`` known words are cut into consecutive chunks (never truncated).

    >>> import pyarrow as pa
    >>> s = encode(pa.array([["a", "x", "b"], [], ["b", "b", "a"]]), pa.array(["a", "b"]), 2)
    >>> s.ids.tolist(), s.offsets.tolist()
    ([0, 1, 1, 1, 0], [0, 2, 4, 5])
    """
    return encode_scanned([(scan([tokens]), 0, None)], words, max_sentence_length)


def encode_scanned(parts, words: pa.Array, max_sentence_length: int = 10000) -> Shard:
    """Encode the sentences of scanned partitions that start in token ranges, in order, as one shard.

    ``parts``: (Scanned, lo, hi) triples; a partition's sentence belongs to the range [lo, hi)
    (hi None: to the end) that holds its first token, so ranges that tile a partition split its
    sentences without loss or overlap. Only the partition's distinct words are looked up in the
    vocabulary; then two compiled passes count and write the known ids straight into the shard.
    """
    plan = []
    for scanned, lo, hi in parts:
        starts = scanned.offsets[:-1]
        k0 = int(np.searchsorted(starts, lo))
        k1 = len(starts) if hi is None else int(np.searchsorted(starts, hi))
        if k0 < k1 and len(words):
            value_set = words if words.type == scanned.words.type else pc.cast(words, scanned.words.type)
            lookup = pc.fill_null(pc.index_in(scanned.words, value_set=value_set), -1).to_numpy().astype(np.int32)
            plan.append((scanned, k0, k1, lookup, _known(scanned.ids, scanned.offsets[k0], scanned.offsets[k1], lookup)))
    ids = np.empty(sum(p[4] for p in plan), np.int32)
    lengths = np.empty(sum(p[2] - p[1] for p in plan), np.int64)
    pos = sentence = 0
    for scanned, k0, k1, lookup, _ in plan:
        pos = _fill(scanned.ids, scanned.offsets, k0, k1, lookup, ids, pos, lengths[sentence:sentence + k1 - k0])
        sentence += k1 - k0
    return Shard(ids, _chunk_offsets(lengths[lengths > 0], max_sentence_length))


@numba.njit(cache=True, nogil=True)
def _known(ids: np.ndarray, lo: int, hi: int, lookup: np.ndarray) -> int:
    n = 0
    for i in range(lo, hi):
        n += lookup[ids[i]] >= 0
    return n


@numba.njit(cache=True, nogil=True)
def _fill(ids, offsets, k0, k1, lookup, out, pos, lengths) -> int:
    """Known ids of sentences k0..k1-1 into out[pos:], their counts into lengths; the new pos."""
    for k in range(k0, k1):
        start = pos
        for i in range(offsets[k], offsets[k + 1]):
            v = lookup[ids[i]]
            if v >= 0:
                out[pos] = v
                pos += 1
        lengths[k - k0] = pos - start
    return pos


def _chunk_offsets(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Offsets of consecutive sentences of ``lengths`` words, each cut into chunks of at most max_len.

    >>> _chunk_offsets(np.array([2, 5, 1]), 2).tolist()
    [0, 2, 4, 6, 7, 8]
    """
    chunks = -(-lengths // max_len)
    sizes = np.full(int(chunks.sum()), max_len, np.int64)
    last = np.cumsum(chunks) - 1
    sizes[last] = lengths - (chunks - 1) * max_len
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets
