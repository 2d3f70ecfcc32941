"""Headless Chromium as a child process, driven over its DevTools pipe.

`--remote-debugging-pipe` speaks the DevTools protocol over file descriptors 3 (commands in)
and 4 (replies and events out), NUL-terminated JSON: no debugging port is opened, no driver
process or Python package is needed, and nothing is downloaded. The browser runs in its own
process group with a fresh profile and HOME, and is killed by process group on close, even
when a test fails half-way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

BINARY_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_binary() -> str | None:
    """The browser on PATH, or None."""
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what `--ignore-certificate-errors-spki-list` takes.

    Only a certificate with exactly this key is accepted despite its unknown issuer; every other
    certificate is still verified as usual.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def flags(
    profile: Path, *, trust_spki: Sequence[str] = (), resolvable: Sequence[str] = ()
) -> list[str]:
    """The command line, each flag for a reason.

    Off-loopback traffic: mDNS host-candidate obfuscation off (it multicasts to 224.0.0.251
    even under the relay policy), QUIC off, no background, sync, component or media-router
    traffic, and every host name resolves to nothing (the tests use IP literals only). The
    TURN servers' addresses must be excluded from that rule: TURN over TCP goes through the
    network service's resolver even for an IP literal, and `~NOTFOUND` would fail it.
    """
    rules = ", ".join(["MAP * ~NOTFOUND", *(f"EXCLUDE {host}" for host in resolvable)])
    out = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-breakpad",
        "--mute-audio",
        "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,DialMediaRouteProvider",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={profile}",
        "--no-proxy-server",
        f"--host-resolver-rules={rules}",
        "--remote-debugging-pipe",
    ]
    if trust_spki:
        out.append(f"--ignore-certificate-errors-spki-list={','.join(trust_spki)}")
    return out


class DevToolsError(RuntimeError):
    """The browser answered a command with an error, or went away."""


class Chromium:
    """One browser process and its DevTools pipe; use as a context manager.

    `prefix`: a command to run the browser under (e.g. `ip netns exec NS`), which must exec it.
    """

    def __init__(
        self,
        binary: str,
        *,
        url: str,
        trust_spki: Sequence[str] = (),
        resolvable: Sequence[str] = (),
        prefix: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.binary = binary
        self.url = url
        self.trust_spki = tuple(trust_spki)
        self.resolvable = tuple(resolvable)
        self.prefix = tuple(prefix)
        self.log_path = log_path
        self.home = Path(tempfile.mkdtemp(prefix="stunner-e2e-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._closed = threading.Event()
        self._to_browser: int | None = None
        self._reader: threading.Thread | None = None
        self.session = ""

    # -- process ------------------------------------------------------------------------

    def argv(self) -> list[str]:
        profile = self.home / "profile"
        return [
            *self.prefix,
            self.binary,
            *flags(profile, trust_spki=self.trust_spki, resolvable=self.resolvable),
            self.url,
        ]

    def start(self) -> None:
        cmd_r, cmd_w = os.pipe()  # we write commands, the browser reads fd 3
        out_r, out_w = os.pipe()  # the browser writes fd 4, we read
        env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "TMPDIR": str(self.home),
            "BROWSER_LOG": str(self.log_path or os.devnull),
        }
        # The pipes arrive as stdin/stdout; the shell moves them to 3 and 4 and execs the
        # browser (same pid), so no pre-exec hook runs Python in the forked child.
        trampoline = 'exec "$@" 3<&0 4>&1 </dev/null >>"$BROWSER_LOG" 2>&1'
        argv = ["/bin/sh", "-c", trampoline, "sh", *self.argv()]
        log.info("starting %s", " ".join(self.argv()))
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=cmd_r,
                stdout=out_w,
                env=env,
                start_new_session=True,  # its own process group: killed as one
            )
        finally:
            os.close(cmd_r)
            os.close(out_w)
        self._to_browser = cmd_w
        self._reader = threading.Thread(
            target=self._read, args=(out_r,), name="devtools-pipe", daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        """Kill the browser's process group (all renderers and helpers), then clean up."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if self._to_browser is not None:
            os.close(self._to_browser)
            self._to_browser = None
        if self._reader is not None:
            self._reader.join(timeout=5)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Chromium:
        try:
            self.start()
            self.session = self._attach_page()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol -----------------------------------------------------------------------

    def _read(self, fd: int) -> None:
        buf = b""
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    self._dispatch(json.loads(raw))
        self._closed.set()
        with self._lock:
            for event, _ in self._pending.values():
                event.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" not in message:
            return  # events: nothing here subscribes to any
        with self._lock:
            waiter = self._pending.pop(message["id"], None)
        if waiter is not None:
            waiter[1].append(message)
            waiter[0].set()

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """One DevTools command (on the page session once attached); its result."""
        if self._to_browser is None or self._closed.is_set():
            raise DevToolsError(f"{method}: browser is gone")
        event = threading.Event()
        box: list[dict[str, Any]] = []
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._pending[ident] = (event, box)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        if not event.wait(timeout) or not box:
            with self._lock:
                self._pending.pop(ident, None)
            raise DevToolsError(f"{method}: no answer in {timeout} s")
        reply = box[0]
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _attach_page(self) -> str:
        targets = self.send("Target.getTargets")["targetInfos"]
        pages = [t for t in targets if t["type"] == "page"]
        if not pages:
            raise DevToolsError(f"no page target among {targets}")
        result = self.send(
            "Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True}
        )
        return str(result["sessionId"])

    def evaluate(self, expression: str, *, timeout: float = 30.0) -> Any:
        """Evaluate in the page, awaiting a promise; the JSON value, or DevToolsError."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"page: {text}")
        return result["result"].get("value")
