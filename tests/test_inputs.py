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
