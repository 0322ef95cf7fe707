"""Graph walks: reading edge lists, the node table, the CSR and the DeepWalk/node2vec kernels.

The walk tests compare empirical step frequencies with the exact transition probabilities,
computed here from a dense matrix with plain numpy, within 5 standard deviations per cell.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nsdist import graph
from nsdist.corpus import Block, plan_blocks
from nsdist.errors import ConfigError, DataError
from nsdist.graph import walks
from nsdist.graph.csr import uniform_weights, weight_range
from nsdist.graph.partition import choose_layout, make_part, node_ranges, part_bytes, part_rows, split_edges
from nsdist.graph.supersteps import partitioned_walks

# An undirected test graph with triangles (0-1-2, 1-2-3) and a longer cycle (1-3-4-5), so that
# node2vec's three cases (return, stay near, move out) all occur. One duplicate (0, 1) and one
# self-loop (2, 2): the CSR merges the first and drops the second.
EDGES = [(0, 1, 1.0), (0, 2, 2.0), (1, 2, 1.0), (1, 3, 3.0), (2, 3, 1.0), (3, 4, 2.0), (4, 5, 1.0),
         (1, 5, 0.5), (0, 1, 0.5), (2, 2, 4.0)]
# Directed: one-way edges, nodes without out-edges (6, and 8 last) and one without in-edges (7).
DIRECTED_EDGES = EDGES + [(5, 6, 1.0), (7, 0, 1.0), (3, 1, 2.0), (4, 3, 1.5), (7, 8, 3.0)]


def make_csr(edges, directed, weighted, blocks=1):
    """The CSR of literal (src, dst, weight) int edges, read as ``blocks`` blocks."""
    src, dst, w = (np.array(c) for c in zip(*edges))
    parts_edges = [graph.Edges(pa.array(s, pa.int64()), pa.array(d, pa.int64()),
                               np.asarray(ww, np.float32) if weighted else None)
                   for s, d, ww in zip(*(np.array_split(a, blocks) for a in (src, dst, w)))]
    nodes = graph.merge_nodes(*[graph.block_nodes(e) for e in parts_edges])
    parts = [graph.edge_ids(e, nodes, directed) for e in parts_edges]
    degrees = sum(graph.out_degrees(s, len(nodes)) for s, _, _ in parts)
    return graph.build_csr(parts, len(nodes), degrees), nodes


def partition(parts, n, ranges):
    """The adjacency of ``edge_ids`` parts cut into ``ranges`` node ranges, as a job's workers
    hold it: (Part per range, bounds)."""
    degrees = sum(graph.out_degrees(s, n) for s, _, _ in parts)
    bounds = node_ranges(degrees, ranges, weighted=False)
    pieces = [split_edges(p, bounds) for p in parts]
    rows = [part_rows([piece[i] for piece in pieces], bounds[i], bounds[i + 1]) for i in range(ranges)]
    weighted = not uniform_weights([weight_range(r[2]) for r in rows])
    return [make_part(r, bounds[i], bounds[i + 1], weighted) for i, r in enumerate(rows)], bounds


def walker(edges, directed, weighted, layout, blocks=1):
    """(random_walks with the graph bound, nodes): the replicated kernels on the whole CSR, or
    the supersteps over 3 node ranges (a walk crosses between them at most steps)."""
    csr, nodes = make_csr(edges, directed, weighted, blocks)
    if layout == "replicated":
        return (lambda *args, **kw: graph.random_walks(csr, *args, **kw)), nodes
    src, dst, w = (np.array(c) for c in zip(*edges))
    e = graph.Edges(pa.array(src, pa.int64()), pa.array(dst, pa.int64()), np.asarray(w, np.float32) if weighted else None)
    parts, bounds = partition([graph.edge_ids(e, nodes, directed)], len(nodes), 3)
    return (lambda *args, **kw: partitioned_walks(parts, bounds, *args, **kw)), nodes


LAYOUTS = pytest.mark.parametrize("layout", ["replicated", "partitioned"])


def dense(edges, n, directed, weighted):
    """The reference weight matrix: duplicates summed, self-loops dropped, undirected symmetric."""
    W = np.zeros((n, n))
    for s, d, w in edges:
        if s != d:
            W[s, d] += w if weighted else 1.0
            if not directed:
                W[d, s] += w if weighted else 1.0
    return W


def node2vec_probs(W, t, v, p, q):
    """Exact P(next = x | previous t, current v) of node2vec (t -> x edges count as near)."""
    bias = np.where(W[t] > 0, 1.0, 1.0 / q)
    bias[t] = 1.0 / p
    pi = W[v] * bias
    return pi / pi.sum()


def within_5_sigma(counts, probs):
    """Every cell's count within 5 standard deviations of its expectation (plus one count)."""
    n = counts.sum()
    sigma = np.sqrt(n * probs * (1 - probs))
    return np.all(np.abs(counts - n * probs) <= 5 * sigma + 1), np.abs(counts - n * probs) - 5 * sigma


