"""The encrypted transport after the handshake: a sans-IO ``SecureSession`` (no sockets, no clocks).

Every frame payload after the handshake is one message sealed with ChaCha20-Poly1305 (RFC 8439 §2.8,
``crypto.aead``)::

    frame   = len(sealed) as 4 bytes big-endian || sealed          (p2p.framing)
    sealed  = ChaCha20-Poly1305(k_dir[epoch], nonce(n), plaintext, aad = "")   ciphertext || 16-byte tag
    nonce(n) = 4 zero bytes || n as 8 bytes little-endian          (Noise §12.3 ChaChaPoly, RFC 8439)

``n`` counts the frames of one direction from 0 (the handshake's ``Auth`` message is frame 0) and is
never sent: each side keeps its own counters, so a frame that is replayed, reordered, dropped (the next
one then arrives under the wrong nonce), flipped or truncated fails its tag and kills the session
(``DecryptionFailed``). This is the transport of Noise §5.1 (``CipherState`` with an implicit nonce,
the counter ``2**64 - 1`` reserved) and of CometBFT's ``SecretConnection`` (one key and counter per
direction), with one frame per message rather than SecretConnection's fixed 1 KiB chunks.

Keys. The handshake derives one 32-byte key per direction (``derive_session_keys``)::

    prk            = HKDF-Extract(salt = session_hash, ikm = ss_mlkem || ss_x25519)   RFC 5869
    k_i2r || k_r2i = HKDF-Expand(prk, "QENEX/v2/p2p-session-keys", 64)

Both shared secrets enter one KDF call, post-quantum first, with the hash of the whole handshake
transcript (both ephemeral shares, the ML-KEM ciphertext, both identities) as salt. This is the
concatenation combiner of hybrid TLS 1.3 (Stebila, Fluhrer, Gueron, draft-ietf-tls-hybrid-design §3.3):
the keys stay secret as long as either X25519 or ML-KEM-768 does. Feeding the X25519 shares and the
ML-KEM ciphertext in as well (here through the salt) is what X-Wing's combiner does to stay secure
when one component is broken (Barbosa, Connolly, Duarte, Kaiser, Schwabe, Varner, Westerbaan, "X-Wing:
The Hybrid KEM You've Been Looking For", 2024). Mixing a KEM into a Noise-style ephemeral exchange
follows PQNoise (Angel, Dowling, Hülsing, Schwabe, Weber, "Post Quantum Noise", CCS 2022), whose
``ekem`` token is our ML-KEM exchange, and KEMTLS (Schwabe, Stebila, Wiggers, "Post-Quantum TLS
without Handshake Signatures", CCS 2020) for KEM-based key agreement in a handshake; unlike KEMTLS,
authentication stays with the node keys' ML-DSA signatures (``p2p.handshake``).

Rekeying. After every ``rekey_interval`` frames of a direction its key is replaced by
``HKDF-Expand(HKDF-Extract("", k), "QENEX/v2/p2p-rekey", 32)`` and the old key is dropped: Noise §11.3
REKEY, done at fixed counters so that both sides agree without a message. The counter itself goes on
(it is not reset), so nonces never repeat within a session; ``rekey_interval`` (at most ``2**32``)
bounds what one key ever seals, far below the ``2**64 - 1`` frames at which the counter would wrap.
"""

from __future__ import annotations

from typing import Final

from crypto.aead import KEY_LEN, TAG_LEN, chacha20poly1305_open, chacha20poly1305_seal
from crypto.exceptions import InvalidCiphertext
from crypto.kex import SHARED_SECRET_LEN, X25519_KEY_LEN, hkdf_sha256
from p2p.exceptions import DecryptionFailed, FrameTooLarge, SessionClosed, SessionExhausted
from p2p.framing import DEFAULT_MAX_FRAME, MAX_FRAME_LIMIT

__all__ = [
    "KEY_INFO",
    "MAX_COUNTER",
    "MAX_REKEY_INTERVAL",
    "REKEY_INFO",
    "REKEY_INTERVAL",
    "TAG_LEN",
    "SecureSession",
    "derive_session_keys",
    "frame_nonce",
    "rekey",
]

REKEY_INTERVAL: Final = 1 << 16
"""Frames sealed under one key per direction before it is replaced (65,536)."""

