"""Models on the workers are state: every operation checks it happens at the model's place in the
rounds, and a worker's shards share its one model."""

from __future__ import annotations

import inspect
import operator

import numpy as np
import pytest

from nsdist.cluster import models
from nsdist.encode import Shard
from nsdist.merge import merge_rows
from nsdist.model import Model, init_model, make_tables
from nsdist.plan import row_blocks
from nsdist.cluster.models import Merged, ModelLost
from nsdist.shard import RoundSpec, train_round

V, DIM = 30, 4
BLOCKS = row_blocks(V, 2)


def make_shard(seed: int) -> list[Shard]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 10, 50)
    return [Shard(rng.integers(0, V, lengths.sum()).astype(np.int32), np.concatenate([[0], np.cumsum(lengths)]))]


@pytest.fixture
def job():
    tables = make_tables(np.arange(V, 0, -1) * 10, 0.0, 0.75)
    models.create("t", 0, 4, [0, 1], init_model, V, DIM, 1)
    yield make_shard(0), tables
    models.drop("t")


def spec(shard: int, r: int = 0) -> RoundSpec:
    return RoundSpec(1, r, 4, shard, 0.025, 0.02, 2, 3, 7)


def test_a_round_trains_merges_and_serves_in_order(job):
    shard, tables = job
    stats = [models.train("t", 0, 4, m, [shard], tables, [spec(m)], 1) for m in (0, 1)]
    assert stats[0][0]["words"] > 0 and len(stats[1]) == 1
    with pytest.raises(ModelLost, match="at round -1, not 4"):
        models.train("t", 0, 4, 0, [shard], tables, [spec(0)], 1)  # trained once already
    with pytest.raises(ModelLost, match="not 5"):
        models.train("t", 0, 5, 0, [shard], tables, [spec(0, 1)], 1)  # blocks not merged yet
    (lo0, hi0), (lo1, hi1) = BLOCKS
    # Block 1 is merged by another worker: what this worker's models send it (Peer.part), given
    # the owner's changed rows.
    peer = models.Peer()
    nothing = (np.packbits(np.zeros(hi1 - lo1, bool)),) * 2
    sent = [peer.part("t", 0, 4, m, 1, lo1, hi1, nothing) for m in (0, 1)]
    own = models._held("t", 0, 0)
    assert np.array_equal(sent[0].ids_in, np.flatnonzero(own.n_in[lo1:hi1]))
    assert np.array_equal(sent[0].win, own.model.win[lo1:hi1][sent[0].ids_in])
    # This worker owns block 0: both models are here, so nothing crosses.
    local = [("here", "peer")] * 2
    info = models.merge("t", 0, 4, [(0, lo0, hi0)], 2, "mean", local)
    assert info["bytes"] == 0 and info["seconds"] >= 0
    assert not models._held("t", 0, 0).n_in[lo0:hi0].any()  # synchronised rows count from zero again
    assert models._held("t", 0, 0).n_in[lo1:hi1].any()
    with pytest.raises(ModelLost, match="block 0"):
        models.merge("t", 0, 4, [(0, lo0, hi0)], 2, "mean", local)  # block 0 is done
    with pytest.raises(ModelLost, match="block 0"):
        peer.part("t", 0, 4, 0, 0, lo0, hi0, nothing)  # so is its part
    merged = peer.merged("t", 0, 4, 0)  # what the other workers fetch: the rows the merge changed
    a, b = (models._held("t", 0, m).model for m in (0, 1))
    assert np.array_equal(a.win[:hi0], b.win[:hi0]) and not np.array_equal(a.win[lo1:], b.win[lo1:])
    start = init_model(V, DIM, 1).win[lo0:hi0]
    changed = np.flatnonzero((a.win[lo0:hi0] != start).any(axis=1))
    assert merged.ids_in is not None and 0 < len(merged.ids_in) < hi0 - lo0
    assert set(changed) <= set(merged.ids_in) and np.array_equal(a.win[lo0:hi0][merged.ids_in], merged.win)
    with pytest.raises(ModelLost, match="block 1 of round 4 is not merged"):
        peer.merged("t", 0, 4, 1)
    # The merge of block 1 from every model's rows, as its owner computes it, installed here.
    rows = {m: getattr(models._part(models._held("t", 0, 0), lo1, hi1), m).copy() for m in ("win", "wout")}
    parts = [models._part(models._held("t", 0, m), lo1, hi1) for m in (0, 1)]
    for m, n in (("win", "n_in"), ("wout", "n_out")):
        merge_rows([rows[m]], [getattr(p, m) for p in parts], [getattr(p, n) for p in parts], "mean")
    models._install_block(models._refresh("t", 0, 4, 1), Merged(rows["win"], rows["wout"], None, None), 4, 1, 2, lo1, hi1)
    # Both models now hold the merged model and are ready for round 5.
    assert np.array_equal(a.win, b.win) and np.array_equal(a.wout, b.wout)
    assert np.array_equal(a.win[lo1:], rows["win"]) and np.array_equal(a.wout[lo1:], rows["wout"])
    models.train("t", 0, 5, 0, [shard], tables, [spec(0, 1)], 1)
    assert models._job("t", 0).merged == {}  # the next round frees the merged blocks


