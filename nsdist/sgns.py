"""The SGNS kernels: pure functions of arrays, a learning-rate ramp and an explicit RNG state.

Skip-gram with negative sampling as in word2vec's C tool: for each (context, center) pair
within a randomly shrunk window, the context word's input vector ``win[ctx]`` is trained to
score the center word's output vector ``wout[center]`` high and ``negative`` noise words low.

The kernels update ``win``/``wout`` in place (callers pass their own copies), scale each row's
step by its ``rate`` (the shard's per-row rate multiplier, see merge.shard_rates; ones for plain
SGD), count how often each row was updated (the merge weights rows by it) and return the loss in float64 (float32
saturates after ~1e7 pairs; gensim's loss tally has exactly that bug). No Python runs per
token and the GIL is released, so several tasks can train in threads of one worker.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from .noise import draw
from .rng import next_random

MAX_EXP = 6.0  # sigmoid is clipped outside [-6, 6], as in word2vec

# sigmoid and softplus tabulated on [-MAX_EXP, MAX_EXP] at bucket midpoints, as word2vec and
# gensim do (they use 1000 buckets): exp() per dot product cost as much as the dot product.
# The sigmoid is within 8e-4 of exact (the gradient's precision is far coarser than float32's
# anyway); the loss is a diagnostic, within 3e-3 per term and unbiased on average.
TABLE_STEPS = 2048
_MIDPOINTS = (np.arange(TABLE_STEPS) + 0.5) * (2.0 * MAX_EXP / TABLE_STEPS) - MAX_EXP
SIGMOID_TABLE = (1.0 / (1.0 + np.exp(-_MIDPOINTS))).astype(np.float32)
SOFTPLUS_TABLE = np.log1p(np.exp(_MIDPOINTS))  # softplus(x) = log(1 + e^x) = -log(sigmoid(-x))


@numba.njit(cache=True, nogil=True, inline="always")
def _softplus(x):  # pragma: no cover - compiled
    # log(1 + exp(x)) without overflow; -log(sigmoid(f)) == softplus(-f).
    if x > 0:
        return x + np.log1p(np.exp(-x))
    return np.log1p(np.exp(x))


@numba.njit(cache=True, nogil=True, inline="always")
def _bucket(f):  # pragma: no cover - compiled
    """Table index of f in (-MAX_EXP, MAX_EXP)."""
    return min(np.int64((f + MAX_EXP) * (TABLE_STEPS / (2.0 * MAX_EXP))), TABLE_STEPS - 1)


@numba.njit(cache=True, nogil=True, inline="always")
def gradient(f, label, alpha):  # pragma: no cover - compiled
    """(label - sigmoid(f)) * alpha and the pair's loss -log P(label | f), from the tables.

    The loss is -log(sigmoid(f)) = softplus(-f) for the positive (label 1) and
    -log(sigmoid(-f)) = softplus(f) for a negative; the tables are symmetric, so softplus(-f)
    sits at bucket TABLE_STEPS - 1 - i.
    """
    if f >= MAX_EXP or f <= -MAX_EXP:
        g = (label - np.float32(1.0)) * alpha if f > 0 else label * alpha
        return g, _softplus(-np.float64(f)) if label > 0 else _softplus(np.float64(f))
    i = _bucket(f)
    if label > 0:
        return (label - SIGMOID_TABLE[i]) * alpha, SOFTPLUS_TABLE[TABLE_STEPS - 1 - i]
    return -SIGMOID_TABLE[i] * alpha, SOFTPLUS_TABLE[i]


@numba.njit(cache=True, nogil=True)
def _longest(offsets, s_begin, s_end):  # pragma: no cover - compiled
    """Length of the longest sentence in [s_begin, s_end): the subsampling buffer's size."""
    longest = 0
    for s in range(s_begin, s_end):
        longest = max(longest, offsets[s + 1] - offsets[s])
    return longest


