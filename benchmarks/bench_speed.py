#!/usr/bin/env python
"""Speed, memory and quality of nsdist against gensim on one corpus, in one run.

Run by hand (never by the test suite), on an otherwise idle machine:

    python benchmarks/bench_speed.py --synth 1000000 --epochs 1          # planted corpus, quick
    python benchmarks/bench_speed.py /tmp/nsdist-text.txt --json out.json  # real text

Every trainer sees the same corpus file and the same hyperparameters (skip-gram, negative
sampling; defaults dim 100, window 5, negative 5, min_count 5, sample 1e-3, epochs 5):

* gensim ``Word2Vec(sg=1, corpus_file=...)`` with ``workers`` = each core count;
* nsdist on a LocalCluster of ``cores`` single-threaded worker processes with ``shards`` =
  cores, once per kernel in ``--kernels``.

The trainers run one after the other, never concurrently. See benchmarks/README.md for what
each column means.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time

# ---------------------------------------------------------------- memory

_KB = 1024


def _proc_status() -> dict:
    """VmRSS / VmHWM of this process in bytes (Linux), else psutil / getrusage."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * _KB
    except OSError:
        pass
    if "VmRSS" not in out:
        try:
            import psutil

            out["VmRSS"] = psutil.Process().memory_info().rss
        except ImportError:
            out["VmRSS"] = 0
    if "VmHWM" not in out:  # ru_maxrss: kB on Linux, bytes on macOS; never resettable
        scale = 1 if sys.platform == "darwin" else _KB
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return out


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; Linux >= 4.0 only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory() -> dict:
    """{'rss': current bytes, 'peak': peak bytes since the last reset_peak (or process start)}."""
    s = _proc_status()
    return {"rss": s["VmRSS"], "peak": max(s["VmHWM"], s["VmRSS"])}


# ---------------------------------------------------------------- other load on the machine

def _system_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    # guest time is already included in user time on Linux; steal (another VM had our core) counts
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _own_cpu() -> dict:
    """CPU seconds of this process and all its descendants (Dask scheduler, nannies, workers)."""
    import psutil

    me = psutil.Process()
    out = {}
    for proc in [me] + me.children(recursive=True):
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


class CpuWatch:
    """How much CPU *other* processes used while a trainer ran: system busy time minus ours.

    foreign = (busy CPU seconds of the whole machine - CPU seconds of this process tree)
              / (wall seconds * cores). Near 0 on an idle machine; 0.5 on 2 cores means another
    job took a whole core, and the timings of that row are not trustworthy.
    """

    def __init__(self):
        try:
            self.sys0, self.own0 = _system_busy(), _own_cpu()
        except ImportError:  # no psutil
            self.sys0 = None
        self.t0 = time.perf_counter()

    def stop(self) -> float | None:
        if self.sys0 is None:
            return None
        wall = time.perf_counter() - self.t0
        busy = _system_busy() - self.sys0
        own = sum(c - self.own0.get(pid, 0.0) for pid, c in _own_cpu().items())
        return max(0.0, busy - own) / max(wall * (os.cpu_count() or 1), 1e-9)


def wait_idle(timeout: float, threshold: float = 15.0) -> float | None:
    """Wait (up to timeout s) until the CPUs are below threshold % busy for a second; return the last %."""
    try:
        import psutil
    except ImportError:
        return None
    deadline = time.monotonic() + timeout
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# ---------------------------------------------------------------- quality

class _Vectors:
    """The slice of nsdist.Embeddings that nsdist.evaluate.evaluate_files reads."""

    def __init__(self, words, vectors):
        self.vocab, self.vectors, self.manifest = list(words), vectors, {}

    def __len__(self):
        return len(self.vocab)


