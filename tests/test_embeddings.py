"""nsdist.Embeddings answers gensim 4's KeyedVectors calls as gensim does, on the same vectors."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from gensim.models import KeyedVectors

import nsdist
from nsdist import formats, runs
from nsdist.cli import main
from nsdist.embeddings import Embeddings
from nsdist.errors import ConfigError, DataError, NsdistError, UnknownWord

V, DIM = 200, 16
WORDS = [f"w{i:03d}" for i in range(V)]
WORDS[7], WORDS[8] = "東京", "naïve café"  # a published run's words may be any string
_rng = np.random.default_rng(13)
VECTORS = _rng.standard_normal((V, DIM)).astype(np.float32)
COUNTS = np.arange(V, 0, -1) * 10
Q = _rng.standard_normal(DIM).astype(np.float32) * 3  # query vectors are used as given, unscaled
R = _rng.standard_normal(DIM).astype(np.float32)


@pytest.fixture(scope="module")
def emb():
    return Embeddings(WORDS, COUNTS, VECTORS, {})


@pytest.fixture(scope="module")
def kv():
    """The reference: gensim's own KeyedVectors, built through its public API."""
    kv = KeyedVectors(DIM)
    kv.add_vectors(WORDS, VECTORS)
    return kv


def same(ours, theirs, atol=1e-5):
    """The same answer: the same words in the same order and scores within ``atol``, or arrays
    of the same shape and values."""
    if isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.shape == theirs.shape, (ours, theirs)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=atol)
        return
    assert isinstance(ours, list) and [w for w, _ in ours] == [w for w, _ in theirs], (ours, theirs)
    assert all(isinstance(s, float) for _, s in ours)
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-6, atol=atol)


# ---------------------------------------------------------------- most_similar and friends

MOST_SIMILAR = {
    "one word": (("w010",), {"topn": 5}),
    "a word as positive": ((), {"positive": ["w010"]}),
    "unicode words": ((), {"positive": ["東京", "naïve café"], "topn": 4}),
    "positive and negative": ((), {"positive": ["w010", "w020"], "negative": ["w030"], "topn": 7}),
    "bare strings": (("w010", "w030"), {"topn": 3}),
    "negative only": ((), {"negative": ["w040", "w041"]}),
    "weighted pairs": ((), {"positive": [("w010", 2.0), ("w020", 0.5)], "negative": [("w030", -1.5)]}),
    "a pair's weight as given in negative": ((), {"negative": [("w030", 1.0)], "positive": ["w031"]}),
    "a vector": ((), {"positive": [Q], "topn": 6}),
    "a bare vector": ((Q,), {}),
    "a 2-d array of vectors": ((np.stack([Q, R]),), {"topn": 4}),
    "vectors and words": ((), {"positive": ["w010", Q], "negative": [R]}),
    "a weighted vector": ((), {"positive": [(Q, 0.25), "w011"], "negative": [(R, -2)]}),
    "row indices": ((), {"positive": [3, np.int64(4)], "negative": [5]}),
    "a word twice": ((), {"positive": ["w010", "w010"], "topn": 3}),
    "topn beyond the vocabulary": ((), {"positive": ["w010", "w011"], "topn": 500}),
    "topn 0": (("w010",), {"topn": 0}),
    "topn negative": (("w010",), {"topn": -3}),
    "topn 0, an unknown word": (("nope",), {"topn": 0}),
    "topn None": ((), {"positive": ["w010"], "negative": ["w011"], "topn": None}),
    "restrict_vocab": ((), {"positive": ["w010"], "restrict_vocab": 50, "topn": 8}),
    "restrict_vocab, query outside": ((), {"positive": ["w100"], "restrict_vocab": 50, "topn": 8}),
    "restrict_vocab beyond the vocabulary": ((), {"positive": ["w100"], "restrict_vocab": 10_000}),
    "restrict_vocab, topn None": ((), {"positive": [Q], "restrict_vocab": 30, "topn": None}),
    "restrict_vocab overrides clips": ((), {"positive": ["w010"], "restrict_vocab": 40, "clip_start": 30}),
    "clip_start and clip_end": ((), {"positive": ["w050", "w060"], "clip_start": 20, "clip_end": 80}),
    "clip_start only": ((), {"positive": ["w010"], "clip_start": 150, "topn": 5}),
    "clip_end 0 means the end": ((), {"positive": ["w010"], "clip_end": 0, "topn": 5}),
    "clips, topn None": ((), {"positive": ["w010"], "clip_start": 20, "clip_end": 80, "topn": None}),
}


