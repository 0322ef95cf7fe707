"""Tests for nsdist.evaluate: hand-computed cases and equality with gensim 4.4."""

import doctest
import math

import gensim
import numpy as np
import pytest
from gensim.models import KeyedVectors

from nsdist.evaluate import analogies, clusters, common, pairs, readers, sessions
from nsdist.evaluate import (
    analogy_accuracy,
    cluster_precision,
    pair_spearman,
    read_analogies,
    read_pairs,
)


@pytest.mark.parametrize("module", [analogies, clusters, pairs, readers, sessions], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------
# Hand-built analogies.  Axes: (royal, male, female, young, fruit).
# ---------------------------------------------------------------------------

HAND_WORDS = ["man", "woman", "king", "queen", "boy", "girl", "apple", "King"]
HAND_VECTORS = np.array(
    [
        [0, 1, 0, 0, 0],  # man
        [0, 0, 1, 0, 0],  # woman
        [1, 1, 0, 0, 0],  # king
        [1, 0, 1, 0, 0],  # queen
        [0, 1, 0, 1, 0],  # boy
        [0, 0, 1, 1, 0],  # girl
        [0, 0, 0, 0, 1],  # apple
        # A rare case variant of "king" that lies *closer* to king - man + woman
        # than queen does: cosine 1.236/|q| against queen's 1.207/|q|.
        [1, -0.2, 1, 0, 0],  # King
    ],
    dtype=np.float32,
)
HAND_QUESTIONS = """\
: gender
man woman king queen
man woman boy girl
MAN WOMAN KING QUEEN
man woman prince princess

: youth
man boy woman girl
king queen man apple
"""
# Expected outcomes, by hand (q = unit(b) + unit(c) - unit(a)):
#   man:woman::king:queen  -> case-insensitive: "King" folds to c and is excluded,
#                             queen wins (correct); case-sensitive: King wins (wrong)
#   man:woman::boy:girl    -> girl (correct)
#   MAN:WOMAN::KING:QUEEN  -> as the first when case-insensitive, else OOV
#   man:woman::prince:...  -> OOV
#   man:boy::woman:girl    -> girl (correct)
#   king:queen::man:apple  -> woman is predicted (wrong)


def hand_questions():
    return read_analogies(HAND_QUESTIONS.splitlines())


def test_hand_analogies_case_insensitive():
    result = analogy_accuracy(HAND_WORDS, HAND_VECTORS, hand_questions())
    assert result == {
        "accuracy": 0.8,
        "correct": 4,
        "total": 5,
        "oov": 1,
        "oov_ratio": 1 / 6,
        "sections": {
            "gender": {"accuracy": 1.0, "correct": 3, "total": 3, "oov": 1},
            "youth": {"accuracy": 0.5, "correct": 1, "total": 2, "oov": 0},
        },
    }


def test_hand_analogies_case_sensitive():
    result = analogy_accuracy(HAND_WORDS, HAND_VECTORS, hand_questions(), case_insensitive=False)
    assert (result["correct"], result["total"], result["oov"]) == (2, 4, 2)
    assert result["accuracy"] == 0.5
    assert result["oov_ratio"] == 2 / 6
    assert result["sections"]["gender"] == {"accuracy": 0.5, "correct": 1, "total": 2, "oov": 2}


def test_hand_analogies_restrict_vocab_limits_candidates():
    # Dropping "King" (row 7) from the candidates makes queen the answer.
    result = analogy_accuracy(
        HAND_WORDS, HAND_VECTORS, hand_questions(), case_insensitive=False, restrict_vocab=7
    )
    assert (result["correct"], result["total"], result["oov"]) == (3, 4, 2)
    assert result["sections"]["gender"]["accuracy"] == 1.0


def test_hand_analogies_restrict_vocab_makes_questions_oov():
    # Only man, woman, king, queen are known: every question using another word
    # is skipped, and the candidates are those four minus a, b, c.
    result = analogy_accuracy(HAND_WORDS, HAND_VECTORS, hand_questions(), restrict_vocab=4)
    assert (result["correct"], result["total"], result["oov"]) == (2, 2, 4)
    assert result["sections"]["youth"] == {"accuracy": 0.0, "correct": 0, "total": 0, "oov": 2}

    # With queen excluded too, nothing is evaluable: not an error, just counts.
    result = analogy_accuracy(HAND_WORDS, HAND_VECTORS, hand_questions(), restrict_vocab=3)
    assert (result["accuracy"], result["correct"], result["total"], result["oov"]) == (0.0, 0, 0, 6)
    assert result["oov_ratio"] == 1.0


def test_hand_analogies_match_gensim(tmp_path):
    path = tmp_path / "hand.txt"
    path.write_text(HAND_QUESTIONS)
    kv = make_kv(HAND_WORDS, HAND_VECTORS)
    questions = hand_questions()
    for kwargs in [{}, {"case_insensitive": False}, {"case_insensitive": False, "restrict_vocab": 7},
                   {"restrict_vocab": 4}]:
        assert_same_as_gensim(kv, path, HAND_WORDS, HAND_VECTORS, questions, **kwargs)


def test_case_variant_of_answer_counts_as_correct():
    # "D" comes first, so it supplies the vector for the key "D"; the later
    # variant "d" is the nearest word, and gensim counts it as a hit because
    # it upper-cases the prediction before comparing.
    words = ["a", "b", "c", "D", "d", "far"]
    vectors = np.array([[1, 0], [1, 1], [0, 1], [-1, 0.2], [0.1, 1.9], [-1, -1]], dtype=np.float32)
    questions = [("s", "a", "b", "c", "d")]
    assert analogy_accuracy(words, vectors, questions)["correct"] == 1
    # Case-sensitively the same prediction "d" is right for "d" but not for "D".
    assert analogy_accuracy(words, vectors, questions, case_insensitive=False)["correct"] == 1
    assert analogy_accuracy(words, vectors, [("s", "a", "b", "c", "D")],
                            case_insensitive=False)["correct"] == 0


def test_first_case_variant_wins():
    assert common._vocab_index(["Apple", "apple", "b", "APPLE"], 4, True) == {"APPLE": 0, "B": 2}
    assert common._vocab_index(["Apple", "apple", "b"], 2, False) == {"Apple": 0, "apple": 1}


def test_empty_and_degenerate_inputs():
    empty = analogy_accuracy(HAND_WORDS, HAND_VECTORS, [])
    assert empty == {"accuracy": 0.0, "correct": 0, "total": 0, "oov": 0, "oov_ratio": 0.0,
                     "sections": {}}
    # A vocabulary of three words leaves no candidate once a, b, c are
    # excluded: counted as a wrong answer, as gensim does.
    tiny = analogy_accuracy(["a", "b", "c"], np.eye(3, dtype=np.float32), [("s", "a", "b", "c", "a")])
    assert (tiny["correct"], tiny["total"]) == (0, 1)


def test_zero_vectors_do_not_produce_nan():
    words = ["zero", "a", "b", "c", "d"]
    vectors = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.1, 1.1]], dtype=np.float32)
    # a:b::c:d  q = (-0.29, 1.71) -> d (correct)
    # zero:a::b:c  q = unit(a) + unit(b) - 0 = (1.71, 0.71): d scores 0.86, c 0.71 -> wrong
    result = analogy_accuracy(words, vectors, [("s", "a", "b", "c", "d"), ("s", "zero", "a", "b", "c")])
    assert (result["correct"], result["total"], result["accuracy"]) == (1, 2, 0.5)
    # The zero vector has cosine 0 with everything: model scores [0, 0.71, 0].
    pairs = pair_spearman(words, vectors, [("zero", "a", 1.0), ("a", "b", 2.0), ("a", "c", 0.0)])
    assert pairs["pairs"] == 3
    assert pairs["spearman"] == pytest.approx(math.sqrt(3) / 2, abs=1e-12)
    # zero -> a (all cosines 0, the tie goes to the earlier word): hit;
    # a -> b (0.71 beats zero's 0): miss; b -> a: miss.
    assert cluster_precision(words, vectors, {"zero": "x", "a": "x", "b": "y"}, topn=1) == pytest.approx(1 / 3)


