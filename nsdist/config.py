"""Job configuration: frozen dataclasses are the single source of truth.

A job is resolved from, in increasing precedence: the defaults below, a YAML spec file,
``NSDIST_<KEY>`` environment variables, and ``--set key=value`` overrides. Unknown keys and
values of the wrong type are rejected with a message that names the key, so a typo in a
scheduled job fails at submission instead of silently training with a default.

Training and graph keys may be given bare (``dim=300``, ``q=0.5``) or with their section
(``train.dim=300``, ``graph.q=0.5``); a key both sections have (``layout``) needs its section.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from .errors import ConfigError
from .storage import Store

MERGES = ("mean", "weighted", "touched")
# Where the model's rows (train.layout) and a graph's adjacency (graph.layout) live.
LAYOUTS = ("auto", "replicated", "partitioned")
KERNELS = ("batch", "pair")
WARM_NEW = ("cooccur", "random")  # warm.py: how --init-from starts the rows of new words
_TLS_KEYS = ("tls_ca_file", "tls_cert", "tls_key")
TOPK_MAX = 2**15 - 1  # the top-k table's rank is an int16
# The largest window whose context words share one draw of negatives by default (share_negatives).
SHARED_WINDOW = 10


@dataclass(frozen=True)
class TrainConfig:
    """SGNS hyperparameters (names and defaults follow word2vec/gensim)."""

    dim: int = 100
    window: int = 5
    negative: int = 5
    min_count: int = 5
    sample: float = 1e-3
    epochs: int = 5
    alpha: float = 0.025
    min_alpha: float = 0.0001
    ns_exponent: float = 0.75
    seed: int = 1
    shards: int | None = None  # partitions of the corpus; None: one per worker thread
    syncs_per_epoch: int | None = None  # parameter-averaging rounds per epoch; None: see rounds()
    # Rows averaged every round: the most frequent sync_rows, twice as many every other round, ...,
    # all at each epoch's end (plan.sync_rows); None: every row every round.
    sync_rows: int | None = 1024
    max_vocab: int | None = None
    max_sentence_length: int = 10000
    lowercase: bool = False
    merge: str = "mean"  # how the workers' models are averaged, see merge.py
    alpha_scale: float | None = None  # uniform local rate multiplier; None: model count, capped
    rate_pivot: float | None = 5000.0  # per-row local rates (merge.shard_rates); None: uniform
    kernel: str = "batch"  # "batch": negatives shared per window (HogBatch); "pair": classic
    # Context words that share one draw of negatives in the batch kernel. None: a whole window up
    # to SHARED_WINDOW (HogBatch, for text: its speed, the same quality), else 1, and 1 for a
    # graph's walks, where sharing cost quality (sessions' HR@10, walks' link AUC: the measurements
    # are in docs/recommendations.md and benchmarks/README.md); share 1 runs sgns.train_fresh.
    share_negatives: int | None = None

    def share(self, walks: bool = False) -> int:
        """share_negatives as the kernel takes it (0: a whole window); ``walks``: for a graph job.

        >>> TrainConfig().share(), TrainConfig(window=0).share(), TrainConfig(window=50).share()
        (0, 1, 1)
        >>> TrainConfig(window=0, share_negatives=8).share(), TrainConfig(window=10).share(walks=True)
        (8, 1)
        """
        if self.share_negatives is not None:
            return self.share_negatives
        return 0 if 0 < self.window <= SHARED_WINDOW and not walks else 1
    # Sessions with shown-but-not-clicked items (JobConfig.negatives_column): how many of them
    # each center trains against as label-0 targets, and the weight of their gradient.
    explicit_negatives: int = 5
    explicit_weight: float = 1.0
    merge_blocks: int | None = None  # row blocks per round; None: plan.merge_blocks (the same results)
    # Where the model's rows live (docs/scaling.md): "replicated", every worker holds the whole
    # model (the fast path); "partitioned", a worker holds the rows its shards use plus the
    # synchronised values of 1/M of the rows, so memory per worker falls as workers are added;
    # "auto": replicated where it fits the workers' memory limits, else partitioned.
    layout: str = "auto"
    # Partitioned: a model holds the rows of a group of an epoch's rounds at a time, every row
    # synchronised at a group's end (layout.py); None: the fewest groups that fit the workers.
    row_groups: int | None = None
    warm_new: str = "cooccur"  # --init-from: a new word's row from its known neighbours (warm.py), or random

    def rounds(self, models: int) -> int:
        """Merges per epoch for ``models`` models (one per worker): ``syncs_per_epoch``, else 4,
        or 2 per model past 2 models: more models drift further apart between merges
        (measurements: docs/quality.md, "Per-row rates and rounds").

        >>> TrainConfig().rounds(1), TrainConfig().rounds(8), TrainConfig(syncs_per_epoch=3).rounds(8)
        (4, 16, 3)
        """
        return self.syncs_per_epoch or max(4, 2 * models)

    def __post_init__(self):
        _coerce_fields(self, "train.")
        self.validate()

    def validate(self) -> "TrainConfig":
        if self.window < 0:
            raise ConfigError(f"train.window must be >= 0 (0: the whole sentence or session), got {self.window}")
        if self.explicit_negatives < 0:
            raise ConfigError(f"train.explicit_negatives must be >= 0, got {self.explicit_negatives}")
        if not (self.explicit_weight > 0 and math.isfinite(self.explicit_weight)):
            raise ConfigError(f"train.explicit_weight must be a positive number, got {self.explicit_weight}")
        if self.share_negatives is not None and self.share_negatives < 0:
            raise ConfigError(f"train.share_negatives must be >= 0 (0: a whole window), got {self.share_negatives}")
        positive = ("dim", "epochs", "syncs_per_epoch", "max_sentence_length", "merge_blocks", "sync_rows",
                    "row_groups")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha", "min_alpha", "sample", "ns_exponent", "rate_pivot", "alpha_scale"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"train.{name} must be a finite number, got {value}")
        if self.negative < 1:
            # Without noise words every vector is pulled towards its contexts only: they collapse
            # onto one direction (mean cosine of random pairs 0.995 with negative=0).
            raise ConfigError(f"train.negative must be >= 1 (noise words per context word), got {self.negative}")
        if self.min_count < 0:
            raise ConfigError(f"train.min_count must be >= 0, got {self.min_count}")
        if self.shards is not None and self.shards < 1:
            raise ConfigError(f"train.shards must be >= 1 or unset, got {self.shards}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ConfigError(f"train.max_vocab must be >= 1 or unset, got {self.max_vocab}")
        if not (0 < self.alpha and 0 <= self.min_alpha <= self.alpha):
            raise ConfigError(f"the learning rate must fall from train.alpha > 0 to 0 <= train.min_alpha <= alpha, "
                              f"got alpha={self.alpha} min_alpha={self.min_alpha}; set them so")
        if self.sample < 0:
            raise ConfigError(f"train.sample must be >= 0 (0 disables subsampling), got {self.sample}")
        if self.rate_pivot is not None and self.rate_pivot <= 0:
            raise ConfigError(f"train.rate_pivot must be > 0 or unset, got {self.rate_pivot}")
        if self.alpha_scale is not None and self.alpha_scale <= 0:
            raise ConfigError(f"train.alpha_scale must be > 0 or unset, got {self.alpha_scale}")
        if self.merge not in MERGES:
            raise ConfigError(f"train.merge must be one of {', '.join(MERGES)}, got {self.merge!r}")
        if self.kernel not in KERNELS:
            raise ConfigError(f"train.kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.warm_new not in WARM_NEW:
            raise ConfigError(f"train.warm_new must be one of {', '.join(WARM_NEW)}, got {self.warm_new!r}")
        return self


@dataclass(frozen=True)
class ClusterConfig:
    """Where the job runs: a scheduler address, else an embedded LocalCluster."""

    scheduler: str | None = None
    workers: int | None = None  # LocalCluster processes; None: one per core
    threads_per_worker: int = 1
    wait_for_workers: int = 1
    # Seconds to reach the scheduler and see wait_for_workers workers, in all: a scheduled job on a
    # dead cluster fails (exit 75) in about a minute. Clusters that scale up on demand need more.
    timeout: float = 60.0
    # TLS (PEM files, all three or none): to a tls:// scheduler, or within the local cluster. One
    # certificate signed by the cluster's CA serves the client, and a local cluster's scheduler and workers.
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self):
        _coerce_fields(self, "cluster.")
        self.validate()

    def validate(self) -> "ClusterConfig":
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"cluster.workers (--workers) must be >= 1 or unset (one per core), got {self.workers}")
        for name in ("threads_per_worker", "wait_for_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"cluster.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"cluster.timeout must be a positive number of seconds, got {self.timeout}")
        return self._validate_tls()

    def _validate_tls(self) -> "ClusterConfig":
        given = [name for name in _TLS_KEYS if getattr(self, name)]
        if given and len(given) < len(_TLS_KEYS):
            missing = ", ".join(f"cluster.{n}" for n in _TLS_KEYS if n not in given)
            raise ConfigError(f"TLS needs cluster.tls_ca_file, cluster.tls_cert and cluster.tls_key together "
                              f"(PEM files); set {missing} too, or unset the others")
        for name in given:
            if not os.path.isfile(getattr(self, name)):
                raise ConfigError(f"cluster.{name} {getattr(self, name)!r} is not a file; point it at the PEM file "
                                  "(on Kubernetes: where the TLS Secret is mounted)")
        return self


@dataclass(frozen=True)
class GraphConfig:
    """Node embeddings (DeepWalk, node2vec): random walks over the edge list ``edges``."""

    directed: bool = True
    walks_per_node: int = 10
    walk_length: int = 80  # nodes per walk, the start included
    # node2vec's return (p) and in-out (q) parameters: p = q = 1 is DeepWalk's uniform walk.
    p: float = 1.0
    q: float = 1.0
    src_column: str = "src"
    dst_column: str = "dst"
    weight_column: str = "weight"  # Parquet edges: used when present
    # "replicated": every worker holds the whole adjacency (the fast path); "partitioned": each a
    # node range's rows, walkers moving between them (the same walks); "auto": replicated if it fits.
    layout: str = "auto"

    def __post_init__(self):
        _coerce_fields(self, "graph.")
        self.validate()

    def validate(self) -> "GraphConfig":
        for name in ("walks_per_node", "walk_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"graph.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("p", "q"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"graph.{name} must be a positive number (1: unbiased), got {getattr(self, name)}")
        for name in ("src_column", "dst_column", "weight_column"):
            if not getattr(self, name):
                raise ConfigError(f"graph.{name} must name a column")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"graph.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        return self


@dataclass(frozen=True)
class JobConfig:
    """A whole training job."""

    corpus: tuple[str, ...] = ()
    out: str | None = None
    # Graph edge lists (Parquet src/dst[/weight], or text "src dst [weight]" lines): the corpus is
    # then random walks over them, generated on the workers (the graph section).
    edges: tuple[str, ...] = ()
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    # Bytes per text partition: 4 MiB keeps a worker's preprocessing peak under its training peak
    # (a scan needs about 3x its block for a moment; measurements: docs/design.md, "Memory").
    blocksize: int = 4 * 2**20
    parquet_column: str = "tokens"  # list<string> column of Parquet corpora
    negatives_column: str | None = None  # Parquet sessions: the items shown but not clicked
    order_column: str | None = None  # Parquet sessions: per-click timestamps or positions to sort by
    checkpoint_every: int = 1  # epochs between checkpoints (0: none); --resume continues from one
    # Each word's topk most cosine-similar words, published as neighbors/*.parquet (0: no table).
    topk: int = 0
    # The word2vec text and binary formats, which their readers load whole, up to this many bytes of
    # input vectors (vocabulary x dim x 4); a larger model publishes vectors.npy and vectors.parquet.
    word2vec_max_bytes: int = 2**31
    # Graph jobs: also write the walks, one per line (node ids separated by spaces), under this URL.
    save_walks: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self):
        # Every path to a job (YAML, env, --set, Python, dataclasses.replace) ends here: values are
        # checked as the command line checks them, and the storage options are redacted wherever
        # they are shown from now on (storage.Store).
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"config section {name!r} must be a {cls.__name__}, got {getattr(self, name)!r}")
        _coerce_fields(self, "", skip=set(_SECTIONS))
        object.__setattr__(self, "storage_options", Store(self.storage_options))
        if self.blocksize < 1:
            raise ConfigError(f"blocksize must be >= 1 byte, got {self.blocksize}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0 epochs (0: no checkpoints), got {self.checkpoint_every}")
        if not 0 <= self.topk <= TOPK_MAX:
            raise ConfigError(f"topk must be between 0 (no table) and {TOPK_MAX} neighbours per word, got {self.topk}")
        if self.word2vec_max_bytes < 0:
            raise ConfigError(f"word2vec_max_bytes must be >= 0 (0: never write vectors.txt and vectors.bin), got "
                              f"{self.word2vec_max_bytes}")
        if not self.parquet_column:
            raise ConfigError("parquet_column must name the list<string> column of Parquet corpora")
        if self.corpus and self.edges:
            raise ConfigError("a job trains on a corpus or on a graph's edges, not both; pass --corpus or --edges")
        if self.save_walks and not self.edges:
            raise ConfigError("save_walks (--save-walks) needs a graph: pass --edges too, or unset it")

    @property
    def store(self) -> Store:
        """The job's storage: its options bound once (``storage.Store``), passed to every storage
        call of the job and shipped to the workers in their place."""
        return self.storage_options

    def to_dict(self, redact: bool = True) -> dict:
        """Plain dict for manifests; storage options are redacted (they may hold credentials)."""
        d = dataclasses.asdict(self)
        d["corpus"], d["edges"] = list(self.corpus), list(self.edges)
        d["storage_options"] = {k: "***" if redact else v for k, v in self.storage_options.items()}
        return d


_SECTIONS = {"train": TrainConfig, "graph": GraphConfig, "cluster": ClusterConfig}

# One line per key: `nsdist train --help` and the README's configuration table (markdown_table) are
# made from these. tests/test_cli.py checks that every field has one; tests/test_docs.py that the
# README's table is current.
HELP = {
    "corpus": "corpus URLs: files, globs or directories (text, .gz/.bz2/.zst, or .parquet)",
    "out": "output URL: a local path or s3://bucket/prefix",
    "edges": "graph edge lists (Parquet src/dst[/weight] columns, or text lines 'src dst [weight]'): trains node "
             "vectors on random walks over them instead of a corpus",
    "storage_options": "fsspec options, e.g. S3 endpoint and credentials; never written to manifests or logs",
    "blocksize": "bytes per text partition (4 MiB); scanning one needs about 3x its size for a moment, and each "
                 "costs three tasks: very large corpora may want larger ones",
    "parquet_column": "the column of Parquet corpora: lists of strings (tokens) or of integers (item ids)",
    "negatives_column": "Parquet sessions: a list column of the items each session showed without a click, "
                        "trained as negatives (train.explicit_negatives); unset: none",
    "order_column": "Parquet sessions: a list column parallel to the items (timestamps or positions) that "
                    "orders each session's clicks; unset: the order they are stored in",
    "checkpoint_every": "epochs between checkpoints (0: none); --resume continues from the last",
    "topk": "publish each word's topk most cosine-similar words as neighbors/*.parquet (item, neighbor, score, "
            "rank), computed on the workers; 0: no table",
    "word2vec_max_bytes": "write vectors.txt and vectors.bin when the input vectors (vocabulary x dim x 4 bytes) "
                          "are at most this size (2 GiB; 0: never): their readers load them whole; the manifest's "
                          "outputs.word2vec says whether a run has them",
    "save_walks": "graph jobs: also write the walks as text, one per line, under this URL; unset: never written",
    "train.dim": "vector size",
    "train.window": "maximum context distance (each center word uses a random window of 1..window); "
                    "0: every other word of the sentence or session, never shrunk",
    "train.negative": "noise words per (context, center) pair",
    "train.min_count": "drop words seen fewer times",
    "train.sample": "subsampling threshold of frequent words (0 disables)",
    "train.epochs": "passes over the corpus",
    "train.alpha": "initial learning rate, decayed linearly to min_alpha by global progress",
    "train.min_alpha": "final learning rate",
    "train.ns_exponent": "noise distribution: count ** ns_exponent",
    "train.seed": "random seed: same seed, shards and workers give bit-identical vectors (one thread per worker)",
    "train.shards": "training shards (units of parallel training); unset: one per worker thread",
    "train.syncs_per_epoch": "parameter-averaging rounds per epoch; unset: 4, or 2 per model past 2 models "
                             "(one model per worker)",
    "train.sync_rows": "the sync_rows most frequent words' rows are averaged every round, twice as many every "
                       "other round, 4x every fourth, ..., all rows in each epoch's last round; unset: all, every round",
    "train.max_vocab": "keep only the most frequent words; unset: all",
    "train.max_sentence_length": "sentences longer than this many known words are split into chunks, never cut",
    "train.lowercase": "lowercase tokens",
    "train.merge": "how a row is averaged over the models: mean (over all), weighted (by each model's updates "
                   "of the row), touched (over the models that updated it)",
    "train.alpha_scale": "one local learning-rate multiplier for every row and any merge (not capped), in place "
                         "of rate_pivot's; unset: rate_pivot's with merge=mean, 1 with the others",
    "train.rate_pivot": "merge=mean: a row's local learning-rate multiplier falls from M (the models; at most "
                        "0.2 / alpha) to 1, halfway at this many occurrences kept per epoch; unset: M for every row",
    "train.kernel": "batch: negatives shared per context window (HogBatch); pair: word2vec's per-pair updates",
    "train.share_negatives": "batch kernel: context words that share one draw of negatives; 0: a whole window; "
                             "unset: a whole window up to window 10 (text), else 1 (sessions, long windows, "
                             "graph walks)",
    "train.explicit_negatives": "with negatives_column: shown-but-not-clicked items each center trains against "
                                "(all if fewer), beside the sampled ones",
    "train.explicit_weight": "with negatives_column: the weight of those items' gradient",
    "train.merge_blocks": "row blocks a round's averaged rows are cut into, each merged by one worker; unset: "
                          "enough that a worker receives at most 1/8 of the model at once; results do not depend on it",
    "train.layout": "where the model's rows live: replicated (every worker holds the whole model: fastest), "
                    "partitioned (a worker holds the rows its shards use and 1/M of the synchronised rows: memory "
                    "per worker falls as workers are added), or auto (replicated where it fits the workers' memory)",
    "train.row_groups": "partitioned layout: a model holds the rows of this many groups of an epoch's rounds one "
                        "group at a time (all rows averaged at each group's end): fewer rows per worker, more "
                        "traffic; unset: the fewest that fit the workers' memory limits. The rounds per epoch "
                        "grow to the groups unless syncs_per_epoch is set",
    "train.warm_new": "--init-from: a new word's vectors start from the means of the published vectors of the "
                      "known words within window of it in the new corpus (cooccur; random without any), or random",
    "graph.directed": "follow edges from src to dst only; false: both ways",
    "graph.walks_per_node": "walks started from every node",
    "graph.walk_length": "nodes per walk, the start included (shorter at a node without out-edges)",
    "graph.p": "node2vec return parameter: 1/p weighs stepping back to the previous node",
    "graph.q": "node2vec in-out parameter: 1/q weighs moving away from the previous node (q < 1: explore, "
               "q > 1: stay local)",
    "graph.src_column": "Parquet edges: the source node column (int64 or string)",
    "graph.dst_column": "Parquet edges: the destination node column",
    "graph.weight_column": "Parquet edges: the weight column, used when present (text: an optional third field)",
    "graph.layout": "replicated: every worker holds the whole adjacency (fastest); partitioned: each worker holds "
                    "the rows of a node range and walkers move between workers (the same walks, for graphs no "
                    "worker holds whole); auto: replicated when it fits in half a worker's memory limit",
    "cluster.scheduler": "Dask scheduler address (also DASK_SCHEDULER_ADDRESS); unset: a local cluster",
    "cluster.workers": "local cluster worker processes; unset: one per core",
    "cluster.threads_per_worker": "threads per local worker (more than 1: not bit-reproducible)",
    "cluster.wait_for_workers": "workers to wait for before starting",
    "cluster.timeout": "seconds to reach the scheduler and see wait_for_workers workers; more for clusters that "
                       "scale up on demand",
    "cluster.tls_ca_file": "TLS: the CA certificate (PEM); all three tls_* keys or none",
    "cluster.tls_cert": "TLS: this process's certificate (PEM)",
    "cluster.tls_key": "TLS: its private key (PEM)",
}


def keys() -> list[tuple[str, str, str]]:
    """(key, default, help) for every config key, in declaration order.

    >>> keys()[0]
    ('corpus', '()', 'corpus URLs: files, globs or directories (text, .gz/.bz2/.zst, or .parquet)')
    """
    rows = []
    for f in dataclasses.fields(JobConfig):
        if f.name in _SECTIONS:
            for g in dataclasses.fields(_SECTIONS[f.name]):
                rows.append((f"{f.name}.{g.name}", _default(g), HELP[f"{f.name}.{g.name}"]))
        else:
            rows.append((f.name, _default(f), HELP[f.name]))
    return rows


def markdown_table() -> str:
    """The README's configuration table: one row per key of ``keys()``. ``<`` and ``|`` in a
    meaning are escaped, or Markdown would read ``list<string>`` as an HTML tag.

    >>> print("\\n".join(markdown_table().splitlines()[:4]))
    | key | default | meaning |
    | --- | --- | --- |
    | `corpus` | `()` | corpus URLs: files, globs or directories (text, .gz/.bz2/.zst, or .parquet) |
    | `out` | unset | output URL: a local path or s3://bucket/prefix |
    """
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, meaning in keys():
        shown = default if default == "unset" else f"`{default}`"
        escaped = re.sub(r"([<|])", r"\\\1", meaning)
        rows.append(f"| `{key}` | {shown} | {escaped} |")
    return "\n".join(rows)


def _default(f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return "unset" if value is None else str(value)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif origin in (Mapping, collections.abc.Mapping):
        if isinstance(value, Mapping):
            return dict(value)
        # storage_options may hold credentials: never echo the value.
        raise ConfigError(f"config key {key!r} must be a mapping (e.g. {{key: value}}), got a {type(value).__name__}")
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key {key!r} must be of type {name}, got {value!r}")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce_fields(obj, prefix: str, skip: set = frozenset()) -> None:
    """Convert a config object's values to their annotated types in place (frozen: through
    object.__setattr__), or raise ConfigError naming the key."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.name not in skip:
            value = getattr(obj, f.name)
            coerced = _coerce(f"{prefix}{f.name}", value, hints[f.name])
            if coerced is not value:
                object.__setattr__(obj, f.name, coerced)


