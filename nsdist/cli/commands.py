"""What each ``nsdist`` command does, and how it prints its results."""

from __future__ import annotations

import json
import logging
import os

from ..errors import ConfigError, OutOfMemory
from .logs import VERBOSE
from .parser import SYNTH_ITEMS, SYNTH_NODES, SYNTH_SESSIONS, SYNTH_TOKENS

log = logging.getLogger("nsdist")


def cmd_train(args) -> int:
    from ..config import load_config, parse_set

    cfg = load_config(
        args.config, parse_set(args.set), corpus=tuple(args.corpus), out=args.out, edges=tuple(args.edges),
        save_walks=args.save_walks, **{"cluster.scheduler": args.scheduler, "cluster.workers": args.workers,
           "cluster.threads_per_worker": args.threads_per_worker},
    )
    _local_workers_first(cfg)
    from ..api import run

    if args.dry_run:
        _print_plan(run(cfg, resume=args.resume, init_from=args.init_from, quiet=not VERBOSE, dry_run=True))
        return 0
    result = run(cfg, resume=args.resume, init_from=args.init_from, quiet=not VERBOSE, connected=_log_dashboard)
    print(result.run_url)
    return 0


def _local_workers_first(cfg) -> None:
    """A job that will start a local cluster has its workers' fork server (started from the
    command line, cli._local_workers_early, or now), before this process imports the library
    (forkserver.py): both import at once, on two cores. One whose config names a scheduler has
    none."""
    from .. import forkserver

    if cfg.cluster.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS"):
        forkserver.stop()
    else:
        forkserver.start()


