"""Corpus URLs -> partitions ("blocks") -> token lists.

Text: one sentence per line, tokens separated by whitespace; plain files are split into byte
ranges on newlines, compressed files (.gz, .bz2, .zst, ...) are one block each because they
cannot be split. Parquet: one block per row group, tokens from a list<string> column.
Tokenizing is vectorised with pyarrow compute; no Python loop ever touches a token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage
from .errors import DataError


@dataclass(frozen=True)
class Block:
    """One partition of the corpus: a byte range of a text file or a Parquet row group."""

    url: str
    offset: int = 0  # text: byte offset; parquet: row group index
    length: int | None = None  # text: bytes (None: whole file); unused for parquet
    parquet: bool = False


def _is_parquet(url: str) -> bool:
    return url.endswith((".parquet", ".parq", ".pq"))


def plan_blocks(urls, storage_options=None, blocksize: int = 16 * 2**20) -> list[Block]:
    """Expand URLs/globs into blocks of about ``blocksize`` bytes (client side, metadata only)."""
    blocks = []
    for url, size in storage.expand(urls, storage_options):
        if _is_parquet(url):
            with storage.open_read(url, storage_options) as f:
                groups = pq.ParquetFile(f).metadata.num_row_groups
            blocks += [Block(url, i, None, parquet=True) for i in range(groups)]
        elif storage.compression_of(url) is not None or size <= blocksize:
            blocks.append(Block(url, 0, None))
        else:
            blocks += [Block(url, off, min(blocksize, size - off)) for off in range(0, size, blocksize)]
    return blocks


def tokenize(data: bytes, lowercase: bool = False) -> pa.ListArray:
    """Split text into lines and whitespace tokens.

    >>> tokenize(b" a b\\n\\nc  d e \\n").to_pylist()
    [['a', 'b'], [], ['c', 'd', 'e'], []]
    """
    if data.isascii():
        # ASCII (most English corpora): the ASCII kernels are 2x faster, same tokens.
        text = pa.array([data], type=pa.large_binary()).cast(pa.large_string())
        lower, split = pc.ascii_lower, pc.ascii_split_whitespace
    else:
        # Invalid UTF-8 is replaced rather than rejected: one bad byte in a 100 GB crawl should
        # not fail the job, and the replacement character never survives min_count anyway.
        text = pa.array([data.decode("utf-8", errors="replace")], type=pa.large_string())
        lower, split = pc.utf8_lower, pc.utf8_split_whitespace
    if lowercase:
        text = lower(text)
    lines = pc.list_flatten(pc.split_pattern(text, "\n"))
    return _drop_empty(split(lines))


def _drop_empty(lists: pa.ListArray) -> pa.LargeListArray:
    """Remove the '' tokens that leading/trailing whitespace and empty lines produce."""
    flat = pc.list_flatten(lists)
    keep = np.asarray(pc.binary_length(flat)) > 0
    # A list's new end is the number of kept tokens before its old end.
    kept_before = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(keep, out=kept_before[1:])
    old = np.asarray(lists.offsets, dtype=np.int64)
    offsets = kept_before[old - old[0]]
    return pa.LargeListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)))


def _lower_lists(tokens: pa.ListArray) -> pa.ListArray:
    offsets = pc.subtract(tokens.offsets, tokens.offsets[0])
    values = pc.utf8_lower(tokens.flatten())
    return pa.LargeListArray.from_arrays(pc.cast(offsets, pa.int64()), values)


def read_tokens(block: Block, storage_options=None, lowercase: bool = False, column: str = "tokens") -> pa.ListArray:
    """Read one block and return one token list per sentence."""
    if not block.parquet:
        return tokenize(storage.read_block(block.url, block.offset, block.length, storage_options), lowercase)
    with storage.open_read(block.url, storage_options) as f:
        pf = pq.ParquetFile(f)
        if column not in pf.schema_arrow.names:
            raise DataError(
                f"Parquet corpus {block.url!r} has no column {column!r} (columns: "
                f"{', '.join(pf.schema_arrow.names)}); set parquet_column"
            )
        arr = pf.read_row_group(block.offset, columns=[column]).column(0).combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) or not (
        pa.types.is_string(arr.type.value_type) or pa.types.is_large_string(arr.type.value_type)
    ):
        raise DataError(f"Parquet column {column!r} of {block.url!r} must be list<string>, got {arr.type}")
    arr = pc.fill_null(arr, pa.scalar([], arr.type)) if arr.null_count else arr
    return _lower_lists(arr) if lowercase else arr
