#!/usr/bin/env python
"""Where the time of the two demo jobs goes: the text demo (``nsdist demo``, README's first
command) and the graph demo (``nsdist synth --graph DIR --seed 1``, then ``nsdist train --edges
DIR/edges.parquet --out OUT --config jobs/graph.yaml``), phase by phase, and the fixed share:
everything but the training epochs, over the whole command.

Run by hand (never by the test suite), from the repository root:

    python benchmarks/bench_fixed_costs.py                          # this tree, 3 runs of each demo
    python benchmarks/bench_fixed_costs.py --before /tmp/main-copy  # against another tree, interleaved
    python benchmarks/bench_fixed_costs.py --before /tmp/main-copy --plain  # the commands untimed

With ``--before TREE`` (a copy of another commit's sources, e.g. ``git archive main | tar -x -C
TREE``) every run of that tree is followed by a run of this one (``PYTHONPATH`` alternates), and the
table gives both trees' medians and their ratio (after / before). Each tree first runs each demo
once, untimed: numba compiles the kernels into that tree's ``__pycache__`` once, as a fresh
install's first job does, and every timed run loads them from there.

Every command runs as ``python -m nsdist``, in a process of its own, started by this script
(``--child``), which times its phases without changing what runs:

- the log lines the job writes (their arrival time; the stage seconds they carry: counting,
  encoding, each epoch, outputs, top-k);
- wrappers around the job's own functions (import of the CLI, cluster start, worker set-up,
  counting or walking, encoding, the training set-up, checkpoints' state files, outputs, report,
  manifest and LATEST, evaluation, cluster shutdown);
- before the cluster closes, the compute seconds of the job's tasks per kind from the Dask
  scheduler (``train``, ``merge``, ``install``, ``checkpoint``, ``probe``, ...), for the rounds;
- the process's wall time from this script (start to exit, so interpreter start and exit count),
  and the CPU seconds of its processes (the command's, its scheduler's and its workers', which it
  waits for): less sensitive than wall time to what else runs on the machine.

The timers cost little, but the child imports the job's modules to wrap them, and where those
imports compete with the workers' fork server (forkserver.py) they shift time between phases:
``--plain`` runs the commands as they are and reports their wall time, the epochs' seconds from
their manifests, and the difference, the fixed seconds.

``others``: the CPU share other processes took while a command ran (the machine's busy CPU
seconds minus the command's own process tree, over wall x cores): above 0.05 the run's timings
are not trustworthy (the machine is shared). ``uptime``'s load average is printed with each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- the child: one command, timed

def _child(spec: dict) -> int:
    """Run one ``nsdist`` command in this process, with timers around its phases; write what
    they measured to ``spec["record"]`` (JSON)."""
    started = time.time()
    t0 = time.perf_counter()
    import logging

    import nsdist.cli

    record = {"import": time.perf_counter() - t0, "started": started, "phases": {}, "counts": {}, "logs": [],
              "tasks": {}, "missing": []}
    phases = record["phases"]

    def wrap(owner, name: str, phase: str, before=None):
        fn = getattr(owner, name, None)
        if fn is None:
            record["missing"].append(f"{getattr(owner, '__name__', owner)}.{name}")
            return

        def timed(*args, **kwargs):
            if before is not None:
                before(*args, **kwargs)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - t
                record["counts"][phase] = record["counts"].get(phase, 0) + 1

        setattr(owner, name, timed)

    def tasks_before_close(client, *args, **kwargs):
        """The compute seconds of the job's tasks per kind, from the scheduler (before it closes)."""
        t = time.perf_counter()
        try:
            record["tasks"] = client.run_on_scheduler(_task_seconds)
        except Exception as e:  # a job that failed: no task record
            record["tasks"] = {"error": repr(e)}
        record["probe_seconds"] = time.perf_counter() - t

    def instrument():
        """Import the job's modules and wrap their functions: at the command's start, or, where
        the command starts its workers' fork server before it imports the library
        (nsdist/forkserver.py), just after that, so that the server keeps its head start. Only
        the modules the command imports itself before its cluster starts: the demo's corpus and
        evaluation modules are wrapped for the demo alone (evaluation imports scikit-learn,
        which would compete with the server's imports in a train command that never does)."""
        t = time.perf_counter()
        import nsdist.cluster as cl
        import nsdist.cluster.client as cc
        import nsdist.inputs as inputs
        import nsdist.pipeline as pl
        import nsdist.runs as runs
        from nsdist.cluster import training

        if spec["argv"][0] == "demo":
            import nsdist.evaluate as ev
            import nsdist.synth as synth

            wrap(synth, "generate", "synthetic corpus")
            wrap(ev, "evaluate_files", "demo: evaluation")
        record["import"] += time.perf_counter() - t
        wrap(inputs, "check_inputs", "check inputs")
        wrap(cc, "LocalCluster", "cluster start: LocalCluster")
        wrap(cc, "Client", "cluster start: client")
        wrap(cc, "connect", "cluster start")
        wrap(cl, "setup_workers", "worker set-up")
        wrap(cl, "check_readable", "workers read the input")
        wrap(cl, "read_graph", "graph: edges read")
        wrap(cl, "walk_corpus", "graph: walks + counting")
        wrap(cl, "count_vocab", "counting + vocabulary")
        wrap(pl, "_check_counted", "vocabulary digest")
        wrap(cl, "encode_shards", "encoding")
        wrap(pl, "_source", "training set-up")
        wrap(pl, "_training", "training set-up")
        wrap(pl._Checkpoints, "saved", "checkpoint state files (client)")
        wrap(training._Attempt, "stop", "models freed")
        wrap(pl, "_finish", "outputs + top-k")
        wrap(pl, "_write_outputs", "outputs")
        wrap(pl, "_write_report", "report.html")
        wrap(pl, "publish", "manifest + LATEST")
        wrap(pl, "_publish", "publish (report, manifest, LATEST, checkpoints removed)")
        wrap(cc, "close", "cluster shutdown", before=tasks_before_close)
        wrap(runs, "load", "demo: load the run")

    commands = sys.modules.get("nsdist.cli.commands")
    first = getattr(commands, "_local_workers_first", None)
    if first is not None and spec["argv"][0] in ("train", "demo"):
        def local_workers_first(cfg):
            first(cfg)
            instrument()

        commands._local_workers_first = local_workers_first
    else:
        instrument()

    class Marks(logging.Filter):
        def filter(self, rec):
            fields = {k: v for k, v in vars(rec).items() if k in ("stage", "seconds", "epoch", "kernel_seconds",
                                                                  "merge_seconds", "words")}
            record["logs"].append({"t": rec.created - started, "message": rec.getMessage(), **fields})
            return True

    logging.getLogger("nsdist").addFilter(Marks())
    t = time.perf_counter()
    record["rc"] = nsdist.cli.main(spec["argv"])
    record["main"] = time.perf_counter() - t
    record["ended"] = time.time()
    with open(spec["record"], "w") as f:
        json.dump(record, f)
    return 0


