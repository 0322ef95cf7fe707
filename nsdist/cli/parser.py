"""The ``nsdist`` command's arguments: one parser per command, each with its examples."""

from __future__ import annotations

import argparse
import functools
import os

from .. import __version__
from ..errors import ConfigError


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
                 "  nsdist recommend s3://bucket/items 1042 --include-seen\n"
                 "  nsdist recommend runs/items sku-1042 sku-877 --candidates shown.txt   (rank these items)",
    "evaluate": """examples:
  nsdist evaluate runs/wiki --analogies questions-words.txt --pairs wordsim353.tsv --json
  nsdist evaluate runs/clicks --sessions clicks/sessions.test.parquet --last 1 --k 10
  nsdist evaluate runs/clicks --impressions clicks/impressions.test.parquet --train-impressions \
      clicks/sessions.parquet
  nsdist evaluate runs/graph --node-labels graph/labels.tsv --link-edges graph/edges.test.parquet \
      --train-edges graph/edges.parquet --train-ratios 0.1,0.5,0.9 --splits 10""",
    "runs": "examples:\n  nsdist runs runs/wiki\n  nsdist runs s3://bucket/emb --all",
    "info": "example:\n  nsdist info runs/wiki          (the run LATEST names)",
    "gc": "example:\n  nsdist gc s3://bucket/emb --keep 7 --dry-run",
    "synth": """examples:
  nsdist synth corpus.txt --tokens 5000000 --seed 1
  nsdist synth --sessions clicks --sessions-count 20000 --items 10000 --seed 1
      (clicks/sessions.parquet, clicks/sessions.test.parquet held out, clicks/impressions.test.parquet,
       clicks/items.tsv)
  nsdist synth --graph graph --nodes 10000 --communities 10 --seed 1
      (graph/edges.parquet, graph/edges.test.parquet held out, graph/labels.tsv)
  nsdist synth --graph roles --roles --format text
      (roles/edges.txt, roles/edges.test.txt, roles/labels.tsv, roles/roles.tsv)""",
    "demo": "example:\n  nsdist demo --dir /tmp/nsdist-demo --tokens 500000",
}


def _config_keys() -> str:
    """The config keys for ``train --help``: key, default and meaning, one per line."""
    from ..config import keys

    rows = keys()
    width = max(len(k) for k, _, _ in rows)
    lines = [f"  {k:<{width}}  {d:<9} {h}" for k, d, h in rows]
    return ("config keys (--set KEY=VALUE, a YAML --config, or NSDIST_KEY variables; training keys also "
            "without 'train.'):\n" + "\n".join(lines))


SYNTH_TOKENS, SYNTH_SESSIONS, SYNTH_ITEMS = 1_000_000, 20_000, 10_000  # ``synth`` sizes
SYNTH_NODES = 10_000  # ``synth --graph``; its other defaults are GraphSpec's


def parser() -> argparse.ArgumentParser:
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
    for add in (_train, _neighbors, _recommend, _evaluate, _runs, _info, _gc, _synth, _demo):
        add(sub, common)
    return p


def _train(sub, common) -> None:
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


def _neighbors(sub, common) -> None:
    nb = sub.add_parser("neighbors", parents=[common], epilog=EXAMPLES["neighbors"], help="nearest neighbours of a word in a published model")
    nb.add_argument("out", metavar="OUT", help="an output (its LATEST run) or a run URL")
    nb.add_argument("word")
    nb.add_argument("--topn", type=int, default=10, help="neighbours to print")


def _scoring(parser, what: str) -> None:
    from ..embeddings import RANK_SCORING, SCORINGS

    parser.add_argument("--scoring", choices=SCORINGS,
                        help=f"how {what} are scored for a history (default: {RANK_SCORING}): blend = (cosine + sgns) "
                             "/ 2; cosine = cosine of the mean unit input vector of the history with the item's; "
                             "sgns = the highest sigmoid(input . output) over the history, as SGNS trains; dot = the "
                             "mean input vector . the item's output vector (docs/recommendations.md)")


