"""The SGNS kernel against a plain numpy reference; shards and merges by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nsdist.encode import Shard
from nsdist.noise import noise_table
from nsdist.model import Model, init_model
from nsdist.sgns import (FIXED_DIMS, SIGMOID_TABLE, SOFTPLUS_TABLE, TABLE_STEPS, fresh_kernel, subsample,
                         train_batch, train_fresh, train_pairs)
from nsdist.shard import RoundSpec, round_slice, round_slices, round_words, train_round


def _bucket(x):
    return min(int((x + 6.0) * TABLE_STEPS / 12.0), TABLE_STEPS - 1)


def sigmoid(f):
    """word2vec's sigmoid: 0 or 1 outside [-6, 6], tabulated inside (as the kernels use it)."""
    if abs(f) >= 6:
        return 1.0 if f > 0 else 0.0
    return float(SIGMOID_TABLE[_bucket(f)])


def softplus(x):
    """log(1 + e^x): tabulated inside [-6, 6] (the kernels' loss), exact outside."""
    return float(np.log1p(np.exp(x))) if abs(x) >= 6 else float(SOFTPLUS_TABLE[_bucket(x)])


def sigmoid_grad(f, label, alpha):
    return (label - sigmoid(f)) * alpha


def test_tables_are_close_to_exact():
    x = np.linspace(-5.999, 5.999, 100_001)
    approx_sigmoid = np.array([sigmoid(v) for v in x])
    approx_softplus = np.array([softplus(v) for v in x])
    assert np.abs(approx_sigmoid - 1 / (1 + np.exp(-x))).max() < 8e-4
    assert np.abs(approx_softplus - np.log1p(np.exp(x))).max() < 3e-3
    # Midpoint buckets: the errors cancel on average, so the loss tally is unbiased.
    assert abs(np.mean(approx_softplus - np.log1p(np.exp(x)))) < 1e-5


def reference_sgns(win, wout, sentence, window, neg_word, negative, alpha):
    """word2vec skip-gram/negative-sampling, written plainly: returns loss and update counts."""
    loss = 0.0
    n_in, n_out = np.zeros(len(win), int), np.zeros(len(wout), int)
    for i, center in enumerate(sentence):
        for j in range(max(0, i - window), min(len(sentence), i + window + 1)):
            if j == i:
                continue
            ctx = sentence[j]
            grad = np.zeros(win.shape[1], np.float32)
            targets = [(center, 1.0)] + [(neg_word, 0.0)] * negative * (neg_word != center)
            for target, label in targets:
                f = np.float32(win[ctx] @ wout[target])
                g = np.float32(sigmoid_grad(f, label, alpha))
                loss += softplus(-f) if label else softplus(f)
                grad += g * wout[target]
                wout[target] += g * win[ctx]
                n_out[target] += 1
            win[ctx] += grad
            n_in[ctx] += 1
    return loss, n_in, n_out


@pytest.mark.parametrize("sentence, window", [([0, 1, 2], 1), ([0, 1, 2, 1, 0, 3, 4], 1), ([2, 2, 4], 1)])
def test_kernel_equals_numpy_reference(sentence, window):
    rng = np.random.default_rng(0)
    V, dim, negative, neg_word, alpha = 6, 8, 3, 5, 0.05
    win = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    wout = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    ref_in, ref_out = win.copy(), wout.copy()
    ref_loss, ref_nin, ref_nout = reference_sgns(ref_in, ref_out, sentence, window, neg_word, negative, alpha)
    # Noise table that always yields neg_word; keep-probabilities of 1 (no subsampling), and
    # window=1 cannot shrink: the kernel's path is then deterministic.
    prob, alias = np.zeros(V, np.float32), np.full(V, neg_word, np.int32)
    ids, offsets = np.array(sentence, np.int32), np.array([0, len(sentence)], np.int64)
    n_in, n_out = np.zeros(V, np.uint32), np.zeros(V, np.uint32)
    loss, pairs, words, _ = train_pairs(win, wout, ids, offsets, 0, 1, np.ones(V, np.float32), prob, alias,
                                        window, negative, alpha, alpha, np.uint64(7), n_in, n_out,
                                        np.ones(V, np.float32))
    np.testing.assert_allclose(win, ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wout, ref_out, rtol=1e-5, atol=1e-6)
    assert n_in.tolist() == ref_nin.tolist() and n_out.tolist() == ref_nout.tolist()
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert words == len(sentence)
    assert pairs == sum(min(len(sentence), i + window + 1) - max(0, i - window) - 1 for i in range(len(sentence)))


