"""Graphs: the planted graph generator (nsdist.synth.graph) and the DeepWalk/node2vec evaluations
(nsdist.evaluate.graph): node classification and link prediction, calibrated on the planted truth,
random vectors, a spectral embedding and Zachary's karate club."""

from __future__ import annotations

import doctest
import json
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nsdist.evaluate import graph as eg
from nsdist.synth import graph as sg
from nsdist.cli import main
from nsdist.errors import DataError

EDGE_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64())])
SPEC = sg.GraphSpec(communities=4)  # small graphs: 4 communities of 200 nodes


def _bytes(files: sg.GraphFiles) -> list[bytes]:
    out = []
    for path in (files.train, files.test, files.labels, files.roles):
        if path:
            with open(path, "rb") as f:
                out.append(f.read())
    return out


def _pairs(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in edges.tolist()}


@pytest.fixture(scope="module")
def planted():
    """The default planted graph (10000 nodes, 10 communities), shared by the read-only tests."""
    return sg.graph_tables(10_000, seed=1)


@pytest.fixture(scope="module")
def small():
    """A small planted graph for the evaluations: 800 nodes in 4 communities."""
    return sg.graph_tables(800, seed=3, spec=SPEC)


def spectral(edges: np.ndarray, n: int, dim: int) -> np.ndarray:
    """The top ``dim`` eigenvectors of the symmetric normalised adjacency D^-1/2 A D^-1/2, scaled
    by their eigenvalues and by sqrt(n) (so the rows have norms near 1, as trained vectors do)."""
    a = np.zeros((n, n))
    a[edges[:, 0], edges[:, 1]] = a[edges[:, 1], edges[:, 0]] = 1
    d = 1 / np.sqrt(np.maximum(a.sum(axis=1), 1))
    w, v = np.linalg.eigh(a * d[:, None] * d[None, :])
    return v[:, -dim:] * w[-dim:] * math.sqrt(n)


def _words(g: sg.PlantedGraph) -> list[str]:
    return [str(i) for i in g.ids.tolist()]


# ------------------------------------------------------------------ the generator


@pytest.mark.parametrize("module", [sg, eg])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("roles, fmt", [(False, "parquet"), (True, "text")])
def test_same_arguments_same_bytes(tmp_path, roles, fmt):
    args = dict(nodes=600, seed=7, spec=SPEC, roles=roles, fmt=fmt)
    a = sg.generate_graph(str(tmp_path / "a"), **args)
    b = sg.generate_graph(str(tmp_path / "b"), **args)
    assert _bytes(a) == _bytes(b) and len(_bytes(a)) == (4 if roles else 3)
    other = sg.generate_graph(str(tmp_path / "c"), **{**args, "seed": 8})
    assert all(x != y for x, y in zip(_bytes(other), _bytes(a)))


def test_files_hold_the_planted_graph(tmp_path):
    spec = sg.GraphSpec(communities=4, row_group_size=1000)
    f = sg.generate_graph(str(tmp_path / "p"), nodes=800, seed=3, spec=spec)
    g = sg.graph_tables(800, seed=3, spec=spec)
    train, test = pq.ParquetFile(f.train), pq.ParquetFile(f.test)
    assert train.schema_arrow == test.schema_arrow == EDGE_SCHEMA
    assert train.metadata.num_row_groups == math.ceil(len(g.train) / 1000)
    # int64 end to end: the ids read back are the planted ones, bit for bit.
    back = np.c_[train.read().column("src").to_numpy(), train.read().column("dst").to_numpy()]
    assert np.array_equal(back, g.ids[g.train])
    assert (f.train_edges, f.test_edges) == (len(g.train), len(g.test))
    lines = open(f.labels).read().splitlines()
    assert lines == [f"{i}\t{c}" for i, c in sorted(zip(g.ids.tolist(), g.community.tolist()))]
    text = sg.generate_graph(str(tmp_path / "t"), nodes=800, seed=3, spec=spec, fmt="text")
    assert text.train.endswith("edges.txt") and text.test.endswith("edges.test.txt")
    assert open(text.test).read() == "".join(f"{s} {d}\n" for s, d in g.ids[g.test].tolist())
    assert open(text.labels).read() == open(f.labels).read()


