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
    """Encoded sentences: sentence k is ids[offsets[k]:offsets[k+1]]; for sessions, the items it
    showed without a click are shown_ids[shown_offsets[k]:shown_offsets[k+1]] (None: none)."""

    ids: np.ndarray  # int32 word ids, out-of-vocabulary words removed
    offsets: np.ndarray  # int64, starts with 0, ends with len(ids)
    shown_ids: np.ndarray | None = None  # int32
    shown_offsets: np.ndarray | None = None  # int64, one more than the sentences

    @property
    def sentences(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        shown = 0 if self.shown_ids is None else self.shown_ids.nbytes + self.shown_offsets.nbytes
        return self.ids.nbytes + self.offsets.nbytes + shown



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


def encode_scanned(parts, words: pa.Array | None, max_sentence_length: int = 10000,
                   lookup: np.ndarray | None = None) -> Shard:
    """Encode token ranges of scanned partitions, in order, as one shard.

    Each sentence is cut into chunks of ``max_sentence_length`` known words; ``parts`` are
    (Scanned, lo, hi) triples, and a chunk belongs to the range [lo, hi) (hi None: to the end)
    that holds its first known word. Ranges that tile a partition therefore split it without
    loss or overlap, even inside one long line (a one-line corpus such as text8 still spreads
    over all shards). Only the partition's distinct words are looked up in the vocabulary; two
    compiled passes then count and write the known ids straight into the shard. ``lookup``: the
    vocabulary id of each of the parts' ids (-1: unknown) instead of ``words``, for parts whose
    ids are already global (a graph job's walks: node indices).
    """
    plan = []
    for scanned, lo, hi in parts:
        hi = len(scanned.ids) if hi is None else hi
        starts = scanned.offsets[:-1]
        k0 = max(int(np.searchsorted(starts, lo, "right")) - 1, 0)  # the sentence holding lo
        k1 = int(np.searchsorted(starts, hi))
        if k0 < k1 and lookup is not None:
            plan.append((scanned, k0, k1, lo, hi, lookup))
        elif k0 < k1 and len(words):
            assert len(scanned.words) or not len(scanned.ids), "a block folded into its worker's counts: use its lookup"
            value_set = words if words.type == scanned.words.type else pc.cast(words, scanned.words.type)
            ids = pc.fill_null(pc.index_in(scanned.words, value_set=value_set), -1).to_numpy().astype(np.int32)
            plan.append((scanned, k0, k1, lo, hi, ids))
    empty_ids, empty_lengths = np.zeros(0, np.int32), np.zeros(0, np.int64)
    n_ids = n_chunks = 0
    for scanned, k0, k1, lo, hi, lookup in plan:
        n_ids, n_chunks = _chunks(scanned.ids, scanned.offsets, k0, k1, lo, hi, lookup, max_sentence_length,
                                  empty_ids, n_ids, empty_lengths, n_chunks, False)
    # The chunks' lengths are written into offsets[1:] and summed in place.
    ids, offsets = np.empty(n_ids, np.int32), np.zeros(n_chunks + 1, np.int64)
    n_ids = n_chunks = 0
    for scanned, k0, k1, lo, hi, lookup in plan:
        n_ids, n_chunks = _chunks(scanned.ids, scanned.offsets, k0, k1, lo, hi, lookup, max_sentence_length,
                                  ids, n_ids, offsets[1:], n_chunks, True)
    np.cumsum(offsets[1:], out=offsets[1:])
    if not plan or plan[0][0].shown_ids is None:
        return Shard(ids, offsets)
    return Shard(ids, offsets, *_encode_shown(plan, max_sentence_length, n_chunks))


def _encode_shown(plan, max_len: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Each chunk's shown items: its session's, as vocabulary ids (items not in it dropped)."""
    lengths = np.zeros(n_chunks + 1, np.int64)
    out, pos, chunk = np.zeros(0, np.int32), 0, 0
    for write in (False, True):
        if write:
            out, pos, chunk = np.empty(pos, np.int32), 0, 0
        for scanned, k0, k1, lo, hi, lookup in plan:
            pos, chunk = _shown_chunks(scanned.ids, scanned.offsets, scanned.shown_ids, scanned.shown_offsets, k0,
                                       k1, lo, hi, lookup, max_len, out, pos, lengths[1:], chunk, write)
    np.cumsum(lengths[1:], out=lengths[1:])
    return out, lengths


@numba.njit(cache=True, nogil=True)
def _chunks(ids, offsets, k0, k1, lo, hi, lookup, max_len, out, pos, lengths, chunk, write):  # pragma: no cover
    """Known ids of the chunks of sentences k0..k1-1 that start in [lo, hi), from out[pos] and
    lengths[chunk] on (``write``; else only counted); returns the new (pos, chunk)."""
    for k in range(k0, k1):
        known, mine = 0, False
        for i in range(offsets[k], offsets[k + 1]):
            v = lookup[ids[i]]
            if v < 0:
                continue
            if known % max_len == 0:  # a chunk starts at raw position i
                mine = lo <= i < hi
                chunk += mine
            known += 1
            if mine:
                if write:
                    out[pos] = v
                    lengths[chunk - 1] += 1
                pos += 1
    return pos, chunk


@numba.njit(cache=True, nogil=True)
def _shown_chunks(ids, offsets, shown, shown_offsets, k0, k1, lo, hi, lookup, max_len, out, pos, lengths, chunk,
                  write):  # pragma: no cover
    """The known shown items of sentence k for each of its chunks that ``_chunks`` keeps (the
    same chunk starts), from out[pos] and lengths[chunk] on; returns the new (pos, chunk)."""
    for k in range(k0, k1):
        known = 0
        for i in range(offsets[k], offsets[k + 1]):
            if lookup[ids[i]] < 0:
                continue
            if known % max_len == 0 and lo <= i < hi:  # a chunk of this range starts here
                for j in range(shown_offsets[k], shown_offsets[k + 1]):
                    v = lookup[shown[j]]
                    if v >= 0:
                        if write:
                            out[pos] = v
                            lengths[chunk] += 1
                        pos += 1
                chunk += 1
            known += 1
    return pos, chunk
