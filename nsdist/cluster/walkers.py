"""A graph job's partitioned layout on the workers: the adjacency cut into node ranges (range
i held by worker i), and the walks in supersteps over them (graph/supersteps.py).

Each superstep is one task per range, pinned to the range's worker; what range j sends range i
is a task of its own (``_mail``), so only that part of j's outbox crosses the network. Walk
blocks are walked in waves of a few blocks per worker, which bounds the walk nodes a range holds
before they are assembled into the blocks the corpus path takes (``graph.corpus.Walks``, the
same blocks and bits as the replicated layout's).
"""

from __future__ import annotations

import collections
import itertools
import logging
import operator
from dataclasses import dataclass

import numpy as np
from distributed import Client

from .. import graph
from ..config import GraphConfig
from ..graph.corpus import WALK_BLOCK_TOKENS, Walks
from ..graph.csr import Rows, uniform_weights, weight_range
from ..graph.partition import make_part, split_edges
from ..graph.supersteps import Held, Mail, WalkParams, assemble, block_paths, start_walkers, superstep
from ..memory import released

log = logging.getLogger("nsdist")

# A range holds its share of a wave's walk nodes (12 bytes each) until the wave's blocks are
# assembled: a wave takes up to this share of a worker's memory limit, and 4 walk blocks per
# worker (about 50 MB) when the limit is unknown. Larger waves mean fewer supersteps in all
# (a wave takes about walk_length of them whatever its size), so fewer tasks.
WAVE_SHARE = 0.05
WAVE_BLOCKS_PER_WORKER = 4
# Supersteps submitted beyond the one whose counts the client waits for, so that the workers do
# not wait for the client; after the last walker they are empty and cost a few tasks each.
AHEAD = 2


