"""A run's lifecycle: claimed, published (manifest, then LATEST), read back (``load``), listed and
collected. The files themselves are written and read by ``formats.py``.

Layout of an output URL ``<out>``::

    <out>/LATEST                      {"format": "nsdist-latest", "version": 1, "run": "<run_id>"}
    <out>/runs/<run_id>/_claim.json   written first, exclusively: two jobs never share a run id
    <out>/runs/<run_id>/vectors.txt   word2vec text format (gensim: load_word2vec_format)
    <out>/runs/<run_id>/vectors.bin   word2vec binary format (binary=True)
    <out>/runs/<run_id>/vectors.npy   float32 (V, dim) input vectors, row i = vocab word i
    <out>/runs/<run_id>/context.npy   float32 (V, dim) output (context) vectors: warm starts, ranking
    <out>/runs/<run_id>/vectors.parquet/part-NNNNN.parquet  word: string, count: int64,
                                      vector: fixed_size_list<float>; one part per row block,
                                      in row order (manifest version 1: one vectors.parquet file)
    <out>/runs/<run_id>/vocab.tsv     word<TAB>count, in id order
    <out>/runs/<run_id>/neighbors/part-NNNNN.parquet  with ``topk`` > 0: the top-k table, one part
                                      per row block (item, neighbor: string, score: float32,
                                      rank: int16 from 1), in item (row) order
    <out>/runs/<run_id>/report.html   a page of plots and tables (report.py), no script
    <out>/runs/<run_id>/manifest.json written last: files with sizes and sha256, config, metrics

Readers follow LATEST -> manifest and never list a prefix (S3 listings are not a commit
point). Every JSON format carries ``format`` and ``version``, checked on load. Nothing read
here is ever unpickled.

Concurrency: run ids are claimed with an exclusive create, manifests are created
exclusively, and LATEST is a single small object replaced whole, so two jobs publishing to
the same ``<out>`` leave both runs intact and LATEST naming one of them.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
import secrets
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__, storage
from .embeddings import Embeddings
from .errors import ConfigError, DataError, UnknownWord
from .formats import (NEIGHBORS, NEIGHBORS_SCHEMA, WORD_ESCAPE, check_format, map_npy, read_npy, read_npy_rows,
                      read_whole, vocab_lines)

# Manifest version 2: vectors.parquet is a Parquet dataset of parts (one per row block, each
# listed), and ``outputs`` says how the vectors were written; version 1 (one vectors.parquet file)
# is read too: users keep such runs in object storage.
MANIFEST_FORMAT, MANIFEST_VERSION = "nsdist-manifest", 2
MANIFEST_READS = (1, 2)
LATEST_FORMAT, LATEST_VERSION = "nsdist-latest", 1

_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def new_run_id() -> str:
    """'20261123T235959Z-3f9a1c': sortable by start time, unique across concurrent jobs."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def run_url(out: str, run_id: str) -> str:
    return storage.join(out, "runs", run_id)


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
    check_format(latest, LATEST_FORMAT, LATEST_VERSION, url)
    try:
        return check_run_id(latest.get("run"))
    except DataError:  # a crafted LATEST must not send readers outside <out>/runs/
        raise DataError(f"{url!r} names an invalid run id {latest.get('run')!r}; {fix}") from None


def check_not_a_file(url: str, storage_options=None) -> None:
    """DataError when ``url`` names a file: an output or a run is a directory (a prefix)."""
    if storage.is_file(url, storage_options):
        raise DataError(f"{storage.scrub(url, storage_options)!r} is a file, not an nsdist output; pass the output "
                        "directory (<out>, which has LATEST) or a run (<out>/runs/<run_id>)")


def resolve_run(url: str, storage_options=None) -> str:
    """URL of an output (follows LATEST) or of a run -> the run's URL."""
    check_not_a_file(url, storage_options)
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
    check_format(manifest, MANIFEST_FORMAT, MANIFEST_READS, murl)
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


