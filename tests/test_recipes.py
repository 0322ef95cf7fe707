"""The recipes of docs/outputs.md for reading a published run from S3, run as the page writes
them against moto's S3 server on 127.0.0.1: each block tagged ``<!-- recipe: NAME -->`` is
executed with the page's settings replaced by this test's endpoint and credentials, and its
answers are compared with nsdist's own. The environment holds wrong credentials and a refusing
endpoint (the ``s3`` fixture), so a recipe that does not pass them explicitly fails here."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import nsdist
from nsdist import formats, nearest, runs, storage

from conftest import S3_KEY, S3_REGION, S3_SECRET

DOC = Path(__file__).resolve().parent.parent / "docs" / "outputs.md"
RECIPE = re.compile(r"^<!-- recipe: (\w+)[^>]*-->\n```python\n(.*?)^```", flags=re.M | re.S)
SETTINGS = {"OUT", "ENDPOINT", "KEY_ID", "SECRET", "REGION"}

WORDS = ["king", "queen", "man", "woman", "prince", "new york", "東京", "apple", "banana", "car", "road", "50%"]
K = 3  # neighbours per word in the top-k table
LATEST_RUN, SUPERSEDED_RUN = "20260101T000000Z-00000b", "20260102T000000Z-00000a"


def recipes() -> dict[str, str]:
    """{name: code} of the tagged Python blocks of docs/outputs.md."""
    return dict(RECIPE.findall(DOC.read_text(encoding="utf-8")))


def run_recipe(name: str, s3) -> dict:
    """Execute recipe ``name`` with this test's settings; return the names it defined."""
    namespace = {"OUT": s3.url("models", "wiki"), "ENDPOINT": s3.endpoint, "KEY_ID": S3_KEY, "SECRET": S3_SECRET,
                 "REGION": S3_REGION}
    exec(compile(recipes()[name], f"{DOC} (recipe: {name})", "exec"), namespace)
    return namespace


def _publish(out: str, run_id: str, vectors: np.ndarray, storage_options: dict, local) -> None:
    """A run with vectors.parquet in two parts and a top-k table in two parts, published as a job
    publishes them. The files are written by two row blocks under ``local``, then copied to S3:
    on S3 a block holds at least 16 MiB of vectors (formats.output_blocks), and these are a few
    hundred bytes."""
    words = pa.array(WORDS)
    url = runs.run_url(out, run_id)
    runs.claim_run(out, run_id, storage_options)
    files = formats.write_run_files(str(local), words, np.arange(len(WORDS), 0, -1), vectors, vectors[::-1].copy(),
                                    workers=2)
    assert sorted(n for n in files if n.startswith("vectors.parquet/")) == [formats.vectors_part(0),
                                                                            formats.vectors_part(1)]
    for name in files:
        storage.write_bytes(storage.join(url, name), (local / name).read_bytes(), storage_options)
    unit = nearest.unit_rows(vectors)
    for part, lo in enumerate(range(0, len(WORDS), 8)):
        idx, scores = nearest.block_topk(unit, lo, min(lo + 8, len(WORDS)), K)
        name = formats.neighbors_part(part)
        files[name] = formats.write_neighbors(storage.join(url, name), formats.neighbors_table(words, lo, idx, scores),
                                              storage_options)
    runs.publish(out, run_id, {"files": files, "corpus": {"vocab_size": len(WORDS)},
                               "config": {"train": {"dim": vectors.shape[1]}}}, storage_options)


@pytest.fixture
def published(s3, tmp_path):
    """Two runs under <out>: LATEST names the one published last, whose id sorts first, so a
    reader that picked the newest-looking run of a listing would read the other one."""
    out = s3.url("models", "wiki")
    rng = np.random.default_rng(7)
    _publish(out, SUPERSEDED_RUN, rng.standard_normal((len(WORDS), 6)).astype(np.float32), s3.storage_options,
             tmp_path / SUPERSEDED_RUN)
    vectors = rng.standard_normal((len(WORDS), 6)).astype(np.float32)
    _publish(out, LATEST_RUN, vectors, s3.storage_options, tmp_path / LATEST_RUN)
    emb = nsdist.load(out, s3.storage_options)
    assert emb.manifest["run_id"] == LATEST_RUN and np.array_equal(emb.vectors, vectors)
    unit = nearest.unit_rows(vectors)
    idx, scores = nearest.block_topk(unit, 0, 8, K)  # the first part's block, as written: "king" is row 0
    return {"vectors": vectors, "nearest": emb.most_similar("king", topn=5),
            "neighbors": [(WORDS[i], s) for i, s in zip(idx[0], scores[0])]}


