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
from ..errors import ConfigError
from ..plan import block_workers
from ..graph.corpus import (add, make_walks, node_counts, node_lookup, node_vocab, walk_blocks, walk_lengths,
                     write_walks)
from .client import tree_reduce
from .stages import Counted
from .client import workers as client_workers

log = logging.getLogger("nsdist")

# Of a worker's memory limit, what the adjacency may take: the worker also holds its model, its
# shards and, while walks are generated, a few walk blocks.
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
    out = np.diff(csr.offsets)
    into = np.bincount(csr.neighbors, minlength=len(out))
    isolated = np.flatnonzero((out == 0) & (into == 0))
    return {"nodes": int(len(out)), "edges": int(len(csr.neighbors)), "weighted": csr.weights is not None,
            "isolated_nodes": int(len(isolated)), "dead_ends": int(((out == 0) & (into > 0)).sum()),
            "isolated_examples": nodes.take(isolated[:LISTED]).to_pylist()}


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


def read_graph(client: Client, cfg: JobConfig, blocks: list[Block], tag: str) -> GraphRead:
    """Read the edge blocks on the workers (each near where a later stage needs it), merge their
    node ids into one sorted table, map the edges to node indices; the sizes come back."""
    g, opts = cfg.graph, cfg.storage_options
    workers = client_workers(client)
    places = block_workers([b.length for b in blocks], len(workers) or 1, workers, cfg.blocksize)
    where = [{"workers": [w], "allow_other_workers": True} if w else {} for w in places]
    edges = [client.submit(graph.read_edges, b, opts, g.src_column, g.dst_column, g.weight_column,
                           key=f"edges-{tag}-{i}", **where[i]) for i, b in enumerate(blocks)]
    nodes = tree_reduce(client, graph.merge_nodes,
                        [client.submit(graph.block_nodes, e, key=f"nodes-{e.key}") for e in edges],
                        key=f"node-table-{tag}")
    ids = [client.submit(graph.edge_ids, e, nodes, g.directed, key=f"ids-{e.key}") for e in edges]
    with progress.stage("reading edges", len(blocks), unit=" blocks") as bar:
        bar.follow(ids)
        n_nodes = client.submit(len, nodes, key=f"n-nodes-{tag}").result()
        n_edges = sum(client.gather([client.submit(_edge_count, i, key=f"ne-{i.key}") for i in ids]))
        weighted = any(client.gather([client.submit(_weighted, x, key=f"w-{x.key}") for x in ids]))
    return GraphRead(nodes, ids, n_nodes, n_edges, weighted, graph.csr_bytes(n_nodes, n_edges, weighted))


def check_adjacency(read: GraphRead, limits: dict[str, int]) -> None:
    """ConfigError when the adjacency would take more than ADJACENCY_SHARE of a worker's memory
    limit (every worker that generates walks holds all of it)."""
    known = [v for v in limits.values() if v]
    if known and read.adjacency_bytes > ADJACENCY_SHARE * min(known):
        raise ConfigError(f"the graph's adjacency ({read.n_nodes} nodes, {read.n_edges} directed edges) needs "
                          f"{read.adjacency_bytes / 1e6:,.1f} MB on every worker, more than {ADJACENCY_SHARE:.0%} "
                          f"of a worker's memory limit ({min(known) / 1e6:,.1f} MB); give the workers more memory")


def walk_corpus(client: Client, cfg: JobConfig, read: GraphRead, tag: str, shards: int) -> Counted:
    """The walks of a graph that ``read_graph`` read, as a corpus: adjacency, walks, counts,
    vocabulary, and the node -> vocabulary id lookup for the encoding."""
    g, opts = cfg.graph, cfg.storage_options
    workers = client_workers(client)
    nodes, ids, n_nodes = read.nodes, read.ids, read.n_nodes
    log.info("graph: %d nodes, %d directed edges; the adjacency takes %.1f MB per worker", n_nodes, read.n_edges,
             read.adjacency_bytes / 1e6, extra={"stage": "graph", "nodes": n_nodes, "edges": read.n_edges,
                                                "adjacency_bytes": read.adjacency_bytes})
    degrees = tree_reduce(client, add, [client.submit(_degrees, i, n_nodes, key=f"deg-{i.key}") for i in ids],
                          key=f"degrees-{tag}")
    csr = client.submit(graph.build_csr, ids, n_nodes, degrees, key=f"csr-{tag}")
    read.ids = []  # the parts are freed once the adjacency is built
    del ids
    info = client.submit(_graph_info, csr, nodes, key=f"graph-summary-{tag}")

    # Walk blocks, dealt like corpus blocks: each near the shard it will feed.
    ranges = walk_blocks(n_nodes, g.walks_per_node, g.walk_length)
    places = block_workers([hi - lo for lo, hi in ranges], shards, workers, 1)
    seed = cfg.train.seed
    walks = [client.submit(make_walks, csr, lo, hi, g, seed, key=f"walks-{tag}-{i}",
                           **({"workers": [w], "allow_other_workers": True} if w else {}))
             for i, ((lo, hi), w) in enumerate(zip(ranges, places))]
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
    return Counted(vocab, summary, walks, block_tokens, kind, lookup, {**graph_info, "walks": sentences})