def test_ids_are_large_sparse_int64(planted):
    ids = planted.ids
    assert ids.dtype == np.int64 and len(np.unique(ids)) == len(ids)
    assert ids.min() >= 2**32 and ids.max() < 2**62
    assert np.mean(ids > 2**53) > 0.99  # beyond float64's exact integers...
    assert np.any(ids.astype(np.float64).astype(np.int64) != ids)  # ...so a float round trip breaks them
    assert np.diff(np.sort(ids)).min() > 1  # not contiguous


def test_each_edge_once_and_the_held_out_split(planted):
    n = len(planted.ids)
    train, test = planted.train, planted.test
    both = np.concatenate([train, test])
    assert np.all(both[:, 0] != both[:, 1])  # no self-loop
    assert len(_pairs(both)) == len(both)  # each undirected edge once, in either orientation
    assert not _pairs(train) & _pairs(test)  # held out means not trained on
    assert len(test) == round(0.1 * len(both))
    assert np.bincount(train.ravel(), minlength=n).min() >= 1  # no node loses all its edges
    # Orientation is random: about half the edges point from the lower row.
    assert 0.45 < np.mean(both[:, 0] < both[:, 1]) < 0.55


@pytest.mark.parametrize("communities, ratio", [(10, 20.0), (5, 20.0), (10, 5.0), (10, 1.0)])
def test_within_community_share_is_the_stated_ratio(communities, ratio):
    spec = sg.GraphSpec(communities=communities, ratio=ratio)
    g = sg.graph_tables(5000, seed=2, spec=spec)
    edges = np.concatenate([g.train, g.test])
    within = np.mean(g.community[edges[:, 0]] == g.community[edges[:, 1]])
    # The block-model edges are binomial around ratio / (ratio + C - 1); the few edges of
    # attached isolated nodes follow the same rule. Tolerance: 4 standard deviations.
    p = spec.within_share
    assert abs(within - p) < 4 * math.sqrt(p * (1 - p) / len(edges)), (within, p)
    assert np.array_equal(np.bincount(g.community), np.full(communities, 5000 // communities))


def test_degrees_are_heterogeneous_and_follow_the_propensities(planted):
    n = len(planted.ids)
    degree = np.bincount(np.concatenate([planted.train, planted.test]).ravel(), minlength=n)
    assert 9.9 < degree.mean() < 10.5 and degree.min() >= 1
    # A Pareto tail: hubs of many times the median degree, a standard deviation above the mean
    # (a Poisson graph of mean 10 would have max ~22 and std ~3.2). Measured: median 7, max 137,
    # std 13.1.
    assert degree.max() > 10 * np.median(degree) and degree.std() > degree.mean()
    assert np.corrcoef(degree, planted.propensity)[0, 1] > 0.9
    # P(degree >= k) falls like k^-1.5: the nodes above 4x the mean are a few percent, not none.
    assert 0.01 < np.mean(degree >= 40) < 0.06


def test_roles_mode_plants_hubs_bridges_and_periphery(tmp_path):
    f = sg.generate_graph(str(tmp_path / "r"), nodes=600, seed=2, spec=SPEC, roles=True, fmt="text")
    g = sg.graph_tables(600, seed=2, spec=SPEC, roles=True)
    edges = np.concatenate([g.train, g.test])
    degree = np.bincount(edges.ravel(), minlength=600)
    role = np.array(sg.ROLES)[g.role]
    assert [int(np.sum(role == r)) for r in sg.ROLES] == [32, 8, 560]  # 8 hubs and 2 bridges per community
    cross = g.community[edges[:, 0]] != g.community[edges[:, 1]]
    assert set(role[edges[cross]].ravel()) == {"bridge"} and cross.sum() == 4 * 2  # the ring, bridge to bridge
    assert np.all(degree[role == "bridge"] == 4)  # two hubs, two neighbouring communities
    hubs = np.flatnonzero(role == "hub")
    for c in range(4):  # a hub clique per community
        mine = hubs[g.community[hubs] == c]
        assert _pairs(edges) >= {(a, b) for a in mine for b in mine if a < b}
    periphery = role == "periphery"
    assert degree[periphery].min() >= 1 and degree[periphery].max() <= 2 + 1 + 10  # 1-2 hubs, friends
    assert degree[role == "hub"].min() > degree[periphery].max()
    assert np.bincount(g.train.ravel(), minlength=600).min() >= 1
    lines = dict(line.split("\t") for line in open(f.roles).read().splitlines())
    assert lines == {str(i): r for i, r in zip(g.ids.tolist(), role.tolist())}


def test_invalid_arguments():
    for bad in (dict(communities=1), dict(ratio=0.5), dict(mean_degree=0), dict(degree_exponent=2),
                dict(test_fraction=1.0), dict(bridges=0)):
        with pytest.raises(ValueError):
            sg.GraphSpec(**bad)
    with pytest.raises(ValueError, match="at least 2 nodes per community"):
        sg.graph_tables(15, spec=sg.GraphSpec())
    with pytest.raises(ValueError, match="communities >= 3"):
        sg.graph_tables(600, spec=sg.GraphSpec(communities=2), roles=True)
    with pytest.raises(ValueError, match="too little periphery"):
        sg.graph_tables(20, spec=SPEC, roles=True)
    with pytest.raises(ValueError, match="lower test_fraction"):
        sg.graph_tables(100, spec=sg.GraphSpec(communities=2, mean_degree=1.5, test_fraction=0.9))


# ------------------------------------------------------------------ readers


def test_read_labels_formats(write):
    text = "# node label\n4611686018427387905\t3\n\n7 a\n7\tb\n7 a\nx\tlabel with spaces\n"
    expected = [("4611686018427387905", "3"), ("7", "a"), ("7", "b"), ("x", "label with spaces")]
    assert eg.read_labels(write("l.tsv", text)) == expected
    assert eg.read_labels(write("l.tsv.gz", text)) == expected


@pytest.mark.parametrize("text, line, message", [
    ("1\t2\n3\n", 2, "expected 'node<TAB>label' (2 fields), got 1 fields: '3'"),
    ("1 2 3\n", 1, "got 3 fields"),
    ("1\t2\n\n1\t\n", 3, "expected 'node<TAB>label'"),
])
def test_read_labels_errors_name_file_and_line(write, text, line, message):
    path = write("labels.tsv", text)
    with pytest.raises(DataError, match=rf"^{re.escape(path)}:{line}: .*{re.escape(message)}.*; fix the file or pass another$"):
        eg.read_labels(path)


def test_read_edges_text_and_parquet(tmp_path, write):
    text = "# FromNodeId\tToNodeId\n4611686018427387905 12\n\n12\t7\n"
    expected = {"src": ["4611686018427387905", "12"], "dst": ["12", "7"]}
    assert eg.read_edges(write("e.txt", text)).to_pydict() == expected
    assert eg.read_edges(write("e.txt.gz", text)).to_pydict() == expected
    for kind in (pa.int64(), pa.uint64(), pa.string()):
        values = [[4611686018427387905, 12], [12, 7]]
        cols = [pa.array([str(v) for v in c] if kind == pa.string() else c, kind) for c in values]
        pq.write_table(pa.table({"dst": cols[1], "src": cols[0], "w": [1.0, 2.0]}), tmp_path / "e.parquet")
        assert eg.read_edges(str(tmp_path / "e.parquet")).to_pydict() == expected


def test_read_edges_errors(tmp_path, write):
    # Training's text format: a third field (a weight) is allowed and not read; a fourth is not.
    assert eg.read_edges(write("w.txt", "1 2\n3 4 0.5\n")).to_pydict() == {"src": ["1", "3"], "dst": ["2", "4"]}
    path = write("e.txt", "1 2\n3 4 0.5 7\n")
    # Training's reader reads them, with training's messages: the file, the line, the fix.
    with pytest.raises(DataError, match=rf"^edge list '{path}' line 2: '3 4 0.5 7' has 4 fields; write one edge per "
                                        r"line as 'src dst' or 'src dst weight'"):
        eg.read_edges(path)
    pq.write_table(pa.table({"a": [1], "b": [2]}), tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols.parquet' has no column 'src' \(its columns: a, b\); write the edges "
                                        "as two id columns named src and dst"):
        eg.read_edges(str(tmp_path / "cols.parquet"))
    pq.write_table(pa.table({"src": [1.5], "dst": [2.5]}), tmp_path / "floats.parquet")
    with pytest.raises(DataError, match="floats.parquet' is double; node ids must be integers or strings"):
        eg.read_edges(str(tmp_path / "floats.parquet"))
    with pytest.raises(DataError, match="fake.parquet' is not a readable Parquet file .*; re-upload it or pass another"):
        eg.read_edges(write("fake.parquet", "1 2\n"))


# ------------------------------------------------------------------ node classification


def _chance_band(p: float, test_nodes: float) -> float:
    """4 binomial standard deviations of an accuracy p measured on test_nodes nodes."""
    return 4 * math.sqrt(p * (1 - p) / test_nodes)


def test_planted_truth_classifies_near_perfectly_and_random_vectors_at_chance(small):
    words, c = _words(small), small.community
    rng = np.random.default_rng(0)
    truth = np.eye(4)[c] + 0.25 * rng.standard_normal((800, 4))
    labels = dict(zip(small.ids.tolist(), c.tolist()))  # int ids and labels: matched as strings
    r = eg.node_classification(words, truth, labels, splits=5)
    assert (r["nodes"], r["missing"], r["labels"], r["multi_label"]) == (800, 0, 4, False)
    # No classifier beats reading the noisy one-hot's argmax by much; logistic regression matches it.
    # Measured: argmax 0.999; Micro-F1 0.997-0.998.
    reference = np.mean(truth.argmax(axis=1) == c)
    for x in r["ratios"]:
        assert x["micro_f1"] > reference - 0.02 and x["micro_f1"] > 0.95, x
        assert abs(x["macro_f1"] - x["micro_f1"]) < 0.01  # balanced labels
    noise = eg.node_classification(words, rng.standard_normal((800, 16)), labels, splits=5)
    for x in noise["ratios"]:  # measured 0.26
        assert abs(x["micro_f1"] - 0.25) < _chance_band(0.25, x["test_nodes"] * 5), x


def test_splits_are_stratified_seeded_and_sized(small):
    words, labels = _words(small), dict(zip(_words(small), small.community.tolist()))
    vectors = np.random.default_rng(1).standard_normal((800, 8))
    a = eg.node_classification(words, vectors, labels, train_ratios=[0.1, 0.5], splits=3, seed=4)
    assert a == eg.node_classification(words, vectors, labels, train_ratios=[0.1, 0.5], splits=3, seed=4)
    assert a != eg.node_classification(words, vectors, labels, train_ratios=[0.1, 0.5], splits=3, seed=5)
    assert [(x["train_nodes"], x["test_nodes"]) for x in a["ratios"]] == [(80.0, 720.0), (400.0, 400.0)]
    assert all(x["micro_f1_std"] > 0 for x in a["ratios"])


def test_macro_f1_falls_below_micro_f1_on_imbalanced_labels():
    """800 nodes of a common label that the vectors separate, and 100 + 100 of two rare labels that
    they do not tell apart: Micro-F1 counts nodes (about 0.9), Macro-F1 labels (about (1 + 0.5 +
    0.5) / 3); random vectors predict the common label, Micro-F1 about 0.8, Macro-F1 near 0.3."""
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], [800, 100, 100])
    vectors = np.where(y[:, None] == 0, [3.0, 0.0], [0.0, 3.0]) + 0.3 * rng.standard_normal((1000, 2))
    words = [f"n{i}" for i in range(1000)]
    labels = [(w, ["common", "rare1", "rare2"][k]) for w, k in zip(words, y)]
    r = eg.node_classification(words, vectors, labels, train_ratios=[0.5], splits=5)["ratios"][0]
    assert 0.85 < r["micro_f1"] < 0.95 and 0.55 < r["macro_f1"] < 0.8, r  # measured 0.89 and 0.63
    assert r["micro_f1"] - r["macro_f1"] > 0.15
    noise = eg.node_classification(words, rng.standard_normal((1000, 8)), labels, train_ratios=[0.5], splits=5)
    n = noise["ratios"][0]
    assert abs(n["micro_f1"] - 0.8) < 0.05 and n["macro_f1"] < 0.4, n  # measured 0.80 and 0.30


