#!/usr/bin/env python
"""Preprocessing speed and worker memory of nsdist against gensim's build_vocab, in one run.

Run by hand (never by the test suite):

    python benchmarks/bench_preprocess.py /tmp/nsdist-text.txt --repeat 3
    python benchmarks/bench_preprocess.py --synth 2000000 --repeat 3
    python benchmarks/bench_preprocess.py --zipf 3000000 --tokens 15000000 --min-count 1 --workers 4 --skip-gensim

Each repeat starts a fresh LocalCluster of ``--workers`` single-threaded worker processes, warms
every worker up (imports, and the preprocessing code run once on a tiny text, so that neither is
counted), then runs the two preprocessing stages of ``train``: ``nsdist.cluster.count_vocab``
then ``encode_shards`` with shards = workers. It records, per worker, the idle RSS after the
warm-up (after ``gc.collect``) and the peak RSS during each stage (Linux ``VmHWM``, reset by writing ``5`` to ``/proc/self/clear_refs``), and the
bytes the worker holds at the end: its encoded shards plus one model copy (vocab x dim x 2
float32, the ``dim`` of ``--dim``; no model exists yet at this stage, it is the yardstick of the
memory target), and the peak RSS of this process (the client) over both stages. ``--zipf TYPES``
writes bench_scale.py's Zipf corpus (``--tokens`` words over TYPES word types): a vocabulary as
large as wanted, to see what grows with it. gensim's ``Word2Vec(...).build_vocab(corpus_file=...)`` (scan, count, prune,
initialise the weights) is timed in this process with ``workers`` = ``--workers``. Every timing
is the minimum over the repeats (the machine may be shared).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speed import memory, reset_peak  # noqa: E402  same RSS measurement as bench_speed


def _worker_memory() -> dict:
    gc.collect()
    return memory()


def _worker_reset_peak() -> bool:
    return reset_peak()


def _all(times) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def _worker_warmup() -> dict:
    """Import and run the preprocessing code once in this worker, then report its idle memory."""
    from nsdist.corpus import iter_tokenize
    from nsdist.counts import scan
    from nsdist.encode import encode_scanned
    from nsdist.cluster.stages import _scan_block  # noqa: F401  the task module and its imports

    from nsdist.memory import release_memory

    scanned = scan(iter_tokenize("a b c\nd\u00e9 e\n".encode() * 1000))
    encode_scanned([(scanned, 0, None)], scanned.words)
    del scanned
    release_memory()
    return _worker_memory()


def run_nsdist(cfg, blocks) -> dict:
    """One measurement on a fresh cluster (so that no memory is left over from a previous run)."""
    import operator

    from nsdist.cluster import connect, count_vocab, encode_shards, setup_workers

    client, cluster = connect(cfg.cluster)
    try:
        client.wait_for_workers(cfg.cluster.workers)
        setup_workers(client)  # as nsdist.pipeline.train does
        idle = client.run(_worker_warmup)
        workers = sorted(idle)
        client.run(_worker_reset_peak)
        reset_peak()
        t0 = time.perf_counter()
        counted = count_vocab(client, cfg, blocks, "bench")
        summary = counted.summary
        count_s = time.perf_counter() - t0
        count_mem = client.run(_worker_memory)
        client.run(_worker_reset_peak)
        t0 = time.perf_counter()
        shards, words, _ = encode_shards(client, cfg, counted, len(workers), cfg.train.rounds(len(workers)), "bench")
        encode_s = time.perf_counter() - t0
        encode_mem = client.run(_worker_memory)
        client_peak = memory()["peak"]
        pieces = [p for shard in shards for p in shard]  # a shard is a list of pieces
        nbytes = client.gather([client.submit(operator.attrgetter("nbytes"), p, key=f"nb-{p.key}") for p in pieces])
        held = dict.fromkeys(workers, 0)
        who = client.who_has(pieces)
        for p, n in zip(pieces, nbytes):
            for w in who[p.key]:
                held[w] += n
    finally:
        client.close()
        cluster is not None and cluster.close()
    return {"count_s": count_s, "encode_s": encode_s, "summary": summary, "held": held, "client_peak": client_peak,
            "model": summary["vocab_size"] * cfg.train.dim * 2 * 4,
            "idle": {w: idle[w]["rss"] for w in workers},
            "count_peak": {w: count_mem[w]["peak"] for w in workers},
            "encode_peak": {w: encode_mem[w]["peak"] for w in workers}}


def run_gensim(corpus: str, min_count: int, dim: int, workers: int, repeat: int) -> list[float]:
    from gensim.models import Word2Vec

    times = []
    for _ in range(repeat):
        model = Word2Vec(sg=1, hs=0, vector_size=dim, min_count=min_count, workers=workers, seed=1)
        t0 = time.perf_counter()
        model.build_vocab(corpus_file=corpus)
        times.append(time.perf_counter() - t0)
        del model
        gc.collect()
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", nargs="?", help="text corpus: one sentence per line")
    p.add_argument("--synth", type=int, metavar="TOKENS", help="generate a planted corpus of this size instead")
    p.add_argument("--zipf", type=int, metavar="TYPES", help="generate a Zipf corpus over this many word types")
    p.add_argument("--tokens", type=int, default=10_000_000, help="the --zipf corpus's tokens")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--dim", type=int, default=100, help="model width for the memory yardstick")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="nsdist config key, e.g. blocksize=8388608 or lowercase=true")
    p.add_argument("--skip-gensim", action="store_true")
    a = p.parse_args(argv)
    if sum(x is not None for x in (a.corpus, a.synth, a.zipf)) != 1:
        p.error("give one of a CORPUS file, --synth TOKENS or --zipf TYPES")

    import distributed  # noqa: F401  configures its loggers on import: quieten them afterwards

    logging.basicConfig(level=logging.WARNING)
    for name in ("distributed", "tornado", "bokeh", "nsdist"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from nsdist.config import load_config, parse_set
    from nsdist.corpus import plan_blocks
    from nsdist.synth import generate

    with tempfile.TemporaryDirectory(prefix="nsdist-bench-") as tmp:
        corpus = a.corpus
        if a.synth:
            corpus = generate(os.path.join(tmp, "synth.txt"), tokens=a.synth, seed=1).corpus
        elif a.zipf:
            from bench_scale import write_zipf_corpus
            corpus = os.path.join(tmp, "zipf.txt")
            write_zipf_corpus(corpus, a.zipf, a.tokens, 1.0, 1)
        overrides = {"min_count": a.min_count, "dim": a.dim, "shards": a.workers, **parse_set(a.set)}
        cluster_keys = {"cluster.workers": a.workers, "cluster.threads_per_worker": 1}
        cfg = load_config(None, overrides, environ={}, corpus=(corpus,), out=tmp, **cluster_keys)
        blocks = plan_blocks(cfg.corpus, {}, cfg.blocksize)
        rows = [run_nsdist(cfg, blocks) for _ in range(a.repeat)]
        gensim = [] if a.skip_gensim else run_gensim(corpus, a.min_count, a.dim, a.workers, a.repeat)

    s = rows[0]["summary"]
    count_s = min(r["count_s"] for r in rows)
    encode_s = min(r["encode_s"] for r in rows)
    print(f"corpus {corpus}: {s['raw_tokens']:,} tokens, {len(blocks)} block(s) of <= {cfg.blocksize:,} bytes, "
          f"vocab {s['vocab_size']:,} (min_count {a.min_count}), {a.workers} workers x 1 thread")
    print(f"nsdist count+vocab s: {count_s:.2f}  (all: {_all(r['count_s'] for r in rows)})")
    print(f"nsdist encode s:      {encode_s:.2f}  (all: {_all(r['encode_s'] for r in rows)})")
    if gensim:
        g = min(gensim)
        print(f"gensim build_vocab s: {g:.2f}  (all: {_all(gensim)})")
        print(f"gensim / nsdist count+vocab: {g / count_s:.2f}x")
    print(f"encode / count+vocab: {encode_s / count_s:.2f}x")
    print(f"client peak MB: {_mb(min(r['client_peak'] for r in rows))}  (all: "
          f"{', '.join(_mb(r['client_peak']) for r in rows)})")
    print("\nper worker, MB (peak and idle RSS; growth = peak - idle; target: growth < 1.5 x (model + shards)):")
    print("repeat  worker  idle  count peak  encode peak  growth  model+shards  growth/(model+shards)")
    for i, r in enumerate(rows):
        for w in sorted(r["idle"]):
            peak = max(r["count_peak"][w], r["encode_peak"][w])
            yard = r["model"] + r["held"][w]
            print(f"{i:>6}  {w.rsplit(':', 1)[-1]:>6}  {_mb(r['idle'][w]):>4}  {_mb(r['count_peak'][w]):>10}  "
                  f"{_mb(r['encode_peak'][w]):>11}  {_mb(peak - r['idle'][w]):>6}  {_mb(yard):>12}  "
                  f"{(peak - r['idle'][w]) / yard:>21.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
