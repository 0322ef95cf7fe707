"""The end of a job: the workers of the local cluster nsdist started, and the ``nsdist`` command's
own process, exit without the garbage collector's passes over what they imported (``gc.freeze``
just before); a cluster nsdist did not start is left as it was. And what that local cluster runs
in the background meanwhile."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from nsdist.cli import main
from nsdist.cluster import close, connect
from nsdist.config import ClusterConfig


class FreezeAtClose(WorkerPlugin):
    """Writes the worker's frozen object count (``gc.get_freeze_count``) to a file as the worker
    closes."""

    def __init__(self, path: str):
        self.path = path

    def teardown(self, worker):
        with open(os.path.join(self.path, str(worker.name)), "w") as f:
            f.write(str(gc.get_freeze_count()))


def test_the_local_cluster_workers_are_frozen_as_they_close(tmp_path):
    client, cluster = connect(ClusterConfig(workers=2))
    assert cluster is not None
    try:
        assert set(client.run(gc.get_freeze_count).values()) == {0}
        client.register_plugin(FreezeAtClose(str(tmp_path)))
    finally:
        close(client, cluster)
    counts = [int((tmp_path / name).read_text()) for name in os.listdir(tmp_path)]
    assert len(counts) == 2 and min(counts) > 0


def test_a_cluster_nsdist_did_not_start_is_not_frozen():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster:
        close(Client(cluster), None)  # a client of a cluster the caller runs: only the client closes
        with Client(cluster) as other:
            assert list(other.run(gc.get_freeze_count).values()) == [0]


EXIT_PROBE = """
import atexit, gc, json, sys
# Registered before main(), so it runs after what main() registers (atexit runs last-in first-out).
atexit.register(lambda: print(json.dumps({"frozen": gc.get_freeze_count()})))
from nsdist.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "frozen_after_main": gc.get_freeze_count()}))
sys.exit(code)
"""


def test_the_command_freezes_its_process_only_at_exit(tmp_path):
    corpus = tmp_path / "corpus.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, "synth", str(corpus), "--tokens", "1000"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines[0] == {"code": 0, "frozen_after_main": 0}
    assert lines[1]["frozen"] > 0
    assert corpus.stat().st_size > 0


def test_main_called_in_a_process_leaves_its_collections_alone(tmp_path):
    before = gc.get_freeze_count()
    assert main(["synth", str(tmp_path / "corpus.txt"), "--tokens", "1000"]) == 0
    assert gc.get_freeze_count() == before


def _background(dask_worker=None, dask_scheduler=None) -> tuple:
    """A process's periodic background work: whether it samples its threads' stacks, and the
    intervals (ms) of its event-loop tick and its system monitor."""
    pcs = (dask_worker or dask_scheduler).periodic_callbacks
    return "profile" in pcs, pcs["tick"].callback_time, pcs["monitor"].callback_time


def test_the_local_cluster_does_less_in_the_background_unless_the_user_asked(monkeypatch):
    """No stack sampling, a tick a second and system metrics every 2 s on the workers and the
    scheduler nsdist starts; a value the user's Dask config sets is kept (in a DASK_* variable,
    even Dask's default)."""
    client, cluster = connect(ClusterConfig(workers=1))
    try:
        assert list(client.run(_background).values()) == [(False, 1000, 2000)]
        assert client.run_on_scheduler(_background)[1:] == (1000, 2000)
    finally:
        close(client, cluster)
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")
    with dask.config.set({"distributed.admin.tick.interval": "50ms"}):
        client, cluster = connect(ClusterConfig(workers=1))
    try:
        assert list(client.run(_background).values()) == [(True, 50, 2000)]
    finally:
        close(client, cluster)


def test_a_served_dashboard_keeps_dask_s_background_work(tmp_path, monkeypatch):
    """With bokeh installed Dask serves its dashboard, whose profile and system pages show that
    work: the local cluster keeps Dask's settings."""
    from nsdist.cluster.client import QUIET, _quiet_background

    assert _quiet_background() == QUIET
    (tmp_path / "bokeh").mkdir()
    (tmp_path / "bokeh" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _quiet_background() == {}
