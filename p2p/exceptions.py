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

    Wrong version, chain id, genesis hash or rekey interval; a node key outside the allowlist or
    banned (``PeerNotAllowed``), our own key, or not the peer we dialed; our own nonce reflected back;
    a malformed ephemeral share (a low-order X25519 key, an ML-KEM key or ciphertext of the wrong
    size or failing FIPS 203's check); an ``Auth`` that does not open under the derived session keys;
    a transcript signature that does not verify; bytes that are not the expected handshake message;
    no complete handshake within the timeout. The message says which.

    The peer is not authenticated when this is raised, so the key it presented is not blamed (not
    scored): anyone can present a listed public key.
    """


class PeerNotAllowed(HandshakeFailed):
    """Raised when the peer's node key is not admitted: outside the allowlist, or banned for now.

    Raised from the peer's ``Hello``, before this side signs or computes anything for it.

    Attributes:
        node_id: the 20-byte node id (address) of the key the peer presented.
        reason: why it is refused (``"not in the allowlist"``, ``"banned for another 42 s"``).
    """

    def __init__(self, node_id: bytes, reason: str) -> None:
        super().__init__(f"peer 0x{bytes(node_id).hex()} refused: {reason}")
        self.node_id = bytes(node_id)
        self.reason = reason


class DecryptionFailed(RemoteProtocolError):
    """Raised when a sealed frame does not authenticate under the session key and expected counter.

    The frame was altered (a flipped bit, a truncation), replayed, reordered, dropped before a later
    one, or not sealed by the peer at all. Nothing of its plaintext is released, and the session is
    dead afterwards: every later ``open`` raises this error again.

    Attributes:
        counter: the frame counter (nonce) the receiver expected, from 0 per direction.
    """

    def __init__(self, counter: int, detail: str = "frame does not authenticate") -> None:
        super().__init__(f"sealed frame {counter}: {detail}")
        self.counter = counter


class SessionExhausted(P2PError):
    """Raised when a session direction has sealed its last allowed frame (counter ``2**64 - 2``).

    A local condition, not a peer's fault: the connection must be closed and a new handshake made.
    Unreachable in practice (2**64 frames), kept so that a nonce can never repeat.
    """


class SessionClosed(P2PError):
    """Raised when sealing on a session whose peer already sent a frame that failed to open.

    A local condition of the connection being torn down (its reader failed first): the writer stops
    and the connection closes; the peer was already charged for the bad frame.
    """


class ConnectionFailed(P2PError):
    """Raised when a TCP connection to a peer cannot be opened, or breaks (EOF, reset, failed I/O).

    The I/O boundary of ``p2p.network`` translates ``OSError`` and trio's ``BrokenResourceError``
    into this error (``raise ConnectionFailed(...) from err``). Not necessarily the peer's fault, so
    not a ``RemoteProtocolError``.
    """