def test_input_validation():
    with pytest.raises(ValueError, match="does not match"):
        analogy_accuracy(["a"], np.zeros((2, 3), np.float32), [])
    with pytest.raises(ValueError, match="2-D"):
        pair_spearman(["a"], np.zeros(3, np.float32), [])
    with pytest.raises(ValueError, match="restrict_vocab"):
        analogy_accuracy(HAND_WORDS, HAND_VECTORS, [], restrict_vocab=-1)
    with pytest.raises(ValueError, match="batch_size"):
        analogy_accuracy(HAND_WORDS, HAND_VECTORS, [], batch_size=0)
    with pytest.raises(ValueError, match=r"question #0 must be a \(section, a, b, c, d\)"):
        analogy_accuracy(HAND_WORDS, HAND_VECTORS, [("man", "woman", "king", "queen")])
    with pytest.raises(ValueError, match="topn"):
        cluster_precision(HAND_WORDS, HAND_VECTORS, {}, topn=0)


# ---------------------------------------------------------------------------
# Batching and chunking must not change any answer.
# ---------------------------------------------------------------------------


def naive_3cosadd(words, vectors, questions, restrict_vocab):
    """Slow, obviously-correct reference: one question at a time, float64."""
    unit = vectors[:restrict_vocab].astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    index = {w: i for i, w in reversed(list(enumerate(words[:restrict_vocab])))}
    correct = total = 0
    for _, a, b, c, d in questions:
        if not all(w in index for w in (a, b, c, d)):
            continue
        total += 1
        scores = unit @ (unit[index[b]] + unit[index[c]] - unit[index[a]])
        scores[[index[a], index[b], index[c]]] = -np.inf
        correct += words[int(np.argmax(scores))] == d
    return correct, total


