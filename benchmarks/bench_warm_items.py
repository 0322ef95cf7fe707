#!/usr/bin/env python
"""New items at a warm start: a planted daily retrain, new items started from the mean of their
known co-occurring items' vectors (``train.warm_new=cooccur``) or at random (``random``).

Run by hand (never by the test suite):

    python benchmarks/bench_warm_items.py                 # 3 seeds, ~25 min on 2 cores
    python benchmarks/bench_warm_items.py --variants      # also the start's design choices, in process

Per seed: ``nsdist.synth.sessions.retrain_days`` plants two days of the clickstream over one
catalogue of ``--items`` items (50 groups); ``--new`` of them, drawn at random (so in the groups
of known items, at every popularity), are never clicked nor shown on day 1 and enter on day 2.
Day 1 is trained with ``jobs/sessions.yaml`` (``--epochs1`` epochs) and published; day 2 is
trained ``--init-from`` day 1 for ``--epochs2`` epochs, as a daily retrain would, once per
``warm_new``, on a LocalCluster of 2 workers x 1 thread.

Scored on day 2's held-out sessions (the latest tenth):

- new-item HR@10: every click of a held-out session on a new item, after its first click, is a
  case: the clicks before it are the history, the new item the target (leave-last-out on the
  prefix), ranked over every item by ``blend`` (the default scoring) and by ``cosine``;
- all-item HR@10: leave-last-out on every held-out session (``blend``): what the known items keep;
- new-item group precision@10: the share of a new item's 10 nearest items (cosine, among every
  item of the model) in its planted group.

``--variants`` also trains, in process (``nsdist.reference``, the same bits as the cluster with
the same shards and models: its ``cooccur`` row equals the cluster's), day 2 from other starts of
the new rows, for the smallest ``--day2``: the output vector zero (as fresh rows) instead of the
mean of the known items' output vectors, and the plain mean over the distinct co-occurring known
items instead of one term per co-occurrence. The results:
docs/recommendations.md ("New items at a warm start").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

JOB = Path(__file__).resolve().parents[1] / "jobs" / "sessions.yaml"


def write_days(tmp: Path, sessions: int, items: int, new: int, seed: int, day2: list[int]) -> dict:
    """Day 1's training sessions, and the first N of day 2's for each N of ``day2`` (the data a
    retrain sees since the last model), as Parquet; day 2's held-out sessions; the ground truth."""
    from nsdist.synth.sessions import retrain_days

    (train1, _), (train2, test2), cat, new_ids = retrain_days(sessions, items, new, seed)
    paths = {"day1": tmp / "day1.parquet", **{n: tmp / f"day2-{n}.parquet" for n in day2}}
    pq.write_table(train1, paths["day1"], row_group_size=2000)
    for n in day2:
        pq.write_table(train2.slice(0, n), paths[n], row_group_size=min(n // 2, 2000))
    group = dict(zip(map(str, cat.ids.tolist()), cat.group.tolist()))
    return {**paths, "test": test2.column("items").to_pylist(), "group": group, "new": set(map(str, new_ids.tolist()))}


def new_item_cases(test: list, new: set) -> list:
    """Every prefix of a held-out session that ends on a click of a new item after its first click."""
    return [s[:p + 1] for s in test for p in range(1, len(s)) if str(s[p]) in new]


def group_precision(emb, group: dict, queries: set, topn: int = 10) -> float:
    """Mean share of each query item's ``topn`` nearest items (cosine, all items) in its group."""
    rows = [r for r, w in enumerate(emb.vocab) if w in queries]
    unit = emb.vectors / np.maximum(np.linalg.norm(emb.vectors, axis=1, keepdims=True), 1e-12)
    sims = unit[rows] @ unit.T
    sims[np.arange(len(rows)), rows] = -np.inf
    top = np.argpartition(-sims, topn, axis=1)[:, :topn]
    labels = np.array([group[w] for w in emb.vocab])
    return float(np.mean(labels[top] == labels[rows][:, None])) if rows else 0.0


def score(emb, days: dict) -> dict:
    from nsdist.evaluate import next_item_eval

    cases = new_item_cases(days["test"], days["new"])
    blend = next_item_eval(emb.vocab, emb.vectors, cases, score=emb.row_scores)
    return {"new_hr10_blend": blend["hit_rate"],
            "new_hr10_cosine": next_item_eval(emb.vocab, emb.vectors, cases)["hit_rate"],
            "new_cases": blend["sessions"], "new_oov": blend["oov"],
            "all_hr10_blend": next_item_eval(emb.vocab, emb.vectors, days["test"], score=emb.row_scores)["hit_rate"],
            "new_group_p10": group_precision(emb, days["group"], days["new"]),
            "new_in_vocab": sum(w in days["new"] for w in emb.vocab)}


def run_seed(client, tmp: Path, seed: int, args) -> dict:
    import nsdist

    days = write_days(tmp, args.sessions, args.items, args.new, seed, args.day2)
    common = {"client": client, "config": str(JOB), "seed": seed, "topk": 0, "shards": 2}
    t0 = time.perf_counter()
    nsdist.train(str(days["day1"]), str(tmp / "day1-out"), epochs=args.epochs1, **common)
    print(f"seed {seed}: day 1 trained in {time.perf_counter() - t0:.0f} s", flush=True)
    out = {}
    for n, epochs in [(n, e) for n in args.day2 for e in args.epochs2]:
        for how in ("cooccur", "random"):
            t0 = time.perf_counter()
            result = nsdist.train(str(days[n]), str(tmp / f"day2-{n}-{epochs}-{how}"), epochs=epochs, warm_new=how,
                                  init_from=str(tmp / "day1-out"), **common)
            name = f"{n} sessions, {epochs} epoch(s), {how}"
            out[name] = {**score(result.load(), days), "seconds": time.perf_counter() - t0,
                         "cooccur_words": result.manifest["parent"]["cooccur_words"],
                         "new_words": result.manifest["parent"]["new_words"]}
            print(f"seed {seed} {name}: {json.dumps(out[name])}", flush=True)
        if args.variants and n == min(args.day2):
            out.update(variants(client, tmp, seed, days, n, epochs))
    return out


# ---------------------------------------------------------------- design variants, in process

@numba.njit(cache=True)
def _pairs(ids, offsets, slot, window, out_new, out_known, n):  # pragma: no cover - compiled
    for k in range(len(offsets) - 1):
        lo, hi = offsets[k], offsets[k + 1]
        for i in range(lo, hi):
            if slot[ids[i]] < 0:
                continue
            a, b = (lo, hi) if window == 0 else (max(lo, i - window), min(hi, i + window + 1))
            for j in range(a, b):
                if j != i and slot[ids[j]] < 0:
                    out_new[n], out_known[n] = ids[i], ids[j]
                    n += 1
    return n


def plain_means(pieces: list, slot: np.ndarray, window: int, vectors: np.ndarray):
    """Per new row, the plain mean of the vectors of the distinct known rows within ``window``."""
    new_rows, known_rows = [], []
    for p in pieces:
        cap = len(p.ids) * (2 * window if window else int(np.diff(p.offsets).max(initial=0)))
        a, b = np.empty(cap, np.int64), np.empty(cap, np.int64)
        n = _pairs(p.ids, p.offsets, slot, window, a, b, 0)
        new_rows.append(a[:n])
        known_rows.append(b[:n])
    pairs = np.unique(np.stack([np.concatenate(new_rows), np.concatenate(known_rows)], 1), axis=0)
    rows, at, counts = np.unique(pairs[:, 0], return_inverse=True, return_counts=True)
    sums = np.zeros((len(rows), vectors.shape[1]))
    np.add.at(sums, at, vectors[pairs[:, 1]])
    return rows, (sums / counts[:, None]).astype(np.float32)


def variants(client, tmp: Path, seed: int, days: dict, n: int, epochs: int) -> dict:
    """Day 2 from other starts of the new rows, trained in process on the cluster's shards."""
    from nsdist import pipeline
    from nsdist.cluster import count_vocab, encode_shards
    from nsdist.config import load_config
    from nsdist.corpus import plan_blocks
    from nsdist.embeddings import Embeddings
    from nsdist.model import Model
    from nsdist.reference import train_models
    from nsdist.runs import resolve_run
    from nsdist.warm import cooccur_sums, init_new_rows, merge_sums, neighbours, warm_model

    cfg = load_config(str(JOB), {"epochs": epochs, "seed": seed, "topk": 0, "shards": 2},
                      corpus=(str(days[n]),), out=str(tmp / "variants"), environ={})
    t, models = cfg.train, 2
    tag = f"v{seed}-{n}-{epochs}"
    counted = count_vocab(client, cfg, plan_blocks(cfg.corpus, {}, cfg.blocksize, "items"), tag, 2)
    shards, words, _ = encode_shards(client, cfg, counted, 2, t.rounds(models), tag)
    vocab, pieces = counted.vocab.result(), client.gather(shards)
    tables = pipeline._tables(vocab, t, models)
    parent = resolve_run(str(tmp / "day1-out"), None)
    base = warm_model(vocab, parent, None, t.dim, t.seed)[0]
    known = neighbours(vocab, parent, None, t.dim)
    weighted = merge_sums(*[cooccur_sums(known, t.window, *p) for p in pieces])
    flat = [q for p in pieces for q in p]
    plain = [plain_means(flat, known.slot, t.window, m) for m in (known.win, known.wout)]

    def start(name):
        m = Model(base.win.copy(), base.wout.copy())
        init_new_rows(m, weighted)  # what warm_new=cooccur starts from
        if name == "output zero":
            m.wout[weighted.rows] = 0
        if name == "plain mean":
            (rows, win), (_, wout) = plain
            m.win[rows], m.wout[rows] = win, wout
        return m

    out = {}
    for name in ("cooccur", "output zero", "plain mean"):
        model = train_models(pieces, words, tables, t, models, start(name)).model
        emb = Embeddings(vocab.words.to_pylist(), vocab.counts, model.win, context=model.wout)
        key = f"{n} sessions, {epochs} epoch(s), in process: {name}"
        out[key] = score(emb, days)
        print(f"seed {seed} {key}: {json.dumps(out[key])}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions planted per day")
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--new", type=int, default=250, help="items new on day 2")
    parser.add_argument("--day2", type=int, nargs="+", default=[1000, 9000],
                        help="day-2 sessions the retrain sees (the first N of the day's training sessions)")
    parser.add_argument("--epochs1", type=int, default=5)
    parser.add_argument("--epochs2", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", action="store_true")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    results = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client, tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            (Path(tmp) / str(seed)).mkdir()
            results[seed] = run_seed(client, Path(tmp) / str(seed), seed, args)
    names = list(results[args.seeds[0]])
    keys = ("new_hr10_blend", "new_hr10_cosine", "new_group_p10", "all_hr10_blend")
    print(f"\nmean of seeds {args.seeds}:")
    print("| day 2 | " + " | ".join(keys) + " |")
    for name in names:
        means = [np.mean([results[s][name][k] for s in args.seeds]) for k in keys]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
