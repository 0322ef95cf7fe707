"""Deterministic synthetic clickstream with planted structure (ground truth included).

The session counterpart of :mod:`nsdist.synth`: the generator knows which items
*should* be recommended together, so item embeddings and next-item predictions
can be scored against it.

The planted structure
---------------------
* Catalogue: ``items`` items with random, non-contiguous int64 ids in
  ``[2**32, 2**62)`` (beyond int32 and beyond float64's exact integers, so a
  reader that narrows or floats them breaks visibly).  Item ``r`` in
  popularity order has weight ``(r + 1) ** -popularity_exponent`` (Zipf-like).
* Groups: every item belongs to one of ``n_groups`` latent groups (balanced,
  assigned at random, so each group holds popular and rare items).  Groups
  come in *domains* of ``domain_size`` consecutive groups; the other groups of
  a domain are a group's *siblings*.
* Clicks: a session is a user's interest, one group, drawn uniformly.  With
  probability ``switch_rate`` the interest moves to a second group at a random
  point, so the last items predict the next one better than the first ones.
  Each click is an item of the current group, or with probability
  ``sibling_rate`` an item of a sibling group (near misses), or with
  probability ``noise_rate`` an item drawn by global popularity.
* Browsing: the items of a group sit on a ring (a random order).  A click in
  the current group steps from the previous one to a ring neighbour at most
  ``walk_step`` places away with probability ``walk_rate``; otherwise (and at
  the start of an interest) it is drawn by popularity within the group.  So
  the last click says more about the next one than the group does, as in real
  clickstreams, and a model that learns only the groups ranks the target
  among a whole group.
* Lengths: log-normal around ``median_length``, clipped to
  ``[2, max_length]``; a share ``long_rate`` of sessions are long, uniform in
  ``long_length`` (500-odd clicks: whole-session windows matter there).
* Impressions (shown, not clicked): about one per click, between
  ``impressions`` bounds.  Each is anchored on the interest group of a random
  click of the session and drawn from a sibling of that group (hard
  negatives: related, but not clicked), from a group outside the session's
  interests, or by global popularity (popular items shown to everyone), in
  the proportions ``impression_mix``.  Clicked items and repeats are removed.

Files written by :func:`generate_sessions` into ``OUT_DIR``
------------------------------------------------------------
* ``sessions.parquet``: training sessions, one row each: ``session`` int64,
  ``items`` list<int64> (clicks in order), ``impressions`` list<int64>,
  ``ts`` int64 (start, seconds since the epoch); ``row_group_size`` rows per
  row group, so a cluster partitions it.
* ``sessions.test.parquet``: the latest ``test_fraction`` of the sessions by
  ``ts``, same schema, for leave-last-out evaluation.
* ``impressions.test.parquet``: one impression per held-out session of two
  clicks or more whose last click is new to the session, what a recommender
  showed before that click
  (:func:`impression_table`): ``session`` int64, ``history`` list<int64> (the
  clicks before the last), ``shown`` list<int64> (the last click and up to
  ``slate - 1`` of the session's shown-not-clicked items, in a random order),
  ``clicked`` list<bool>; for ``nsdist evaluate --impressions``.
* ``items.tsv``: ``item<TAB>group<TAB>popularity rank<TAB>ring position``
  (rank 1 = most popular; position on the group's ring from 0), no header,
  most popular first.  Its first two fields are a ``--clusters``
  file for ``nsdist evaluate``.

Everything is a pure function of ``(sessions, items, seed, spec)``; the
catalogue (``items.tsv``) depends on ``(items, seed, spec)`` only.

How gensim and popularity score on it: docs/recommendations.md ("The planted clickstream").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["Catalogue", "SessionFiles", "SessionSpec", "catalogue", "generate_sessions", "impression_table",
           "retrain_days", "session_tables"]

#: The smallest item id: ids beyond int32 make narrowing bugs visible.
ID_LOW = 2**32
#: One past the largest item id (int64 with room to spare).
ID_HIGH = 2**62
#: Start of the first session (2023-11-14T22:13:20Z), seconds since the epoch.
TS_START = 1_700_000_000


@dataclass(frozen=True)
class SessionSpec:
    """Shape of the planted clickstream (the defaults are the tested ones).

    Attributes
    ----------
    n_groups, domain_size : int
        Latent item groups, and groups per domain (``n_groups`` must be a
        multiple of it); the other groups of a domain are siblings.
    popularity_exponent : float
        Zipf exponent of item popularity (0: uniform).
    switch_rate : float
        Share of sessions whose interest moves to a second group partway.
    walk_rate, walk_step : float, int
        Probability that a click in the current group steps to a ring
        neighbour of the previous one, and the largest step.
    sibling_rate, noise_rate : float
        Probability that a click comes from a sibling group / global popularity.
    median_length, length_sigma : float
        Log-normal session length: median and sigma of its log.
    max_length : int
        Upper clip of ordinary session lengths (the lower one is 2).
    long_rate : float
        Share of long sessions, lengths uniform in ``long_length``.
    long_length : tuple of int
        Inclusive ``(min, max)`` length of a long session.
    impressions : tuple of int
        Inclusive ``(min, max)`` impressions drawn per session (one per click
        in between), before clicked items and repeats are removed.
    impression_mix : tuple of float
        Shares of impressions from a sibling group, an unrelated group and
        global popularity; they sum to 1.
    test_fraction : float
        Share of sessions (the latest) held out in ``sessions.test.parquet``.
    row_group_size : int
        Rows per Parquet row group.
    """

    n_groups: int = 50
    domain_size: int = 5
    popularity_exponent: float = 0.9
    switch_rate: float = 0.3
    walk_rate: float = 0.7
    walk_step: int = 3
    sibling_rate: float = 0.2
    noise_rate: float = 0.07
    median_length: float = 12.0
    length_sigma: float = 1.0
    max_length: int = 300
    long_rate: float = 0.02
    long_length: tuple[int, int] = (400, 800)
    impressions: tuple[int, int] = (5, 100)
    impression_mix: tuple[float, float, float] = (0.5, 0.2, 0.3)
    test_fraction: float = 0.1
    row_group_size: int = 2000

    def __post_init__(self) -> None:
        if self.n_groups < 3 or self.domain_size < 2 or self.n_groups % self.domain_size:
            raise ValueError("need n_groups >= 3, a positive multiple of domain_size >= 2")
        rates = (self.switch_rate, self.walk_rate, self.sibling_rate, self.noise_rate, self.long_rate, self.test_fraction)
        if min(rates) < 0 or max(rates) > 1 or self.sibling_rate + self.noise_rate > 1:
            raise ValueError("rates must be probabilities (sibling_rate + noise_rate <= 1)")
        if min(self.impression_mix) < 0 or abs(sum(self.impression_mix) - 1) > 1e-9:
            raise ValueError("impression_mix must be three shares summing to 1")
        for lo, hi in (self.long_length, self.impressions):
            if not 0 <= lo <= hi:
                raise ValueError("length bounds need 0 <= min <= max")
        if self.walk_step < 1:
            raise ValueError("need walk_step >= 1")
        if self.max_length < 2 or self.long_length[0] < 2 or self.median_length <= 0 or self.row_group_size < 1:
            raise ValueError("need max_length, long_length >= 2 and median_length, row_group_size > 0")


_DEFAULT_SPEC = SessionSpec()


@dataclass(frozen=True)
class Catalogue:
    """The items and their ground truth, in popularity order (row 0 is the most popular).

    Attributes
    ----------
    ids : ndarray of int64
        Item ids, unique.
    group : ndarray of int64
        Latent group of each item, in ``[0, n_groups)``.
    weight : ndarray of float64
        Popularity weight (not normalised), decreasing.
    ring : ndarray of int64
        Position of each item on its group's ring, from 0.
    """

    ids: np.ndarray
    group: np.ndarray
    weight: np.ndarray
    ring: np.ndarray


@dataclass(frozen=True)
class SessionFiles:
    """Paths written by :func:`generate_sessions` and what they hold."""

    train: str
    test: str
    items: str
    train_sessions: int
    test_sessions: int
    clicks: int
    impressions: str | None = None  # impressions.test.parquet


def catalogue(items: int, seed: int = 1, spec: SessionSpec | None = None) -> Catalogue:
    """The item catalogue: ids, groups and popularity weights.

    Parameters
    ----------
    items : int
        Number of items (at least ``n_groups``).
    seed : int
        Random seed; the catalogue does not depend on the number of sessions.
    spec : SessionSpec, optional
        Structure parameters; defaults to :class:`SessionSpec` ().

    Returns
    -------
    Catalogue

    Examples
    --------
    >>> cat = catalogue(100, seed=1)
    >>> len(cat.ids), len(set(cat.ids.tolist())), int(cat.ids.min()) >= 2**32
    (100, 100, True)
    >>> np.bincount(cat.group).tolist() == [2] * 50
    True
    """
    spec = spec or _DEFAULT_SPEC
    if items < spec.n_groups:
        raise ValueError(f"need at least n_groups={spec.n_groups} items, got {items}")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    ids = rng.choice(ID_HIGH - ID_LOW, items, replace=False).astype(np.int64) + ID_LOW
    group = rng.permutation(np.arange(items, dtype=np.int64) % spec.n_groups)
    weight = np.arange(1, items + 1, dtype=np.float64) ** -spec.popularity_exponent
    # Ring positions: rows sorted by (group, random key) take positions 0, 1, ... in each group.
    by_ring = np.lexsort((rng.random(items), group))
    starts = np.cumsum(np.bincount(group, minlength=spec.n_groups)) - np.bincount(group, minlength=spec.n_groups)
    ring = np.empty(items, dtype=np.int64)
    ring[by_ring] = np.arange(items) - starts[group[by_ring]]
    return Catalogue(ids, group, weight, ring)


class _Sampler:
    """Draws item rows (popularity order): by popularity, globally or within given groups, or
    browsing a group's ring."""

    def __init__(self, cat: Catalogue, n_groups: int) -> None:
        self.global_cum = np.cumsum(cat.weight)
        # Rows sorted by group; a group's draws are a uniform in its slice of the cumulative
        # weights, so one searchsorted serves every group at once.
        self.order = np.argsort(cat.group, kind="stable")
        self.cum = np.cumsum(cat.weight[self.order])
        ends = np.cumsum(np.bincount(cat.group, minlength=n_groups))
        self.last = ends - 1
        self.hi = self.cum[self.last]
        self.lo = np.r_[0.0, self.hi[:-1]]
        self.size = np.bincount(cat.group, minlength=n_groups)
        self.start = ends - self.size
        self.ring = cat.ring
        self.by_ring = np.lexsort((cat.ring, cat.group))  # row at (group, ring position)

    def popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n) * self.global_cum[-1]
        return np.minimum(np.searchsorted(self.global_cum, u, side="right"), len(self.global_cum) - 1)

    def in_groups(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        u = self.lo[groups] + rng.random(len(groups)) * (self.hi[groups] - self.lo[groups])
        # ``min`` guards the float edge where u rounds up to the group's end.
        return self.order[np.minimum(np.searchsorted(self.cum, u, side="right"), self.last[groups])]

    def walk(self, rng: np.random.Generator, groups: np.ndarray, fresh: np.ndarray, step: int) -> np.ndarray:
        """Rows of consecutive clicks in ``groups``: where ``fresh``, a popularity draw in the
        group; elsewhere a step of 1..``step`` ring places either way from the previous click.

        Positions are offsets from the segment's fresh draw, summed with one cumsum, so no
        loop runs over clicks (``fresh[0]`` must hold, and every group change must be fresh).
        """
        first = np.flatnonzero(fresh)
        anchor = self.ring[self.in_groups(rng, groups[first])]
        steps = rng.integers(1, step + 1, len(groups)) * rng.choice(np.array([-1, 1]), len(groups))
        steps[first] = 0
        walked = np.cumsum(steps)
        segment = np.cumsum(fresh) - 1
        pos = (anchor[segment] + walked - walked[first][segment]) % self.size[groups]
        return self.by_ring[self.start[groups] + pos]


def _sibling(rng: np.random.Generator, groups: np.ndarray, domain: int) -> np.ndarray:
    """A random other group of the same domain, for each of ``groups``."""
    shift = rng.integers(1, domain, len(groups))
    return (groups // domain) * domain + (groups % domain + shift) % domain


def _lengths(rng: np.random.Generator, n: int, spec: SessionSpec) -> np.ndarray:
    """Session lengths: clipped log-normal, a share of them long."""
    lens = np.rint(spec.median_length * np.exp(spec.length_sigma * rng.standard_normal(n)))
    lens = np.clip(lens, 2, spec.max_length).astype(np.int64)
    long = rng.random(n) < spec.long_rate
    lens[long] = rng.integers(spec.long_length[0], spec.long_length[1] + 1, int(long.sum()))
    return lens


def _interests(rng: np.random.Generator, n: int, lens: np.ndarray, spec: SessionSpec):
    """Per session: first group, second group and the click position where it takes over
    (the length itself when the interest never moves)."""
    first = rng.integers(0, spec.n_groups, n)
    second = (first + rng.integers(1, spec.n_groups, n)) % spec.n_groups  # any other group
    switch = np.where(rng.random(n) < spec.switch_rate,
                      np.floor(lens * rng.uniform(0.3, 0.8, n)).astype(np.int64), lens)
    return first, second, switch


def _clicks(rng: np.random.Generator, sampler: _Sampler, lens: np.ndarray, interest, spec: SessionSpec):
    """The clicked item rows of all sessions, flat, and the interest group of each click."""
    first, second, switch = interest
    sess = np.repeat(np.arange(len(lens)), lens)
    pos = np.arange(len(sess)) - np.repeat(np.cumsum(lens) - lens, lens)
    group = np.where(pos < switch[sess], first[sess], second[sess])
    u = rng.random(len(sess))
    sib = u < spec.sibling_rate
    noise = u >= 1 - spec.noise_rate
    rows = np.empty(len(sess), dtype=np.int64)
    rows[sib] = sampler.in_groups(rng, _sibling(rng, group[sib], spec.domain_size))
    rows[noise] = sampler.popular(rng, int(noise.sum()))
    own = np.flatnonzero(~(sib | noise))  # the browsing clicks, in order
    s, g = sess[own], group[own]
    fresh = np.r_[True, (s[1:] != s[:-1]) | (g[1:] != g[:-1])] | (rng.random(len(own)) >= spec.walk_rate)
    rows[own] = sampler.walk(rng, g, fresh, spec.walk_step)
    return rows, group


def _impressions(rng: np.random.Generator, sampler: _Sampler, lens: np.ndarray, click_group: np.ndarray,
                 interest, spec: SessionSpec):
    """Impression rows of all sessions before filtering, flat, and the session of each."""
    first, second, _ = interest
    n = len(lens)
    counts = np.clip(lens, *spec.impressions)
    sess = np.repeat(np.arange(n), counts)
    # Anchor: the interest group at a random click of the session.
    anchor_pos = np.cumsum(lens)[sess] - lens[sess] + (rng.random(len(sess)) * lens[sess]).astype(np.int64)
    anchor = click_group[anchor_pos]
    # Unrelated: uniform over the groups other than the session's two interests (first !=
    # second, so there are n_groups - 2 of them): skip over both in sorted order.
    lo, hi = np.minimum(first, second)[sess], np.maximum(first, second)[sess]
    other = rng.integers(0, spec.n_groups - 2, len(sess))
    other = other + (other >= lo)
    other = other + (other >= hi)
    kind = np.searchsorted(np.cumsum(spec.impression_mix), rng.random(len(sess)), side="right")
    groups = np.where(kind == 0, _sibling(rng, anchor, spec.domain_size), other)
    rows = sampler.in_groups(rng, groups)
    popular = kind >= 2
    rows[popular] = sampler.popular(rng, int(popular.sum()))
    return rows, sess


def _shown_not_clicked(imp_rows, imp_sess, click_rows, click_sess, n_items: int):
    """Impressions without the session's clicked items and without repeats, in drawn order."""
    keys = imp_sess * n_items + imp_rows
    keep = np.flatnonzero(~np.isin(keys, click_sess * n_items + click_rows))
    _, first = np.unique(keys[keep], return_index=True)
    kept = keep[np.sort(first)]
    return imp_rows[kept], imp_sess[kept]


def _list_array(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()))


def session_tables(sessions: int, items: int, seed: int = 1, spec: SessionSpec | None = None, day: int = 0):
    """Generate the clickstream as Arrow tables (no IO).

    Parameters
    ----------
    sessions : int
        Sessions in all (>= 2); the latest ``test_fraction`` of them are held out.
    items : int
        Catalogue size (>= ``n_groups``).
    seed : int
        Random seed; equal arguments give equal tables.
    spec : SessionSpec, optional
        Structure parameters; defaults to :class:`SessionSpec` ().
    day : int
        Which day of sessions over the same catalogue: each day has its own random stream, and
        its sessions start a day (86400 s) after the previous day's.

    Returns
    -------
    train, test : pyarrow.Table
        Columns ``session`` int64, ``items`` list<int64>, ``impressions``
        list<int64>, ``ts`` int64; sorted by ``ts``, ``test`` after ``train``.
    catalogue : Catalogue
        The ground truth.

    Examples
    --------
    >>> train, test, cat = session_tables(200, 500, seed=1)
    >>> train.num_rows, test.num_rows, train.schema.field("items").type
    (180, 20, ListType(list<item: int64>))
    >>> set(train.column("items").combine_chunks().flatten().to_pylist()) <= set(cat.ids.tolist())
    True
    """
    spec = spec or _DEFAULT_SPEC
    if sessions < 2:
        raise ValueError(f"need at least 2 sessions (training and held out), got {sessions}")
    cat = catalogue(items, seed, spec)
    # Day 0 takes the seed's second child; later days take children past impression_table's third.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1] if day == 0 else
                                np.random.SeedSequence(seed, spawn_key=(2 + day,)))
    sampler = _Sampler(cat, spec.n_groups)
    lens = _lengths(rng, sessions, spec)
    interest = _interests(rng, sessions, lens, spec)
    clicks, click_group = _clicks(rng, sampler, lens, interest, spec)
    imp, imp_sess = _impressions(rng, sampler, lens, click_group, interest, spec)
    imp, imp_sess = _shown_not_clicked(imp, imp_sess, clicks, np.repeat(np.arange(sessions), lens), items)
    ts = TS_START + 86400 * day + np.cumsum(rng.exponential(20.0, sessions)).astype(np.int64)
    table = pa.table({
        "session": pa.array(np.arange(1, sessions + 1, dtype=np.int64)),
        "items": _list_array(cat.ids[clicks], lens),
        "impressions": _list_array(cat.ids[imp], np.bincount(imp_sess, minlength=sessions)),
        "ts": pa.array(ts),
    })
    n_test = min(sessions - 1, max(1, round(sessions * spec.test_fraction)))
    return table.slice(0, sessions - n_test), table.slice(sessions - n_test), cat