def _collect(cls, values: Mapping[str, Any], prefix: str) -> dict:
    """One layer of configuration (a spec, a variable, overrides) as a nested dict of values of
    the right types; unknown keys and bad types raise ConfigError naming the key. Ranges are
    checked once, when the layers are merged (a layer may hold half of a pair: alpha, min_alpha)."""
    hints = _hints(cls)
    out: dict = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown config key {full!r}; known keys: {', '.join(sorted(hints))}")
        if key in _SECTIONS and prefix == "":
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section {full!r} must be a mapping, got {value!r}")
            out[key] = _collect(_SECTIONS[key], value, f"{key}.")
        else:
            out[key] = _coerce(full, value, hints[key])
    return out


def _merge(base: dict, layer: dict) -> dict:
    """``layer`` over ``base``: sections key by key, any other value (storage_options too) whole."""
    merged = {**base, **layer}
    for name in _SECTIONS:
        if name in base and name in layer:
            merged[name] = {**base[name], **layer[name]}
    return merged


def _build(values: dict) -> JobConfig:
    """The JobConfig of merged layers: constructed (and so validated) once."""
    sections = {name: cls(**values.get(name, {})) for name, cls in _SECTIONS.items()}
    return JobConfig(**{k: v for k, v in values.items() if k not in _SECTIONS}, **sections)


