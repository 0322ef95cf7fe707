"""Walks over a partitioned adjacency in supersteps (KnightKing): each range's owner advances
the walkers at its nodes while they stay there, then ships them to the owner of their next node.
The walks are the replicated kernels' (``walks.random_walks``) bit for bit: a walker carries
its random state, and every draw is the one the replicated walk makes at that step.

node2vec's acceptance test needs whether the previous node t links to the candidate x. After a
walker crossed to another range, t is a node of the range it left: the walker asks t's owner
(a query of 16 bytes, answered with 9) and waits, holding its drawn candidate and coin, for the
answer, two supersteps later. Shipping t's neighbour list with the walker instead would cost
4 bytes per neighbour on every crossing, and walks cross most often from the hubs, whose lists
are the longest; a query costs the same whatever the degrees, and only the first step after a
crossing may need one (later, t is local).

Pure functions: ``superstep`` is one range's superstep, ``walk_supersteps`` the whole walk as a
plain loop over the ranges (``cluster/walkers.py`` runs the same supersteps as tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from .partition import Part
from .walks import _LANES, _WALK_KEY, _hash3, _links, _position, _step, _uniform, check_walk_params


@dataclass(frozen=True)
class Walkers:
    """Walkers in flight: walk ``wid``'s walker is at node ``v`` after ``t`` (-1: none yet),
    has written ``length`` nodes (0: not even its start) and draws next from ``state``."""

    wid: np.ndarray  # int64: the walk's position in the job's order
    v: np.ndarray  # int32
    t: np.ndarray  # int32
    state: np.ndarray  # uint64
    length: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.wid)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.wid, self.v, self.t, self.state, self.length))

    def take(self, i) -> "Walkers":
        return Walkers(self.wid[i], self.v[i], self.t[i], self.state[i], self.length[i])

    @staticmethod
    def concat(batches) -> "Walkers":
        batches = list(batches)
        if not batches:
            return NO_WALKERS
        return Walkers(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("wid", "v", "t", "state", "length")))


NO_WALKERS = Walkers(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint64),
                     np.zeros(0, np.int32))


@dataclass(frozen=True)
class Mail:
    """What one range sends another in a superstep: walkers that moved to its nodes, queries
    (does t link to x? for the walk wid) about its nodes t, and answers to its own queries."""

    walkers: Walkers = NO_WALKERS
    queries: tuple = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))  # wid, t, x
    answers: tuple = (np.zeros(0, np.int64), np.zeros(0, bool))  # wid, links

    @property
    def nbytes(self) -> int:
        return self.walkers.nbytes + sum(a.nbytes for a in self.queries) + sum(a.nbytes for a in self.answers)

    @property
    def items(self) -> int:
        return len(self.walkers) + len(self.queries[0]) + len(self.answers[0])


@dataclass(frozen=True)
class Held:
    """A range's state between supersteps: walkers waiting for an answer (with the candidate x
    and the coin r they drew) and the walk nodes it wrote, as (wid * walk_length + step, node)."""

    walkers: Walkers = NO_WALKERS
    x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    r: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    paths: tuple = ()  # of (keys int64, nodes int32)


@dataclass(frozen=True)
class Step:
    """One range's superstep: its state after it, its outbox (one Mail per range) and counts."""

    held: Held
    outbox: list
    steps: int  # walk nodes written
    sent: int  # bytes of mail to other ranges

    @property
    def active(self) -> int:
        """Walkers, queries and answers still in flight from here."""
        return len(self.held.walkers) + sum(m.items for m in self.outbox)


@dataclass(frozen=True)
class WalkParams:
    walk_length: int
    p: float = 1.0
    q: float = 1.0

    def __post_init__(self):
        check_walk_params(self.walk_length, self.p, self.q)

    @property
    def second_order(self) -> bool:
        return self.p != 1.0 or self.q != 1.0


