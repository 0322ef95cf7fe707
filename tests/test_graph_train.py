"""Node embeddings end to end: edge lists -> walks on the workers -> SGNS -> published vectors.

Quality thresholds are calibrated on planted graphs (nsdist.synth.graph); the figures measured
when they were set are in the comments.
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nsdist
from nsdist.config import load_config
from nsdist.errors import ConfigError
from nsdist.evaluate.graph import node_classification, read_labels
from nsdist.pipeline import train
from nsdist.synth.graph import generate_graph
from killjobs import kill, wait_for_checkpoint

# jobs/graph.yaml's settings, smaller: dim 32, walks of 40 nodes.
GRAPH = {"directed": False, "walks_per_node": 10, "walk_length": 40}
TRAIN = {"dim": 32, "window": 5, "min_count": 1, "sample": 0, "epochs": 1, "seed": 1}


def nsdist_cmd(*argv):
    return [sys.executable, "-m", "nsdist", *argv]


def _train(client, out, edges, graph=None, train_keys=None, **top):
    cfg = load_config(None, {"graph": {**GRAPH, **(graph or {})}, "train": {**TRAIN, **(train_keys or {})}, **top},
                      environ={}, edges=tuple(edges), out=str(out))
    return train(cfg, client)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A degree-corrected block model: 2000 nodes, 10 communities, 69% of edges within them."""
    return generate_graph(str(tmp_path_factory.mktemp("planted")), nodes=2000, seed=1)


def test_planted_communities_are_recovered(client, planted, tmp_path):
    result = _train(client, tmp_path / "out", [planted.train])
    m = result.manifest
    assert m["word_type"] == "int64" and m["graph"]["nodes"] == 2000 and m["graph"]["isolated_nodes"] == 0
    assert m["corpus"]["sentences"] == 2000 * GRAPH["walks_per_node"]
    emb = result.load()
    scores = node_classification(emb.index_to_key, emb.vectors, read_labels(planted.labels), train_ratios=(0.5,),
                                 splits=3)
    micro = scores["ratios"][0]["micro_f1"]
    # Measured 0.922 / 0.912 / 0.924 (graph and training seeds 1 / 2 / 3); chance is 0.1, the planted
    # truth as vectors 0.94.
    assert micro > 0.85, scores


def _neighbourhood_vs_community(emb, edges_path, labels_path) -> float:
    """Mean cosine of a node to its graph neighbours minus the mean cosine to random members of its
    community that are not neighbours: how much more the vectors capture the immediate
    neighbourhood than the community around it."""
    rng = np.random.default_rng(0)
    index = {w: i for i, w in enumerate(emb.index_to_key)}
    table = pq.read_table(edges_path)
    src = np.array([index[str(v)] for v in table["src"].to_pylist()])
    dst = np.array([index[str(v)] for v in table["dst"].to_pylist()])
    labels = {index[str(n)]: c for n, c in read_labels(labels_path)}
    unit = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    near = float(np.mean(np.sum(unit[src] * unit[dst], axis=1)))
    community = np.array([labels[i] for i in range(len(unit))])
    linked = set(zip(src.tolist(), dst.tolist())) | set(zip(dst.tolist(), src.tolist()))
    pairs = []
    for a in rng.integers(len(unit), size=20000):
        same = np.flatnonzero(community == community[a])
        b = int(rng.choice(same))
        if b != a and (int(a), b) not in linked:
            pairs.append((a, b))
    a, b = np.array(pairs).T
    far = float(np.mean(np.sum(unit[a] * unit[b], axis=1)))
    return near - far


