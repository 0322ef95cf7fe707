"""The query object over published vectors: gensim 4 ``KeyedVectors`` calls on one copy of them.

``nsdist.load`` returns an :class:`Embeddings`. Its queries take the arguments of gensim's
``KeyedVectors`` and give the same answers on the same vectors (the same words in the same
order, scores equal up to float32 rounding), except where gensim's answer is a trap:

* a zero vector scores 0 against every word (gensim: NaN);
* ``most_similar_cosmul`` honours ``restrict_vocab`` (gensim 4 accepts it and ignores it);
* ``n_similarity`` raises :class:`~nsdist.errors.UnknownWord` for an unknown word (gensim
  leaves it out of the mean); ``doesnt_match`` leaves unknown words out with a warning, as
  gensim does;
* ``most_similar("word", 10)`` is refused: gensim reads the 10 as ``negative``, the word at
  index 10, which silently answers another question than ``topn=10``;
* similarities are Python floats, and ``emb[[]]`` is an empty (0, dim) array.

Unknown words raise :class:`~nsdist.errors.UnknownWord`, a ``KeyError``. As in gensim, an
int that is not a word is a row index (``emb[0]`` is the most frequent word's vector).

Memory: the vectors are held once, or memory-mapped (``nsdist.load`` of a local run: the
operating system pages rows in as queries read them). Queries read the rows in blocks and
divide scores by per-row norms (V floats, computed on first use) instead of keeping a normalised
copy, as gensim's ``most_similar`` does;
``to_keyedvectors`` gives gensim its own copy, since gensim may change its vectors in place.
The output (context) vectors, which ``rank`` scores by as SGNS was trained, are read from the
run only when a query first needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from .errors import ConfigError, DataError, UnknownWord

log = logging.getLogger(__name__)

_KEY_TYPES = (str, int, np.integer)  # a word, or a row index
_TERM_TYPES = (*_KEY_TYPES, np.ndarray)  # what a query may hold besides (term, weight) pairs


def _as_list(value) -> list:
    """A query argument as a list of terms: one word or vector, a 2-d array (its rows), or a list.

    >>> _as_list("king"), _as_list(None), len(_as_list(np.zeros((3, 2))))
    (['king'], [], 3)
    """
    if value is None:
        return []
    if isinstance(value, _KEY_TYPES) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [value]
    return list(value)


def _weighted(term) -> tuple:
    """A (word or vector, weight) pair as gensim takes them; the weight is used as given, in
    ``negative`` too.

    >>> _weighted(("king", 2))
    ('king', 2.0)
    """
    if (isinstance(term, (tuple, list)) and len(term) == 2 and isinstance(term[0], _TERM_TYPES)
            and isinstance(term[1], Real)):
        return term[0], float(term[1])
    raise ConfigError(f"cannot query with {term!r}: pass words, vectors or (word or vector, weight) pairs")


def _check_negative(negative, method: str) -> None:
    """Refuse ``most_similar("word", 10)``: gensim takes the 10 as a negative word index."""
    if isinstance(negative, (int, np.integer)) and not isinstance(negative, bool):
        raise ConfigError(f"{method}(word, {negative}) passes {negative} as `negative`, not `topn`: write "
                          f"{method}(word, topn={negative}) (a row index as a negative term: negative=[{negative}])")


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (a zero vector stays zero), as float32."""
    norm = np.linalg.norm(v)
    return (v / norm if norm > 0 else v).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow warnings."""
    return 0.5 * (1 + np.tanh(0.5 * x))


# The scoring rules of ``rank`` and ``recommend``: a function of the embeddings, the rows of the
# history (at least one) and the rows to score (an index array, or a slice of all rows).

def _rank_cosine(emb, history: np.ndarray, rows) -> np.ndarray:
    """Cosine of the mean unit input vector of the history with each row's input vector."""
    query, _ = emb._mean([int(h) for h in history], None)  # recommend's query, as most_similar forms it
    return (emb.vectors[rows] @ query) / emb.norms[rows]


def _rank_dot(emb, history: np.ndarray, rows) -> np.ndarray:
    """The mean input vector of the history · each row's output vector (the mean logit)."""
    return emb.context_vectors[rows] @ emb.vectors[history].mean(axis=0, dtype=np.float64)


