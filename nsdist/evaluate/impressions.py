"""Ranking what was shown: per-impression AUC, MRR, nDCG@5 and nDCG@10, as impression-log
benchmarks (MIND) compute them, with the click-through-rate and popularity priors as references.

An impression is a history (the user's earlier clicks) and the items shown, each clicked or not.
A scorer gives every shown item a score; the metrics compare that order with the clicks:

* AUC: the share of (clicked, not clicked) pairs the scores order right;
* MRR: the mean over the clicked items of 1 / their rank (MIND's ``mrr_score``);
* nDCG@k: the DCG of the first k ranks (gain 1 for a click, discount log2(rank + 1)) over the
  best DCG the clicks allow.

Equal scores are broken at random, and each metric is its expected value over those tie-breaks,
computed exactly (AUC counts a tied pair as 1/2; at ranks shared by a block of tied items each
rank holds a click with the block's share of clicks). So a scorer gains nothing from the order
the items were listed in, and one that ties everything scores what chance does. The averages are
over the impressions with at least one click and one non-click, as MIND's evaluation takes them;
the others are counted and left out.

No IO here: the files are read by ``readers.read_impressions``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


def impression_metrics(scores, clicked) -> dict[str, float]:
    """AUC, MRR, nDCG@5 and nDCG@10 of one impression: ``scores`` (higher first) of the shown
    items, ``clicked`` their clicks; ties broken at random, in expectation (see the module).

    Parameters
    ----------
    scores : array of float
        One score per shown item; ``-inf`` is allowed (last).
    clicked : array of bool or 0/1
        Whether each shown item was clicked; at least one of each.

    Returns
    -------
    dict
        ``auc``, ``mrr``, ``ndcg@5``, ``ndcg@10``.

    Examples
    --------
    >>> m = impression_metrics([0.9, 0.5, 0.1], [0, 1, 0])  # the click ranks second
    >>> m["auc"], m["mrr"], round(m["ndcg@5"], 4)
    (0.5, 0.5, 0.6309)
    >>> impression_metrics([1, 1, 1, 1], [1, 0, 0, 0])["mrr"]  # tied: rank 1-4 alike, (1 + 1/2 + 1/3 + 1/4) / 4
    0.5208333333333333
    """
    scores = np.asarray(scores, dtype=np.float64)
    clicked = np.asarray(clicked, dtype=np.float64)
    pos = clicked.sum()
    if scores.shape != clicked.shape or scores.ndim != 1 or not 0 < pos < len(clicked):
        raise ValueError(f"need one score per shown item and at least one click and one non-click, got "
                         f"{scores.shape[0] if scores.ndim else 0} scores for {len(clicked)} items, {pos:g} clicks")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    # Blocks of equal scores: [starts[b], ends[b]) in rank order.
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(ranked)]
    block = np.repeat(np.arange(len(starts)), ends - starts)
    in_block = np.add.reduceat(clicked[order], starts)
    expected = (in_block / (ends - starts))[block]  # each rank's expected click
    ranks = np.arange(1, len(ranked) + 1, dtype=np.float64)
    # AUC from mean ranks (ascending), the Mann-Whitney statistic with ties as halves.
    mean_rank = len(ranked) + 1 - ((starts + ends + 1) / 2)[block]  # ascending rank of each ranked item
    auc = ((mean_rank * clicked[order]).sum() - pos * (pos + 1) / 2) / (pos * (len(clicked) - pos))
    out = {"auc": float(auc), "mrr": float((expected / ranks).sum() / pos)}
    for k in (5, 10):
        discount = 1 / np.log2(ranks[:k] + 1)
        out[f"ndcg@{k}"] = float((expected[:k] * discount).sum() / discount[:int(min(pos, k))].sum())
    return out


def mean_metrics(per_impression: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over impressions (0.0 for none).

    >>> mean_metrics([{"auc": 1.0, "mrr": 1.0, "ndcg@5": 1.0, "ndcg@10": 1.0},
    ...               {"auc": 0.5, "mrr": 0.5, "ndcg@5": 0.5, "ndcg@10": 0.5}])["auc"]
    0.75
    """
    return {m: float(np.mean([p[m] for p in per_impression])) if per_impression else 0.0 for m in METRICS}


