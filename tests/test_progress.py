"""What a person or a log pipeline sees while a job runs: progress bars on a terminal, JSON fields."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

from nsdist import progress
from nsdist.cli import main
from nsdist.synth import generate


def test_a_bar_draws_in_place_and_disappears(monkeypatch):
    stream = io.StringIO()
    with progress.Bar("counting", 4, stream, enabled=True, unit=" blocks") as bar:
        bar.advance()
        bar.advance(2, "12 words/s")
        frames = stream.getvalue().split("\r\x1b[K")
        assert frames[:2] == ["", "counting [........................] 0/4 blocks"]
        assert frames[2].startswith("counting [######..................] 1/4 blocks  ETA 0:0")
        assert frames[3].startswith("counting [##################......] 3/4 blocks  12 words/s  ETA 0:0")
        assert len(frames) == 4
    assert stream.getvalue().endswith("\r\x1b[K")  # erased: the stage's log line is its record
    quiet = io.StringIO()
    with progress.Bar("counting", 4, quiet, enabled=False) as bar:
        bar.advance()
    assert quiet.getvalue() == ""


def test_json_logs_carry_fields(tmp_path, client, capsys):
    corpus = generate(str(tmp_path / "c.txt"), tokens=20_000, seed=2).corpus
    out = str(tmp_path / "out")
    assert main(["train", "--corpus", corpus, "--out", out, "--scheduler", client.scheduler.address,
                 "--set", "dim=8", "--set", "epochs=2", "--log-format", "json", "-v"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    epochs = [r for r in records if r.get("stage") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["epochs"] == 2 for r in epochs)
    for r in epochs:
        assert r["loss"] > 0 and r["words_per_second"] > 0 and r["merge_bytes"] >= 0
        assert r["message"].startswith(f"epoch {r['epoch']}/2: loss {r['loss']:.4f}")
    count = next(r for r in records if r.get("stage") == "count")
    assert count["vocab_size"] > 0 and count["raw_tokens"] == 20_000
    published = next(r for r in records if r.get("stage") == "publish")
    assert published["url"].startswith(out) and published["run_id"] in published["url"]


def _run_in_terminal(argv: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m nsdist argv`` with stderr on a pseudo-terminal; exit code and all it wrote."""
    leader, follower = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "nsdist", *argv], stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    os.close(leader)
    p.stdout.close()
    return p.wait(timeout=60), b"".join(chunks).decode()


def test_a_terminal_gets_bars_and_whole_log_lines(tmp_path, client):
    corpus = generate(str(tmp_path / "c.txt"), tokens=100_000, seed=3).corpus
    code, err = _run_in_terminal(["train", "--corpus", corpus, "--out", str(tmp_path / "out"), "--scheduler",
                                  client.scheduler.address, "--set", "dim=8", "--set", "epochs=2"])
    assert code == 0, err
    frames = err.replace("\r\n", "\n").split("\r\x1b[K")
    bars = [f for f in frames if " [" in f and "]" in f and "/" in f and not f.endswith("\n")]
    assert any(b.startswith("counting [") for b in bars), err
    assert any(b.startswith("encoding [") for b in bars), err
    training = [b for b in bars if b.startswith("training [")]
    assert training and any("words/s" in b and "epoch 2/2" in b for b in training), err
    # Log lines are written whole, on lines of their own, never into a bar.
    lines = "".join(f for f in frames if f.endswith("\n")).splitlines()
    epochs = [line for line in lines if " epoch " in line and ": loss " in line]
    assert len(epochs) == 2 and all(line[8:].startswith(" epoch ") for line in epochs), lines
    assert not any("[" in line and "training" in line for line in lines), lines


def test_no_bars_off_a_terminal(tmp_path, client, capfd):
    corpus = generate(str(tmp_path / "c.txt"), tokens=20_000, seed=2).corpus
    assert main(["train", "--corpus", corpus, "--out", str(tmp_path / "out"), "--scheduler",
                 client.scheduler.address, "--set", "dim=8", "--set", "epochs=1"]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b" not in err and "epoch 1/1: loss" in err


def test_a_log_line_is_never_written_after_a_bar_another_thread_draws(monkeypatch):
    """A bar advanced from another thread (Dask's callbacks) while log lines are written: every
    log line starts on an erased line, none runs on after a bar's text."""
    import logging
    import threading

    from nsdist.cli.logs import _TerminalHandler

    monkeypatch.setattr(progress, "_ENABLED", [True])
    stream = io.StringIO()
    handler = _TerminalHandler(stream)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    record = logging.LogRecord("nsdist", logging.INFO, __file__, 0, "line %d", (0,), None)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two steps: the race shows in one run
    with progress.stage("training", 10**6, stream=stream) as bar:
        stop = threading.Event()
        drawer = threading.Thread(target=lambda: [bar.advance() for _ in iter(stop.is_set, True)])
        drawer.start()
        try:
            for i in range(20000):
                record.args = (i,)
                handler.emit(record)
        finally:
            stop.set()
            drawer.join()
            sys.setswitchinterval(switch)
    out = stream.getvalue()
    assert out.count("LOG line ") == 20000
    assert out.count("\r\x1b[KLOG line ") == 20000
