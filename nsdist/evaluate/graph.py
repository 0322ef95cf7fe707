"""Node embeddings scored as DeepWalk and node2vec score them.

* :func:`node_classification` -- one-vs-rest logistic regression on the node
  vectors, Micro-F1 and Macro-F1 at several training ratios, averaged over
  seeded random splits (DeepWalk, Perozzi et al. 2014; node2vec, Grover &
  Leskovec 2016).
* :func:`link_prediction` -- held-out edges against as many sampled non-edges,
  scored by the cosine of the endpoints' vectors and by logistic regression on
  their Hadamard product (node2vec's best operator); ROC AUC of each.

Both take the vocabulary as ``words`` and the raw ``vectors`` of shape
``(len(words), dim)``, as :mod:`nsdist.evaluate` does.  Node ids are matched
as strings: an integer id is compared as its decimal string, which is how
nsdist's vocabulary holds it.

The readers (:func:`read_labels`, :func:`read_edges`) are strict: a malformed
line is a :class:`~nsdist.errors.DataError` naming ``file:line`` and the
expected format, because a silently shrunken label set makes scores
incomparable between runs.

scikit-learn is imported inside the functions that use it: ``pip install
'nsdist[graph]'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import progress
from ..errors import ConfigError, DataError
from .common import _check_inputs
from .readers import parse_edges, parse_labels, read_edges, read_labels

__all__ = ["node_classification", "link_prediction", "parse_labels", "read_labels", "parse_edges", "read_edges",
           "evaluate_graph_files"]

def _sklearn():
    """The scikit-learn pieces used here; ConfigError with the fix when it is missing or too old.

    Importing them loads the BLAS libraries they use (numpy's and scipy's), so that
    :func:`_one_blas_thread` entered after this call limits them all."""
    try:
        import sklearn
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import f1_score, roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ConfigError("graph evaluation needs scikit-learn: pip install 'nsdist[graph]'") from None
    if tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit()) < (1, 3):
        raise ConfigError(f"graph evaluation needs scikit-learn >= 1.3, found {sklearn.__version__}: "
                          "pip install 'nsdist[graph]'")
    scaled_lr = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))  # noqa: E731
    return LogisticRegression, OneVsRestClassifier, f1_score, roc_auc_score, StratifiedKFold, cross_val_predict, scaled_lr


# ---------------------------------------------------------------------------
# Node classification
# ---------------------------------------------------------------------------


@contextmanager
def _one_blas_thread():
    """BLAS on one thread (process-wide, while it lasts) while the classifiers fit.

    Each lbfgs step is a matrix-vector product of the training rows (a few MB): too small for
    threads to pay off, while their synchronisation costs far more than the product whenever the
    cores are busy -- and numpy and scipy each start a pool of their own. Measured in
    benchmarks/README.md (``bench_graph_eval.py``): minutes against seconds on 2 busy cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def _label_pairs(labels) -> list[tuple[str, str]]:
    """``(node, label)`` string pairs, repeats dropped, from a mapping (a label or an iterable of
    labels per node) or an iterable of pairs."""
    if isinstance(labels, Mapping):
        items = ((n, v) for n, vs in labels.items()
                 for v in ([vs] if isinstance(vs, (str, bytes, int, np.integer)) else vs))
    else:
        items = iter(labels)
    return list(dict.fromkeys((str(n), str(v)) for n, v in items))


def _indicator(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str], np.ndarray]:
    """Nodes (in order of first appearance), label names (sorted) and the (node, label) indicator matrix."""
    nodes = list(dict.fromkeys(n for n, _ in pairs))
    names = sorted({v for _, v in pairs})
    node_row = {n: i for i, n in enumerate(nodes)}
    name_col = {v: j for j, v in enumerate(names)}
    y = np.zeros((len(nodes), len(names)), dtype=bool)
    for n, v in pairs:
        y[node_row[n], name_col[v]] = True
    return nodes, names, y