def test_multi_label_predicts_each_node_s_number_of_labels():
    """Nodes with 1 to 3 of 6 labels.  The indicator itself as vectors: top-k with k the true count
    recovers every label (1.0).  Random vectors: far lower."""
    rng = np.random.default_rng(3)
    n, k = 600, 6
    y = np.zeros((n, k), dtype=bool)
    for i in range(n):
        y[i, rng.choice(k, rng.integers(1, 4), replace=False)] = True
    words = [str(2**60 + i) for i in range(n)]
    labels = {int(w): [f"L{j}" for j in np.flatnonzero(row)] for w, row in zip(words, y)}
    r = eg.node_classification(words, y.astype(float) + 0.05 * rng.standard_normal((n, k)), labels, splits=3)
    assert r["multi_label"] and r["labels"] == 6
    assert all(x["micro_f1"] == x["macro_f1"] == 1.0 for x in r["ratios"]), r
    noise = eg.node_classification(words, rng.standard_normal((n, 8)), labels, splits=3)
    # Chance for top-k: a label's share of the (node, label) slots, about 2/6 = 0.33.
    assert all(x["micro_f1"] < 0.45 for x in noise["ratios"]), noise


def test_nodes_without_vectors_are_counted_and_left_out():
    words = ["a", "b", "c", "d"]
    vectors = np.array([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]])
    labels = [("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"), ("e", "x"), ("f", "y"), ("f", "x")]
    r = eg.node_classification(words, vectors, labels, train_ratios=[0.5], splits=2)
    assert (r["nodes"], r["missing"], r["multi_label"]) == (4, 2, False)
    with pytest.raises(ValueError, match="need at least 2 labelled nodes with vectors and 2 labels"):
        eg.node_classification(words, vectors, {"a": "x", "b": "x", "zz": "y"})
    with pytest.raises(ValueError, match=r"train ratios must be in \(0, 1\)"):
        eg.node_classification(words, vectors, labels, train_ratios=[1.0])


