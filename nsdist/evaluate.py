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

The file readers (:func:`read_analogies`, :func:`read_pairs`) take any
iterable of lines, e.g. an open file, and are strict: a malformed line is a
``ValueError`` naming its 1-based line number, instead of being silently
skipped as gensim does, because a silently shrunken benchmark makes scores
incomparable between runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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

#: Number of float32 similarity scores computed per matrix product
#: (``questions x candidates``): 2**22 scores = 16 MiB.  With word2vec-sized
#: dimensions (~100) a product is bound by writing its output, so scoring a
#: block that stays in cache and reducing it at once is ~1.5x faster than
#: materialising the scores against the whole vocabulary, and memory use no
#: longer grows with ``restrict_vocab``.
_BLOCK_ELEMENTS = 1 << 22

#: Cosines this close to a target's count as ties with it (against it): float32 rounding, whose
#: order depends on how a product is blocked, cannot tell them apart.
_TIE = 1e-6

#: Default number of analogy questions per block.
_QUESTION_BATCH = 1024


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def _text_lines(lines: Iterable[str | bytes]) -> Iterable[tuple[int, str]]:
    """Yield ``(1-based line number, text)``; bytes are decoded as UTF-8.

    Files opened in binary mode are accepted because gensim reads its
    benchmark files that way; a UTF-8 byte-order mark on the first line is
    dropped so it cannot end up glued to the first word.
    """
    for line_no, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        if line_no == 1:
            line = line.lstrip("\ufeff")
        yield line_no, line


def read_analogies(lines: Iterable[str]) -> list[tuple[str, str, str, str, str]]:
    """Parse analogy questions in the ``questions-words.txt`` format.

    Parameters
    ----------
    lines : iterable of str (or bytes)
        Lines such as an open file.  ``: name`` starts a section; every other
        non-blank line is a question ``a b c d``, meaning *a is to b as c is
        to d*.

    Returns
    -------
    list of (section, a, b, c, d)
        One tuple per question, words kept in their original case.

    Raises
    ------
    ValueError
        For a question before the first section header, a question that does
        not have exactly four words, or a header without a name.  The message
        names the 1-based line number and the expected format.

    Examples
    --------
    >>> read_analogies([": capital", "athens greece berlin germany", "",
    ...                 ": gender", "king queen man woman"])
    [('capital', 'athens', 'greece', 'berlin', 'germany'), ('gender', 'king', 'queen', 'man', 'woman')]
    >>> read_analogies([": s", "a b c"])
    Traceback (most recent call last):
    ...
    ValueError: line 2: expected an analogy 'a b c d' (4 whitespace-separated words) or a ': section' header, got 3 words: 'a b c'
    """
    questions: list[tuple[str, str, str, str, str]] = []
    section: str | None = None
    for line_no, line in _text_lines(lines):
        text = line.strip()
        if not text:
            continue
        if text.startswith(":"):
            # gensim strips ': ' with lstrip(': '); stripping one ':' and then
            # whitespace gives the same name for every well-formed header.
            section = text[1:].strip()
            if not section:
                raise ValueError(
                    f"line {line_no}: section header has no name; expected ': section name'"
                )
            continue
        parts = text.split()
        if len(parts) != 4:
            raise ValueError(
                f"line {line_no}: expected an analogy 'a b c d' (4 whitespace-separated words) "
                f"or a ': section' header, got {len(parts)} words: {text!r}"
            )
        if section is None:
            raise ValueError(
                f"line {line_no}: analogy {text!r} appears before any ': section' header; "
                "expected a ': section name' line first"
            )
        a, b, c, d = parts
        questions.append((section, a, b, c, d))
    return questions


