#!/usr/bin/env python
"""Ranking what was shown: nsdist's scoring rules against the click-through-rate prior, click
popularity and gensim item2vec, on impressions not trained on.

Run by hand (never by the test suite):

    python benchmarks/bench_impressions.py                          # the planted clickstream, ~10 min on 2 cores
    python benchmarks/bench_impressions.py --behaviors behaviors.tsv  # an impression log you have (MIND's form)
    python benchmarks/bench_impressions.py --mean seed1.json seed2.json seed3.json  # runs' --json files: the means

The data, either:

- the planted clickstream of ``nsdist synth --sessions`` (``--sessions``, ``--items``,
  ``--seed``): training on ``sessions.parquet``, evaluation on ``impressions.test.parquet``
  (each held-out session's last click among up to 19 items it showed without a click);
- or an impression log in any form ``nsdist evaluate --impressions`` reads (MIND's
  ``behaviors.tsv`` as it is): its first ``--train-share`` of impressions, in file order (MIND
  writes them by time), are training data, the rest are evaluated. Each training impression
  becomes a session: its history then its clicks as the clicked items (``items``), its shown
  items without a click as ``impressions``. No impression log ships with a package this project
  can install, so nothing is downloaded: pass the file.

What runs, on the same training data: nsdist (``jobs/sessions.yaml``, on a LocalCluster of 2
workers x 1 thread) with the shown-not-clicked items as explicit negatives and without, each
ranked by every scoring rule of ``Embeddings.rank``; gensim 4 item2vec (``Word2Vec(sg=1)``,
window 50, 20 epochs, dim 64, ``ns_exponent`` 0.5 as the job) by cosine, and by ``blend`` with its
output vectors (``syn1neg``); and the CTR prior (clicks + 1) / (shows + 2) and click popularity
computed on the training impressions. Per-impression AUC, MRR, nDCG@5 and nDCG@10 as ``nsdist
evaluate --impressions`` computes them. The results: docs/recommendations.md ("The scoring
rule").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

JOB = Path(__file__).resolve().parents[1] / "jobs" / "sessions.yaml"
RULES = ("cosine", "dot", "sgns", "blend")


def planted(tmp: Path, sessions: int, items: int, seed: int):
    """(training sessions file, test impressions, training impressions) of a planted clickstream."""
    from nsdist.evaluate import read_impressions
    from nsdist.synth.sessions import generate_sessions

    files = generate_sessions(str(tmp / "clicks"), sessions=sessions, items=items, seed=seed)
    return files.train, read_impressions(files.impressions), read_impressions(files.train, sessions=True)


def impression_log(tmp: Path, url: str, share: float):
    """(training sessions file, test impressions, training impressions) of an impression log split
    in file order: each training impression is a session of its history and its clicks, with its
    shown items without a click as the session's impressions."""
    from nsdist.evaluate import read_impressions

    log = read_impressions(url)
    cut = int(log.num_rows * share)
    train, test = log.slice(0, cut), log.slice(cut)
    rows = train.to_pylist()
    items = [r["history"] + [i for i, c in zip(r["shown"], r["clicked"]) if c] for r in rows]
    shown = [[i for i, c in zip(r["shown"], r["clicked"]) if not c] for r in rows]
    strings = pa.list_(pa.string())
    path = tmp / "sessions.parquet"
    pq.write_table(pa.table({"items": pa.array(items, strings), "impressions": pa.array(shown, strings)}), path,
                   row_group_size=2000)
    return str(path), test, train


def nsdist_runs(train_path: str, tmp: Path, epochs: int | None, seed: int) -> dict:
    """name -> Embeddings of jobs/sessions.yaml with and without explicit negatives."""
    import nsdist
    from distributed import Client, LocalCluster

    runs = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        for name, negatives in (("nsdist, explicit negatives", "impressions"), ("nsdist, no negatives", None)):
            t0 = time.perf_counter()
            extra = {"epochs": epochs} if epochs else {}
            result = nsdist.train(train_path, str(tmp / f"out-{len(runs)}"), client=client, config=str(JOB),
                                  negatives_column=negatives, seed=seed, **extra)
            print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
            runs[name] = result.load()
    return runs


def gensim_run(train_path: str, epochs: int | None, seed: int):
    """gensim item2vec on the training sessions' clicked items, with its output vectors."""
    import nsdist
    from gensim.models import Word2Vec

    sentences = [[str(i) for i in s] for s in pq.read_table(train_path, columns=["items"])["items"].to_pylist()]
    model = Word2Vec(sentences, sg=1, negative=5, window=50, min_count=2, sample=0, ns_exponent=0.5,
                     epochs=epochs or 20, vector_size=64, workers=2, seed=seed)
    wv = model.wv
    counts = np.array([wv.get_vecattr(w, "count") for w in wv.index_to_key])
    return nsdist.Embeddings(list(wv.index_to_key), counts, wv.vectors, context=model.syn1neg)


def print_mean(files: list[Path]) -> None:
    """A Markdown table of the mean of each figure over several runs' --json files, each run's value in
    brackets (in the files' order)."""
    runs = [json.loads(f.read_text()) for f in files]
    print("| ranking | AUC | MRR | nDCG@5 | nDCG@10 |\n| --- | --- | --- | --- | --- |")
    for name in runs[0]:
        cells = [f"{np.mean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)})"
                 for v in ([run[name][k] for run in runs] for k in ("auc", "mrr", "ndcg@5", "ndcg@10"))]
        print(f"| {name} | {' | '.join(cells)} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--behaviors", help="an impression log (MIND's behaviors.tsv, or any impressions file)")
    ap.add_argument("--train-share", type=float, default=0.8, help="with --behaviors: the training share")
    ap.add_argument("--sessions", type=int, default=10_000, help="planted sessions")
    ap.add_argument("--items", type=int, default=5_000, help="planted catalogue")
    ap.add_argument("--seed", type=int, default=1, help="planted data and training seed")
    ap.add_argument("--epochs", type=int, help="training epochs (default: the job's, 20)")
    ap.add_argument("--last", type=int, help="rank for the last N items of each history (default: all)")
    ap.add_argument("--no-gensim", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--mean", type=Path, nargs="+", metavar="JSON", help="print the mean of these --json files; no run")
    args = ap.parse_args(argv)
    if args.mean:
        return print_mean(args.mean)

    from nsdist.evaluate import evaluate_impressions

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.behaviors:
            train_path, test, train = impression_log(tmp, args.behaviors, args.train_share)
        else:
            train_path, test, train = planted(tmp, args.sessions, args.items, args.seed)
        models = nsdist_runs(train_path, tmp, args.epochs, args.seed)
        if not args.no_gensim:
            models["gensim item2vec"] = gensim_run(train_path, args.epochs, args.seed)
        results: dict[str, dict] = {}
        for name, emb in models.items():
            for rule in RULES:
                r = evaluate_impressions(emb, test, rule, args.last, train)
                results[f"{name}, {rule}"] = r["model"]
        results["CTR prior"], results["click popularity"] = r["ctr_prior"], r["popularity"]
    print(f"{r['impressions']} impressions with a click and a non-click ({r['skipped']} others), {r['shown']} items "
          f"shown, {r['clicks']} clicks; {r['unknown_shown']} shown items unknown to the last model")
    print(f"{'ranking':40s}  {'AUC':>6}  {'MRR':>6}  {'nDCG@5':>6}  {'nDCG@10':>7}")
    for name, m in results.items():
        print(f"{name:40s}  {m['auc']:.4f}  {m['mrr']:.4f}  {m['ndcg@5']:.4f}  {m['ndcg@10']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
