"""The files of a run, written and read: word2vec text and binary, ``.npy``, Parquet, the
vocabulary, the top-k table's parts; each written through a hashing writer that returns its
size and sha256 for the manifest. Which files a run holds, and how a run is claimed and
published, is ``runs.py``.

Words are data (Parquet tokens may be item ids or phrases with spaces): vectors.parquet holds
them as they are; vectors.txt, vectors.bin and vocab.tsv, which split on whitespace, hold them
escaped (``escape_word``), as the manifest's ``word_escape`` says. Nothing read here is ever
unpickled, and every JSON format carries ``format`` and ``version``, checked on load
(``check_format``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np
import numpy.lib.format as npformat
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__, floattext, storage
from .errors import DataError
from .plan import row_blocks
from .vocab import Vocab

WORD_ESCAPE = "percent"  # the manifest's name for escape_word's scheme
TEXT_ROWS = 1024  # vectors.txt is formatted this many rows at a time: 2 MB of text at dim 128


class _HashingWriter(io.RawIOBase):
    """File-like wrapper that counts and hashes what passes through to the real writer."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        self.f.write(b)
        return len(b)


def _write(url: str, storage_options, fill) -> dict:
    """Stream an object through ``fill(writer)``; return its size and checksum."""
    with storage.open_write(url, storage_options) as f:
        w = _HashingWriter(f)
        fill(w)
    return {"size": w.size, "sha256": w.sha.hexdigest()}


_NEEDS_ESCAPE = re.compile(r"\s|\A%")
_ESCAPED_CHAR = re.compile(r"[%\s]")


def escape_word(word: str) -> str:
    """A word as vectors.txt, vectors.bin and vocab.tsv write it. Those formats split on
    whitespace, which Parquet tokens may hold: a word with whitespace, or one that starts with
    '%', is written with its first character, every '%' and every whitespace character
    percent-encoded (their UTF-8 bytes), so a written word is escaped exactly when it starts
    with '%'. Every other word (every word of a text corpus, whose tokenizer splits on
    whitespace) is written as it is.

    >>> escape_word("new york"), escape_word("a\\tb"), escape_word("%d"), escape_word("50%")
    ('%6Eew%20york', '%61%09b', '%25d', '50%')
    """
    if not _NEEDS_ESCAPE.search(word):
        return word
    return _percent(word[0]) + _ESCAPED_CHAR.sub(lambda m: _percent(m.group()), word[1:])


def _percent(chars: str) -> str:
    return "".join(f"%{b:02X}" for b in chars.encode())


def unescape_word(written: str) -> str:
    """The word that ``escape_word`` wrote.

    >>> [unescape_word(escape_word(w)) for w in ["new york", "%d", "50%", "a%20b", " ", "\\u00a0"]]
    ['new york', '%d', '50%', 'a%20b', ' ', '\\xa0']
    """
    return urllib.parse.unquote(written) if written.startswith("%") else written


def vocab_lines(data: bytes, escape: str | None, url: str = "", first: int = 1) -> tuple[pa.Array, np.ndarray]:
    """The words (unescaped as the manifest's ``word_escape`` says; None: as written) and counts
    of whole vocab.tsv lines (``data``, ``first``: the number of its first line, for errors). A
    word may hold a tab where runs wrote words as they are: the count follows the last one.

    >>> words, counts = vocab_lines(b"the\\t9\\n%61%09b\\t2\\n50%\\t1\\n", WORD_ESCAPE)
    >>> words.to_pylist(), counts.tolist()
    (['the', 'a\\tb', '50%'], [9, 2, 1])
    """
    try:
        text = pa.array([data], pa.large_binary()).cast(pa.large_string())
    except pa.ArrowInvalid:
        raise DataError(f"{url!r} is not UTF-8 text: the run is corrupt; publish it again (or load another run)") from None
    lines = pc.split_pattern(text, "\n").flatten()
    if len(lines) and not lines[len(lines) - 1].as_py():  # the newline that ends the last line
        lines = lines.slice(0, len(lines) - 1)
    fields = pc.extract_regex(lines, r"^(?P<word>.*)\t(?P<count>[0-9]+)$")
    if fields.null_count:
        n = int(np.flatnonzero(pc.is_null(fields).to_numpy(zero_copy_only=False))[0])
        count = lines[n].as_py().rpartition("\t")[2]
        raise DataError(f"{url!r} line {first + n}: count {count[:40]!r} is not a whole number: the run is corrupt; "
                        "publish it again (or load another run)")
    words = fields.field("word")
    if escape is not None:  # only a word that starts with '%' was escaped
        escaped = pc.starts_with(words, "%")
        if pc.any(escaped).as_py():
            at = pa.array(np.flatnonzero(escaped.to_numpy(zero_copy_only=False)))
            plain = pa.array([unescape_word(w) for w in words.take(at).to_pylist()], pa.large_string())
            words = pc.replace_with_mask(words, escaped, plain)
    return words, pc.cast(fields.field("count"), pa.int64()).to_numpy()


