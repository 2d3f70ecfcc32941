"""``stunnerctl render``: the operator's render offline, from manifest files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stunner.cli import stunnerctl

from . import objects as o
from .test_render import PATCHED_METRICS, SPEC_METRICS, expected_text


def write(tmp_path: Path, name: str, *docs: Any) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def strip_ns(obj: dict[str, Any]) -> dict[str, Any]:
    """As a hand-written manifest would be: no namespace, so -n fills it in."""
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "namespace"}}


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    return [
        "render",
        "--gatewayconfig",
        write(tmp_path, "gc.yaml", o.gatewayconfig(metricsEndpoint=SPEC_METRICS)),
        "--gateway",
        write(tmp_path, "gw.yaml", o.gateway()),
        "--udproute",
        write(tmp_path, "r.yaml", o.udproute()),
        "--service",
        write(tmp_path, "svc.yaml", o.service()),
        "--endpoints",
        write(tmp_path, "eps.yaml", o.endpoints()),
    ]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = stunnerctl.main(args)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_render_prints_the_stunnerd_config(
    files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(files, capsys) == (
        0,
        expected_text(metrics_endpoint=SPEC_METRICS),
        "",
    )


def test_render_the_patched_gatewayconfig(
    files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files[2] = write(tmp_path, "patched.yaml", o.gatewayconfig(metricsEndpoint=PATCHED_METRICS))
    rc, out, _ = run(files, capsys)
    assert rc == 0
    assert yaml.safe_load(out)["admin"]["metrics_endpoint"] == PATCHED_METRICS


def test_namespace_option_and_multi_document_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objs = [o.gatewayconfig(), o.gateway(), o.udproute(backends=[{"name": "media-server"}])]
    gc, gw, route = (write(tmp_path, f"{i}.yaml", strip_ns(x)) for i, x in enumerate(objs))
    backend = write(tmp_path, "backend.yaml", strip_ns(o.service()))
    as_list = {"apiVersion": "v1", "kind": "List", "items": [strip_ns(o.endpoints())]}
    eps = write(tmp_path, "eps.yaml", as_list)
    args = ["render", "-n", "stunner", "--gatewayconfig", gc, "--gateway", gw, "--udproute", route]
    rc, out, err = run([*args, "--service", backend, "--endpoints", eps], capsys)
    assert (rc, err) == (0, "")
    (cluster,) = yaml.safe_load(out)["clusters"]
    assert cluster["endpoints"] == ["10.244.0.5", "10.244.1.7", "10.96.0.10"]


def test_problems_are_warned_about(files: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(files[:-4], capsys)  # no Service, no Endpoints
    assert rc == 0
    assert err == (
        "stunnerctl: warning: UDPRoute stunner/media-plane parent udp-gateway: "
        "BackendNotFound: Service default/media-server not found\n"
    )
    assert yaml.safe_load(out)["clusters"][0]["endpoints"] == []


def test_rejected_gatewayconfig_exits_1(
    files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files[2] = write(tmp_path, "bad.yaml", o.gatewayconfig(minPort=2, maxPort=1))
    rc, out, err = run(files, capsys)
    assert (rc, out) == (1, "")
    assert err == "stunnerctl: error: spec.minPort: must be <= spec.maxPort, got 2 > 1\n"


BAD_ARGS = [
    ([], "stunnerctl: error: the following arguments are required: COMMAND"),
    (["render"], "stunnerctl: error: the following arguments are required: --gatewayconfig"),
    (
        ["render", "--gatewayconfig"],
        "stunnerctl: error: argument --gatewayconfig: expected one argument",
    ),
    (["frobnicate"], "stunnerctl: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (
        ["render", "--gatewayconfig", "/nonexistent.yaml"],
        "stunnerctl: error: cannot read /nonexistent.yaml: No such file or directory",
    ),
]


@pytest.mark.parametrize(
    ("args", "line"), BAD_ARGS, ids=[" ".join(a) or "none" for a, _ in BAD_ARGS]
)
def test_bad_arguments_one_line_exit_2(
    args: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(args, capsys)
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(line), err


def test_bad_files_one_line_exit_2(
    files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        write(
            tmp_path, "svc-as-gw.yaml", o.service()
        ): "svc-as-gw.yaml: expected Gateway objects, got Service",
        write(
            tmp_path, "noname.yaml", {"kind": "Gateway", "metadata": {}}
        ): "noname.yaml: a Gateway without metadata.name",
    }
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Gateway\n  bad: [indent\n")
    cases[str(broken)] = "broken.yaml: not valid YAML:"
    for path, message in cases.items():
        rc, out, err = run([*files[:3], "--gateway", path], capsys)
        assert (rc, out) == (2, "")
        assert err.startswith("stunnerctl: error: ") and message in err and err.count("\n") == 1
    two = write(tmp_path, "two.yaml", o.gatewayconfig(), o.gatewayconfig(name="x"))
    rc, _, err = run(["render", "--gatewayconfig", two], capsys)
    assert (rc, err) == (2, f"stunnerctl: error: {two}: expected one GatewayConfig, found 2\n")


def test_console_script(files: list[str]) -> None:
    exe = Path(sys.executable).with_name("stunnerctl")
    done = subprocess.run(
        [str(exe), *files], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == expected_text(metrics_endpoint=SPEC_METRICS)


def test_needs_neither_kopf_nor_a_kubernetes_client(files: list[str]) -> None:
    """The e2e venv installs stunner without the [operator] extra: render must still work."""
    blocker = (
        "import sys; sys.modules.update(kopf=None, kubernetes_asyncio=None);"
        "from stunner.cli.stunnerctl import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker, *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == expected_text(metrics_endpoint=SPEC_METRICS)


def test_help_describes_every_option_and_its_example_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stunnerctl render --help` explains each option, and the example it prints runs as
    printed on the inputs in examples/k8s/."""
    rc, out, _ = run(["render", "--help"], capsys)
    assert rc == 0
    for option in ("--gatewayconfig", "--gateway", "--udproute", "--service", "--endpoints"):
        (line,) = [x for x in out.splitlines() if x.strip().startswith(f"{option} FILE")]
        assert len(line.split(None, 2)) == 3, f"{option} has no help text: {line!r}"
    example = out.split("example (the inputs are in the repository):\n", 1)[1].split("\n\n")[0]
    args = example.replace("\\\n", " ").split()
    assert args[:2] == ["stunnerctl", "render"]
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "stunner.cli.stunnerctl", *args[1:]],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    config = yaml.safe_load(done.stdout)
    assert [lis["name"] for lis in config["listeners"]] == [
        "stunner/stunner-gateway/udp-listener",
        "stunner/stunner-gateway/tcp-listener",
    ]
    (cluster,) = config["clusters"]
    assert cluster["endpoints"] == ["10.244.0.17", "10.244.1.9", "10.96.12.34"]
    assert config["admin"]["metrics_endpoint"] == "http://0.0.0.0:8080/metrics"
