"""Explicit random state for the kernels: a 64-bit LCG carried as a uint64 value.

Every task derives its state from (seed, epoch, round, shard), so a retried task draws the
same numbers and a run is reproducible for a given seed and shard count.
"""

from __future__ import annotations

import numba
import numpy as np


def task_state(*key: int) -> np.uint64:
    """A well-mixed uint64 state from integers: task_state(seed, epoch, round, shard)."""
    return np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0]


@numba.njit(cache=True, nogil=True, inline="always")
def next_random(state):  # pragma: no cover - compiled
    """One LCG step (Knuth's MMIX constants): (uniform float64 in [0, 1), new state)."""
    state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
    # The top 53 bits are the well-mixed ones in an LCG.
    return (state >> np.uint64(11)) * (1.0 / 9007199254740992.0), state
