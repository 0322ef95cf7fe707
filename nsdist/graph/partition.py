"""The adjacency partitioned by node: contiguous node ranges balanced by their bytes, each
range's CSR rows built from that range's edges only, and which layout a graph job uses. Pure
functions of their inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import LAYOUTS
from ..errors import ConfigError
from .csr import CSR, csr_bytes, csr_rows, with_tables


@dataclass(frozen=True)
class Part:
    """The CSR rows of nodes [lo, hi): node v's out-neighbours are
    ``csr.neighbors[csr.offsets[v - lo]:csr.offsets[v - lo + 1]]``, as global node indices."""

    lo: int
    hi: int
    csr: CSR

    @property
    def nbytes(self) -> int:
        return self.csr.nbytes

    def __sizeof__(self) -> int:  # what Dask counts for a range: tasks then run where it is
        return self.csr.nbytes


def node_ranges(degrees: np.ndarray, parts: int, weighted: bool) -> np.ndarray:
    """Bounds of ``parts`` contiguous node ranges (``bounds[i]:bounds[i + 1]``) of about equal
    adjacency bytes (``csr_bytes``: 8 per node, 4 or 16 per edge): node indices follow the sorted
    node table, so a range is a cut of it and a node's owner is a binary search in the bounds.

    >>> node_ranges(np.array([3, 0, 0, 1, 0, 2]), 2, weighted=False).tolist()
    [0, 3, 6]
    """
    per_edge = 16 if weighted else 4
    cost = np.cumsum(8 + per_edge * np.asarray(degrees, np.int64))
    total = int(cost[-1]) if len(cost) else 0
    # Range i ends after the first node whose cumulative cost reaches i / parts of the total.
    cuts = np.searchsorted(cost, [total * i / parts for i in range(1, parts)], side="left") + 1
    bounds = np.concatenate([[0], np.minimum(cuts, len(degrees)), [len(degrees)]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


def part_bytes(degrees: np.ndarray, bounds: np.ndarray, weighted: bool) -> list[int]:
    """Each range's adjacency bytes (``csr_bytes``; duplicate edges counted: an upper bound).

    >>> part_bytes(np.array([3, 0, 0, 1, 0, 2]), np.array([0, 3, 6]), weighted=False)
    [44, 44]
    """
    edges = np.add.reduceat(np.append(np.asarray(degrees, np.int64), 0), bounds[:-1]) if len(bounds) > 1 else []
    edges = [int(e) if hi > lo else 0 for e, lo, hi in zip(edges, bounds[:-1], bounds[1:])]
    return [csr_bytes(int(hi - lo), e, weighted) for e, lo, hi in zip(edges, bounds[:-1], bounds[1:])]


def split_edges(ids, bounds: np.ndarray) -> list[tuple]:
    """One block's ``edge_ids`` triple cut by the owner of each edge's source: a (src - lo,
    dst, weight) triple per range, each in the block's order (so a range's rows are built from
    its edges in the order the whole graph's would be).

    >>> pieces = split_edges((np.array([2, 0, 1]), np.array([0, 1, 2]), None), np.array([0, 1, 3]))
    >>> [(s.tolist(), d.tolist()) for s, d, _ in pieces]
    [([0], [1]), ([1, 0], [0, 2])]
    """
    src, dst, w = ids
    owner = np.searchsorted(bounds, src, side="right") - 1
    order = np.argsort(owner, kind="stable")
    cuts = np.searchsorted(owner[order], np.arange(len(bounds)))
    pieces = []
    for i in range(len(bounds) - 1):
        take = order[cuts[i]:cuts[i + 1]]
        pieces.append(((src[take] - bounds[i]).astype(np.int32), dst[take].astype(np.int32),
                       None if w is None else w[take]))
    return pieces


def part_rows(pieces, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of nodes [lo, hi) from their edges (``split_edges``' pieces of every block, in
    block order): ``csr.csr_rows`` of the range."""
    return csr_rows(pieces, hi - lo)


def make_part(rows, lo: int, hi: int, weighted: bool) -> Part:
    """The range's CSR; ``weighted``: the whole graph's answer (``csr.uniform_weights`` over
    every range), so that a range whose own edges happen to weigh the same keeps the tables the
    whole graph's CSR has for it."""
    return Part(lo, hi, with_tables(*rows, weighted))


def pick_layout(layout: str, adjacency: int, limit: int, share: float) -> str:
    """``graph.layout`` resolved: ``auto`` is replicated when the whole adjacency fits in
    ``share`` of the smallest worker memory ``limit`` (0: unknown, anything fits).

    >>> pick_layout("auto", 100, 1000, 0.5), pick_layout("auto", 600, 1000, 0.5), pick_layout("auto", 600, 0, 0.5)
    ('replicated', 'partitioned', 'replicated')
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"graph.layout is {layout!r}; set it to one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    return "replicated" if not limit or adjacency <= share * limit else "partitioned"


def choose_layout(layout: str, adjacency: int, largest_part: int, limit: int, share: float, workers: int) -> str:
    """The layout a graph job uses: ``replicated`` (every worker holds the whole adjacency, the
    fast path) when asked or, for ``auto``, when it fits in ``share`` of the smallest worker
    memory ``limit`` (0: unknown, anything fits); else ``partitioned`` (a worker holds its range,
    at most ``largest_part`` bytes). ConfigError when the chosen layout does not fit.

    >>> choose_layout("auto", 100, 30, 1000, 0.5, 4), choose_layout("auto", 600, 160, 1000, 0.5, 4)
    ('replicated', 'partitioned')
    """
    chosen = pick_layout(layout, adjacency, limit, share)
    if chosen == "replicated" and limit and adjacency > share * limit:
        raise ConfigError(f"the graph's adjacency needs {adjacency / 1e6:,.1f} MB on every worker with "
                          f"graph.layout=replicated, more than {share:.0%} of a worker's memory limit "
                          f"({limit / 1e6:,.1f} MB); set graph.layout=partitioned (or auto), or give the workers "
                          "more memory")
    if chosen == "replicated":
        return chosen
    if limit and largest_part > share * limit:
        raise ConfigError(f"the graph's adjacency needs {adjacency / 1e6:,.1f} MB, and even partitioned over "
                          f"{workers} worker(s) its largest range needs {largest_part / 1e6:,.1f} MB, more than "
                          f"{share:.0%} of a worker's memory limit ({limit / 1e6:,.1f} MB); add workers or give "
                          "them more memory")
    return "partitioned"