def owners(bounds: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The range each node is in.

    >>> owners(np.array([0, 2, 5]), np.array([4, 0, 2])).tolist()
    [1, 0, 1]
    """
    return np.searchsorted(bounds, nodes, side="right") - 1


def start_walkers(wid: np.ndarray, starts: np.ndarray, walk_index, bounds: np.ndarray, seed: int) -> list[Mail]:
    """The walkers of walks ``wid`` (starting at ``starts``, walk index ``walk_index``), as mail
    to the owners of their start nodes; each carries the stream the replicated walk starts with."""
    starts = np.ascontiguousarray(starts, np.int32)
    index = np.broadcast_to(np.asarray(walk_index, np.int64), starts.shape).copy()
    state = np.empty(len(starts), np.uint64)
    _start_states(starts, index, np.uint64(seed % 2**64), state)
    walkers = Walkers(np.asarray(wid, np.int64), starts, np.full(len(starts), -1, np.int32), state,
                      np.zeros(len(starts), np.int32))
    return _by_owner(walkers, owners(bounds, starts), len(bounds) - 1)


@numba.njit(cache=True, nogil=True)
def _start_states(starts, index, seed, out):  # pragma: no cover - compiled
    for k in range(len(starts)):
        out[k] = _hash3(seed ^ _WALK_KEY, starts[k], index[k])


def grouped(labels: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, cuts): ``order[cuts[g]:cuts[g + 1]]`` are the positions of label g, in order.
    Labels of fewer than 2**16 groups sort as uint16, which numpy's stable sort does in linear
    time (a radix sort): a superstep groups every walker and every written node this way.

    >>> order, cuts = grouped(np.array([1, 0, 1, 2]), 3)
    >>> order.tolist(), cuts.tolist()
    ([1, 0, 2, 3], [0, 1, 3, 4])
    """
    small = labels.astype(np.uint16) if groups < 2**16 else labels
    cuts = np.zeros(groups + 1, np.int64)
    np.cumsum(np.bincount(small, minlength=groups), out=cuts[1:])
    return np.argsort(small, kind="stable"), cuts


def _by_owner(walkers: Walkers, owner: np.ndarray, parts: int) -> list[Mail]:
    order, cuts = grouped(owner, parts)
    return [Mail(walkers=walkers.take(order[cuts[i]:cuts[i + 1]])) for i in range(parts)]


def superstep(part: Part, bounds: np.ndarray, held: Held, inbox: list[Mail], params: WalkParams,
              starting=()) -> Step:
    """One superstep of range ``part``: answer the queries about its nodes, resume its waiting
    walkers whose answers came, advance them, the walkers that arrived and those ``starting``
    (``start_walkers``) while they stay in the range, then route the walkers that left (to
    their node's owner) and the new queries (to the previous node's owner). ``inbox[i]``: the
    mail range i sent it in the last superstep. Pure: the inputs are not changed."""
    parts = len(bounds) - 1
    ready, ok = _answered(held, inbox)
    arrived = Walkers.concat([m.walkers for m in inbox] + list(starting))
    w = Walkers.concat([held.walkers.take(ready), arrived])
    v, t, state, length = w.v.copy(), w.t.copy(), w.state.copy(), w.length.copy()
    x = np.concatenate([held.x[ready], np.full(len(arrived), -1, np.int32)])
    r = np.concatenate([held.r[ready], np.zeros(len(arrived))])
    answer = np.concatenate([ok, np.zeros(len(arrived), bool)])
    keys = np.empty(int(np.sum(params.walk_length - length)), np.int64)  # the most nodes they can write
    nodes = np.empty(len(keys), np.int32)
    status = np.empty(len(w), np.int8)
    c = part.csr
    if params.second_order:
        written = _advance(c.offsets, c.neighbors, c.weights, c.prob, c.alias, c.totals, part.lo, part.hi, w.wid, v,
                           t, state, length, x, r, answer, params.walk_length, 1.0 / params.p, 1.0 / params.q, keys,
                           nodes, status)
    else:
        written = _advance_first(c.offsets, c.neighbors, c.prob, c.alias, part.lo, part.hi, w.wid, v, t, state, length,
                                 params.walk_length, keys, nodes, status)
    after = Walkers(w.wid, v, t, state, length)
    asking, moved = status == ASKING, status == MOVED
    wait = ~ready
    new_held = Held(Walkers.concat([held.walkers.take(wait), after.take(asking)]),
                    np.concatenate([held.x[wait], x[asking]]), np.concatenate([held.r[wait], r[asking]]),
                    # copies: the buffers have room for every walker's whole remaining walk
                    held.paths + (((keys[:written].copy(), nodes[:written].copy()),) if written else ()))
    going = _by_owner(after.take(moved), owners(bounds, v[moved]), parts)
    ask_to = owners(bounds, t[asking])
    ask = (w.wid[asking], t[asking], x[asking])
    outbox = [Mail(going[i].walkers, tuple(a[ask_to == i] for a in ask), _answer(part, m.queries))
              for i, m in enumerate(inbox)]
    me = np.flatnonzero((bounds[:-1] == part.lo) & (bounds[1:] == part.hi))[0]
    return Step(new_held, outbox, written, sum(m.nbytes for i, m in enumerate(outbox) if i != me))


def _answered(held: Held, inbox: list[Mail]) -> tuple[np.ndarray, np.ndarray]:
    """Which waiting walkers got their answer this superstep, and the answers (in their order)."""
    wid = np.concatenate([m.answers[0] for m in inbox]) if inbox else np.zeros(0, np.int64)
    links = np.concatenate([m.answers[1] for m in inbox]) if inbox else np.zeros(0, bool)
    order = np.argsort(wid)
    at = np.minimum(np.searchsorted(wid[order], held.walkers.wid), max(len(wid) - 1, 0))
    ready = (wid[order][at] == held.walkers.wid) if len(wid) else np.zeros(len(held.walkers), bool)
    return ready, links[order][at][ready] if len(wid) else np.zeros(0, bool)


def _answer(part: Part, queries: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Answers to queries about this range's nodes: whether t links to x, per walk."""
    wid, t, x = queries
    links = np.empty(len(wid), bool)
    _links_all(part.csr.offsets, part.csr.neighbors, part.lo, t, x, links)
    return wid, links


@numba.njit(cache=True, nogil=True)
def _links_all(offsets, neighbors, lo, t, x, out):  # pragma: no cover - compiled
    for i in range(len(t)):
        out[i] = _links(offsets, neighbors, t[i] - lo, x[i])


# A walker's status after its range advanced it.
DONE, MOVED, ASKING = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def _advance(offsets, neighbors, weights, prob, alias, totals, lo, hi, wid, v, t, state, length, x, r, answer,
             walk_length, inv_p, inv_q, keys, nodes, status):  # pragma: no cover - compiled
    # walks._node2vec_walks for the walkers at this range's nodes, with the same draws in the
    # same order, until each walker's walk ends (DONE), its next node is another range's
    # (MOVED), or its acceptance test needs a node it left behind (ASKING: x and r hold the
    # candidate and the coin until the answer comes).
    envelope = max(1.0, inv_q)
    sure = min(1.0, inv_q)
    back = min(inv_p, envelope)
    n = 0
    for k in range(len(wid)):
        vv, tt, st, ln = np.int64(v[k]), np.int64(t[k]), state[k], length[k]
        base = wid[k] * walk_length
        if ln == 0:
            keys[n], nodes[n] = base, vv
            n += 1
            ln = 1
        status[k] = DONE
        while ln < walk_length:
            a, b = offsets[vv - lo], offsets[vv - lo + 1]
            if b == a:
                break
            if tt < 0:
                nx, st = _step(offsets, neighbors, prob, alias, vv - lo, st)
            else:
                extra = mass = 0.0
                if inv_p > envelope:
                    at = _position(offsets, neighbors, vv - lo, tt)
                    if at >= 0:
                        weight, total = 1.0, float(b - a)
                        if weights is not None:
                            weight, total = float(weights[at]), totals[vv - lo]
                        extra = weight * (inv_p - envelope)
                        mass = envelope * total + extra
                asking = False
                while True:
                    if x[k] >= 0:  # a candidate drawn before the last crossing's query: its answer came
                        nx, coin = x[k], r[k]
                        x[k] = -1
                        if coin < (1.0 if answer[k] else inv_q):
                            break
                        continue
                    if extra > 0.0:
                        u, st = _uniform(st)
                        if u * mass < extra:
                            nx = tt
                            break
                    nx, st = _step(offsets, neighbors, prob, alias, vv - lo, st)
                    u, st = _uniform(st)
                    coin = u * envelope
                    if nx == tt:
                        if coin < back:
                            break
                    elif coin < sure:
                        break
                    elif lo <= tt < hi:
                        if coin < (1.0 if _links(offsets, neighbors, tt - lo, nx) else inv_q):
                            break
                    else:
                        x[k], r[k] = nx, coin
                        asking = True
                        break
                if asking:
                    status[k] = ASKING
                    break
            keys[n], nodes[n] = base + ln, nx
            n += 1
            ln += 1
            tt, vv = vv, nx
            if ln < walk_length and not (lo <= vv < hi):
                status[k] = MOVED
                break
        v[k], t[k], state[k], length[k] = vv, tt, st, ln
    return n


@numba.njit(cache=True, nogil=True)
def _advance_first(offsets, neighbors, prob, alias, lo, hi, wid, v, t, state, length, walk_length, keys, nodes,
                   status):  # pragma: no cover - compiled
    # First-order walkers until each is DONE or MOVED, _LANES of them a step at a time (as
    # walks._first_order_walks: their memory loads overlap); a lane whose walker stops takes the
    # next one. Nodes are written in the order the steps are taken: their keys place them.
    lane = np.full(_LANES, -1, np.int64)
    vv, tt, ln = np.empty(_LANES, np.int64), np.empty(_LANES, np.int64), np.empty(_LANES, np.int64)
    st = np.empty(_LANES, np.uint64)
    n, following, busy = 0, 0, 0
    for j in range(_LANES):
        if following < len(wid):
            lane[j], vv[j], tt[j], st[j], ln[j] = following, v[following], t[following], state[following], \
                length[following]
            following += 1
            busy += 1
    while busy:
        for j in range(_LANES):
            k = lane[j]
            if k < 0:
                continue
            if ln[j] == 0:  # a new walk: its start node
                keys[n], nodes[n] = wid[k] * walk_length, vv[j]
                n += 1
                ln[j] = 1
            done = ln[j] >= walk_length or offsets[vv[j] - lo + 1] == offsets[vv[j] - lo]
            if not done:
                x, st[j] = _step(offsets, neighbors, prob, alias, vv[j] - lo, st[j])
                keys[n], nodes[n] = wid[k] * walk_length + ln[j], x
                n += 1
                ln[j] += 1
                tt[j], vv[j] = vv[j], x
                if ln[j] < walk_length and not (lo <= x < hi):
                    status[k] = MOVED
                    done = True
                elif ln[j] >= walk_length:
                    status[k] = DONE
                    done = True
            else:
                status[k] = DONE
            if done:
                v[k], t[k], state[k], length[k] = vv[j], tt[j], st[j], ln[j]
                lane[j] = -1
                busy -= 1
                if following < len(wid):
                    f = following
                    lane[j], vv[j], tt[j], st[j], ln[j] = f, v[f], t[f], state[f], length[f]
                    following += 1
                    busy += 1
    return n


# The whole walk in one process ----------------------------------------------------------------

def walk_supersteps(parts: list[Part], bounds: np.ndarray, wid: np.ndarray, starts: np.ndarray, walk_index,
                    params: WalkParams, seed: int = 0) -> tuple[list[Held], dict]:
    """Walks ``wid`` over the ranges ``parts``, superstep after superstep until no walker, query
    or answer is in flight: each range's final state (its written walk nodes) and the supersteps'
    counts (``supersteps``, ``steps``, ``bytes``: mail between ranges)."""
    starting = [[m.walkers] for m in start_walkers(wid, starts, walk_index, bounds, seed)]
    inbox = [[Mail()] * len(parts) for _ in parts]
    held = [Held() for _ in parts]
    stats = {"supersteps": 0, "steps": 0, "bytes": 0}
    while stats["supersteps"] == 0 or any(m.items for box in inbox for m in box) or any(len(h.walkers) for h in held):
        steps = [superstep(part, bounds, held[i], inbox[i], params, starting[i] if not stats["supersteps"] else ())
                 for i, part in enumerate(parts)]
        held = [s.held for s in steps]
        inbox = [[s.outbox[i] for s in steps] for i in range(len(parts))]
        stats = {"supersteps": stats["supersteps"] + 1, "steps": stats["steps"] + sum(s.steps for s in steps),
                 "bytes": stats["bytes"] + sum(s.sent for s in steps)}
    return held, stats


def block_paths(held: Held, ranges: list[tuple[int, int]], walk_length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A range's written walk nodes cut by walk block (walks [lo, hi) of each of ``ranges``,
    consecutive and of one size but the last, as ``corpus.walk_blocks`` cuts them)."""
    keys = np.concatenate([k for k, _ in held.paths]) if held.paths else np.zeros(0, np.int64)
    nodes = np.concatenate([n for _, n in held.paths]) if held.paths else np.zeros(0, np.int32)
    per = max(ranges[0][1] - ranges[0][0], 1)  # walk blocks: consecutive, of one size but the last
    out_keys, out_nodes, cuts = np.empty_like(keys), np.empty_like(nodes), np.zeros(len(ranges) + 1, np.int64)
    _split_blocks(keys, nodes, ranges[0][0], per, walk_length, out_keys, out_nodes, cuts)
    return [(out_keys[a:b], out_nodes[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


@numba.njit(cache=True, nogil=True)
def _split_blocks(keys, nodes, first, per, walk_length, out_keys, out_nodes, cuts):  # pragma: no cover - compiled
    # A counting sort by walk block: two sequential passes (a gather through an argsort order
    # would load every node from a random place).
    blocks = len(cuts) - 1
    for i in range(len(keys)):
        cuts[min((keys[i] // walk_length - first) // per, blocks - 1) + 1] += 1
    for b in range(blocks):
        cuts[b + 1] += cuts[b]
    pos = cuts[:-1].copy()
    for i in range(len(keys)):
        b = min((keys[i] // walk_length - first) // per, blocks - 1)
        out_keys[pos[b]], out_nodes[pos[b]] = keys[i], nodes[i]
        pos[b] += 1


def assemble(pieces, lo: int, hi: int, walk_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Walks lo..hi-1 from their nodes written on every range: (ids, offsets) as
    ``walks.random_walks`` returns them.

    >>> assemble([(np.array([0, 4, 5]), np.array([7, 8, 9], np.int32)), (np.array([1]), np.array([6], np.int32))],
    ...          0, 2, 4)
    (array([7, 6, 8, 9], dtype=int32), array([0, 2, 4]))
    """
    dense = np.empty((hi - lo) * walk_length, np.int32)
    lengths = np.zeros(hi - lo, np.int64)
    for keys, nodes in pieces:
        dense[keys - lo * walk_length] = nodes
        lengths += np.bincount(keys // walk_length - lo, minlength=hi - lo)
    offsets = np.zeros(hi - lo + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return dense.reshape(hi - lo, walk_length)[np.arange(walk_length) < lengths[:, None]], offsets


def partitioned_walks(parts: list[Part], bounds: np.ndarray, starts: np.ndarray, walk_index, walk_length: int,
                      p: float = 1.0, q: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``walks.random_walks`` over a partitioned adjacency, in one process: the same walks.

    >>> from nsdist.graph.csr import build_csr
    >>> from nsdist.graph.partition import make_part, part_rows, split_edges
    >>> edges = (np.array([0, 1, 2]), np.array([1, 2, 0]), None)  # a directed triangle, and node 3 alone
    >>> bounds = np.array([0, 2, 4])
    >>> parts = [make_part(part_rows([piece], lo, hi), lo, hi, False)
    ...          for piece, lo, hi in zip(split_edges(edges, bounds), bounds[:-1], bounds[1:])]
    >>> ids, offsets = partitioned_walks(parts, bounds, np.array([0, 3], np.int32), 0, walk_length=5)
    >>> ids.tolist(), offsets.tolist()
    ([0, 1, 2, 0, 1, 3], [0, 5, 6])
    """
    params = WalkParams(walk_length, p, q)
    wid = np.arange(len(starts), dtype=np.int64)
    held, _ = walk_supersteps(parts, bounds, wid, starts, walk_index, params, seed)
    if not len(starts):
        return np.zeros(0, np.int32), np.zeros(1, np.int64)
    return assemble([block_paths(h, [(0, len(starts))], walk_length)[0] for h in held], 0, len(starts), walk_length)
