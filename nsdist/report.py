"""A run's ``report.html``: one self-contained page, inline SVG, no JavaScript (pure functions).

Two halves. On a worker, beside the model: ``sample`` reduces the vocabulary and the vectors to
what the page shows (counts at about 200 log-spaced ranks, a few words' nearest neighbours), so
nothing model-sized reaches the client. On the client: ``render`` turns the manifest and that
sample into HTML. Every string on the page is HTML-escaped (words come from user corpora), the
page loads nothing, and a Content-Security-Policy forbids scripts should anything slip through.
The manifest's config is already redacted (``JobConfig.to_dict``), so no credential is shown.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

from .nearest import cosine_top_k

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


# ---------------------------------------------------------------- on a worker: what the page shows

def count_ranks(counts: np.ndarray, points: int = 200) -> tuple[list[int], list[int]]:
    """Counts at about ``points`` log-spaced 1-based ranks (counts sorted descending), for a
    log-log plot that keeps the shape of a vocabulary of any size.

    >>> count_ranks(np.array([50, 20, 20, 5, 1]), points=3)
    ([1, 2, 5], [50, 20, 1])
    """
    if len(counts) == 0:
        return [], []
    ranks = np.unique(np.round(np.geomspace(1, len(counts), points)).astype(np.int64))
    return ranks.tolist(), np.asarray(counts[ranks - 1]).astype(np.int64).tolist()


def query_ids(vocab_size: int, n: int = 8, top: int = 2000) -> list[int]:
    """Ids of ``n`` words spread over the frequency ranks of the ``top`` most frequent words
    (log-spaced: the most frequent words and some of middling frequency; rarer vectors are noisy).

    >>> query_ids(10_000, n=4, top=1000)
    [0, 9, 99, 999]
    """
    if vocab_size == 0:
        return []
    return (np.unique(np.round(np.geomspace(1, min(vocab_size, top), n)).astype(np.int64)) - 1).tolist()


def nearest(vectors: np.ndarray, ids: Sequence[int], topn: int = 5,
            block: int = 65536) -> list[list[tuple[int, float]]]:
    """The ``topn`` rows closest by cosine to each row in ``ids`` (itself excluded), best first.

    Parameters
    ----------
    vectors : ndarray, shape (V, dim)
        The word vectors; zero rows score 0.
    ids : sequence of int
        The query rows.
    topn : int
        Neighbours per query.
    block : int
        Rows scored at a time: the temporaries are (queries + topn) x block floats for any V.

    Returns
    -------
    list of list of (int, float)
        Per query, up to ``topn`` (row, cosine) pairs, best first (ties: lower row first).

    Examples
    --------
    >>> v = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
    >>> [[(j, round(s, 2)) for j, s in row] for row in nearest(v, [0], topn=2)]
    [[(1, 0.99), (2, 0.0)]]
    """
    rows, scores = cosine_top_k(vectors, np.asarray(ids, dtype=np.int64), topn, block)
    return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if np.isfinite(s)] for row_i, row_s in zip(rows, scores)]


def sample(words, counts, vectors: np.ndarray, n: int = 8, topn: int = 5) -> dict:
    """What the page shows of a model, small and plain: runs on the worker holding the model.

    Parameters
    ----------
    words : pyarrow Array or sequence of str
        The vocabulary in id order (or anything indexed by an array of ids so: the vocabulary's
        parts, ``cluster.VocabParts``' view, each part read when an id in it is asked for).
    counts : ndarray of int
        Their counts, non-increasing (or anything indexed by ids and arrays of ids so).
    vectors : ndarray, shape (V, dim)
        The word vectors.
    n, topn : int
        Words to query (``query_ids``) and neighbours of each.

    Returns
    -------
    dict
        ``ranks`` and ``counts`` (``count_ranks``: about 200 of each) and ``neighbours``: per
        queried word its ``word``, ``rank`` (1-based), ``count`` and ``nearest`` ([word, cosine]
        pairs, best first).
    """
    ranks, sampled = count_ranks(counts)
    ids = query_ids(len(counts), n)
    rows = nearest(vectors, ids, topn)
    word = _words_at(words, [*ids, *(j for row in rows for j, _ in row)])
    neighbours = [{"word": word[i], "rank": i + 1, "count": int(c),
                   "nearest": [[word[j], round(s, 4)] for j, s in row]}
                  for i, c, row in zip(ids, counts[np.asarray(ids, np.int64)], rows)]
    return {"ranks": ranks, "counts": sampled, "neighbours": neighbours}


def _words_at(words, ids: list[int]) -> dict[int, str]:
    """The words of ``ids``, asked for once, in id order: the vocabulary's parts (each read from
    its worker when asked for, 14-20 ms for a small part on 2 local workers) are then read at most
    once each, where the neighbours' ids, anywhere in the vocabulary, asked for one at a time
    switched between parts up to once per id."""
    wanted = sorted(set(ids))
    if hasattr(words, "take"):  # a pyarrow array
        found = words.take(wanted).to_pylist()
    elif isinstance(words, (list, tuple)):
        found = [words[i] for i in wanted]
    else:
        found = list(words[np.asarray(wanted, np.int64)])
    return {i: str(w) for i, w in zip(wanted, found)}


# ---------------------------------------------------------------- the manifest, summarised

def epoch_rows(manifest: dict) -> list[dict]:
    """Per-epoch loss, words/s, wall seconds and merge cost from ``metrics.epochs``."""
    epochs = (manifest.get("metrics") or {}).get("epochs") or []
    keys = ("epoch", "loss", "words_per_second", "seconds", "merge_bytes", "merge_seconds")
    return [{k: e.get(k) for k in keys} for e in epochs if isinstance(e, dict)]


def summary(manifest: dict, url: str | None = None) -> dict:
    """A published run as ``nsdist info`` shows it.

    Parameters
    ----------
    manifest : dict
        The run's manifest (``runs.read_manifest``).
    url : str, optional
        Where the run is, echoed in the result.

    Returns
    -------
    dict
        ``run_id``, ``url``, ``published`` (True), ``created``, ``config`` (as saved: redacted),
        ``corpus`` (statistics; ``files`` is the number of corpus files), ``epochs``
        (``epoch_rows``), ``timings``, ``parent`` (a warm start's record), ``graph`` (a graph
        job's nodes, edges and nodes without edges; None otherwise), ``files`` ([{name, size}])
        and ``versions``.
    """
    corpus = dict(manifest.get("corpus") or {})
    corpus["files"] = len(corpus.get("files") or [])
    metrics = manifest.get("metrics") or {}
    timings = {k: metrics.get(k) for k in ("count_seconds", "encode_seconds", "topk_seconds", "total_seconds", "models",
                                            "threads_per_model", "restarts_after_worker_loss", "resumed_after_epoch")
               if metrics.get(k) is not None}
    files = [{"name": name, "size": meta.get("size")} for name, meta in (manifest.get("files") or {}).items()]
    return {"run_id": manifest.get("run_id"), "url": url, "published": True, "created": manifest.get("created"),
            "config": manifest.get("config") or {}, "corpus": corpus, "epochs": epoch_rows(manifest),
            "timings": timings, "parent": manifest.get("parent"), "graph": manifest.get("graph"), "files": files,
            "versions": manifest.get("versions") or {}}


def unpublished_summary(claim: dict, state: dict | None, url: str, resume: str) -> dict:
    """What is known of a run that was claimed and never published: the config it was started
    with (``_claim.json``), the epochs its last checkpoint (``state``) completed, and the
    command that resumes it."""
    return {"run_id": claim.get("run_id"), "url": url, "published": False, "config": claim.get("config") or {},
            "init_from": claim.get("init_from"), "checkpoint_epoch": state.get("epoch") if state else None,
            "epochs": epoch_rows({"metrics": {"epochs": (state or {}).get("metrics")}}), "resume": resume}


def flatten(d, prefix: str = "") -> list[tuple[str, str]]:
    """Nested config -> (dotted key, value text) rows.

    >>> flatten({"train": {"dim": 16}, "corpus": ["a", "b"], "storage_options": {}})
    [('train.dim', '16'), ('corpus', 'a, b'), ('storage_options', '{}')]
    """
    rows: list[tuple[str, str]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += flatten(value, name + ".")
        elif isinstance(value, (list, tuple)):
            rows.append((name, ", ".join(map(str, value))))
        else:
            rows.append((name, "{}" if value == {} else str(value)))
    return rows


# ---------------------------------------------------------------- numbers and ticks

def fmt(x) -> str:
    """Short number text for axes and tables.

    >>> [fmt(v) for v in (0, 0.5, 3.14159, 1500, 2_000_000, 12, None)]
    ['0', '0.5', '3.142', '1.5k', '2M', '12', '-']
    """
    if x is None:
        return "-"
    x = float(x)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{suffix}"
    return f"{x:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi].

    >>> nice_ticks(0.3, 9.2)
    [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    >>> nice_ticks(1, 2, integer=True)
    [1.0, 2.0]
    """
    if hi <= lo:
        lo, hi = lo - (abs(lo) * 0.1 or 1), hi + (abs(hi) * 0.1 or 1)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(step, 1.0) if integer else step
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [float(round(k * step, 12)) for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (lo > 0).

    >>> log_ticks(3, 4500)
    [1.0, 10.0, 100.0, 1000.0, 10000.0]
    """
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** k for k in range(a, max(b, a + 1) + 1)]


# ---------------------------------------------------------------- SVG

def _e(s) -> str:
    return html.escape(str(s), quote=True)


class _Axis:
    """Maps data values to pixels along one axis, linear or log10."""

    def __init__(self, values: Sequence[float], log: bool, p0: float, p1: float, integer: bool = False,
                 zero: bool = False):
        lo, hi = min(values), max(values)
        if zero and not log:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        self.log = log
        self.ticks = log_ticks(lo, hi) if log else nice_ticks(lo, hi, integer=integer)
        f = math.log10 if log else float
        self.v0, self.v1, self.p0, self.p1, self.f = f(self.ticks[0]), f(self.ticks[-1]), p0, p1, f

    def __call__(self, v: float) -> float:
        return self.p0 + (self.f(v) - self.v0) / ((self.v1 - self.v0) or 1) * (self.p1 - self.p0)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
              logx: bool = False, logy: bool = False, integer_x: bool = False, zero_y: bool = False,
              width: int = 540, height: int = 300) -> str:
    """An inline ``<svg>`` line plot.

    Parameters
    ----------
    series : dict of name -> (xs, ys)
        One ``<path class="series">`` each (with dots when it has 40 points or fewer); a legend
        when there are several. Missing values, and points a log axis cannot show (<= 0), are
        dropped; with no point left the plot says "no data".
    title, xlabel, ylabel : str
        Text on the plot (escaped).
    logx, logy : bool
        Log10 axes, ticked at powers of ten.
    integer_x : bool
        Ticks on the x axis at whole numbers only (epochs).
    zero_y : bool
        The y axis includes 0 (rates, sizes).
    width, height : int
        Pixels.

    Returns
    -------
    str
        The ``<svg>`` element.
    """
    # Several series: a legend row each, between the title and the plot area.
    left, right, top, bottom = 64, 16, 30 + (16 * len(series) if len(series) > 1 else 0), 44
    clean = {name: [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None
                    and (not logx or x > 0) and (not logy or y > 0) and math.isfinite(x) and math.isfinite(y)]
             for name, (xs, ys) in series.items()}
    pts = [p for ps in clean.values() for p in ps]
    box = f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
    out = [f'<svg {box} role="img" aria-label="{_e(title)}">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" class="title">{_e(title)}</text>']
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    xa = _Axis([x for x, _ in pts], logx, left, width - right, integer=integer_x)
    ya = _Axis([y for _, y in pts], logy, height - bottom, top, zero=zero_y)
    out += _axes(xa, ya, left, width - right, top, height - bottom, xlabel, ylabel)
    for k, (name, ps) in enumerate(clean.items()):
        colour = COLOURS[k % len(COLOURS)]
        d = " ".join(f"{'M' if i == 0 else 'L'}{xa(x):.1f},{ya(y):.1f}" for i, (x, y) in enumerate(ps))
        out.append(f'<path class="series" d="{d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(ps) <= 40:
            out += [f'<circle cx="{xa(x):.1f}" cy="{ya(y):.1f}" r="3" fill="{colour}"/>' for x, y in ps]
        if len(clean) > 1:
            ly = 30 + 16 * k
            out.append(f'<line x1="{left}" y1="{ly}" x2="{left + 20}" y2="{ly}" stroke="{colour}" '
                       f'stroke-width="3"/><text x="{left + 26}" y="{ly + 4}">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _axes(xa: _Axis, ya: _Axis, x0: float, x1: float, y1: float, y0: float, xlabel: str, ylabel: str) -> list[str]:
    """Frame, grid lines, tick labels and axis titles (y0 is the bottom, in pixels)."""
    out = [f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#888"/>']
    for t in xa.ticks:
        px = xa(t)
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y1}" class="grid"/>'
                   f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{fmt(t)}</text>')
    for t in ya.ticks:
        py = ya(t)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" class="grid"/>'
                   f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 36}" text-anchor="middle">{_e(xlabel)}</text>'
               f'<text transform="translate(14,{(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">{_e(ylabel)}</text>')
    return out


# ---------------------------------------------------------------- the page

_STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.plots{display:flex;flex-wrap:wrap;gap:12px}
svg{background:#fff;border:1px solid #ddd}svg text{font-size:12px;fill:#333}svg .title{font-size:14px}
svg .grid{stroke:#eee}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}"""
# Defence in depth: even a tag that escaped escaping could neither run nor load anything.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def _n(x) -> str:
    """Exact integers with thousands separators, other numbers short (``fmt``)."""
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else fmt(x)


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{_e(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _training_plots(manifest: dict) -> str:
    rows = epoch_rows(manifest)
    ep = [r["epoch"] for r in rows]

    def col(key, scale=1.0):
        return [None if r[key] is None else r[key] * scale for r in rows]

    plots = [
        line_plot({"loss": (ep, col("loss"))}, "Training loss per epoch", "epoch", "loss", integer_x=True),
        line_plot({"words/s": (ep, col("words_per_second"))}, "Training speed", "epoch", "words per second",
                  integer_x=True, zero_y=True),
        line_plot({"merge traffic": (ep, col("merge_bytes", 1e-6))}, "Merge traffic per epoch", "epoch",
                  "MB between workers", integer_x=True, zero_y=True),
        line_plot({"epoch (wall)": (ep, col("seconds")), "merges (compute)": (ep, col("merge_seconds"))},
                  "Time per epoch", "epoch", "seconds", integer_x=True, zero_y=True),
    ]
    return f'<h2>Training</h2><div class="plots">{"".join(plots)}</div>'


def _vocabulary(manifest: dict, data: dict) -> str:
    corpus = manifest.get("corpus") or {}
    plot = line_plot({"count": (data.get("ranks") or [], data.get("counts") or [])}, "Word counts by rank",
                     "rank", "count", logx=True, logy=True)
    keys = ("vocab_size", "distinct_words", "vocab_tokens", "raw_tokens", "sentences", "bytes", "blocks", "shards",
            "shard_bytes")
    stats = [(k, _n(corpus[k])) for k in keys if k in corpus]
    stats.insert(0, ("files", _n(len(corpus.get("files") or []))))
    return (f'<h2>Vocabulary and corpus</h2><div class="plots">{plot}'
            f'<div>{_table(("statistic", "value"), stats, numeric=(1,))}</div></div>')


def _neighbours(data: dict) -> str:
    rows = [(n["word"], _n(n["rank"]), _n(n["count"]), ", ".join(f"{w} ({s:.2f})" for w, s in n["nearest"]))
            for n in data.get("neighbours") or []]
    if not rows:
        return ""
    return ("<h2>Nearest neighbours (cosine) of words spread over the frequency ranks</h2>"
            + _table(("word", "rank", "count", "nearest"), rows, numeric=(1, 2)))


def render(manifest: dict, data: dict | None = None) -> str:
    """The whole ``report.html`` of a run. Self-contained: inline CSS and SVG, no script, no
    external resource; every string escaped.

    Parameters
    ----------
    manifest : dict
        The run's manifest, before or after publishing (``run_id`` included). Its ``config`` is
        shown as it is: ``JobConfig.to_dict`` has redacted the storage options.
    data : dict, optional
        ``sample``'s result (counts by rank, neighbours); without it those parts are empty.

    Returns
    -------
    str
        The HTML page.

    Examples
    --------
    >>> page = render({"run_id": "r1", "config": {"train": {"dim": 8}}}, {"neighbours": [
    ...     {"word": "<script>", "rank": 1, "count": 9, "nearest": [["a&b", 0.5]]}]})
    >>> "<script" in page, "&lt;script&gt;" in page, "a&amp;b (0.50)" in page
    (False, True, True)
    """
    data = data or {}
    metrics = manifest.get("metrics") or {}
    run_id = manifest.get("run_id") or "?"
    timings = [(k, f"{metrics[k]:.2f}" if k.endswith("seconds") else _n(metrics[k]))
               for k in ("total_seconds", "count_seconds", "encode_seconds", "topk_seconds",
                         "restarts_after_worker_loss")
               if isinstance(metrics.get(k), (int, float))]
    files = [(name, _n(meta.get("size")), str(meta.get("sha256", ""))[:16])
             for name, meta in (manifest.get("files") or {}).items()]
    versions = ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items())
    return "".join([
        (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
         f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
         f"<title>nsdist run {_e(run_id)}</title><style>{_STYLE}</style></head><body>"),
        f"<h1>nsdist run {_e(run_id)}</h1><p>created {_e(manifest.get('created') or '?')}; {_e(versions)}</p>",
        _training_plots(manifest),
        _table(("timing", "value"), timings, numeric=(1,)) if timings else "",
        _vocabulary(manifest, data),
        _neighbours(data),
        "<h2>Configuration (resolved)</h2>", _table(("key", "value"), flatten(manifest.get("config") or {})),
        "<h2>Files</h2>", _table(("name", "bytes", "sha256 (first 16)"), files, numeric=(1,)),
        "</body></html>\n",
    ])
