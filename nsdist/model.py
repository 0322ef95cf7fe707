"""The global model (input and output matrices) and the tables every shard needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError
from .noise import noise_table
from .vocab import keep_probs


@dataclass(frozen=True)
class Model:
    """SGNS parameters: ``win`` (the word vectors) and ``wout`` (the context/noise vectors)."""

    win: np.ndarray  # float32 (V, dim)
    wout: np.ndarray  # float32 (V, dim)
    info: dict = field(default_factory=dict)  # e.g. the merge that produced it (seconds, bytes)

    @property
    def nbytes(self) -> int:
        return self.win.nbytes + self.wout.nbytes


@dataclass(frozen=True)
class Tables:
    """Per-word tables, computed once per job: subsampling and the noise alias table."""

    keep: np.ndarray  # float32 (V,)
    noise_prob: np.ndarray  # float32 (V,)
    noise_alias: np.ndarray  # int32 (V,)
    rate: np.ndarray | None = None  # float32 (V,): per-row local rate multiplier (merge.shard_rates)


def make_tables(counts: np.ndarray, sample: float, ns_exponent: float, rate: np.ndarray | None = None) -> Tables:
    prob, alias = noise_table(counts, ns_exponent)
    return Tables(keep_probs(counts, sample), prob, alias, rate)


def init_model(vocab_size: int, dim: int, seed: int) -> Model:
    """Input rows uniform in [-1/dim, 1/dim) (gensim's; the C tool's half-width learns measurably
    slower on short runs), output rows zero.

    >>> m = init_model(3, 4, seed=1)
    >>> m.win.shape, m.win.dtype.name, float(abs(m.win).max()) < 0.25, float(abs(m.wout).max())
    ((3, 4), 'float32', True, 0.0)
    """
    rng = np.random.default_rng([seed, vocab_size, dim])
    win = rng.random((vocab_size, dim), dtype=np.float32)
    # In place: each worker builds its model with this, beside its shards (no temporaries).
    win -= np.float32(0.5)
    win *= np.float32(2.0)
    win /= np.float32(dim)
    return Model(win, np.zeros((vocab_size, dim), np.float32))


INIT_CHUNK = 65536  # rows drawn at a time by init_rows


def init_rows(vocab_size: int, dim: int, seed: int, rows: np.ndarray) -> Model:
    """Rows ``rows`` (sorted ids) of ``init_model(vocab_size, dim, seed)``, without its whole
    matrix: the same random stream, drawn a chunk of rows at a time.

    >>> whole, some = init_model(300, 4, 1), init_rows(300, 4, 1, np.array([0, 150, 299]))
    >>> bool((some.win == whole.win[[0, 150, 299]]).all()), some.wout.shape
    (True, (3, 4))
    """
    rng = np.random.default_rng([seed, vocab_size, dim])
    win = np.empty((len(rows), dim), np.float32)
    for lo in range(0, vocab_size, INIT_CHUNK):
        hi = min(lo + INIT_CHUNK, vocab_size)
        chunk = rng.random((hi - lo, dim), dtype=np.float32)
        a, b = np.searchsorted(rows, (lo, hi))
        if a < b:
            part = chunk[rows[a:b] - lo]
            part -= np.float32(0.5)
            part *= np.float32(2.0)
            part /= np.float32(dim)
            win[a:b] = part
    return Model(win, np.zeros((len(rows), dim), np.float32))


def diverged(alpha: float, what: str) -> ConfigError:
    return ConfigError(f"training diverged ({what}); lower train.alpha (now {alpha}), e.g. --set alpha={alpha / 5:g}")


def check_finite(model: Model, alpha: float) -> None:
    """Refuse to publish a model with NaN or infinite values (a learning rate that diverged).

    >>> check_finite(Model(np.array([[np.nan]], np.float32), np.zeros((1, 1), np.float32)), 0.5)
    Traceback (most recent call last):
    ...
    nsdist.errors.ConfigError: training diverged (the vectors hold NaN or infinite values); lower train.alpha (now 0.5), e.g. --set alpha=0.1
    """
    for matrix in (model.win, model.wout):
        for lo in range(0, len(matrix), 65536):  # a slice at a time: no model-sized temporary
            if not np.isfinite(matrix[lo:lo + 65536]).all():
                raise diverged(alpha, "the vectors hold NaN or infinite values")
