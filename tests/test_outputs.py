"""Published outputs: formats other tools read, the manifest/LATEST protocol, list_runs/gc."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gensim.models import KeyedVectors

import nsdist
from nsdist import formats, runs, storage
from nsdist.cli import main
from nsdist.errors import DataError

WORDS = ["the", "Über", "ñandú", "東京", "emoji🙂", "naïve-café", "x"]


def vectors(n=len(WORDS), dim=5, seed=0, extremes=False):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    if extremes:  # tiny and huge values must survive the text format too
        v[0, 0] = np.float32(1e-8)
        v[1, 1] = np.float32(3.4e38)
    return v


def read(url):
    return storage.read_bytes(url)


def rewrite_json(url, **changes):
    doc = json.loads(read(url))
    doc.update(changes)
    storage.write_bytes(url, json.dumps(doc).encode())


# ---------------------------------------------------------------- formats other tools read

def test_vectors_txt_writes_each_number_as_repr_precision_text(tmp_path):
    """Every number of vectors.txt is ``f"{x:.9g}"`` of its float32, whatever the value
    (signed zero, subnormals, the largest float32, 9 significant digits, powers of ten and their
    neighbours, any bit pattern), after the escaped word: the compiled formatting
    (nsdist/floattext.py) and, for the rows it leaves (a number at a rounding tie), Python's."""
    from nsdist import floattext

    special = np.array([[-0.0, 0.0, 1.4e-45, -1.1754944e-38, 3.4028235e38, 123456789.0, 0.1, -1.0]], np.float32)
    tens = np.float32(10) ** np.arange(-44, 39, dtype=np.float32)
    near = np.concatenate([tens, np.nextafter(tens, np.float32(np.inf)), np.nextafter(tens, np.float32(0))])
    bits = np.random.default_rng(5).integers(0, 2**32, 8_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[np.isfinite(bits)]
    more = np.concatenate([near, -near, bits])
    v = np.concatenate([special, vectors(n=3, dim=8, seed=3), more[:len(more) // 8 * 8].reshape(-1, 8)])
    assert 0 < len(floattext.text_rows(v)[2]) < len(v) / 2  # both ways are exercised
    words = pa.array(["%d", "new york", "50%", "x"] + [f"w{i}" for i in range(len(v) - 4)])
    formats.write_run_files(str(tmp_path), words, np.arange(len(v), 0, -1), v, v, word2vec_max_bytes=2**30)
    lines = (tmp_path / "vectors.txt").read_text(encoding="utf-8").splitlines()
    expected = [f"{len(v)} 8"] + [formats.escape_word(w) + " " + " ".join(f"{x:.9g}" for x in row)
                          for w, row in zip(words.to_pylist(), v.tolist())]
    assert lines == expected
    assert lines[1].split()[1:3] == ["-0", "0"] and lines[1].split()[5] == "3.40282347e+38"


def test_word2vec_text_and_binary_round_trip_through_gensim(tmp_path, publish_run):
    out = str(tmp_path / "out")
    v = vectors(extremes=True)
    run = runs.run_url(out, publish_run(out, WORDS, v))
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        kv = KeyedVectors.load_word2vec_format(os.path.join(run, name), binary=binary)
        assert kv.index_to_key == WORDS
        assert np.array_equal(kv.vectors, v)  # '%.9g' text round-trips float32 exactly
    emb = nsdist.load(out)
    assert emb.vocab == WORDS and np.array_equal(emb.vectors, v)


def test_parquet_schema_and_values(tmp_path, publish_run):
    out = str(tmp_path / "out")
    v = vectors(dim=4)
    counts = np.array([10**12, 50, 40, 30, 20, 10, 5])
    run = runs.run_url(out, publish_run(out, WORDS, v, counts=counts))
    table = pq.read_table(os.path.join(run, "vectors.parquet"))
    assert table.schema.field("word").type == pa.string()
    assert table.schema.field("count").type == pa.int64()
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 4)  # fixed_size_list<float>[4]
    assert table.column("word").to_pylist() == WORDS
    assert table.column("count").to_pylist() == counts.tolist()
    flat = table.column("vector").combine_chunks().flatten().to_numpy()
    assert np.array_equal(flat.reshape(-1, 4), v)


def test_files_written_by_blocks_equal_whole_writes(tmp_path):
    """Three row blocks, each with several text chunks, Parquet row groups and .npy slices: every
    single file equals the whole write, and vectors.parquet's parts hold the rows in order."""
    words = [f"w{i}" for i in range(20000)]
    v = vectors(n=len(words), dim=64, seed=3)
    files = formats.write_run_files(str(tmp_path), pa.array(words), np.arange(len(words))[::-1], v, v[::-1],
                                    workers=3)
    parts = [formats.vectors_part(b) for b in range(3)]
    assert set(files) == {"vectors.npy", "context.npy", "vectors.txt", "vectors.bin", "vocab.tsv", *parts}
    for name, array in (("vectors.npy", v), ("context.npy", np.ascontiguousarray(v[::-1]))):
        expected = tmp_path / f"expected-{name}"
        np.save(expected, array, allow_pickle=False)
        assert (tmp_path / name).read_bytes() == expected.read_bytes()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # the blocks' parts are gone
    sizes = [pq.ParquetFile(tmp_path / p).metadata for p in parts]
    assert [m.num_rows for m in sizes] == [6666, 6667, 6667]  # rows [0, 6666), [6666, 13333), [13333, 20000)
    assert [m.num_row_groups for m in sizes] == [2, 2, 2]  # 4096 words (1 MiB of vectors at dim 64) each
    table = pq.read_table(tmp_path / "vectors.parquet")  # the folder, as a dataset: parts in name order
    assert table.column("word").to_pylist() == words
    assert np.array_equal(table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 64), v)
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "vectors.txt"))
    assert kv.index_to_key == words and np.array_equal(kv.vectors, v)
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "vectors.bin"), binary=True)
    assert kv.index_to_key == words and np.array_equal(kv.vectors, v)
    for name, meta in files.items():
        assert storage.sha256(str(tmp_path / name)) == meta["sha256"]
        assert os.path.getsize(tmp_path / name) == meta["size"]