def _word2vec_text(words: Sequence[str], vectors: np.ndarray, header: str | None):
    # repr-precision floats ('%.9g') round-trip float32 exactly; floattext writes them as printf
    # does, compiled (Python's own formatting, a float at a time, was about 4x slower in all). The few rows
    # it leaves (a number at a rounding tie) are formatted here, one format per row.
    row_format = " ".join(["%.9g"] * vectors.shape[1])

    def fill(w):
        if header:
            w.write(header.encode())
        buffer = np.empty(TEXT_ROWS * vectors.shape[1] * floattext.WIDTH, np.uint8)
        for start in range(0, len(words), TEXT_ROWS):
            block = vectors[start:start + TEXT_ROWS]
            text, ends, redo = floattext.text_rows(block, buffer)
            numbers = memoryview(text)
            lines = [b"".join((word.encode(), b" ", numbers[begin:end], b"\n"))
                     for word, begin, end in zip(words[start:start + TEXT_ROWS], [0, *ends[:-1].tolist()],
                                                 ends.tolist())]
            for i in redo.tolist():
                lines[i] = f"{words[start + i]} {row_format % tuple(block[i].tolist())}\n".encode()
            w.write(b"".join(lines))
    return fill


def _word2vec_binary(words: Sequence[str], vectors: np.ndarray, header: str | None):
    def fill(w):
        if header:
            w.write(header.encode())
        le = vectors.astype("<f4", copy=False)
        for start in range(0, len(words), 4096):
            buf = io.BytesIO()
            for word, row in zip(words[start:start + 4096], le[start:start + 4096]):
                buf.write(word.encode() + b" ")
                buf.write(row.tobytes())
                buf.write(b"\n")
            w.write(buf.getvalue())
    return fill


def write_npy(f, array: np.ndarray) -> None:
    """np.save's bytes (no pickles), written in slices of rows: np.save copies up to 16 MiB at a
    time into a bytes object when ``f`` is not a real file (s3fs, a hashing writer)."""
    npformat.write_array_header_1_0(f, npformat.header_data_from_array_1_0(array))
    _npy_rows(array)(f)


