"""The TURN server of one listener: STUN dispatch, the request handlers, the allocation table.

Handlers read like RFC 8656: one ``handle_<method>`` each, numbered comments for its steps. A
handler returns the response ``Message`` (or None); only ``_respond`` encodes and sends, so
integrity, fingerprint and the amplification guard live in one place. Credentials are checked
by ``stunner.turn.auth``; relaying and counting are ``stunner.turn.datapath``'s; allocation
lifecycle events go to an injected observer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Hashable

from .. import constants
from ..auth import Authenticator
from ..config import LimitsConfig
from ..stats import Drop, ListenerStats, response_slot
from ..stun import CHANNEL_MAX, CHANNEL_MIN, Address, Class, Message, Method, parse_message
from ..udp import DatagramSocket
from .allocation import Allocation
from .answers import TurnError, error_response, success_response
from .auth import Denied, RequestAuth
from .clients import Client
from .datapath import AllocationCounter, answer, drop, forward_send, relay_drain
from .events import AllocationObserver, DeleteReason
from .limits import AmplificationGuard, Quotas
from .own import OwnListeners
from .refusals import RefusalLog
from .relay import RelayPortAllocator

logger = logging.getLogger("stunner.turn")

# Enum members as module globals: reading ``Class.REQUEST`` goes through the enum's metaclass
# (some 100 ns), a global does not; each request reads several.
REQUEST, INDICATION, ERROR = Class.REQUEST, Class.INDICATION, Class.ERROR
BINDING, ALLOCATE, SEND = Method.BINDING, Method.ALLOCATE, Method.SEND

UDP_PROTOCOL = 17
FAMILY_IPV4 = 0x01
SWEEP_INTERVAL = 1.0
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)

__all__ = ["TurnError", "TurnServer", "advertised_host", "error_response", "success_response"]


def advertised_host(bind_host: str) -> str:
    """The relay address to tell clients: the bound one, or this host's address if wildcard."""
    if bind_host not in ("0.0.0.0", ""):
        return bind_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class TurnServer:
    """TURN for one listener. Policy (auth, peer admission) is injected and swappable live."""

    def __init__(
        self,
        name: str,
        stats: ListenerStats,
        authenticator: Authenticator,
        admits: Callable[[str], bool],
        relay_host: str,
        min_relay_port: int,
        max_relay_port: int,
        clock: Callable[[], float] = time.monotonic,
        limits: LimitsConfig | None = None,
        quotas: Quotas | None = None,
        observer: AllocationObserver | None = None,
        guard: AmplificationGuard | None = None,
        own_listeners: OwnListeners | None = None,
    ) -> None:
        self.name = name
        # Never a relay destination (shared and kept current by the daemon).
        self.own_listeners = own_listeners if own_listeners is not None else OwnListeners()
        self.limits = limits or LimitsConfig()
        self.quotas = quotas or Quotas(total=self.limits.allocations_total)
        self.guard = guard or AmplificationGuard(clock)  # the daemon shares one per process
        self.refusals = RefusalLog(name, clock)
        self._malformed_logged_at = 0.0
        self.stats = stats  # handed to the data path, which counts
        self.observer: AllocationObserver = observer or AllocationCounter(stats)
        self.auth = RequestAuth(authenticator)
        self.admits = admits
        self.ports = RelayPortAllocator(relay_host, min_relay_port, max_relay_port)
        self.relay_advertised = advertised_host(relay_host)
        self.clock = clock
        self.allocations: dict[Hashable, Allocation] = {}
        self.accepting = True
        self._sweeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"turn({self.name})"

    # lifecycle

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def close(self, reason: DeleteReason = DeleteReason.LISTENER_REMOVED) -> None:
        """Delete every allocation and stop the sweeper (listener removed or restarted, or
        stunnerd stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.refusals.deleted_all(len(self.allocations), reason)  # one line, not one each
        for alloc in list(self.allocations.values()):
            self.delete_allocation(alloc, reason, log=False)

    def set_relay_ports(self, host: str, min_port: int, max_port: int) -> None:
        self.ports = RelayPortAllocator(host, min_port, max_port)
        self.relay_advertised = advertised_host(host)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep(self.clock())

    def sweep(self, now: float) -> None:
        for alloc in list(self.allocations.values()):
            if alloc.expires_at <= now:
                self.delete_allocation(alloc, DeleteReason.EXPIRED)
            elif alloc.next_expiry <= now:  # most seconds, nothing of it expires
                alloc.expire(now)

    def revoke_unadmitted(self) -> int:
        """After a cluster change, drop permissions and channels of peers no longer admitted,
        and channels bound to what is now an own listener's address."""
        revoked = 0
        own = self.own_listeners
        for alloc in self.allocations.values():
            for ip in [ip for ip in alloc.permissions if not self.admits(ip)]:
                alloc.revoke(ip)
                revoked += 1
            for channel, peer in list(alloc.channels.items()):
                if not self.admits(peer[0]) or peer in own:
                    alloc.unbind_channel(channel)
        return revoked

    # allocation table

    def delete_allocation(self, alloc: Allocation, reason: DeleteReason, log: bool = True) -> None:
        if self.allocations.get(alloc.key) is not alloc:
            return
        del self.allocations[alloc.key]
        alloc.close()
        self.quotas.remove(alloc.username)
        self.observer.deleted(alloc, reason)
        if log:
            self.refusals.deleted(alloc.client.addr, repr(alloc), reason)

    def connection_closed(self, key: Hashable) -> None:
        """A TCP/TLS client went away: its allocation goes with it."""
        alloc = self.allocations.get(key)
        if alloc is not None:
            self.delete_allocation(alloc, DeleteReason.CONNECTION_CLOSED)

    # STUN entry point (control path)

    def handle_stun(self, data: bytes, client: Client) -> None:
        # Each message that enters is answered (a response counted by code), relayed (a Send
        # indication) or dropped with one reason: docs/metrics.md, "Accounting".
        if len(data) > self.limits.max_message_size:
            drop(self.stats, Drop.OVERSIZE, len(data))
            self._malformed(client, "larger than max_message_size")
            return
        try:
            message = parse_message(data)
        except ValueError as exc:
            drop(self.stats, Drop.MALFORMED, len(data))  # already counted as rx
            self._malformed(client, str(exc))
            return
        try:
            self._dispatch(message, client, len(data))
        except Exception:
            logger.exception("%s: error handling %r from %s", self.name, message, client.addr)
            if message.msg_class == REQUEST:
                self._respond(client, message, error_response(message, 500), None)

    def _dispatch(self, message: Message, client: Client, size: int) -> None:
        if message.msg_class == INDICATION and message.method == SEND:
            self.handle_send(message, client, size)
            return
        if message.msg_class != REQUEST:
            # Nothing a TURN server acts on (another indication, a response): dropped.
            drop(self.stats, Drop.MALFORMED, size)
            return
        if message.unknown_required:
            unknown = error_response(message, 420)
            unknown.attributes["UNKNOWN-ATTRIBUTES"] = list(message.unknown_required)
            self.refusals.unauthenticated_error(client.addr, message, 420)
            self._respond(client, message, unknown, None)
            return
        if message.method == BINDING:
            self._respond(client, message, self.handle_binding(message, client), None)
            return
        handler = self._handlers.get(message.method)
        if handler is None:
            self.refusals.unauthenticated_error(client.addr, message, 400)
            self._respond(client, message, error_response(message, 400, "Unknown Method"), None)
            return
        auth = self.auth.authenticate(message, self.limits.nonce_lifetime)
        if isinstance(auth, Denied):
            self._denied(client, message, auth)
            return
        username, key = auth
        response: Message | bytes | None
        try:
            response = handler(self, message, client, username)
        except TurnError as exc:
            response = error_response(message, exc.code, exc.reason)
            self.refusals.error(client.addr, message, username, exc)
        if isinstance(response, bytes):
            # A retransmitted Allocate: its first answer, a success.
            self.send_control(client, response, message.method, 0)
        elif response is not None:
            data = self._respond(client, message, response, key)
            if message.method == ALLOCATE:
                self._remember_answer(client, message, data)

    def _denied(self, client: Client, request: Message, denied: Denied) -> None:
        """Answer a request without valid credentials; log it if credentials failed."""
        if denied.failure:
            self.refusals.auth_failed(client.addr, request, denied.username, denied.failure)
        elif denied.answer.msg_class == ERROR:
            code = denied.answer.attributes["ERROR-CODE"][0]
            if code != 401:  # the first challenge is routine: not even noise
                self.refusals.unauthenticated_error(client.addr, request, code)
        self._respond(client, request, denied.answer, None)

    def _malformed(self, client: Client, reason: str) -> None:
        """Log at debug level, at most once a second: garbage must not flood the logs."""
        now = self.clock()
        if now - self._malformed_logged_at >= 1.0 and logger.isEnabledFor(logging.DEBUG):
            self._malformed_logged_at = now
            logger.debug(
                "%s: malformed message from %s:%d: %s",
                self.name,
                client.addr[0],
                client.addr[1],
                reason,
            )

    def _respond(
        self, client: Client, request: Message, response: Message, key: bytes | None
    ) -> bytes:
        code = response.attributes.get("ERROR-CODE", (0,))[0]
        # Answers to authenticated requests are signed, errors included (RFC 8489 9.2.4);
        # the challenges (401, 438) and pre-auth errors (400, 420) come with key=None.
        fingerprint = "FINGERPRINT" in request.attributes
        data = response.encode(key, fingerprint)
        if (
            key is None
            and not client.source_verified
            and self.limits.udp_amplification_guard
            and not self.guard.allow(client.addr[0], len(request.raw), len(data))
        ):
            drop(self.stats, Drop.AMPLIFICATION, len(request.raw))  # over a budget: not sent
            self.refusals.withheld(client.addr, request)
            return b""
        self.send_control(client, data, request.method, code)
        return data

    def send_control(self, client: Client, data: bytes, method: int, code: int) -> None:
        """Send an answer; count it by method and code (0: success) if it left."""
        if answer(client, data, self.stats):
            self.stats.responses[response_slot(method, code)] += 1

    # method handlers

    def handle_binding(self, request: Message, client: Client) -> Message:
        return success_response(request, XOR_MAPPED_ADDRESS=client.addr)

    def _lifetime(self, request: Message) -> int:
        """RFC 8656 7.2 step 7: the requested lifetime, clamped to [default, maximum]; the
        maximum is ``limits.max_allocation_lifetime``, and a cap below the default wins."""
        requested: int = request.attributes.get("LIFETIME", constants.DEFAULT_ALLOCATION_LIFETIME)
        cap = self.limits.max_allocation_lifetime
        return min(max(constants.DEFAULT_ALLOCATION_LIFETIME, requested), cap)

    def _check_allocate(self, request: Message, client: Client, username: str) -> bool:
        """RFC 8656 7.2 steps 2-6; True means 'resend the cached success'."""
        attrs = request.attributes
        existing = self.allocations.get(client.key)
        if existing is not None:
            # 2. The 5-tuple already has an allocation: a retransmission, or a mismatch.
            if existing.transaction_id == request.transaction_id:
                return True
            raise TurnError(437)
        if not self.accepting:
            raise TurnError(508, "Server Shutting Down")
        refusal = self.quotas.refusal(username)
        per_listener = self.limits.allocations_per_listener
        if refusal is None and per_listener and len(self.allocations) >= per_listener:
            refusal = 508
        if refusal is not None:
            raise TurnError(refusal)
        # 3. REQUESTED-TRANSPORT must be UDP.
        if "REQUESTED-TRANSPORT" not in attrs:
            raise TurnError(400, "Missing REQUESTED-TRANSPORT")
        if attrs["REQUESTED-TRANSPORT"] != UDP_PROTOCOL:
            raise TurnError(442)
        # 4-6. No reservations are kept, so a token can never match; only IPv4 relays.
        if "RESERVATION-TOKEN" in attrs:
            if "EVEN-PORT" in attrs:
                raise TurnError(400, "RESERVATION-TOKEN with EVEN-PORT")
            raise TurnError(508, "Unknown RESERVATION-TOKEN")
        family = attrs.get("REQUESTED-ADDRESS-FAMILY", FAMILY_IPV4)
        if "ADDITIONAL-ADDRESS-FAMILY" in attrs:
            if "REQUESTED-ADDRESS-FAMILY" in attrs:
                raise TurnError(400, "Both address family attributes")
            raise TurnError(440)
        if family != FAMILY_IPV4:
            raise TurnError(440)
        return False

    def _remember_answer(self, client: Client, request: Message, data: bytes) -> None:
        """Keep a new allocation's success answer for retransmissions (RFC 8656 7.2)."""
        alloc = self.allocations.get(client.key)
        if alloc is not None and alloc.transaction_id == request.transaction_id:
            alloc.response = data

    def handle_allocate(self, request: Message, client: Client, username: str) -> Message | bytes:
        if self._check_allocate(request, client, username):
            return self.allocations[client.key].response
        # 7. Bind a relay socket in the listener's port range.
        sock = self.ports.bind(even="EVEN-PORT" in request.attributes)
        if sock is None:
            raise TurnError(508)
        if "DONT-FRAGMENT" in request.attributes:
            # RFC 8656 7.2: relay with the DF bit set; Linux sets it per socket.
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        if client.closed:
            sock.close()
            raise TurnError(437, "Connection closed")
        alloc = Allocation(client, username)
        alloc.relay = DatagramSocket(sock, relay_drain(alloc, sock, self.stats))
        alloc.relay_addr = (self.relay_advertised, sock.getsockname()[1])
        alloc.transaction_id = request.transaction_id
        lifetime = self._lifetime(request)
        alloc.expires_at = self.clock() + lifetime
        self.allocations[client.key] = alloc
        self.quotas.add(username)
        self.observer.created(alloc)
        logger.info("%s: %r created for %s, lifetime %ds", self.name, alloc, username, lifetime)
        return success_response(
            request,
            XOR_RELAYED_ADDRESS=alloc.relay_addr,
            LIFETIME=lifetime,
            XOR_MAPPED_ADDRESS=client.addr,
        )

    def _allocation_for(self, client: Client, username: str) -> Allocation:
        alloc = self.allocations.get(client.key)
        if alloc is None:
            raise TurnError(437)
        if alloc.username != username:
            raise TurnError(441)
        return alloc

    def handle_refresh(self, request: Message, client: Client, username: str) -> Message:
        alloc = self._allocation_for(client, username)
        requested = request.attributes.get("LIFETIME", constants.DEFAULT_ALLOCATION_LIFETIME)
        if requested == 0:
            # RFC 8656 8.2: lifetime 0 deletes the allocation.
            self.delete_allocation(alloc, DeleteReason.REFRESH0)
            return success_response(request, LIFETIME=0)
        lifetime = self._lifetime(request)
        alloc.expires_at = self.clock() + lifetime
        return success_response(request, LIFETIME=lifetime)

    def _admitted_peer(self, peer: Address) -> None:
        if ":" in peer[0]:
            raise TurnError(443, detail=f"peer {peer[0]}")
        if not self.admits(peer[0]):
            detail = f"peer {peer[0]}:{peer[1]} is in no cluster this listener routes to"
            raise TurnError(403, detail=detail)

    def handle_create_permission(self, request: Message, client: Client, username: str) -> Message:
        alloc = self._allocation_for(client, username)
        peers = request.attributes.get("XOR-PEER-ADDRESS")
        if not peers:
            raise TurnError(400, "Missing XOR-PEER-ADDRESS")
        # RFC 8656 10.2: all peers are admitted, or none is installed.
        for peer in peers:
            self._admitted_peer(peer)
        limit = self.limits.permissions_per_allocation
        if limit and len(alloc.permissions.keys() | {p[0] for p in peers}) > limit:
            raise TurnError(508, "Too Many Permissions")
        expires = self.clock() + constants.PERMISSION_LIFETIME
        for peer in peers:
            alloc.permit(peer[0], expires)
        return success_response(request)

    def handle_channel_bind(self, request: Message, client: Client, username: str) -> Message:
        alloc = self._allocation_for(client, username)
        attrs = request.attributes
        channel = attrs.get("CHANNEL-NUMBER")
        peers = attrs.get("XOR-PEER-ADDRESS")
        if channel is None or not peers:
            raise TurnError(400, "Missing CHANNEL-NUMBER or XOR-PEER-ADDRESS")
        peer = peers[0]
        # RFC 8656 12.2: number in range, and one peer per channel, one channel per peer.
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise TurnError(400, "Channel number out of range")
        bound_peer = alloc.channels.get(channel)
        if bound_peer is not None and bound_peer != peer:
            raise TurnError(400, "Channel bound to another peer")
        bound_channel = alloc.peer_channels.get(peer)
        if bound_channel is not None and bound_channel != channel:
            raise TurnError(400, "Peer bound to another channel")
        self._admitted_peer(peer)
        if peer in self.own_listeners:
            raise TurnError(403, "Peer Is A Listener Of This Server")
        limit = self.limits.channels_per_allocation
        if bound_peer is None and limit and len(alloc.channels) >= limit:
            raise TurnError(508, "Too Many Channels")
        if (
            peer[0] not in alloc.permissions
            and self.limits.permissions_per_allocation
            and len(alloc.permissions) >= self.limits.permissions_per_allocation
        ):
            raise TurnError(508, "Too Many Permissions")
        now = self.clock()
        alloc.bind_channel(channel, peer, now + constants.CHANNEL_LIFETIME)
        alloc.permit(peer[0], now + constants.PERMISSION_LIFETIME)
        return success_response(request)

    def handle_send(self, indication: Message, client: Client, size: int) -> None:
        """RFC 8656 11.2: relay DATA to the peer if permitted, else drop silently."""
        attrs = indication.attributes
        if "DATA" not in attrs or "XOR-PEER-ADDRESS" not in attrs:
            drop(self.stats, Drop.MALFORMED, size)
            return
        alloc = self.allocations.get(client.key)
        peer = attrs["XOR-PEER-ADDRESS"][0]
        forward_send(alloc, peer, attrs["DATA"], size, self.stats, peer in self.own_listeners)

    _handlers: dict[int, Callable[..., Message | bytes | None]] = {
        Method.ALLOCATE: handle_allocate,
        Method.REFRESH: handle_refresh,
        Method.CREATE_PERMISSION: handle_create_permission,
        Method.CHANNEL_BIND: handle_channel_bind,
    }
