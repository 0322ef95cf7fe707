"""The evaluation's input files: analogy questions, word pairs, cluster labels and held-out
sessions (node labels and edge lists: ``graph``).

The line parsers take any iterable of lines, e.g. an open file, and are strict: a malformed line
is a ``ValueError`` naming its 1-based line number, instead of being silently skipped as gensim
does, because a silently shrunken benchmark makes scores incomparable between runs. The file
readers (``read_*``) take a URL (local or ``s3://``) and raise ``DataError`` naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..corpus import is_parquet
from ..errors import DataError
from ..formats import read_whole
from ..graph.edges import read_edges as read_edge_block
from ..graph.edges import text_edges

# A text edge list is read as one block: the evaluation holds all its edges anyway.
WHOLE_FILE = 2**62

def _text_lines(lines: Iterable[str | bytes]) -> Iterable[tuple[int, str]]:
    """Yield ``(1-based line number, text)``; bytes are decoded as UTF-8.

    Files opened in binary mode are accepted because gensim reads its
    benchmark files that way; a UTF-8 byte-order mark on the first line is
    dropped so it cannot end up glued to the first word.
    """
    for line_no, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        if line_no == 1:
            line = line.lstrip("\ufeff")
        yield line_no, line


def read_analogies(lines: Iterable[str]) -> list[tuple[str, str, str, str, str]]:
    """Parse analogy questions in the ``questions-words.txt`` format.

    Parameters
    ----------
    lines : iterable of str (or bytes)
        Lines such as an open file.  ``: name`` starts a section; every other
        non-blank line is a question ``a b c d``, meaning *a is to b as c is
        to d*.

    Returns
    -------
    list of (section, a, b, c, d)
        One tuple per question, words kept in their original case.

    Raises
    ------
    ValueError
        For a question before the first section header, a question that does
        not have exactly four words, or a header without a name.  The message
        names the 1-based line number and the expected format.

    Examples
    --------
    >>> read_analogies([": capital", "athens greece berlin germany", "",
    ...                 ": gender", "king queen man woman"])
    [('capital', 'athens', 'greece', 'berlin', 'germany'), ('gender', 'king', 'queen', 'man', 'woman')]
    >>> read_analogies([": s", "a b c"])
    Traceback (most recent call last):
    ...
    ValueError: line 2: expected an analogy 'a b c d' (4 whitespace-separated words) or a ': section' header, got 3 words: 'a b c'
    """
    questions: list[tuple[str, str, str, str, str]] = []
    section: str | None = None
    for line_no, line in _text_lines(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith(":"):
            # gensim strips ': ' with lstrip(': '); stripping one ':' and then
            # whitespace gives the same name for every well-formed header.
            section = text[1:].strip()
            if not section:
                raise ValueError(
                    f"line {line_no}: section header has no name; expected ': section name'"
                )
            continue
        parts = text.split()
        if len(parts) != 4:
            raise ValueError(
                f"line {line_no}: expected an analogy 'a b c d' (4 whitespace-separated words) "
                f"or a ': section' header, got {len(parts)} words: {text!r}"
            )
        if section is None:
            raise ValueError(
                f"line {line_no}: analogy {text!r} appears before any ': section' header; "
                "expected a ': section name' line first"
            )
        a, b, c, d = parts
        questions.append((section, a, b, c, d))
    return questions


def read_pairs(lines: Iterable[str]) -> list[tuple[str, str, float]]:
    """Parse word-similarity judgements in the wordsim-353 ``.tsv`` style.

    Parameters
    ----------
    lines : iterable of str (or bytes)
        Lines ``w1<TAB>w2<TAB>score``.  A line without a tab is split on
        any whitespace instead.  Blank lines and lines starting with ``#`` are
        ignored.

    Returns
    -------
    list of (w1, w2, score)

    Raises
    ------
    ValueError
        For a line without exactly three fields or whose score is not a finite
        number; the message names the 1-based line number.

    Examples
    --------
    >>> read_pairs(["# word1 word2 score", "tiger\\tcat\\t7.35", "book paper 7.46"])
    [('tiger', 'cat', 7.35), ('book', 'paper', 7.46)]
    >>> read_pairs(["tiger\\tcat\\thigh"])
    Traceback (most recent call last):
    ...
    ValueError: line 1: score 'high' is not a finite number; expected 'word1<TAB>word2<TAB>score'
    """
    pairs: list[tuple[str, str, float]] = []
    for line_no, line in _text_lines(lines):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # Tab is the canonical separator and allows a multi-word entry;
        # whitespace splitting is the fallback for hand-written files.
        parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ValueError(
                f"line {line_no}: expected 'word1<TAB>word2<TAB>score' (3 fields), "
                f"got {len(parts)} fields: {text!r}"
            )
        w1, w2, raw = parts
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(
                f"line {line_no}: score {raw!r} is not a finite number; "
                "expected 'word1<TAB>word2<TAB>score'"
            )
        pairs.append((w1, w2, score))
    return pairs


def read_clusters(lines: Iterable[str]) -> dict[str, str]:
    """Parse ``word<TAB>label`` lines into {word: label}: a labels file (``parse_labels``), each
    word's last label kept; fields after the second are allowed (``items.tsv`` of a planted
    clickstream is a clusters file).

    >>> read_clusters(["a\\tx\\n", "\\n", "b\\tx\\textra\\n"])
    {'a': 'x', 'b': 'x'}
    """
    return dict(parse_labels(lines, "clusters", extra_fields=True))


def as_sessions(sessions) -> pa.ListArray:
    """Sessions as one Arrow list<string> array; integer ids become their decimal strings."""
    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    if not isinstance(sessions, pa.Array):
        sessions = pa.array([list(map(str, s)) if s is not None else None for s in sessions],
                            pa.list_(pa.string()))
    kind = sessions.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not (
            pa.types.is_integer(kind.value_type) or pa.types.is_string(kind.value_type)
            or pa.types.is_large_string(kind.value_type)):
        raise ValueError(f"sessions must be lists of item ids (integers or strings), got {kind}")
    return pc.cast(sessions, pa.list_(pa.string()))


def _parquet_sessions(f, url: str, column: str) -> pa.ListArray:
    """The ``column`` of a Parquet file of sessions; ValueError naming the problem."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except pa.ArrowInvalid as e:
        raise ValueError(f"not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise ValueError(f"no column {column!r} (its columns: {', '.join(names)}); "
                         f"write the sessions' items as a list column named {column!r}")
    return as_sessions(pf.read(columns=[column]).column(column))


