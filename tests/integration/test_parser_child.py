"""The config parser's child process never outlives stunnerd, and no parser idles.

stunnerd parses each reload in a fresh child (stunner.watcher.ParserProcess). Killed with
SIGKILL mid-parse, stunnerd gets no chance to clean up: the child must still go (it asked the
kernel for PR_SET_PDEATHSIG). Between reloads, no parser runs, with one process or with
``--workers 2``; and the workers go with a killed supervisor even right after a reload.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from tests.integration.reload_stall import late_error
from tests.integration.test_cli import Daemon, wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def children(pid: int) -> dict[int, str]:
    """The live children of ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def kill_and_outlive(daemon: Daemon, pids: Iterable[int]) -> None:
    """SIGKILL stunnerd (it can clean nothing up); every one of ``pids`` must go too."""
    assert daemon.proc is not None
    daemon.proc.kill()
    daemon.proc.wait(timeout=10)
    try:
        wait_until(lambda: not any(alive(pid) for pid in pids), 15)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def parsers(pid: int) -> list[int]:
    return [p for p, cmd in children(pid).items() if "stunner.config.child" in cmd]


def applied(daemon: Daemon) -> int:
    return daemon.log.read_bytes().count(b" applied in ")


def test_sigkill_mid_parse_leaves_no_parser_behind(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start()
        assert daemon.proc is not None
        # A 1 MiB file of 90,000 endpoints: seconds of parsing, time to catch the child.
        slow = tmp_path / "slow.conf"
        slow.write_text(late_error(daemon.config, (1 << 20) - 64))
        slow.replace(daemon.path)
        wait_until(lambda: parsers(daemon.proc.pid), 15)  # type: ignore[union-attr]
        kill_and_outlive(daemon, children(daemon.proc.pid))
    finally:
        daemon.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_no_parser_idles_between_reloads(tmp_path: Path, workers: int) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start("--workers", str(workers))
        assert daemon.proc is not None
        before = set(children(daemon.proc.pid))
        assert len(before) == (0 if workers == 1 else 2)
        changed = dict(daemon.config, admin={**daemon.config["admin"], "loglevel": "all:INFO"})
        daemon.path.write_text(yaml.safe_dump(changed))
        processes = 1 if workers == 1 else workers + 1  # each applies the reload itself
        wait_until(lambda: applied(daemon) == processes, 20)
        wait_until(lambda: set(children(daemon.proc.pid)) == before, 10)  # type: ignore[union-attr]
        for worker in before:
            assert children(worker) == {}  # no parser, no resource tracker
        kill_and_outlive(daemon, before)  # even right after a reload, nothing of it stays
    finally:
        daemon.stop()
