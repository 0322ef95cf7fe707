#!/usr/bin/env python
"""Walks over a partitioned adjacency (graph.layout=partitioned) against the replicated layout,
on a graph both fit; and, with ``--big``, a job on a graph no worker holds whole.

Run by hand (never by the test suite):

    PYTHONPATH=. python benchmarks/bench_graph_scale.py --repeats 3        # 100k nodes, 1M edges
    PYTHONPATH=. python benchmarks/bench_graph_scale.py --big --big-weighted  # 51.5M weighted edges, 4 workers
    PYTHONPATH=. python benchmarks/bench_graph_scale.py --extrapolate       # 10B edges, 100 workers, on paper

The graph is bench_walks.py's Chung-Lu power-law graph (degree exponent 2.5, hubs anywhere in
the id order), undirected, unweighted. Every node starts ``--walks-per-node`` walks of
``--walk-length`` nodes. Rows, interleaved ``--repeats`` times, each checked to give the same
walks as the replicated layout:

- ``in one process``: one thread walks every walk block from the whole CSR
  (``graph.random_walks``, as a replicated worker does), then the same walks in supersteps over
  R node ranges (``graph.supersteps.walk_supersteps``: every range's superstep in turn, walkers
  and queries passed as a worker's mail would be, then ``assemble``): the algorithm's own cost
  per core, without Dask.
- ``LocalCluster``: ``--workers`` worker processes x 1 thread; replicated: the CSR built on one
  worker, then the job's walk tasks (``graph.corpus.make_walks``); partitioned: the ranges built
  (``cluster.walkers.build_parts``), then ``cluster.walkers.walk_partitioned``: one task per
  range per superstep, the mail between them, the client waiting on each superstep's counts. The
  adjacency is built before the clock starts in both. steps/s per core divides by the cores the
  workers had (min(workers, CPUs)).

``steps`` counts transitions (walk nodes - 1 per walk); ``x replicated`` is the row's steps/s
over the replicated row's of the same repeat; ``MB moved`` is the walkers, queries and answers
that crossed between ranges; ``others`` the CPU share other processes took (bench_speed.CpuWatch).

``--big``: writes a power-law edge list of ``--big-edges`` undirected edges over ``--big-nodes``
nodes as Parquet (``--big-weighted``: with weights drawn uniformly from [0.5, 2)), then runs a
whole job (walks, one epoch, publishing) on ``--big-workers`` workers whose memory limit
(``--big-limit``) is below the adjacency: graph.layout=auto must partition it. Dask enforces the
limit (a worker past 95% of it is killed; its pause at 80% is off, as in bench_scale.py: the
adjacency and the models are outside Dask's managed memory), and each worker's peak RSS is
printed against it. Dask spills the edges it manages to disk past 70% of the limit unless
``DASK_DISTRIBUTED__WORKER__MEMORY__SPILL=false`` and ``..._TARGET=false`` are set, which shows
what the job itself holds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nsdist import graph  # noqa: E402
from nsdist.graph.corpus import make_walks, walk_blocks  # noqa: E402
from nsdist.graph.csr import uniform_weights, weight_range  # noqa: E402
from nsdist.graph.partition import make_part, node_ranges, part_rows, split_edges  # noqa: E402
from nsdist.graph.supersteps import WalkParams, assemble, block_paths, walk_supersteps  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import CpuWatch  # noqa: E402


def power_law_edges(nodes: int, edges: int, gamma: float, seed: int) -> np.ndarray:
    """bench_walks.power_law_graph's edges: (2, E) int64, a simple graph (no repeats, no loops)."""
    rng = np.random.default_rng(seed)
    w = (np.arange(nodes) + 1.0) ** (-1.0 / (gamma - 1.0))
    ends = rng.choice(nodes, size=(2, edges), p=w / w.sum())
    ends = rng.permutation(nodes)[ends]
    return np.unique(np.sort(ends[:, ends[0] != ends[1]], axis=0), axis=1)


