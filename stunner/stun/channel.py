"""ChannelData framing (RFC 8656 12.4): a 4-byte header, padded to 4 bytes on streams only."""

from __future__ import annotations

import struct

CHANNEL_MIN = 0x4000
# RFC 8656 narrowed channels to 0x4000-0x4FFF; RFC 5766 clients (coturn's turnutils, older
# libraries) still use up to 0x7FFF, which pion accepts too. The ChannelData bit test covers both.
CHANNEL_MAX = 0x7FFF
CHANNEL_HEADER = struct.Struct("!HH")
_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


def is_channel_data(data: bytes) -> bool:
    """The first two bits 01 mark ChannelData; STUN messages start with 00."""
    return len(data) >= 4 and (data[0] & 0xC0) == 0x40


def pack_channel_data(channel: int, payload: bytes, stream: bool = False) -> bytes:
    frame = CHANNEL_HEADER.pack(channel, len(payload)) + payload
    return frame + _PADS[len(payload) % 4] if stream else frame


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """Return (channel, payload); trailing bytes past the length (UDP padding) are ignored."""
    if len(data) < 4:
        raise ValueError("ChannelData is shorter than its 4-byte header")
    channel, length = CHANNEL_HEADER.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise ValueError(f"ChannelData channel number 0x{channel:04x} is out of range")
    if len(data) < 4 + length:
        raise ValueError("ChannelData is shorter than its length field")
    return channel, data[4 : 4 + length]


def stream_frame_length(data: bytes | bytearray, offset: int = 0) -> int:
    """Length of the whole frame, padding included, that the 4 bytes at ``offset`` announce.

    Returns 0 for a prefix that starts neither STUN nor ChannelData.
    """
    first = data[offset] & 0xC0
    length: int = CHANNEL_HEADER.unpack_from(data, offset)[1]
    if first == 0x00:
        return 20 + length
    if first == 0x40:
        return 4 + length + (-length % 4)
    return 0