def _nest(flat: Mapping[str, Any]) -> dict:
    """{'dim': 3, 'cluster.workers': 2} -> {'train': {'dim': 3}, 'cluster': {'workers': 2}}."""
    top = _hints(JobConfig)
    train = _hints(TrainConfig)
    graph = _hints(GraphConfig)
    nested: dict = {}
    for key, value in flat.items():
        if "." in key:
            section, _, sub = key.partition(".")
            nested.setdefault(section, {})[sub] = value
        elif key in _SECTIONS and isinstance(value, Mapping):
            nested.setdefault(key, {}).update(value)
        elif key in top:
            nested[key] = value
        elif key in train and key in graph:
            raise ConfigError(f"config key {key!r} is in two sections: write train.{key} or graph.{key}")
        elif key in train:
            nested.setdefault("train", {})[key] = value
        elif key in graph:
            nested.setdefault("graph", {})[key] = value
        else:
            known = sorted(set(top) | set(train) | set(graph))
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(known)}")
    return nested


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What PyYAML found wrong and where, without the text it quotes (it may be a credential).

    >>> try: yaml.safe_load("{secret: abc: d}")
    ... except yaml.YAMLError as e: print(_yaml_problem(e))
    expected ',' or '}', but got ':' at line 1, column 13
    """
    problem = getattr(e, "problem", None) or "syntax error"
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _yaml_value(value: str, where: str) -> Any:
    """A --set or NSDIST_* value parsed as YAML; an error names ``where``, never the value."""
    try:
        return yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:  # the cause would quote the value: dropped
        raise ConfigError(f"{where} is not valid YAML ({_yaml_problem(e)}); quote the value or fix it") from None


def parse_set(items: list[str]) -> dict[str, Any]:
    """['dim=50', 'sample=0'] -> {'dim': 50, 'sample': 0} (values parsed as YAML scalars)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Echo only the key-like start: the rest may be a credential (storage_options.secret:...).
            name = re.match(r"[\w.]*", item.strip()).group()
            raise ConfigError(f"--set expects key=value, got {name + ('' if name == item.strip() else '...')!r}")
        out[key.strip()] = _yaml_value(value, f"--set {key.strip()}")
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """NSDIST_DIM=50, NSDIST_CLUSTER__WORKERS=2 -> {'dim': 50, 'cluster.workers': 2}."""
    return dict(item for _, item in _env_items(environ))


