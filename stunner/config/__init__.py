"""The stunnerd configuration: parse, default, validate, serialise and diff.

The file format is upstream STUNner's v1alpha1 ``stunnerd.conf`` (YAML or JSON), so a config
written by the upstream operator loads here unchanged. Every `ConfigError` message starts with
the path of the offending field, e.g. ``listeners[1].port: must be an integer 1-65535, got 70000``.

One module per job:

- ``model``: the frozen dataclasses a validated config is made of, and `ConfigError`;
- ``fields``: field readers and host-name syntax shared by the parsers below;
- ``loglevel``: ``scope:LEVEL`` specs;
- ``http``: the metrics and health check ``http://`` endpoints;
- ``sections``: decoded YAML/JSON to a validated config (`from_dict`), and `warnings`;
- ``parse``: config text and files to a config (`loads`, `load`), ``$VAR`` expansion, and
  the bounds on hostile files (size, YAML aliases, nesting);
- ``certs``: whether a TLS listener's cert and key load, and the server context made of them;
- ``turnuri``: ``turn://`` URIs and the config ``stunnerd turn://...`` runs;
- ``serialise``: a config back to the upstream document (`to_dict`, `dumps`);
- ``diff``: what changed between two configs, for live reconciliation.
"""

from .diff import ConfigDiff, diff
from .http import HttpEndpoint, parse_http_endpoint
from .loglevel import DISABLE, TRACE, parse_loglevel
from .model import (
    AdminConfig,
    AuthConfig,
    AuthType,
    ClusterConfig,
    ClusterType,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    ListenerProtocol,
    StunnerConfig,
)
from .parse import MAX_CONFIG_BYTES, expand_env, load, loads, read_text
from .sections import from_dict, warnings
from .serialise import dumps, to_dict
from .turnuri import TurnUri, from_uri, parse_turn_uri

__all__ = [
    "DISABLE",
    "MAX_CONFIG_BYTES",
    "TRACE",
    "AdminConfig",
    "AuthConfig",
    "AuthType",
    "ClusterConfig",
    "ClusterType",
    "ConfigDiff",
    "ConfigError",
    "HttpEndpoint",
    "LimitsConfig",
    "ListenerConfig",
    "ListenerProtocol",
    "StunnerConfig",
    "TurnUri",
    "diff",
    "dumps",
    "expand_env",
    "from_dict",
    "from_uri",
    "load",
    "loads",
    "parse_http_endpoint",
    "parse_loglevel",
    "parse_turn_uri",
    "read_text",
    "to_dict",
    "warnings",
]