@numba.njit(cache=True, nogil=True)
def subsample(ids, begin, end, keep, state, out):  # pragma: no cover - compiled
    """Copy ids[begin:end] into out, dropping each occurrence with probability 1 - keep[id]."""
    n = 0
    for k in range(begin, end):
        w = ids[k]
        p = keep[w]
        if p < 1.0:
            u, state = next_random(state)
            if u >= p:
                continue
        out[n] = w
        n += 1
    return n, state


@numba.njit(cache=True, nogil=True, inline="always")
def _dots(x, rows, n, out):  # pragma: no cover - compiled
    """out[t] = x . rows[t] for t < n, three rows per pass over x (x is loaded once per three)."""
    dim = x.shape[0]
    t = 0
    while t + 3 <= n:
        f0 = np.float32(0.0)
        f1 = np.float32(0.0)
        f2 = np.float32(0.0)
        for k in range(dim):
            xk = x[k]
            f0 += xk * rows[t, k]
            f1 += xk * rows[t + 1, k]
            f2 += xk * rows[t + 2, k]
        out[t] = f0
        out[t + 1] = f1
        out[t + 2] = f2
        t += 3
    while t < n:
        f0 = np.float32(0.0)
        for k in range(dim):
            f0 += x[k] * rows[t, k]
        out[t] = f0
        t += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _add_combination(y, scale, coef, rows, n):  # pragma: no cover - compiled
    """y += scale * sum over t < n of coef[t] * rows[t], three rows per pass over y."""
    dim = y.shape[0]
    t = 0
    while t + 3 <= n:
        c0 = coef[t] * scale
        c1 = coef[t + 1] * scale
        c2 = coef[t + 2] * scale
        for k in range(dim):
            y[k] += c0 * rows[t, k] + c1 * rows[t + 1, k] + c2 * rows[t + 2, k]
        t += 3
    while t < n:
        c0 = coef[t] * scale
        for k in range(dim):
            y[k] += c0 * rows[t, k]
        t += 1


@numba.njit(cache=True, nogil=True, fastmath=True)
def train_pairs(
    win, wout, ids, offsets, s_begin, s_end, keep, noise_prob, noise_alias,
    window, negative, alpha_start, alpha_end, state, n_in, n_out, rate, done0=0, total=0, share=0,
    neg_ids=None, neg_offsets=None, explicit=0, explicit_weight=1.0,
):  # pragma: no cover - compiled
    """Train sentences [s_begin, s_end) of a shard, one (context, center) pair at a time.

    Returns (loss: float64, pairs: int64, words: int64, state: uint64). ``words`` counts the
    sentences' words before subsampling: it is what the learning-rate schedule follows. The rate
    goes from ``alpha_start`` to ``alpha_end`` over ``total`` words (default: these sentences'),
    ``done0`` of them already trained: a round over several arrays is several calls.
    ``window`` 0: every other word of the sentence is a context (sessions of items), never
    shrunk. ``share`` is train_batch's; every pair draws its own negatives here, and its own
    explicit ones (``explicit`` of the session's shown items, as in train_batch).
    """
    dim = win.shape[1]
    total = max(total if total > 0 else offsets[s_end] - offsets[s_begin], 1)
    sent = np.empty(_longest(offsets, s_begin, s_end), np.int32)
    grad = np.empty(dim, np.float32)  # accumulated gradient for the context row (neu1e)
    most = negative + 1 + explicit
    tgt = np.empty(most, np.int64)
    lab = np.empty(most, np.float32)
    wt = np.ones(most, np.float32)
    shown = np.zeros(0, np.int32) if neg_ids is None else neg_ids
    loss = 0.0
    pairs = 0
    done = done0
    for s in range(s_begin, s_end):
        # The rate falls linearly with progress, per sentence (the C tool: every 10k words).
        alpha = np.float32(alpha_start + (alpha_end - alpha_start) * (done / total))
        n, state = subsample(ids, offsets[s], offsets[s + 1], keep, state, sent)
        done += offsets[s + 1] - offsets[s]
        m0 = m1 = 0
        if neg_offsets is not None and explicit > 0:
            m0, m1 = neg_offsets[s], neg_offsets[s + 1]
        for i in range(n):
            center = sent[i]
            span = n
            if window > 0:
                u, state = next_random(state)
                span = window - np.int64(u * window)  # effective window in [1, window]
            lo = max(0, i - span)
            hi = min(n, i + span + 1)
            for j in range(lo, hi):
                if j == i:
                    continue
                ctx = sent[j]
                grad[:] = 0.0
                nt, state = _targets(center, noise_prob, noise_alias, negative, shown, m0, m1, explicit,
                                     explicit_weight, state, tgt, lab, wt)
                for d in range(nt):
                    target = tgt[d]
                    f = np.float32(0.0)
                    for k in range(dim):
                        f += win[ctx, k] * wout[target, k]
                    g, pair_loss = gradient(f, lab[d], alpha)
                    g *= wt[d]
                    loss += pair_loss * wt[d]
                    for k in range(dim):
                        grad[k] += g * wout[target, k]
                    g *= rate[target]
                    for k in range(dim):
                        wout[target, k] += g * win[ctx, k]
                    n_out[target] += 1
                m = rate[ctx]
                for k in range(dim):
                    win[ctx, k] += m * grad[k]
                n_in[ctx] += 1
                pairs += 1
    return loss, pairs, done - done0, state


