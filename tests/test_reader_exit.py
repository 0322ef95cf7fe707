"""A process that reads a published run exits 0, every time.

``pq.read_table`` finishes its scan on Arrow's pool threads, which may drop the scan's last
reference to its source after the call has returned. When that source was a Python file
(fsspec's), dropping it takes the GIL; a process that exits right after the read could have that
thread ended by CPython inside a C++ destructor, and abort ("terminate called without an active
exception", exit 134) after doing its work. ``read_neighbors`` hands Arrow a buffer Arrow
allocated instead (formats.read_whole).
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nsdist
from nsdist import formats, runs, storage

WORDS, DIM, K, PARTS = 2000, 16, 10, 2
PROCESSES, AT_ONCE = 24, 4

READER = """
import sys
import nsdist

out = sys.argv[1]
emb = nsdist.load(out)
table = nsdist.read_neighbors(out)
assert table.num_rows == len(emb) * {k}, (table.num_rows, len(emb))
"""


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> str:
    """An output with one published run and its top-k table in PARTS parts (no training)."""
    out = str(tmp_path_factory.mktemp("reader-exit") / "out")
    rng = np.random.default_rng(0)
    words = pa.array([f"w{i}" for i in range(WORDS)], pa.string())
    vectors = rng.standard_normal((WORDS, DIM)).astype(np.float32)
    counts = np.arange(WORDS, 0, -1, dtype=np.int64)
    run_id = runs.new_run_id()
    run = runs.run_url(out, run_id)
    runs.claim_run(out, run_id)
    files = formats.write_run_files(run, words, counts, vectors, vectors.copy())
    for part, lo in enumerate(range(0, WORDS, WORDS // PARTS)):
        idx = rng.integers(0, WORDS, (WORDS // PARTS, K))
        scores = -np.sort(-rng.random((WORDS // PARTS, K)), axis=1).astype(np.float32)
        name = formats.neighbors_part(part)
        files[name] = formats.write_neighbors(storage.join(run, name), formats.neighbors_table(words, lo, idx, scores))
    runs.publish(out, run_id, {"created": "2026-01-01T00:00:00Z", "files": files,
                                  "corpus": {"vocab_size": WORDS}, "config": {"train": {"dim": DIM}}})
    return out


def test_arrow_holds_nothing_of_python_once_read_table_returns(published, monkeypatch):
    """The cause, in this process: what read_neighbors hands ``pq.read_table`` is no longer
    referenced by Arrow when the call returns. An fsspec file handed to it still is after about one
    call in three (a pool thread has yet to drop it): 40 calls all but surely catch that."""
    read_table = pq.read_table
    late = []

    def checking(source, *args, **kwargs):
        before = sys.getrefcount(source)
        table = read_table(source, *args, **kwargs)
        late.append(sys.getrefcount(source) - before)  # holds the GIL: no pool thread lets go meanwhile
        return table

    monkeypatch.setattr(pq, "read_table", checking)
    for _ in range(40 // PARTS):
        assert nsdist.read_neighbors(published).num_rows == WORDS * K
    assert len(late) == 40 and not any(late), f"Arrow still held the source after {sum(map(bool, late))} of 40 reads"


def _read_in_fresh_process(out: str) -> subprocess.CompletedProcess:
    # The nsdist under test, whichever tree it was imported from.
    root = os.path.dirname(os.path.dirname(os.path.abspath(nsdist.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", READER.format(k=K), out], capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_read_path_exits_0_in_every_fresh_process(published):
    """What a scheduled job does: load the latest model, read its top-k table, exit; a few
    processes at a time. An abort needs a pool thread to hold a Python file as the interpreter
    exits, which is rare in any one process (and depends on the machine's load): the test above
    is the one that catches the cause every time."""
    with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
        done = list(pool.map(_read_in_fresh_process, [published] * PROCESSES))
    failed = [(p.returncode, p.stderr[-2000:]) for p in done if p.returncode != 0 or "terminate called" in p.stderr]
    assert not failed, f"{len(failed)} of {PROCESSES} reader processes failed: {failed[:3]}"
