"""Config text in: environment expansion, YAML or JSON decoding, then `from_dict`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable, Mapping
from typing import Any

import yaml

from .fields import typename
from .model import ConfigError, StunnerConfig
from .sections import from_dict

_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``$VAR`` and ``${VAR}`` like Go's ``os.ExpandEnv``, as upstream does: an unset
    variable becomes "" (unlike `os.path.expandvars`). A ``$`` not followed by a name stays."""
    values = os.environ if env is None else env
    return _ENV_REF.sub(lambda m: values.get(m.group(1) or m.group(2) or "", ""), text)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML resolves silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key != "<<":
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse(text: str, source: str) -> object:
    # JSON first when it looks like JSON: YAML rejects tab indentation that JSON allows.
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_reject_duplicates)
        except ValueError:
            pass
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML or JSON: {exc.problem}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{source}: not valid YAML or JSON: {detail}") from None


def loads(text: str, source: str = "<string>") -> StunnerConfig:
    """Parse a config; environment variables are expanded first. Errors start with `source`."""
    data = _parse(expand_env(text), source)
    if data is None:
        raise ConfigError(f"{source}: empty config")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping, got {typename(data)}")
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load(path: str | os.PathLike[str]) -> StunnerConfig:
    """Read and parse a config file. OSError (e.g. a missing file) propagates unchanged."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return loads(text, source=os.fspath(path))
