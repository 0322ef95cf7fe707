"""Loading published runs: memory-mapped local vectors, subsets read by byte ranges, runs of
manifest version 1, and the files written in parts (local and S3) that the loader reads."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nsdist
from nsdist import formats, runs, storage
from nsdist.errors import DataError, UnknownWord

WORDS = ["the", "Über", "ñandú", "東京", "new york", "%d", "x"]


def vectors(n=len(WORDS), dim=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """(output URL, storage options) on local disk or on the S3 test server."""
    if request.param == "local":
        return str(tmp_path / "out"), None
    s3 = request.getfixturevalue("s3")
    return s3.url("models", "out"), s3.storage_options


def _npy(array: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, array, allow_pickle=False)
    return f.getvalue()


def publish_version_1(out: str, words: list[str], v: np.ndarray, storage_options=None) -> str:
    """A run as nsdist publishes with manifest version 1: vectors.parquet one file, every file
    written whole (by hand here, byte for byte that layout)."""
    run_id = "20250101T000000Z-00aa11"
    run = runs.run_url(out, run_id)
    counts = np.arange(len(words), 0, -1)
    table = pa.table({"word": words, "count": pa.array(counts, pa.int64()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])})
    parquet = io.BytesIO()
    pq.write_table(table, parquet, compression="zstd")
    data = {"vectors.npy": _npy(v), "context.npy": _npy(v[::-1].copy()), "vectors.parquet": parquet.getvalue(),
            "vocab.tsv": "".join(f"{formats.escape_word(w)}\t{c}\n" for w, c in zip(words, counts)).encode(),
            "vectors.txt": f"{len(words)} {v.shape[1]}\n".encode()}
    files = {}
    for name, raw in data.items():
        storage.write_bytes(storage.join(run, name), raw, storage_options)
        files[name] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    manifest = {"format": "nsdist-manifest", "version": 1, "run_id": run_id, "word_escape": "percent",
                "files": files, "created": "2025-01-01T00:00:00Z", "corpus": {"vocab_size": len(words)},
                "config": {"train": {"dim": v.shape[1]}}, "versions": {"nsdist": "0.1.0"}}
    storage.write_bytes(storage.join(run, "manifest.json"), storage.dump_json(manifest), storage_options)
    storage.write_bytes(storage.join(out, "LATEST"), storage.dump_json(
        {"format": "nsdist-latest", "version": 1, "run": run_id}), storage_options)
    return run_id


def test_a_run_published_with_manifest_version_1_still_loads(where):
    out, so = where
    v = vectors()
    run_id = publish_version_1(out, WORDS, v, so)
    emb = nsdist.load(out, so, verify=True)
    assert emb.vocab == WORDS and np.array_equal(emb.vectors, v) and emb.manifest["version"] == 1
    assert np.array_equal(emb.context_vectors, v[::-1])
    some = nsdist.load(out, so, words=["x", "new york"])
    assert some.vocab == ["x", "new york"] and np.array_equal(some.vectors, v[[6, 4]])
    assert [r["run_id"] for r in runs.list_runs(out, so)] == [run_id]
    assert "error" not in runs.list_runs(out, so)[0]


def test_a_run_published_by_blocks_loads_whole_and_in_part(where, publish_run):
    out, so = where
    v = vectors()
    publish_run(out, WORDS, v, storage_options=so)
    emb = nsdist.load(out, so, verify=True)
    assert emb.vocab == WORDS and np.array_equal(emb.vectors, v) and emb.manifest["version"] == 2
    assert np.array_equal(emb.context_vectors, v[:, ::-1])  # publish_run's context vectors
    # Words in the order asked, their counts, and their rows of both matrices.
    some = nsdist.load(out, so, words=["東京", "the", "%d"])
    assert some.vocab == ["東京", "the", "%d"] and some.counts.tolist() == [4, 7, 2]
    assert np.array_equal(some.vectors, v[[3, 0, 5]]) and np.array_equal(some.context_vectors, v[[3, 0, 5], ::-1])
    assert [w for w, _ in some.most_similar("東京", topn=5)] == [
        w for w, _ in emb.most_similar("東京", topn=7) if w in ("the", "%d")]
    for rows, expected in ((slice(2, 5), [2, 3, 4]), (np.array([6, 0, 6]), [6, 0]), ([], [])):
        part = nsdist.load(out, so, rows=rows)
        assert part.vocab == [WORDS[i] for i in expected] and np.array_equal(part.vectors, v[expected])


def test_a_subset_naming_unknown_words_is_refused_in_one_line_or_skips_them(tmp_path, publish_run):
    out = str(tmp_path / "out")
    run_id = publish_run(out, WORDS, vectors())
    with pytest.raises(UnknownWord) as e:
        nsdist.load(out, words=["the", "nope", "zz"])
    assert str(e.value) == (f"2 of the 3 words to load are not in the vocabulary of run {run_id} (7 words): 'nope', "
                            "'zz'; leave them out, or pass unknown='skip'")
    assert isinstance(e.value, KeyError) and e.value.exit_code == 2
    assert nsdist.load(out, words=["nope", "x"], unknown="skip").vocab == ["x"]
    with pytest.raises(nsdist.errors.ConfigError, match=r"rows must be a slice or row numbers in \[0, 7\)"):
        nsdist.load(out, rows=[0, 7])
    with pytest.raises(nsdist.errors.ConfigError, match="words or rows, not both"):
        nsdist.load(out, words=["x"], rows=[0])


def test_local_vectors_are_memory_mapped_after_their_sha256_is_checked(tmp_path, publish_run):
    out = str(tmp_path / "out")
    v = vectors(n=3000, dim=40, seed=1)
    words = [f"w{i}" for i in range(len(v))]
    run = runs.run_url(out, publish_run(out, words, v))
    mapped, held = nsdist.load(out), nsdist.load(out, mmap=False)
    assert isinstance(mapped.vectors.base, np.memmap) and not mapped.vectors.flags.writeable
    assert isinstance(held.vectors, np.ndarray) and held.vectors.flags.owndata
    # The queries answer the same on the map as in memory, bit for bit.
    assert mapped.most_similar("w3", topn=20) == held.most_similar("w3", topn=20)
    assert mapped.most_similar_cosmul(positive=["w1", "w2"], negative=["w9"]) == held.most_similar_cosmul(
        positive=["w1", "w2"], negative=["w9"])
    assert np.array_equal(mapped.distances("w5"), held.distances("w5"))
    assert np.array_equal(mapped.rank(["w1", "w2"], ["w7", "w8", "w9"]), held.rank(["w1", "w2"], ["w7", "w8", "w9"]))
    assert mapped.recommend(["w4"], topn=5) == held.recommend(["w4"], topn=5)
    assert mapped.doesnt_match(["w1", "w2", "w3"]) == held.doesnt_match(["w1", "w2", "w3"])
    # A byte altered in place (the size unchanged) is caught before the map is used.
    path = f"{run}/vectors.npy"
    raw = bytearray(open(path, "rb").read())
    raw[-1] ^= 1
    open(path, "wb").write(raw)
    for mmap in (True, False):
        with pytest.raises(DataError, match="does not match its sha256 in the manifest"):
            nsdist.load(out, mmap=mmap)


def test_a_mapped_load_allocates_a_small_part_of_the_vectors(tmp_path, publish_run):
    """What ``load`` allocates itself (numpy and Python memory, traced), for a 24 MB model: held
    in memory, the vectors and more; mapped, the checksum's one chunk (storage.CHUNK, whatever
    the model's size) and the vocabulary (about 2 MB here). The pages of a map belong to the page
    cache, which the operating system reclaims."""
    out = str(tmp_path / "out")
    v = vectors(n=20_000, dim=300, seed=2)
    publish_run(out, [f"w{i}" for i in range(len(v))], v)
    peaks = {}
    for mmap in (False, True):
        tracemalloc.start()
        try:
            emb = nsdist.load(out, mmap=mmap)
            peaks[mmap] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert np.array_equal(emb.vectors, v)
    assert peaks[False] > v.nbytes and peaks[True] < storage.CHUNK + 4 * 2**20, peaks


def test_word2vec_formats_are_left_out_past_word2vec_max_bytes(tmp_path):
    v = vectors(n=100, dim=8)
    files = formats.write_run_files(str(tmp_path), pa.array([f"w{i}" for i in range(100)]), np.ones(100), v, v,
                                    word2vec_max_bytes=100 * 8 * 4 - 1)
    assert "vectors.txt" not in files and "vectors.bin" not in files and "vectors.npy" in files
    plan = formats.plan_outputs(str(tmp_path), 100, 8, 2, 100 * 8 * 4)
    assert plan.word2vec and plan.assembled == formats.ASSEMBLED
    assert plan.record == {"blocks": [[0, 50], [50, 100]], "word2vec": True, "vectors_parquet": "parts"}


# ---------------------------------------------------------------- files written in parts

def _parts(url: str, so, chunks: list[bytes]) -> dict:
    """``chunks`` written as parts of ``url`` by one thread each, last part first."""
    token = storage.start_parts(url, so)
    records = [None] * len(chunks)

    def one(i):
        records[i] = storage.write_part(url, token, i, storage.S3_MAX_PARTS // len(chunks),
                                        lambda w: w.write(chunks[i]), so)

    threads = [threading.Thread(target=one, args=(i,)) for i in reversed(range(len(chunks)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return storage.complete_parts(url, token, records, so)


def test_a_file_written_in_parts_on_s3_is_one_object(s3):
    """Three writers: parts over 5 MiB (S3's least but the last's), the middle one over one
    chunk (several S3 parts), the last one small."""
    rng = np.random.default_rng(3)
    chunks = [rng.bytes(6 * 2**20), rng.bytes(storage.PART_CHUNK + 7 * 2**20), b"tail"]
    url, whole = s3.url("big.bin"), b"".join(chunks)
    assert _parts(url, s3.storage_options, chunks) == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    assert storage.read_bytes(url, s3.storage_options) == whole
    # An abandoned file leaves no upload behind (S3 would keep, and bill, its parts).
    token = storage.start_parts(s3.url("gone.bin"), s3.storage_options)
    storage.write_part(s3.url("gone.bin"), token, 0, 1, lambda w: w.write(b"x"), s3.storage_options)
    storage.abort_parts(s3.url("gone.bin"), token, s3.storage_options)
    assert s3.boto().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    assert not storage.exists(s3.url("gone.bin"), s3.storage_options)


def test_a_file_written_in_parts_locally_is_assembled_and_its_parts_removed(tmp_path):
    chunks = [b"a" * 1000, b"", b"b" * 3]
    url = str(tmp_path / "f.bin")
    assert _parts(url, None, chunks) == {"size": 1003, "sha256": hashlib.sha256(b"a" * 1000 + b"bbb").hexdigest()}
    assert (tmp_path / "f.bin").read_bytes() == b"a" * 1000 + b"bbb"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    token = storage.start_parts(str(tmp_path / "g.bin"), None)
    storage.write_part(str(tmp_path / "g.bin"), token, 0, 1, lambda w: w.write(b"x"), None)
    storage.abort_parts(str(tmp_path / "g.bin"), token, None)
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_file_written_in_parts_on_another_store_is_copied_together():
    """A store that is neither a local disk nor S3 (fsspec's in-memory one): the parts are
    copied into the file in part order, hashed on the way, and removed; an abandoned file
    leaves nothing."""
    import fsspec

    memory = fsspec.filesystem("memory")
    url, chunks = "memory://nsdist-parts/run/f.bin", [b"a" * 1000, b"", b"b" * 3, b"c" * 70_000]
    whole = b"".join(chunks)
    assert _parts(url, None, chunks) == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    assert storage.read_bytes(url, None) == whole
    assert [p.rsplit("/", 1)[-1] for p in memory.ls("/nsdist-parts/run", detail=False)] == ["f.bin"]
    token = storage.start_parts("memory://nsdist-parts/run/g.bin", None)
    storage.write_part("memory://nsdist-parts/run/g.bin", token, 0, 1, lambda w: w.write(b"x"), None)
    storage.abort_parts("memory://nsdist-parts/run/g.bin", token, None)
    assert [p.rsplit("/", 1)[-1] for p in memory.ls("/nsdist-parts/run", detail=False)] == ["f.bin"]
    memory.rm("/nsdist-parts", recursive=True)


def test_a_local_file_assembled_again_after_a_lost_worker_is_whole(tmp_path):
    """The first part is moved into place, then the others appended: an assembly killed midway
    leaves the file with its first part and some of the rest, and the task run again must give
    the same file."""
    url, chunks = str(tmp_path / "f.bin"), [b"a" * 1000, b"b" * 10, b"c" * 3]
    token = storage.start_parts(url, None)
    records = [storage.write_part(url, token, i, 1, lambda w, c=c: w.write(c), None) for i, c in enumerate(chunks)]
    folder = tmp_path / f".f.bin.parts-{token}"
    os.replace(folder / "00000", tmp_path / "f.bin")
    with open(tmp_path / "f.bin", "ab") as f:
        f.write(b"b" * 4)  # the killed task's part of its append
    whole = b"".join(chunks)
    assert storage.complete_parts(url, token, records, None) == {"size": len(whole),
                                                                 "sha256": hashlib.sha256(whole).hexdigest()}
    assert (tmp_path / "f.bin").read_bytes() == whole
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    token = storage.start_parts(str(tmp_path / "g.bin"), None)
    storage.abort_parts(str(tmp_path / "g.bin"), token, None)
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_rows_read_by_byte_ranges_equal_the_whole_file(where):
    """On local disk and on S3, where up to 32 ranged GETs are in flight at once (here 100
    scattered runs: 4 batches)."""
    out, so = where
    v = vectors(n=5000, dim=7, seed=4)
    url = storage.join(out, "v.npy")
    storage.write_bytes(url, _npy(v), so)
    rows = np.array([4999, 0, 1, 2, 100, 101, 3000, 0])
    for gap in (0, 100, 2**20):  # every run apart, some gaps read through, one read of it all
        assert np.array_equal(formats.read_npy_rows(url, rows, so, gap_bytes=gap, expect_rows=5000), v[rows])
    scattered = np.arange(4999, 0, -50)
    assert np.array_equal(formats.read_npy_rows(url, scattered, so, gap_bytes=0), v[scattered])
    # Into another array's rows as they arrive: the rows land where asked, the others untouched.
    target, at = np.full((20, 7), -1.0, np.float32), np.array([19, 2, 3, 4, 5, 6, 7, 0])
    assert formats.read_npy_rows(url, rows, so, gap_bytes=0, into=(target, at)) is target
    assert np.array_equal(target[at], v[rows]) and (np.delete(target, at, axis=0) == -1).all()
    with pytest.raises(DataError, match="has rows of 7 values, not 3: the run is corrupt"):
        formats.read_npy_rows(url, rows, so, into=(np.zeros((20, 3), np.float32), at))
    with pytest.raises(DataError, match="has 5000 rows for 4 words"):
        formats.read_npy_rows(url, rows, so, expect_rows=4)
    short = storage.join(out, "short.npy")
    storage.write_bytes(short, _npy(v)[:-7 * 4 * 10], so)  # the last 10 rows lost
    assert np.array_equal(formats.read_npy_rows(short, rows[1:6], so), v[rows[1:6]])
    with pytest.raises(DataError, match="ends before its last rows: the file is truncated"):
        formats.read_npy_rows(short, rows, so)
