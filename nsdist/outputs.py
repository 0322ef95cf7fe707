"""Published outputs: writers, the manifest, the LATEST pointer, and ``load``.

Layout of an output URL ``<out>``::

    <out>/LATEST                      {"format": "nsdist-latest", "version": 1, "run": "<run_id>"}
    <out>/runs/<run_id>/_claim.json   written first, exclusively: two jobs never share a run id
    <out>/runs/<run_id>/vectors.txt   word2vec text format (gensim: load_word2vec_format)
    <out>/runs/<run_id>/vectors.bin   word2vec binary format (binary=True)
    <out>/runs/<run_id>/vectors.npy   float32 (V, dim) input vectors, row i = vocab word i
    <out>/runs/<run_id>/context.npy   float32 (V, dim) output (context) vectors, for warm starts
    <out>/runs/<run_id>/vectors.parquet  word: string, count: int64, vector: fixed_size_list<float>
    <out>/runs/<run_id>/vocab.tsv     word<TAB>count, in id order
    <out>/runs/<run_id>/neighbors/part-NNNNN.parquet  with ``topk`` > 0: the top-k table, one part
                                      per row block (item, neighbor: string, score: float32,
                                      rank: int16 from 1), in item (row) order
    <out>/runs/<run_id>/report.html   a page of plots and tables (report.py), no script
    <out>/runs/<run_id>/manifest.json written last: files with sizes and sha256, config, metrics

Words are data (Parquet tokens may be item ids or phrases with spaces): vectors.parquet holds
them as they are; vectors.txt, vectors.bin and vocab.tsv, which split on whitespace, hold them
escaped (``escape_word``), as the manifest's ``word_escape`` says.

Readers follow LATEST -> manifest and never list a prefix (S3 listings are not a commit
point). Every JSON format carries ``format`` and ``version``, checked on load. Nothing read
here is ever unpickled.

Concurrency: run ids are claimed with an exclusive create, manifests are created
exclusively, and LATEST is a single small object replaced whole, so two jobs publishing to
the same ``<out>`` leave both runs intact and LATEST naming one of them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import re
import secrets
import socket
import urllib.parse
from typing import Sequence

import numpy as np
import numpy.lib.format as npformat
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__, storage
from .embeddings import Embeddings  # re-exported: nsdist.outputs.Embeddings
from .errors import ConfigError, DataError

MANIFEST_FORMAT, MANIFEST_VERSION = "nsdist-manifest", 1
LATEST_FORMAT, LATEST_VERSION = "nsdist-latest", 1
WORD_ESCAPE = "percent"  # the manifest's name for escape_word's scheme

_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def new_run_id() -> str:
    """'20261123T235959Z-3f9a1c': sortable by start time, unique across concurrent jobs."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def run_url(out: str, run_id: str) -> str:
    return storage.join(out, "runs", run_id)


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


def claim_run(out: str, run_id: str, storage_options=None, **info) -> None:
    """Claim ``run_id`` under ``out`` exclusively (FileExistsError if another job holds it).

    The claim names the run, host and pid, so a retried create recognises its own write.
    """
    check_run_id(run_id)
    claim = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), **info}
    storage.create_exclusive(storage.join(run_url(out, run_id), "_claim.json"), storage.dump_json(claim),
                             storage_options)


def publish(out: str, run_id: str, manifest: dict, storage_options=None) -> None:
    """Commit a run: manifest last among the run's files, then repoint LATEST.

    The manifest is created exclusively, so a run is published once and two jobs can never
    overwrite each other's manifest; LATEST is one small object replaced in one PUT (an
    atomic rename locally), so concurrent publishers leave it naming one of the runs, whole.
    """
    check_run_id(run_id)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "run_id": run_id, "word_escape": WORD_ESCAPE,
                **manifest}
    storage.create_exclusive(storage.join(run_url(out, run_id), "manifest.json"), storage.dump_json(manifest),
                             storage_options)
    latest = {"format": LATEST_FORMAT, "version": LATEST_VERSION, "run": run_id}
    storage.write_bytes(storage.join(out, "LATEST"), storage.dump_json(latest), storage_options)


def check_run_id(run_id, what: str = "run id") -> str:
    """A run id (or a file name in a manifest) is one path segment; ``..``, ``a/b`` are refused.

    LATEST and manifests come from shared storage: a crafted one must not send readers or gc
    outside ``<out>``.

    >>> check_run_id("20261123T235959Z-3f9a1c")
    '20261123T235959Z-3f9a1c'
    """
    if not isinstance(run_id, str) or not _SEGMENT.match(run_id) or set(run_id) == {"."}:
        raise DataError(f"invalid {what} {run_id!r}: the output may be corrupt")
    return run_id