def reference_batch(win, wout, sentence, window, neg_word, negative, alpha, share=0):
    """HogBatch written with numpy matrices: one shared set of targets per center word, or per
    group of ``share`` context words; window 0: the whole sentence."""
    loss = 0.0
    window = window or len(sentence)
    for i, center in enumerate(sentence):
        ctx = [sentence[j] for j in range(max(0, i - window), min(len(sentence), i + window + 1)) if j != i]
        for c0 in range(0, len(ctx), share or max(len(ctx), 1)):
            loss += _reference_group(win, wout, ctx[c0:c0 + (share or len(ctx))], center, neg_word, negative, alpha)
    return loss


def _reference_group(win, wout, ctx, center, neg_word, negative, alpha):
    loss = 0.0
    if ctx:
        targets = [center] + [neg_word] * negative * (neg_word != center)
        labels = np.array([1.0] + [0.0] * (len(targets) - 1), np.float32)
        a, b = win[ctx].copy(), wout[targets].copy()
        f = a @ b.T
        g = (labels - np.vectorize(sigmoid)(f)) * alpha
        loss += sum(softplus(-v) for v in f[:, 0]) + sum(softplus(v) for v in f[:, 1:].ravel())
        np.add.at(win, ctx, (g @ b).astype(np.float32))
        np.add.at(wout, targets, (g.T @ a).astype(np.float32))
    return loss


