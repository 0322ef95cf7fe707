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
    <out>/runs/<run_id>/manifest.json written last: files with sizes and sha256, config, metrics

Readers follow LATEST -> manifest and never list a prefix (S3 listings are not a commit
point). Every JSON format carries ``format`` and ``version``, checked on load. Nothing read
here is ever unpickled.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import secrets
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import DataError

MANIFEST_FORMAT, MANIFEST_VERSION = "nsdist-manifest", 1
LATEST_FORMAT, LATEST_VERSION = "nsdist-latest", 1


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


def _word2vec_text(words: Sequence[str], vectors: np.ndarray):
    def fill(w):
        w.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for start in range(0, len(words), 4096):
            block = vectors[start:start + 4096]
            # repr-precision floats ('%.9g') round-trip float32 exactly.
            text = "\n".join(
                word + " " + " ".join(f"{x:.9g}" for x in row)
                for word, row in zip(words[start:start + 4096], block.tolist())
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


def _npy(array: np.ndarray):
    return lambda w: np.save(w, array, allow_pickle=False)


def _parquet(words: pa.Array, counts: np.ndarray, vectors: np.ndarray):
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table({
        "word": words.cast(pa.string()),
        "count": pa.array(counts, pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    })
    return lambda w: pq.write_table(table, w, compression="zstd")


def _vocab_tsv(words: Sequence[str], counts: np.ndarray):
    def fill(w):
        for start in range(0, len(words), 65536):
            chunk = zip(words[start:start + 65536], counts[start:start + 65536].tolist())
            w.write("".join(f"{word}\t{c}\n" for word, c in chunk).encode())
    return fill


def write_run_files(url: str, words: pa.Array, counts: np.ndarray, win: np.ndarray, wout: np.ndarray,
                    storage_options=None) -> dict:
    """Write every data file of a run (runs on a worker); return {name: {size, sha256}}."""
    pylist = words.to_pylist()
    writers = {
        "vectors.txt": _word2vec_text(pylist, win),
        "vectors.bin": _word2vec_binary(pylist, win),
        "vectors.npy": _npy(win),
        "context.npy": _npy(wout),
        "vectors.parquet": _parquet(words, counts, win),
        "vocab.tsv": _vocab_tsv(pylist, counts),
    }
    return {name: _write(storage.join(url, name), storage_options, fill) for name, fill in writers.items()}


def publish(out: str, run_id: str, manifest: dict, storage_options=None) -> None:
    """Commit a run: manifest last among the run's files, then repoint LATEST."""
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "run_id": run_id, **manifest}
    storage.write_bytes(storage.join(run_url(out, run_id), "manifest.json"), storage.dump_json(manifest),
                        storage_options)
    latest = {"format": LATEST_FORMAT, "version": LATEST_VERSION, "run": run_id}
    storage.write_bytes(storage.join(out, "LATEST"), storage.dump_json(latest), storage_options)


def _check_format(doc: dict, fmt: str, version: int, url: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise DataError(f"{url!r} is not an nsdist {fmt} file")
    if doc.get("version") != version:
        raise DataError(
            f"{url!r} has {fmt} version {doc.get('version')}, this nsdist reads version {version}; "
            "upgrade nsdist"
        )


def resolve_run(url: str, storage_options=None) -> str:
    """URL of an output (follows LATEST) or of a run -> the run's URL."""
    if storage.exists(storage.join(url, "manifest.json"), storage_options):
        return url.rstrip("/")
    latest_url = storage.join(url, "LATEST")
    if not storage.exists(latest_url, storage_options):
        raise DataError(f"no published model at {url!r} (neither LATEST nor manifest.json); train one first")
    latest = storage.read_json(latest_url, storage_options)
    _check_format(latest, LATEST_FORMAT, LATEST_VERSION, latest_url)
    return run_url(url, latest["run"])


def read_manifest(run: str, storage_options=None, verify: bool = False) -> dict:
    """Read and check a run's manifest; verify sizes (and checksums when verify=True)."""
    murl = storage.join(run, "manifest.json")
    manifest = storage.read_json(murl, storage_options)
    _check_format(manifest, MANIFEST_FORMAT, MANIFEST_VERSION, murl)
    for name, meta in manifest["files"].items():
        furl = storage.join(run, name)
        actual = storage.size(furl, storage_options)
        if actual != meta["size"]:
            raise DataError(f"{furl!r} has {actual} bytes, the manifest says {meta['size']}: the run is corrupt")
        if verify and hashlib.sha256(storage.read_bytes(furl, storage_options)).hexdigest() != meta["sha256"]:
            raise DataError(f"{furl!r} does not match its sha256 in the manifest: the run is corrupt")
    return manifest


@dataclass
class Embeddings:
    """Word vectors read back from a run: ``vocab``, ``counts``, ``vectors`` and queries."""

    vocab: list[str]
    counts: np.ndarray
    vectors: np.ndarray
    manifest: dict

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.vocab)}
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self._unit = self.vectors / np.where(norms == 0, 1, norms)

    def __len__(self) -> int:
        return len(self.vocab)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def _id(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            raise KeyError(f"word {word!r} not in vocabulary ({len(self.vocab)} words)") from None

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._id(word)]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(self._unit[self._id(a)] @ self._unit[self._id(b)])

    def _nearest(self, query: np.ndarray, exclude: Iterable[int], topn: int) -> list[tuple[str, float]]:
        scores = self._unit @ (query / (np.linalg.norm(query) or 1.0))
        scores[list(exclude)] = -np.inf
        top = np.argpartition(-scores, min(topn, len(scores) - 1))[:topn]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.vocab[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    def most_similar(self, word: str, topn: int = 10) -> list[tuple[str, float]]:
        """The topn words closest to ``word`` by cosine similarity."""
        i = self._id(word)
        return self._nearest(self._unit[i], [i], topn)

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """a : b :: c : ? by 3CosAdd (b - a + c), excluding the three query words."""
        ia, ib, ic = self._id(a), self._id(b), self._id(c)
        return self._nearest(self._unit[ib] - self._unit[ia] + self._unit[ic], [ia, ib, ic], topn)


def load(url: str, storage_options=None, verify: bool = False) -> Embeddings:
    """Load published vectors from ``<out>`` (follows LATEST) or from a run URL.

    ``verify=True`` also checks every file's sha256 against the manifest.
    """
    run = resolve_run(url, storage_options)
    manifest = read_manifest(run, storage_options, verify=verify)
    with storage.open_read(storage.join(run, "vectors.npy"), storage_options) as f:
        vectors = np.load(f, allow_pickle=False)
    words, counts = [], []
    for line in storage.lines(storage.join(run, "vocab.tsv"), storage_options):
        word, _, count = line.rstrip("\n").rpartition("\t")
        words.append(word)
        counts.append(int(count))
    if len(words) != len(vectors):
        raise DataError(f"run {run!r} has {len(words)} words but {len(vectors)} vectors: the run is corrupt")
    return Embeddings(words, np.array(counts, np.int64), vectors, manifest)
