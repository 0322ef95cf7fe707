"""Random walks over a CSR (DeepWalk; node2vec by KnightKing's rejection sampling) and the
shuffled order in which the walks are generated. Every walk is a function of (seed, start
node, walk index) alone."""

from __future__ import annotations

import numba
import numpy as np

from ..errors import ConfigError
from .csr import CSR

# Random numbers -------------------------------------------------------------------------------
# A walk's random stream is splitmix64 seeded by a hash of (seed, start node, walk index) alone,
# so a walk is the same bits whichever task, worker or batch of starts generates it.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_WALK_KEY = np.uint64(0x5BD1E9955BD1E995)  # keeps walk streams apart from the start-order keys


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(z):  # pragma: no cover - compiled
    """splitmix64's finalizer: a bijective, well-avalanched uint64 -> uint64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _hash3(a, b, c):  # pragma: no cover - compiled
    return _mix(_mix(_mix(np.uint64(a) + _GOLDEN) + np.uint64(b) + _GOLDEN) + np.uint64(c) + _GOLDEN)


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform(state):  # pragma: no cover - compiled
    """One splitmix64 step: (uniform float64 in [0, 1) from the top 53 bits, new state)."""
    state = state + _GOLDEN
    return (_mix(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0), state


# Walks ----------------------------------------------------------------------------------------

def random_walks(csr: CSR, starts: np.ndarray, walk_index, walk_length: int, p: float = 1.0, q: float = 1.0,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One walk per start node: walk k is ``ids[offsets[k]:offsets[k + 1]]`` (node indices).

    Each step follows an out-edge with probability proportional to its weight (DeepWalk); with
    ``p`` or ``q`` not 1 the step from v after t is biased as in node2vec: weight times 1/p back
    to t, 1 to a node t links to, 1/q elsewhere. A walk has up to ``walk_length`` nodes and
    stops at a node without out-edges (an isolated start: the start alone). Walk k's random
    stream depends on (seed, starts[k], walk_index[k]) only (``walk_index``: one int for all).

    >>> from nsdist.graph.csr import build_csr
    >>> g = build_csr([(np.array([0, 1, 2]), np.array([1, 2, 0]), None)], 4)  # a directed triangle
    >>> ids, offsets = random_walks(g, np.array([0, 3], np.int32), 0, walk_length=5)
    >>> ids.tolist(), offsets.tolist()
    ([0, 1, 2, 0, 1, 3], [0, 5, 6])
    """
    check_walk_params(walk_length, p, q)
    starts = np.ascontiguousarray(starts, np.int32)
    index = np.broadcast_to(np.asarray(walk_index, np.int64), starts.shape).copy()
    ids = np.empty(len(starts) * walk_length, np.int32)
    offsets = np.zeros(len(starts) + 1, np.int64)
    # An unweighted CSR's tables are None: numba compiles a kernel of its own for them, without the
    # alias and weight branches (a runtime flag leaves them in every step, at several times the cost).
    seed = np.uint64(seed % 2**64)
    if p != 1.0 or q != 1.0:
        _node2vec_walks(csr.offsets, csr.neighbors, csr.weights, csr.prob, csr.alias, csr.totals, starts, index,
                        walk_length, 1.0 / p, 1.0 / q, seed, ids, offsets)
    else:
        _first_order_walks(csr.offsets, csr.neighbors, csr.prob, csr.alias, starts, index, walk_length, seed, ids,
                           offsets)
    return (ids if offsets[-1] == len(ids) else ids[:offsets[-1]].copy()), offsets


def check_walk_params(walk_length: int, p: float, q: float) -> None:
    """ConfigError unless walks have a node or more and p, q are positive and finite."""
    if walk_length < 1:
        raise ConfigError(f"walk_length is {walk_length}; set it to 1 or more (nodes per walk)")
    for name, value in (("p", p), ("q", q)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"node2vec {name} is {value}; set it to a positive number (1: no bias)")


