"""Long-term credentials on requests (RFC 8489 9.2): stateless nonces, challenges, checks.

The key lookup itself is the injected ``stunner.auth.Authenticator``, swappable live; this
module decides what a request without valid credentials is answered.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import NamedTuple

from ..auth import Authenticator
from ..stun import Message
from .answers import error_response

NONCE_MACS_KEPT = 64  # nonce stamps whose MAC is remembered (one per second of issue)


class Denied(NamedTuple):
    """A request without valid credentials: the answer to send, and why it failed ("" when
    nothing failed: the first challenge, or a nonce that simply aged out)."""

    answer: Message
    failure: str = ""
    username: str = ""


class RequestAuth:
    """Checks the credentials of one listener's requests and issues its nonces."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self._nonce_secret = os.urandom(16)
        # stamp -> its MAC: a call setup is issued one nonce and checks it three times, and
        # within a second every nonce has the same stamp. Bounded: forged stamps cannot grow it.
        self._macs: dict[str, str] = {}

    def _nonce_mac(self, stamp: str) -> str:
        mac = self._macs.get(stamp)
        if mac is None:
            if len(self._macs) >= NONCE_MACS_KEPT:
                self._macs.clear()
            mac = hmac.digest(self._nonce_secret, stamp.encode(), "sha256").hex()[:8]
            self._macs[stamp] = mac
        return mac

    def make_nonce(self) -> bytes:
        """Stateless: issue time and a MAC of it, 16 bytes so that challenges stay small."""
        stamp = f"{int(time.time()):08x}"
        return (stamp + self._nonce_mac(stamp)).encode()

    def nonce_valid(self, nonce: bytes, lifetime: float) -> bool:
        try:
            text = nonce.decode()
            stamp, mac = text[:8], text[8:]
            issued = int(stamp, 16)
        except ValueError:
            return False
        expected = self._macs.get(stamp) or self._nonce_mac(stamp)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return False
        return 0 <= time.time() - issued < lifetime

    def challenge(self, request: Message, code: int) -> Message:
        response = error_response(request, code)
        response.attributes["REALM"] = self.authenticator.realm
        response.attributes["NONCE"] = self.make_nonce()
        return response

    def authenticate(self, message: Message, nonce_lifetime: float) -> tuple[str, bytes] | Denied:
        """(username, key) for a request with valid credentials, else what to answer."""
        attrs = message.attributes
        if "MESSAGE-INTEGRITY" not in attrs:
            # 1. No credentials yet: challenge with REALM and NONCE.
            return Denied(self.challenge(message, 401))
        if "USERNAME" not in attrs or "REALM" not in attrs or "NONCE" not in attrs:
            # 2. Integrity without the attributes needed to check it.
            return Denied(error_response(message, 400, "Missing USERNAME, REALM or NONCE"))
        if not self.nonce_valid(attrs["NONCE"], nonce_lifetime):
            # 3. Stale or forged nonce: the client retries with the fresh one.
            return Denied(self.challenge(message, 438))
        username = attrs["USERNAME"]
        key = self.authenticator.key_for(username)
        if key is None:
            why = self.authenticator.refusal(username)
            return Denied(self.challenge(message, 401), why, username)
        if attrs["REALM"] != self.authenticator.realm:
            return Denied(self.challenge(message, 401), "wrong realm", username)
        if not message.check_integrity(key):
            # 4. Wrong password: same answer as an unknown user.
            return Denied(self.challenge(message, 401), "wrong password", username)
        return username, key
