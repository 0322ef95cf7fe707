"""The stages that run on the cluster before training: scan and count, build the vocabulary,
encode the shards that stay on the workers. The work itself is in counts.py, vocab.py and
encode.py; this module places it."""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from distributed import Client

from .. import progress
from ..config import JobConfig
from ..corpus import Block, iter_tokens, read_session_block, word_type
from ..counts import Counts, Scanned, merge_counts, scan, scan_sessions
from ..encode import Shard, encode_scanned
from ..memory import release_memory, released
from ..layout import expected_rows
from ..plan import block_workers, estimate_vocab, shard_plan
from ..shard import round_words
from .. import vocab_parts as vp
from ..vocab import Vocab
from .client import gather_alive
from .client import workers as client_workers


@dataclass
class Counted:
    """A job's corpus on the workers, counted: what every source (text, sessions, a graph's walks)
    hands to encoding and training.

    ``parts`` are futures of the vocabulary's consecutive id ranges (Vocab each, ``sizes`` words
    each: text's one per worker, where vocab_parts built it; a graph's one); ``vocab`` a future of
    the whole Vocab, assembled on one worker the first time a stage asks for it (the replicated
    layout's tables, a warm start, the top-k table's words); the partitioned layout reads the
    parts (``VocabParts``). ``blocks`` the futures of the read blocks (scans, or a graph's walk
    blocks) with ``block_tokens`` tokens each; ``lookups`` per block a future of the array the
    encoding maps the block's word indices (a graph's: node indices) through to vocabulary ids;
    ``word_type`` the words' type in the outputs ("string" or "int64"); ``graph`` a graph's entry
    in the manifest."""

    parts: list
    sizes: list[int]
    summary: dict
    blocks: list
    block_tokens: list[int]
    word_type: str
    lookups: list
    graph: dict | None = None
    whole: object = None  # the vocab future, once assembled
    client: object = None
    tag: str = ""  # the job's: the parts are published as the dataset VOCAB_DATASET + tag for tasks to read

    @property
    def vocab(self):
        if self.whole is None:
            self.whole = (self.parts[0] if len(self.parts) == 1 else
                          self.client.submit(vp.vocab_of, None, *self.parts))
        return self.whole

    def slices(self, ranges: list[tuple[int, int]], key: str) -> list:
        """Futures of words [lo, hi) of each of ``ranges`` (Vocab, compact), each sliced by a
        task that depends on the parts it reads: Dask runs it where they are, so no part crosses
        the network whole (``VocabParts.slice`` fetches whole parts into the task)."""
        starts = vp.offsets(self.sizes) + [sum(self.sizes)]
        out = []
        for b, (lo, hi) in enumerate(ranges):
            mine = [i for i, (a, z) in enumerate(zip(starts[:-1], starts[1:])) if a < hi and lo < z]
            out.append(self.client.submit(_vocab_slice, lo, hi, [starts[i] for i in mine],
                                          *[self.parts[i] for i in mine], key=f"{key}-{b}"))
        return out

    def view(self) -> VocabParts:
        """The parts as tasks read them, a range at a time (``VocabParts``), published on the
        scheduler until the job ends (``release_vocab``)."""
        name = VOCAB_DATASET + self.tag
        if name not in self.client.list_datasets():
            self.client.publish_dataset(**{name: self.parts})
        return VocabParts(name, vp.offsets(self.sizes) + [sum(self.sizes)])


VOCAB_DATASET = "nsdist-vocab-"


def release_vocab(client: Client, tag: str) -> None:
    """Forget job ``tag``'s published vocabulary parts (the job holds them no more)."""
    with contextlib.suppress(Exception):  # never published, or the scheduler is gone
        client.unpublish_dataset(VOCAB_DATASET + tag)


class _Picks:
    """One column of the vocabulary (words or counts) by ids, the part that holds each id read
    when asked and kept for the next (``report.sample`` picks a few hundred, mostly in order; the
    columns of one ``VocabParts.cached`` copy share the part they read)."""

    def __init__(self, parts: VocabParts, column: str):
        self.parts, self.column = parts if parts._held is not None else parts.cached(), column

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, key):
        ids = np.atleast_1d(np.asarray(key, np.int64))
        where = np.searchsorted(self.parts.starts, ids, side="right") - 1
        out = []
        for i, w in zip(ids.tolist(), where.tolist()):
            x = getattr(self.parts.part(w), self.column)[i - self.parts.starts[w]]
            out.append(x.as_py() if hasattr(x, "as_py") else x)
        return out[0] if np.ndim(key) == 0 else np.array(out)


