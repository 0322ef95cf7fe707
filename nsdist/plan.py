"""Planning math: pure functions of sizes and counts, no IO and no Dask.

How the corpus is cut into shards, how shards are grouped into the models that are averaged,
which rows a round synchronises, how rows are split into blocks for the merge, and the
learning-rate schedule. The coordinator (pipeline.py) calls these; their results decide the
bits of the vectors, so each one depends only on its arguments.
"""

from __future__ import annotations

import math

import numpy as np

# How shards, models and rounds are cut from the corpus (bump when that changes: a resumed run
# must train on the same shards). 3: shards grouped into models, rounds planned per model.
SHARD_PLAN = 3


# A worker's peak memory over its model and shards while training (measured 1.4x-2x,
# docs/scaling.md): what --dry-run and the check before training allow.
PEAK = 2.0

def shard_plan(block_tokens: list[int], shards: int) -> list[list[tuple[int, int, int]]]:
    """Split the corpus's tokens (in block order) into ``shards`` contiguous, even ranges.

    Returns per shard a list of (block, lo, hi) token ranges; a chunk of a sentence goes to the
    shard whose range holds its first known word (``encode.encode_scanned``). Depends only on
    the corpus and the shard count, not on how it was cut into blocks (blocks end at sentence
    ends), so results do not either.

    >>> shard_plan([3, 1, 2], 2)
    [[(0, 0, 3)], [(1, 0, 1), (2, 0, 2)]]
    """
    starts = np.concatenate([[0], np.cumsum(block_tokens)])
    total = int(starts[-1])
    plan = []
    for s in range(shards):
        lo, hi = total * s // shards, total * (s + 1) // shards
        pieces = []
        for b, n in enumerate(block_tokens):
            a, e = max(lo, starts[b]), min(hi, starts[b] + n)
            if a < e:
                pieces.append((b, int(a - starts[b]), int(e - starts[b])))
        plan.append(pieces)
    return plan


def model_groups(shards: int, models: int) -> list[list[int]]:
    """The shards each model trains: model m gets shards m, m + models, ... (shards are dealt
    round-robin over the workers the same way, so a model's shards are held where it lives).

    >>> model_groups(5, 2)
    [[0, 2, 4], [1, 3]]
    """
    return [list(range(m, shards, models)) for m in range(models)]


def sync_rows(round_: int, rounds: int, vocab_size: int, base: int | None, groups: int = 1) -> int:
    """Rows [0, n) that round ``round_`` of an epoch averages across the models.

    The vocabulary is sorted by falling count, so a row prefix is a frequency tier. As in
    pWord2Vec's MPI trainer, round r syncs ``base * 2**z`` rows, z the number of trailing zero
    bits of r + 1: the top ``base`` rows every round, twice as many every other round, and so
    on. The last round of an epoch syncs every row, so that the models agree at every epoch
    boundary (checkpoints, resume, the outputs), and so does the last round of each of the
    epoch's ``groups`` (``round_groups``: a partitioned model changes its rows there).
    ``base`` None: every row every round.

    >>> [sync_rows(r, 8, 10_000, 1000) for r in range(8)]
    [1000, 2000, 1000, 4000, 1000, 2000, 1000, 10000]
    >>> sync_rows(0, 4, 300, 1000), sync_rows(0, 4, 10_000, None), sync_rows(2, 6, 10_000, 1000, groups=2)
    (300, 10000, 10000)
    """
    if base is None or group_end(round_, rounds, groups):
        return vocab_size
    r = round_ + 1
    zeros = (r & -r).bit_length() - 1
    return min(vocab_size, base << zeros)


