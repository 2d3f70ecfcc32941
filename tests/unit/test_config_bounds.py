"""What a hostile or broken config file may cost stunnerd: a capped read, bounded YAML aliases
and nesting, short error messages, and TLS material that must load."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from stunner import config as cfg
from stunner.config.fields import EXCERPT_CHARS, excerpt
from stunner.config.parse import MAX_ALIAS_NODES
from tests.integration.reload_stall import alias_bomb
from tests.support import self_signed_cert

AUTH = "auth: {credentials: {username: u, password: p}}\n"


def tls_config(cert: bytes, key: bytes) -> dict[str, Any]:
    return {
        "version": "v1alpha1",
        "auth": {"credentials": {"username": "u", "password": "p"}},
        "listeners": [
            {"name": "udp", "protocol": "UDP"},
            {
                "name": "tls",
                "protocol": "TLS",
                "cert": base64.b64encode(cert).decode(),
                "key": base64.b64encode(key).decode(),
            },
        ],
    }


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    text = alias_bomb()
    assert len(text) < 400
    with pytest.raises(cfg.ConfigError) as info:
        cfg.loads(text, source="f.conf")
    assert str(info.value) == (
        f"f.conf:1:1: not valid YAML or JSON: YAML aliases expand to more than "
        f"{MAX_ALIAS_NODES} extra nodes"
    )


def test_aliases_that_expand_a_little_still_load() -> None:
    text = (
        "version: v1alpha1\n" + AUTH + "listeners:\n"
        "  - {name: a, port: 3478, routes: &routes [c1, c2]}\n"
        "  - {name: b, port: 3479, routes: *routes}\n"
    )
    conf = cfg.loads(text)
    assert [lis.routes for lis in conf.listeners] == [("c1", "c2"), ("c1", "c2")]


def test_aliases_just_over_the_bound_are_refused() -> None:
    items = ",".join(["x"] * 100)
    refs = ",".join(["*a"] * (MAX_ALIAS_NODES // 100 + 1))
    text = f"version: v1alpha1\n{AUTH}admin: {{name: [&a [{items}], {refs}]}}\n"
    with pytest.raises(cfg.ConfigError, match="YAML aliases expand to more than"):
        cfg.loads(text)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(cfg.ConfigError, match="recursive YAML alias"):
        cfg.loads("version: v1alpha1\nadmin: {name: &a [*a]}\n")


@pytest.mark.parametrize(
    "text",
    [
        "version: v1alpha1\nadmin: {name: " + "[" * 50_000 + "]" * 50_000 + "}\n",
        '{"version": "v1alpha1", "admin": {"name": ' + "[" * 50_000 + "]" * 50_000 + "}}",
    ],
    ids=["yaml", "json"],
)
def test_nesting_too_deep_is_an_error_not_a_crash(text: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.loads(text, source="f.conf")
    assert str(info.value) == "f.conf: not valid YAML or JSON: nested too deeply"


def test_error_messages_quote_a_short_excerpt() -> None:
    huge = "x" * 1_000_000
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict({**tls_config(b"", b""), "listeners": [{"name": "l", "address": huge}]})
    message = str(info.value)
    assert message.startswith("listeners[0].address: must be an IP address or host name, got 'x")
    assert len(message) < 80 + EXCERPT_CHARS
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict({"version": "v1alpha1", huge: 1})
    assert len(str(info.value)) < 40 + EXCERPT_CHARS


def test_an_excerpt_of_a_shared_structure_does_not_walk_it() -> None:
    level: list[Any] = ["lol"] * 9
    for _ in range(8):  # 9^9 items if walked, as an alias bomb builds them
        level = [level] * 9
    with pytest.raises(cfg.ConfigError) as info:  # walking 9^9 items would take minutes
        cfg.from_dict({"version": "v1alpha1", "admin": {"name": level}})
    assert str(info.value) == (
        "admin.name: must be a string, got [[[...], [...], [...], [...], ...], "
        "[[...], [...], [...], [....."
    )


def test_excerpt_bounds_text_and_repr() -> None:
    assert excerpt("short") == "'short'"
    assert excerpt("y" * 500, quote=False) == "y" * (EXCERPT_CHARS - 3) + "..."
    assert len(excerpt("z" * 500)) <= EXCERPT_CHARS


def test_read_text_caps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "stunnerd.conf"
    path.write_bytes(b"#" * cfg.MAX_CONFIG_BYTES)
    assert len(cfg.read_text(path)) == cfg.MAX_CONFIG_BYTES
    path.write_bytes(b"#" * (cfg.MAX_CONFIG_BYTES + 1))
    with pytest.raises(cfg.ConfigError) as info:
        cfg.read_text(path)
    assert str(info.value) == f"{path}: larger than the 1048576-byte limit"
    path.write_bytes(b"version: \xff\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert str(info.value) == f"{path}: not UTF-8 text (invalid start byte at byte 9)"


def test_tls_material_must_load_where_stunnerd_runs_it(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    other_cert, _ = self_signed_cert(tmp_path)
    broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    good = tls_config(cert, key)
    assert cfg.from_dict(good).listeners[1].cert == cert
    path = tmp_path / "stunnerd.conf"
    for bad_cert, bad_key in ((broken, key), (other_cert, key), (cert, broken)):
        conf = cfg.from_dict(tls_config(bad_cert, bad_key))  # base64 PEM: it parses
        path.write_text(cfg.dumps(conf))
        with pytest.raises(cfg.ConfigError) as info:
            cfg.load(path)  # but it does not load
        message = str(info.value)
        assert message.startswith(
            f"{path}: listeners[1].cert: the certificate and key do not load together: "
        ), message
        assert len(message) < len(str(path)) + 80 + EXCERPT_CHARS
    path.write_text(cfg.dumps(cfg.from_dict(good)))
    assert cfg.load(path).listeners[1].key == key
