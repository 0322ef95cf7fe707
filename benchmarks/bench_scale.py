"""Scale run on one machine: many single-threaded worker processes, a long-tail vocabulary.

Writes a Zipf corpus (``--types`` word types, ``--tokens`` tokens, sentences of 20 tokens),
trains it on a LocalCluster of ``--workers`` processes x 1 thread (one model each), and
compares, round by round, the bytes that crossed between workers (the manifest's merges)
with what ``scale_model.predict_epoch`` predicts from the run's own vocabulary counts, and
each worker's peak memory growth with the model's memory per worker.

    python benchmarks/bench_scale.py --workers 16 --types 2000000 --tokens 12000000 --dim 32

Run by hand on an otherwise idle machine (16 processes on 2 cores: the seconds are what this
machine gives, the bytes are exact).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from bench_speed import _table, _worker_memory, _worker_release, _worker_reset_peak
from scale_model import predict_epoch

SENTENCE = 20


def write_zipf_corpus(path: str, types: int, tokens: int, s: float, seed: int) -> None:
    """``tokens`` words drawn from Zipf(s) over ``types`` words ``w0``, ``w1``, ...; 20 per line."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, types + 1, dtype=np.float64) ** -s)
    cdf /= cdf[-1]
    words = np.array([f"w{i}" for i in range(types)], dtype=object)
    with open(path, "w", encoding="ascii") as f:
        for lo in range(0, tokens, 1_000_000):
            ids = np.searchsorted(cdf, rng.random(min(1_000_000, tokens - lo)))
            lines = words[ids].reshape(-1, SENTENCE) if len(ids) % SENTENCE == 0 else [words[ids]]
            f.write("".join(" ".join(line) + "\n" for line in lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--types", type=int, default=2_000_000)
    ap.add_argument("--tokens", type=int, default=12_000_000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--min-count", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other nsdist config key")
    ap.add_argument("--corpus", help="reuse this corpus file (written if missing)")
    ap.add_argument("--workdir")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--memory-limit", help="each worker's memory limit (Dask's form: 850MB, 1GB); default: Dask's share")
    ap.add_argument("--dry-run", action="store_true", help="print the job's plan (nsdist train --dry-run) and stop")
    ap.add_argument("--init-from", metavar="OUT", help="warm-start the job from this published model (nsdist train "
                    "--init-from): the workers' peaks then include the warm start")
    a = ap.parse_args(argv)

    import dask
    import distributed  # noqa: F401  configures its loggers: quieten them afterwards
    from distributed import Client, LocalCluster

    from nsdist.config import load_config, parse_set
    from nsdist.runs import load
    from nsdist.pipeline import train

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nsdist").setLevel(logging.INFO)
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    workdir = a.workdir or tempfile.mkdtemp(prefix="nsdist-scale-")
    os.makedirs(workdir, exist_ok=True)
    corpus = a.corpus or os.path.join(workdir, "zipf.txt")
    if not os.path.exists(corpus):
        t0 = time.perf_counter()
        write_zipf_corpus(corpus, a.types, a.tokens, a.zipf, a.seed)
        print(f"corpus {corpus}: {a.tokens:,} tokens over {a.types:,} types in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    overrides = {"dim": a.dim, "epochs": a.epochs, "min_count": a.min_count, "shards": a.workers,
                 "checkpoint_every": 0, **parse_set(a.set)}
    cfg = load_config(None, overrides, environ={}, corpus=(corpus,), out=os.path.join(workdir, "out"))
    limit = {} if a.memory_limit is None else {"memory_limit": a.memory_limit}
    # With a limit, Dask spills what it manages and kills a worker at 95% of it; its pause (at
    # 80%) is off: the partitioned layout's rows are outside Dask's managed memory, so pausing
    # the worker cannot free them, only stall the job (docs/scaling.md).
    dask.config.set({"distributed.worker.memory.pause": False} if a.memory_limit else {})
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", **limit) as cluster, Client(cluster) as client:
        client.wait_for_workers(a.workers)
        if a.dry_run:
            from nsdist.dryrun import dry_run

            print(json.dumps(dry_run(cfg, client, init_from=a.init_from), indent=1, default=str))
            return 0
        warm = os.path.join(workdir, "warm.txt")
        write_zipf_corpus(warm, 1000, 40_000, 1.0, 2)
        train(dataclasses.replace(cfg, corpus=(warm,), out=os.path.join(workdir, "warm"), blocksize=4096), client)
        gc.collect()
        client.run(_worker_release)
        idle = client.run(_worker_memory)
        client.run(_worker_reset_peak)
        t0 = time.perf_counter()
        result = train(cfg, client, init_from=a.init_from)
        wall = time.perf_counter() - t0
        peak = client.run(_worker_memory)
        client_info = client.scheduler_info()

    man = result.manifest
    m, c = man["metrics"], man["corpus"]
    t = cfg.train
    counts = load(result.run_url).counts
    rounds = m["rounds_per_epoch"]
    words = c["vocab_tokens"]  # known words: what the shards hold and the rounds train
    pred = predict_epoch(counts, models=m["models"], rounds=rounds, dim=t.dim, negative=t.negative,
                         sample=t.sample, ns_exponent=t.ns_exponent, base=t.sync_rows,
                         tokens_per_model_round=words / m["models"] / rounds,
                         sentence_tokens=words / max(c["sentences"], 1))
    merges = m["epochs"][0]["merges"]
    rows = []
    ends = [x["end"] for x in merges]
    walls = [None] + [e - s for s, e in zip(ends[:-1], ends[1:])]  # from the previous round's end
    for got, want, wall_s in zip(merges, pred["rounds"], walls):
        rows.append([str(want["round"]), f"{want['rows']:,}", str(got["blocks"]), f"{got['bytes'] / 1e6:.2f}",
                     f"{want['bytes'] / 1e6:.2f}", f"{got['bytes'] / max(want['bytes'], 1) - 1:+.1%}",
                     f"{got['seconds'] * 1e3:.0f}", "-" if wall_s is None else f"{wall_s:.2f}"])
    growth = sorted(peak[w]["peak"] - idle[w]["rss"] for w in peak)
    model_bytes = 2 * c["vocab_size"] * t.dim * 4
    measured_epoch = sum(x["bytes"] for x in merges)
    print(f"\n{a.workers} workers x 1 thread, {c['raw_tokens']:,} tokens, vocabulary {c['vocab_size']:,}, dim {t.dim}, "
          f"{rounds} rounds; model {model_bytes / 1e6:.1f} MB, shards {c['shard_bytes'] / 1e6:.1f} MB in all")
    print(_table(["round", "rows synced", "blocks", "MB measured", "MB predicted", "error", "merge ms (compute)",
                  "round s"], rows))
    print("(round s: from the previous round's end to this one's, on a worker's clock)")
    print(f"per epoch: {measured_epoch / 1e6:.1f} MB measured, {pred['bytes_per_epoch'] / 1e6:.1f} MB predicted "
          f"({measured_epoch / pred['bytes_per_epoch'] - 1:+.1%}); "
          f"{measured_epoch / a.workers / model_bytes:.2f} model sizes per worker")
    epoch_s = m["epochs"][0]["seconds"]
    print(f"seconds: epoch {epoch_s:.1f} ({epoch_s / rounds:.2f} per round), kernel {m['epochs'][0]['kernel_seconds']:.1f} "
          f"summed over workers, wall {wall:.1f}")
    yard = model_bytes + c["shard_bytes"] / a.workers
    limits = [info["memory_limit"] for info in client_info["workers"].values()] if client_info else []
    absolute = sorted(peak[w]["peak"] for w in peak)
    print(f"layout {m.get('layout', 'replicated')}; worker peak RSS: median "
          f"{absolute[len(absolute) // 2] / 1e6:.0f} MB, max {absolute[-1] / 1e6:.0f} MB"
          + (f" = {absolute[-1] / min(limits):.2f} x the memory limit of {min(limits) / 1e6:.0f} MB "
             f"({min(limits) / model_bytes:.2f} x the model)" if limits and min(limits) else ""))
    print(f"worker peak growth: min {growth[0] / 1e6:.0f} MB, median {growth[len(growth) // 2] / 1e6:.0f} MB, "
          f"max {growth[-1] / 1e6:.0f} MB = {growth[-1] / yard:.2f}x (model + shards per worker {yard / 1e6:.0f} MB); "
          f"predicted {pred['memory_per_worker'] / 1e6:.0f} MB "
          f"({growth[-1] / pred['memory_per_worker'] - 1:+.1%})")
    if man.get("parent"):
        print(f"warm start in {m['warm_seconds']:.1f} s: {json.dumps(man['parent'])}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"manifest": man, "predicted": pred, "idle": idle, "peak": peak, "wall_s": wall}, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
