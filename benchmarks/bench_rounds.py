"""The coordination cost of a round against the worker count: tasks, client submit time, seconds.

For each worker count, a LocalCluster of that many worker processes x 1 thread (one model each)
trains one epoch of a tiny Zipf corpus (``--tokens`` over ``--types`` word types, dim
``--dim``): the kernel takes milliseconds, so a round's time is what coordinating it costs.
The default plan of rounds is used (``syncs_per_epoch``: 2 per model), with ``sync_rows``
``--sync-rows`` so that the tiers are a small share of the vocabulary, as they are on a real
one. A tiny model needs no cutting into row blocks (``plan.MIN_IN_FLIGHT``); ``--as-large``
(the default) plans the blocks as for a model far larger than that minimum
(``plan.MIN_IN_FLIGHT`` = 0 in the coordinator), so the epoch's last round is cut into
``plan.merge_blocks`` blocks as on a large vocabulary: the round whose cost grows fastest.
``--layout partitioned`` trains the partitioned layout instead: its rounds merge the prefix by
owner ranges (the tiers: the first owner's; the last round: all M), not by planned blocks.

    python benchmarks/bench_rounds.py --workers 4,8,16,32 --json rounds.json

Per worker count it prints: rounds per epoch; tasks per round (what the coordinator submits
for it: the tier rounds' mean, and the last round); the client's time to submit a round (mean,
last); seconds per round (the epoch's seconds / rounds, and the last round's: from the previous
round's end to its own, on a worker's clock); and ``others``, the CPU other processes took
during the run (over 5%: the seconds are suspect; the task counts are exact).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time

from bench_scale import write_zipf_corpus
from bench_speed import CpuWatch, _table


class _Counted:
    """Counts the tasks ``_Attempt.submit_round`` submits and times it, round by round."""

    def __init__(self):
        self.rounds: list[dict] = []

    def install(self) -> None:
        from nsdist.cluster import partitioned, training

        counted, submit = self, training._Attempt.submit

        def counting_submit(attempt, *args, **kw):
            counted.tasks += 1
            return submit(attempt, *args, **kw)

        def timed(submit_round):
            def timed_round(attempt, epoch, r):
                counted.tasks = 0
                attempt.submit = counting_submit.__get__(attempt)
                t0 = time.perf_counter()
                try:
                    return submit_round(attempt, epoch, r)
                finally:
                    counted.rounds.append({"round": r, "tasks": counted.tasks, "submit_s": time.perf_counter() - t0})
                    del attempt.submit
            return timed_round

        for layout in (training._Attempt, partitioned._Partitioned):  # each layout's own rounds
            layout.submit_round = timed(layout.submit_round)


def run(workers: int, cfg, workdir: str, counted: _Counted) -> dict:
    from distributed import Client, LocalCluster

    from nsdist.pipeline import train

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        warm = os.path.join(workdir, "warm.txt")
        write_zipf_corpus(warm, 500, 20_000, 1.0, 2)  # start-up, imports, compiled kernels: not measured
        train(dataclasses.replace(cfg, corpus=(warm,), out=os.path.join(workdir, f"warm{workers}")), client)
        counted.rounds.clear()
        watch = CpuWatch()
        t0 = time.perf_counter()
        result = train(dataclasses.replace(cfg, out=os.path.join(workdir, f"out{workers}")), client)
        wall = time.perf_counter() - t0
        others = watch.stop()
    m = result.manifest["metrics"]
    merges = m["epochs"][0]["merges"]
    ends = [x["end"] for x in merges]
    tiers, last = counted.rounds[:-1], counted.rounds[-1]
    return {"workers": workers, "models": m["models"], "rounds": len(merges),
            "blocks_last": merges[-1]["blocks"], "tasks_tier": statistics.mean(r["tasks"] for r in tiers),
            "tasks_last": last["tasks"], "submit_tier_s": statistics.mean(r["submit_s"] for r in tiers),
            "submit_last_s": last["submit_s"], "epoch_s": m["epochs"][0]["seconds"],
            "round_s": m["epochs"][0]["seconds"] / len(merges), "last_round_s": ends[-1] - ends[-2],
            "tier_round_s": statistics.median(e - s for s, e in zip(ends[:-2], ends[1:-1])),
            "kernel_s": m["epochs"][0]["kernel_seconds"], "merge_bytes": m["epochs"][0]["merge_bytes"],
            "wall_s": wall, "others": others, "vocab": result.manifest["corpus"]["vocab_size"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="4,8,16,32", help="worker counts, comma-separated")
    ap.add_argument("--types", type=int, default=5000)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--sync-rows", type=int, default=16)
    ap.add_argument("--layout", default="replicated", choices=("replicated", "partitioned"), help="train.layout")
    ap.add_argument("--small-model", dest="as_large", action="store_false",
                    help="plan the row blocks for the tiny model itself (one block per round)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other nsdist config key")
    ap.add_argument("--workdir")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)

    # On a shared machine a loaded scheduler may answer late: not a lost connection (the workers
    # inherit the setting through the environment).
    os.environ["DASK_DISTRIBUTED__COMM__TIMEOUTS__TCP"] = "600s"
    import distributed  # noqa: F401  configures its loggers: quieten them afterwards

    from nsdist import plan
    from nsdist.config import load_config, parse_set

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("nsdist", "distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if a.as_large:
        plan.MIN_IN_FLIGHT = 0  # the coordinator plans the blocks: as for a large model
    workdir = a.workdir or tempfile.mkdtemp(prefix="nsdist-rounds-")
    os.makedirs(workdir, exist_ok=True)
    corpus = os.path.join(workdir, "zipf.txt")
    write_zipf_corpus(corpus, a.types, a.tokens, 1.0, 1)
    counted = _Counted()
    counted.install()
    results = []
    for w in [int(x) for x in a.workers.split(",")]:
        overrides = {"dim": a.dim, "epochs": 1, "min_count": 1, "shards": w, "sync_rows": a.sync_rows,
                     "checkpoint_every": 0, "train.layout": a.layout, **parse_set(a.set)}
        cfg = load_config(None, overrides, environ={}, corpus=(corpus,), out=os.path.join(workdir, "out"))
        results.append(run(w, cfg, workdir, counted))
        print(f"{w} workers done: {results[-1]['epoch_s']:.1f} s", file=sys.stderr)
    print(f"\n{a.layout} layout, vocabulary {results[0]['vocab']:,}, dim {a.dim}, {a.tokens:,} tokens, 1 epoch, sync_rows {a.sync_rows}, "
          f"blocks planned {'as for a large model' if a.as_large else 'for this model'}; load before: "
          f"{os.getloadavg()[0]:.2f}")
    print(_table(["workers", "rounds", "last blocks", "tasks/round (tiers)", "tasks (last)", "submit ms (tiers)",
                  "submit ms (last)", "s/round", "s (tier median)", "s (last)", "epoch s", "others"],
                 [[str(r["workers"]), str(r["rounds"]), str(r["blocks_last"]), f"{r['tasks_tier']:.0f}",
                   str(r["tasks_last"]), f"{r['submit_tier_s'] * 1e3:.1f}", f"{r['submit_last_s'] * 1e3:.0f}",
                   f"{r['round_s']:.3f}", f"{r['tier_round_s']:.3f}", f"{r['last_round_s']:.2f}",
                   f"{r['epoch_s']:.1f}", "-" if r["others"] is None else f"{r['others']:.0%}"] for r in results]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