def _vocab_slice(lo: int, hi: int, firsts: list[int], *parts: Vocab) -> Vocab:
    """Words [lo, hi) of the vocabulary, compact, from the consecutive ``parts`` that hold them
    (``firsts``: each part's first id)."""
    cuts = []
    for a, p in zip(firsts, parts):
        i, j = max(lo, a) - a, min(hi, a + len(p.counts)) - a
        cuts.append((p.words[i:j], p.counts[i:j]))
    if not cuts:
        return Vocab(pa.array([], pa.large_string()), np.zeros(0, np.int64))
    return Vocab(pa.concat_arrays([w for w, _ in cuts]), np.concatenate([c for _, c in cuts]))


def _range_vocab(part: vp.Range, keep: int) -> Vocab:
    """A range's words and counts (its first ``keep``: max_vocab cuts the last ranges)."""
    return Vocab(part.words[:keep], part.counts[:keep])


@dataclass(frozen=True)
class VocabParts:
    """The vocabulary's parts as a task reads them: a dataset of their futures published on the
    scheduler (``name``), each part fetched from its worker when the task asks, so a task holds
    one part at a time (``distributed.worker_client`` in a task: Dask's tasks-from-tasks API).
    ``starts``: each part's first id, and the vocabulary's size last."""

    name: str
    starts: list
    # In a copy made by ``cached``, the last part read, kept for the next read of the same part.
    # Never in the object a task was given: Dask keeps a task's arguments on its worker while
    # the task's result is held, and they would hold the part as long.
    _held: list | None = field(default=None, init=False, compare=False, repr=False)

    def __len__(self) -> int:
        return self.starts[-1]

    def __reduce__(self):
        return VocabParts, (self.name, self.starts)  # a copy never carries a part it read

    def cached(self) -> VocabParts:
        """A copy that keeps the last part it read for the next read of the same part, for a
        task that reads the vocabulary more than once (vocab.tsv, then the report's words and
        counts: a one-part vocabulary read once, not three times, 14-20 ms a read on 2 local
        workers). It holds that part as long as the task holds it."""
        copy = VocabParts(self.name, self.starts)
        object.__setattr__(copy, "_held", [-1, None])
        return copy

    def part(self, i: int) -> Vocab:
        held = self._held
        if held is not None and held[0] == i:
            return held[1]
        from distributed import worker_client

        if held is not None:
            held[:] = [-1, None]  # freed before the next part arrives
        # The task leaves its worker's thread pool while it waits (worker_client secedes): a
        # part lost with a worker is computed again, which needs a thread this task would hold.
        with worker_client() as client:
            part = client.gather(client.get_dataset(self.name)[i])
        if held is not None:
            held[:] = [i, part]
        return part

    def blocks(self):
        """The parts in id order, one at a time."""
        for i in range(len(self.starts) - 1):
            yield self.part(i)

    @property
    def words(self) -> _Picks:
        return _Picks(self, "words")

    @property
    def counts(self) -> _Picks:
        return _Picks(self, "counts")

    def slice(self, lo: int, hi: int) -> Vocab:
        """Words [lo, hi), compact, from the parts they are in (fetched into the task)."""
        mine = [i for i, (a, z) in enumerate(zip(self.starts[:-1], self.starts[1:])) if a < hi and lo < z]
        return _vocab_slice(lo, hi, [self.starts[i] for i in mine], *[self.part(i) for i in mine])


# Task functions: module-level, plain inputs and outputs, never mutating their arguments.

def _scan_block(block: Block, storage_options, lowercase: bool, column: str, shown_column: str | None = None,
                order_column: str | None = None) -> Scanned:
    if shown_column or order_column:  # sessions: a Parquet row group, read whole
        clicked, shown = read_session_block(block, storage_options, column, shown_column, order_column)
        scanned = scan_sessions(clicked, shown) if shown is not None else scan([clicked])
    else:  # 1 MiB pieces: Arrow needs about 10x a piece's size, so a whole block at once would not fit.
        scanned = scan(iter_tokens(block, storage_options, lowercase, column))
    release_memory()  # the scan's transient memory (about 3x the block): ~20% of the scan time
    return scanned


