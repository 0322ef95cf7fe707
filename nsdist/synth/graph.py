"""Deterministic synthetic graphs with planted communities and roles (ground truth included).

The graph counterpart of :mod:`nsdist.synth.sessions`: the generator knows each
node's community (and, in the roles mode, its structural role), so node
embeddings can be scored by node classification and link prediction
(:mod:`nsdist.evaluate.graph`).

The planted structure: communities (the default mode)
-----------------------------------------------------
A degree-corrected stochastic block model (Karrer & Newman 2011):

* Nodes: ``nodes`` nodes with random, non-contiguous int64 ids in
  ``[2**32, 2**62)`` (beyond int32 and beyond float64's exact integers, so a
  reader that narrows or floats them breaks visibly).
* Communities: ``communities`` of them, balanced (sizes differ by at most
  one), assigned at random.
* Propensities: node ``i`` has ``theta_i = min(u ** (-1 / (degree_exponent -
  1)), max_propensity)`` with ``u`` uniform in (0, 1]: a Pareto tail, so
  degrees are heterogeneous (P(degree >= k) falls like ``k ** -1.5`` at the
  default exponent 2.5) with a few hubs, as in real graphs; the cap keeps
  hubs below about ``mean_degree * max_propensity / mean(theta)`` edges.
* Edges: ``round(nodes * mean_degree / 2)`` distinct edges are drawn one by
  one.  An edge is within a community with probability ``ratio / (ratio +
  communities - 1)`` (the community uniform), otherwise between two distinct
  communities (the pair uniform); each endpoint is a node of its community
  drawn with probability proportional to ``theta``.  So the expected number
  of edges between ``i`` and ``j`` is proportional to ``theta_i * theta_j``
  times ``ratio`` within a community and 1 across (the propensities of every
  community summing to about the same): ``ratio`` is the planted in/out edge
  probability ratio.  A self-loop or a repeat redraws its endpoints in the
  same pair of communities, so the within share is exactly binomial.
* No isolated node: a node left without an edge gets one, to a partner drawn
  by the same rule (own community with the within probability, else a random
  other one; partner by ``theta``), so there are slightly more edges than
  ``nodes * mean_degree / 2`` (63 more at the defaults).

With the defaults (10 communities, ratio 20, mean degree 10) 69% of the edges
are within communities: far above the 10% of a graph without communities and
above the detectability limit of the sparse SBM (about ratio 6 here), but
a sixth of the nodes have degree 3 or less (median 7, mode 5, maximum about
130, standard deviation 13) and a node of degree 3 has all its neighbours in its own community only
33% of the time, so classifying nodes takes more than reading one edge.

The planted structure: roles (``roles=True``)
----------------------------------------------
A ring of communities whose nodes also play one of three structural roles,
so homophily (community) and structural equivalence (role) are separate
labels, as node2vec's return and in-out parameters trade them off:

* ``hub``: the first ``max(3, round(hub_share * size))`` nodes of a community
  form a clique, its core.
* ``bridge``: ``bridges`` nodes per community; each is joined to two random
  hubs of its community and, for ``j`` in ``range(bridges)``, bridge ``j`` of
  community ``c`` to bridge ``j`` of community ``(c + 1) % communities``: the
  communities form a ring, and every bridge has one edge to each neighbouring
  community.
* ``periphery``: every other node; joined to one random hub of its community,
  with probability 1/2 to a second one, and with probability 0.3 to a random
  other periphery node of its community.

Community sizes are balanced; node rows are then shuffled, so neither the ids
nor the file order reveal a community or a role.  Nodes and ids are as above.

The held-out split (both modes)
-------------------------------
One random incident edge of every node is protected; ``test_fraction`` of all
edges (rounded) are drawn uniformly among the unprotected ones and held out.
So every node keeps at least one training edge, and a held-out edge is never
a training edge.

Files written by :func:`generate_graph` into ``OUT_DIR``
--------------------------------------------------------
* ``edges.parquet``: the training edges, ``src`` int64, ``dst`` int64, each
  undirected edge once (in a random orientation), in random order;
  ``row_group_size`` rows per row group.
* ``edges.test.parquet``: the held-out edges, same schema.
* with ``fmt="text"`` instead: ``edges.txt`` and ``edges.test.txt``, one edge
  ``src dst`` per line (decimal ids, one space), the same edges in the same
  order.
* ``labels.tsv``: ``node<TAB>community`` (community ``0 ..
  communities - 1``), no header, in ascending id order.
* ``roles.tsv`` (roles mode only): ``node<TAB>role`` (``hub``, ``bridge`` or
  ``periphery``), same order.

Everything is a pure function of ``(nodes, seed, spec, roles)``: equal
arguments give byte-identical files.

Calibration: see docs/graphs.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .sessions import ID_HIGH, ID_LOW

__all__ = ["GraphFiles", "GraphSpec", "PlantedGraph", "ROLES", "generate_graph", "graph_tables", "split_edges"]

#: Role names of the roles mode, by role number.
ROLES = ("hub", "bridge", "periphery")


@dataclass(frozen=True)
class GraphSpec:
    """Shape of the planted graph (the defaults are the tested ones).

    Attributes
    ----------
    communities : int
        Number of planted communities (>= 2; >= 3 in the roles mode).
    ratio : float
        In/out edge probability ratio (>= 1) of the block model: between two
        nodes of equal propensity, an edge is ``ratio`` times likelier within
        a community than across.
    mean_degree : float
        Target mean degree of the block model (before isolated nodes are
        attached).
    degree_exponent : float
        Pareto exponent of the propensities (> 2); lower means heavier hubs.
    max_propensity : float
        Cap of a propensity (the smallest is 1).
    hub_share, bridges : float, int
        Roles mode: share of a community's nodes in its hub clique (at least
        3 hubs) and bridge nodes per community.
    test_fraction : float
        Share of the edges held out in ``edges.test.*``, in [0, 1).
    row_group_size : int
        Rows per Parquet row group.
    """

    communities: int = 10
    ratio: float = 20.0
    mean_degree: float = 10.0
    degree_exponent: float = 2.5
    max_propensity: float = 30.0
    hub_share: float = 0.05
    bridges: int = 2
    test_fraction: float = 0.1
    row_group_size: int = 20_000

    def __post_init__(self) -> None:
        if self.communities < 2:
            raise ValueError(f"need communities >= 2, got {self.communities}")
        if not self.ratio >= 1 or not self.mean_degree > 0:
            raise ValueError(f"need ratio >= 1 and mean_degree > 0, got {self.ratio} and {self.mean_degree}")
        if not self.degree_exponent > 2 or not self.max_propensity >= 1:
            raise ValueError("need degree_exponent > 2 (a finite mean degree) and max_propensity >= 1")
        if not 0 <= self.hub_share <= 1 or self.bridges < 1:
            raise ValueError("need 0 <= hub_share <= 1 and bridges >= 1")
        if not 0 <= self.test_fraction < 1 or self.row_group_size < 1:
            raise ValueError(f"need 0 <= test_fraction < 1 and row_group_size >= 1, got {self.test_fraction}")

    @property
    def within_share(self) -> float:
        """Expected share of block-model edges within a community: ``ratio / (ratio + communities - 1)``.

        >>> round(GraphSpec().within_share, 4)
        0.6897
        """
        return self.ratio / (self.ratio + self.communities - 1)


_DEFAULT_SPEC = GraphSpec()


@dataclass(frozen=True)
class PlantedGraph:
    """A planted graph and its ground truth; nodes are rows ``0 .. n-1``.

    Attributes
    ----------
    ids : ndarray of int64
        Node ids, unique.
    community : ndarray of int64
        Community of each node, in ``[0, communities)``.
    propensity : ndarray of float64
        Degree propensity ``theta`` of each node (all 1 in the roles mode).
    role : ndarray of int64 or None
        Role of each node (an index into :data:`ROLES`); None outside the roles mode.
    train, test : ndarray of int64, shape (m, 2)
        Training and held-out edges as node rows, each undirected edge once.
    """

    ids: np.ndarray
    community: np.ndarray
    propensity: np.ndarray
    role: np.ndarray | None
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class GraphFiles:
    """Paths written by :func:`generate_graph` and what they hold."""

    train: str
    test: str
    labels: str
    roles: str | None
    nodes: int
    train_edges: int
    test_edges: int


def _node_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(ID_HIGH - ID_LOW, n, replace=False).astype(np.int64) + ID_LOW


class _Propensity:
    """Draws nodes of given communities with probability proportional to their propensity."""

    def __init__(self, community: np.ndarray, theta: np.ndarray, k: int) -> None:
        self.order = np.argsort(community, kind="stable")
        self.cum = np.cumsum(theta[self.order])
        self.last = np.cumsum(np.bincount(community, minlength=k)) - 1
        self.hi = self.cum[self.last]
        self.lo = np.r_[0.0, self.hi[:-1]]

    def draw(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        u = self.lo[groups] + rng.random(len(groups)) * (self.hi[groups] - self.lo[groups])
        # ``min`` guards the float edge where u rounds up to the community's end.
        return self.order[np.minimum(np.searchsorted(self.cum, u, side="right"), self.last[groups])]


def _endpoint_groups(rng: np.random.Generator, n: int, spec: GraphSpec, first=None):
    """Community pairs of ``n`` edges: within with probability ``within_share``, else a uniform
    ordered pair of distinct communities.  ``first`` fixes the first community of each."""
    k = spec.communities
    a = rng.integers(0, k, n) if first is None else first
    across = rng.random(n) >= spec.within_share
    b = np.where(across, (a + rng.integers(1, k, n)) % k, a)
    return a, b


def _keys(edges: np.ndarray, n: int) -> np.ndarray:
    """One int64 per undirected edge: ``min * n + max``."""
    return np.minimum(edges[:, 0], edges[:, 1]) * n + np.maximum(edges[:, 0], edges[:, 1])


def _fresh(drawn: np.ndarray, edges: np.ndarray, n: int) -> np.ndarray:
    """Mask of the ``drawn`` edges that are no self-loop, not in ``edges`` and not drawn before."""
    keys = _keys(drawn, n)
    first = np.zeros(len(drawn), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first & (drawn[:, 0] != drawn[:, 1]) & ~np.isin(keys, _keys(edges, n))


def _unique_edges(edges: np.ndarray, n: int) -> np.ndarray:
    """Edges without self-loops and repeats (either orientation), first occurrence kept, in order."""
    return edges[_fresh(edges, edges[:0], n)]


def _sbm(rng: np.random.Generator, n: int, spec: GraphSpec):
    """Communities, propensities and edges (rows) of the degree-corrected block model."""
    k = spec.communities
    community = rng.permutation(np.arange(n, dtype=np.int64) % k)
    theta = np.minimum(rng.random(n) ** (-1 / (spec.degree_exponent - 1)), spec.max_propensity)
    theta = np.where(np.isfinite(theta), theta, spec.max_propensity)  # u == 0
    draw = _Propensity(community, theta, k)
    # The community pairs are drawn once; a self-loop or a repeat redraws its endpoints within the
    # same pair, so the within share is exactly a binomial draw around ``within_share``.
    a, b = _endpoint_groups(rng, round(n * spec.mean_degree / 2), spec)
    edges = np.empty((0, 2), dtype=np.int64)
    for _ in range(100):
        if not len(a):
            break
        drawn = np.c_[draw.draw(rng, a), draw.draw(rng, b)]
        ok = _fresh(drawn, edges, n)
        edges = np.concatenate([edges, drawn[ok]])
        a, b = a[~ok], b[~ok]
    else:
        raise ValueError(f"mean_degree {spec.mean_degree} is too dense for {n} nodes")
    for _ in range(100):  # attach isolated nodes (their partners may be isolated too: repeat)
        alone = np.flatnonzero(np.bincount(edges.ravel(), minlength=n) == 0)
        if not len(alone):
            break
        _, b = _endpoint_groups(rng, len(alone), spec, first=community[alone])
        edges = _unique_edges(np.concatenate([edges, np.c_[alone, draw.draw(rng, b)]]), n)
    return community, theta, edges


def _roles(rng: np.random.Generator, n: int, spec: GraphSpec):
    """Communities, roles and edges (rows) of the ring of communities with hubs, bridges and
    periphery; rows come in community blocks, shuffled by the caller."""
    k = spec.communities
    sizes = np.full(k, n // k) + (np.arange(k) < n % k)
    hubs = max(3, round(spec.hub_share * int(sizes.min())))
    if int(sizes.min()) < hubs + spec.bridges + 2:
        raise ValueError(f"{n} nodes in {k} communities leave too little periphery: need at least "
                         f"{hubs + spec.bridges + 2} nodes per community")
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    community = np.repeat(np.arange(k), sizes)
    offset = np.arange(n) - start[community]
    role = np.where(offset < hubs, 0, np.where(offset < hubs + spec.bridges, 1, 2))
    edges = []
    for c in range(k):  # the hub cliques
        i, j = np.triu_indices(hubs, 1)
        edges.append(np.c_[start[c] + i, start[c] + j])
    bridge = np.flatnonzero(role == 1)  # community-major: bridge j of c at c * bridges + j
    for _ in range(2):  # two distinct hubs each (a repeat is dropped below, then redrawn)
        edges.append(np.c_[bridge, start[community[bridge]] + rng.integers(0, hubs, len(bridge))])
    ring = bridge.reshape(k, spec.bridges)
    edges.append(np.c_[ring.ravel(), np.roll(ring, -1, axis=0).ravel()])
    per = np.flatnonzero(role == 2)
    first_hub = rng.integers(0, hubs, len(per))
    edges.append(np.c_[per, start[community[per]] + first_hub])
    second = per[rng.random(len(per)) < 0.5]
    edges.append(np.c_[second, start[community[second]] + (first_hub[np.searchsorted(per, second)]
                                                            + rng.integers(1, hubs, len(second))) % hubs])
    friend = per[rng.random(len(per)) < 0.3]
    n_per = sizes[community[friend]] - hubs - spec.bridges
    pos = offset[friend] - hubs - spec.bridges
    other = (pos + rng.integers(1, n_per)) % n_per  # another periphery node of the community
    edges.append(np.c_[friend, start[community[friend]] + hubs + spec.bridges + other])
    edges = _unique_edges(np.concatenate(edges).astype(np.int64), n)
    # The two hubs of a bridge may coincide: give such a bridge its second hub.
    deg = np.bincount(edges.ravel(), minlength=n)
    short = bridge[deg[bridge] < 4]
    for b in short.tolist():
        mine = set(edges[(edges == b).any(axis=1)].ravel().tolist())
        free = [h for h in range(start[community[b]], start[community[b]] + hubs) if h not in mine]
        edges = np.concatenate([edges, [[b, free[rng.integers(0, len(free))]]]])
    return community, role, edges


def split_edges(edges: np.ndarray, n: int, fraction: float, rng: np.random.Generator):
    """Hold out ``round(fraction * len(edges))`` edges so that every node keeps one.

    One random incident edge per node is protected; the held-out edges are
    drawn uniformly among the others.  Both parts keep the input order.

    >>> edges = np.array([[0, 1], [1, 2], [2, 0], [2, 3]])
    >>> train, test = split_edges(edges, 4, 0.25, np.random.default_rng(0))
    >>> len(train), len(test), set(np.unique(train).tolist()) == {0, 1, 2, 3}
    (3, 1, True)
    """
    m = len(edges)
    n_test = round(fraction * m)
    # Incidences (edge, node) in random order; the first one of each node protects its edge.
    inc_edge = np.tile(np.arange(m), 2)
    inc_node = np.concatenate([edges[:, 0], edges[:, 1]])
    shuffled = rng.permutation(2 * m)
    _, first = np.unique(inc_node[shuffled], return_index=True)
    protected = np.zeros(m, dtype=bool)
    protected[inc_edge[shuffled[first]]] = True
    free = np.flatnonzero(~protected)
    if n_test > len(free):
        raise ValueError(f"cannot hold out {n_test} of {m} edges and leave every node an edge; "
                         "lower test_fraction")
    held = np.zeros(m, dtype=bool)
    held[rng.choice(free, n_test, replace=False)] = True
    return edges[~held], edges[held]


def graph_tables(nodes: int, seed: int = 1, spec: GraphSpec | None = None, roles: bool = False):
    """Generate the planted graph (no IO).

    Parameters
    ----------
    nodes : int
        Number of nodes (at least ``2 * communities``; in the roles mode
        enough for hubs, bridges and periphery in every community).
    seed : int
        Random seed; equal arguments give equal graphs.
    spec : GraphSpec, optional
        Structure parameters; defaults to :class:`GraphSpec` ().
    roles : bool
        The ring of communities with hub, bridge and periphery roles instead
        of the degree-corrected block model.

    Returns
    -------
    PlantedGraph

    Examples
    --------
    >>> g = graph_tables(1000, seed=1)
    >>> len(g.ids), int(g.ids.min()) >= 2**32, np.bincount(g.community).tolist() == [100] * 10
    (1000, True, True)
    >>> len(g.test) == round(0.1 * (len(g.train) + len(g.test)))
    True
    >>> r = graph_tables(600, seed=1, spec=GraphSpec(communities=4), roles=True)
    >>> [int((r.role == i).sum()) for i in range(3)]
    [32, 8, 560]
    """
    spec = spec or _DEFAULT_SPEC
    if nodes < 2 * spec.communities:
        raise ValueError(f"need at least 2 nodes per community ({2 * spec.communities}), got {nodes}")
    if roles and spec.communities < 3:
        raise ValueError("the roles mode joins communities in a ring: need communities >= 3")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    ids = _node_ids(rngs[0], nodes)
    if roles:
        community, role, edges = _roles(rngs[1], nodes, spec)
        # Shuffle the rows, so that the file order and the ids reveal nothing.
        perm = rngs[1].permutation(nodes)
        inverse = np.argsort(perm)
        community, role, edges = community[perm], role[perm], inverse[edges]
        theta = np.ones(nodes)
    else:
        community, theta, edges = _sbm(rngs[1], nodes, spec)
        role = None
    rng = rngs[2]
    edges = edges[rng.permutation(len(edges))]
    flip = rng.random(len(edges)) < 0.5
    edges[flip] = edges[flip][:, ::-1]
    train, test = split_edges(edges, nodes, spec.test_fraction, rng)
    return PlantedGraph(ids, community.astype(np.int64), theta, role, train, test)


def _edge_table(ids: np.ndarray, edges: np.ndarray) -> pa.Table:
    return pa.table({"src": pa.array(ids[edges[:, 0]], pa.int64()), "dst": pa.array(ids[edges[:, 1]], pa.int64())})


def _edge_text(ids: np.ndarray, edges: np.ndarray) -> bytes:
    return "".join(f"{s} {d}\n" for s, d in ids[edges].tolist()).encode("ascii")


def _label_tsv(ids: np.ndarray, labels) -> bytes:
    order = np.argsort(ids)
    return "".join(f"{i}\t{labels[r]}\n" for i, r in zip(ids[order].tolist(), order.tolist())).encode("ascii")


def generate_graph(out_dir: str, nodes: int = 10_000, seed: int = 1, spec: GraphSpec | None = None,
                   roles: bool = False, fmt: str = "parquet") -> GraphFiles:
    """Write a planted graph and its ground truth into ``out_dir`` (local or ``s3://``).

    Parameters
    ----------
    out_dir : str
        Directory URL; created when local.  Receives the edge files,
        ``labels.tsv`` and in the roles mode ``roles.tsv`` (see the module
        docstring).
    nodes, seed, spec, roles
        As for :func:`graph_tables`.
    fmt : {"parquet", "text"}
        ``edges.parquet`` and ``edges.test.parquet``, or ``edges.txt`` and
        ``edges.test.txt``.

    Returns
    -------
    GraphFiles
        The paths written and the node and edge counts.
    """
    import pyarrow.parquet as pq

    from .. import storage

    if fmt not in ("parquet", "text"):
        raise ValueError(f"fmt must be 'parquet' or 'text', got {fmt!r}")
    spec = spec or _DEFAULT_SPEC
    g = graph_tables(nodes, seed, spec, roles)
    suffix = ".parquet" if fmt == "parquet" else ".txt"
    train, test = (storage.join(out_dir, f"edges{part}{suffix}") for part in ("", ".test"))
    for edges, path in ((g.train, train), (g.test, test)):
        if fmt == "parquet":
            with storage.open_write(path) as f:
                pq.write_table(_edge_table(g.ids, edges), f, row_group_size=spec.row_group_size)
        else:
            storage.write_bytes(path, _edge_text(g.ids, edges))
    labels = storage.join(out_dir, "labels.tsv")
    storage.write_bytes(labels, _label_tsv(g.ids, g.community.tolist()))
    role_path = None
    if roles:
        role_path = storage.join(out_dir, "roles.tsv")
        storage.write_bytes(role_path, _label_tsv(g.ids, [ROLES[r] for r in g.role.tolist()]))
    return GraphFiles(train, test, labels, role_path, nodes, len(g.train), len(g.test))