@pytest.mark.parametrize("window, share", [(0, 0), (0, 1), (0, 2), (0, 4), (1, 1), (1, 2)])
def test_windows_of_whole_sessions_and_bounded_sharing(window, share):
    """window 0 trains every other item of a session; share bounds how many context words one
    draw of negatives serves (fresh draws per group), as the numpy reference does (window 1
    cannot shrink, so its path is deterministic too)."""
    sentence = [0, 1, 2, 1, 0, 3, 4, 2, 3]
    rng = np.random.default_rng(2)
    V, dim, negative, neg_word, alpha = 6, 8, 3, 5, 0.05
    win = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    wout = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    prob, alias = np.zeros(V, np.float32), np.full(V, neg_word, np.int32)
    ids, offsets = np.array(sentence, np.int32), np.array([0, len(sentence)], np.int64)
    if window == 0:  # no random shrinking: the pair kernel's path is deterministic too
        ref_in, ref_out = win.copy(), wout.copy()
        ref_loss, _, _ = reference_sgns(ref_in, ref_out, sentence, len(sentence), neg_word, negative, alpha)
        w2, o2 = win.copy(), wout.copy()
        loss, pairs, _, _ = train_pairs(w2, o2, ids, offsets, 0, 1, np.ones(V, np.float32), prob, alias, 0, negative,
                                        alpha, alpha, np.uint64(7), np.zeros(V, np.uint32), np.zeros(V, np.uint32),
                                        np.ones(V, np.float32))
        np.testing.assert_allclose(w2, ref_in, rtol=1e-5, atol=1e-6)
        assert pairs == len(sentence) * (len(sentence) - 1) and loss == pytest.approx(ref_loss, rel=1e-5)
    ref_in, ref_out = win.copy(), wout.copy()
    ref_loss = reference_batch(ref_in, ref_out, sentence, window, neg_word, negative, alpha, share)
    loss, pairs, _, _ = train_batch(win, wout, ids, offsets, 0, 1, np.ones(V, np.float32), prob, alias, window,
                                    negative, alpha, alpha, np.uint64(7), np.zeros(V, np.uint32),
                                    np.zeros(V, np.uint32), np.ones(V, np.float32), 0, 0, share)
    np.testing.assert_allclose(win, ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wout, ref_out, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_bounded_sharing_draws_fresh_negatives():
    """With a real noise table, a session-long window draws negative x ceil(contexts / share)
    noise words per center instead of negative: every row of a large vocabulary gets trained."""
    V, dim, negative = 400, 4, 2
    sentence = np.arange(200, dtype=np.int32)  # one session of 200 distinct items
    prob, alias = np.ones(V, np.float32), np.arange(V, dtype=np.int32)  # uniform noise
    counts = {}
    for share in (0, 8):
        n_out = np.zeros(V, np.uint32)
        win = np.zeros((V, dim), np.float32)
        wout = np.zeros((V, dim), np.float32)
        train_batch(win, wout, sentence, np.array([0, 200], np.int64), 0, 1, np.ones(V, np.float32), prob, alias, 0,
                    negative, 0.025, 0.025, np.uint64(3), np.zeros(V, np.uint32), n_out, np.ones(V, np.float32),
                    0, 0, share)
        counts[share] = int((n_out[200:] > 0).sum())  # items never clicked: reached only as negatives
    # share 0: 200 centers x 2 draws = 400 draws (about half the unclicked rows, 1 - e^-1);
    # share 8: 200 x 25 groups x 2 = 10000 draws: every row.
    assert counts[0] < 150 and counts[8] == 200, counts


@pytest.mark.parametrize("sentence", [[0, 1, 2], [0, 1, 2, 1, 0, 3, 4], [2, 2, 4, 5]])
def test_batch_kernel_equals_numpy_reference(sentence):
    rng = np.random.default_rng(1)
    V, dim, negative, neg_word, alpha, window = 6, 8, 3, 5, 0.05, 1
    win = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    wout = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    ref_in, ref_out = win.copy(), wout.copy()
    ref_loss = reference_batch(ref_in, ref_out, sentence, window, neg_word, negative, alpha)
    prob, alias = np.zeros(V, np.float32), np.full(V, neg_word, np.int32)
    ids, offsets = np.array(sentence, np.int32), np.array([0, len(sentence)], np.int64)
    n_in, n_out = np.zeros(V, np.uint32), np.zeros(V, np.uint32)
    loss, pairs, words, _ = train_batch(win, wout, ids, offsets, 0, 1, np.ones(V, np.float32), prob, alias,
                                        window, negative, alpha, alpha, np.uint64(7), n_in, n_out,
                                        np.ones(V, np.float32))
    np.testing.assert_allclose(win, ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wout, ref_out, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert words == len(sentence) and pairs == 2 * len(sentence) - 2


@pytest.mark.parametrize("kernel", [train_pairs, train_batch, train_fresh])
def test_rate_scales_each_rows_step(kernel):
    """A row's step is multiplied by its rate: rate c everywhere == alpha * c; rate 0 freezes a row."""
    rng = np.random.default_rng(2)
    V, dim, alpha = 8, 8, 0.05
    win0 = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    wout0 = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    ids, offsets = np.array([0, 1, 2, 3, 1, 4, 5, 6, 2], np.int32), np.array([0, 5, 9], np.int64)
    prob, alias = noise_table(np.arange(1, V + 1))

    def trained(rate, a):
        win, wout = win0.copy(), wout0.copy()
        kernel(win, wout, ids, offsets, 0, 2, np.ones(V, np.float32), prob, alias, 2, 3, a, a, np.uint64(3),
               np.zeros(V, np.uint32), np.zeros(V, np.uint32), rate)
        return win, wout

    doubled, fast = trained(np.full(V, 2.0, np.float32), alpha), trained(np.ones(V, np.float32), 2 * alpha)
    np.testing.assert_allclose(doubled[0], fast[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(doubled[1], fast[1], rtol=1e-5, atol=1e-6)
    frozen = np.ones(V, np.float32)
    frozen[1] = 0.0
    win, wout = trained(frozen, alpha)
    assert np.array_equal(win[1], win0[1]) and np.array_equal(wout[1], wout0[1])
    assert not np.array_equal(win[2], win0[2]) and not np.array_equal(wout[2], wout0[2])


def test_subsample_keeps_the_expected_fraction():
    ids = np.zeros(200_000, np.int32)
    ids[::2] = 1
    keep = np.array([0.25, 1.0], np.float32)
    out = np.empty_like(ids)
    n, _ = subsample(ids, 0, len(ids), keep, np.uint64(5), out)
    kept = out[:n]
    assert (kept == 1).sum() == 100_000  # keep 1.0: all
    assert (kept == 0).sum() / 100_000 == pytest.approx(0.25, abs=0.005)


def tiny_shard(n_sent=40, V=20, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 12, n_sent)
    return Shard(rng.integers(0, V, lengths.sum()).astype(np.int32),
                 np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def test_train_round_is_deterministic_and_trains_in_place():
    V, dim = 20, 8
    shard, model = tiny_shard(V=V), init_model(V, dim, seed=3)
    model = Model(model.win, np.random.default_rng(1).normal(0, 0.1, (V, dim)).astype(np.float32))
    from nsdist.model import make_tables
    tables = make_tables(np.arange(V, 0, -1), 0.0, 0.75)
    spec = RoundSpec(epoch=0, round=1, rounds=3, shard=0, alpha_start=0.025, alpha_end=0.02, window=3,
                     negative=4, seed=9)
    copies = [Model(model.win.copy(), model.wout.copy()) for _ in range(4)]
    a, b = train_round(copies[0], [shard], tables, spec), train_round(copies[1], [shard], tables, spec)
    assert np.array_equal(copies[0].win, copies[1].win) and np.array_equal(copies[0].wout, copies[1].wout)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2]["words"] == round_words([shard], 3)[1]
    # Exactly the rows it counted moved.
    for trained, before, n in ((copies[0].win, model.win, a[0]), (copies[0].wout, model.wout, a[1])):
        moved = np.any(trained != before, axis=1)
        assert moved.any() and np.array_equal(moved, n > 0)
    train_round(copies[2], [shard], tables, RoundSpec(0, 1, 3, 1, 0.025, 0.02, 3, 4, 9))
    assert not np.array_equal(copies[2].wout, copies[0].wout)  # another shard index draws other numbers
    # The same shard cut into pieces (as cluster.encode_shards holds it): the same bits.
    cut = [7, 19, 20, 33]
    pieces = [Shard(shard.ids[shard.offsets[lo]:shard.offsets[hi]], shard.offsets[lo:hi + 1] - shard.offsets[lo])
              for lo, hi in zip([0] + cut, cut + [shard.sentences])]
    c = train_round(copies[3], pieces, tables, spec)
    assert np.array_equal(copies[3].win, copies[0].win) and np.array_equal(copies[3].wout, copies[0].wout)
    assert np.array_equal(c[0], a[0]) and np.array_equal(c[1], a[1]) and c[2]["words"] == a[2]["words"]
    assert c[2]["loss"] == pytest.approx(a[2]["loss"], rel=1e-12) and c[2]["pairs"] == a[2]["pairs"]


@pytest.mark.parametrize("seed", range(5))
def test_rounds_split_a_shard_by_words(seed):
    """Rounds cover every sentence once and hold about equal words, whatever the sentence lengths,
    so that the shards of one round finish together."""
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(400) < 0.05, rng.integers(100, 500, 400), rng.integers(1, 10, 400))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    shard = Shard(np.zeros(offsets[-1], np.int32), offsets)
    for rounds in (1, 3, 16):
        bounds = [round_slice(offsets, r, rounds) for r in range(rounds)]
        assert bounds[0][0] == 0 and bounds[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        words = round_words([shard], rounds)
        assert sum(words) == offsets[-1]
        assert max(words) - min(words) <= 2 * lengths.max()
        by_sentences = [int(offsets[len(lengths) * (r + 1) // rounds] - offsets[len(lengths) * r // rounds])
                        for r in range(rounds)]
        assert max(words) - min(words) <= max(by_sentences) - min(by_sentences)
        # Cut into pieces (empty ones too), the rounds take the same sentences.
        cuts = np.sort(rng.integers(0, len(lengths) + 1, 6))
        edges = [0, *cuts, len(lengths)]
        pieces = [Shard(np.zeros(offsets[b] - offsets[a], np.int32), offsets[a:b + 1] - offsets[a])
                  for a, b in zip(edges, edges[1:])]
        assert round_words(pieces, rounds) == words
        for r in range(rounds):
            got = [(a + b0, a + e0) for a, (b0, e0) in zip(edges, round_slices(pieces, r, rounds)) if b0 < e0]
            begin, end = bounds[r]
            assert (got[0][0], got[-1][1]) == (begin, end) if begin < end else got == []
            assert all(x[1] == y[0] for x, y in zip(got, got[1:]))


def reference_explicit(win, wout, sentence, shown, neg_word, negative, alpha, weight):
    """HogBatch over whole sessions with the session's shown items as weighted label-0 targets."""
    loss = 0.0
    for i, center in enumerate(sentence):
        ctx = [w for j, w in enumerate(sentence) if j != i]
        targets = [center] + [neg_word] * negative * (neg_word != center) + [w for w in shown if w != center]
        labels = np.array([1.0] + [0.0] * (len(targets) - 1), np.float32)
        weights = np.array([1.0] * (1 + negative * (neg_word != center)) + [weight] * (len(targets) - 1 - negative
                           * (neg_word != center)), np.float32)
        a, b = win[ctx].copy(), wout[targets].copy()
        f = a @ b.T
        g = (labels - np.vectorize(sigmoid)(f)) * alpha * weights
        loss += sum(weights[t] * (softplus(-f[c, t]) if t == 0 else softplus(f[c, t]))
                    for c in range(len(ctx)) for t in range(len(targets)))
        np.add.at(win, ctx, (g @ b).astype(np.float32))
        np.add.at(wout, targets, (g.T @ a).astype(np.float32))
    return loss


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_explicit_negatives_are_weighted_label_0_targets(weight):
    """Sessions [0 1 2 3] and [3 2]: each clicked item also trains against the items its session
    showed without a click (session 0: 4 and 2, where 2 is skipped as its own center)."""
    rng = np.random.default_rng(5)
    V, dim, negative, neg_word, alpha = 7, 8, 1, 6, 0.05
    win = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    wout = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    ref_in, ref_out = win.copy(), wout.copy()
    sessions, shown = [[0, 1, 2, 3], [3, 2]], [[4, 2], [5]]
    ref_loss = sum(reference_explicit(ref_in, ref_out, s, n, neg_word, negative, alpha, weight)
                   for s, n in zip(sessions, shown))
    prob, alias = np.zeros(V, np.float32), np.full(V, neg_word, np.int32)
    ids, offsets = np.array([0, 1, 2, 3, 3, 2], np.int32), np.array([0, 4, 6], np.int64)
    neg_ids, neg_offsets = np.array([4, 2, 5], np.int32), np.array([0, 2, 3], np.int64)
    loss, pairs, _, _ = train_batch(win, wout, ids, offsets, 0, 2, np.ones(V, np.float32), prob, alias, 0, negative,
                                    alpha, alpha, np.uint64(7), np.zeros(V, np.uint32), np.zeros(V, np.uint32),
                                    np.ones(V, np.float32), 0, 0, 0, neg_ids, neg_offsets, 2, weight)
    np.testing.assert_allclose(win, ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wout, ref_out, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5) and pairs == 4 * 3 + 2 * 1


def test_explicit_negatives_are_sampled_when_a_session_shows_many():
    """More shown items than ``explicit``: ``explicit`` of them per group, drawn uniformly."""
    V, dim = 60, 4
    ids, offsets = np.array([0, 1], np.int32), np.array([0, 2], np.int64)
    neg_ids, neg_offsets = np.arange(10, 60, dtype=np.int32), np.array([0, 50], np.int64)
    prob, alias = np.zeros(V, np.float32), np.full(V, 2, np.int32)
    n_out = np.zeros(V, np.uint32)
    for seed in range(200):
        train_batch(np.zeros((V, dim), np.float32), np.zeros((V, dim), np.float32), ids, offsets, 0, 1,
                    np.ones(V, np.float32), prob, alias, 0, 1, 0.025, 0.025, np.uint64(seed), np.zeros(V, np.uint32),
                    n_out, np.ones(V, np.float32), 0, 0, 0, neg_ids, neg_offsets, 3, 1.0)
    shown = n_out[10:60]
    # 200 runs x 2 centers x 3 draws = 1200 over 50 items: each about 24 times, none left out.
    assert shown.sum() == 1200 and shown.min() > 5 and shown.max() < 60, shown


def test_the_pair_kernel_trains_explicit_negatives_pair_by_pair():
    rng = np.random.default_rng(6)
    V, dim, negative, neg_word, alpha, weight = 7, 8, 1, 6, 0.05, 0.5
    win = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    wout = rng.normal(0, 0.5, (V, dim)).astype(np.float32)
    ref_in, ref_out = win.copy(), wout.copy()
    sentence, shown = [0, 1, 2], [4, 2]
    ref_loss = 0.0
    for i, center in enumerate(sentence):
        for j, ctx in enumerate(sentence):
            if j == i:
                continue
            targets = [(center, 1.0, 1.0), (neg_word, 0.0, 1.0)] + [(w, 0.0, weight) for w in shown if w != center]
            grad = np.zeros(dim, np.float32)
            for target, label, w in targets:
                f = np.float32(ref_in[ctx] @ ref_out[target])
                g = np.float32(sigmoid_grad(f, label, alpha) * w)
                ref_loss += w * (softplus(-f) if label else softplus(f))
                grad += g * ref_out[target]
                ref_out[target] += g * ref_in[ctx]
            ref_in[ctx] += grad
    prob, alias = np.zeros(V, np.float32), np.full(V, neg_word, np.int32)
    loss, pairs, _, _ = train_pairs(win, wout, np.array(sentence, np.int32), np.array([0, 3], np.int64), 0, 1,
                                    np.ones(V, np.float32), prob, alias, 0, negative, alpha, alpha, np.uint64(7),
                                    np.zeros(V, np.uint32), np.zeros(V, np.uint32), np.ones(V, np.float32), 0, 0, 0,
                                    np.array(shown, np.int32), np.array([0, 2], np.int64), 2, weight)
    np.testing.assert_allclose(win, ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wout, ref_out, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5) and pairs == 6


# ---------------------------------------------------------------- train_fresh: fresh negatives per context word

def _lcg(state):
    """rng.next_random in Python: (uniform in [0, 1), next state)."""
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    return (state >> 11) / 2.0**53, state


def reference_fresh(win, wout, ids, offsets, keep, prob, alias, window, negative, alpha0, alpha1, rate, state,
                    shown=None, shown_offsets=None, explicit=0, explicit_weight=1.0):
    """train_fresh in float64 numpy, drawing the same random numbers, over every sentence of
    (ids, offsets): the rate falls from alpha0 towards alpha1 by words done, per sentence; a
    word is dropped when a draw is not below its keep probability (below 1); for each center
    the window shrinks to span in [1, window] (0: the whole sentence); each context word in order
    draws ``negative`` noise words, then up to ``explicit`` of the sentence's shown items (weight
    ``explicit_weight``; drawn uniformly when there are more), one equal to the center dropped.
    A context's step: scores f = wout[T] @ win[c] from the rows before it,
    g = (labels - sigmoid(f)) * alpha * weights; then target by target the input gradient takes
    the target's row as it is, and the row takes rate * g * win[c] (so a target drawn twice
    sees its first update the second time); then win[c] += rate[c] * gradient. Returns the
    loss, the update counts and the state."""
    loss, n_in, n_out = 0.0, np.zeros(len(win), int), np.zeros(len(wout), int)
    total, done = max(int(offsets[-1] - offsets[0]), 1), 0
    for s in range(len(offsets) - 1):
        alpha = float(np.float32(alpha0 + (alpha1 - alpha0) * (done / total)))
        sentence = []
        for w in ids[offsets[s]:offsets[s + 1]]:
            if keep[w] < 1.0:
                u, state = _lcg(state)
                if u >= keep[w]:
                    continue
            sentence.append(int(w))
        done += int(offsets[s + 1] - offsets[s])
        m0, m1 = (shown_offsets[s], shown_offsets[s + 1]) if explicit else (0, 0)
        for i, center in enumerate(sentence):
            span = len(sentence)
            if window > 0:
                u, state = _lcg(state)
                span = window - int(u * window)
            for j in range(max(0, i - span), min(len(sentence), i + span + 1)):
                if j == i:
                    continue
                targets = [(center, 1.0, 1.0)]
                for _ in range(negative):
                    u, state = _lcg(state)
                    x = u * len(prob)
                    w = int(x) if x - int(x) < prob[int(x)] else int(alias[int(x)])
                    if w != center:
                        targets.append((w, 0.0, 1.0))
                m = m1 - m0
                for e in range(min(m, explicit)):
                    k = e
                    if m > explicit:
                        u, state = _lcg(state)
                        k = int(u * m)
                    if shown[m0 + k] != center:
                        targets.append((int(shown[m0 + k]), 0.0, explicit_weight))
                c, x = sentence[j], win[sentence[j]].copy()
                f = [wout[t] @ x for t, _, _ in targets]
                grad = np.zeros_like(x)
                for (t, label, weight), ft in zip(targets, f):
                    g = (label - sigmoid(ft)) * alpha * weight
                    loss += weight * (softplus(-ft) if label > 0 else softplus(ft))
                    grad += g * wout[t]
                    wout[t] += rate[t] * g * x
                    n_out[t] += 1
                win[c] += rate[c] * grad
                n_in[c] += 1
    return loss, n_in, n_out, state


@pytest.mark.parametrize("dim", [16, 32])
@pytest.mark.parametrize("repeat", [False, True])
def test_fresh_kernel_equals_float64_reference(repeat, dim):
    """A window of real random draws (shrunk windows, an alias table), against the float64
    reference; ``repeat``: a noise table that always yields one word, so all of a context's
    negatives are the same row and each of its gradients reads the row its earlier ones moved.
    dim 32 runs the kernel compiled for that width (fresh_kernel), 16 the any-width one."""
    rng = np.random.default_rng(4)
    V, negative, window, alpha = 9, 4, 3, 0.05
    win = rng.normal(0, 0.5, (V, dim)).astype(np.float32) * np.float32(np.sqrt(16 / dim))
    wout = rng.normal(0, 0.5, (V, dim)).astype(np.float32) * np.float32(np.sqrt(16 / dim))
    if repeat:
        prob, alias = np.zeros(V, np.float32), np.full(V, 8, np.int32)
    else:
        prob, alias = noise_table(np.arange(V, 0, -1))
    rate = rng.uniform(0.5, 2.0, V).astype(np.float32)
    sentence = np.array([0, 1, 2, 1, 0, 3, 4, 8, 5, 6, 7, 2], np.int32)
    offsets, keep = np.array([0, len(sentence)], np.int64), np.ones(V, np.float32)
    ref_in, ref_out = win.astype(np.float64), wout.astype(np.float64)
    ref_loss, ref_nin, ref_nout, ref_state = reference_fresh(ref_in, ref_out, sentence, offsets, keep, prob, alias,
                                                             window, negative, alpha, alpha, rate, 12345)
    n_in, n_out = np.zeros(V, np.uint32), np.zeros(V, np.uint32)
    kernel = fresh_kernel(dim)
    assert (kernel is train_fresh) == (dim < FIXED_DIMS[0])
    loss, pairs, words, state = kernel(win, wout, sentence, offsets, 0, 1, keep, prob, alias, window, negative,
                                       alpha, alpha, np.uint64(12345), n_in, n_out, rate)
    np.testing.assert_allclose(win, ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wout, ref_out, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    # One input-row update per (context, center) pair, one output-row update per target.
    assert n_in.tolist() == ref_nin.tolist() and n_out.tolist() == ref_nout.tolist()
    assert pairs == n_in.sum() and words == len(sentence) and int(state) == ref_state


@pytest.mark.parametrize("dim", [12, 32])
def test_fresh_kernel_draws_as_the_batch_kernel_with_share_1(dim):
    """On shards with subsampling, shrinking windows, a falling rate and explicit negatives:
    train_fresh equals the float64 reference, and draws what train_batch draws with a fresh
    draw per context word (share 1): the same update counts, pairs and final random state. With
    one noise word per context and no shown items no target can repeat within a step, and there
    its vectors and loss are train_batch's to float32 rounding."""
    V = 30
    shard = tiny_shard(n_sent=30, V=V, seed=3)
    neg_ids = np.random.default_rng(1).integers(0, V, 3 * shard.sentences).astype(np.int32)
    neg_offsets = np.arange(0, 3 * shard.sentences + 1, 3, dtype=np.int64)
    prob, alias = noise_table(np.arange(V, 0, -1) ** 2)
    keep = np.linspace(0.5, 1.0, V).astype(np.float32)
    rate = np.linspace(1.0, 2.0, V).astype(np.float32)
    rng = np.random.default_rng(0)
    win0 = rng.normal(0, 0.3, (V, dim)).astype(np.float32)
    wout0 = rng.normal(0, 0.3, (V, dim)).astype(np.float32)
    for window, negative, explicit in ((4, 3, 0), (0, 3, 2), (4, 1, 0)):
        out = []
        for kernel in (train_batch, fresh_kernel(dim)):
            win, wout, n_in, n_out = win0.copy(), wout0.copy(), np.zeros(V, np.uint32), np.zeros(V, np.uint32)
            res = kernel(win, wout, shard.ids, shard.offsets, 0, shard.sentences, keep, prob, alias, window, negative,
                         0.05, 0.01, np.uint64(99), n_in, n_out, rate, 0, 0, 1, neg_ids, neg_offsets, explicit, 0.5)
            out.append((win, wout, n_in, n_out, res))
        (w1, o1, i1, c1, r1), (w2, o2, i2, c2, r2) = out
        assert np.array_equal(i1, i2) and np.array_equal(c1, c2) and r2[1:] == r1[1:]
        if negative == 1 and explicit == 0:
            np.testing.assert_allclose(w2, w1, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(o2, o1, rtol=1e-4, atol=1e-6)
            assert r2[0] == pytest.approx(r1[0], rel=1e-5)
        ref_in, ref_out = win0.astype(np.float64), wout0.astype(np.float64)
        ref_loss, ref_nin, ref_nout, ref_state = reference_fresh(
            ref_in, ref_out, shard.ids, shard.offsets, keep, prob, alias, window, negative, 0.05, 0.01, rate, 99,
            neg_ids, neg_offsets, explicit, 0.5)
        np.testing.assert_allclose(w2, ref_in, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(o2, ref_out, rtol=1e-5, atol=1e-6)
        assert r2[0] == pytest.approx(ref_loss, rel=1e-5) and int(r2[3]) == ref_state
        assert i2.tolist() == ref_nin.tolist() and c2.tolist() == ref_nout.tolist()


def test_fresh_kernel_is_deterministic_and_chosen_for_share_1():
    """One thread: the same state gives the same bits. A round of the batch kernel with share 1
    runs train_fresh (shard.kernel), the same bits as calling it."""
    from nsdist.model import make_tables
    from nsdist.shard import kernel

    V, dim = 20, 8
    shard = tiny_shard(V=V)
    tables = make_tables(np.arange(V, 0, -1), 0.0, 0.75)
    spec = RoundSpec(epoch=0, round=0, rounds=1, shard=0, alpha_start=0.025, alpha_end=0.02, window=5, negative=4,
                     seed=9, kernel="batch", share=1)
    assert kernel(spec) is train_fresh and kernel(dataclasses.replace(spec, share=0)) is train_batch
    models = [init_model(V, dim, seed=3) for _ in range(3)]
    rounds = [train_round(m, [shard], tables, spec) for m in models[:2]]
    assert np.array_equal(models[0].win, models[1].win) and np.array_equal(models[0].wout, models[1].wout)
    assert np.array_equal(rounds[0][0], rounds[1][0]) and rounds[0][2]["loss"] == rounds[1][2]["loss"]
    from nsdist.rng import task_state

    m = models[2]
    train_fresh(m.win, m.wout, shard.ids, shard.offsets, 0, shard.sentences, tables.keep, tables.noise_prob,
                tables.noise_alias, 5, 4, 0.025, 0.02, task_state(9, 0, 0, 0), np.zeros(V, np.uint32),
                np.zeros(V, np.uint32), np.ones(V, np.float32))
    assert np.array_equal(m.win, models[0].win) and np.array_equal(m.wout, models[0].wout)