def _print_plan(plan: dict) -> None:
    from ..layout import EXCHANGE_BYTES

    c, s = plan["corpus"], plan["sample"]
    print("dry run: nothing trained, nothing written")
    print(f"corpus: {c['files']} file(s), {c['bytes'] / 1e6:,.1f} MB in {c['blocks']} block(s)")
    exact = s["fraction"] >= 1
    g = plan.get("graph")
    if g:
        where = (f"takes {g['adjacency_bytes'] / 1e6:,.1f} MB on every worker" if g["layout"] == "replicated" else
                 f"({g['adjacency_bytes'] / 1e6:,.1f} MB) is cut into node ranges of up to "
                 f"{g['adjacency_bytes_per_worker'] / 1e6:,.1f} MB, one per worker")
        print(f"graph: {g['nodes']:,} nodes, {g['edges']:,} directed edges{' (weighted)' if g['weighted'] else ''}; "
              f"layout {g['layout']}: its adjacency {where}")
        print(f"walks: {g['walks']:,} of up to {g['walk_length']} nodes = up to {s['tokens']:,} tokens; "
              f"vocabulary up to {s['vocab_size']:,} nodes")
    else:
        print(f"{'counted' if exact else 'estimated from'} {s['blocks']} block(s) ({s['fraction']:.0%} of the corpus): "
              f"{'' if exact else 'about '}{s['tokens']:,} tokens, vocabulary {'' if exact else 'about '}"
              f"{s['vocab_size']:,} words")
    print(f"model: {s['vocab_size']:,} words x dim {plan['dim']} x 2 (input, output) float32 = "
          f"{plan['model_bytes'] / 1e6:,.1f} MB; {plan['models']} model(s), one per worker")
    lay = plan["layout"]
    why = {"auto": " (auto: the replicated model fits every worker)" if lay["chosen"] == "replicated" else
           " (auto: the replicated model does not fit the workers' memory)"}.get(lay["asked"], " (train.layout)")
    print(f"layout: {lay['chosen']}{why}; replicated, a worker holds all {s['vocab_size']:,} rows "
          f"({lay['replicated_bytes'] / 1e6:,.1f} MB with its shards); partitioned, about {lay['rows_per_worker']:,} "
          f"rows ({lay['held_rows']:,} its shards use, about {lay['head_rows']:,} of them used by every model, "
          f"{_groups(lay)}and the masters of 1/{plan['models']} of the rows, and up to {EXCHANGE_BYTES // 2**20} MiB "
          f"of rows in transit; {lay['partitioned_bytes'] / 1e6:,.1f} MB with its shards)")
    ends = ("each epoch's end" if lay["chosen"] != "partitioned" or lay["row_groups"] == 1 else
            f"the end of each of an epoch's {lay['row_groups']} groups of rounds")
    grown = (f" (not {plan['rounds_asked']}: as many as the groups a model's rows need to fit)"
             if plan["rounds_per_epoch"] != plan["rounds_asked"] else "")
    print(f"rounds: {plan['rounds_per_epoch']} per epoch{grown} x {plan['epochs']} epoch(s); each averages the "
          f"{plan['sync_rows'] or 'all'} most frequent rows or more, all rows at {ends}")
    warm = plan.get("warm_start")
    if warm:
        print(f"warm start: about {warm['new_words']:,} new words (this vocabulary less the parent's "
              f"{warm['parent_vocab_size']:,}; more where the corpus drops the parent's words) start from their known "
              f"neighbours: up to {warm['peak'] / 1e6:,.1f} MB on a worker while they are built")
    print(f"{plan['shards']} shard(s) over {len(plan['workers'])} worker(s):")
    held = "" if not g else ", the adjacency" if g["layout"] == "replicated" else ", its adjacency range"
    for w in plan["workers"]:
        need, peak, limit = w["bytes"], w["peak"], w["memory_limit"]
        verdict = ("no memory limit" if not limit else
                   f"of {limit / 1e9:,.1f} GB: {'fits' if peak <= limit else 'DOES NOT FIT'}")
        print(f"  {w['address']}: shards {', '.join(map(str, w['shards'])) or 'none'}; about {need / 1e6:,.1f} MB "
              f"for its model{held} and shards, up to {peak / 1e6:,.1f} MB at peaks, "
              f"{verdict}; its process holds {w['process'] / 1e6:,.0f} MB besides")
    limits = [w["memory_limit"] for w in plan["workers"] if w["memory_limit"]]
    worst = max((w["peak"] for w in plan["workers"]), default=0)
    if limits and worst > min(limits):
        fix = ("add workers, give them more memory" if lay["chosen"] == "partitioned" else
               "set train.layout=auto or partitioned, give the workers more memory")
        when = "at training's peaks"
        if warm and warm["peak"] >= worst:
            when, fix = "while its warm start is built", fix + ", start new words at random (train.warm_new=random)"
        raise OutOfMemory(f"the job does not fit in the {lay['chosen']} layout: a worker needs up to "
                          f"{worst / 1e6:,.1f} MB {when}, more than the workers' memory limit of "
                          f"{min(limits) / 1e6:,.1f} MB; {fix}, or train a smaller model (a lower dim, a higher "
                          "min_count, or max_vocab)")


def _groups(lay: dict) -> str:
    """The dry run's words on the groups of rounds a partitioned model holds its rows for."""
    if lay["row_groups"] == 1:
        return "held for the whole epoch, "
    return f"held {lay['group_rows']:,} at a time for each of {lay['row_groups']} groups of rounds, "


