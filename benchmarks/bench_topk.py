#!/usr/bin/env python
"""The top-k table at catalogue size: nsdist's worker code path against single-process references.

Run by hand (never by the test suite):

    python benchmarks/bench_topk.py                        # 1M items x dim 64, top 20, 2 workers
    python benchmarks/bench_topk.py --items 200000         # a quick calibration (about 1 min)
    PYTHONPATH=/tmp/faisslib python benchmarks/bench_topk.py --items 700000   # faiss as a reference too

What runs, one after the other:

1. **nsdist**: a LocalCluster of ``--workers`` processes x 1 thread. Every worker builds the
   same vectors as its "final model" (``cluster.models.create``; not timed): planted clusters,
   ``--clusters`` centres on the unit sphere and each item a centre plus Gaussian noise, from a
   seed, so the client never holds them. The table's row blocks (``plan.topk_blocks``) are then
   dealt over the workers exactly as a job deals them: ``models.serve`` -> ``pipeline._write_topk``
   (the unit rows once per worker, ``topk.block_topk``, the Parquet part written by the worker
   into a temp dir). Timed: from submitting the blocks to the last part written.
2. **numpy, whole rows** (this process, one BLAS thread): the textbook blocked top-k, blocks of
   rows x all items within 64 MiB of scores, ``argpartition`` then a sort of the k.
3. **faiss** ``IndexFlatIP.search`` (exact, one OpenMP thread), when ``import faiss`` works.

The references answer ``--ref-queries`` rows against all items, and their time is scaled to all
rows (the cost of a row is a product with every item: linear in the rows answered). Ratios:
``core ratio`` = reference single-core seconds (scaled) / (nsdist wall x workers): per core;
``wall ratio`` = reference seconds / nsdist wall. With ``--items`` under 1M, the 1M time is
extrapolated as wall x (1M / items)^2 (every row against every item).

``recall`` is the share of the references' k neighbours of the queried rows that nsdist's table
holds (floating-point ties and rounding may swap the last ones). ``others`` is the CPU share
other processes took while nsdist ran (bench_speed.CpuWatch): over 5%, the time is suspect.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread in this process: the references are single-core (the Dask nanny sets
# the workers' to 1 as well).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import CpuWatch, wait_idle  # noqa: E402

MIB = 2**20


def planted(items: int, dim: int, clusters: int, noise: float, seed: int):
    """The benchmark's vectors as a model: item i = centre (i mod clusters) + noise, float32."""
    from nsdist.model import Model

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    win = rng.standard_normal((items, dim), dtype=np.float32)
    win *= np.float32(noise)
    win += centres[np.arange(items) % clusters]
    return Model(win, np.zeros((items, dim), np.float32))


def names(items: int):
    """The vocabulary: 'i0000000', 'i0000001', ... (row i is item i)."""
    import pyarrow as pa

    from nsdist.vocab import Vocab

    return Vocab(pa.array([f"i{i:07d}" for i in range(items)], pa.string()), np.ones(items, np.int64))


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_nsdist(args, out: str) -> dict:
    """The job's code path on a fresh LocalCluster; wall seconds of the deal and its parts."""
    from distributed import Client, LocalCluster, wait

    from nsdist import cluster, pipeline
    from nsdist.cluster import models
    from nsdist.plan import topk_blocks

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", memory_limit=0) as lc, Client(lc) as client:
        client.wait_for_workers(args.workers)
        cluster.setup_workers(client)
        workers = sorted(client.scheduler_info()["workers"])
        tag = f"bench-topk-{os.getpid()}"
        ready = {w: client.submit(models.create, tag, 0, 0, [i], planted, args.items, args.dim, args.clusters,
                                  args.noise, args.seed, key=f"create-{i}", workers=[w], allow_other_workers=False)
                 for i, w in enumerate(workers)}
        vocab = client.submit(names, args.items, key="vocab")
        wait([*ready.values(), vocab])
        # Warm: numba compiles (or loads) the fold kernel on every worker before the clock starts.
        client.run(_warm)
        blocks = topk_blocks(args.items, len(workers), args.topk)
        if args.wait_idle:
            wait_idle(args.wait_idle)  # the workers are idle now: their models are built
        watch, t0 = CpuWatch(), time.perf_counter()
        futures = [client.submit(models.serve, tag, 0, 0, pipeline._write_topk, (out, vocab, args.topk, None),
                                 (p, block), ready[w], key=f"topk-{p}", workers=[w], allow_other_workers=False)
                   for p, block in enumerate(blocks) for w in [workers[p % len(workers)]]]
        parts = client.gather(futures)
        wall, others = time.perf_counter() - t0, watch.stop()
        rss = client.run(peak_rss)
        client.run(models.drop, tag)
    size = sum(meta["size"] for part in parts for meta in part.values())
    return {"wall_seconds": wall, "parts": len(blocks), "bytes": size, "others": others,
            "worker_peak_mb": max(rss.values()) / MIB}