@numba.njit(cache=True, nogil=True, fastmath=True)
def train_batch(
    win, wout, ids, offsets, s_begin, s_end, keep, noise_prob, noise_alias,
    window, negative, alpha_start, alpha_end, state, n_in, n_out, rate, done0=0, total=0, share=0,
    neg_ids=None, neg_offsets=None, explicit=0, explicit_weight=1.0,
):  # pragma: no cover - compiled
    """Train sentences [s_begin, s_end) with negatives shared by up to ``share`` context words.

    HogBatch (Ji et al. 2016): for a center word, its context words C and the targets
    T = [center, negative draws] form two small matrices; the update becomes
    F = win[C] @ wout[T].T, G = (labels - sigmoid(F)) * alpha, win[C] += G @ wout[T],
    wout[T] += G.T @ win[C], all from the same snapshot. The same number of dot products as
    the per-pair kernel, but each row is read once per window instead of once per pair, and
    `negative` draws per window instead of per pair. The small products go three rows per
    pass (register blocking: measured 2.2x over one dot product per pass with the sigmoid
    computed in the same loop). Same signature and returns as train_pairs.

    A window of more than ``share`` context words (0: no bound) is trained in consecutive
    groups of ``share``, each with fresh negatives: a text window (at most 2 x window words)
    fits in one group, while a whole 700-item session would otherwise train against
    `negative` noise items in all.

    Explicit negatives (items shown in a session but not clicked): sentence s's are
    ``neg_ids[neg_offsets[s]:neg_offsets[s + 1]]``. Each group also trains against ``explicit``
    of them (all when there are fewer; else drawn uniformly, with replacement) as label-0
    targets whose gradient and loss are scaled by ``explicit_weight``.
    """
    dim = win.shape[1]
    total = max(total if total > 0 else offsets[s_end] - offsets[s_begin], 1)
    longest = _longest(offsets, s_begin, s_end)
    sent = np.empty(longest, np.int32)
    width = max(2 * window if window > 0 else longest, 1)
    group = width if share <= 0 else min(share, width)
    ctx = np.empty(width, np.int64)
    most = negative + 1 + explicit  # targets per group
    tgt = np.empty(most, np.int64)
    lab = np.empty(most, np.float32)
    wt = np.ones(most, np.float32)  # per-target weight of the gradient and loss
    a = np.empty((group, dim), np.float32)  # snapshot of win[C]
    b = np.empty((most, dim), np.float32)  # snapshot of wout[T]
    g = np.empty((group, most), np.float32)
    g_t = np.empty((most, group), np.float32)  # g transposed: contiguous per target
    f = np.empty(most, np.float32)
    shown = np.zeros(0, np.int32) if neg_ids is None else neg_ids
    loss = 0.0
    pairs = 0
    done = done0
    for s in range(s_begin, s_end):
        alpha = np.float32(alpha_start + (alpha_end - alpha_start) * (done / total))
        n, state = subsample(ids, offsets[s], offsets[s + 1], keep, state, sent)
        done += offsets[s + 1] - offsets[s]
        m0 = m1 = 0
        if neg_offsets is not None and explicit > 0:
            m0, m1 = neg_offsets[s], neg_offsets[s + 1]
        for i in range(n):
            center = sent[i]
            span = n
            if window > 0:
                u, state = next_random(state)
                span = window - np.int64(u * window)
            nc = 0
            for j in range(max(0, i - span), min(n, i + span + 1)):
                if j != i:
                    ctx[nc] = sent[j]
                    nc += 1
            for c0 in range(0, nc, group):
                nt, state = _targets(center, noise_prob, noise_alias, negative, shown, m0, m1, explicit,
                                     explicit_weight, state, tgt, lab, wt)
                loss += _batch_step(win, wout, ctx[c0:min(nc, c0 + group)], nt, alpha, n_in, n_out, rate,
                                    tgt, lab, wt, a, b, g, g_t, f)
            pairs += nc
    return loss, pairs, done - done0, state