def _npy_rows(array: np.ndarray, header: dict | None = None):
    """The bytes of rows of a float32 ``.npy`` (little-endian), after its header when given."""
    def fill(f):
        if header:
            npformat.write_array_header_1_0(f, header)
        rows = max(1, 2**20 // max(array[:1].nbytes, 1))
        for start in range(0, len(array), rows):
            f.write(memoryview(np.ascontiguousarray(array[start:start + rows])).cast("B"))
    return fill


def npy_header(rows: int, dim: int) -> dict:
    """The header of a (rows, dim) float32 ``.npy`` in C order, as ``np.save`` writes it.

    >>> npy_header(3, 2)
    {'descr': '<f4', 'fortran_order': False, 'shape': (3, 2)}
    """
    return {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}


def _parquet(words: pa.Array, counts: np.ndarray, vectors: np.ndarray, rows: int | None = None, ids: bool = False):
    """One row group per ``rows`` words (default: about 1 MiB of vectors), each built from
    slices: the writer holds one row group, not a table of the whole model (that cost 2x the
    vectors' size in Arrow buffers; row groups of 8192 words at dim 100, 18 MB)."""
    dim = vectors.shape[1]
    rows = rows or max(64, 2**20 // (4 * max(dim, 1)))
    word = pa.int64() if ids else pa.string()
    schema = pa.schema([("word", word), ("count", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])

    def fill(w):
        with pq.ParquetWriter(w, schema, compression="zstd", use_dictionary=[] if ids else ["word"]) as writer:
            for start in range(0, max(len(words), 1), rows):
                flat = pa.array(np.ascontiguousarray(vectors[start:start + rows], dtype=np.float32).reshape(-1))
                writer.write_table(pa.table([
                    words[start:start + rows].cast(word),
                    pa.array(counts[start:start + rows], pa.int64()),
                    pa.FixedSizeListArray.from_arrays(flat, dim),
                ], schema=schema))
    return fill


def _vocab_tsv(parts):
    """The lines of vocab.tsv from the vocabulary's consecutive ``parts`` (each with ``words``
    and ``counts``), 65,536 words at a time: only those become Python strings (a vocabulary of
    10M words as one list would take about 650 MB)."""
    def fill(w):
        for part in parts:
            words, counts = part.words, part.counts
            for start in range(0, len(words), 65536):
                chunk = zip(words[start:start + 65536].to_pylist(), counts[start:start + 65536].tolist())
                w.write("".join(f"{escape_word(word)}\t{c}\n" for word, c in chunk).encode())
    return fill


# ---------------------------------------------------------------- a run's files by row blocks
# The vectors are written by row blocks, each by a worker from the rows of its block, so that
# when the model is partitioned the owner of a block writes it. vectors.parquet is a Parquet
# dataset of one part per block (rows in vocabulary order across parts). vectors.npy,
# context.npy, vectors.txt and vectors.bin stay one file each, which np.load, np.memmap and
# gensim read: each block writes its rows as a part of the file (storage.write_part: on S3 the
# parts of one multipart upload, S3 having no ranged writes), and one task per file assembles
# it and hashes it for the manifest. The word2vec formats, which their readers load whole, are
# written up to ``word2vec_max_bytes`` of input vectors (the manifest's ``outputs`` says whether).

VECTORS_PARTS = "vectors.parquet"  # a Parquet dataset: one part per row block
ASSEMBLED = ("vectors.npy", "context.npy", "vectors.txt", "vectors.bin")  # one file each, written by blocks
WORD2VEC = ("vectors.txt", "vectors.bin")
# Input vectors per block at most (with one block per worker or more): a writer holds its block's
# rows of both matrices, their words and a piece of their text, about 3x this, whatever the
# model's size.
BLOCK_MAX_BYTES = 16 * 2**20
# On S3, input vectors per block at least: every part of a multipart upload but the last holds at
# least storage.S3_MIN_PART (5 MiB), and a block's text takes at least half its vectors' bytes;
# and at most S3_BLOCKS blocks, each then owning 64 of the upload's 10,000 part numbers.
S3_BLOCK_MIN_BYTES = 16 * 2**20
S3_BLOCKS = storage.S3_MAX_PARTS // 64


def output_blocks(rows: int, dim: int, workers: int, s3: bool = False) -> list[tuple[int, int]]:
    """Rows [lo, hi) of each row block the outputs are written by: a multiple of ``workers``
    blocks (equal shares), at most BLOCK_MAX_BYTES of input vectors each; on S3 (``s3``) at least
    S3_BLOCK_MIN_BYTES each (a small model is one block there) and at most S3_BLOCKS blocks.

    >>> output_blocks(10, 2, 4), len(output_blocks(600_000, 100, 4)), len(output_blocks(600_000, 100, 3))
    ([(0, 2), (2, 5), (5, 7), (7, 10)], 16, 15)
    >>> output_blocks(1000, 100, 4, s3=True), len(output_blocks(600_000, 100, 4, s3=True))
    ([(0, 1000)], 14)
    """
    nbytes = rows * dim * 4
    n = max(workers, math.ceil(nbytes / BLOCK_MAX_BYTES))
    n = math.ceil(n / max(workers, 1)) * max(workers, 1)
    if s3:
        n = min(n, nbytes // S3_BLOCK_MIN_BYTES, S3_BLOCKS)
    return row_blocks(rows, max(1, min(n, rows)))


def vectors_part(block: int) -> str:
    """The name of a part of vectors.parquet in a run (the manifest's key for it).

    >>> vectors_part(2)
    'vectors.parquet/part-00002.parquet'
    """
    return f"{VECTORS_PARTS}/part-{block:05d}.parquet"


@dataclass(frozen=True)
class OutputPlan:
    """How a run's vectors are written: the row blocks, whether the word2vec formats are, and
    (once ``start_outputs`` opened them) the token of each file written in parts."""

    url: str
    rows: int
    dim: int
    blocks: tuple
    word2vec: bool
    word_type: str = "string"
    tokens: Mapping[str, str] = field(default_factory=dict)

    @property
    def assembled(self) -> tuple[str, ...]:
        """The files written in parts, one per block."""
        return tuple(n for n in ASSEMBLED if self.word2vec or n not in WORD2VEC)

    @property
    def record(self) -> dict:
        """The manifest's ``outputs``: how the run's vectors were written."""
        return {"blocks": [list(b) for b in self.blocks], "word2vec": self.word2vec,
                "vectors_parquet": "parts"}


def plan_outputs(url: str, rows: int, dim: int, workers: int, word2vec_max_bytes: int,
                 word_type: str = "string") -> OutputPlan:
    """The plan of a run's outputs: blocks for ``workers`` writers; the word2vec formats when the
    input vectors (rows x dim x 4 bytes) are at most ``word2vec_max_bytes``."""
    blocks = output_blocks(rows, dim, workers, s3=storage.multipart(url))
    return OutputPlan(url, rows, dim, tuple(blocks), rows * dim * 4 <= word2vec_max_bytes, word_type)


def start_outputs(plan: OutputPlan, storage_options=None) -> OutputPlan:
    """Open the files written in parts; the plan with their tokens."""
    tokens = {}
    try:
        for name in plan.assembled:
            tokens[name] = storage.start_parts(storage.join(plan.url, name), storage_options)
    except BaseException:
        abort_outputs(replace(plan, tokens=tokens), storage_options)
        raise
    return replace(plan, tokens=tokens)


def write_block(plan: OutputPlan, block: int, words: pa.Array, counts: np.ndarray, win: np.ndarray,
                wout: np.ndarray, storage_options=None) -> dict:
    """Write rows [lo, hi) of block ``block`` given those rows (``words``, ``counts``, ``win``,
    ``wout``: rows lo..hi only): its part of vectors.parquet, and its part of every file written
    in parts. Returns {"files": {part name: {size, sha256}}, "parts": {file: its part's record}}."""
    lo, hi = plan.blocks[block]
    assert len(words) == len(counts) == len(win) == len(wout) == hi - lo, "a block's rows"
    written = [escape_word(w) for w in words.to_pylist()] if plan.word2vec else []
    header = f"{plan.rows} {plan.dim}\n" if lo == 0 else None
    npy = npy_header(plan.rows, plan.dim) if lo == 0 else None
    fills = {"vectors.npy": _npy_rows(win.astype("<f4", copy=False), npy),
             "context.npy": _npy_rows(wout.astype("<f4", copy=False), npy),
             "vectors.txt": _word2vec_text(written, win, header), "vectors.bin": _word2vec_binary(written, win, header)}
    slots = storage.S3_MAX_PARTS // len(plan.blocks)
    parts = {name: storage.write_part(storage.join(plan.url, name), plan.tokens[name], block, slots, fills[name],
                                      storage_options) for name in plan.assembled}
    name = vectors_part(block)
    fill = _parquet(words, counts, win, ids=plan.word_type == "int64")
    return {"files": {name: _write(storage.join(plan.url, name), storage_options, fill)}, "parts": parts}


# Bytes per number of each file assembled from blocks, to share the assembly out evenly (a
# vectors.txt number is about 12 characters with its space: floattext's %.9g).
_BYTES_PER_NUMBER = {"vectors.npy": 4, "context.npy": 4, "vectors.bin": 4, "vectors.txt": 12}


def assembly_groups(names: tuple[str, ...], workers: int) -> list[tuple[str, ...]]:
    """The files assembled from blocks, shared out over at most ``workers`` tasks by their
    expected size, largest first to the least loaded (a task assembles its files one after the
    other: with two workers, vectors.txt alone takes as long as the other three).

    >>> assembly_groups(ASSEMBLED, 2)
    [('vectors.txt',), ('vectors.npy', 'context.npy', 'vectors.bin')]
    >>> len(assembly_groups(ASSEMBLED, 1)[0]), len(assembly_groups(ASSEMBLED, 8))
    (4, 4)
    """
    groups: list[list[str]] = [[] for _ in range(max(1, min(workers, len(names))))]
    load = [0] * len(groups)
    for name in sorted(names, key=lambda n: -_BYTES_PER_NUMBER[n]):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += _BYTES_PER_NUMBER[name]
    return [tuple(g) for g in groups if g]


def complete_output(plan: OutputPlan, name: str, records: list[dict], storage_options=None) -> dict:
    """Assemble file ``name`` from its blocks' parts; {name: {size, sha256}} for the manifest."""
    return {name: storage.complete_parts(storage.join(plan.url, name), plan.tokens[name], records, storage_options)}


def abort_outputs(plan: OutputPlan, storage_options=None) -> None:
    """Give up the files written in parts (their parts are deleted; on S3 the uploads aborted)."""
    for name, token in plan.tokens.items():
        with contextlib.suppress(Exception):  # the job is failing already: its error is the one to report
            storage.abort_parts(storage.join(plan.url, name), token, storage_options)


def write_vocab(url: str, parts, storage_options=None) -> dict:
    """vocab.tsv (word<TAB>count in id order, words escaped) from the vocabulary's consecutive
    ``parts`` (an iterable of Vocab: read one at a time); {vocab.tsv: {size, sha256}}."""
    return {"vocab.tsv": _write(storage.join(url, "vocab.tsv"), storage_options, _vocab_tsv(parts))}


def write_run_files(url: str, words: pa.Array, counts: np.ndarray, win: np.ndarray, wout: np.ndarray,
                    storage_options=None, word_type: str = "string", word2vec_max_bytes: int = 2**31,
                    workers: int = 1) -> dict:
    """Write every data file of a run from one process, block after block (the job writes the
    same bytes from its workers); return {name: {size, sha256}}."""
    plan = start_outputs(plan_outputs(url, len(words), win.shape[1], workers, word2vec_max_bytes, word_type),
                         storage_options)
    try:
        blocks = [write_block(plan, b, words[lo:hi], counts[lo:hi], win[lo:hi], wout[lo:hi], storage_options)
                  for b, (lo, hi) in enumerate(plan.blocks)]
        files = {k: v for blk in blocks for k, v in blk["files"].items()}
        for name in plan.assembled:
            files.update(complete_output(plan, name, [blk["parts"][name] for blk in blocks], storage_options))
    except BaseException:
        abort_outputs(plan, storage_options)
        raise
    return {**files, **write_vocab(url, [Vocab(words, counts)], storage_options)}


NEIGHBORS = "neighbors"  # the top-k table's folder in a run: a Parquet dataset of its parts
NEIGHBORS_SCHEMA = pa.schema([("item", pa.string()), ("neighbor", pa.string()), ("score", pa.float32()),
                              ("rank", pa.int16())])


def neighbors_part(part: int) -> str:
    """The name of a part of the top-k table in a run (the manifest's key for it).

    >>> neighbors_part(3)
    'neighbors/part-00003.parquet'
    """
    return f"{NEIGHBORS}/part-{part:05d}.parquet"


def neighbors_table(words: pa.Array, lo: int, idx: np.ndarray, scores: np.ndarray, word_type: str = "string"
                    ) -> pa.Table:
    """Rows of the top-k table for words lo.. of ``words``: each word's neighbours ``idx`` (rows
    of ``words``) with their ``scores``, best first, one row per (item, neighbour); item ids
    (``word_type`` "int64") as int64, as vectors.parquet gives them.

    >>> t = neighbors_table(pa.array(["a", "b", "c"]), 1, np.array([[0, 2], [1, 0]]), np.ones((2, 2), np.float32))
    >>> t.column("item").to_pylist(), t.column("neighbor").to_pylist(), t.column("rank").to_pylist()
    (['b', 'b', 'c', 'c'], ['a', 'c', 'b', 'a'], [1, 2, 1, 2])
    """
    rows, k = idx.shape
    ids = word_type == "int64"
    keys = words.cast(pa.int64() if ids else pa.string())
    schema = NEIGHBORS_SCHEMA
    if ids:
        schema = schema.set(0, pa.field("item", pa.int64())).set(1, pa.field("neighbor", pa.int64()))
    return pa.table([
        pc.take(keys, pa.array(np.repeat(np.arange(lo, lo + rows), k))),
        pc.take(keys, pa.array(idx.reshape(-1))),
        pa.array(scores.reshape(-1), pa.float32()),
        pa.array(np.tile(np.arange(1, k + 1, dtype=np.int16), rows)),
    ], schema=schema)


def write_neighbors(url: str, table: pa.Table, storage_options=None) -> dict:
    """Write one part of the top-k table (runs on a worker); return its {size, sha256}."""
    # Row groups of 2**20 rows: large enough for Spark and DuckDB to scan well, a few MB each.
    return _write(url, storage_options, lambda w: pq.write_table(table, w, compression="zstd", row_group_size=2**20))


def write_file(url: str, data: bytes, storage_options=None) -> dict:
    """Write one small file of a run (the report); return its {size, sha256} for the manifest."""
    return _write(url, storage_options, lambda w: w.write(data))


def check_format(doc, fmt: str, version, url: str) -> None:
    """DataError unless ``doc`` is a ``fmt`` document of ``version`` (an int, or the tuple of the
    versions this nsdist reads)."""
    versions = (version,) if isinstance(version, int) else tuple(version)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(
            f"{url!r} is not an {fmt} file (its format is {found!r}); point nsdist at an output URL "
            "(<out>, which has LATEST) or a run URL (<out>/runs/<run_id>) written by nsdist"
        )
    if doc.get("version") not in versions:
        writer = (doc.get("versions") or {}).get("nsdist") if isinstance(doc.get("versions"), dict) else None
        by = f" (written by nsdist {writer})" if writer else ""
        reads = f"version {versions[0]}" if len(versions) == 1 else f"versions {', '.join(map(str, versions))}"
        raise DataError(
            f"{url!r} has {fmt} version {doc.get('version')!r}{by}, but nsdist {__version__} reads {reads}; "
            "upgrade nsdist to read it"
            + (" or use the nsdist release that wrote it" if isinstance(doc.get("version"), int)
               and doc["version"] < min(versions) else "")
        )


def _npy_header(f, url: str) -> tuple[tuple, bool, np.dtype]:
    """The (shape, fortran, dtype) of the ``.npy`` ``f`` reads, checked: a 2-d float array and no
    Python objects (nsdist never unpickles); ``f`` is left at the first data byte."""
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as e:
        raise DataError(f"{url!r} is not a readable .npy file ({e}): the run is corrupt") from None
    if dtype.hasobject:
        # Object arrays are pickles; unpickling a file from shared storage runs its code.
        raise DataError(f"{url!r} holds Python objects (dtype {dtype}); nsdist never unpickles data: "
                        "the file was not written by nsdist or is corrupt")
    if dtype.kind != "f" or len(shape) != 2:
        raise DataError(f"{url!r} holds {dtype} {shape}, expected a 2-d float32 array: the run is corrupt")
    return shape, fortran, dtype


def read_npy(url: str, storage_options=None, sha256: str | None = None) -> np.ndarray:
    """Read a 2-d float ``.npy`` straight into one array: no pickles, no intermediate copy.

    ``np.load`` on a non-file stream reads into an array too, but through s3fs's 50 MiB
    read-ahead blocks; parsing the header ourselves lets us allocate the array once and
    stream the payload into it in bounded chunks (local files: directly, no temporary).
    ``sha256``: the file's checksum in its manifest, checked on the bytes as read (a file altered
    in place keeps its size, which is all a reader checks otherwise).
    """
    with storage.open_read(url, storage_options, cache_type="none") as f:
        shape, fortran, dtype = _npy_header(f, url)
        array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        target = array.T if fortran else array  # C-contiguous view over the same bytes
        header = f.tell()
        got = storage.readinto_exact(f, target)
        if sha256 is not None:
            f.seek(0)
            digest = hashlib.sha256(f.read(header))
            digest.update(memoryview(target).cast("B"))  # the payload as read, before any byte swap
            if digest.hexdigest() != sha256:
                raise DataError(f"{url!r} does not match its sha256 in the manifest: the run is corrupt")
    if got != array.nbytes:
        raise DataError(f"{url!r} ends after {got} of {array.nbytes} data bytes: the file is truncated")
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array if dtype == np.float32 else array.astype(np.float32)


def map_npy(url: str, storage_options=None, sha256: str | None = None) -> np.ndarray | None:
    """A local float32 ``.npy`` memory-mapped read-only (the operating system pages rows in and
    out: a model larger than memory loads), after its ``sha256`` is checked by streaming the file
    (a pass through the page cache, in bounded chunks); None where a map cannot stand in for
    ``read_npy`` (not a local file, or not little-endian float32 in C order)."""
    path = storage.local_path(url, storage_options)
    if path is None:
        return None
    with storage.open_read(url, storage_options) as f:
        shape, fortran, dtype = _npy_header(f, url)
        offset = f.tell()
    if fortran or dtype != np.dtype("<f4"):
        return None
    if storage.size(url, storage_options) != offset + shape[0] * shape[1] * 4:
        raise DataError(f"{url!r} does not hold the {shape[0]} x {shape[1]} float32 values its header says: "
                        "the file is truncated")
    if sha256 is not None and storage.sha256(url, storage_options) != sha256:
        raise DataError(f"{url!r} does not match its sha256 in the manifest: the run is corrupt")
    return np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=tuple(shape))


RUN_BYTES = 8 * 2**20  # read_npy_rows reads at most this much at once


def row_runs(rows: np.ndarray, gap: int, most: int | None = None) -> list[tuple[int, int]]:
    """Sorted distinct ``rows`` as runs [lo, hi) to read, a run spanning gaps of at most ``gap``
    rows (one read of a few unwanted rows beats another request), and of at most ``most`` rows.

    >>> row_runs(np.array([0, 1, 2, 5, 9, 10]), 2), row_runs(np.array([0, 1, 2, 5, 9, 10]), 2, 4)
    ([(0, 6), (9, 11)], [(0, 4), (4, 6), (9, 11)])
    """
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) > gap + 1) + 1
    runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks)]
    return runs if most is None else [(a, min(a + most, hi)) for lo, hi in runs for a in range(lo, hi, most)]


