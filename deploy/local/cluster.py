"""A real Dask cluster of separate processes on 127.0.0.1, for integration tests and local trials.

Unlike ``LocalCluster``, every process here is started the way production starts it (``dask
scheduler`` and ``dask worker`` command lines, a nanny per worker), so tests can kill a worker
process, read its log, or point ``nsdist train --scheduler`` at it from another process.

    >>> address, cluster = start_cluster(workers=2, threads=1)    # doctest: +SKIP
    >>> cluster.worker_pids                                       # doctest: +SKIP
    [41230, 41231]
    >>> cluster.kill_worker(0)          # SIGKILL nanny + worker: a lost node    # doctest: +SKIP
    >>> cluster()                       # stop everything (same as cluster.stop())  # doctest: +SKIP

``deploy/`` is not a package; load this file by path, e.g.::

    spec = importlib.util.spec_from_file_location("nsdist_local_cluster", ROOT / "deploy/local/cluster.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)

or run it: ``python deploy/local/cluster.py --workers 2`` prints the address and serves until
interrupted (the shell scripts next to this file do the same with pid files instead).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["ClusterStartError", "LocalProcessCluster", "start_cluster"]


_LIVE: "set[LocalProcessCluster]" = set()  # started and not stopped (strong refs: see _stop_all)


@atexit.register
def _stop_all() -> None:
    """Never leave processes behind when a test session ends without stopping its clusters."""
    for cluster in list(_LIVE):
        cluster.stop(grace=1.0)


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message carries the tail of the failing process's log."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: int) -> None:
    """Signal a whole process group (a nanny and the worker process it spawned)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalProcessCluster:
    """A ``dask scheduler`` and N ``dask worker`` processes on 127.0.0.1.

    Each process is started in its own session (process group), so stopping or killing a worker
    also takes down the worker process its nanny spawned: nothing is left behind. Calling the
    object stops the cluster, so ``(address, stop) = start_cluster()`` reads naturally.
    """

    def __init__(
        self,
        workers: int = 2,
        threads: int = 1,
        env: Mapping[str, str] | None = None,
        directory: str | os.PathLike | None = None,
        timeout: float = 60.0,
        nanny: bool = True,
        worker_args: Sequence[str] = (),
    ):
        if workers < 0 or threads < 1:
            raise ValueError(f"need workers >= 0 and threads >= 1, got {workers} and {threads}")
        self.n_workers = workers
        self.threads = threads
        self.timeout = timeout
        self.nanny = nanny
        self.worker_args = list(worker_args)
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="nsdist-cluster-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = self.directory / "scheduler.json"
        self.env = {**os.environ, **(env or {})}
        # The scheduler file decides where workers connect: an inherited address must not.
        self.env.pop("DASK_SCHEDULER_ADDRESS", None)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.address: str | None = None
        self.dashboard_link: str | None = None
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: dict[int, Path] = {}
        self._stopped = False

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.directory / f"{name}.log"
        with open(log, "wb") as out:
            # start_new_session: the process leads its own group, so killpg reaches its children
            # (the nanny's worker process) and a Ctrl-C in the test runner does not hit it twice.
            proc = subprocess.Popen(
                [sys.executable, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.directory, start_new_session=True,
            )
        self._logs[proc.pid] = log
        (self.directory / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc

    def _check_alive(self, proc: subprocess.Popen, what: str) -> None:
        if proc.poll() is not None:
            raise ClusterStartError(
                f"{what} exited with code {proc.returncode} while starting; the end of its log:\n"
                f"{_tail(self._logs[proc.pid])}"
            )

    def start(self) -> "LocalProcessCluster":
        _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        deadline = time.monotonic() + self.timeout
        self.scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._spawn("scheduler", [
            "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
            # Port 0 everywhere: several clusters (parallel test runs) must not collide on 8786/8787.
            "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(self.scheduler_file),
        ])
        # Workers start at once: they wait for the scheduler file themselves, so the start-ups
        # (mostly Python imports) overlap.
        for i in range(self.n_workers):
            self.workers.append(self._spawn(f"worker-{i}", [
                "-m", "distributed.cli.dask_worker", "--scheduler-file", str(self.scheduler_file),
                "--host", "127.0.0.1", "--nthreads", str(self.threads), "--nworkers", "1",
                "--name", f"worker-{i}", "--no-dashboard",
                "--local-directory", str(self.directory / f"worker-{i}"),
                # A worker whose scheduler is gone exits on its own: no orphans if the test
                # process dies without calling stop().
                "--death-timeout", "30",
                "--nanny" if self.nanny else "--no-nanny",
                *self.worker_args,
            ]))
        info = self._wait_scheduler_file(deadline)
        self.address = info["address"]
        port = info.get("services", {}).get("dashboard")
        self.dashboard_link = f"http://127.0.0.1:{port}/status" if port else None
        self._wait_workers(deadline)

    def _wait_scheduler_file(self, deadline: float) -> dict:
        while True:
            self._check_alive(self.scheduler, "dask scheduler")
            for i, proc in enumerate(self.workers):
                self._check_alive(proc, f"dask worker-{i}")
            try:
                # Written with a plain json.dump, not atomically: a partial file is retried.
                info = json.loads(self.scheduler_file.read_text())
                if info.get("address"):
                    return info
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"dask scheduler wrote no {self.scheduler_file} within {self.timeout:.0f} s; its log:\n"
                    f"{_tail(self._logs[self.scheduler.pid])}"
                )
            time.sleep(0.05)

    def _wait_workers(self, deadline: float) -> None:
        from distributed import Client

        with Client(self.address, timeout=max(1.0, deadline - time.monotonic())) as client:
            while True:
                for i, proc in enumerate(self.workers):
                    self._check_alive(proc, f"dask worker-{i}")
                joined = len(client.scheduler_info(n_workers=-1)["workers"])
                if joined >= self.n_workers:
                    return
                if time.monotonic() > deadline:
                    logs = "\n".join(f"--- worker-{i}:\n{_tail(self._logs[p.pid], 10)}" for i, p in enumerate(self.workers))
                    raise ClusterStartError(
                        f"only {joined} of {self.n_workers} workers joined {self.address} within "
                        f"{self.timeout:.0f} s; worker logs:\n{logs}"
                    )
                time.sleep(0.05)

    # ------------------------------------------------------------------ inspection and faults

    @property
    def scheduler_pid(self) -> int | None:
        return self.scheduler.pid if self.scheduler else None

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of the ``dask worker`` commands (the nannies), in worker-<i> order.

        Killing one with SIGKILL also ends its worker process (distributed exits a child whose
        parent is gone); ``kill_worker`` signals the whole group to be certain.
        """
        return [p.pid for p in self.workers]

    @property
    def pids(self) -> list[int]:
        """Every process this object started (scheduler first)."""
        return ([self.scheduler.pid] if self.scheduler else []) + self.worker_pids

    def worker_process_pids(self) -> dict[str, int]:
        """{worker name: pid of the process that runs tasks}, asked from the scheduler now.

        With a nanny this is the nanny's child; SIGKILL it and the nanny starts a new one (a
        worker restart), unlike ``kill_worker`` (the node is lost).
        """
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            names = {a: str(w["name"]) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
            return {names[a]: pid for a, pid in client.run(os.getpid).items() if a in names}

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> int:
        """Kill worker-<index> with its nanny (SIGKILL: no goodbye to the scheduler); returns its pid."""
        proc = self.workers[index]
        _signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        return proc.pid

    def log(self, name: str) -> str:
        """The log of 'scheduler' or 'worker-<i>'."""
        return (self.directory / f"{name}.log").read_text(errors="replace")

    # ------------------------------------------------------------------ shutdown

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM everything (workers first), SIGKILL what is left after ``grace`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        _LIVE.discard(self)
        procs = [*self.workers, *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            # Also reaches any worker process left in the group after its nanny exited.
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process in D state
                pass
        if self._own_dir:
            import shutil

            for _ in range(3):  # a dying process may still create a file while the tree goes
                shutil.rmtree(self.directory, ignore_errors=True)
                if not self.directory.exists():
                    break
                time.sleep(0.1)

    __call__ = stop

    def __enter__(self) -> "LocalProcessCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalProcessCluster {self.address} workers={self.worker_pids}>"


def start_cluster(
    workers: int = 2,
    threads: int = 1,
    env: Mapping[str, str] | None = None,
    *,
    directory: str | os.PathLike | None = None,
    timeout: float = 60.0,
    nanny: bool = True,
    worker_args: Sequence[str] = (),
) -> tuple[str, LocalProcessCluster]:
    """Start a scheduler and ``workers`` workers of ``threads`` threads; return (address, stop).

    ``stop`` is the ``LocalProcessCluster``: call it to kill every process; it also exposes
    ``worker_pids``, ``kill_worker(i)``, ``worker_process_pids()`` and ``log(name)``. ``env`` is
    added to this process's environment for all of them (e.g. ``AWS_ENDPOINT_URL`` for a moto
    server). Returns once all workers have joined, or raises ClusterStartError with the failing
    process's log after ``timeout`` seconds, having stopped whatever it started.
    """
    cluster = LocalProcessCluster(workers, threads, env, directory, timeout, nanny, worker_args).start()
    return cluster.address, cluster


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Run a local Dask cluster on 127.0.0.1 until interrupted.")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", help="directory for logs, pid files and the scheduler file")
    args = p.parse_args(argv)
    address, cluster = start_cluster(args.workers, args.threads, directory=args.dir)
    print(address, flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(proc.poll() is None for proc in cluster.workers + [cluster.scheduler]):
            time.sleep(1)
        return 1
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
