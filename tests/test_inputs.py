"""Bad and unusual corpus input: every bad input ends in one line naming the file and the fix,
the documented exit code, nothing published; long lines, invalid UTF-8 and words with
whitespace train."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import operator
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed.core import error_message
from gensim.models import KeyedVectors

import nsdist
import nsdist.corpus
from nsdist import storage
from nsdist.cli import main
from nsdist.cluster import setup_workers
from nsdist.cluster.plugin import QuietExpectedErrors
from nsdist.corpus import Block, iter_tokens, join_pieces, read_tokens
from nsdist.counts import scan
from nsdist.errors import DataError
from nsdist.noise import noise_table
from nsdist.formats import escape_word, unescape_word

# ---------------------------------------------------------------- long lines


def split_lines(text: bytes) -> list[list[str]]:
    """The reference tokenizer: str.split on each line, invalid UTF-8 replaced."""
    return [line.split() for line in text.decode("utf-8", errors="replace").split("\n")]


LONG_TEXT = ("short line\n" + "w" * 300 + " \u00e9t\u00e9 x\ty\r\n" + " ".join(f"t{i}" for i in range(400)) + "\n\n"
             + "\u6771 " * 200 + "last\u3000line").encode()


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 2**20])
def test_long_lines_come_in_pieces_and_stay_one_sentence(write, chunk_bytes):
    """Lines longer than a piece are cut between words; the pieces join into the same sentences."""
    path = write("long.txt", LONG_TEXT)
    expected = split_lines(LONG_TEXT)
    pieces = list(iter_tokens(Block(path), chunk_bytes=chunk_bytes))
    if chunk_bytes == 64:
        assert sum(open_line for _, open_line in pieces) > 10
    assert read_tokens(Block(path)).to_pylist() == expected
    assert join_pieces(pieces).to_pylist() == expected
    scanned = scan(pieces)
    got = [[scanned.words[int(i)].as_py() for i in scanned.ids[a:b]]
           for a, b in zip(scanned.offsets[:-1], scanned.offsets[1:])]
    assert got == [line for line in expected if line]


@pytest.mark.parametrize("max_line", [1, 5, 16])
def test_iter_block_cuts_long_lines_after_whitespace(write, max_line):
    text = b"ab cd\tef\n" + b"ghij " * 20 + b"\n" + b"x" * 40 + b" y\nz"
    path = write("c.txt", text)
    for offset in range(0, len(text), 3):
        for length in (None, 1, 9, 30, len(text)):
            pieces = list(storage.iter_block(path, offset, length, piece_bytes=4, max_line=max_line))
            if length is None and offset:
                continue
            assert b"".join(p for p, _ in pieces) == storage.read_block(path, offset, length)
            assert [f for _, f in pieces] == [False] * (len(pieces) - 1) + [True]
            for piece, _ in pieces[:-1]:  # a line goes on only after whitespace, never inside a word
                assert piece[-1:] in (b"\n", b" ", b"\t")
                # bounded: max_line, plus a chunk, plus a word longer than both (the x's)
                assert len(piece) <= max_line + 4 + 42


def one_line(path, mib: int = 50) -> int:
    """Write a corpus of one line of ``mib`` MiB: 1000 words of 8 letters, over and over, each
    block written from the same bytes. Returns its number of tokens."""
    words = " ".join(f"word{i:04d}" for i in range(1000)).encode() + b" "
    repeats = mib * 2**20 // len(words) + 1
    with open(path, "wb") as f:
        for _ in range(repeats):
            f.write(words)
        f.write(b"\n")
    return repeats * 1000


def test_a_50_mb_line_is_scanned_without_a_copy_of_it(tmp_path):
    """A one-line corpus (text8 is 100 MB on one line) costs a worker its token ids (2 bytes
    each here, for 9 bytes of text), not copies of the line: the scan's peak memory stays below
    one copy of the line (tokenizing the line whole took 5-6 times its size)."""
    path = tmp_path / "line.txt"
    one_line(path)
    size = path.stat().st_size
    code = textwrap.dedent(f"""
        import resource, pyarrow as pa
        from nsdist.cluster.plugin import WorkerMemory
        from nsdist.corpus import Block, iter_tokens
        from nsdist.counts import scan
        WorkerMemory().setup(None)  # the allocator settings of a worker
        scan(iter_tokens(Block({str(tmp_path / 'warm.txt')!r})))  # numba's compiled code loaded
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        s = scan(iter_tokens(Block({str(path)!r})))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(grown * 1024, len(s.ids), s.sentences)
    """)
    (tmp_path / "warm.txt").write_text("a b\nc\n")
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    grown, tokens, sentences = map(int, p.stdout.split())
    assert (tokens, sentences) == ((size - 1) // 9, 1)
    assert grown < size, f"scanning a {size / 2**20:.0f} MiB line grew the process by {grown / 2**20:.0f} MiB"


# ---------------------------------------------------------------- the workers' log


def compute_failed(client, key_part: str = "") -> list[str]:
    """The workers' "Compute Failed" records (of tasks whose key holds ``key_part``)."""
    return [msg for logs in client.get_worker_logs().values() for _, msg in logs
            if "Compute Failed" in msg and key_part in msg]


