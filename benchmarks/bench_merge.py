#!/usr/bin/env python
"""Quality and merge cost of parameter averaging against shards and syncs per epoch.

Run by hand (never by the test suite):

    python benchmarks/bench_merge.py --tokens 300000 --seed 2                # planted corpus, ~70 runs
    python benchmarks/bench_merge.py --tokens 1000000 --merges mean --no-plain --syncs 4
    python benchmarks/bench_merge.py --corpus /tmp/nsdist-text.txt --analogies Q.txt --pairs P.tsv

Every run trains the same corpus for the same number of epochs (equal epochs, equal total
data); only the shard count (``shards``), the rounds of averaging per epoch
(``syncs_per_epoch``) and the merge strategy (``merge``, see nsdist/merge.py) change. All runs
share one LocalCluster (``--workers`` processes x 1 thread, created once, warmed up on a small
corpus first so numba compilation is not timed) and run one after the other. A worker holds one
model that its shards share, so min(workers, shards) models are averaged: to compare model
counts, pass ``--workers`` at least the largest shard count.

Merge strategies (``--merges``, rows labelled as in the table):

* ``mean``: every row trains at ``alpha`` times the model count (capped so the local rate is
  <= 0.2; ``rate_pivot`` unset) and the merge averages over all models;
* ``mean-plain``: ``mean`` with ``alpha_scale=1`` (plain averaging); added whenever ``mean``
  is listed, unless ``--no-plain``;
* ``mean-rows``: the default: ``mean`` with per-row local rates (``rate_pivot=5000`` kept
  occurrences per epoch, see nsdist/merge.py);
* ``weighted``, ``touched``: per-row merges, trained with scale 1 (their default).

With one shard every strategy computes the same model (a merge of one shard is its rows and
the scale is 1), so shards=1 is trained once per syncs value and shown in every group as the
baseline of the ``d ...`` (delta vs 1 shard) columns.

Columns: ``scale`` (largest per-row rate multiplier used), ``analogy`` (3CosAdd accuracy), ``clus@10`` (planted
cluster precision@10), ``pair rho`` (Spearman), ``d ...`` (minus the 1-shard run with the same
syncs), ``merges`` (merges over all epochs = epochs x rounds per epoch), ``KB/merge`` and
``ms/merge`` (mean over merges of the bytes moved between workers, shards' rows into the row
blocks' merges and merged blocks out to the other workers, and of the merge tasks' summed
compute time, transfers not included), ``merge MB`` and ``merge s``
(totals), ``epoch s`` (mean
epoch wall time), ``others`` (CPU share other processes took during the run; timings of rows
over 5% are suspect, quality is unaffected: training is deterministic).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time

VARIANTS = {  # label -> (merge, alpha_scale override, rate_pivot)
    "mean": ("mean", None, None),
    "mean-plain": ("mean", 1.0, None),
    "mean-rows": ("mean", None, 5000.0),
    "weighted": ("weighted", None, None),
    "touched": ("touched", None, None),
}


# ---------------------------------------------------------------- other load on the machine

class CpuWatch:
    """Share of all cores that processes outside this process tree used while a run went on."""

    def __init__(self):
        try:
            import psutil  # noqa: F401
        except ImportError:
            self.t0 = None
            return
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    @staticmethod
    def _own() -> dict:
        import psutil

        me, out = psutil.Process(), {}
        for proc in [me] + me.children(recursive=True):
            try:
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def stop(self) -> float | None:
        if self.t0 is None:
            return None
        wall = time.perf_counter() - self.t0
        own = sum(c - self.own0.get(pid, 0.0) for pid, c in self._own().items())
        return max(0.0, self._busy() - self.busy0 - own) / max(wall * (os.cpu_count() or 1), 1e-9)


# ---------------------------------------------------------------- one run

def run_one(client, corpus: str, truth: dict, workdir: str, label: str, shards: int, syncs: int, a,
            extra: dict) -> dict:
    import nsdist
    from nsdist.evaluate import evaluate_files
    from nsdist.config import load_config
    from nsdist.pipeline import train

    merge, scale, pivot = VARIANTS[label]
    overrides = {"epochs": a.epochs, "seed": a.train_seed, "dim": a.dim, "shards": shards,
                 "syncs_per_epoch": syncs, "merge": merge, "checkpoint_every": 0, **extra}
    if scale is not None:
        overrides["alpha_scale"] = scale
    # Always set: ``mean`` means uniform rates (None), not the config default. --set wins.
    overrides.setdefault("rate_pivot", pivot)
    out = tempfile.mkdtemp(prefix=f"run-{label}-{shards}-{syncs}-", dir=workdir)
    cfg = load_config(None, overrides, environ={}, corpus=(corpus,), out=out)
    watch = CpuWatch()
    t0 = time.perf_counter()
    result = train(cfg, client)
    wall = time.perf_counter() - t0
    foreign = watch.stop()
    report = evaluate_files(nsdist.load(result.run_url), truth.get("analogies"), truth.get("pairs"),
                            truth.get("clusters"), a.restrict_vocab)
    shutil.rmtree(out, ignore_errors=True)

    m = result.manifest["metrics"]
    corpus_stats = result.manifest["corpus"]
    epochs = m["epochs"]
    merges = [x for e in epochs for x in e["merges"]]
    merge_bytes = sum(e["merge_bytes"] for e in epochs)
    dim = cfg.train.dim
    row = {
        "merge": label, "merge_key": merge, "shards": corpus_stats["shards"], "syncs": syncs,
        "alpha_scale": m.get("rate_multiplier", {}).get("max", 1.0), "epochs": len(epochs),
        "vocab_size": corpus_stats["vocab_size"], "raw_tokens": corpus_stats["raw_tokens"], "dim": dim,
        "model_bytes": 2 * corpus_stats["vocab_size"] * dim * 4,
        "words_trained": sum(e["words"] for e in epochs), "loss_last_epoch": epochs[-1]["loss"],
        "merge_bytes": merge_bytes, "merge_seconds": sum(e["merge_seconds"] for e in epochs),
        "merge_count": len(merges),
        "bytes_per_merge": sum(x["bytes"] for x in merges) / max(len(merges), 1),
        "seconds_per_merge": sum(x["seconds"] for x in merges) / max(len(merges), 1),
        "max_seconds_per_merge": max((x["seconds"] for x in merges), default=0.0),
        "epoch_seconds": sum(e["seconds"] for e in epochs) / max(len(epochs), 1),
        "kernel_seconds": sum(e["kernel_seconds"] for e in epochs),
        "wall_seconds": wall, "foreign_cpu": foreign,
    }
    if "analogies" in report:
        row.update(analogy=report["analogies"]["accuracy"], analogy_total=report["analogies"]["total"],
                   analogy_oov=report["analogies"]["oov"])
    if "pairs" in report:
        row.update(pair_spearman=report["pairs"]["spearman"], pairs_used=report["pairs"]["pairs"])
    if "cluster_precision" in report:
        row["cluster_p10"] = report["cluster_precision"]
    return row


# ---------------------------------------------------------------- report

QUALITY = (("analogy", "analogy"), ("cluster_p10", "clus@10"), ("pair_spearman", "pair rho"))


def _f(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def report(rows: list[dict], labels: list[str]) -> str:
    qual = [(k, h) for k, h in QUALITY if any(k in r for r in rows)]
    base = {r["syncs"]: r for r in rows if r["shards"] == 1}
    table = []
    for label in labels:
        group = [r for r in rows if r["merge"] == label and r["shards"] > 1]
        for syncs in sorted({r["syncs"] for r in group} | set(base)):
            members = ([base[syncs]] if syncs in base else []) + sorted(
                (r for r in group if r["syncs"] == syncs), key=lambda r: r["shards"])
            for r in members:
                b = base.get(syncs)
                deltas = [_f(None if b is None or r.get(k) is None or b.get(k) is None else r[k] - b[k], "{:+.3f}")
                          for k, _ in qual]
                table.append([
                    label + ("*" if r["shards"] == 1 else ""), str(syncs), str(r["shards"]),
                    _f(r["alpha_scale"], "{:g}")] + [_f(r.get(k)) for k, _ in qual] + deltas + [
                    str(r["merge_count"]), f"{r['bytes_per_merge'] / 1e3:,.0f}",
                    _f(r["seconds_per_merge"] * 1e3, "{:.1f}"),
                    _f(r["merge_bytes"] / 1e6, "{:.1f}"), _f(r["merge_seconds"], "{:.2f}"),
                    _f(r["epoch_seconds"], "{:.2f}"), _f(r["foreign_cpu"], "{:.0%}"),
                ])
    headers = (["merge", "syncs", "shards", "scale"] + [h for _, h in qual] + [f"d {h}" for _, h in qual]
               + ["merges", "KB/merge", "ms/merge", "merge MB", "merge s", "epoch s", "others"])
    out = [_table(headers, table)]
    if base:
        out.append("* shards=1: one run per syncs value (every merge computes the same model), repeated in each "
                   "group as the baseline of the d columns")
    noisy = sum((r.get("foreign_cpu") or 0) > 0.05 for r in rows)
    if noisy:
        out.append(f"note: other processes took over 5% of the CPUs during {noisy} of {len(rows)} runs: their "
                   "seconds are suspect (quality columns are not affected)")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tokens", type=int, default=300_000, help="planted corpus size (nsdist.synth.generate)")
    p.add_argument("--seed", type=int, default=2, help="planted corpus seed")
    p.add_argument("--train-seed", type=int, help="training seed (config key 'seed'; default: --seed)")
    p.add_argument("--corpus", metavar="FILE", help="real-text corpus instead of the planted one")
    p.add_argument("--analogies", metavar="FILE", help="questions-words.txt format (default: planted truth)")
    p.add_argument("--pairs", metavar="FILE", help="word1<TAB>word2<TAB>score (default: planted truth)")
    p.add_argument("--clusters", metavar="FILE", help="word<TAB>label (default: planted truth)")
    p.add_argument("--restrict-vocab", type=int, default=300_000)
    p.add_argument("--merges", default="mean,weighted,touched",
                   help=f"comma list of {', '.join(VARIANTS)} (config key 'merge')")
    p.add_argument("--no-plain", action="store_true", help="do not add mean-plain (mean with alpha_scale=1)")
    p.add_argument("--shards", default="1,2,4,8,16", help="comma list of shard counts")
    p.add_argument("--syncs", default="1,4,16,32", help="comma list of syncs_per_epoch")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (1 thread each)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other nsdist config key")
    p.add_argument("--workdir", help="corpus and run outputs (default: a temp dir, deleted)")
    p.add_argument("--json", metavar="FILE", help="also write every run as JSON (rewritten after each run)")
    a = p.parse_args(argv)
    if a.train_seed is None:
        a.train_seed = a.seed
    labels = []
    for label in (x.strip() for x in a.merges.split(",") if x.strip()):
        if label not in VARIANTS:
            p.error(f"unknown merge {label!r}; choose from {', '.join(VARIANTS)}")
        labels.append(label)
        if label == "mean" and not a.no_plain and "mean-plain" not in a.merges:
            labels.append("mean-plain")
    shard_counts, sync_counts = _ints(a.shards), _ints(a.syncs)

    import distributed  # noqa: F401  its import configures its loggers: quieten them afterwards
    from distributed import Client, LocalCluster

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("distributed", "tornado", "bokeh", "nsdist"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from nsdist.config import load_config, parse_set
    from nsdist.pipeline import train
    from nsdist.synth import generate, truth_paths

    extra = parse_set(a.set)
    tmp = None
    workdir = a.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nsdist-bench-merge-")
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    cluster = client = None
    try:
        if a.corpus:
            corpus = a.corpus
            truth = {"analogies": a.analogies, "pairs": a.pairs, "clusters": a.clusters}
            what = f"{corpus} ({os.path.getsize(corpus) / 1e6:,.1f} MB)"
        else:
            files = generate(os.path.join(workdir, "synth.txt"), tokens=a.tokens, seed=a.seed)
            corpus, planted = files.corpus, truth_paths(files.corpus)
            truth = {"analogies": a.analogies or planted.analogies, "pairs": a.pairs or planted.pairs,
                     "clusters": a.clusters or planted.clusters}
            what = f"planted corpus, {files.tokens:,} tokens, seed {a.seed}"
        print(f"corpus: {what}", file=sys.stderr)

        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               host="127.0.0.1")
        client = Client(cluster)
        t0 = time.perf_counter()  # warm-up: worker imports and numba compilation / cache load
        warm = generate(os.path.join(workdir, "warmup.txt"), tokens=50_000, seed=1).corpus
        train(load_config(None, {"epochs": 1, "shards": 2, "checkpoint_every": 0, "dim": a.dim}, environ={},
                          corpus=(warm,), out=os.path.join(workdir, "warmup")), client)
        shutil.rmtree(os.path.join(workdir, "warmup"), ignore_errors=True)
        print(f"warm-up: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        plan = []
        if 1 in shard_counts:
            plan += [(labels[0], 1, s) for s in sync_counts]
        plan += [(label, n, s) for label in labels for s in sync_counts for n in shard_counts if n > 1]
        rows = []
        t_all = time.perf_counter()

        def dump():
            if not a.json:
                return
            import nsdist

            with open(a.json, "w") as f:
                json.dump({
                    "corpus": os.path.abspath(corpus) if a.corpus else None,
                    "planted": None if a.corpus else {"tokens": a.tokens, "seed": a.seed},
                    "quality_files": truth, "train_seed": a.train_seed, "epochs": a.epochs, "dim": a.dim,
                    "workers": a.workers, "extra": extra, "merges": labels, "rows": rows,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(), "nsdist": nsdist.__version__},
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }, f, indent=2)

        for i, (label, n, s) in enumerate(plan):
            row = run_one(client, corpus, truth, workdir, label, n, s, a, extra)
            if n == 1:
                row["merge"] = "any"
            rows.append(row)
            dump()
            print(f"[{i + 1}/{len(plan)}] {label if n > 1 else 'any'} shards={n} syncs={s}: "
                  f"analogy {_f(row.get('analogy'))} clus@10 {_f(row.get('cluster_p10'))} "
                  f"rho {_f(row.get('pair_spearman'))}, {row['wall_seconds']:.1f} s "
                  f"(elapsed {time.perf_counter() - t_all:.0f} s)", file=sys.stderr, flush=True)

        first = rows[0] if rows else {}
        print()
        print(f"corpus: {what}; {first.get('raw_tokens', 0):,} raw tokens, vocabulary {first.get('vocab_size', 0):,}, "
              f"dim {a.dim}, model {first.get('model_bytes', 0) / 1e6:.2f} MB (2 matrices float32)")
        print(f"training: epochs={a.epochs}, seed={a.train_seed}, other keys default"
              + (f", extra {extra}" if extra else "") + f"; LocalCluster {a.workers} workers x 1 thread; "
              f"{len(rows)} runs in {time.perf_counter() - t_all:.0f} s")
        print(f"quality files: {', '.join(f'{k}={v}' for k, v in truth.items() if v) or 'none'}")
        print()
        for r in rows:
            if r["shards"] == 1:
                r["merge"] = "any"
        print(report(rows, labels) if rows else "no results")
        if a.json:
            print(f"\nwrote {a.json}")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
