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

from .analogies import analogy_accuracy
from .clusters import cluster_precision
from .pairs import pair_spearman
from .readers import read_analogies, read_clusters, read_pairs, read_sessions, read_text
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
]


def evaluate_files(emb, analogies: str | None = None, pairs: str | None = None, clusters: str | None = None,
                   restrict_vocab: int = 300_000, sessions: str | None = None, last: int = 1,
                   k: int = 10) -> dict:
    """Scores of loaded embeddings (``vocab``, ``vectors``, ``manifest``) on the given
    ground-truth files, any of them None; the files are URLs (local or ``s3://``).
    ``sessions`` (see :func:`read_sessions`) gives ``report["sessions"]``, the
    :func:`next_item_eval` of every model row with ``last`` and ``k``."""
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
        report["sessions"] = next_item_eval(emb.vocab, emb.vectors, read_sessions(sessions), last=last, k=k)
    return report
