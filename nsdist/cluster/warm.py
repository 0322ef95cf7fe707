"""Placing a warm start (warm.py) on the workers: in the replicated layout, the new rows'
co-occurrence sums, each worker holding the parent's vectors in this vocabulary's rows
(``new_row_sums``); in the partitioned layout, the start by rows (``by_rows``, warm_parts.py), in
which no worker holds the parent's vocabulary or matrices, nor this job's whole vocabulary or model.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from distributed import Client

from .. import storage
from .. import warm_parts as wp
from ..config import JobConfig
from ..corpus import Block, plan_blocks
from ..formats import vocab_lines
from ..layout import group_pieces
from ..plan import model_groups, round_groups
from ..runs import read_manifest, word_escape
from ..shard import piece_slice
from ..warm import (Neighbours, NewRows, NewSums, Parent, cooccur_sums, initialised, means, merge_sums, neighbours,
                    new_slots, start_rows)
from .client import gather_alive, tree_reduce
from .client import workers as client_workers
from .stages import Placer
from .training import Source


def new_row_sums(client: Client, cfg: JobConfig, shards: list, vocab, parent: str, tag: str):
    """For a warm start from ``parent``: per new word, the sum of the parent's input vectors of
    the known words it co-occurs with (within ``train.window``) in the encoded ``shards``, and
    their number (warm.NewSums, a future), and how many new words have such a neighbour.

    Each worker reads the parent's input vectors once; each shard sums where it is held; the
    shards' sums meet in a tree, in shard order, so the result depends on the shard count only."""
    t = cfg.train
    workers = client_workers(client)

    def place(i: int) -> dict:  # as encode_shards deals shards: no worker known yet places it anywhere
        return {"workers": [workers[i % len(workers)]], "allow_other_workers": True} if workers else {}

    known = [client.submit(neighbours, vocab, parent, cfg.store, t.dim, key=f"warm-neighbours-{tag}-{i}", **place(i))
             for i in range(max(1, len(workers)))]
    sums = [client.submit(cooccur_sums, known[s % len(known)], t.window, *pieces, key=f"warm-sums-{tag}-{s}",
                          **place(s)) for s, pieces in enumerate(shards)]
    merged = tree_reduce(client, merge_sums, sums, key=f"warm-merge-{tag}")
    return merged, gather_alive(client, client.submit(initialised, merged, key=f"warm-initialised-{tag}"))


def by_rows(client: Client, cfg: JobConfig, counted, parts, rounds: int, parent: str, tag: str,
            fits: Callable[[int], None]) -> tuple[Source, dict]:
    """The partitioned layout's warm start from ``parent`` (warm_parts.py): the ``Source`` each
    worker builds its models' first rows and its range's from (``warm.start_rows``), and the
    warm-start record (known, new and dropped words, and the new words started from neighbours).
    ``counted``: the job's cluster.Counted; ``parts``: its partitioned.Parts (``rounds`` per epoch);
    ``fits(new)`` raises where a start with ``new`` new rows from known neighbours would not fit
    the workers' memory, before those rows are summed."""
    t, p = cfg.train, Placer(client, client_workers(client), f"warm-{tag}")
    size, src = _parent_rows(p, cfg, counted, parts.ranges, parent)
    known = sum(gather_alive(client, [p.submit(_known, s, name=f"known-{o}", at=o) for o, s in enumerate(src)]))
    record = {"parent_run": parent, "known_words": known, "new_words": counted.summary["vocab_size"] - known,
              "dropped_words": size - known, "cooccur_words": 0}
    held_src = _HeldSources(p, src, parts)
    new = first = [[]] * len(parts.ranges)
    published, cut = Parent(parent, cfg.store, size, t.dim), None
    if t.warm_new == "cooccur" and record["new_words"]:
        fits(record["new_words"])
        new, first, binned, cut = _new_sums(p, cfg, parts, rounds, published, held_src, record["new_words"])
        record["cooccur_words"] = sum(gather_alive(client, [p.submit(initialised, b, name=f"cooccur-{q}", at=q)
                                                            for q, b in enumerate(binned)]))
    more = [((held_src(0, m),), (src[m],)) for m in range(len(parts.ranges))]
    return Source(start_rows, (published, t.seed, counted.summary["vocab_size"]), more,
                  [(first[m], new[m]) for m in range(len(parts.ranges))], cut), record


