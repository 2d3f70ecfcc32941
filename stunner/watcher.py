"""Following a config file live: poll it, parse it off the event loop, hand valid versions to
``Stunner.apply`` and keep the last good config when a version is bad.

A reload must never stall relaying. The file is stat-ed before it is read and refused unread
over MAX_CONFIG_BYTES (1 MiB, a ConfigMap's limit); the text is parsed and validated, TLS
material loaded, in a short-lived child process (`ParserProcess`) while the event loop keeps
relaying; and the parser bounds YAML aliases and nesting (stunner.config.parse). Only the
apply itself, which touches sockets, runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import pickle
import sys
import time
from typing import TYPE_CHECKING

from .config import MAX_CONFIG_BYTES, ConfigError, StunnerConfig, read_text

if TYPE_CHECKING:
    from .daemon import Stunner

logger = logging.getLogger("stunner.daemon")


class ParserProcess:
    """Parses config text in a fresh child process per reload (`stunner.config.child`).

    A thread would share the GIL and the garbage collector with the event loop: a hostile
    1 MiB file takes seconds of pure-Python YAML parsing, and a collection of its objects
    holds the GIL for 100+ ms. A child process shares neither, and its memory is its own.
    Reloads are rare, so the child lives for one parse only: it is killed after
    ``timeout`` seconds or when the parse is cancelled, and it dies with stunnerd even on
    SIGKILL (PR_SET_PDEATHSIG), so no parser ever outlives the daemon. With ``--workers N``
    each process that applies a reload (the supervisor and every worker) parses it once;
    between reloads no parser runs."""

    TIMEOUT = 30.0  # seconds; the size cap and alias bound keep real parses far below

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.process: asyncio.subprocess.Process | None = None  # the one parsing now

    async def parse(self, text: str, source: str) -> StunnerConfig:
        self.process = process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stunner.config.child",
            source,
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # close_fds: the child gets none of the relay's sockets
        try:
            out, _ = await asyncio.wait_for(process.communicate(text.encode()), self.timeout)
        except TimeoutError:
            raise ConfigError(f"{source}: parsing took more than {self.timeout:g} s") from None
        finally:
            self.close()
            await process.wait()
            self.process = None
        try:
            status, value = pickle.loads(out)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
            code = process.returncode
            raise ConfigError(f"{source}: the config parser process died ({code})") from None
        if status != "ok":
            raise ConfigError(str(value))
        assert isinstance(value, StunnerConfig)
        return value

    def close(self) -> None:
        """Kill the parse in progress, if any."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class ConfigWatcher:
    """Polls a config file and hands valid new versions to ``Stunner.apply``.

    Polling (not inotify) follows the kubelet's ConfigMap symlink swap and survives the file
    being deleted and recreated. A changed file is applied only once it has stayed the same
    for one more poll, so a non-atomic writer caught halfway (a valid but truncated file) is
    not applied. An invalid file is logged once, counts as a failed reload
    (``stunner_config_last_reload_successful`` 0), and the last good config keeps running.
    """

    def __init__(self, path: str, stunner: Stunner, interval: float = 0.25) -> None:
        self.path = path
        self.stunner = stunner
        self.interval = interval
        self._applied_digest = b""  # of the text that runs
        self._tried_digest = b""  # of the last text parsed, good or bad
        self._last_error = ""
        self._last_stat: tuple[int, int, int] | None = None
        self._pending: str | None = None  # changed text waiting one poll to prove stable
        self.parser = ParserProcess()

    def read(self) -> str | None:
        """The file's text if it changed since the last look, else None."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._last_stat:
                return None
            self._last_stat = stamp
            if st.st_size > MAX_CONFIG_BYTES:  # refused unread, however large
                limit = f"larger than the {MAX_CONFIG_BYTES}-byte limit"
                raise ConfigError(f"{self.path}: {st.st_size} bytes, {limit}")
            text = read_text(self.path)
        except OSError as exc:
            self._reject(f"cannot read config {self.path}: {exc}")
            self._last_stat = None
            return None
        except ConfigError as exc:
            self._reject(f"config rejected, the last good config keeps running: {exc}")
            return None
        digest = _digest(text)
        if digest == self._applied_digest:  # changed back to what runs
            self._pending = None
            self._last_error = ""
            self.stunner.reload.recovered()
            return None
        if digest == self._tried_digest:  # the version already rejected
            self._pending = None
            return None
        return text

    async def check_once(self) -> bool:
        """One poll: True if a new config was applied."""
        text = self.read()
        if text is not None and text != self._pending:
            self._pending = text  # changed: wait for the next poll to see it unchanged
            return False
        if self._pending is None:
            return False
        text, self._pending = self._pending, None
        self._tried_digest = _digest(text)
        try:
            # In a child process: parsing a hostile 1 MiB file takes seconds of CPU.
            config = await self.parser.parse(text, self.path)
        except ConfigError as exc:
            self._reject(f"config rejected, the last good config keeps running: {exc}")
            return False
        self._last_error = ""
        started = time.monotonic()
        await self.stunner.apply(config)
        self._applied_digest = self._tried_digest
        logger.info("config %s applied in %.0f ms", self.path, (time.monotonic() - started) * 1e3)
        return True

    def prime(self) -> None:
        """The file as it is now already runs (loaded at startup): only later changes are news."""
        text = self.read()
        if text is not None:
            self._applied_digest = self._tried_digest = _digest(text)

    def close(self) -> None:
        """Kill a parse in progress (`run` does it when cancelled)."""
        self.parser.close()

    def _reject(self, message: str) -> None:
        self._pending = None
        self.stunner.reload.failed()
        if message != self._last_error:
            logger.error("%s", message)
            self._last_error = message

    async def run(self) -> None:
        try:
            while True:
                await self.check_once()
                await asyncio.sleep(self.interval)
        finally:
            self.close()
