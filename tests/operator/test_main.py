"""``stunner-operator``: how it starts kopf, and its one-line argument errors."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.mark.parametrize("missing", ["kopf", "kubernetes_asyncio"])
def test_without_the_operator_extra(missing: str) -> None:
    """`pip install .` brings neither kopf nor kubernetes-asyncio: --help still works, and a
    run says in one line what to install (a fresh process, with the module made unimportable)."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from stunner.operator.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    helped = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("usage: stunner-operator")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ran.returncode == 1
    assert ran.stderr == (
        f"stunner-operator: error: {missing} is not installed; the operator needs the "
        "[operator] extra: pip install 'stunner[operator]'\n"
    )
