"""nsdist: distributed skip-gram negative-sampling (word2vec) training on Dask.

>>> import nsdist
>>> callable(nsdist.load)
True
"""

__version__ = "0.1.0"

from .api import train  # noqa: E402
from .outputs import Embeddings, load  # noqa: E402

__all__ = ["Embeddings", "load", "train", "__version__"]
