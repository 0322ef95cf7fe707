"""Train one shard for one round, in place on the model its worker holds.

No IO and no Dask here: given the same model, shard, tables and round, the same result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .encode import Shard
from .model import Model, Tables
from .rng import task_state
from .sgns import fresh_kernel, train_batch, train_fresh, train_pairs

KERNELS = {"pair": train_pairs, "batch": train_batch}


@dataclass(frozen=True)
class RoundSpec:
    """What one shard does in one round: which slice of its sentences, at which rates."""

    epoch: int
    round: int
    rounds: int  # rounds per epoch
    shard: int
    alpha_start: float
    alpha_end: float
    window: int
    negative: int
    seed: int
    kernel: str = "pair"
    share: int = 0  # context words per draw of negatives (batch kernel); 0: a whole window
    explicit: int = 0  # shown-but-not-clicked items per center (sessions that have them)
    explicit_weight: float = 1.0


def round_spec(t, epoch: int, r: int, rounds: int, shard: int, alpha_start: float, alpha_end: float,
               walks: bool = False) -> RoundSpec:
    """The round of ``shard`` under a job's ``TrainConfig`` ``t``; ``walks``: a graph job's."""
    return RoundSpec(epoch, r, rounds, shard, alpha_start, alpha_end, t.window, t.negative, t.seed, t.kernel,
                     t.share(walks=walks), t.explicit_negatives, t.explicit_weight)


def kernel(spec: RoundSpec, dim: int = 0):
    """The compiled kernel of a round on a model ``dim`` floats wide (0: any): the batch kernel
    with a fresh draw of negatives per context word (``share`` 1: long windows, sessions, graph
    walks) is sgns.train_fresh, its draws laid out for that case (compiled for the width,
    sgns.fresh_kernel); otherwise ``spec.kernel``'s.

    >>> spec = RoundSpec(0, 0, 1, 0, 0.025, 0.0, 10, 5, 1, "batch", 1)
    >>> kernel(spec).__name__, kernel(spec, 64) is fresh_kernel(64)
    ('train_fresh', True)
    """
    if spec.kernel == "batch" and spec.share == 1:
        return fresh_kernel(dim) if dim else train_fresh
    return KERNELS[spec.kernel]


def round_slice(offsets: np.ndarray, round_: int, rounds: int) -> tuple[int, int]:
    """Sentences [begin, end) a shard trains in a round: contiguous, about equal in words (a
    sentence goes to the round that holds its first word), so that the shards of a round finish
    together.

    >>> [round_slice(np.array([0, 6, 7, 8, 9, 10, 11, 12]), r, 3) for r in range(3)]
    [(0, 1), (1, 3), (3, 7)]
    """
    return _slices([offsets], round_, rounds)[0]


def round_slices(pieces: Sequence[Shard], round_: int, rounds: int) -> list[tuple[int, int]]:
    """``round_slice`` of a shard held as pieces (the arrays of consecutive token ranges, see
    cluster.encode_shards): each piece's sentences [begin, end) in the round, the same
    sentences as in the pieces' concatenation.

    >>> offsets = np.array([0, 6, 7, 8, 9, 10, 11, 12])
    >>> [round_slice(offsets, r, 3) for r in range(3)]
    [(0, 1), (1, 3), (3, 7)]
    >>> a, b = Shard(np.zeros(7, np.int32), offsets[:3]), Shard(np.zeros(5, np.int32), offsets[2:] - 7)
    >>> [round_slices([a, b], r, 3) for r in range(3)]
    [[(0, 1), (0, 0)], [(1, 2), (0, 1)], [(2, 2), (1, 5)]]
    """
    return _slices([p.offsets for p in pieces], round_, rounds)


def _slices(offsets: list[np.ndarray], round_: int, rounds: int) -> list[tuple[int, int]]:
    """Per offsets array (consecutive parts of one shard): its sentences starting in the round's
    word range [total * round / rounds, total * (round + 1) / rounds)."""
    total = sum(int(o[-1]) for o in offsets)
    lo, hi = total * round_ // rounds, total * (round_ + 1) // rounds
    out, start = [], 0
    for o in offsets:
        starts = o[:-1]
        out.append((int(np.searchsorted(starts, lo - start)), int(np.searchsorted(starts, hi - start))))
        start += int(o[-1])
    return out


def round_words(pieces: Sequence[Shard], rounds: int) -> list[int]:
    """Words (before subsampling) in each round's slice: the learning-rate schedule needs them."""
    return [sum(int(p.offsets[e] - p.offsets[b]) for p, (b, e) in zip(pieces, round_slices(pieces, r, rounds)))
            for r in range(rounds)]


