"""The ``nsdist`` command.

Exit codes: 0 success, 2 usage or config error, 3 bad input data, 75 transient
infrastructure failure (worth a retry), 130 interrupted (SIGINT), 143 terminated (SIGTERM), 1
anything else.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
import time

from . import __version__, progress
from .errors import STOP, ConfigError, Interrupted, NsdistError

log = logging.getLogger("nsdist")


# What every LogRecord has; anything else on a record came as ``extra=`` fields.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields (``extra=``:
    epoch, loss, words_per_second, ...), so a log pipeline can chart a job without parsing text."""

    def format(self, record):
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}
        return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage(), **fields}, default=str)


class _TerminalHandler(logging.StreamHandler):
    """Log lines that do not cut into a progress bar: the bar is erased, the line written, the bar
    drawn again below it."""

    def emit(self, record):
        progress.clear_line()
        super().emit(record)
        progress.redraw()


def _setup_logging(fmt: str, verbose: bool) -> None:
    tty = fmt == "plain" and sys.stderr.isatty()
    progress.enable(tty)
    handler = _TerminalHandler(sys.stderr) if tty else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("nsdist")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with one line, like ConfigError
        raise ConfigError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with each option's default (where it has one worth showing) and the examples as written."""

    def _get_help_string(self, action):
        shown = action.default not in (None, False, [], (), argparse.SUPPRESS) and action.option_strings
        return f"{action.help} (default: %(default)s)" if shown and action.help else action.help


EXAMPLES = {
    "train": """examples:
  nsdist train --corpus 'data/*.txt.gz' --out runs/wiki --set dim=300 --set epochs=5
  nsdist train --config jobs/s3.yaml --scheduler tcp://scheduler:8786
  nsdist train --corpus s3://bucket/today/ --out s3://bucket/emb --init-from s3://bucket/emb
  nsdist train --resume runs/wiki/runs/20261130T080322Z-0fdfd8
  nsdist train --edges s3://bucket/graph/edges.parquet --out s3://bucket/nodes --set directed=false --set q=0.5""",
    "neighbors": "example:\n  nsdist neighbors runs/wiki king --topn 5",
    "recommend": "examples:\n  nsdist recommend runs/items sku-1042 sku-877 --topn 20\n"
                 "  nsdist recommend s3://bucket/items 1042 --include-seen",
    "evaluate": """examples:
  nsdist evaluate runs/wiki --analogies questions-words.txt --pairs wordsim353.tsv --json
  nsdist evaluate runs/clicks --sessions clicks/sessions.test.parquet --last 1 --k 10
  nsdist evaluate runs/graph --node-labels graph/labels.tsv --link-edges graph/edges.test.parquet \
      --train-edges graph/edges.parquet --train-ratios 0.1,0.5,0.9 --splits 10""",
    "runs": "examples:\n  nsdist runs runs/wiki\n  nsdist runs s3://bucket/emb --all",
    "info": "example:\n  nsdist info runs/wiki          (the run LATEST names)",
    "gc": "example:\n  nsdist gc s3://bucket/emb --keep 7 --dry-run",
    "synth": """examples:
  nsdist synth corpus.txt --tokens 5000000 --seed 1
  nsdist synth --sessions clicks --sessions-count 20000 --items 10000 --seed 1
      (clicks/sessions.parquet, clicks/sessions.test.parquet held out, clicks/items.tsv)
  nsdist synth --graph graph --nodes 10000 --communities 10 --seed 1
      (graph/edges.parquet, graph/edges.test.parquet held out, graph/labels.tsv)
  nsdist synth --graph roles --roles --format text
      (roles/edges.txt, roles/edges.test.txt, roles/labels.tsv, roles/roles.tsv)""",
    "demo": "example:\n  nsdist demo --dir /tmp/nsdist-demo --tokens 500000",
}


def _config_keys() -> str:
    """The config keys for ``train --help``: key, default and meaning, one per line."""
    from .config import keys

    rows = keys()
    width = max(len(k) for k, _, _ in rows)
    lines = [f"  {k:<{width}}  {d:<9} {h}" for k, d, h in rows]
    return ("config keys (--set KEY=VALUE, a YAML --config, or NSDIST_KEY variables; training keys also "
            "without 'train.'):\n" + "\n".join(lines))