def test_rows_not_synchronised_keep_training_and_counting(job):
    """A round that syncs a prefix leaves the other rows as each model trained them, with their
    counts still growing; the round still completes."""
    shard, tables = job
    for m in (0, 1):
        models.train("t", 0, 4, m, [shard], tables, [spec(m)], 1)
    counts = models._held("t", 0, 0).n_in.copy()
    models.merge("t", 0, 4, [(0, 0, 5)], 1, "mean", [("here", "peer")] * 2)
    a, b = (models._held("t", 0, m) for m in (0, 1))
    assert np.array_equal(a.model.win[:5], b.model.win[:5]) and not np.array_equal(a.model.win[5:], b.model.win[5:])
    assert not a.n_in[:5].any() and np.array_equal(a.n_in[5:], counts[5:]) and counts[5:].any()
    models.train("t", 0, 5, 0, [shard], tables, [spec(0, 1)], 1)
    assert (a.n_in[5:] > counts[5:]).any()


def test_a_models_shards_train_one_model(job):
    """Shards of one model train it one after another with one thread (the same bits as
    train_round in shard order), at once with two (Hogwild): the counts are exact either way."""
    _, tables = job
    shards = [make_shard(1), make_shard(2)]
    reference = init_model(V, DIM, 1)
    n_in, n_out = np.zeros(V, np.uint32), np.zeros(V, np.uint32)
    for s, pieces in enumerate(shards):
        train_round(reference, pieces, tables, spec(s), n_in, n_out)
    models.train("t", 0, 4, 0, shards, tables, [spec(0), spec(1)], 1)
    one = models._held("t", 0, 0)
    assert np.array_equal(one.model.win, reference.win) and np.array_equal(one.n_in, n_in)
    models.train("t", 0, 4, 1, shards, tables, [spec(0), spec(1)], 2)
    two = models._held("t", 0, 1)
    assert np.array_equal(two.n_in, n_in) and np.array_equal(two.n_out, n_out)
    assert np.allclose(two.model.win, reference.win, atol=0.05)  # the same updates, interleaved


def test_lost_models_are_reported_not_recreated(job):
    shard, tables = job
    with pytest.raises(ModelLost, match="attempt 1"):
        models.train("t", 1, 4, 0, [shard], tables, [spec(0)], 1)  # a newer attempt owns the job
    with pytest.raises(ModelLost, match="model 2"):
        models.train("t", 0, 4, 2, [shard], tables, [spec(2)], 1)  # model 2 lives elsewhere
    with pytest.raises(ModelLost, match="round 4, not 8"):
        models.save("t", 0, 8, lambda model: model, ())
    assert models.save("t", 0, 4, lambda x, model: (x, model.win.shape), (1,)) == (1, (V, DIM))
    assert models.drop("t") == 2 and models.drop("t") == 0
    # A worker that never held the job (a replacement for a lost one) reports it: only the
    # attempt that was stopped here goes quiet.
    with pytest.raises(ModelLost, match="no models of job t \\(attempt 2\\)"):
        models.train("t", 2, 4, 0, [shard], tables, [spec(0)], 1)