def test_workers_log_no_compute_failed_block_for_nsdist_errors(client, tmp_path):
    """A task that raises an nsdist error in nsdist's code fails with one line on the client and
    nothing in the workers' log; any other exception keeps Dask's record and traceback."""
    setup_workers(client)
    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({"items": [["a"]]}), path)
    tag = uuid.uuid4().hex
    tasks = {"expected": (read_tokens, Block(path, 0, None, parquet=True)),  # DataError: no column 'tokens'
             "nsdist-bug": (noise_table, np.zeros(0)),  # ValueError, raised in nsdist's code
             "zero": (operator.truediv, 1, 0)}
    futures = {name: client.submit(*task, key=f"{name}-{tag}") for name, task in tasks.items()}
    for name, exc in (("expected", DataError), ("nsdist-bug", ValueError), ("zero", ZeroDivisionError)):
        with pytest.raises(exc):
            futures[name].result()
    assert not compute_failed(client, f"expected-{tag}")
    (bug,) = compute_failed(client, f"nsdist-bug-{tag}")
    (zero,) = compute_failed(client, f"zero-{tag}")
    assert "ValueError" in bug and "Traceback" in bug and "ZeroDivisionError" in zero


def test_an_nsdist_error_raised_outside_nsdist_keeps_its_record():
    """The filter reads the record's text: the exception's class and its traceback's last frame."""

    def record(exc_text: str, traceback: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                                 "Compute Failed\nKey: %s\nState: %s\nTask: %s\nException: %r\nTraceback: %r\n",
                                 ("k", "executing", "task", exc_text, traceback), None)

    try:
        raise DataError("raised by a test, not by nsdist")
    except DataError as e:
        here = error_message(e)
    quiet = QuietExpectedErrors()
    assert quiet.filter(record(here["exception_text"], here["traceback_text"]))
    nsdist_frame = f'  File "{nsdist.corpus.__file__}", line 9, in iter_tokens\n    raise DataError(...)\n'
    assert not quiet.filter(record(here["exception_text"], nsdist_frame))
    assert quiet.filter(record("ValueError('x')", nsdist_frame))
    assert quiet.filter(logging.LogRecord("distributed.worker", logging.INFO, __file__, 1, "other", (), None))


# ---------------------------------------------------------------- bad input, through the command line

TEXT = "the cat sat on the mat\nthe dog sat on the log\n" * 50