@pytest.mark.parametrize("args, kwargs", MOST_SIMILAR.values(), ids=MOST_SIMILAR)
def test_most_similar_matches_gensim(emb, kv, args, kwargs):
    ours, theirs = emb.most_similar(*args, **kwargs), kv.most_similar(*args, **kwargs)
    same(ours, theirs)
    if kwargs.get("topn", 10) is None:
        assert ours.dtype == theirs.dtype == np.float32


def test_query_words_are_left_out_and_vectors_are_not(emb):
    assert "w010" not in [w for w, _ in emb.most_similar("w010", topn=V)]
    assert len(emb.most_similar(["w010", "w011"], topn=V)) == V - 2
    # A word's own vector as the query: the word is not a query word, so it comes first.
    assert emb.most_similar(positive=[VECTORS[10]], topn=1)[0][0] == "w010"
    assert emb.similar_by_vector(VECTORS[10], topn=1)[0] == ("w010", pytest.approx(1.0, abs=1e-6))


@pytest.mark.parametrize("method, query", [
    ("similar_by_key", "w010"), ("similar_by_word", "東京"), ("similar_by_vector", Q)])
@pytest.mark.parametrize("kwargs", [{}, {"topn": 3}, {"topn": None}, {"restrict_vocab": 25, "topn": 5},
                                    {"topn": 0}], ids=str)
def test_similar_by_matches_gensim(emb, kv, method, query, kwargs):
    same(getattr(emb, method)(query, **kwargs), getattr(kv, method)(query, **kwargs))


def test_indexer_answers_when_given(emb, kv):
    """An indexer (gensim's AnnoyIndexer's protocol) gets the same query vector from both."""

    class Exact:  # a complete indexer: exact search over the rows it was built on
        def __init__(self, vectors):
            self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def most_similar(self, vector, topn):
            scores = self.vectors @ vector
            return [(WORDS[i], float(scores[i])) for i in np.argsort(-scores)[:topn]]

    kwargs = {"positive": ["w010", Q], "negative": ["w020"], "topn": 4, "indexer": Exact(VECTORS)}
    same(emb.most_similar(**kwargs), kv.most_similar(**kwargs))
    # The indexer's answer is returned as it is: it holds the query word.
    assert emb.most_similar("w010", topn=2, indexer=Exact(VECTORS))[0] == ("w010", pytest.approx(1, abs=1e-6))
    kwargs["topn"] = None  # as in gensim, the indexer answers only a topn
    same(emb.most_similar(**kwargs), kv.most_similar(**kwargs))


def test_analogy_is_most_similar(emb, kv):
    same(emb.analogy("w001", "w002", "w003", topn=3), kv.most_similar(["w002", "w003"], ["w001"], topn=3))
    with pytest.raises(UnknownWord, match="'nope'"):
        emb.analogy("w001", "nope", "w002")


COSMUL = {
    "analogy": ((), {"positive": ["w010", "w020"], "negative": ["w030"], "topn": 5}),
    "one word": (("w010",), {}),
    "bare strings": (("w010", "w011"), {"topn": 3}),
    "several negatives": ((), {"positive": ["w010"], "negative": ["w011", "w012"]}),
    "a vector": ((), {"positive": [Q], "negative": ["w030"]}),
    "a 2-d array": ((np.stack([Q, R]),), {"topn": 4}),
    "topn None": ((), {"positive": ["w010", "w020"], "negative": ["w030"], "topn": None}),
    "topn 0": (("w010",), {"topn": 0}),
    "topn negative, an unknown word": (("nope",), {"topn": -1}),
}