def test_tasks_of_a_stopped_job_do_nothing(job):
    """After drop, the job's queued tasks return None instead of failing (a stopped job leaves no
    errors behind); another attempt's tasks still find no models and say so."""
    shard, tables = job
    models.train("t", 0, 4, 0, [shard], tables, [spec(0)], 1)
    assert models.drop("t") == 2
    assert models.train("t", 0, 4, 1, [shard], tables, [spec(1)], 1) is None
    assert models.merge("t", 0, 4, [(0, 0, 15)], 2, "mean", [("here", "peer")] * 2) is None
    assert models.install("t", 0, 4, [(1, 15, 30, 1)], 2, [("here", "peer"), ("there", "peer")]) is None
    nothing = (np.packbits(np.zeros(15, bool)),) * 2
    assert models.Peer().part("t", 0, 4, 0, 0, 0, 15, nothing) is None and models.Peer().merged("t", 0, 4, 0) is None
    assert models.ended([[{"words": 1}], None], [], []) is None
    with pytest.raises(ModelLost, match="attempt 1"):
        models.train("t", 1, 4, 0, [shard], tables, [spec(0)], 1)


def test_model_copies_are_independent():
    models.create("u", 0, 0, [3, 5], init_model, V, DIM, 1)
    try:
        a, b = models._held("u", 0, 3), models._held("u", 0, 5)
        assert isinstance(a.model, Model) and not np.may_share_memory(a.model.win, b.model.win)
    finally:
        models.drop("u")


def test_a_peer_that_does_not_answer_is_a_lost_model(client):
    """An install that asks a worker for a block its Peer actor cannot serve (this one has no
    actor of the attempt: it was restarted) reports the model lost, and the job restarts."""
    first, second = sorted(client.scheduler_info()["workers"])
    assert client.submit(models.create, "p", 0, 0, [0], init_model, V, DIM, 1, workers=[first], pure=False).result()
    peers = [(first, "peer-p-0-0"), (second, "peer-p-0-1")]
    with pytest.raises(ModelLost, match=f"worker {second} holds no actor peer-p-0-1"):
        client.submit(models.install, "p", 0, 0, [(1, 15, 30, 1)], 2, peers, workers=[first], pure=False).result()
    assert client.run(models.drop, "p")[first] == 1


def test_the_peer_call_is_dasks_actor_execute(client):
    """Rows cross through distributed's internal ``Worker.actor_execute`` (models._call), which
    only the pinned release guarantees: its arguments, an answer, and an error raised by the
    actor all arrive as models._ask expects them, or this fails."""
    from distributed.worker import Worker

    assert list(inspect.signature(Worker.actor_execute).parameters) == ["self", "actor", "function", "args", "kwargs"]
    first, second = sorted(client.scheduler_info()["workers"])
    shard, tables = make_shard(0), make_tables(np.arange(V, 0, -1) * 10, 0.0, 0.75)

    def on(worker, fn, *args, **kw):
        return client.submit(fn, *args, workers=[worker], pure=False, **kw).result()

    try:
        on(second, models.create, "q", 0, 4, [0], init_model, V, DIM, 1)
        on(second, models.train, "q", 0, 4, 0, [shard], tables, [spec(0)], 1)
        actor = client.submit(models.Peer, workers=[second], actor=True, key="peer-q-0-1")
        actor.result()
        peer = (second, actor.key)
        on(second, models.merge, "q", 0, 4, [(0, 0, V)], 1, "mean", [peer])
        [merged] = on(first, models._ask, "q", 0, [(peer, "merged", ("q", 0, 4, 0))])
        win = on(second, models.save, "q", 0, 5, operator.attrgetter("win"), ())
        assert isinstance(merged, Merged) and merged.ids_in is not None and len(merged.ids_in) > 0
        assert np.array_equal(merged.win, win[merged.ids_in])
        with pytest.raises(ModelLost, match="block 0 of round 9 is not merged"):  # raised by the actor
            on(first, models._ask, "q", 0, [(peer, "merged", ("q", 0, 9, 0))])
    finally:
        client.run(models.drop, "q")