MAX_REKEY_INTERVAL: Final = 1 << 32
"""Largest rekey interval accepted, in frames."""

MAX_COUNTER: Final = (1 << 64) - 1
"""The reserved counter value (Noise §5.1): no frame is ever sealed with it."""

KEY_INFO: Final = b"QENEX/v2/p2p-session-keys"
"""HKDF ``info`` of the two session keys."""

REKEY_INFO: Final = b"QENEX/v2/p2p-rekey"
"""HKDF ``info`` of a rekeyed key."""


def derive_session_keys(mlkem_secret: bytes, x25519_secret: bytes, session_hash: bytes) -> tuple[bytes, bytes]:
    """The two 32-byte session keys ``(initiator_to_responder, responder_to_initiator)``.

    ``HKDF-SHA256(ikm = mlkem_secret || x25519_secret, salt = session_hash, info = KEY_INFO, 64)``
    split in halves (see the module docstring).

    Raises:
        ValueError: a shared secret is not 32 bytes, or ``session_hash`` is empty (a local bug).
    """
    if len(mlkem_secret) != SHARED_SECRET_LEN or len(x25519_secret) != X25519_KEY_LEN:
        raise ValueError("shared secrets must be 32 bytes each")
    if not session_hash:
        raise ValueError("session_hash must not be empty")
    okm = hkdf_sha256(bytes(mlkem_secret) + bytes(x25519_secret), salt=session_hash, info=KEY_INFO, length=2 * KEY_LEN)
    return okm[:KEY_LEN], okm[KEY_LEN:]


def rekey(key: bytes) -> bytes:
    """The next 32-byte key of a direction: ``HKDF-SHA256(ikm = key, salt = "", info = REKEY_INFO, 32)``.

    A one-way function of ``key`` (Noise §11.3 REKEY): the new key reveals nothing of the old one.
    Raises ``ValueError`` if ``key`` is not 32 bytes.
    """
    if len(key) != KEY_LEN:
        raise ValueError(f"keys are {KEY_LEN} bytes")
    return hkdf_sha256(key, salt=b"", info=REKEY_INFO, length=KEY_LEN)


def frame_nonce(counter: int) -> bytes:
    """The 12-byte nonce of frame ``counter``: 4 zero bytes, then the counter as 8 bytes little-endian.

    Raises ``ValueError`` if ``counter`` is outside ``[0, 2**64 - 2]`` (``2**64 - 1`` is reserved).
    """
    if not 0 <= counter < MAX_COUNTER:
        raise ValueError(f"frame counter {counter} outside [0, 2**64 - 2]")
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


class _Direction:
    """Key and counter of one direction; the key is replaced every ``interval`` frames."""

    __slots__ = ("counter", "interval", "key")

    def __init__(self, key: bytes, interval: int) -> None:
        self.key = key
        self.counter = 0
        self.interval = interval

    def advance(self) -> None:
        self.counter += 1
        if self.counter % self.interval == 0:
            self.key = rekey(self.key)