def _encode_piece(lo: int, hi: int, lookup: np.ndarray, max_len: int, block) -> Shard:
    """Encode the chunks that start in token range [lo, hi) of a scanned block (or a graph's walk
    block), its word indices mapped to vocabulary ids through ``lookup``: one piece of a shard
    (each block's scan is freed once its pieces exist; a shard is never concatenated)."""
    release_memory()  # what earlier scans and pieces freed, before this piece is allocated
    return encode_scanned([(block, lo, hi)], None, max_len, lookup=lookup)


def _count_block(block: Block, storage_options, lowercase: bool, column: str, shown_column: str | None,
                 order_column: str | None) -> Counts:
    return _scan_block(block, storage_options, lowercase, column, shown_column, order_column).to_counts()


def _sample_summary(fraction: float, min_count: int, max_vocab: int | None, models: int, groups: list[int],
                    *parts: Counts) -> dict:
    counts = merge_counts(*parts)
    sampled = counts.table["count"].to_numpy()
    vocab = estimate_vocab(sampled, fraction, min_count, max_vocab)
    # The vocabulary's counts, each with how many words have it: the sample's, scaled up, and
    # the words it missed, at min_count.
    kept = np.sort(sampled[sampled >= min_count * fraction])[::-1][:vocab]
    kept, times = np.unique(kept / fraction, return_counts=True)
    kept, times = np.append(kept, float(min_count)), np.append(times, vocab - times.sum())
    held, head = expected_rows(kept, models, times)
    return {"sample_tokens": counts.tokens, "sample_distinct_words": counts.table.num_rows,
            "tokens": round(counts.tokens / fraction), "vocab_size": vocab, "held_rows": held, "head_rows": head,
            "group_rows": {g: expected_rows(kept, models * g, times)[0] for g in groups}}


def sample_vocab(client: Client, cfg: JobConfig, blocks: list[Block], picks: list[int], fraction: float,
                 tag: str, models: int = 1, groups: list[int] = (1,)) -> dict:
    """Count the blocks ``picks`` (``fraction`` of the corpus) on the workers; the corpus's
    tokens and vocabulary size estimated from them (plan.estimate_vocab), and the rows each of
    ``models`` models would hold in the partitioned layout (layout.expected_rows), in all, and
    in one of each count of ``groups`` of rounds."""
    t = cfg.train
    read_args = (cfg.storage_options, t.lowercase, cfg.parquet_column, cfg.negatives_column, cfg.order_column)
    counted = [client.submit(_count_block, blocks[i], *read_args, key=f"sample-{tag}-{i}") for i in picks]
    return client.submit(_sample_summary, fraction, t.min_count, t.max_vocab, models, list(groups), *counted,
                         key=f"sample-summary-{tag}").result()


def _fold(scanned: Scanned, local: vp.Local | None) -> vp.Local:
    return vp.local_counts(scanned, into=local)


def _tokens(scanned: Scanned) -> int:
    return len(scanned.ids)


def _totals(local: vp.Local) -> tuple[int, int]:
    return local.tokens, local.sentences


def _distinct(bucket: vp.Bucket) -> int:
    return int((bucket.counts > 0).sum())


def _vocab_tokens(vocab: Vocab) -> int:
    return vocab.total


def _ranks(part: vp.Range, bucket: int) -> np.ndarray:
    return part.ranks[bucket]


def _len(x) -> int:
    return len(x)