def _recommend(sub, common) -> None:
    rc = sub.add_parser("recommend", parents=[common], epilog=EXAMPLES["recommend"],
                        help="the items to show after the given ones in a published model: every item, or a "
                             "candidate list, ranked")
    rc.add_argument("out", metavar="OUT", help="an output (its LATEST run) or a run URL")
    rc.add_argument("items", metavar="ITEM", nargs="+", help="the items seen (e.g. a session's clicks)")
    rc.add_argument("--topn", type=int, help="items to print (default: 10; with --candidates, all of them)")
    rc.add_argument("--candidates", metavar="FILE", help="rank these items only (ids separated by whitespace or "
                    "lines; '-': standard input), unknown ones last with score -inf, the given items too")
    _scoring(rc, "items")
    seen = rc.add_mutually_exclusive_group()
    seen.add_argument("--exclude-seen", dest="exclude_seen", action="store_true", default=True,
                      help="leave the given items out")
    seen.add_argument("--include-seen", dest="exclude_seen", action="store_false", default=argparse.SUPPRESS,
                      help="rank the given items too")


def _evaluate(sub, common) -> None:
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
                    "except the session's earlier ones as 'nsdist recommend' does")
    ev.add_argument("--last", type=int, metavar="N",
                    help="query = the last N known items before the target (default: 1); with --impressions: "
                         "the last N items of each history (default: all of it)")
    ev.add_argument("--k", type=int, default=10, metavar="K", help="cut-off of HR@K and NDCG@K")
    ev.add_argument("--impressions", metavar="FILE", help="impressions (Parquet lists history, shown, clicked; or "
                    "text 'history<TAB>shown<TAB>clicked' lines, or MIND's behaviors.tsv): per-impression AUC, MRR, "
                    "nDCG@5 and nDCG@10 of ranking each one's shown items for its history")
    ev.add_argument("--train-impressions", metavar="FILE", help="the training impressions (or a sessions file "
                    "with 'items' and 'impressions' columns): adds the click-through-rate (clicks + 1) / (shows + 2) "
                    "and click-popularity priors computed on them, as references (with --impressions)")
    _scoring(ev, "items (--sessions: every item; --impressions: the shown ones)")
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


def _runs(sub, common) -> None:
    ru = sub.add_parser("runs", parents=[common], epilog=EXAMPLES["runs"], help="list the published runs under an output URL, newest first")
    ru.add_argument("out", metavar="OUT")
    ru.add_argument("--all", action="store_true",
                    help="also the runs never published (failed, interrupted, running), with their last "
                         "checkpoint and the command that resumes them")
    ru.add_argument("--json", action="store_true", help="print one JSON array")


def _info(sub, common) -> None:
    inf = sub.add_parser("info", parents=[common], epilog=EXAMPLES["info"],
                         help="a run's config, corpus statistics, per-epoch metrics and files "
                              "(OUT: the run LATEST names; an unpublished run: its last checkpoint)")
    inf.add_argument("run", metavar="OUT|RUN")
    inf.add_argument("--json", action="store_true", help="print one JSON object")


def _gc(sub, common) -> None:
    gc = sub.add_parser("gc", parents=[common], epilog=EXAMPLES["gc"],
                        help="delete old published runs and abandoned unfinished ones (never LATEST's run)")
    gc.add_argument("out", metavar="OUT")
    gc.add_argument("--keep", type=int, required=True, metavar="N", help="published runs to keep, newest first")
    gc.add_argument("--abandoned-after", type=float, default=7.0, metavar="DAYS",
                    help="delete unpublished runs untouched for this long")
    gc.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")


def _synth(sub, common) -> None:
    sy = sub.add_parser("synth", parents=[common], epilog=EXAMPLES["synth"],
                        help="write a synthetic corpus (or with --sessions a clickstream, with --graph a graph) "
                             "with planted structure and its ground truth")
    sy.add_argument("out_file", metavar="OUT_FILE", nargs="?", help="the text corpus to write")
    sy.add_argument("--tokens", type=int, help=f"text corpus size (default: {SYNTH_TOKENS})")
    sy.add_argument("--sessions", metavar="OUT_DIR", help="write a planted clickstream into OUT_DIR instead: "
                    "sessions.parquet (training), sessions.test.parquet (held out), impressions.test.parquet "
                    "(the held-out last clicks among items shown), items.tsv (ground truth)")
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


def _demo(sub, common) -> None:
    de = sub.add_parser("demo", parents=[common], epilog=EXAMPLES["demo"],
                        help="synthesise a corpus, train on a LocalCluster, evaluate, show neighbours")
    de.add_argument("--dir", default="demo", help="working directory")
    de.add_argument("--tokens", type=int, default=2_000_000, help="size of the synthetic corpus")
    de.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (see 'nsdist train --help')")
    de.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")