def _task_seconds(dask_scheduler=None) -> dict:
    """Per task kind (its key's prefix): {compute seconds summed over tasks, number of tasks}."""
    out = {}
    for name, prefix in dask_scheduler.task_prefixes.items():
        out[name] = {"seconds": prefix.all_durations.get("compute", 0.0),
                     "tasks": sum(prefix.state_counts.values())}
    return out


# ---------------------------------------------------------------- the parent: runs and table

def _busy_cpu() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _load() -> float:
    return os.getloadavg()[0]


def run_command(tree: str, argv: list[str], workdir: str, timed: bool = True) -> dict:
    """One ``nsdist`` command in a fresh process with PYTHONPATH=tree; its record and wall time."""
    rec_path = os.path.join(workdir, f"record-{time.monotonic_ns()}.json")
    spec = json.dumps({"argv": ["--log-format", "json", *argv], "record": rec_path})
    env = {k: v for k, v in os.environ.items() if not k.startswith("NSDIST_")}
    env["PYTHONPATH"] = tree
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec] if timed else \
        [sys.executable, "-m", "nsdist", "--log-format", "json", *argv]
    load, busy0, own0 = _load(), _busy_cpu(), _children_cpu()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.time() - t0
    own = _children_cpu() - own0
    others = max(0.0, _busy_cpu() - busy0 - own) / (wall * (os.cpu_count() or 1))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}) with {tree}:\n{proc.stderr[-3000:]}")
    rec = {}
    if timed:
        with open(rec_path) as f:
            rec = json.load(f)
        if rec["rc"] != 0:
            raise SystemExit(f"{' '.join(argv)} exited {rec['rc']} with {tree}:\n{proc.stderr[-3000:]}")
        rec["python start"] = rec["started"] - t0
        rec["exit"] = t0 + wall - rec["ended"]
    return {**rec, "wall": wall, "others": others, "load": load, "cpu": own}