@numba.njit(cache=True, nogil=True, inline="always")
def _targets(center, noise_prob, noise_alias, negative, shown, m0, m1, explicit, explicit_weight, state,
             tgt, lab, wt):  # pragma: no cover - compiled
    """A group's targets: the center (label 1), ``negative`` noise words and up to ``explicit``
    of the session's shown items shown[m0:m1] (label 0; weight ``explicit_weight``); one equal
    to the center is dropped, as word2vec drops such noise words. Returns (count, state)."""
    tgt[0] = center
    lab[0] = 1.0
    wt[0] = 1.0
    nt = 1
    for _ in range(negative):
        w, state = draw(noise_prob, noise_alias, state)
        if w != center:
            tgt[nt] = w
            lab[nt] = 0.0
            wt[nt] = 1.0
            nt += 1
    m = m1 - m0
    for e in range(min(m, explicit)):
        k = e
        if m > explicit:
            u, state = next_random(state)
            k = np.int64(u * m)
        w = shown[m0 + k]
        if w != center:
            tgt[nt] = w
            lab[nt] = 0.0
            wt[nt] = explicit_weight
            nt += 1
    return nt, state


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _batch_step(win, wout, ctx, nt, alpha, n_in, n_out, rate, tgt, lab, wt, a, b, g, g_t, f
                ):  # pragma: no cover - compiled
    """One HogBatch update of contexts ``ctx`` against targets tgt[:nt]; the loss."""
    dim = win.shape[1]
    nc = len(ctx)
    for c in range(nc):
        row = ctx[c]
        for k in range(dim):
            a[c, k] = win[row, k]
    for t in range(nt):
        row = tgt[t]
        for k in range(dim):
            b[t, k] = wout[row, k]
    loss = 0.0
    for c in range(nc):
        _dots(a[c], b, nt, f)
        for t in range(nt):
            gct, pair_loss = gradient(f[t], lab[t], alpha)
            gct *= wt[t]
            g[c, t] = gct
            g_t[t, c] = gct
            loss += pair_loss * wt[t]
    for c in range(nc):
        _add_combination(win[ctx[c]], rate[ctx[c]], g[c], b, nt)
        n_in[ctx[c]] += 1
    for t in range(nt):
        _add_combination(wout[tgt[t]], rate[tgt[t]], g_t[t], a, nc)
        n_out[tgt[t]] += nc
    return loss


@numba.njit(cache=True, nogil=True, inline="always")
def _draw(prob, alias, state):  # pragma: no cover - compiled
    """noise.draw, the same word for the same state, without a branch on the alias coin: that
    branch goes either way at random, and a fresh draw per context word makes it hot."""
    u, state = next_random(state)
    x = u * prob.size
    i = np.int64(x)
    other = np.int64(alias[i])
    return (i if x - i < prob[i] else other), state


