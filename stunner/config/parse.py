"""Config text in: a size-capped read, environment expansion, YAML or JSON decoding, then
`from_dict` (and, for what stunnerd runs, loading the TLS material).

Hostile or broken files are bounded before they cost much: a file over `MAX_CONFIG_BYTES` is
refused unread, YAML aliases may add at most `MAX_ALIAS_NODES` nodes (a 378-byte "billion
laughs" file would otherwise expand to 9^9 items), and nesting too deep for the parsers is an
error, not a crash. stunnerd parses in a worker thread, so even an allowed 1 MiB file never
stalls relaying.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable, Mapping
from typing import Any

import yaml

from .certs import check_certificates
from .fields import excerpt, typename
from .model import ConfigError, StunnerConfig
from .sections import from_dict

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB, the most a Kubernetes ConfigMap holds
MAX_ALIAS_NODES = 10_000  # nodes YAML aliases may add beyond those written out
_SIZE_CAP = 10_000_000  # far above the nodes a MAX_CONFIG_BYTES file can hold, plus the above
_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``$VAR`` and ``${VAR}`` like Go's ``os.ExpandEnv``, as upstream does: an unset
    variable becomes "" (unlike `os.path.expandvars`). A ``$`` not followed by a name stays."""
    values = os.environ if env is None else env
    return _ENV_REF.sub(lambda m: values.get(m.group(1) or m.group(2) or "", ""), text)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _alias_growth(root: yaml.Node) -> int | None:
    """How many nodes aliases add once expanded (exact up to far past MAX_ALIAS_NODES), or
    None for a recursive alias. Linear in the nodes written: a node shared through aliases is
    sized once, and sizes stop growing at _SIZE_CAP instead of reaching 9^9."""
    sizes: dict[int, int] = {}  # id(node) -> expanded size, capped
    open_nodes: set[int] = set()  # on the current path: an alias back to one is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in _children(node)), _SIZE_CAP)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            return None
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)] - len(sizes)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML resolves silently, and bounds
    what aliases may expand to."""

    def compose_document(self) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            growth = _alias_growth(node)
            if growth is None:
                raise yaml.composer.ComposerError(None, None, "recursive YAML alias", mark)
            if growth > MAX_ALIAS_NODES:
                problem = f"YAML aliases expand to more than {MAX_ALIAS_NODES} extra nodes"
                raise yaml.composer.ComposerError(None, None, problem, mark)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key != "<<":
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {excerpt(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {excerpt(key)}")
        out[key] = value
    return out


def _parse(text: str, source: str) -> object:
    try:
        return _decode(text, source)
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML or JSON: nested too deeply") from None


def _decode(text: str, source: str) -> object:
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


def loads(text: str, source: str = "<string>", *, load_certificates: bool = False) -> StunnerConfig:
    """Parse a config; environment variables are expanded first. Errors start with `source`.

    With `load_certificates`, TLS listeners' cert and key must also load (what stunnerd runs
    needs it; a config that is only written or rendered does not)."""
    data = _parse(expand_env(text), source)
    if data is None:
        raise ConfigError(f"{source}: empty config")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping, got {typename(data)}")
    try:
        config = from_dict(data)
        if load_certificates:
            check_certificates(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def read_text(path: str | os.PathLike[str]) -> str:
    """A config file's text; a file over MAX_CONFIG_BYTES or not UTF-8 is a `ConfigError`.
    OSError (e.g. a missing file) propagates unchanged."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    source = os.fspath(path)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than the {MAX_CONFIG_BYTES}-byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load(path: str | os.PathLike[str]) -> StunnerConfig:
    """Read and parse a config file as stunnerd runs it (TLS material loaded)."""
    return loads(read_text(path), source=os.fspath(path), load_certificates=True)