def piece_slice(piece: Shard, begin: int, end: int, held: np.ndarray | None = None) -> Shard:
    """Sentences [begin, end) of a piece, offsets from 0; ``held`` (sorted, holding every id):
    each id as its position there, the local ids a partitioned model trains on (layout.py).

    >>> p = piece_slice(Shard(np.array([7, 2, 2, 9], np.int32), np.array([0, 1, 3, 4])), 1, 3, np.array([2, 9]))
    >>> p.ids.tolist(), p.offsets.tolist()
    ([0, 0, 1], [0, 2, 3])
    """
    def cut(ids, offsets):
        if ids is None:
            return None, None
        a, b = offsets[begin], offsets[end]
        ids = ids[a:b] if held is None else np.searchsorted(held, ids[a:b]).astype(np.int32)
        return ids, offsets[begin:end + 1] - a

    return Shard(*cut(piece.ids, piece.offsets), *cut(piece.shown_ids, piece.shown_offsets))


def train_round(model: Model, pieces: Sequence[Shard], tables: Tables, spec: RoundSpec,
                n_in: np.ndarray | None = None, n_out: np.ndarray | None = None, held: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train this round's slice of a shard (held as ``pieces``) in place on ``model``; returns
    how often each row of win and of wout was updated (uint32: added to ``n_in``/``n_out`` when
    given, else counted from zero) and the statistics (loss, pairs, words, seconds). One kernel
    call per piece, with the round's learning-rate schedule and random state carried across:
    the same as one call on the pieces' concatenation. ``held``: the model holds these rows
    only (sorted global ids): the round's sentences are mapped to their positions first, a
    round at a time, so a shard is kept once, with global ids (``piece_slice``)."""
    t0 = time.perf_counter()
    win, wout = model.win, model.wout
    n_in = np.zeros(len(win), np.uint32) if n_in is None else n_in
    n_out = np.zeros(len(wout), np.uint32) if n_out is None else n_out
    slices = round_slices(pieces, spec.round, spec.rounds)
    total = sum(int(p.offsets[e] - p.offsets[b]) for p, (b, e) in zip(pieces, slices))
    state = task_state(spec.seed, spec.epoch, spec.round, spec.shard)
    rate = tables.rate if tables.rate is not None else np.ones(len(win), np.float32)
    loss, pairs, words = 0.0, 0, 0
    for p, (begin, end) in zip(pieces, slices):
        if begin == end:
            continue
        if held is not None:
            p, begin, end = piece_slice(p, begin, end, held), 0, end - begin
        piece_loss, piece_pairs, piece_words, state = kernel(spec, win.shape[1])(
            win, wout, p.ids, p.offsets, begin, end,
            tables.keep, tables.noise_prob, tables.noise_alias,
            spec.window, spec.negative, spec.alpha_start, spec.alpha_end, state, n_in, n_out, rate,
            words, total, spec.share, p.shown_ids, p.shown_offsets, spec.explicit, spec.explicit_weight,
        )
        loss, pairs, words = loss + piece_loss, pairs + piece_pairs, words + piece_words
        state = np.uint64(state)  # returned as a Python int; passed on as uint64, as task_state's
    stats = {"loss": float(loss), "pairs": int(pairs), "words": int(words), "seconds": time.perf_counter() - t0}
    return n_in, n_out, stats
