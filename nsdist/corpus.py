"""Corpus URLs -> partitions ("blocks") -> token lists.

Text: one sentence per line, tokens separated by whitespace; plain files are split into byte
ranges on newlines, compressed files (.gz, .bz2, .zst, ...) are one block each because they
cannot be split. Parquet: one block per row group, tokens from a list<string> column or item ids from a list of integers.
Tokenizing is one compiled (numba) pass over the bytes; no Python loop ever touches a token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
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
    ints: bool = False  # parquet: the column holds integer ids (read as their decimal strings)


def is_parquet(url: str) -> bool:
    return url.endswith((".parquet", ".parq", ".pq"))


def plan_blocks(urls, storage_options=None, blocksize: int = 4 * 2**20, column: str | None = None,
                files: list[tuple[str, int]] | None = None, shown_column: str | None = None) -> list[Block]:
    """Expand URLs/globs into blocks of about ``blocksize`` bytes (client side, metadata only).
    With ``column`` (and ``shown_column``: sessions' shown items), each Parquet file's schema is
    checked for it (``check_column``). ``files``: the (url, size) the URLs expand to, when the
    job listed them already (a listing of a large S3 prefix takes seconds, and a second one could
    see other files)."""
    blocks = []
    for url, size in files if files is not None else storage.expand(urls, storage_options):
        if shown_column and not is_parquet(url):
            raise DataError(f"negatives_column is set but corpus file {storage.scrub(url, storage_options)!r} is "
                            "not Parquet; sessions are Parquet files (or unset it)")
        if is_parquet(url):
            groups, ints = _row_groups(url, storage_options, column, shown_column)
            blocks += [Block(url, i, None, parquet=True, ints=ints) for i in range(groups)]
        elif storage.compression_of(url) is not None or size <= blocksize:
            blocks.append(Block(url, 0, None))
        else:
            blocks += [Block(url, off, min(blocksize, size - off)) for off in range(0, size, blocksize)]
    return blocks


def _row_groups(url: str, storage_options, column: str | None, shown_column: str | None = None) -> tuple[int, bool]:
    """A Parquet file's row groups, read from its footer, and whether ``column`` holds integer
    ids; DataError if it is no Parquet file or has no usable ``column`` (or ``shown_column``)."""
    with storage.open_read(url, storage_options) as f:
        pf = parquet_file(f, url, storage_options)
        for name, key in ((column, "parquet_column"), (shown_column, "negatives_column")):
            if name is not None:
                check_column(pf.schema_arrow, name, storage.scrub(url, storage_options), key)
        field = pf.schema_arrow.field(column) if column in pf.schema_arrow.names else None
        return pf.metadata.num_row_groups, bool(field is not None and _int_lists(field.type))


def word_type(blocks: list[Block]) -> str:
    """"int64" when every block is a Parquet column of integer ids (outputs give them back as
    int64 where a format has types), else "string".

    >>> word_type([Block("a.parquet", 0, parquet=True, ints=True)]), word_type([Block("a.txt")])
    ('int64', 'string')
    """
    return "int64" if blocks and all(b.ints for b in blocks) else "string"


def parquet_file(f, url: str, storage_options, flag: str = "--corpus") -> pq.ParquetFile:
    """The Parquet file ``f``; a DataError naming the file and the fix when it is no Parquet.
    ``flag``: the option the file came from (``--corpus``, ``--edges``), or what it is."""
    what = {"--corpus": "corpus file", "--edges": "edge list"}.get(flag, "file")
    fix = f"re-upload it or remove it from {flag}" if flag.startswith("--") else "re-upload it or pass another"
    try:
        return pq.ParquetFile(f)
    except pa.ArrowInvalid as e:
        raise DataError(storage.scrub(
            f"{what} {url!r} is not a readable Parquet file ({e}); {fix} (a text file must not be named .parquet, "
            ".parq or .pq)", storage_options)) from None


def _token_lists(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type) or pa.types.is_integer(t.value_type))


def _int_lists(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def check_column(schema: pa.Schema, column: str, url: str, key: str = "parquet_column") -> None:
    """DataError unless ``column`` of a Parquet corpus holds lists of strings or ids; the message
    suggests a column of this file that does, for the setting ``key`` that named the column
    (``parquet_column``, or ``negatives_column`` for sessions' shown items).

    >>> check_column(pa.schema([("items", pa.list_(pa.string()))]), "tokens", "s.parquet")
    Traceback (most recent call last):
    ...
    nsdist.errors.DataError: Parquet corpus 's.parquet' has no column 'tokens' (its columns: items); set parquet_column=items
    >>> check_column(pa.schema([("items", pa.list_(pa.string())), ("shown", pa.string())]), "shown", "s.parquet",
    ...              "negatives_column")
    Traceback (most recent call last):
    ...
    nsdist.errors.DataError: Parquet column 'shown' of 's.parquet' is string, not a list of strings or integers; write each session's shown-but-not-clicked items as a list<string> or list<int64> column named by negatives_column (or unset it)
    """
    usable = [f.name for f in schema if _token_lists(f.type)]
    if column in schema.names and _token_lists(schema.field(column).type):
        return
    if column not in schema.names:
        problem = f"Parquet corpus {url!r} has no column {column!r} (its columns: {', '.join(schema.names)})"
    else:
        problem = f"Parquet column {column!r} of {url!r} is {schema.field(column).type}, not a list of strings or integers"
    if key != "parquet_column":
        fix = (f"write each session's shown-but-not-clicked items as a list<string> or list<int64> column named by "
               f"{key} (or unset it)")
    elif usable and usable[0] != column:
        fix = f"set parquet_column={usable[0]}"
    else:
        fix = "write the tokens as a list<string> (or item ids as a list<int64>) column and set parquet_column"
    raise DataError(f"{problem}; {fix}")


# Text is read and tokenized in pieces of about this size: a piece's tokens, offsets and hash
# table take ~15x its size for a moment (8 MiB blocks: 30 MB of transient memory per scan with
# 1 MiB pieces, 22.5 MB with 256 KiB, at the same speed, 41-45 ns per token).
CHUNK_BYTES = 2**18


def tokenize(data: bytes, lowercase: bool = False, chunk_bytes: int = CHUNK_BYTES) -> pa.LargeListArray:
    """Split text into lines and whitespace tokens (the tokens of ``str.split``).

    >>> tokenize(b" a b\\n\\nc  d e \\n").to_pylist()
    [['a', 'b'], [], ['c', 'd', 'e'], []]
    """
    return pa.concat_arrays(list(iter_tokenize(data, lowercase, chunk_bytes)))


def iter_tokenize(data: bytes, lowercase: bool = False, chunk_bytes: int = CHUNK_BYTES):
    """``tokenize`` piece by piece: token lists of consecutive runs of whole lines.

    Memory stays bounded by the piece size whatever the size of ``data``; concatenated, the
    pieces are ``tokenize(data)``.

    >>> [t.to_pylist() for t in iter_tokenize(b"a b\\nc\\nd\\n", chunk_bytes=3)]
    [[['a', 'b']], [['c']], [['d'], []]]
    """
    for piece, final in _pieces(data, chunk_bytes):
        yield _piece_tokens(piece, lowercase, final)


def _piece_tokens(piece: bytes, lowercase: bool, final: bool) -> pa.LargeListArray:
    """Token lists of a piece of whole lines (``final``: its last line has no newline, at the
    end of a block or where a long line goes on in the next piece)."""
    return _ascii_tokens(piece, lowercase, final) if _ascii(piece) else _ascii_tokens(_utf8(piece, lowercase), False, final)


def _pieces(data: bytes, chunk_bytes: int):
    """Cut ``data`` after a newline every ``chunk_bytes`` or so: (piece, is it the last one)."""
    lo = 0
    while True:
        hi = data.rfind(b"\n", lo, lo + chunk_bytes) + 1 if lo + chunk_bytes < len(data) else len(data)
        if hi <= lo:  # a line longer than chunk_bytes: take all of it
            hi = data.find(b"\n", lo + chunk_bytes) + 1 or len(data)
        yield data[lo:hi], hi == len(data)
        if hi == len(data):
            return
        lo = hi


# Whitespace for str.split that is not ASCII whitespace for the ASCII tokenizer: \x1c-\x1f and
# Unicode's (the UTF-8 of U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028-9, U+202F, U+205F, U+3000
# starts with one of these byte pairs).
_OTHER_SPACE = (b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\xc2\x85", b"\xc2\xa0", b"\xe1\x9a", b"\xe2\x80",
                b"\xe2\x81", b"\xe3\x80")
_OTHER_SPACE_RE = r"[\x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"


def _ascii(piece: bytes) -> bool:
    return piece.isascii() and not any(c in piece for c in _OTHER_SPACE[:4])


def _utf8(piece: bytes, lowercase: bool) -> bytes:
    """A UTF-8 piece with invalid bytes replaced, lowercased if asked, and every whitespace
    character of ``str.split`` made a space: the ASCII tokenizer then gives ``str.split``'s tokens
    (multi-byte characters never contain ASCII bytes). Arrow's own ``utf8_split_whitespace`` is
    not used: with multi-byte whitespace it sometimes returns it as a token (pyarrow 26)."""
    text, changed = _string_array(piece), False
    try:
        text.validate(full=True)  # checks UTF-8 without a Python str copy
    except pa.ArrowInvalid:
        # Invalid UTF-8 is replaced rather than rejected: one bad byte in a 100 GB crawl should
        # not fail the job, and the replacement character never survives min_count anyway.
        text, changed = pa.array([piece.decode("utf-8", errors="replace")], type=pa.large_string()), True
    if lowercase:
        text, changed = pc.utf8_lower(text), True
    if any(c in piece for c in _OTHER_SPACE):
        text, changed = pc.replace_substring_regex(text, _OTHER_SPACE_RE, " "), True
    return text[0].as_buffer().to_pybytes() if changed else piece


def _string_array(data: bytes) -> pa.LargeStringArray:
    """A one-element large_string array viewing ``data`` (no copy, UTF-8 not checked)."""
    return pa.LargeStringArray.from_buffers(1, pa.py_buffer(np.array([0, len(data)], np.int64)), pa.py_buffer(data))


_ASCII_SPACE = b" \t\n\v\f\r"  # str.split's whitespace in ASCII text (and Arrow's)
_WORD_BYTE = np.array([c not in _ASCII_SPACE for c in range(256)], np.uint8)


@numba.njit(cache=True, nogil=True)
def _split_ascii(b: np.ndarray, lines: int, word_byte: np.ndarray, lower: bool):
    """One pass over ASCII-splittable bytes: the tokens' bytes back to back, their offsets, and
    the number of tokens on each line (``lines`` of them)."""
    data = np.empty(len(b), np.uint8)
    offsets = np.empty((len(b) + 1) // 2 + 1, np.int64)  # tokens are separated: at most n/2 of them
    per_line = np.zeros(lines, np.int64)
    tokens, pos, line, inside = 0, 0, 0, False
    for i in range(len(b)):
        c = b[i]
        if word_byte[c]:
            if not inside:
                offsets[tokens] = pos
                tokens += 1
                per_line[line] += 1
                inside = True
            if lower and 65 <= c <= 90:  # A-Z, as Arrow's ascii_lower
                c += 32
            data[pos] = c
            pos += 1
        else:
            inside = False
            if c == 10:
                line += 1
    offsets[tokens] = pos
    return data[:pos], offsets[:tokens + 1], per_line


def _ascii_tokens(piece: bytes, lowercase: bool, final: bool) -> pa.LargeListArray:
    """Token lists of a piece of whole lines whose whitespace is ASCII (see ``_utf8``)."""
    data, offsets, per_line = _split_ascii(np.frombuffer(piece, np.uint8), piece.count(b"\n") + final,
                                           _WORD_BYTE, lowercase)
    flat = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    lists = np.zeros(len(per_line) + 1, np.int64)
    np.cumsum(per_line, out=lists[1:])
    return pa.LargeListArray.from_arrays(pa.array(lists), flat)


def drop_null_tokens(tokens: pa.ListArray) -> pa.ListArray:
    """Token lists without null lists or null tokens (a null is no word); unchanged if none."""
    if tokens.null_count:
        tokens = pc.fill_null(tokens, pa.scalar([], tokens.type))
    if not pc.list_flatten(tokens).null_count:
        return tokens
    flat = pc.list_flatten(tokens)
    valid = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(tokens).to_numpy()
    offsets = np.zeros(len(tokens) + 1, np.int64)
    np.cumsum(np.bincount(parents[valid], minlength=len(tokens)), out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pc.filter(flat, pa.array(valid)))


def _lower_lists(tokens: pa.ListArray) -> pa.ListArray:
    offsets = pc.subtract(tokens.offsets, tokens.offsets[0])
    values = pc.utf8_lower(tokens.flatten())
    return pa.LargeListArray.from_arrays(pc.cast(offsets, pa.int64()), values)


def read_tokens(block: Block, storage_options=None, lowercase: bool = False, column: str = "tokens") -> pa.ListArray:
    """Read one block and return one token list per sentence."""
    pieces = list(iter_tokens(block, storage_options, lowercase, column))
    return pieces[0][0] if len(pieces) == 1 else join_pieces(pieces)


def iter_tokens(block: Block, storage_options=None, lowercase: bool = False, column: str = "tokens",
                chunk_bytes: int = CHUNK_BYTES):
    """``read_tokens`` in pieces (text: about ``chunk_bytes`` each): (token lists, open), where
    ``open`` says that the last list goes on in the next piece. A line longer than a piece
    comes in several, cut between words, so no line is ever held whole: one sentence, however
    long, costs a worker its token ids, not a copy of its text (``counts.scan`` joins them)."""
    if not block.parquet:  # streamed: never the whole block (or compressed file) in memory
        seen = 0 if block.offset == 0 else _BINARY_PROBE
        for piece, final in storage.iter_block(block.url, block.offset, block.length, storage_options, chunk_bytes,
                                               max_line=chunk_bytes):
            if seen < _BINARY_PROBE:
                _check_text(piece[:_BINARY_PROBE - seen], block.url, storage_options)
                seen += len(piece)
            open_line = not final and not piece.endswith(b"\n")
            yield _piece_tokens(piece, lowercase, final or open_line), open_line
        return
    url = storage.scrub(block.url, storage_options)
    with storage.open_read(block.url, storage_options) as f:
        pf = parquet_file(f, block.url, storage_options)
        check_column(pf.schema_arrow, column, url)  # planning checked it too, unless the file changed since
        arr = pf.read_row_group(block.offset, columns=[column]).column(0).combine_chunks()
    arr = _string_lists(arr)  # item ids: their decimal strings are the words (word_type says so)
    arr = drop_null_tokens(arr)
    arr = _lower_lists(arr) if lowercase else arr
    yield arr, False


def read_session_block(block: Block, storage_options, column: str, shown_column: str | None = None,
                  order_column: str | None = None) -> tuple[pa.ListArray, pa.ListArray | None]:
    """A Parquet block's sessions: the clicked items (``column``), in the order of
    ``order_column`` (a parallel list of timestamps or positions) when given, and the items each
    showed without a click (``shown_column``; None without it), as lists of strings (integer
    ids: their decimal strings)."""
    url = storage.scrub(block.url, storage_options)
    if not block.parquet:
        raise DataError(f"negatives_column or order_column is set but corpus file {url!r} is text; sessions "
                        "are Parquet files (or unset them)")
    with storage.open_read(block.url, storage_options) as f:
        pf = parquet_file(f, block.url, storage_options)
        for name, key in ((column, "parquet_column"), (shown_column, "negatives_column")):
            if name:
                check_column(pf.schema_arrow, name, url, key)
        if order_column and order_column not in pf.schema_arrow.names:
            raise DataError(f"Parquet corpus {url!r} has no column {order_column!r} (its columns: "
                            f"{', '.join(pf.schema_arrow.names)}); set order_column to its per-click order list")
        names = [column] + [n for n in (shown_column, order_column) if n]
        table = pf.read_row_group(block.offset, columns=names)
    clicked = _string_lists(table.column(column).combine_chunks())
    if order_column:
        clicked = in_order(clicked, table.column(order_column).combine_chunks(), url)
    return clicked, _string_lists(table.column(shown_column).combine_chunks()) if shown_column else None


def in_order(items: pa.ListArray, order: pa.ListArray, url: str = "") -> pa.ListArray:
    """Each session's items sorted by its order list (stable: equal keys keep their places).

    >>> in_order(pa.array([["c", "a", "b"], [], ["x", "y"]]), pa.array([[30, 10, 20], [], [5, 5]])).to_pylist()
    [['a', 'b', 'c'], [], ['x', 'y']]
    """
    items, order = (pc.fill_null(a, pa.scalar([], a.type)) for a in (items, order))
    if not pc.all(pc.equal(pc.list_value_length(items), pc.list_value_length(order))).as_py():
        raise DataError(f"Parquet corpus {url!r}: a session's order list is not as long as its item list; "
                        "give one order key (timestamp or position) per click")
    keys = pc.list_flatten(order)
    if keys.null_count:
        raise DataError(f"Parquet corpus {url!r}: the order column has nulls; give every click its order key")
    perm = np.lexsort((keys.to_numpy(zero_copy_only=False), pc.list_parent_indices(items).to_numpy()))
    values = pc.take(pc.list_flatten(items), pa.array(perm))
    offsets = pc.cast(items.offsets, pa.int64())
    return pa.LargeListArray.from_arrays(offsets, values)


def _string_lists(arr: pa.ListArray) -> pa.ListArray:
    return pc.cast(arr, pa.large_list(pa.large_string())) if _int_lists(arr.type) else arr


# A NUL byte in a file's first 8000 bytes makes it binary, as git and grep decide: text never
# has one. Invalid UTF-8 alone does not (it is replaced; see ``_utf8``).
_BINARY_PROBE = 8000


def _check_text(start: bytes, url: str, storage_options) -> None:
    if b"\0" in start:
        raise DataError(storage.scrub(
            f"corpus file {url!r} is not text: it has a NUL byte in its first {_BINARY_PROBE} bytes (binary "
            "data, or UTF-16 text); convert it to UTF-8 text or remove it from --corpus", storage_options))


def join_pieces(pieces) -> pa.ListArray:
    """One token list per sentence from ``iter_tokens``' pieces (an open piece's last list and
    the next piece's first list are one sentence).

    >>> join_pieces([(pa.array([["a"], ["b"]]), True), (pa.array([["c"], []]), False)]).to_pylist()
    [['a'], ['b', 'c'], []]
    """
    tokens, lengths, carry = [], [], 0
    for piece, open_line in pieces:
        n = pc.list_value_length(piece).to_numpy(zero_copy_only=False).astype(np.int64)
        n[:1] += carry
        carry = n[-1] if open_line else 0
        lengths.append(n[:-1] if open_line else n)
        tokens.append(pc.cast(pc.list_flatten(piece), pa.large_string()))
    offsets = np.zeros(sum(map(len, lengths)) + 1, np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.concat_arrays(tokens))