def _warm() -> None:
    from nsdist.nearest import block_topk, unit_rows

    block_topk(unit_rows(np.eye(3, dtype=np.float32)), 0, 3, 1)


def numpy_rows(unit: np.ndarray, queries: np.ndarray, k: int, budget: int = 64 * MIB) -> np.ndarray:
    """The textbook blocked top-k: rows x all items of scores within ``budget``, argpartition,
    then a sort of the k; the row itself left out."""
    rows = max(1, budget // (4 * len(unit)))
    out = np.empty((len(queries), k), np.int64)
    for r0 in range(0, len(queries), rows):
        q = queries[r0:r0 + rows]
        scores = unit[q] @ unit.T
        scores[np.arange(len(q)), q] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[r0:r0 + rows] = np.take_along_axis(part, order, axis=1)
    return out


def faiss_flat(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray | None:
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    _, found = index.search(unit[queries], k + 1)
    # The row itself is (almost always) its own best match; drop it wherever it is.
    return np.array([[j for j in row if j != q][:k] for row, q in zip(found, queries)], np.int64)


def references(args) -> dict:
    """The single-process references on the first ``--ref-queries`` rows, timed."""
    from nsdist.nearest import unit_rows

    unit = unit_rows(planted(args.items, args.dim, args.clusters, args.noise, args.seed).win)
    queries = np.arange(min(args.ref_queries, args.items))
    found = {}
    for name, fn in (("numpy whole rows", numpy_rows), ("faiss IndexFlatIP", faiss_flat)):
        if args.wait_idle:
            wait_idle(args.wait_idle)
        watch, t0 = CpuWatch(), time.perf_counter()
        idx = fn(unit, queries, args.topk)
        seconds, others = time.perf_counter() - t0, watch.stop()
        if idx is not None:
            found[name] = {"idx": idx, "seconds": seconds, "scaled_seconds": seconds * args.items / len(queries),
                           "others": others}
    return found


def recall(out: str, refs: dict, k: int, queries: int) -> dict:
    """Share of each reference's neighbours of the queried rows that the published table holds."""
    import pyarrow.dataset

    table = pyarrow.dataset.dataset(os.path.join(out, "neighbors"), format="parquet").to_table()
    neighbors = np.array([int(w[1:]) for w in table.column("neighbor").to_pylist()[:queries * k]]).reshape(-1, k)
    return {name: float(np.mean([len(set(a) & set(b)) / k for a, b in zip(neighbors, r["idx"])]))
            for name, r in refs.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clusters", type=int, default=20_000, help="planted clusters (items per cluster: items / this)")
    p.add_argument("--noise", type=float, default=0.1, help="per-dimension noise around the centres")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ref-queries", type=int, default=4000, help="rows the references answer (then scaled)")
    p.add_argument("--skip-references", action="store_true")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each measurement, wait up to this long for the other processes to go quiet")
    p.add_argument("--json", metavar="FILE", help="write the measurements as JSON")
    args = p.parse_args()

    out = tempfile.mkdtemp(prefix="nsdist-bench-topk-")
    try:
        ours = run_nsdist(args, out)
        refs = {} if args.skip_references else references(args)
        agree = recall(out, refs, args.topk, min(args.ref_queries, args.items)) if refs else {}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    report(args, ours, refs, agree)


def report(args, ours: dict, refs: dict, agree: dict) -> None:
    wall = ours["wall_seconds"]
    print(f"{args.items:,} items x dim {args.dim}, top {args.topk}, {args.workers} workers x 1 thread "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    print(f"nsdist: {wall:.1f} s wall, {args.items / wall:,.0f} items/s, {ours['parts']} parts, "
          f"{ours['bytes'] / MIB:,.1f} MiB of Parquet, worker peak {ours['worker_peak_mb']:,.0f} MB, "
          f"others {ours['others'] if ours['others'] is None else format(ours['others'], '.0%')}")
    if args.items < 1_000_000:
        print(f"  extrapolated to 1,000,000 items: {wall * (1e6 / args.items) ** 2:,.0f} s "
              f"(x (1M / {args.items:,})^2: every row against every item)")
    for name, r in refs.items():
        print(f"{name}: {r['seconds']:.1f} s for {min(args.ref_queries, args.items):,} rows, scaled to all "
              f"{r['scaled_seconds']:,.0f} s on 1 core; core ratio {r['scaled_seconds'] / (wall * args.workers):.2f}, "
              f"wall ratio {r['scaled_seconds'] / wall:.2f}, recall {agree[name]:.4f}, "
              f"others {r['others'] if r['others'] is None else format(r['others'], '.0%')}")
    if args.json:
        record = {"args": vars(args), "nsdist": ours, "references": {
            name: {k: v for k, v in r.items() if k != "idx"} | {"recall": agree[name]} for name, r in refs.items()}}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