def wave_blocks(workers: int, limit: int) -> int:
    """Walk blocks per wave for ``workers`` workers of memory ``limit`` (0: unknown).

    >>> wave_blocks(4, 0), wave_blocks(4, 8 * 10**9), wave_blocks(4, 10**8)
    (16, 124, 4)
    """
    per_worker = int(WAVE_SHARE * limit // (12 * WALK_BLOCK_TOKENS)) if limit else WAVE_BLOCKS_PER_WORKER
    return max(1, per_worker) * max(workers, 1)


def waves(ranges: list, per_wave: int) -> list[list]:
    """Consecutive walk blocks, ``per_wave`` at a time.

    >>> waves([(0, 2), (2, 4), (4, 5)], 2)
    [[(0, 2), (2, 4)], [(4, 5)]]
    """
    return [ranges[i:i + per_wave] for i in range(0, len(ranges), per_wave)]


def pinned(worker) -> dict:
    # Loose: a range lost with its worker is recomputed elsewhere from lineage.
    return {"workers": [worker], "allow_other_workers": True} if worker else {}


def build_parts(client: Client, ids: list, bounds, degrees, workers: list, tag: str) -> list:
    """The node ranges' CSRs, range i built on worker i from its edges of every block.

    Takes the blocks' edge futures ``ids`` and empties the list: each block is freed once it is
    split by range, and each piece once its range's rows hold it (``csr.Rows``, filled block by
    block in block order), so the edges are never held twice over while the ranges are built."""
    ranges = len(bounds) - 1
    splits = [client.submit(released, split_edges, x, bounds, key=f"split-{x.key}") for x in ids]
    ids.clear()
    rows = [_range_rows(client, splits, degrees, int(bounds[i]), int(bounds[i + 1]), i,
                        pinned(workers[i % len(workers)]), tag) for i in range(ranges)]
    del splits  # held by the rows' tasks until each has taken its piece
    spans = client.gather([client.submit(_weight_range, r, key=f"wr-{r.key}") for r in rows])
    weighted = not uniform_weights(spans)
    return [client.submit(released, make_part, r, int(bounds[i]), int(bounds[i + 1]), weighted,
                          key=f"part-{tag}-{i}", **pinned(workers[i % len(workers)])) for i, r in enumerate(rows)]


def _range_rows(client: Client, splits: list, degrees, lo: int, hi: int, i: int, where: dict, tag: str):
    """Range i's rows (nodes [lo, hi)): a ``csr.Rows`` made room for on its worker from the
    range's out-degrees (sliced where the degrees are: only the slice crosses), then each
    block's piece added in block order, each add filling the previous one's Rows in place (no
    other task reads it): one allocation per range, whatever the number of blocks."""
    part = client.submit(operator.getitem, degrees, slice(lo, hi), key=f"degrees-{tag}-{i}")
    built = client.submit(Rows, part, key=f"room-{tag}-{i}", **where)
    for s in splits:
        piece = client.submit(operator.getitem, s, i, key=f"piece-{i}-{s.key}")
        built = client.submit(_add, built, piece, key=f"add-{i}-{s.key}", **where)
    return client.submit(Rows.finish, built, key=f"rows-{tag}-{i}", **where)


def _add(rows: Rows, piece) -> Rows:
    return rows.add(*piece)


def _weight_range(rows):
    return weight_range(rows[2])


def _starts(n: int, walks_per_node: int, lo: int, hi: int, seed: int, bounds) -> list:
    """Walks lo..hi-1's walkers, one batch per range (the owner of their start)."""
    starts, index = graph.walk_starts(n, walks_per_node, lo, hi, seed)
    return [m.walkers for m in start_walkers(np.arange(lo, hi, dtype=np.int64), starts, index, bounds, seed)]


def _superstep(part, bounds, previous, inbox, params: WalkParams, starting):
    held = previous.held if previous is not None else Held()
    return superstep(part, bounds, held, inbox if inbox else [Mail()] * (len(bounds) - 1), params,
                     [w for w in starting if len(w)])


def _mail(step, i: int) -> Mail:
    return step.outbox[i]


def _counts(step) -> tuple[int, int, int]:
    return step.active, step.steps, step.sent


def _paths(step, wave: list, walk_length: int) -> list:
    return block_paths(step.held, wave, walk_length)


def _assemble(pieces, lo: int, hi: int, walk_length: int) -> Walks:
    return Walks(*assemble(pieces, lo, hi, walk_length))


def _supersteps(client: Client, parts: list, bounds, starting: list, params: WalkParams, where: list,
                tag: str) -> tuple[list, dict]:
    """Supersteps until no walker, query or answer is in flight: each range's final Step (its
    walk nodes) and the counts. The client learns a superstep's counts while the next AHEAD run."""
    nparts = len(parts)
    steps, inbox, pending = [None] * nparts, [[] for _ in range(nparts)], collections.deque()
    stats = {"supersteps": 0, "steps": 0, "bytes": 0}
    for s in itertools.count():
        steps = [client.submit(_superstep, parts[i], bounds, steps[i], inbox[i], params,
                               starting[i] if steps[i] is None else [], key=f"superstep-{tag}-{s}-{i}", **where[i])
                 for i in range(nparts)]
        # Read where each Step is: a Step moved for its counts or mail would stay as a second copy.
        pending.append([client.submit(_counts, st, key=f"counts-{st.key}", **where[i]) for i, st in enumerate(steps)])
        inbox = [[client.submit(_mail, steps[j], i, key=f"mail-{tag}-{s}-{j}-{i}", **where[j]) for j in range(nparts)]
                 for i in range(nparts)]
        if len(pending) > AHEAD:
            counts = client.gather(pending.popleft())
            stats = {"supersteps": stats["supersteps"] + 1, "steps": stats["steps"] + sum(c[1] for c in counts),
                     "bytes": stats["bytes"] + sum(c[2] for c in counts)}
            if not sum(c[0] for c in counts):  # the supersteps after it are empty: their states are final
                return steps, stats


@dataclass(frozen=True)
class _Walking:
    """What every wave of a job's partitioned walks shares."""

    client: Client
    parts: list  # futures of the ranges' Parts, range i on worker i
    bounds: np.ndarray
    params: WalkParams
    g: GraphConfig
    seed: int
    n: int  # nodes
    where: list  # per range, its worker's placement
    tag: str


def _wave(w: _Walking, k: int, wave: list, places: list, first: int) -> tuple[list, dict]:
    """Wave k's walk blocks (numbered from ``first``, placed on ``places``) and its supersteps'
    counts. The client holds none of the wave's starts, supersteps or cuts once it returns, so
    each is freed as soon as the tasks that read it have run, not a wave later."""
    client, nparts = w.client, len(w.parts)
    starts = [client.submit(_starts, w.n, w.g.walks_per_node, lo, hi, w.seed, w.bounds, key=f"starts-{w.tag}-{lo}")
              for lo, hi in wave]
    starting = [[client.submit(operator.getitem, s, i, key=f"start-{i}-{s.key}") for s in starts]
                for i in range(nparts)]
    del starts
    steps, counted = _supersteps(client, w.parts, w.bounds, starting, w.params, w.where, f"{w.tag}-{k}")
    del starting
    # A range's walk nodes are cut where they are (a Step moved elsewhere would be a second copy).
    cut = [client.submit(_paths, st, wave, w.g.walk_length, key=f"paths-{st.key}", **w.where[i])
           for i, st in enumerate(steps)]
    blocks = []
    for b, (lo, hi) in enumerate(wave):
        pieces = [client.submit(operator.getitem, c, b, key=f"piece-{b}-{c.key}", **w.where[i])
                  for i, c in enumerate(cut)]
        # Named by the block's index, as the replicated layout names its walk blocks.
        blocks.append(client.submit(_assemble, pieces, lo, hi, w.g.walk_length, key=f"walks-{w.tag}-{first + b}",
                                    **pinned(places[b])))
    return blocks, counted


def walk_partitioned(client: Client, parts: list, bounds, ranges: list, places: list, g: GraphConfig, seed: int,
                     n: int, workers: list, tag: str, limit: int = 0) -> tuple[list, dict]:
    """The walk blocks ``ranges`` (walks [lo, hi) each, the block placed on ``places``) over the
    ranges ``parts``, in supersteps, in waves sized for workers of memory ``limit``: futures of
    ``Walks`` and the supersteps' counts."""
    where = [pinned(workers[i % len(workers)]) for i in range(len(parts))]
    walking = _Walking(client, parts, bounds, WalkParams(g.walk_length, g.p, g.q), g, seed, n, where, tag)
    out, stats = [], {"supersteps": 0, "steps": 0, "bytes": 0}
    for k, wave in enumerate(waves(ranges, wave_blocks(len(workers), limit))):
        blocks, counted = _wave(walking, k, wave, places[len(out):], len(out))
        out += blocks
        stats = {key: stats[key] + counted[key] for key in stats}
        log.debug("walk wave %d: %d blocks, %d supersteps so far", k, len(wave), stats["supersteps"])
    return out, stats