def test_q_moves_the_vectors_between_neighbourhood_and_community(client, planted, tmp_path):
    """node2vec's claim: q > 1 keeps walks near their start (breadth first: the immediate
    neighbourhood), q < 1 sends them outward (depth first: the community). Measured on planted
    graphs of seeds 1 / 2 / 3 (graph and training), neighbour cosine minus same-community
    non-neighbour cosine: q = 0.25: 0.109 / 0.112 / 0.097, q = 1: 0.130 / 0.132 / 0.128,
    q = 4: 0.155 / 0.154 / 0.146."""
    gaps = {q: _neighbourhood_vs_community(_train(client, tmp_path / f"q{q}", [planted.train], {"q": q}).load(),
                                           planted.train, planted.labels) for q in (0.25, 1.0, 4.0)}
    assert gaps[0.25] < gaps[1.0] < gaps[4.0] and gaps[4.0] > gaps[0.25] + 0.025, gaps


EDGES = """# a directed, weighted edge list with string ids (SNAP-style header)
% and a Matrix-Market-style comment
alice bob 2.0
bob carol
carol alice 0.5
carol dave
dave erin 3
lonely lonely
erin alice
"""


def test_text_edges_string_ids_directed_weighted_with_saved_walks(client, tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text(EDGES)
    walks_url = str(tmp_path / "walks")
    result = _train(client, tmp_path / "out", [str(path)], {"directed": True, "walks_per_node": 3, "walk_length": 6},
                    {"dim": 8}, save_walks=walks_url)
    m = result.manifest
    # "lonely" has only a self-loop, which is dropped: a node without edges keeps a vector.
    assert m["graph"] == {"nodes": 6, "edges": 6, "weighted": True, "isolated_nodes": 1, "dead_ends": 0,
                          "isolated_examples": ["lonely"], "walks": 18, "layout": "replicated"}
    assert m["word_type"] == "string" and m["config"]["graph"]["directed"] is True
    info = subprocess.run(nsdist_cmd("info", str(tmp_path / "out")), capture_output=True, text=True, timeout=120)
    assert ("graph: 6 nodes, 6 directed edges, weighted, 18 walks; 1 node(s) without edges (e.g. lonely), "
            "0 dead end(s)") in info.stdout, info.stdout + info.stderr
    emb = result.load()
    assert sorted(emb.index_to_key) == ["alice", "bob", "carol", "dave", "erin", "lonely"]
    walks = [line.split() for f in sorted(glob.glob(os.path.join(walks_url, "part-*.txt")))
             for line in open(f).read().splitlines()]
    assert len(walks) == 18 and sorted(w[0] for w in walks) == sorted(
        ["alice", "bob", "carol", "dave", "erin", "lonely"] * 3)
    edges = {("alice", "bob"), ("bob", "carol"), ("carol", "alice"), ("carol", "dave"), ("dave", "erin"),
             ("erin", "alice")}
    for walk in walks:
        assert walk == ["lonely"] if walk[0] == "lonely" else len(walk) == 6, walk
        assert all(step in edges for step in zip(walk, walk[1:])), walk
    # The walks are counted as the corpus: each node's count is its occurrences in them.
    counts = {w: 0 for w in emb.index_to_key}
    for walk in walks:
        for node in walk:
            counts[node] += 1
    assert {w: emb.get_vecattr(w, "count") for w in emb.index_to_key} == counts


def _saved_walks(url):
    return [line for f in sorted(glob.glob(os.path.join(url, "part-*.txt"))) for line in open(f).read().splitlines()]


def _held_keys(dask_scheduler=None) -> list[str]:
    return sorted(str(k) for k, ts in dask_scheduler.tasks.items() if ts.state == "memory")


def test_ranges_are_filled_block_by_block_and_let_the_edges_go(client):
    """cluster.walkers.build_parts on the workers: each range's CSR (its rows filled one block
    at a time, in block order) equals the in-process cut of the same blocks, array for array;
    the list of the blocks' futures is emptied, and once the ranges are built no block, split,
    piece or partly filled range is held anywhere."""
    import time

    from nsdist.cluster.walkers import build_parts
    from nsdist.graph.csr import out_degrees, uniform_weights, weight_range
    from nsdist.graph.partition import make_part, node_ranges, part_rows, split_edges

    rng, n = np.random.default_rng(3), 400
    blocks = [(rng.integers(0, n, 3000).astype(np.int32), rng.integers(0, n, 3000).astype(np.int32),
               rng.uniform(0.5, 2.0, 3000).astype(np.float32)) for _ in range(5)]
    degrees = sum(out_degrees(s, n) for s, _, _ in blocks)
    bounds = node_ranges(degrees, 3, weighted=True)
    pieces = [split_edges(b, bounds) for b in blocks]
    rows = [part_rows([p[i] for p in pieces], bounds[i], bounds[i + 1]) for i in range(3)]
    weighted = not uniform_weights([weight_range(r[2]) for r in rows])
    want = [make_part(r, bounds[i], bounds[i + 1], weighted) for i, r in enumerate(rows)]

    ids, held_degrees = client.scatter(blocks), client.scatter(degrees)
    edge_keys = {str(f.key) for f in ids}
    parts = build_parts(client, ids, bounds, held_degrees, sorted(client.scheduler_info()["workers"]), "fill")
    assert ids == []
    got = client.gather(parts)
    fields = ("offsets", "neighbors", "weights", "prob", "alias", "totals")
    for a, b in zip(got, want):
        assert (a.lo, a.hi) == (b.lo, b.hi)
        assert all(np.array_equal(getattr(a.csr, f), getattr(b.csr, f)) for f in fields)
    def building() -> list[str]:  # the blocks' edges and every step of building the ranges
        return [k for k in client.run_on_scheduler(_held_keys) if k in edge_keys or k.startswith(
            ("split-", "piece-", "room-fill-", "add-", "rows-fill-", "degrees-fill-", "wr-rows-fill-"))]

    deadline = time.monotonic() + 10  # the client lets go of keys in batches
    while building() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert building() == []
    assert {str(f.key) for f in parts} <= set(client.run_on_scheduler(_held_keys))


@pytest.mark.parametrize("case", ["undirected-node2vec", "directed-weighted-dead-ends"])
def test_partitioned_layout_gives_the_same_walks_and_vectors(client, planted, tmp_path, case):
    """graph.layout=partitioned: each worker holds a node range's rows and the walkers move
    between the two workers in supersteps; the walks, in the same order, and the vectors are
    the replicated layout's, bit for bit."""
    if case == "undirected-node2vec":
        edges, keys = [planted.train], {"p": 0.5, "q": 2.0, "walks_per_node": 2, "walk_length": 20}
    else:  # string ids, weights, a node without edges (a self-loop only), dead ends ("z*"), repeats
        rng = np.random.default_rng(4)
        lines = [f"n{a} {'z' if b % 7 == 0 else 'n'}{b} {w:.2f}" for a, b, w in
                 zip(rng.integers(0, 60, 300), rng.integers(0, 60, 300), rng.uniform(0.2, 3, 300))]
        path = tmp_path / "edges.txt"
        path.write_text("\n".join(lines + ["lonely lonely 1", "n1 n2 1.5", "n1 n2 1.5"]) + "\n")
        edges, keys = [str(path)], {"directed": True, "q": 0.5, "walks_per_node": 3, "walk_length": 12}
    # Small blocks: a range's rows are filled block by block (csr.Rows), in block order.
    blocks = {"blocksize": 1024} if case != "undirected-node2vec" else {}
    runs = {layout: _train(client, tmp_path / layout, edges, {**keys, "layout": layout}, {"dim": 16},
                           save_walks=str(tmp_path / f"walks-{layout}"), **blocks)
            for layout in ("replicated", "partitioned")}
    one, other = runs["replicated"].manifest["graph"], runs["partitioned"].manifest["graph"]
    assert other.pop("layout") == "partitioned" and one.pop("layout") == "replicated"
    assert other.pop("supersteps") > 2 and other.pop("walk_bytes") > 0  # the walkers did cross
    assert one == other
    if case != "undirected-node2vec":
        assert one["isolated_nodes"] == 1 and one["dead_ends"] > 0 and one["weighted"]
    walks = _saved_walks(str(tmp_path / "walks-replicated"))
    assert len(walks) == one["walks"] and walks == _saved_walks(str(tmp_path / "walks-partitioned"))
    a, b = runs["replicated"].load(), runs["partitioned"].load()
    assert a.index_to_key == b.index_to_key and np.array_equal(a.vectors, b.vectors)


def test_int64_ids_round_trip_in_every_output(client, tmp_path):
    ids = [2**62 + 3, 4611686018427387905, -7, 2**53 + 1, 12]
    ring = [(ids[i], ids[(i + 1) % len(ids)]) for i in range(len(ids))]
    path = tmp_path / "edges.parquet"
    pq.write_table(pa.table({"src": pa.array([a for a, _ in ring], pa.int64()),
                             "dst": pa.array([b for _, b in ring], pa.int64())}), path)
    result = _train(client, tmp_path / "out", [str(path)], {"walks_per_node": 4, "walk_length": 10}, {"dim": 8},
                    topk=2)
    table = pq.read_table(os.path.join(result.run_url, "vectors.parquet"))
    assert table.schema.field("word").type == pa.int64() and sorted(table["word"].to_pylist()) == sorted(ids)
    neighbors = nsdist.read_neighbors(result.run_url).to_pydict()
    assert set(neighbors["item"]) == set(ids) and set(neighbors["neighbor"]) <= set(ids)
    emb = nsdist.load(str(tmp_path / "out"))
    assert sorted(int(w) for w in emb.index_to_key) == sorted(ids)
    text = open(os.path.join(result.run_url, "vectors.txt")).read().split("\n", 1)[1]
    assert sorted(int(line.split(" ", 1)[0]) for line in text.splitlines()) == sorted(ids)


def test_same_seed_same_vectors_and_a_grown_graph_warm_starts(client, planted, tmp_path):
    first = _train(client, tmp_path / "a", [planted.train])
    again = _train(client, tmp_path / "b", [planted.train])
    assert np.array_equal(first.load().vectors, again.load().vectors)
    # The graph grows: 50 new nodes, each linked to two old ones.
    old = pq.read_table(planted.train)
    rng = np.random.default_rng(5)
    nodes = np.unique(np.concatenate([old["src"].to_numpy(), old["dst"].to_numpy()]))
    new = np.arange(50, dtype=np.int64) + 10**15
    grown = tmp_path / "grown.parquet"
    src = np.concatenate([old["src"].to_numpy(), new, new])
    dst = np.concatenate([old["dst"].to_numpy(), rng.choice(nodes, 50), rng.choice(nodes, 50)])
    pq.write_table(pa.table({"src": src, "dst": dst}), grown)
    cfg = load_config(None, {"graph": GRAPH, "train": TRAIN}, environ={}, edges=(str(grown),),
                      out=str(tmp_path / "a"))
    warm = train(cfg, client, init_from=str(tmp_path / "a"))
    assert warm.manifest["parent"]["known_words"] == 2000 and warm.manifest["parent"]["new_words"] == 50
    assert len(warm.load()) == 2050


def test_a_graph_job_killed_mid_training_resumes_to_identical_vectors(client, planted, tmp_path):
    out = str(tmp_path / "out")
    sets = [a for kv in ("directed=false", "walk_length=40", "dim=32", "window=5", "min_count=1", "sample=0",
                         "epochs=3", "shards=2", "seed=1") for a in ("--set", kv)]
    job = subprocess.Popen(nsdist_cmd("train", "--edges", planted.train, "--out", out, "--workers", "2", *sets),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run = wait_for_checkpoint(job, out)
    kill(job)
    resumed = subprocess.run(nsdist_cmd("train", "--resume", run, "--workers", "2"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0 and "resuming run" in resumed.stderr, resumed.stderr[-2000:]
    reference = _train(client, tmp_path / "reference", [planted.train], train_keys={"epochs": 3, "shards": 2})
    got = nsdist.load(out)
    assert got.index_to_key == reference.load().index_to_key
    assert np.array_equal(got.vectors, reference.load().vectors)


def test_bad_edge_lists_fail_with_one_line_before_a_run_is_claimed(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a b\nc\n")
    noncol = tmp_path / "e.parquet"
    pq.write_table(pa.table({"from": [1], "to": [2]}), noncol)
    for edges, code, message in ((bad, 3, "bad.txt"), (noncol, 3, "has no column 'src' (its columns: from, to)")):
        out = tmp_path / f"out-{code}-{edges.name}"
        r = subprocess.run(nsdist_cmd("train", "--edges", str(edges), "--out", str(out), "--workers", "1"),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()[-1]) > 20
        assert not glob.glob(str(out / "runs" / "*" / "manifest.json")) and not (out / "LATEST").exists()
    both = subprocess.run(nsdist_cmd("train", "--edges", str(noncol), "--corpus", str(bad), "--out", "x"),
                          capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "not both" in both.stderr


@contextlib.contextmanager
def small_workers(n, limit):
    """A LocalCluster whose workers have a memory limit far below their processes' own size;
    Dask's memory management is off, so that the workers keep running and nsdist's checks are
    what the limit meets."""
    import dask
    from distributed import Client, LocalCluster

    off = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": False}
    with dask.config.set(off), LocalCluster(n_workers=n, threads_per_worker=1, memory_limit=limit,
                                            dashboard_address=":0") as lc, Client(lc) as small:
        small.wait_for_workers(n, timeout=120)
        yield small


def test_an_adjacency_too_big_for_the_workers_is_refused(planted, tmp_path):
    """The plan compares the adjacency with the workers' memory limit before building it: what
    does not fit replicated is partitioned, and what does not fit even so is refused."""
    with small_workers(1, "64kB") as small:
        with pytest.raises(ConfigError, match=r"needs 0\.\d MB, and even partitioned over 1 worker\(s\) its largest "
                                              r"range needs 0\.\d MB, more than 50% of a worker's memory limit "
                                              r"\(0\.1 MB\); add workers or give them more memory"):
            _train(small, tmp_path / "out", [planted.train])
        with pytest.raises(ConfigError, match=r"needs 0\.\d MB on every worker with graph.layout=replicated, more than "
                                              r"50% .* set graph.layout=partitioned \(or auto\), or give the workers"):
            _train(small, tmp_path / "out", [planted.train], {"layout": "replicated"})
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")  # no run was claimed


def test_auto_partitions_an_adjacency_too_big_to_replicate(client, tmp_path):
    """With 260 kB workers, the adjacency (176 kB) exceeds half a worker's limit, its two node
    ranges (88 kB each) do not: graph.layout=auto walks partitioned, and the vectors are those
    of the replicated layout on workers without a limit."""
    rng = np.random.default_rng(2)
    src, dst = rng.integers(0, 2000, 30000), rng.integers(0, 2000, 30000)
    pairs = np.unique(np.sort(np.stack([src, dst])[:, src != dst], axis=0), axis=1)[:, :20000]
    path = tmp_path / "dense.parquet"
    pq.write_table(pa.table({"src": pairs[0], "dst": pairs[1]}), path)
    keys, train_keys = {"walks_per_node": 1, "walk_length": 5}, {"dim": 4}
    with small_workers(2, "260kB") as small:
        auto = _train(small, tmp_path / "auto", [str(path)], keys, train_keys)
    assert auto.manifest["graph"]["layout"] == "partitioned" and auto.manifest["graph"]["edges"] == 40000
    replicated = _train(client, tmp_path / "replicated", [str(path)], {**keys, "layout": "replicated"}, train_keys)
    assert np.array_equal(auto.load().vectors, replicated.load().vectors)


def test_dry_run_states_the_graph_and_the_adjacency_per_worker(planted, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(nsdist_cmd("train", "--edges", planted.train, "--out", str(out), "--workers", "2",
                                  "--set", "directed=false", "--set", "walk_length=40", "--dry-run"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    edges = 2 * pq.read_metadata(planted.train).num_rows
    assert (f"graph: 2,000 nodes, {edges:,} directed edges; layout replicated: its adjacency takes 0.1 MB on every "
            "worker") in r.stdout
    assert "walks: 20,000 of up to 40 nodes = up to 800,000 tokens" in r.stdout
    assert r.stdout.count("for its model, the adjacency and shards") == 2 and "fits" in r.stdout
    assert not out.exists() or not os.listdir(out)
    r = subprocess.run(nsdist_cmd("train", "--edges", planted.train, "--out", str(out), "--workers", "2",
                                  "--set", "directed=false", "--set", "graph.layout=partitioned", "--dry-run"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # Two ranges of about equal bytes: (8 (n + 1) + 4 e) / 2 each, a range's offsets adding 8 bytes.
    half = (8 * 2001 + 4 * edges) / 2 / 1e6
    assert (f"layout partitioned: its adjacency (0.1 MB) is cut into node ranges of up to {half:.1f} MB, one per "
            "worker") in r.stdout
    assert r.stdout.count("for its model, its adjacency range and shards") == 2


def test_karate_club_factions(client, tmp_path):
    """Zachary's karate club (networkx): the two factions the club split into. Measured over
    training seeds 1-5: Micro-F1 0.939-0.972 (train ratio 0.5, 10 splits); each member's nearest
    member is of its own faction for 32 or 33 of 34."""
    import networkx as nx

    g = nx.karate_club_graph()
    path = tmp_path / "karate.txt"
    path.write_text("".join(f"{a} {b}\n" for a, b in g.edges()))
    emb = _train(client, tmp_path / "out", [str(path)], {"walks_per_node": 20, "walk_length": 20},
                 {"dim": 16, "epochs": 3}).load()
    faction = {str(n): g.nodes[n]["club"] for n in g.nodes}
    scores = node_classification(emb.index_to_key, emb.vectors, list(faction.items()), train_ratios=(0.5,), splits=10)
    assert scores["ratios"][0]["micro_f1"] > 0.85, scores
    unit = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -2)
    nearest = [faction[emb.index_to_key[int(j)]] for j in sim.argmax(axis=1)]
    agree = np.mean([faction[w] == f for w, f in zip(emb.index_to_key, nearest)])
    assert agree >= 0.9, agree


def test_walks_draw_fresh_negatives_per_context_and_directed_dead_ends_warn(client, planted, tmp_path, caplog):
    """A graph's walks train with a fresh draw of negatives for every context node (sharing one
    draw over a window of 10 lost 0.03 link-prediction AUC, benchmarks/README.md): the batch
    kernel's default for walks is share_negatives=1, where text shares one draw over a window of 10.
    Read as directed, the planted edge list (each undirected edge once) leaves nodes without
    out-edges: the job says to set directed=false."""
    vectors = {share: _train(client, tmp_path / f"s{share}", [planted.train],
                             train_keys={"window": 10, "share_negatives": share}).load().vectors for share in (None, 1, 0)}
    assert np.array_equal(vectors[None], vectors[1]) and not np.array_equal(vectors[None], vectors[0])
    with caplog.at_level("WARNING", logger="nsdist"):
        result = _train(client, tmp_path / "directed", [planted.train], {"directed": True})
    dead = result.manifest["graph"]["dead_ends"]
    assert dead > 0 and any(f"{dead} of 2000 nodes have no out-edge" in r.getMessage() and
                            "set directed=false" in r.getMessage() for r in caplog.records), caplog.text
