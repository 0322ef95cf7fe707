"""Edge lists -> node table -> compressed adjacency (CSR) -> random walks (DeepWalk, node2vec).

The graph source of training "sentences": each walk is a sentence of node indices. Every
function here is pure: a block's edges, the merged node table, the CSR and the walks depend on
their inputs only, so a retried or re-split task gives the same bits.

Data flow (a tree reduction and one gather, then walks wherever the CSR is)::

    read_edges(block)                -> Edges            one per block
    block_nodes(edges)               -> sorted ids       merge_nodes(...) in a tree -> nodes
    edge_ids(edges, nodes, directed) -> (src, dst, w)    int32 node indices, self-loops dropped
    out_degrees(src, n)              -> int64[n]         summed across blocks
    build_csr(parts, n, degrees)     -> CSR              rows sorted, duplicates merged, sampler tables
    walk_starts(n, walks, lo, hi)    -> (starts, walk)   a task's slice of the shuffled walk order
    random_walks(csr, starts, walk)  -> (ids, offsets)   one walk per start, as encode.Shard's arrays

Edge files are text (``src dst [weight]`` per line; blank lines and lines starting with ``#``
or ``%`` are skipped, as SNAP and Matrix Market write their headers) or Parquet (``src``,
``dst`` and optional ``weight`` columns). Node ids are int64 from integer Parquet columns and
strings otherwise; when one block has string ids, integer ids become their decimal strings.

node2vec walks are rejection-sampled as in KnightKing: O(edges) memory like PecanPy's SparseOTF
(which instead computes the current node's whole biased distribution at every step), never the
O(sum of squared degrees) of precomputed second-order tables (PecanPy's PreComp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .corpus import Block, _parquet_file, read_tokens
from .errors import ConfigError, DataError
from .noise import _vose

MAX_NODES = 2**31 - 1  # node indices are int32 in the CSR and the walks


@dataclass(frozen=True)
class Edges:
    """The edges of one block, in file order: ``src[i] -> dst[i]`` with weight ``weight[i]``."""

    src: pa.Array  # int64 or large_string node ids
    dst: pa.Array  # same type as src
    weight: np.ndarray | None  # float32, positive and finite; None: every edge weighs 1

    def __len__(self) -> int:
        return len(self.src)


# Reading ---------------------------------------------------------------------------------------

def read_edges(block: Block, storage_options=None, src: str = "src", dst: str = "dst",
               weight: str | None = "weight") -> Edges:
    """Read one block of an edge list (a text byte range or a Parquet row group).

    Text: ``src dst [weight]`` per line, whitespace-separated; ids stay strings. Parquet:
    integer id columns give int64 ids, string columns string ids; a missing ``weight`` column
    means unweighted. ``weight=None`` ignores weights (a text line's third field too). Edges
    with 2 fields next to edges with 3 weigh 1.

    >>> import tempfile, os; path = os.path.join(tempfile.mkdtemp(), "g.txt")
    >>> _ = open(path, "w").write("# a comment\\na b 2.5\\n\\nb c\\n")
    >>> e = read_edges(Block(path))
    >>> e.src.to_pylist(), e.dst.to_pylist(), e.weight.tolist()
    (['a', 'b'], ['b', 'c'], [2.5, 1.0])
    """
    if block.parquet:
        return _read_parquet_edges(block, storage_options, src, dst, weight)
    return text_edges(read_tokens(block, storage_options), _where(block, storage_options), weight is not None)


def _where(block: Block, storage_options) -> str:
    """How a text block is named in messages (line numbers count from the block's start)."""
    url = storage.scrub(block.url, storage_options)
    return f"edge list {url!r}" + (f" (block at byte {block.offset})" if block.offset else "")


def text_edges(lines: pa.ListArray, where: str = "edge list", weighted: bool = True) -> Edges:
    """Edges from the token lists of a text block's lines (``corpus.read_tokens``).

    >>> e = text_edges(pa.array([["%", "header"], ["1", "2"], [], ["2", "3", "0.5"]]))
    >>> e.src.to_pylist(), e.dst.to_pylist(), e.weight.tolist()
    (['1', '2'], ['2', '3'], [1.0, 0.5])
    >>> text_edges(pa.array([["1", "2", "x"]]), "edge list 'g.txt'")
    Traceback (most recent call last):
    ...
    nsdist.errors.DataError: edge list 'g.txt' line 1: weight 'x' of '1 2 x' is not a positive finite number; give each weighted edge a weight > 0 (or ignore the weights)
    """
    lengths = pc.list_value_length(lines).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = pc.cast(lines.offsets, pa.int64()).to_numpy()[:-1] - lines.offsets[0].as_py()
    flat = pc.cast(pc.list_flatten(lines), pa.large_string())
    first = pc.take(flat, pa.array(starts[lengths > 0]))
    comment = np.zeros(len(lengths), bool)
    comment[lengths > 0] = pc.or_(pc.starts_with(first, "#"), pc.starts_with(first, "%")).to_numpy(
        zero_copy_only=False)
    data = ~comment & (lengths > 0)
    bad = np.flatnonzero(data & ((lengths < 2) | (lengths > 3)))
    if len(bad):
        i = bad[0]
        raise DataError(f"{where} line {i + 1}: {_snippet(lines[i])!r} has {lengths[i]} fields; write one edge "
                        "per line as 'src dst' or 'src dst weight' (comment lines start with # or %)")
    rows = starts[data]
    edges_src, edges_dst = pc.take(flat, pa.array(rows)), pc.take(flat, pa.array(rows + 1))
    has_w = lengths[data] == 3
    if not weighted or not has_w.any():
        return Edges(edges_src, edges_dst, None)
    w = np.ones(len(rows), np.float32)
    text = pc.take(flat, pa.array(rows[has_w] + 2))
    values = _parse_weights(text)
    w[has_w] = values
    wrong = ~(np.isfinite(values) & (values > 0))
    if wrong.any():
        i = np.flatnonzero(data)[np.flatnonzero(has_w)[np.flatnonzero(wrong)[0]]]
        raise DataError(f"{where} line {i + 1}: weight {lines[i][2].as_py()!r} of {_snippet(lines[i])!r} is not a "
                        "positive finite number; give each weighted edge a weight > 0 (or ignore the weights)")
    return Edges(edges_src, edges_dst, w)


def _parse_weights(text: pa.Array) -> np.ndarray:
    """Weights as float32; NaN for a field that is no number (the caller reports its line)."""
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # rare: find the culprits one by one
        values = np.array([_float_or_nan(t) for t in text.to_pylist()])
    with np.errstate(over="ignore"):  # beyond float32: inf, reported as not finite
        return values.astype(np.float32)


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _snippet(line: pa.Scalar, limit: int = 60) -> str:
    text = " ".join(line.as_py())
    return text if len(text) <= limit else text[:limit] + "..."


def _read_parquet_edges(block: Block, storage_options, src: str, dst: str, weight: str | None) -> Edges:
    url = storage.scrub(block.url, storage_options)
    with storage.open_read(block.url, storage_options) as f:
        pf = _parquet_file(f, block.url, storage_options)
        names = pf.schema_arrow.names
        missing = [c for c in (src, dst) if c not in names]
        if missing:
            raise DataError(f"edge file {url!r} has no column {missing[0]!r} (its columns: {', '.join(names)}); "
                            "name its source and target node id columns in src and dst")
        with_weight = weight is not None and weight in names
        table = pf.read_row_group(block.offset, columns=[src, dst] + ([weight] if with_weight else []))
    ids = [_id_column(table.column(c).combine_chunks(), c, url) for c in (src, dst)]
    if ids[0].type != ids[1].type:  # one integer column, one string column: compare as strings
        ids = [pc.cast(a, pa.large_string()) for a in ids]
    w = _weight_column(table.column(weight).combine_chunks(), weight, url) if with_weight else None
    return Edges(ids[0], ids[1], w)


def _id_column(arr: pa.Array, name: str, url: str) -> pa.Array:
    """A Parquet node id column as int64 or large_string; DataError for other types or nulls."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.dictionary_decode(), t.value_type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise DataError(f"edge file {url!r}: column {name!r} is {t}; node ids must be integers or strings")
    if arr.null_count:
        raise DataError(f"edge file {url!r}: column {name!r} has {arr.null_count} null node ids; drop those rows")
    if pa.types.is_integer(t):
        try:
            return pc.cast(arr, pa.int64())
        except pa.ArrowInvalid:
            raise DataError(f"edge file {url!r}: column {name!r} has ids above 2**63 - 1; write them as int64 "
                            "or strings") from None
    return pc.cast(arr, pa.large_string())


def _weight_column(arr: pa.Array, name: str, url: str) -> np.ndarray:
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        raise DataError(f"edge file {url!r}: weight column {name!r} is {arr.type}; write numbers (or set weight to "
                        "a numeric column, or to none)")
    w = pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False).astype(np.float32)
    wrong = ~(np.isfinite(w) & (w > 0))
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DataError(f"edge file {url!r}: weight {arr[i].as_py()!r} in row {i} of column {name!r} is not a "
                        "positive finite number; give each edge a weight > 0")
    return w


# The node table -------------------------------------------------------------------------------

def block_nodes(edges: Edges) -> pa.Array:
    """The distinct node ids of a block, sorted (``merge_nodes`` of its two columns).

    >>> block_nodes(Edges(pa.array([3, 1], pa.int64()), pa.array([1, 2], pa.int64()), None)).to_pylist()
    [1, 2, 3]
    """
    return merge_nodes(edges.src, edges.dst)


def merge_nodes(*arrays: pa.Array) -> pa.Array:
    """Sorted distinct ids of node arrays: int64 sorted numerically, strings by their UTF-8
    bytes. If any non-empty array holds strings, integer ids join as their decimal strings.
    Associative and order-free, so a tree reduction may group the blocks any way.

    >>> merge_nodes(pa.array([10, 9], pa.int64()), pa.array([9, 2], pa.int64())).to_pylist()
    [2, 9, 10]
    >>> merge_nodes(pa.array([10, 9], pa.int64()), pa.array(["b", "10"])).to_pylist()
    ['10', '9', 'b']
    """
    full = [a for a in arrays if len(a)]
    if not full:
        return pa.array([], pa.int64() if arrays and all(pa.types.is_integer(a.type) for a in arrays)
                        else pa.large_string())
    if all(pa.types.is_integer(a.type) for a in full):
        return pa.array(np.unique(np.concatenate([np.asarray(a, np.int64) for a in full])), pa.int64())
    joined = pc.unique(pa.concat_arrays([pc.cast(a, pa.large_string()) for a in full]))
    return pc.take(joined, pc.sort_indices(joined))


def node_type(nodes: pa.Array) -> str:
    """"int64" or "string": the type node ids come back as (``corpus.word_type``'s words).

    >>> node_type(pa.array([1], pa.int64())), node_type(pa.array(["a"]))
    ('int64', 'string')
    """
    return "int64" if pa.types.is_integer(nodes.type) else "string"


def edge_ids(edges: Edges, nodes: pa.Array, directed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A block's edges as int32 indices into the sorted node table ``nodes`` (which holds every
    id of the block): self-loops dropped (a walk that stays put teaches nothing), and each
    undirected edge given in both directions (the block's edges, then their reverses).

    >>> e = Edges(pa.array(["b", "a", "c"]), pa.array(["a", "a", "b"]), None)
    >>> s, d, w = edge_ids(e, pa.array(["a", "b", "c"]), directed=False)
    >>> s.tolist(), d.tolist(), w
    ([1, 2, 0, 1], [0, 1, 1, 2], None)
    """
    if len(nodes) > MAX_NODES:
        raise DataError(f"the graph has {len(nodes)} nodes, more than {MAX_NODES}; split it into components")
    src, dst = _lookup(edges.src, nodes), _lookup(edges.dst, nodes)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    w = None if edges.weight is None else np.asarray(edges.weight, np.float32)[keep]
    if not directed:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        w = None if w is None else np.concatenate([w, w])
    return src, dst, w


def _lookup(ids: pa.Array, nodes: pa.Array) -> np.ndarray:
    """Indices of ``ids`` in the sorted table ``nodes``; ValueError if one is missing."""
    if pa.types.is_integer(nodes.type):
        if not pa.types.is_integer(ids.type):
            raise ValueError("string node ids looked up in an integer node table: merge every block's nodes")
        table, values = np.asarray(nodes, np.int64), np.asarray(ids, np.int64)
        found = np.minimum(np.searchsorted(table, values), max(len(table) - 1, 0))
        if len(values) and not (len(table) and np.array_equal(table[found], values)):
            raise ValueError("a node id is missing from the node table: merge every block's nodes")
        return found.astype(np.int32)
    index = pc.index_in(pc.cast(ids, pa.large_string()), value_set=pc.cast(nodes, pa.large_string()))
    if index.null_count:
        raise ValueError("a node id is missing from the node table: merge every block's nodes")
    return index.to_numpy(zero_copy_only=False).astype(np.int32)


# The adjacency --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CSR:
    """A graph's out-neighbours: node v's are ``neighbors[offsets[v]:offsets[v + 1]]``, sorted
    by index, each once (duplicate edges merged into one of their summed weight).

    ``prob``/``alias`` are the weighted walk's per-row alias tables (``alias`` holds positions
    within the row) and ``totals`` each row's weight; all four are None when every edge weighs
    the same, since a constant weight changes no walk probability."""

    offsets: np.ndarray  # int64[n + 1]
    neighbors: np.ndarray  # int32[E]
    weights: np.ndarray | None = None  # float32[E]
    prob: np.ndarray | None = None  # float32[E]
    alias: np.ndarray | None = None  # int32[E]
    totals: np.ndarray | None = None  # float64[n]

    @property
    def nodes(self) -> int:
        return len(self.offsets) - 1

    @property
    def edges(self) -> int:
        return len(self.neighbors)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.offsets, self.neighbors, self.weights, self.prob, self.alias, self.totals)
                   if a is not None)


def csr_bytes(n: int, e: int, weighted: bool) -> int:
    """Bytes a worker holds for a CSR of ``n`` nodes and ``e`` adjacency entries (directed
    edges; an undirected edge is two), its sampler tables included. Building it needs, on top,
    the blocks' (src, dst, weight) parts and 8 bytes per entry before duplicates are merged.

    >>> csr_bytes(1000, 10000, weighted=False), csr_bytes(1000, 10000, weighted=True)
    (48008, 176008)
    """
    return 8 * (n + 1) + 4 * e + (12 * e + 8 * n if weighted else 0)


def out_degrees(src: np.ndarray, n: int) -> np.ndarray:
    """Edges leaving each of ``n`` nodes (duplicates counted): per block, summed across blocks.

    >>> out_degrees(np.array([0, 2, 2], np.int32), 4).tolist()
    [1, 0, 2, 0]
    """
    return np.bincount(src, minlength=n).astype(np.int64)


def build_csr(parts, n: int, degrees: np.ndarray | None = None) -> CSR:
    """The CSR of ``n`` nodes from the blocks' ``edge_ids`` triples (src, dst, weight), in
    block order; ``degrees``: their summed ``out_degrees`` when already known.

    A counting sort places each edge in its row (O(E) memory), then each row is sorted by
    neighbour and duplicates merged, their weights summed: an unweighted edge listed twice weighs
    2, as in a multigraph. The result does not depend on how the edges were cut into blocks.

    >>> parts = [(np.array([0, 0, 1]), np.array([2, 1, 2]), None), (np.array([0]), np.array([1]), None)]
    >>> g = build_csr(parts, 3)
    >>> g.offsets.tolist(), g.neighbors.tolist(), g.weights.tolist()
    ([0, 2, 3, 3], [1, 2, 2], [2.0, 1.0, 1.0])
    """
    parts = list(parts)
    if degrees is None:
        degrees = sum((out_degrees(s, n) for s, _, _ in parts), np.zeros(n, np.int64))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(degrees, out=offsets[1:])
    neighbors, weights = np.empty(offsets[-1], np.int32), np.empty(offsets[-1], np.float32)
    pos = offsets[:-1].copy()
    no_weights = np.zeros(0, np.float32)
    for s, d, w in parts:
        _scatter(np.asarray(s, np.int32), np.asarray(d, np.int32),
                 no_weights if w is None else np.asarray(w, np.float32), w is not None, pos, neighbors, weights)
    assert np.array_equal(pos, offsets[1:]), "degrees do not match the parts"
    merged = np.zeros(n + 1, np.int64)
    e = _sort_merge(offsets, neighbors, weights, merged)
    neighbors, weights = neighbors[:e].copy(), weights[:e].copy()  # drop the merged duplicates' room
    if e == 0 or np.all(weights == weights[0]):
        return CSR(merged, neighbors)
    prob, alias = np.ones(e, np.float32), np.zeros(e, np.int32)
    totals = np.zeros(n, np.float64)
    _alias_rows(merged, weights, prob, alias, totals)
    return CSR(merged, neighbors, weights, prob, alias, totals)


@numba.njit(cache=True, nogil=True)
def _scatter(src, dst, w, weighted, pos, neighbors, weights):  # pragma: no cover - compiled
    """Counting sort's placement: each edge into the next free slot of its source's row."""
    for i in range(len(src)):
        k = pos[src[i]]
        neighbors[k] = dst[i]
        weights[k] = w[i] if weighted else np.float32(1.0)
        pos[src[i]] = k + 1


@numba.njit(cache=True, nogil=True)
def _sort_merge(offsets, neighbors, weights, merged):  # pragma: no cover - compiled
    """Sort each row by neighbour (stable), merge equal neighbours (weights summed in float64)
    and pack the rows to the front; ``merged`` gets the new offsets. Returns the entry count."""
    k = 0
    for v in range(len(offsets) - 1):
        a, b = offsets[v], offsets[v + 1]
        row, w = neighbors[a:b], weights[a:b]
        ordered = True
        for i in range(1, b - a):
            if row[i] < row[i - 1]:
                ordered = False
                break
        if not ordered:  # copies: the packed output may overwrite the row
            order = np.argsort(row, kind="mergesort")
            row, w = row[order], w[order]
        i = 0
        while i < b - a:
            total = np.float64(w[i])
            j = i + 1
            while j < b - a and row[j] == row[i]:
                total += w[j]
                j += 1
            neighbors[k] = row[i]
            weights[k] = np.float32(total)
            k += 1
            i = j
        merged[v + 1] = k
    return k


@numba.njit(cache=True, nogil=True)
def _alias_rows(offsets, weights, prob, alias, totals):  # pragma: no cover - compiled
    """Vose's alias table of each row's weights (noise._vose on the row's slice, so an alias is
    a position in the row), and the rows' total weights."""
    longest = 0
    for v in range(len(offsets) - 1):
        longest = max(longest, offsets[v + 1] - offsets[v])
    small, large = np.empty(longest, np.int64), np.empty(longest, np.int64)
    scaled = np.empty(longest, np.float64)
    for v in range(len(offsets) - 1):
        a, d = offsets[v], offsets[v + 1] - offsets[v]
        total = 0.0
        for i in range(d):
            total += weights[a + i]
        totals[v] = total
        for i in range(d):
            scaled[i] = weights[a + i] * d / total
            alias[a + i] = i
        _vose(scaled[:d], prob[a:a + d], alias[a:a + d], small, large)


# Random numbers -------------------------------------------------------------------------------
# A walk's random stream is splitmix64 seeded by a hash of (seed, start node, walk index) alone,
# so a walk is the same bits whichever task, worker or batch of starts generates it.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_WALK_KEY = np.uint64(0x5BD1E9955BD1E995)  # keeps walk streams apart from the start-order keys


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(z):  # pragma: no cover - compiled
    """splitmix64's finalizer: a bijective, well-avalanched uint64 -> uint64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _hash3(a, b, c):  # pragma: no cover - compiled
    return _mix(_mix(_mix(np.uint64(a) + _GOLDEN) + np.uint64(b) + _GOLDEN) + np.uint64(c) + _GOLDEN)


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform(state):  # pragma: no cover - compiled
    """One splitmix64 step: (uniform float64 in [0, 1) from the top 53 bits, new state)."""
    state = state + _GOLDEN
    return (_mix(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0), state


# Walks ----------------------------------------------------------------------------------------

def random_walks(csr: CSR, starts: np.ndarray, walk_index, walk_length: int, p: float = 1.0, q: float = 1.0,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One walk per start node: walk k is ``ids[offsets[k]:offsets[k + 1]]`` (node indices).

    Each step follows an out-edge with probability proportional to its weight (DeepWalk); with
    ``p`` or ``q`` not 1 the step from v after t is biased as in node2vec: weight times 1/p back
    to t, 1 to a node t links to, 1/q elsewhere. A walk has up to ``walk_length`` nodes and
    stops at a node without out-edges (an isolated start: the start alone). Walk k's random
    stream depends on (seed, starts[k], walk_index[k]) only (``walk_index``: one int for all).

    >>> g = build_csr([(np.array([0, 1, 2]), np.array([1, 2, 0]), None)], 4)  # a directed triangle
    >>> ids, offsets = random_walks(g, np.array([0, 3], np.int32), 0, walk_length=5)
    >>> ids.tolist(), offsets.tolist()
    ([0, 1, 2, 0, 1, 3], [0, 5, 6])
    """
    if walk_length < 1:
        raise ConfigError(f"walk_length is {walk_length}; set it to 1 or more (nodes per walk)")
    for name, value in (("p", p), ("q", q)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"node2vec {name} is {value}; set it to a positive number (1: no bias)")
    starts = np.ascontiguousarray(starts, np.int32)
    index = np.broadcast_to(np.asarray(walk_index, np.int64), starts.shape).copy()
    ids = np.empty(len(starts) * walk_length, np.int32)
    offsets = np.zeros(len(starts) + 1, np.int64)
    weighted = csr.prob is not None
    tables = (csr.weights, csr.prob, csr.alias, csr.totals) if weighted else (
        np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.float64))
    second = p != 1.0 or q != 1.0
    _walks(csr.offsets, csr.neighbors, *tables, weighted, starts, index, walk_length, 1.0 / p, 1.0 / q,
           second, np.uint64(seed % 2**64), ids, offsets)
    return (ids if offsets[-1] == len(ids) else ids[:offsets[-1]].copy()), offsets