def in_memory(ends: np.ndarray, nodes: int, ranges: int):
    """The whole CSR and its ``ranges`` node ranges, as the jobs build them."""
    e = graph.Edges(pa.array(ends[0], pa.int64()), pa.array(ends[1], pa.int64()), None)
    parts = [graph.edge_ids(e, pa.array(np.arange(nodes), pa.int64()), directed=False)]
    csr = graph.build_csr(parts, nodes)
    degrees = np.diff(csr.offsets)
    bounds = node_ranges(degrees, ranges, weighted=False)
    pieces = split_edges(parts[0], bounds)
    rows = [part_rows([pieces[i]], bounds[i], bounds[i + 1]) for i in range(ranges)]
    weighted = not uniform_weights([weight_range(r[2]) for r in rows])
    return csr, [make_part(r, bounds[i], bounds[i + 1], weighted) for i, r in enumerate(rows)], bounds


class G:  # what make_walks reads of a GraphConfig
    def __init__(self, args, p, q):
        self.walks_per_node, self.walk_length, self.p, self.q = args.walks_per_node, args.walk_length, p, q


def replicated_in_process(csr, args, p, q):
    g, blocks = G(args, p, q), walk_blocks(csr.nodes, args.walks_per_node, args.walk_length)
    t0 = time.perf_counter()
    walks = [make_walks(csr, lo, hi, g, args.seed) for lo, hi in blocks]
    return time.perf_counter() - t0, walks, {}


def partitioned_in_process(parts, bounds, n, args, p, q):
    blocks = walk_blocks(n, args.walks_per_node, args.walk_length)
    params = WalkParams(args.walk_length, p, q)
    t0 = time.perf_counter()
    starts, index = graph.walk_starts(n, args.walks_per_node, 0, blocks[-1][1], args.seed)
    wid = np.arange(blocks[-1][1], dtype=np.int64)
    held, stats = walk_supersteps(parts, bounds, wid, starts, index, params, args.seed)
    cut = [block_paths(h, blocks, args.walk_length) for h in held]
    walks = [assemble([c[b] for c in cut], lo, hi, args.walk_length) for b, (lo, hi) in enumerate(blocks)]
    return time.perf_counter() - t0, walks, stats


def same(a, b) -> bool:
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def as_pairs(walks):
    return [(w.ids, w.offsets) if hasattr(w, "ids") else w for w in walks]


def row(name, p, q, seconds, walks, stats, cores, watch, reference=None):
    steps = sum(int(len(ids) - (len(offsets) - 1)) for ids, offsets in as_pairs(walks))
    rate = steps / seconds / cores
    ratio = f"{rate / reference:5.2f}" if reference else " 1.00"
    others = watch.stop()
    moved = f"{stats['bytes'] / 1e6:8.1f}" if stats else "       -"
    supersteps = f"{stats['supersteps']:5d}" if stats else "    -"
    shown = "?" if others is None else f"{others:.0%}"
    print(f"| {name:38s} | {p:g} | {q:g} | {steps / 1e6:6.2f} M | {seconds:7.2f} | {rate / 1e6:7.2f} M | {ratio} | "
          f"{supersteps} | {moved} | {shown} |", flush=True)
    return rate


