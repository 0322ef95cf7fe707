#!/usr/bin/env python
"""Graph evaluation speed: nsdist.evaluate.graph with its fits on one BLAS thread against the
same fits on BLAS's default threads, in one run.

Run by hand (never by the test suite), on a trained graph run:

    nsdist synth --graph /tmp/g --nodes 10000 --seed 1
    nsdist train --edges /tmp/g/edges.parquet --out /tmp/g-out --config jobs/graph.yaml
    PYTHONPATH=. python benchmarks/bench_graph_eval.py /tmp/g-out --graph /tmp/g

Each repeat runs ``node_classification`` (``--splits`` splits at 0.1, 0.5, 0.9: scikit-learn's
``OneVsRestClassifier(LogisticRegression())`` per split) and ``link_prediction`` (5-fold
cross-fitted ``StandardScaler`` + ``LogisticRegression``) twice, one after the other, so the
machine's load falls on both alike:

- ``default BLAS threads``: ``_one_blas_thread`` replaced by a no-op, so numpy's and scipy's
  OpenBLAS pools run with as many threads as they start with (one per core);
- ``one BLAS thread``: the module as it is.

Same splits, folds, negatives and classifiers; only the BLAS threads differ. ``x`` is the
first row's median seconds over the row's. The scores (mean ± std over the splits) are those of
the first repeat; ``max |diff|`` is the largest difference of any score between the two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nsdist import load  # noqa: E402
from nsdist.evaluate import graph as eg  # noqa: E402

VARIANTS = ("default BLAS threads", "one BLAS thread")


def run(variant: str, emb, labels, held, train, splits: int) -> tuple[float, float, dict]:
    own = eg._one_blas_thread
    if variant == VARIANTS[0]:
        eg._one_blas_thread = contextlib.nullcontext
    try:
        t0 = time.perf_counter()
        nc = eg.node_classification(emb.vocab, emb.vectors, labels, splits=splits)
        t1 = time.perf_counter()
        lp = eg.link_prediction(emb.vocab, emb.vectors, held, train)
        return t1 - t0, time.perf_counter() - t1, {"nc": nc, "lp": lp}
    finally:
        eg._one_blas_thread = own


def scores(report: dict) -> list[float]:
    nc = [x[k] for x in report["nc"]["ratios"] for k in ("micro_f1", "macro_f1")]
    return nc + [report["lp"]["auc_cosine"], report["lp"]["auc_hadamard"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a graph run (output, LATEST or run URL)")
    ap.add_argument("--graph", required=True, help="the synth --graph folder: labels.tsv, edges(.test).parquet")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    eg._sklearn()  # scikit-learn and its BLAS loaded before any timing
    emb = load(args.run)
    labels = eg.read_labels(os.path.join(args.graph, "labels.tsv"))
    held = eg.read_edges(os.path.join(args.graph, "edges.test.parquet"))
    train = eg.read_edges(os.path.join(args.graph, "edges.parquet"))
    seconds: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    reports = {}
    for r in range(args.repeats):
        for v in VARIANTS:
            nc, lp, rep = run(v, emb, labels, held, train, args.splits)
            seconds[v].append((nc, lp))
            reports.setdefault(v, rep)
            print(f"repeat {r + 1}: {v}: node classification {nc:.1f} s, link prediction {lp:.1f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    total = {v: statistics.median(a + b for a, b in seconds[v]) for v in VARIANTS}
    print("\n| BLAS | node classification s | link prediction s | total s | x | Micro-F1 at 0.1 / 0.5 / 0.9 "
          "| Macro-F1 at 0.1 / 0.5 / 0.9 | AUC cosine | AUC Hadamard+LR |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for v in VARIANTS:
        nc, lp = reports[v]["nc"], reports[v]["lp"]
        micro = " / ".join(f"{x['micro_f1']:.4f} ± {x['micro_f1_std']:.4f}" for x in nc["ratios"])
        macro = " / ".join(f"{x['macro_f1']:.4f} ± {x['macro_f1_std']:.4f}" for x in nc["ratios"])
        print(f"| {v} | {statistics.median(a for a, _ in seconds[v]):.1f} | "
              f"{statistics.median(b for _, b in seconds[v]):.1f} | {total[v]:.1f} | {total[VARIANTS[0]] / total[v]:.1f} "
              f"| {micro} | {macro} | {lp['auc_cosine']:.4f} | {lp['auc_hadamard']:.4f} |")
    diff = max(abs(a - b) for a, b in zip(*(scores(reports[v]) for v in VARIANTS)))
    print(f"\nmax |diff| of any score between the two: {diff:.2g}")


if __name__ == "__main__":
    main()
