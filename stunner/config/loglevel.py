"""Log level specs: "scope:LEVEL,scope:LEVEL", as upstream's logger factory reads them."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .fields import excerpt
from .model import ConfigError

TRACE = logging.DEBUG - 5
DISABLE = logging.CRITICAL + 10
_LEVELS: Mapping[str, int] = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "DISABLE": DISABLE,
}


def parse_loglevel(spec: str, *, field: str = "admin.loglevel") -> dict[str, int]:
    """Map each scope to a `logging` level; "all" (always present, default INFO) is the default
    for scopes not listed. Later entries override earlier ones."""
    levels = {"all": logging.INFO}
    for entry in spec.split(","):
        scope, sep, level = (part.strip() for part in entry.partition(":"))
        if not sep or not scope or not level:
            raise ConfigError(f"{field}: expected scope:LEVEL, got {excerpt(entry.strip())}")
        if level.upper() not in _LEVELS:
            known = ", ".join(_LEVELS)
            raise ConfigError(f"{field}: unknown level {excerpt(level)}, expected one of {known}")
        levels["all" if scope.lower() == "all" else scope] = _LEVELS[level.upper()]
    return levels