def _rank_sgns(emb, history: np.ndarray, rows) -> np.ndarray:
    """The highest sigmoid(input_h · output_row) over the history items h: the probability SGNS
    was trained to give a (context, item) pair, from the history item that predicts the row best."""
    return _sigmoid((emb.context_vectors[rows] @ emb.vectors[history].T.astype(np.float64)).max(axis=1))


def _rank_blend(emb, history: np.ndarray, rows) -> np.ndarray:
    """(cosine + sgns) / 2: what the history's items are like, and what they predict."""
    return (_rank_cosine(emb, history, rows) + _rank_sgns(emb, history, rows)) / 2


#: The scoring rules by name. The default, ``blend``, ranked the planted impressions and next
#: items best, trained with or without explicit negatives (docs/recommendations.md, "Ranking
#: what is shown"); without output vectors, ``cosine`` is the default.
_RULES = {"blend": _rank_blend, "sgns": _rank_sgns, "cosine": _rank_cosine, "dot": _rank_dot}
RANK_SCORING = "blend"
SCORINGS = tuple(_RULES)


@dataclass(eq=False, repr=False)
class Embeddings:
    """Word vectors with gensim's ``KeyedVectors`` queries.

    Parameters
    ----------
    vocab : list of str
        The words in row order (``index_to_key``); a published run's are sorted by count.
    counts : array of int
        Each word's corpus count.
    vectors : ndarray, shape (len(vocab), dim)
        Row i is word i's vector; held as given, never copied.
    manifest : dict, optional
        The run's manifest (``nsdist.load`` fills it).
    context : ndarray or callable, optional
        The output (context) vectors, same shape as ``vectors``, or a function that reads them
        (``nsdist.load`` passes one: they are read, and checked against the manifest's sha256,
        the first time ``rank`` needs them).

    Examples
    --------
    >>> emb = Embeddings(["king", "queen", "man", "woman"], [4, 3, 2, 1],
    ...                  np.array([[3, 1, 1], [3, 0, 2], [1, 1, 0], [1, 0, 1]], np.float32))
    >>> [w for w, _ in emb.most_similar(positive=["king", "woman"], negative=["man"], topn=1)]
    ['queen']
    >>> emb["queen"], emb.key_to_index["woman"], len(emb), "prince" in emb
    (array([3., 0., 2.], dtype=float32), 3, 4, False)
    """

    vocab: list[str]
    counts: np.ndarray
    vectors: np.ndarray
    manifest: dict = field(default_factory=dict)
    context: np.ndarray | Callable[[], np.ndarray] | None = None

    def __post_init__(self):
        self.vocab = self.vocab if isinstance(self.vocab, list) else list(self.vocab)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.vectors = np.asarray(self.vectors)
        if self.vectors.ndim != 2 or not len(self.vocab) == len(self.vectors) == len(self.counts):
            raise DataError(f"{len(self.vocab)} words, {len(self.counts)} counts and vectors of shape "
                            f"{self.vectors.shape}: expected one count and one row of a 2-d array per word")
        self.key_to_index = {w: i for i, w in enumerate(self.vocab)}
        if len(self.key_to_index) != len(self.vocab):
            seen = set()
            twice = next(w for w in self.vocab if w in seen or seen.add(w))
            raise DataError(f"the word {twice!r} is in the vocabulary twice: each word needs one vector")
        self._norms: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Embeddings({len(self.vocab)} words x {self.vector_size} dims, run {self.manifest.get('run_id')})"

    # ------------------------------------------------------------ lookup

    @property
    def index_to_key(self) -> list[str]:
        """The words in row order (the same list as ``vocab``)."""
        return self.vocab

    @property
    def vector_size(self) -> int:
        """Dimensions of a vector."""
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.vocab)

    def get_index(self, key, default=None) -> int:
        """The row of ``key``.

        Parameters
        ----------
        key : str or int
            A word; an int that is not a word is taken as a row index, as gensim does.
        default : int, optional
            Returned for an unknown key instead of raising.

        Raises
        ------
        UnknownWord
            ``key`` is neither a word nor a row index, and no ``default`` was given.

        Examples
        --------
        >>> emb = Embeddings(["a", "b"], [2, 1], np.eye(2, dtype=np.float32))
        >>> emb.get_index("b"), emb.get_index(0), emb.get_index("zz", -1)
        (1, 0, -1)
        """
        row = self.key_to_index.get(key, -1)
        if row >= 0:
            return row
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self.vocab):
            return int(key)
        if default is not None:
            return default
        raise UnknownWord(key, len(self.vocab))

    def has_index_for(self, key) -> bool:
        """Whether ``key`` is a word (or a row index) of the vocabulary."""
        return self.get_index(key, -1) >= 0

    def __contains__(self, key) -> bool:
        return self.has_index_for(key)

    def get_vector(self, key, norm: bool = False) -> np.ndarray:
        """The vector of ``key`` (read-only), scaled to length 1 with ``norm=True``.

        Raises
        ------
        UnknownWord
            ``key`` is not in the vocabulary.
        """
        row = self.get_index(key)
        vector = self.vectors[row] / self.norms[row] if norm else self.vectors[row]
        vector.flags.writeable = False  # writes would go behind the cached norms
        return vector

    def __getitem__(self, key_or_keys) -> np.ndarray:
        """``emb["king"]``: one vector; ``emb[["king", "queen"]]``: a (2, dim) array of them."""
        if isinstance(key_or_keys, _KEY_TYPES):
            return self.get_vector(key_or_keys)
        return self.vectors[[self.get_index(k) for k in key_or_keys]]

    def get_vecattr(self, key, attr: str) -> int:
        """``get_vecattr(word, "count")``: the word's corpus count, gensim's one per-word attribute
        that nsdist keeps."""
        if attr != "count":
            raise KeyError(f"no per-word attribute {attr!r}: nsdist keeps 'count'")
        return int(self.counts[self.get_index(key)])

    @property
    def context_vectors(self) -> np.ndarray:
        """The output (context) vectors: row i is word i's vector as a context (``context.npy``),
        read on first use.

        Raises
        ------
        ConfigError
            The embeddings have none (made from vectors alone, or a run without ``context.npy``).
        """
        if callable(self.context):
            self.context = np.asarray(self.context())
        if self.context is None:
            raise ConfigError("these embeddings have no output vectors (context.npy): rank with scoring='cosine', "
                              "or load a run that has them")
        if self.context.shape != self.vectors.shape:
            raise DataError(f"output vectors of shape {self.context.shape} for input vectors of shape "
                            f"{self.vectors.shape}: expected the same")
        return self.context

    @property
    def norms(self) -> np.ndarray:
        """L2 norm of every vector (zero rows count as 1, so they score 0), computed once."""
        if self._norms is None:
            from .nearest import row_norms  # imported where used: see _ranked

            self._norms = row_norms(self.vectors)
        return self._norms

    # ------------------------------------------------------------ scoring

    def _as_query(self, vector) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.vector_size,):
            raise ConfigError(f"a query vector of shape {vector.shape}; these vectors have {self.vector_size} dims")
        return vector

    def _mean(self, positive, negative) -> tuple[np.ndarray, list[int]]:
        """The unit weighted mean of the query terms, as gensim's ``most_similar`` forms it (words
        scaled to length 1, vectors as given), and the rows of the words among them."""
        terms = [(t, 1.0) for t in _as_list(positive)] + [(t, -1.0) for t in _as_list(negative)]
        if not terms:
            raise ConfigError("nothing to compare with: pass positive and/or negative words or vectors")
        mean, rows = np.zeros(self.vector_size), []
        for term, weight in terms:
            if not isinstance(term, _TERM_TYPES):
                term, weight = _weighted(term)
            if isinstance(term, np.ndarray):
                mean += weight * self._as_query(term)
            else:
                rows.append(self.get_index(term))
                mean += weight * self.get_vector(rows[-1], norm=True)
        return _unit(mean), rows

    def _clip(self, clip_start, clip_end, restrict_vocab) -> tuple[int, int]:
        """The rows a query ranks, as gensim reads its arguments: ``restrict_vocab`` wins, a falsy
        ``clip_end`` means the end."""
        if restrict_vocab:
            clip_start, clip_end = 0, restrict_vocab
        start, stop, _ = slice(clip_start, clip_end or None).indices(len(self.vocab))
        return start, max(start, stop)

    def _scores(self, query: np.ndarray, start: int, stop: int, step: int = 65536) -> np.ndarray:
        """Cosine of rows start:stop with a unit ``query``: V floats, no normalised copy of the rows;
        ``step`` rows at a time, so a memory-mapped model is read block after block."""
        scores = np.empty(stop - start, np.result_type(self.vectors.dtype, query.dtype))
        for lo in range(start, stop, step):
            hi = min(stop, lo + step)
            np.matmul(self.vectors[lo:hi], query, out=scores[lo - start:hi - start])
        scores /= self.norms[start:stop]
        return scores

    def _ranked(self, scores: np.ndarray, start: int, exclude: list[int], topn: int) -> list[tuple[str, float]]:
        """The ``topn`` best (word, score) of ``scores`` (rows ``start``...), best first, ties by
        row, without the rows in ``exclude``; overwrites ``scores``."""
        # Imported here, not with the module: the command's parser reads this module's names
        # (SCORINGS) before a job's fork server starts, and numba's import would delay it.
        from .nearest import top_k

        scores[[r - start for r in exclude if start <= r < start + len(scores)]] = -np.inf
        rows, best = top_k(scores[None], topn)
        return [(self.vocab[start + i], float(s)) for i, s in zip(rows[0], best[0]) if s > -np.inf]

    # ------------------------------------------------------------ queries

    def most_similar(self, positive=None, negative=None, topn=10, clip_start=0, clip_end=None,
                     restrict_vocab=None, indexer=None):
        """The words closest by cosine to the weighted mean of the query terms.

        Parameters
        ----------
        positive, negative : word, vector, or list of words, vectors and (word or vector, weight)
            Terms counted with weight 1 (``positive``) or -1 (``negative``); a pair's weight is
            used as given. Words are scaled to length 1 first, vectors are used as given.
        topn : int or None
            How many words; ``None``: the scores of every ranked row, as an array.
        clip_start, clip_end : int
            Rank rows ``clip_start:clip_end`` only.
        restrict_vocab : int, optional
            Rank the first ``restrict_vocab`` rows (the most frequent words) only; overrides the
            clips.
        indexer : optional
            An approximate index (gensim's ``AnnoyIndexer``...): its ``most_similar(mean, topn)``
            answers.

        Returns
        -------
        list of (str, float), or ndarray when ``topn`` is None
            Best first; the query words are left out (a list only).

        Raises
        ------
        UnknownWord
            A query word is not in the vocabulary.

        Examples
        --------
        >>> emb = Embeddings(["a", "b", "c"], [3, 2, 1], np.array([[1, 0], [1, 1], [0, 1]], np.float32))
        >>> [(w, round(s, 4)) for w, s in emb.most_similar("a")]
        [('b', 0.7071), ('c', 0.0)]
        >>> emb.most_similar(positive=[("a", 2.0), np.array([0, 1])], topn=None).round(4)
        array([0.8944, 0.9487, 0.4472], dtype=float32)
        """
        if isinstance(topn, Integral) and topn < 1:
            return []
        _check_negative(negative, "most_similar")
        mean, rows = self._mean(positive, negative)
        if indexer is not None and isinstance(topn, int):
            return indexer.most_similar(mean, topn)
        start, stop = self._clip(clip_start, clip_end, restrict_vocab)
        scores = self._scores(mean, start, stop)
        return scores if topn is None else self._ranked(scores, start, rows, topn)

    def similar_by_key(self, key, topn=10, restrict_vocab=None):
        """``most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)``."""
        return self.most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_word(self, word, topn=10, restrict_vocab=None):
        """``most_similar(positive=[word], topn=topn, restrict_vocab=restrict_vocab)``."""
        return self.most_similar(positive=[word], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_vector(self, vector, topn=10, restrict_vocab=None):
        """The words closest by cosine to ``vector``: ``most_similar(positive=[vector], ...)``, no
        word left out."""
        return self.most_similar(positive=[vector], topn=topn, restrict_vocab=restrict_vocab)

    def recommend(self, items, topn: int = 10, exclude_seen: bool = True, scoring: str | None = None
                  ) -> list[tuple[str, float]]:
        """The items to recommend after the given ones (e.g. a session's clicks): every item
        scored by ``scoring`` (see :meth:`rank`; by default ``blend``, ``cosine`` without
        output vectors), best first.

        Parameters
        ----------
        items : word or list of words
            The items seen (e.g. a session's clicks); at least one.
        topn : int
            How many items.
        exclude_seen : bool
            Leave the given items out of the answer.
        scoring : {"blend", "sgns", "cosine", "dot"}, optional
            How to score; ``"cosine"``: the cosine with the mean of the items' unit vectors
            (item2vec's query).

        Returns
        -------
        list of (str, float)
            Best first, ties by row.

        Raises
        ------
        UnknownWord
            An item is not in the vocabulary.

        Examples
        --------
        >>> emb = Embeddings(["a", "b", "c"], [3, 2, 1], np.array([[1, 0], [1, 1], [0, 1]], np.float32))
        >>> [(w, round(s, 4)) for w, s in emb.recommend(["a", "c"], topn=2)]
        [('b', 1.0)]
        >>> [w for w, _ in emb.recommend(["a", "c"], exclude_seen=False, scoring="cosine")]
        ['b', 'a', 'c']
        """
        items = [items] if isinstance(items, _KEY_TYPES) else list(items)
        if not items or not all(isinstance(i, _KEY_TYPES) for i in items):
            raise ConfigError(f"recommend needs one or more items (words), got {items!r}")
        rows = [self.get_index(i) for i in items]
        scores = self.row_scores(rows, scoring)
        return self._ranked(scores, 0, rows if exclude_seen else [], topn)

    def row_scores(self, history_rows, scoring: str | None = None) -> np.ndarray:
        """Every row's score (float64, row order) for a history given as rows (at least one), by
        ``scoring`` as :meth:`rank` scores: what ``recommend`` ranks, in blocks of bounded size.

        >>> Embeddings(["a", "b"], [2, 1], np.eye(2, dtype=np.float32)).row_scores([0]).tolist()
        [1.0, 0.0]
        """
        rows = np.asarray(history_rows, dtype=np.intp)
        if rows.ndim != 1 or not len(rows) or rows.min() < 0 or rows.max() >= len(self.vocab):
            raise ConfigError(f"row_scores needs one or more rows in [0, {len(self.vocab)}), got {history_rows!r}")
        return self._rule_scores(self._rule(scoring), rows)

    def _rule(self, scoring: str | None):
        """The scoring rule ``scoring`` names; None: ``blend``, or ``cosine`` without output vectors."""
        if scoring is None:
            scoring = "cosine" if self.context is None else RANK_SCORING
        if scoring not in _RULES:
            raise ConfigError(f"scoring {scoring!r} is not one of {', '.join(SCORINGS)}")
        return _RULES[scoring]

    def _rule_scores(self, rule, history: np.ndarray, rows: np.ndarray | None = None, pairs: int = 2**22
                     ) -> np.ndarray:
        """``rule``'s scores of ``rows`` (None: every row) for the history rows, as float64; scored
        in blocks of at most ``pairs`` (history, row) pairs, so memory stays bounded whatever the
        lengths."""
        n = len(self.vocab) if rows is None else len(rows)
        scores, step = np.empty(n), max(1, pairs // max(1, len(history)))
        for lo in range(0, n, step):
            block = slice(lo, min(n, lo + step)) if rows is None else rows[lo:lo + step]
            scores[lo:lo + step] = rule(self, history, block)
        return scores

    def _item_row(self, item) -> int:
        """The row of an item, -1 if unknown: a word, or an int id as its decimal string (item ids
        are held as words), never a row index."""
        row = self.key_to_index.get(item, -1)
        if row < 0 and isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            row = self.key_to_index.get(str(int(item)), -1)
        return row

    def rank(self, history, candidates, scoring: str | None = None, unknown: float = -np.inf) -> np.ndarray:
        """One score per candidate for a history, higher first: which of the items about to be
        shown to a user to put first.

        Parameters
        ----------
        history : item or list of items
            The user's earlier clicks, oldest first (items the model does not know are left
            out; none known: every known candidate scores 0).
        candidates : item or list of items
            The items to rank, e.g. the items an impression is about to show. Items are words;
            an int is looked up as its decimal string (item ids as the vocabulary holds them),
            never as a row index.
        scoring : {"blend", "sgns", "cosine", "dot"}, optional
            ``"cosine"``: the cosine of the mean unit input vector of the history with the
            candidate's input vector (what the history's items are like); ``"sgns"``: the
            highest σ(input_h · output_c) over the history items h, the probability SGNS was
            trained to give a (context, item) pair (what the history predicts); ``"blend"``:
            their mean, (cosine + sgns) / 2; ``"dot"``: the mean input vector of the history ·
            the candidate's output vector. Default: ``"blend"`` (the best measured on
            impressions and next items: docs/recommendations.md), or ``"cosine"`` for
            embeddings without output vectors. All but ``"cosine"`` read the output vectors
            (``context.npy``) on first use.
        unknown : float
            The score of a candidate the model does not know: by default ``-inf``, after every
            known candidate.

        Returns
        -------
        ndarray of float64
            ``len(candidates)`` scores, in the candidates' order.

        Raises
        ------
        ConfigError
            An unknown ``scoring``, or one that needs output vectors on embeddings without them.

        Examples
        --------
        >>> emb = Embeddings(["a", "b", "c"], [3, 2, 1], np.array([[1, 0], [1, 1], [0, 1]], np.float32),
        ...                  context=np.array([[0, 1], [2, 0], [1, 0]], np.float32))
        >>> emb.rank(["a"], ["c", "b", "zz"], scoring="sgns").round(4).tolist()  # sigmoid(1), sigmoid(2)
        [0.7311, 0.8808, -inf]
        >>> emb.rank(["a"], ["c", "b"], scoring="cosine").round(4).tolist()
        [0.0, 0.7071]
        >>> emb.rank(["a", "unknown"], ["c", "b"]).round(4).tolist()  # blend: the mean of the two
        [0.3655, 0.794]
        """
        rule = self._rule(scoring)
        history = [history] if isinstance(history, _KEY_TYPES) else list(history)
        candidates = [candidates] if isinstance(candidates, _KEY_TYPES) else list(candidates)
        hist = np.array([self._item_row(h) for h in history], np.intp)
        rows = np.array([self._item_row(c) for c in candidates], np.intp)
        scores = np.full(len(rows), unknown, np.float64)
        known = rows >= 0
        hist = hist[hist >= 0]
        scores[known] = self._rule_scores(rule, hist, rows[known]) if len(hist) else 0.0
        return scores

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """a : b :: c : ? by 3CosAdd: ``most_similar(positive=[b, c], negative=[a], topn=topn)``."""
        return self.most_similar(positive=[b, c], negative=[a], topn=topn)

    def _shifted(self, term, start: int, stop: int) -> tuple[np.ndarray, int | None]:
        """(1 + cosine) / 2 of rows start:stop with one cosmul term, and the term's row (None for
        a vector). A word is scaled to length 1, a vector used as given, as gensim does."""
        if isinstance(term, np.ndarray):
            return (1 + self._scores(self._as_query(term), start, stop)) / 2, None
        if not isinstance(term, _KEY_TYPES):
            raise ConfigError(f"most_similar_cosmul cannot query with {term!r}: pass words or vectors (no weights)")
        row = self.get_index(term)
        return (1 + self._scores(self.get_vector(row, norm=True), start, stop)) / 2, row

    def most_similar_cosmul(self, positive=None, negative=None, topn=10, restrict_vocab=None):
        """The words best by 3CosMul (Levy and Goldberg, 2014): the product of the shifted cosines
        (1 + cos) / 2 with the positive terms over that with the negative ones (+ 1e-6).

        Parameters
        ----------
        positive, negative : word, vector, or list of words and vectors
            At least one positive term.
        topn : int or None
            How many words; ``None``: every ranked row's score, as an array.
        restrict_vocab : int, optional
            Rank the first ``restrict_vocab`` rows only (gensim 4 ignores this argument).

        Returns
        -------
        list of (str, float), or ndarray when ``topn`` is None
            Best first; the query words are left out (a list only).

        Examples
        --------
        >>> emb = Embeddings(["a", "b", "c"], [3, 2, 1], np.array([[1, 0], [1, 1], [0, 1]], np.float32))
        >>> [(w, round(s, 3)) for w, s in emb.most_similar_cosmul(positive=["b"], negative=["c"])]
        [('a', 1.707)]
        """
        if isinstance(topn, Integral) and topn < 1:
            return []
        _check_negative(negative, "most_similar_cosmul")
        positive, negative = _as_list(positive), _as_list(negative)
        if not positive:
            raise ConfigError("most_similar_cosmul needs at least one positive word or vector")
        start, stop = self._clip(0, None, restrict_vocab)
        products, rows = [np.ones(stop - start, np.float32), np.ones(stop - start, np.float32)], []
        for product, terms in zip(products, (positive, negative)):
            for term in terms:
                shifted, row = self._shifted(term, start, stop)
                product *= shifted
                if row is not None:
                    rows.append(row)
        scores = products[0] / (products[1] + np.float32(1e-6))  # Levy and Goldberg's epsilon, as gensim's
        return scores if topn is None else self._ranked(scores, start, rows, topn)

    def similarity(self, w1, w2) -> float:
        """Cosine similarity of two words.

        >>> Embeddings(["a", "b"], [2, 1], np.array([[1, 0], [1, 1]], np.float32)).similarity("a", "b")
        0.7071067690849304
        """
        return float(self.get_vector(w1, norm=True) @ self.get_vector(w2, norm=True))

    def distance(self, w1, w2) -> float:
        """Cosine distance of two words: ``1 - similarity(w1, w2)``."""
        return 1 - self.similarity(w1, w2)

    def _sum(self, terms) -> np.ndarray:
        total = np.zeros(self.vector_size)
        for term in terms:
            total += self._as_query(term) if isinstance(term, np.ndarray) else self.vectors[self.get_index(term)]
        return total

    def n_similarity(self, ws1, ws2) -> float:
        """Cosine similarity of the means of two lists of words (or vectors), unscaled.

        Raises
        ------
        ZeroDivisionError
            A list is empty (as gensim raises).
        UnknownWord
            A word is not in the vocabulary (gensim leaves it out of the mean).
        """
        if not (len(ws1) and len(ws2)):
            raise ZeroDivisionError("At least one of the passed list is empty.")
        return float(_unit(self._sum(ws1)) @ _unit(self._sum(ws2)))

    def distances(self, word_or_vector, other_words=()) -> np.ndarray:
        """Cosine distances from a word or vector to ``other_words`` (default: every word, itself
        included), in their order.

        >>> Embeddings(["a", "b"], [2, 1], np.array([[1, 0], [0, 2]], np.float32)).distances("a")
        array([0., 1.], dtype=float32)
        """
        is_key = isinstance(word_or_vector, _KEY_TYPES)
        query = self.get_vector(word_or_vector, norm=True) if is_key else _unit(self._as_query(word_or_vector))
        others = [] if other_words is None else [self.get_index(w) for w in other_words]
        if not others:
            return 1 - self._scores(query, 0, len(self.vocab))
        return 1 - (self.vectors[others] @ query) / self.norms[others]

    def doesnt_match(self, words) -> str:
        """The word furthest from the mean of the (unit) words; unknown words are left out with a
        warning, as gensim does.

        >>> Embeddings(["a", "b", "c"], [3, 2, 1], np.array([[1, 0], [1, 0.1], [0, 1]], np.float32)
        ...            ).doesnt_match(["a", "b", "c"])
        'c'
        """
        known = [w for w in words if w in self]
        if len(known) != len(words):
            log.warning("vectors for words %s are not present in the model, ignoring these words",
                        set(words) - set(known))
        if not known:
            raise ConfigError("doesnt_match needs at least one word of the vocabulary")
        rows = [self.get_index(w) for w in known]
        unit = self.vectors[rows] / self.norms[rows, None]
        return min(zip((unit @ _unit(unit.mean(axis=0))).tolist(), known))[1]

    # ------------------------------------------------------------ gensim

    def to_keyedvectors(self):
        """A ``gensim.models.KeyedVectors`` with these words, vectors (its own copy: gensim may
        change them in place) and counts (``get_vecattr(word, "count")``).

        Raises
        ------
        ConfigError
            gensim is not installed: ``pip install 'nsdist[gensim]'``.
        """
        try:
            from gensim.models import KeyedVectors
        except ImportError as e:
            raise ConfigError(f"to_keyedvectors needs gensim ({e}): pip install 'nsdist[gensim]'") from None
        kv = KeyedVectors(self.vector_size, count=len(self.vocab), dtype=self.vectors.dtype)
        kv.vectors[:] = self.vectors
        kv.index_to_key, kv.key_to_index, kv.next_index = list(self.vocab), dict(self.key_to_index), len(self.vocab)
        kv.allocate_vecattrs(["count"], [np.int64])
        kv.expandos["count"][:] = self.counts  # what set_vecattr does, for every word at once
        return kv