SYNTH_TOKENS, SYNTH_SESSIONS, SYNTH_ITEMS = 1_000_000, 20_000, 10_000  # ``synth`` sizes
SYNTH_NODES = 10_000  # ``synth --graph``; its other defaults are GraphSpec's


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nsdist", description="Distributed skip-gram negative-sampling embeddings on Dask.",
                formatter_class=_Formatter,
                epilog="Run 'nsdist COMMAND --help' for a command's options and examples; 'nsdist demo' for a first run.")
    p.add_argument("--version", action="version", version=f"nsdist {__version__}")
    p.add_argument("--log-format", choices=("plain", "json"), default=os.environ.get("NSDIST_LOG_FORMAT", "plain"),
                   help="log lines as text, or one JSON object each (also NSDIST_LOG_FORMAT)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs, Dask's own, and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=_Formatter)  # defaults in every --help
    # The global options also work after the command (``nsdist train -v``).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-format", choices=("plain", "json"), default=argparse.SUPPRESS,
                        help="log lines as text (default), or one JSON object each")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logs, Dask's own, and tracebacks")

    tr = sub.add_parser("train", parents=[common], help="train embeddings and publish them under --out",
                        epilog=EXAMPLES["train"] + "\n\n" + _config_keys())
    tr.add_argument("--corpus", action="append", default=[], metavar="URL", help="file, glob or directory (repeatable)")
    tr.add_argument("--edges", action="append", default=[], metavar="URL",
                    help="a graph's edge list (Parquet src, dst[, weight] or text 'src dst [weight]' lines; "
                         "repeatable): node vectors from random walks over it, instead of a corpus")
    tr.add_argument("--save-walks", metavar="URL", help="graph jobs: also write the walks as text under URL")
    tr.add_argument("--out", metavar="URL", help="output URL: local path or s3://bucket/prefix")
    tr.add_argument("--config", metavar="YAML", help="job spec file")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    tr.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler (default: DASK_SCHEDULER_ADDRESS, "
                    "else an embedded LocalCluster)")
    tr.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per core)")
    tr.add_argument("--threads-per-worker", type=int, help="threads per LocalCluster worker (default: 1; more "
                    "share one model, faster but not bit-reproducible)")
    tr.add_argument("--dry-run", action="store_true",
                    help="print the plan (corpus, estimated vocabulary, shards, memory per worker, rounds) and "
                         "exit without training or writing anything")
    start = tr.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="RUN_URL", help="continue a failed run from its last checkpoint "
                       "(its corpus, output and training config are reused)")
    start.add_argument("--init-from", metavar="OUT", help="warm-start from a published model (<out> or a run URL)")

    nb = sub.add_parser("neighbors", parents=[common], epilog=EXAMPLES["neighbors"], help="nearest neighbours of a word in a published model")
    nb.add_argument("out", metavar="OUT", help="an output (its LATEST run) or a run URL")
    nb.add_argument("word")
    nb.add_argument("--topn", type=int, default=10, help="neighbours to print")

    rc = sub.add_parser("recommend", parents=[common], epilog=EXAMPLES["recommend"],
                        help="the items nearest to the mean of the given items' vectors in a published model")
    rc.add_argument("out", metavar="OUT", help="an output (its LATEST run) or a run URL")
    rc.add_argument("items", metavar="ITEM", nargs="+", help="the items seen (e.g. a session's clicks)")
    rc.add_argument("--topn", type=int, default=10, help="items to print")
    seen = rc.add_mutually_exclusive_group()
    seen.add_argument("--exclude-seen", dest="exclude_seen", action="store_true", default=True,
                      help="leave the given items out")
    seen.add_argument("--include-seen", dest="exclude_seen", action="store_false", default=argparse.SUPPRESS,
                      help="rank the given items too")

    ev = sub.add_parser("evaluate", parents=[common], epilog=EXAMPLES["evaluate"],
                        help="analogy accuracy, word-pair correlation, next-item prediction, node classification "
                             "and link prediction of a published model")
    ev.add_argument("out", metavar="OUT", help="an output (its LATEST run) or a run URL")
    ev.add_argument("--analogies", metavar="FILE", help="questions-words.txt format")
    ev.add_argument("--pairs", metavar="FILE", help="wordsim format: word1 word2 score")
    ev.add_argument("--clusters", metavar="FILE", help="word<TAB>label: planted-cluster precision@10")
    ev.add_argument("--restrict-vocab", type=int, default=300_000,
                    help="answer analogies and pairs among the most frequent words only")
    ev.add_argument("--sessions", metavar="FILE", help="held-out sessions (Parquet with an 'items' list column, "
                    "or text: one session per line): leave-last-item-out HR@K and NDCG@K, ranking every item "
                    "except the session's earlier ones")
    ev.add_argument("--last", type=int, default=1, metavar="N",
                    help="query = mean of the unit vectors of the last N known items before the target")
    ev.add_argument("--k", type=int, default=10, metavar="K", help="cut-off of HR@K and NDCG@K")
    ev.add_argument("--node-labels", metavar="FILE", help="node<TAB>label lines (a node on several lines: "
                    "multi-label): one-vs-rest logistic regression, Micro-F1 and Macro-F1 per train ratio")
    ev.add_argument("--train-ratios", default="0.1,0.5,0.9", metavar="R,R,...",
                    help="shares of the labelled nodes the classifier trains on")
    ev.add_argument("--splits", type=int, default=10, metavar="N", help="random splits per train ratio")
    ev.add_argument("--link-edges", metavar="FILE", help="held-out edges (Parquet src/dst, or text 'src dst [weight]' "
                    "lines): link prediction AUC against as many sampled non-edges")
    ev.add_argument("--train-edges", metavar="FILE", help="the training edges, never sampled as non-edges "
                    "(with --link-edges)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the node splits and the sampled non-edges")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    ru = sub.add_parser("runs", parents=[common], epilog=EXAMPLES["runs"], help="list the published runs under an output URL, newest first")
    ru.add_argument("out", metavar="OUT")
    ru.add_argument("--all", action="store_true",
                    help="also the runs never published (failed, interrupted, running), with their last "
                         "checkpoint and the command that resumes them")
    ru.add_argument("--json", action="store_true", help="print one JSON array")

    inf = sub.add_parser("info", parents=[common], epilog=EXAMPLES["info"],
                         help="a run's config, corpus statistics, per-epoch metrics and files "
                              "(OUT: the run LATEST names; an unpublished run: its last checkpoint)")
    inf.add_argument("run", metavar="OUT|RUN")
    inf.add_argument("--json", action="store_true", help="print one JSON object")

    gc = sub.add_parser("gc", parents=[common], epilog=EXAMPLES["gc"],
                        help="delete old published runs and abandoned unfinished ones (never LATEST's run)")
    gc.add_argument("out", metavar="OUT")
    gc.add_argument("--keep", type=int, required=True, metavar="N", help="published runs to keep, newest first")
    gc.add_argument("--abandoned-after", type=float, default=7.0, metavar="DAYS",
                    help="delete unpublished runs untouched for this long")
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")

    sy = sub.add_parser("synth", parents=[common], epilog=EXAMPLES["synth"],
                        help="write a synthetic corpus (or with --sessions a clickstream, with --graph a graph) "
                             "with planted structure and its ground truth")
    sy.add_argument("out_file", metavar="OUT_FILE", nargs="?", help="the text corpus to write")
    sy.add_argument("--tokens", type=int, help=f"text corpus size (default: {SYNTH_TOKENS})")
    sy.add_argument("--sessions", metavar="OUT_DIR", help="write a planted clickstream into OUT_DIR instead: "
                    "sessions.parquet (training), sessions.test.parquet (held out), items.tsv (ground truth)")
    sy.add_argument("--sessions-count", type=int, metavar="N",
                    help=f"sessions in all, the latest tenth held out (default: {SYNTH_SESSIONS})")
    sy.add_argument("--items", type=int, metavar="N", help=f"catalogue size (default: {SYNTH_ITEMS})")
    sy.add_argument("--graph", metavar="OUT_DIR", help="write a planted graph into OUT_DIR instead: "
                    "edges.parquet (training), edges.test.parquet (held out), labels.tsv (communities)")
    sy.add_argument("--nodes", type=int, metavar="N", help=f"graph nodes (default: {SYNTH_NODES})")
    sy.add_argument("--communities", type=int, metavar="C", help="planted communities (default: 10)")
    sy.add_argument("--ratio", type=float, metavar="R",
                    help="in/out edge probability ratio of the block model (default: 20)")
    sy.add_argument("--mean-degree", type=float, metavar="K", help="mean degree of the block model (default: 10)")
    sy.add_argument("--test-fraction", type=float, metavar="F", help="share of the edges held out (default: 0.1)")
    sy.add_argument("--roles", action="store_true", help="a ring of communities whose nodes are hubs, bridges "
                    "or periphery (also writes roles.tsv) instead of the block model")
    sy.add_argument("--format", choices=("parquet", "text"), help="edge files: Parquet src/dst int64, or text "
                    "'src dst' lines (edges.txt, edges.test.txt) (default: parquet)")
    sy.add_argument("--seed", type=int, default=1, help="same seed, same output")

    de = sub.add_parser("demo", parents=[common], epilog=EXAMPLES["demo"],
                        help="synthesise a corpus, train on a LocalCluster, evaluate, show neighbours")
    de.add_argument("--dir", default="demo", help="working directory")
    de.add_argument("--tokens", type=int, default=2_000_000, help="size of the synthetic corpus")
    de.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (see 'nsdist train --help')")
    de.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    return p


