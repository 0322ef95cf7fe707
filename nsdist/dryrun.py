"""``nsdist train --dry-run``: the plan of a job, without training or writing anything."""

from __future__ import annotations

import collections

import numpy as np

from . import cluster, storage
from .config import JobConfig
from .inputs import check_inputs, plan_inputs
from .layout import choose, expected_rows, group_plan, rounds_and_groups, worker_bytes, worker_peak
from .plan import PEAK
from .plan import sample_blocks
from .runs import new_run_id, read_manifest, resolve_run
from .warm_parts import start_peak


def _block_weights(blocks: list, files: list[tuple[str, int]]) -> list[float]:
    """Each block's share of the corpus in bytes (a whole compressed file or Parquet row group:
    its file's size over its file's blocks)."""
    size, per_file = dict(files), collections.Counter(b.url for b in blocks)
    return [b.length if b.length is not None else size[b.url] / per_file[b.url] for b in blocks]


def _warm_start(init_from: str, cfg: JobConfig, vocab_size: int) -> dict:
    """A partitioned warm start's new words, estimated as this vocabulary's size less the
    parent's (more where the parent knows words this corpus drops): what its memory grows with."""
    store = cfg.store
    parent = read_manifest(resolve_run(storage.absolute(init_from), store), store)["corpus"]["vocab_size"]
    return {"parent_vocab_size": parent, "new_words": max(0, vocab_size - parent)}


def dry_run(cfg: JobConfig, client, resume: str | None = None, init_from: str | None = None,
            files: list[tuple[str, int]] | None = None) -> dict:
    """The plan of a job, without training or writing anything: the corpus and its blocks, an
    estimate of its tokens and vocabulary from a sample of blocks counted on the workers, the
    shards and where they go, the model and the memory per worker against the workers' limits,
    and the rounds."""
    t, files = cfg.train, files if files is not None else check_inputs(cfg, init_from, resume)
    blocks = plan_inputs(cfg, files)
    workers, limits, process = cluster.workers(client), cluster.memory_limits(client), cluster.process_memory(client)
    n_shards = t.shards or sum(cluster.threads(client).values())
    n_models = max(1, min(len(workers), n_shards))
    rounds = t.rounds(n_models)
    graph_plan, adjacency = None, [0] * len(workers)
    if cfg.edges:  # the edges are read whole: the node table and edge count are exact
        read = cluster.read_graph(client, cfg, blocks, f"dry-{new_run_id()}")
        g = cfg.graph
        # Every node starts walks_per_node walks of at most walk_length nodes (dead ends stop early).
        estimate = {"tokens": read.n_nodes * g.walks_per_node * g.walk_length, "vocab_size": read.n_nodes}
        layout = cluster.plan_layout(read, limits)
        picks, fraction, adjacency = list(range(len(blocks))), 1.0, read.per_worker(layout)
        graph_plan = {"nodes": read.n_nodes, "edges": read.n_edges, "weighted": read.weighted,
                      "adjacency_bytes": read.adjacency_bytes, "layout": layout,
                      "adjacency_bytes_per_worker": max(adjacency, default=0),
                      "walks": read.n_nodes * g.walks_per_node, "walk_length": g.walk_length}
    else:
        weights, picks = _block_weights(blocks, files), sample_blocks(len(blocks))
        fraction = sum(weights[i] for i in picks) / max(sum(weights), 1)
        estimate = cluster.sample_vocab(client, cfg, blocks, picks, fraction, f"dry-{new_run_id()}", n_models,
                                        group_plan(t, n_models))
    if cfg.edges:  # a node's walk positions fall in every shard alike
        visits = np.full(read.n_nodes, estimate["tokens"] / max(read.n_nodes, 1))
        estimate["held_rows"], estimate["head_rows"] = expected_rows(visits, n_models)
        estimate["group_rows"] = {g: expected_rows(visits, n_models * g)[0] for g in group_plan(t, n_models)}
    model_bytes = 2 * estimate["vocab_size"] * t.dim * 4  # input and output vectors, float32
    shards = {w: [s for s in range(n_shards) if s % len(workers) == i] for i, w in enumerate(workers)}
    # Shards hold every token as an int32 id; a worker holds one model (replicated: every row;
    # partitioned: its shards' rows and the masters of 1/M of the rows), its shards and, for a
    # graph, the whole adjacency or its node range of it (cluster.read_graph's ranges follow the
    # sorted workers).
    own = 4 * estimate["tokens"] // max(n_shards, 1)
    masters = -(-estimate["vocab_size"] // n_models)
    # A partitioned model holds its rows for a group of rounds at a time: train.row_groups, else
    # the fewest groups whose rows fit (from the expected rows per group), the rounds grown to them.
    known, extra = [v for v in limits.values() if v], max(adjacency, default=0) + own * max(map(len, shards.values()))
    parted_rounds, groups = rounds_and_groups(t, n_models, estimate["group_rows"], masters, extra,
                                              min(known) if known else None)
    held = estimate["group_rows"].get(groups, estimate["held_rows"])
    need = {w: model_bytes + adjacency[i] + own * len(shards[w]) for i, w in enumerate(workers)}
    parted = {w: worker_bytes(held, masters, t.dim, n_models) + adjacency[i] + own * len(shards[w])
              for i, w in enumerate(workers)}
    chosen = choose(t.layout, limits, max(need.values(), default=0), n_models)
    rounds = parted_rounds if chosen == "partitioned" else rounds
    peaks = ({w: PEAK * need[w] for w in workers} if chosen == "replicated" else
             {w: worker_peak(held, masters, t.dim, n_models, adjacency[i] + own * len(shards[w]))
              for i, w in enumerate(workers)})
    warm = None
    if init_from and chosen == "partitioned" and t.warm_new == "cooccur":
        warm = _warm_start(init_from, cfg, estimate["vocab_size"])
        start = {w: start_peak(warm["new_words"], held, masters, t.dim, n_models, adjacency[i] + own * len(shards[w]),
                               groups) for i, w in enumerate(workers)}
        warm["peak"] = max(start.values(), default=0)
        peaks = {w: max(peaks[w], start[w]) for w in workers}
    return {"corpus": {"files": len(files), "bytes": sum(s for _, s in files), "blocks": len(blocks)},
            "layout": {"chosen": chosen, "asked": t.layout, "held_rows": estimate["held_rows"],
                       "head_rows": estimate["head_rows"], "rows_per_worker": held + masters, "row_groups": groups,
                       "group_rows": held,
                       "replicated_bytes": max(need.values(), default=0),
                       "partitioned_bytes": max(parted.values(), default=0)},
            "graph": graph_plan, "warm_start": warm,
            "sample": {"blocks": len(picks), "fraction": fraction, **estimate},
            "shards": n_shards, "models": n_models, "dim": t.dim, "model_bytes": model_bytes,
            "workers": [{"address": w, "shards": shards[w], "bytes": (need if chosen == "replicated" else parted)[w],
                         "peak": int(peaks[w]), "memory_limit": limits.get(w, 0), "process": process.get(w, 0)}
                        for w in workers],
            "rounds_per_epoch": rounds, "rounds_asked": t.rounds(n_models), "epochs": t.epochs,
            "sync_rows": t.sync_rows}
