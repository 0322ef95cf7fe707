"""Placing a graph job's stages: edges -> node table -> adjacency -> walks -> vocabulary.

The result has the shape ``stages.count_vocab`` gives for a corpus (the vocabulary, a summary,
one future per walk block, tokens per block), plus the node -> vocabulary id lookup that the
encoding uses instead of the words, so everything after it is the corpus's path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from distributed import Client

from .. import graph, progress, storage
from ..config import JobConfig
from ..corpus import Block
from ..plan import block_workers
from ..graph.corpus import (add, make_walks, node_counts, node_lookup, node_vocab, walk_blocks, walk_lengths,
                     write_walks)
from ..graph.partition import choose_layout, node_ranges, part_bytes, pick_layout
from ..memory import released
from .client import tree_reduce
from .stages import Counted
from .client import memory_limits
from .client import workers as client_workers
from .walkers import pinned, build_parts, walk_partitioned

log = logging.getLogger("nsdist")

# Of a worker's memory limit, what the adjacency (replicated: all of it; partitioned: its node
# range) may take: the worker also holds its model, its shards and, while walks are generated, a
# few walk blocks.
ADJACENCY_SHARE = 0.5
# Directed walks averaging less than this share of walk_length are worth a warning (dead ends).
SHORT_WALKS = 0.9


def _edge_count(ids) -> int:
    return len(ids[0])


def _weighted(ids) -> bool:
    return ids[2] is not None


def _degrees(ids, n: int):
    return graph.out_degrees(ids[0], n)


def _vocab_size(vocab) -> tuple[int, int]:
    return len(vocab), vocab.total


# Node ids the manifest lists of the nodes without any edge (the count is always there).
LISTED = 20


def _graph_info(csr, nodes) -> dict:
    """Nodes, directed edges, and the nodes without edges (isolated) or without out-edges
    (dead ends: walks stop there), for the manifest."""
    return _node_summary(np.diff(csr.offsets), np.bincount(csr.neighbors, minlength=csr.nodes), csr.weights is not None,
                         nodes)


def _node_summary(out, into, weighted: bool, nodes) -> dict:
    isolated = np.flatnonzero((out == 0) & (into == 0))
    return {"nodes": int(len(out)), "edges": int(out.sum()), "weighted": weighted,
            "isolated_nodes": int(len(isolated)), "dead_ends": int(((out == 0) & (into > 0)).sum()),
            "isolated_examples": nodes.take(isolated[:LISTED]).to_pylist()}


def _part_in_degrees(part, n: int):
    return np.bincount(part.csr.neighbors, minlength=n)


def _part_out_degrees(part):
    return np.diff(part.csr.offsets)


def _parts_info(nodes, into, weighted, *outs) -> dict:
    return _node_summary(np.concatenate(outs) if outs else np.zeros(0, np.int64), into, weighted, nodes)


def _is_weighted(part) -> bool:
    return part.csr.weights is not None


@dataclass
class GraphRead:
    """A graph job's edges on the workers, mapped to node indices: the node table and one (src,
    dst, weight) future per block, and their sizes."""

    nodes: object  # future of the sorted node table
    ids: list  # futures of (src, dst, weight) per block
    n_nodes: int
    n_edges: int  # directed edges (an undirected edge counts twice), duplicates included
    weighted: bool
    adjacency_bytes: int
    degrees: object  # future of the out-degrees (duplicates included)
    bounds: np.ndarray  # node ranges, one per worker, were the adjacency partitioned (partition.node_ranges)
    part_bytes: list  # each range's adjacency bytes
    requested: str = "auto"  # graph.layout
    layout: str = "replicated"  # as check_adjacency chose
    walk_stats: dict | None = None  # partitioned: the walk supersteps' counts

    def per_worker(self, layout: str) -> list[int]:
        """Adjacency bytes each worker holds in ``layout``."""
        return self.part_bytes if layout == "partitioned" else [self.adjacency_bytes] * len(self.part_bytes)


def read_graph(client: Client, cfg: JobConfig, blocks: list[Block], tag: str) -> GraphRead:
    """Read the edge blocks on the workers (each near where a later stage needs it) twice: once
    for their node ids, merged into one sorted table, then for their edges as node indices, so
    that a block's edges as read (int64 or string ids) are never held past its task; the sizes
    come back."""
    g, opts = cfg.graph, cfg.storage_options
    workers = client_workers(client)
    places = block_workers([b.length for b in blocks], len(workers) or 1, workers, cfg.blocksize)
    where = [{"workers": [w], "allow_other_workers": True} if w else {} for w in places]
    columns = (g.src_column, g.dst_column, g.weight_column)
    nodes = tree_reduce(client, graph.merge_nodes,
                        [client.submit(released, graph.read_nodes, b, opts, *columns, key=f"nodes-edges-{tag}-{i}",
                                       **where[i]) for i, b in enumerate(blocks)],
                        key=f"node-table-{tag}")
    ids = [client.submit(released, graph.read_edge_ids, b, nodes, g.directed, opts, *columns,
                         key=f"ids-edges-{tag}-{i}", **where[i]) for i, b in enumerate(blocks)]
    with progress.stage("reading edges", len(blocks), unit=" blocks") as bar:
        bar.follow(ids)
        n_nodes = client.submit(len, nodes, key=f"n-nodes-{tag}").result()
        n_edges = sum(client.gather([client.submit(_edge_count, i, key=f"ne-{i.key}") for i in ids]))
        weighted = any(client.gather([client.submit(_weighted, x, key=f"w-{x.key}") for x in ids]))
    degrees = tree_reduce(client, add, [client.submit(_degrees, i, n_nodes, key=f"deg-{i.key}") for i in ids],
                          key=f"degrees-{tag}")
    # Where each worker's node range would be: a few numbers, from the degrees on a worker.
    bounds = client.submit(node_ranges, degrees, max(len(workers), 1), weighted, key=f"bounds-{tag}").result()
    sizes = client.submit(part_bytes, degrees, bounds, weighted, key=f"part-bytes-{tag}").result()
    return GraphRead(nodes, ids, n_nodes, n_edges, weighted, graph.csr_bytes(n_nodes, n_edges, weighted), degrees,
                     bounds, sizes, g.layout)


def _smallest(limits: dict[str, int]) -> int:
    known = [v for v in limits.values() if v]
    return min(known) if known else 0


def check_adjacency(read: GraphRead, limits: dict[str, int]) -> str:
    """The layout the graph's walks use (``graph.layout``; ``auto``: replicated when the whole
    adjacency fits in ADJACENCY_SHARE of a worker's memory limit, else partitioned), set on
    ``read``; ConfigError when even that layout does not fit."""
    read.layout = choose_layout(read.requested, read.adjacency_bytes, max(read.part_bytes, default=0), _smallest(limits),
                                ADJACENCY_SHARE, len(read.part_bytes))
    return read.layout


def plan_layout(read: GraphRead, limits: dict[str, int]) -> str:
    """The layout ``check_adjacency`` would choose, without refusing (for ``--dry-run``)."""
    return pick_layout(read.requested, read.adjacency_bytes, _smallest(limits), ADJACENCY_SHARE)


def _replicated_walks(client: Client, cfg: JobConfig, read: GraphRead, ranges: list, places: list, tag: str):
    """Every walk block from the whole adjacency, built once and fetched by the workers that walk."""
    csr = client.submit(graph.build_csr, read.ids, read.n_nodes, read.degrees, key=f"csr-{tag}")
    info = client.submit(_graph_info, csr, read.nodes, key=f"graph-summary-{tag}")
    walks = [client.submit(make_walks, csr, lo, hi, cfg.graph, cfg.train.seed, key=f"walks-{tag}-{i}",
                           **({"workers": [w], "allow_other_workers": True} if w else {}))
             for i, ((lo, hi), w) in enumerate(zip(ranges, places))]
    return walks, info


def _partitioned_walks(client: Client, cfg: JobConfig, read: GraphRead, ranges: list, places: list, tag: str):
    """Every walk block in supersteps over the node ranges, range i on worker i."""
    workers = client_workers(client)
    ids, read.ids = read.ids, []  # build_parts frees each block's edges once it is split
    parts = build_parts(client, ids, read.bounds, read.degrees, workers, tag)
    # Each range's summaries are computed where the range is: a range moved to another worker
    # for them would stay there too, as a second copy.
    where = [pinned(workers[i % len(workers)]) for i in range(len(parts))]
    into = tree_reduce(client, add, [client.submit(_part_in_degrees, p, read.n_nodes, key=f"into-{p.key}", **w)
                                     for p, w in zip(parts, where)], key=f"in-degrees-{tag}")
    outs = [client.submit(_part_out_degrees, p, key=f"out-{p.key}", **w) for p, w in zip(parts, where)]
    weighted = client.submit(_is_weighted, parts[0], key=f"weighted-{tag}", **where[0]).result()
    info = client.submit(_parts_info, read.nodes, into, weighted, *outs, key=f"graph-summary-{tag}")
    walks, stats = walk_partitioned(client, parts, read.bounds, ranges, places, cfg.graph, cfg.train.seed,
                                    read.n_nodes, workers, tag, _smallest(memory_limits(client)))
    log.info("walks: %d supersteps over %d node ranges, %.1f MB of walkers, queries and answers between workers",
             stats["supersteps"], len(parts), stats["bytes"] / 1e6,
             extra={"stage": "walks", "supersteps": stats["supersteps"], "walk_bytes": stats["bytes"]})
    read.walk_stats = stats
    return walks, info


def walk_corpus(client: Client, cfg: JobConfig, read: GraphRead, tag: str, shards: int) -> Counted:
    """The walks of a graph that ``read_graph`` read, as a corpus: adjacency, walks, counts,
    vocabulary, and the node -> vocabulary id lookup for the encoding."""
    g, opts = cfg.graph, cfg.storage_options
    workers = client_workers(client)
    nodes, n_nodes = read.nodes, read.n_nodes
    per_worker = max(read.per_worker(read.layout), default=0)
    log.info("graph: %d nodes, %d directed edges; layout %s: the adjacency takes %.1f MB, %.1f MB per worker", n_nodes,
             read.n_edges, read.layout, read.adjacency_bytes / 1e6, per_worker / 1e6,
             extra={"stage": "graph", "nodes": n_nodes, "edges": read.n_edges, "layout": read.layout,
                    "adjacency_bytes": read.adjacency_bytes, "adjacency_bytes_per_worker": per_worker})
    # Walk blocks, dealt like corpus blocks: each near the shard it will feed.
    ranges = walk_blocks(n_nodes, g.walks_per_node, g.walk_length)
    places = block_workers([hi - lo for lo, hi in ranges], shards, workers, 1)
    place = _partitioned_walks if read.layout == "partitioned" else _replicated_walks
    walks, info = place(client, cfg, read, ranges, places, tag)
    read.ids = []  # the parts are freed once the adjacency is built
    counts = tree_reduce(client, add, [client.submit(node_counts, w, n_nodes, key=f"count-{w.key}") for w in walks],
                         key=f"node-counts-{tag}")
    tokens = [client.submit(walk_lengths, w, key=f"n-{w.key}") for w in walks]
    sentences = sum(r[1] - r[0] for r in ranges)
    vocab = client.submit(node_vocab, nodes, counts, sentences, cfg.train.min_count, cfg.train.max_vocab,
                          key=f"vocab-{tag}")
    lookup = client.submit(node_lookup, nodes, vocab, key=f"lookup-{tag}")
    with progress.stage("walking", len(walks), unit=" blocks") as bar:
        bar.follow(walks)
        block_tokens = client.gather(tokens)
        graph_info = info.result()
    mean = sum(block_tokens) / max(sentences, 1)
    if g.directed and graph_info["dead_ends"] and mean < SHORT_WALKS * g.walk_length:
        # An edge list that holds each undirected edge once, read as directed: most walks end early.
        log.warning("%d of %d nodes have no out-edge, where directed walks stop: walks average %.1f of up to %d "
                    "nodes; if the edge list holds each undirected edge once, set directed=false",
                    graph_info["dead_ends"], n_nodes, mean, g.walk_length,
                    extra={"stage": "graph", "dead_ends": graph_info["dead_ends"], "mean_walk_length": mean})
    if cfg.save_walks:
        parts = [client.submit(write_walks, storage.join(cfg.save_walks, f"part-{i:05d}.txt"), w, nodes, opts,
                               key=f"save-{w.key}") for i, w in enumerate(walks)]
        client.gather(parts)
        log.info("walks written to %s (%d parts)", storage.scrub(cfg.save_walks, opts), len(parts))
    vocab_size, vocab_tokens = client.submit(_vocab_size, vocab, key=f"vocab-size-{tag}").result()
    summary = {"vocab_size": vocab_size, "vocab_tokens": vocab_tokens, "raw_tokens": sum(block_tokens),
               "sentences": sentences, "distinct_words": n_nodes}
    kind = client.submit(graph.node_type, nodes, key=f"node-type-{tag}").result()
    return Counted([vocab], [vocab_size], summary, walks, block_tokens, kind, [lookup] * len(walks),
                   {**graph_info, "walks": sentences, "layout": read.layout, **_walk_stats(read)}, client=client, tag=tag)


def _walk_stats(read: GraphRead) -> dict:
    stats = read.walk_stats
    return {"supersteps": stats["supersteps"], "walk_bytes": stats["bytes"]} if stats else {}
