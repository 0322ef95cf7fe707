"""Ranking what is shown: Embeddings.rank and its scoring rules, the impression metrics (worked
out by hand, and against MIND's reference code over every tie-break), impression files and their
errors, the priors, `nsdist recommend --candidates` and `nsdist evaluate --impressions` end to end,
calibrated on the planted clickstream's held-out impressions."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_sessions import truth_vectors

import nsdist
from nsdist import evaluate as ev
from nsdist.cli import main
from nsdist.errors import ConfigError, DataError
from nsdist.evaluate.impressions import impression_metrics
from nsdist.evaluate.readers import read_impressions
from nsdist.synth import sessions as ss

# ------------------------------------------------------------------ the metrics


def metrics(scores, clicked) -> list[float]:
    m = impression_metrics(scores, clicked)
    return [round(m[k], 4) for k in ("auc", "mrr", "ndcg@5", "ndcg@10")]


def test_metrics_by_hand():
    # The click second of three: it beats one of two non-clicks; 1/2; 1/log2(3).
    assert metrics([0.9, 0.5, 0.1], [0, 1, 0]) == [0.5, 0.5, 0.6309, 0.6309]
    # Clicks at ranks 1 and 3 of 4: pairs won 2 + 1 of 4; MRR (1 + 1/3) / 2; DCG 1 + 1/log2(4) = 1.5
    # over the best, 1 + 1/log2(3) = 1.6309.
    assert metrics([4, 3, 2, 1], [1, 0, 1, 0]) == [0.75, 0.6667, 0.9197, 0.9197]
    # The click at rank 7 of 12: out of the first 5, 1/log2(8) = 1/3 within the first 10.
    scores = -np.arange(12.0)
    assert metrics(scores, np.arange(12) == 6) == [round(5 / 11, 4), round(1 / 7, 4), 0.0, 0.3333]
    # -inf (an unknown item) ranks last.
    assert metrics([-np.inf, 0.2, 0.1], [1, 0, 0]) == [0.0, round(1 / 3, 4), 0.5, 0.5]


def test_ties_count_in_expectation():
    # The click tied with one non-click: half a pair won, rank 1 or 2 alike: MRR (1 + 1/2) / 2,
    # nDCG (1 + 1/log2(3)) / 2.
    assert metrics([1, 1, 0], [1, 0, 0]) == [0.75, 0.75, 0.8155, 0.8155]
    # Everything tied: chance, whatever the order the items were listed in; each rank holds the
    # click with probability 1/4: nDCG (1 + 1/log2(3) + 1/log2(4) + 1/log2(5)) / 4.
    assert metrics([1, 1, 1, 1], [1, 0, 0, 0]) == metrics([1, 1, 1, 1], [0, 0, 0, 1]) == [
        0.5, round((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, 4), 0.6404, 0.6404]


def mind_reference(scores, clicked) -> list[float]:
    """MIND's evaluate.py (msnews.github.io): roc_auc_score, mrr_score, ndcg_score at 5 and 10,
    on scores without ties."""
    y, s = np.asarray(clicked, float), np.asarray(scores, float)
    pos, neg = s[y == 1], s[y == 0]
    auc = np.mean([p > n for p in pos for n in neg])
    order = np.argsort(s)[::-1]
    mrr = np.sum(np.take(y, order) / (np.arange(len(y)) + 1)) / np.sum(y)

    def dcg(score, k):
        gains = 2 ** np.take(y, np.argsort(score)[::-1][:k]) - 1
        return np.sum(gains / np.log2(np.arange(len(gains)) + 2))

    return [auc, mrr, dcg(s, 5) / dcg(y, 5), dcg(s, 10) / dcg(y, 10)]


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_mind_s_averaged_over_every_tie_break(seed):
    rng = np.random.default_rng(seed)
    n = 6
    scores = rng.integers(0, 3, n).astype(float)  # many ties
    clicked = np.zeros(n, bool)
    clicked[rng.choice(n, rng.integers(1, n), replace=False)] = True
    every = []
    for order in itertools.permutations(range(n)):  # each tie-break: equal scores ordered by it
        broken = scores + np.array(order) * 1e-3 / n
        every.append(mind_reference(broken, clicked))
    want = np.mean(every, axis=0)
    got = impression_metrics(scores, clicked)
    np.testing.assert_allclose([got[k] for k in ("auc", "mrr", "ndcg@5", "ndcg@10")], want, atol=1e-12)


@pytest.mark.parametrize("scores, clicked", [([1, 2], [1, 1]), ([1, 2], [0, 0]), ([1, 2], [1])])
def test_metrics_need_a_click_and_a_non_click(scores, clicked):
    with pytest.raises(ValueError, match="at least one click and one non-click"):
        impression_metrics(scores, clicked)


def test_impression_eval_averages_over_impressions_with_a_click_and_a_non_click():
    imp = pa.table({"history": [["h"], [], ["h"], ["h"]], "shown": [["a", "b"], ["a", "b", "c"], ["a"], ["b", "c"]],
                    "clicked": [[True, False], [False, False, True], [True], [False, False]]})
    def first(history, shown):  # the listed order
        return -np.arange(len(shown), dtype=float)

    r = ev.impression_eval(imp, {"first": first})
    assert (r["impressions"], r["skipped"], r["shown"], r["clicks"]) == (2, 2, 5, 2)
    assert r["first"]["auc"] == (1.0 + 0.0) / 2 and r["first"]["mrr"] == (1 + 1 / 3) / 2


def test_priors_by_hand():
    train = pa.table({"shown": [["a", "b", "c"], ["a", "b"], ["a"]],
                      "clicked": [[True, False, False], [True, False], [False]]})
    priors = ev.item_priors(train["shown"].combine_chunks(), train["clicked"].combine_chunks())
    assert priors == {"a": (3, 2), "b": (2, 0), "c": (1, 0)}
    # (clicks + 1) / (shows + 2); never shown: 1/2.
    assert ev.ctr_scorer(priors)([], ["a", "b", "c", "new"]).tolist() == [3 / 5, 1 / 4, 1 / 3, 1 / 2]
    assert ev.popularity_scorer(priors)([], ["a", "b", "new"]).tolist() == [2, 0, 0]


# ------------------------------------------------------------------ impression files


def test_text_forms_and_mind_s_behaviors(write):
    text = ("a b\tc d e\t0 1 0\n"                                  # history<TAB>shown<TAB>clicked
            "\n"
            "\tc-1 e-0\n"                                          # no history, MIND's impressions
            "I7\tU3\t11/15/2019 8:55:22 AM\ta\td-0 c-1\n")         # MIND's behaviors.tsv
    t = read_impressions(write("imp.tsv", text))
    assert t.to_pylist() == [
        {"history": ["a", "b"], "shown": ["c", "d", "e"], "clicked": [False, True, False]},
        {"history": [], "shown": ["c", "e"], "clicked": [True, False]},
        {"history": ["a"], "shown": ["d", "c"], "clicked": [False, True]}]
    assert read_impressions(write("imp.tsv.gz", text)).equals(t)


@pytest.mark.parametrize("flags", [pa.list_(pa.bool_()), pa.list_(pa.int8()), pa.list_(pa.int64())])
def test_parquet_impressions(tmp_path, flags):
    table = pa.table({"history": pa.array([[1, 2], None], pa.list_(pa.int64())),
                      "shown": pa.array([[3, 4], [5, 6]], pa.list_(pa.int64())),
                      "clicked": pa.array([[1, 0], [0, 1]], pa.list_(pa.int64())).cast(flags)})
    pq.write_table(table, tmp_path / "imp.parquet")
    assert read_impressions(str(tmp_path / "imp.parquet")).to_pylist() == [
        {"history": ["1", "2"], "shown": ["3", "4"], "clicked": [True, False]},
        {"history": [], "shown": ["5", "6"], "clicked": [False, True]}]


def test_a_sessions_file_is_training_impressions_for_the_priors(tmp_path):
    train, _, _ = ss.session_tables(50, 100, seed=2)
    pq.write_table(train, tmp_path / "s.parquet")
    t = read_impressions(str(tmp_path / "s.parquet"), sessions=True)
    row = train.slice(0, 1).to_pylist()[0]
    assert t.slice(0, 1).to_pylist()[0] == {
        "history": [], "shown": [str(i) for i in row["items"] + row["impressions"]],
        "clicked": [True] * len(row["items"]) + [False] * len(row["impressions"])}
    with pytest.raises(DataError, match="no columns 'history', 'shown' and 'clicked'"):
        read_impressions(str(tmp_path / "s.parquet"))  # held-out impressions need their histories


BAD_LINES = [
    ("a\tb c\t1\n", "line 1: 2 items shown but 1 click flags"),
    ("a\tb c\t1 2\n", "line 1: click flag '2' is not 0 or 1"),
    ("ok\tb\t1\na\tb-1 c-x\n", "line 2: impression 'c-x' is not 'item-1' (clicked) or 'item-0' (not clicked)"),
    ("a\tb\tc\td\n", "line 1: 4 tab-separated fields"),
    ("a\t\t\n", "line 1: no items shown"),
]


@pytest.mark.parametrize("text, message", BAD_LINES)
def test_malformed_text_lines_exit_3_naming_the_file_and_line(tmp_path, write, capsys, publish_run, text, message):
    out = str(tmp_path / "out")
    publish_run(out, ["a", "b", "c"], np.eye(3, dtype=np.float32))
    bad = write("bad.tsv", text)
    assert main(["evaluate", out, "--impressions", bad]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"impressions file {bad!r}: {message}" in err[0]


@pytest.mark.parametrize("columns, message", [
    ({"history": [["a"]], "shown": [["b", "c"]], "clicked": [[1]]}, "row 1: 2 items shown but 1 click flags"),
    ({"history": [["a"]], "shown": [["b"]], "clicked": [[2]]}, "column 'clicked' holds flags other than 0 and 1"),
    ({"history": [["a"]], "shown": [["b"]], "clicked": [["1"]]}, "column 'clicked' is list<element: string>: expected list<bool> or a list of 0/1 integers"),
    ({"history": [["a"]], "shown": [["b"]]}, "no columns 'history', 'shown' and 'clicked' (its columns: history, shown)"),
])
def test_malformed_parquet_exits_3_naming_the_file_and_row(tmp_path, capsys, publish_run, columns, message):
    out = str(tmp_path / "out")
    publish_run(out, ["a", "b", "c"], np.eye(3, dtype=np.float32))
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    assert main(["evaluate", out, "--impressions", str(tmp_path / "bad.parquet")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "bad.parquet" in err[0]


# ------------------------------------------------------------------ Embeddings.rank

WORDS = ["a", "b", "c", "7"]
INPUT = np.array([[1, 0], [1, 1], [0, 1], [-1, 0]], np.float32)
OUTPUT = np.array([[0, 1], [2, 0], [1, 0], [0, -1]], np.float32)


@pytest.fixture
def emb():
    return nsdist.Embeddings(WORDS, [4, 3, 2, 1], INPUT, context=OUTPUT)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_scoring_rules_by_hand(emb):
    # History a, c: unit inputs (1, 0) and (0, 1), mean (0.5, 0.5); its cosine with b (1, 1), c (0, 1), 7 (-1, 0).
    np.testing.assert_allclose(emb.rank(["a", "c"], ["b", "c", "7"], scoring="cosine"), [1.0, 0.7071, -0.7071],
                               atol=1e-4)
    # sgns: the highest sigmoid(input_h . output) over h = a (1, 0), c (0, 1): b's output (2, 0)
    # gives 2 and 0, c's (1, 0) 1 and 0, 7's (0, -1) 0 and -1.
    sgns = [sigmoid(2), sigmoid(1), sigmoid(0)]
    np.testing.assert_allclose(emb.rank(["a", "c"], ["b", "c", "7"], scoring="sgns"), sgns)
    np.testing.assert_allclose(emb.rank(["a", "c"], ["b", "c", "7"]),  # blend, the default
                               (np.array([1.0, 0.70710678, -0.70710678]) + sgns) / 2, atol=1e-6)
    # dot: the mean input (0.5, 0.5) . output.
    np.testing.assert_allclose(emb.rank(["a", "c"], ["b", "c", "7"], scoring="dot"), [1.0, 0.5, -0.5])


def test_unknown_items_fall_back_and_never_raise(emb):
    scores = emb.rank(["a", "zz"], ["zz", "b", "yy"], scoring="sgns")
    assert scores[0] == scores[2] == -np.inf and scores[1] == pytest.approx(sigmoid(2))  # zz left out of the history
    assert emb.rank(["a"], ["zz", "b"], unknown=-1.0)[0] == -1.0
    assert emb.rank(["zz"], ["a", "b", "yy"]).tolist() == [0.0, 0.0, -np.inf]  # no known history: all tie
    assert emb.rank([], ["a"]).tolist() == [0.0]
    # An int is an item id (its decimal string), never a row index: 7 is the word "7", 1 unknown.
    assert emb.rank(["a"], [7, 1], scoring="dot").tolist() == [0.0, -np.inf]
    assert emb.rank("a", "b", scoring="dot").tolist() == [2.0]


def test_rank_refuses_an_unknown_rule_and_rules_without_output_vectors():
    plain = nsdist.Embeddings(WORDS, [4, 3, 2, 1], INPUT)
    with pytest.raises(ConfigError, match="scoring 'best' is not one of blend, sgns, cosine, dot"):
        plain.rank(["a"], ["b"], scoring="best")
    with pytest.raises(ConfigError, match="no output vectors"):
        plain.rank(["a"], ["b"], scoring="blend")
    # Without output vectors the default is cosine, for rank and recommend alike.
    assert plain.rank(["a"], ["b"]).tolist() == plain.rank(["a"], ["b"], scoring="cosine").tolist()


def test_recommend_scores_every_item_by_the_rule(emb):
    for scoring in ("blend", "sgns", "cosine", "dot"):
        got = emb.recommend(["a"], topn=3, scoring=scoring)
        scores = emb.rank(["a"], ["b", "c", "7"], scoring=scoring)
        order = np.argsort(-scores, kind="stable")
        assert [w for w, _ in got] == [["b", "c", "7"][i] for i in order], scoring
        np.testing.assert_allclose([s for _, s in got], scores[order], rtol=1e-6)


def test_blocks_do_not_change_the_scores(emb):
    rule = nsdist.embeddings._RULES["blend"]
    whole = emb._rule_scores(rule, np.array([0, 2]))
    np.testing.assert_array_equal(emb._rule_scores(rule, np.array([0, 2]), pairs=2), whole)  # one row a block


def test_output_vectors_are_read_on_first_use_and_checked(tmp_path, publish_run):
    out = str(tmp_path / "out")
    run_id = publish_run(out, WORDS, INPUT)  # publish_run's output vectors: the input's columns reversed
    emb = nsdist.load(out)
    assert callable(emb.context)  # not read yet
    np.testing.assert_allclose(emb.rank(["a"], ["b"], scoring="dot"), [INPUT[0] @ INPUT[1, ::-1]])
    np.testing.assert_array_equal(emb.context, INPUT[:, ::-1])
    # Altered in place (the same size): load still works, ranking by them refuses.
    path = tmp_path / "out" / "runs" / run_id / "context.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    emb = nsdist.load(out)
    assert emb.rank(["a"], ["b"], scoring="cosine").shape == (1,)
    with pytest.raises(DataError, match="context.npy' does not match its sha256 in the manifest"):
        emb.rank(["a"], ["b"], scoring="sgns")


# ------------------------------------------------------------------ the command line


def test_recommend_candidates_on_the_command_line(tmp_path, capsys, write, publish_run, monkeypatch):
    out = str(tmp_path / "out")
    publish_run(out, WORDS, INPUT)
    emb = nsdist.load(out)
    shown = write("shown.txt", "c\nzz 7\nb\n")
    assert main(["recommend", out, "a", "c", "--candidates", shown]) == 0
    scores = emb.rank(["a", "c"], ["c", "zz", "7", "b"])
    want = [(w, scores[i]) for i, w in sorted(enumerate(["c", "zz", "7", "b"]), key=lambda p: (-scores[p[0]], p[0]))]
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [f"{w}\t{s:.4f}" for w, s in want] and want[-1] == ("zz", -np.inf)
    assert "1 of 4 candidates are not in the model: ranked last (score -inf)" in printed.err
    assert main(["recommend", out, "a", "nope", "--candidates", shown, "--scoring", "cosine", "--topn", "1"]) == 0
    printed = capsys.readouterr()
    assert printed.out == "b\t0.7071\n"  # the unknown history item is left out, with a warning
    assert "item 'nope' is not in the model: left out of the history" in printed.err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("7 b"))
    assert main(["recommend", out, "a", "--candidates", "-", "--scoring", "dot"]) == 0
    assert capsys.readouterr().out.splitlines() == ["b\t1.0000", "7\t0.0000"]  # (1, 0) . (1, 1), . (0, -1)
    assert main(["recommend", out, "a", "--candidates", write("empty.txt", "\n")]) == 3
    assert "holds no items" in capsys.readouterr().err
    assert main(["recommend", out, "a", "--candidates", str(tmp_path / "missing.txt")]) == 3


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A small planted clickstream written as `nsdist synth --sessions` writes it."""
    out = tmp_path_factory.mktemp("clicks")
    assert main(["synth", "--sessions", str(out), "--sessions-count", "3000", "--items", "1000", "--seed", "4"]) == 0
    return out


