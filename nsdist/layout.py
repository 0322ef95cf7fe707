"""The partitioned layout: each model holds only the rows its shards use (pure functions).

In the replicated layout every model holds all V rows. In the partitioned one, model m holds
the rows ``held[m]``: the sorted vocabulary ids its shards contain (centers, contexts and shown
items). The frequent words occur in every shard, so they are held everywhere (the "head"); a
rare word only by the models whose shards contain it. Memory per model then falls as models
are added, down to the head plus a model's share of the tail.

A model trains on its rows by *local* ids (positions in ``held[m]``): each round's sentences
are mapped to them as the round starts (``shard.piece_slice``), and its tables are the global
ones restricted to its rows
(``model_tables``): subsampling as before, negatives drawn from the noise distribution
restricted to the rows it holds (PyTorch-BigGraph's partition-local negatives: the head holds
most of the noise mass, and a tail word is drawn as a negative where it is trained), and local
rates scaled by how many models hold the row (``holder_rates``: averaging a row over its k
holders divides its progress by k, not by M); ``model_tables`` builds them from the model's
rows alone, so no worker needs a table of the whole vocabulary.

A row's synchronised value (the "master") lives with the row block's owner. A round sends the
owner the rows each holder changed, and the owner folds them into the master
(``merge.merge_deltas``), then sends the new values back to the holders. A row held by one
model is its own: it crosses to the owner only at an epoch's end, so that the masters hold the
whole model for checkpoints and outputs.

On text whose words fall in shards at random, a model's shards use far more rows than its 1/M
share: a word of c occurrences is in them with probability 1 - (1 - 1/M)^c, so the rare words'
occurrences each add a row to some model. A model can then hold its rows for a group of the
epoch's rounds at a time (``plan.round_groups``; ``group_pieces``): every row is synchronised at
a group's end, the model gives its rows back to the masters and takes the next group's (the
rows a group of 1/G of its sentences uses). The tables and holder counts are the group's.
"""

from __future__ import annotations

from collections.abc import Sequence
import numpy as np

from .config import TrainConfig
from .encode import Shard
from .merge import MAX_SHARD_ALPHA
from .model import Model, Tables
from .noise import noise_table
from .plan import PEAK
from .shard import piece_slice, round_slices
from .vocab import keep_probs


def held_rows(pieces: Sequence[Shard]) -> np.ndarray:
    """The sorted vocabulary ids that the shard ``pieces`` contain (int32).

    >>> a = Shard(np.array([4, 1, 4], np.int32), np.array([0, 3]))
    >>> b = Shard(np.array([2], np.int32), np.array([0, 1]), np.array([7], np.int32), np.array([0, 1]))
    >>> held_rows([a, b]).tolist()
    [1, 2, 4, 7]
    """
    arrays = [p.ids for p in pieces] + [p.shown_ids for p in pieces if p.shown_ids is not None]
    if not arrays:
        return np.zeros(0, np.int32)
    return np.unique(np.concatenate(arrays)).astype(np.int32)


def group_pieces(pieces: Sequence[Shard], rounds: int, r0: int, r1: int) -> list[Shard]:
    """The sentences of a shard (held as ``pieces``) that rounds [r0, r1) of ``rounds`` train.

    >>> s = Shard(np.array([3, 1, 1, 2, 5, 4], np.int32), np.array([0, 2, 4, 6]))
    >>> [held_rows(group_pieces([s], 3, j, j + 1)).tolist() for j in range(3)]
    [[1, 3], [1, 2], [4, 5]]
    """
    first, last = round_slices(pieces, r0, rounds), round_slices(pieces, r1 - 1, rounds)
    return [piece_slice(p, b, e) for p, (b, _), (_, e) in zip(pieces, first, last)]


def holders(held: Sequence[np.ndarray], rows: int) -> np.ndarray:
    """How many models hold each row (int32, ``rows`` long).

    >>> holders([np.array([0, 2]), np.array([0, 1])], 4).tolist()
    [2, 1, 1, 0]
    """
    k = np.zeros(rows, np.int32)
    for h in held:
        k[h] += 1
    return k