def _parent_rows(p: Placer, cfg: JobConfig, counted, ranges: list[tuple[int, int]], parent: str) -> tuple[int, list]:
    """The parent's vocabulary size, and per range of ids the futures of their rows in the
    parent (-1: new), by a join of the two vocabularies in buckets of words (warm_parts.py)."""
    url, store = storage.join(parent, "vocab.tsv"), cfg.store
    escape = word_escape(parent, read_manifest(parent, store))
    blocks = plan_blocks([url], store, cfg.blocksize)
    words = [p.submit(_parent_words, b, store, escape, name=f"parent-words-{i}", at=i) for i, b in enumerate(blocks)]
    sizes = gather_alive(p.client, [p.submit(len, w, name=f"parent-size-{i}", at=i) for i, w in enumerate(words)])
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    theirs = [p.submit(wp.numbered, w, a, p.n, name=f"parent-split-{i}", at=i)
              for i, (w, a) in enumerate(zip(words, firsts))]
    del words
    ours = [p.submit(_numbered, v, lo, p.n, name=f"split-{o}", at=o)
            for o, (v, (lo, _)) in enumerate(zip(counted.slices(ranges, f"warm-slice-{p.tag}"), ranges))]
    joined = [p.submit(wp.join_bucket, len(ours),
                       *[p.submit(operator.getitem, s, q, name=f"ours-{o}-{q}", at=o) for o, s in enumerate(ours)],
                       *[p.submit(operator.getitem, s, q, name=f"theirs-{i}-{q}", at=i) for i, s in enumerate(theirs)],
                       name=f"join-{q}", at=q) for q in range(p.n)]
    del theirs
    return sum(sizes), [p.submit(wp.range_parents, lo, hi, ours[o],
                                 *[p.submit(operator.getitem, j, o, name=f"answer-{q}-{o}", at=q)
                                   for q, j in enumerate(joined)], name=f"parents-{o}", at=o)
                        for o, (lo, hi) in enumerate(ranges)]


class _HeldSources:
    """The parent row of each row a model holds in a group of rounds (a future, submitted once):
    each owner looks up the model's rows in its range (``partitioned.Parts.inrange``)."""

    def __init__(self, p: Placer, src: list, parts):
        self.p, self.src, self.parts, self.futures = p, src, parts, {}

    def __call__(self, j: int, m: int):
        if (j, m) not in self.futures:
            p, ranges = self.p, self.parts.ranges
            self.futures[j, m] = p.submit(
                _joined, *[p.submit(_at, self.src[o], lo, self.parts.inrange[o][j][m], name=f"at-{o}-{j}-{m}", at=o)
                           for o, (lo, _) in enumerate(ranges)], name=f"held-parents-{j}-{m}", at=m)
        return self.futures[j, m]