def _without(table: pa.Table, ids: np.ndarray) -> pa.Table:
    """``table`` with the items ``ids`` removed from its ``items`` and ``impressions`` lists."""
    import pyarrow.compute as pc

    for name in ("items", "impressions"):
        lists = table.column(name).combine_chunks()
        values = lists.flatten()
        keep = pc.invert(pc.is_in(values, value_set=pa.array(ids, pa.int64())))
        session = pc.list_parent_indices(lists)
        lengths = np.bincount(pc.filter(session, keep).to_numpy(), minlength=len(lists))
        table = table.set_column(table.schema.get_field_index(name), name,
                                 _list_array(pc.filter(values, keep).to_numpy(), lengths))
    return table


def retrain_days(sessions: int, items: int, new_items: int, seed: int = 1, spec: SessionSpec | None = None):
    """Two days of the clickstream over one catalogue, for a daily retrain: ``new_items`` items,
    drawn at random (so spread over the groups and the popularity ranks, beside known items of
    the same groups), are never clicked nor shown on day 1 and enter on day 2.

    Returns
    -------
    day1, day2 : tuple of pyarrow.Table
        Each day's (train, test) tables, as :func:`session_tables` returns them (``day`` 0 and 1).
    catalogue : Catalogue
        The ground truth of both days.
    new : ndarray of int64
        The ids of the items new on day 2.

    Examples
    --------
    >>> (d1, _), (d2, _), cat, new = retrain_days(300, 500, 50, seed=1)
    >>> clicked = lambda t: set(t.column("items").combine_chunks().flatten().to_pylist())
    >>> len(new), clicked(d1) & set(new.tolist()), len(clicked(d2) & set(new.tolist())) > 10
    (50, set(), True)
    """
    spec = spec or _DEFAULT_SPEC
    train, test, cat = session_tables(sessions, items, seed, spec)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)).spawn(1)[0])
    new = np.sort(cat.ids[rng.choice(items, new_items, replace=False)])
    day2 = session_tables(sessions, items, seed, spec, day=1)[:2]
    return (_without(train, new), _without(test, new)), day2, cat, new