def _split(rng: np.random.Generator, y: np.ndarray, ratio: float, multi: bool):
    """Train and test rows.  Single-label: per label, ``round(ratio * size)`` of its nodes train,
    at least one on each side when it has two or more (a lone node trains).  Multi-label: a plain
    random ``round(ratio * n)`` (at least one on each side), as DeepWalk's scoring does."""
    n = len(y)
    if multi:
        perm = rng.permutation(n)
        k = min(max(round(ratio * n), 1), n - 1)
        return np.sort(perm[:k]), np.sort(perm[k:])
    train = []
    for members in (np.flatnonzero(col) for col in y.T):
        members = rng.permutation(members)
        k = len(members) if len(members) < 2 else min(max(round(ratio * len(members)), 1), len(members) - 1)
        train.append(members[:k])
    train = np.sort(np.concatenate(train))
    return train, np.setdiff1d(np.arange(n), train)


def _predict(clf, x: np.ndarray, y_true: np.ndarray, multi: bool) -> np.ndarray:
    """Indicator predictions: the top-scoring label (single-label), or the top ``k`` labels with
    ``k`` the node's true number of labels (multi-label, DeepWalk's rule)."""
    pred = np.zeros_like(y_true)
    if multi:
        scores = clf.predict_proba(x)
        k = y_true.sum(axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        for i, row in enumerate(order):
            pred[i, row[:k[i]]] = True
    else:
        pred[np.arange(len(x)), clf.predict(x)] = True
    return pred


def _summary(ratio: float, scores: np.ndarray, sizes: np.ndarray) -> dict:
    """One train ratio's report from its splits' (Micro-F1, Macro-F1) and (train, test) sizes."""
    return {"train_ratio": ratio, "train_nodes": float(sizes[:, 0].mean()), "test_nodes": float(sizes[:, 1].mean()),
            "micro_f1": float(scores[:, 0].mean()), "micro_f1_std": float(scores[:, 0].std()),
            "macro_f1": float(scores[:, 1].mean()), "macro_f1_std": float(scores[:, 1].std())}


def node_classification(
    words: Sequence[str],
    vectors: np.ndarray,
    labels,
    *,
    train_ratios: Sequence[float] = (0.1, 0.5, 0.9),
    splits: int = 10,
    seed: int = 0,
    normalize: bool = False,
) -> dict:
    """Node classification: one-vs-rest logistic regression, Micro-F1 and Macro-F1 per train ratio.

    The protocol of DeepWalk and node2vec: for each training ratio, ``splits``
    seeded random splits of the labelled nodes; on each, scikit-learn's
    ``OneVsRestClassifier(LogisticRegression())`` (L2, C=1) is fitted on the
    training nodes' vectors and predicts the test nodes' labels.  Single-label
    data: the label of the highest-scoring classifier; multi-label data (a
    node listed with several labels): the node's ``k`` highest-scoring labels,
    ``k`` its true number of labels (DeepWalk's scoring).  Splits are
    stratified for single-label data (each label's nodes split by the ratio,
    at least one on each side), plain random for multi-label data.

    Micro-F1 pools every (node, label) decision (for single-label data it is
    the accuracy); Macro-F1 is the unweighted mean of the per-label F1, over
    the labels that occur in the test set or in the predictions, so rare
    labels weigh as much as common ones.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, row order.  Node ids are matched as strings (integer ids
        as their decimal strings).
    vectors : ndarray, shape (len(words), dim)
        Embeddings, used raw as DeepWalk and node2vec did (``normalize``:
        rows scaled to unit length first).
    labels : mapping or iterable of (node, label)
        ``{node: label}``, ``{node: [labels]}`` or pairs (a node in several
        pairs has several labels), e.g. :func:`read_labels`.
    train_ratios : sequence of float
        Shares of the labelled nodes used for training, each in (0, 1).
    splits : int
        Random splits per ratio; the mean and standard deviation (ddof 0)
        over them are reported.
    seed : int
        Seed of the splits; the classifier itself is deterministic.
    normalize : bool
        L2-normalise the vectors before classifying.

    Returns
    -------
    dict
        ``nodes`` (labelled nodes with a vector: the ones classified),
        ``missing`` (labelled nodes without a vector: left out, as the papers
        embed every node), ``labels`` (distinct labels), ``multi_label``,
        ``normalized``, ``splits``, ``seed`` and ``ratios``: one dict per
        train ratio with ``train_ratio``, ``train_nodes`` and ``test_nodes``
        (means over the splits), ``micro_f1``, ``micro_f1_std``,
        ``macro_f1`` and ``macro_f1_std``.

    Examples
    --------
    >>> words = ["a", "b", "c", "d", "e", "f"]
    >>> vectors = np.array([[1, 0], [0.9, 0.1], [1, 0.2], [0, 1], [0.1, 0.9], [0.2, 1]])
    >>> labels = {"a": "x", "b": "x", "c": "x", "d": "y", "e": "y", "f": "y", "g": "y"}
    >>> r = node_classification(words, vectors, labels, train_ratios=[0.5], splits=3)
    >>> r["nodes"], r["missing"], r["ratios"][0]["micro_f1"], r["ratios"][0]["train_nodes"]
    (6, 1, 1.0, 4.0)
    """
    LogisticRegression, OneVsRestClassifier, f1_score, *_ = _sklearn()
    vectors = _check_inputs(words, vectors)
    ratios = [float(r) for r in train_ratios]
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise ValueError(f"train ratios must be in (0, 1), got {ratios}")
    if int(splits) < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    row = {w: i for i, w in enumerate(words)}
    pairs = _label_pairs(labels)
    # In model row order: the splits then do not depend on the order of the labels.
    known = sorted(((n, v) for n, v in pairs if n in row), key=lambda p: row[p[0]])
    missing = len({n for n, _ in pairs}) - len({n for n, _ in known})
    nodes, names, y = _indicator(known)
    if len(nodes) < 2 or len(names) < 2:
        raise ValueError(f"need at least 2 labelled nodes with vectors and 2 labels, got {len(nodes)} nodes "
                         f"({missing} labelled nodes have no vector) and {len(names)} labels")
    x = vectors[[row[n] for n in nodes]].astype(np.float64)
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.where(norms == 0, 1, norms)
    multi = bool(y.sum(axis=1).max() > 1)
    target = y if multi else np.argmax(y, axis=1)
    results = []
    bar = progress.stage("node classification", len(ratios) * int(splits), unit=" splits")
    with bar, _one_blas_thread():
        for i, ratio in enumerate(ratios):
            scores, sizes = [], []
            for s in range(int(splits)):
                train, test = _split(np.random.default_rng([int(seed), i, s]), y, ratio, multi)
                clf = OneVsRestClassifier(LogisticRegression(max_iter=1000))
                with warnings.catch_warnings():  # a label absent from a multi-label training split
                    warnings.simplefilter("ignore", UserWarning)
                    clf.fit(x[train], target[train])
                pred = _predict(clf, x[test], y[test], multi)
                scores.append([f1_score(y[test], pred, average=a, zero_division=np.nan) for a in ("micro", "macro")])
                sizes.append((len(train), len(test)))
                bar.advance()
            results.append(_summary(ratio, np.array(scores), np.array(sizes, dtype=np.float64)))
    return {"nodes": len(nodes), "missing": missing, "labels": len(names), "multi_label": multi,
            "normalized": bool(normalize), "splits": int(splits), "seed": int(seed), "ratios": results}


# ---------------------------------------------------------------------------
# Link prediction
# ---------------------------------------------------------------------------


def _edge_table(edges) -> pa.Table:
    """Edges as a table of string columns ``src``, ``dst`` from a table with those columns (integer
    or string), an ``(m, 2)`` array, or an iterable of pairs."""
    if isinstance(edges, pa.Table):
        cols = []
        for name in ("src", "dst"):
            col = edges.column(name)
            if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type)
                    or pa.types.is_large_string(col.type)):
                raise ValueError(f"column {name!r} must hold node ids (integers or strings), got {col.type}")
            cols.append(pc.cast(col, pa.string()).combine_chunks())
        return pa.table({"src": cols[0], "dst": cols[1]})
    pairs = [(str(a), str(b)) for a, b in (edges.tolist() if isinstance(edges, np.ndarray) else edges)]
    return pa.table({"src": pa.array([a for a, _ in pairs], pa.string()),
                     "dst": pa.array([b for _, b in pairs], pa.string())})