def check_file_name(name) -> str:
    """A file of a run, as its manifest names it: one path segment, or segments under a folder of
    the run (the top-k table's parts); ``..`` and absolute paths are refused, as by
    ``check_run_id``.

    >>> check_file_name("vectors.npy"), check_file_name("neighbors/part-00000.parquet")
    ('vectors.npy', 'neighbors/part-00000.parquet')
    """
    if not isinstance(name, str) or not all(_SEGMENT.match(s) and set(s) != {"."} for s in name.split("/")):
        raise DataError(f"invalid file name {name!r}: the output may be corrupt")
    return name


def _check_format(doc, fmt: str, version: int, url: str) -> None:
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


def read_latest(out: str, storage_options=None) -> str | None:
    """The run id ``<out>/LATEST`` names, or None when nothing was published yet."""
    url = storage.join(out, "LATEST")
    fix = "pass a run URL (<out>/runs/<run_id>) instead, or publish a new run, which rewrites LATEST"
    try:
        latest = storage.read_json(url, storage_options)
    except FileNotFoundError:
        return None
    except DataError:
        raise DataError(f"{url!r} is not valid JSON; {fix}") from None
    if not isinstance(latest, dict) or latest.get("format") != LATEST_FORMAT:
        found = latest.get("format") if isinstance(latest, dict) else type(latest).__name__
        raise DataError(f"{url!r} is not an {LATEST_FORMAT} file (its format is {found!r}); {fix}")
    _check_format(latest, LATEST_FORMAT, LATEST_VERSION, url)
    try:
        return check_run_id(latest.get("run"))
    except DataError:  # a crafted LATEST must not send readers outside <out>/runs/
        raise DataError(f"{url!r} names an invalid run id {latest.get('run')!r}; {fix}") from None


def resolve_run(url: str, storage_options=None) -> str:
    """URL of an output (follows LATEST) or of a run -> the run's URL."""
    if storage.exists(storage.join(url, "manifest.json"), storage_options):
        return url.rstrip("/")
    run_id = read_latest(url, storage_options)
    if run_id is None:
        raise DataError(f"no published model at {url!r} (neither LATEST nor manifest.json); train one first")
    return run_url(url, run_id)


def read_manifest(run: str, storage_options=None, verify: bool = False) -> dict:
    """Read and check a run's manifest; verify sizes (and checksums when verify=True)."""
    murl = storage.join(run, "manifest.json")
    try:
        manifest = storage.read_json(murl, storage_options)
    except FileNotFoundError:
        raise DataError(f"{murl!r} does not exist: the run was never published (or was deleted)") from None
    _check_format(manifest, MANIFEST_FORMAT, MANIFEST_VERSION, murl)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(m, dict) and "size" in m for m in files.values()):
        raise DataError(f"{murl!r} has no valid 'files' table: the run is corrupt")
    for name, meta in files.items():
        furl = storage.join(run, check_file_name(name))
        try:
            actual = storage.size(furl, storage_options)
        except FileNotFoundError:
            raise DataError(f"{furl!r} is listed in the manifest but missing: the run is corrupt") from None
        if actual != meta["size"]:
            raise DataError(f"{furl!r} has {actual} bytes, the manifest says {meta['size']}: the run is corrupt")
        if verify and storage.sha256(furl, storage_options) != meta.get("sha256"):
            raise DataError(f"{furl!r} does not match its sha256 in the manifest: the run is corrupt")
    return manifest


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


def load(url: str, storage_options=None, verify: bool = False) -> Embeddings:
    """Load published vectors.

    Parameters
    ----------
    url : str
        An output (``<out>``: the run its LATEST names) or a run (``<out>/runs/<run_id>``), local
        or ``s3://``.
    storage_options : mapping, optional
        fsspec options (S3 endpoint and credentials).
    verify : bool
        Also check every other file of the run against its sha256 in the manifest (reads each
        once more). Sizes are always checked, and the vectors against their sha256 as they are
        read.

    Returns
    -------
    Embeddings
        The vocabulary, counts, vectors (held once) and manifest; gensim's query calls.

    Raises
    ------
    DataError
        Nothing published there, or a file missing, truncated or altered.

    Examples
    --------
    >>> emb = load("runs/demo")  # doctest: +SKIP
    >>> emb.most_similar("king", topn=3)  # doctest: +SKIP
    >>> load("/nonexistent/out")
    Traceback (most recent call last):
    ...
    nsdist.errors.DataError: no published model at '/nonexistent/out' (neither LATEST nor manifest.json); train one first
    """
    run = resolve_run(url, storage_options)
    manifest = read_manifest(run, storage_options, verify=verify)
    missing = sorted({"vectors.npy", "vocab.tsv"} - set(manifest["files"]))
    if missing:  # a file the manifest does not vouch for is neither size- nor checksum-checked
        raise DataError(f"run {run!r}: its manifest lists no {' or '.join(missing)}: the run is corrupt")
    vectors = read_npy(storage.join(run, "vectors.npy"), storage_options, manifest["files"]["vectors.npy"].get("sha256"))
    words, counts = read_vocab(run, storage_options, manifest)
    if len(words) != len(vectors):
        raise DataError(f"run {run!r} has {len(words)} words but {len(vectors)} vectors: the run is corrupt")
    return Embeddings(words, counts, vectors, manifest)