def impression_table(test: pa.Table, seed: int = 1, slate: int = 20) -> pa.Table:
    """The impressions a recommender showed before each held-out session's last click (no IO).

    One impression per session of two clicks or more whose last click is new to it: ``history``
    is the session's clicks before the last, ``shown`` the last click and the first
    ``slate - 1`` of the session's shown-not-clicked items (``impressions``: hard negatives from
    sibling groups, unrelated groups and popular items), shuffled so that no ranker gains from
    the order of the list; ``clicked`` marks the last click. A session whose last click repeats
    an earlier one is left out: its shown-not-clicked items are never its clicks, so an item of
    the history among them would give the click away. The planted truth (the group and ring of
    the history's items) ranks the click first most of the time; random vectors score near
    chance.

    Parameters
    ----------
    test : pyarrow.Table
        Held-out sessions (``session``, ``items``, ``impressions``), as :func:`session_tables`
        returns them.
    seed : int
        Seed of the shuffles (a stream of its own: the sessions do not depend on it).
    slate : int
        Most items shown per impression (>= 2).

    Returns
    -------
    pyarrow.Table
        ``session`` int64, ``history`` list<int64>, ``shown`` list<int64>, ``clicked`` list<bool>.

    Examples
    --------
    >>> _, test, _ = session_tables(200, 500, seed=1)
    >>> imp = impression_table(test, seed=1)
    >>> imp.column_names, imp.num_rows <= 20
    (['session', 'history', 'shown', 'clicked'], True)
    >>> all(sum(c) == 1 and len(c) == len(s) for c, s in zip(imp["clicked"].to_pylist(), imp["shown"].to_pylist()))
    True
    """
    if slate < 2:
        raise ValueError(f"need slate >= 2 (a click and a non-click), got {slate}")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    rows = {"session": [], "history": [], "shown": [], "clicked": []}
    for session, clicks, shown in zip(test["session"].to_pylist(), test["items"].to_pylist(),
                                      test["impressions"].to_pylist()):
        if len(clicks) < 2 or not shown or clicks[-1] in clicks[:-1]:
            continue
        items = np.array([clicks[-1], *shown[:slate - 1]], np.int64)
        order = rng.permutation(len(items))
        rows["session"].append(session)
        rows["history"].append(clicks[:-1])
        rows["shown"].append(items[order].tolist())
        rows["clicked"].append((order == 0).tolist())
    return pa.table({"session": pa.array(rows["session"], pa.int64()),
                     "history": pa.array(rows["history"], pa.list_(pa.int64())),
                     "shown": pa.array(rows["shown"], pa.list_(pa.int64())),
                     "clicked": pa.array(rows["clicked"], pa.list_(pa.bool_()))})


