"""TCP/TLS reframing: the zero-copy fast path cuts exactly the frames a byte-wise reader would."""

from __future__ import annotations

import random

from stunner.auth import PlaintextAuth
from stunner.listener import StreamConnectionProtocol
from stunner.stats import ListenerStats
from stunner.stun import Class, Message, Method, pack_channel_data
from stunner.turn import TurnServer


class _Transport:
    closed = False

    def get_extra_info(self, name: str) -> object:
        return ("192.0.2.1", 5000) if name == "peername" else None

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        pass


def frames_of(chunks: list[bytes]) -> tuple[list[bytes], ListenerStats]:
    server = TurnServer(
        "l",
        ListenerStats(),
        PlaintextAuth("r", "u", "p"),
        lambda ip: True,
        "127.0.0.1",
        40000,
        40001,
    )
    proto = StreamConnectionProtocol(server)
    seen: list[bytes] = []
    proto.connection_made(_Transport())  # type: ignore[arg-type]
    proto.frame_received = seen.append
    for chunk in chunks:
        proto.data_received(chunk)
    return seen, server.stats


async def test_chunking_never_changes_the_frames() -> None:
    rng = random.Random(7)
    frames = []
    for i in range(200):
        if i % 3:
            frames.append(
                pack_channel_data(
                    0x4000 + i % 16, rng.randbytes(rng.randrange(0, 300)), stream=True
                )
            )
        else:
            msg = Message(Method.BINDING, Class.REQUEST)
            msg.attributes["SOFTWARE"] = "x" * rng.randrange(0, 40)
            frames.append(msg.encode())
    stream = b"".join(frames)
    whole, _ = frames_of([stream])
    assert whole == frames
    bytewise, _ = frames_of([stream[i : i + 1] for i in range(len(stream))])
    assert bytewise == frames
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 50))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert frames_of(pieces)[0] == frames


async def test_garbage_closes_and_counts_what_arrived() -> None:
    seen, stats = frames_of([b"\x80\x00\x00\x10" + b"z" * 60])
    assert seen == []
    assert (stats.rx_packets, stats.rx_bytes) == (1, 64)


async def test_oversized_frame_closes_the_connection() -> None:
    seen, stats = frames_of([pack_channel_data(0x4000, b"a" * 9000, stream=True)[:100]])
    assert seen == [] and stats.rx_packets == 1