def read_npy_rows(url: str, rows: np.ndarray, storage_options=None, expect_rows: int | None = None,
                  gap_bytes: int = 2**16, into: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rows ``rows`` (any order, repeats allowed) of a 2-d float ``.npy`` of ``expect_rows`` rows,
    as float32, read by byte ranges: nothing else of the file is read beyond its header and gaps
    of at most ``gap_bytes`` between wanted rows. No checksum here: the manifest's covers the
    whole file. ``into``: (target, at), to write row ``rows[i]`` into ``target[at[i]]`` as each
    run arrives and return ``target``, so that no other array of the rows is made (a warm start
    reads most of a model's rows so).

    >>> import tempfile
    >>> url = tempfile.mkdtemp() + "/m.npy"; np.save(url, np.arange(8, dtype=np.float32).reshape(4, 2))
    >>> read_npy_rows(url, np.array([3, 0, 3])).tolist()
    [[6.0, 7.0], [0.0, 1.0], [6.0, 7.0]]
    >>> read_npy_rows(url, np.array([2, 1]), into=(np.zeros((3, 2), np.float32), np.array([0, 2]))).tolist()
    [[4.0, 5.0], [0.0, 0.0], [2.0, 3.0]]
    """
    with storage.open_read(url, storage_options, cache_type="none") as f:
        shape, fortran, dtype = _npy_header(f, url)
        offset = f.tell()
    if expect_rows is not None and shape[0] != expect_rows:
        raise DataError(f"{url!r} has {shape[0]} rows for {expect_rows} words: the run is corrupt")
    if fortran:
        raise DataError(f"{url!r} is in Fortran order: rows cannot be read alone; load it whole")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
        raise DataError(f"{url!r} has {shape[0]} rows; asked for rows up to {int(rows.max())}: the run is corrupt")
    target, at = into if into is not None else (np.empty((len(rows), shape[1]), np.float32), None)
    if target.shape[1:] != tuple(shape[1:]):
        raise DataError(f"{url!r} has rows of {shape[1]} values, not {target.shape[1]}: the run is corrupt")
    order = np.argsort(rows, kind="stable")  # the rows in file order, and where each goes
    rows, at = rows[order], (order if at is None else np.asarray(at)[order])
    row_bytes = shape[1] * dtype.itemsize
    runs = row_runs(np.unique(rows), max(0, gap_bytes // max(row_bytes, 1)), max(1, RUN_BYTES // max(row_bytes, 1)))

    def take(i: int, data: bytes) -> None:  # a run's wanted rows, written out as it arrives
        lo, hi = runs[i]
        if len(data) == (hi - lo) * row_bytes:
            a, b = np.searchsorted(rows, (lo, hi))
            target[at[a:b]] = np.frombuffer(data, dtype).reshape(hi - lo, shape[1])[rows[a:b] - lo]

    spans = [(offset + lo * row_bytes, (hi - lo) * row_bytes) for lo, hi in runs]
    if storage.read_ranges(url, spans, take, storage_options) != sum(n for _, n in spans):
        raise DataError(f"{url!r} ends before its last rows: the file is truncated")
    return target


def read_whole(url: str, size: int, storage_options=None) -> pa.Buffer:
    """A whole file (``size`` bytes, as its manifest says) in a buffer that Arrow allocated, for
    Arrow's readers (``pq.read_table(pa.BufferReader(buffer))``) in place of a Python file.

    ``pq.read_table`` finishes its scan on Arrow's pool threads, and one of them may drop the
    scan's last reference to its source after the call has returned. Dropping a Python file (an
    fsspec one) takes the GIL; when the interpreter has begun to exit by then, CPython ends that
    thread inside a C++ destructor and the process aborts ("terminate called without an active
    exception", exit 134) after doing its work. Memory Arrow allocated holds no Python object:
    nothing there needs the GIL. The cost is the file's encoded bytes in memory while it is read.
    """
    data = pa.allocate_buffer(size)
    with storage.open_read(url, storage_options, cache_type="none") as f:
        got = storage.readinto_exact(f, data)
    if got != size:
        raise DataError(f"{url!r} ends after {got} of {size} bytes: the file is truncated")
    return data