def read_pairs(lines: Iterable[str]) -> list[tuple[str, str, float]]:
    """Parse word-similarity judgements in the wordsim-353 ``.tsv`` style.

    Parameters
    ----------
    lines : iterable of str (or bytes)
        Lines ``w1<TAB>w2<TAB>score``.  A line without a tab is split on
        any whitespace instead.  Blank lines and lines starting with ``#`` are
        ignored.

    Returns
    -------
    list of (w1, w2, score)

    Raises
    ------
    ValueError
        For a line without exactly three fields or whose score is not a finite
        number; the message names the 1-based line number.

    Examples
    --------
    >>> read_pairs(["# word1 word2 score", "tiger\\tcat\\t7.35", "book paper 7.46"])
    [('tiger', 'cat', 7.35), ('book', 'paper', 7.46)]
    >>> read_pairs(["tiger\\tcat\\thigh"])
    Traceback (most recent call last):
    ...
    ValueError: line 1: score 'high' is not a finite number; expected 'word1<TAB>word2<TAB>score'
    """
    pairs: list[tuple[str, str, float]] = []
    for line_no, line in _text_lines(lines):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # Tab is the canonical separator and allows a multi-word entry;
        # whitespace splitting is the fallback for hand-written files.
        parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise ValueError(
                f"line {line_no}: expected 'word1<TAB>word2<TAB>score' (3 fields), "
                f"got {len(parts)} fields: {text!r}"
            )
        w1, w2, raw = parts
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(
                f"line {line_no}: score {raw!r} is not a finite number; "
                "expected 'word1<TAB>word2<TAB>score'"
            )
        pairs.append((w1, w2, score))
    return pairs


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _check_inputs(words: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n_words, dim), got shape {vectors.shape}")
    if len(words) != vectors.shape[0]:
        raise ValueError(
            f"len(words) = {len(words)} does not match vectors.shape[0] = {vectors.shape[0]}"
        )
    return vectors


def _restrict(n_words: int, restrict_vocab: int | None) -> int:
    if restrict_vocab is None:
        return n_words
    restrict_vocab = int(restrict_vocab)
    if restrict_vocab < 0:
        raise ValueError(f"restrict_vocab must be >= 0, got {restrict_vocab}")
    return min(restrict_vocab, n_words)