def _epochs(rec: dict) -> list[dict]:
    return [x for x in rec["logs"] if x.get("stage") == "epoch"]


def breakdown(rec: dict, kind: str) -> list[tuple[str, float, bool]]:
    """(phase, seconds, training?) rows of one command, in the order they happen. The rows of
    a job's main path sum to its wall time (``other`` is what no timer covers)."""
    p, rows = rec["phases"], []
    add = lambda name, s, training=False: rows.append((name, s, training))  # noqa: E731
    add("python start (interpreter, until the command's first line)", rec["python start"])
    add("import nsdist + CLI", rec["import"])
    if kind == "text":
        add("demo: synthetic corpus (2M tokens)", p.get("synthetic corpus", 0.0))
    add("check inputs (client)", p.get("check inputs", 0.0))
    add("cluster start (LocalCluster: scheduler, 2 worker processes)", p.get("cluster start", 0.0))
    add("worker set-up (plugins; nsdist imported on the workers)", p.get("worker set-up", 0.0))
    add("workers read the input (client.run)", p.get("workers read the input", 0.0))
    if kind == "graph":
        add("graph: edges read, adjacency built", p.get("graph: edges read", 0.0))
        add("graph: walks + counting + vocabulary", p.get("graph: walks + counting", 0.0))
    else:
        add("counting + vocabulary", p.get("counting + vocabulary", 0.0))
    add("vocabulary digest (one task)", p.get("vocabulary digest", 0.0))
    add("encoding", p.get("encoding", 0.0))
    add("training set-up (tables, probe sample)", p.get("training set-up", 0.0))
    epochs = _epochs(rec)
    for e in epochs:
        add(f"epoch {e['epoch']} (wall, as the job reports it)", e["seconds"], True)
    add("checkpoint state files (client)", p.get("checkpoint state files (client)", 0.0))
    add("outputs (vectors, Parquet, vocab by row blocks)", p.get("outputs", 0.0))
    add("top-k table", p.get("outputs + top-k", 0.0) - p.get("outputs", 0.0))
    add("models freed (client.run)", p.get("models freed", 0.0))
    pub = p.get("publish (report, manifest, LATEST, checkpoints removed)", 0.0)
    add("report.html", p.get("report.html", 0.0))
    add("manifest + LATEST", p.get("manifest + LATEST", 0.0))
    add("checkpoints removed", pub - p.get("report.html", 0.0) - p.get("manifest + LATEST", 0.0))
    add("cluster shutdown", p.get("cluster shutdown", 0.0))
    if kind == "text":
        add("demo: load the run", p.get("demo: load the run", 0.0))
        add("demo: evaluation", p.get("demo: evaluation", 0.0))
    add("interpreter exit", rec["exit"])
    covered = sum(s for _, s, _ in rows)
    add("other (between the timed phases: epoch hand-over, demo's prints, ...)", rec["wall"] - covered)
    return rows


def task_rows(rec: dict) -> dict:
    """Compute seconds per task kind (summed over workers) of the job's Dask tasks."""
    return {k: v["seconds"] for k, v in rec.get("tasks", {}).items() if isinstance(v, dict)}