def read_sessions(url: str, column: str = "items", storage_options=None) -> pa.ListArray:
    """Read sessions for :func:`next_item_eval` from a Parquet or text file (local or ``s3://``).

    Parameters
    ----------
    url : str
        A ``.parquet`` (``.parq``, ``.pq``) file with a list column of item
        ids, integers or strings, one row per session; or a text file (any
        other name, optionally compressed), one session per line, item ids
        separated by whitespace, blank lines ignored.
    column : str, default "items"
        The Parquet column holding each session's items in click order.

    Returns
    -------
    pyarrow.ListArray
        list<string>: integer ids as their decimal strings.

    Raises
    ------
    DataError
        The file is not readable Parquet, lacks ``column``, or the column does
        not hold lists of ids; the message names the file and the fix.
    """

    try:
        if is_parquet(url):  # from a buffer Arrow allocated: no Python file for Arrow's threads (formats.read_whole)
            data = read_whole(url, storage.size(url, storage_options), storage_options)
            return _parquet_sessions(pa.BufferReader(data), url, column)
        return pa.array([line.split() for line in storage.lines(url, storage_options) if line.strip()],
                        pa.list_(pa.string()))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"sessions file {url!r}: {e}") from None


def read_text(url: str, parse):
    """``parse`` of the lines of the file at ``url``; a malformed file is a DataError naming it."""

    try:
        return parse(storage.lines(url))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{url}: {e}; fix the file or pass another") from None


# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------


def _fields(text: str) -> list[str]:
    """Tab-separated fields when the line has a tab, else whitespace-separated ones."""
    return [p.strip() for p in text.split("\t")] if "\t" in text else text.split()


