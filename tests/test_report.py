"""report.html: the page rendered from plain inputs, and the sample a worker takes of a model."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from nsdist import report
from nsdist.config import load_config
from nsdist.outputs import Embeddings

EVIL = "<script>alert(1)</script>"  # a word of the corpus: the page must show it, never run it


# ---------------------------------------------------------------- the page, from plain inputs

def _page(epochs: int = 3, storage_options=None) -> str:
    cfg = load_config(None, {"dim": 4}, environ={}, corpus=("c.txt",), out="o", storage_options=storage_options or {})
    rng = np.random.default_rng(1)
    words = pa.array([EVIL, "a&b", '"q"'] + [f"w{i}" for i in range(97)])
    sample = report.sample(words, np.arange(1000, 900, -1), rng.standard_normal((100, 4)).astype(np.float32))
    manifest = {"run_id": "r1", "config": cfg.to_dict(), "corpus": {"files": ["c.txt"], "vocab_size": 100},
                "metrics": {"epochs": [{"epoch": e, "loss": 3 / e, "words_per_second": 1e5 * e, "seconds": 1.0,
                                        "merge_bytes": 2e6, "merge_seconds": 0.1} for e in range(1, epochs + 1)]},
                "files": {"vectors.npy": {"size": 1600, "sha256": "ab" * 32}}}
    return report.render(manifest, sample)


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)


def test_page_has_a_path_per_series_escapes_words_and_loads_nothing():
    page = _page(storage_options={"secret": "s3cr3t-value", "key": "AKIA-not-shown"})
    # loss, words/s, merge traffic, time (wall and merges), counts by rank
    assert [svg.count('<path class="series"') for svg in _svgs(page)] == [1, 1, 1, 2, 1]
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b" in page and "&quot;q&quot;" in page
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|://", page, flags=re.IGNORECASE)
    assert "s3cr3t-value" not in page and "AKIA-not-shown" not in page and "storage_options.secret" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # The counts plot is log-log: decade ticks, labelled.
    counts_svg = _svgs(page)[-1]
    assert ">100<" in counts_svg and ">1k<" in counts_svg and ">10<" in counts_svg


def test_one_epoch_and_empty_series_still_draw():
    one = _svgs(_page(epochs=1))
    assert all(svg.count("<circle") >= 1 for svg in one[:4])  # a lone point is a dot
    empty = report.line_plot({"s": ([], [])}, "t", "x", "y")
    assert "no data" in empty and "<path" not in empty
    # A log axis drops what it cannot show, keeps the rest.
    svg = report.line_plot({"s": ([0, 1, 10], [5, 0, 7])}, "t", "x", "y", logx=True, logy=True)
    assert svg.count("<circle") == 1


def test_nearest_equals_the_embeddings_query_in_small_blocks():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 6)).astype(np.float32)
    vectors[7] = 0  # a zero row scores 0, as in Embeddings
    words = [f"w{i}" for i in range(50)]
    emb = Embeddings(words, np.arange(50, 0, -1), vectors, {})
    ids = [0, 3, 7, 49]
    for blocks in (5, 64):  # block boundaries cut through the queries
        for i, row in zip(ids, report.nearest(vectors, ids, topn=4, block=blocks)):
            expected = emb.most_similar(words[i], topn=4)
            assert [words[j] for j, _ in row] == [w for w, _ in expected]
            assert np.allclose([s for _, s in row], [s for _, s in expected], atol=1e-6)


def test_the_sample_is_small_whatever_the_vocabulary():
    counts = np.arange(1_000_000, 0, -1)
    ranks, sampled = report.count_ranks(counts)
    assert len(ranks) <= 200 and ranks[0] == 1 and ranks[-1] == 1_000_000 and sampled[-1] == 1
    assert all(c == counts[r - 1] for r, c in zip(ranks, sampled))
    assert report.count_ranks(np.array([], np.int64)) == ([], [])
    assert report.query_ids(0) == [] and report.query_ids(1) == [0] and len(report.query_ids(10**6)) == 8
    one = report.sample(pa.array(["solo"]), np.array([4]), np.ones((1, 3), np.float32))
    assert one["neighbours"] == [{"word": "solo", "rank": 1, "count": 4, "nearest": []}]