def quality(words, vectors, truth: dict, restrict_vocab: int) -> dict:
    """Scores with exactly the code of ``nsdist evaluate`` (nsdist.evaluate.evaluate_files)."""
    from nsdist.evaluate import evaluate_files

    if not any(truth.values()):
        return {}
    report = evaluate_files(_Vectors(words, vectors), truth.get("analogies"), truth.get("pairs"),
                            truth.get("clusters"), restrict_vocab)
    out = {}
    if "analogies" in report:
        a = report["analogies"]
        out.update(analogy=a["accuracy"], analogy_total=a["total"], analogy_oov=a["oov"])
    if "pairs" in report:
        p = report["pairs"]
        out.update(pair_spearman=p["spearman"], pairs_used=p["pairs"], pairs_oov=p["oov"])
    if "cluster_precision" in report:
        out["cluster_p10"] = report["cluster_precision"]
    return out


# ---------------------------------------------------------------- gensim

def run_gensim(corpus: str, hp: dict, workers: int, truth: dict, restrict_vocab: int) -> dict:
    from gensim.models import Word2Vec

    gc.collect()
    base = memory()["rss"]
    reset_peak()
    model = Word2Vec(sg=1, hs=0, vector_size=hp["dim"], window=hp["window"], negative=hp["negative"],
                     min_count=hp["min_count"], sample=hp["sample"], epochs=hp["epochs"], alpha=hp["alpha"],
                     min_alpha=hp["min_alpha"], ns_exponent=hp["ns_exponent"], seed=hp["seed"],
                     workers=workers)
    watch = CpuWatch()
    t0 = time.perf_counter()
    model.build_vocab(corpus_file=corpus)
    vocab_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.train(corpus_file=corpus, total_words=model.corpus_total_words, epochs=model.epochs)
    train_s = time.perf_counter() - t0
    foreign = watch.stop()
    mem = memory()
    raw = int(model.corpus_total_words)
    row = {
        "trainer": "gensim", "kernel": "-", "cores": workers, "shards": None,
        "raw_tokens": raw, "vocab_size": len(model.wv),
        "vocab_s": vocab_s, "train_s": train_s, "epoch_s": train_s,
        "words_per_s": raw * hp["epochs"] / max(train_s, 1e-9),
        "client_peak_rss": mem["peak"], "client_base_rss": base, "worker_peak_rss": [],
        "foreign_cpu": foreign,
    }
    row.update(quality(model.wv.index_to_key, model.wv.vectors, truth, restrict_vocab))
    del model
    gc.collect()
    return row


# ---------------------------------------------------------------- nsdist

def _worker_reset_peak() -> bool:
    return reset_peak()


def _worker_memory() -> dict:
    return memory()


def _worker_release() -> None:
    from nsdist.memory import release_memory

    gc.collect()
    release_memory()


def _worker_warm_writers(workdir: str) -> None:
    """Load the output writers' libraries (Parquet, zstd) on every worker, as the warm-up run
    loaded them on the one that wrote its outputs: their code pages are not the job's memory."""
    import numpy as np
    import pyarrow as pa

    from nsdist.formats import write_run_files

    v = np.ones((2, 3), np.float32)
    write_run_files(os.path.join(workdir, f"warm-writers-{os.getpid()}"), pa.array(["a", "b"]), np.ones(2), v, v)


def nsdist_config(corpus: str, out: str, hp: dict, cores: int, kernel: str, extra: dict, epochs=None, threads=1):
    from nsdist.config import load_config

    overrides = {"dim": hp["dim"], "window": hp["window"], "negative": hp["negative"],
                 "min_count": hp["min_count"], "sample": hp["sample"], "epochs": epochs or hp["epochs"],
                 "alpha": hp["alpha"], "min_alpha": hp["min_alpha"], "ns_exponent": hp["ns_exponent"],
                 "seed": hp["seed"], "shards": cores * threads, "kernel": kernel, **extra}
    # environ={}: NSDIST_* variables must not silently change a benchmark; use --set.
    return load_config(None, overrides, environ={}, corpus=(corpus,), out=out,
                       **{"cluster.workers": cores, "cluster.threads_per_worker": threads})


