"""Field readers and syntax checks shared by the sections, the HTTP and the TURN URI parsers.

Every reader raises `ConfigError` with the field's path, e.g.
``listeners[1].port: must be an integer 1-65535, got 70000``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .model import ConfigError

_T = TypeVar("_T")
EXCERPT_CHARS = 64  # the most of a rejected value an error message quotes
_SHORT = reprlib.Repr()  # bounded by construction: never walks a whole huge value
_SHORT.maxlevel = 2
_SHORT.maxstring = _SHORT.maxother = EXCERPT_CHARS
_SHORT.maxlong = 24
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = 4
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def excerpt(value: object, limit: int = EXCERPT_CHARS, *, quote: bool = True) -> str:
    """At most `limit` characters of `value` for an error message (its repr, or with
    ``quote=False`` its text). A rejected value may be a megabyte long, or through YAML aliases
    a billion items deep, and the message is logged: quoting it whole once wrote a 351 MB line."""
    text = _SHORT.repr(value) if quote else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_hostname(text: str) -> bool:
    """RFC 1123 host name syntax (a trailing dot is allowed)."""
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def is_host(text: str) -> bool:
    return is_ip(text) or is_hostname(text)


def typename(value: object) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def section(data: object, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    """Check that `data` is a mapping with only `allowed` keys; None counts as empty."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: must be a mapping, got {typename(data)}")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{path or 'config'}: keys must be strings, got {excerpt(key)}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{join(path, excerpt(key, quote=False))}: unknown field{hint}")
    return data


def get_str(sec: Mapping[str, Any], path: str, key: str, default: str = "") -> str:
    """A string field; absent, null and "" all mean `default` (Go's zero value semantics)."""
    value = sec.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{join(path, key)}: must be a string, got {excerpt(value)}")
    return value


def get_port(sec: Mapping[str, Any], path: str, key: str, default: int, low: int = 1) -> int:
    """A port field; absent, null and 0 mean `default` (0 is "unset" upstream)."""
    value = sec.get(key)
    if value is None or (value == 0 and not isinstance(value, bool)):
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise ConfigError(
            f"{join(path, key)}: must be an integer {low}-65535, got {excerpt(value)}"
        )
    return value


def get_str_list(sec: Mapping[str, Any], path: str, key: str) -> list[str]:
    value = sec.get(key)
    if value is None:
        return []
    where = join(path, key)
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of strings, got {typename(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{where}[{i}]: must be a non-empty string, got {excerpt(item)}")
    return value


def choice(value: str, where: str, choices: Mapping[str, _T], expected: str) -> _T:
    try:
        return choices[value.lower()]
    except KeyError:
        raise ConfigError(f"{where}: unknown {expected}, got {excerpt(value)}") from None


def check_unique(names: Iterable[str], path: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{path}[{i}].name: duplicate name {excerpt(name)}")
        seen.add(name)


def get_int(sec: Mapping[str, Any], path: str, key: str, default: int, low: int, high: int) -> int:
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{join(path, key)}: must be an integer {low}-{high}, got {excerpt(value)}"
        )
    return value