def holder_rates(counts: np.ndarray, keep: np.ndarray, k: np.ndarray, alpha: float, how: str = "mean",
                 scale: float | None = None, pivot: float | None = None) -> np.ndarray:
    """``merge.shard_rates`` with each row's holder count ``k`` in place of the model count: a row
    averaged over k models has its progress divided by k.

    >>> holder_rates(np.array([1, 1]), np.ones(2), np.array([1, 3]), 0.025).tolist()
    [1.0, 3.0]
    >>> [round(float(x), 2) for x in holder_rates(np.array([160]), np.ones(1), np.array([8]), 0.025, pivot=160)]
    [4.5]
    """
    n = len(counts)
    if scale is not None:
        return np.full(n, scale, np.float32)
    top = np.clip(np.asarray(k, np.float64), 1.0, max(1.0, MAX_SHARD_ALPHA / alpha))
    if how != "mean":
        return np.ones(n, np.float32)
    if pivot is None:
        return top.astype(np.float32)
    occurrences = np.asarray(counts, np.float64) * np.asarray(keep, np.float64)
    return (1.0 + (top - 1.0) / (1.0 + occurrences / pivot)).astype(np.float32)


def model_tables(counts: np.ndarray, total: int, k: np.ndarray, t) -> Tables:
    """A model's tables over the rows it holds, from those rows' ``counts`` and holder counts
    ``k`` (``total``: the corpus's words in the vocabulary; ``t``: a TrainConfig): the global
    subsampling of those rows, rates by holder count, and the noise distribution restricted to
    them (by local id).

    >>> t = model_tables(np.array([4, 1]), 15, np.array([2, 1]), TrainConfig(sample=0, ns_exponent=1.0, rate_pivot=None))
    >>> t.keep.tolist(), t.noise_prob.tolist(), t.rate.tolist()
    ([1.0, 1.0], [1.0, 0.4000000059604645], [2.0, 1.0])
    """
    keep = keep_probs(counts, t.sample, total)
    rate = holder_rates(counts, keep, k, t.alpha, t.merge, t.alpha_scale, t.rate_pivot)
    if len(counts) == 0:  # a model without words trains nothing
        return Tables(keep, np.zeros(0, np.float32), np.zeros(0, np.int32), rate)
    prob, alias = noise_table(counts, t.ns_exponent)
    return Tables(keep, prob, alias, rate)


def local_model(model: Model, held: np.ndarray) -> Model:
    """The rows ``held`` of a whole model (copies)."""
    return Model(model.win[held], model.wout[held])


def synced(held: np.ndarray, n: int) -> int:
    """How many of a model's rows fall in the synchronised prefix [0, n): its rows are sorted, so
    they are its first ``synced`` local rows.

    >>> synced(np.array([0, 3, 9]), 4)
    2
    """
    return int(np.searchsorted(held, n))


