"""The ``nsdist`` command.

Exit codes: 0 success, 2 usage or config error, 3 bad input data, 75 transient
infrastructure failure (worth a retry), 130 interrupted (SIGINT), 143 terminated (SIGTERM), 1
anything else.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import sys
import threading

from .. import forkserver, progress
from ..errors import STOP, Interrupted, NsdistError
from .commands import COMMANDS
from .logs import VERBOSE, quiet_dask, setup_logging
from .parser import EXAMPLES, parser

__all__ = ["COMMANDS", "EXAMPLES", "main"]

log = logging.getLogger("nsdist")

_TERMINATED = []  # set when SIGTERM (Kubernetes evicting the pod) stopped the job


def _on_signal(signum, frame):
    # SIGTERM stops the way Ctrl-C does: the job cleans up and says how to resume (exit 143).
    if signum == signal.SIGTERM:
        _TERMINATED.append(signum)
    STOP.set()
    quiet_dask()  # at once: the wait this interrupts logs its own traceback as it unwinds
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    """Python prints an exception raised where it cannot propagate (in a ``__del__``) with its
    traceback. The stop request's KeyboardInterrupt can land there: the stop is not lost
    (``STOP``), and the traceback is not news."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and STOP.is_set():
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # At exit, freeze what the process holds: the collections of the interpreter's exit then skip
    # the objects of every module a job imported (Dask, numba, pyarrow), a few tenths of a second
    # after the command's work is done. Once per process, and only at its exit: a process that
    # calls main() several times (tests) collects as usual until then.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    if not argv:
        parser().print_help()
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(s, _on_signal) for s in signals] if in_main_thread else []
    hook = sys.unraisablehook
    sys.unraisablehook = _unraisable
    try:
        return _run(argv)
    finally:
        forkserver.stop()  # its workers' environment is this call's: another call starts its own
        sys.unraisablehook = hook
        for sig, handler in zip(signals, previous):  # main() from Python leaves the caller's handlers
            signal.signal(sig, handler)
        _TERMINATED.clear()
        VERBOSE.clear()
        progress.enable(False)
        STOP.clear()


def _local_workers_early(argv: list[str]) -> None:
    """A ``train`` or ``demo`` run that names no scheduler (``--scheduler``, DASK_SCHEDULER_ADDRESS)
    will start a local cluster: its workers' fork server starts first thing, before this process
    parses its arguments and imports the library (forkserver.py: the server's imports, about
    1.3 s of CPU, are what the cluster's start waits for). Once the config is read, a job whose
    config file names a scheduler stops it again (commands._local_workers_first)."""
    named = os.environ.get("DASK_SCHEDULER_ADDRESS") or any(a.startswith("--scheduler") for a in argv)
    if _command(argv) in ("train", "demo") and not named and not {"-h", "--help"} & set(argv):
        forkserver.start()


def _command(argv: list[str]) -> str | None:
    """The command word of ``argv``: its first word that is neither an option nor the value of
    the one global option that takes one (``--log-format json``).

    >>> _command(["--log-format", "json", "-v", "train", "--corpus", "c.txt"]), _command(["--version"])
    ('train', None)
    """
    value = False
    for a in argv:
        if value or a == "--log-format":
            value = not value
        elif not a.startswith("-"):
            return a
    return None


def _run(argv: list[str]) -> int:
    try:
        _local_workers_early(argv)
        args = parser().parse_args(argv)
        setup_logging(args.log_format, args.verbose)
        if args.verbose:
            VERBOSE.append(True)
        return COMMANDS[args.command](args)
    except Interrupted as e:
        print(f"nsdist: {e}", file=sys.stderr)
        return 143 if _TERMINATED else e.exit_code
    except NsdistError as e:
        log.debug("traceback of the error below", exc_info=True)
        print(f"nsdist: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader of stdout left (``nsdist info out | head -1``): what it read was all it wanted.
        # stdout goes nowhere from now on, so flushing it at exit cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FileNotFoundError, PermissionError) as e:  # a local path: storage's own errors say more
        log.debug("traceback of the error below", exc_info=True)
        print(f"nsdist: error: {e}; check the path and its permissions", file=sys.stderr)
        return 3 if isinstance(e, FileNotFoundError) else 2
    except KeyboardInterrupt:
        print("nsdist: interrupted", file=sys.stderr)
        return 143 if _TERMINATED else 130
    except Exception as e:  # one line for users; the traceback with --verbose
        log.debug("unexpected error", exc_info=True)
        print(f"nsdist: error: {type(e).__name__}: {e} (rerun with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
