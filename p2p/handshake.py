"""Mutual authentication of two validator nodes: a sans-IO state machine (no sockets, no clocks).

Pattern (the message order of Noise XX, https://noiseprotocol.org/noise.html §7.5, without its
encryption; the authentication step of CometBFT's SecretConnection, ``p2p/conn/secret_connection.go``,
where each side signs a hash of the handshake transcript with its node key)::

    initiator                                   responder
    Hello_I  ---------------------------------->             checks Hello_I
             <----------------------------------  Hello_R
             <----------------------------------  Auth_R   = sign_R(H(Hello_I, Hello_R, 1))
    checks Hello_R, Auth_R
    Auth_I   ---------------------------------->             checks Auth_I
             = sign_I(H(Hello_I, Hello_R, 0))

Each message is one frame payload (``p2p.framing``): the canonical encoding (``state.codec``) of
``Hello`` or ``Auth``. The transcript hash is::

    H(hello_i, hello_r, role) = SHA3-256(b"QENEX/v1/handshake" || hello_i || hello_r || role)

with ``hello_i`` / ``hello_r`` the exact bytes sent (canonical msgpack is self-delimiting, so the
concatenation is unambiguous) and ``role`` one byte: 0 for the initiator's signature, 1 for the
responder's. Signatures use the FIPS 204 context ``Context.HANDSHAKE``. Both 32-byte nonces are fresh
per connection, so a signature never verifies in another session, and the role byte keeps a side's
own ``Auth`` from being reflected back to it.

A side accepts the peer only if version, chain id and genesis hash equal its own, the peer's
``(scheme, public key)`` is in the allowlist under its node id, that node id is not its own (and, when
dialing, is the node it meant to dial), the peer's nonce is not its own, and the signature verifies.

The responder speaks only after the initiator's ``Hello`` passed those checks, so a scanner outside
the allowlist learns nothing but that the port speaks this protocol.

Limitation of this version: nothing is encrypted and the session is not bound to the authenticated
keys, so an active relay in the middle can still read and change frames after the handshake. The
encryption issue adds ephemeral X25519 + ML-KEM shares to ``Hello`` (the initiator's encapsulation
key in ``Hello_I``, the responder's ciphertext in ``Hello_R``, as in Noise XX's ``e`` / ``ee``), mixes
the shared secret into the transcript hash and derives the ChaCha20-Poly1305 keys from it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from crypto.exceptions import InvalidSignature
from crypto.hashing import Hash32, sha3_concat
from crypto.keys import Address, KeyPair, address_of
from crypto.signatures import Context, verify
from p2p.exceptions import HandshakeFailed
from state.codec import Struct
from state.exceptions import DecodeError

PROTOCOL_VERSION: Final = 1
"""Version of the handshake and session protocol; both sides must send the same."""

TRANSCRIPT_DOMAIN: Final = b"QENEX/v1/handshake"
"""Domain-separation prefix of the transcript hash."""

NONCE_LEN: Final = 32
"""Length of a handshake nonce, in bytes."""

MAX_HANDSHAKE_MESSAGE: Final = 16 * 1024
"""Largest handshake message accepted, in bytes: room for the largest key (ML-DSA-65, 1,952 bytes)
and signature (SLH-DSA-SHA2-128s, 7,856 bytes) of ``crypto.signatures``."""


class Role(enum.IntEnum):
    """Which side of the TCP connection we are; the value is the role byte of the transcript."""

    INITIATOR = 0
    RESPONDER = 1


@dataclass(frozen=True)
class Hello(Struct):
    """The first message of each side, encoded as the array of its fields in this order.

    Fields: ``version`` (``PROTOCOL_VERSION``), ``chain_id`` (UTF-8), ``genesis_hash`` (32 bytes,
    SHA3-256), ``node_scheme`` (signature scheme tag of the node key), ``node_public_key`` (raw),
    ``nonce`` (32 random bytes, fresh per connection).
    """

    version: int
    chain_id: str
    genesis_hash: Hash32
    node_scheme: int
    node_public_key: bytes
    nonce: bytes

    def __post_init__(self) -> None:
        """Check the nonce length. Raises ``ValueError`` (``DecodeError`` when decoding)."""
        if len(self.nonce) != NONCE_LEN:
            raise ValueError(f"nonce must be {NONCE_LEN} bytes, got {len(self.nonce)}")


@dataclass(frozen=True)
class Auth(Struct):
    """The second message of each side: its node key's signature over the transcript hash.

    Signed under context ``Context.HANDSHAKE`` (``b"QENEX/v1/p2p-handshake"``).
    """

    signature: bytes


def transcript_hash(initiator_hello: bytes, responder_hello: bytes, role: Role) -> Hash32:
    """``SHA3-256(TRANSCRIPT_DOMAIN || initiator_hello || responder_hello || role byte)``, 32 bytes.

    ``initiator_hello`` / ``responder_hello`` are the encoded ``Hello`` messages exactly as sent;
    ``role`` is the role of the side that signs.
    """
    return sha3_concat(TRANSCRIPT_DOMAIN, initiator_hello, responder_hello, bytes([int(role)]))


class _State(enum.Enum):
    NEW = "new"
    AWAIT_HELLO = "await hello"
    AWAIT_AUTH = "await auth"
    DONE = "done"
    FAILED = "failed"


class Handshake:
    """One side of the handshake of one connection (see the module docstring for the protocol).

    Usage, with ``send`` / ``receive_frame`` being the caller's I/O::

        hs = Handshake(identity, Role.INITIATOR, chain_id, genesis_hash, allowed, expected_peer=node_id)
        for message in hs.start():
            send(message)
        while not hs.is_done:
            for message in hs.receive(receive_frame()):
                send(message)
        hs.peer_id  # the authenticated node id

    Every message produced and consumed is one frame payload. The caller enforces the timeout.
    Any failure raises ``HandshakeFailed`` and leaves the object failed: every later call raises too.
    Calls in the wrong state (``receive`` before ``start``, after the end) are local bugs and raise
    ``RuntimeError``.
    """

    def __init__(
        self,
        identity: KeyPair,
        role: Role,
        chain_id: str,
        genesis_hash: bytes,
        allowed: Mapping[Address, tuple[int, bytes]],
        *,
        expected_peer: Address | None = None,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        version: int = PROTOCOL_VERSION,
    ) -> None:
        """Prepare one side of a handshake.

        Args:
            identity: this node's key pair (its node key).
            role: ``Role.INITIATOR`` if we opened the TCP connection, else ``Role.RESPONDER``.
            chain_id: our chain id; the peer must send the same.
            genesis_hash: our 32-byte genesis hash; the peer must send the same.
            allowed: the allowlist, node id (20-byte address) -> ``(scheme_tag, public_key)``.
            expected_peer: for a dialed connection, the node id we meant to reach; any other
                authenticated node is refused.
            rng_bytes: source of the 32-byte nonce (``os.urandom``; tests inject a fixed one).
            version: the protocol version we speak (``PROTOCOL_VERSION``; tests vary it).

        Raises:
            ValueError: ``genesis_hash`` is not 32 bytes, ``rng_bytes`` did not return 32 bytes, or an
                allowlist entry's node id is not the address of its key (a local configuration bug).
        """
        if len(genesis_hash) != 32:
            raise ValueError("genesis_hash must be 32 bytes")
        self._identity = identity
        self._role = Role(role)
        self._expected_peer = expected_peer
        self._by_key: dict[tuple[int, bytes], Address] = {}
        for node_id, (scheme_tag, public_key) in allowed.items():
            if address_of(scheme_tag, bytes(public_key)) != node_id:
                raise ValueError(f"allowlist entry 0x{bytes(node_id).hex()} is not the address of its key")
            self._by_key[(scheme_tag, bytes(public_key))] = Address(bytes(node_id))
        nonce = bytes(rng_bytes(NONCE_LEN))
        self._hello = Hello(
            version=version,
            chain_id=chain_id,
            genesis_hash=Hash32(bytes(genesis_hash)),
            node_scheme=identity.scheme_tag,
            node_public_key=identity.public_key,
            nonce=nonce,
        )
        self._hello_bytes = self._hello.encode()
        self._state = _State.NEW
        self._peer_hello: Hello | None = None
        self._peer_id: Address | None = None
        self._transcript: tuple[bytes, bytes] | None = None  # (initiator hello, responder hello)

    @property
    def role(self) -> Role:
        """Our role in this handshake."""
        return self._role

    @property
    def is_done(self) -> bool:
        """True once the peer is authenticated (and our last message was handed out)."""
        return self._state is _State.DONE

    @property
    def peer_id(self) -> Address:
        """The authenticated peer's node id (20 bytes). Raises ``RuntimeError`` before ``is_done``."""
        if self._state is not _State.DONE or self._peer_id is None:
            raise RuntimeError("the handshake is not done")
        return self._peer_id

    @property
    def session_hash(self) -> Hash32:
        """``transcript_hash(Hello_I, Hello_R, INITIATOR)``: names this session (to bind keys to later).

        Raises ``RuntimeError`` before both ``Hello`` messages are known.
        """
        if self._transcript is None:
            raise RuntimeError("the Hello messages have not been exchanged yet")
        return transcript_hash(*self._transcript, Role.INITIATOR)

    def start(self) -> list[bytes]:
        """Begin: return the messages to send first (the initiator's ``Hello``; nothing for a responder).

        Raises ``RuntimeError`` if called twice.
        """
        if self._state is not _State.NEW:
            raise RuntimeError("start() was already called")
        self._state = _State.AWAIT_HELLO
        return [self._hello_bytes] if self._role is Role.INITIATOR else []

    def receive(self, message: bytes) -> list[bytes]:
        """Consume one message (frame payload) from the peer; return the messages to send in reply.

        Raises:
            HandshakeFailed: the message is malformed, mismatched or does not authenticate, or the
                handshake already failed.
            RuntimeError: called before ``start()`` or after the handshake is done (a local bug).
        """
        if self._state is _State.FAILED:
            raise HandshakeFailed("the handshake already failed")
        if self._state is _State.NEW:
            raise RuntimeError("call start() before receive()")
        if self._state is _State.DONE:
            raise RuntimeError("the handshake is done: frames now belong to the session")
        try:
            if self._state is _State.AWAIT_HELLO:
                return self._on_hello(message)
            return self._on_auth(message)
        except HandshakeFailed:
            self._state = _State.FAILED
            raise

    def _on_hello(self, message: bytes) -> list[bytes]:
        try:
            hello = Hello.decode(message, max_size=MAX_HANDSHAKE_MESSAGE)
        except DecodeError as err:
            raise HandshakeFailed(f"malformed Hello: {err}") from err
        self._check_hello(hello)
        self._peer_hello = hello
        if self._role is Role.INITIATOR:
            self._transcript = (self._hello_bytes, bytes(message))
            self._state = _State.AWAIT_AUTH
            return []
        self._transcript = (bytes(message), self._hello_bytes)
        self._state = _State.AWAIT_AUTH
        return [self._hello_bytes, self._auth_message()]

    def _check_hello(self, hello: Hello) -> None:
        ours = self._hello
        if hello.version != ours.version:
            raise HandshakeFailed(f"peer speaks protocol version {hello.version}, we speak {ours.version}")
        if hello.chain_id != ours.chain_id:
            raise HandshakeFailed(f"peer is on chain {hello.chain_id!r}, we are on {ours.chain_id!r}")
        if hello.genesis_hash != ours.genesis_hash:
            raise HandshakeFailed(f"peer has genesis 0x{hello.genesis_hash.hex()}, we have 0x{ours.genesis_hash.hex()}")
        key = (hello.node_scheme, hello.node_public_key)
        if key == (ours.node_scheme, ours.node_public_key):
            raise HandshakeFailed("peer presented our own node key (connected to ourselves?)")
        peer_id = self._by_key.get(key)
        if peer_id is None:
            raise HandshakeFailed(f"peer's node key (scheme {hello.node_scheme}) is not in the allowlist")
        if peer_id == self._identity.address:
            raise HandshakeFailed("peer's node id is our own")
        if self._expected_peer is not None and peer_id != self._expected_peer:
            raise HandshakeFailed(
                f"dialed node 0x{bytes(self._expected_peer).hex()} but reached node 0x{peer_id.hex()}"
            )
        if hello.nonce == ours.nonce:
            raise HandshakeFailed("peer sent our own nonce back (reflection)")
        self._peer_id = peer_id

    def _auth_message(self) -> bytes:
        if self._transcript is None:  # unreachable: set before any Auth is made
            raise RuntimeError("no transcript yet")
        digest = transcript_hash(*self._transcript, self._role)
        return Auth(self._identity.sign(Context.HANDSHAKE, digest)).encode()

    def _on_auth(self, message: bytes) -> list[bytes]:
        try:
            auth = Auth.decode(message, max_size=MAX_HANDSHAKE_MESSAGE)
        except DecodeError as err:
            raise HandshakeFailed(f"malformed Auth: {err}") from err
        hello, transcript = self._peer_hello, self._transcript
        if hello is None or transcript is None:  # unreachable: set in _on_hello
            raise RuntimeError("no peer Hello yet")
        peer_role = Role.RESPONDER if self._role is Role.INITIATOR else Role.INITIATOR
        digest = transcript_hash(*transcript, peer_role)
        try:
            verify(hello.node_scheme, hello.node_public_key, Context.HANDSHAKE, digest, auth.signature)
        except InvalidSignature as err:
            raise HandshakeFailed(f"peer's transcript signature does not verify: {err}") from err
        self._state = _State.DONE
        return [self._auth_message()] if self._role is Role.INITIATOR else []
