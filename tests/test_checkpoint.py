"""Checkpoints are a versioned format: the newest complete one is found, others are refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nsdist import checkpoint
from nsdist.errors import DataError
from nsdist.model import init_model


STATE = {"corpus_fingerprint": "f" * 64, "vocab_sha256": "v" * 64}  # what resuming needs beside the epoch


def test_the_newest_complete_checkpoint_is_read_back(tmp_path):
    run = str(tmp_path / "run")
    model = init_model(7, 3, seed=1)
    for epoch in (0, 1):
        assert checkpoint.save_model(checkpoint.url(run, epoch), None, model) == model.nbytes
        checkpoint.write_state(checkpoint.url(run, epoch), {"epoch": epoch + 1, **STATE}, None)
    checkpoint.save_model(checkpoint.url(run, 2), None, model)  # no state.json: incomplete, ignored
    state = checkpoint.latest(run)
    assert state == {"format": "nsdist-checkpoint", "version": 1, "epoch": 2, **STATE}
    back = checkpoint.load_model(checkpoint.url(run, 1), None)
    assert np.array_equal(back.win, model.win) and np.array_equal(back.wout, model.wout)
    assert checkpoint.latest(str(tmp_path / "none")) is None


def test_a_partitioned_worker_reads_only_its_rows_of_a_checkpoint(tmp_path):
    """What a resumed partitioned model starts from (parts.create, through ROW_BUILDS): the held
    rows alone, read by byte ranges, equal to those rows of the whole checkpoint."""
    from nsdist.model import Model

    model = init_model(5000, 4, seed=2)
    model = Model(model.win, model.win[::-1] * 2)  # distinct output rows: a swapped read shows
    where = checkpoint.url(str(tmp_path / "run"), 0)
    checkpoint.save_model(where, None, model)
    rows = np.array([0, 1, 2, 700, 4098, 4999], np.int32)
    back = checkpoint.ROW_BUILDS[checkpoint.load_model](where, None, rows)
    assert np.array_equal(back.win, model.win[rows]) and np.array_equal(back.wout, model.wout[rows])


@pytest.mark.parametrize("change", [{"version": 99}, {"format": "other"}])
def test_another_format_or_version_is_refused(tmp_path, change):
    run = str(tmp_path / "run")
    checkpoint.write_state(checkpoint.url(run, 0), {"epoch": 1}, None)
    path = os.path.join(checkpoint.url(run, 0), "state.json")
    with open(path) as f:
        doc = json.load(f)
    with open(path, "w") as f:
        json.dump({**doc, **change}, f)
    with pytest.raises(DataError, match="not an nsdist-checkpoint version 1 checkpoint.*start a new run"):
        checkpoint.latest(run)
