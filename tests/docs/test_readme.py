"""The README's command blocks run as written.

The quick tour and the one-line relay run verbatim in a network namespace of their own (their
fixed ports collide with nothing there); `pip install .` is the one line not run, since this
environment has stunner installed already. The Kubernetes quick start cannot run here (no
container registry for kind): its commands are checked against the steps the kind target of
`nox -s e2e` runs (e2e/kind_setup.py), which the GitHub workflow executes.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from pathlib import Path

import yaml

from e2e import kind_setup
from tests.docs.netns import ROOT, run_in_netns

README = ROOT / "README.md"
STUN_PROBE = Path(__file__).with_name("stun_probe.py")


def console_blocks(path: Path, section: str) -> list[list[str]]:
    """The ```console blocks of a `## section`, as command lines (comments and continuations
    joined, as a shell reads them)."""
    text = path.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n(.*?)```", body, flags=re.DOTALL)
    return [block.replace("\\\n", " ").strip().splitlines() for block in blocks]


def test_quick_tour_runs_as_written() -> None:
    tour, _, _ = console_blocks(README, "Quick tour")
    assert tour[0] == "pip install ."
    assert importlib.metadata.version("stunner")  # what that line installs
    done = run_in_netns("\n".join(tour[1:]))
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert "hello" in lines  # the echo came back through turncat and the relay
    listener = 'name="default/udp-gateway/udp-listener"'
    for direction in ("rx", "tx"):
        series = f'stunner_cluster_packets_total{{direction="{direction}",{listener}}} 1.0'
        assert series in lines, done.stdout
    assert "- name: stunner/stunner-gateway/udp-listener" in lines  # stunnerctl render


def test_one_line_relay_runs_as_written() -> None:
    _, (one_liner,), _ = console_blocks(README, "Quick tour")
    assert one_liner.startswith("stunnerd 'turn://")
    script = (
        f"{one_liner} &\n"
        f"python3 {shlex.quote(str(STUN_PROBE))} 127.0.0.1:3478\n"
        "kill -INT %1\n"
        "wait %1\n"
    )
    done = run_in_netns(script)
    assert done.returncode == 0, done.stdout
    assert "binding answered" in done.stdout


def test_kubernetes_quick_start_is_what_the_kind_target_runs() -> None:
    _, _, kube = console_blocks(README, "Quick tour")
    steps = kind_setup.documented_steps()
    assert [line for line in kube if not line.startswith("kind create cluster")] == steps
    assert not any("https://l7mp.io" in line for line in kube)
    dependency = yaml.safe_load((ROOT / "charts/stunner-prometheus/Chart.yaml").read_text())
    assert dependency["dependencies"][0]["repository"] == kind_setup.DEPENDENCY_REPO