def count_vocab(client: Client, cfg: JobConfig, blocks: list[Block], tag: str, shards: int | None = None) -> Counted:
    """Read each block once, count, build the vocabulary in parts (vocab_parts.py), and give each
    block the ids of its words, so that no worker holds all distinct words to build the
    vocabulary, nor the vocabulary to encode.

    Each worker folds its blocks' counts into one dictionary as they are scanned (each block's
    own dictionary is freed then); the blocks' token indices stay on the workers until
    ``encode_shards`` has turned them into ``shards`` shards (placed for that count; default one
    per worker).
    """
    t = cfg.train
    read_args = (cfg.storage_options, t.lowercase, cfg.parquet_column, cfg.negatives_column, cfg.order_column)
    workers = client_workers(client)
    places = block_workers([b.length for b in blocks], shards or len(workers), workers, cfg.blocksize)
    parts = _VocabParts(client, workers, tag)
    # Dask refuses allow_other_workers without workers: with no worker known, a block goes anywhere.
    group = [workers.index(w) if w else None for w in places]
    bodies, tokens, local = [], [], [None] * parts.n
    for i, (b, k) in enumerate(zip(blocks, group)):
        scanned = parts.submit(_scan_block, b, *read_args, name=f"scan-{i}", at=k)
        # Submitted after its scan and before the next block's: a fold runs as soon as its block
        # is scanned (Dask runs earlier submissions first), so a worker holds one dictionary.
        local[k or 0] = parts.submit(_fold, scanned, local[k or 0], name=f"vocab-fold-{i}", at=k)
        bodies.append(parts.submit(vp.body, scanned, name=f"body-{i}", at=k))
        tokens.append(parts.submit(_tokens, scanned, name=f"n-{i}", at=k))
        del scanned  # the client holds its parts, so that Dask frees each block's dictionary once folded
    local = [loc if loc is not None else parts.submit(vp.local_counts, name=f"vocab-fold-none-{k}", at=k)
             for k, loc in enumerate(local)]  # a worker without blocks: its empty dictionary
    with progress.stage("counting", len(blocks), unit=" blocks") as bar:
        bar.follow(tokens)
        lookups, vocab, sizes, summary = parts.build(local, [k or 0 for k in group], t.min_count, t.max_vocab)
        block_tokens = gather_alive(client, tokens)
        summary = {**summary, "raw_tokens": sum(block_tokens)}
    return Counted(vocab, sizes, summary, bodies, block_tokens, word_type(blocks), lookups, client=client, tag=tag)


class Placer:
    """A stage's tasks, each on a worker by index (``at``: the workers' ``at % n``-th, which the
    scheduler may still move; None: anywhere), keyed ``{name}-{tag}``; each returns the memory
    its temporaries freed (``memory.released``)."""

    def __init__(self, client: Client, workers: list[str], tag: str):
        self.client, self.workers, self.tag = client, workers, tag
        self.n = max(1, len(workers))

    def submit(self, fn, *args, name: str, at: int | None = None):
        place = ({"workers": [self.workers[at % len(self.workers)]], "allow_other_workers": True}
                 if at is not None and self.workers else {})
        return self.client.submit(released, fn, *args, key=f"{name}-{self.tag}", **place)