def run_nsdist(corpus: str, hp: dict, cores: int, kernel: str, extra: dict, truth: dict, restrict_vocab: int,
               workdir: str, warm_corpus: str | None, threads: int = 1) -> dict:
    from nsdist.runs import load
    from nsdist.cluster import connect
    from nsdist.pipeline import train

    out = os.path.join(workdir, f"nsdist-{kernel}-{cores}")
    cfg = nsdist_config(corpus, out, hp, cores, kernel, extra, threads=threads)  # ConfigError: caller reports it
    client, cluster = connect(cfg.cluster)
    try:
        warm_s = None
        if warm_corpus:  # numba JIT / cache load and worker imports, outside the measurement
            t0 = time.perf_counter()
            warm_cfg = nsdist_config(warm_corpus, os.path.join(workdir, f"warm-{kernel}-{cores}"), hp, cores, kernel,
                                     extra, epochs=1, threads=threads)
            # Small blocks: every worker scans some, so every worker has loaded the tokenizer.
            train(dataclasses.replace(warm_cfg, blocksize=64 * 1024), client)
            client.run(_worker_warm_writers, workdir)
            warm_s = time.perf_counter() - t0
        gc.collect()
        client.run(_worker_release)  # the idle baseline: what a worker needs before the job
        base = memory()["rss"]
        worker_base = client.run(_worker_memory)
        reset_peak()
        client.run(_worker_reset_peak)
        watch = CpuWatch()
        t0 = time.perf_counter()
        result = train(cfg, client)
        wall_s = time.perf_counter() - t0
        foreign = watch.stop()
        mem = memory()
        workers_mem = client.run(_worker_memory)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    m = result.manifest["metrics"]
    corpus_stats = result.manifest["corpus"]
    epochs = m["epochs"]
    epoch_s = sum(e["seconds"] for e in epochs)
    kernel_s = sum(e["kernel_seconds"] for e in epochs)
    n_shards = corpus_stats["shards"]
    raw = int(corpus_stats["raw_tokens"])
    train_s = m["encode_seconds"] + epoch_s
    row = {
        "trainer": "nsdist", "kernel": kernel, "cores": cores, "threads": threads, "shards": n_shards,
        "raw_tokens": raw, "vocab_size": corpus_stats["vocab_size"], "blocks": corpus_stats["blocks"],
        "vocab_s": m["count_seconds"], "encode_s": m["encode_seconds"], "epoch_s": epoch_s, "train_s": train_s,
        "words_per_s": raw * hp["epochs"] / max(train_s, 1e-9),
        "epoch_words_per_s": raw * hp["epochs"] / max(epoch_s, 1e-9),
        # throughput of one shard's kernel while it runs: words per kernel-second per core
        "kernel_s": kernel_s,
        "kernel_words_per_s_per_core": raw * hp["epochs"] / max(kernel_s, 1e-9),
        "merge_s": sum(e["merge_seconds"] for e in epochs),
        "merge_bytes": sum(e["merge_bytes"] for e in epochs),
        # bytes that crossed between worker processes, per worker and epoch, in model sizes
        "network_models_per_worker_epoch": sum(e["merge_bytes"] for e in epochs) / len(epochs) / cores
        / (2 * corpus_stats["vocab_size"] * hp["dim"] * 4),
        "overhead": 1.0 - kernel_s / max(n_shards * epoch_s, 1e-9),
        "loss_last_epoch": epochs[-1]["loss"],
        "wall_s": wall_s, "total_s": m["total_seconds"], "warmup_s": warm_s,
        # planning, noise tables, checkpoints between epochs, writing and publishing the outputs
        "rest_s": wall_s - m["count_seconds"] - train_s,
        "client_peak_rss": mem["peak"], "client_base_rss": base,
        "worker_peak_rss": [w["peak"] for _, w in sorted(workers_mem.items())],
        "worker_base_rss": [w["rss"] for _, w in sorted(worker_base.items())],
        # The memory target's yardstick: one model (win + wout) and a worker's share of the shards.
        "model_bytes": 2 * corpus_stats["vocab_size"] * hp["dim"] * 4,
        "worker_shard_bytes": corpus_stats["shard_bytes"] / len(workers_mem),
        "run_url": result.run_url, "foreign_cpu": foreign,
    }
    emb = load(result.run_url)
    row.update(quality(emb.vocab, emb.vectors, truth, restrict_vocab))
    return row


# ---------------------------------------------------------------- report

