"""Graph jobs on the workers: random walks as the corpus (the tasks; cluster/graph.py places them).

A graph job reads its edge blocks, builds one sorted node table (a tree reduction), maps the
edges to node indices, sums the out-degrees, builds the adjacency (graph.build_csr) once and
lets every worker that generates walks fetch it. Walks are the sentences: ``Walks`` holds them
as global node indices, the counts are a bincount per walk block summed in a tree, and the
vocabulary is built from the node table and those counts exactly as a corpus's is
(vocab.build_vocab). ``node_lookup`` maps node indices to vocabulary ids for the encoding, which
is then the corpus's (encode.encode_scanned), so shards, training, checkpoints and outputs do
not know the corpus was a graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..config import GraphConfig
from ..corpus import Block, parquet_file, is_parquet, plan_blocks
from ..counts import SCHEMA, Counts
from ..errors import DataError
from ..formats import write_file
from ..vocab import Vocab, build_vocab
from .walks import random_walks, walk_starts

# Walk tokens per walk block (one task): big enough that a task is not dominated by its overhead,
# small enough that blocks spread evenly over the shards (4 MiB of int32 node ids).
WALK_BLOCK_TOKENS = 2**20


def plan_edge_blocks(files: list[tuple[str, int]], storage_options, blocksize: int, g: GraphConfig,
                     flag: str = "--edges") -> list[Block]:
    """The blocks of a graph's edge lists: text byte ranges of about ``blocksize`` (lines are
    never cut: corpus.plan_blocks) and Parquet row groups, whose footers are checked for the
    node columns here, on the client, before a run is claimed. ``flag``: the option the files
    came from, which the messages name (``--edges``; evaluation files have src and dst columns)."""
    blocks = []
    for url, size in files:
        if not is_parquet(url):
            blocks += plan_blocks(None, storage_options, blocksize, files=[(url, size)])
            continue
        with storage.open_read(url, storage_options) as f:
            pf = parquet_file(f, url, storage_options, flag)
            schema = pf.schema_arrow
            for key in ("src_column", "dst_column"):
                name = getattr(g, key)
                if name not in schema.names:
                    raise DataError(f"edge list {storage.scrub(url, storage_options)!r} has no column {name!r} "
                                    f"(its columns: {', '.join(schema.names)}); "
                                    + (f"set graph.{key} to the node column" if flag == "--edges"
                                       else "write the edges as two id columns named src and dst"))
                kind = schema.field(name).type
                if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                    raise DataError(f"column {name!r} of edge list {storage.scrub(url, storage_options)!r} is {kind}; "
                                    "node ids must be integers or strings")
            ints = pa.types.is_integer(schema.field(g.src_column).type)
            blocks += [Block(url, i, None, parquet=True, ints=ints) for i in range(pf.metadata.num_row_groups)]
    return blocks


@dataclass(frozen=True)
class Walks:
    """Walks of a graph job: walk k is ids[offsets[k]:offsets[k+1]], as node indices into the
    job's node table. Encoded like a scanned corpus block without sessions (``shown_ids``)."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, starts with 0
    shown_ids = None

    @property
    def sentences(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.offsets.nbytes


def walk_blocks(nodes: int, walks_per_node: int, walk_length: int,
                block_tokens: int = WALK_BLOCK_TOKENS) -> list[tuple[int, int]]:
    """Walk ranges [lo, hi) of the job's ``nodes * walks_per_node`` walks, one task each, of
    about ``block_tokens`` tokens (walks of ``walk_length`` nodes; dead ends make fewer).

    >>> walk_blocks(10, 2, 80, 400)
    [(0, 5), (5, 10), (10, 15), (15, 20)]
    """
    total = nodes * walks_per_node
    per = max(1, block_tokens // max(walk_length, 1))
    return [(lo, min(lo + per, total)) for lo in range(0, total, per)]


def make_walks(csr, lo: int, hi: int, g: GraphConfig, seed: int) -> Walks:
    """Walks lo..hi-1 of the job (walk w: walk index w // nodes of a start node in that index's
    shuffled order, graph.walk_starts), from (seed, node, walk index) only."""
    starts, index = walk_starts(csr.nodes, g.walks_per_node, lo, hi, seed)
    ids, offsets = random_walks(csr, starts, index, g.walk_length, g.p, g.q, seed)
    return Walks(ids, offsets)


def node_counts(walks: Walks, nodes: int) -> np.ndarray:
    """Occurrences of each node in these walks (int64; summed over blocks with ``add``)."""
    return np.bincount(walks.ids, minlength=nodes).astype(np.int64)


def add(*arrays: np.ndarray) -> np.ndarray:
    return np.sum(arrays, axis=0)


def node_words(nodes: pa.Array) -> pa.Array:
    """The node table as the vocabulary's words: integer ids as their decimal strings."""
    return nodes if pa.types.is_large_string(nodes.type) else pc.cast(nodes, pa.large_string())


def node_vocab(nodes: pa.Array, counts: np.ndarray, walks: int, min_count: int, max_vocab: int | None) -> Vocab:
    """The vocabulary of a graph job: its nodes by falling walk count (vocab.build_vocab)."""
    table = pa.Table.from_arrays([node_words(nodes), pa.array(counts, pa.int64())], schema=SCHEMA)
    return build_vocab(Counts(table, int(counts.sum()), walks), min_count, max_vocab)


def node_lookup(nodes: pa.Array, vocab: Vocab) -> np.ndarray:
    """Each node's vocabulary id (int32; -1: dropped by min_count or max_vocab)."""
    return pc.fill_null(pc.index_in(node_words(nodes), value_set=vocab.words), -1).to_numpy().astype(np.int32)


def walk_lengths(walks: Walks) -> int:
    return len(walks.ids)


def write_walks(url: str, walks: Walks, nodes: pa.Array, storage_options) -> dict:
    """One part of ``--save-walks``: the walks as text, one per line, node ids separated by spaces."""
    tokens = pc.take(node_words(nodes), pa.array(walks.ids))
    lines = pa.LargeListArray.from_arrays(pa.array(walks.offsets, pa.int64()), tokens)
    text = pc.binary_join(lines, pa.scalar(" ", pa.large_string()))
    data = ("\n".join(text.to_pylist()) + "\n").encode() if len(text) else b""
    return write_file(url, data, storage_options)