class _VocabParts(Placer):
    """The task graph of vocab_parts.py's three exchanges: one bucket and one range per worker,
    bucket q and range q merged on worker q, each worker's blocks folded where they were scanned.

    The client lets go of each step's futures as soon as the steps that read them are submitted:
    Dask frees a result once no client holds it and its dependents have run, so a worker holds
    a step's data only while the next one needs it (all at once, they were most of counting's peak)."""

    def build(self, local: list, group: list[int], min_count: int, max_vocab: int | None):
        """Per block the future of its lookup; the vocabulary's futures, their sizes; the summary.
        ``local``: each worker's folded blocks (vp.Local), ``group``: each block's worker."""
        n, sub = self.n, self.submit
        totals = [sub(_totals, loc, name=f"vocab-totals-{k}", at=k) for k, loc in enumerate(local)]
        split = [sub(vp.split_local, loc, n, name=f"vocab-split-{k}", at=k) for k, loc in enumerate(local)]
        buckets = [sub(vp.merge_bucket, *[sub(operator.getitem, s, q, name=f"vocab-piece-{k}-{q}", at=k)
                                          for k, s in enumerate(split)], name=f"vocab-bucket-{q}", at=q)
                   for q in range(n)]
        del split
        distinct = [sub(_distinct, b, name=f"vocab-distinct-{q}", at=q) for q, b in enumerate(buckets)]
        ordered = [sub(vp.sort_bucket, b, min_count, name=f"vocab-sort-{q}", at=q) for q, b in enumerate(buckets)]
        keys = sub(vp.splitters, n, *[sub(vp.sample, o, name=f"vocab-sample-{q}", at=q) for q, o in enumerate(ordered)],
                   name="vocab-splitters")
        cuts = [sub(vp.cut_bucket, o, keys, name=f"vocab-cut-{q}", at=q) for q, o in enumerate(ordered)]
        ranges = [sub(vp.merge_range, *[sub(operator.getitem, c, r, name=f"vocab-cut-{q}-{r}", at=q)
                                        for q, c in enumerate(cuts)], name=f"vocab-range-{r}", at=r)
                  for r in range(n)]
        del cuts
        sizes = gather_alive(self.client, [sub(_len, r, name=f"vocab-size-{i}", at=i) for i, r in enumerate(ranges)])
        starts = vp.offsets(sizes)
        # Each range's words and counts stay on its worker (max_vocab keeps the first ids).
        keep = [max(0, min(n, (max_vocab if max_vocab is not None else sum(sizes)) - a))
                for n, a in zip(sizes, starts)]
        vocab = [sub(_range_vocab, r, k, name=f"vocab-{i}", at=i) for i, (r, k) in enumerate(zip(ranges, keep)) if k]
        ids = [sub(vp.bucket_ids, b, o, starts, max_vocab,
                   *[sub(_ranks, r, q, name=f"vocab-ranks-{i}-{q}", at=i) for i, r in enumerate(ranges)],
                   name=f"vocab-ids-{q}", at=q) for q, (b, o) in enumerate(zip(buckets, ordered))]
        del ranges, ordered
        known = [sub(vp.local_ids, loc, n, *[sub(vp.answer, ids[q], buckets[q], k, name=f"vocab-answer-{q}-{k}", at=q)
                                             for q in range(n)], name=f"vocab-known-{k}", at=k)
                 for k, loc in enumerate(local)]
        del ids, buckets
        seen = [0] * n  # each worker's blocks in the order they were folded
        lookups = []
        for i, k in enumerate(group):
            lookups.append(sub(vp.block_lookup, local[k], known[k], seen[k], name=f"vocab-lookup-{i}", at=k))
            seen[k] += 1
        del known
        summary = {"vocab_size": sum(keep),
                   "vocab_tokens": sum(gather_alive(self.client, [sub(_vocab_tokens, v, name=f"vocab-tokens-{i}", at=i)
                                                                  for i, v in enumerate(vocab)])),
                   "sentences": sum(s for _, s in gather_alive(self.client, totals)),
                   "distinct_words": sum(gather_alive(self.client, distinct))}
        return lookups, vocab, [k for k in keep if k], summary


def encode_shards(client: Client, cfg: JobConfig, counted: Counted, n_shards: int, rounds: int, tag: str):
    """Encode the counted blocks into ``n_shards`` training shards of about equal token counts:
    (shards, words[shard, round], bytes of all shards). A shard is a list of piece futures, one per block it draws
    from (``_encode_piece``), in order; training takes the pieces as one shard
    (``shard.round_slices``), so no worker ever holds a shard and its scanned blocks twice.
    Empties ``counted.blocks``: each block is freed as soon as its pieces are built."""
    t = cfg.train
    scanned, block_tokens, lookups = counted.blocks, counted.block_tokens, counted.lookups
    # Deal the shards round-robin over the workers: model m trains shards m, m + M, ... on worker
    # m (training.py), so each shard is built where it trains; left to itself the scheduler may
    # build several next to the same scanned blocks, on one worker.
    workers = client_workers(client)
    shards = []
    for s, plan in enumerate(shard_plan(block_tokens, n_shards)):
        # Dask refuses allow_other_workers without workers: no worker known yet places it anywhere.
        place = {"workers": [workers[s % len(workers)]], "allow_other_workers": True} if workers else {}
        shards.append([client.submit(_encode_piece, lo, hi, lookups[b], t.max_sentence_length, scanned[b],
                                     key=f"shard-{tag}-{s}-{b}", **place) for b, lo, hi in plan]
                      # more shards than tokens: an empty one
                      or [client.submit(Shard, np.zeros(0, np.int32), np.zeros(1, np.int64), key=f"shard-{tag}-{s}",
                                        **place)])
    scanned.clear()
    lookups.clear()
    with progress.stage("encoding", sum(len(p) for p in shards), unit=" pieces") as bar:
        bar.follow([p for pieces in shards for p in pieces])
        words = gather_alive(client, [client.submit(round_words, pieces, rounds, key=f"rw-{tag}-{s}")
                               for s, pieces in enumerate(shards)])
        nbytes = gather_alive(client, [client.submit(operator.attrgetter("nbytes"), p, key=f"nbytes-{p.key}")
                                for pieces in shards for p in pieces])
    return shards, np.array(words, dtype=np.int64).reshape(n_shards, rounds), sum(nbytes)