@pytest.mark.parametrize("args, kwargs", COSMUL.values(), ids=COSMUL)
def test_most_similar_cosmul_matches_gensim(emb, kv, args, kwargs):
    same(emb.most_similar_cosmul(*args, **kwargs), kv.most_similar_cosmul(*args, **kwargs))


@pytest.mark.parametrize("topn", [5, None])
def test_most_similar_cosmul_honours_restrict_vocab(emb, kv, topn):
    """gensim 4 ignores restrict_vocab here; nsdist ranks the first rows only, with gensim's scores."""
    query = {"positive": ["w010", "w060"], "negative": ["w020"]}
    everything = kv.most_similar_cosmul(**query, topn=None)
    ours = emb.most_similar_cosmul(**query, topn=topn, restrict_vocab=50)
    if topn is None:
        same(ours, everything[:50])
        return
    expected = [(WORDS[i], everything[i]) for i in np.argsort(-everything[:50]) if WORDS[i] not in ("w010", "w020")]
    same(ours, expected[:topn])


# ---------------------------------------------------------------- similarities and distances

@pytest.mark.parametrize("w1, w2", [("w001", "w002"), ("東京", "naïve café"), ("w005", "w005"), (3, "w150")])
def test_similarity_and_distance_match_gensim(emb, kv, w1, w2):
    assert isinstance(emb.similarity(w1, w2), float)
    assert emb.similarity(w1, w2) == pytest.approx(float(kv.similarity(w1, w2)), abs=1e-6)
    assert emb.distance(w1, w2) == pytest.approx(float(kv.distance(w1, w2)), abs=1e-6)


@pytest.mark.parametrize("ws1, ws2", [(["w001", "w002"], ["w003"]), (["w001"], ["w001"]),
                                      (["東京", "w010", "w011"], ["w020", "w021"]), ([Q, "w002"], [R])],
                         ids=["two-one", "itself", "three-two", "vectors"])
def test_n_similarity_matches_gensim(emb, kv, ws1, ws2):
    assert emb.n_similarity(ws1, ws2) == pytest.approx(float(kv.n_similarity(ws1, ws2)), abs=1e-6)


def test_n_similarity_refuses_empty_lists_and_unknown_words(emb):
    with pytest.raises(ZeroDivisionError):  # as gensim
        emb.n_similarity([], ["w001"])
    with pytest.raises(UnknownWord, match="'nope'"):  # gensim leaves unknown words out of the mean
        emb.n_similarity(["w001", "nope"], ["w002"])


@pytest.mark.parametrize("words", [["w001", "w002", "w003", "w004"], ["東京", "w100", "w150"],
                                   ["w005", "w005", "w006"], ["w009"]], ids=["four", "unicode", "a word twice", "one"])
def test_doesnt_match_matches_gensim(emb, kv, words):
    assert emb.doesnt_match(words) == kv.doesnt_match(words)


def test_doesnt_match_leaves_unknown_words_out_with_a_warning(emb, kv, caplog):
    words = ["w001", "nope", "w002", "w003"]
    with caplog.at_level(logging.WARNING, logger="nsdist"):
        assert emb.doesnt_match(words) == kv.doesnt_match(words)
    assert "nope" in caplog.text and "ignoring" in caplog.text
    with pytest.raises(ConfigError, match="at least one word"):
        emb.doesnt_match(["nope"])


@pytest.mark.parametrize("query, others", [("w001", ()), ("w001", ["w002", "東京", "w001"]), (Q, ()), (Q, ["w199"]),
                                           (3, [4, "w005"])])
