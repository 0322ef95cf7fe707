"""float32 rows as text, byte for byte as C's ``printf("%.9g")`` (Python's ``"%.9g" % x``) writes
each number, compiled: the word2vec text format (``vectors.txt``) spends about 12 bytes of text
on each 4-byte float, and formatting them one Python float at a time took most of the time of
writing a model's outputs (10,000 x 128 floats: 0.32 s, against 0.07-0.09 s here).

Nine significant digits identify every float32, so the text reads back to the same bits. A
number's digits come from float64 arithmetic, which is exact to about 3e-7 of the last digit;
where the digit after the ninth is within 1e-5 of a tie (about 1 number in 50,000), the row
is left to Python's formatting (``text_rows`` returns it in ``redo``), so the bytes are always
printf's. Pure functions: no IO and no Dask.
"""

from __future__ import annotations

import math

import numba
import numpy as np

WIDTH = 16  # bytes a number takes at most: "-1.23456789e-45", "-0.000123456789"
_POW10 = 10.0 ** np.arange(23)  # exact in float64


def text_rows(rows: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's numbers as ``"%.9g"`` writes them, separated by single spaces: the text of row
    i is ``text[ends[i - 1]:ends[i]]`` (from 0 for row 0), except the rows in ``redo`` (a
    number near a rounding tie, or not finite), whose text is empty: format those in Python.
    ``out``: a buffer to write into (uint8, at least ``WIDTH`` bytes per number; ``text`` is
    then a view of it), so that a caller formatting rows a block at a time reuses one.

    >>> text, ends, redo = text_rows(np.array([[0.1, -2.5e-7, 1e10], [3, 0, 123456.7]], np.float32))
    >>> text[:ends[0]].tobytes(), text[ends[0]:ends[1]].tobytes(), redo.tolist()
    (b'0.100000001 -2.49999999e-07 1e+10', b'3 0 123456.703', [])
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    text = np.empty(rows.size * WIDTH, np.uint8) if out is None or len(out) < rows.size * WIDTH else out
    ends = np.empty(len(rows), np.int64)
    redo = np.zeros(len(rows), np.bool_)
    _rows(rows, _POW10, text, ends, redo)
    return text, ends, np.flatnonzero(redo)


@numba.njit(cache=True, nogil=True)
def _rows(rows, pow10, text, ends, redo):  # pragma: no cover - compiled
    at = 0
    digits = np.empty(9, np.uint8)
    for i in range(rows.shape[0]):
        start = at
        for j in range(rows.shape[1]):
            if j:
                text[at] = 32  # " "
                at += 1
            at = _number(np.float64(rows[i, j]), pow10, digits, text, at)
            if at < 0:
                break
        if at < 0:
            redo[i] = True
            at = start
        ends[i] = at


@numba.njit(cache=True, nogil=True, inline="always")
def _scaled(x, k, pow10):
    """x * 10**k, rounded once or twice (10**k is exact up to 10**22, within an ulp beyond)."""
    if k >= 0:
        return x * (pow10[k] if k <= 22 else 10.0 ** k)
    return x / (pow10[-k] if -k <= 22 else 10.0 ** -k)


@numba.njit(cache=True, nogil=True, inline="always")
def _number(x, pow10, digits, text, at):  # pragma: no cover - compiled
    """Write ``x`` at ``text[at:]`` as "%.9g" does; the position after it, or -1 where float64
    cannot tell how the ninth digit rounds (or x is not finite)."""
    if not np.isfinite(x):
        return -1
    if x < 0 or (x == 0 and np.signbit(x)):
        text[at] = 45  # "-"
        at += 1
        x = -x
    if x == 0:
        text[at] = 48
        return at + 1
    # The decimal exponent from the binary one (x in [2**(b - 1), 2**b)): this or one less.
    b = math.frexp(x)[1]
    e = int(math.floor((b - 1) * 0.3010299956639812))
    y = _scaled(x, 8 - e, pow10)
    if y >= 1e9:
        e += 1
        y = _scaled(x, 8 - e, pow10)
    elif y < 1e8:
        e -= 1
        y = _scaled(x, 8 - e, pow10)
    n = np.floor(y)
    frac = y - n
    if abs(frac - 0.5) < 1e-5:
        return -1
    m = np.uint32(n) + np.uint32(1 if frac > 0.5 else 0)  # 32 bits: divisions by 10 twice as fast
    if m >= 1_000_000_000:  # 9.999999995 and up round to the next power of ten
        m = np.uint32(100_000_000)
        e += 1
    for d in range(8, -1, -1):
        digits[d] = m % np.uint32(10)
        m //= np.uint32(10)
    last = 8  # the last significant digit: %g drops trailing zeros
    while last > 0 and digits[last] == 0:
        last -= 1
    if e < -4 or e >= 9:  # d.ddde+XX
        text[at] = 48 + digits[0]
        at += 1
        if last > 0:
            text[at] = 46  # "."
            at += 1
            for d in range(1, last + 1):
                text[at] = 48 + digits[d]
                at += 1
        text[at] = 101  # "e"
        text[at + 1] = 45 if e < 0 else 43
        at += 2
        a = -e if e < 0 else e
        if a >= 100:
            text[at] = 48 + a // 100
            at += 1
        text[at] = 48 + (a // 10) % 10
        text[at + 1] = 48 + a % 10
        return at + 2
    if e >= 0:  # ddd.ddd
        for d in range(e + 1):
            text[at] = 48 + digits[d]
            at += 1
        if last > e:
            text[at] = 46
            at += 1
            for d in range(e + 1, last + 1):
                text[at] = 48 + digits[d]
                at += 1
        return at
    text[at] = 48  # 0.000ddd
    text[at + 1] = 46
    at += 2
    for _ in range(-e - 1):
        text[at] = 48
        at += 1
    for d in range(last + 1):
        text[at] = 48 + digits[d]
        at += 1
    return at
