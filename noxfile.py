"""Sessions: `nox -s tests` (lint, types, unit and integration tests), `nox -s e2e` (main job)."""

from __future__ import annotations

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
    session.run("pytest", "-q", "tests", *session.posargs)


@nox.session(python=PYTHON, default=False)
def e2e(session: nox.Session) -> None:
    """End-to-end: gateway, real TURN clients, a real Prometheus. `-- --target local|kind|external`."""
    _install(session, "e2e")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "e2e", *session.posargs)
