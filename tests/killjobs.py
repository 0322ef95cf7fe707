"""Jobs started as processes, stopped hard once they have saved a checkpoint: the one place the
tests that kill (or evict) a running job wait for its first checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from nsdist import storage


def wait_for_checkpoint(job: subprocess.Popen, out: str, storage_options=None, timeout: float = 300,
                        poll: float = 0.1) -> str:
    """The URL of the run under ``out`` once it has saved a checkpoint (its state.json, written
    after the model); fails with the job's stderr if the job ends first, or after ``timeout`` s."""
    fs, root = storage.filesystem(out, storage_options)
    deadline = time.time() + timeout
    while True:
        fs.invalidate_cache()
        states = fs.glob(f"{root}/runs/*/checkpoints/*/state.json")
        if states:
            run = states[0].split("/checkpoints/")[0]
            return run if storage.is_local(fs) else f"{out.split('://')[0]}://{run}"
        if job.poll() is not None:
            err = job.communicate()[1]
            raise AssertionError((err.decode() if isinstance(err, bytes) else err or "")[-3000:])
        assert time.time() < deadline, f"no checkpoint within {timeout} s"
        time.sleep(poll)


def kill(job: subprocess.Popen) -> None:
    """SIGKILL the job's process group (started with ``start_new_session=True``: its LocalCluster's
    workers go down with it), and reap it."""
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
