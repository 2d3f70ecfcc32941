"""A raw TURN client over one TCP or TLS socket, with blocking calls (run them in a thread).

The tests of stream backpressure need what aioice hides: a socket whose receive buffer is
small and that is not read while the relay floods it, the exact bytes of every frame, and the
end of the connection as the client sees it (a FIN, a TLS close_notify, a reset).
"""

from __future__ import annotations

import socket
import ssl
import struct

from stunner.auth import PlaintextAuth, long_term_key
from stunner.cluster import Admission
from stunner.config import LimitsConfig, ListenerConfig
from stunner.listener import Listener
from stunner.stats import ListenerStats
from stunner.stun import Address, Class, Message, Method, parse_message
from stunner.turn import AllocationObserver
from stunner.turn.limits import Quotas
from testkit.ports import free_port

REALM = "stunner.l7mp.io"


def listener(
    protocol: str,
    relay_port: int,
    *,
    cert: bytes = b"",
    key: bytes = b"",
    admission: Admission | None = None,
    limits: LimitsConfig | None = None,
    quotas: Quotas | None = None,
    events: AllocationObserver | None = None,
) -> Listener:
    """One listener on 127.0.0.1 (not started) with user1/pass1 and a one-port relay range."""
    admission = admission or Admission({}, ())
    config = ListenerConfig(
        name=f"t/{protocol.lower()}",
        protocol=protocol,  # type: ignore[arg-type]
        address="127.0.0.1",
        port=free_port(),
        min_relay_port=relay_port,
        max_relay_port=relay_port,
        cert=cert,
        key=key,
        routes=admission.routes,
    )
    return Listener(
        config,
        ListenerStats(),
        PlaintextAuth(REALM, "user1", "pass1"),
        admission,
        limits=limits or LimitsConfig(),
        quotas=quotas,
        events=events,
    )


def frame_length(header: bytes) -> int:
    """Bytes of the whole frame (padding included) that starts with these 4 bytes."""
    if header[0] & 0xC0 == 0x40:  # ChannelData, padded to 4 on streams
        length = struct.unpack("!H", header[2:4])[0]
        return 4 + length + (-length & 3)
    return 20 + struct.unpack("!H", header[2:4])[0]


class StreamTurn:
    """One TCP/TLS connection to a TURN listener."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.key = b""
        self.nonce = ""
        self.username = ""
        self.relay: Address = ("0.0.0.0", 0)
        self.frames_read = 0  # every frame read so far, and its bytes
        self.bytes_read = 0

    @classmethod
    def connect(
        cls,
        address: Address,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int = 0,
        timeout: float = 5.0,
    ) -> StreamTurn:
        """``rcvbuf``: a small receive buffer (set before connecting, so the window stays
        small), for a client that stops reading."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect(address)
        sock = tls.wrap_socket(raw) if tls is not None else raw
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    # frames

    def read_exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {size} bytes")
            data += chunk
        return bytes(data)

    def read_frame(self) -> bytes:
        """One STUN message or padded ChannelData frame."""
        header = self.read_exactly(4)
        frame = header + self.read_exactly(frame_length(header) - 4)
        self.frames_read += 1
        self.bytes_read += len(frame)
        return frame

    def read_stun(self) -> Message:
        return parse_message(self.read_frame())

    def request(self, message: Message, sign: bool = True) -> Message:
        if sign and self.key:
            message.attributes.update(
                {"USERNAME": self.username, "REALM": REALM, "NONCE": self.nonce}
            )
            data = message.encode(self.key)
        else:
            data = message.encode()
        self.sock.sendall(data)
        return self.read_stun()

    # TURN

    def allocate(self, username: str = "user1", password: str = "pass1") -> Address:
        challenge = self.request(
            Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17}),
            sign=False,
        )
        self.nonce = challenge.attributes["NONCE"]
        self.username = username
        self.key = long_term_key(username, REALM, password)
        answer = self.request(
            Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
        )
        if answer.msg_class != Class.SUCCESS:
            raise RuntimeError(f"Allocate failed: {answer.attributes.get('ERROR-CODE')}")
        self.relay = answer.attributes["XOR-RELAYED-ADDRESS"]
        return self.relay

    def channel_bind(self, channel: int, peer: Address) -> Message:
        """The answer: success, or the error (403 for a refused peer)."""
        return self.request(
            Message(
                Method.CHANNEL_BIND,
                Class.REQUEST,
                attributes={"CHANNEL-NUMBER": channel, "XOR-PEER-ADDRESS": [peer]},
            )
        )

    def send_indication(self, peer: Address, payload: bytes) -> None:
        message = Message(Method.SEND, Class.INDICATION)
        message.attributes["XOR-PEER-ADDRESS"] = [peer]
        message.attributes["DATA"] = payload
        self.sock.sendall(message.encode())

    def send_channel_data(self, channel: int, payload: bytes) -> None:
        pad = b"\x00" * (-len(payload) & 3)
        self.sock.sendall(struct.pack("!HH", channel, len(payload)) + payload + pad)

    def sees_end(self) -> str:
        """Read until the connection ends: 'eof' (FIN, or a TLS close_notify then FIN),
        'reset', or 'tls-eof-without-close-notify'. Frames still arriving are skipped."""
        try:
            while self.sock.recv(65536):
                pass
        except ssl.SSLEOFError:
            return "tls-eof-without-close-notify"
        except ConnectionResetError:
            return "reset"
        return "eof"