# ---------------------------------------------------------------- versions and corruption

@pytest.fixture
def run(tmp_path, publish_run):
    """(out, run URL) of one small published run on local disk."""
    out = str(tmp_path / "out")
    return out, runs.run_url(out, publish_run(out, WORDS, vectors()))


def test_manifest_and_latest_versions_are_checked(run):
    out, url = run
    manifest = storage.join(url, "manifest.json")
    rewrite_json(manifest, version=3)
    with pytest.raises(DataError, match=r"nsdist-manifest version 3\b.*reads versions 1, 2; upgrade nsdist to read it$"):
        nsdist.load(out)
    rewrite_json(manifest, version=0)
    with pytest.raises(DataError, match=r"version 0\b.*upgrade nsdist to read it or use the nsdist release that wrote"):
        nsdist.load(out)
    rewrite_json(manifest, version=2, format="something-else")
    with pytest.raises(DataError, match=r"not an nsdist-manifest file .*'something-else'.*point nsdist at an output URL"):
        nsdist.load(out)
    rewrite_json(manifest, format="nsdist-manifest")
    nsdist.load(out)

    latest = storage.join(out, "LATEST")
    rewrite_json(latest, version=2)
    with pytest.raises(DataError, match="nsdist-latest version 2.*upgrade nsdist"):
        nsdist.load(out)
    rewrite_json(latest, version=1, run="../../elsewhere")  # LATEST must not lead outside <out>
    with pytest.raises(DataError, match="invalid run id"):
        nsdist.load(out)


def test_truncated_files_are_data_errors(run):
    out, url = run
    npy = storage.join(url, "vectors.npy")
    data = read(npy)
    storage.write_bytes(npy, data[:-7])
    with pytest.raises(DataError, match="vectors.npy.* bytes, the manifest says"):
        nsdist.load(out)
    assert main(["neighbors", out, "the"]) == 3  # bad data: exit code 3
    with pytest.raises(DataError, match="truncated"):  # the reader checks on its own, too
        formats.read_npy(npy)
    os.remove(npy)
    with pytest.raises(DataError, match="missing"):
        nsdist.load(out)