def _vocab_index(words: Sequence[str], limit: int, case_insensitive: bool) -> dict[str, int]:
    """Map each (possibly upper-cased) word among ``words[:limit]`` to its row.

    When several words fold to the same key the first, i.e. most frequent,
    wins -- exactly gensim's ``{k.upper(): i for k in reversed(keys)}``.
    """
    index: dict[str, int] = {}
    for i, word in enumerate(itertools.islice(words, limit)):
        index.setdefault(word.upper() if case_insensitive else word, i)
    return index


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Return a float32 copy of ``vectors`` with rows scaled to unit length.

    This is the only full-size copy the evaluation makes.  The norms are
    taken with ``einsum`` so that no squared temporary of the same size is
    allocated, and a zero norm is replaced by 1: the zero vector then stays
    zero and scores cosine 0 against everything instead of NaN.
    """
    unit = np.array(vectors, dtype=np.float32, order="C", copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", unit, unit))
    norms[norms == 0] = 1
    unit /= norms[:, None]
    return unit


# ---------------------------------------------------------------------------
# Analogies
# ---------------------------------------------------------------------------


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
    unit = _unit_rows(vectors[:limit])

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


# ---------------------------------------------------------------------------
# Word pairs
# ---------------------------------------------------------------------------


def _rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks.

    >>> _rankdata(np.array([10.0, 20.0, 10.0, 30.0]))
    array([1.5, 3. , 1.5, 4. ])
    """
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)  # 0-based start of each tie group
    end = np.r_[first[1:], len(x)]  # exclusive end
    # A group occupies ranks first+1 .. end, whose mean is (first + 1 + end) / 2.
    mean_rank = (first + 1 + end) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, NaN when undefined (fewer than 2 points or a constant side).

    Constancy is tested on the raw values because the centred values of a
    constant array need not be exactly zero in floating point.
    """
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    r = float(np.dot(xc, yc) / math.sqrt(np.dot(xc, xc) * np.dot(yc, yc)))
    return max(-1.0, min(1.0, r))


def pair_spearman(
    words: Sequence[str],
    vectors: np.ndarray,
    pairs: Iterable[tuple[str, str, float]],
    *,
    restrict_vocab: int | None = 300_000,
    case_insensitive: bool = True,
) -> dict:
    """Correlation between human similarity scores and cosine similarity.

    Like gensim's ``evaluate_word_pairs``: pairs with a word outside the first
    ``restrict_vocab`` words are skipped, and ``case_insensitive`` folds case
    the same way as in :func:`analogy_accuracy`.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, most frequent first.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    pairs : iterable of (w1, w2, score)
        As returned by :func:`read_pairs`.
    restrict_vocab : int or None, default 300000
        Only the first ``restrict_vocab`` words count as known; ``None`` means
        the whole vocabulary.
    case_insensitive : bool, default True
        Upper-case pairs and vocabulary before matching; the first of several
        case variants supplies the vector.

    Returns
    -------
    dict
        ``spearman`` (Spearman's rho, ties given average ranks), ``pearson``,
        ``pairs`` (number used), ``oov`` (number skipped) and ``oov_ratio``
        (``oov / (pairs + oov)``, a fraction).  A correlation is NaN when it
        is undefined: fewer than two usable pairs or a constant side.

    Examples
    --------
    >>> words = ["cat", "tiger", "car"]
    >>> vectors = np.array([[1, 0.2], [1, 0.5], [0, 1]], dtype=np.float32)
    >>> result = pair_spearman(words, vectors, [("cat", "tiger", 9.0), ("cat", "car", 1.0),
    ...                                          ("Tiger", "car", 2.0), ("cat", "dog", 8.0)])
    >>> result["spearman"], result["pairs"], result["oov"], result["oov_ratio"]
    (1.0, 3, 1, 0.25)
    """
    vectors = _check_inputs(words, vectors)
    limit = _restrict(len(words), restrict_vocab)
    index = _vocab_index(words, limit, case_insensitive)
    fold = str.upper if case_insensitive else (lambda w: w)

    left: list[int] = []
    right: list[int] = []
    gold: list[float] = []
    oov = 0
    for w1, w2, score in pairs:
        i, j = index.get(fold(w1), -1), index.get(fold(w2), -1)
        if i < 0 or j < 0:
            oov += 1
            continue
        left.append(i)
        right.append(j)
        gold.append(float(score))

    used = len(gold)
    spearman = pearson = math.nan
    if used:
        # Only the rows actually asked about are gathered, so no full-size
        # normalised copy is needed; float64 keeps the cosines exact enough
        # that rank ties come only from genuinely equal similarities.
        u = vectors[left].astype(np.float64)
        v = vectors[right].astype(np.float64)
        nu = np.linalg.norm(u, axis=1)
        nv = np.linalg.norm(v, axis=1)
        nu[nu == 0] = 1
        nv[nv == 0] = 1
        model = np.einsum("ij,ij->i", u, v) / (nu * nv)
        human = np.array(gold, dtype=np.float64)
        pearson = _pearson(human, model)
        spearman = _pearson(_rankdata(human), _rankdata(model))
    return {
        "spearman": spearman,
        "pearson": pearson,
        "pairs": used,
        "oov": oov,
        "oov_ratio": oov / (used + oov) if used + oov else 0.0,
    }


# ---------------------------------------------------------------------------
# Planted clusters
# ---------------------------------------------------------------------------


def read_clusters(lines: Iterable[str]) -> dict[str, str]:
    """Parse ``word<TAB>label`` lines (blank lines skipped) into {word: label}.

    >>> read_clusters(["a\\tx\\n", "\\n", "b\\tx\\textra\\n"])
    {'a': 'x', 'b': 'x'}
    """
    labels = {}
    for line_no, line in _text_lines(lines):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise ValueError(f"line {line_no}: expected 'word<TAB>label', got {line.strip()[:80]!r}")
        labels[fields[0]] = fields[1]
    return labels


def cluster_precision(
    words: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, str],
    *,
    topn: int = 10,
) -> float:
    """Mean fraction of each labelled word's nearest neighbours sharing its label.

    Only words that are both in ``labels`` and in ``words`` take part, as
    queries and as neighbours (matching is exact, case-sensitive).  For each
    of them the ``topn`` most cosine-similar other participants are found
    and the fraction with the same label is taken; the result is the mean
    over participants.  With fewer than ``topn + 1`` participants every other
    participant is a neighbour.  Ties in similarity are broken in favour of
    the word earlier in ``words`` (more frequent), so the result is
    deterministic.

    Parameters
    ----------
    words : sequence of str
        Vocabulary.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    labels : mapping of str to label
        Planted cluster of each word; words missing from ``words`` are
        ignored.
    topn : int, default 10
        Neighbours examined per word.

    Returns
    -------
    float
        In [0, 1]; 0.0 when fewer than two labelled words are present (no
        word has a neighbour).

    Examples
    --------
    Two tight clusters, but ``"c"`` (label L) lies among the R words:

    >>> words = ["a", "b", "c", "x", "y", "unlabelled"]
    >>> vectors = np.array([[1, 0], [1, 0.1], [0.1, 1], [0, 1], [0.03, 1], [1, 0.05]],
    ...                    dtype=np.float32)
    >>> labels = {"a": "L", "b": "L", "c": "L", "x": "R", "y": "R", "zzz": "R"}
    >>> cluster_precision(words, vectors, labels, topn=1)
    0.8
    """
    vectors = _check_inputs(words, vectors)
    topn = int(topn)
    if topn < 1:
        raise ValueError(f"topn must be >= 1, got {topn}")

    rows: list[int] = []
    label_ids: list[int] = []
    label_codes: dict = {}
    seen: set[str] = set()
    for i, word in enumerate(words):
        if word in labels and word not in seen:
            seen.add(word)
            rows.append(i)
            label_ids.append(label_codes.setdefault(labels[word], len(label_codes)))
    n = len(rows)
    if n < 2:
        return 0.0
    k = min(topn, n - 1)
    unit = _unit_rows(vectors[rows])
    lab = np.array(label_ids, dtype=np.intp)

    hits = 0
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = unit[start:stop] @ unit.T
        scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not your own neighbour
        # Select the top k without a full sort: find the k-th largest score,
        # take everything above it, then fill up with scores equal to it in
        # column order.  Columns follow ``words`` order, so ties go to the
        # more frequent word, unlike argpartition's arbitrary choice.
        kth = np.partition(scores, n - k, axis=1)[:, n - k, None]
        above = scores > kth
        tied = scores == kth
        still_needed = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= still_needed))
        same = lab[start:stop, None] == lab[None, :]
        hits += int(np.count_nonzero(chosen & same))
    return hits / (n * k)


# ---------------------------------------------------------------------------
# Next-item prediction on sessions
# ---------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def hit_rate(ranks, k: int) -> float:
    """HR@K: the share of cases whose target ranks among the first ``k``.

    Parameters
    ----------
    ranks : array of int
        1-based rank of each case's target; 0 marks a case that could not be
        ranked (unknown target, no query), which is a miss.
    k : int
        Cut-off, >= 1.

    Returns
    -------
    float
        In [0, 1]; 0.0 for no cases.

    Examples
    --------
    >>> hit_rate([1, 3, 11, 0], k=10)
    0.5
    """
    ranks = np.asarray(ranks)
    k = _check_k(k)
    return float(np.mean((ranks >= 1) & (ranks <= k))) if ranks.size else 0.0


def ndcg(ranks, k: int) -> float:
    """NDCG@K with one relevant item per case: the mean of ``1 / log2(rank + 1)``
    over the cases, a target ranked after ``k`` (or not ranked) scoring 0.

    With a single relevant item the ideal DCG is 1, so no normalisation is left.

    Parameters
    ----------
    ranks : array of int
        As for :func:`hit_rate`.
    k : int
        Cut-off, >= 1.

    Returns
    -------
    float
        In [0, 1]; 0.0 for no cases.

    Examples
    --------
    >>> ndcg([1, 3, 11, 0], k=10)  # (1/log2(2) + 1/log2(4) + 0 + 0) / 4
    0.375
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    k = _check_k(k)
    if not ranks.size:
        return 0.0
    hit = (ranks >= 1) & (ranks <= k)
    gains = np.zeros(ranks.shape)
    gains[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return float(gains.mean())


def _row_norms(vectors: np.ndarray) -> np.ndarray:
    """float32 row norms (a zero row counts as 1, so it scores 0), without a squared copy."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)).astype(np.float32)
    norms[norms == 0] = 1
    return norms


def _mean_unit(vectors: np.ndarray, norms: np.ndarray, queries: Sequence[np.ndarray]) -> np.ndarray:
    """One float32 row per query: the mean of the unit vectors of its (non-empty) rows."""
    lengths = np.array([len(q) for q in queries], dtype=np.intp)
    rows = np.concatenate(queries).astype(np.intp)
    unit = vectors[rows].astype(np.float32) / norms[rows, None]
    return np.add.reduceat(unit, np.cumsum(lengths) - lengths, axis=0) / lengths[:, None]


def _outscoring(vectors: np.ndarray, norms: np.ndarray, query: np.ndarray, floor: np.ndarray,
                masked_q: np.ndarray, masked_row: np.ndarray) -> np.ndarray:
    """Per query, how many rows not masked for it score at least its ``floor``.

    The rows are scanned in chunks so that a product holds about
    ``_BLOCK_ELEMENTS`` scores, whatever the number of rows; the masked
    ``(query, row)`` cells are sorted by row so each chunk finds its own by
    bisection.
    """
    n, b = len(vectors), len(query)
    chunk = min(n, max(256, _BLOCK_ELEMENTS // b))
    order = np.argsort(masked_row, kind="stable")
    masked_q, masked_row = masked_q[order], masked_row[order]
    bounds = np.searchsorted(masked_row, np.arange(0, n + chunk, chunk))
    scratch = np.empty(b * chunk, dtype=np.float32)  # reused: no page faults per chunk
    count = np.zeros(b, dtype=np.int64)
    for i, lo in enumerate(range(0, n, chunk)):
        hi = min(lo + chunk, n)
        scores = scratch[:b * (hi - lo)].reshape(b, hi - lo)
        # Normalising the chunk (rows x dim) costs far less than dividing its scores (queries x rows).
        np.matmul(query, (vectors[lo:hi] / norms[lo:hi, None]).T, out=scores)
        cells = slice(bounds[i], bounds[i + 1])
        scores[masked_q[cells], masked_row[cells] - lo] = -np.inf
        count += (scores >= floor[:, None]).sum(axis=1)
    return count


def target_ranks(
    vectors: np.ndarray,
    queries: Sequence[np.ndarray],
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Rank of each target among all rows, by cosine to the mean of its query rows.

    The query of case ``i`` is the mean of the unit vectors of rows
    ``queries[i]``.  Every row is a candidate except the rows in
    ``exclude[i]``; the target itself is always ranked.  The rank is 1 plus
    the number of other candidates scoring at least the target's cosine minus
    ``_TIE`` (1e-6), so ties count against the target, including those that
    float32 rounding would order either way (a model of identical or zero
    vectors ranks every target last, not first).

    Memory is bounded whatever the number of rows: ``batch_size`` queries are
    scored against chunks of about ``2**22 / batch_size`` rows at a time
    (16 MiB of float32 scores; with the default 1024 queries, chunks of 4096
    rows), and only the count of rows above each target is kept -- never a
    score matrix over all rows, nor a normalised copy of the vectors.

    Parameters
    ----------
    vectors : ndarray, shape (n_rows, dim)
        Un-normalised embeddings.
    queries : sequence of int arrays
        Rows averaged into each case's query; none may be empty.
    targets : array of int
        Row of each case's target.
    exclude : sequence of int arrays, optional
        Rows left out of each case's ranking (e.g. items already seen).
    batch_size : int, default 1024
        Queries scored together; only affects speed and memory.

    Returns
    -------
    ndarray of int64
        1-based ranks.

    Examples
    --------
    >>> vectors = np.array([[1, 0], [1, 1], [0, 1], [-1, 0]], dtype=np.float32)
    >>> target_ranks(vectors, [np.array([0])], np.array([2])).tolist()
    [3]
    >>> target_ranks(vectors, [np.array([0])], np.array([2]), [np.array([0, 1])]).tolist()
    [1]
    """
    vectors = np.asarray(vectors)
    targets = np.asarray(targets, dtype=np.intp)
    exclude = [np.empty(0, np.intp)] * len(targets) if exclude is None else exclude
    if not len(queries) == len(targets) == len(exclude):
        raise ValueError(f"{len(queries)} queries, {len(targets)} targets and {len(exclude)} exclusions: "
                         "expected one of each per case")
    batch_size = _QUESTION_BATCH if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    norms = _row_norms(vectors)
    ranks = np.empty(len(targets), dtype=np.int64)
    for start in range(0, len(targets), batch_size):
        at = slice(start, start + batch_size)
        query = _mean_unit(vectors, norms, queries[at])
        target = targets[at]
        floor = np.einsum("ij,ij->i", query, (vectors[target] / norms[target, None]).astype(np.float32)) - _TIE
        # The target's own cell is masked too: its score is the floor itself.
        masked = [*exclude[at], target]
        masked_q = np.concatenate([np.repeat(np.arange(len(target)), [len(e) for e in exclude[at]]),
                                   np.arange(len(target))])
        masked_row = np.concatenate(masked).astype(np.intp)
        ranks[at] = 1 + _outscoring(vectors, norms, query, floor, masked_q, masked_row)
    return ranks


def _next_item_cases(rows: np.ndarray, lengths: np.ndarray, last: int):
    """Leave-last-out cases of sessions given as known rows (-1: unknown) and lengths.

    Returns ``(targets, queries, exclude, counts)``: per ranked case its target
    row, its query rows (the last ``last`` known rows before the target) and
    its excluded rows (the known rows before the target, the target's own row
    excepted); ``counts`` holds ``sessions`` (length >= 2), ``too_short``,
    ``oov`` (unknown target), ``skipped`` (no known row before a known
    target) and ``repeats`` (targets seen earlier in their session).
    """
    counts = {"sessions": 0, "too_short": 0, "oov": 0, "skipped": 0, "repeats": 0}
    targets: list[int] = []
    queries: list[np.ndarray] = []
    exclude: list[np.ndarray] = []
    ends = np.cumsum(lengths)
    for end, length in zip(ends.tolist(), lengths.tolist()):
        if length < 2:
            counts["too_short"] += 1
            continue
        counts["sessions"] += 1
        target, history = rows[end - 1], rows[end - length:end - 1]
        known = history[history >= 0]
        if target < 0 or not len(known):
            counts["oov" if target < 0 else "skipped"] += 1
            continue
        seen = known == target
        counts["repeats"] += bool(seen.any())
        targets.append(int(target))
        queries.append(known[-last:])
        exclude.append(known[~seen])
    return np.array(targets, dtype=np.intp), queries, exclude, counts


def _as_sessions(sessions) -> pa.ListArray:
    """Sessions as one Arrow list<string> array; integer ids become their decimal strings."""
    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    if not isinstance(sessions, pa.Array):
        sessions = pa.array([list(map(str, s)) if s is not None else None for s in sessions],
                            pa.list_(pa.string()))
    kind = sessions.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not (
            pa.types.is_integer(kind.value_type) or pa.types.is_string(kind.value_type)
            or pa.types.is_large_string(kind.value_type)):
        raise ValueError(f"sessions must be lists of item ids (integers or strings), got {kind}")
    return pc.cast(sessions, pa.list_(pa.string()))


def next_item_eval(
    words: Sequence[str],
    vectors: np.ndarray,
    sessions,
    *,
    last: int = 1,
    k: int = 10,
    batch_size: int | None = None,
) -> dict:
    """Leave-last-item-out next-item prediction: HR@K and NDCG@K.

    For each session of two items or more, the last item is the target and
    the query is the mean of the unit vectors of the last ``last`` items
    before it that the model knows.  All rows are ranked by cosine to the
    query (see :func:`target_ranks`) except the session's earlier items; the
    target is ranked even when it occurred earlier (such sessions are counted
    in ``repeats``).  A session whose target is unknown (``oov``) or that has
    no known item before its target (``skipped``) is a miss, as in the
    standard protocol; a session shorter than two items is not a case.

    Parameters
    ----------
    words : sequence of str
        Vocabulary, row order.  Item ids are matched as strings: integer ids
        (in ``sessions`` or an int64 Parquet column) are compared as their
        decimal strings, which is how nsdist's vocabulary holds them.
    vectors : ndarray, shape (len(words), dim)
        Un-normalised embeddings.
    sessions : sequence of sequences of str or int, or a pyarrow list array
        Items in click order, oldest first.
    last : int, default 1
        Items averaged into the query.
    k : int, default 10
        Cut-off of HR@K and NDCG@K.
    batch_size : int, default 1024
        Queries ranked together (see :func:`target_ranks`).

    Returns
    -------
    dict
        ``hit_rate``, ``ndcg``, ``hits``, ``k``, ``last`` and the counts
        ``sessions`` (the denominator: sessions of two items or more),
        ``ranked``, ``oov``, ``skipped``, ``too_short`` and ``repeats``.

    Examples
    --------
    >>> words = ["10", "11", "20", "21"]
    >>> vectors = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=np.float32)
    >>> r = next_item_eval(words, vectors, [[10, 11], [20, 99, 10], [21, 20], [99, 10], [11]], k=1)
    >>> r["hit_rate"], r["hits"], r["sessions"], r["oov"], r["skipped"], r["too_short"]
    (0.5, 2, 4, 0, 1, 1)
    """
    vectors = _check_inputs(words, vectors)
    last, k = int(last), _check_k(k)
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    sessions = _as_sessions(sessions)
    rows = pc.index_in(sessions.flatten(), value_set=pa.array(list(words), pa.string()))
    rows = rows.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
    lengths = pc.list_value_length(sessions).fill_null(0).to_numpy(zero_copy_only=False)
    targets, queries, exclude, counts = _next_item_cases(rows, lengths, last)
    ranks = np.zeros(counts["sessions"], dtype=np.int64)  # unranked cases stay 0: misses
    if len(targets):
        ranks[:len(targets)] = target_ranks(vectors, queries, targets, exclude, batch_size=batch_size)
    hits = int(np.count_nonzero((ranks >= 1) & (ranks <= k)))
    return {"hit_rate": hit_rate(ranks, k), "ndcg": ndcg(ranks, k), "hits": hits, "k": k, "last": last,
            "ranked": len(targets), **counts}


#: File names read as Parquet; the corpus reader tells Parquet from text the same way.
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def _parquet_sessions(f, url: str, column: str) -> pa.ListArray:
    """The ``column`` of a Parquet file of sessions; ValueError naming the problem."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except pa.ArrowInvalid as e:
        raise ValueError(f"not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise ValueError(f"no column {column!r} (its columns: {', '.join(names)}); "
                         f"write the sessions' items as a list column named {column!r}")
    return _as_sessions(pf.read(columns=[column]).column(column))


def read_sessions(url: str, column: str = "items", storage_options=None) -> pa.ListArray:
    """Read sessions for :func:`next_item_eval` from a Parquet or text file (local or ``s3://``).

    Parameters
    ----------
    url : str
        A ``.parquet`` (``.parq``, ``.pq``) file with a list column of item
        ids, integers or strings, one row per session; or a text file (any
        other name, optionally compressed), one session per line, item ids
        separated by whitespace, blank lines ignored.
    column : str, default "items"
        The Parquet column holding each session's items in click order.

    Returns
    -------
    pyarrow.ListArray
        list<string>: integer ids as their decimal strings.

    Raises
    ------
    DataError
        The file is not readable Parquet, lacks ``column``, or the column does
        not hold lists of ids; the message names the file and the fix.
    """
    from . import storage
    from .errors import DataError

    try:
        if url.endswith(_PARQUET_SUFFIXES):
            with storage.open_read(url, storage_options) as f:
                return _parquet_sessions(f, url, column)
        return pa.array([line.split() for line in storage.lines(url, storage_options) if line.strip()],
                        pa.list_(pa.string()))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"sessions file {url!r}: {e}") from None


# ---------------------------------------------------------------------------
# Ground-truth files
# ---------------------------------------------------------------------------


def _read(url: str, parse):
    """``parse`` of the lines of the file at ``url``; a malformed file is a DataError naming it."""
    from . import storage
    from .errors import DataError

    try:
        return parse(storage.lines(url))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{url}: {e}; fix the file or pass another") from None


def evaluate_files(emb, analogies: str | None = None, pairs: str | None = None, clusters: str | None = None,
                   restrict_vocab: int = 300_000, sessions: str | None = None, last: int = 1,
                   k: int = 10) -> dict:
    """Scores of loaded embeddings (``vocab``, ``vectors``, ``manifest``) on the given
    ground-truth files, any of them None; the files are URLs (local or ``s3://``).
    ``sessions`` (see :func:`read_sessions`) gives ``report["sessions"]``, the
    :func:`next_item_eval` of every model row with ``last`` and ``k``."""
    report: dict = {"run_id": emb.manifest.get("run_id"), "vocab_size": len(emb)}
    if analogies:
        report["analogies"] = analogy_accuracy(emb.vocab, emb.vectors, _read(analogies, read_analogies),
                                               restrict_vocab=restrict_vocab)
    if pairs:
        report["pairs"] = pair_spearman(emb.vocab, emb.vectors, _read(pairs, read_pairs),
                                        restrict_vocab=restrict_vocab)
    if clusters:
        report["cluster_precision"] = cluster_precision(emb.vocab, emb.vectors, _read(clusters, read_clusters))
    if sessions:
        report["sessions"] = next_item_eval(emb.vocab, emb.vectors, read_sessions(sessions), last=last, k=k)
    return report
