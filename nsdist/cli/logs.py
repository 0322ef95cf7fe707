"""How the ``nsdist`` command logs: plain lines (kept clear of a progress bar on a terminal) or
one JSON object per line, and Dask's own loggers quietened while a job stops."""

from __future__ import annotations

import json
import logging
import sys
import time

from .. import progress

VERBOSE = []  # set by -v: Dask's own logs stay on while a job stops


# What every LogRecord has; anything else on a record came as ``extra=`` fields.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields (``extra=``:
    epoch, loss, words_per_second, ...), so a log pipeline can chart a job without parsing text."""

    def format(self, record):
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}
        return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage(), **fields}, default=str)


class _TerminalHandler(logging.StreamHandler):
    """Log lines that do not cut into a progress bar: the bar is erased, the line written, the bar
    drawn again below it."""

    def emit(self, record):
        with progress.log_line():
            super().emit(record)


def setup_logging(fmt: str, verbose: bool) -> None:
    tty = fmt == "plain" and sys.stderr.isatty()
    progress.enable(tty)
    handler = _TerminalHandler(sys.stderr) if tty else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("nsdist")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def quiet_dask() -> None:
    """Dask's complaints while a job stops or its cluster closes (tasks cut short, heartbeats that
    miss a closing scheduler, a cancelled wait) are not news once the job has ended."""
    if not VERBOSE:
        from ..cluster.client import DASK_LOGGERS

        for name in DASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