def test_verify_catches_same_size_corruption(run):
    out, url = run
    npy = storage.join(url, "vectors.npy")
    original = read(npy)
    data = bytearray(original)
    data[-1] ^= 0x01  # one flipped bit in the last float: sizes still match
    storage.write_bytes(npy, bytes(data))
    # The vectors load checks as it reads them; verify=True checks every other file too.
    for verify in (False, True):
        with pytest.raises(DataError, match="vectors.npy.*sha256"):
            nsdist.load(out, verify=verify)
    storage.write_bytes(npy, original)
    assert np.array_equal(nsdist.load(out).vectors, vectors())
    txt = storage.join(url, "vectors.txt")
    storage.write_bytes(txt, read(txt).replace(b" ", b"\t", 1))
    assert np.array_equal(nsdist.load(out).vectors, vectors())  # sizes alone cannot tell
    with pytest.raises(DataError, match="vectors.txt.*sha256"):
        nsdist.load(out, verify=True)


def test_files_the_manifest_does_not_list_are_refused(run):
    out, url = run
    murl = storage.join(url, "manifest.json")
    manifest = json.loads(read(murl))
    del manifest["files"]["vocab.tsv"]
    storage.write_bytes(murl, json.dumps(manifest).encode())
    for verify in (False, True):
        with pytest.raises(DataError, match="its manifest lists no vocab.tsv: the run is corrupt"):
            nsdist.load(out, verify=verify)


class _Bomb:
    """Unpickling this creates a file: proof that a loader executed code from the data."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_npy_is_never_unpickled(run, tmp_path):
    out, url = run
    _Bomb.path = str(tmp_path / "unpickled")
    arr = np.empty((len(WORDS), 5), dtype=object)
    arr[:] = 0.0
    arr[0, 0] = _Bomb()
    npy = storage.join(url, "vectors.npy")
    with open(npy, "wb") as f:
        np.save(f, arr, allow_pickle=True)
    manifest = json.loads(read(storage.join(url, "manifest.json")))
    manifest["files"]["vectors.npy"]["size"] = os.path.getsize(npy)
    storage.write_bytes(storage.join(url, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(DataError, match="nsdist never unpickles"):
        nsdist.load(out)
    assert not os.path.exists(_Bomb.path)


@pytest.mark.parametrize("layout", ["C", "F", "big-endian"])
def test_read_npy_layouts(tmp_path, layout):
    v = vectors(n=50, dim=7)
    stored = {"C": v, "F": np.asfortranarray(v), "big-endian": v.astype(">f4")}[layout]
    path = str(tmp_path / "v.npy")
    np.save(path, stored)
    got = formats.read_npy(path)
    assert got.dtype == np.float32 and got.dtype.isnative and np.array_equal(got, v)


def test_load_holds_one_copy_of_the_vectors(tmp_path):
    # The .npy payload streams into one preallocated array: no bytes copy of the whole file
    # and no normalised copy until a query needs norms (V floats, not V x dim).
    v = np.random.default_rng(0).standard_normal((20_000, 300), dtype=np.float32)  # 24 MB
    path = str(tmp_path / "v.npy")
    np.save(path, v)
    tracemalloc.start()
    try:
        got = formats.read_npy(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, v) and peak < 1.05 * v.nbytes, peak / v.nbytes

    emb = runs.Embeddings([f"w{i}" for i in range(len(v))], np.ones(len(v), np.int64), got, {})
    assert emb._norms is None  # nothing normalised at load
    emb.most_similar("w1", topn=3)
    assert emb._norms.shape == (len(v),)


_MEASURE = """
import json, sys
from nsdist import formats, runs

def status(field):  # kB from /proc/self/status; VmHWM is this process's peak resident set
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024

