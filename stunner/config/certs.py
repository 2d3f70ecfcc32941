"""TLS material that must load, not just parse: a listener's cert and key as the server uses them.

`from_dict` checks that ``cert`` and ``key`` are base64 PEM; whether they form a usable pair
(valid PEM, a key that matches the certificate) shows only when OpenSSL loads them. Doing that
while validating makes a bad certificate a rejected config, so a reload keeps the last good
one instead of taking the TLS listener down.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from .fields import excerpt
from .model import ConfigError, StunnerConfig


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server TLS context from in-memory PEM (the config carries base64 PEM, as upstream).

    OpenSSL loads certificates from files only, so they pass through a private temporary
    directory; the key file is created mode 0600."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def check_certificates(config: StunnerConfig) -> None:
    """Raise `ConfigError` naming the first TLS/DTLS listener whose cert and key do not load."""
    for i, lis in enumerate(config.listeners):
        if lis.protocol not in ("TLS", "DTLS"):
            continue
        try:
            server_context(lis.cert, lis.key)
        except (ssl.SSLError, ValueError) as exc:
            reason = excerpt(getattr(exc, "reason", None) or str(exc), quote=False)
            raise ConfigError(
                f"listeners[{i}].cert: the certificate and key do not load together: {reason}"
            ) from None
