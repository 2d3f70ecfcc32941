"""pytest wiring for the e2e suite: options, the target, the report.

`nox -s e2e -- --target local|kind|external [...]`; `pytest e2e` works the same from the repo
root. Every run writes e2e-report/<run>/ (report.md, report.json, plots/, logs/).
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.checks import Recorder
from e2e.clauses import PROFILES
from e2e.report import RunInfo, write_plots, write_tables
from e2e.targets.base import Target

TARGETS = ("local", "kind", "external")
ORDER = (
    "test_harness",
    "test_traffic",
    "test_uclient",
    "test_waves",
    "test_shapes",
    "test_refusals",  # before the dashboard: its drop and refusal panels need that traffic
    "test_dashboard",
    "test_denied_peer",
    "test_reload",
    "test_restart",
    "test_metrics_endpoint",
    "test_miscounting",
    "test_stunnerctl",
    "test_workers",
    "test_conformance",
    "test_external",
)
NESTED_REPORT_ENV = "STUNNER_E2E_REPORT_DIR"
PROMETHEUS_HINT = (
    "prometheus not found on PATH: install it (Debian/Ubuntu: apt-get install prometheus) "
    "or run `nox -s e2e` as root to have it installed"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stunner e2e")
    group.addoption("--target", choices=TARGETS, default="local", help="where to aim the checks")
    group.addoption(
        "--turn-uri",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="external: listener NAME (its metric label) = turn:HOST:PORT?transport=udp|tcp "
        "or turns:HOST:PORT (repeatable)",
    )
    group.addoption("--turn-user", help="external: TURN username")
    group.addoption("--turn-password", help="external: TURN password")
    group.addoption("--turn-ca", help="external: CA file to verify TLS listeners")
    group.addoption("--peer", metavar="HOST:PORT", help="external: echo peer inside the cluster")
    group.addoption(
        "--asymmetric-peer",
        metavar="HOST:PORT",
        help="external: a peer in the cluster that answers bigger and sometimes twice "
        "(python -m testkit.echo HOST --port PORT --detached --longer 13 --twice-every 3); "
        "without it those shapes are not testable",
    )
    group.addoption(
        "--outside-peer",
        metavar="HOST:PORT",
        help="external: a peer no cluster holds (default 192.0.2.1:9)",
    )
    group.addoption("--prometheus-url", help="external: Prometheus that scrapes the gateway")
    group.addoption(
        "--prometheus-selector",
        default="",
        help='external: label matchers for the gateway\'s series, e.g. namespace="stunner"',
    )
    group.addoption(
        "--browser",
        action="store_true",
        help="external: also run the Chromium scenario through the --turn-uri listeners "
        "(local: on by default when chromium is on PATH)",
    )
    group.addoption(
        "--profile",
        choices=sorted(PROFILES),
        default="spec",
        help="conformance profile: spec (strict, default), or a released upstream's documented "
        "behaviours (reported as deviations, not failures)",
    )
    group.addoption("--keep", action="store_true", help="keep configs and Prometheus TSDB")
    group.addoption(
        "--stunnerd",
        metavar="CMD",
        help="local: the stunnerd command line to test (default: python -m stunner.cli.stunnerd)",
    )


class _Run:
    """Per-run state: the report directory, the records, the outcome of each test."""

    def __init__(self, config: pytest.Config) -> None:
        target = config.getoption("--target")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = config.rootpath / "e2e-report" / f"{stamp}-{target}-{os.getpid()}"
        # A run nested in another one (test_external) writes where its parent says.
        self.nested = bool(os.environ.get(NESTED_REPORT_ENV))
        if self.nested:
            self.dir = Path(os.environ[NESTED_REPORT_ENV])
        profile = config.getoption("--profile")
        self.info = RunInfo(target=target, started=time.time(), profile=profile)
        self.recorder = Recorder(profile=profile)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and hasattr(report, "wasxfail"):  # an expected failure, not a skip
            self.info.outcomes[report.nodeid] = f"xfailed: {report.wasxfail}"
        elif report.skipped and isinstance(report.longrepr, tuple):
            self.info.outcomes[report.nodeid] = f"skipped: {report.longrepr[2]}"
        elif report.when == "call":
            self.info.outcomes[report.nodeid] = report.outcome
        elif report.failed:
            self.info.outcomes[report.nodeid] = f"error in {report.when}"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        background = session.config.stash.get(_EXTERNAL, None)
        if background is not None:
            background.stop()  # type: ignore[attr-defined]
        self.info.finished = time.time()
        if not self.info.outcomes and not self.recorder.records:
            return  # nothing ran (e.g. --collect-only)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_tables(self.dir, self.recorder, self.info)
        if self.nested:
            return
        tmp = self.dir.parent / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.dir.name)
        os.replace(tmp, self.dir.parent / "latest")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        reasons: dict[str, int] = {}
        for outcome in self.info.outcomes.values():
            if outcome.startswith("skipped: "):
                reason = outcome.removeprefix("skipped: ").removeprefix("Skipped: ")
                reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in reasons.items():  # one line per reason, not per test
            terminalreporter.write_line(f"skipped {count}: {reason}")
        if (self.dir / "report.md").exists():
            elapsed = self.info.finished - self.info.started
            terminalreporter.write_line(f"e2e report: {self.dir} ({elapsed:.1f} s)")
            for note in self.info.notes:
                terminalreporter.write_line(f"  {note}")
            for line in self.info.summary:
                terminalreporter.write_line(line)


_RUN = pytest.StashKey[_Run]()


def pytest_configure(config: pytest.Config) -> None:
    run = _Run(config)
    config.stash[_RUN] = run
    config.pluginmanager.register(run, "stunner-e2e-run")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        return ORDER.index(module) if module in ORDER else len(ORDER)

    items.sort(key=rank)


_EXTERNAL = pytest.StashKey[object]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """test_external's run (its own deployment, a nested harness run) takes a minute, mostly
    waiting for scrapes: start it now, beside the other scenarios; the test joins it."""
    config = session.config
    wanted = any(item.nodeid.startswith("e2e/test_external.py") for item in session.items)
    binary = shutil.which("prometheus")
    if not wanted or config.getoption("--target") != "local" or binary is None:
        return
    if config.getoption("--collect-only"):
        return
    from e2e.external_lab import BackgroundRun

    run = BackgroundRun(binary, config.stash[_RUN].dir / "external", config.getoption("--keep"))
    run.start()
    config.stash[_EXTERNAL] = run


@pytest.fixture(scope="session")
def external_run(pytestconfig: pytest.Config) -> object:
    run = pytestconfig.stash.get(_EXTERNAL, None)
    if run is None:
        pytest.skip("the external run needs --target local and prometheus")
    return run


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def recorder(pytestconfig: pytest.Config) -> Recorder:
    return pytestconfig.stash[_RUN].recorder


@pytest.fixture(scope="session")
def run_info(pytestconfig: pytest.Config) -> RunInfo:
    return pytestconfig.stash[_RUN].info


@pytest.fixture(scope="session")
def reportdir(pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.stash[_RUN].dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config, reportdir: Path, run_info: RunInfo) -> Iterator[object]:
    """The local lab (Prometheus, echo backend, addresses); local target only."""
    if pytestconfig.getoption("--target") != "local":
        pytest.skip("needs --target local")
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(PROMETHEUS_HINT, pytrace=False)
    from e2e.targets.local import LocalLab

    lab = LocalLab(
        binary, reportdir, keep=pytestconfig.getoption("--keep"), stunnerd=_stunnerd(pytestconfig)
    )
    run_info.notes.append(f"scrape config from {lab.spec.source}")
    try:
        yield lab
    finally:
        try:
            _plots(reportdir, lab.prometheus.client, run_info, "")
        finally:
            lab.close()


def _stunnerd(config: pytest.Config) -> tuple[str, ...]:
    from e2e.gateway import STUNNERD

    cmd = config.getoption("--stunnerd")
    return tuple(shlex.split(cmd)) if cmd else STUNNERD


def _plots(reportdir: Path, prom: object, info: RunInfo, selector: str) -> None:
    from e2e.prom import PromClient

    assert isinstance(prom, PromClient)
    began = time.monotonic()
    count = write_plots(reportdir, prom, info.started, time.time(), selector)
    info.notes.append(f"{count} plots in {time.monotonic() - began:.1f} s")


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Iterator[Target]:
    """The gateway under test, per --target."""
    kind = pytestconfig.getoption("--target")
    info = pytestconfig.stash[_RUN].info
    outdir = pytestconfig.stash[_RUN].dir
    if kind == "local":
        from e2e.gateway import stunnerd_unavailable_reason
        from e2e.targets.local import main_target

        reason = stunnerd_unavailable_reason(_stunnerd(pytestconfig))
        if reason:
            pytest.skip(reason)
        yield main_target(request.getfixturevalue("lab"))
        return
    if kind == "kind":
        from e2e.targets.kind import kind_skip_reason, kind_target

        reason = kind_skip_reason()
        if reason:
            pytest.skip(reason)
        with kind_target() as tgt:
            info.notes.extend(tgt.notes)
            yield tgt
            _plots(outdir, tgt.scope.prom, info, tgt.scope.selector)
        return
    from e2e.targets.external import TargetError, external_target

    try:
        tgt = external_target(
            turn_uris=pytestconfig.getoption("--turn-uri"),
            username=pytestconfig.getoption("--turn-user"),
            password=pytestconfig.getoption("--turn-password"),
            peer=pytestconfig.getoption("--peer"),
            prometheus_url=pytestconfig.getoption("--prometheus-url"),
            selector=pytestconfig.getoption("--prometheus-selector"),
            outside_peer=pytestconfig.getoption("--outside-peer"),
            asymmetric_peer=pytestconfig.getoption("--asymmetric-peer"),
            cafile=pytestconfig.getoption("--turn-ca"),
        )
    except TargetError as exc:
        pytest.fail(str(exc), pytrace=False)
    info.notes.extend(tgt.notes)
    yield tgt
    _plots(outdir, tgt.scope.prom, info, tgt.scope.selector)


@pytest.fixture
def local(target: Target) -> Target:
    """The target, for scenarios that must reconfigure or start gateways (local only)."""
    if target.lab is None:
        pytest.skip("needs --target local (this scenario restarts/reconfigures gateways)")
    return target