def planted_analogies(n_words=1000, dim=12, n_pairs=30, noise=0.9, seed=0):
    """Word pairs (x, x + offset + noise): intermediate 3CosAdd accuracy."""
    rng = np.random.default_rng(seed)
    words = [f"w{i:04d}" for i in range(n_words)]
    vectors = rng.normal(size=(n_words, dim)).astype(np.float32)
    offset = rng.normal(size=dim) * 1.5
    # Spread the pairs over the whole vocabulary so that answers fall in
    # different candidate chunks.
    rows = rng.choice(n_words, size=2 * n_pairs, replace=False).reshape(n_pairs, 2)
    for x, y in rows:
        vectors[y] = vectors[x] + offset + rng.normal(size=dim) * noise
    questions = [
        ("s", words[x1], words[y1], words[x2], words[y2])
        for x1, y1 in rows for x2, y2 in rows if x1 != x2
    ]
    return words, vectors, questions


@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
def test_batching_and_chunking_do_not_change_answers(monkeypatch, batch_size):
    words, vectors, questions = planted_analogies()
    # Force many candidate chunks (256 words each, the minimum).
    monkeypatch.setattr(analogies, "_BLOCK_ELEMENTS", 1)
    for restrict in (1000, 700):
        expected = naive_3cosadd(words, vectors, questions, restrict)
        result = analogy_accuracy(words, vectors, questions, restrict_vocab=restrict,
                                  batch_size=batch_size, case_insensitive=False)
        assert (result["correct"], result["total"]) == expected
        assert 0 < result["accuracy"] < 1


def test_exact_tie_goes_to_more_frequent_word_across_chunks(monkeypatch):
    # Rows 5 and 600 have identical vectors and are the best answer; they sit
    # in different 256-word chunks, and the earlier (more frequent) one must
    # win, as a single argmax over all candidates would decide.
    monkeypatch.setattr(analogies, "_BLOCK_ELEMENTS", 1)
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(700)]
    vectors = rng.normal(size=(700, 8)).astype(np.float32) * 0.05
    vectors[:4] = np.eye(8, dtype=np.float32)[:4]
    vectors[5] = vectors[600] = vectors[1] + vectors[2] - vectors[0]
    assert analogy_accuracy(words, vectors, [("s", "w0", "w1", "w2", "w5")])["correct"] == 1
    assert analogy_accuracy(words, vectors, [("s", "w0", "w1", "w2", "w600")])["correct"] == 0


# ---------------------------------------------------------------------------
# Equality with gensim 4.4
# ---------------------------------------------------------------------------


def make_kv(words, vectors):
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(list(words), vectors)
    return kv


def assert_same_as_gensim(kv, path, words, vectors, questions, **kwargs):
    score, gensim_sections = kv.evaluate_word_analogies(str(path), **kwargs)
    ours = analogy_accuracy(words, vectors, questions, **kwargs)
    *per_section, total = gensim_sections
    assert total["section"] == "Total accuracy"
    assert ours["accuracy"] == score
    assert ours["correct"] == len(total["correct"])
    assert ours["total"] == len(total["correct"]) + len(total["incorrect"])
    assert ours["oov"] == len(questions) - ours["total"]
    assert {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"]))
            for s in per_section} == {
        name: (s["correct"], s["total"]) for name, s in ours["sections"].items()
    }
    return ours


