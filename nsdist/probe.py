"""The loss a job reports per epoch: the SGNS loss of the model at the epoch's end on one fixed
sample of training pairs, so that every epoch's number means the same thing.

The kernels also tally a loss while they train (kept as ``train_loss``), but it scores each pair
just before that pair's own update, against rows its sentence (a session, a walk) has just pulled
towards it: it is optimistic by about the learning rate times the contexts per center. As the
learning rate decays to 0 that bias vanishes, so the tally climbs towards the model's real loss
even while the model improves (on sessions with window 50 it rose from 0.87 to 1.60 over 10
epochs while this loss fell every epoch; docs/recommendations.md).

The sample is drawn once per job from the first shard and the seed: ``PAIRS`` (context, center)
pairs within the window, ``negative`` noise words each from the job's noise table, and up to
``explicit`` of the session's shown items (weighted ``explicit_weight``), as the kernels draw
them (a noise word or shown item equal to the center is left out). The loss per pair is

    softplus(-win[c].wout[w]) + sum over noise n: softplus(win[c].wout[n])
                               + explicit_weight * sum over shown e: softplus(win[c].wout[e])

computed in float64, by a compiled loop: the probe runs on the first worker's model between an
epoch's last round and the next one's first, so its time holds every worker's next round back.
Pure functions: no IO and no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .encode import Shard
from .model import Model, Tables

PAIRS = 20_000  # the standard error of the mean loss is then about 0.01 (per-pair std ~1.4)


@dataclass(frozen=True)
class Sample:
    """Fixed pairs: ``context[i]`` predicts ``targets[i, 0]`` (the center) against the other
    targets (-1: none) with weights ``weights[i]`` (1 for noise words, explicit_weight for shown
    items)."""

    context: np.ndarray  # int32 (n,)
    targets: np.ndarray  # int32 (n, 1 + negative + explicit)
    weights: np.ndarray  # float32 (n, 1 + negative + explicit)


def sample(pieces: list[Shard], tables: Tables, window: int, negative: int, explicit: int,
           explicit_weight: float, seed: int, pairs: int = PAIRS) -> Sample:
    """Draw the job's fixed sample from a shard's pieces (see the module's docstring).

    >>> import numpy as np
    >>> from nsdist.model import make_tables
    >>> shard = Shard(np.array([0, 1, 2, 1], np.int32), np.array([0, 3, 4]))  # a sentence of 1 word is left out
    >>> s = sample([shard], make_tables(np.array([5, 3, 2]), 0.0, 0.75), window=5, negative=2, explicit=0,
    ...            explicit_weight=1.0, seed=1, pairs=4)
    >>> pairs = set(zip(s.context.tolist(), s.targets[:, 0].tolist()))  # both from the sentence of 3 words
    >>> pairs <= {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}, s.targets.shape
    (True, (4, 3))
    """
    rng = np.random.default_rng([seed, 0x5A17])
    ids = np.concatenate([p.ids for p in pieces]) if pieces else np.zeros(0, np.int32)
    lengths = np.concatenate([np.diff(p.offsets) for p in pieces]) if pieces else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # Positions in sentences of 2 words or more, where a center has a context.
    usable = np.repeat(lengths >= 2, lengths)
    candidates = np.flatnonzero(usable)
    if not len(candidates):
        empty = np.zeros((0, 1 + negative + explicit), np.int32)
        return Sample(np.zeros(0, np.int32), empty, empty.astype(np.float32))
    centers = rng.choice(candidates, size=pairs)
    sentence = np.searchsorted(starts, centers, side="right") - 1
    lo_s, hi_s = starts[sentence], starts[sentence] + lengths[sentence]  # [lo_s, hi_s)
    w = window if window > 0 else int(lengths.max())  # 0: the whole sentence
    lo, hi = np.maximum(lo_s, centers - w), np.minimum(hi_s - 1, centers + w)
    other = lo + rng.integers(0, hi - lo)  # one of the hi - lo other positions in the window
    other += other >= centers
    targets = np.full((pairs, 1 + negative + explicit), -1, np.int32)
    weights = np.zeros(targets.shape, np.float32)
    targets[:, 0], weights[:, 0] = ids[centers], 1.0
    v = len(tables.noise_prob)
    column = rng.integers(0, v, size=(pairs, negative))
    noise = np.where(rng.random((pairs, negative)) < tables.noise_prob[column], column, tables.noise_alias[column])
    targets[:, 1:1 + negative], weights[:, 1:1 + negative] = noise, 1.0
    if explicit and any(p.shown_ids is not None for p in pieces):
        _shown(pieces, sentence, rng, explicit, explicit_weight, targets[:, 1 + negative:],
               weights[:, 1 + negative:])
    drop = (targets[:, 1:] == targets[:, :1]) & (targets[:, 1:] >= 0)  # as the kernels drop them
    targets[:, 1:][drop], weights[:, 1:][drop] = -1, 0.0
    return Sample(ids[other].astype(np.int32), targets, weights)


def _shown(pieces: list[Shard], sentence: np.ndarray, rng, explicit: int, weight: float, targets: np.ndarray,
           weights: np.ndarray) -> None:
    """Up to ``explicit`` of each pair's session's shown items (a random choice where it has more)."""
    shown = np.concatenate([p.shown_ids if p.shown_ids is not None else np.zeros(0, np.int32) for p in pieces])
    counts = np.concatenate([np.diff(p.shown_offsets) if p.shown_offsets is not None
                             else np.zeros(p.sentences, np.int64) for p in pieces])
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    m, f = counts[sentence], first[sentence]
    for e in range(explicit):
        has = m > e
        pick = np.where(m > explicit, (rng.random(len(m)) * np.maximum(m, 1)).astype(np.int64), e)
        targets[has, e] = shown[f[has] + pick[has]]
        weights[has, e] = weight


def loss(sample: Sample, model: Model) -> dict:
    """The sample's summed loss and its parts under ``model`` (``loss / pairs`` is the mean).

    >>> import numpy as np
    >>> m = Model(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    >>> s = Sample(np.array([0], np.int32), np.array([[1, 0]], np.int32), np.array([[1, 1]], np.float32))
    >>> round(loss(s, m)["loss"], 4)  # 2 log 2: a zero model scores every target 1/2
    1.3863
    """
    positive, negative = _scored(sample.context, sample.targets, sample.weights, model.win, model.wout)
    return {"loss": positive + negative, "positive": positive, "negative": negative, "pairs": len(sample.context)}


@numba.njit(cache=True, nogil=True)
def _softplus(x: float) -> float:
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


@numba.njit(cache=True, nogil=True)
def _scored(context, targets, weights, win, wout):
    """The summed loss of the positives (column 0) and of the other targets (-1: none)."""
    positive, negative = 0.0, 0.0
    for i in range(len(context)):
        c = context[i]
        for t in range(targets.shape[1]):
            w = targets[i, t]
            if w < 0:
                continue
            f = 0.0
            for d in range(win.shape[1]):
                f += np.float64(win[c, d]) * np.float64(wout[w, d])
            if t == 0:
                positive += np.float64(weights[i, 0]) * _softplus(-f)
            else:
                negative += np.float64(weights[i, t]) * _softplus(f)
    return positive, negative