def train(client, out, *corpus: str, settings=(), args=()) -> int:
    """``nsdist train`` on the shared cluster (``main``, in this process)."""
    argv = ["train", *(a for c in corpus for a in ("--corpus", c)), "--out", str(out),
            "--scheduler", client.scheduler.address, "--set", "min_count=1", "--set", "dim=8",
            "--set", "epochs=1", *args]
    for s in settings:
        argv += ["--set", s]
    return main(argv)


def the_error(capfd) -> str:
    """The one error line of what the job printed; nothing else may look like an error."""
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("nsdist: error:")]
    assert len(errors) == 1, err
    for noise in ("Traceback", "Compute Failed", "Exception:", "distributed.worker"):
        assert noise not in out + err, err
    return errors[0]


def published(out) -> list:
    """What a reader could find under ``out``: LATEST and the manifests."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name in ("LATEST", "manifest.json"))


def parquet(path, **columns) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def damaged(data: bytes) -> bytes:
    """``data`` with 64 bytes in its middle zeroed."""
    mid = len(data) // 2
    return data[:mid] + bytes(64) + data[mid + 64:]


def write_file(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


GZ = gzip.compress(TEXT.encode() * 20)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + np.random.default_rng(0).bytes(4000)

# name: (corpus under tmp_path, parts of the error line: the file, the problem, the fix)
BAD = {
    "missing-path": (lambda d: str(d / "nope.txt"), ["'{d}/nope.txt'", "does not exist", "check the path"]),
    "empty-glob": (lambda d: str(d / "*.txt"), ["'{d}/*.txt'", "matches no files", "check the glob"]),
    "empty-file": (lambda d: write_file(d / "empty.txt", b""), ["'{d}/empty.txt'", "0 bytes", "pass another --corpus"]),
    "blank-lines": (lambda d: write_file(d / "blank.txt", b"\n \n\t\n\r\n\n" * 100),
                    ["'{d}/blank.txt'", "only blank lines", "--corpus names the right files"]),
    "binary": (lambda d: write_file(d / "image.txt", PNG),
               ["'{d}/image.txt'", "is not text", "convert it to UTF-8 text or remove it from --corpus"]),
    "truncated-gz": (lambda d: write_file(d / "c.txt.gz", GZ[:len(GZ) // 2]),
                     ["'{d}/c.txt.gz'", "truncated or corrupt (gzip", "re-upload it or remove it from --corpus"]),
    "corrupt-bz2": (lambda d: write_file(d / "c.txt.bz2", damaged(bz2.compress(TEXT.encode() * 20))),
                    ["'{d}/c.txt.bz2'", "truncated or corrupt (bz2", "re-upload it or remove it from --corpus"]),
    "not-parquet": (lambda d: write_file(d / "c.parquet", TEXT.encode()),
                    ["'{d}/c.parquet'", "not a readable Parquet file", "re-upload it or remove it from --corpus"]),
    "parquet-no-column": (lambda d: parquet(d / "s.parquet", items=[["a", "b"], ["c"]], user=[1, 2]),
                          ["'{d}/s.parquet'", "no column 'tokens' (its columns: items, user)",
                           "set parquet_column=items"]),
    "parquet-int-column": (lambda d: parquet(d / "s.parquet", tokens=[1, 2, 3]),
                           ["'{d}/s.parquet'", "is int64, not a list of strings or integers",
                            "write the tokens as a list<string> (or item ids as a list<int64>) column"]),
    "parquet-string-column": (lambda d: parquet(d / "s.parquet", tokens=["a b", "c"], items=[["a", "b"], ["c"]]),
                              ["'{d}/s.parquet'", "is string, not a list of strings or integers",
                               "set parquet_column=items"]),
    "parquet-no-tokens": (lambda d: parquet(d / "s.parquet", tokens=pa.array([[], None, [None]], pa.list_(pa.string()))),
                          ["'{d}/s.parquet'", "empty or null token lists", "--corpus names the right files"]),
    "parquet-list-of-floats": (lambda d: parquet(d / "s.parquet", tokens=[[1.5, 2.0], [3.0]]),
                               ["'{d}/s.parquet'", ": double>, not a list of strings or integers",
                                "(or item ids as a list<int64>) column"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_corpus_fails_in_one_line_naming_the_file_and_the_fix(client, tmp_path, capfd, case):
    make, parts = BAD[case]
    failed_before = len(compute_failed(client))
    out = tmp_path / "out"
    assert train(client, out, make(tmp_path)) == 3
    line = the_error(capfd)
    for part in parts:
        assert part.format(d=tmp_path) in line, line
    assert published(out) == []
    assert len(compute_failed(client)) == failed_before  # nor on the workers' stderr


@pytest.mark.parametrize("case", ["blank-lines", "truncated-gz", "parquet-no-column"])
def test_a_failed_job_leaves_the_published_model_as_it_was(client, tmp_path, capfd, publish_run, case):
    out = tmp_path / "out"
    publish_run(str(out), ["a", "b"], np.ones((2, 8)))
    before, latest = published(out), (out / "LATEST").read_bytes()
    make, parts = BAD[case]
    assert train(client, out, make(tmp_path)) == 3
    assert parts[1] in the_error(capfd)
    assert published(out) == before and (out / "LATEST").read_bytes() == latest


def test_a_corrupt_compressed_file_on_s3_is_named_by_its_url(s3):
    url = s3.url("crawl", "c.txt.gz")
    storage.write_bytes(url, GZ[:len(GZ) // 2], s3.storage_options)
    with pytest.raises(DataError, match=r"^corpus file 's3://nsdist-test/crawl/c.txt.gz' is truncated or corrupt"):
        read_tokens(Block(url), s3.storage_options)


def test_a_failing_read_under_a_decompressor_keeps_its_own_error(s3):
    """Only what the decompressor rejects is corrupt data: an error of the storage itself (the
    object deleted while it is read, in 64 KiB reads) stays the storage's error."""
    url = s3.url("c.txt.gz")
    text = " ".join(f"w{i}" for i in np.random.default_rng(0).integers(0, 10**6, 200_000)) + "\n"
    storage.write_bytes(url, gzip.compress(text.encode()), s3.storage_options)
    options = {**s3.storage_options, "default_block_size": 2**16}
    pieces = iter_tokens(Block(url), options)
    next(pieces)
    s3.boto().delete_object(Bucket=s3.bucket, Key="c.txt.gz")
    with pytest.raises(FileNotFoundError):
        list(pieces)