def load(url: str, storage_options=None, verify: bool = False, *, words=None, rows=None, mmap: bool = True,
         unknown: str = "raise") -> Embeddings:
    """Load published vectors: all of them, or the rows of some words.

    Parameters
    ----------
    url : str
        An output (``<out>``: the run its LATEST names) or a run (``<out>/runs/<run_id>``), local
        or ``s3://``.
    storage_options : mapping, optional
        fsspec options (S3 endpoint and credentials).
    verify : bool
        Also check every other file of the run against its sha256 in the manifest (reads each
        once more). Sizes are always checked, and the whole vectors against their sha256 as they
        are read or mapped (the output vectors, ``context.npy``, when ``Embeddings.rank`` first
        needs them).
    words : list of str, optional
        Load only these words' rows, in this order, each once (read by byte ranges of ``vectors.npy``:
        nothing else of it is read, locally or on S3). Queries then rank these words only. The
        whole-file checksums are not checked on a subset (``verify=True`` reads every file).
    rows : slice or array of int, optional
        Load only these rows (row i is the i-th word by falling count), as ``words`` does.
    mmap : bool
        Memory-map a local ``vectors.npy`` (and ``context.npy``): the operating system pages rows
        in as queries read them, so a model larger than memory loads. ``False``, and any run
        on object storage: read into memory, in bounded chunks.
    unknown : {"raise", "skip"}
        What ``words`` naming words the run does not know does: raise ``UnknownWord``, or
        leave them out.

    Returns
    -------
    Embeddings
        The vocabulary, counts, vectors (held once) and manifest; gensim's query calls.

    Raises
    ------
    DataError
        Nothing published there, or a file missing, truncated or altered.
    UnknownWord
        ``words`` names words the run does not know (the message names them).

    Examples
    --------
    >>> emb = load("runs/demo")  # doctest: +SKIP
    >>> emb.most_similar("king", topn=3)  # doctest: +SKIP
    >>> load("runs/demo", words=["king", "queen"]).similarity("king", "queen")  # doctest: +SKIP
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
    vocab, counts = read_vocab(run, storage_options, manifest)
    select = _selection(run, vocab, words, rows, unknown)
    read = functools.partial(_matrix, run, manifest, storage_options, select, len(vocab), mmap)
    vectors = read("vectors.npy")
    if select is not None:
        vocab, counts = [vocab[i] for i in select.tolist()], counts[select]
    context = functools.partial(read, "context.npy") if "context.npy" in manifest["files"] else None
    return Embeddings(vocab, counts, vectors, manifest, context)  # context: read when a ranking first needs it


def _selection(run: str, vocab: list[str], words, rows, unknown: str) -> np.ndarray | None:
    """The rows ``load`` reads (None: all of them)."""
    if words is not None and rows is not None:
        raise ConfigError("load takes words or rows, not both")
    if unknown not in ("raise", "skip"):
        raise ConfigError(f"unknown must be 'raise' or 'skip', got {unknown!r}")
    if rows is not None:
        picked = np.arange(len(vocab))[rows] if isinstance(rows, slice) else np.asarray(rows)
        if picked.ndim != 1 or (len(picked) and (picked.dtype.kind not in "iu" or picked.min() < 0
                                                 or picked.max() >= len(vocab))):
            raise ConfigError(f"rows must be a slice or row numbers in [0, {len(vocab)}) (the run's words), "
                              f"got {rows!r}")
        return _once(picked.astype(np.int64))
    if words is None:
        return None
    words = [words] if isinstance(words, str) else list(words)
    index = {w: i for i, w in enumerate(vocab)}
    lost = [w for w in words if w not in index]
    if lost and unknown == "raise":
        shown = ", ".join(repr(w) for w in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise UnknownWord(lost[0], len(vocab), f"{len(lost)} of the {len(words)} words to load are not in the "
                          f"vocabulary of run {run.rsplit('/', 1)[-1]} ({len(vocab)} words): {shown}; leave them "
                          "out, or pass unknown='skip'")
    return _once(np.array([index[w] for w in words if w in index], np.int64))


def _once(rows: np.ndarray) -> np.ndarray:
    """``rows`` without repeats, in the order they first come (an Embeddings holds a word once).

    >>> _once(np.array([6, 0, 6, 2])).tolist()
    [6, 0, 2]
    """
    return rows[np.sort(np.unique(rows, return_index=True)[1])]


def _matrix(run: str, manifest: dict, storage_options, select: np.ndarray | None, n_rows: int, mmap: bool,
            name: str) -> np.ndarray:
    """A run's ``name`` (vectors.npy or context.npy): the rows ``select`` by byte ranges, or a
    memory map of a local file (its sha256 checked by streaming it), or the whole read into
    memory (checked as read)."""
    url, sha256 = storage.join(run, name), manifest["files"][name].get("sha256")
    if select is not None:
        return read_npy_rows(url, select, storage_options, expect_rows=n_rows)
    matrix = map_npy(url, storage_options, sha256) if mmap else None
    matrix = read_npy(url, storage_options, sha256) if matrix is None else matrix
    if len(matrix) != n_rows:
        raise DataError(f"run {run!r} has {n_rows} words but {len(matrix)} rows in {name}: the run is corrupt")
    return matrix


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
        part = storage.join(run, name)
        data = read_whole(part, manifest["files"][name]["size"], storage_options)  # no Python file for Arrow
        try:
            tables.append(pq.read_table(pa.BufferReader(data), schema=schema))
        except (pa.ArrowInvalid, ValueError) as e:
            raise DataError(f"{part!r} is not a readable part of the top-k table ({e}): the run is corrupt") from None
    return pa.concat_tables(tables)


def read_vocab(run: str, storage_options=None, manifest: dict | None = None) -> tuple[list[str], np.ndarray]:
    """A published run's words, in id order, and their counts (``vocab.tsv``, unescaped as the
    manifest's ``word_escape`` says; runs written before it hold their words as they are)."""
    manifest = read_manifest(run, storage_options) if manifest is None else manifest
    url = storage.join(run, "vocab.tsv")
    words, counts = vocab_lines(storage.read_bytes(url, storage_options), word_escape(run, manifest),
                                storage.scrub(url, storage_options))
    return words.to_pylist(), counts


