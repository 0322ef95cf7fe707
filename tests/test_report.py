"""report.html (rendered, published with the run, drawn by a real headless chromium) and `nsdist info`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pyarrow as pa
import pytest
from conftest import S3_SECRET, require_tool

from nsdist import checkpoint, report, storage
from nsdist.cli import main
from nsdist.config import load_config
from nsdist.model import init_model
from nsdist.runs import Embeddings, claim_run, load, new_run_id, run_url
from nsdist.pipeline import train

EVIL = "<script>alert(1)</script>"  # a word of the corpus: the page must show it, never run it


def _corpus(lines: int = 3000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = [EVIL, "a&b", '"quoted"'] + [f"w{i}" for i in range(200)]
    p = 1 / np.arange(1, len(words) + 1)
    return "".join(" ".join(rng.choice(words, size=rng.integers(2, 20), p=p / p.sum())) + "\n"
                   for _ in range(lines))


@pytest.fixture(scope="module")
def published(client, tmp_path_factory):
    """A tiny real run trained on the session's cluster and published: (out, TrainResult)."""
    tmp = tmp_path_factory.mktemp("report")
    corpus = tmp / "c.txt"
    corpus.write_text(_corpus())
    out = str(tmp / "out")
    cfg = load_config(None, {"dim": 16, "epochs": 3, "min_count": 3, "shards": 2, "syncs_per_epoch": 2},
                      environ={}, corpus=(str(corpus),), out=out)
    return out, train(cfg, client)


# ---------------------------------------------------------------- the page, from plain inputs

def _page(epochs: int = 3, storage_options=None) -> str:
    cfg = load_config(None, {"dim": 4}, environ={}, corpus=("c.txt",), out="o", storage_options=storage_options or {})
    rng = np.random.default_rng(1)
    words = pa.array([EVIL, "a&b", '"q"'] + [f"w{i}" for i in range(97)])
    sample = report.sample(words, np.arange(1000, 900, -1), rng.standard_normal((100, 4)).astype(np.float32))
    manifest = {"run_id": "r1", "config": cfg.to_dict(), "corpus": {"files": ["c.txt"], "vocab_size": 100},
                "metrics": {"epochs": [{"epoch": e, "loss": 3 / e, "words_per_second": 1e5 * e, "seconds": 1.0,
                                        "merge_bytes": 2e6, "merge_seconds": 0.1} for e in range(1, epochs + 1)]},
                "files": {"vectors.npy": {"size": 1600, "sha256": "ab" * 32}}}
    return report.render(manifest, sample)


def test_the_sample_asks_for_its_words_once_in_id_order():
    """A vocabulary held in parts (``cluster.VocabParts``' view) is asked for the sampled words
    once, in id order: each part is then read once, not once per switch between parts."""
    class Parts:
        asked = []

        def __len__(self):
            return 100

        def __getitem__(self, ids):
            self.asked.append(np.asarray(ids).tolist())
            return np.array([f"w{i}" for i in np.atleast_1d(ids)])

    words, rng = Parts(), np.random.default_rng(2)
    sample = report.sample(words, np.arange(1000, 900, -1), rng.standard_normal((100, 4)).astype(np.float32))
    (asked,) = words.asked
    seen = {n["word"] for q in sample["neighbours"] for n in [q] + [{"word": w} for w, _ in q["nearest"]]}
    assert asked == sorted(set(asked)) and seen == {f"w{i}" for i in asked} and len(asked) > len(sample["neighbours"])


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)


def test_page_has_a_path_per_series_escapes_words_and_loads_nothing():
    page = _page(storage_options={"secret": "s3cr3t-value", "key": "AKIA-not-shown"})
    # loss, words/s, merge traffic, time (wall and merges), counts by rank
    assert [svg.count('<path class="series"') for svg in _svgs(page)] == [1, 1, 1, 2, 1]
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b" in page and "&quot;q&quot;" in page
    assert not re.search(r"\b(src|href)\s*=|url\(|@import|://", page, flags=re.IGNORECASE)
    assert "s3cr3t-value" not in page and "AKIA-not-shown" not in page and "storage_options.secret" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # The counts plot is log-log: decade ticks, labelled.
    counts_svg = _svgs(page)[-1]
    assert ">100<" in counts_svg and ">1k<" in counts_svg and ">10<" in counts_svg


def test_one_epoch_and_empty_series_still_draw():
    one = _svgs(_page(epochs=1))
    assert all(svg.count("<circle") >= 1 for svg in one[:4])  # a lone point is a dot
    empty = report.line_plot({"s": ([], [])}, "t", "x", "y")
    assert "no data" in empty and "<path" not in empty
    # A log axis drops what it cannot show, keeps the rest.
    svg = report.line_plot({"s": ([0, 1, 10], [5, 0, 7])}, "t", "x", "y", logx=True, logy=True)
    assert svg.count("<circle") == 1