class SecureSession:
    """Seal and open the frames of one authenticated connection (see the module docstring).

    ``seal(plaintext)`` returns the frame payload to send (``len(plaintext) + 16`` bytes; the caller
    frames it with ``p2p.framing.encode_frame``); ``open(sealed)`` takes the next frame payload from
    the peer and returns its plaintext. Both advance their direction's counter; frames must be opened
    in the order they were sealed, each exactly once.

    Built by ``p2p.handshake.Handshake`` (its ``session`` property), with the counters already past
    the handshake's sealed ``Auth`` messages. After ``open`` fails the session is dead: every later
    ``open`` raises ``DecryptionFailed`` and ``seal`` raises ``RuntimeError``.
    """

    def __init__(
        self,
        send_key: bytes,
        receive_key: bytes,
        *,
        rekey_interval: int = REKEY_INTERVAL,
        max_message: int = DEFAULT_MAX_FRAME,
    ) -> None:
        """Start a session with frame counters at 0.

        Args:
            send_key: 32-byte key of the frames we seal.
            receive_key: 32-byte key of the frames the peer seals.
            rekey_interval: frames per key per direction, in ``[1, 2**32]``; both sides must agree.
            max_message: largest plaintext sealed or opened, in bytes (at most ``2**32 - 17``, so
                that the sealed frame fits a 4-byte frame header).

        Raises:
            ValueError: a key is not 32 bytes, or a limit is out of range (local bugs).
        """
        if len(send_key) != KEY_LEN or len(receive_key) != KEY_LEN:
            raise ValueError(f"session keys are {KEY_LEN} bytes")
        if type(rekey_interval) is not int or not 1 <= rekey_interval <= MAX_REKEY_INTERVAL:
            raise ValueError(f"rekey_interval must be an int in [1, {MAX_REKEY_INTERVAL}]")
        if type(max_message) is not int or not 0 <= max_message <= MAX_FRAME_LIMIT - TAG_LEN:
            raise ValueError(f"max_message must be an int in [0, {MAX_FRAME_LIMIT - TAG_LEN}]")
        self._send = _Direction(bytes(send_key), rekey_interval)
        self._receive = _Direction(bytes(receive_key), rekey_interval)
        self._max_message = max_message
        self._error: DecryptionFailed | None = None

    @property
    def max_message(self) -> int:
        """The largest plaintext sealed or opened, in bytes; may be changed between frames."""
        return self._max_message

    @max_message.setter
    def max_message(self, value: int) -> None:
        if type(value) is not int or not 0 <= value <= MAX_FRAME_LIMIT - TAG_LEN:
            raise ValueError(f"max_message must be an int in [0, {MAX_FRAME_LIMIT - TAG_LEN}]")
        self._max_message = value

    @property
    def max_frame(self) -> int:
        """The largest sealed frame payload, in bytes: ``max_message + 16``."""
        return self._max_message + TAG_LEN

    @property
    def sent(self) -> int:
        """Frames sealed so far (the counter of the next one)."""
        return self._send.counter

    @property
    def received(self) -> int:
        """Frames opened so far (the counter the next one must carry)."""
        return self._receive.counter

    @property
    def failed(self) -> bool:
        """True once a frame failed to open: the session is dead."""
        return self._error is not None

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and authenticate the next outgoing message: ``ciphertext || tag`` (``len + 16`` bytes).

        Raises:
            ValueError: ``plaintext`` is longer than ``max_message`` (a local bug: we tried to send it).
            SessionExhausted: this direction has sealed ``2**64 - 1`` frames.
            SessionClosed: the session already failed (a frame from the peer did not open).
        """
        if self._error is not None:
            raise SessionClosed("the session failed; open a new connection")
        if len(plaintext) > self._max_message:
            raise ValueError(f"message of {len(plaintext)} bytes is over the limit of {self._max_message} bytes")
        direction = self._send
        if direction.counter >= MAX_COUNTER:
            raise SessionExhausted("this session has sealed 2**64 - 1 frames")
        sealed = chacha20poly1305_seal(direction.key, frame_nonce(direction.counter), plaintext)
        direction.advance()
        return sealed

    def open(self, sealed: bytes) -> bytes:
        """Check and decrypt the next incoming frame payload; return its plaintext.

        The length is checked before anything is allocated for the plaintext.

        Raises:
            FrameTooLarge: ``sealed`` is longer than ``max_message + 16`` bytes.
            DecryptionFailed: ``sealed`` is shorter than a tag, or does not authenticate under the
                current key and the expected counter; also on every call after a failure.
        """
        if self._error is not None:
            raise DecryptionFailed(self._error.counter, "the session already failed")
        direction = self._receive
        if len(sealed) > self._max_message + TAG_LEN:
            error = FrameTooLarge(len(sealed) - TAG_LEN, self._max_message)
            self._error = DecryptionFailed(direction.counter, str(error))
            raise error
        if direction.counter >= MAX_COUNTER:  # pragma: no cover - 2**64 frames
            self._error = DecryptionFailed(direction.counter, "the peer sent more than 2**64 - 1 frames")
            raise self._error
        try:
            plaintext = chacha20poly1305_open(direction.key, frame_nonce(direction.counter), sealed)
        except InvalidCiphertext as err:
            self._error = DecryptionFailed(direction.counter, str(err))
            raise self._error from err
        direction.advance()
        return plaintext
