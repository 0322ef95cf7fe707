"""nsdist: distributed skip-gram negative-sampling (word2vec) training on Dask.

``nsdist.train`` runs a job and publishes it; ``nsdist.load`` reads published vectors as
``Embeddings``, which answer gensim's ``KeyedVectors`` queries; ``nsdist.read_neighbors`` reads a run's top-k table.

>>> import nsdist
>>> callable(nsdist.train) and callable(nsdist.load)
True
"""

import importlib

__version__ = "0.1.0"

# Imported when first used (PEP 562): the ``nsdist`` command imports the package before it knows
# what it will run, and starts a local cluster's workers while it imports the rest.
_EXPORTS = {"train": ".api", "Embeddings": ".embeddings", "load": ".runs", "read_neighbors": ".runs"}

__all__ = ["Embeddings", "load", "read_neighbors", "train", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
