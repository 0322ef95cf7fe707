"""Replicas are state: every operation checks it happens at the replica's place in the rounds."""

from __future__ import annotations

import numpy as np
import pytest

from nsdist import replica
from nsdist.encode import Shard
from nsdist.merge import merge_rows
from nsdist.model import init_model, make_tables, row_blocks
from nsdist.replica import Merged, ReplicaLost
from nsdist.shard import RoundSpec

V, DIM = 30, 4
BLOCKS = row_blocks(V, 2)


@pytest.fixture
def job():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 10, 50)
    shard = Shard(rng.integers(0, V, lengths.sum()).astype(np.int32), np.concatenate([[0], np.cumsum(lengths)]))
    tables = make_tables(np.arange(V, 0, -1) * 10, 0.0, 0.75)
    replica.create("t", 0, 4, [0, 1], init_model, V, DIM, 1)
    yield shard, tables
    replica.drop("t")


def spec(shard: int, r: int = 0) -> RoundSpec:
    return RoundSpec(1, r, 4, shard, 0.025, 0.02, 2, 3, 7)


def test_a_round_trains_merges_and_installs_in_order(job):
    shard, tables = job
    parts = [replica.train("t", 0, 4, BLOCKS, [shard], tables, spec(s)) for s in (0, 1)]
    assert parts[0][0].stats["words"] > 0 and parts[0][1].stats == {}
    with pytest.raises(ReplicaLost, match="at round -1, not 4"):
        replica.train("t", 0, 4, BLOCKS, [shard], tables, spec(0))  # trained once already
    with pytest.raises(ReplicaLost, match="not 5"):
        replica.train("t", 0, 5, BLOCKS, [shard], tables, spec(0, 1))  # blocks not merged yet
    (lo0, hi0), (lo1, hi1) = BLOCKS
    merged = replica.merge("t", 0, 4, 0, 2, lo0, hi0, "mean", parts[0][0], parts[1][0])
    assert merged.info["bytes"] == 0 and len(merged.info["stats"]) == 2  # both parts were local
    with pytest.raises(ReplicaLost, match="block 0"):
        replica.install("t", 0, 4, 0, 2, lo0, hi0, merged)  # block 0 is done
    # Block 1 is merged by another worker, from these parts; its result is installed here.
    rows = {m: getattr(parts[0][1], m).copy() for m in ("win", "wout")}
    for m, n in (("win", "n_in"), ("wout", "n_out")):
        merge_rows([rows[m]], [getattr(p[1], m) for p in parts], [getattr(p[1], n) for p in parts], "mean")
    assert replica.install("t", 0, 4, 1, 2, lo1, hi1, Merged(rows["win"], rows["wout"], {})) == rows["win"].nbytes * 2
    # Both replicas now hold the merged model and are ready for round 5.
    for s in (0, 1):
        model = replica._replica("t", 0, s).model
        assert np.array_equal(model.win[lo0:hi0], merged.win) and np.array_equal(model.win[lo1:], rows["win"])
        assert np.array_equal(model.wout[lo1:], rows["wout"])
    assert not np.array_equal(merged.win, init_model(V, DIM, 1).win[lo0:hi0])
    replica.train("t", 0, 5, BLOCKS, [shard], tables, spec(0, 1))


def test_lost_replicas_are_reported_not_recreated(job):
    shard, tables = job
    with pytest.raises(ReplicaLost, match="attempt 1"):
        replica.train("t", 1, 4, BLOCKS, [shard], tables, spec(0))  # a newer attempt owns the job
    with pytest.raises(ReplicaLost, match="shard 2"):
        replica.train("t", 0, 4, BLOCKS, [shard], tables, spec(2))  # shard 2 is held elsewhere
    with pytest.raises(ReplicaLost, match="round 4, not 8"):
        replica.save("t", 0, 8, lambda model: model, ())
    assert replica.save("t", 0, 4, lambda x, model: (x, model.win.shape), (1,)) == (1, (V, DIM))
    assert replica.drop("t") == 2 and replica.drop("t") == 0
    with pytest.raises(ReplicaLost, match="no replicas"):
        replica.train("t", 0, 4, BLOCKS, [shard], tables, spec(0))
