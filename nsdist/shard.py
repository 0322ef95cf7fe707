"""Train one shard for one round, in place on the shard's replica of the global model.

No IO and no Dask here: given the same replica, shard, tables and round, the same result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .encode import Shard
from .model import Model, Tables
from .rng import task_state
from .sgns import train_batch, train_pairs

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


def round_slice(offsets: np.ndarray, round_: int, rounds: int) -> tuple[int, int]:
    """Sentences [begin, end) a shard trains in a round: contiguous, about equal in words (a
    sentence goes to the round that holds its first word), so that the shards of a round finish
    together.

    >>> [round_slice(np.array([0, 6, 7, 8, 9, 10, 11, 12]), r, 3) for r in range(3)]
    [(0, 1), (1, 3), (3, 7)]
    """
    starts, words = offsets[:-1], int(offsets[-1])
    return (int(np.searchsorted(starts, words * round_ // rounds)),
            int(np.searchsorted(starts, words * (round_ + 1) // rounds)))


def round_words(shard: Shard, rounds: int) -> list[int]:
    """Words (before subsampling) in each round's slice: the learning-rate schedule needs them."""
    bounds = [round_slice(shard.offsets, r, rounds) for r in range(rounds)]
    return [int(shard.offsets[e] - shard.offsets[b]) for b, e in bounds]


def train_round(model: Model, shard: Shard, tables: Tables, spec: RoundSpec) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train this round's slice of a shard in place on ``model``; returns how often each row of
    win and of wout was updated (uint32) and the statistics (loss, pairs, words, seconds)."""
    t0 = time.perf_counter()
    win, wout = model.win, model.wout
    n_in = np.zeros(len(win), np.uint32)
    n_out = np.zeros(len(wout), np.uint32)
    begin, end = round_slice(shard.offsets, spec.round, spec.rounds)
    state = task_state(spec.seed, spec.epoch, spec.round, spec.shard)
    rate = tables.rate if tables.rate is not None else np.ones(len(win), np.float32)
    loss, pairs, words, _ = KERNELS[spec.kernel](
        win, wout, shard.ids, shard.offsets, begin, end,
        tables.keep, tables.noise_prob, tables.noise_alias,
        spec.window, spec.negative, spec.alpha_start, spec.alpha_end, state, n_in, n_out, rate,
    )
    stats = {"loss": float(loss), "pairs": int(pairs), "words": int(words), "seconds": time.perf_counter() - t0}
    return n_in, n_out, stats