def test_karate_club_factions_from_a_2_dim_spectral_embedding():
    """Zachary's karate club: the top two eigenvectors of the normalised adjacency separate Mr. Hi's
    faction from the Officer's but for one node (node 8, a known borderline case), so a classifier
    trained on half the members gets 0.97; random vectors about 0.5."""
    import networkx as nx

    g = nx.karate_club_graph()
    edges = np.array(list(g.edges()))
    vectors = spectral(edges, 34, 2)
    labels = {n: g.nodes[n]["club"] for n in g}
    words = [str(n) for n in range(34)]
    r = eg.node_classification(words, vectors, labels, splits=10)
    by_ratio = {x["train_ratio"]: x for x in r["ratios"]}
    # Measured: Micro-F1 0.93 / 0.97 / 1.0 at 0.1 / 0.5 / 0.9; random 0.38-0.5.
    assert by_ratio[0.5]["micro_f1"] > 0.9 and by_ratio[0.9]["micro_f1"] > 0.9, r
    noise = eg.node_classification(words, np.random.default_rng(0).standard_normal((34, 2)), labels, splits=10)
    assert all(x["micro_f1"] < 0.7 for x in noise["ratios"]), noise


def test_classifiers_fit_on_one_blas_thread_under_a_progress_line(monkeypatch, capsys):
    """The fits' matrix-vector products run on one BLAS thread (threads only wait for each other at
    this size), and a terminal sees the splits counted."""
    from threadpoolctl import threadpool_info

    from nsdist import progress

    seen = []
    predict = eg._predict

    def watching(*args):
        seen.append({i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return predict(*args)

    monkeypatch.setattr(eg, "_predict", watching)
    monkeypatch.setattr(progress, "_ENABLED", [True])
    vectors = np.random.default_rng(0).standard_normal((40, 4))
    labels = {str(i): i % 2 for i in range(40)}
    eg.node_classification([str(i) for i in range(40)], vectors, labels, train_ratios=[0.3, 0.6], splits=2)
    assert len(seen) == 4 and all(seen[0]) and all(n == 1 for threads in seen for n in threads.values()), seen
    err = capsys.readouterr().err
    assert "node classification [" in err and "4/4 splits" in err and err.endswith("\r\x1b[K")


# ------------------------------------------------------------------ link prediction


def _auc_sd(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUC of uninformative scores (the Mann-Whitney U under the null)."""
    return math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


def test_link_prediction_spectral_beats_random(small):
    words = _words(small)
    held, train = small.ids[small.test], small.ids[small.train]
    r = eg.link_prediction(words, spectral(small.train, 800, 8), held, train)
    assert r["positives"] == r["negatives"] == len(small.test) and r["oov"] == r["dropped"] == 0
    assert r["nodes"] == 800 and r["known_edges"] == len(small.train) + len(small.test) and r["train_edges"]
    # Measured: cosine 0.83, Hadamard + LR 0.90.
    assert r["auc_cosine"] > 0.8 and r["auc_hadamard"] > 0.8, r
    noise = eg.link_prediction(words, np.random.default_rng(0).standard_normal((800, 8)), held, train)
    band = 4 * _auc_sd(noise["positives"], noise["negatives"])
    assert abs(noise["auc_cosine"] - 0.5) < band and abs(noise["auc_hadamard"] - 0.5) < band, (noise, band)


def test_link_prediction_with_community_vectors_matches_the_planted_share(small):
    """Community one-hot vectors score 1 within a community, 0 across: the AUC is then
    P(pos within) * P(neg across) + (ties) / 2, from the held-out edges' within share and the
    uniform pairs' 1/4 (4 balanced communities)."""
    words, c = _words(small), small.community
    r = eg.link_prediction(words, np.eye(4)[c], small.ids[small.test], small.ids[small.train], seed=1)
    p = np.mean(c[small.test[:, 0]] == c[small.test[:, 1]])
    q = (200 * 199 / 2 * 4) / (800 * 799 / 2)  # a uniform pair of distinct nodes is within: 0.249
    expected = p * (1 - q) + (p * q + (1 - p) * (1 - q)) / 2
    # q is estimated from 400 sampled non-edges: sd sqrt(q(1-q)/400) = 0.022, times |dAUC/dq| = 0.5.
    assert abs(r["auc_cosine"] - expected) < 4 * 0.5 * 0.022, (r["auc_cosine"], expected)


def test_link_prediction_negatives_avoid_every_known_edge():
    """K5 without the edges 0-1 and 2-3: with the other edges known, the only two non-edges are
    those; each scores exactly what the vectors give it, so the AUC is known by hand."""
    words = ["0", "1", "2", "3", "4"]
    vectors = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1], [0.6, 0.8]])
    every = [(a, b) for a in range(5) for b in range(a + 1, 5) if (a, b) not in {(0, 1), (2, 3)}]
    held = [(0, 4), (2, 4)]  # cosines 0.6 and 0.8
    train = [e for e in every if e not in held]
    r = eg.link_prediction(words, vectors, held, train, negatives=2)
    # Non-edges 0-1 and 2-3 both have cosine -1: below both positives.
    assert r["auc_cosine"] == 1.0 and r["known_edges"] == 8 and r["folds"] == 2
    with pytest.raises(ValueError, match="cannot sample 3 non-edges: 5 nodes have only 2 unjoined pairs"):
        eg.link_prediction(words, vectors, held, train, negatives=3)
    # Without the training edges the candidates are the held-out edges' nodes 0, 2, 4, and the one
    # pair of them not held out, 0-2, is the negative, though it is a training edge (cosine 0).
    r = eg.link_prediction(words, vectors, held, negatives=1)
    assert (r["nodes"], r["known_edges"], r["train_edges"], r["auc_cosine"]) == (3, 2, False, 1.0)