def test_nearest_equals_the_embeddings_query_in_small_blocks():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 6)).astype(np.float32)
    vectors[7] = 0  # a zero row scores 0, as in Embeddings
    words = [f"w{i}" for i in range(50)]
    emb = Embeddings(words, np.arange(50, 0, -1), vectors, {})
    ids = [0, 3, 7, 49]
    for blocks in (5, 64):  # block boundaries cut through the queries
        for i, row in zip(ids, report.nearest(vectors, ids, topn=4, block=blocks)):
            expected = emb.most_similar(words[i], topn=4)
            assert [words[j] for j, _ in row] == [w for w, _ in expected]
            assert np.allclose([s for _, s in row], [s for _, s in expected], atol=1e-6)


def test_the_sample_is_small_whatever_the_vocabulary():
    counts = np.arange(1_000_000, 0, -1)
    ranks, sampled = report.count_ranks(counts)
    assert len(ranks) <= 200 and ranks[0] == 1 and ranks[-1] == 1_000_000 and sampled[-1] == 1
    assert all(c == counts[r - 1] for r, c in zip(ranks, sampled))
    assert report.count_ranks(np.array([], np.int64)) == ([], [])
    assert report.query_ids(0) == [] and report.query_ids(1) == [0] and len(report.query_ids(10**6)) == 8
    one = report.sample(pa.array(["solo"]), np.array([4]), np.ones((1, 3), np.float32))
    assert one["neighbours"] == [{"word": "solo", "rank": 1, "count": 4, "nearest": []}]


# ---------------------------------------------------------------- a published run, in a real browser

def _chromium() -> str:
    return require_tool("chromium", why="the report test draws report.html in it (Debian: apt-get install chromium)")


def _unfilter(kind: int, row: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """Undo one PNG scanline filter (RFC 2083, 6)."""
    if kind == 0:
        return row
    if kind == 1:  # Sub: a running sum of each channel along the row
        return (np.cumsum(row.reshape(-1, bpp).astype(np.uint32), axis=0) & 255).astype(np.uint8).reshape(-1)
    if kind == 2:
        return ((row.astype(np.uint16) + prev) & 255).astype(np.uint8)
    out, up = bytearray(row.tobytes()), prev.tolist()
    for i in range(len(out)):  # Average and Paeth depend on the byte to the left: byte by byte
        a, b, c = (out[i - bpp] if i >= bpp else 0), up[i], (up[i - bpp] if i >= bpp else 0)
        if kind == 3:
            out[i] = (out[i] + (a + b) // 2) & 255
        else:
            p = a + b - c
            pa_, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            out[i] = (out[i] + (a if pa_ <= pb and pa_ <= pc else b if pb <= pc else c)) & 255
    return np.frombuffer(bytes(out), np.uint8)


def _png_rgb(path: str) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what chromium writes) as a (height, width, 3) array."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        header = struct.unpack(">IIBBBBB", chunk) if kind == b"IHDR" else header
        idat += [chunk] if kind == b"IDAT" else []
        pos += 12 + n
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, width * bpp + 1)
    rows, prev = [], np.zeros(width * bpp, np.uint8)
    for line in raw:
        prev = _unfilter(int(line[0]), line[1:], prev, bpp)
        rows.append(prev)
    return np.stack(rows).reshape(height, width, bpp)[:, :, :3]


def test_published_report_is_listed_verified_and_drawn_by_chromium(published, tmp_path):
    out, result = published
    page_path = os.path.join(result.run_url, "report.html")
    with open(page_path, encoding="utf-8") as f:
        page = f.read()
    meta = result.manifest["files"]["report.html"]
    assert meta == {"size": os.path.getsize(page_path), "sha256": hashlib.sha256(page.encode()).hexdigest()}
    assert load(out, verify=True).manifest["files"]["report.html"] == meta
    # The corpus's most frequent word is EVIL: first among the neighbour queries, escaped.
    assert "<script" not in page.lower() and "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td class=n>1</td>" in page
    assert f"<td>vocab_size</td><td class=n>{result.manifest['corpus']['vocab_size']:,}</td>" in page
    assert [svg.count('<path class="series"') for svg in _svgs(page)] == [1, 1, 1, 2, 1]

    shot = tmp_path / "shot.png"
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=1200,1600", "file://" + os.path.abspath(page_path)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = _png_rgb(str(shot))
    assert pixels.shape == (1600, 1200, 3)
    plots = pixels[100:800].astype(int)  # the training plots, under the heading
    assert (plots.min(axis=2) < 235).mean() > 0.02  # ink, not a blank page
    assert len(np.unique(plots.reshape(-1, 3), axis=0)) > 50  # lines, dots, text: antialiased colours
    for colour in report.COLOURS[:2]:  # every series drawn in its colour
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(plots - rgb).max(axis=2) < 12).sum() > 100, colour


