"""A fast allocation driver: many TURN allocations over raw UDP sockets, no event loop.

Each allocation does what a browser does, from its own source address: Allocate without
credentials (401 with REALM and NONCE), Allocate with long-term credentials, CreatePermission
for the peer (with ``create_permission``, as browsers do before binding), ChannelBind to the
peer. Up to ``window`` (default ``WINDOW``) allocations are in flight at once, and the time of
each from its first request to its last answer is kept; requests are retransmitted after
``RTO`` seconds, at most ``TRIES`` times. The client sockets stay open (and the allocations
alive) until ``close()``. Source addresses are 127.0.1.x, ``PORTS_PER_IP`` ports each, so
they never collide with the servers' relay ports (bound on other addresses). Few clients
share an address, as browsers mostly do not: stunnerd's amplification guard gives one address
about 78 unauthenticated answers per 10 s beyond what it sent (docs/security.md), so thousands
of setups from one address would measure the guard, not the server.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from stunner.auth import long_term_key
from stunner.stun import CHANNEL_MIN, Class, Message, Method, parse_message

WINDOW = 64
RTO = 0.5
TRIES = 6
PORTS_PER_IP = 50  # clients per source address (see the module docstring)
FIRST_PORT = 30000
UDP = 17

ALLOCATE_PLAIN, ALLOCATE_AUTH, CREATE_PERMISSION, CHANNEL_BIND, DONE = range(5)


def source_address(index: int) -> tuple[str, int]:
    """The ``index``-th client address: 127.0.1.1:30000, ..., then 127.0.1.2:30000, ..."""
    host = index // PORTS_PER_IP
    return f"127.0.{1 + host // 250}.{1 + host % 250}", FIRST_PORT + index % PORTS_PER_IP


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    for new_hard in (max(hard, wanted), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class DriveResult:
    requested: int
    completed: int = 0
    failed: int = 0
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)  # seconds, one per completed setup

    @property
    def per_cpu_s(self) -> float:
        return self.completed / self.server_cpu_s if self.server_cpu_s > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "requested": self.requested,
            "completed": self.completed,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 3),
            "server_cpu_s": round(self.server_cpu_s, 3),
            "per_cpu_s": round(self.per_cpu_s, 1),
            "per_wall_s": round(self.completed / self.wall_s, 1) if self.wall_s else 0.0,
            "errors": dict(self.errors),
        }


class _Client:
    __slots__ = ("nonce", "request", "sent_at", "sock", "started_at", "state", "tries")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.started_at = time.monotonic()
        self.state = ALLOCATE_PLAIN
        self.nonce = b""
        self.request: Message | None = None
        self.sent_at = 0.0
        self.tries = 0


class AllocationDriver:
    """Creates allocations on one server and keeps them until ``close()``."""

    def __init__(
        self,
        server: tuple[str, int],
        user: str,
        password: str,
        peer: tuple[str, int],
        first_index: int = 0,
        *,
        create_permission: bool = False,
        window: int = WINDOW,
        rto: float = RTO,
    ) -> None:
        self.server = server
        self.user = user
        self.password = password
        self.peer = peer
        self.next_index = first_index
        self.create_permission = create_permission
        self.window = window
        self.rto = rto  # retransmission timeout; long under valgrind, where answers are slow
        self.sockets: list[socket.socket] = []
        self._keys: dict[str, bytes] = {}

    def _key(self, realm: str) -> bytes:
        if realm not in self._keys:
            self._keys[realm] = long_term_key(self.user, realm, self.password)
        return self._keys[realm]

    def _open(self) -> socket.socket:
        while True:
            address = source_address(self.next_index)
            self.next_index += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                if self.next_index > 250 * 250 * PORTS_PER_IP:
                    raise
                continue
            sock.setblocking(False)
            self.sockets.append(sock)
            return sock

    def _send(self, client: _Client, message: Message, key: bytes | None) -> None:
        client.request = message
        client.tries = 1
        client.sent_at = time.monotonic()
        message.raw = message.encode(key)  # the wire bytes, kept for retransmissions
        client.sock.sendto(message.raw, self.server)

    def _authenticated(self, method: int, client: _Client, realm: str) -> Message:
        message = Message(method, Class.REQUEST)
        message.attributes["USERNAME"] = self.user
        message.attributes["REALM"] = realm
        message.attributes["NONCE"] = client.nonce
        return message

    def _step(self, client: _Client, answer: Message, realm: list[str]) -> str | None:
        """Advance ``client`` on ``answer``; returns an error name when it failed."""
        attrs = answer.attributes
        code = attrs.get("ERROR-CODE", (0,))[0] if answer.msg_class == Class.ERROR else 0
        if code in (401, 438) and "NONCE" in attrs and client.state <= ALLOCATE_AUTH:
            if code == 401 and client.state == ALLOCATE_AUTH:
                return "401 with credentials"
            client.nonce = attrs["NONCE"]
            realm[0] = attrs.get("REALM", realm[0])
            client.state = ALLOCATE_AUTH
        elif code:
            return f"{answer.method:#x} error {code}"
        elif client.state == ALLOCATE_AUTH:
            client.state = CREATE_PERMISSION if self.create_permission else CHANNEL_BIND
        elif client.state == CREATE_PERMISSION:
            client.state = CHANNEL_BIND
        elif client.state == CHANNEL_BIND:
            client.state = DONE
            return None
        else:
            return "unexpected success"
        key = self._key(realm[0])
        if client.state == ALLOCATE_AUTH:
            message = self._authenticated(Method.ALLOCATE, client, realm[0])
            message.attributes["REQUESTED-TRANSPORT"] = UDP
        elif client.state == CREATE_PERMISSION:
            message = self._authenticated(Method.CREATE_PERMISSION, client, realm[0])
            message.attributes["XOR-PEER-ADDRESS"] = [self.peer]
        else:
            message = self._authenticated(Method.CHANNEL_BIND, client, realm[0])
            message.attributes["CHANNEL-NUMBER"] = CHANNEL_MIN
            message.attributes["XOR-PEER-ADDRESS"] = [self.peer]
        self._send(client, message, key)
        return None

    def drive(self, count: int, timeout: float = 120.0) -> DriveResult:
        """Create ``count`` more allocations (bounded by ``timeout``)."""
        result = DriveResult(count)
        started = time.monotonic()
        deadline = started + timeout
        realm = [""]
        active: dict[int, _Client] = {}
        to_start = count
        with selectors.EpollSelector() as sel:
            while (to_start or active) and time.monotonic() < deadline:
                while to_start and len(active) < self.window:
                    to_start -= 1
                    client = _Client(self._open())
                    active[client.sock.fileno()] = client
                    sel.register(client.sock, selectors.EVENT_READ, client)
                    plain = Message(Method.ALLOCATE, Class.REQUEST)
                    plain.attributes["REQUESTED-TRANSPORT"] = UDP
                    self._send(client, plain, None)
                for key, _ in sel.select(timeout=0.05):
                    client = key.data
                    error = self._receive(client, realm)
                    if error is None and client.state != DONE:
                        continue
                    sel.unregister(client.sock)
                    del active[client.sock.fileno()]
                    if error is None:
                        result.completed += 1
                        result.durations.append(time.monotonic() - client.started_at)
                    else:
                        result.failed += 1
                        result.errors[error] += 1
                now = time.monotonic()
                for fd, client in list(active.items()):
                    if now - client.sent_at < self.rto or client.request is None:
                        continue
                    if client.tries >= TRIES:
                        sel.unregister(client.sock)
                        del active[fd]
                        result.failed += 1
                        result.errors["timeout"] += 1
                        continue
                    client.tries += 1
                    client.sent_at = now
                    client.sock.sendto(client.request.raw, self.server)
        result.failed += to_start + len(active)
        if to_start or active:
            result.errors["driver deadline"] += to_start + len(active)
        result.wall_s = time.monotonic() - started
        return result

    def _receive(self, client: _Client, realm: list[str]) -> str | None:
        while True:
            try:
                data = client.sock.recv(4096)
            except BlockingIOError:
                return None
            try:
                answer = parse_message(data)
            except ValueError:
                continue
            request = client.request
            if request is None or answer.transaction_id != request.transaction_id:
                continue  # a late answer to a retransmission
            error = self._step(client, answer, realm)
            if error is not None or client.state == DONE:
                return error

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
