"""The adjacency as compressed sparse rows, built by a counting sort, with the alias tables
that weighted walks sample from. Pure functions of their inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..noise import _vose

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

    def __sizeof__(self) -> int:  # what Dask counts for it, so that tasks run where it is
        return self.nbytes


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
    offsets, neighbors, weights = csr_rows(parts, n, degrees)
    return with_tables(offsets, neighbors, weights, not uniform_weights([weight_range(weights)]))


def csr_rows(parts, n: int, degrees: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``build_csr``'s rows before the sampler tables: (offsets, neighbours, merged weights).
    Each row depends only on its own edges, in block order: a node range's rows built from that
    range's edges (``partition.split_edges``) are the same bits as the whole graph's."""
    parts = list(parts)
    if degrees is None:
        degrees = sum((out_degrees(s, n) for s, _, _ in parts), np.zeros(n, np.int64))
    rows = Rows(degrees)
    for part in parts:
        rows.add(*part)
    return rows.finish()


class Rows:
    """The counting sort of ``csr_rows`` one block of edges at a time, so that a block's
    edges can be freed once placed: room for every edge of rows whose out-degrees are
    ``degrees`` (duplicates counted), filled by ``add`` in block order, sorted and merged by
    ``finish``. Holds 8 bytes per edge (neighbour and weight) and 16 per row.

    >>> rows = Rows(np.array([2, 1]))
    >>> rows.add(np.array([0]), np.array([5]), None).add(np.array([1, 0]), np.array([3, 4]), None).finish()[1].tolist()
    [4, 5, 3]
    """

    def __init__(self, degrees: np.ndarray):
        self.offsets = np.zeros(len(degrees) + 1, np.int64)
        np.cumsum(degrees, out=self.offsets[1:])
        self.neighbors = np.empty(self.offsets[-1], np.int32)
        self.weights = np.empty(self.offsets[-1], np.float32)
        self.pos = self.offsets[:-1].copy()  # each row's next free slot

    def __sizeof__(self) -> int:  # what Dask counts for a task's Rows
        return self.offsets.nbytes + self.neighbors.nbytes + self.weights.nbytes + self.pos.nbytes

    def add(self, src, dst, weight=None) -> "Rows":
        """Place edges ``src -> dst`` (row indices, neighbours; ``weight`` None: 1 each)."""
        _scatter(np.asarray(src, np.int32), np.asarray(dst, np.int32), _NO_WEIGHTS if weight is None else
                 np.asarray(weight, np.float32), weight is not None, self.pos, self.neighbors, self.weights)
        return self

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offsets, neighbours, weights): each row sorted by neighbour, duplicates merged."""
        assert np.array_equal(self.pos, self.offsets[1:]), "degrees do not match the edges added"
        merged = np.zeros(len(self.offsets), np.int64)
        e = _sort_merge(self.offsets, self.neighbors, self.weights, merged)
        if e == len(self.neighbors):  # no duplicates: the arrays are the rows, no copy
            return merged, self.neighbors, self.weights
        return merged, self.neighbors[:e].copy(), self.weights[:e].copy()  # drop the merged duplicates' room


_NO_WEIGHTS = np.zeros(0, np.float32)


def weight_range(weights: np.ndarray) -> tuple[float, float] | None:
    """(smallest, largest) merged weight; None for no edges. A graph whose edges all weigh the
    same (over all its rows) needs no sampler tables: a constant weight changes no probability.

    >>> weight_range(np.array([2.0, 1.0], np.float32)), weight_range(np.zeros(0, np.float32))
    ((1.0, 2.0), None)
    """
    return (float(weights.min()), float(weights.max())) if len(weights) else None


def uniform_weights(ranges) -> bool:
    """Whether rows whose ``weight_range`` are ``ranges`` all weigh the same.

    >>> uniform_weights([(2.0, 2.0), None, (2.0, 2.0)]), uniform_weights([(1.0, 1.0), (2.0, 2.0)])
    (True, False)
    """
    values = {v for r in ranges if r is not None for v in r}
    return len(values) <= 1


def with_tables(offsets: np.ndarray, neighbors: np.ndarray, weights: np.ndarray, weighted: bool) -> CSR:
    """A CSR of ``csr_rows``' rows; ``weighted``: with the alias tables and row totals (false
    when every edge of the whole graph weighs the same: ``uniform_weights``)."""
    if not weighted:
        return CSR(offsets, neighbors)
    e, n = len(neighbors), len(offsets) - 1
    prob, alias = np.ones(e, np.float32), np.zeros(e, np.int32)
    totals = np.zeros(n, np.float64)
    _alias_rows(offsets, weights, prob, alias, totals)
    return CSR(offsets, neighbors, weights, prob, alias, totals)


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