def one_process(ends, args, grid, ranges_list):
    csr, _, _ = in_memory(ends, args.nodes, 1)
    built = {r: in_memory(ends, args.nodes, r)[1:] for r in ranges_list}
    print(f"graph: {args.nodes} nodes, {csr.edges} adjacency entries (max degree {np.diff(csr.offsets).max()}), "
          f"{csr.nbytes / 2**20:.1f} MiB; walks: {args.walks_per_node} per node, {args.walk_length} nodes\n")
    small = argparse.Namespace(**{**vars(args), "walks_per_node": 1, "walk_length": 3})
    for p, q in grid:  # compile (or load) every kernel
        replicated_in_process(csr, small, p, q)
        partitioned_in_process(*built[ranges_list[0]], args.nodes, small, p, q)
    print("| in one process, 1 thread | p | q | steps | seconds | steps/s/core | x replicated | supersteps | "
          "MB moved | others |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios = {}
    for _ in range(args.repeats):
        for p, q in grid:
            watch = CpuWatch()
            out = replicated_in_process(csr, args, p, q)
            ref = row("replicated (whole CSR)", p, q, *out, 1, watch)
            for r in ranges_list:
                watch = CpuWatch()
                got = partitioned_in_process(*built[r], args.nodes, args, p, q)
                assert same(as_pairs(out[1]), got[1]), "the partitioned walks differ"
                rate = row(f"partitioned, {r} ranges", p, q, *got, 1, watch, ref)
                ratios.setdefault((f"{r} ranges", p, q), []).append(rate / ref)
    return ratios


def on_cluster(ends, args, grid):
    from distributed import Client, LocalCluster, wait

    from nsdist.cluster.walkers import build_parts, walk_partitioned
    from nsdist.config import load_config
    from nsdist.cluster.graph import read_graph
    from nsdist.inputs import plan_inputs, check_inputs

    tmp = tempfile.mkdtemp(prefix="bench-graph-scale-")
    path = os.path.join(tmp, "edges.parquet")
    pq.write_table(pa.table({"src": ends[0], "dst": ends[1]}), path, row_group_size=200_000)
    cores = min(args.workers, os.cpu_count() or 1)
    ratios = {}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        client.wait_for_workers(args.workers)
        workers = sorted(client.scheduler_info()["workers"])
        print(f"\n| LocalCluster, {args.workers} workers x 1 thread | p | q | steps | seconds | steps/s/core | "
              "x replicated | supersteps | MB moved | others |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for rep in range(args.repeats + 1):  # the first round compiles the kernels on the workers
            for p, q in grid:
                cfg = load_config(None, {"graph": {"directed": False, "walks_per_node": args.walks_per_node,
                                                   "walk_length": args.walk_length, "p": p, "q": q},
                                         "train": {"seed": args.seed}}, environ={}, edges=(path,), out=tmp)
                blocks = plan_inputs(cfg, check_inputs(cfg, None, None))
                read = read_graph(client, cfg, blocks, f"r{rep}-{p}-{q}")
                ranges = walk_blocks(read.n_nodes, args.walks_per_node, args.walk_length)
                places = [workers[i % len(workers)] for i in range(len(ranges))]
                csr = client.submit(graph.build_csr, read.ids, read.n_nodes, read.degrees, key=f"csr-{rep}-{p}-{q}")
                wait(csr)
                watch = CpuWatch()
                t0 = time.perf_counter()
                walks = [client.submit(make_walks, csr, lo, hi, cfg.graph, args.seed, key=f"w-{rep}-{p}-{q}-{i}",
                                       workers=[w]) for i, ((lo, hi), w) in enumerate(zip(ranges, places))]
                wait(walks)
                seconds = time.perf_counter() - t0
                want = client.gather(walks)
                ref = row("replicated", p, q, seconds, want, {}, cores, watch) if rep else None
                del csr
                parts = build_parts(client, list(read.ids), read.bounds, read.degrees, workers, f"{rep}-{p}-{q}")
                wait(parts)
                watch = CpuWatch()
                t0 = time.perf_counter()
                got, stats = walk_partitioned(client, parts, read.bounds, ranges, places, cfg.graph, args.seed,
                                              read.n_nodes, workers, f"{rep}-{p}-{q}")
                wait(got)
                seconds = time.perf_counter() - t0
                got = client.gather(got)
                assert same(as_pairs(want), as_pairs(got)), "the partitioned walks differ"
                if rep:
                    rate = row(f"partitioned, {len(parts)} ranges", p, q, seconds, got, stats, cores, watch, ref)
                    ratios.setdefault((f"cluster {len(parts)} ranges", p, q), []).append(rate / ref)
                del parts, walks, got, want
    return ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=1_000_000, help="undirected edges drawn (before merging)")
    ap.add_argument("--gamma", type=float, default=2.5)
    ap.add_argument("--walks-per-node", type=int, default=2)
    ap.add_argument("--walk-length", type=int, default=80)
    ap.add_argument("--ranges", default="2,4,8", help="node ranges of the in-process rows")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pq", default="1,1;0.5,2", help="(p, q) pairs: 'p,q;p,q'")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-cluster", action="store_true")
    ap.add_argument("--big", action="store_true", help="only the job on a graph no worker holds whole")
    ap.add_argument("--big-nodes", type=int, default=1_000_000)
    ap.add_argument("--big-edges", type=int, default=26_000_000, help="undirected edges drawn (before merging)")
    ap.add_argument("--big-workers", type=int, default=4)
    ap.add_argument("--big-limit", default="800MB")
    ap.add_argument("--big-weighted", action="store_true", help="edges with weights (16 adjacency bytes each, not 4)")
    ap.add_argument("--big-edges-file", help="train this Parquet edge list (src, dst[, weight]) instead of drawing one")
    ap.add_argument("--big-dim", type=int, default=8)
    ap.add_argument("--big-walk-length", type=int, default=20)
    ap.add_argument("--extrapolate", action="store_true", help="only print the extrapolation (--x-* options)")
    ap.add_argument("--x-nodes", type=int, default=1_000_000_000)
    ap.add_argument("--x-edges", type=int, default=10_000_000_000, help="directed adjacency entries")
    ap.add_argument("--x-workers", type=int, default=100)
    ap.add_argument("--x-gbps", type=float, default=25.0)
    ap.add_argument("--x-query-bytes", type=float, default=10.3,
                    help="node2vec's query and answer bytes per step measured at 2 ranges")
    ap.add_argument("--x-n2v-supersteps", type=int, default=211, help="node2vec supersteps per wave measured")
    ap.add_argument("--x-limit-gb", type=float, default=64.0, help="each worker's memory limit")
    args = ap.parse_args(argv)
    if args.extrapolate:
        return extrapolate(args)
    if args.big:
        return big_job(args)
    grid = [tuple(float(v) for v in pair.split(",")) for pair in args.pq.split(";")]
    ends = power_law_edges(args.nodes, args.edges, args.gamma, args.seed)
    ratios = one_process(ends, args, grid, [int(r) for r in args.ranges.split(",")])
    if not args.skip_cluster:
        ratios.update(on_cluster(ends, args, grid))
    print(f"\nmedian x replicated (steps/s per core) over {args.repeats} interleaved repeats:")
    for (what, p, q), values in ratios.items():
        print(f"  {what}, p {p:g}, q {q:g}: {statistics.median(values):.2f} (runs {', '.join(f'{v:.2f}' for v in values)})")


