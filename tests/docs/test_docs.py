"""The user-facing docs stand on their own and say what is true.

- Every relative link in README.md, docs/ and the chart READMEs reaches a file (and a heading,
  for `#anchor` links) in this repository; none cites DESIGN.md, which is not in it.
- No command installs from upstream STUNner's chart repository; where it is named, the sentence
  says that it is upstream's. The one `helm repo add` is kube-prometheus-stack's repository.
- docs/kubernetes.md's quick start is the README's, and its claim about `stunnerd -c /missing
  -w` is run here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.docs.netns import ROOT, run_in_netns
from tests.docs.test_readme import README, console_blocks

# docs/CONTRIBUTING-helpers.md is the working notes of the project's helpers, which point at
# their shared folder on purpose; it is not user documentation.
USER_DOCS = [
    README,
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "CONTRIBUTING-helpers.md"),
    *sorted((ROOT / "charts").glob("*/README.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
DEPENDENCY_REPOSITORY = yaml.safe_load((ROOT / "charts/stunner-prometheus/Chart.yaml").read_text())[
    "dependencies"
][0]["repository"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text()
    assert "DESIGN.md" not in text
    prose = re.sub(r"``.*?``|`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    for target in LINK.findall(prose):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: link to missing {target}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name}: no heading for {target}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_installs_from_upstreams_chart_repository(doc: Path) -> None:
    text = doc.read_text()
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
        assert "l7mp.io/stunner" not in block
        assert not re.search(r"helm install \S+ stunner/", block), block
        for added in re.findall(r"helm repo add \S+ (\S+)", block):
            assert added == DEPENDENCY_REPOSITORY, block  # only the dependency's
    paragraphs = text.split("\n\n")
    for paragraph in (p for p in paragraphs if "https://l7mp.io/stunner" in p):
        assert "upstream" in paragraph, paragraph


def test_kubernetes_quick_start_is_the_readmes() -> None:
    (kube_md,) = console_blocks(ROOT / "docs" / "kubernetes.md", "Quick start on kind")
    *_, in_readme = console_blocks(README, "Quick tour")
    assert kube_md == in_readme


def test_stunnerd_waits_for_a_missing_config_as_kubernetes_md_says() -> None:
    """`stunnerd -c /missing -w` keeps running, /live 200 and /ready 503 on the default :8086."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "`stunnerd -c /missing -w`" in text and "keeps running" in text
    script = (
        "stunnerd -c /missing -w &\n"
        "for i in $(seq 50); do\n"
        "  live=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8086/live || true)\n"
        '  [ "$live" = 200 ] && break; sleep 0.2\n'
        "done\n"
        "echo live=$live\n"
        "echo ready=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8086/ready)\n"
        "kill -0 %1 && echo running\n"
        "kill -INT %1\n"
    )
    done = run_in_netns(script)
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert [x for x in lines if x.startswith(("live=", "ready=", "running"))] == [
        "live=200",
        "ready=503",
        "running",
    ]
    assert any("waiting for a valid config /missing" in x for x in lines), done.stdout