def test_synth_writes_the_held_out_impressions(planted):
    imp = pq.read_table(planted / "impressions.test.parquet")
    test = [s for s in pq.read_table(planted / "sessions.test.parquet").to_pylist()
            if s["items"][-1] not in s["items"][:-1]]  # a repeated last click would be given away
    assert imp.column_names == ["session", "history", "shown", "clicked"] and imp.num_rows == len(test) == 196
    for row, session in zip(imp.to_pylist(), test):
        assert row["session"] == session["session"] and row["history"] == session["items"][:-1]
        clicked = [i for i, c in zip(row["shown"], row["clicked"]) if c]
        assert clicked == [session["items"][-1]] and 2 <= len(row["shown"]) <= 20
        assert set(row["shown"]) - set(clicked) <= set(session["impressions"])
    positions = [row["clicked"].index(True) for row in imp.to_pylist()]
    assert len(set(positions)) > 10  # shuffled: the click is not always first


def test_evaluate_impressions_calibrated_on_the_planted_clicks(planted, tmp_path, capsys, publish_run):
    cat = ss.catalogue(1000, seed=4)
    words, truth = truth_vectors(cat)
    runs = {}
    for name, vectors in (("truth", truth), ("random", np.random.default_rng(0).normal(size=truth.shape))):
        runs[name] = str(tmp_path / name)
        publish_run(runs[name], words, vectors)
    argv = ["--impressions", str(planted / "impressions.test.parquet"), "--train-impressions",
            str(planted / "sessions.parquet"), "--json"]
    assert main(["evaluate", runs["truth"], "--scoring", "cosine", *argv]) == 0
    truth_report = json.loads(capsys.readouterr().out)["impressions"]
    assert main(["evaluate", runs["random"], "--last", "1", *argv]) == 0
    random_report = json.loads(capsys.readouterr().out)["impressions"]
    # Measured (seed 4, 196 impressions of 2-20 items): the truth AUC 0.813, MRR 0.710; random
    # vectors AUC 0.509 (0.481-0.519 by scoring and history); the CTR prior 0.584, click
    # popularity 0.372 (popular items are shown to everyone and seldom clicked).
    assert truth_report["model"]["auc"] > 0.75 and truth_report["model"]["mrr"] > 0.6
    assert abs(random_report["model"]["auc"] - 0.5) < 0.08
    assert truth_report["ctr_prior"] == random_report["ctr_prior"]  # the priors do not depend on the model
    assert truth_report["model"]["auc"] > truth_report["ctr_prior"]["auc"] + 0.15
    assert (truth_report["impressions"], truth_report["skipped"], truth_report["scoring"]) == (196, 0, "cosine")
    assert random_report["last"] == 1 and random_report["scoring"] == "blend"
    assert main(["evaluate", runs["truth"], *argv[:2]]) == 0
    printed = capsys.readouterr().out
    assert "impressions (scoring blend, whole histories): AUC" in printed and "no --train-impressions" in printed