def _new_sums(p: Placer, cfg: JobConfig, parts, rounds: int, parent: Parent, held_src: _HeldSources, new_words: int):
    """Per range, the start of its new rows with known neighbours, and per model that of the rows
    it holds first: a list of futures of warm.NewRows each, one per worker; the bins' futures; and
    per worker a future that is done once its bins are cut into those parts (``Source.after``).
    Each model's groups sum where its shards are, cut in bins of ids (warm_parts.bins); each
    worker reduces its bins (b % workers) one after another, in model then group order: a bin's
    task is not given to its worker before the one before it is done, so the worker fetches one
    bin's sums at a time (all at once, they were the start's peak)."""
    t, ranges, n = cfg.train, parts.ranges, p.n
    count = n * wp.bins_per_worker(new_words, n, t.dim)
    sums = [(m, p.submit(_group_sums, parts.held[j][m], held_src(j, m), parent, t.window, (rounds, r0, r1),
                         (count, wp.BIN_ROWS),
                         [parts.shards[s] for s in group], name=f"sums-{m}-{j}", at=m))
            for m, group in enumerate(model_groups(len(parts.shards), len(ranges)))
            for j, (r0, r1) in enumerate(round_groups(rounds, parts.groups))]
    binned, last = [], [None] * n
    for b in range(count):
        last[b % n] = p.submit(_bin_means, last[b % n],
                               *[p.submit(operator.getitem, s, b, name=f"sums-{k}-bin-{b}", at=m)
                                 for k, (m, s) in enumerate(sums)], name=f"bin-{b}", at=b)
        binned.append(last[b % n])
    del sums
    # One task per worker cuts all its parts, so that its bins are let go as soon as they are cut;
    # the models are built after every worker's cut (Source.after): a worker that built its models
    # first held its bins, their parts and its new masters at once.
    cut = [p.submit(_cut, ranges, *parts.held[0], *binned[q::n], name=f"bins-{q}-cut", at=q) for q in range(n)]
    new = [[p.submit(operator.getitem, c, o, name=f"bins-{q}-in-{o}", at=q) for q, c in enumerate(cut)]
           for o in range(len(ranges))]
    first = [[p.submit(operator.getitem, c, len(ranges) + m, name=f"bins-{q}-first-{m}", at=q)
              for q, c in enumerate(cut)] for m in range(len(ranges))]
    return new, first, binned, [p.submit(len, c, name=f"bins-{q}-cut-done", at=q) for q, c in enumerate(cut)]


# Task functions: module-level, plain inputs and outputs, never mutating their arguments.

def _parent_words(block: Block, store, escape: str | None):
    """The words of the parent's vocab.tsv lines that start in ``block``, in order."""
    data = storage.read_block(block.url, block.offset, block.length, store)
    return vocab_lines(data, escape, storage.scrub(block.url, store))[0]


def _numbered(vocab, lo: int, n: int) -> list:
    return wp.numbered(vocab.words, lo, n)


def _known(src: np.ndarray) -> int:
    return int(np.count_nonzero(src >= 0))


def _at(src: np.ndarray, lo: int, ids: np.ndarray) -> np.ndarray:
    return src[ids - lo]


def _joined(*pieces: np.ndarray) -> np.ndarray:
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _bin_means(after, *parts: NewSums):
    """A bin's sums from every model and group, in that order, and their means (float32: the
    float64 sums are let go in the task). ``after``: the worker's bin before it (unused)."""
    return means(merge_sums(*parts))


def _cut(ranges: list[tuple[int, int]], *args) -> list[NewRows]:
    """A worker's bins (the last of ``args``, after each model's ids held in the first group)
    cut into each owner's range's new rows, then each model's first rows' new rows."""
    firsts, bins = args[:len(ranges)], args[len(ranges):]
    return ([wp.joined(*[wp.rows_in(b, lo, hi) for b in bins]) for lo, hi in ranges] +
            [wp.joined(*[wp.rows_at(b, ids) for b in bins]) for ids in firsts])


def _group_sums(held: np.ndarray, src: np.ndarray, parent: Parent, window: int, span: tuple[int, int, int],
                binned: tuple[int, int], shards: list) -> list[NewSums]:
    """The co-occurrence sums (warm.cooccur_sums) of rounds [r0, r1) of an epoch's ``rounds``
    (``span``) of a model's ``shards`` (each a list of pieces), over the rows it holds then
    (``held``, ``src`` their parent rows), in bins (``binned``: their number and block of ids,
    warm_parts.bins): only the parent rows of known words beside a new one are read."""
    pieces = [piece_slice(x, 0, x.sentences, held) for pieces in shards for x in group_pieces(pieces, *span)]
    slot = new_slots(src >= 0)
    near = np.flatnonzero(wp.beside_new(slot, window, *pieces))
    vectors = []
    for name in ("vectors.npy", "context.npy"):
        rows = np.zeros((len(held), parent.dim), np.float32)
        if len(near):
            parent.rows_into(name, src[near], rows, near)
        vectors.append(rows)
    sums = cooccur_sums(Neighbours(slot, *vectors), window, *pieces)
    return wp.bins(replace(sums, rows=held[sums.rows].astype(np.int64)), *binned)