def planted_gensim_case(seed=0, n_words=200, dim=16):
    """~200 words with two planted analogy offsets, case variants and OOV words."""
    rng = np.random.default_rng(seed)
    words = [f"w{i:03d}" for i in range(n_words)]
    vectors = rng.normal(size=(n_words, dim)).astype(np.float32)
    lines = []
    row = 0
    for section in ("plural", "gender"):
        offset = rng.normal(size=dim) * 1.5
        pairs = []
        for _ in range(12):
            x, y = row, row + 1
            row += 2
            vectors[y] = vectors[x] + offset + rng.normal(size=dim) * 0.9
            pairs.append((words[x], words[y]))
        lines.append(f": {section}")
        lines += [f"{p[0]} {p[1]} {q[0]} {q[1]}" for p in pairs for q in pairs if p != q]
    # Rare case variants of two question words, close to them: case-insensitively
    # they must be excluded (as b or c) or accepted (as d); case-sensitively they
    # are separate, competing words.
    words[150], words[151] = "W003", "W005"
    vectors[150] = vectors[3] + rng.normal(size=dim) * 0.15
    vectors[151] = vectors[5] + rng.normal(size=dim) * 0.15
    lines += [
        ": misc",
        "w000 w001 nope w003",  # OOV
        "W000 W001 w002 w190",  # upper case in the question; w190 may be outside restrict_vocab
        "w000 W001 w004 w005",
    ]
    return words, vectors, "\n".join(lines) + "\n"


@pytest.mark.parametrize("restrict_vocab", [300_000, 180, 20])
@pytest.mark.parametrize("case_insensitive", [True, False])
def test_analogies_equal_gensim(tmp_path, restrict_vocab, case_insensitive):
    words, vectors, text = planted_gensim_case()
    path = tmp_path / "questions-words.txt"
    path.write_text(text)
    kv = make_kv(words, vectors)
    questions = read_analogies(text.splitlines())
    ours = assert_same_as_gensim(kv, path, words, vectors, questions,
                                 restrict_vocab=restrict_vocab, case_insensitive=case_insensitive)
    assert 0 < ours["accuracy"] < 1
    assert ours["total"] > 80


def test_planted_case_has_margin():
    # Guard for the gensim comparison above: no question's top two candidates
    # are so close that float32 rounding differences could swap them.
    words, vectors, text = planted_gensim_case()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index = {w: i for i, w in enumerate(words)}
    gaps = []
    for _, a, b, c, _ in read_analogies(text.splitlines()):
        if all(w in index for w in (a, b, c)):
            scores = unit @ (unit[index[b]] + unit[index[c]] - unit[index[a]])
            scores[[index[a], index[b], index[c]]] = -np.inf
            top2 = np.sort(scores)[-2:]
            gaps.append(top2[1] - top2[0])
    assert min(gaps) > 1e-4