def parse_labels(lines: Iterable[str | bytes], name: str = "labels", extra_fields: bool = False
                 ) -> list[tuple[str, str]]:
    """Parse ``node<TAB>label`` lines (or ``node label``) into ``(node, label)`` pairs; with
    ``extra_fields``, fields after the second are allowed and ignored.

    A node on several lines has several labels (multi-label data).  Blank
    lines and lines starting with ``#`` or ``%`` are skipped; repeated pairs
    are kept once.

    Raises
    ------
    ValueError
        A line without exactly two fields; the message starts ``name:line:``.

    Examples
    --------
    >>> parse_labels(["# node label", "4294967297\\t3", "", "7 a", "7 b", "7\\ta"])
    [('4294967297', '3'), ('7', 'a'), ('7', 'b')]
    >>> parse_labels(["7\\ta\\tb"], "labels.tsv")
    Traceback (most recent call last):
    ...
    ValueError: labels.tsv:1: expected 'node<TAB>label' (2 fields), got 3 fields: '7\\ta\\tb'
    """
    pairs: dict[tuple[str, str], None] = {}
    expected = "'word<TAB>label' (2 or more fields)" if extra_fields else "'node<TAB>label' (2 fields)"
    for node, label in _records(lines, name, expected, _fields, None if extra_fields else (2,)):
        pairs[(node, label)] = None
    return list(pairs)


def _records(lines, name: str, expected: str, split, sizes: tuple[int, ...]):
    """The first two fields of each line that is not blank or a comment (``#``, ``%``); a line
    whose field count is not in ``sizes`` (None: fewer than 2) raises ValueError
    ``name:line: expected ...``."""
    for line_no, line in _text_lines(lines):
        text = line.strip()
        if not text or text.startswith(("#", "%")):
            continue
        parts = split(text)
        if (len(parts) < 2 if sizes is None else len(parts) not in sizes) or not all(parts[:2]):
            raise ValueError(f"{name}:{line_no}: expected {expected}, got {len(parts)} fields: {text[:80]!r}")
        yield parts[0], parts[1]


def read_labels(url: str, storage_options=None) -> list[tuple[str, str]]:
    """Read a labels file (local or ``s3://``, optionally compressed): see :func:`parse_labels`.

    Raises
    ------
    DataError
        A malformed line (``file:line`` and the expected format) or a file
        that is not UTF-8 text.
    """
    try:
        return parse_labels(storage.lines(url, storage_options), url)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{e}; fix the file or pass another" if str(e).startswith(url)
                        else f"{url}: {e}; expected UTF-8 'node<TAB>label' lines") from None


def parse_edges(lines: Iterable[str | bytes], name: str = "edges") -> pa.Table:
    """``src dst [weight]`` lines, parsed as training parses an edge list (``graph.text_edges``),
    into a table of string columns ``src``, ``dst``: blank lines and lines starting with ``#`` or
    ``%`` (SNAP's and Matrix Market's headers) are skipped, weights are not read.

    >>> parse_edges(["# FromNodeId ToNodeId", "1 2", "2\\t4294967297", "1 2 0.5"]).to_pydict()
    {'src': ['1', '2', '1'], 'dst': ['2', '4294967297', '2']}
    """
    tokens = pa.array([line.decode() if isinstance(line, bytes) else line for line in lines], pa.string())
    edges = text_edges(pc.utf8_split_whitespace(tokens), f"edge list {name!r}", weighted=False)
    return pa.table({"src": pc.cast(edges.src, pa.string()), "dst": pc.cast(edges.dst, pa.string())})


def read_edges(url: str, storage_options=None) -> pa.Table:
    """Read an edge list (local or ``s3://``) with training's reader (``graph.read_edges``):
    Parquet with ``src`` and ``dst`` columns (integer or string ids), or text with one ``src dst
    [weight]`` edge per line (any other name, optionally compressed); weights are not read.

    Returns
    -------
    pyarrow.Table
        String columns ``src`` and ``dst``; integer ids as their decimal strings.

    Raises
    ------
    DataError
        Unreadable Parquet, missing or non-id columns, or a malformed text line (file and line).
    """
    from ..config import GraphConfig
    from ..graph.corpus import plan_edge_blocks

    files = [(url, storage.size(url, storage_options))]
    blocks = plan_edge_blocks(files, storage_options, WHOLE_FILE, GraphConfig(), flag=f"edge file {url}")
    parts = [read_edge_block(b, storage_options, weight=None) for b in blocks]
    column = lambda name: pa.chunked_array([pc.cast(getattr(p, name), pa.string()) for p in parts],  # noqa: E731
                                           pa.string()).combine_chunks()
    return pa.table({"src": column("src"), "dst": column("dst")})


# ---------------------------------------------------------------------------
# Impressions
# ---------------------------------------------------------------------------

