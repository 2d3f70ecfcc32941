"""Many UDP datagrams per system call: recvmmsg(2) and sendmmsg(2) through ctypes.

Why: on the relay paths a datagram costs one system call in and one out, and with
``socket.recvfrom_into`` each call also releases the GIL, parses its arguments and formats the
source address with ``inet_ntop``. Reading a whole wake-up's datagrams with one ``recvmmsg``,
and sending each run of datagrams to one destination with one ``sendmmsg``, removes most of
that per datagram (docs/performance.md has the before and after). Where libc has no
``recvmmsg`` (not Linux), the same interface falls back to one ``recvfrom_into``/``sendto``
per datagram.

A run of equal-size datagrams to one destination leaves with one ``sendmsg`` carrying a
UDP_SEGMENT control message (generic segmentation offload, Linux 4.18+): the kernel walks its
send path (and, on loopback, the receive side) once for the run instead of once per datagram,
and the destination still receives them as separate datagrams. A kernel that refuses it
switches it off for the process; see ``_send_gso``.

Every datagram of a batch has its own 64 KiB slot in one anonymous mapping, so nothing is ever
truncated; pages are only touched as far as datagrams reach, so the resident cost is a few
pages per slot in use. The batch is shared by every socket of the process: the event loop runs
one reader at a time, each reader finishes with the slots before it returns, and what must
outlive it is copied out with ``bytes()``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
from array import array as _array
from collections.abc import Callable
from typing import cast

from .stun import Address

BATCH = 64  # datagrams per wake-up, so that one busy socket cannot starve the others
SLOT = 65536  # bytes per datagram slot: any UDP payload fits after the headroom
HEADROOM = 4  # room in front of each payload for a ChannelData header, written in place
OFFSETS = tuple(range(HEADROOM, BATCH * SLOT, SLOT))
"""Where datagram i of a batch starts in ``view``: the drains zip these with the sizes."""

# struct mmsghdr on LP64 Linux: struct msghdr (56 bytes) then unsigned int msg_len, padded.
_MMSGHDR = 64
_MSGHDR = 56
_CMSG_LEN_U16 = 18  # CMSG_LEN(2): struct cmsghdr (16 bytes) and a u16
_CMSG_SPACE_U16 = 24  # CMSG_SPACE(2): the same, padded to 8
_SOCKADDR_IN = 16
_IOVEC = 16
_ADDRESS_CACHE_MAX = 4096  # entries per cache: active flows hit, churned ports do not pile up

_INET_NTOA = socket.inet_ntoa
_DONTWAIT = int(socket.MSG_DONTWAIT)
_PACK_SOCKADDR = struct.Struct("=H2s4s8x").pack


def _libc_function(name: str, use_errno: bool) -> Callable[..., int] | None:
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return None  # the header layout below is the LP64 one
    try:
        # PyDLL: the call keeps the GIL. Both calls pass MSG_DONTWAIT, so they never block,
        # and releasing and taking the GIL back cost more than the call's own user-space
        # work. errno is saved only where the caller reads it (sendmmsg).
        function = getattr(ctypes.PyDLL(None, use_errno=use_errno), name)
    except (AttributeError, OSError):
        return None
    # No argtypes: converting each argument through its type's from_param cost more than the
    # system call's own user-space work (callgrind). Callers pass Python ints only for the
    # int arguments (fd, count, flags) and every pointer as a prebuilt c_void_p, which ctypes
    # passes as it is: nothing is truncated to a C int.
    function.restype = ctypes.c_int
    return cast(Callable[..., int], function)


def _unavailable(*_args: object) -> int:
    raise OSError(errno.ENOSYS, "no recvmmsg/sendmmsg here")


_recvmmsg = _libc_function("recvmmsg", use_errno=False)
_sendmmsg = _libc_function("sendmmsg", use_errno=True)
_sendmsg = _libc_function("sendmsg", use_errno=True)
NATIVE = _recvmmsg is not None and _sendmmsg is not None

# UDP generic segmentation offload (linux/udp.h; Python 3.11's socket module has no constant).
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_SEGMENTS = 64  # segments per send: the kernel's UDP_MAX_SEGMENTS on every version
GSO_BYTES = 65507  # the largest UDP payload over IPv4: the whole run is one IP packet first


def _kernel_segments() -> bool:
    """Whether this kernel knows UDP_SEGMENT (Linux 4.18 on). Asked once, up front, because a
    kernel from before it does not refuse the control message: it ignores it and sends the
    whole run as one datagram."""
    if _sendmsg is None:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


GSO_ENV = "STUNNER_UDP_GSO"
"""Set to 0 to keep GSO off (docs/stunnerd.md): a packet capture on lo, or on a NIC that
segments UDP itself, sees one large packet per segmented send, not the datagrams."""
GSO = _kernel_segments() and os.environ.get(GSO_ENV, "1") != "0"
"""Whether runs may leave as one segmented sendmsg. Switched off for the process when the
kernel refuses UDP_SEGMENT where a plain send of the same run works (tests flip it too)."""
gso_largest = GSO_BYTES
"""The largest segment GSO is tried with: lowered when a route refuses a size that GSO sent
before (a segment larger than the route's MTU: EINVAL)."""
_gso_proven = False  # a segmented send has been accepted in this process
# A GSO refusal that says "not this way" rather than "not now": the run goes the plain way.
_GSO_REFUSALS = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})
_GONE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBADF)  # what is left of the run is dropped


