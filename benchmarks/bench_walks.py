#!/usr/bin/env python
"""Random-walk speed: nsdist.graph's kernels against PecanPy's on the same graph.

Run by hand (never by the test suite):

    PYTHONPATH=.:/tmp/pecanpy-site python benchmarks/bench_walks.py     # 100k nodes, 1M edges

The graph is a Chung-Lu power-law graph generated here from a seed (``--nodes``, ``--edges``
undirected edges drawn with endpoint probability ~ (i + 1) ** (-1 / (gamma - 1)), self-loops
and duplicates then dropped), unweighted, or with uniform(0.5, 2) weights
(``--weighted``). Every node starts ``--walks-per-node`` walks of ``--walk-length`` nodes.

Rows, one after the other, in this process:

- ``nsdist``: ``graph.walk_starts`` + ``graph.random_walks`` over all walks, in 1 task (1
  thread) or in ``T`` tasks on ``T`` threads (the kernel releases the GIL; this is how a worker
  runs its tasks). The first call of each kernel is a warm-up (numba compilation, not timed).
- PecanPy (its ``_random_walks`` on the same CSR, numba ``prange`` on ``numba.set_num_threads(T)``;
  the mapping of the walks to Python lists of strings that ``simulate_walks`` then does is not
  timed): ``FirstOrderUnweighted`` (what it uses for p = q = 1 without weights),
  ``PreCompFirstOrder`` (p = q = 1 with weights: alias tables) and ``SparseOTF`` (node2vec:
  each step computes the current node's full biased distribution), also at p = q = 1.
  PecanPy's ``walk_length`` counts steps (walks of walk_length + 1 nodes): it is given
  ``--walk-length`` - 1, so both write walks of the same number of nodes.

``steps/s`` counts transitions (walk nodes - 1 per walk). ``x PecanPy`` is nsdist's rate over
PecanPy's best mode at the same (p, q) and threads. ``return`` and ``near`` are the share of
second-order steps that go back to the previous node and to a neighbour of it: the two
implementations sample the same distribution, so these agree up to sampling noise. ``others``:
the CPU share other processes took during the row (bench_speed.CpuWatch; above a few percent the
row's timing is suspect). ``--repeats R`` runs every (threads, p, q) group R times in turn
(PecanPy, then nsdist, then again) and ends with the median of its ``x PecanPy``.

PecanPy (2.0.9) pins numpy < 2 through nptyping, which it uses for type hints only; install it
beside the venv without its dependencies and this script stubs nptyping:
``pip install --no-deps --target /tmp/pecanpy-site pecanpy numba-progress``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nsdist import graph  # noqa: E402
from nsdist.graph.walks import _links  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import CpuWatch  # noqa: E402


def power_law_graph(nodes: int, edges: int, gamma: float, weighted: bool, seed: int) -> graph.CSR:
    """A Chung-Lu graph through the same path a job takes (edge_ids, out_degrees, build_csr)."""
    rng = np.random.default_rng(seed)
    w = (np.arange(nodes) + 1.0) ** (-1.0 / (gamma - 1.0))
    ends = rng.choice(nodes, size=(2, edges), p=w / w.sum())
    ends = rng.permutation(nodes)[ends]  # hubs anywhere in the id order, as in real data
    ends = np.unique(np.sort(ends[:, ends[0] != ends[1]], axis=0), axis=1)  # a simple graph: no weights from merging
    edges = ends.shape[1]
    e = graph.Edges(pa.array(ends[0], pa.int64()), pa.array(ends[1], pa.int64()),
                    rng.uniform(0.5, 2.0, edges).astype(np.float32) if weighted else None)
    table = pa.array(np.arange(nodes), pa.int64())  # every node, even those without edges
    parts = [graph.edge_ids(e, table, directed=False)]
    t0 = time.perf_counter()
    csr = graph.build_csr(parts, nodes)
    print(f"graph: {nodes} nodes, {csr.edges} adjacency entries (max degree "
          f"{np.diff(csr.offsets).max()}), {csr.nbytes / 2**20:.1f} MiB, build_csr {time.perf_counter() - t0:.2f} s")
    return csr


def nsdist_walks(csr, walks_per_node, walk_length, p, q, threads, seed=1):
    n = csr.nodes
    cuts = np.linspace(0, n * walks_per_node, threads + 1).astype(np.int64)

    def task(k):
        starts, index = graph.walk_starts(n, walks_per_node, cuts[k], cuts[k + 1], seed)
        return graph.random_walks(csr, starts, index, walk_length, p, q, seed)

    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        out = list(pool.map(task, range(threads)))
        seconds = time.perf_counter() - t0
    ids = np.concatenate([o[0] for o in out])
    lengths = np.concatenate([np.diff(o[1]) for o in out])
    return seconds, ids, lengths


def pecanpy_modes():
    """PecanPy's classes, with nptyping (type hints only, and numpy < 2 only) stubbed."""
    try:
        import nptyping  # noqa: F401
    except Exception:
        stub = types.ModuleType("nptyping")

        class _Hint:
            def __class_getitem__(cls, key):
                return cls

        for name in ("Bool", "Float32", "NDArray", "Shape", "UInt32", "UInt64"):
            setattr(stub, name, _Hint)
        sys.modules["nptyping"] = stub
    from numba_progress import ProgressBar
    from pecanpy import pecanpy as pp
    return pp, ProgressBar