def test_link_prediction_counts_what_it_leaves_out():
    words = ["1", "2", "3", "4"]
    vectors = np.array([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]])
    r = eg.link_prediction(words, vectors, pa.table({"src": [1, 3, 4, 1, 2], "dst": [2, 4, 3, 9, 2]}),
                           negatives=2)
    assert (r["positives"], r["oov"], r["dropped"]) == (2, 1, 2)  # 3-4 twice, 2-2 a self-loop
    with pytest.raises(ValueError, match="no held-out edge to score: 1 of them"):
        eg.link_prediction(words, vectors, [(1, 99)])


# ------------------------------------------------------------------ the command line


def test_cli_synth_graph(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["synth", "--graph", str(out), "--nodes", "800", "--communities", "4", "--seed", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    ref = sg.generate_graph(str(tmp_path / "ref"), nodes=800, seed=3, spec=SPEC)
    assert f"wrote 800 nodes and {ref.train_edges} training edges to {out / 'edges.parquet'}" in printed
    assert _bytes(sg.GraphFiles(str(out / "edges.parquet"), str(out / "edges.test.parquet"),
                                str(out / "labels.tsv"), None, 0, 0, 0)) == _bytes(ref)
    assert main(["synth", "--graph", str(tmp_path / "b"), "--nodes", "800", "--communities", "4", "--ratio", "5",
                 "--mean-degree", "6", "--seed", "3"]) == 0
    spec = sg.GraphSpec(communities=4, ratio=5, mean_degree=6)
    assert _bytes(sg.GraphFiles(str(tmp_path / "b" / "edges.parquet"), str(tmp_path / "b" / "edges.test.parquet"),
                                str(tmp_path / "b" / "labels.tsv"), None, 0, 0, 0)) == _bytes(
        sg.generate_graph(str(tmp_path / "ref5"), nodes=800, seed=3, spec=spec))
    assert main(["synth", "--graph", str(tmp_path / "r"), "--nodes", "600", "--communities", "4", "--roles",
                 "--format", "text", "--test-fraction", "0.2"]) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["edges.test.txt", "edges.txt", "labels.tsv",
                                                                  "roles.tsv"]


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "100"], "--nodes shape a graph: add --graph OUT_DIR"),
    (["c.txt", "--roles", "--format", "text"], "--roles, --format shape a graph"),
    (["--graph", "g", "--items", "100"], "drop OUT_FILE, --tokens, --sessions"),
    (["--graph", "g", "--communities", "1"], "--communities must be >= 2, got 1"),
    (["--graph", "g", "--roles", "--communities", "2"], "--communities must be >= 3 with --roles"),
    (["--graph", "g", "--test-fraction", "1"], "--test-fraction must be in [0, 1)"),
    (["--graph", "g", "--roles", "--ratio", "5"], "--ratio and --mean-degree shape the block model"),
    (["--graph", "g", "--nodes", "10"], "need at least 2 nodes per community (20), got 10; change --nodes"),
    ([], "or --graph OUT_DIR (a graph)"),
])
def test_cli_synth_graph_usage_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture
def graph_run(tmp_path, publish_run, small):
    """A published run whose vectors are the spectral embedding of the small planted graph, and the
    graph's files: (out, files)."""
    files = sg.generate_graph(str(tmp_path / "g"), nodes=800, seed=3, spec=SPEC)
    out = str(tmp_path / "out")
    publish_run(out, _words(small), spectral(small.train, 800, 8))
    return out, files


