"""Intrinsic evaluation of word embeddings, comparable to gensim's.

Pure numpy re-implementations of the two standard gensim benchmarks, one
metric for synthetic corpora and the recommender systems' protocol:

* :func:`analogy_accuracy` -- 3CosAdd word analogies ("king - man + woman"),
  the same questions, vocabulary restriction, case folding and counting as
  ``gensim.models.KeyedVectors.evaluate_word_analogies``, but batched so that
  thousands of questions cost a handful of matrix products.
* :func:`pair_spearman` -- rank correlation with human similarity judgements,
  like ``KeyedVectors.evaluate_word_pairs``.
* :func:`cluster_precision` -- nearest-neighbour label agreement, for corpora
  generated with a planted cluster structure.
* :func:`next_item_eval` -- leave-last-item-out next-item prediction on held-out
  sessions (HR@K, NDCG@K), ranking every row of the model by cosine in bounded
  memory, as recommender systems are evaluated.
* :func:`impression_eval` -- per-impression AUC, MRR, nDCG@5 and nDCG@10 of
  ranking each impression's shown items for its history, as impression-log
  benchmarks (MIND) score, with the click-through-rate and popularity priors.

Every function takes the vocabulary as ``words`` (ordered by descending
frequency, as a word2vec vocabulary is) and the raw, un-normalised
``vectors`` of shape ``(len(words), dim)``.  Vectors with norm 0 are treated
as having norm 1, so they get cosine similarity 0 with everything instead of
NaN.

The file readers (``readers``) take any
iterable of lines, e.g. an open file, and are strict: a malformed line is a
``ValueError`` naming its 1-based line number, instead of being silently
skipped as gensim does, because a silently shrunken benchmark makes scores
incomparable between runs.
"""

from __future__ import annotations

import pyarrow as pa

from ..embeddings import RANK_SCORING
from .analogies import analogy_accuracy
from .clusters import cluster_precision
from .impressions import (
    ctr_scorer,
    impression_eval,
    impression_metrics,
    item_priors,
    popularity_scorer,
)
from .pairs import pair_spearman
from .readers import (
    read_analogies,
    read_clusters,
    read_impressions,
    read_pairs,
    read_sessions,
    read_text,
)
from .sessions import hit_rate, ndcg, next_item_eval, target_ranks

__all__ = [
    "read_analogies",
    "analogy_accuracy",
    "read_pairs",
    "pair_spearman",
    "cluster_precision",
    "hit_rate",
    "ndcg",
    "target_ranks",
    "next_item_eval",
    "read_sessions",
    "impression_metrics",
    "impression_eval",
    "read_impressions",
    "item_priors",
    "ctr_scorer",
    "popularity_scorer",
    "evaluate_impressions",
]


def evaluate_files(emb, analogies: str | None = None, pairs: str | None = None, clusters: str | None = None,
                   restrict_vocab: int = 300_000, sessions: str | None = None, last: int | None = None,
                   k: int = 10, impressions: str | None = None, train_impressions: str | None = None,
                   scoring: str | None = None) -> dict:
    """Scores of loaded embeddings (``vocab``, ``vectors``, ``manifest``) on the given
    ground-truth files, any of them None; the files are URLs (local or ``s3://``).
    ``sessions`` (see :func:`read_sessions`) gives ``report["sessions"]``, the
    :func:`next_item_eval` of every model row with ``last`` (default 1) and ``k``, ranked by
    ``scoring`` as ``Embeddings.recommend`` ranks; ``impressions`` gives
    ``report["impressions"]`` (:func:`evaluate_impressions`)."""
    report: dict = {"run_id": emb.manifest.get("run_id"), "vocab_size": len(emb)}
    if analogies:
        report["analogies"] = analogy_accuracy(emb.vocab, emb.vectors, read_text(analogies, read_analogies),
                                               restrict_vocab=restrict_vocab)
    if pairs:
        report["pairs"] = pair_spearman(emb.vocab, emb.vectors, read_text(pairs, read_pairs),
                                        restrict_vocab=restrict_vocab)
    if clusters:
        report["cluster_precision"] = cluster_precision(emb.vocab, emb.vectors, read_text(clusters, read_clusters))
    if sessions:
        report["sessions"] = next_item_eval(emb.vocab, emb.vectors, read_sessions(sessions), last=last or 1, k=k,
                                            score=None if _scoring(emb, scoring) == "cosine" else
                                            lambda rows: emb.row_scores(rows, scoring))
        report["sessions"]["scoring"] = _scoring(emb, scoring)
    if impressions:
        report["impressions"] = evaluate_impressions(emb, read_impressions(impressions), scoring=scoring, last=last,
                                                     train=train_impressions and read_impressions(
                                                         train_impressions, sessions=True))
    return report


def evaluate_impressions(emb, impressions: pa.Table, scoring: str | None = None, last: int | None = None,
                         train: pa.Table | None = None) -> dict:
    """The embeddings ranking each impression's shown items (``Embeddings.rank`` with
    ``scoring``, for the last ``last`` items of the history, default all of it), and the
    click-through-rate and popularity priors of ``train`` (impressions, if given) ranking them.

    Returns
    -------
    dict
        :func:`impression_eval`'s counts and ``model`` (and ``ctr_prior``, ``popularity``) metrics;
        ``scoring`` (the rule used), ``last``, ``unknown_shown`` (shown items, in the scored
        impressions, that the model does not know: ranked last) and ``train_impressions`` (how
        many the priors were computed on, or None).
    """
    scoring = _scoring(emb, scoring)
    cut = slice(-last, None) if last else slice(None)
    scorers = {"model": lambda history, shown: emb.rank(history[cut], shown, scoring=scoring)}
    if train is not None:
        priors = item_priors(train["shown"].combine_chunks(), train["clicked"].combine_chunks())
        scorers.update(ctr_prior=ctr_scorer(priors), popularity=popularity_scorer(priors))
    report = impression_eval(impressions, scorers)
    unknown = sum(i not in emb.key_to_index for shown, clicked in zip(impressions["shown"].to_pylist(),
                                                                      impressions["clicked"].to_pylist())
                  if 0 < sum(clicked) < len(clicked) for i in shown)
    report.update(scoring=scoring, last=last, unknown_shown=unknown,
                  train_impressions=None if train is None else train.num_rows)
    return report


def _scoring(emb, scoring: str | None) -> str:
    """The rule ``Embeddings.rank`` and ``recommend`` use for ``scoring`` (None: their default)."""
    return scoring or ("cosine" if emb.context is None else RANK_SCORING)
