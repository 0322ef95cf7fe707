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

import hashlib
import io
import re
import urllib.parse
from typing import Sequence

import numpy as np
import numpy.lib.format as npformat
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__, storage
from .errors import DataError

WORD_ESCAPE = "percent"  # the manifest's name for escape_word's scheme


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


def _word2vec_text(words: Sequence[str], vectors: np.ndarray):
    def fill(w):
        w.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for start in range(0, len(words), 512):  # 512 rows: a few MB of Python floats and text
            block = vectors[start:start + 512]
            # repr-precision floats ('%.9g') round-trip float32 exactly.
            text = "\n".join(
                word + " " + " ".join(f"{x:.9g}" for x in row)
                for word, row in zip(words[start:start + 512], block.tolist())
            )
            w.write((text + "\n").encode())
    return fill


def _word2vec_binary(words: Sequence[str], vectors: np.ndarray):
    def fill(w):
        w.write(f"{len(words)} {vectors.shape[1]}\n".encode())
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
    rows = max(1, 2**20 // max(array[:1].nbytes, 1))
    for start in range(0, len(array), rows):
        f.write(memoryview(np.ascontiguousarray(array[start:start + rows])).cast("B"))


def _npy(array: np.ndarray):
    return lambda w: write_npy(w, array)


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


def _vocab_tsv(words: Sequence[str], counts: np.ndarray):
    def fill(w):
        for start in range(0, len(words), 65536):
            chunk = zip(words[start:start + 65536], counts[start:start + 65536].tolist())
            w.write("".join(f"{word}\t{c}\n" for word, c in chunk).encode())
    return fill


def write_run_files(url: str, words: pa.Array, counts: np.ndarray, win: np.ndarray, wout: np.ndarray,
                    storage_options=None, word_type: str = "string") -> dict:
    """Write every data file of a run (runs on a worker); return {name: {size, sha256}}.
    ``word_type`` "int64": the words are item ids, and vectors.parquet holds them as int64 (the
    text formats hold their decimal strings, as they came in)."""
    written = [escape_word(w) for w in words.to_pylist()]  # the words themselves where unchanged
    writers = {
        "vectors.txt": _word2vec_text(written, win),
        "vectors.bin": _word2vec_binary(written, win),
        "vectors.npy": _npy(win),
        "context.npy": _npy(wout),
        "vectors.parquet": _parquet(words, counts, win, ids=word_type == "int64"),
        "vocab.tsv": _vocab_tsv(written, counts),
    }
    return {name: _write(storage.join(url, name), storage_options, fill) for name, fill in writers.items()}


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


def check_format(doc, fmt: str, version: int, url: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(
            f"{url!r} is not an {fmt} file (its format is {found!r}); point nsdist at an output URL "
            "(<out>, which has LATEST) or a run URL (<out>/runs/<run_id>) written by nsdist"
        )
    if doc.get("version") != version:
        writer = (doc.get("versions") or {}).get("nsdist") if isinstance(doc.get("versions"), dict) else None
        by = f" (written by nsdist {writer})" if writer else ""
        raise DataError(
            f"{url!r} has {fmt} version {doc.get('version')!r}{by}, but nsdist {__version__} reads version "
            f"{version}; upgrade nsdist to read it"
            + (" or use the nsdist release that wrote it" if isinstance(doc.get("version"), int)
               and doc["version"] < version else "")
        )


def read_npy(url: str, storage_options=None, sha256: str | None = None) -> np.ndarray:
    """Read a 2-d float ``.npy`` straight into one array: no pickles, no intermediate copy.

    ``np.load`` on a non-file stream reads into an array too, but through s3fs's 50 MiB
    read-ahead blocks; parsing the header ourselves lets us allocate the array once and
    stream the payload into it in bounded chunks (local files: directly, no temporary).
    ``sha256``: the file's checksum in its manifest, checked on the bytes as read (a file altered
    in place keeps its size, which is all a reader checks otherwise).
    """
    with storage.open_read(url, storage_options, cache_type="none") as f:
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
