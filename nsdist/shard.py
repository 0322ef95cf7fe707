"""Train one shard for one round, starting from the global model; return a sparse delta.

No IO and no Dask here: a pure function of its inputs, so a retried task reproduces its
result exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np

from .encode import Shard
from .model import Model, Tables, join_blocks
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


@dataclass(frozen=True)
class Delta:
    """Rows a shard changed: new - old for each touched row, and how often it updated it."""

    rows_in: np.ndarray  # int32
    d_in: np.ndarray  # float32 (k, dim)
    n_in: np.ndarray  # uint32: updates per row
    rows_out: np.ndarray
    d_out: np.ndarray
    n_out: np.ndarray
    stats: dict  # loss, pairs, words, seconds

    @property
    def nbytes(self) -> int:
        arrays = (self.rows_in, self.d_in, self.n_in, self.rows_out, self.d_out, self.n_out)
        return sum(a.nbytes for a in arrays)


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


def _sparse(blocks: list[np.ndarray], after: np.ndarray, counts: np.ndarray) -> list[tuple]:
    """Per row block (interleaved, see ``model.model_block``): the touched rows (block-local
    ids), their deltas after - before and their update counts, computed for the touched rows
    only, in one compiled pass."""
    n = len(blocks)
    out = []
    for b, before in enumerate(blocks):
        rows = np.flatnonzero(counts[b::n]).astype(np.int32)
        out.append((rows, _row_deltas(after, before, rows, b, n), counts[b::n][rows]))
    return out


@numba.njit(cache=True, nogil=True)
def _row_deltas(after, before, rows, block, blocks):  # pragma: no cover - compiled
    """after[rows * blocks + block] - before[rows] (the same float subtraction as numpy's)."""
    d = np.empty((len(rows), after.shape[1]), np.float32)
    for i in range(len(rows)):
        a = rows[i] * blocks + block
        for k in range(after.shape[1]):
            d[i, k] = after[a, k] - before[rows[i], k]
    return d


def train_blocks(shard: Shard, tables: Tables, spec: RoundSpec, *blocks: Model) -> tuple[Delta, ...]:
    """Train this round's slice of a shard on a private copy of the model given as its row
    blocks; return one sparse delta per block (``stats`` in the first)."""
    t0 = time.perf_counter()
    # The join is the private copy: Dask may hand the same blocks to several tasks on one worker.
    model = join_blocks(*blocks) if len(blocks) > 1 else Model(blocks[0].win.copy(), blocks[0].wout.copy())
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
    seconds = time.perf_counter() - t0
    ins = _sparse([b.win for b in blocks], win, n_in)
    outs = _sparse([b.wout for b in blocks], wout, n_out)
    stats = {"loss": float(loss), "pairs": int(pairs), "words": int(words), "seconds": seconds}
    return tuple(Delta(*i, *o, stats if b == 0 else {}) for b, (i, o) in enumerate(zip(ins, outs)))


def train_shard(shard: Shard, model: Model, tables: Tables, spec: RoundSpec) -> Delta:
    """Train this round's slice of a shard on a private copy of the model (one block)."""
    return train_blocks(shard, tables, spec, model)[0]