def _rows(table: pa.Table, vocab: pa.Array) -> np.ndarray:
    """(m, 2) model rows of the edges' endpoints; -1 for a node without a vector."""
    cols = [pc.index_in(table.column(c), value_set=vocab).fill_null(-1).to_numpy(zero_copy_only=False)
            for c in ("src", "dst")]
    return np.stack(cols, axis=1).astype(np.int64) if table.num_rows else np.empty((0, 2), np.int64)


def _keys(rows: np.ndarray, n: int) -> np.ndarray:
    """One int64 per undirected pair of rows: ``min * n + max``."""
    return np.minimum(rows[:, 0], rows[:, 1]) * n + np.maximum(rows[:, 0], rows[:, 1])


def _non_edges(rng: np.random.Generator, nodes: np.ndarray, known: np.ndarray, count: int, n: int) -> np.ndarray:
    """``count`` distinct pairs of distinct ``nodes``, uniformly among the pairs whose key is not in
    ``known`` (sorted keys)."""
    possible = len(nodes) * (len(nodes) - 1) // 2 - len(known)
    if count > possible:
        raise ValueError(f"cannot sample {count} non-edges: {len(nodes)} nodes have only {possible} unjoined pairs")
    pairs = np.empty((0, 2), dtype=np.int64)
    while len(pairs) < count:
        want = 2 * (count - len(pairs)) + 16
        cand = nodes[rng.integers(0, len(nodes), (want, 2))]
        cand = cand[cand[:, 0] != cand[:, 1]]
        keys = _keys(cand, n)
        cand = cand[~np.isin(keys, known)]
        pairs = np.concatenate([pairs, cand])
        first = np.sort(np.unique(_keys(pairs, n), return_index=True)[1])
        pairs = pairs[first]
    return pairs[:count]


