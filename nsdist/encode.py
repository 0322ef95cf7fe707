"""Token lists -> int32 word ids + sentence offsets (a "shard", kept on the workers)."""

from __future__ import annotations

from dataclasses import dataclass

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
    vocabulary; tokens are then mapped with one gather.
    """
    ids, lengths = [], []
    for scanned, lo, hi in parts:
        starts = scanned.offsets[:-1]
        k0 = np.searchsorted(starts, lo)
        k1 = len(starts) if hi is None else np.searchsorted(starts, hi)
        if k0 == k1 or len(words) == 0:
            continue
        value_set = words if words.type == scanned.words.type else pc.cast(words, scanned.words.type)
        lookup = pc.fill_null(pc.index_in(scanned.words, value_set=value_set), -1).to_numpy().astype(np.int32)
        mapped = lookup[scanned.ids[scanned.offsets[k0]:scanned.offsets[k1]]]
        known = mapped >= 0
        # Known words per sentence: differences of the running count at sentence boundaries.
        running = np.concatenate(([0], np.cumsum(known)))
        ids.append(mapped[known])
        lengths.append(np.diff(running[scanned.offsets[k0:k1 + 1] - scanned.offsets[k0]]))
    if not ids:
        return Shard(np.zeros(0, np.int32), np.zeros(1, np.int64))
    ids, lengths = np.concatenate(ids), np.concatenate(lengths)
    return Shard(ids, _chunk_offsets(lengths[lengths > 0], max_sentence_length))


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