def round_groups(rounds: int, groups: int) -> list[tuple[int, int]]:
    """The epoch's rounds [r0, r1) cut into ``groups`` contiguous groups, as even as they can be
    (at most one group per round): a partitioned model holds the rows of one group's sentences
    at a time (layout.py).

    >>> round_groups(16, 4), round_groups(5, 2), round_groups(3, 8)
    ([(0, 4), (4, 8), (8, 12), (12, 16)], [(0, 2), (2, 5)], [(0, 1), (1, 2), (2, 3)])
    """
    groups = max(1, min(groups, rounds))
    return [(rounds * j // groups, rounds * (j + 1) // groups) for j in range(groups)]


def group_of(round_: int, rounds: int, groups: int) -> int:
    """The group (``round_groups``) that round ``round_`` of an epoch is in.

    >>> [group_of(r, 5, 2) for r in range(5)]
    [0, 0, 1, 1, 1]
    """
    return next(j for j, (r0, r1) in enumerate(round_groups(rounds, groups)) if r0 <= round_ < r1)


def group_end(round_: int, rounds: int, groups: int) -> bool:
    """Whether round ``round_`` is the last of its group (the epoch's last round always is).

    >>> [group_end(r, 5, 2) for r in range(5)]
    [False, True, False, False, True]
    """
    return any(round_ == r1 - 1 for _, r1 in round_groups(rounds, groups))


# The most an owner receives at once for one block: this share of the model, or MIN_IN_FLIGHT
# bytes if more (small models need no cutting). The synchronised rows are cut into enough blocks
# that M - 1 models' rows of one block fit (merge_blocks), and each owner merges its blocks one
# after another. At most MAX_BLOCKS_PER_MODEL blocks per model: every block costs M - 1 calls
# between workers to merge and W - 1 to copy (cluster/models.py).
IN_FLIGHT = 0.125
MIN_IN_FLIGHT = 4 * 2**20
MAX_BLOCKS_PER_MODEL = 4


def merge_blocks(rows: int, vocab_size: int, models: int, model_bytes: int) -> int:
    """Row blocks a round's ``rows`` synchronised rows are merged in: the fewest that keep what
    an owner receives at once (the other M - 1 models' rows of a block) within ``IN_FLIGHT`` of
    the model (or ``MIN_IN_FLIGHT`` bytes), at most ``MAX_BLOCKS_PER_MODEL`` per model. The
    frequent tiers are small: one block, one owner.

    >>> mb = 2**20
    >>> merge_blocks(300_000, 300_000, 2, 240 * mb), merge_blocks(300_000, 300_000, 8, 240 * mb)
    (8, 32)
    >>> merge_blocks(1024, 300_000, 8, 240 * mb), merge_blocks(30_000, 30_000, 8, 2 * mb)
    (1, 4)
    >>> merge_blocks(30_000, 30_000, 1, 240 * mb)
    1
    """
    share = max(IN_FLIGHT, MIN_IN_FLIGHT / max(model_bytes, 1))
    wanted = math.ceil((models - 1) * rows / (vocab_size * share))
    return max(1, min(wanted, MAX_BLOCKS_PER_MODEL * models, rows))


def row_blocks(rows: int, blocks: int) -> list[tuple[int, int]]:
    """Rows [lo, hi) of each of ``blocks`` contiguous row blocks of about equal size: the units
    the merge works on in parallel, each on its own worker.

    >>> row_blocks(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [(rows * b // blocks, rows * (b + 1) // blocks) for b in range(blocks)]


def block_workers(sizes: list[int | None], shards: int, workers: list[str], default: int) -> list[str | None]:
    """Where to scan each corpus block: on the worker that will hold the shard its middle falls
    in (shards are contiguous token ranges dealt round-robin over the workers; bytes stand in
    for tokens), so that building the shards moves little data. A block of unknown size (a
    whole compressed file, a row group) counts as ``default`` bytes.

    >>> block_workers([10, 10, 5], 2, ["w0", "w1"], 10)
    ['w0', 'w1', 'w1']
    """
    if not workers:
        return [None] * len(sizes)
    size = np.array([s if s is not None else default for s in sizes], np.float64)
    middles = (np.cumsum(size) - size / 2) / max(size.sum(), 1.0)
    return [workers[min(int(m * shards), shards - 1) % len(workers)] for m in middles]


def schedule(alpha: float, min_alpha: float, done: int, total: int) -> float:
    """Linear decay from alpha to min_alpha over all words of all epochs.

    >>> schedule(0.025, 0.0001, 50, 100)
    0.01255
    """
    return alpha - (alpha - min_alpha) * min(done / max(total, 1), 1.0)


def sample_blocks(blocks: int, most: int = 8) -> list[int]:
    """Up to ``most`` evenly spaced block indices: the sample a dry run counts.

    >>> sample_blocks(3), sample_blocks(100, 4)
    ([0, 1, 2], [0, 33, 66, 99])
    """
    k = min(blocks, most)
    return sorted({round(i * (blocks - 1) / max(k - 1, 1)) for i in range(k)})


def estimate_vocab(counts: np.ndarray, fraction: float, min_count: int, max_vocab: int | None) -> int:
    """Words that reach ``min_count`` in the whole corpus, estimated from their ``counts`` in a
    sample that is ``fraction`` of it (exact when the sample is the corpus).

    Scaling the threshold down (count >= min_count x fraction) misses the long tail: a 5% sample
    of a Zipf corpus with 10.4M distinct words sees 1.4M of them. Instead the words that reach
    the threshold are counted in the sample and in half of it (each occurrence kept with
    probability 1/2, in expectation: a binomial thinning), and that growth is extrapolated to the
    whole corpus as a power law (Heaps' law): ``kept x (1 / fraction) ** slope``. Where the
    vocabulary saturates (a finite set of ids) this errs high, which is the safe side for a
    memory plan (that corpus: 1.42x at min_count 1, 1.12x at 2, within 3% from 3 on).

    >>> estimate_vocab(np.array([1, 2, 10]), 1.0, 2, None), estimate_vocab(np.array([1, 2, 10]), 1.0, 2, 1)
    (2, 1)
    >>> estimate_vocab(np.array([1] * 100), 0.1, 1, None)  # all seen once: growing linearly
    1000
    >>> estimate_vocab(np.array([50] * 100), 0.1, 1, None)  # all seen often: none left to find
    100
    """
    ks, words = np.unique(np.asarray(counts, np.int64), return_counts=True)
    kept = int(words[ks >= min_count].sum())
    if fraction < 1 and kept:
        half = float((words * (1 - _below_in_half(ks, min_count))).sum())
        slope = min(1.0, max(0.0, math.log2(kept / half))) if half > 0 else 1.0
        kept = round(kept * (1 / fraction) ** slope)
    return min(kept, max_vocab) if max_vocab else kept


def _below_in_half(ks: np.ndarray, c: int, exact: int = 200) -> np.ndarray:
    """P(Binomial(k, 1/2) < c) for each k of ``ks``: summed exactly up to k = ``exact``, by the
    normal approximation (continuity-corrected) above, so the cost stays at most ``exact``^2
    terms whatever ``c`` and the counts.

    >>> _below_in_half(np.array([0, 1, 2, 400]), 2).round(4).tolist()  # 1, 1, 3/4, ~0
    [1.0, 1.0, 0.75, 0.0]
    """
    lgamma, erf = np.vectorize(math.lgamma, otypes=[float]), np.vectorize(math.erf, otypes=[float])
    out = np.empty(len(ks))
    small = ks <= exact
    k, j = ks[small].astype(np.float64), np.arange(min(c, exact + 1))[:, None]
    log_pmf = lgamma(k + 1) - lgamma(j + 1.0) - lgamma(np.maximum(k - j, 0) + 1) - k * math.log(2)  # log C(k, j) / 2^k
    out[small] = np.where(j <= k, np.exp(log_pmf), 0.0).sum(axis=0)
    k = ks[~small].astype(np.float64)
    out[~small] = 0.5 * (1 + erf((c - 0.5 - k / 2) / (np.sqrt(k) / 2) / math.sqrt(2)))
    return out


# Neighbour rows (item, neighbour pairs) per part of the top-k table: about 10-20 MB of Parquet.
TOPK_PART_ROWS = 2**21


def topk_blocks(items: int, workers: int, k: int) -> list[tuple[int, int]]:
    """Rows [lo, hi) of each part of the top-k table, one task each: about TOPK_PART_ROWS
    neighbour rows per part, and a multiple of ``workers`` parts (every row costs the same, a
    product with all rows: the workers get equal shares) unless there are fewer items.

    >>> topk_blocks(10, 2, 5), len(topk_blocks(1_000_000, 2, 20)), topk_blocks(1, 2, 5)
    ([(0, 5), (5, 10)], 10, [(0, 1)])
    """
    parts = max(1, math.ceil(items * max(k, 1) / TOPK_PART_ROWS))
    parts = min(items, math.ceil(parts / max(workers, 1)) * max(workers, 1))
    return row_blocks(items, max(parts, 1))