def test_report_is_written_to_s3_without_the_credentials(s3, client, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(_corpus(lines=500))
    cfg = load_config(None, {"dim": 8, "epochs": 1, "min_count": 3, "shards": 2}, environ={}, corpus=(str(corpus),),
                      out=s3.url("out"), storage_options=s3.storage_options)
    result = train(cfg, client)
    emb = load(s3.url("out"), storage_options=s3.storage_options, verify=True)  # checks report.html's sha256
    assert "report.html" in emb.manifest["files"]
    page = storage.read_bytes(storage.join(result.run_url, "report.html"), s3.storage_options).decode()
    assert result.run_id in page and S3_SECRET not in page and "storage_options.secret" in page


# ---------------------------------------------------------------- nsdist info

def test_info_of_a_published_run_text_and_json(published, capsys):
    out, result = published
    m = result.manifest
    assert main(["info", out]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {result.run_id}, published {m['created']}: {os.path.abspath(result.run_url)}\n")
    assert f"vocabulary {m['corpus']['vocab_size']:,} words" in text
    epochs = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s+\d+\.\d{4}\s", line)]
    assert [int(e[0]) for e in epochs] == [1, 2, 3]
    assert [float(e[1]) for e in epochs] == [round(e["loss"], 4) for e in m["metrics"]["epochs"]]
    assert "  train.dim = 16" in text
    assert re.search(rf"^  report\.html +{m['files']['report.html']['size']:,}$", text, flags=re.MULTILINE), text
    # The JSON form, from the console entry point, on the run's own URL.
    p = subprocess.run([sys.executable, "-m", "nsdist", "info", result.run_url, "--json"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["run_id"] == result.run_id and info["published"] is True
    assert info["corpus"]["files"] == 1 and info["corpus"]["vocab_size"] == m["corpus"]["vocab_size"]
    assert [e["words_per_second"] for e in info["epochs"]] == [e["words_per_second"] for e in m["metrics"]["epochs"]]
    assert [e["merge_bytes"] for e in info["epochs"]] == [e["merge_bytes"] for e in m["metrics"]["epochs"]]
    assert {f["name"]: f["size"] for f in info["files"]} == {k: v["size"] for k, v in m["files"].items()}
    assert info["config"] == m["config"]


def test_info_of_an_unpublished_run_says_how_to_resume(tmp_path, capsys):
    out = str(tmp_path / "out")
    cfg = load_config(None, {"dim": 3}, environ={}, corpus=("c.txt",), out=out, storage_options={"key": "AKIA-x"})
    run_id = new_run_id()
    claim_run(out, run_id, config=cfg.to_dict())
    run = run_url(out, run_id)
    assert main(["info", out]) == 3  # nothing published: the error names the command that lists it
    err = capsys.readouterr().err.strip()
    assert err == f"nsdist: error: nothing published under {out!r} yet; list its unfinished runs with: " \
                  f"nsdist runs {out} --all"
    epoch = {"epoch": 1, "loss": 2.5, "words_per_second": 1000.0, "seconds": 2.0, "merge_bytes": 300,
             "merge_seconds": 0.01}
    checkpoint.save_model(checkpoint.url(run, 0), None, init_model(4, 3, seed=1))
    checkpoint.write_state(checkpoint.url(run, 0), {"epoch": 1, "metrics": [epoch], "corpus_fingerprint": "f" * 64,
                                                    "vocab_sha256": "v" * 64}, None)
    assert main(["info", run]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {run_id}, unpublished (checkpoint after epoch 1): {os.path.abspath(run)}\n")
    assert text.rstrip().endswith(f"resume: nsdist train --resume {os.path.abspath(run)}")
    assert "  train.dim = 3" in text and "AKIA-x" not in text and "  storage_options.key = ***" in text
    assert main(["info", run, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["published"] is False and info["checkpoint_epoch"] == 1 and info["epochs"] == [epoch]
    assert info["resume"] == f"nsdist train --resume {os.path.abspath(run)}"


def test_info_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nsdist: error: no published model at") and "train one" in err
    assert main(["info"]) == 2
    assert "the following arguments are required: OUT|RUN" in capsys.readouterr().err