def _log_dashboard(client) -> None:
    """The dashboard link, where the dashboard can be served: Dask serves it only with bokeh."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        log.info("dashboard: not served without bokeh; pip install 'nsdist[dashboard]' to watch the cluster")
    else:
        log.info("dashboard: %s", client.dashboard_link)



def cmd_neighbors(args) -> int:
    from ..runs import load

    if args.topn < 1:
        raise ConfigError(f"--topn must be >= 1, got {args.topn}")
    emb = load(args.out)
    for word, score in emb.most_similar(args.word, topn=args.topn):
        print(f"{word}\t{score:.4f}")
    return 0


def _read_candidates(url: str) -> list[str]:
    """The item ids of a candidates file (whitespace-separated; '-': standard input)."""
    import sys

    from .. import storage
    from ..errors import DataError

    try:
        items = sys.stdin.read().split() if url == "-" else "".join(storage.lines(url)).split()
    except UnicodeDecodeError as e:
        raise DataError(f"candidates file {url!r} is not UTF-8 text ({e}); write one item id per line") from None
    if not items:
        raise DataError(f"candidates file {url!r} holds no items; write the ids of the items to rank, one per line")
    return items


def cmd_recommend(args) -> int:
    import numpy as np

    from ..runs import load

    if args.topn is not None and args.topn < 1:
        raise ConfigError(f"--topn must be >= 1, got {args.topn}")
    emb = load(args.out)
    if not args.candidates:
        for item, score in emb.recommend(args.items, topn=args.topn or 10, exclude_seen=args.exclude_seen,
                                         scoring=args.scoring):
            print(f"{item}\t{score:.4f}")
        return 0
    candidates = _read_candidates(args.candidates)
    for item in args.items:
        if item not in emb.key_to_index:
            log.warning("item %r is not in the model: left out of the history", item)
    scores = emb.rank(args.items, candidates, scoring=args.scoring)
    unknown = int(np.isneginf(scores).sum())
    if unknown:
        log.warning("%d of %d candidates are not in the model: ranked last (score -inf)", unknown, len(candidates))
    for i in np.argsort(-scores, kind="stable")[:args.topn]:  # ties keep the candidates' order
        print(f"{candidates[i]}\t{scores[i]:.4f}")
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
        print(f"next item (leave-last-out, query of the last {s['last']}, scoring {s['scoring']}): HR@{k} "
              f"{s['hit_rate']:.4f}, "
              f"NDCG@{k} {s['ndcg']:.4f} ({s['hits']} hits in {s['sessions']} sessions; misses include {s['oov']} "
              f"unknown targets and {s['skipped']} without a known item before the target; {s['too_short']} "
              "shorter than 2 items left out)")
    if "impressions" in report:
        _print_impressions(report["impressions"])
    if "node_classification" in report:
        _print_node_classification(report["node_classification"])
    if "link_prediction" in report:
        lp = report["link_prediction"]
        hadamard = "n/a" if lp["auc_hadamard"] is None else f"{lp['auc_hadamard']:.4f}"
        print(f"link prediction: AUC cosine {lp['auc_cosine']:.4f}, Hadamard+LR {hadamard} ({lp['positives']} "
              f"held-out edges against {lp['negatives']} sampled non-edges among {lp['nodes']} nodes; "
              f"{lp['oov']} edges without a vector and {lp['dropped']} self-loops or repeats left out"
              f"{'' if lp['train_edges'] else '; no --train-edges: a training edge may be sampled as a non-edge'})")


def _print_impressions(r: dict) -> None:
    def metrics(m: dict) -> str:
        return f"AUC {m['auc']:.4f}, MRR {m['mrr']:.4f}, nDCG@5 {m['ndcg@5']:.4f}, nDCG@10 {m['ndcg@10']:.4f}"

    history = f"the last {r['last']} items of each history" if r["last"] else "whole histories"
    print(f"impressions (scoring {r['scoring']}, {history}): {metrics(r['model'])} (mean over {r['impressions']} "
          f"impressions with a click and a non-click, {r['shown']} items shown, {r['clicks']} clicks; "
          f"{r['skipped']} other impressions left out; {r['unknown_shown']} shown items unknown to the model, "
          "ranked last)")
    if r["train_impressions"] is None:
        print("  no --train-impressions: no click-through-rate or popularity prior to compare with")
        return
    print(f"  click-through-rate prior, (clicks + 1) / (shows + 2) in {r['train_impressions']} training impressions: "
          f"{metrics(r['ctr_prior'])}")
    print(f"  click popularity in the same: {metrics(r['popularity'])}")


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
    from ..runs import load

    if args.train_impressions and not args.impressions:
        raise ConfigError("--train-impressions gives the priors to compare with: add --impressions FILE "
                          "(the held-out impressions)")
    if not (args.analogies or args.pairs or args.clusters or args.sessions or args.impressions or args.node_labels
            or args.link_edges):
        raise ConfigError("nothing to evaluate: pass --analogies FILE, --pairs FILE, --clusters FILE, "
                          "--sessions FILE, --impressions FILE, --node-labels FILE and/or --link-edges FILE")
    for flag, value in (("--last", args.last), ("--k", args.k), ("--splits", args.splits)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.train_edges and not args.link_edges:
        raise ConfigError("--train-edges only keeps known edges out of link prediction's non-edges: "
                          "add --link-edges FILE (the held-out edges)")
    ratios = _train_ratios(args.train_ratios)
    from ..evaluate import evaluate_files

    emb = load(args.out)
    report = evaluate_files(emb, args.analogies, args.pairs, args.clusters, args.restrict_vocab,
                            args.sessions, args.last, args.k, args.impressions, args.train_impressions, args.scoring)
    if args.node_labels or args.link_edges:
        from ..evaluate.graph import evaluate_graph_files

        report.update(evaluate_graph_files(emb, args.node_labels, args.link_edges, args.train_edges, ratios,
                                           args.splits, args.seed))
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        _print_report(report)
    return 0


def cmd_runs(args) -> int:
    from .. import checkpoint, storage
    from ..runs import list_runs

    runs = list_runs(args.out, unpublished=args.all)
    for r in runs:
        if not r.get("published", True):
            state = checkpoint.latest(r["url"])
            r["checkpoint_epoch"] = state["epoch"] if state else None
            r["resume"] = f"nsdist train --resume {storage.absolute(r['url'])}"
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
    from ..report import flatten

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
    from ..runs import run_info

    info = run_info(args.run)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        _print_info(info)
    return 0


def cmd_gc(args) -> int:
    import datetime

    from ..runs import gc

    if args.abandoned_after < 0:
        raise ConfigError(f"--abandoned-after must be >= 0 days, got {args.abandoned_after}")
    deleted = gc(args.out, args.keep, abandoned_after=datetime.timedelta(days=args.abandoned_after),
                 dry_run=args.dry_run)
    for url in deleted:
        print(f"{'would delete' if args.dry_run else 'deleted'} {url}")
    log.info("%s %d run(s) under %s", "would delete" if args.dry_run else "deleted", len(deleted), args.out)
    return 0


def _synth_sessions(args) -> int:
    from ..synth.sessions import generate_sessions

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
    print(f"held out: {files.test_sessions} sessions in {files.test}, their last clicks as impressions in "
          f"{files.impressions}")
    print(f"ground truth: {files.items}")
    return 0


_GRAPH_FLAGS = (("--nodes", "nodes"), ("--communities", "communities"), ("--ratio", "ratio"),
                ("--mean-degree", "mean_degree"), ("--test-fraction", "test_fraction"), ("--roles", "roles"),
                ("--format", "format"))


def _graph_spec(args):
    """The GraphSpec the ``synth --graph`` flags ask for; ConfigError naming a bad flag."""
    from ..synth.graph import GraphSpec

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
    from ..synth.graph import generate_graph

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
    from ..synth import generate

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
    from ..config import load_config, parse_set

    os.makedirs(args.dir, exist_ok=True)
    corpus = os.path.join(args.dir, "corpus.txt")
    cfg = load_config(None, parse_set(args.set), corpus=(corpus,), out=os.path.join(args.dir, "out"),
                      **{"cluster.workers": args.workers})
    _local_workers_first(cfg)
    from .. import evaluate
    from ..api import run
    from ..runs import load
    from ..synth import generate

    files = generate(corpus, tokens=args.tokens, seed=1)
    log.info("synthetic corpus: %d tokens in %s", files.tokens, files.corpus)
    result = run(cfg, quiet=not VERBOSE, connected=_log_dashboard)
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
    from .. import storage
    from ..evaluate import read_clusters

    seen, words = set(), []
    for word, label in read_clusters(storage.lines(clusters_url)).items():
        if label not in seen and word in emb:
            seen.add(label)
            words.append(word)
    return words[:n]


COMMANDS = {"train": cmd_train, "neighbors": cmd_neighbors, "recommend": cmd_recommend, "evaluate": cmd_evaluate,
            "synth": cmd_synth, "demo": cmd_demo, "runs": cmd_runs, "info": cmd_info, "gc": cmd_gc}
