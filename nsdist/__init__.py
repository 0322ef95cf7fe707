"""nsdist: distributed skip-gram negative-sampling (word2vec) training on Dask.

>>> import nsdist
>>> callable(nsdist.load)
True
"""

__version__ = "0.1.0"

from .embeddings import Embeddings  # noqa: E402
from .outputs import load  # noqa: E402

__all__ = ["Embeddings", "load", "__version__"]
