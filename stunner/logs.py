"""Log levels in upstream's "scope:LEVEL,..." form; scope "all" is the root logger."""

from __future__ import annotations

import logging
import sys

from .config import parse_loglevel

FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logging(spec: str, field: str = "loglevel") -> None:
    """Apply a level spec; scopes other than "all" are the loggers ``stunner.<scope>``."""
    levels = parse_loglevel(spec, field=field)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for scope, level in levels.items():
        target = root if scope == "all" else logging.getLogger(f"stunner.{scope}")
        target.setLevel(level)