def _mb(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def _f(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _name(r: dict) -> str:
    if r["trainer"] == "gensim":
        return "gensim"
    return f"nsdist/{r['kernel']}" + (f" {r['threads']}t" if r.get("threads", 1) > 1 else "")


def _growth_ratio(r: dict) -> float:
    """The largest worker's peak growth over its idle RSS, in units of (model + its shards)."""
    growth = max(p - b for p, b in zip(r["worker_peak_rss"], r["worker_base_rss"]))
    return growth / (r["model_bytes"] + r["worker_shard_bytes"])


def report(rows: list[dict]) -> str:
    has = lambda k: any(k in r for r in rows)
    qual = [(k, h) for k, h in (("analogy", "analogy"), ("cluster_p10", "clus@10"), ("pair_spearman", "pair rho"))
            if has(k)]
    main = []
    for r in rows:
        workers = r.get("worker_peak_rss") or []
        main.append([
            _name(r), str(r["cores"]), _f(r["vocab_s"], "{:.1f}"), _f(r["train_s"], "{:.1f}"),
            f"{r['words_per_s']:,.0f}", _mb(r["client_peak_rss"]), _mb(max(workers) if workers else None),
            _f(r.get("overhead"), "{:.1%}"), _f(r.get("foreign_cpu"), "{:.0%}"),
        ] + [_f(r.get(k)) for k, _ in qual])
    out = [_table(["trainer", "cores", "vocab s", "train s", "words/s", "client MB", "worker MB", "overhead",
                   "others"] + [h for _, h in qual], main)]
    noisy = [f"{_name(r)} x{r['cores']}" for r in rows if (r.get("foreign_cpu") or 0) > 0.05]
    if noisy:
        out.append(f"WARNING: other processes used over 5% of the CPUs during {', '.join(noisy)} "
                   "('others' column): those timings are not trustworthy; rerun on an idle machine")

    ns = [r for r in rows if r["trainer"] == "nsdist"]
    if ns:
        out.append("\nnsdist worker memory (growth = peak RSS - idle RSS, per worker; yardstick = model + the "
                   "worker's shards):")
        out.append(_table(
            ["trainer", "cores", "model MB", "shards MB/worker", "idle MB", "peak MB", "growth MB", "growth/yardstick"],
            [[_name(r), str(r["cores"]), _mb(r["model_bytes"]), _mb(r["worker_shard_bytes"]),
              " / ".join(_mb(b) for b in r["worker_base_rss"]), " / ".join(_mb(p) for p in r["worker_peak_rss"]),
              " / ".join(_mb(p - b) for p, b in zip(r["worker_peak_rss"], r["worker_base_rss"])),
              _f(_growth_ratio(r), "{:.2f}x")] for r in ns]))
        out.append("\nnsdist phases (train s = encode s + epoch s; kernel s summed over shards):")
        out.append(_table(
            ["trainer", "cores", "blocks", "encode s", "epoch s", "kernel s", "kernel w/s/core", "epoch w/s",
             "merge s", "merge MB", "net models/worker/epoch", "overhead", "rest s", "wall s"],
            [[_name(r), str(r["cores"]), str(r["blocks"]), _f(r["encode_s"], "{:.1f}"), _f(r["epoch_s"], "{:.1f}"),
              _f(r["kernel_s"], "{:.1f}"), f"{r['kernel_words_per_s_per_core']:,.0f}",
              f"{r['epoch_words_per_s']:,.0f}", _f(r["merge_s"], "{:.2f}"), _mb(r["merge_bytes"]),
              _f(r["network_models_per_worker_epoch"], "{:.2f}"),
              _f(r["overhead"], "{:.1%}"), _f(r["rest_s"], "{:.1f}"), _f(r["wall_s"], "{:.1f}")] for r in ns]))

    gs = {r["cores"]: r for r in rows if r["trainer"] == "gensim"}
    pairs = [(r, gs[r["cores"]]) for r in ns if r["cores"] in gs]
    if pairs:
        out.append("\nnsdist / gensim at the same core count (speed > 1: nsdist faster; time > 1: nsdist slower):")
        out.append(_table(
            ["trainer", "cores", "speed (w/s)", "train time", "vocab time", "peak RSS"]
            + [f"d {h}" for _, h in qual],
            [[_name(r), str(r["cores"]), f"{r['words_per_s'] / g['words_per_s']:.2f}x",
              f"{r['train_s'] / g['train_s']:.2f}x", f"{r['vocab_s'] / g['vocab_s']:.2f}x",
              f"{(r['client_peak_rss'] + sum(r['worker_peak_rss'])) / g['client_peak_rss']:.2f}x"]
             + [_f(None if r.get(k) is None or g.get(k) is None else r[k] - g[k], "{:+.3f}") for k, _ in qual]
             for r, g in pairs]))
    return "\n".join(out)


# ---------------------------------------------------------------- main

def _parse_set(items: list[str]) -> dict:
    from nsdist.config import parse_set

    return parse_set(items)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("corpus", nargs="?", help="text corpus: one sentence per line, space-separated tokens")
    p.add_argument("--synth", type=int, metavar="TOKENS",
                   help="generate the planted corpus (nsdist.synth) of this many tokens in a temp dir instead")
    p.add_argument("--synth-seed", type=int, default=1)
    p.add_argument("--kernels", default="pair", help="comma list of nsdist kernels (train config key 'kernel')")
    p.add_argument("--cores", default="1,2", help="comma list: gensim workers / nsdist worker processes = shards")
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="nsdist threads per worker process (sharing its model); shards = cores x threads")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--min-alpha", type=float, default=0.0001)
    p.add_argument("--ns-exponent", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra nsdist config key (e.g. syncs_per_epoch=4, blocksize=16000000)")
    p.add_argument("--analogies", metavar="FILE", help="questions-words.txt format (default: synth ground truth)")
    p.add_argument("--pairs", metavar="FILE", help="wordsim format (default: synth ground truth)")
    p.add_argument("--clusters", metavar="FILE", help="word<TAB>label (default: synth ground truth)")
    p.add_argument("--restrict-vocab", type=int, default=300_000)
    p.add_argument("--skip-gensim", action="store_true")
    p.add_argument("--skip-nsdist", action="store_true")
    p.add_argument("--no-warmup", action="store_true",
                   help="do not train a tiny corpus on each new cluster first (numba compile/cache load "
                        "then counts in the first epoch)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each trainer, wait up to this long for the CPUs to be idle (< 15%% busy)")
    p.add_argument("--retry-busy", type=int, default=0, metavar="N",
                   help="rerun a row up to N times while other processes take over 5%% of the CPUs during it "
                        "(the least disturbed attempt is reported)")
    p.add_argument("--workdir", help="keep outputs here (default: a temp dir, deleted)")
    p.add_argument("--json", metavar="FILE", help="also write all measurements as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="gensim and distributed INFO logs")
    a = p.parse_args(argv)
    if (a.corpus is None) == (a.synth is None):
        p.error("give a CORPUS file or --synth TOKENS (not both)")

    import distributed  # noqa: F401  its import configures its loggers: quieten them afterwards

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nsdist").setLevel(logging.INFO)
    logging.getLogger("gensim").setLevel(logging.INFO if a.verbose else logging.WARNING)
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(logging.INFO if a.verbose else logging.ERROR)

    from nsdist.errors import ConfigError
    from nsdist.synth import generate, truth_paths

    hp = {"dim": a.dim, "window": a.window, "negative": a.negative, "min_count": a.min_count, "sample": a.sample,
          "epochs": a.epochs, "alpha": a.alpha, "min_alpha": a.min_alpha, "ns_exponent": a.ns_exponent,
          "seed": a.seed}
    kernels = [k.strip() for k in a.kernels.split(",") if k.strip()]
    cores = [int(c) for c in a.cores.split(",") if c.strip()]
    extra = _parse_set(a.set)

    tmp = None
    workdir = a.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nsdist-bench-")
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    try:
        if a.synth is not None:
            t0 = time.perf_counter()
            files = generate(os.path.join(workdir, "synth.txt"), tokens=a.synth, seed=a.synth_seed)
            corpus = files.corpus
            print(f"synthetic corpus: {files.tokens:,} tokens in {corpus} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr)
        else:
            corpus = a.corpus
            if not os.path.isfile(corpus):
                p.error(f"corpus {corpus!r} is not a file")
        planted = truth_paths(corpus)
        truth = {k: (given or (getattr(planted, k) if os.path.isfile(getattr(planted, k)) else None))
                 for k, given in (("analogies", a.analogies), ("pairs", a.pairs), ("clusters", a.clusters))}

        warm = None
        if not a.no_warmup and not a.skip_nsdist:
            warm = generate(os.path.join(workdir, "warmup.txt"), tokens=50_000, seed=1).corpus

        rows, errors = [], []

        def start(what: str) -> float | None:
            busy = wait_idle(a.wait_idle)
            warn = " WARNING: something else is using the CPUs" if (busy or 0) > 15 else ""
            print(f"{what} ... (CPUs {_f(busy, '{:.0f}')}% busy beforehand){warn}", file=sys.stderr)
            return busy

        def done(row):
            rows.append(row)
            print(f"  {_name(row)} x{row['cores']}: vocab {row['vocab_s']:.1f} s, train {row['train_s']:.1f} s, "
                  f"{row['words_per_s']:,.0f} words/s", file=sys.stderr)

        def measure(what: str, fn):
            """Run a row; rerun it (up to --retry-busy times) while other processes took > 5% CPU."""
            best = None
            for attempt in range(1 + max(0, a.retry_busy)):
                busy = start(what + (f" (retry {attempt}: others took CPU)" if attempt else ""))
                row = fn()
                row["cpu_busy_before"], row["attempts"] = busy, attempt + 1
                if best is None or (row.get("foreign_cpu") or 0) < (best.get("foreign_cpu") or 0):
                    best = row
                if (row.get("foreign_cpu") or 0) <= 0.05:
                    break
                print(f"  others used {row['foreign_cpu']:.0%} of the CPUs during {what}", file=sys.stderr)
            done(best)

        if not a.skip_gensim:
            for c in cores:
                measure(f"gensim, workers={c}", lambda: run_gensim(corpus, hp, c, truth, a.restrict_vocab))
        if not a.skip_nsdist:
            for kernel in kernels:
                for c in cores:
                    try:
                        t = a.threads_per_worker
                        measure(f"nsdist, kernel={kernel}, {c} worker(s) x {t} thread(s), shards={c * t}",
                                lambda: run_nsdist(corpus, hp, c, kernel, extra, truth, a.restrict_vocab, workdir,
                                                   warm, threads=t))
                    except ConfigError as e:
                        msg = f"nsdist kernel={kernel!r} cores={c}: configuration rejected: {e}"
                        print(msg, file=sys.stderr)
                        errors.append(msg)
                        break  # same rejection for every core count

        toks = {r["raw_tokens"] for r in rows}
        vocabs = {(_name(r), r["vocab_size"]) for r in rows}
        print()
        print(f"corpus: {corpus} ({os.path.getsize(corpus) / 1e6:,.1f} MB, raw tokens "
              f"{', '.join(f'{t:,}' for t in sorted(toks))})")
        print(f"vocabulary: {', '.join(sorted({f'{n} {v:,}' for n, v in vocabs}))}")
        print("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hp.items())
              + (f"; nsdist extra: {extra}" if extra else ""))
        print(f"quality files: {', '.join(f'{k}={v}' for k, v in truth.items() if v) or 'none'}")
        print()
        print(report(rows) if rows else "no results")
        for msg in errors:
            print(msg)
        if len(toks) > 1:
            print("WARNING: trainers counted different raw token totals; words/s are not comparable")

        if a.json:
            import gensim
            import nsdist

            with open(a.json, "w") as f:
                json.dump({
                    "corpus": os.path.abspath(corpus), "corpus_bytes": os.path.getsize(corpus), "synth": a.synth,
                    "hyperparameters": hp, "nsdist_extra": extra, "quality_files": truth, "rows": rows,
                    "errors": errors,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(), "gensim": gensim.__version__,
                                "nsdist": nsdist.__version__},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }, f, indent=2)
            print(f"\nwrote {a.json}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
