"""nsdist: distributed skip-gram negative-sampling (word2vec) training on Dask."""

__version__ = "0.1.0"