# ---------------------------------------------------------------- unusual input that trains


def test_invalid_utf8_bytes_become_replacement_characters(client, tmp_path, capfd):
    """One bad byte in a 100 GB crawl must not fail a job: invalid UTF-8 is replaced by U+FFFD
    (as Python's errors="replace" does), the words around it are kept."""
    corpus = write_file(tmp_path / "c.txt", b"caf\xe9 ok \xff\xfe ok\n" * 20 + b"ok fine\n")
    out = tmp_path / "out"
    assert train(client, out, corpus) == 0
    _, err = capfd.readouterr()
    assert "error" not in err
    emb = nsdist.load(str(out))
    assert dict(zip(emb.vocab, emb.counts.tolist())) == {"ok": 41, "caf\ufffd": 20, "\ufffd\ufffd": 20, "fine": 1}


def test_a_50_mb_line_trains(client, tmp_path, capfd):
    """One sentence of 5.8 million words: read in pieces by the one block where it starts (the
    file's other 12 blocks find no line start and read only themselves), trained in chunks of
    max_sentence_length words."""
    path = tmp_path / "line.txt"
    tokens = one_line(path)
    out = tmp_path / "out"
    assert train(client, out, str(path), settings=["sample=1e-5", "window=2", "negative=2"]) == 0
    run = capfd.readouterr().out.strip().splitlines()[-1]
    corpus = json.loads((Path(run) / "manifest.json").read_text())["corpus"]
    assert (corpus["blocks"], corpus["sentences"], corpus["raw_tokens"], corpus["vocab_size"]) == (13, 1, tokens, 1000)


