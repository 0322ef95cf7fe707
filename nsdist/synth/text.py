"""Deterministic synthetic corpus with planted structure (ground truth included).

The corpus is the demo corpus (nothing to download) and the basis of calibrated
quality tests: the generator knows which words *should* end up close together,
so the quality of a trained embedding can be scored against it.

Vocabulary (all lowercase ascii, tokens separated by single spaces)
-------------------------------------------------------------------
* Filler: 50 English function words ("the", "of", ...) with Zipf frequencies,
  mixed into every sentence.  They make the frequency profile realistic and
  are what word2vec's frequent-word subsampling (``sample=1e-3``) down-weights.
* Rare tail: ``x00000`` ... words drawn from a long Zipf tail; most occur
  fewer than five times, so ``min_count`` pruning has real work to do.
* Topic clusters: ``c07_w12`` is word 12 of cluster 7 (30 clusters of 20).
  A *topic sentence* picks one cluster and draws its content words from it
  (Zipf within the cluster), some from *sibling* clusters of the same domain
  (5 clusters per domain) and a few from random clusters.  Words of one
  cluster share most contexts, which the distributional hypothesis turns
  into nearby vectors; siblings share some, so they are the near misses
  that make cluster precision a graded measure rather than a pass/fail one.
* Analogy families: relation ``r`` (6 of them) has pairs ``(r2_a05, r2_b05)``
  (12 each).  Each pair ``i`` owns *entity* context words ``r2_e05_k`` and
  each relation owns *role* marker words ``r2_mak`` (role A) and ``r2_mbk``
  (role B).  An *analogy sentence* (short, 6-12 tokens, so the planted words
  fall inside a word2vec window) holds one target word, two of its pair's
  entity words and two of its role's markers, plus filler.

Why the analogies are solvable
------------------------------
In skip-gram the input vector of a word is fitted to predict its context
words, so it is (roughly) a sum of directions for its context distribution.
Here ``a_i`` sees ``entity(i) + roleA`` and ``b_i`` sees ``entity(i) + roleB``,
hence ``vec(b_i) - vec(a_i) ~ dir(roleB) - dir(roleA)``: the *same* offset for
every pair of the relation.  Then ``vec(b_i) - vec(a_i) + vec(a_j) ~
entity(j) + roleB ~ vec(b_j)``, i.e. 3CosAdd answers ``a_i:b_i :: a_j:?``
with ``b_j``.  The entity words are pair-specific, so no other ``b_k`` is a
good answer, which keeps the questions discriminative.

Files written by :func:`generate` (see :func:`truth_paths`)
-----------------------------------------------------------
* ``<stem>.txt`` (or any ``out_path``): one sentence per line.
* ``<stem>.questions-words.txt``: ``": relation-name"`` section lines followed
  by ``"a b c d"`` lines, the format of word2vec's ``questions-words.txt``.
* ``<stem>.clusters.tsv``: ``word<TAB>cluster_label``, no header.
* ``<stem>.pairs.tsv``: ``word1<TAB>word2<TAB>score``, planted similarity
  scores in 0..10 (wordsim-353 style), no header.

Everything is a pure function of ``(tokens, seed)``: equal arguments give
byte-identical files (gzip output uses a zero mtime for the same reason).
The question, cluster and pair files do not depend on ``tokens``.

How gensim scores on it at several sizes: docs/quality.md ("The planted corpus").
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "SynthFiles",
    "SynthSpec",
    "FILLER_WORDS",
    "generate",
    "generate_sentences",
    "truth_paths",
    "vocabulary",
]

# Function words, most frequent first (roughly the English ranking).  They are
# the filler drawn with Zipf weights.
FILLER_WORDS: Tuple[str, ...] = (
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it",
    "as", "was", "with", "be", "by", "on", "not", "he", "this", "are",
    "or", "his", "from", "at", "which", "but", "have", "an", "they", "you",
    "were", "had", "her", "she", "there", "we", "been", "one", "all", "their",
    "has", "would", "will", "if", "can", "more", "when", "so", "no", "who",
)

# Tokens generated per vectorised block.  A constant (rather than a function
# of ``tokens``) keeps memory bounded and the random stream layout simple.
_CHUNK_TOKENS = 1 << 20


@dataclass(frozen=True)
class SynthFiles:
    """Paths of a synthetic corpus and its ground-truth files.

    Attributes
    ----------
    corpus : str
        Text corpus: one sentence per line, tokens separated by single spaces.
    analogies : str
        Analogy questions in ``questions-words.txt`` format.
    clusters : str
        ``word<TAB>cluster_label`` lines, one per topic-cluster word.
    pairs : str
        ``word1<TAB>word2<TAB>score`` lines with planted scores in 0..10.
    tokens : int
        Number of tokens written to ``corpus``; ``-1`` when unknown (as
        returned by :func:`truth_paths`).
    """

    corpus: str
    analogies: str
    clusters: str
    pairs: str
    tokens: int = -1


@dataclass(frozen=True)
class SynthSpec:
    """Shape of the planted structure (the defaults are the tested ones).

    Attributes
    ----------
    n_clusters, cluster_size : int
        Number of topic clusters and words per cluster.
    n_relations, n_pairs : int
        Number of analogy relations and ``(a, b)`` pairs per relation.
    n_entity_words : int
        Entity context words owned by each pair.
    n_markers : int
        Marker words per role (A and B) and relation.
    n_rare : int
        Size of the rare-word tail vocabulary.
    filler_rate, rare_rate : float
        Probability that a free position holds a filler / rare-tail word.
    domain_size : int
        Clusters are grouped into domains of this many consecutive clusters
        (``n_clusters`` must be a multiple of it).
    sibling_rate : float
        Probability that a content word of a topic sentence comes from a
        *sibling* cluster of the same domain.  Siblings share some contexts,
        so they are the near-miss neighbours that make cluster precision a
        graded (not trivially perfect) measure of training quality.
    off_topic_rate : float
        Probability that a content word comes from a random cluster (noise).
    analogy_share : float
        Fraction of sentences that are analogy sentences.
    topic_len, analogy_len : tuple of int
        Inclusive ``(min, max)`` sentence lengths.  Analogy sentences are kept
        short so the planted context words fall inside a word2vec window.
    entity_per_sentence, markers_per_sentence : int
        Planted context words per analogy sentence.
    """

    n_clusters: int = 30
    cluster_size: int = 20
    n_relations: int = 6
    n_pairs: int = 12
    n_entity_words: int = 4
    n_markers: int = 4
    n_rare: int = 20_000
    filler_rate: float = 0.40
    rare_rate: float = 0.03
    domain_size: int = 5
    sibling_rate: float = 0.40
    off_topic_rate: float = 0.05
    analogy_share: float = 0.35
    topic_len: Tuple[int, int] = (5, 25)
    analogy_len: Tuple[int, int] = (6, 12)
    entity_per_sentence: int = 2
    markers_per_sentence: int = 2

    def __post_init__(self) -> None:
        if self.n_clusters < 1 or self.cluster_size < 2:
            raise ValueError("need n_clusters >= 1 and cluster_size >= 2")
        if self.domain_size < 1 or self.n_clusters % self.domain_size:
            raise ValueError("n_clusters must be a positive multiple of domain_size")
        if self.n_relations < 1 or self.n_pairs < 2:
            raise ValueError("need n_relations >= 1 and n_pairs >= 2")
        if min(self.n_entity_words, self.n_markers) < 1 or self.n_rare < 0:
            raise ValueError("need n_entity_words, n_markers >= 1 and n_rare >= 0")
        rates = (self.filler_rate, self.rare_rate, self.sibling_rate,
                 self.off_topic_rate, self.analogy_share)
        if min(rates) < 0 or self.filler_rate + self.rare_rate >= 1 \
                or self.sibling_rate + self.off_topic_rate > 1 or self.analogy_share > 1:
            raise ValueError("rates must be probabilities (filler + rare < 1, "
                             "sibling + off_topic <= 1)")
        for lo, hi in (self.topic_len, self.analogy_len):
            if not 1 <= lo <= hi:
                raise ValueError("sentence lengths need 1 <= min <= max")


_DEFAULT_SPEC = SynthSpec()


class _Layout:
    """Word ids of every vocabulary block; ``words[id]`` is the token."""

    def __init__(self, spec: SynthSpec) -> None:
        self.spec = spec
        R, P, E, M = spec.n_relations, spec.n_pairs, spec.n_entity_words, spec.n_markers
        words: List[str] = list(FILLER_WORDS)
        self.filler0 = 0
        self.n_filler = len(FILLER_WORDS)

        self.cluster0 = len(words)
        words += [f"c{c:02d}_w{w:02d}" for c in range(spec.n_clusters)
                  for w in range(spec.cluster_size)]
        # Targets: id = target0 + (r * P + i) * 2 + role, role 0 = a, 1 = b.
        self.target0 = len(words)
        words += [f"r{r}_{ab}{i:02d}" for r in range(R) for i in range(P) for ab in "ab"]
        # Entity words: id = entity0 + (r * P + i) * E + k.
        self.entity0 = len(words)
        words += [f"r{r}_e{i:02d}_{k}" for r in range(R) for i in range(P) for k in range(E)]
        # Markers: id = marker0 + (r * 2 + role) * M + k.
        self.marker0 = len(words)
        words += [f"r{r}_m{ab}{k}" for r in range(R) for ab in "ab" for k in range(M)]
        self.rare0 = len(words)
        words += [f"x{k:05d}" for k in range(spec.n_rare)]
        self.words = words

        # Zipf weights (s = 1): filler ranking, word rank inside a cluster and
        # the rare tail, as lookup tables (see ``_zipf_table``).
        self.filler_tab = _zipf_table(self.n_filler, 1 << 16)
        self.cluster_tab = _zipf_table(spec.cluster_size, 1 << 16)
        self.rare_tab = _zipf_table(max(spec.n_rare, 1), 1 << 20)

    def target(self, r: int, i: int, role: int) -> str:
        return self.words[self.target0 + (r * self.spec.n_pairs + i) * 2 + role]


def _zipf_table(n: int, size: int) -> np.ndarray:
    """Lookup table whose uniform entries follow Zipf(s=1) over ``n`` ranks.

    Rank ``k`` (0-based) fills about ``size / ((k + 1) * H_n)`` entries (at
    least one, so every word can occur).  Drawing a uniform table index is
    several times faster than ``searchsorted`` on a CDF, and the small
    rounding of the weights is irrelevant: the table *is* the distribution.
    """
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64)
    counts = np.maximum(1, np.floor(w / w.sum() * size)).astype(np.int64)
    counts[0] += size - counts.sum()  # rounding remainder to the top rank
    return np.repeat(np.arange(n, dtype=np.int32), counts)


def _draw(rng: np.random.Generator, table: np.ndarray, n: int) -> np.ndarray:
    """Draw ``n`` ranks from a lookup table built by :func:`_zipf_table`."""
    return table[rng.integers(0, len(table), n)]


def vocabulary(spec: Optional[SynthSpec] = None) -> List[str]:
    """Return every word the generator can emit, indexed by internal id.

    Parameters
    ----------
    spec : SynthSpec, optional
        Structure parameters; defaults to :class:`SynthSpec` ().

    Returns
    -------
    list of str
        Filler words first, then cluster, analogy, entity, marker and rare
        words.
    """
    return list(_Layout(spec or _DEFAULT_SPEC).words)


# --------------------------------------------------------------------------
# Corpus generation
# --------------------------------------------------------------------------


def _sentence_block(rng: np.random.Generator, lay: _Layout, n_tokens: int,
                    final: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Generate whole sentences totalling at least ``n_tokens`` tokens.

    Returns ``(ids, lengths)``: the flat int32 token ids and the sentence
    lengths.  With ``final`` the last sentence is truncated so that exactly
    ``n_tokens`` tokens are produced.
    """
    spec = lay.spec
    tmin, tmax = spec.topic_len
    amin, amax = spec.analogy_len
    mean_len = ((1 - spec.analogy_share) * (tmin + tmax) + spec.analogy_share * (amin + amax)) / 2

    kinds_l, lens_l = [], []
    total = 0
    while total < n_tokens:
        # Over-draw a little so one round almost always suffices.
        n = int((n_tokens - total) / mean_len * 1.05) + 16
        kind = (rng.random(n) < spec.analogy_share).astype(np.int8)  # 1 = analogy
        lens = np.where(kind == 1,
                        rng.integers(amin, amax + 1, n),
                        rng.integers(tmin, tmax + 1, n))
        cum = total + np.cumsum(lens)
        stop = int(np.searchsorted(cum, n_tokens, side="left"))
        if stop < n:  # sentence ``stop`` reaches n_tokens
            kind, lens = kind[: stop + 1], lens[: stop + 1]
            if final:
                lens = lens.copy()
                lens[-1] -= int(cum[stop]) - n_tokens
        kinds_l.append(kind)
        lens_l.append(lens)
        total += int(lens.sum())
    kinds = np.concatenate(kinds_l)
    lens = np.concatenate(lens_l).astype(np.int64)
    n_sent = len(lens)
    n_tok = int(lens.sum())

    sent = np.repeat(np.arange(n_sent), lens)          # sentence of each token
    starts = np.cumsum(lens) - lens
    is_ana = kinds[sent] == 1

    ids = np.empty(n_tok, dtype=np.int32)

    # One uniform per position decides filler / rare / content.  Analogy
    # sentences get their content from the planted slots below, so their
    # free positions are squeezed into the filler/rare range.
    bg = spec.filler_rate + spec.rare_rate
    u = rng.random(n_tok)
    u[is_ana] *= bg
    filler = u < spec.filler_rate
    ids[filler] = lay.filler0 + _draw(rng, lay.filler_tab, int(filler.sum()))
    rare = (u >= spec.filler_rate) & (u < bg)
    if spec.n_rare > 0:
        ids[rare] = lay.rare0 + _draw(rng, lay.rare_tab, int(rare.sum()))
    else:
        ids[rare] = lay.filler0 + _draw(rng, lay.filler_tab, int(rare.sum()))
    content = u >= bg

    # --- topic sentences: content words from the sentence's cluster --------
    topic = np.where(kinds == 0, rng.integers(0, spec.n_clusters, n_sent), -1)
    # (Analogy positions never reach u >= bg, so ``content`` is topic-only.)
    n_tc = int(content.sum())
    clus = topic[sent[content]]
    v = rng.random(n_tc)
    # Sibling: another cluster of the same domain (shift by 1..D-1 inside it).
    D = spec.domain_size
    sib = (clus // D) * D + (clus % D + rng.integers(1, max(D, 2), n_tc)) % D
    clus = np.where(v < spec.sibling_rate, sib if D > 1 else clus, clus)
    off = v >= 1.0 - spec.off_topic_rate
    clus = np.where(off, rng.integers(0, spec.n_clusters, n_tc), clus)
    ids[content] = lay.cluster0 + clus * spec.cluster_size + _draw(rng, lay.cluster_tab, n_tc)

    # --- analogy sentences: target, entity words, role markers ---------------
    # Slot layout before shuffling: position 0 = target, then entity words,
    # then markers, then background.  A truncated final sentence simply
    # loses trailing slots.
    R, P = spec.n_relations, spec.n_pairs
    ana_sent = np.flatnonzero(kinds == 1)
    slot = rng.integers(0, R * P * 2, len(ana_sent))    # (relation, pair, role)
    a_start, a_len = starts[ana_sent], lens[ana_sent]
    ids[a_start] = lay.target0 + slot
    ne, nm = spec.entity_per_sentence, spec.markers_per_sentence
    for k in range(1, 1 + ne + nm):
        ok = a_len > k
        s, at = slot[ok], a_start[ok] + k
        if k <= ne:   # entity word of the sentence's pair
            ids[at] = (lay.entity0 + (s // 2) * spec.n_entity_words
                       + rng.integers(0, spec.n_entity_words, len(s)))
        else:         # marker of the sentence's (relation, role)
            r, role = s // (2 * P), s % 2
            ids[at] = (lay.marker0 + (r * 2 + role) * spec.n_markers
                       + rng.integers(0, spec.n_markers, len(s)))

    # Shuffle tokens within each analogy sentence: otherwise the target would
    # always sit at the sentence start, where windows are cut off, and the
    # planted words would always be its immediate neighbours.  Topic-sentence
    # tokens are i.i.d. already, so only analogy tokens need the sort
    # (key = sentence index + uniform offset keeps sentences in place).
    a_idx = np.flatnonzero(is_ana)
    key = sent[a_idx] + rng.random(len(a_idx))
    ids[a_idx] = ids[a_idx][np.argsort(key, kind="stable")]
    return ids, lens


def _blocks(tokens: int, seed: int, spec: SynthSpec) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    lay = _Layout(spec)
    corpus_ss, _ = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(corpus_ss)
    done = 0
    while done < tokens:
        want = min(_CHUNK_TOKENS, tokens - done)
        final = tokens - done <= _CHUNK_TOKENS
        ids, lens = _sentence_block(rng, lay, want, final)
        done += len(ids)
        yield ids, lens


def generate_sentences(tokens: int = 1_000_000, seed: int = 1,
                       spec: Optional[SynthSpec] = None) -> Iterator[List[str]]:
    """Yield the corpus sentences as token lists (same as :func:`generate`).

    Parameters
    ----------
    tokens : int
        Total number of tokens to produce (exact).
    seed : int
        Random seed; the output is a pure function of ``(tokens, seed)``.
    spec : SynthSpec, optional
        Structure parameters; defaults to :class:`SynthSpec` ().

    Yields
    ------
    list of str
        One sentence.
    """
    words = _Layout(spec or _DEFAULT_SPEC).words
    for ids, lens in _blocks(tokens, seed, spec or _DEFAULT_SPEC):
        toks = [words[i] for i in ids.tolist()]
        start = 0
        for n in lens.tolist():
            yield toks[start:start + n]
            start += n


# --------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------


def _analogy_lines(lay: _Layout, max_questions: int = 5000) -> List[str]:
    spec = lay.spec
    per_rel = max(1, max_questions // max(spec.n_relations, 1))
    lines = []
    for r in range(spec.n_relations):
        lines.append(f": relation-{r}")
        qs = [f"{lay.target(r, i, 0)} {lay.target(r, i, 1)} "
              f"{lay.target(r, j, 0)} {lay.target(r, j, 1)}"
              for i in range(spec.n_pairs) for j in range(spec.n_pairs) if i != j]
        lines += qs[:per_rel]
    return lines


def _cluster_lines(lay: _Layout) -> List[str]:
    spec = lay.spec
    return [f"{lay.words[lay.cluster0 + c * spec.cluster_size + w]}\tc{c:02d}"
            for c in range(spec.n_clusters) for w in range(spec.cluster_size)]


def _pair_lines(lay: _Layout, rng: np.random.Generator) -> List[str]:
    """Sample word pairs in tiers of planted relatedness.

    Tiers and score ranges, ordered by how much context the two words share
    (which SGNS turns into cosine similarity; measured gensim cosines at 1M
    tokens in brackets): same cluster 8.5-10 [0.94]; sibling clusters of one
    domain 6.5-8 [0.84]; analogy partners ``a_i``/``b_i``, which share the
    entity words, 5-6.5 [0.81]; same relation but different pair and role
    (only second-order context in common) 3-4.5 [0.63]; unrelated words
    (different domain or relation) 0-2 [0.29-0.40].  Scores inside a tier are
    uniform noise, so a perfect model reaches a Spearman correlation well
    below 1 (about 0.9).
    """
    spec = lay.spec
    R, P, C, S, D = (spec.n_relations, spec.n_pairs, spec.n_clusters,
                     spec.cluster_size, spec.domain_size)
    cw = lambda c, w: lay.words[lay.cluster0 + c * S + w]  # noqa: E731
    out: dict = {}

    def add(w1: str, w2: str, lo: float, hi: float) -> None:
        key = tuple(sorted((w1, w2)))
        if w1 != w2 and key not in out:
            out[key] = (w1, w2, round(float(rng.uniform(lo, hi)), 2))

    # Bounded attempts (not "until n found") so unusual specs cannot loop
    # forever; with the defaults the targets are met.
    def sample(n: int, draw) -> None:
        start = len(out)
        for _ in range(20 * n):
            if len(out) - start >= n:
                break
            draw()

    def same_cluster() -> None:
        c = int(rng.integers(C))
        w1, w2 = rng.choice(S, 2, replace=False)
        add(cw(c, int(w1)), cw(c, int(w2)), 8.5, 10.0)

    def sibling() -> None:
        if D < 2:
            return
        c1 = int(rng.integers(C))
        c2 = (c1 // D) * D + (c1 % D + int(rng.integers(1, D))) % D
        add(cw(c1, int(rng.integers(S))), cw(c2, int(rng.integers(S))), 6.5, 8.0)

    def cross_role() -> None:
        r = int(rng.integers(R))
        i, j = rng.choice(P, 2, replace=False)
        add(lay.target(r, int(i), 0), lay.target(r, int(j), 1), 3.0, 4.5)

    # Unrelated: words of different groups (domain for cluster words,
    # relation for analogy words).
    gt = [(cw(c, w), f"d{c // D}") for c in range(C) for w in range(S)]
    gt += [(lay.target(r, i, ab), f"r{r}") for r in range(R) for i in range(P)
           for ab in range(2)]

    def unrelated() -> None:
        (w1, g1), (w2, g2) = (gt[int(k)] for k in rng.integers(len(gt), size=2))
        if g1 != g2:
            add(w1, w2, 0.0, 2.0)

    sample(120, same_cluster)
    sample(80, sibling)
    for r in range(R):
        for i in range(P):
            add(lay.target(r, i, 0), lay.target(r, i, 1), 5.0, 6.5)
    sample(60, cross_role)
    sample(150, unrelated)
    return [f"{a}\t{b}\t{s:.2f}" for a, b, s in out.values()]


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def truth_paths(corpus_path: str) -> SynthFiles:
    """Return the ground-truth file paths that belong to a corpus path.

    The stem is ``corpus_path`` without a trailing ``.gz`` and then ``.txt``;
    the files are ``<stem>.questions-words.txt``, ``<stem>.clusters.tsv`` and
    ``<stem>.pairs.tsv``.  Nothing is checked on disk.

    Parameters
    ----------
    corpus_path : str
        Path of the corpus (as passed to :func:`generate`).

    Returns
    -------
    SynthFiles
        The paths, with ``tokens=-1`` (unknown).
    """
    p = os.fspath(corpus_path)
    stem = p[:-3] if p.endswith(".gz") else p
    stem = stem[:-4] if stem.endswith(".txt") else stem
    return SynthFiles(
        corpus=p,
        analogies=stem + ".questions-words.txt",
        clusters=stem + ".clusters.tsv",
        pairs=stem + ".pairs.tsv",
    )


def _open_out(path: str):
    if path.endswith(".gz"):
        # mtime=0 and an empty embedded file name keep the bytes a pure
        # function of the content (gzip headers otherwise carry both).
        raw = open(path, "wb")
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                             compresslevel=6), raw
    return open(path, "wb"), None


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def generate(out_path: str, tokens: int = 1_000_000, seed: int = 1,
             spec: Optional[SynthSpec] = None) -> SynthFiles:
    """Write a synthetic corpus and its ground truth.

    Parameters
    ----------
    out_path : str
        Corpus path.  A ``.gz`` suffix writes gzip.  The ground-truth files go
        beside it (see :func:`truth_paths`).  Parent directories must exist.
    tokens : int
        Exact number of tokens to write (>= 1).  At the default structure
        every ground-truth word occurs at least ~20 times in 200k tokens.
    seed : int
        Random seed; files are byte-identical for equal ``(tokens, seed)``.
    spec : SynthSpec, optional
        Structure parameters; defaults to :class:`SynthSpec` ().

    Returns
    -------
    SynthFiles
        The paths written and the token count.
    """
    spec = spec or _DEFAULT_SPEC
    lay = _Layout(spec)
    paths = truth_paths(out_path)

    # Lookup tables of encoded tokens with their separator attached, so a
    # whole block is written with one fancy-index and one join (no per-token
    # Python string work).
    with_space = np.array([w.encode("ascii") + b" " for w in lay.words], dtype=object)
    with_nl = np.array([w.encode("ascii") + b"\n" for w in lay.words], dtype=object)

    written = 0
    f, raw = _open_out(paths.corpus)
    try:
        for ids, lens in _blocks(tokens, seed, spec):
            parts = with_space[ids]
            ends = np.cumsum(lens) - 1
            parts[ends] = with_nl[ids[ends]]
            f.write(b"".join(parts.tolist()))
            written += len(ids)
    finally:
        f.close()
        if raw is not None:
            raw.close()

    _, truth_ss = np.random.SeedSequence(seed).spawn(2)
    truth_rng = np.random.default_rng(truth_ss)
    _write_lines(paths.analogies, _analogy_lines(lay))
    _write_lines(paths.clusters, _cluster_lines(lay))
    _write_lines(paths.pairs, _pair_lines(lay, truth_rng))
    return SynthFiles(paths.corpus, paths.analogies, paths.clusters, paths.pairs, written)


if __name__ == "__main__":  # pragma: no cover - convenience entry point
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_path")
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(generate(a.out_path, a.tokens, a.seed))
