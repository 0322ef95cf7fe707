"""Warm starts: the model a new vocabulary starts from, from a published run (``--init-from``):
known words keep both their vectors, new words get fresh ones, dropped words disappear."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .errors import DataError
from .formats import read_npy
from .model import Model, init_model
from .runs import read_manifest, read_vocab
from .vocab import Vocab


def warm_rows(vocab: Vocab, parent: str, store) -> tuple[np.ndarray, np.ndarray, dict]:
    """Which of this vocabulary's words the published ``parent`` knows (mask), their rows there,
    and the counts of known, new and dropped words."""
    old_words = pa.array(read_vocab(parent, store)[0], pa.string())
    old_ids = pc.index_in(vocab.words, value_set=pc.cast(old_words, vocab.words.type))
    known = pc.is_valid(old_ids).to_numpy(zero_copy_only=False)
    stats = {"known_words": int(known.sum()), "new_words": int((~known).sum()),
             "dropped_words": int(len(old_words) - known.sum())}
    return known, pc.filter(old_ids, known).to_numpy(), stats


def warm_stats(vocab: Vocab, parent: str, store) -> dict:
    return warm_rows(vocab, parent, store)[2]


def warm_model(vocab: Vocab, parent: str, store, dim: int, seed: int) -> tuple[Model, dict]:
    """Initial model for a new vocabulary from a published run: known words keep both vectors,
    new words get fresh ones, dropped words disappear."""
    known, src, stats = warm_rows(vocab, parent, store)
    files = read_manifest(parent, store)["files"]
    fresh = init_model(len(vocab), dim, seed)
    for name, target in (("vectors.npy", fresh.win), ("context.npy", fresh.wout)):  # one old matrix at a time
        old = read_npy(storage.join(parent, name), store, (files.get(name) or {}).get("sha256"))
        if old.shape[1] != dim:
            raise DataError(f"--init-from model has dim {old.shape[1]}, this job dim {dim}; set dim={old.shape[1]}")
        target[known] = old[src]
        del old
    return fresh, stats


def warm_start_model(vocab: Vocab, parent: str, store, dim: int, seed: int) -> Model:
    return warm_model(vocab, parent, store, dim, seed)[0]