# Parquet tokens are data: item ids, phrases, anything but null.
ODD_WORDS = ["new york", "tab\there", "line\nbreak", "cr\rlf", " lead", "trail ", "nb\u00a0sp", "\u3000",
             "%d", "%", "50%", "a%20b", "\u00e9t\u00e9", "plain"]


def test_parquet_words_with_whitespace_are_escaped_in_the_text_formats_and_read_back(client, tmp_path, capfd):
    """vectors.txt, vectors.bin and vocab.tsv split on whitespace: such words are escaped there
    (README, Outputs) and read back exactly by load and warm starts; gensim reads both formats."""
    sessions = [ODD_WORDS[i:] + ODD_WORDS[:i] for i in range(len(ODD_WORDS))] * 3
    corpus = parquet(tmp_path / "sessions.parquet", tokens=sessions)
    out = tmp_path / "out"
    assert train(client, out, corpus) == 0
    run = Path(capfd.readouterr().out.strip().splitlines()[-1])
    emb = nsdist.load(str(out))
    assert sorted(emb.vocab) == sorted(ODD_WORDS) and emb.counts.tolist() == [3 * len(ODD_WORDS)] * len(ODD_WORDS)
    assert json.loads((run / "manifest.json").read_text())["word_escape"] == "percent"
    assert pq.read_table(run / "vectors.parquet", columns=["word"])["word"].to_pylist() == emb.vocab  # as they are

    written = [escape_word(w) for w in emb.vocab]
    assert not any(c.isspace() for w in written for c in w) and "50%" in written and "%25d" in written
    assert (run / "vocab.tsv").read_text(encoding="utf-8").splitlines() == [f"{w}\t{c}" for w, c in
                                                                            zip(written, emb.counts)]
    text = KeyedVectors.load_word2vec_format(str(run / "vectors.txt"))
    binary = KeyedVectors.load_word2vec_format(str(run / "vectors.bin"), binary=True)
    assert text.index_to_key == binary.index_to_key == written
    assert [unescape_word(w) for w in text.index_to_key] == emb.vocab
    assert np.array_equal(binary.vectors, emb.vectors) and np.array_equal(text.vectors, emb.vectors)

    # A warm start reads the words back from vocab.tsv: all of them are known.
    assert train(client, out, corpus, args=["--init-from", str(out)]) == 0
    warm = nsdist.load(str(out))
    parent = warm.manifest["parent"]
    assert (parent["known_words"], parent["new_words"], parent["dropped_words"]) == (len(ODD_WORDS), 0, 0)
    assert warm.vocab == emb.vocab and warm.manifest["run_id"] != emb.manifest["run_id"]


def test_runs_published_before_word_escape_read_their_words_as_they_are(tmp_path, publish_run):
    out = tmp_path / "out"
    run_id = publish_run(str(out), ["%d", "%61b", "x"], np.ones((3, 2)))
    manifest_path = out / "runs" / run_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert nsdist.load(str(out)).vocab == ["%d", "%61b", "x"]  # written escaped, read back
    raw = b"%d\t3\n%61b\t2\nx\t1\n"  # the words as they are, as nsdist wrote them before word_escape
    (out / "runs" / run_id / "vocab.tsv").write_bytes(raw)
    manifest["files"]["vocab.tsv"]["size"] = len(raw)
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "word_escape"}))
    assert nsdist.load(str(out)).vocab == ["%d", "%61b", "x"]
    manifest_path.write_text(json.dumps({**manifest, "word_escape": "base64"}))
    with pytest.raises(DataError, match="escapes its words as 'base64'.*upgrade nsdist"):
        nsdist.load(str(out))