def cmd_train(args) -> int:
    from .config import load_config, parse_set
    from .cluster import session
    from .pipeline import check_inputs, resume_config, train

    cfg = load_config(
        args.config, parse_set(args.set), corpus=tuple(args.corpus), out=args.out, edges=tuple(args.edges),
        save_walks=args.save_walks, **{"cluster.scheduler": args.scheduler, "cluster.workers": args.workers,
           "cluster.threads_per_worker": args.threads_per_worker},
    )
    if args.resume:
        cfg = resume_config(args.resume, cfg)
    files = check_inputs(cfg, args.init_from, args.resume)
    with session(cfg.cluster, quiet=not _VERBOSE) as client:
        if args.dry_run:
            from .pipeline import dry_run

            _print_plan(dry_run(cfg, client, resume=args.resume, init_from=args.init_from, files=files))
            return 0
        _log_dashboard(client)
        result = train(cfg, client, resume=args.resume, init_from=args.init_from, files=files)
    print(result.run_url)
    return 0


PEAK = 2.0  # a worker's peak over its model and shards (measured 1.4x-2x, docs/scaling.md)


def _print_plan(plan: dict) -> None:
    c, s = plan["corpus"], plan["sample"]
    print("dry run: nothing trained, nothing written")
    print(f"corpus: {c['files']} file(s), {c['bytes'] / 1e6:,.1f} MB in {c['blocks']} block(s)")
    exact = s["fraction"] >= 1
    g = plan.get("graph")
    if g:
        print(f"graph: {g['nodes']:,} nodes, {g['edges']:,} directed edges{' (weighted)' if g['weighted'] else ''}; "
              f"its adjacency takes {g['adjacency_bytes'] / 1e6:,.1f} MB on every worker")
        print(f"walks: {g['walks']:,} of up to {g['walk_length']} nodes = up to {s['tokens']:,} tokens; "
              f"vocabulary up to {s['vocab_size']:,} nodes")
    else:
        print(f"{'counted' if exact else 'estimated from'} {s['blocks']} block(s) ({s['fraction']:.0%} of the corpus): "
              f"{'' if exact else 'about '}{s['tokens']:,} tokens, vocabulary {'' if exact else 'about '}"
              f"{s['vocab_size']:,} words")
    print(f"model: {s['vocab_size']:,} words x dim {plan['dim']} x 2 (input, output) float32 = "
          f"{plan['model_bytes'] / 1e6:,.1f} MB; {plan['models']} model(s), one per worker")
    print(f"rounds: {plan['rounds_per_epoch']} per epoch x {plan['epochs']} epoch(s); each averages the "
          f"{plan['sync_rows'] or 'all'} most frequent rows or more, all rows at each epoch's end")
    print(f"{plan['shards']} shard(s) over {len(plan['workers'])} worker(s):")
    for w in plan["workers"]:
        need, limit = w["bytes"], w["memory_limit"]
        verdict = ("no memory limit" if not limit else
                   f"of {limit / 1e9:,.1f} GB: {'fits' if PEAK * need <= limit else 'DOES NOT FIT'}")
        print(f"  {w['address']}: shards {', '.join(map(str, w['shards'])) or 'none'}; about {need / 1e6:,.1f} MB "
              f"for its model{', the adjacency' if g else ''} and shards, up to {PEAK * need / 1e6:,.1f} MB at peaks, "
              f"{verdict}")


