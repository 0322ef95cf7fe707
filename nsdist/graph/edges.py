"""Edge lists (text or Parquet blocks) -> edges as node ids -> the sorted node table -> edges as
int32 node indices. Pure functions of their inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..corpus import Block, parquet_file, read_tokens
from ..errors import DataError

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
        pf = parquet_file(f, block.url, storage_options, "--edges")
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


def read_nodes(block: Block, storage_options=None, src: str = "src", dst: str = "dst",
               weight: str | None = "weight") -> pa.Array:
    """A block's distinct node ids (``block_nodes`` of ``read_edges``): the first of the two
    reads of an edge list, which keeps only the ids, so that no block's edges are held while
    the node table is merged."""
    return block_nodes(read_edges(block, storage_options, src, dst, weight))


def read_edge_ids(block: Block, nodes: pa.Array, directed: bool, storage_options=None, src: str = "src",
                  dst: str = "dst", weight: str | None = "weight") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A block's edges as node indices (``edge_ids`` of ``read_edges``): the second read, once
    the node table is known, so that only the indices are held."""
    return edge_ids(read_edges(block, storage_options, src, dst, weight), nodes, directed)


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

