"""Graphs as a source of training sentences: edge lists -> node table -> compressed adjacency
(CSR) -> random walks (DeepWalk, node2vec).

The graph source of training "sentences": each walk is a sentence of node indices. Every
function here is pure: a block's edges, the merged node table, the CSR and the walks depend on
their inputs only, so a retried or re-split task gives the same bits.

Data flow (a tree reduction and one gather, then walks wherever the CSR is)::

    read_edges(block)                -> Edges            one per block, read twice on the workers:
    block_nodes(edges)               -> sorted ids       merge_nodes(...) in a tree -> nodes (read_nodes)
    edge_ids(edges, nodes, directed) -> (src, dst, w)    int32 node indices, self-loops dropped (read_edge_ids)
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

Modules, in data-flow order: ``edges`` (edge lists, the node table), ``csr`` (the adjacency and
its samplers), ``walks`` (the walk kernels and the walk order), ``corpus`` (a graph job's tasks on
the workers: walks as the corpus; ``cluster/graph.py`` places them).
"""

from .csr import CSR, build_csr, csr_bytes, out_degrees
from .edges import (MAX_NODES, Edges, block_nodes, edge_ids, merge_nodes, node_type, read_edge_ids, read_edges,
                    read_nodes, text_edges)
from .walks import random_walks, walk_starts

__all__ = ["CSR", "Edges", "MAX_NODES", "block_nodes", "build_csr", "csr_bytes", "edge_ids", "merge_nodes",
           "node_type", "out_degrees", "random_walks", "read_edge_ids", "read_edges", "read_nodes", "text_edges",
           "walk_starts"]