def test_distances_match_gensim(emb, kv, query, others):
    ours, theirs = emb.distances(query, others), kv.distances(query, others)
    same(ours, theirs)
    assert ours.dtype == theirs.dtype == np.float32


# ---------------------------------------------------------------- lookup

def test_embeddings_is_importable_where_it_was():
    assert nsdist.Embeddings is runs.Embeddings is Embeddings


def test_lookup_matches_gensim(emb, kv):
    assert emb.index_to_key == kv.index_to_key == WORDS and emb.key_to_index == kv.key_to_index
    assert emb.vectors is VECTORS and emb.vector_size == kv.vector_size == DIM and len(emb) == len(kv) == V
    for key in ("w010", "東京", 0, 199, np.int32(5)):
        for norm in (False, True):
            np.testing.assert_allclose(emb.get_vector(key, norm=norm), kv.get_vector(key, norm=norm), rtol=1e-6)
        assert np.array_equal(emb[key], kv[key]) and emb.get_index(key) == kv.get_index(key)
        assert key in emb and emb.has_index_for(key) and kv.has_index_for(key)
    assert np.array_equal(emb[["w003", "東京", 9]], kv[["w003", "東京", 9]])
    assert emb[["w003", "東京"]].shape == (2, DIM)
    for missing in ("nope", V, -1, "W010"):
        assert missing not in emb and not emb.has_index_for(missing) and not kv.has_index_for(missing)
        assert emb.get_index(missing, default=-1) == kv.get_index(missing, default=-1) == -1
    assert emb.get_vecattr("w002", "count") == COUNTS[2]


def test_vectors_handed_out_cannot_change_the_model(emb):
    with pytest.raises(ValueError, match="read-only"):
        emb["w001"][0] = 5
    with pytest.raises(ValueError, match="read-only"):
        emb.get_vector("w001", norm=True)[0] = 5
    rows = emb[["w001"]]
    rows[0, 0] = 5  # a copy, as gensim's
    assert VECTORS[1, 0] != 5


# ---------------------------------------------------------------- unknown words and bad queries

UNKNOWN = {
    "getitem": lambda e: e["nope"],
    "getitem list": lambda e: e[["w001", "nope"]],
    "get_vector": lambda e: e.get_vector("nope", norm=True),
    "get_index": lambda e: e.get_index("nope"),
    "most_similar": lambda e: e.most_similar("nope"),
    "most_similar negative": lambda e: e.most_similar(positive=["w001"], negative=["nope"]),
    "weighted": lambda e: e.most_similar(positive=[("nope", 2.0)]),
    "similar_by_key": lambda e: e.similar_by_key("nope"),
    "similar_by_word": lambda e: e.similar_by_word("nope"),
    "cosmul": lambda e: e.most_similar_cosmul(positive=["w001"], negative=["nope"]),
    "similarity": lambda e: e.similarity("w001", "nope"),
    "distance": lambda e: e.distance("nope", "w001"),
    "distances": lambda e: e.distances("nope"),
    "distances others": lambda e: e.distances("w001", ["w002", "nope"]),
}


@pytest.mark.parametrize("call", UNKNOWN.values(), ids=UNKNOWN)
def test_unknown_words_raise_unknown_word_a_key_error(emb, kv, call):
    with pytest.raises(UnknownWord) as caught:
        call(emb)
    assert str(caught.value) == f"word 'nope' not in vocabulary ({V} words)"
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, NsdistError)
    assert caught.value.exit_code == 2 and caught.value.word == "nope"
    with pytest.raises(KeyError):  # gensim raises a KeyError too
        call(kv)


def test_unknown_word_is_a_key_error_for_gensim_style_code(emb):
    def vector_or_none(word):
        try:
            return emb[word]
        except KeyError:
            return None

    assert vector_or_none("nope") is None and vector_or_none("w001") is not None
    with pytest.raises(UnknownWord, match=rf"^word {V} not in vocabulary \({V} words\)$"):
        emb[V]  # an int is a row index, as in gensim
    error = pickle.loads(pickle.dumps(UnknownWord("nope", 3)))
    assert isinstance(error, UnknownWord) and str(error) == "word 'nope' not in vocabulary (3 words)"


