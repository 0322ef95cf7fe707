"""What docs/scaling.md predicts for one epoch: bytes that cross between workers per round, and
memory per worker. Pure numpy; ``bench_scale.py`` checks it against a measured run, and
``python benchmarks/scale_model.py`` prints the 100-worker extrapolation.

The model (one model per worker, M workers, R rounds per epoch, frequency tiers):

* Round r synchronises rows [0, L_r) (``nsdist.plan.sync_rows``); row i was last synchronised
  T_i rounds ago (all rows at the previous epoch's end).
* In T rounds a model trains N*T tokens (N per round). Its ``win`` row i changes when word i
  occurs, kept by subsampling: Poisson with mean N T p_i k_i. Its ``wout`` row i changes when
  i is a center word or a noise draw (``negative`` per kept token, noise q_i):
  mean (N p_i k_i + negative N_k q_i) T, N_k = N sum_j p_j k_j.
* A model other than the block's owner sends row i when it or the owner changed it
  (``merge.changed``): probability 1 - (1 - P_i)^2; the owner sends a merged row to the M - 1
  other workers when any model changed it: 1 - (1 - P_i)^M. Models are treated as independent.
* Bytes per row: a sent row carries ``dim`` float32, a uint32 count and an int32 id; a merged
  row ``dim`` float32 and an id.
* Memory per worker: the model, its shards (4 B per token, 8 B per sentence), per-word tables
  (update counts 8 B, noise and subsampling tables 16 B, the vocabulary about 24 B), and in
  flight at the largest round, with B blocks (``nsdist.plan.merge_blocks``) dealt over the M
  workers: what an owner receives for one block (M - 1 parts), what it sends at once (one part
  to each of the other owners), and the merged rows of its own blocks, held until installed.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np


def sync_rows(round_: int, rounds: int, vocab_size: int, base: int | None) -> int:
    """nsdist.plan.sync_rows (copied so that this model runs without nsdist installed)."""
    if base is None or round_ == rounds - 1:
        return vocab_size
    r = round_ + 1
    return min(vocab_size, base << ((r & -r).bit_length() - 1))


def keep_probs(counts: np.ndarray, sample: float) -> np.ndarray:
    counts = np.asarray(counts, np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    t = sample * counts.sum()
    return np.minimum((np.sqrt(counts / t) + 1.0) * t / counts, 1.0)


def merge_blocks(rows: int, vocab_size: int, models: int, model_bytes: int) -> int:
    """nsdist.plan.merge_blocks (copied, like sync_rows)."""
    share = max(0.125, 4 * 2**20 / max(model_bytes, 1))
    return max(1, min(math.ceil((models - 1) * rows / (vocab_size * share)), 4 * models, rows))


def predict_epoch(counts: np.ndarray, *, models: int, rounds: int, tokens_per_model_round: float, dim: int,
                  negative: int = 5, sample: float = 1e-3, ns_exponent: float = 0.75, base: int | None = 1024,
                  sentence_tokens: float = 20.0) -> dict:
    """Per round: synchronised rows and bytes crossing between workers; per worker: memory."""
    counts = np.asarray(counts, np.float64)
    v = len(counts)
    p = counts / counts.sum()
    k = keep_probs(counts, sample)
    q = counts ** ns_exponent
    q /= q.sum()
    n = float(tokens_per_model_round)
    rate_in = n * p * k
    rate_out = rate_in + negative * n * float((p * k).sum()) * q
    part_row, merged_row = dim * 4 + 8, dim * 4 + 4
    model_bytes = 2 * v * dim * 4
    last = np.full(v, -1)
    per_round, peak_flight = [], 0.0
    for r in range(rounds):
        rows = sync_rows(r, rounds, v, base)
        t = (r - last[:rows]).astype(np.float64)
        last[:rows] = r
        sent = merged = 0.0
        for rate in (rate_in[:rows], rate_out[:rows]):
            changed = -np.expm1(-rate * t)  # 1 - exp(-mean)
            sent += float((1.0 - (1.0 - changed) ** 2).sum())
            merged += float((1.0 - (1.0 - changed) ** models).sum())
        part_bytes = (models - 1) * sent * part_row  # every non-owner sends its rows of every block
        merged_bytes = (models - 1) * merged * merged_row
        per_round.append({"round": r, "rows": rows, "bytes": part_bytes + merged_bytes,
                          "part_bytes": part_bytes, "merged_bytes": merged_bytes})
        blocks = merge_blocks(rows, v, models, model_bytes)
        one_part = sent / blocks * part_row  # one model's rows of one block
        owners = min(models, blocks)
        flight = ((models - 1) * one_part + (owners - 1) * one_part
                  + merged / owners * merged_row)
        peak_flight = max(peak_flight, flight)
    tokens = n * models * rounds
    shard_bytes = tokens / models * (4 + 8 / sentence_tokens)
    tables = 48 * v
    return {"rounds": per_round, "bytes_per_epoch": sum(x["bytes"] for x in per_round),
            "model_bytes": model_bytes, "shard_bytes_per_worker": shard_bytes, "in_flight_bytes": peak_flight,
            "tables_bytes": tables, "memory_per_worker": model_bytes + shard_bytes + tables + peak_flight}


def predict_partitioned(counts: np.ndarray, *, models: int, rounds: int, tokens_per_model_round: float, dim: int,
                        negative: int = 5, sample: float = 1e-3, ns_exponent: float = 0.75, base: int | None = 1024,
                        sentence_tokens: float = 20.0) -> dict:
    """The partitioned layout (nsdist/layout.py): a model holds the rows its shards use, and the
    masters of 1/M of the rows. Word i is in a model's shards with probability
    h_i = 1 - exp(-c_i / M) (its c_i occurrences spread evenly), so k_i = M h_i models hold it.
    Per round a holder sends the owner the synchronised rows it changed (rows it alone holds:
    only in the epoch's last round), and every holder gets back the merged rows some holder
    changed; the owner is one of them with probability about 1 / M."""
    counts = np.asarray(counts, np.float64)
    v = len(counts)
    held = -np.expm1(-counts / models)  # P(word in a model's shards)
    k = np.maximum(models * held, 1.0)
    p = counts / counts.sum()
    keep = keep_probs(counts, sample)
    n = float(tokens_per_model_round)
    # A holder trains a word's share of its occurrences: rates per holder, not per model.
    rate_in = n * models * p * keep / k
    q = counts ** ns_exponent
    # Negatives come from the rows a model holds: q restricted to them (their expected mass).
    rate_out = rate_in + negative * n * float((p * keep).sum()) * q / float((q * held).sum())
    part_row, merged_row = dim * 4 + 8, dim * 4 + 4
    last = np.full(v, -1)
    total = 0.0
    for r in range(rounds):
        rows = sync_rows(r, rounds, v, base)
        t = (r - last[:rows]).astype(np.float64)
        last[:rows] = r
        shared = (k[:rows] > 1.5) if r < rounds - 1 else np.ones(rows, bool)
        for rate in (rate_in[:rows], rate_out[:rows]):
            changed = -np.expm1(-rate * t)
            total += float((k[:rows] * changed * shared).sum()) * part_row * (1 - 1 / models)
            anyone = 1.0 - (1.0 - changed) ** k[:rows]
            total += float((k[:rows] * anyone * (k[:rows] > 1.5)).sum()) * merged_row * (1 - 1 / models)
    rows_per_worker = float(held.sum()) + v / models
    shard_bytes = n * rounds * (4 + 8 / sentence_tokens)
    tables = 30 * float(held.sum()) + 4 * v / models  # a held row's tables and ids; the masters' holder counts
    return {"held_rows": float(held.sum()), "head_rows": float((held ** models).sum()),
            "rows_per_worker": rows_per_worker, "model_bytes_per_worker": rows_per_worker * 2 * dim * 4,
            "shard_bytes_per_worker": shard_bytes, "tables_bytes": tables, "bytes_per_epoch": total,
            "memory_per_worker": rows_per_worker * 2 * dim * 4 + shard_bytes + tables}


def zipf_counts(vocab: int, tokens: float, s: float = 1.0) -> np.ndarray:
    """Expected counts of a Zipf(s) vocabulary of ``vocab`` words in ``tokens`` tokens."""
    w = np.arange(1, vocab + 1, dtype=np.float64) ** -s
    return tokens * w / w.sum()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--vocab", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=300)
    ap.add_argument("--tokens", type=float, default=100e9, help="corpus tokens per epoch")
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, help="rounds per epoch (default: nsdist's, 2 per worker)")
    ap.add_argument("--sync-rows", type=int, default=1024)
    a = ap.parse_args(argv)
    rounds = a.rounds or max(4, 2 * a.workers)
    counts = zipf_counts(a.vocab, a.tokens, a.zipf)
    out = predict_epoch(counts, models=a.workers, rounds=rounds, dim=a.dim, base=a.sync_rows,
                        tokens_per_model_round=a.tokens / a.workers / rounds)
    gb = 1e9
    print(f"{a.workers} workers, V = {a.vocab:,}, dim {a.dim}, {a.tokens:.3g} tokens per epoch, Zipf s = {a.zipf}, "
          f"{rounds} rounds per epoch, sync_rows {a.sync_rows}")
    print(f"model {out['model_bytes'] / gb:.1f} GB; shards per worker {out['shard_bytes_per_worker'] / gb:.1f} GB; "
          f"per-word tables {out['tables_bytes'] / gb:.2f} GB; in flight at most {out['in_flight_bytes'] / gb:.2f} GB; "
          f"memory per worker {out['memory_per_worker'] / gb:.1f} GB")
    full = out["rounds"][-1]["bytes"]
    print(f"network per epoch {out['bytes_per_epoch'] / gb:.0f} GB in all, "
          f"{out['bytes_per_epoch'] / a.workers / gb:.1f} GB per worker "
          f"({out['bytes_per_epoch'] / a.workers / out['model_bytes']:.2f} model sizes); "
          f"the epoch's last (full) round {full / gb:.0f} GB")
    part = predict_partitioned(counts, models=a.workers, rounds=rounds, dim=a.dim, base=a.sync_rows,
                               tokens_per_model_round=a.tokens / a.workers / rounds)
    print(f"partitioned: a model holds {part['held_rows']:,.0f} rows ({part['head_rows']:,.0f} held by every model) "
          f"and the masters of {a.vocab / a.workers:,.0f}; memory per worker {part['memory_per_worker'] / gb:.1f} GB "
          f"(rows {part['model_bytes_per_worker'] / gb:.1f} GB, shards {part['shard_bytes_per_worker'] / gb:.1f} GB); "
          f"network per worker per epoch {part['bytes_per_epoch'] / a.workers / gb:.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
