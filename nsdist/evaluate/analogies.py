"""3CosAdd word analogies ("king - man + woman"): the questions, vocabulary restriction, case
folding and counting of gensim's ``KeyedVectors.evaluate_word_analogies``, batched so that
thousands of questions cost a handful of matrix products."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from ..nearest import unit_rows
from .common import _BLOCK_ELEMENTS, _QUESTION_BATCH, _check_inputs, _restrict, _vocab_index

def analogy_accuracy(
    words: Sequence[str],
    vectors: np.ndarray,
    questions: Iterable[tuple[str, str, str, str, str]],
    *,
    restrict_vocab: int | None = 300_000,
    case_insensitive: bool = True,
    batch_size: int | None = None,
) -> dict:
    """Word-analogy accuracy with 3CosAdd, as gensim's ``evaluate_word_analogies``.

    For a question *a : b :: c : d* the prediction is the word whose unit
    vector has the highest cosine with ``unit(b) + unit(c) - unit(a)``, among
    the first ``restrict_vocab`` words, excluding *a*, *b* and *c*.  The
    question is correct when the prediction is *d*.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, most frequent first.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    questions : iterable of (section, a, b, c, d)
        As returned by :func:`read_analogies`.
    restrict_vocab : int or None, default 300000
        Only the first ``restrict_vocab`` words are candidate answers, and a
        question with any of its four words outside them is skipped and
        counted in ``oov``.  ``None`` means the whole vocabulary.
    case_insensitive : bool, default True
        Upper-case the questions and the vocabulary before matching.  Words
        that differ only by case share the vector of the first (most
        frequent) one, and every case variant of *a*, *b*, *c* is excluded
        from the answers.
    batch_size : int, default 1024
        Questions scored together.  Only affects speed and memory: the
        candidates are scanned in chunks of about ``2**22 / batch_size``
        words, keeping the working block near 16 MiB.

    Returns
    -------
    dict
        ``accuracy`` (``correct / total``, 0.0 when ``total`` is 0),
        ``correct``, ``total`` (questions evaluated), ``oov`` (questions
        skipped), ``oov_ratio`` (``oov / (total + oov)`` as a fraction, 0.0 for
        no questions) and ``sections``: ``{name: {"accuracy", "correct",
        "total", "oov"}}`` in order of first appearance.

    Examples
    --------
    Axes are (royal, male, female, fruit):

    >>> words = ["king", "queen", "man", "woman", "apple"]
    >>> vectors = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0],
    ...                     [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    >>> from nsdist.evaluate.readers import read_analogies
    >>> questions = read_analogies([": gender", "man woman king queen",
    ...                             "man king woman apple", "man woman king prince"])
    >>> result = analogy_accuracy(words, vectors, questions)
    >>> result["correct"], result["total"], result["oov"], result["accuracy"]
    (1, 2, 1, 0.5)
    >>> result["sections"]
    {'gender': {'accuracy': 0.5, 'correct': 1, 'total': 2, 'oov': 1}}
    """
    vectors = _check_inputs(words, vectors)
    limit = _restrict(len(words), restrict_vocab)
    batch_size = _QUESTION_BATCH if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = _vocab_index(words, limit, case_insensitive)
    fold = str.upper if case_insensitive else (lambda w: w)

    # Resolve every question to four row numbers up front; the expensive part
    # then runs on plain integer arrays, independent of Python strings.
    sections: dict[str, dict] = {}
    rows: list[tuple[int, int, int, int]] = []
    row_section: list[str] = []
    for n, question in enumerate(questions):
        try:
            if isinstance(question, str):
                raise TypeError  # would unpack into characters
            name, *quad = question
            a, b, c, d = (index.get(fold(w), -1) for w in quad)
        except (TypeError, ValueError, AttributeError):
            raise ValueError(
                f"question #{n} must be a (section, a, b, c, d) tuple of str, got {question!r}"
            ) from None
        counts = sections.setdefault(name, {"correct": 0, "total": 0, "oov": 0})
        if min(a, b, c, d) < 0:
            counts["oov"] += 1
            continue
        counts["total"] += 1
        rows.append((a, b, c, d))
        row_section.append(name)

    correct = np.zeros(len(rows), dtype=bool)
    if rows:
        correct = _solve_analogies(
            words, vectors, limit, index, np.array(rows, dtype=np.intp),
            case_insensitive, batch_size,
        )
    for name, ok in zip(row_section, correct.tolist()):
        sections[name]["correct"] += ok

    n_correct = int(correct.sum())
    total = len(rows)
    oov = sum(s["oov"] for s in sections.values())
    return {
        "accuracy": n_correct / total if total else 0.0,
        "correct": n_correct,
        "total": total,
        "oov": oov,
        "oov_ratio": oov / (total + oov) if total + oov else 0.0,
        "sections": {
            name: {
                "accuracy": s["correct"] / s["total"] if s["total"] else 0.0,
                "correct": s["correct"],
                "total": s["total"],
                "oov": s["oov"],
            }
            for name, s in sections.items()
        },
    }


def _solve_analogies(
    words: Sequence[str],
    vectors: np.ndarray,
    limit: int,
    index: dict[str, int],
    rows: np.ndarray,
    case_insensitive: bool,
    batch_size: int,
) -> np.ndarray:
    """Return a bool per question row ``(a, b, c, d)``: is 3CosAdd right?"""
    # Only the restricted rows can be asked about or answered, so only they
    # are normalised (the single full copy).
    unit = unit_rows(vectors[:limit])

    # Case folding can map several rows to one key.  ``canon[i]`` is the row
    # whose vector represents word i's key, so a prediction is right when its
    # canonical row is d's, whatever its case.  Rows that are non-canonical
    # variants must also be masked when they fold to a, b or c; they are rare,
    # so they are kept in a dict and handled per question.
    canon = np.arange(limit, dtype=np.intp)
    variants: dict[int, list[int]] = {}
    if case_insensitive:
        for i, word in enumerate(itertools.islice(words, limit)):
            first = index[word.upper()]
            if first != i:
                canon[i] = first
                variants.setdefault(first, []).append(i)

    batch_size = min(batch_size, len(rows))
    chunk = min(limit, max(256, _BLOCK_ELEMENTS // batch_size))
    scratch = np.empty(batch_size * chunk, dtype=np.float32)  # reused: no page faults per block

    correct = np.empty(len(rows), dtype=bool)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        n = len(batch)
        at = np.arange(n)
        a, b, c, d = batch.T
        # The query is not re-normalised as gensim does: scaling it by a
        # positive constant does not change which candidate scores highest.
        query = unit[b] + unit[c] - unit[a]

        # (question, row) cells to exclude: a, b, c and their case variants.
        mask_q = np.repeat(at, 3)
        mask_row = batch[:, :3].ravel()
        if variants:
            extra = [(q, v) for q, r in zip(mask_q.tolist(), mask_row.tolist())
                     for v in variants.get(r, ())]
            if extra:
                eq, er = np.array(extra, dtype=np.intp).T
                mask_q = np.concatenate([mask_q, eq])
                mask_row = np.concatenate([mask_row, er])

        best_score = np.full(n, -np.inf, dtype=np.float32)
        best_row = np.zeros(n, dtype=np.intp)
        for lo in range(0, limit, chunk):
            hi = min(lo + chunk, limit)
            scores = scratch[:n * (hi - lo)].reshape(n, hi - lo)
            np.matmul(query, unit[lo:hi].T, out=scores)  # BLAS reads the transpose in place
            inside = (mask_row >= lo) & (mask_row < hi)
            scores[mask_q[inside], mask_row[inside] - lo] = -np.inf
            top = scores.argmax(axis=1)
            top_score = scores[at, top]
            # Strictly greater: on an exact tie the earlier row wins, the
            # same answer a single argmax over all candidates would give.
            better = top_score > best_score
            best_score[better] = top_score[better]
            best_row[better] = top[better] + lo
        # If every candidate was masked (a vocabulary of <= 3 words) there is
        # no prediction; gensim counts that as incorrect, so must we.
        correct[start:start + n] = (canon[best_row] == d) & (best_score > -np.inf)
    return correct
