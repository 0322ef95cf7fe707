"""The start of a job: the ``nsdist`` command's local workers are forked from a server that has
imported nsdist (forkserver.py), started with the environment a spawned worker gets; the server
goes with the command, and a call of ``main`` in a process ends its own."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import subprocess
import sys
import threading
import time

import psutil

from nsdist import forkserver
from nsdist.cli import main
from nsdist.cli.commands import _local_workers_first
from nsdist.config import load_config
from nsdist.synth import generate


def _server(p: psutil.Process) -> psutil.Process | None:
    for child in p.children():
        try:
            line = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing.forkserver" in line and forkserver.PRELOAD in line:
            return child
    return None


def test_the_commands_local_workers_are_forked_from_its_server(tmp_path):
    files = generate(str(tmp_path / "corpus.txt"), tokens=300_000, seed=2)
    env = {k: v for k, v in os.environ.items() if k not in forkserver.WORKER_ENV}
    job = subprocess.Popen([sys.executable, "-m", "nsdist", "train", "--corpus", files.corpus, "--out",
                            str(tmp_path / "out"), "--workers", "2", "--set", "epochs=3", "--set", "dim=16"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent, seen = psutil.Process(job.pid), {}
    while job.poll() is None and len(seen) < 2:
        server = _server(parent)
        for worker in server.children() if server else []:
            try:
                seen[worker.pid] = (server.pid, worker.environ())
            except psutil.Error:
                pass
        time.sleep(0.02)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-2000:]
    assert out.strip().startswith(str(tmp_path / "out")), out
    assert len(seen) == 2, "the job's workers were not forked from its server"
    for pid, (server, environ) in seen.items():
        assert {k: environ.get(k) for k in forkserver.WORKER_ENV} == forkserver.WORKER_ENV
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE


def test_main_called_in_a_process_ends_its_server(tmp_path):
    files = generate(str(tmp_path / "corpus.txt"), tokens=100_000, seed=2)
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set() and not seen:
            server = _server(psutil.Process())
            if server is not None:
                seen.append(server.pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert main(["train", "--corpus", files.corpus, "--out", str(tmp_path / "out"), "--workers", "1",
                     "--set", "epochs=2", "--set", "dim=8"]) == 0
    finally:
        done.set()
        watcher.join()
    assert seen and not forkserver.running()
    deadline = time.time() + 10
    while _server(psutil.Process()) is not None:
        assert time.time() < deadline, "the fork server outlived main()"
        time.sleep(0.05)


def test_without_a_fork_server_the_workers_are_spawned(tmp_path, monkeypatch):
    """A fork server that cannot start (no process or socket to be had) costs the job nothing
    but its head start."""
    calls = []

    def refused():
        calls.append(1)
        raise OSError("no more processes")

    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", refused)
    files = generate(str(tmp_path / "corpus.txt"), tokens=20_000, seed=2)
    assert main(["train", "--corpus", files.corpus, "--out", str(tmp_path / "out"), "--workers", "1",
                 "--set", "epochs=1", "--set", "dim=8"]) == 0
    assert calls == [1] and not forkserver.running() and (tmp_path / "out" / "LATEST").exists()


def test_the_command_starts_its_server_before_it_imports_the_library(tmp_path):
    """The server starts before the command parses its arguments: the parser imports neither
    Dask nor numba (the server's imports are what the local cluster's start waits for)."""
    script = ("import sys\n"
              "from nsdist import cli, forkserver\n"
              "def start():\n"
              "    print(sorted(m for m in ('distributed', 'numba', 'pyarrow') if m in sys.modules))\n"
              "    raise SystemExit(0)\n"
              "forkserver.start = start\n"
              "cli.main(['-v', 'train', '--corpus', 'c.txt', '--out', 'out'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr[-2000:])
    script = script.replace("'train'", "'evaluate'")  # a command that starts no cluster: no server
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "[" not in done.stdout, done.stdout


def test_a_config_that_names_a_scheduler_stops_the_server(tmp_path):
    """The command line named no scheduler, so the server started; the config file does."""
    cfg = load_config(None, {"cluster.scheduler": "tcp://127.0.0.1:8786"}, environ={}, corpus=("c.txt",),
                      out=str(tmp_path / "out"))
    forkserver.start()
    try:
        assert forkserver.running() and _server(psutil.Process()) is not None
        _local_workers_first(cfg)
        assert not forkserver.running()
        deadline = time.time() + 10
        while _server(psutil.Process()) is not None:
            assert time.time() < deadline, "the fork server outlived the config that named a scheduler"
            time.sleep(0.05)
    finally:
        forkserver.stop()
