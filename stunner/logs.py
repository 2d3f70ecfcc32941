"""Log levels in upstream's "scope:LEVEL,..." form; scope "all" is the root logger."""

from __future__ import annotations

import logging
import math
import sys
import time

from .config import parse_loglevel

FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class Formatter(logging.Formatter):
    """``logging.Formatter`` that formats the date and time once per second, not per line.

    Why: stunnerd writes an INFO line per allocation, so a burst of call setups writes many
    lines a second. The text is the base class's: its date and time to the second, then the
    milliseconds (``default_time_format``, ``default_msec_format``)."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = math.floor(record.created)  # as localtime() rounds it
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"  # default_msec_format: "%s,%03d"


def _skip_unused_record_fields() -> None:
    """FORMAT uses no caller, thread, process or task field, so records need not gather them
    (the knobs of the logging docs' "Optimization" section). Why: an INFO line per allocation
    is part of every call setup, and finding the caller walks the stack each time."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined,unused-ignore]  # Python 3.12+


def setup_logging(spec: str, field: str = "loglevel") -> None:
    """Apply a level spec; scopes other than "all" are the loggers ``stunner.<scope>``."""
    levels = parse_loglevel(spec, field=field)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(Formatter(FORMAT))
        root.addHandler(handler)
        _skip_unused_record_fields()
    for scope, level in levels.items():
        target = root if scope == "all" else logging.getLogger(f"stunner.{scope}")
        target.setLevel(level)