def _env_items(environ: Mapping[str, str]) -> list[tuple[str, tuple[str, Any]]]:
    """(variable name, (config key, value)) for each NSDIST_* variable, sorted by name."""
    out = []
    for name, value in sorted(environ.items()):
        if name.startswith("NSDIST_") and name not in ("NSDIST_LOG_FORMAT",):
            key = name[len("NSDIST_"):].lower().replace("__", ".")
            out.append((name, (key, _yaml_value(value, f"the environment variable {name}"))))
    return out


def config_from_dict(data: Mapping[str, Any], **explicit: Any) -> JobConfig:
    """A JobConfig from a nested dict (a manifest's or claim's ``config``) plus explicit fields."""
    cfg = _build(_collect(JobConfig, _nest(dict(data)), ""))
    return dataclasses.replace(cfg, **explicit) if explicit else cfg


def _spec_data(spec) -> Mapping[str, Any]:
    """A job spec's keys: the mapping itself, or a YAML file's."""
    if isinstance(spec, Mapping):
        return spec
    spec = os.fspath(spec)
    try:
        with open(spec, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read job spec {spec!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"job spec {spec!r} is not valid YAML ({_yaml_problem(e)}); fix it") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"job spec {spec!r} must be a YAML mapping of config keys")
    return data


def load_config(
    spec: "str | os.PathLike | Mapping[str, Any] | JobConfig | None" = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    **explicit: Any,
) -> JobConfig:
    """Resolve a job: defaults < spec < NSDIST_* env < overrides (--set) < explicit args.

    ``spec``: a YAML file, or the same keys as a mapping, or a JobConfig.

    >>> load_config(overrides={"dim": 8}, environ={}).train.dim
    8
    """
    if isinstance(spec, JobConfig):
        spec = spec.to_dict(redact=False)
    values = _collect(JobConfig, _nest(_spec_data(spec)), "") if spec is not None else {}
    for name, (key, value) in _env_items(os.environ if environ is None else environ):
        try:
            values = _merge(values, _collect(JobConfig, _nest({key: value}), ""))
        except ConfigError as e:
            raise ConfigError(f"{e} (from the environment variable {name}: fix or unset it)") from None
    values = _merge(values, _collect(JobConfig, _nest(overrides or {}), ""))
    given = {k: v for k, v in explicit.items() if v is not None and v != () and v != []}
    return _build(_merge(values, _collect(JobConfig, _nest(given), "")))