@numba.njit(cache=True, nogil=True, inline="always")
def _step(offsets, neighbors, prob, alias, v, state):  # pragma: no cover - compiled
    """A first-order step from v (which has out-edges): (next node, new state). One uniform
    picks the row position (integer part) and the alias coin (fraction), as noise.draw; without
    alias tables (``prob`` None) the position alone."""
    a = offsets[v]
    u, state = _uniform(state)
    x = u * (offsets[v + 1] - a)
    i = np.int64(x)
    if prob is not None:  # alone in its test: numba drops the branch when prob's type is None
        if x - i >= prob[a + i]:
            i = alias[a + i]
    return neighbors[a + i], state


@numba.njit(cache=True, nogil=True, inline="always")
def _position(offsets, neighbors, t, x):  # pragma: no cover - compiled
    """Where x is in t's sorted row (binary search); -1 if t -> x is no edge."""
    lo, hi = offsets[t], offsets[t + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if neighbors[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < offsets[t + 1] and neighbors[lo] == x else -1


@numba.njit(cache=True, nogil=True, inline="always")
def _links(offsets, neighbors, t, x):  # pragma: no cover - compiled
    """Whether t -> x is an edge."""
    return _position(offsets, neighbors, t, x) >= 0


# First-order walks in flight at once (_first_order_walks): enough to overlap the memory loads of
# their steps, few enough that their state stays in registers and L1.
_LANES = 16


@numba.njit(cache=True, nogil=True)
def _first_order_walks(offsets, neighbors, prob, alias, starts, walk_index, walk_length, seed, ids,
                       walk_offsets):  # pragma: no cover - compiled
    # DeepWalk's walks, _LANES of them advanced one step at a time, each on its own random stream
    # (a walk is a function of (seed, start, walk index) whatever runs beside it). Within a walk
    # every step waits for the last: v's row bounds, then the neighbour drawn from the row, are
    # loads from memory, and the next step starts from that neighbour. Steps of different walks
    # do not wait for each other, so the CPU overlaps their loads. Walk k is written at
    # k * walk_length; walks that stopped early, at a node without out-edges, are closed up last.
    v = np.empty(_LANES, np.int64)
    state = np.empty(_LANES, np.uint64)
    length = np.empty(_LANES, np.int64)
    for first in range(0, len(starts), _LANES):
        lanes = min(_LANES, len(starts) - first)
        for j in range(lanes):
            k = first + j
            v[j] = starts[k]
            state[j] = _hash3(seed ^ _WALK_KEY, starts[k], walk_index[k])
            ids[k * walk_length] = starts[k]
            length[j] = 1
        for step in range(1, walk_length):
            for j in range(lanes):
                if length[j] == step and offsets[v[j] + 1] > offsets[v[j]]:
                    x, state[j] = _step(offsets, neighbors, prob, alias, v[j], state[j])
                    ids[(first + j) * walk_length + step] = x
                    v[j] = x
                    length[j] = step + 1
        for j in range(lanes):
            walk_offsets[first + j + 1] = length[j]
    n = 0
    for k in range(len(starts)):  # close up after short walks; a walk only moves to lower positions
        at = k * walk_length
        if n != at:
            for i in range(walk_offsets[k + 1]):
                ids[n + i] = ids[at + i]
        n += walk_offsets[k + 1]
        walk_offsets[k + 1] = n


@numba.njit(cache=True, nogil=True)
def _node2vec_walks(offsets, neighbors, weights, prob, alias, totals, starts, walk_index, walk_length,
                    inv_p, inv_q, seed, ids, walk_offsets):  # pragma: no cover - compiled
    # node2vec by rejection (KnightKing): propose x from v's first-order distribution, accept
    # with probability bias(t, x) / envelope. The bias is 1/p for x == t, 1 if t -> x, 1/q
    # otherwise; below min(1, 1/q) every x != t is accepted without the search in t's row.
    # The envelope is max(1, 1/q), not max(1/p, 1, 1/q): with p < 1 the single return edge
    # would otherwise halve (or worse) every other candidate's acceptance. Its excess mass
    # w(v, t) * (1/p - envelope) is "folded" out instead, as KnightKing does with outliers: each
    # trial first picks t outright with that mass's share of the trial's total.
    envelope = max(1.0, inv_q)
    sure = min(1.0, inv_q)
    back = min(inv_p, envelope)
    n = 0
    for k in range(len(starts)):
        v = starts[k]
        state = _hash3(seed ^ _WALK_KEY, v, walk_index[k])
        ids[n] = v
        n += 1
        t = -1
        for _ in range(1, walk_length):
            a, b = offsets[v], offsets[v + 1]
            if b == a:
                break
            if t < 0:  # the first step has no previous node: first-order
                x, state = _step(offsets, neighbors, prob, alias, v, state)
            else:
                extra = mass = 0.0
                if inv_p > envelope:
                    at = _position(offsets, neighbors, v, t)
                    if at >= 0:
                        weight, total = 1.0, float(b - a)
                        if weights is not None:
                            weight, total = float(weights[at]), totals[v]
                        extra = weight * (inv_p - envelope)
                        mass = envelope * total + extra
                while True:
                    if extra > 0.0:
                        u, state = _uniform(state)
                        if u * mass < extra:
                            x = t
                            break
                    x, state = _step(offsets, neighbors, prob, alias, v, state)
                    u, state = _uniform(state)
                    r = u * envelope
                    if x == t:
                        if r < back:
                            break
                    elif r < sure or r < (1.0 if _links(offsets, neighbors, t, x) else inv_q):
                        break
            ids[n] = x
            n += 1
            t, v = v, x
        walk_offsets[k + 1] = n


# The order of the walks -----------------------------------------------------------------------

def walk_starts(n: int, walks_per_node: int, lo: int, hi: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Start nodes and walk indices of the walks at positions [lo, hi) of a job's order.

    The order is ``walks_per_node`` passes over the ``n`` nodes, each pass in its own shuffled
    order (DeepWalk shuffles the nodes every pass: SGD should not see a graph's nodes in file
    order). Position k is walk ``k // n`` of node ``perm(k % n)``, where ``perm`` is a
    pseudo-random permutation keyed by (seed, k // n) and computed element by element (a
    Feistel network, cycle-walked into [0, n)): a task pays for its own positions only, never
    for a whole pass. Tasks that tile [0, n * walks_per_node) give every walk once.

    >>> starts, index = walk_starts(4, 2, 0, 8, seed=1)
    >>> sorted(starts[:4].tolist()), sorted(starts[4:].tolist()), index.tolist()
    ([0, 1, 2, 3], [0, 1, 2, 3], [0, 0, 0, 0, 1, 1, 1, 1])
    """
    if not 0 <= lo <= hi <= n * walks_per_node:
        raise ValueError(f"positions [{lo}, {hi}) are outside [0, {n * walks_per_node})")
    positions = np.arange(lo, hi, dtype=np.int64)
    index = positions // max(n, 1)
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)  # the network permutes [0, 4**half) >= n
    starts = np.empty(hi - lo, np.int32)
    _permute(positions - index * n, index, n, half, np.uint64(seed % 2**64), starts)
    return starts, index


_ORDER_KEY = np.uint64(0xC2B2AE3D27D4EB4F)


@numba.njit(cache=True, nogil=True)
def _permute(j, passes, n, half, seed, out):  # pragma: no cover - compiled
    """out[i] = the pass-``passes[i]`` permutation of [0, n) at ``j[i]``: a 4-round Feistel
    network on 2 * half bits, applied again until the value falls below n (cycle walking keeps
    it a bijection of [0, n); fewer than 4 rounds of walking are expected, as 4**half < 4n)."""
    mask = np.uint64((1 << half) - 1)
    for i in range(len(j)):
        key = _hash3(seed ^ _ORDER_KEY, passes[i], n)
        x = np.uint64(j[i])
        while True:
            left, right = x >> np.uint64(half), x & mask
            for r in range(4):
                left, right = right, left ^ (_mix(key + np.uint64(r) * _GOLDEN + right) & mask)
            x = (left << np.uint64(half)) | right
            if x < np.uint64(n):
                break
        out[i] = x