def planted_pairs(words, vectors, n=120, seed=1):
    rng = np.random.default_rng(seed)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    lines = ["# word1\tword2\tscore"]
    for _ in range(n):
        i, j = rng.integers(0, len(words), size=2)
        # Rounded to whole numbers so that the human scores contain ties.
        score = round(5 + 4 * float(unit[i] @ unit[j]) + rng.normal() * 1.5)
        lines.append(f"{words[i]}\t{words[j]}\t{score:.1f}")
    lines += ["w001\tnope\t3.0", "w003\tW001\t3.0"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("restrict_vocab", [300_000, 100])
@pytest.mark.parametrize("case_insensitive", [True, False])
def test_pairs_equal_gensim(tmp_path, restrict_vocab, case_insensitive):
    words, vectors, _ = planted_gensim_case()
    text = planted_pairs(words, vectors)
    path = tmp_path / "pairs.tsv"
    path.write_text(text)
    pairs = read_pairs(text.splitlines())
    assert len(set(score for _, _, score in pairs)) < len(pairs)  # ties present

    (pearson, _), (spearman, _), oov_percent = make_kv(words, vectors).evaluate_word_pairs(
        str(path), restrict_vocab=restrict_vocab, case_insensitive=case_insensitive
    )
    ours = pair_spearman(words, vectors, pairs, restrict_vocab=restrict_vocab,
                         case_insensitive=case_insensitive)
    assert ours["spearman"] == pytest.approx(spearman, abs=1e-12)
    # gensim's cosines are float32, ours float64.
    assert ours["pearson"] == pytest.approx(pearson, abs=1e-6)
    assert ours["oov_ratio"] * 100 == pytest.approx(oov_percent, abs=1e-12)
    assert ours["pairs"] + ours["oov"] == len(pairs)
    assert 0.2 < ours["spearman"] < 0.9


# ---------------------------------------------------------------------------
# Word pairs, by hand
# ---------------------------------------------------------------------------


def unit_circle(*degrees):
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(
        pairs._rankdata(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4.0, 1.0, 4.0, 2.0, 4.0]
    )


def test_spearman_with_tied_human_scores_by_hand():
    # cos(w0, wi) = cos(angle): 0 deg -> 1.0 (w1), 60 -> 0.5 (w2), 45 -> 0.71 (w3), 85 -> 0.09 (w4)
    words = ["w0", "w1", "w2", "w3", "w4"]
    vectors = unit_circle(0, 0, 60, 45, 85) * np.array([[1], [2], [3], [0.5], [7]], np.float32)
    pairs = [("w0", "w1", 4.0), ("w0", "w2", 2.0), ("w0", "w3", 2.0), ("w0", "w4", 1.0)]
    # Human ranks [4, 2.5, 2.5, 1], model ranks [4, 2, 3, 1]: both centred on 2.5,
    # sum dx*dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5  ->  rho = 4.5 / sqrt(22.5) = 3 / sqrt(10).
    result = pair_spearman(words, vectors, pairs)
    assert result["spearman"] == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert (result["pairs"], result["oov"], result["oov_ratio"]) == (4, 0, 0.0)
    cos = np.cos(np.radians([0, 60, 45, 85]))
    assert result["pearson"] == pytest.approx(np.corrcoef([4, 2, 2, 1], cos)[0, 1], abs=1e-6)


def test_spearman_with_tied_model_scores_by_hand():
    # The same pair twice has exactly the same cosine: model ranks [1, 2.5, 2.5].
    words = ["a", "b", "c"]
    vectors = unit_circle(0, 30, 80)
    pairs = [("a", "c", 1.0), ("a", "b", 2.0), ("b", "a", 3.0)]
    # Human ranks [1, 2, 3]: dx = [-1, 0, 1], dy = [-1, .5, .5] -> 1.5 / sqrt(2 * 1.5).
    assert pair_spearman(words, vectors, pairs)["spearman"] == pytest.approx(
        1.5 / math.sqrt(3), abs=1e-12
    )


def test_spearman_undefined_is_nan_not_an_error():
    words = ["a", "b", "c"]
    vectors = unit_circle(0, 30, 80)
    one = pair_spearman(words, vectors, [("a", "b", 1.0), ("a", "zzz", 2.0)])
    assert math.isnan(one["spearman"]) and math.isnan(one["pearson"])
    assert (one["pairs"], one["oov"], one["oov_ratio"]) == (1, 1, 0.5)
    constant = pair_spearman(words, vectors, [("a", "b", 0.1), ("a", "c", 0.1), ("b", "c", 0.1)])
    assert math.isnan(constant["spearman"])
    none = pair_spearman(words, vectors, [])
    assert none["pairs"] == 0 and none["oov_ratio"] == 0.0 and math.isnan(none["spearman"])


def test_pairs_restrict_vocab_and_case():
    words = ["a", "B", "c"]
    vectors = unit_circle(0, 30, 80)
    pairs = [("A", "b", 3.0), ("a", "c", 1.0), ("b", "c", 2.0)]
    assert pair_spearman(words, vectors, pairs)["pairs"] == 3
    assert pair_spearman(words, vectors, pairs, case_insensitive=False)["pairs"] == 1  # only a-c
    assert pair_spearman(words, vectors, pairs, restrict_vocab=2)["pairs"] == 1


# ---------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------


def test_read_analogies_sections_blank_lines_bytes_and_bom():
    lines = [b"\xef\xbb\xbf: capital-common-countries\n", b"Athens Greece Baghdad Iraq\n", b"\n",
             b"  \n", b":   gram1-adjective-to-adverb  \n", b"amazing amazingly apparent apparently\n"]
    assert read_analogies(lines) == [
        ("capital-common-countries", "Athens", "Greece", "Baghdad", "Iraq"),
        ("gram1-adjective-to-adverb", "amazing", "amazingly", "apparent", "apparently"),
    ]
    assert read_analogies([]) == []


@pytest.mark.parametrize(
    "text, message",
    [
        (": s\na b c d\n\na b c\n", r"line 4: expected an analogy 'a b c d' .* got 3 words: 'a b c'"),
        (": s\na b c d e\n", r"line 2: expected an analogy .* got 5 words"),
        ("\na b c d\n: s\n", r"line 2: analogy 'a b c d' appears before any ': section' header"),
        (": s\n:\n", r"line 2: section header has no name"),
    ],
)
def test_read_analogies_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        read_analogies(text.splitlines())


def test_read_pairs_formats():
    lines = ["# wordsim353", "", "tiger\tcat\t7.35\n", "book paper 7.46", "new york\tcity\t6",
             "  #indented comment", "love\tsex\t6.77e0"]
    assert read_pairs(lines) == [
        ("tiger", "cat", 7.35), ("book", "paper", 7.46), ("new york", "city", 6.0), ("love", "sex", 6.77)
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("# c\ntiger\tcat\n", r"line 2: expected 'word1<TAB>word2<TAB>score' \(3 fields\), got 2 fields"),
        ("a b 1\n\na b c 1\n", r"line 3: expected .* got 4 fields"),
        ("a\tb\t1\ttoo many\n", r"line 1: expected .* got 4 fields"),
        ("a\tb\tten\n", r"line 1: score 'ten' is not a finite number"),
        ("a b 1\na b nan\n", r"line 2: score 'nan' is not a finite number"),
        ("\t\t3\n", r"line 1: expected"),
    ],
)
def test_read_pairs_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        read_pairs(text.splitlines())