def _address_of(buffer: bytearray | mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def sockaddr(addr: Address) -> ctypes.Array[ctypes.c_char]:
    """A struct sockaddr_in for ``addr``."""
    raw = _PACK_SOCKADDR(socket.AF_INET, addr[1].to_bytes(2, "big"), socket.inet_aton(addr[0]))
    return ctypes.create_string_buffer(raw, _SOCKADDR_IN)


class _Headers:
    """An array of struct mmsghdr with one iovec each, and item views to fill them."""

    def __init__(self) -> None:
        self.headers = bytearray(BATCH * _MMSGHDR)
        self.iovecs = bytearray(BATCH * _IOVEC)
        self.address = _address_of(self.headers)
        self.pointer = ctypes.c_void_p(self.address)  # passed to libc as it is, no conversion
        # The same for the header of each datagram i (a read or send that starts there).
        self.pointers = tuple(ctypes.c_void_p(self.address + _MMSGHDR * i) for i in range(BATCH))
        self.words = memoryview(self.headers).cast("Q")  # 8 per header
        self.ints = memoryview(self.headers).cast("I")  # 16 per header
        self.iov_words = memoryview(self.iovecs).cast("Q")  # base, length
        iov_base = _address_of(self.iovecs)
        for i in range(BATCH):
            self.words[8 * i + 2] = iov_base + _IOVEC * i  # msg_iov
            self.words[8 * i + 3] = 1  # msg_iovlen
            self.ints[16 * i + 2] = _SOCKADDR_IN  # msg_namelen (recvmmsg leaves it at 16)

    def send(self, sendmmsg: Callable[..., int], fd: int, total: int, first: int = 0) -> list[int]:
        """Send datagrams ``first`` to ``total`` - 1 the headers describe, in order: the indices
        of those that did not leave (none, mostly). A datagram the kernel refuses (EMSGSIZE,
        say) is skipped and the rest still go; a full send buffer (EAGAIN) or a closed socket
        (EBADF) drops what is left."""
        unsent: list[int] = []
        while first < total:
            done = sendmmsg(fd, self.pointers[first], total - first, _DONTWAIT)
            if done < 0:
                if ctypes.get_errno() in _GONE:
                    unsent += range(first, total)
                    break
                unsent.append(first)  # this one was refused: skip it, send the rest
                first += 1
                continue
            first += done
        return unsent


class DatagramBatch:
    """Up to BATCH datagrams read with one call; datagram i sits at ``SLOT * i + HEADROOM`` in
    ``view``, with HEADROOM free bytes in front of it."""

    def __init__(self, native: bool = NATIVE) -> None:
        self.native = native and NATIVE
        self._recvmmsg = _recvmmsg or _unavailable
        self._sendmmsg = _sendmmsg or _unavailable
        self.memory = mmap.mmap(-1, BATCH * SLOT)
        self.view = memoryview(self.memory)
        self.base = _address_of(self.memory)
        self._names = bytearray(BATCH * _SOCKADDR_IN)
        self._names_view = memoryview(self._names)
        # The first 8 bytes of each struct sockaddr_in (family, port, IPv4 address) as one
        # integer: a whole batch's source keys come out of one ``tolist()``.
        self._name_keys = self._names_view.cast("Q")
        self._receive = _Headers()
        self._send = _Headers()
        names = _address_of(self._names)
        for i in range(BATCH):
            self._receive.words[8 * i] = names + _SOCKADDR_IN * i  # msg_name
            self._receive.iov_words[2 * i] = self.base + SLOT * i + HEADROOM
            self._receive.iov_words[2 * i + 1] = SLOT - HEADROOM
        # Datagram views for the portable path, one per slot.
        self._slots = [self.view[SLOT * i + HEADROOM : SLOT * (i + 1)] for i in range(BATCH)]
        # Source addresses seen lately, the first 8 bytes of the raw sockaddr as an integer
        # -> (host, port): a hit costs no inet_ntop, and returns the same tuple object each
        # time (an allocation table keyed by it matches on identity). Cleared when full.
        self._addresses: dict[int, Address] = {}
        # Destinations the other way: (host, port) -> address of its struct sockaddr_in, for
        # sendmmsg; the buffers themselves are held in the list.
        self._sockaddrs: dict[Address, int] = {}
        self._sockaddr_buffers: list[ctypes.Array[ctypes.c_char]] = []
        self._sendmsg = _sendmsg or _unavailable
        # One struct msghdr for a segmented send (``_send_gso``): its iovecs are the send
        # headers' own (consecutive), its control a cmsghdr with UDP_SEGMENT's u16 segment size.
        self._gso_control = bytearray(_CMSG_SPACE_U16)
        control = memoryview(self._gso_control)
        control.cast("Q")[0] = _CMSG_LEN_U16  # cmsg_len
        control.cast("i")[2:4] = _array("i", (SOL_UDP, UDP_SEGMENT))  # cmsg_level, cmsg_type
        self._gso_size = control[16:18].cast("H")  # the data: gso_size
        self._gso_header = bytearray(_MSGHDR)
        self._gso_words = memoryview(self._gso_header).cast("Q")  # 7 words
        self._gso_words[1] = _SOCKADDR_IN  # msg_namelen (the int; its padding stays 0)
        self._gso_words[4] = _address_of(self._gso_control)  # msg_control
        self._gso_words[5] = _CMSG_SPACE_U16  # msg_controllen
        self._gso_pointer = ctypes.c_void_p(_address_of(self._gso_header))
        self._iov_base = _address_of(self._send.iovecs)

    def receive(self, sock: socket.socket) -> tuple[list[int], list[Address]]:
        """Read what is queued, up to BATCH datagrams: their sizes and sources (none: empty).

        A socket error (other than EAGAIN) ends the batch early: the read has cleared it, and
        the next wake-up goes on reading.
        """
        if not self.native:
            return self._receive_portable(sock)
        headers = self._receive
        count = self._recvmmsg(sock.fileno(), headers.pointer, BATCH, _DONTWAIT, None)
        if count == 1:  # a socket that carries one allocation's smooth traffic, mostly
            key = self._name_keys[0]
            return [headers.ints[14]], [self._addresses.get(key) or self._new_address(key)]
        if count <= 0:
            return [], []
        return self._received(0, count)

    def receive_into(self, sock: socket.socket, first: int) -> tuple[list[int], list[Address]]:
        """``receive`` into slots ``first`` to BATCH - 1 (``Gather`` keeps the slots before
        it): the k-th datagram lands in slot ``first + k``. recvmmsg only (``native``)."""
        where = self._receive.pointers[first]
        count = self._recvmmsg(sock.fileno(), where, BATCH - first, _DONTWAIT, None)
        if count == 1:
            key = self._name_keys[2 * first]
            size = self._receive.ints[16 * first + 14]
            return [size], [self._addresses.get(key) or self._new_address(key)]
        if count <= 0:
            return [], []
        return self._received(first, count)

    def _received(self, first: int, count: int) -> tuple[list[int], list[Address]]:
        """The sizes and sources of ``count`` datagrams read into slots from ``first`` on."""
        end = first + count
        sizes: list[int] = self._receive.ints[16 * first + 14 : 16 * end : 16].tolist()
        keys: list[int] = self._name_keys[2 * first : 2 * end : 2].tolist()
        cache = self._addresses
        addresses: list[Address] = []
        append = addresses.append
        for key in keys:
            addr = cache.get(key)
            if addr is None:
                addr = self._new_address(key)
            append(addr)
        return sizes, addresses

    def _new_address(self, key: int) -> Address:
        """A source not in the cache: (host, port) from the key's sockaddr_in bytes."""
        cache = self._addresses
        if len(cache) >= _ADDRESS_CACHE_MAX:
            cache.clear()
        raw = key.to_bytes(8, "little")
        addr = cache[key] = (_INET_NTOA(raw[4:8]), raw[2] << 8 | raw[3])
        return addr

    def _receive_portable(self, sock: socket.socket) -> tuple[list[int], list[Address]]:
        sizes: list[int] = []
        addresses: list[Address] = []
        recvfrom_into = sock.recvfrom_into
        for slot in self._slots:
            try:
                size, addr = recvfrom_into(slot)
            except OSError:
                break
            sizes.append(size)
            addresses.append(addr)
        return sizes, addresses

    def send(
        self,
        sock: socket.socket | None,
        addr: Address | None,
        starts: list[int],
        lengths: list[int],
    ) -> tuple[int, int]:
        """Send ``lengths[k]`` bytes from ``starts[k]`` in ``view`` to ``addr``, in order, with
        one sendmmsg, and empty both lists: (packets, bytes) sent.

        A datagram the kernel refuses (EMSGSIZE, say) is skipped and the rest still go; a
        full send buffer (EAGAIN) drops what is left, as the network would.
        """
        if not starts or sock is None or addr is None:
            return 0, 0
        if len(starts) == 1:
            # One datagram (smooth traffic from many clients): a plain sendto costs less.
            start, length = starts.pop(), lengths.pop()
            try:
                # A copy out of the mapping: for one datagram a bytes object costs less
                # than a memoryview slice.
                sock.sendto(self.memory[start : start + length], addr)
            except OSError:
                return 0, 0
            return 1, length
        try:
            if not self.native:
                return self._send_portable(sock, addr, starts, lengths)
            return self._send_native(sock, addr, starts, lengths)
        finally:
            starts.clear()
            lengths.clear()

    def _send_native(
        self, sock: socket.socket, addr: Address, starts: list[int], lengths: list[int]
    ) -> tuple[int, int]:
        # Per run, not per datagram: the iovecs are filled by strided slice assignments from
        # arrays; a run of equal sizes (the last may be shorter) leaves segmented, without
        # the mmsghdr names; otherwise they are filled with the run's one destination too.
        total = len(starts)
        headers = self._send
        name_address = self._sockaddrs.get(addr) or self._new_sockaddr(addr)
        base = self.base
        iov_words = headers.iov_words
        iov_words[0 : 2 * total : 2] = _array("Q", [base + start for start in starts])
        iov_words[1 : 2 * total : 2] = _array("Q", lengths)
        size, last = lengths[0], lengths[-1]
        if (
            GSO
            and 0 < last <= size <= gso_largest
            and lengths.count(size) == total - (last != size)
        ):
            return self._send_gso(sock.fileno(), name_address, total, size, last)
        return self._send_plain(sock.fileno(), name_address, total, lengths, 0)

    def _send_plain(
        self, fd: int, name_address: int, total: int, lengths: list[int], first: int
    ) -> tuple[int, int]:
        """sendmmsg for datagrams ``first`` to ``total`` - 1 of the run in the send headers,
        all to ``name_address``: (packets, bytes) sent."""
        headers = self._send
        headers.words[0 : 8 * total : 8] = _array("Q", (name_address,)) * total
        unsent = headers.send(self._sendmmsg, fd, total, first)
        sent_bytes = sum(lengths[first:]) if first else sum(lengths)
        if not unsent:
            return total - first, sent_bytes
        return total - first - len(unsent), sent_bytes - sum(lengths[i] for i in unsent)

    def _send_gso(
        self, fd: int, name_address: int, total: int, size: int, last: int
    ) -> tuple[int, int]:
        """The run in the send headers (``total`` datagrams of ``size`` bytes, the last of
        ``last``) to ``name_address`` as segmented sends of up to GSO_SEGMENTS datagrams and
        GSO_BYTES bytes each: (packets, bytes) sent.

        Each send is accepted whole or refused whole, and counted so: a full send buffer
        (EAGAIN) or a closed socket (EBADF) drops what is left, another refusal drops that
        send's datagrams and the rest still go. A refusal of the segmentation itself (EINVAL,
        EIO, ENOPROTOOPT, EOPNOTSUPP: no UDP_SEGMENT here, a segment larger than the route's
        MTU, IPsec) sends the rest of the run the plain way, nothing lost or counted twice;
        when the plain way then works, GSO is switched off for the process (it never worked
        here) or its segment size bounded (it did: the route is the limit).
        """
        # Hot path: work per send (up to 64 datagrams), none per datagram; no allocation,
        # locking or logging (the list below is the fallback's, once per refused run).
        global GSO, gso_largest, _gso_proven
        words, sendmsg, pointer = self._gso_words, self._sendmsg, self._gso_pointer
        words[0] = name_address  # msg_name
        self._gso_size[0] = size
        per = min(GSO_SEGMENTS, GSO_BYTES // size)
        iov = self._iov_base
        packets = sent_bytes = 0
        first = 0
        while first < total:
            count = min(per, total - first)
            words[2] = iov + _IOVEC * first  # msg_iov
            words[3] = count  # msg_iovlen
            if sendmsg(fd, pointer, _DONTWAIT) >= 0:
                _gso_proven = True
                packets += count
                sent_bytes += count * size if first + count < total else (count - 1) * size + last
                first += count
                continue
            error = ctypes.get_errno()
            if error in _GSO_REFUSALS:
                lengths = [size] * (total - 1) + [last]  # the run's lengths (not the hot path)
                plain = self._send_plain(fd, name_address, total, lengths, first)
                if plain[0]:  # the plain way works: the segmentation was what was refused
                    if _gso_proven:
                        gso_largest = min(gso_largest, size - 1)
                    else:
                        GSO = False
                return packets + plain[0], sent_bytes + plain[1]
            if error in _GONE:
                break
            first += count  # this send refused whole (unreachable, say): the rest still go
        return packets, sent_bytes

    def _new_sockaddr(self, addr: Address) -> int:
        """A destination not in the cache: the address of a new struct sockaddr_in for it."""
        if len(self._sockaddrs) >= _ADDRESS_CACHE_MAX:
            self._sockaddrs.clear()
            self._sockaddr_buffers.clear()
        name = sockaddr(addr)
        self._sockaddr_buffers.append(name)  # keeps the memory behind the address alive
        address = self._sockaddrs[addr] = ctypes.addressof(name)
        return address

    def _send_portable(
        self, sock: socket.socket, addr: Address, starts: list[int], lengths: list[int]
    ) -> tuple[int, int]:
        packets = sent_bytes = 0
        view, sendto = self.view, sock.sendto
        for start, length in zip(starts, lengths, strict=True):
            try:
                sendto(view[start : start + length], addr)
            except BlockingIOError:
                break
            except OSError:
                continue
            packets += 1
            sent_bytes += length
        return packets, sent_bytes


class Gather:
    """Datagrams from many sockets' wake-ups, each to its own destination, that leave one
    socket together: one sendmmsg for the lot (``send``).

    Why: a UDP listener socket carries the peer-to-client traffic of every allocation, while
    each relay socket's wake-up may bring only a datagram or two (many allocations). Sending
    those one sendto per wake-up pays a system call's fixed cost per datagram.

    A relay socket reads straight into the free slots (``receive``, from slot ``used`` on);
    the caller writes the ChannelData header in front of each payload (at ``SLOT * i``), its
    length and destination into ``lengths`` and ``names``, and advances ``used`` and
    ``bytes``; nothing is copied. The slots stay taken until ``send``, so at most BATCH
    datagrams wait (the caller sends when ``used`` reaches BATCH). Needs recvmmsg/sendmmsg
    (``NATIVE``): without them there is nothing to gather into.
    """

    def __init__(self) -> None:
        if not NATIVE:
            raise OSError(errno.ENOSYS, "no recvmmsg/sendmmsg here: nothing to gather")
        self.batch = DatagramBatch()
        self.memory = self.batch.memory
        self.used = 0  # slots holding datagrams that wait for ``send``: slot i is entry i
        self.bytes = 0  # their bytes, headers included (the caller adds them as it enters)
        headers = self._headers = _Headers()
        self._sendmmsg = _sendmmsg or _unavailable
        # Entry i leaves from slot i, header included: only its length and destination vary.
        for i in range(BATCH):
            headers.iov_words[2 * i] = self.batch.base + SLOT * i + HEADROOM - 4
        self.names = headers.words  # msg_name of entry i at [8 * i]
        self.lengths = headers.iov_words  # iov_len of entry i at [2 * i + 1]
        # The struct sockaddr_in buffers the waiting entries point to, held until ``send``
        # (their owners may go meanwhile: a relay socket closed with its datagrams waiting).
        self.keep: list[object] = []
        # Read into the free slots: ``receive(sock, used)`` puts the k-th datagram into slot
        # ``used + k`` (DatagramBatch.receive_into); the caller enters them or lets them go.
        self.receive = self.batch.receive_into

    def send(self, sock: socket.socket) -> tuple[int, int, int, int]:
        """Send the entries, in order, with one sendmmsg, and free every slot: (entries, their
        bytes, packets sent, bytes sent). Like ``DatagramBatch.send``: a datagram the kernel
        refuses is skipped and the rest still go; a full send buffer (EAGAIN) or a closed
        socket (EBADF) drops what is left."""
        total, total_bytes, self.used, self.bytes = self.used, self.bytes, 0, 0
        unsent = self._headers.send(self._sendmmsg, sock.fileno(), total)
        self.keep.clear()  # after the calls: the kernel read the addresses during them
        if not unsent:
            return total, total_bytes, total, total_bytes
        lost = sum(self.lengths[2 * i + 1] for i in unsent)
        return total, total_bytes, total - len(unsent), total_bytes - lost


_shared: DatagramBatch | None = None


def shared_batch() -> DatagramBatch:
    """The process's batch, made on first use (a forked worker makes its own)."""
    global _shared
    if _shared is None:
        _shared = DatagramBatch()
    return _shared