@numba.njit(cache=True, nogil=True, inline="always")
def _fresh_targets(center, noise_prob, noise_alias, negative, shown, m0, m1, explicit, explicit_weight, state,
                   tgt, lab, wt):  # pragma: no cover - compiled
    """_targets with _draw: the same targets for the same state."""
    tgt[0] = center
    lab[0] = 1.0
    wt[0] = 1.0
    nt = 1
    for _ in range(negative):
        w, state = _draw(noise_prob, noise_alias, state)
        if w != center:
            tgt[nt] = w
            lab[nt] = 0.0
            wt[nt] = 1.0
            nt += 1
    m = m1 - m0
    for e in range(min(m, explicit)):
        k = e
        if m > explicit:
            u, state = next_random(state)
            k = np.int64(u * m)
        w = shown[m0 + k]
        if w != center:
            tgt[nt] = w
            lab[nt] = 0.0
            wt[nt] = explicit_weight
            nt += 1
    return nt, state


# train_fresh is compiled once more for each model width in this range, with the width a
# constant: LLVM then unrolls the passes over a row and drops their trip-count and overlap
# checks, which at dim 64 cost as much as the arithmetic (benchmarks/README.md, "The fresh
# kernel's passes"). Narrower and wider models run the kernel that reads the width from the model.
FIXED_DIMS = (32, 1024)


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _context_step(win, wout, c, tgt, lab, wt, nt, alpha, rate, g, grad, n_in, n_out, dim):  # pragma: no cover
    """Input row win[c] against output rows wout[tgt[:nt]]: the scores, all from the rows as
    they are before the step; the gradients; then, target by target, the input row's
    gradient takes the target's output row and that row takes its update (read once for
    both; a target drawn twice in one step is read again after its first update, as in
    word2vec's loop over targets); then the input row's update; the loss. Rows are indexed
    in place (a row view would cost a reference count increment and decrement per row). ``dim``:
    the rows' width, a constant where the caller's is."""
    t = 0
    while t + 3 <= nt:  # scores, three rows per pass over win[c]
        r0, r1, r2 = tgt[t], tgt[t + 1], tgt[t + 2]
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        for k in range(dim):
            xk = win[c, k]
            s0 += xk * wout[r0, k]
            s1 += xk * wout[r1, k]
            s2 += xk * wout[r2, k]
        g[t] = s0
        g[t + 1] = s1
        g[t + 2] = s2
        t += 3
    while t < nt:
        r0 = tgt[t]
        s0 = np.float32(0.0)
        for k in range(dim):
            s0 += win[c, k] * wout[r0, k]
        g[t] = s0
        t += 1
    loss = 0.0
    for t in range(nt):
        gt, pair_loss = gradient(g[t], lab[t], alpha)
        g[t] = gt * wt[t]
        loss += pair_loss * wt[t]
    for k in range(dim):
        grad[k] = 0.0
    t = 0
    while t + 2 <= nt:  # grad += g[t] * wout[tgt[t]]; wout[tgt[t]] += rate * g[t] * win[c]
        r0, r1 = tgt[t], tgt[t + 1]
        g0, g1 = g[t], g[t + 1]
        q0, q1 = g0 * rate[r0], g1 * rate[r1]
        for k in range(dim):  # two rows and grad written per pass: LLVM's overlap checks stay in bounds
            xk = win[c, k]
            y0 = wout[r0, k]
            wout[r0, k] = y0 + q0 * xk
            y1 = wout[r1, k]
            wout[r1, k] = y1 + q1 * xk
            grad[k] += g0 * y0 + g1 * y1
        t += 2
    while t < nt:
        r0 = tgt[t]
        g0 = g[t]
        q0 = g0 * rate[r0]
        for k in range(dim):
            y0 = wout[r0, k]
            wout[r0, k] = y0 + q0 * win[c, k]
            grad[k] += g0 * y0
        t += 1
    for t in range(nt):
        n_out[tgt[t]] += 1
    m = rate[c]
    for k in range(dim):
        win[c, k] += m * grad[k]
    n_in[c] += 1
    return loss