IMPRESSION_FORMATS = ("'history<TAB>shown<TAB>clicked' (ids separated by spaces, flags 0/1), "
                      "'history<TAB>id-1 id-0 ...' or MIND's behaviors.tsv "
                      "'id<TAB>user<TAB>time<TAB>history<TAB>id-1 id-0 ...'")


def _flags(text: str) -> list[bool]:
    """'1 0 0' -> [True, False, False]; ValueError for anything but 0 and 1."""
    flags = text.split()
    bad = next((f for f in flags if f not in ("0", "1")), None)
    if bad is not None:
        raise ValueError(f"click flag {bad[:40]!r} is not 0 or 1")
    return [f == "1" for f in flags]


def _mind_impressions(text: str) -> tuple[list[str], list[bool]]:
    """MIND's impressions field 'N1-1 N2-0' -> (['N1', 'N2'], [True, False])."""
    shown, clicked = [], []
    for token in text.split():
        item, dash, flag = token.rpartition("-")
        if not (dash and item and flag in ("0", "1")):
            raise ValueError(f"impression {token[:40]!r} is not 'item-1' (clicked) or 'item-0' (not clicked)")
        shown.append(item)
        clicked.append(flag == "1")
    return shown, clicked


def parse_impressions(lines: Iterable[str | bytes]) -> pa.Table:
    """Parse impressions from text lines into ``history``, ``shown`` (list<string>) and
    ``clicked`` (list<bool>). A line is tab-separated, in one of three forms told apart by their
    field count: ``history<TAB>shown<TAB>clicked`` (ids separated by spaces, flags 0/1, one per
    shown item), ``history<TAB>impressions`` with MIND's impressions (``N12-1 N7-0``: each shown
    item with its flag), or a MIND ``behaviors.tsv`` line (``id<TAB>user<TAB>time<TAB>history
    <TAB>impressions``). A history may be empty; blank lines are skipped.

    Raises
    ------
    ValueError
        A malformed line: ``line N: ...`` and what it holds.

    Examples
    --------
    >>> t = parse_impressions(["a b\\tc d\\t0 1", "\\tc-1 e-0", "I1\\tU1\\t11/15/2019 8:55:22 AM\\ta\\td-0 c-1"])
    >>> t["history"].to_pylist(), t["shown"].to_pylist(), t["clicked"].to_pylist()
    ([['a', 'b'], [], ['a']], [['c', 'd'], ['c', 'e'], ['d', 'c']], [[False, True], [True, False], [False, True]])
    >>> parse_impressions(["a\\tc d\\t0"])
    Traceback (most recent call last):
    ...
    ValueError: line 1: 2 items shown but 1 click flags
    """
    history, shown, clicked = [], [], []
    for line_no, line in _text_lines(lines):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split("\t")
        try:
            if len(fields) == 3:
                items, flags = fields[1].split(), _flags(fields[2])
                if len(items) != len(flags):
                    raise ValueError(f"{len(items)} items shown but {len(flags)} click flags")
            elif len(fields) in (2, 5):
                items, flags = _mind_impressions(fields[-1])
            else:
                raise ValueError(f"{len(fields)} tab-separated fields: expected {IMPRESSION_FORMATS}")
            if not items:
                raise ValueError("no items shown")
        except ValueError as e:
            raise ValueError(f"line {line_no}: {e}") from None
        history.append(fields[-2].split() if len(fields) != 3 else fields[0].split())
        shown.append(items)
        clicked.append(flags)
    strings = pa.list_(pa.string())
    return pa.table({"history": pa.array(history, strings), "shown": pa.array(shown, strings),
                     "clicked": pa.array(clicked, pa.list_(pa.bool_()))})


