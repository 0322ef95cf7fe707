"""What the fork server of a local cluster (forkserver.py) imports and initialises once, so that
every worker forked from it has it: Dask's worker, nsdist's task modules, and numba's compiler,
which a first kernel call initialises (one that is cached: a fresh install's workers compile the
kernels themselves, and the job says so, compiled.fresh). Then all of it is frozen
(``gc.freeze``): the garbage collector of the server, at its exit, and of each worker forked from
it leaves those objects alone (module state, which lives as long as the process). Only the fork
server imports this module (the test suite's doctest collection leaves it out)."""

import gc

import numpy as np
from distributed import Nanny, Worker  # noqa: F401

from ..compiled import fresh
from ..encode import Shard
from ..warm_parts import beside_new
from . import models, parts, plugin, stages, walkers, warm  # noqa: F401

if not fresh():
    beside_new(np.array([-1, 0], np.int32), 1, Shard(np.array([0, 1], np.int32), np.array([0, 2])))
gc.freeze()