def _log_dashboard(client) -> None:
    """The dashboard link, where the dashboard can be served: Dask serves it only with bokeh."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        log.info("dashboard: not served without bokeh; pip install 'nsdist[dashboard]' to watch the cluster")
    else:
        log.info("dashboard: %s", client.dashboard_link)



def cmd_neighbors(args) -> int:
    from .outputs import load

    if args.topn < 1:
        raise ConfigError(f"--topn must be >= 1, got {args.topn}")
    emb = load(args.out)
    for word, score in emb.most_similar(args.word, topn=args.topn):
        print(f"{word}\t{score:.4f}")
    return 0


def cmd_recommend(args) -> int:
    from .outputs import load

    if args.topn < 1:
        raise ConfigError(f"--topn must be >= 1, got {args.topn}")
    emb = load(args.out)
    for item, score in emb.recommend(args.items, topn=args.topn, exclude_seen=args.exclude_seen):
        print(f"{item}\t{score:.4f}")
    return 0


def _print_report(report: dict) -> None:
    print(f"run {report['run_id']}: {report['vocab_size']} words")
    if "analogies" in report:
        a = report["analogies"]
        print(f"analogy accuracy: {a['accuracy']:.4f} ({a['correct']}/{a['total']}, {a['oov']} skipped as unknown)")
    if "pairs" in report:
        s = report["pairs"]
        print(f"word-pair Spearman: {s['spearman']:.4f} ({s['pairs']} pairs, {s['oov']} skipped as unknown)")
    if "cluster_precision" in report:
        print(f"cluster precision@10: {report['cluster_precision']:.4f}")
    if "sessions" in report:
        s, k = report["sessions"], report["sessions"]["k"]
        print(f"next item (leave-last-out, query of the last {s['last']}): HR@{k} {s['hit_rate']:.4f}, "
              f"NDCG@{k} {s['ndcg']:.4f} ({s['hits']} hits in {s['sessions']} sessions; misses include {s['oov']} "
              f"unknown targets and {s['skipped']} without a known item before the target; {s['too_short']} "
              "shorter than 2 items left out)")
    if "node_classification" in report:
        _print_node_classification(report["node_classification"])
    if "link_prediction" in report:
        lp = report["link_prediction"]
        hadamard = "n/a" if lp["auc_hadamard"] is None else f"{lp['auc_hadamard']:.4f}"
        print(f"link prediction: AUC cosine {lp['auc_cosine']:.4f}, Hadamard+LR {hadamard} ({lp['positives']} "
              f"held-out edges against {lp['negatives']} sampled non-edges among {lp['nodes']} nodes; "
              f"{lp['oov']} edges without a vector and {lp['dropped']} self-loops or repeats left out"
              f"{'' if lp['train_edges'] else '; no --train-edges: a training edge may be sampled as a non-edge'})")


def _print_node_classification(nc: dict) -> None:
    kind = "multi-label, top-k" if nc["multi_label"] else "single-label"
    print(f"node classification ({kind}, one-vs-rest logistic regression on {'unit' if nc['normalized'] else 'raw'} "
          f"vectors; {nc['nodes']} nodes, {nc['labels']} labels, {nc['missing']} labelled nodes without a vector "
          f"left out; mean ± std over {nc['splits']} splits):")
    print("  train ratio  Micro-F1         Macro-F1")
    for r in nc["ratios"]:
        print(f"  {r['train_ratio']:<11g}  {r['micro_f1']:.4f} ± {r['micro_f1_std']:.4f}  "
              f"{r['macro_f1']:.4f} ± {r['macro_f1_std']:.4f}")


def _train_ratios(text: str) -> list[float]:
    """'0.1,0.5' -> [0.1, 0.5]; ConfigError unless every ratio is in (0, 1)."""
    try:
        ratios = [float(r) for r in text.split(",")]
    except ValueError:
        ratios = []
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise ConfigError(f"--train-ratios takes comma-separated shares in (0, 1), e.g. 0.1,0.5,0.9; got {text!r}")
    return ratios


def cmd_evaluate(args) -> int:
    from .outputs import load

    if not (args.analogies or args.pairs or args.clusters or args.sessions or args.node_labels or args.link_edges):
        raise ConfigError("nothing to evaluate: pass --analogies FILE, --pairs FILE, --clusters FILE, "
                          "--sessions FILE, --node-labels FILE and/or --link-edges FILE")
    for flag, value in (("--last", args.last), ("--k", args.k), ("--splits", args.splits)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.train_edges and not args.link_edges:
        raise ConfigError("--train-edges only keeps known edges out of link prediction's non-edges: "
                          "add --link-edges FILE (the held-out edges)")
    ratios = _train_ratios(args.train_ratios)
    from .evaluate import evaluate_files

    emb = load(args.out)
    report = evaluate_files(emb, args.analogies, args.pairs, args.clusters, args.restrict_vocab,
                            args.sessions, args.last, args.k)
    if args.node_labels or args.link_edges:
        from .evaluate_graph import evaluate_graph_files

        report.update(evaluate_graph_files(emb, args.node_labels, args.link_edges, args.train_edges, ratios,
                                           args.splits, args.seed))
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        _print_report(report)
    return 0


def _absolute(url: str) -> str:
    return url if "://" in url else os.path.abspath(url)


def cmd_runs(args) -> int:
    from . import checkpoint
    from .outputs import list_runs

    runs = list_runs(args.out, unpublished=args.all)
    for r in runs:
        if not r.get("published", True):
            state = checkpoint.latest(r["url"])
            r["checkpoint_epoch"] = state["epoch"] if state else None
            r["resume"] = f"nsdist train --resume {_absolute(r['url'])}"
    if args.json:
        print(json.dumps(runs, indent=2, sort_keys=True))
        return 0
    for r in runs:
        if not r.get("published", True):
            where = f"checkpoint after epoch {r['checkpoint_epoch']}" if r["checkpoint_epoch"] else "no checkpoint"
            print(f"  {r['run_id']}  {r.get('created') or '?'}  unpublished, {where}; resume: {r['resume']}")
            continue
        size = f"{r['bytes'] / 1e6:.1f} MB" if r.get("bytes") is not None else "?"
        note = f"  [{r['error']}]" if r.get("error") else ""
        print(f"{'*' if r['latest'] else ' '} {r['run_id']}  {r.get('created') or '?'}  "
              f"{r.get('vocab_size') or '?'} words  dim {r.get('dim') or '?'}  {size}{note}")
    if not runs:
        log.info("no published runs under %s", args.out)
    return 0


def run_info(url: str) -> dict:
    """What ``nsdist info`` shows of a run.

    Parameters
    ----------
    url : str
        A run (``<out>/runs/<run_id>``, published or not) or an output (``<out>``: the run LATEST
        names).

    Returns
    -------
    dict
        ``report.summary`` of a published run; ``report.unpublished_summary`` of a run that was
        claimed and never published (its config, last checkpoint and resume command).

    Raises
    ------
    DataError
        Nothing there, or nothing published yet under an output (the message says how to list
        its unfinished runs).
    """
    from . import checkpoint, storage
    from .errors import DataError
    from .outputs import read_latest, read_manifest, resolve_run
    from .report import summary, unpublished_summary

    url = url.rstrip("/") or url
    published = storage.exists(storage.join(url, "manifest.json"))
    if not published and storage.exists(storage.join(url, "_claim.json")):
        claim = storage.read_json(storage.join(url, "_claim.json"))
        if not isinstance(claim, dict):
            raise DataError(f"{storage.join(url, '_claim.json')!r} is not a run claim: the run is corrupt")
        return unpublished_summary({"run_id": url.rsplit("/", 1)[-1], **claim}, checkpoint.latest(url),
                                   _absolute(url), f"nsdist train --resume {_absolute(url)}")
    if not published and storage.exists(storage.join(url, "runs")) and read_latest(url) is None:
        raise DataError(f"nothing published under {url!r} yet; list its unfinished runs with: nsdist runs {url} --all")
    run = resolve_run(url)
    return summary(read_manifest(run), _absolute(run))


def _print_epochs(epochs: list[dict]) -> None:
    if not epochs:
        return
    print(f"{'epoch':>5}  {'loss':>8}  {'words/s':>12}  {'seconds':>8}  {'merge MB':>9}  {'merge s':>8}")
    for e in epochs:
        mb = None if e["merge_bytes"] is None else e["merge_bytes"] / 1e6
        cells = [(e["loss"], ".4f"), (e["words_per_second"], ",.0f"), (e["seconds"], ".2f"), (mb, ".2f"),
                 (e["merge_seconds"], ".3f")]
        print(f"{e['epoch']:>5}  " + "  ".join(f"{'-' if v is None else format(v, f):>{w}}"
                                              for (v, f), w in zip(cells, (8, 12, 8, 9, 8))))


def _print_corpus(c: dict) -> None:
    def n(key):
        return f"{c[key]:,}" if isinstance(c.get(key), int) else "?"

    print(f"corpus: {n('files')} file(s), {n('bytes')} bytes, {n('sentences')} sentences, {n('raw_tokens')} tokens; "
          f"vocabulary {n('vocab_size')} words (of {n('distinct_words')} distinct) covering {n('vocab_tokens')} "
          f"tokens; {n('shards')} shard(s)")


def _print_info(info: dict) -> None:
    from .report import flatten

    if info["published"]:
        print(f"run {info['run_id']}, published {info.get('created') or '?'}: {info['url']}")
        _print_corpus(info["corpus"])
        if info.get("graph"):
            g = info["graph"]
            examples = f" (e.g. {', '.join(map(str, g['isolated_examples'][:5]))})" if g.get("isolated_examples") else ""
            print(f"graph: {g['nodes']:,} nodes, {g['edges']:,} directed edges{', weighted' if g['weighted'] else ''}, "
                  f"{g['walks']:,} walks; {g['isolated_nodes']:,} node(s) without edges{examples}, "
                  f"{g['dead_ends']:,} dead end(s)")
    else:
        where = f"checkpoint after epoch {info['checkpoint_epoch']}" if info["checkpoint_epoch"] else "no checkpoint"
        print(f"run {info['run_id']}, unpublished ({where}): {info['url']}")
    _print_epochs(info["epochs"])
    if info.get("timings"):
        print("timings: " + ", ".join(f"{k[:-8]} {v:.2f} s" if k.endswith("_seconds") and isinstance(v, (int, float))
                                      else f"{k.replace('_', ' ')} {v}" for k, v in info["timings"].items()))
    print("config:")
    for key, value in flatten(info["config"]):
        print(f"  {key} = {value}")
    if info["published"]:
        print("files:")
        for f in info["files"]:
            print(f"  {f['name']:<16} {f['size']:>14,}" if isinstance(f["size"], int) else f"  {f['name']}")
    else:
        print(f"resume: {info['resume']}")


def cmd_info(args) -> int:
    info = run_info(args.run)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        _print_info(info)
    return 0


def cmd_gc(args) -> int:
    import datetime

    from .outputs import gc

    if args.abandoned_after < 0:
        raise ConfigError(f"--abandoned-after must be >= 0 days, got {args.abandoned_after}")
    deleted = gc(args.out, args.keep, abandoned_after=datetime.timedelta(days=args.abandoned_after),
                 dry_run=args.dry_run)
    for url in deleted:
        print(f"{'would delete' if args.dry_run else 'deleted'} {url}")
    log.info("%s %d run(s) under %s", "would delete" if args.dry_run else "deleted", len(deleted), args.out)
    return 0


def _synth_sessions(args) -> int:
    from .synth_sessions import generate_sessions

    if args.out_file or args.tokens is not None:
        raise ConfigError("--sessions OUT_DIR writes a clickstream: drop OUT_FILE and --tokens "
                          "(sizes: --sessions-count, --items)")
    sessions = SYNTH_SESSIONS if args.sessions_count is None else args.sessions_count
    items = SYNTH_ITEMS if args.items is None else args.items
    if sessions < 2 or items < 50:
        raise ConfigError(f"need --sessions-count >= 2 and --items >= 50 (one per planted group), "
                          f"got {sessions} and {items}")
    files = generate_sessions(args.sessions, sessions=sessions, items=items, seed=args.seed)
    print(f"wrote {files.train_sessions} training sessions ({files.clicks} clicks) to {files.train}")
    print(f"held out: {files.test_sessions} sessions in {files.test}")
    print(f"ground truth: {files.items}")
    return 0


_GRAPH_FLAGS = (("--nodes", "nodes"), ("--communities", "communities"), ("--ratio", "ratio"),
                ("--mean-degree", "mean_degree"), ("--test-fraction", "test_fraction"), ("--roles", "roles"),
                ("--format", "format"))


def _graph_spec(args):
    """The GraphSpec the ``synth --graph`` flags ask for; ConfigError naming a bad flag."""
    from .synth_graph import GraphSpec

    given = {key: getattr(args, key) for key in ("communities", "ratio", "mean_degree", "test_fraction")
             if getattr(args, key) is not None}
    checks = {"communities": (lambda v: v >= (3 if args.roles else 2), ">= 3 with --roles" if args.roles else ">= 2"),
              "ratio": (lambda v: v >= 1, ">= 1"), "mean_degree": (lambda v: v > 0, "> 0"),
              "test_fraction": (lambda v: 0 <= v < 1, "in [0, 1)")}
    for key, value in given.items():
        ok, need = checks[key]
        if not ok(value):
            raise ConfigError(f"--{key.replace('_', '-')} must be {need}, got {value}")
    return GraphSpec(**given)


def _synth_graph(args) -> int:
    from .synth_graph import generate_graph

    if args.out_file or args.tokens is not None or args.sessions or args.sessions_count is not None \
            or args.items is not None:
        raise ConfigError("--graph OUT_DIR writes a graph: drop OUT_FILE, --tokens, --sessions, --sessions-count "
                          "and --items (sizes: --nodes, --communities)")
    if args.roles and (args.ratio is not None or args.mean_degree is not None):
        raise ConfigError("--ratio and --mean-degree shape the block model, which --roles replaces: drop them")
    spec = _graph_spec(args)
    nodes = SYNTH_NODES if args.nodes is None else args.nodes
    try:
        files = generate_graph(args.graph, nodes=nodes, seed=args.seed, spec=spec, roles=args.roles,
                               fmt=args.format or "parquet")
    except ValueError as e:  # sizes that do not fit together (nodes per community, density)
        raise ConfigError(f"{e}; change --nodes, --communities, --mean-degree or --test-fraction") from None
    print(f"wrote {files.nodes} nodes and {files.train_edges} training edges to {files.train}")
    print(f"held out: {files.test_edges} edges in {files.test}")
    print(f"ground truth: {' '.join(p for p in (files.labels, files.roles) if p)}")
    return 0


def cmd_synth(args) -> int:
    from .synth import generate

    if args.graph:
        return _synth_graph(args)
    given = [flag for flag, key in _GRAPH_FLAGS if getattr(args, key) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} shape a graph: add --graph OUT_DIR")
    if args.sessions:
        return _synth_sessions(args)
    if not args.out_file:
        raise ConfigError("pass OUT_FILE (a text corpus) or --sessions OUT_DIR (a clickstream), or --graph OUT_DIR "
                          "(a graph)")
    if args.sessions_count is not None or args.items is not None:
        raise ConfigError("--sessions-count and --items size a clickstream: add --sessions OUT_DIR")
    files = generate(args.out_file, tokens=SYNTH_TOKENS if args.tokens is None else args.tokens, seed=args.seed)
    print(f"wrote {files.tokens} tokens to {files.corpus}")
    print(f"ground truth: {files.analogies} {files.clusters} {files.pairs}")
    return 0


def cmd_demo(args) -> int:
    from . import evaluate
    from .config import load_config, parse_set
    from .outputs import load
    from .cluster import session
    from .pipeline import train
    from .synth import generate

    os.makedirs(args.dir, exist_ok=True)
    files = generate(os.path.join(args.dir, "corpus.txt"), tokens=args.tokens, seed=1)
    log.info("synthetic corpus: %d tokens in %s", files.tokens, files.corpus)
    cfg = load_config(None, parse_set(args.set), corpus=(files.corpus,), out=os.path.join(args.dir, "out"),
                      **{"cluster.workers": args.workers})
    with session(cfg.cluster, quiet=not _VERBOSE) as client:
        _log_dashboard(client)
        result = train(cfg, client)
    emb = load(cfg.out)
    print(f"\npublished {result.run_url}")
    for e in result.manifest["metrics"]["epochs"]:
        print(f"epoch {e['epoch']}: loss {e['loss']:.4f}, {e['words_per_second']:,.0f} words/s")
    _print_report(evaluate.evaluate_files(emb, files.analogies, files.pairs, files.clusters))
    for word in _demo_words(files.clusters, emb):
        neigh = ", ".join(f"{w} {s:.2f}" for w, s in emb.most_similar(word, topn=5))
        print(f"neighbours of {word}: {neigh}")
    print(f"\nnext: nsdist neighbors {cfg.out} WORD  |  nsdist evaluate {cfg.out} --analogies {files.analogies}")
    return 0


def _demo_words(clusters_url: str, emb, n: int = 3) -> list[str]:
    """One word from each of the first n planted clusters."""
    from . import storage
    from .evaluate import read_clusters

    seen, words = set(), []
    for word, label in read_clusters(storage.lines(clusters_url)).items():
        if label not in seen and word in emb:
            seen.add(label)
            words.append(word)
    return words[:n]


COMMANDS = {"train": cmd_train, "neighbors": cmd_neighbors, "recommend": cmd_recommend, "evaluate": cmd_evaluate,
            "synth": cmd_synth, "demo": cmd_demo, "runs": cmd_runs, "info": cmd_info, "gc": cmd_gc}


_TERMINATED = []  # set when SIGTERM (Kubernetes evicting the pod) stopped the job


_VERBOSE = []  # set by -v: Dask's own logs stay on while a job stops


def _quiet_dask() -> None:
    """Dask's complaints while a job stops or its cluster closes (tasks cut short, heartbeats that
    miss a closing scheduler, a cancelled wait) are not news once the job has ended."""
    if not _VERBOSE:
        from .cluster.client import DASK_LOGGERS

        for name in DASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _on_signal(signum, frame):
    # SIGTERM stops the way Ctrl-C does: the job cleans up and says how to resume (exit 143).
    if signum == signal.SIGTERM:
        _TERMINATED.append(signum)
    STOP.set()
    _quiet_dask()  # at once: the wait this interrupts logs its own traceback as it unwinds
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    """Python prints an exception raised where it cannot propagate (in a ``__del__``) with its
    traceback. The stop request's KeyboardInterrupt can land there: the stop is not lost
    (``STOP``), and the traceback is not news."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and STOP.is_set():
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        _parser().print_help()
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(s, _on_signal) for s in signals] if in_main_thread else []
    hook = sys.unraisablehook
    sys.unraisablehook = _unraisable
    try:
        return _run(argv)
    finally:
        sys.unraisablehook = hook
        for sig, handler in zip(signals, previous):  # main() from Python leaves the caller's handlers
            signal.signal(sig, handler)
        _TERMINATED.clear()
        _VERBOSE.clear()
        progress.enable(False)
        STOP.clear()


def _run(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        _setup_logging(args.log_format, args.verbose)
        if args.verbose:
            _VERBOSE.append(True)
        return COMMANDS[args.command](args)
    except Interrupted as e:
        print(f"nsdist: {e}", file=sys.stderr)
        return 143 if _TERMINATED else e.exit_code
    except NsdistError as e:
        print(f"nsdist: error: {e}", file=sys.stderr)
        return e.exit_code
    except (FileNotFoundError, PermissionError) as e:
        print(f"nsdist: error: {e}; check the URL and the credentials", file=sys.stderr)
        return 3 if isinstance(e, FileNotFoundError) else 2
    except KeyboardInterrupt:
        print("nsdist: interrupted", file=sys.stderr)
        return 143 if _TERMINATED else 130
    except Exception as e:  # one line for users; the traceback with --verbose
        log.debug("unexpected error", exc_info=True)
        print(f"nsdist: error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