GRAPHS = [pytest.param(EDGES, False, False, id="undirected"),
          pytest.param(EDGES, False, True, id="undirected-weighted"),
          pytest.param(DIRECTED_EDGES, True, False, id="directed"),
          pytest.param(DIRECTED_EDGES, True, True, id="directed-weighted")]


@LAYOUTS
@pytest.mark.parametrize("edges,directed,weighted", GRAPHS)
def test_first_step_matches_deepwalk_probabilities(edges, directed, weighted, layout):
    random_walks, nodes = walker(edges, directed, weighted, layout)
    W = dense(edges, len(nodes), directed, weighted)
    walks = 20000
    for v in range(len(nodes)):
        ids, offsets = random_walks(np.full(walks, v, np.int32), np.arange(walks), 2, seed=3)
        if W[v].sum() == 0:  # no out-edges: the walk is the start alone
            assert np.array_equal(offsets, np.arange(walks + 1)) and np.all(ids == v)
            continue
        assert np.array_equal(np.diff(offsets), np.full(walks, 2))
        counts = np.bincount(ids[1::2], minlength=len(nodes))
        ok, excess = within_5_sigma(counts, W[v] / W[v].sum())
        assert ok, (v, counts, excess)


@pytest.mark.parametrize("p,q", [(1, 1), (1, 0.5), (1, 2), (0.25, 1), (4, 0.25), (0.5, 3)])
@LAYOUTS
@pytest.mark.parametrize("edges,directed,weighted", GRAPHS)
def test_second_step_matches_node2vec_probabilities(edges, directed, weighted, p, q, layout):
    random_walks, nodes = walker(edges, directed, weighted, layout)
    n = len(nodes)
    W = dense(edges, n, directed, weighted)
    walks, checked, discriminating = 30000, 0, False
    for t in range(n):
        ids, offsets = random_walks(np.full(walks, t, np.int32), np.arange(walks), 3, p, q, seed=11)
        if W[t].sum() > 0:  # the first step has no previous node: first-order
            ok, excess = within_5_sigma(np.bincount(ids[offsets[:-1] + 1], minlength=n), W[t] / W[t].sum())
            assert ok, (t, excess)
        full = np.flatnonzero(np.diff(offsets) == 3)
        steps = ids[offsets[full][:, None] + np.arange(3)]
        for v in np.unique(steps[:, 1]):
            x = steps[steps[:, 1] == v, 2]
            if len(x) < 500:
                continue
            exact = node2vec_probs(W, t, v, p, q)
            ok, excess = within_5_sigma(np.bincount(x, minlength=n), exact)
            assert ok, (t, v, excess)
            checked += 1
            # The bound is tight enough to tell node2vec from a first-order walk on this graph.
            first = W[v] / W[v].sum()
            sigma = np.sqrt(len(x) * exact * (1 - exact))
            discriminating |= bool(np.any(np.abs(first - exact) * len(x) > 3 * (5 * sigma + 1)))
    assert checked >= 8
    assert discriminating == ((p, q) != (1, 1))