@pytest.fixture
def duckdb_httpfs(tmp_path, monkeypatch):
    """DuckDB's httpfs extension where DuckDB looks for it (~/.duckdb/extensions/...), from the
    duckdb-ext-httpfs wheel of the test extra. Without it DuckDB downloads the extension on first
    use from its own site, which CI cannot reach. DuckDB checks the extension's signature as it
    loads it, as it does for one it downloaded."""
    import duckdb

    version = f"v{duckdb.__version__}"
    try:
        shipped = [Path(f.locate()) for f in importlib.metadata.files("duckdb-ext-httpfs") or []
                   if f.name == "httpfs.duckdb_extension" and version in f.parts]
    except importlib.metadata.PackageNotFoundError:
        shipped = []
    if shipped:
        home = tmp_path / "home"
        target = home / ".duckdb" / "extensions" / version / shipped[0].parent.name
        target.mkdir(parents=True)
        (target / "httpfs.duckdb_extension").symlink_to(shipped[0])
        monkeypatch.setenv("HOME", str(home))


def test_the_recipes_are_there_and_their_settings_are_the_ones_this_test_replaces():
    found = recipes()
    assert set(found) == {"settings", "pyarrow", "duckdb", "spark"}, sorted(found)
    assigned = {target.id for node in ast.parse(found["settings"]).body if isinstance(node, ast.Assign)
                for target in node.targets}
    assert assigned == SETTINGS, f"docs/outputs.md's settings assign {sorted(assigned)}; this test supplies {SETTINGS}"
    for name, code in found.items():  # the Spark recipe, which no test runs, at least parses
        compile(code, f"{DOC} (recipe: {name})", "exec")


def test_pyarrow_recipe_reads_the_latest_run_from_s3(s3, published):
    ns = run_recipe("pyarrow", s3)
    assert ns["latest"]["run"] == LATEST_RUN
    assert ns["words"] == WORDS  # words with spaces, unicode and '%' as they are
    assert ns["vectors"].dtype == np.float32 and np.array_equal(ns["vectors"], published["vectors"])
    assert [w for w, _ in ns["nearest"]] == [w for w, _ in published["nearest"]]
    np.testing.assert_allclose([s for _, s in ns["nearest"]], [s for _, s in published["nearest"]], atol=1e-5)
    table = ns["neighbors"]
    assert table.column("item").to_pylist() == ["king"] * K and table.column("rank").to_pylist() == [1, 2, 3]
    assert list(zip(table.column("neighbor").to_pylist(), table.column("score").to_pylist())) == published["neighbors"]


def test_duckdb_recipe_reads_the_latest_run_from_s3(s3, published, duckdb_httpfs):
    ns = run_recipe("duckdb", s3)
    assert ns["run_id"] == LATEST_RUN and ns["dim"] == 6
    assert [w for w, _ in ns["nearest"]] == [w for w, _ in published["nearest"]]
    np.testing.assert_allclose([s for _, s in ns["nearest"]], [s for _, s in published["nearest"]], atol=1e-5)
    assert [(w, np.float32(s)) for w, s in ns["neighbors"]] == published["neighbors"]
    # The cast is what makes the array functions apply: without it DuckDB finds no match.
    import duckdb

    with pytest.raises(duckdb.BinderException, match="array_cosine_similarity"):
        ns["con"].execute(f"SELECT array_cosine_similarity(vector, vector) FROM read_parquet('{ns['run']}/"
                          "vectors.parquet/*.parquet')")
    assert ns["con"].execute(f"SELECT DISTINCT typeof(vector) FROM read_parquet('{ns['run']}/vectors.parquet/"
                             "*.parquet')").fetchall() == [("FLOAT[]",)]
    assert ns["con"].execute("SELECT count(*) FROM vectors").fetchone() == (len(WORDS),)  # both parts
