"""Per-partition word counts and their deterministic merge (a tree reduction on the cluster)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = pa.schema([("word", pa.large_string()), ("count", pa.int64())])


@dataclass(frozen=True)
class Counts:
    """Word counts of some partitions, plus the raw totals needed for reporting."""

    table: pa.Table  # columns word, count; unordered
    tokens: int  # raw tokens read
    sentences: int  # non-empty lines read


def count_tokens(tokens: pa.ListArray) -> Counts:
    """Count the words of one partition.

    >>> import pyarrow as pa
    >>> c = count_tokens(pa.array([["a", "b", "a"], [], ["b", "a"]]))
    >>> sorted(zip(*c.table.to_pydict().values())), c.tokens, c.sentences
    ([('a', 3), ('b', 2)], 5, 2)
    """
    lengths = pc.list_value_length(tokens)
    return count_words(pc.list_flatten(tokens), int(pc.sum(pc.greater(lengths, 0)).as_py() or 0))


def count_words(words: pa.Array, sentences: int) -> Counts:
    """Count a flat array of tokens that came from ``sentences`` non-empty sentences.

    >>> import pyarrow as pa
    >>> c = count_words(pa.array(["a", "b", "a"]), 2)
    >>> sorted(zip(*c.table.to_pydict().values())), c.tokens, c.sentences
    ([('a', 2), ('b', 1)], 3, 2)
    """
    vc = pc.value_counts(pc.cast(words, pa.large_string()))
    table = pa.Table.from_arrays([vc.field("values"), pc.cast(vc.field("counts"), pa.int64())], schema=SCHEMA)
    return Counts(table, len(words), sentences)


def count_pieces(pieces) -> Counts:
    """Count an iterable of (tokens, sentences) pieces (``corpus.iter_tokens(..., words=True)``).

    >>> import pyarrow as pa
    >>> c = count_pieces([(pa.array(["a", "b"]), 1), (pa.array(["a"]), 1)])
    >>> sorted(zip(*c.table.to_pydict().values())), c.tokens, c.sentences
    ([('a', 2), ('b', 1)], 3, 2)
    """
    return merge_counts(*(count_words(words, sentences) for words, sentences in pieces))


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