def test_cli_evaluate_node_labels_and_link_edges(graph_run, small, capsys):
    out, f = graph_run
    vectors = spectral(small.train, 800, 8).astype(np.float32)  # as published
    argv = ["evaluate", out, "--node-labels", f.labels, "--link-edges", f.test, "--train-edges", f.train]
    assert main([*argv, "--train-ratios", "0.2,0.8", "--splits", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = dict(zip(small.ids.tolist(), small.community.tolist()))
    assert report["node_classification"] == eg.node_classification(_words(small), vectors, labels,
                                                                   train_ratios=[0.2, 0.8], splits=3)
    assert report["link_prediction"] == eg.link_prediction(_words(small), vectors, small.ids[small.test],
                                                           small.ids[small.train])
    assert report["vocab_size"] == 800
    assert main([*argv, "--splits", "2"]) == 0
    printed = capsys.readouterr().out
    nc = eg.node_classification(_words(small), vectors, labels, splits=2)
    assert "node classification (single-label, one-vs-rest logistic regression on raw vectors; 800 nodes" in printed
    for x in nc["ratios"]:
        assert (f"  {x['train_ratio']:<11g}  {x['micro_f1']:.4f} ± {x['micro_f1_std']:.4f}  "
                f"{x['macro_f1']:.4f} ± {x['macro_f1_std']:.4f}") in printed
    assert f"link prediction: AUC cosine {report['link_prediction']['auc_cosine']:.4f}" in printed


def test_cli_evaluate_graph_errors(graph_run, capsys, write):
    out, f = graph_run
    bad = write("bad.tsv", "1\t2\n3\n")
    assert main(["evaluate", out, "--node-labels", bad]) == 3
    assert f"{bad}:2: expected 'node<TAB>label'" in capsys.readouterr().err
    assert main(["evaluate", out, "--node-labels", write("other.tsv", "a\tx\nb\ty\n")]) == 3
    assert "other.tsv: need at least 2 labelled nodes with vectors" in capsys.readouterr().err
    assert main(["evaluate", out, "--link-edges", write("e.txt", "1 2\n")]) == 3
    assert "e.txt: no held-out edge to score" in capsys.readouterr().err
    for argv, message in ((["--node-labels", f.labels, "--train-ratios", "0.5,1"], "--train-ratios takes"),
                          (["--node-labels", f.labels, "--splits", "0"], "--splits must be >= 1, got 0"),
                          (["--node-labels", f.labels, "--train-edges", f.train], "add --link-edges FILE"),
                          ([], "--node-labels FILE and/or --link-edges FILE")):
        assert main(["evaluate", out, *argv]) == 2
        assert message in capsys.readouterr().err


def test_cli_synth_and_evaluate_graph_on_s3(tmp_path, capsys, publish_run, small, s3_env):
    assert main(["synth", "--graph", s3_env.url("g"), "--nodes", "800", "--communities", "4", "--seed", "3",
                 "--format", "text"]) == 0
    local = sg.generate_graph(str(tmp_path / "local"), nodes=800, seed=3, spec=SPEC, fmt="text")
    boto = s3_env.boto()
    for name, data in zip(("edges.txt", "edges.test.txt", "labels.tsv"), _bytes(local)):
        assert boto.get_object(Bucket=s3_env.bucket, Key=f"g/{name}")["Body"].read() == data
    out = str(tmp_path / "out")
    vectors = spectral(small.train, 800, 8).astype(np.float32)
    publish_run(out, _words(small), vectors)
    capsys.readouterr()
    assert main(["evaluate", out, "--node-labels", s3_env.url("g", "labels.tsv"), "--link-edges",
                 s3_env.url("g", "edges.test.txt"), "--splits", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["link_prediction"] == eg.link_prediction(_words(small), vectors, small.ids[small.test])
    assert report["node_classification"]["nodes"] == 800
