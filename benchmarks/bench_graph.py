#!/usr/bin/env python
"""Node embeddings: nsdist end to end against DeepWalk/node2vec on gensim, same graphs, one run.

Run by hand (never by the test suite):

    PYTHONPATH=.:/tmp/pecanpy-site python benchmarks/bench_graph.py            # all: ~90 min on 2 busy cores
    PYTHONPATH=. python benchmarks/bench_graph.py --sections karate,sbm --seeds 1 --skip-pecanpy

Graphs (written into a temp dir by nsdist.synth.graph, as ``nsdist synth --graph`` writes them):

- ``sbm``: the default planted block model (10k nodes, 10 communities, ratio 20);
- ``sbm8``: the same at in/out ratio 8 (closer to the detectability limit, about 6): harder;
- ``roles``: the ring of communities with hub / bridge / periphery roles, scored on both label
  sets (``labels.tsv`` communities, ``roles.tsv`` roles) at (p, q) = (1, 1), (1, 0.5), (1, 2);
- ``karate``: networkx's karate club, the 'club' attribute as labels (classification only).

Pipelines, one after the other, never overlapping:

1. ``nsdist``: ``nsdist.train`` on a LocalCluster of ``--workers`` processes x 1 thread (started
   once, not timed) with jobs/graph.yaml's settings. ``total``: the call, start to published.
   ``walks``: from the "graph:" log record (edges read, adjacency size known) to the vocabulary
   record; it covers the CSR build, the walks and their counting (metrics count_seconds also
   covers reading the edges). ``train``: the epoch's seconds from the manifest.
2. ``gensim+nsdist walks``: the CSR built in this process (graph.edge_ids, build_csr: not
   timed), walks by ``graph.walk_starts`` + ``graph.random_walks`` on ``--workers`` threads (the
   kernel releases the GIL), then mapped to lists of node-id strings (timed: gensim needs
   them), then gensim ``Word2Vec(sg=1, hs=0, negative=5, window, vector_size=dim, min_count=1,
   sample=0, epochs=1, workers=--workers)`` (vocabulary + training, timed together).
3. ``gensim+PecanPy walks``: the same with PecanPy's ``simulate_walks`` (FirstOrderUnweighted
   at p = q = 1, SparseOTF otherwise; numba threads = --workers) on the same CSR; it returns the
   lists of strings itself. Its ``walk_length`` counts steps: given walk_length - 1.

Every walk kernel and gensim are warmed up before the timed runs (numba compilation).

Quality: ``nsdist.evaluate.graph.node_classification`` (Micro/Macro-F1 at train ratios
0.1/0.5/0.9, ``--splits`` splits) and ``link_prediction`` on the held-out edges (AUC of cosine
and of Hadamard + logistic regression), with the training edges known. Each pipeline runs with
``--seeds`` seeds (train.seed, walk seed, gensim seed); tables show the mean (and the spread
over seeds where there are several). Timings: best and median over the seeds' runs.
``others`` is the CPU share other processes took during the row (bench_speed.CpuWatch): over
5%, timings are suspect; ``load`` is os.getloadavg()'s 1-minute value at the row's end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from bench_speed import CpuWatch

from nsdist import graph
from nsdist.evaluate.graph import (
    link_prediction,
    node_classification,
    read_edges,
    read_labels,
)

RATIOS = (0.1, 0.5, 0.9)


# ---------------------------------------------------------------- graphs

def make_graphs(where: str, nodes: int, sections: list[str]) -> dict:
    """{name: {"edges", "test", "labels": {label set: path}}} for the requested sections."""
    from nsdist.synth.graph import GraphSpec, generate_graph

    out = {}
    specs = {"sbm": (GraphSpec(), False), "sbm8": (GraphSpec(ratio=8.0), False), "roles": (GraphSpec(), True)}
    for name, (spec, roles) in specs.items():
        if name in sections:
            f = generate_graph(os.path.join(where, name), nodes=nodes, seed=1, spec=spec, roles=roles)
            labels = {"community": f.labels, **({"role": f.roles} if roles else {})}
            out[name] = {"edges": f.train, "test": f.test, "labels": labels}
    if "karate" in sections:
        import networkx as nx

        g = nx.karate_club_graph()
        d = os.path.join(where, "karate")
        os.makedirs(d, exist_ok=True)
        e = np.array(g.edges(), np.int64)
        pq.write_table(pa.table({"src": e[:, 0], "dst": e[:, 1]}), os.path.join(d, "edges.parquet"))
        with open(os.path.join(d, "labels.tsv"), "w") as fh:
            fh.writelines(f"{n}\t{a['club']}\n" for n, a in g.nodes(data=True))
        out["karate"] = {"edges": os.path.join(d, "edges.parquet"), "test": None,
                         "labels": {"club": os.path.join(d, "labels.tsv")}}
    return out


def load_csr(path: str):
    """(CSR, node id strings) of an undirected Parquet edge list, through a job's own functions."""
    t = pq.read_table(path)
    ids = np.unique(np.concatenate([t["src"].to_numpy(), t["dst"].to_numpy()]))
    table = pa.array(ids, pa.int64())
    e = graph.Edges(t["src"].combine_chunks(), t["dst"].combine_chunks(), None)
    csr = graph.build_csr([graph.edge_ids(e, table, directed=False)], len(ids))
    return csr, [str(i) for i in ids.tolist()]


