"""Per-partition word counts and their deterministic merge (a tree reduction on the cluster)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .corpus import drop_null_tokens

SCHEMA = pa.schema([("word", pa.large_string()), ("count", pa.int64())])


@dataclass(frozen=True)
class Counts:
    """Word counts of some partitions, plus the raw totals needed for reporting."""

    table: pa.Table  # columns word, count; unordered
    tokens: int  # raw tokens read
    sentences: int  # non-empty lines read


@dataclass(frozen=True)
class Scanned:
    """One partition read once: its distinct words with their counts, and every token as an
    index into them, sentence by sentence. Counting reads the counts; encoding later maps the
    indices to vocabulary ids without reading or hashing the corpus again."""

    words: pa.Array  # large_string, the partition's distinct tokens
    counts: np.ndarray  # int64, occurrences of each
    ids: np.ndarray  # uint16 (int32 past 65,536 distinct words), each token's index into words
    offsets: np.ndarray  # int32 (int64 past 2**31 tokens), non-empty sentence k is ids[offsets[k]:offsets[k+1]]
    # Sessions: the items sentence k showed without a click, shown_ids[shown_offsets[k]:shown_offsets[k+1]]
    # (indices into words; a word only shown has count 0). None: a corpus without them.
    shown_ids: np.ndarray | None = None
    shown_offsets: np.ndarray | None = None

    @property
    def sentences(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        shown = 0 if self.shown_ids is None else self.shown_ids.nbytes + self.shown_offsets.nbytes
        return self.words.nbytes + self.counts.nbytes + self.ids.nbytes + self.offsets.nbytes + shown

    def to_counts(self) -> Counts:
        table = pa.Table.from_arrays([self.words, pa.array(self.counts, pa.int64())], schema=SCHEMA)
        if self.shown_ids is not None:  # items only shown were never clicked: not words of the corpus
            table = table.filter(pa.array(self.counts > 0))
        return Counts(table, len(self.ids), self.sentences)



_UINT16 = 2**16 - 1  # the largest distinct-word count whose indices fit in uint16 (0..65534)


def scan(pieces) -> Scanned:
    """Scan token lists in one pass: an iterable of pieces, each token lists or, as
    ``corpus.iter_tokens`` gives them, (token lists, open) pairs where ``open`` says that the
    last list goes on in the next piece (one sentence cut between words).

    >>> import pyarrow as pa
    >>> s = scan([pa.array([["b", "a"], []]), pa.array([["a", "c", "a"]])])
    >>> s.words.to_pylist(), s.counts.tolist(), s.ids.tolist(), s.offsets.tolist()
    (['b', 'a', 'c'], [1, 3, 1], [0, 1, 1, 2, 1], [0, 2, 5])
    >>> scan([(pa.array([["b"], ["a"]]), True), (pa.array([["c"]]), False)]).offsets.tolist()
    [0, 1, 3]
    """
    # Each piece's indices go straight into one growing buffer (amortised doubling; its untouched
    # tail is never resident): keeping them as per-piece arrays until the end cost their size
    # again and fragmented the heap between pieces (8 MiB block: +19 MB RSS for 7.6 MB of data).
    # uint16 while every index fits (a 4 MiB block has ~20k distinct words): the scanned blocks
    # wait for the vocabulary, and their ids are most of what a worker holds until then.
    ids = np.empty(1 << 20, np.uint16)
    sizes, dictionaries, lengths = [], [], [np.zeros(1, np.int64)]
    pos = carry = 0  # carry: tokens of an open sentence in the pieces before
    for item in pieces:
        tokens, open_line = item if isinstance(item, tuple) else (item, False)
        tokens = drop_null_tokens(tokens)
        n = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
        n[:1] += carry
        carry = n[-1] if open_line else 0
        n = n[:-1] if open_line else n
        lengths.append(n[n > 0])
        encoded = pc.dictionary_encode(pc.list_flatten(tokens))
        piece = encoded.indices.to_numpy()
        if len(encoded.dictionary) > _UINT16 and ids.dtype == np.uint16:
            ids = ids.astype(np.int32)
        if pos + len(piece) > len(ids):
            grown = np.empty(max(2 * len(ids), pos + len(piece)), ids.dtype)
            grown[:pos] = ids[:pos]
            ids = grown
        ids[pos:pos + len(piece)] = piece
        pos += len(piece)
        sizes.append(len(piece))
        words = encoded.dictionary  # cast the distinct words only, not every token
        dictionaries.append(words if words.type == pa.large_string() else pc.cast(words, pa.large_string()))
    ids = ids[:pos]
    # One dictionary for the partition (first-seen order): encode the pieces' dictionaries, then
    # map each piece's indices through its part of that encoding, in place.
    both = pc.dictionary_encode(pa.concat_arrays(dictionaries)) if dictionaries else None
    words = both.dictionary if both is not None else pa.array([], pa.large_string())
    transpose = both.indices.to_numpy() if both is not None else np.zeros(0, np.int32)
    if len(words) > _UINT16 and ids.dtype == np.uint16:
        ids = ids.astype(np.int32)
    pos = start = 0
    for size, d in zip(sizes, dictionaries):
        np.take(transpose[start:start + len(d)], ids[pos:pos + size], out=ids[pos:pos + size])  # buffered
        pos, start = pos + size, start + len(d)
    counts = np.zeros(len(words), np.int64)
    for start in range(0, len(ids), 1 << 20):  # bincount copies its input as intp: a piece at a time
        counts += np.bincount(ids[start:start + (1 << 20)], minlength=len(words))
    offsets = np.cumsum(np.concatenate(lengths), dtype=np.int32 if len(ids) < 2**31 else np.int64)
    return Scanned(words, counts, ids, offsets)


def scan_sessions(clicked: pa.ListArray, shown: pa.ListArray) -> Scanned:
    """``scan`` of sessions' clicked items, with the items each session showed without a click.

    >>> s = scan_sessions(pa.array([["a", "b"], [], ["b"]]), pa.array([["c"], ["a"], ["a", "d"]]))
    >>> s.words.to_pylist(), s.counts.tolist(), s.offsets.tolist()
    (['a', 'b', 'c', 'd'], [1, 2, 0, 0], [0, 2, 3])
    >>> s.shown_ids.tolist(), s.shown_offsets.tolist()  # the empty session is gone, as in scan
    ([2, 0, 3], [0, 1, 3])
    """
    clicked, shown = drop_null_tokens(clicked), drop_null_tokens(shown)
    scanned = scan([clicked])
    kept = pc.list_value_length(clicked).to_numpy(zero_copy_only=False) > 0  # scan keeps these sessions
    shown = shown.filter(pa.array(kept))
    flat = pc.cast(pc.list_flatten(shown), pa.large_string())
    # Shown items not clicked in this partition extend its dictionary with a count of 0.
    distinct = pc.unique(flat)
    words = pa.concat_arrays([scanned.words, pc.filter(distinct, pc.invert(pc.is_in(distinct, value_set=scanned.words)))])
    shown_ids = pc.index_in(flat, value_set=words).to_numpy(zero_copy_only=False).astype(np.int32)
    counts = np.concatenate([scanned.counts, np.zeros(len(words) - len(scanned.words), np.int64)])
    ids = scanned.ids.astype(np.int32) if len(words) > _UINT16 else scanned.ids
    shown_offsets = np.zeros(len(shown) + 1, np.int64)
    np.cumsum(pc.list_value_length(shown).to_numpy(zero_copy_only=False), out=shown_offsets[1:])
    return Scanned(words, counts, ids, scanned.offsets, shown_ids, shown_offsets)


def count_tokens(tokens: pa.ListArray) -> Counts:
    """Count the words of one partition.

    >>> import pyarrow as pa
    >>> c = count_tokens(pa.array([["a", "b", "a"], [], ["b", "a"]]))
    >>> sorted(zip(*c.table.to_pydict().values())), c.tokens, c.sentences
    ([('a', 3), ('b', 2)], 5, 2)
    """
    return scan([tokens]).to_counts()


def merge_counts(*parts: Counts) -> Counts:
    """Sum counts of several partitions (order-independent, so any reduction tree is fine)."""
    tables = [p.table for p in parts if p.table.num_rows]
    if not tables:
        table = SCHEMA.empty_table()
    else:
        both = pa.concat_tables(tables)
        # dictionary_encode + bincount: a hash-group-by without Acero (which warns about the
        # unaligned buffers that unpickled tables have). float64 sums are exact below 2**53.
        encoded = pc.dictionary_encode(both["word"].combine_chunks())
        sums = np.bincount(encoded.indices.to_numpy(), weights=both["count"].to_numpy(),
                           minlength=len(encoded.dictionary))
        table = pa.Table.from_arrays([encoded.dictionary, pa.array(sums.astype(np.int64))], schema=SCHEMA)
    return Counts(table, sum(p.tokens for p in parts), sum(p.sentences for p in parts))