def link_prediction(
    words: Sequence[str],
    vectors: np.ndarray,
    held_out_edges,
    train_edges=None,
    *,
    negatives: int | None = None,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """Link prediction: held-out edges against sampled non-edges, ROC AUC of two scores.

    The positives are the held-out edges whose endpoints both have a vector
    (self-loops and repeats, in either orientation, dropped).  The negatives
    are ``negatives`` (default: as many as the positives) distinct pairs of
    distinct nodes drawn uniformly (seeded) among the candidate nodes -- the
    nodes of the given edges (held-out and training) that have a vector --
    excluding every known edge, training and held-out.  Without
    ``train_edges`` a training edge can be drawn as a negative; in a sparse
    graph that is rare (the graph's density: about mean degree / nodes).

    Scores:

    * ``auc_cosine``: the cosine of the endpoints' vectors.
    * ``auc_hadamard``: node2vec's protocol, logistic regression on the
      Hadamard (element-wise) product of the endpoints' raw vectors, each
      feature standardised first (the L2 penalty then does not depend on the
      vectors' scale: unstandardised, tiny vectors would score 0.5).  The
      classifier is cross-fitted on the evaluation pairs (``folds``-fold,
      stratified, seeded): every pair is scored by a model that did not see
      it, and the AUC is that of the out-of-fold scores.  (Fitting it on the
      training edges instead would reward the vectors for remembering them.)
      None when there are fewer than 2 pairs of a class.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, row order; node ids are matched as strings.
    vectors : ndarray, shape (len(words), dim)
        Embeddings, raw.
    held_out_edges, train_edges : table, array or iterable of pairs
        Edges as a pyarrow Table with ``src`` and ``dst`` columns (e.g.
        :func:`read_edges`), an ``(m, 2)`` array, or ``(src, dst)`` pairs.
    negatives : int, optional
        Number of non-edges; default the number of positives.
    folds : int
        Cross-fitting folds of the Hadamard classifier.
    seed : int
        Seed of the negatives and of the folds.

    Returns
    -------
    dict
        ``auc_cosine``, ``auc_hadamard``, ``positives``, ``negatives``,
        ``oov`` (held-out edges left out: an endpoint without a vector),
        ``dropped`` (self-loops and repeats), ``nodes`` (candidate nodes),
        ``known_edges`` (distinct edges excluded from the negatives),
        ``train_edges`` (whether they were given), ``folds`` and ``seed``.

    Examples
    --------
    >>> words = ["1", "2", "3", "4"]
    >>> vectors = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
    >>> r = link_prediction(words, vectors, [(1, 2), (3, 4), (4, 3), (1, 9)], negatives=2)
    >>> r["auc_cosine"], r["positives"], r["negatives"], r["oov"], r["dropped"]
    (1.0, 2, 2, 1, 1)
    """
    _, _, _, roc_auc_score, StratifiedKFold, cross_val_predict, scaled_lr = _sklearn()
    vectors = _check_inputs(words, vectors)
    n = len(words)
    vocab = pa.array(list(words), pa.string())
    held = _rows(_edge_table(held_out_edges), vocab)
    train = _rows(_edge_table(train_edges), vocab) if train_edges is not None else np.empty((0, 2), np.int64)
    oov = int(np.count_nonzero((held < 0).any(axis=1)))
    held = held[(held >= 0).all(axis=1)]
    distinct = np.sort(np.unique(_keys(held, n), return_index=True)[1]) if len(held) else np.empty(0, np.intp)
    keep = distinct[held[distinct, 0] != held[distinct, 1]]
    dropped = len(held) - len(keep)
    pos = held[keep]
    if not len(pos):
        raise ValueError(f"no held-out edge to score: {oov} of them have an endpoint without a vector")
    train = train[(train >= 0).all(axis=1)]
    known = np.unique(np.concatenate([_keys(pos, n), _keys(train, n)]))
    nodes = np.unique(np.concatenate([pos.ravel(), train.ravel()]))
    count = len(pos) if negatives is None else int(negatives)
    if count < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    neg = _non_edges(np.random.default_rng([int(seed), 1]), nodes, known, count, n)
    pairs = np.concatenate([pos, neg])
    truth = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    v = vectors.astype(np.float64)
    norms = np.linalg.norm(v, axis=1)
    norms[norms == 0] = 1
    cosine = np.einsum("ij,ij->i", v[pairs[:, 0]], v[pairs[:, 1]]) / (norms[pairs[:, 0]] * norms[pairs[:, 1]])
    k = min(int(folds), len(pos), len(neg))
    hadamard = None
    if k >= 2:
        cv = StratifiedKFold(k, shuffle=True, random_state=int(seed))
        with _one_blas_thread():
            proba = cross_val_predict(scaled_lr(), v[pairs[:, 0]] * v[pairs[:, 1]], truth, cv=cv,
                                      method="predict_proba")[:, 1]
        hadamard = float(roc_auc_score(truth, proba))
    return {"auc_cosine": float(roc_auc_score(truth, cosine)), "auc_hadamard": hadamard,
            "positives": len(pos), "negatives": len(neg), "oov": oov, "dropped": dropped,
            "nodes": len(nodes), "known_edges": len(known), "train_edges": train_edges is not None,
            "folds": k, "seed": int(seed)}


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def evaluate_graph_files(emb, node_labels: str | None = None, link_edges: str | None = None,
                         train_edges: str | None = None, train_ratios: Sequence[float] = (0.1, 0.5, 0.9),
                         splits: int = 10, seed: int = 0) -> dict:
    """Graph scores of loaded embeddings (``vocab``, ``vectors``) on the given files (URLs, any of
    them None): ``node_classification`` from ``node_labels`` (:func:`read_labels`), and
    ``link_prediction`` from the held-out ``link_edges`` with the known ``train_edges``
    (:func:`read_edges`).  Data that cannot be scored (too few labels or edges known to the model)
    is a DataError naming the file."""
    report: dict = {}
    if node_labels:
        labels = read_labels(node_labels)
        try:
            report["node_classification"] = node_classification(emb.vocab, emb.vectors, labels,
                                                                train_ratios=train_ratios, splits=splits, seed=seed)
        except ValueError as e:
            raise DataError(f"{node_labels}: {e}; check that the labels name the model's nodes") from None
    if link_edges:
        held = read_edges(link_edges)
        train = read_edges(train_edges) if train_edges else None
        try:
            report["link_prediction"] = link_prediction(emb.vocab, emb.vectors, held, train, seed=seed)
        except ValueError as e:
            raise DataError(f"{link_edges}: {e}; check that the edges join the model's nodes") from None
    return report
