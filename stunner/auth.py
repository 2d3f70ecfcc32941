"""Long-term credential handlers (RFC 8489 9.2): map a USERNAME to its HMAC key, or refuse.

``plaintext`` checks one configured user. ``longterm`` is the TURN REST scheme: the username
is ``<expiry-unix-time>[:<user>]`` and the password is base64(HMAC-SHA1(secret, username)), so
any backend holding the secret can mint credentials without telling the relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Protocol


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """MD5(username:realm:password), the MESSAGE-INTEGRITY key (RFC 8489 9.2.2)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def rest_password(secret: str, username: str) -> str:
    """The TURN REST password for ``username``: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def rest_username(expiry: int, user: str = "") -> str:
    return f"{expiry}:{user}" if user else str(expiry)


class Authenticator(Protocol):
    realm: str

    def key_for(self, username: str) -> bytes | None:
        """The integrity key for ``username``, or None if the user may not authenticate."""

    def refusal(self, username: str) -> str:
        """Why ``key_for(username)`` is None, for a log line (never a secret)."""


class PlaintextAuth:
    """One static user, as upstream's ``plaintext`` (alias ``static``)."""

    def __init__(self, realm: str, username: str, password: str) -> None:
        self.realm = realm
        self._username = username
        self._username_bytes = username.encode()
        self._key = long_term_key(username, realm, password)

    def key_for(self, username: str) -> bytes | None:
        return self._key if hmac.compare_digest(username.encode(), self._username_bytes) else None

    def refusal(self, username: str) -> str:
        return "unknown user"

    def __repr__(self) -> str:
        return f"PlaintextAuth(realm={self.realm!r}, username={self._username!r})"


class LongTermAuth:
    """TURN REST credentials (``longterm``, alias ``ephemeral``) with an expiry in the name."""

    def __init__(self, realm: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        self.realm = realm
        self._secret = secret
        self._clock = clock

    def key_for(self, username: str) -> bytes | None:
        expiry = _rest_expiry(username)
        if expiry is None or expiry < self._clock():
            return None
        return long_term_key(username, self.realm, rest_password(self._secret, username))

    def refusal(self, username: str) -> str:
        expiry = _rest_expiry(username)
        if expiry is None:
            return "not a TURN REST username (<expiry>:<user>)"
        return f"credential expired {self._clock() - expiry:.0f} s ago"

    def __repr__(self) -> str:
        return f"LongTermAuth(realm={self.realm!r}, secret=<SECRET>)"


def _rest_expiry(username: str) -> int | None:
    """The expiry (unix time) of a TURN REST username, or None if it has none."""
    expiry_text = username.split(":", 1)[0]
    if not (expiry_text.isascii() and expiry_text.isdigit()) or len(expiry_text) > 20:
        return None
    return int(expiry_text)