def pecanpy_walks(pp, ProgressBar, mode, csr, walks_per_node, walk_length, p, q, threads, seed=1):
    g = getattr(pp, mode)(p=p, q=q, workers=threads, random_state=seed)
    g.indptr, g.indices = csr.offsets.astype(np.uint32), csr.neighbors.astype(np.uint32)
    g.data = np.ones(csr.edges, np.float32) if csr.weights is None else csr.weights.copy()
    g.set_node_ids(None, implicit_ids=True, num_nodes=csr.nodes)
    g._preprocess_transition_probs()  # PreCompFirstOrder's alias tables: not timed, like our build
    starts = np.concatenate([np.arange(csr.nodes, dtype=np.uint32)] * walks_per_node)
    np.random.default_rng(seed).shuffle(starts)
    move_forward, has_nbrs = g.get_move_forward(), g.get_has_nbrs()
    numba.set_num_threads(threads)
    with ProgressBar(total=len(starts), disable=True) as progress:
        t0 = time.perf_counter()
        mat = g._random_walks(len(starts), walk_length - 1, seed, starts, has_nbrs, move_forward, progress)
        seconds = time.perf_counter() - t0
    lengths = mat[:, -1].astype(np.int64)
    keep = np.arange(mat.shape[1] - 1)[None, :] < lengths[:, None]
    return seconds, mat[:, :-1][keep].astype(np.int32), lengths


@numba.njit(cache=True)
def _shares(offsets, neighbors, ids, lengths):
    """(return steps, steps to a neighbour of the previous node, second-order steps)."""
    back = near = total = 0
    pos = 0
    for k in range(len(lengths)):
        for i in range(pos + 2, pos + lengths[k]):
            t, x = ids[i - 2], ids[i]
            total += 1
            if x == t:
                back += 1
            elif _links(offsets, neighbors, t, x):
                near += 1
        pos += lengths[k]
    return back, near, total


def row(name, threads, p, q, seconds, ids, lengths, csr, watch, reference=None):
    steps = int(lengths.sum() - len(lengths))
    rate = steps / seconds
    back, near, total = _shares(csr.offsets, csr.neighbors, ids, lengths)
    ratio = f"{rate / reference:5.2f}" if reference else "     "
    others = watch.stop()
    shown = "?" if others is None else f"{others:.0%}"
    print(f"| {name:32s} | {threads} | {p:g} | {q:g} | {steps / 1e6:7.2f} M | {seconds:7.2f} | {rate / 1e6:7.2f} M | "
          f"{ratio} | {back / total:.3f} | {near / total:.3f} | {shown} |", flush=True)
    return rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=1_000_000, help="undirected edges drawn (before merging)")
    ap.add_argument("--gamma", type=float, default=2.5, help="degree exponent of the power law")
    ap.add_argument("--weighted", action="store_true")
    ap.add_argument("--walks-per-node", type=int, default=2)
    ap.add_argument("--walk-length", type=int, default=80)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pq", default="1,1;0.5,2;2,0.5", help="(p, q) pairs: 'p,q;p,q'")
    ap.add_argument("--skip-pecanpy", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of every row, interleaved; medians at the end")
    ap.add_argument("--no-sparse-otf-at-1", action="store_true",
                    help="at p = q = 1, time only PecanPy's first-order mode (SparseOTF is 20x slower there)")
    args = ap.parse_args(argv)
    csr = power_law_graph(args.nodes, args.edges, args.gamma, args.weighted, args.seed)
    pp = None if args.skip_pecanpy else pecanpy_modes()
    print(f"walks: {args.walks_per_node} per node, {args.walk_length} nodes; numba {numba.__version__}, "
          f"{os.cpu_count()} CPUs\n")
    print("| implementation | threads | p | q | steps | seconds | steps/s | x PecanPy | return | near | others |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    grid = [tuple(float(v) for v in pair.split(",")) for pair in args.pq.split(";")]
    nsdist_walks(csr, 1, 3, 1.0, 1.0, 1)  # compile (or load) the first-order kernel...
    nsdist_walks(csr, 1, 3, 0.5, 2.0, 1)  # ...and the node2vec one
    ratios = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        for p, q in grid:
            for _ in range(args.repeats):
                ratios.setdefault((threads, p, q), []).append(compare(pp, csr, args, threads, p, q))
    if args.repeats > 1 and pp:
        print(f"\nmedian x PecanPy over {args.repeats} interleaved repeats:")
        for (threads, p, q), values in ratios.items():
            print(f"  threads {threads}, p {p:g}, q {q:g}: {statistics.median(values):.2f} "
                  f"(runs {', '.join(f'{v:.2f}' for v in values)})")


def compare(pp, csr, args, threads, p, q):
    """PecanPy's modes at (p, q), then nsdist's, one row each; nsdist's rate over PecanPy's best."""
    first = p == 1 and q == 1
    modes = (["PreCompFirstOrder" if csr.weights is not None else "FirstOrderUnweighted"] if first else [])
    modes += [] if first and args.no_sparse_otf_at_1 else ["SparseOTF"]
    best = None
    for mode in modes if pp else []:
        pecanpy_walks(*pp, mode, csr, 1, 3, p, q, threads)  # compile
        watch = CpuWatch()
        out = pecanpy_walks(*pp, mode, csr, args.walks_per_node, args.walk_length, p, q, threads)
        rate = row(f"PecanPy {mode}", threads, p, q, *out, csr, watch)
        best = max(best or 0, rate)
    watch = CpuWatch()
    out = nsdist_walks(csr, args.walks_per_node, args.walk_length, p, q, threads)
    rate = row("nsdist " + ("first-order" if first else "node2vec rejection"), threads, p, q, *out, csr, watch, best)
    return rate / best if best else None


if __name__ == "__main__":
    main()