# ---------------------------------------------------------------- pipelines

class StageTimes(logging.Handler):
    """Arrival times of nsdist's log records by their ``stage`` extra (graph, count, ...)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.times: dict = {}

    def emit(self, record):
        stage = getattr(record, "stage", None)
        if stage:
            self.times[stage] = time.perf_counter()


def run_nsdist(client, spec: dict, g: dict, out: str, seed: int, pq_: tuple, overrides: dict) -> dict:
    import nsdist

    stages = StageTimes()
    log = logging.getLogger("nsdist")
    log.addHandler(stages)
    log.setLevel(logging.INFO)
    train = {**spec["train"], "seed": seed, **overrides.get("train", {})}
    gr = {**spec["graph"], "p": pq_[0], "q": pq_[1], **overrides.get("graph", {})}
    try:
        t0 = time.perf_counter()
        r = nsdist.train(None, out, edges=[g["edges"]], client=client, graph=gr, train=train)
        total = time.perf_counter() - t0
    finally:
        log.removeHandler(stages)
    emb = r.load()
    walks = stages.times.get("count", np.nan) - stages.times.get("graph", np.nan)
    epochs = sum(e["seconds"] for e in r.metrics["epochs"])
    return {"words": emb.vocab, "vectors": emb.vectors, "walks": walks, "train": epochs, "total": total,
            "loss": r.metrics["epochs"][-1]["loss"]}


def nsdist_walk_lists(csr, names, walks_per_node, walk_length, p, q, threads, seed):
    """nsdist's walk kernel on ``threads`` threads (bench_walks.nsdist_walks), as lists of
    node-id strings (gensim's input)."""
    from bench_walks import nsdist_walks

    _, ids, lengths = nsdist_walks(csr, walks_per_node, walk_length, p, q, threads, seed)
    tokens = np.array(names, dtype=object)[ids]
    ends = np.cumsum(lengths).tolist()
    return [tokens[b - n:b].tolist() for n, b in zip(lengths.tolist(), ends)]


def pecanpy_walk_lists(csr, names, walks_per_node, walk_length, p, q, threads, seed):
    pp = pecanpy_module()
    import numba

    mode = "FirstOrderUnweighted" if p == q == 1 else "SparseOTF"
    g = getattr(pp, mode)(p=p, q=q, workers=threads, random_state=seed)
    g.indptr, g.indices = csr.offsets.astype(np.uint32), csr.neighbors.astype(np.uint32)
    g.data = np.ones(csr.edges, np.float32)
    g.set_node_ids(names)
    numba.set_num_threads(threads)
    return g.simulate_walks(walks_per_node, walk_length - 1)


_PECANPY = []


def pecanpy_module():
    """PecanPy with nptyping (type hints only, numpy < 2 only) stubbed, as bench_walks does."""
    if not _PECANPY:
        from bench_walks import pecanpy_modes

        _PECANPY.append(pecanpy_modes()[0])
    return _PECANPY[0]


def run_gensim(walker, csr, names, spec: dict, seed: int, pq_: tuple, threads: int) -> dict:
    from gensim.models import Word2Vec

    gr, tr = spec["graph"], spec["train"]
    t0 = time.perf_counter()
    walks = walker(csr, names, gr["walks_per_node"], gr["walk_length"], pq_[0], pq_[1], threads, seed)
    t1 = time.perf_counter()
    model = Word2Vec(walks, vector_size=tr["dim"], window=tr["window"], min_count=1, sample=0, sg=1, hs=0,
                     negative=5, epochs=tr["epochs"], workers=threads, seed=seed)
    t2 = time.perf_counter()
    return {"words": list(model.wv.index_to_key), "vectors": model.wv.vectors, "walks": t1 - t0,
            "train": t2 - t1, "total": t2 - t0, "loss": None}


# ---------------------------------------------------------------- quality

def score(res: dict, g: dict, splits: int) -> dict:
    out = {}
    for name, path in g["labels"].items():
        nc = node_classification(res["words"], res["vectors"], read_labels(path), train_ratios=RATIOS, splits=splits)
        out[name] = {"micro": [r["micro_f1"] for r in nc["ratios"]], "macro": [r["macro_f1"] for r in nc["ratios"]]}
    if g["test"]:
        lp = link_prediction(res["words"], res["vectors"], read_edges(g["test"]), read_edges(g["edges"]))
        out["auc"] = [lp["auc_cosine"], lp["auc_hadamard"]]
    return out


# ---------------------------------------------------------------- report

def fmt(values, spread=True) -> str:
    """'0.912' or '0.912±0.004' (the spread: half the range over seeds)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    mean = float(np.mean(values))
    if spread and len(values) > 1:
        return f"{mean:.3f}±{(max(values) - min(values)) / 2:.3f}"
    return f"{mean:.3f}"


def timing(rows, key) -> str:
    values = [r[key] for r in rows if np.isfinite(r[key])]
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f}"


class Report:
    def __init__(self):
        self.rows = []  # (graph, p, q, pipeline, seed, result dict incl. timings and scores)

    def add(self, **row):
        self.rows.append(row)
        q = row["scores"]
        first = next(iter(v for k, v in q.items() if k != "auc"))
        print(f"  {row['graph']} p={row['p']:g} q={row['q']:g} {row['pipeline']:24s} seed {row['seed']}: "
              f"walks {row['walks']:.1f} s, train {row['train']:.1f} s, total {row['total']:.1f} s, "
              f"others {row['others']:.0%}, load {row['load']:.2f}; Micro-F1 "
              + "/".join(f"{v:.3f}" for v in first["micro"])
              + (f", AUC {q['auc'][0]:.3f}/{q['auc'][1]:.3f}" if "auc" in q else ""), flush=True)

    def groups(self):
        keys = list(dict.fromkeys((r["graph"], r["p"], r["q"], r["pipeline"]) for r in self.rows))
        return [(k, [r for r in self.rows if (r["graph"], r["p"], r["q"], r["pipeline"]) == k]) for k in keys]

    def reference(self, graph_, p, q):
        return next((rows for (g, pp, qq, name), rows in self.groups()
                     if (g, pp, qq, name) == (graph_, p, q, "gensim+nsdist walks")), None)

    def time_table(self) -> str:
        lines = [("| graph | p, q | pipeline | runs | walks s | train s | total s (best / median) | "
                  "x gensim+nsdist walks (total, best) | others CPU | load 1 min |"),
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for (g, p, q, name), rows in self.groups():
            ref = self.reference(g, p, q)
            ratio = "-"
            if ref and name != "gensim+nsdist walks":
                ratio = f"{min(r['total'] for r in rows) / min(r['total'] for r in ref):.2f}"
            lines.append(f"| {g} | {p:g}, {q:g} | {name} | {len(rows)} | {timing(rows, 'walks')} | "
                         f"{timing(rows, 'train')} | {timing(rows, 'total')} | {ratio} | "
                         f"{max(r['others'] for r in rows):.0%} | {max(r['load'] for r in rows):.2f} |")
        return "\n".join(lines)

    def quality_table(self) -> str:
        lines = [("| graph | labels | p, q | pipeline | seeds | Micro-F1 0.1 / 0.5 / 0.9 | Macro-F1 0.1 / 0.5 / 0.9 | "
                  "Δ Micro-F1 0.5 | Δ Macro-F1 0.5 | AUC cosine | AUC Hadamard+LR |"),
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for (g, p, q, name), rows in self.groups():
            ref = self.reference(g, p, q)
            for labels in (k for k in rows[0]["scores"] if k != "auc"):
                def col(kind, i, rs=rows, labels=labels):
                    return [r["scores"][labels][kind][i] for r in rs]

                delta = ["-", "-"]
                if ref and name != "gensim+nsdist walks":
                    delta = [f"{np.mean(col(k, 1)) - np.mean(col(k, 1, ref)):+.3f}" for k in ("micro", "macro")]
                auc = [fmt([r["scores"]["auc"][i] for r in rows]) if "auc" in rows[0]["scores"] else "-"
                       for i in (0, 1)]
                lines.append(f"| {g} | {labels} | {p:g}, {q:g} | {name} | {len(rows)} | "
                             + " / ".join(fmt(col("micro", i), len(rows) > 1 and i == 1) for i in range(3)) + " | "
                             + " / ".join(fmt(col("macro", i), len(rows) > 1 and i == 1) for i in range(3))
                             + f" | {delta[0]} | {delta[1]} | {auc[0]} | {auc[1]} |")
        return "\n".join(lines)


# ---------------------------------------------------------------- main

def run_graph(rep, client, spec, name, g, pqs, seeds, args, work):
    csr, names = load_csr(g["edges"])
    walkers = [("gensim+nsdist walks", nsdist_walk_lists)]
    if not args.skip_pecanpy and (name != "roles" or args.pecanpy_roles):
        walkers.append(("gensim+PecanPy walks", pecanpy_walk_lists))
    for pq_ in pqs:
        for seed in seeds:
            runs = [("nsdist", lambda s=seed, x=pq_: run_nsdist(
                client, spec, g, os.path.join(work, f"out-{name}"), s, x, args.overrides))]
            runs += [(label, lambda w=w, s=seed, x=pq_: run_gensim(w, csr, names, spec, s, x, args.workers))
                     for label, w in walkers]
            for label, call in runs:
                watch = CpuWatch()
                res = call()
                others = watch.stop() or 0.0
                rep.add(graph=name, p=pq_[0], q=pq_[1], pipeline=label, seed=seed, walks=res["walks"],
                        train=res["train"], total=res["total"], others=others, load=os.getloadavg()[0],
                        scores=score(res, g, args.splits))


def warm_up(spec, args, work):
    """Compile the walk kernels (nsdist's, PecanPy's) and gensim's first call: not timed."""
    tiny = make_graphs(os.path.join(work, "warm"), 0, ["karate"])["karate"]
    csr, names = load_csr(tiny["edges"])
    small = {**spec, "graph": {**spec["graph"], "walks_per_node": 1, "walk_length": 5}}
    for pq_ in ((1.0, 1.0), (1.0, 2.0)):
        run_gensim(nsdist_walk_lists, csr, names, small, 1, pq_, args.workers)
        if not args.skip_pecanpy:
            run_gensim(pecanpy_walk_lists, csr, names, small, 1, pq_, args.workers)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="karate,sbm,sbm8,roles")
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per pipeline on the block models and karate")
    ap.add_argument("--role-seeds", type=int, default=3, help="seeds per pipeline and (p, q) on the roles graph")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="nsdist workers (x 1 thread); gensim and walk threads")
    ap.add_argument("--qs", default="1,0.5,2", help="q values on the roles graph (p = 1)")
    ap.add_argument("--skip-pecanpy", action="store_true")
    ap.add_argument("--pecanpy-roles", action="store_true", help="PecanPy's walks on the roles graph too")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="nsdist override, e.g. train.alpha=0.05 (the gensim pipeline keeps jobs/graph.yaml's)")
    ap.add_argument("--json", metavar="FILE", help="also write every row as JSON")
    args = ap.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, sub = key.partition(".")
        args.overrides.setdefault(section, {})[sub] = yaml.safe_load(value)
    sections = args.sections.split(",")
    with open(os.path.join(ROOT, "jobs", "graph.yaml")) as fh:
        spec = yaml.safe_load(fh)

    import gensim
    from distributed import Client, LocalCluster

    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()}, gensim {gensim.__version__}, nsdist overrides "
          f"{args.overrides or 'none'}; jobs/graph.yaml: {json.dumps({k: spec[k] for k in ('graph', 'train')})}")
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as work:
        graphs = make_graphs(work, args.nodes, sections)
        warm_up(spec, args, work)
        t0 = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            print(f"LocalCluster {args.workers} x 1 thread started in {time.perf_counter() - t0:.1f} s (not timed)")
            # nsdist compiles (or loads) its kernels on each worker in its first job: warm up on karate.
            run_nsdist(client, spec, graphs.get("karate") or make_graphs(work, 0, ["karate"])["karate"],
                       os.path.join(work, "out-warm"), 1, (1.0, 2.0), args.overrides)
            rep = Report()
            for name in sections:
                if name == "roles":
                    pqs = [(1.0, float(q)) for q in args.qs.split(",")]
                    seeds = range(1, args.role_seeds + 1)
                else:
                    pqs, seeds = [(1.0, 1.0)], range(1, args.seeds + 1)
                run_graph(rep, client, spec, name, graphs[name], pqs, seeds, args, work)
            logging.getLogger("distributed").setLevel(logging.ERROR)  # the cluster's shutdown chatter
    print("\n" + rep.time_table() + "\n\n" + rep.quality_table())
    print(f"\nload at the end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{k: v for k, v in r.items()} for r in rep.rows], fh, indent=1)


if __name__ == "__main__":
    main()