def read_neighbors(url: str, storage_options=None, verify: bool = False) -> pa.Table:
    """The top-k table a run published (trained with ``topk`` > 0), as one Arrow table.

    Parameters
    ----------
    url : str
        An output (``<out>``: the run LATEST names) or a run URL; local or ``s3://``.
    storage_options : mapping, optional
        fsspec options (S3 endpoint and credentials).
    verify : bool
        Check every file's sha256 against the manifest first (sizes are always checked).

    Returns
    -------
    pyarrow.Table
        ``item``, ``neighbor`` (string; int64 for item ids, the manifest's ``word_type``), ``score``
        (float32 cosine), ``rank`` (int16, from 1): each
        word's ``topk`` nearest other words, best first, words in vocabulary order. The parts are
        those the manifest lists (readers never list a prefix); other tools read the folder
        ``<run>/neighbors/`` as a Parquet dataset.

    Raises
    ------
    DataError
        The run has no top-k table (the message says how to publish one), or a part is corrupt.
    """
    run = resolve_run(url, storage_options)
    manifest = read_manifest(run, storage_options, verify=verify)
    parts = sorted(name for name in manifest["files"] if name.startswith(NEIGHBORS + "/"))
    if not parts:
        raise DataError(f"run {run!r} has no top-k table; train with --set topk=K (e.g. topk=20) to publish one")
    schema = NEIGHBORS_SCHEMA
    if manifest.get("word_type") == "int64":
        schema = schema.set(0, pa.field("item", pa.int64())).set(1, pa.field("neighbor", pa.int64()))
    tables = []
    for name in parts:
        with storage.open_read(storage.join(run, name), storage_options) as f:
            try:
                tables.append(pq.read_table(f, schema=schema))
            except (pa.ArrowInvalid, ValueError) as e:
                raise DataError(f"{storage.join(run, name)!r} is not a readable part of the top-k table ({e}): "
                                "the run is corrupt") from None
    return pa.concat_tables(tables)


def read_vocab(run: str, storage_options=None, manifest: dict | None = None) -> tuple[list[str], np.ndarray]:
    """A published run's words, in id order, and their counts (``vocab.tsv``, unescaped as the
    manifest's ``word_escape`` says; runs written before it hold their words as they are)."""
    manifest = read_manifest(run, storage_options) if manifest is None else manifest
    escape = manifest.get("word_escape")
    if escape not in (None, WORD_ESCAPE):
        raise DataError(f"run {run!r} escapes its words as {escape!r}, which nsdist {__version__} cannot read; "
                        "upgrade nsdist to read it")
    words, counts = [], []
    for line in storage.lines(storage.join(run, "vocab.tsv"), storage_options):
        word, _, count = line.rstrip("\n").rpartition("\t")
        words.append(unescape_word(word) if escape else word)
        counts.append(int(count))
    return words, np.array(counts, np.int64)


# ---------------------------------------------------------------- listing and garbage collection
# These list the runs/ prefix, which readers never do: they are admin commands, run by one
# operator, and tolerate a listing that lags a concurrent publish.

def _run_time(run_id: str) -> _dt.datetime | None:
    """Start time encoded in a run id; None for names nsdist did not generate."""
    m = _RUN_ID.match(run_id)
    if not m:
        return None
    return _dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.timezone.utc)


