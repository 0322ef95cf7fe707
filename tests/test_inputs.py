"""Bad and unusual corpus input: every bad input ends in one line naming the file and the fix,
the documented exit code, nothing published; long lines, invalid UTF-8 and words with
whitespace train."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from nsdist import storage
from nsdist.corpus import Block, iter_tokens, read_tokens
from nsdist.counts import scan

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
    from nsdist.corpus import join_pieces

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


def test_a_50_mb_line_is_scanned_without_a_copy_of_it(tmp_path):
    """A one-line corpus (text8 is 100 MB on one line) costs a worker its token ids (2 bytes
    each here, for 9 bytes of text), not copies of the line: the scan's peak memory stays below
    one copy of the line (tokenizing the line whole took 5-6 times its size)."""
    path = tmp_path / "line.txt"
    words = " ".join(f"word{i:04d}" for i in range(1000)).encode() + b" "
    with open(path, "wb") as f:
        for _ in range(50 * 2**20 // len(words) + 1):
            f.write(words)
        f.write(b"\n")
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
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
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
    import operator
    import uuid

    import pyarrow.parquet as pq

    from nsdist.cluster import setup_workers
    from nsdist.errors import DataError
    from nsdist.noise import noise_table

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
    import logging

    from distributed.core import error_message

    from nsdist.cluster.plugin import QuietExpectedErrors
    from nsdist.errors import DataError

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
    import nsdist.corpus

    nsdist_frame = f'  File "{nsdist.corpus.__file__}", line 9, in iter_tokens\n    raise DataError(...)\n'
    assert not quiet.filter(record(here["exception_text"], nsdist_frame))
    assert quiet.filter(record("ValueError('x')", nsdist_frame))
    assert quiet.filter(logging.LogRecord("distributed.worker", logging.INFO, __file__, 1, "other", (), None))
