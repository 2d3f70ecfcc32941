"""The config parser's child process: ``python -m stunner.config.child SOURCE PARENT_PID``.

stunnerd starts one per reload (stunner.watcher.ParserProcess), writes the config text to its
stdin and reads one pickled ``("ok", StunnerConfig)`` or ``("error", message)`` from its
stdout. It asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG), so a stunnerd
killed with SIGKILL leaves no parser behind.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent exits; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    source, parent_pid = argv[0], int(argv[1])
    die_with_parent(parent_pid)
    from . import ConfigError, loads  # after prctl: the imports take most of the start-up

    text = sys.stdin.buffer.read().decode("utf-8")
    try:
        result: tuple[str, object] = ("ok", loads(text, source, load_certificates=True))
    except ConfigError as exc:
        result = ("error", str(exc))
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