def _fresh_kernel(DIM):
    """train_fresh for rows of ``DIM`` floats (0: any, the model's). DIM is its only closure
    variable: numba keys a closure's disk cache by the pickled bytes of its variables, and a
    compiled function among them pickles differently in every process, which would compile the
    kernel again in every worker."""

    @numba.njit(cache=True, nogil=True, fastmath=True)
    def train_fresh(
        win, wout, ids, offsets, s_begin, s_end, keep, noise_prob, noise_alias,
        window, negative, alpha_start, alpha_end, state, n_in, n_out, rate, done0=0, total=0, share=1,
        neg_ids=None, neg_offsets=None, explicit=0, explicit_weight=1.0,
    ):  # pragma: no cover - compiled
        """Train sentences [s_begin, s_end) with a fresh draw of negatives for every context word.

        train_batch's draws with ``share`` 1 (the default of long windows, sessions and graph
        walks, whose quality needs fresh negatives): for each context word in a center's
        window, in order, its targets are the center and ``negative`` new noise words (plus
        ``explicit`` shown items, as in train_batch), scored from the rows as they are before
        this context's step. The updates are train_batch's too, except where one context's
        draws repeat a target: here its second gradient reads the row its first update moved
        (word2vec's order), there both read the row as it was.

        Laid out for speed: no snapshot copies of the rows, each target's output row read twice
        (score; then gradient and update in one pass), at most three rows per pass over the
        dimension (every pass vectorised), and the width a constant where fresh_kernel gives
        one. Same signature and returns as train_pairs; ``share`` is accepted and ignored.
        """
        if DIM > 0 and win.shape[1] != DIM:
            raise ValueError("train_fresh compiled for another width")
        dim = DIM if DIM > 0 else win.shape[1]
        total = max(total if total > 0 else offsets[s_end] - offsets[s_begin], 1)
        sent = np.empty(_longest(offsets, s_begin, s_end), np.int32)
        most = negative + 1 + explicit
        tgt = np.empty(most, np.int64)
        lab = np.empty(most, np.float32)
        wt = np.ones(most, np.float32)
        g = np.empty(most, np.float32)
        grad = np.empty(dim, np.float32)
        shown = np.zeros(0, np.int32) if neg_ids is None else neg_ids
        loss = 0.0
        pairs = 0
        done = done0
        for s in range(s_begin, s_end):
            alpha = np.float32(alpha_start + (alpha_end - alpha_start) * (done / total))
            n, state = subsample(ids, offsets[s], offsets[s + 1], keep, state, sent)
            done += offsets[s + 1] - offsets[s]
            m0 = m1 = 0
            if neg_offsets is not None and explicit > 0:
                m0, m1 = neg_offsets[s], neg_offsets[s + 1]
            for i in range(n):
                center = sent[i]
                span = n
                if window > 0:
                    u, state = next_random(state)
                    span = window - np.int64(u * window)
                for j in range(max(0, i - span), min(n, i + span + 1)):
                    if j == i:
                        continue
                    nt, state = _fresh_targets(center, noise_prob, noise_alias, negative, shown, m0, m1, explicit,
                                               explicit_weight, state, tgt, lab, wt)
                    loss += _context_step(win, wout, sent[j], tgt, lab, wt, nt, alpha, rate, g, grad, n_in, n_out,
                                          dim)
                    pairs += 1
        return loss, pairs, done - done0, state

    return train_fresh


train_fresh = _fresh_kernel(0)


@functools.cache
def fresh_kernel(dim: int):
    """train_fresh for models ``dim`` floats wide: compiled for that width where FIXED_DIMS holds
    it (each width compiled and cached on disk on first use), else the any-width kernel.

    >>> fresh_kernel(16) is train_fresh, fresh_kernel(64) is fresh_kernel(64), fresh_kernel(64) is train_fresh
    (True, True, False)
    """
    return _fresh_kernel(dim) if FIXED_DIMS[0] <= dim <= FIXED_DIMS[1] else train_fresh