url, small, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
formats.read_npy(small, options)  # warm up on a small file: imports, connection pool, s3fs instance
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
before = status("VmRSS")
array = formats.read_npy(url, options)
print((status("VmHWM") - before) / array.nbytes)
"""


def test_load_from_s3_holds_one_copy_of_the_vectors(s3):
    # Measured in a separate process: the moto server shares this one and buffers objects.
    # (Not ru_maxrss: Linux carries it across exec, so a child reports this process's peak.)
    # The peak must stay well under two copies: the array plus a few 16 MiB chunks in flight.
    v = np.random.default_rng(0).standard_normal((64 * 2**20 // 1200, 300), dtype=np.float32)  # 64 MiB
    with storage.open_write(s3.url("v.npy"), s3.storage_options) as f:
        np.save(f, v)
    with storage.open_write(s3.url("small.npy"), s3.storage_options) as f:
        np.save(f, v[:10])
    p = subprocess.run([sys.executable, "-c", _MEASURE, s3.url("v.npy"), s3.url("small.npy"),
                        json.dumps(s3.storage_options)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert float(p.stdout) < 1.75, p.stdout  # two copies would be >= 2


# ---------------------------------------------------------------- queries

def test_queries_match_gensim_and_reject_unknown_words(run):
    out, url = run
    emb = nsdist.load(out)
    kv = KeyedVectors.load_word2vec_format(storage.join(url, "vectors.bin"), binary=True)
    for word in WORDS:
        ours = emb.most_similar(word, topn=3)
        theirs = kv.most_similar(word, topn=3)
        assert [w for w, _ in ours] == [w for w, _ in theirs]
        assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-6)
    assert emb.similarity("東京", "x") == pytest.approx(float(kv.similarity("東京", "x")), abs=1e-6)
    assert [w for w, _ in emb.analogy("the", "Über", "ñandú", topn=2)] == [
        w for w, _ in kv.most_similar(positive=["Über", "ñandú"], negative=["the"], topn=2)]
    assert "東京" in emb and "nope" not in emb and np.array_equal(emb["x"], vectors()[-1])
    with pytest.raises(KeyError, match="nope"):
        emb.most_similar("nope")
    with pytest.raises(KeyError):
        emb["nope"]
    assert "7 words x 5 dims" in repr(emb)


# ---------------------------------------------------------------- concurrent publishers

def _write_run(out, run_id, seed, so=None):
    v = vectors(seed=seed)
    runs.claim_run(out, run_id, so)
    files = formats.write_run_files(runs.run_url(out, run_id), pa.array(WORDS), np.arange(7, 0, -1), v, v, so)
    return {"created": "2026-01-01T00:00:00Z", "files": files}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_concurrent_publishers_leave_both_runs_and_a_whole_latest(tmp_path, request, where):
    so = request.getfixturevalue("s3").storage_options if where == "s3" else None
    out = request.getfixturevalue("s3").url("out") if where == "s3" else str(tmp_path / "out")
    # Local: several rounds of four publishers (cheap); S3: one round of two (each PUT is slower).
    for round_ in range(3 if where == "local" else 1):
        ids = [f"2026010{round_ + 1}T00000{i}Z-00000{i}" for i in range(4 if where == "local" else 2)]
        manifests = {rid: _write_run(out, rid, seed=i, so=so) for i, rid in enumerate(ids)}
        barrier = threading.Barrier(len(ids))
        errors = []

        def publish(rid):
            barrier.wait()  # all publishers hit manifest + LATEST at the same moment
            try:
                runs.publish(out, rid, manifests[rid], so)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=publish, args=(rid,)) for rid in ids]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors
        latest = json.loads(storage.read_bytes(storage.join(out, "LATEST"), so))
        assert latest["format"] == "nsdist-latest" and latest["run"] in ids
        for i, rid in enumerate(ids):
            manifest = runs.read_manifest(runs.run_url(out, rid), so, verify=True)
            assert manifest["run_id"] == rid
            assert np.array_equal(nsdist.load(runs.run_url(out, rid), so).vectors, vectors(seed=i))
        assert nsdist.load(out, so).manifest["run_id"] == latest["run"]
    # A run id is claimed once and published once.
    with pytest.raises(FileExistsError):
        runs.claim_run(out, ids[0], so)
    with pytest.raises(FileExistsError):
        runs.publish(out, ids[0], manifests[ids[0]], so)


# ---------------------------------------------------------------- list_runs and gc

def _day(n):
    return dt.datetime(2026, 1, n, tzinfo=dt.timezone.utc)


@pytest.fixture
def history(tmp_path, publish_run):
    """Four published runs (LATEST names the second oldest), two unpublished ones, a stranger."""
    out = str(tmp_path / "out")
    ids = {}
    for day in (1, 2, 3, 4):
        ids[day] = publish_run(out, WORDS, vectors(seed=day), run_id=f"2026010{day}T000000Z-00000{day}",
                               created=f"2026-01-0{day}T01:00:00Z")
    storage.write_bytes(storage.join(out, "LATEST"), storage.dump_json(
        {"format": "nsdist-latest", "version": 1, "run": ids[2]}))  # e.g. a rollback
    # An abandoned run from day 1 and a running one: claims but no manifest.
    for rid in ("20260101T050000Z-dead01", "20260110T000000Z-live01"):
        runs.claim_run(out, rid)
    old = dt.datetime(2026, 1, 1, 6, tzinfo=dt.timezone.utc).timestamp()
    os.utime(os.path.join(out, "runs", "20260101T050000Z-dead01", "_claim.json"), (old, old))
    os.makedirs(os.path.join(out, "runs", "not-a-run"))
    return out, ids


def test_list_runs_newest_first_marks_latest(history):
    out, ids = history
    listed = runs.list_runs(out)
    assert [r["run_id"] for r in listed] == [ids[4], ids[3], ids[2], ids[1]]  # published only
    assert [r["latest"] for r in listed] == [False, False, True, False]
    assert listed[0]["created"] == "2026-01-04T01:00:00Z" and listed[0]["vocab_size"] == len(WORDS)
    assert listed[0]["dim"] == 5 and listed[0]["bytes"] > 0 and listed[0]["url"].endswith(ids[4])


def test_gc_keeps_newest_and_never_latest(history):
    out, ids = history
    now = _day(10)
    dry = runs.gc(out, keep=1, dry_run=True, now=now)
    assert sorted(os.path.basename(u) for u in dry) == sorted([ids[3], ids[1], "20260101T050000Z-dead01"])
    assert len(storage.listdir(storage.join(out, "runs"))) == 7  # dry run deleted nothing

    assert runs.gc(out, keep=1, now=now) == dry
    assert storage.listdir(storage.join(out, "runs")) == sorted([ids[2], ids[4], "20260110T000000Z-live01",
                                                                 "not-a-run"])
    assert nsdist.load(out).manifest["run_id"] == ids[2]  # LATEST's run survives although old

    # keep=0 deletes every published run but LATEST's; the running job is still too young.
    assert [os.path.basename(u) for u in runs.gc(out, keep=0, now=now)] == [ids[4]]
    assert runs.gc(out, keep=0, now=now) == []
    assert [r["run_id"] for r in runs.list_runs(out)] == [ids[2]]


def test_gc_and_runs_on_the_command_line(history, capsys):
    out, ids = history
    assert main(["runs", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[2].startswith(f"* {ids[2]}")
    assert main(["gc", out, "--keep", "-1"]) == 2  # usage error
    assert "--keep must be >= 0" in capsys.readouterr().err
    assert main(["gc", out]) == 2  # --keep is required
    assert main(["gc", out, "--keep", "3", "--abandoned-after", "100000"]) == 0
    assert capsys.readouterr().out.split() == ["deleted", runs.run_url(out, ids[1])]
    storage.write_bytes(storage.join(out, "LATEST"), b"{not json")
    assert main(["gc", out, "--keep", "1"]) == 3  # a corrupt LATEST stops gc: bad data
    assert len(storage.listdir(storage.join(out, "runs"))) == 6