def word_escape(run: str, manifest: dict) -> str | None:
    """How the run's vocab.tsv escapes its words (formats.escape_word; None: runs written before
    it hold their words as they are)."""
    escape = manifest.get("word_escape")
    if escape not in (None, WORD_ESCAPE):
        raise DataError(f"run {run!r} escapes its words as {escape!r}, which nsdist {__version__} cannot read; "
                        "upgrade nsdist to read it")
    return escape


def run_info(url: str) -> dict:
    """What ``nsdist info`` shows of a run.

    Parameters
    ----------
    url : str
        A run (``<out>/runs/<run_id>``, published or not) or an output (``<out>``: the run LATEST
        names).

    Returns
    -------
    dict
        ``report.summary`` of a published run; ``report.unpublished_summary`` of a run that was
        claimed and never published (its config, last checkpoint and resume command).

    Raises
    ------
    DataError
        Nothing there, or nothing published yet under an output (the message says how to list
        its unfinished runs).
    """
    from . import checkpoint
    from .report import summary, unpublished_summary

    url = url.rstrip("/") or url
    check_not_a_file(url)
    published = storage.exists(storage.join(url, "manifest.json"))
    if not published and storage.exists(storage.join(url, "_claim.json")):
        claim = storage.read_json(storage.join(url, "_claim.json"))
        if not isinstance(claim, dict):
            raise DataError(f"{storage.join(url, '_claim.json')!r} is not a run claim: the run is corrupt")
        return unpublished_summary({"run_id": url.rsplit("/", 1)[-1], **claim}, checkpoint.latest(url),
                                   storage.absolute(url), f"nsdist train --resume {storage.absolute(url)}")
    if not published and storage.exists(storage.join(url, "runs")) and read_latest(url) is None:
        raise DataError(f"nothing published under {url!r} yet; list its unfinished runs with: nsdist runs {url} --all")
    run = resolve_run(url)
    return summary(read_manifest(run), storage.absolute(run))


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
    check_not_a_file(out, storage_options)
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
            check_format(manifest, MANIFEST_FORMAT, MANIFEST_READS, murl)
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
