"""Token lists -> int32 word ids + sentence offsets (a "shard", kept on the workers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
    flat = pc.list_flatten(tokens)
    if len(flat) == 0 or len(words) == 0:
        return Shard(np.zeros(0, np.int32), np.zeros(1, np.int64))
    value_set = words if words.type == flat.type else pc.cast(words, flat.type)
    idx = pc.index_in(flat, value_set=value_set)
    known = pc.is_valid(idx)
    ids = pc.filter(idx, known).to_numpy().astype(np.int32, copy=False)
    parents = pc.filter(pc.list_parent_indices(tokens), known).to_numpy()
    n = len(ids)
    if n == 0:
        return Shard(ids, np.zeros(1, np.int64))
    # Sentence starts are where the parent line changes; chunk starts every max_sentence_length
    # known words into a sentence.
    starts = np.flatnonzero(np.diff(parents, prepend=-1) != 0)
    lengths = np.diff(np.append(starts, n))
    pos = np.arange(n) - np.repeat(starts, lengths)
    bounds = np.flatnonzero(pos % max_sentence_length == 0)
    return Shard(ids, np.append(bounds, n).astype(np.int64))


def encode_pieces(pieces, words: pa.Array, max_sentence_length: int = 10000) -> Shard:
    """``encode`` an iterable of token-list pieces one at a time and concatenate the results.

    >>> import pyarrow as pa
    >>> s = encode_pieces([pa.array([["a", "b"]]), pa.array([["b"], ["x"]])], pa.array(["a", "b"]))
    >>> s.ids.tolist(), s.offsets.tolist()
    ([0, 1, 1], [0, 2, 3])
    """
    return concat_shards([encode(p, words, max_sentence_length) for p in pieces])


def concat_shards(shards: list[Shard]) -> Shard:
    """Sentences of several shards, in order, as one shard.

    >>> a, b = Shard(np.array([1, 2], np.int32), np.array([0, 2])), Shard(np.array([3], np.int32), np.array([0, 1]))
    >>> s = concat_shards([a, b])
    >>> s.ids.tolist(), s.offsets.tolist()
    ([1, 2, 3], [0, 2, 3])
    """
    if len(shards) == 1:
        return shards[0]
    ids = np.concatenate([s.ids for s in shards]) if shards else np.zeros(0, np.int32)
    lengths = np.concatenate([np.diff(s.offsets) for s in shards]) if shards else np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Shard(ids, offsets)
