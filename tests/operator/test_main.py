"""``stunner-operator``: how it starts kopf, and its one-line argument errors."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from stunner.operator import main as operator_main


@pytest.fixture
def kopf_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: calls.append(kw))
    return calls


def test_defaults_standalone_all_namespaces(kopf_run: list[dict[str, Any]]) -> None:
    assert operator_main.main([]) == 0
    assert kopf_run == [
        {
            "standalone": True,
            "clusterwide": True,
            "namespaces": [],
            "liveness_endpoint": "http://0.0.0.0:8081/healthz",
        }
    ]


def test_namespaces_and_liveness(kopf_run: list[dict[str, Any]]) -> None:
    operator_main.main(["-n", "a", "--namespace", "b", "--liveness", ""])
    assert kopf_run[0]["clusterwide"] is False
    assert kopf_run[0]["namespaces"] == ["a", "b"]
    assert kopf_run[0]["liveness_endpoint"] is None


def test_handlers_are_registered_by_main(kopf_run: list[dict[str, Any]]) -> None:
    operator_main.main([])
    registry = kopf.get_default_registry()
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers() if h.selector}
    assert watched == {"gatewayclasses", "gateways", "udproutes", "services", "endpoints"}
    changing = {h.reason for h in registry._changing.get_all_handlers()}
    assert changing == {"create", "update", None}  # None: resume


def test_bad_argument_is_one_line(capsys: pytest.CaptureFixture[str], kopf_run: list[Any]) -> None:
    with pytest.raises(SystemExit) as exc:
        operator_main.main(["--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "stunner-operator: error: unrecognized arguments: --bogus\n"
    assert kopf_run == []