def item_priors(shown: pa.ListArray, clicked: pa.ListArray) -> dict[str, tuple[int, int]]:
    """Shows and clicks per item over training impressions: {item: (shows, clicks)}.

    >>> item_priors(pa.array([["a", "b"], ["a"]]), pa.array([[True, False], [False]]))
    {'a': (2, 1), 'b': (1, 0)}
    """
    table = pa.table({"item": pc.cast(shown.flatten(), pa.string()),
                      "click": pc.cast(clicked.flatten(), pa.int64())})
    counts = table.group_by("item", use_threads=False).aggregate([("click", "count"), ("click", "sum")])
    return {item: (shows, clicks) for item, shows, clicks in zip(
        counts["item"].to_pylist(), counts["click_count"].to_pylist(), counts["click_sum"].to_pylist())}


def ctr_scorer(priors: dict[str, tuple[int, int]]) -> Callable[[list, list[str]], np.ndarray]:
    """The click-through-rate prior as a scorer: (clicks + 1) / (shows + 2) of each shown item
    (Laplace's rule: an item never shown in training scores 1/2); the history is not used.

    >>> ctr_scorer({"a": (8, 2)})([], ["a", "new"]).tolist()
    [0.3, 0.5]
    """
    return lambda history, shown: np.array([(priors.get(i, (0, 0))[1] + 1) / (priors.get(i, (0, 0))[0] + 2)
                                            for i in shown])


def popularity_scorer(priors: dict[str, tuple[int, int]]) -> Callable[[list, list[str]], np.ndarray]:
    """Click popularity as a scorer: the training clicks of each shown item (0 if never shown).

    >>> popularity_scorer({"a": (8, 2)})([], ["a", "new"]).tolist()
    [2.0, 0.0]
    """
    return lambda history, shown: np.array([float(priors.get(i, (0, 0))[1]) for i in shown])


def impression_eval(impressions: pa.Table, scorers: dict[str, Callable[[list, list[str]], np.ndarray]]) -> dict:
    """Mean AUC, MRR, nDCG@5 and nDCG@10 of each scorer over the impressions.

    Parameters
    ----------
    impressions : pyarrow.Table
        ``history``, ``shown`` (list<string>) and ``clicked`` (list<bool>), as
        ``readers.read_impressions`` returns them.
    scorers : dict
        name -> ``scorer(history, shown)``: one score per shown item, higher first.

    Returns
    -------
    dict
        ``impressions`` (those scored: at least one click and one non-click), ``skipped`` (the
        others), ``shown`` (items shown in the scored ones), ``clicks``, and per scorer name its
        metrics.

    Examples
    --------
    >>> imp = pa.table({"history": [["a"], ["a"], []], "shown": [["b", "c"], ["c", "b"], ["b"]],
    ...                 "clicked": [[True, False], [False, True], [True]]})
    >>> r = impression_eval(imp, {"first": lambda h, s: np.array([1.0, 0.0])})
    >>> r["impressions"], r["skipped"], r["first"]["auc"]
    (2, 1, 0.5)
    """
    results: dict[str, list] = {name: [] for name in scorers}
    scored = skipped = shown_items = clicks = 0
    for history, shown, clicked in zip(impressions["history"].to_pylist(), impressions["shown"].to_pylist(),
                                       impressions["clicked"].to_pylist()):
        n_clicks = sum(clicked)
        if not 0 < n_clicks < len(clicked):
            skipped += 1
            continue
        scored, shown_items, clicks = scored + 1, shown_items + len(shown), clicks + n_clicks
        for name, scorer in scorers.items():
            results[name].append(impression_metrics(scorer(history, shown), clicked))
    report = {"impressions": scored, "skipped": skipped, "shown": shown_items, "clicks": clicks}
    report.update({name: mean_metrics(per) for name, per in results.items()})
    return report