def _median_rows(recs: list[dict], kind: str) -> tuple[list[str], dict, list[bool]]:
    tables = [breakdown(r, kind) for r in recs]
    names = [n for n, _, _ in tables[0]]
    med = {n: statistics.median([dict((a, s) for a, s, _ in t).get(n, 0.0) for t in tables]) for n in names}
    return names, med, [tr for _, _, tr in tables[0]]


def _fixed(recs: list[dict]) -> tuple[float, float, float, float]:
    """Median (wall, training epochs, fixed share, CPU seconds)."""
    walls = [r["wall"] for r in recs]
    train = [sum(e["seconds"] for e in _epochs(r)) for r in recs]
    shares = [(w - t) / w for w, t in zip(walls, train)]
    return (statistics.median(walls), statistics.median(train), statistics.median(shares),
            statistics.median(r["cpu"] for r in recs))


def report(kind: str, results: dict[str, list[dict]], synth: dict[str, list[dict]] | None) -> str:
    trees = list(results)
    lines = [f"\n## {kind} demo: median of {len(results[trees[0]])} run(s) per tree (seconds)\n"]
    head = "| phase | " + " | ".join(trees) + (" | after / before |" if len(trees) == 2 else " |")
    lines += [head, "|" + " --- |" * (len(trees) + 1 + (len(trees) == 2))]
    meds = {t: _median_rows(results[t], kind) for t in trees}
    names = meds[trees[-1]][0]
    for n in names + [x for x in meds[trees[0]][0] if x not in names]:
        vals = [meds[t][1].get(n) for t in trees]
        cells = ["-" if v is None else f"{v:.2f}" for v in vals]
        ratio = ""
        if len(trees) == 2:
            ratio = f" {vals[1] / vals[0]:.2f} |" if vals[0] and vals[1] is not None and vals[0] > 0.05 else " |"
        lines.append(f"| {n} | " + " | ".join(cells) + " |" + ratio)
    fixed = {t: _fixed(results[t]) for t in trees}
    for label, i, fmt in (("**total (wall)**", 0, "{:.2f}"), ("training epochs", 1, "{:.2f}"),
                          ("**fixed share** (total - epochs) / total", 2, "{:.1%}"),
                          ("CPU seconds of the command's processes (client, scheduler, workers)", 3, "{:.2f}")):
        vals = [fixed[t][i] for t in trees]
        ratio = f" {vals[1] / vals[0]:.2f} |" if len(trees) == 2 and vals[0] else (" |" if len(trees) == 2 else "")
        lines.append(f"| {label} | " + " | ".join(fmt.format(v) for v in vals) + " |" + ratio)
    if len(trees) == 2:
        a, b = fixed[trees[0]], fixed[trees[1]]
        lines.append(f"| fixed seconds (total - epochs) | {a[0] - a[1]:.2f} | {b[0] - b[1]:.2f} | "
                     f"{(b[0] - b[1]) / (a[0] - a[1]):.2f} |")
    if synth:
        vals = [statistics.median(r["wall"] for r in synth[t]) for t in trees]
        ratio = f" {vals[1] / vals[0]:.2f} |" if len(trees) == 2 else ""
        lines.append("| (separate command) `nsdist synth --graph` wall | " + " | ".join(f"{v:.2f}" for v in vals)
                     + " |" + ratio)
    lines.append("\nTask compute seconds per kind (summed over the workers; inside the phases above):\n")
    kinds = sorted({k for t in trees for r in results[t] for k in task_rows(r)},
                   key=lambda k: -statistics.median(task_rows(r).get(k, 0.0) for r in results[trees[-1]]))
    lines += ["| task | " + " | ".join(trees) + " |", "|" + " --- |" * (len(trees) + 1)]
    for k in kinds:
        vals = [statistics.median(task_rows(r).get(k, 0.0) for r in results[t]) for t in trees]
        if max(vals) >= 0.01:
            lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    for t in trees:
        runs = results[t]
        lines.append(f"\n{t}: walls " + ", ".join(f"{r['wall']:.1f}" for r in runs) + "; others "
                     + ", ".join(f"{r['others']:.2f}" for r in runs) + "; load " + ", ".join(f"{r['load']:.2f}"
                                                                                          for r in runs))
        missing = sorted({m for r in runs for m in r.get("missing", [])})
        if missing:
            lines.append(f"{t}: not timed (no such function there): {', '.join(missing)}")
    return "\n".join(lines)