@pytest.mark.parametrize("call, message", [
    (lambda e: e.most_similar("w001", 5), r"most_similar\(word, topn=5\)"),
    (lambda e: e.most_similar_cosmul("w001", 5), r"most_similar_cosmul\(word, topn=5\)"),
    (lambda e: e.most_similar(), "nothing to compare with"),
    (lambda e: e.most_similar(negative=[]), "nothing to compare with"),
    (lambda e: e.most_similar_cosmul(negative=["w001"]), "at least one positive"),
    (lambda e: e.most_similar(positive=[np.ones(DIM + 1)]), r"shape \(17,\).* 16 dims"),
    (lambda e: e.similar_by_vector(np.ones((2, 3, 4))), r"shape \(2, 3, 4\)"),
    (lambda e: e.most_similar(positive=[("w001", 1.0, 2.0)]), "cannot query with"),
    (lambda e: e.most_similar(positive=[("w001", "heavy")]), "cannot query with"),
    (lambda e: e.most_similar_cosmul(positive=[("w001", 2.0)]), "no weights"),
], ids=["topn as negative", "cosmul topn as negative", "no query", "empty negative", "cosmul no positive",
        "wrong dimension", "3-d array", "triple", "weight not a number", "cosmul weights"])
def test_bad_queries_raise_config_errors(emb, call, message):
    with pytest.raises(ConfigError, match=message) as caught:
        call(emb)
    assert isinstance(caught.value, ValueError)  # gensim raises ValueError where it refuses a query


@pytest.mark.parametrize("vocab, counts, vectors, message", [
    (["a", "b"], [1, 1], np.ones((3, 2)), "2 words, 2 counts and vectors of shape \\(3, 2\\)"),
    (["a", "b"], [1], np.ones((2, 2)), "2 words, 1 counts"),
    (["a", "b"], [1, 1], np.ones(2), r"shape \(2,\)"),
    (["a", "b", "a"], [1, 1, 1], np.ones((3, 2)), "'a' is in the vocabulary twice"),
])
def test_inconsistent_embeddings_are_refused(vocab, counts, vectors, message):
    with pytest.raises(DataError, match=message):
        Embeddings(vocab, counts, vectors)


def test_zero_vectors_score_zero(kv):
    """gensim's answer here is NaN; nsdist's is 0 and the ranking stays usable."""
    vectors = VECTORS.copy()
    vectors[5] = 0
    emb = Embeddings(WORDS, COUNTS, vectors)
    scores = emb.most_similar("w010", topn=None)
    assert scores[5] == 0 and np.isfinite(scores).all()
    assert emb.similarity("w005", "w010") == 0 and emb.distances("w005", ["w010"])[0] == 1
    assert [w for w, _ in emb.most_similar("w005", topn=3)] == ["w000", "w001", "w002"]  # all tie at 0: by row


# ---------------------------------------------------------------- memory

def test_queries_hold_no_normalised_copy_of_the_vectors():
    v = np.random.default_rng(0).standard_normal((20_000, 300), dtype=np.float32)  # 24 MB
    emb = Embeddings([f"w{i}" for i in range(len(v))], np.ones(len(v), np.int64), v)
    assert emb.norms.shape == (len(v),)  # V floats, computed once and kept
    tracemalloc.start()
    try:
        emb.most_similar(positive=["w1", "w2", v[3]], negative=["w4"], topn=10)
        emb.most_similar("w1", topn=None, restrict_vocab=10_000)
        emb.most_similar_cosmul(positive=["w1", "w2"], negative=["w4"], topn=10)
        emb.distances("w1")
        emb.doesnt_match(["w1", "w2", "w3"])
        emb.similar_by_vector(v[7])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.1 * v.nbytes, peak / v.nbytes  # a few V-float score arrays, never V x dim
    assert emb.vectors is v and [a for a in vars(emb).values() if isinstance(a, np.ndarray) and a.ndim == 2] == [v]