def _parquet_impressions(f, sessions: bool) -> pa.Table:
    """Impressions from a Parquet file: ``history``, ``shown``, ``clicked`` columns; with
    ``sessions``, also a sessions file (``items`` clicked, ``impressions`` shown and not)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except pa.ArrowInvalid as e:
        raise ValueError(f"not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if {"history", "shown", "clicked"} <= set(names):
        table = pf.read(columns=["history", "shown", "clicked"])
        history, shown = (as_sessions(table[c]) for c in ("history", "shown"))
        return pa.table({"history": pc.fill_null(history, pa.scalar([], history.type)), "shown": shown,
                         "clicked": _clicked_column(table["clicked"].combine_chunks(), shown)})
    if sessions and "items" in names:
        table = pf.read(columns=[c for c in ("items", "impressions") if c in names])
        items = as_sessions(table["items"])
        other = as_sessions(table["impressions"]) if "impressions" in names else None
        return sessions_as_impressions(items, other)
    want = "'history', 'shown' and 'clicked'" + (" (or a sessions file's 'items' and 'impressions')" if sessions else "")
    raise ValueError(f"no columns {want} (its columns: {', '.join(names)})")


def _clicked_column(clicked: pa.Array, shown: pa.ListArray) -> pa.ListArray:
    """The ``clicked`` column as list<bool>, checked: 0/1 (or bool) flags, one per shown item."""
    kind = clicked.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not (
            pa.types.is_boolean(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise ValueError(f"column 'clicked' is {kind}: expected list<bool> or a list of 0/1 integers")
    if shown.null_count or clicked.null_count:
        raise ValueError(f"row {pc.index(pc.is_null(shown if shown.null_count else clicked), True).as_py() + 1}: "
                         "no items shown ('shown' or 'clicked' is null)")
    lengths = pc.not_equal(pc.list_value_length(shown), pc.list_value_length(clicked))
    if pc.any(lengths).as_py():
        row = pc.index(lengths, True).as_py()
        raise ValueError(f"row {row + 1}: {len(shown[row])} items shown but {len(clicked[row])} click flags")
    flags = clicked.flatten()
    if not pa.types.is_boolean(kind.value_type):
        if flags.null_count or not pc.all(pc.is_in(flags, pa.array([0, 1], flags.type))).as_py():
            raise ValueError("column 'clicked' holds flags other than 0 and 1")
        flags = pc.cast(flags, pa.bool_())
    elif flags.null_count:
        raise ValueError("column 'clicked' holds null flags")
    return pa.ListArray.from_arrays(pc.cast(clicked.offsets, pa.int32()), flags)


def sessions_as_impressions(items: pa.ListArray, impressions: pa.ListArray | None = None) -> pa.Table:
    """Sessions as impressions for the priors: each session shows its clicked ``items`` (clicked)
    and its ``impressions`` (shown, not clicked); no history.

    >>> sessions_as_impressions(pa.array([["a", "b"]]), pa.array([["c"]])).to_pylist()
    [{'history': [], 'shown': ['a', 'b', 'c'], 'clicked': [True, True, False]}]
    """
    rows = [(s or [], []) for s in items.to_pylist()]
    if impressions is not None:
        rows = [(s, i or []) for (s, _), i in zip(rows, impressions.to_pylist())]
    strings = pa.list_(pa.string())
    return pa.table({"history": pa.array([[] for _ in rows], strings),
                     "shown": pa.array([s + i for s, i in rows], strings),
                     "clicked": pa.array([[True] * len(s) + [False] * len(i) for s, i in rows],
                                         pa.list_(pa.bool_()))})


def read_impressions(url: str, storage_options=None, sessions: bool = False) -> pa.Table:
    """Read impressions (local or ``s3://``) for ``impressions.impression_eval``.

    Parameters
    ----------
    url : str
        A Parquet file (``.parquet``, ``.parq``, ``.pq``) with list columns ``history`` (ids,
        integers or strings; null or empty: no history), ``shown`` and ``clicked`` (bool or
        0/1, one per shown item), one row per impression; or a text file of
        :func:`parse_impressions` lines (optionally compressed).
    sessions : bool
        Also accept a sessions file (Parquet ``items``, optional ``impressions``; text: one
        session's clicks per line), read as impressions without history
        (:func:`sessions_as_impressions`): training data for the priors.

    Returns
    -------
    pyarrow.Table
        ``history``, ``shown`` (list<string>: integer ids as their decimal strings) and
        ``clicked`` (list<bool>).

    Raises
    ------
    DataError
        Unreadable, missing columns, a malformed line or row: the file, the line or row, the fix.
    """
    try:
        if is_parquet(url):
            with storage.open_read(url, storage_options) as f:
                return _parquet_impressions(f, sessions)
        return parse_impressions(storage.lines(url, storage_options))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"impressions file {url!r}: {e}; write one impression per row or line: Parquet lists "
                        f"'history', 'shown', 'clicked', or text {IMPRESSION_FORMATS}") from None
