"""Checkpoints: the model after an epoch and what a resumed run needs to continue it.

Under ``<run>/checkpoints/epoch-NNNN/``: ``win.npy`` and ``wout.npy`` (written by a worker
once the epoch's last round has synchronised every row, so every worker's model is this one),
then ``state.json``, written last: a checkpoint without it is incomplete and ignored.
``state.json`` carries a format name and version, checked on read, and what a resume must
reproduce exactly (shard and model counts, shard plan, corpus fingerprint, vocabulary digest)
or continue (metrics so far, warm-start record).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from . import storage
from .errors import DataError
from .model import Model, init_model, init_rows
from .formats import read_npy, read_npy_rows, write_npy
from .vocab import Vocab
from .warm import start_rows

FORMAT, VERSION = "nsdist-checkpoint", 1


def url(run: str, epoch: int) -> str:
    """Where the checkpoint after ``epoch`` (0-based) goes."""
    return storage.join(run, "checkpoints", f"epoch-{epoch + 1:04d}")


def save_model(where: str, storage_options, model: Model) -> int:
    """Write the model's matrices (a task, on the worker holding the model); returns bytes."""
    for name, array in (("win.npy", model.win), ("wout.npy", model.wout)):
        with storage.open_write(storage.join(where, name), storage_options) as f:
            write_npy(f, array)
    return model.nbytes


def load_model(where: str, storage_options) -> Model:
    return Model(read_npy(storage.join(where, "win.npy"), storage_options),
                 read_npy(storage.join(where, "wout.npy"), storage_options))


def load_rows(where: str, storage_options, rows: np.ndarray) -> Model:
    """Rows ``rows`` (sorted ids) of a saved model, read by byte ranges: a worker of the
    partitioned layout reads the rows it holds, never the whole model."""
    return Model(read_npy_rows(storage.join(where, "win.npy"), rows, storage_options),
                 read_npy_rows(storage.join(where, "wout.npy"), rows, storage_options))


# The builds of the model training starts from, by rows (``build`` -> ``rows_of``, called with
# build's arguments and the sorted ids, then what else those rows need): a fresh model's, drawn;
# a checkpoint's, read by byte ranges; a warm start's (a build of rows alone), read and joined by
# parts (warm_parts.py). The partitioned layout builds its rows so (cluster.parts.create).
ROW_BUILDS = {init_model: init_rows, load_model: load_rows, start_rows: start_rows}


def write_state(where: str, state: dict, storage_options) -> None:
    """Complete a checkpoint: its state, last."""
    doc = {"format": FORMAT, "version": VERSION, **state}
    storage.write_bytes(storage.join(where, "state.json"), storage.dump_json(doc), storage_options)


# What resuming reads from a checkpoint's state (pipeline._open_run, _job).
STATE_KEYS = ("epoch", "corpus_fingerprint", "vocab_sha256")


def latest(run: str, storage_options=None) -> dict | None:
    """The state of the newest complete checkpoint of a run, or None."""
    for name in reversed(storage.listdir(storage.join(run, "checkpoints"), storage_options)):
        state_url = storage.join(run, "checkpoints", name, "state.json")
        if storage.exists(state_url, storage_options):
            state = storage.read_json(state_url, storage_options)
            if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
                raise DataError(f"{state_url!r} is not an {FORMAT} version {VERSION} checkpoint (written by another "
                                "nsdist release); resume it with that release or start a new run")
            missing = [k for k in STATE_KEYS if k not in state]
            if missing or not isinstance(state["epoch"], int) or state["epoch"] < 1:
                raise DataError(f"{state_url!r} is incomplete (no {', '.join(missing) or 'valid epoch'}): the "
                                "checkpoint is corrupt; delete its folder to resume from the one before, or start "
                                "a new run")
            return state
    return None


def vocab_digest(parts) -> str:
    """Identity of a vocabulary, from its consecutive ``parts`` (an iterable of Vocab, read one
    at a time): a resumed run must recount exactly the same one. The words' UTF-8 bytes, their
    lengths and their counts are hashed apart, in id order, so the digest does not depend on how
    the vocabulary is cut into parts.

    >>> import pyarrow as pa
    >>> whole = Vocab(pa.array(["a", "bc", "d"]), np.array([3, 2, 1]))
    >>> cut = [Vocab(whole.words[:1], whole.counts[:1]), Vocab(whole.words[1:], whole.counts[1:])]
    >>> vocab_digest([whole]) == vocab_digest(cut)
    True
    """
    hashes = [hashlib.sha256() for _ in range(3)]
    for part in parts:
        words = part.words.cast(pa.large_string())
        offsets = np.frombuffer(words.buffers()[1], np.int64)[words.offset:words.offset + len(words) + 1]
        data = words.buffers()[2]
        hashes[0].update(memoryview(data)[int(offsets[0]):int(offsets[-1])] if len(words) else b"")
        hashes[1].update(np.diff(offsets).astype("<i8").tobytes())
        hashes[2].update(np.ascontiguousarray(part.counts, "<i8").tobytes())
    return hashlib.sha256(b"".join(h.digest() for h in hashes)).hexdigest()