# ---------------------------------------------------------------- gensim KeyedVectors

def test_to_keyedvectors_round_trip(emb):
    converted = emb.to_keyedvectors()
    assert type(converted) is KeyedVectors
    assert converted.index_to_key == WORDS and converted.key_to_index == emb.key_to_index
    assert converted.vectors.dtype == np.float32 and np.array_equal(converted.vectors, VECTORS)
    assert not np.shares_memory(converted.vectors, VECTORS)
    assert [converted.get_vecattr(w, "count") for w in WORDS] == COUNTS.tolist()
    for query in ({"positive": ["w010", "w020"], "negative": ["w030"]}, {"positive": [Q], "restrict_vocab": 40}):
        same(emb.most_similar(**query), converted.most_similar(**query))
    converted.unit_normalize_all()  # gensim changes its own copy in place...
    assert np.array_equal(emb.vectors, VECTORS)  # ...not ours
    converted.add_vectors(["new"], R[None])  # a KeyedVectors that grows as gensim's own do
    assert converted.get_index("new") == V and np.array_equal(converted["new"], R) and len(converted) == V + 1
    assert len(emb) == V and "new" not in emb


def test_to_keyedvectors_without_gensim_says_how_to_install_it():
    code = ("import sys; sys.modules['gensim'] = None  # what an environment without gensim imports\n"
            "import numpy as np, nsdist\n"
            "from nsdist.errors import ConfigError\n"
            "emb = nsdist.Embeddings(['a'], [1], np.ones((1, 2), np.float32))\n"
            "assert [w for w, _ in emb.most_similar(np.ones(2))] == ['a']  # the queries need no gensim\n"
            "try:\n    emb.to_keyedvectors()\nexcept ConfigError as e:\n    print(e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(nsdist.__file__))})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("to_keyedvectors needs gensim") and "pip install 'nsdist[gensim]'" in p.stdout


# ---------------------------------------------------------------- a published run

def test_a_published_run_answers_as_gensim_reading_its_files(tmp_path, publish_run, capfd):
    out = str(tmp_path / "out")
    run = runs.run_url(out, publish_run(out, WORDS, VECTORS, counts=COUNTS))
    emb = nsdist.load(out)
    assert type(emb) is nsdist.Embeddings is runs.Embeddings
    read = KeyedVectors.load_word2vec_format(os.path.join(run, "vectors.bin"), binary=True)
    assert read.index_to_key == [formats.escape_word(w) for w in WORDS]  # "naïve café" is written escaped
    read.index_to_key, read.key_to_index = list(WORDS), dict(emb.key_to_index)
    for args, kwargs in MOST_SIMILAR.values():
        same(emb.most_similar(*args, **kwargs), read.most_similar(*args, **kwargs))
    same(emb.most_similar_cosmul(["w010", "東京"], ["w030"]), read.most_similar_cosmul(["w010", "東京"], ["w030"]))
    assert emb.doesnt_match(["w001", "w002", "w003"]) == read.doesnt_match(["w001", "w002", "w003"])
    converted = emb.to_keyedvectors()
    assert np.array_equal(converted.vectors, read.vectors) and converted.index_to_key == WORDS
    assert [converted.get_vecattr(w, "count") for w in WORDS] == COUNTS.tolist()

    assert main(["neighbors", out, "nope"]) == 2  # a usage error, in one line
    err = capfd.readouterr().err
    assert err == f"nsdist: error: word 'nope' not in vocabulary ({V} words)\n", err
    assert main(["neighbors", out, "東京", "--topn", "3"]) == 0
    printed = [line.split("\t") for line in capfd.readouterr().out.splitlines()]
    same([(w, float(s)) for w, s in printed], read.most_similar("東京", topn=3), atol=5e-5)  # printed to 4 places