def test_walks_do_not_depend_on_task_splitting_and_differ_by_seed():
    csr, nodes = make_csr(DIRECTED_EDGES, True, True)
    n, per_node, length = len(nodes), 5, 12
    total = n * per_node

    def walks(lo, hi, seed):
        starts, index = graph.walk_starts(n, per_node, lo, hi, seed)
        ids, offsets = graph.random_walks(csr, starts, index, length, p=0.5, q=2.0, seed=seed)
        return [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]

    whole = walks(0, total, seed=5)
    assert walks(0, 7, 5) + walks(7, 8, 5) + walks(8, 31, 5) + walks(31, total, 5) == whole
    assert len(whole) == total and sorted(w[0] for w in whole) == sorted(list(range(n)) * per_node)
    assert walks(0, total, seed=6) != whole
    # A walk is a function of (seed, start, walk index): the same start and index give it anywhere.
    ids, offsets = graph.random_walks(csr, np.array([whole[9][0]], np.int32), 9 // n, length, 0.5, 2.0, seed=5)
    assert ids.tolist() == whole[9]


def _one_walk(csr, start, index, length, seed):
    """DeepWalk's walk k stated one step at a time in Python: its stream seeded by (seed, start,
    index); per step one uniform, whose integer part (times the degree) picks the row position and
    whose fraction is the alias coin."""
    # The kernels' hash and generator, called from Python: their uint64 state comes back as a
    # Python int, and goes in again as np.uint64 (an int64 argument would compile other arithmetic).
    state = np.uint64(walks._hash3(np.uint64(seed) ^ walks._WALK_KEY, start, index))
    walk, v = [int(start)], int(start)
    while len(walk) < length and csr.offsets[v + 1] > csr.offsets[v]:
        a = int(csr.offsets[v])
        u, state = walks._uniform(state)
        state = np.uint64(state)
        x = u * (int(csr.offsets[v + 1]) - a)
        i = int(x)
        if csr.prob is not None and x - i >= float(csr.prob[a + i]):
            i = int(csr.alias[a + i])
        v = int(csr.neighbors[a + i])
        walk.append(v)
    return walk


@pytest.mark.parametrize("weighted", [False, True])
def test_first_order_walks_equal_one_walk_at_a_time(weighted):
    """First-order walks are generated many at once; each is still the walk of its own stream,
    whichever walks share its batch, dead ends (nodes 6 and 8) included."""
    csr, nodes = make_csr(DIRECTED_EDGES, True, weighted)
    n, per_node, length = len(nodes), 5, 12
    starts, index = graph.walk_starts(n, per_node, 0, n * per_node, seed=3)
    ids, offsets = graph.random_walks(csr, starts, index, length, seed=3)
    got = [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    assert got == [_one_walk(csr, s, i, length, 3) for s, i in zip(starts.tolist(), index.tolist())]
    assert min(map(len, got)) < length and max(map(len, got)) == length
    for cut in (1, 15, 16, 17, 33):  # batches of every size around the kernel's 16 lanes
        ids, offsets = graph.random_walks(csr, starts[cut:], index[cut:], length, seed=3)
        assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == got[cut:]


def test_walk_starts_shuffle_each_pass_differently():
    n, per_node = 1000, 3
    starts, index = graph.walk_starts(n, per_node, 0, n * per_node, seed=2)
    passes = starts.reshape(per_node, n)
    assert np.array_equal(index, np.repeat(np.arange(per_node), n))
    assert all(np.array_equal(np.sort(row), np.arange(n)) for row in passes)
    assert not np.array_equal(passes[0], passes[1]) and not np.array_equal(passes[0], np.arange(n))
    assert not np.array_equal(graph.walk_starts(n, per_node, 0, n, seed=3)[0], passes[0])
    # No long runs of the file order survive the shuffle.
    assert np.mean(np.diff(passes[0]) == 1) < 0.01
    with pytest.raises(ValueError, match="outside"):
        graph.walk_starts(n, per_node, 0, n * per_node + 1)


@LAYOUTS
def test_dead_ends_isolated_nodes_and_walk_length(layout):
    # 0 -> 1 -> 2 (a dead end); 3 appears only in a self-loop, so it is a node without edges.
    e = graph.Edges(pa.array([0, 1, 3], pa.int64()), pa.array([1, 2, 3], pa.int64()), None)
    nodes = graph.block_nodes(e)
    csr = graph.build_csr([graph.edge_ids(e, nodes, directed=True)], len(nodes))
    assert csr.offsets.tolist() == [0, 1, 2, 2, 2] and csr.neighbors.tolist() == [1, 2]
    random_walks, _ = walker([(0, 1, 1.0), (1, 2, 1.0), (3, 3, 1.0)], True, False, layout)
    for p, q in [(1, 1), (0.5, 2)]:
        ids, offsets = random_walks(np.array([0, 3, 1, 2], np.int32), 0, 80, p, q, seed=1)
        assert ids.tolist() == [0, 1, 2, 3, 1, 2, 2] and offsets.tolist() == [0, 3, 4, 6, 7]
    ids, offsets = random_walks(np.array([0, 1], np.int32), 0, 1)
    assert ids.tolist() == [0, 1] and offsets.tolist() == [0, 1, 2]
    ids, offsets = random_walks(np.zeros(0, np.int32), 0, 5)
    assert len(ids) == 0 and offsets.tolist() == [0]


@LAYOUTS
def test_walks_stay_on_edges_and_reach_full_length(layout):
    rng = np.random.default_rng(0)
    edges = [(int(a), int(b), float(w)) for a, b, w in zip(rng.integers(0, 50, 400), rng.integers(0, 50, 400),
                                                           rng.uniform(0.1, 3, 400))]
    random_walks, nodes = walker(edges, directed=False, weighted=True, layout=layout)
    W = dense(edges, len(nodes), directed=False, weighted=True)
    starts, index = graph.walk_starts(len(nodes), 4, 0, 4 * len(nodes), seed=1)
    ids, offsets = random_walks(starts, index, 40, p=2.0, q=0.5, seed=1)
    assert np.all(np.diff(offsets) == 40)  # no dead ends in an undirected graph without isolated nodes
    for a, b in zip(offsets[:-1], offsets[1:]):
        assert np.all(W[ids[a:b - 1], ids[a + 1:b]] > 0)


def random_graph(seed, directed, weighted):
    """Edges among up to 120 nodes: sparse enough for dead ends and (ids past the last edge's)
    isolated nodes, with repeats (merged into heavier edges) and self-loops (dropped)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    m = int(rng.integers(n // 2, 3 * n))
    ends = rng.integers(0, n - 5, (2, m))  # the last 5 ids: no edges
    e = graph.Edges(pa.array(ends[0], pa.int64()), pa.array(ends[1], pa.int64()),
                    rng.uniform(0.1, 3, m).astype(np.float32) if weighted else None)
    nodes = pa.array(np.arange(n), pa.int64())
    return [graph.edge_ids(part, nodes, directed) for part in (e,)], n


@pytest.mark.parametrize("ranges", [1, 2, 3, 7])
@pytest.mark.parametrize("p,q", [(1, 1), (0.5, 2), (2, 0.5), (0.25, 4), (4, 0.25)])
@pytest.mark.parametrize("directed,weighted", [(True, False), (False, False), (True, True), (False, True)])
def test_partitioned_walks_are_the_replicated_walks(directed, weighted, p, q, ranges):
    """Every walk, bit for bit: the walkers carry their random state across the ranges, and a
    node2vec walker asks the range it left whether its previous node links to a candidate."""
    for seed in range(3):
        parts, n = random_graph(seed, directed, weighted)
        csr = graph.build_csr(parts, n)
        pieces, bounds = partition(parts, n, ranges)
        assert sum(part.csr.edges for part in pieces) == csr.edges and bounds[-1] == n
        starts, index = graph.walk_starts(n, 3, 0, 3 * n, seed=seed)
        want = graph.random_walks(csr, starts, index, 25, p, q, seed=seed)
        got = partitioned_walks(pieces, bounds, starts, index, 25, p, q, seed=seed)
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
        lengths = np.diff(want[1])
        assert lengths.min() == 1  # the isolated nodes' walks
        assert lengths.max() == 25 if not directed else np.any((lengths > 1) & (lengths < 25))  # dead ends


@pytest.mark.parametrize("key,value,fix", [("walk_length", 0, "set it to 1 or more"),
                                           ("p", 0.0, "positive number"), ("q", float("nan"), "positive number")])
def test_walk_parameters_are_checked(key, value, fix):
    csr, _ = make_csr(EDGES, False, False)
    kwargs = {"walk_length": 5, "p": 1.0, "q": 1.0} | {key: value}
    with pytest.raises(ConfigError, match=fix):
        graph.random_walks(csr, np.array([0], np.int32), 0, **kwargs)


# The CSR --------------------------------------------------------------------------------------

def test_self_loops_dropped_duplicates_merged_undirected_doubled():
    e = graph.Edges(pa.array(["a", "b", "a", "c", "a"]), pa.array(["b", "a", "a", "a", "b"]),
                    np.array([1, 1, 5, 2, 3], np.float32))
    nodes = graph.block_nodes(e)
    assert nodes.to_pylist() == ["a", "b", "c"]
    src, dst, w = graph.edge_ids(e, nodes, directed=False)
    assert len(src) == 8 and w.tolist() == [1, 1, 2, 3, 1, 1, 2, 3]  # a-a dropped, the rest twice
    csr = graph.build_csr([(src, dst, w)], 3)
    # a-b appears three times (1 + 1 + 3) in each direction; a-c once (2).
    assert csr.offsets.tolist() == [0, 2, 3, 4]
    assert csr.neighbors.tolist() == [1, 2, 0, 0] and csr.weights.tolist() == [5, 2, 5, 2]
    # Unweighted duplicates count: a directed edge listed twice weighs 2.
    e = graph.Edges(pa.array(["a", "a", "a"]), pa.array(["b", "b", "c"]), None)
    csr = graph.build_csr([graph.edge_ids(e, graph.block_nodes(e), directed=True)], 3)
    assert csr.neighbors.tolist() == [1, 2] and csr.weights.tolist() == [2, 1]
    assert csr.prob is not None and csr.alias is not None


def test_constant_weights_make_an_unweighted_csr():
    # Every edge listed in both directions, as many undirected edge lists are: all weights 2.
    e = graph.Edges(pa.array([0, 1, 1, 2], pa.int64()), pa.array([1, 0, 2, 1], pa.int64()), None)
    csr = graph.build_csr([graph.edge_ids(e, graph.block_nodes(e), directed=False)], 3)
    assert csr.weights is None and csr.prob is None and csr.neighbors.tolist() == [1, 0, 2, 1]


@pytest.mark.parametrize("directed", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_csr_from_blocks_equals_csr_from_all_edges(directed, weighted):
    rng = np.random.default_rng(7)
    m = 3000  # ~1500 distinct pairs among 60 nodes: many duplicates, some self-loops
    edges = list(zip(rng.integers(0, 60, m).tolist(), rng.integers(0, 60, m).tolist(),
                     rng.uniform(0.5, 2.0, m).astype(np.float32).tolist()))
    edges += [(0, 60, 1.5), (1, 61, 1.0)]  # directed: the last rows are empty
    one, nodes = make_csr(edges, directed, weighted, blocks=1)
    many, nodes_many = make_csr(edges, directed, weighted, blocks=5)
    assert nodes.equals(nodes_many)
    for name in ("offsets", "neighbors", "weights", "prob", "alias", "totals"):
        a, b = getattr(one, name), getattr(many, name)
        assert (a is None and b is None) or np.array_equal(a, b), name
    # ... and both equal the dense reference.
    W = dense(edges, len(nodes), directed, weighted)
    rows, cols = np.nonzero(W)
    assert np.array_equal(one.offsets, np.concatenate([[0], np.cumsum(np.count_nonzero(W, axis=1))]))
    assert np.array_equal(one.neighbors, cols)
    assert np.allclose(one.weights, W[rows, cols], rtol=1e-5)
    if one.totals is not None:
        assert np.allclose(one.totals, W.sum(axis=1), rtol=1e-5)
    assert one.nbytes == graph.csr_bytes(one.nodes, one.edges, weighted=True)


def test_alias_tables_reproduce_the_row_weights():
    rng = np.random.default_rng(1)
    e = graph.Edges(pa.array(np.zeros(200, np.int64)), pa.array(rng.integers(1, 100, 200)),
                    rng.uniform(0.01, 10, 200).astype(np.float32))
    csr = graph.build_csr([graph.edge_ids(e, graph.block_nodes(e), directed=True)], len(graph.block_nodes(e)))
    d = csr.edges
    # Column i is chosen with probability 1/d, then kept with prob[i] or sent to alias[i].
    mass = csr.prob / d
    np.add.at(mass, csr.alias, (1 - csr.prob) / d)
    assert np.allclose(mass, csr.weights / csr.weights.sum(), atol=1e-6)


def test_csr_bytes_of_an_unweighted_graph():
    csr, nodes = make_csr(EDGES[:8], directed=False, weighted=False)  # without the duplicate
    assert csr.weights is None and csr.nbytes == graph.csr_bytes(len(nodes), csr.edges, weighted=False)


# The node table -------------------------------------------------------------------------------

def test_merge_nodes_is_associative_and_order_free():
    rng = np.random.default_rng(3)
    ints = [pa.array(rng.integers(-2**62, 2**62, 50)) for _ in range(4)]
    ref = graph.merge_nodes(*ints)
    assert ref.to_pylist() == sorted(set(sum((a.to_pylist() for a in ints), [])))
    assert graph.merge_nodes(graph.merge_nodes(ints[3], ints[0]), graph.merge_nodes(ints[2], ints[1])).equals(ref)
    strs = [pa.array(["é", "b", "10"]), pa.array(["9", "b"]), pa.array([], pa.large_string())]
    assert graph.merge_nodes(*strs).to_pylist() == ["10", "9", "b", "é"]
    # Mixed: integer ids join as strings, whatever the grouping; empty blocks do not decide the type.
    mixed = graph.merge_nodes(pa.array([10, 9], pa.int64()), pa.array(["b"]))
    assert mixed.to_pylist() == ["10", "9", "b"]
    assert graph.merge_nodes(graph.merge_nodes(pa.array([10], pa.int64()), strs[2]), pa.array(["b", "9"])).equals(mixed)
    assert graph.node_type(graph.merge_nodes(ints[0], strs[2])) == "int64"
    # Edges of an integer block look themselves up in a string table by their decimal form.
    e = graph.Edges(pa.array([10], pa.int64()), pa.array([9], pa.int64()), None)
    assert [a.tolist() for a in graph.edge_ids(e, mixed, True)[:2]] == [[0], [1]]


def test_int64_ids_beyond_2_53_round_trip(tmp_path):
    big = 4611686018427387905  # 2**62 + 1: float64 would make it 2**62, the id next to it
    path = str(tmp_path / "g.parquet")
    pq.write_table(pa.table({"src": pa.array([big, big - 1, -big], pa.int64()),
                             "dst": pa.array([big - 1, -5, big], pa.int64())}), path)
    (block,) = plan_blocks([path])
    e = graph.read_edges(block)
    assert e.weight is None and e.src.type == pa.int64()
    nodes = graph.block_nodes(e)
    assert nodes.to_pylist() == [-big, -5, big - 1, big] and graph.node_type(nodes) == "int64"
    src, dst, _ = graph.edge_ids(e, nodes, directed=True)
    assert nodes.take(pa.array(src)).to_pylist() == [big, big - 1, -big]
    assert nodes.take(pa.array(dst)).to_pylist() == [big - 1, -5, big]


def test_parquet_column_types_and_weights(tmp_path):
    path = str(tmp_path / "g.parquet")
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int32()), "b": pa.array(["x", "y"]),
                             "w": pa.array([1, 3], pa.int16()), "src": pa.array(["é", "b"]),
                             "dst": pa.array(["b", "c"], pa.large_string())}), path, row_group_size=1)
    blocks = plan_blocks([path])
    assert len(blocks) == 2
    e = graph.read_edges(blocks[1], src="a", dst="b", weight="w")
    assert e.src.to_pylist() == ["2"] and e.dst.to_pylist() == ["y"] and e.weight.tolist() == [3.0]
    e = graph.read_edges(blocks[0])  # no "weight" column: unweighted
    assert e.src.to_pylist() == ["é"] and e.dst.to_pylist() == ["b"] and e.weight is None
    assert graph.read_edges(blocks[0], src="a", dst="a").src.type == pa.int64()
    assert graph.read_edges(blocks[0], src="a", dst="a", weight=None).weight is None


def test_text_edges_with_comments_string_ids_and_blocks(write):
    lines = ["# SNAP-style header", "% Matrix Market comment", "", "α β 2", "β\tγ", "  γ  α 0.5  "]
    lines += [f"n{i} n{i + 1} {i + 1}" for i in range(200)]
    path = write("g.txt", "\n".join(lines) + "\n")
    (whole,) = plan_blocks([path])
    e = graph.read_edges(whole)
    assert e.src.to_pylist()[:3] == ["α", "β", "γ"] and e.dst.to_pylist()[:3] == ["β", "γ", "α"]
    assert e.weight[:3].tolist() == [2.0, 1.0, 0.5] and e.src.type == pa.large_string()
    # Byte-range blocks give the same edges, in order.
    blocks = plan_blocks([path], blocksize=300)
    assert len(blocks) > 3
    parts = [graph.read_edges(b) for b in blocks]
    assert pa.concat_arrays([p.src for p in parts]).equals(e.src)
    assert np.array_equal(np.concatenate([p.weight for p in parts]), e.weight)
    assert graph.read_edges(whole, weight=None).weight is None


@pytest.mark.parametrize("text,message", [
    ("a b\nc d e f\n", "edge list '{path}' line 2: 'c d e f' has 4 fields; write one edge per line as 'src dst' "
                       "or 'src dst weight' (comment lines start with # or %)"),
    ("# header\nlonely\n", "line 2: 'lonely' has 1 fields"),
    ("a b 1\nc d x\n", "line 2: weight 'x' of 'c d x' is not a positive finite number; give each weighted edge a "
                       "weight > 0 (or ignore the weights)"),
    ("a b 0\n", "line 1: weight '0' of 'a b 0'"),
    ("a b -2.5\n", "weight '-2.5'"),
    ("a b inf\n", "weight 'inf'"),
    ("a b nan\n", "weight 'nan'"),
    ("a b 1e60\n", "weight '1e60'"),  # overflows float32
])
def test_text_reading_errors(write, text, message):
    path = write("bad.txt", text)
    with pytest.raises(DataError, match=None) as err:
        graph.read_edges(Block(path))
    assert message.format(path=path) in str(err.value)


def test_text_error_in_a_later_block_names_the_block(write):
    path = write("bad.txt", "a b\n" * 100 + "a b c d\n")
    block = plan_blocks([path], blocksize=128)[-1]
    with pytest.raises(DataError, match=rf"edge list '.*bad.txt' \(block at byte {block.offset}\) line \d+: 'a b c d'"):
        graph.read_edges(block)


@pytest.mark.parametrize("table,kwargs,message", [
    ({"from": pa.array([1]), "to": pa.array([2])}, {},
     "has no column 'src' (its columns: from, to); name its source and target node id columns in src and dst"),
    ({"src": pa.array([1]), "to": pa.array([2])}, {}, "has no column 'dst' (its columns: src, to)"),
    ({"src": pa.array([1.5]), "dst": pa.array([2.0])}, {}, "column 'src' is double; node ids must be integers or strings"),
    ({"src": pa.array([1, None]), "dst": pa.array([2, 3])}, {}, "column 'src' has 1 null node ids; drop those rows"),
    ({"src": pa.array([2**64 - 1], pa.uint64()), "dst": pa.array([2], pa.uint64())}, {}, "ids above 2**63 - 1"),
    ({"src": pa.array([1]), "dst": pa.array([2]), "weight": pa.array(["heavy"])}, {},
     "weight column 'weight' is string; write numbers"),
    ({"src": pa.array([1, 2]), "dst": pa.array([2, 3]), "weight": pa.array([1.0, -1.0])}, {},
     "weight -1.0 in row 1 of column 'weight' is not a positive finite number; give each edge a weight > 0"),
    ({"src": pa.array([1]), "dst": pa.array([2]), "weight": pa.array([None], pa.float64())}, {},
     "weight None in row 0"),
])
def test_parquet_reading_errors(tmp_path, table, kwargs, message):
    path = str(tmp_path / "bad.parquet")
    pq.write_table(pa.table(table), path)
    with pytest.raises(DataError) as err:
        graph.read_edges(Block(path, 0, parquet=True), **kwargs)
    assert f"edge file '{path}'" in str(err.value) and message in str(err.value)


# The layout ------------------------------------------------------------------------------------

def test_node_ranges_balance_bytes_and_cover_every_node():
    rng = np.random.default_rng(3)
    degrees = rng.zipf(2.0, 5000).clip(max=400)
    for ranges in (1, 2, 3, 8):
        bounds = node_ranges(degrees, ranges, weighted=False)
        assert bounds[0] == 0 and bounds[-1] == len(degrees) and np.all(np.diff(bounds) >= 0)
        sizes = part_bytes(degrees, bounds, weighted=False)
        assert sum(sizes) == graph.csr_bytes(len(degrees), int(degrees.sum()), False) + 8 * (ranges - 1)
        # Each range within one node's bytes (its largest row) of an equal share.
        assert max(sizes) <= sum(sizes) / ranges + 8 + 4 * degrees.max() + 8
    assert node_ranges(np.zeros(0, np.int64), 3, False).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("layout,adjacency,largest,limit,chosen", [
    ("auto", 400, 100, 1000, "replicated"),  # fits in half the limit: the fast path
    ("auto", 600, 150, 1000, "partitioned"),
    ("auto", 10**12, 10**12, 0, "replicated"),  # no known limit: anything fits
    ("partitioned", 400, 100, 1000, "partitioned"),
    ("replicated", 400, 100, 1000, "replicated")])
def test_the_layout_is_the_fast_path_when_it_fits(layout, adjacency, largest, limit, chosen):
    assert choose_layout(layout, adjacency, largest, limit, 0.5, 4) == chosen


@pytest.mark.parametrize("layout,largest,fix", [
    ("auto", 600, "even partitioned over 4 worker.s. its largest range needs 0.0 MB.*add workers or give them more"),
    ("partitioned", 600, "add workers or give them more memory"),
    ("replicated", 100, "with graph.layout=replicated.*set graph.layout=partitioned")])
def test_a_layout_that_does_not_fit_is_refused_with_the_fix(layout, largest, fix):
    with pytest.raises(ConfigError, match=fix):
        choose_layout(layout, 1100, largest, 1000, 0.5, 4)


def test_graph_layout_is_validated():
    from nsdist.config import GraphConfig, load_config, parse_set

    assert GraphConfig().layout == "auto"
    assert load_config(None, parse_set(["graph.layout=partitioned"]), environ={}).graph.layout == "partitioned"
    with pytest.raises(ConfigError, match="config key 'layout' is in two sections: write train.layout or graph.layout"):
        load_config(None, parse_set(["layout=partitioned"]), environ={})
    assert load_config(None, parse_set(["graph.layout=replicated"]), environ={}).graph.layout == "replicated"
    with pytest.raises(ConfigError, match="graph.layout must be one of auto, replicated, partitioned, got 'sharded'"):
        GraphConfig(layout="sharded")