def owners(rows: int, models: int) -> list[tuple[int, int]]:
    """The rows [lo, hi) whose synchronised values (masters) model m's worker keeps: contiguous
    and equal, so an owner's share falls as models are added.

    >>> owners(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [(rows * m // models, rows * (m + 1) // models) for m in range(models)]


def choose(layout: str, limits: dict, replicated_bytes: int, models: int) -> str:
    """The layout a job trains in: ``layout`` unless it is "auto", which keeps the replicated
    layout (the fast path) wherever a worker's model and shards fit its memory limit at
    training's peaks (plan.PEAK), and partitions the model past that, if there are several
    models to share it. No known limit: replicated.

    >>> choose("auto", {"w": 1000}, 400, 4), choose("auto", {"w": 1000}, 600, 4), choose("auto", {"w": 1}, 9, 1)
    ('replicated', 'partitioned', 'replicated')
    >>> choose("partitioned", {}, 1, 1)
    'partitioned'
    """
    if layout != "auto":
        return layout
    known = [v for v in limits.values() if v]
    return "partitioned" if models > 1 and known and PEAK * replicated_bytes > min(known) else "replicated"


# What one exchange of rows holds at most, all models' parts of a chunk together (above the
# floor of CHUNK_ROWS rows): a round's merges and installs go through a range a chunk at a time,
# so their memory does not grow with the range (the head's range is held by every model).
EXCHANGE_BYTES = 64 * 2**20
CHUNK_ROWS = 1024


def _row_bytes(dim: int) -> int:
    return 2 * dim * 4 + 16  # both matrices' rows, their ids and update counts


def chunk_rows(dim: int, models: int, span: int) -> int:
    """Rows per chunk of an owner's range of ``span`` rows: ``models`` models' parts of a chunk
    hold at most EXCHANGE_BYTES and about as much as the range's own masters (so a small model's
    exchanges are small too), and a chunk at least CHUNK_ROWS rows.

    >>> chunk_rows(32, 8, 1_250_000), chunk_rows(300, 100, 1_000_000), chunk_rows(256, 4, 7_500)
    (30840, 1024, 1875)
    """
    models = max(models, 1)
    return max(CHUNK_ROWS, min(EXCHANGE_BYTES // (models * _row_bytes(dim)), span // models))


def chunks(lo: int, hi: int, dim: int, models: int, span: int) -> list[tuple[int, int]]:
    """Rows [lo, hi) of an owner's range of ``span`` rows in chunks of ``chunk_rows`` rows.

    >>> chunks(0, 2500, 32, 8, 10**6), chunks(5, 5, 32, 8, 10)
    ([(0, 2500)], [])
    >>> chunks(0, 5000, 300, 100, 10**6)
    [(0, 1024), (1024, 2048), (2048, 3072), (3072, 4096), (4096, 5000)]
    """
    step = chunk_rows(dim, models, span)
    return [(a, min(hi, a + step)) for a in range(lo, hi, step)]


def worker_bytes(held: int, masters: int, dim: int, models: int) -> int:
    """What a worker's model and masters take in the partitioned layout: the ``held`` rows of its
    model (in its largest group of rounds: a model drops a group's rows before it takes the
    next's) and the ``masters`` of its range, both matrices, and one exchange of rows in
    transit (every model's part of a chunk of its range, as the head's owner receives them at
    a group's end).

    >>> worker_bytes(1000, 50_000, 32, 2)  # 51,000 rows, and 2 models' parts of 25,000 rows
    26656000
    """
    return 2 * (held + masters) * dim * 4 + _transit(masters, dim, models)


def _transit(masters: int, dim: int, models: int) -> int:
    return models * min(masters, chunk_rows(dim, models, masters)) * _row_bytes(dim)


def worker_peak(held: int, masters: int, dim: int, models: int, shard_bytes: int) -> int:
    """A partitioned worker's memory at training's peaks (what the memory checks allow): its
    masters and shards, allocated once and changed in place, and plan.PEAK times what training
    allocates and frees as it goes: its model's rows of a group, their tables and update
    counts, and one exchange in transit.

    >>> worker_peak(1000, 50_000, 32, 2, 0)  # 50,000 x 256 + 2 x (1,000 x 280 + 2 x 25,000 x 272)
    40560000
    """
    rows = held * (2 * dim * 4 + 24)  # + update counts (2 x 4 bytes) and tables (16 bytes) per row
    return 2 * masters * dim * 4 + shard_bytes + int(PEAK * (rows + _transit(masters, dim, models)))


def group_choices(rounds: int) -> list[int]:
    """The groups of rounds a job may hold its rows for: 1, 2, 4, ... and ``rounds`` (one per round).

    >>> group_choices(16), group_choices(6)
    ([1, 2, 4, 8, 16], [1, 2, 4, 6])
    """
    out = [1 << i for i in range(rounds.bit_length()) if 1 << i < rounds]
    return out + [rounds]


def row_groups(held: dict[int, int], masters: int, dim: int, models: int, shard_bytes: int, limit: int) -> int:
    """The fewest groups of rounds (``held``: groups -> rows a model holds in one) whose rows,
    masters and shards fit a worker's memory ``limit`` at training's peaks (``worker_peak``);
    the most there are if none does (the check before training then says what is missing).

    >>> row_groups({1: 900_000, 2: 500_000, 4: 300_000}, 250_000, 32, 8, 0, 500_000_000)
    2
    """
    for groups in sorted(held):
        if worker_peak(held[groups], masters, dim, models, shard_bytes) <= limit:
            return groups
    return max(held)


MORE_ROUNDS = 8  # a job's rounds per epoch may grow to this many times train.rounds for its groups


def group_plan(t: TrainConfig, models: int) -> list[int]:
    """The groups of rounds a partitioned job may take (``group_choices``): up to its rounds per
    epoch, or, where ``syncs_per_epoch`` is not set, up to MORE_ROUNDS times as many (the
    rounds then grow to the groups chosen, ``rounds_and_groups``).

    >>> group_plan(TrainConfig(), 8)[-3:], group_plan(TrainConfig(syncs_per_epoch=16), 8)[-1]
    ([32, 64, 128], 16)
    """
    rounds = t.rounds(models)
    return group_choices(rounds * (MORE_ROUNDS if t.syncs_per_epoch is None else 1))


def rounds_and_groups(t: TrainConfig, models: int, held: dict[int, int], masters: int, shard_bytes: int,
                      limit: int | None) -> tuple[int, int]:
    """A partitioned job's rounds per epoch and groups of rounds: ``train.row_groups``, else the
    fewest of ``group_plan``'s whose rows (``held``: groups -> rows a model holds in one), masters
    and shards fit a worker's memory ``limit`` at training's peaks (None: one group). A group is one
    round or more, so where ``syncs_per_epoch`` is not set the rounds grow to the groups; where it
    is, the groups are at most its rounds. None fitting: the rounds as they are, and the most
    groups they allow (the check before training then says what is missing).

    >>> t, held = TrainConfig(), {1: 900_000, 2: 500_000, 4: 300_000, 8: 200_000, 16: 120_000, 32: 60_000}
    >>> [rounds_and_groups(t, 4, held, 100_000, 0, limit) for limit in (1_100_000_000, 350_000_000, 200_000_000)]
    [(8, 2), (32, 32), (8, 8)]
    >>> rounds_and_groups(TrainConfig(row_groups=16), 4, held, 100_000, 0, None)
    (16, 16)
    """
    rounds = t.rounds(models)
    if t.row_groups or not limit:
        groups = t.row_groups or 1
    else:
        groups = row_groups(held, masters, t.dim, models, shard_bytes, limit)
        if worker_peak(held[groups], masters, t.dim, models, shard_bytes) > limit:
            groups = rounds
    return (rounds, min(groups, rounds)) if t.syncs_per_epoch else (max(rounds, groups), groups)


def expected_rows(counts: np.ndarray, models: int, times: np.ndarray | None = None) -> tuple[int, int]:
    """Rows a model is expected to hold, and rows every model holds (the head), when a word's
    ``counts`` occurrences fall in the M models' shards independently and evenly: a word is in
    a model's shards with probability 1 - (1 - 1/M)^count. Co-located data (shards of related
    sentences) holds fewer; the dry run's figure is this estimate. ``times``: how many words
    have each of ``counts`` (default: one each).

    >>> expected_rows(np.array([10**6, 1, 1, 1, 1]), 2)  # 1 + 4 x 1/2 rows; head 1 + 4 x 1/4
    (3, 2)
    >>> expected_rows(np.array([10**6, 1]), 2, times=np.array([1, 4]))
    (3, 2)
    """
    p = 1.0 - (1.0 - 1.0 / max(models, 1)) ** np.asarray(counts, np.float64)
    w = np.ones(len(p)) if times is None else np.asarray(times, np.float64)
    return int(round((w * p).sum())), int(round((w * p ** models).sum()))