def extrapolate(args):
    """The partitioned layout's memory, traffic and tasks for ``--x-edges`` directed adjacency
    entries over ``--x-nodes`` nodes on ``--x-workers`` workers, from the per-step figures this
    script measures (a walker message of 28 bytes, a query 16 and its answer 9)."""
    from nsdist.cluster.walkers import wave_blocks
    from nsdist.graph.corpus import WALK_BLOCK_TOKENS
    from nsdist.graph.csr import csr_bytes

    n, e, P, L, wpn = args.x_nodes, args.x_edges, args.x_workers, args.walk_length, args.walks_per_node
    adjacency = csr_bytes(n, e, weighted=False)
    steps = n * wpn * (L - 1)
    cross = (P - 1) / P
    first = 28 * cross  # bytes per walk step, first-order
    # node2vec at p = 0.5, q = 2: the queries and answers measured per step at 2 ranges, scaled
    # to this crossing rate; supersteps per wave as measured (211 for L = 80 at 2 ranges).
    n2v = first + args.x_query_bytes * cross / 0.5
    wave_tokens = wave_blocks(P, int(args.x_limit_gb * 1e9)) * WALK_BLOCK_TOKENS
    waves = -(-n * wpn * L // wave_tokens)
    tasks = P + P * P
    print(f"adjacency {adjacency / 1e9:,.1f} GB: {adjacency / P / 1e9:,.2f} GB per worker partitioned over {P}; "
          f"waves of {wave_tokens / P / 1e6:,.0f}M tokens per worker ({12 * wave_tokens / P / 1e9:,.1f} GB of walk "
          f"nodes) with {args.x_limit_gb:g} GB workers")
    print(f"walks: {n * wpn:,} of {L} nodes = {steps:,} steps; the corpus {4 * n * wpn * L / 1e12:,.1f} TB of int32 "
          f"tokens ({4 * n * wpn * L / P / 1e9:,.1f} GB per worker, either layout)")
    for name, per_step, supersteps in (("first-order", first, L), ("node2vec p=0.5 q=2", n2v, args.x_n2v_supersteps)):
        total = steps * per_step
        print(f"{name}: {per_step:.1f} B/step, {total / 1e12:,.1f} TB between workers, {total / P / 1e9:,.0f} GB "
              f"out of each ({total / P / (args.x_gbps * 1e9 / 8):,.0f} s at {args.x_gbps:g} Gb/s); "
              f"{waves:,} waves x ~{supersteps} supersteps x {tasks:,} tasks = {waves * supersteps * tasks:,.0f} tasks; "
              f"a superstep moves {wave_tokens / L * per_step / P / 1e6:,.1f} MB out of each worker")


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _memory_config() -> dict:
    import dask

    return dask.config.get("distributed.worker.memory")


def big_job(args):
    """A whole job (walks, one epoch, publishing) on a graph whose adjacency exceeds every
    worker's memory limit: graph.layout=auto partitions it. Its files are removed at the end."""
    tmp = tempfile.mkdtemp(prefix="bench-graph-big-")
    try:
        return _big_run(args, _big_edges(args, tmp), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _big_edges(args, tmp: str) -> str:
    """The edge list's path: ``--big-edges-file``, or a power-law graph written into ``tmp``."""
    if args.big_edges_file:
        return args.big_edges_file
    t0 = time.perf_counter()
    ends = power_law_edges(args.big_nodes, args.big_edges, args.gamma, args.seed)
    path = os.path.join(tmp, "edges.parquet")
    columns = {"src": ends[0], "dst": ends[1]}
    if args.big_weighted:
        columns["weight"] = np.random.default_rng(args.seed + 1).uniform(0.5, 2.0, ends.shape[1]).astype(np.float32)
    pq.write_table(pa.table(columns), path, row_group_size=1_000_000)
    print(f"edge list: {ends.shape[1]:,} undirected edges ({2 * ends.shape[1]:,} directed) over {args.big_nodes:,} "
          f"nodes{', weighted' if args.big_weighted else ''}, {os.path.getsize(path) / 1e6:,.0f} MB of Parquet, "
          f"written in {time.perf_counter() - t0:.0f} s")
    return path


def _big_run(args, path: str, tmp: str):
    import dask
    from distributed import Client, LocalCluster

    from nsdist.config import load_config
    from nsdist.pipeline import train

    off = {"distributed.worker.memory.pause": False}
    keys = {"graph": {"directed": False, "walks_per_node": 1, "walk_length": args.big_walk_length},
            "train": {"dim": args.big_dim, "window": 5, "min_count": 1, "sample": 0, "epochs": 1, "seed": 1}}
    cfg = load_config(None, keys, environ={}, edges=(path,), out=os.path.join(tmp, "out"))
    with dask.config.set(off), LocalCluster(n_workers=args.big_workers, threads_per_worker=1,
                                            memory_limit=args.big_limit, dashboard_address=":0") as lc, \
            Client(lc) as client:
        client.wait_for_workers(args.big_workers)
        pids = set(client.run(os.getpid).values())
        t0 = time.perf_counter()
        result = train(cfg, client)
        seconds = time.perf_counter() - t0
        peaks = client.run(_peak_rss)
        # A worker Dask killed comes back as a new process, whose peak says nothing of the job's.
        lost = len(pids - set(client.run(os.getpid).values()))
        memory = next(iter(client.run(_memory_config).values()))  # as the workers have it
    m = result.manifest
    g, limit = m["graph"], dask.utils.parse_bytes(args.big_limit)
    from nsdist.graph.csr import csr_bytes
    adjacency = csr_bytes(g["nodes"], g["edges"], g["weighted"])
    print(f"graph: {g['nodes']:,} nodes, {g['edges']:,} directed edges; adjacency {adjacency / 1e6:,.1f} MB against "
          f"a memory limit of {limit / 1e6:,.1f} MB per worker; layout {g['layout']}")
    print(f"walks: {g['walks']:,} in {g.get('supersteps')} supersteps, {g.get('walk_bytes', 0) / 1e6:,.0f} MB between "
          f"workers; job {seconds:,.0f} s: {json_stages(m)}")
    print(f"Dask's memory management: spill {memory['spill']}, target {memory['target']}, terminate "
          f"{memory['terminate']}, pause {memory['pause']}")
    print(f"adjacency / memory limit {adjacency / limit:.2f}; worker peak RSS (process, Python and Dask included): "
          + ", ".join(f"{v / 1e6:,.0f} MB" for v in peaks.values())
          + f"; the highest {max(peaks.values()) / limit:.2f} x the limit; workers lost: {lost}")


def json_stages(m) -> str:
    """The manifest's stage timings: walking (the graph's "count"), encoding, each epoch."""
    metrics = m["metrics"]
    epochs = ", ".join(f"epoch {i + 1} {e['seconds']:,.0f} s" for i, e in enumerate(metrics["epochs"]))
    return f"walk and count {metrics['count_seconds']:,.0f} s, encode {metrics['encode_seconds']:,.0f} s, {epochs}"


if __name__ == "__main__":
    main()