def test_evaluate_impressions_usage_errors(tmp_path, capsys, publish_run, write):
    out = str(tmp_path / "out")
    publish_run(out, ["a", "b"], np.eye(2, dtype=np.float32))
    imp = write("imp.tsv", "a\tb-1 a-0\n")
    for argv, message in ((["--train-impressions", imp], "--train-impressions gives the priors to compare with"),
                          (["--impressions", imp, "--last", "0"], "--last must be >= 1, got 0"),
                          (["--impressions", imp, "--scoring", "best"], "invalid choice: 'best'")):
        assert main(["evaluate", out, *argv]) == 2
        assert message in capsys.readouterr().err


def test_next_item_ranks_by_any_rule_as_by_cosine():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    emb = nsdist.Embeddings([str(i) for i in range(60)], np.ones(60), vectors, context=vectors[::-1].copy())
    queries = [rng.choice(60, rng.integers(1, 4), replace=False) for _ in range(40)]
    targets = rng.integers(0, 60, 40)
    exclude = [q[q != t] for q, t in zip(queries, targets)]
    want = ev.target_ranks(vectors, queries, targets, exclude)
    got = ev.sessions.scored_ranks(lambda rows: emb.row_scores(rows, "cosine"), queries, targets, exclude)
    np.testing.assert_array_equal(got, want)
    # recommend's order is the one the evaluation counts in.
    blend = ev.sessions.scored_ranks(emb.row_scores, queries, targets, exclude)
    for q, t, rank in zip(queries, targets, blend):
        if t not in q:  # (recommend leaves every given item out)
            ranked = [int(w) for w, _ in emb.recommend([str(r) for r in q], topn=60)]
            assert ranked.index(t) + 1 == rank
