#!/usr/bin/env python
"""Kernel speed and quality on graph walks and sessions: nsdist against gensim, same data, one run.

Run by hand (never by the test suite):

    PYTHONPATH=. python benchmarks/bench_items_speed.py                       # ~10 min on 2 busy cores
    PYTHONPATH=. python benchmarks/bench_items_speed.py --data walks --cores 2 --repeats 1

Data, built in memory:

- ``walks``: the default planted block model (``nsdist synth --graph``: 10k nodes, 10
  communities) walked as jobs/graph.yaml walks it (10 walks of 80 nodes per node, p = q = 1,
  undirected) by nsdist's walk kernel; trained with jobs/graph.yaml's settings (dim 128, window 10,
  negative 5, ns_exponent 0.75, sample 0, min_count 1, 1 epoch).
- ``sessions``: the planted clickstream (``nsdist synth --sessions``: 10k sessions, 5k items) with
  jobs/sessions.yaml's settings (dim 64, window 50, negative 5, ns_exponent 0.5, sample 0,
  min_count 2), ``--session-epochs`` epochs (jobs/sessions.yaml trains 20), without explicit
  negatives (gensim has none).

Rows, for each data set and core count C, one after the other and never overlapping, repeated
``--repeats`` times in turn (gensim, then each nsdist kernel, then again):

- ``gensim``: ``Word2Vec(sg=1, hs=0, workers=C)`` on the same token lists; ``train()`` timed
  (``build_vocab`` is not).
- ``nsdist <kernel>``: the compiled kernel called as a worker with C threads calls it: one model
  shared by C threads (Hogwild), each training its own contiguous part of the sentences, the
  learning rate falling linearly over all epochs, vocabulary sorted by count as nsdist sorts it.
  Kernels: ``fresh`` (sgns.fresh_kernel for the data's width: what graph and session jobs run, a fresh draw of
  negatives per context word), ``batch-share1`` (sgns.train_batch with share 1: the same draws,
  and the same updates except where a context's draws repeat a target; the layout those jobs ran
  before), ``batch-share0`` (one draw per window, the text
  layout: faster, lower quality on these data).

Columns: ``words/s`` = tokens x epochs / seconds (wall clock of the training call); ``x gensim``
= that over the gensim row of the same data, core count and repeat (the best repeat of each is
shown, and the ratio of those bests); ``others`` = CPU share other processes took meanwhile
(bench_speed.CpuWatch; over 5%, timings are suspect: compare ratios within a repeat). Quality of
the last repeat's vectors: walks, Micro-F1 at train ratio 0.5 (3 splits) and link prediction AUC
(cosine, Hadamard + logistic regression) on the held-out edges; sessions, HR@10 of the next item
(last 1) on the held-out sessions and group precision@10 of the planted groups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from bench_speed import CpuWatch  # noqa: E402

from nsdist import sgns  # noqa: E402
from nsdist.model import init_model, make_tables  # noqa: E402
from nsdist.rng import task_state  # noqa: E402

# name: (the kernel for a model width, share)
KERNELS = {"fresh": (sgns.fresh_kernel, 1), "batch-share1": (lambda dim: sgns.train_batch, 1),
           "batch-share0": (lambda dim: sgns.train_batch, 0)}
WALKS = {"dim": 128, "window": 10, "negative": 5, "ns_exponent": 0.75, "min_count": 1, "epochs": 1}
SESSIONS = {"dim": 64, "window": 50, "negative": 5, "ns_exponent": 0.5, "min_count": 2}


class Data:
    """Sentences as token strings (gensim's input) and as vocabulary ids (nsdist's), and the
    scorer of a trained (words, vectors)."""

    def __init__(self, name, sentences, hp, score):
        self.name, self.sentences, self.hp, self.score = name, sentences, hp, score
        tokens = np.concatenate([np.asarray(s) for s in sentences])
        words, inverse, counts = np.unique(tokens, return_inverse=True, return_counts=True)
        order = np.lexsort((words, -counts))  # nsdist's vocabulary: by (-count, word)
        order = order[counts[order] >= hp["min_count"]]
        rank = np.full(len(words), -1, np.int64)
        rank[order] = np.arange(len(order))
        ids = rank[inverse]
        lengths = np.array([len(s) for s in sentences])
        sent = np.repeat(np.arange(len(sentences)), lengths)[ids >= 0]
        self.ids = ids[ids >= 0].astype(np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(sent, minlength=len(sentences)))]).astype(np.int64)
        self.words = words[order].tolist()
        self.counts = counts[order]
        self.tokens = len(tokens)  # raw tokens, as gensim's and bench_speed's words/s count them
        self.lists = [[str(t) for t in s] for s in sentences]


def walks_data(work: str, seed: int) -> Data:
    from bench_graph import load_csr
    from bench_walks import nsdist_walks

    from nsdist.evaluate.graph import link_prediction, node_classification
    from nsdist.evaluate.readers import read_edges, read_labels
    from nsdist.synth.graph import generate_graph

    f = generate_graph(os.path.join(work, "sbm"), nodes=10_000, seed=1)
    csr, names = load_csr(f.train)
    _, ids, lengths = nsdist_walks(csr, 10, 80, 1.0, 1.0, 2, seed)
    names = np.array(names)
    ends = np.cumsum(lengths)
    sentences = [names[ids[e - n:e]] for n, e in zip(lengths, ends)]
    labels, test, train = read_labels(f.labels), read_edges(f.test), read_edges(f.train)

    def score(words, vectors):
        nc = node_classification(words, vectors, labels, train_ratios=(0.5,), splits=3)
        lp = link_prediction(words, vectors, test, train)
        return {"micro_f1": nc["ratios"][0]["micro_f1"], "auc_cos": lp["auc_cosine"], "auc_had": lp["auc_hadamard"]}

    return Data("walks", sentences, WALKS, score)


def sessions_data(sessions: int, items: int, epochs: int) -> Data:
    import nsdist.evaluate as ev
    from nsdist.synth.sessions import session_tables

    train, test, cat = session_tables(sessions, items, seed=1)
    sentences = [np.array(s, dtype=np.int64).astype(str) for s in train.column("items").to_pylist() if s]
    held_out = [[str(i) for i in s] for s in test.column("items").to_pylist()]
    groups = dict(zip(map(str, cat.ids.tolist()), map(str, cat.group.tolist())))

    def score(words, vectors):
        r = ev.next_item_eval(words, vectors, held_out, last=1, k=10)
        return {"hr10": r["hit_rate"], "group_p10": ev.cluster_precision(words, vectors, groups, topn=10)}

    return Data("sessions", sentences, {**SESSIONS, "epochs": epochs}, score)


def run_gensim(data: Data, cores: int, seed: int) -> dict:
    from gensim.models import Word2Vec

    hp = data.hp
    model = Word2Vec(vector_size=hp["dim"], window=hp["window"], negative=hp["negative"], ns_exponent=hp["ns_exponent"],
                     min_count=hp["min_count"], sample=0, sg=1, hs=0, epochs=hp["epochs"], workers=cores, seed=seed)
    model.build_vocab(data.lists)
    watch = CpuWatch()
    t0 = time.perf_counter()
    model.train(data.lists, total_examples=len(data.lists), epochs=hp["epochs"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "others": watch.stop(), "words": list(model.wv.index_to_key), "vectors": model.wv.vectors}


def run_nsdist(data: Data, kernel: str, cores: int, seed: int) -> dict:
    """One model, ``cores`` threads (as one worker of that many threads), each epoch's sentences
    cut into ``cores`` contiguous parts; alpha falls from 0.025 to 0.0001 over all epochs."""
    for_width, share = KERNELS[kernel]
    hp = data.hp
    fn = for_width(hp["dim"])
    model = init_model(len(data.counts), hp["dim"], seed)
    tables = make_tables(data.counts, 0.0, hp["ns_exponent"])
    rate = np.ones(len(data.counts), np.float32)
    n_in, n_out = np.zeros(len(data.counts), np.uint32), np.zeros(len(data.counts), np.uint32)
    cuts = np.linspace(0, len(data.offsets) - 1, cores + 1).astype(np.int64)
    epochs = hp["epochs"]

    def part(epoch, k):
        words = int(data.offsets[cuts[k + 1]] - data.offsets[cuts[k]])
        return fn(model.win, model.wout, data.ids, data.offsets, cuts[k], cuts[k + 1], tables.keep, tables.noise_prob,
                  tables.noise_alias, hp["window"], hp["negative"], 0.025, 0.0001, task_state(seed, epoch, 0, k),
                  n_in, n_out, rate, epoch * words, epochs * words, share)

    watch = CpuWatch()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        for epoch in range(epochs):
            list(pool.map(lambda k: part(epoch, k), range(cores)))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "others": watch.stop(), "words": data.words, "vectors": model.win}


def run_job(data: Data, cores: int, seed: int, work: str, sets: dict | None = None) -> dict:
    """nsdist as a job runs by default: the LocalCluster it starts (``cluster.connect``: ``cores``
    worker processes x 1 thread, spawned, as ``nsdist.train`` from Python starts them),
    one model each, averaged every round (the job's default rounds), on the sentences written as
    a text corpus, with a fresh draw of negatives per context word (share_negatives 1, as graph
    and session jobs run). Seconds: the epochs' training from the manifest (counting, encoding,
    the cluster's start and publishing left out, as gensim's build_vocab is). ``sets``: more
    configuration keys, as ``nsdist train --set`` gives them (``--set`` here)."""
    from nsdist.cluster import close, connect
    from nsdist.config import ClusterConfig, load_config
    from nsdist.pipeline import train

    path = os.path.join(work, f"{data.name}.txt")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.writelines(" ".join(s) + "\n" for s in data.lists)
    hp = data.hp
    cfg = load_config(None, {"dim": hp["dim"], "window": hp["window"], "negative": hp["negative"],
                             "ns_exponent": hp["ns_exponent"], "sample": 0, "min_count": hp["min_count"],
                             "epochs": hp["epochs"], "seed": seed, "share_negatives": 1, "checkpoint_every": 0,
                             **(sets or {})},
                      environ={}, corpus=(path,), out=os.path.join(work, f"out-{data.name}-{cores}"))
    client, cluster = connect(ClusterConfig(workers=cores, threads_per_worker=1, wait_for_workers=cores))
    try:
        watch = CpuWatch()
        result = train(cfg, client)
        others = watch.stop()
    finally:
        close(client, cluster)
    emb = result.load()
    return {"seconds": sum(e["seconds"] for e in result.metrics["epochs"]), "others": others,
            "words": list(emb.vocab), "vectors": emb.vectors}


def warm_up(data: Data, kernels: list[str]) -> None:
    """numba compilation (or its cache) and gensim's first call, outside the timings. For the
    job, a round trained here as its workers train one compiles the kernel for the data's width
    into the disk cache the workers read."""
    tiny = Data(data.name, data.sentences[:20], {**data.hp, "epochs": 1, "min_count": 1}, data.score)
    run_gensim(tiny, 1, 1)
    for k in kernels:
        if k != "job":
            run_nsdist(tiny, k, 1, 1)
    if "job" in kernels:
        from nsdist.encode import Shard
        from nsdist.shard import RoundSpec, train_round

        hp = tiny.hp
        spec = RoundSpec(0, 0, 1, 0, 0.025, 0.0001, hp["window"], hp["negative"], 1, "batch", 1)
        train_round(init_model(len(tiny.counts), hp["dim"], 1), [Shard(tiny.ids, tiny.offsets)],
                    make_tables(tiny.counts, 0.0, hp["ns_exponent"]), spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="walks,sessions")
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--kernels", default="fresh,batch-share1", help=f"of {', '.join(KERNELS)}, job")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--session-epochs", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a configuration key for the job trainer, as nsdist train --set takes it")
    a = ap.parse_args(argv)
    sets = dict(kv.split("=", 1) for kv in a.set)
    kernels = a.kernels.split(",")
    cores = [int(c) for c in a.cores.split(",")]
    rows = []
    import gensim

    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()}, gensim {gensim.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-items-") as work:
        for name in a.data.split(","):
            data = walks_data(work, a.seed) if name == "walks" else sessions_data(a.sessions, a.items,
                                                                                a.session_epochs)
            print(f"{name}: {data.tokens:,} tokens, {len(data.sentences):,} sentences, vocabulary {len(data.words):,}, "
                  f"{data.hp}", flush=True)
            warm_up(data, kernels)
            for c in cores:
                for rep in range(a.repeats):
                    for trainer in ["gensim"] + kernels:
                        res = (run_gensim(data, c, a.seed) if trainer == "gensim" else
                               run_job(data, c, a.seed, work, sets) if trainer == "job" else
                               run_nsdist(data, trainer, c, a.seed))
                        row = {"data": name, "cores": c, "repeat": rep, "trainer": trainer, "seconds": res["seconds"],
                               "words_per_s": data.tokens * data.hp["epochs"] / res["seconds"], "others": res["others"]}
                        if rep == a.repeats - 1:
                            row.update(data.score(res["words"], res["vectors"]))
                        rows.append(row)
                        print(f"  {name} cores={c} repeat {rep} {trainer:13s} {row['words_per_s']:>11,.0f} words/s "
                              f"others {row['others'] or 0:.0%} "
                              + " ".join(f"{k} {v:.4f}" for k, v in row.items() if k in QUALITY), flush=True)
    print("\n" + table(rows, kernels))
    print(f"\nload at the end: {os.getloadavg()}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


QUALITY = ("micro_f1", "auc_cos", "auc_had", "hr10", "group_p10")


def table(rows: list[dict], kernels: list[str]) -> str:
    """Markdown: per data set, core count and trainer, the best words/s over the repeats, the
    ratio to gensim's best, the per-repeat ratios, the worst ``others`` and the quality."""
    out = ["| data | cores | trainer | words/s (best) | x gensim (best / per repeat) | others (max) | quality |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    keys = list(dict.fromkeys((r["data"], r["cores"]) for r in rows))
    for d, c in keys:
        group = [r for r in rows if (r["data"], r["cores"]) == (d, c)]
        ref = {r["repeat"]: r["words_per_s"] for r in group if r["trainer"] == "gensim"}
        for trainer in ["gensim"] + kernels:
            mine = [r for r in group if r["trainer"] == trainer]
            best = max(r["words_per_s"] for r in mine)
            ratio = "" if trainer == "gensim" else (
                f"{best / max(ref.values()):.2f} / " + ", ".join(f"{r['words_per_s'] / ref[r['repeat']]:.2f}" for r in mine))
            quality = ", ".join(f"{k} {mine[-1][k]:.3f}" for k in QUALITY if k in mine[-1])
            others = max((r["others"] or 0) for r in mine)
            out.append(f"| {d} | {c} | {trainer} | {best:,.0f} | {ratio} | {others:.0%} | {quality} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
