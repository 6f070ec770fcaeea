"""The server's log: one line per record with time, level and logger, and no floods.

Without a handler, Python's last-resort one printed fyp's records as bare messages (no
time, no level); and a failure that repeats on every request (a full disk) wrote a
traceback per request — 339,561 lines in 25 s in an acceptance review. Here a record
that repeats one already written in the last ``window_s`` seconds (same logger, level,
message template and exception type) is counted, not written; the next one written
after the window says how many were held back. The access log (``--access-log``) is
never held back: a line per request is what it is for, and its records all share one
template, so it once wrote one request per window.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")
ACCESS_LOGGER = "uvicorn.access"


class RepeatFilter(logging.Filter):
    """Lets the first of a run of like records through per window; counts the rest."""

    def __init__(self, window_s: float = 10.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[object, ...], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:
            return True
        exc = record.exc_info[0] if record.exc_info else None
        key = (record.name, record.levelno, record.msg, exc)
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (-self.window_s, 0))
            if now - last < self.window_s:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # many distinct messages: forget the old ones
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        if held:
            record.msg = (
                f"{record.msg} [{held} like it in the last {self.window_s:.0f} s not shown]"
            )
        return True


def configure(level: str = "info", window_s: float = 10.0) -> logging.Handler:
    """Send fyp's records (and uvicorn's) to stderr, formatted and de-duplicated."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RepeatFilter(window_s))
    for name in ("fyp", "uvicorn", "uvicorn.error", ACCESS_LOGGER):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level.upper())
    return handler
