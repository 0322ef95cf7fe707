#!/usr/bin/env python
"""Publishing a model of about 1 GB by row blocks on several workers, against one writer, and
``nsdist.load`` memory-mapped against read into memory: same run, same machine.

Run by hand (never by the test suite):

    python benchmarks/bench_outputs.py                       # 1.25M words x dim 100 (1 GB), 4 workers
    python benchmarks/bench_outputs.py --words 200000        # a quick calibration

What runs, in turn (``--repeats`` times, interleaved):

1. **one writer** (the publish path before row blocks): ``write_run_files`` of the commit
   ``--reference`` (default: the branch point) on the first worker's model: every file written
   whole by one process (vectors.txt, vectors.bin, vectors.npy, context.npy, vectors.parquet,
   vocab.tsv).
2. **by blocks**: the job's publish path (``pipeline._start_outputs``, ``_write_block`` on every
   worker, ``_complete_output`` per file), every task through ``cluster.models.save`` on the
   worker's copy of the model, as ``Final.write`` and ``Final.each`` run them. The same files;
   vectors.parquet as parts.

A LocalCluster of ``--workers`` processes x 1 thread; every worker builds the same model from a
seed (not timed). Timed: from the first task submitted to the last file written (and, for the
blocks, assembled and hashed). Then, in a fresh process each, ``nsdist.load`` of the published
run with ``mmap=False`` (read into memory, as ``load`` did before) and ``mmap=True``: its wall
time and the process's peak resident memory (VmHWM) over what it held before, then the same
after one ``most_similar`` (a map's pages count in the resident set while they are cached; the
kernel drops them under pressure, as they are clean file pages). ``others``: the CPU share other
processes took meanwhile (bench_speed.CpuWatch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import CpuWatch  # noqa: E402

MIB = 2**20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model(words: int, dim: int, seed: int):
    from nsdist.model import Model

    rng = np.random.default_rng(seed)
    return Model(rng.standard_normal((words, dim), dtype=np.float32),
                 rng.standard_normal((words, dim), dtype=np.float32))


def vocab(words: int):
    import pyarrow as pa

    from nsdist.vocab import Vocab

    return Vocab(pa.array([f"w{i:07d}" for i in range(words)], pa.string()), np.arange(words, 0, -1, dtype=np.int64))


def one_writer(source: str, url: str, vocab, model) -> dict:
    """The reference's write_run_files (its formats.py, run as a module of this nsdist)."""
    import importlib.util

    spec = importlib.util.spec_from_loader("nsdist._formats_reference", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "nsdist"
    exec(compile(source, "formats_reference.py", "exec"), module.__dict__)
    return module.write_run_files(url, vocab.words, vocab.counts, model.win, model.wout, None, "string")


def _compiled() -> None:
    """numba initialised and the text formatter loaded, as in a job's workers after training."""
    import numpy as np

    from nsdist import floattext

    floattext.text_rows(np.zeros((1, 1), np.float32))


class _Parts:
    """A whole vocabulary as the job's vocabulary parts (``cluster.VocabParts``' view) read: one part."""

    def __init__(self, vocab):
        self.words, self.counts = vocab.words, vocab.counts

    def blocks(self):
        yield self


def _rows_of(vocab, lo: int, hi: int):
    from nsdist.vocab import Vocab

    return Vocab(vocab.words[lo:hi], vocab.counts[lo:hi])


def publish_by_blocks(client, ready: dict, workers: list, tag: str, vocab, url: str, words: int, dim: int) -> dict:
    from nsdist import pipeline
    from nsdist.cluster import models
    from nsdist.formats import plan_outputs

    def save(fn, args, w, key):
        return client.submit(models.save, tag, 0, 0, fn, args, ready[w], key=key, workers=[w],
                             allow_other_workers=False)

    plan = plan_outputs(url, words, dim, len(workers), 2**40)
    parts = client.submit(_Parts, vocab, key=f"parts-{url}")
    started = save(pipeline._start_outputs, (plan, parts, 0.025, None), workers[0], f"start-{url}").result()
    plan = started["plan"]
    # Each block's writer gets its rows' words, as the job's (cluster.Counted.slices) do.
    pieces = [client.submit(_rows_of, vocab, lo, hi, key=f"words-{url}-{b}") for b, (lo, hi) in enumerate(plan.blocks)]
    blocks = client.gather([save(pipeline._write_block, (plan, None, (b, pieces[b])), workers[b % len(workers)],
                                 f"block-{url}-{b}") for b in range(len(plan.blocks))])
    records = {name: [b["parts"][name] for b in blocks] for name in plan.assembled}
    done = client.gather([save(pipeline._complete_output, (plan, None, records, name), workers[i % len(workers)],
                               f"assemble-{url}-{name}") for i, name in enumerate(plan.assembled)])
    files = {**started["files"]}
    for b in blocks:
        files.update(b["files"])
    for d in done:
        files.update(d)
    return {"files": files, "blocks": len(plan.blocks)}


_LOAD = """
import json, sys, time
import nsdist

def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024

run, mmap = sys.argv[1], sys.argv[2] == "1"
before = status("VmRSS")
t0 = time.perf_counter()
emb = nsdist.load(run, mmap=mmap)
seconds = time.perf_counter() - t0
loaded = status("VmHWM") - before
t0 = time.perf_counter()
emb.most_similar("w0000001", topn=10)
query = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak": loaded, "query_seconds": query,
                  "peak_after_query": status("VmHWM") - before, "vectors": emb.vectors.nbytes}))
"""


def measure_load(run: str, mmap: bool) -> dict:
    p = subprocess.run([sys.executable, "-c", _LOAD, run, "1" if mmap else "0"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=3600)
    if p.returncode:
        raise SystemExit(p.stderr)
    return json.loads(p.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=1_250_000)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--reference", default="dc5a0c9", help="the commit whose write_run_files is the one writer")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()

    from distributed import Client, LocalCluster, wait

    from nsdist import cluster, runs
    from nsdist.cluster import models

    source = subprocess.run(["git", "-C", ROOT, "show", f"{args.reference}:nsdist/formats.py"], check=True,
                            capture_output=True, text=True).stdout
    work = tempfile.mkdtemp(prefix="bench-outputs-")
    rows = {"one writer": [], "by blocks": []}
    model_bytes = 2 * args.words * args.dim * 4
    try:
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          host="127.0.0.1", memory_limit=0) as lc, Client(lc) as client:
            client.wait_for_workers(args.workers)
            cluster.setup_workers(client)
            client.run(_compiled)  # a job's workers have run kernels before they publish
            workers = sorted(client.scheduler_info()["workers"])
            tag = f"bench-outputs-{os.getpid()}"
            ready = {w: client.submit(models.create, tag, 0, 0, [i], model, args.words, args.dim, args.seed,
                                      key=f"create-{i}", workers=[w], allow_other_workers=False)
                     for i, w in enumerate(workers)}
            words = client.submit(vocab, args.words, key="vocab")
            wait([*ready.values(), words])
            for r in range(args.repeats):
                for name in rows:
                    out = os.path.join(work, f"{name.replace(' ', '-')}-{r}")
                    run_id = runs.new_run_id()
                    url = runs.run_url(out, run_id)
                    runs.claim_run(out, run_id)
                    watch, t0 = CpuWatch(), time.perf_counter()
                    if name == "one writer":
                        files = client.submit(models.save, tag, 0, 0, one_writer, (source, url, words), ready[workers[0]],
                                              key=f"one-{r}", workers=[workers[0]], allow_other_workers=False).result()
                        blocks = 1
                    else:
                        got = publish_by_blocks(client, ready, workers, tag, words, url, args.words, args.dim)
                        files, blocks = got["files"], got["blocks"]
                    wall, others = time.perf_counter() - t0, watch.stop()
                    runs.publish(out, run_id, {"files": files, "corpus": {"vocab_size": args.words}})
                    row = {"seconds": wall, "others": others, "blocks": blocks,
                           "bytes": sum(m["size"] for m in files.values()), "run": url}
                    rows[name].append(row)
                    print(f"{name:>10} repeat {r + 1}: {wall:7.1f} s, {row['bytes'] / 1e9:.2f} GB in "
                          f"{len(files)} file(s), {blocks} block(s), others {others or 0:.0%}", flush=True)
            client.run(models.drop, tag)
        run = rows["by blocks"][-1]["run"]
        loads = {}
        for mmap in (False, True, False, True):  # interleaved, twice
            loads.setdefault(mmap, []).append(measure_load(run, mmap))
            got = loads[mmap][-1]
            print(f"load mmap={mmap!s:5}: {got['seconds']:6.2f} s, peak +{got['peak'] / MIB:7.0f} MiB "
                  f"({got['peak'] / got['vectors']:.2f}x the vectors); after a query {got['query_seconds']:.2f} s, "
                  f"+{got['peak_after_query'] / MIB:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, blocked = (np.median([x["seconds"] for x in rows[n]]) for n in ("one writer", "by blocks"))
    print(f"\nmodel {model_bytes / 1e9:.2f} GB ({args.words:,} words x dim {args.dim} x 2), {args.workers} workers on "
          f"{os.cpu_count()} cores: one writer {one:.1f} s, by blocks {blocked:.1f} s: {one / blocked:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "machine": platform.platform(), "cores": os.cpu_count(),
                       "publish": rows, "load": {str(k): v for k, v in loads.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
