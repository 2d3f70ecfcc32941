"""A throwaway self-signed certificate for the servers' TLS listeners, made with openssl.

The bench's TLS clients (uclient ``-S``) do not verify the server, so one certificate for the
loopback addresses serves every server of a run; it only has to load. The openssl CLI makes
it, so the bench needs no Python crypto package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SUBJECT = "/CN=stunner-bench"
ALT_NAMES = "subjectAltName=IP:127.0.0.1,IP:127.0.0.11,IP:127.0.0.12,IP:127.0.0.13,IP:127.0.0.14"


def openssl_binary() -> str | None:
    return shutil.which("openssl")


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """(cert_path, key_path): an EC P-256 certificate and its key in ``workdir``, made once
    (a second call returns the same files)."""
    cert, key = workdir / "bench-cert.pem", workdir / "bench-key.pem"
    if cert.exists() and key.exists():
        return cert, key
    binary = openssl_binary()
    if binary is None:
        raise FileNotFoundError("openssl (apt-get install openssl): no certificate for TLS")
    argv = [
        binary, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", SUBJECT, "-addext", ALT_NAMES,
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return cert, key