# ---------------------------------------------------------------------------
# Cluster precision
# ---------------------------------------------------------------------------


def test_cluster_precision_by_hand():
    # Cluster L near 0 deg, cluster R near 90 deg, but "c" (label L) sits at 77 deg.
    words = ["a", "b", "c", "x", "y", "z", "other"]
    vectors = unit_circle(0, 10, 77, 90, 95, 102, 5) * np.array([[1], [2], [3], [4], [5], [6], [7]], np.float32)
    labels = {"a": "L", "b": "L", "c": "L", "x": "R", "y": "R", "z": "R", "missing": "R"}
    # topn=1: a->b, b->a: hits; c->x (13 deg): miss; x->y, y->x, z->y: hits = 5/6
    # ("other" is unlabelled, so it is never a neighbour, although it is close to a).
    assert cluster_precision(words, vectors, labels, topn=1) == pytest.approx(5 / 6)
    # topn=3: a {b, c, x}: 2/3; b {a, c, x}: 2/3; c {x, y, z}: 0/3;
    #         x {y, z, c}: 2/3; y {x, z, c}: 2/3; z {y, x, c}: 2/3  -> 10/18
    assert cluster_precision(words, vectors, labels, topn=3) == pytest.approx(10 / 18)
    # topn beyond the population: all 5 others, 2 of which share the label.
    assert cluster_precision(words, vectors, labels, topn=50) == pytest.approx(2 / 5)


def test_cluster_precision_ties_and_degenerate():
    # b and c are both exactly as close to a; the earlier word (b) is chosen.
    words = ["a", "b", "c"]
    vectors = np.array([[1, 0], [0, 1], [0, -1]], dtype=np.float32)
    labels = {"a": "L", "b": "L", "c": "R"}
    # a -> b (hit); b -> a (cos 0) over c (cos -1): hit; c -> a (cos 0): miss.
    assert cluster_precision(words, vectors, labels, topn=1) == pytest.approx(2 / 3)
    assert cluster_precision(words, vectors, {"a": "L"}) == 0.0
    assert cluster_precision(words, vectors, {"zzz": "L"}) == 0.0


def test_cluster_precision_planted_blocks(monkeypatch):
    # Many words in 4 well-separated clusters: perfect precision, also when the
    # similarity matrix is processed in several row blocks.
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(4, 10)) * 10
    labels_arr = rng.integers(0, 4, size=300)
    vectors = (centres[labels_arr] + rng.normal(size=(300, 10))).astype(np.float32)
    words = [f"w{i}" for i in range(300)]
    labels = {w: str(lab) for w, lab in zip(words, labels_arr)}
    monkeypatch.setattr(clusters, "_BLOCK_ELEMENTS", 300 * 7)
    assert cluster_precision(words, vectors, labels, topn=5) == 1.0
    shuffled = dict(zip(words, rng.permutation(list(labels.values()))))
    assert cluster_precision(words, vectors, shuffled, topn=5) < 0.5


def test_gensim_version():
    # The equality tests pin gensim 4.4's semantics.
    assert gensim.__version__.startswith("4.")