@numba.njit(cache=True, nogil=True, inline="always")
def _step(offsets, neighbors, prob, alias, weighted, v, state):  # pragma: no cover - compiled
    """A first-order step from v (which has out-edges): (next node, new state). One uniform
    picks the row position (integer part) and the alias coin (fraction), as noise.draw."""
    a = offsets[v]
    u, state = _uniform(state)
    x = u * (offsets[v + 1] - a)
    i = np.int64(x)
    if weighted and x - i >= prob[a + i]:
        i = alias[a + i]
    return neighbors[a + i], state


@numba.njit(cache=True, nogil=True, inline="always")
def _position(offsets, neighbors, t, x):  # pragma: no cover - compiled
    """Where x is in t's sorted row (binary search); -1 if t -> x is no edge."""
    lo, hi = offsets[t], offsets[t + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if neighbors[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < offsets[t + 1] and neighbors[lo] == x else -1


@numba.njit(cache=True, nogil=True, inline="always")
def _links(offsets, neighbors, t, x):  # pragma: no cover - compiled
    """Whether t -> x is an edge."""
    return _position(offsets, neighbors, t, x) >= 0


@numba.njit(cache=True, nogil=True)
def _walks(offsets, neighbors, weights, prob, alias, totals, weighted, starts, walk_index, walk_length, inv_p, inv_q,
           second, seed, ids, walk_offsets):  # pragma: no cover - compiled
    # node2vec by rejection (KnightKing): propose x from v's first-order distribution, accept
    # with probability bias(t, x) / envelope. The bias is 1/p for x == t, 1 if t -> x, 1/q
    # otherwise; below min(1, 1/q) every x != t is accepted without the search in t's row.
    # The envelope is max(1, 1/q), not max(1/p, 1, 1/q): with p < 1 the single return edge
    # would otherwise halve (or worse) every other candidate's acceptance. Its excess mass
    # w(v, t) * (1/p - envelope) is "folded" out instead, as KnightKing does with outliers: each
    # trial first picks t outright with that mass's share of the trial's total.
    envelope = max(1.0, inv_q)
    sure = min(1.0, inv_q)
    back = min(inv_p, envelope)
    n = 0
    for k in range(len(starts)):
        v = starts[k]
        state = _hash3(seed ^ _WALK_KEY, v, walk_index[k])
        ids[n] = v
        n += 1
        t = -1
        for _ in range(1, walk_length):
            a, b = offsets[v], offsets[v + 1]
            if b == a:
                break
            if not second or t < 0:
                x, state = _step(offsets, neighbors, prob, alias, weighted, v, state)
            else:
                extra = mass = 0.0
                if inv_p > envelope:
                    at = _position(offsets, neighbors, v, t)
                    if at >= 0:
                        extra = (weights[at] if weighted else 1.0) * (inv_p - envelope)
                        mass = envelope * (totals[v] if weighted else b - a) + extra
                while True:
                    if extra > 0.0:
                        u, state = _uniform(state)
                        if u * mass < extra:
                            x = t
                            break
                    x, state = _step(offsets, neighbors, prob, alias, weighted, v, state)
                    u, state = _uniform(state)
                    r = u * envelope
                    if x == t:
                        if r < back:
                            break
                    elif r < sure or r < (1.0 if _links(offsets, neighbors, t, x) else inv_q):
                        break
            ids[n] = x
            n += 1
            t, v = v, x
        walk_offsets[k + 1] = n


# The order of the walks -----------------------------------------------------------------------

def walk_starts(n: int, walks_per_node: int, lo: int, hi: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Start nodes and walk indices of the walks at positions [lo, hi) of a job's order.

    The order is ``walks_per_node`` passes over the ``n`` nodes, each pass in its own shuffled
    order (DeepWalk shuffles the nodes every pass: SGD should not see a graph's nodes in file
    order). Position k is walk ``k // n`` of node ``perm(k % n)``, where ``perm`` is a
    pseudo-random permutation keyed by (seed, k // n) and computed element by element (a
    Feistel network, cycle-walked into [0, n)): a task pays for its own positions only, never
    for a whole pass. Tasks that tile [0, n * walks_per_node) give every walk once.

    >>> starts, index = walk_starts(4, 2, 0, 8, seed=1)
    >>> sorted(starts[:4].tolist()), sorted(starts[4:].tolist()), index.tolist()
    ([0, 1, 2, 3], [0, 1, 2, 3], [0, 0, 0, 0, 1, 1, 1, 1])
    """
    if not 0 <= lo <= hi <= n * walks_per_node:
        raise ValueError(f"positions [{lo}, {hi}) are outside [0, {n * walks_per_node})")
    positions = np.arange(lo, hi, dtype=np.int64)
    index = positions // max(n, 1)
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)  # the network permutes [0, 4**half) >= n
    starts = np.empty(hi - lo, np.int32)
    _permute(positions - index * n, index, n, half, np.uint64(seed % 2**64), starts)
    return starts, index


_ORDER_KEY = np.uint64(0xC2B2AE3D27D4EB4F)


@numba.njit(cache=True, nogil=True)
def _permute(j, passes, n, half, seed, out):  # pragma: no cover - compiled
    """out[i] = the pass-``passes[i]`` permutation of [0, n) at ``j[i]``: a 4-round Feistel
    network on 2 * half bits, applied again until the value falls below n (cycle walking keeps
    it a bijection of [0, n); fewer than 4 rounds of walking are expected, as 4**half < 4n)."""
    mask = np.uint64((1 << half) - 1)
    for i in range(len(j)):
        key = _hash3(seed ^ _ORDER_KEY, passes[i], n)
        x = np.uint64(j[i])
        while True:
            left, right = x >> np.uint64(half), x & mask
            for r in range(4):
                left, right = right, left ^ (_mix(key + np.uint64(r) * _GOLDEN + right) & mask)
            x = (left << np.uint64(half)) | right
            if x < np.uint64(n):
                break
        out[i] = x
