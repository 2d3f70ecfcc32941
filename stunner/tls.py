"""Server-side TLS over a plain TCP transport, with ``ssl.MemoryBIO``.

uvloop's own TLS transport keeps about 1 KiB per connection it has ever served (RSS grows
without bound under connection churn; measured in docs/security.md). Doing TLS here, on
uvloop's plain TCP transport, keeps memory flat and works the same on any event loop. The
wrapped protocol sees a transport with ``write``, ``close``, ``is_closing`` and
``get_extra_info``, and is connected only once the handshake has completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, cast

READ_CHUNK = 65536
# Plaintext is decrypted into one buffer for every connection of the process (the event loop
# runs one callback at a time, and the inner protocol gets a copy), not one per connection.
_PLAIN_VIEW = memoryview(bytearray(READ_CHUNK))

HandshakeFailed = Callable[[tuple[str, int], str, int], None]
"""Told (client address, why, log level) when a handshake fails: the listener logs it."""


def _ignore(client: tuple[str, int], why: str, level: int) -> None:
    pass


_UNBOUNDED = 2**63  # a write bound no buffer reaches: ``send`` checks none
# A frame's first byte and its length field: ChannelData (first byte 0x40-0x7f, RFC 8656 12)
# or a STUN message (first two bits 0, the length after its 20-byte header).
_FRAME_HEAD = struct.Struct("!BxH").unpack_from


def _write_frames(tls_io: _TlsIO, data: memoryview) -> None:
    """Each frame of ``data`` a record of its own (bytes after the last whole header: one)."""
    start, size = 0, len(data)
    while size - start >= 4:
        first, length = _FRAME_HEAD(data, start)
        # A ChannelData frame padded to 4 (RFC 8656 12.5), or a STUN message's header and body.
        end = start + ((length + 7) & ~3 if first & 0x40 else length + 20)
        tls_io.write(data[start:end])
        start = end
    if start < size:
        tls_io.write(data[start:])


class _TlsIO(Protocol):
    """The calls of ``ssl.SSLObject`` the hot paths make, with the signatures of the C object
    behind it."""

    def read(self, size: int, buffer: memoryview) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def pending(self) -> int: ...


class SourceGate(Protocol):
    """Caps connections per source IP (stunner.listener.StreamConnections)."""

    def admit(self, source: str) -> bool: ...

    def release(self, source: str) -> None: ...


class TlsTransport(asyncio.Transport):
    """What the wrapped protocol writes to: plaintext in, TLS records out."""

    def __init__(self, tls: TlsServerProtocol) -> None:
        super().__init__()
        self._tls = tls
        # ``write`` if the encrypted bytes waiting stay within a bound (``StreamClient``'s), in
        # one call: the checks through this class's methods would be a Python call each.
        self.write_within: Callable[[bytes, int], bool] = tls.send_within
        # ``write_within`` for a run of whole frames: a record each (``send_within``).
        self.write_frames_within: Callable[[bytes, int], bool] = partial(
            tls.send_within, frames=True
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls.send(data)

    def close(self) -> None:
        self._tls.close()

    def abort(self) -> None:
        self._tls.abort()

    def get_write_buffer_size(self) -> int:
        """Encrypted bytes waiting for the client: the TCP transport's buffer, plus records
        not yet handed to it (none between calls: every write is flushed at once)."""
        transport = self._tls.transport
        pending = self._tls.outgoing.pending
        return pending if transport is None else pending + transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        transport = self._tls.transport
        return transport is None or transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._tls.sslobj
        transport = self._tls.transport
        return default if transport is None else transport.get_extra_info(name, default)


class TlsServerProtocol(asyncio.Protocol):
    """Terminates TLS for one connection and feeds plaintext to ``inner``."""

    def __init__(
        self,
        context: ssl.SSLContext,
        inner_factory: Callable[[], asyncio.Protocol],
        handshake_timeout: float,
        on_failure: HandshakeFailed = _ignore,
        gate: SourceGate | None = None,
    ) -> None:
        self.context = context
        self.on_failure = on_failure
        self.peer = ("", 0)
        self.gate = gate
        self.source: str | None = None  # set while the gate counts this connection
        self.inner_factory = inner_factory
        self.handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        # The hot paths call read, write and pending on the C object behind ssl.SSLObject
        # (CPython's ``_sslobj``): the wrapper's methods only forward to it, a Python call
        # each. The wrapper itself where there is no such object.
        self.tls_io = cast(_TlsIO, getattr(self.sslobj, "_sslobj", self.sslobj))
        self.inner: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (peer[0], peer[1])
        if self.gate is not None:
            # Counted from TCP accept: pending handshakes hold a source's share too.
            source = str(peer[0])
            if not self.gate.admit(source):
                stream.abort()
                return
            self.source = source
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.handshake_timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._failed(f"no handshake within {self.handshake_timeout:g} s", logging.INFO)
        self.close()

    def _failed(self, why: str, level: int) -> None:
        """Report a handshake that will not complete, once per connection."""
        if self.on_failure is not _ignore:
            self.on_failure(self.peer, why, level)
            self.on_failure = _ignore

    def data_received(self, data: bytes) -> None:
        # Stream hot path: the records are decrypted into the shared plaintext buffer, and
        # only while the memory BIO still holds ciphertext or the last read filled what it
        # asked for (the record may hold more plaintext), so a read that ends on a record
        # boundary costs no SSLWantReadError and no ``pending()`` call (each C call of the
        # session releases and takes the GIL); the inner protocol gets one copy, handed on
        # here. Nothing is flushed unless the reads made records to send (a TLS 1.3 KeyUpdate
        # answer, say): no Python call but the inner protocol's.
        incoming = self.incoming
        incoming.write(data)
        inner = self.inner
        if inner is None:
            if not self._handshake() or not incoming.pending:
                return
            inner = self.inner
            assert inner is not None
        tls_io, view = self.tls_io, _PLAIN_VIEW
        filled = 0
        closing = False
        while True:
            try:
                count = tls_io.read(READ_CHUNK - filled, view[filled:] if filled else view)
            except ssl.SSLWantReadError:
                break  # the rest of a record is still on its way
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                closing = True
                break
            if not count:  # the peer's close_notify
                closing = True
                break
            filled += count
            if filled == READ_CHUNK:  # the record may hold more: read on
                self._deliver(filled)
                filled = 0
            elif not incoming.pending:
                break  # less than asked: the record is read out, and no ciphertext waits
        if filled:
            inner.data_received(view[:filled].tobytes())
        if closing:
            self.close()
        elif self.outgoing.pending:
            self._flush()

    def _deliver(self, size: int) -> None:
        """The first ``size`` bytes of the plaintext buffer, copied, to the inner protocol."""
        if self.inner is not None:
            self.inner.data_received(_PLAIN_VIEW[:size].tobytes())

    def _handshake(self) -> bool:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            self._failed(getattr(exc, "reason", None) or str(exc), logging.INFO)
            self._flush()
            self.close()
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        self.inner = self.inner_factory()
        self.inner.connection_made(TlsTransport(self))
        return True

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """To the client, however much is already waiting (STUN answers, which
        ``StreamClient.answer`` bounds itself), a record per frame."""
        self.send_within(data, _UNBOUNDED, frames=True)

    def send_within(
        self, data: bytes | bytearray | memoryview, limit: int, frames: bool = False
    ) -> bool:
        """``send`` if the encrypted bytes waiting for the client (``TlsTransport``'s write
        buffer size) plus ``len(data)`` stay within ``limit``; False, and nothing written, if
        not or if the connection is closing.

        ``data`` is one record, or with ``frames`` (a run of a wake-up's whole frames) a
        record per STUN message or ChannelData frame in it: a client that takes one record
        for one message (coturn's turnutils_uclient does) reads every frame of the run."""
        # Stream hot path (a wake-up's frames to the client): encrypted, then written out at
        # once, in one transport write.
        transport = self.transport
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() + len(data) > limit
        ):
            return False
        try:
            if frames:
                _write_frames(self.tls_io, memoryview(data))
            else:
                self.tls_io.write(data)
        except ssl.SSLError:
            self.abort()  # a reset: none of a failed write leaves, records before it included
            return False
        transport.write(self.outgoing.read())
        return True

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def close(self) -> None:
        """Send our close_notify if the session is up, then close the TCP connection."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.inner is not None:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self.sslobj.unwrap()
            self._flush()
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, buffered records included (a client that does not read)."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.inner is None:  # a probe or a scanner, most likely: not worth INFO
            self._failed("closed before the handshake completed", logging.DEBUG)
        inner, self.inner = self.inner, None
        self.transport = None
        if self.gate is not None and self.source is not None:
            self.gate.release(self.source)
            self.source = None
        if inner is not None:
            inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return False  # close our side too
