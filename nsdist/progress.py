"""Progress bars on a terminal: one line per stage, redrawn in place.

A bar is drawn only where a person watches (stderr is a TTY and the log format is plain); elsewhere
``stage`` returns a bar that draws nothing, and the per-stage log lines are the record. Bars are
advanced from Dask's callback thread, so every method takes the lock. Log lines printed while a bar
is shown go through ``log_line`` (the CLI's log handler), so they never cut into it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import TextIO

_LOCK = threading.RLock()
_ENABLED = [False]  # set by the CLI: stderr is a TTY and logs are plain text
_ACTIVE: list["Bar"] = []  # the bar on screen, if any
WIDTH = 24  # characters of the bar itself
POLL_SECONDS = 0.25


def enable(on: bool) -> None:
    _ENABLED[0] = on


def stage(label: str, total: int, stream: TextIO | None = None, unit: str = "") -> "Bar":
    """A bar for ``total`` steps of ``label``; it draws only when progress is enabled."""
    return Bar(label, total, stream or sys.stderr, enabled=_ENABLED[0], unit=unit)


def off() -> "Bar":
    """A bar that never draws."""
    return Bar("", 0, sys.stderr, enabled=False)


def clear_line() -> None:
    """Erase the bar on screen (before a log line is written under it)."""
    with _LOCK:
        if _ACTIVE:
            _ACTIVE[-1].stream.write("\r\x1b[K")


def redraw() -> None:
    """Draw the bar on screen again (after a log line)."""
    with _LOCK:
        if _ACTIVE:
            _ACTIVE[-1].draw()


@contextlib.contextmanager
def log_line():
    """Erase the bar on screen, let a log line be written, draw the bar again, all under the lock:
    a bar advanced from another thread between the erase and the line would run into it."""
    with _LOCK:
        clear_line()
        yield
        redraw()


def eta(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss.

    >>> eta(75), eta(3725)
    ('1:15', '1:02:05')
    """
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def line(label: str, done: int, total: int, elapsed: float, fields: str = "", unit: str = "") -> str:
    """One bar as text.

    >>> line("counting", 3, 12, 6.0, unit=" blocks")
    'counting [######..................] 3/12 blocks  ETA 0:18'
    """
    filled = WIDTH * done // max(total, 1)
    rest = f"  ETA {eta(elapsed * (total - done) / done)}" if 0 < done < total else ""
    rest = f"  {eta(elapsed)}" if done >= total else rest
    extra = f"  {fields}" if fields else ""
    return f"{label} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total}{unit}{extra}{rest}"


class Bar:
    """``advance()`` per finished step; ``fields`` (e.g. words/s and loss) are shown after the count."""

    def __init__(self, label: str, total: int, stream: TextIO, enabled: bool, unit: str = ""):
        self.label, self.total, self.stream, self.enabled, self.unit = label, total, stream, enabled, unit
        self.done, self.fields, self.started = 0, "", time.perf_counter()
        self.pending: list = []  # (future, step) followed and not yet finished
        self.poller: threading.Thread | None = None
        self.closed = False
        if enabled:
            with _LOCK:
                _ACTIVE.append(self)
                self.draw()

    def follow(self, futures, step=None) -> None:
        """Advance as each of ``futures`` finishes (``step(future)`` if given, else ``advance()``).

        Polled from a thread of the bar's own: a Dask done-callback would run on the event loop
        of the client that made the future, which breaks when a process holds two clients.
        """
        if not self.enabled:
            return
        with _LOCK:
            self.pending.extend((f, step) for f in futures)
            if self.poller is None:
                self.poller = threading.Thread(target=self._poll, name="nsdist-progress", daemon=True)
                self.poller.start()

    def _poll(self) -> None:
        while not self.closed:
            self.check()
            time.sleep(POLL_SECONDS)

    def check(self) -> None:
        """Advance for the followed futures that finished since the last check."""
        with _LOCK:
            finished = [(f, step) for f, step in self.pending if f.done()]
            self.pending = [(f, step) for f, step in self.pending if not any(f is g for g, _ in finished)]
        for f, step in finished:
            step(f) if step else self.advance()

    def advance(self, n: int = 1, fields: str | None = None) -> None:
        with _LOCK:
            self.done = min(self.total, self.done + n)
            if fields is not None:
                self.fields = fields
            if self.enabled and _ACTIVE and _ACTIVE[-1] is self:
                self.draw()

    def set_fields(self, fields: str) -> None:
        self.advance(0, fields)

    def draw(self) -> None:
        text = line(self.label, self.done, self.total, time.perf_counter() - self.started, self.fields, self.unit)
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()

    def close(self) -> None:
        """Draw the bar's last state, then erase it: the stage's log line that follows is its record."""
        self.closed = True
        if not self.enabled:
            return
        self.check()  # what finished since the last poll: a fast stage still shows its end
        with _LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