def _with_epochs(rec: dict, out: str) -> dict:
    """``rec`` with the epochs' seconds its run's manifest reports (a plain command's record)."""
    import glob

    (path,) = glob.glob(os.path.join(out, "runs", "*", "manifest.json"))
    with open(path) as f:
        rec["epochs"] = sum(e["seconds"] for e in json.load(f)["metrics"]["epochs"])
    return rec


def text_demo(tree: str, work: str, timed: bool = True) -> dict:
    d = tempfile.mkdtemp(dir=work)
    try:
        return _with_epochs(run_command(tree, ["demo", "--dir", d], work, timed), os.path.join(d, "out"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def graph_demo(tree: str, work: str, timed: bool = True) -> tuple[dict, dict]:
    d = tempfile.mkdtemp(dir=work)
    try:
        synth = run_command(tree, ["synth", "--graph", os.path.join(d, "graph"), "--seed", "1"], work, timed=False)
        job = run_command(tree, ["train", "--edges", os.path.join(d, "graph", "edges.parquet"), "--out",
                                 os.path.join(d, "out"), "--config", os.path.join(ROOT, "jobs", "graph.yaml")],
                          work, timed)
        return synth, _with_epochs(job, os.path.join(d, "out"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--before", help="another tree's sources (PYTHONPATH) to compare with, run interleaved")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each demo per tree")
    p.add_argument("--demos", default="text,graph", help="which demos: text, graph or both")
    p.add_argument("--json", help="write every run's record here")
    p.add_argument("--plain", action="store_true",
                   help="run the commands as they are, without this script's timers: only their wall time and "
                        "the epochs' seconds their manifests report (the fixed seconds with nothing added)")
    args = p.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    trees = ([os.path.abspath(args.before)] if args.before else []) + [ROOT]
    demos = args.demos.split(",")
    work = tempfile.mkdtemp(prefix="nsdist-fixed-")
    results = {d: {t: [] for t in trees} for d in demos}
    synths = {t: [] for t in trees}
    try:
        for t in trees:  # untimed: numba compiles into each tree's __pycache__ once
            for d in demos:
                text_demo(t, work, timed=False) if d == "text" else graph_demo(t, work, timed=False)
        for i in range(args.repeats):
            for d in demos:
                for t in trees:
                    if d == "text":
                        results[d][t].append(text_demo(t, work, timed=not args.plain))
                    else:
                        s, job = graph_demo(t, work, timed=not args.plain)
                        synths[t].append(s)
                        results[d][t].append(job)
                    r = results[d][t][-1]
                    print(f"run {i + 1} {d} {t}: {r['wall']:.1f} s, others {r['others']:.2f}, load {r['load']:.2f}",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "synth": synths}, f)
    print(f"cores {os.cpu_count()}; before: {trees[0] if len(trees) == 2 else '-'}; after: {trees[-1]}")
    for d in demos:
        print(plain_report(d, results[d]) if args.plain else report(d, results[d], synths if d == "graph" else None))
    return 0


def plain_report(kind: str, results: dict[str, list[dict]]) -> str:
    """The plain commands' medians per tree: wall, the epochs' seconds, and the rest (fixed)."""
    lines = [f"## {kind} demo, plain commands: median of {min(map(len, results.values()))} run(s) per tree (seconds)",
             "", "| tree | wall | epochs | fixed (wall - epochs) | fixed per run | others (max) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for tree, recs in results.items():
        fixed = [r["wall"] - r["epochs"] for r in recs]
        lines.append(f"| {tree} | {statistics.median(r['wall'] for r in recs):.2f} | "
                     f"{statistics.median(r['epochs'] for r in recs):.2f} | {statistics.median(fixed):.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in fixed)} | {max(r['others'] for r in recs):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
