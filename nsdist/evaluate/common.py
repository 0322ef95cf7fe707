"""What every evaluation shares: argument checks and the size of a block of scores."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

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


