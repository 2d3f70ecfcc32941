"""Building bench/pion/main.go offline from Debian's Go packages, once per change.

Debian's ``golang-github-pion-turn.v2-dev`` installs pion/turn v2 and its dependencies as
source under ``/usr/share/gocode/src``, laid out for GOPATH mode. So the build runs with
``GO111MODULE=off`` and ``GOPATH=/usr/share/gocode``: no go.mod, no module proxy, no network.
The ``/v2`` import paths still resolve: Go's minimal module compatibility maps
``github.com/pion/transport/v2`` onto ``.../pion/transport``, whose go.mod names it so.
``CGO_ENABLED=0`` makes a static binary that needs no C compiler (cgo would only change name
resolution, which the relay never does).

The binary is named after a hash of everything that shapes it (main.go, the go version, the
pion sources), in a cache directory that outlives bench runs (``bench-results/pion/`` by
default, with Go's build cache beside it), so only the first run after a change pays for the
build (about 25 s with a cold Go cache, on 2 cores). A missing toolchain is not an error: the
caller gets one line saying what to install, and the bench carries on without pion.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .servers import REPO

SOURCE = REPO / "bench" / "pion"
GOCODE = Path("/usr/share/gocode")
PION_IMPORT = "github.com/pion/turn/v2"
DEBIAN_PACKAGE = "golang-github-pion-turn.v2-dev"
INSTALL = f"apt-get install golang-go {DEBIAN_PACKAGE}"
BINARY_PREFIX = "pion-bench-"
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True)
class Build:
    """The outcome: a binary to run, or the one line saying why there is none."""

    binary: Path | None = None
    skipped: str = ""
    built: bool = False  # False: taken from the cache


def missing(go: str | None, gocode: Path = GOCODE) -> str:
    """Why pion cannot be built here ('' if it can): no go, or no pion sources."""
    if go is None:
        return f"pion/turn: go is not installed ({INSTALL}): skipped"
    if not (gocode / "src" / PION_IMPORT / "server.go").is_file():
        return f"pion/turn: no pion/turn v2 sources in {gocode / 'src'} ({INSTALL}): skipped"
    return ""


def build_env(gocode: Path, cache: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of ``go build``: GOPATH mode on the Debian sources, offline, no cgo."""
    env = dict(os.environ if base is None else base)
    env.update(
        GO111MODULE="off",
        GOPATH=str(gocode),
        GOFLAGS="",  # a -mod=... from the caller's environment is an error in GOPATH mode
        GOPROXY="off",
        GOTOOLCHAIN="local",  # a newer go must not try to fetch another toolchain
        CGO_ENABLED="0",
        GOCACHE=str(cache / "gocache"),
    )
    return env


def build_argv(go: str, output: Path) -> list[str]:
    """``go build`` of the package in the working directory (run it in ``SOURCE``)."""
    return [go, "build", "-trimpath", "-o", str(output), "."]


def fingerprint(
    go_version: str, source: Path = SOURCE, gocode: Path = GOCODE, length: int = 16
) -> str:
    """A hash of what the binary is made of: our sources, the go version, the pion sources
    (by path, size and modification time: a Debian upgrade changes them)."""
    digest = hashlib.sha256(go_version.encode())
    for path in sorted(source.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for path in sorted((gocode / "src" / "github.com" / "pion").rglob("*.go")):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:length]


def go_version(go: str) -> str:
    """``go version``'s version field (``go1.19.8``), or 'unknown'."""
    try:
        out = subprocess.run(
            [go, "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out[2] if len(out) > 2 else "unknown"


def pion_version() -> str:
    """The Debian package's version of pion/turn v2, as the machine table shows it."""
    query = shutil.which("dpkg-query")
    if query is None:
        return "unknown"
    out = subprocess.run(
        [query, "-W", "-f", "${Version}", DEBIAN_PACKAGE],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"


def first_error(output: str) -> str:
    """The first line of ``go build``'s output that is not a ``# package`` header."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith("#")), "no output")


def default_cache() -> Path:
    return REPO / "bench-results" / "pion"


def ensure_built(
    cache: Path | None = None,
    *,
    which: Callable[[str], str | None] = shutil.which,
    gocode: Path = GOCODE,
    say: Callable[[str], None] = print,
) -> Build:
    """The pion server binary: from the cache, else built now; or why not (``Build.skipped``)."""
    cache = cache or default_cache()
    go = which("go")
    why = missing(go, gocode)
    if go is None or why:
        return Build(skipped=why)
    binary = cache / f"{BINARY_PREFIX}{fingerprint(go_version(go), SOURCE, gocode)}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return Build(binary)
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f".{binary.name}.{os.getpid()}")  # renamed when complete
    argv = build_argv(go, partial)
    say(f"pion/turn: building {binary} (go build in GOPATH mode on {gocode}, offline)")
    try:
        done = subprocess.run(
            argv, cwd=SOURCE, env=build_env(gocode, cache), capture_output=True, text=True,
            timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        return Build(skipped=f"pion/turn: go build took over {BUILD_TIMEOUT:.0f} s: skipped")
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        return Build(skipped=f"pion/turn: go build failed ({first_error(done.stderr)}): skipped")
    os.replace(partial, binary)  # atomic: a concurrent run sees the whole binary or none
    for old in cache.glob(f"{BINARY_PREFIX}*"):
        if old != binary:
            old.unlink(missing_ok=True)
    return Build(binary, built=True)
