"""nsdist: distributed skip-gram negative-sampling (word2vec) training on Dask.

``nsdist.train`` runs a job and publishes it; ``nsdist.load`` reads published vectors as
``Embeddings``, which answer gensim's ``KeyedVectors`` queries; ``nsdist.read_neighbors`` reads a run's top-k table.

>>> import nsdist
>>> callable(nsdist.train) and callable(nsdist.load)
True
"""

__version__ = "0.1.0"

from .api import train  # noqa: E402
from .embeddings import Embeddings  # noqa: E402
from .runs import load, read_neighbors  # noqa: E402

__all__ = ["Embeddings", "load", "read_neighbors", "train", "__version__"]