def _scan(out: str, storage_options=None) -> tuple[str | None, list[dict]]:
    """(LATEST's run id, one entry per directory under <out>/runs/)."""
    latest = read_latest(out, storage_options)
    names = [n for n in storage.listdir(storage.join(out, "runs"), storage_options) if not n.startswith(".")]
    if not names and latest is None:
        raise DataError(f"no nsdist output at {out!r} (no runs/ and no LATEST); check the URL")
    entries = []
    for name in names:
        url = run_url(out, name)
        started = _run_time(name)
        entry = {"run_id": name, "url": url, "latest": name == latest, "published": False,
                 "created": started.strftime("%Y-%m-%dT%H:%M:%SZ") if started else None}
        murl = storage.join(url, "manifest.json")
        try:
            manifest = storage.read_json(murl, storage_options)
        except FileNotFoundError:
            entries.append(entry)
            continue
        except DataError as e:  # a manifest exists but is unreadable: published, and broken
            entries.append({**entry, "published": True, "error": str(e)})
            continue
        entry["published"] = True
        try:
            _check_format(manifest, MANIFEST_FORMAT, MANIFEST_VERSION, murl)
        except DataError as e:  # e.g. a newer nsdist's run: listed (and kept/collected) all the same
            entry["error"] = str(e)
        if isinstance(manifest, dict):
            corpus = manifest.get("corpus") if isinstance(manifest.get("corpus"), dict) else {}
            config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
            files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
            entry.update({
                "created": manifest.get("created") or entry["created"],
                "vocab_size": corpus.get("vocab_size"),
                "dim": (config.get("train") or {}).get("dim") if isinstance(config.get("train"), dict) else None,
                "bytes": sum(int(m.get("size", 0)) for m in files.values() if isinstance(m, dict)),
                "nsdist": (manifest.get("versions") or {}).get("nsdist")
                if isinstance(manifest.get("versions"), dict) else None,
            })
        entries.append(entry)
    return latest, entries


def _newest_first(entries: list[dict]) -> list[dict]:
    # ISO-8601 UTC strings sort chronologically; the run id breaks ties (and orders runs
    # published within the same second by start time).
    return sorted(entries, key=lambda e: (e.get("created") or "", e["run_id"]), reverse=True)


def list_runs(out: str, storage_options=None, unpublished: bool = False) -> list[dict]:
    """Published runs under ``out`` (those with a manifest), newest first; with ``unpublished``,
    also the runs that were claimed and never published (running, failed or interrupted), each
    marked ``published`` true or false.

    Each: ``run_id``, ``url``, ``created``, ``vocab_size``, ``dim``, ``bytes``, ``nsdist``
    (the version that wrote it), ``latest`` (LATEST names it) and ``error`` when the manifest
    cannot be read by this nsdist. DataError when ``out`` holds no nsdist output at all.
    """
    _, entries = _scan(out, storage_options)
    if unpublished:
        return _newest_first(entries)
    return [{k: v for k, v in e.items() if k != "published"} for e in _newest_first(e for e in entries
                                                                                     if e["published"])]


def gc(out: str, keep: int, storage_options=None, *, abandoned_after: _dt.timedelta = _dt.timedelta(days=7),
       dry_run: bool = False, now: _dt.datetime | None = None) -> list[str]:
    """Delete all but the newest ``keep`` published runs, and abandoned unpublished runs.

    An unpublished run (no manifest: a crashed or still running job) is abandoned when
    neither its start time nor any of its files changed for ``abandoned_after``; a running
    job writes checkpoints, so keep this longer than an epoch. The run LATEST names is never
    deleted, whatever ``keep`` says; LATEST is re-read before each deletion to narrow the
    race with a concurrent publish. Directories whose names nsdist did not generate are left
    alone. Returns the URLs deleted (with ``dry_run``: that would be deleted).
    """
    if keep < 0:
        raise ConfigError(f"--keep must be >= 0, got {keep}")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    latest, entries = _scan(out, storage_options)
    published = _newest_first(e for e in entries if e["published"])
    doomed = [e for e in published[keep:]]
    for e in entries:
        if e["published"]:
            continue
        started = _run_time(e["run_id"])
        if started is None:
            continue
        times = [started] + [f["modified"] for f in storage.walk(e["url"], storage_options) if f["modified"]]
        if now - max(times) > abandoned_after:
            doomed.append(e)
    deleted = []
    for e in doomed:
        if e["run_id"] == latest or (not dry_run and read_latest(out, storage_options) == e["run_id"]):
            continue
        if not dry_run:
            # Manifest first: if the rest fails midway, the run no longer looks published.
            for url, recursive in ((storage.join(e["url"], "manifest.json"), False), (e["url"], True)):
                try:
                    storage.remove(url, storage_options, recursive=recursive)
                except FileNotFoundError:  # no manifest (unpublished), or an empty S3 "directory"
                    pass
        deleted.append(e["url"])
    return deleted
