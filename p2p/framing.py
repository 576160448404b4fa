"""Length-prefixed frames: a sans-IO codec for the byte stream between two nodes.

Wire format: a frame is a 4-byte big-endian unsigned payload length ``n`` followed by exactly ``n``
payload bytes; frames follow each other with nothing in between. An empty payload (``n = 0``) is a
valid frame. The same shape as CometBFT's ``protoio`` length-delimited messages and libp2p's
length-prefixed streams, with a fixed-width prefix so that the limit can be checked as soon as four
bytes have arrived.

Sans-IO (model: python-hyper/h11 ``Connection.receive_data`` / ``next_event``): the decoder is fed
whatever bytes the socket returned and hands back whole payloads; it never reads a socket or a clock.
"""

from __future__ import annotations

from typing import Final

from p2p.exceptions import FrameTooLarge

HEADER_LEN: Final = 4
"""Length of the frame header (big-endian payload length), in bytes."""

MAX_FRAME_LIMIT: Final = (1 << 32) - 1
"""The largest payload length a 4-byte header can announce, in bytes."""

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
"""Default limit on one frame's payload: 16 MiB."""


def _check_limit(max_size: int) -> int:
    if type(max_size) is not int or not 0 <= max_size <= MAX_FRAME_LIMIT:
        raise ValueError(f"max_size must be an int in [0, {MAX_FRAME_LIMIT}], got {max_size!r}")
    return max_size


def encode_frame(payload: bytes, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the frame carrying ``payload``: ``len(payload).to_bytes(4, "big") + payload``.

    Args:
        payload: the bytes to send (``bytes``, ``bytearray`` or ``memoryview``).
        max_size: the largest payload accepted, in bytes (at most ``2**32 - 1``).

    Raises:
        ValueError: ``payload`` is longer than ``max_size``. This is a local fault (we tried to send
            it), so it is not ``FrameTooLarge``, which names a peer's fault.
    """
    _check_limit(max_size)
    size = len(payload)
    if size > max_size:
        raise ValueError(f"payload of {size} bytes is over the frame limit of {max_size} bytes")
    return size.to_bytes(HEADER_LEN, "big") + bytes(payload)


class FrameDecoder:
    """Split a byte stream into frame payloads, refusing oversize frames from the header alone.

    Use ``feed(data)`` to get every frame completed by ``data``, or ``receive_data(data)`` and then
    ``next_frame()`` until it returns ``None`` to take one frame at a time (the network does this so
    that the limit can be raised exactly at the frame where the handshake ends).

    Memory: at most one partial frame is buffered (``max_size + 4`` bytes) plus the bytes of the
    last ``receive_data`` call, as long as frames are taken out after each call.

    After ``FrameTooLarge`` the stream cannot be resynchronised: the decoder stays failed and every
    later call raises the same error.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        """Make a decoder accepting payloads of at most ``max_size`` bytes. Raises ``ValueError``."""
        self._max_size = _check_limit(max_size)
        self._buffer = bytearray()
        self._pos = 0  # start of the unread part of _buffer
        self._body_len: int | None = None  # length announced by the header being served, if read
        self._error: FrameTooLarge | None = None

    @property
    def max_size(self) -> int:
        """The largest payload accepted, in bytes.

        It may be changed between frames (the network uses a small limit during the handshake and the
        configured one afterwards); a header already accepted keeps its frame.
        """
        return self._max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        self._max_size = _check_limit(value)

    @property
    def buffered(self) -> int:
        """Number of bytes received but not yet returned as a frame (header bytes included)."""
        return len(self._buffer) - self._pos

    def _check_failed(self) -> None:
        if self._error is not None:
            raise FrameTooLarge(self._error.size, self._error.limit)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` (bytes received from the stream) to the buffer; ``next_frame`` checks it.

        Raises ``FrameTooLarge`` again if the decoder already failed.
        """
        self._check_failed()
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete payload, or ``None`` if more bytes are needed.

        Raises:
            FrameTooLarge: a complete header announces more than ``max_size`` bytes (with ``size``
                and ``limit``); raised before the body is waited for.
        """
        self._check_failed()
        available = len(self._buffer) - self._pos
        if self._body_len is None:
            if available < HEADER_LEN:
                return None
            size = int.from_bytes(self._buffer[self._pos : self._pos + HEADER_LEN], "big")
            if size > self._max_size:
                self._error = error = FrameTooLarge(size, self._max_size)
                self._buffer = bytearray()
                self._pos = 0
                raise error
            self._body_len = size
            self._pos += HEADER_LEN
            available -= HEADER_LEN
        if available < self._body_len:
            return None
        end = self._pos + self._body_len
        payload = bytes(self._buffer[self._pos : end])
        self._pos = end
        self._body_len = None
        if self._pos > 65536 and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]  # compact: keep the buffer proportional to what is unread
            self._pos = 0
        return payload

    def feed(self, data: bytes) -> list[bytes]:
        """Buffer ``data`` and return every payload it completes, oldest first (possibly none).

        Raises:
            FrameTooLarge: a header announces more than ``max_size`` bytes. Payloads completed by
                the same call are dropped with the stream, which cannot be used any more.
        """
        self.receive_data(data)
        frames: list[bytes] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames
