"""Item ids in Parquet sessions: trained as words, given back as the integers they came in as."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from gensim.models import KeyedVectors

import nsdist
from nsdist.config import load_config
from nsdist.pipeline import train


def test_integer_item_ids_round_trip(client, tmp_path):
    rng = np.random.default_rng(4)
    # Large, negative and non-contiguous ids in two groups of co-clicked items.
    groups = [np.array([2**62 + 7, -5, 10**12, 3]), np.array([42, 2**40, -(2**50), 99])]
    sessions = [rng.permutation(groups[s % 2]).tolist() * 3 for s in range(400)]
    path = tmp_path / "sessions.parquet"
    pq.write_table(pa.table({"items": pa.array(sessions, pa.list_(pa.int64()))}), path, row_group_size=100)
    cfg = load_config(None, {"parquet_column": "items", "dim": 8, "epochs": 2, "min_count": 1, "window": 0,
                             "sample": 0, "ns_exponent": -0.5}, environ={}, corpus=(str(path),), out=str(tmp_path / "out"))
    result = train(cfg, client)
    assert result.manifest["word_type"] == "int64" and result.manifest["corpus"]["blocks"] == 4
    ids = sorted(int(i) for g in groups for i in g)
    table = pq.read_table(os.path.join(result.run_url, "vectors.parquet"))
    assert table.schema.field("word").type == pa.int64() and sorted(table["word"].to_pylist()) == ids
    emb = nsdist.load(str(tmp_path / "out"))
    assert sorted(int(w) for w in emb.index_to_key) == ids  # the text formats hold the decimal ids
    kv = KeyedVectors.load_word2vec_format(os.path.join(result.run_url, "vectors.txt"))
    assert sorted(int(w) for w in kv.index_to_key) == ids
    rows = {w: v for w, v in zip(table["word"].to_pylist(), table["vector"].to_numpy(zero_copy_only=False))}
    assert all(np.array_equal(np.asarray(rows[int(w)], np.float32), emb[w]) for w in emb.index_to_key)
    # Items clicked together end up together.
    top = emb.most_similar(str(2**62 + 7), topn=3)
    assert {int(w) for w, _ in top} == {-5, 10**12, 3}, top
