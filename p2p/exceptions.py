"""Errors of the ``p2p`` package (one root, each subclass says when it is raised).

Local faults and remote faults are told apart (model: h11 ``_util.py``, trinity ``p2p/exceptions.py``):
whatever a peer sent wrong is a ``RemoteProtocolError``, which closes that one connection and will feed
peer scoring; what this node did wrong (a payload over the frame limit, a call in the wrong handshake
state) is a bug and raises ``ValueError`` / ``RuntimeError``.
"""

from __future__ import annotations


class P2PError(Exception):
    """Root of every error raised by ``p2p``."""


class RemoteProtocolError(P2PError):
    """Raised when a peer sent something that breaks the protocol.

    A bad or oversize frame, a malformed or mismatched handshake message, a key outside the allowlist,
    a signature that does not verify. The connection to that peer is closed; nothing else is affected.
    """


class FrameTooLarge(RemoteProtocolError):
    """Raised when a frame header announces a payload longer than the decoder's limit.

    Raised as soon as the 4-byte header is complete, before any of the body is buffered.

    Attributes:
        size: the payload length the header announced, in bytes.
        limit: the largest payload length the decoder accepts, in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes announced, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class HandshakeFailed(RemoteProtocolError):
    """Raised when the peer's handshake is malformed or does not authenticate.

    Wrong version, chain id or genesis hash; a node key outside the allowlist, our own key, or not the
    peer we dialed; our own nonce reflected back; a transcript signature that does not verify; bytes
    that are not the expected handshake message. The message says which.
    """


class ConnectionFailed(P2PError):
    """Raised when a TCP connection to a peer cannot be opened, or breaks (EOF, reset, failed I/O).

    The I/O boundary of ``p2p.network`` translates ``OSError`` and trio's ``BrokenResourceError``
    into this error (``raise ConnectionFailed(...) from err``). Not necessarily the peer's fault, so
    not a ``RemoteProtocolError``.
    """
