"""Where each worker's memory peaks: RSS sampled every 20 ms with the tasks running at the time.

    python benchmarks/bench_memory_phases.py /tmp/nsdist-text15.txt --workers 8 --epochs 2
    python benchmarks/bench_memory_phases.py child.txt --workers 8 --epochs 1 --init-from parent/out ...

Trains the corpus once to warm the workers up (1 epoch, 1 MiB blocks), frees what it can, then
samples every worker's RSS while the measured run trains, and prints per worker its peak growth
over the idle RSS, the tasks running at the peak, and the largest growth seen while each kind of
task ran (``scan``, ``train``, ``part``, ``merge``, ``install``, ...; ``idle``: none ran).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024


def _start(dask_worker=None) -> None:
    samples = dask_worker._nsdist_samples = []

    def loop():
        while True:
            running = [str(getattr(t, "key", t)) for t in list(dask_worker.state.executing)]
            samples.append((time.time(), _rss(), running))
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True, name="nsdist-rss-sampler").start()


def _samples(dask_worker=None) -> list:
    return dask_worker._nsdist_samples


def _idle() -> int:
    import gc

    from nsdist.memory import release_memory

    gc.collect()
    release_memory()
    return _rss()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other nsdist config key")
    ap.add_argument("--workdir", default="/tmp/nsdist-memory-phases")
    ap.add_argument("--warm", metavar="CORPUS", help="warm the workers up on this corpus (default: the measured one)")
    ap.add_argument("--edges", action="store_true", help="the corpus (and --warm) are edge lists: a graph job")
    ap.add_argument("--init-from", metavar="OUT", help="warm-start the measured run from this published model "
                    "(nsdist train --init-from): the start's tasks are kinds of their own (sums, bin, bins, ...)")
    ap.add_argument("--memory-limit", help="each worker's memory limit, which the job plans with (its walk waves, "
                    "layouts); Dask's own memory management is off, so that nothing is spilled or killed")
    a = ap.parse_args(argv)

    import distributed  # noqa: F401  configures its loggers: quieten them afterwards
    from distributed import Client, LocalCluster

    from nsdist.config import load_config, parse_set
    from nsdist.pipeline import train

    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import dask

    source = "edges" if a.edges else "corpus"
    limit = {"memory_limit": a.memory_limit} if a.memory_limit else {}
    off = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause", "terminate")}
    with dask.config.set(off if a.memory_limit else {}), \
            LocalCluster(n_workers=a.workers, threads_per_worker=a.threads_per_worker, processes=True,
                         dashboard_address=":0", host="127.0.0.1", **limit) as cluster, Client(cluster) as client:
        warm = load_config(None, {"epochs": 1, "checkpoint_every": 0, **parse_set(a.set)}, environ={},
                           out=f"{a.workdir}/warm", blocksize=2**20, **{source: (a.warm or a.corpus,)})
        train(warm, client)
        idle = client.run(_idle)
        client.run(_start)
        t0 = time.time()
        cfg = load_config(None, {"epochs": a.epochs, **parse_set(a.set)}, environ={}, out=f"{a.workdir}/run",
                          **{source: (a.corpus,)})
        result = train(cfg, client, init_from=a.init_from)
        samples = client.run(_samples)
    c = result.manifest["corpus"]
    yard = 2 * c["vocab_size"] * cfg.train.dim * 4 + c["shard_bytes"] / a.workers
    print(f"model + shards per worker: {yard / 1e6:.1f} MB")
    by_kind: dict[str, list[int]] = {}
    for worker, rows in sorted(samples.items()):
        rows = [r for r in rows if r[0] >= t0]
        at, peak, running = max(rows, key=lambda r: r[1])
        kinds: dict[str, int] = {}
        for _, rss, keys in rows:
            for key in keys or ["idle"]:
                kind = key.split("-")[0]
                kinds[kind] = max(kinds.get(kind, 0), rss - idle[worker])
        for k, v in kinds.items():
            by_kind.setdefault(k, []).append(v)
        top = ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:6])
        print(f"{worker}: idle {idle[worker] / 1e6:.0f} MB, peak growth {(peak - idle[worker]) / 1e6:.0f} MB ({(peak - idle[worker]) / yard:.2f}x) "
              f"at {at - t0:.1f} s running {running or 'nothing'}; largest growth while running (MB): {top}")
    print("largest growth over idle while each kind of task ran, min-max over the workers (MB):")
    for k, v in sorted(by_kind.items(), key=lambda kv: -max(kv[1])):
        print(f"  {k}: {min(v) / 1e6:.0f}-{max(v) / 1e6:.0f} ({len(v)} workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
