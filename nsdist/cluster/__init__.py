"""The only package that talks to ``dask.distributed``.

- ``client``: connecting (``--scheduler``, ``DASK_SCHEDULER_ADDRESS`` or a LocalCluster; TLS),
  tree reductions, waiting while watching that workers stay;
- ``stages``: placing the scan, count, vocabulary and encoding tasks;
- ``warm``: placing a warm start: the new words' co-occurrence sums, or (partitioned) its rows;
- ``graph``: a graph job's edges, adjacency and walks, which then take the corpus's path;
- ``walkers``: the partitioned layout: node ranges, one per worker, and walks in supersteps;
- ``models``: the one model each worker process holds and trains in place (worker state);
- ``training``: rounds, merges, checkpoints and recovery from a lost worker;
- ``parts`` and ``partitioned``: the partitioned layout's worker state and its placement;
- ``plugin``: what every worker gets set up with (allocator, a log without nsdist's expected
  errors, Dask's sizes of nsdist objects).

The stages (counts.py, vocab.py, encode.py), the kernels (sgns.py) and the planning math
(plan.py) know nothing of Dask; pipeline.py reads top to bottom and calls into here.
"""

from .client import (check_readable, close, compute, gather_alive, out_of_memory, connect, memory_limits, process_memory, session, setup_workers, submit, threads, tree_levels,
                     tree_reduce, workers)
from .models import ModelLost
from .plugin import ExpectedErrors, WorkerMemory
from .graph import check_adjacency, plan_layout, read_graph, walk_corpus
from .stages import Counted, count_vocab, encode_shards, release_vocab, sample_vocab
from .training import Once, Source, Training, train_epochs
from .warm import by_rows, new_row_sums
from .partitioned import partition

__all__ = ["check_readable", "close", "out_of_memory", "compute", "connect", "session", "memory_limits", "process_memory", "setup_workers", "submit", "threads", "tree_levels", "tree_reduce",
           "workers", "ModelLost", "ExpectedErrors", "WorkerMemory", "Counted", "count_vocab", "release_vocab", "encode_shards", "new_row_sums",
           "sample_vocab", "check_adjacency", "plan_layout", "read_graph", "walk_corpus", "Training", "train_epochs",
           "gather_alive", "partition", "Once", "Source", "by_rows"]