def _items_tsv(cat: Catalogue) -> bytes:
    return "".join(f"{i}\t{g}\t{r}\t{p}\n" for r, (i, g, p) in
                   enumerate(zip(cat.ids.tolist(), cat.group.tolist(), cat.ring.tolist()), start=1)).encode("ascii")


def generate_sessions(out_dir: str, sessions: int = 20_000, items: int = 10_000, seed: int = 1,
                      spec: SessionSpec | None = None) -> SessionFiles:
    """Write a planted clickstream and its ground truth into ``out_dir`` (local or ``s3://``).

    Parameters
    ----------
    out_dir : str
        Directory URL; created when local.  Receives ``sessions.parquet``,
        ``sessions.test.parquet``, ``impressions.test.parquet`` and ``items.tsv`` (see the
        module docstring).
    sessions, items, seed, spec
        As for :func:`session_tables`.

    Returns
    -------
    SessionFiles
        The paths written, the session counts and the training clicks.
    """
    import pyarrow.parquet as pq

    from .. import storage

    spec = spec or _DEFAULT_SPEC
    train, test, cat = session_tables(sessions, items, seed, spec)
    names = ("sessions.parquet", "sessions.test.parquet", "items.tsv", "impressions.test.parquet")
    paths = [storage.join(out_dir, name) for name in names]
    for table, path in zip((train, test), paths):
        with storage.open_write(path) as f:
            pq.write_table(table, f, row_group_size=spec.row_group_size)
    storage.write_bytes(paths[2], _items_tsv(cat))
    with storage.open_write(paths[3]) as f:
        pq.write_table(impression_table(test, seed), f, row_group_size=spec.row_group_size)
    clicks = len(train.column("items").combine_chunks().flatten())
    return SessionFiles(*paths[:3], train.num_rows, test.num_rows, clicks, paths[3])
