"""Mutual authentication and hybrid key agreement of two nodes: a sans-IO state machine.

No sockets, no clocks (model: h11). Pattern: the message order of Noise XX (Noise Protocol Framework,
revision 34, §7.5, ``-> e; <- e, ee, s, es; -> s, se``), with a hybrid ephemeral exchange in place of
``e, ee`` and the node keys' ML-DSA signatures over the transcript in place of the static-DH tokens
``s, es, se`` (node keys are signature keys), as CometBFT's SecretConnection
(``p2p/conn/secret_connection.go``) signs its transcript hash with the node key::

    initiator                                          responder
    Hello_I  = (..., node key I, nonce_I, X25519 e_I, ML-KEM ek)  ->        checks Hello_I
                                                                              ct, ss_kem = Encaps(ek)
                                                                              ss_dh = X25519(e_R, e_I)
             <-  Hello_R = (..., node key R, nonce_R, X25519 e_R, ML-KEM ct)
             <-  Auth_R  = seal_R2I[0](sign_R(H(Hello_I, Hello_R, 1)))
    checks Hello_R; ss_kem = Decaps(dk, ct), ss_dh = X25519(e_I, e_R);
    opens and checks Auth_R
    Auth_I   = seal_I2R[0](sign_I(H(Hello_I, Hello_R, 0)))  ->                  opens and checks Auth_I

Each message is one frame payload (``p2p.framing``): ``Hello`` in the clear (its canonical encoding,
``state.codec``), ``Auth`` sealed under the new session keys as frame 0 of its direction
(``p2p.session``), so receiving a valid ``Auth`` also confirms that the peer derived the same keys
(Noise XX encrypts its ``s`` and payloads the same way, TLS 1.3 sends CertificateVerify encrypted).

Hashes and keys::

    H(hello_i, hello_r, role) = SHA3-256("QENEX/v2/handshake" || hello_i || hello_r || role)
    session_hash              = SHA3-256("QENEX/v2/p2p-session" || hello_i || hello_r)
    k_i2r, k_r2i              = derive_session_keys(ss_kem, ss_dh, session_hash)   (p2p.session)

``hello_i`` / ``hello_r`` are the exact bytes sent (canonical msgpack is self-delimiting, so the
concatenation is unambiguous); ``role`` is one byte, 0 for the initiator's signature, 1 for the
responder's, so a side's own ``Auth`` cannot be reflected back to it. Signatures use the FIPS 204
context ``Context.HANDSHAKE``. The signed transcript holds both identities, both nonces and every
ephemeral share (the X25519 public keys, the ML-KEM encapsulation key and ciphertext): each side signs
"I, holding this node key, am talking to that node key over exactly these shares", which binds the
session keys to the two authenticated identities (the SIGMA discipline of Krawczyk, CRYPTO 2003, in
its sign-both-identities form); a relay that swaps a share, an identity or a nonce breaks a signature.
The keys are secret as long as either X25519 (RFC 7748) or ML-KEM-768 (FIPS 203) is (see
``p2p.session`` for the combiner and its sources). Ephemeral secrets live only in this object and are
dropped as soon as the keys are derived (forward secrecy).

A side accepts the peer only if version, chain id, genesis hash and rekey interval equal its own, the
peer's ``(scheme, public key)`` is in the allowlist under its node id and not currently refused (a
ban), that node id is not its own (and, when dialing, is the node it meant to dial), the peer's nonce
is not its own, the shares are well formed (a 32-byte X25519 key that is not a low-order point; a
1,184-byte ML-KEM encapsulation key passing FIPS 203 §7.2, or a 1,088-byte ciphertext), the sealed
``Auth`` opens, and its signature verifies.

The responder speaks only after the initiator's ``Hello`` passed the identity checks, so a scanner
outside the allowlist learns nothing but that the port speaks this protocol, and costs the responder
no key generation, encapsulation or signature. (A peer presenting a listed public key it does not own
does cost one encapsulation and one signature before it fails: the per-IP attempt limits of
``p2p.network`` bound that.)
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from crypto.exceptions import InvalidKey, InvalidSignature
from crypto.hashing import Hash32, sha3_concat
from crypto.kex import (
    MLKEM768_CT_LEN,
    MLKEM768_EK_LEN,
    X25519_KEY_LEN,
    mlkem768_decaps,
    mlkem768_encaps,
    mlkem768_keypair,
    x25519,
    x25519_keypair,
)
from crypto.keys import Address, KeyPair, address_of
from crypto.signatures import Context, verify
from p2p.exceptions import HandshakeFailed, PeerNotAllowed, RemoteProtocolError
from p2p.framing import DEFAULT_MAX_FRAME
from p2p.session import REKEY_INTERVAL, TAG_LEN, SecureSession, derive_session_keys
from state.codec import Struct
from state.exceptions import DecodeError

PROTOCOL_VERSION: Final = 2
"""Version of the handshake and session protocol; both sides must send the same.

Version 1 was the unencrypted handshake; version 2 adds the hybrid key agreement and sealed frames.
"""

TRANSCRIPT_DOMAIN: Final = b"QENEX/v2/handshake"
"""Domain-separation prefix of the signed transcript hash."""

SESSION_DOMAIN: Final = b"QENEX/v2/p2p-session"
"""Domain-separation prefix of the session hash (the KDF salt)."""

NONCE_LEN: Final = 32
"""Length of a handshake nonce, in bytes."""

MAX_HANDSHAKE_MESSAGE: Final = 16 * 1024
"""Largest handshake message (frame payload) accepted, in bytes: room for the ML-KEM-768
encapsulation key (1,184 bytes) next to the largest node key (ML-DSA-65, 1,952 bytes), and for the
largest signature (SLH-DSA-SHA2-128s, 7,856 bytes) plus its 16-byte tag."""


class Role(enum.IntEnum):
    """Which side of the TCP connection we are; the value is the role byte of the transcript."""

    INITIATOR = 0
    RESPONDER = 1


@dataclass(frozen=True)
class Hello(Struct):
    """The first message of each side, encoded as the array of its fields in this order.

    Fields: ``version`` (``PROTOCOL_VERSION``), ``chain_id`` (UTF-8), ``genesis_hash`` (32 bytes,
    SHA3-256), ``rekey_interval`` (frames per session key, ``p2p.session``), ``node_scheme`` (signature
    scheme tag of the node key), ``node_public_key`` (raw), ``nonce`` (32 random bytes, fresh per
    connection), ``x25519_public`` (the ephemeral X25519 public key, 32 bytes, RFC 7748) and
    ``mlkem``: in the initiator's ``Hello`` its ephemeral ML-KEM-768 encapsulation key (1,184 bytes),
    in the responder's the ML-KEM-768 ciphertext encapsulated to it (1,088 bytes), FIPS 203.
    """

    version: int
    chain_id: str
    genesis_hash: Hash32
    rekey_interval: int
    node_scheme: int
    node_public_key: bytes
    nonce: bytes
    x25519_public: bytes
    mlkem: bytes

    def __post_init__(self) -> None:
        """Check the nonce and X25519 key lengths. Raises ``ValueError`` (``DecodeError`` when decoding)."""
        if len(self.nonce) != NONCE_LEN:
            raise ValueError(f"nonce must be {NONCE_LEN} bytes, got {len(self.nonce)}")
        if len(self.x25519_public) != X25519_KEY_LEN:
            raise ValueError(f"x25519_public must be {X25519_KEY_LEN} bytes, got {len(self.x25519_public)}")


@dataclass(frozen=True)
class Auth(Struct):
    """The second message of each side (sealed): its node key's signature over the transcript hash.

    Signed under context ``Context.HANDSHAKE`` (``b"QENEX/v1/p2p-handshake"``).
    """

    signature: bytes


def transcript_hash(initiator_hello: bytes, responder_hello: bytes, role: Role) -> Hash32:
    """``SHA3-256(TRANSCRIPT_DOMAIN || initiator_hello || responder_hello || role byte)``, 32 bytes.

    ``initiator_hello`` / ``responder_hello`` are the encoded ``Hello`` messages exactly as sent;
    ``role`` is the role of the side that signs.
    """
    return sha3_concat(TRANSCRIPT_DOMAIN, initiator_hello, responder_hello, bytes([int(role)]))


def session_hash(initiator_hello: bytes, responder_hello: bytes) -> Hash32:
    """``SHA3-256(SESSION_DOMAIN || initiator_hello || responder_hello)``: names the session, 32 bytes.

    The salt of the session key derivation (``p2p.session.derive_session_keys``).
    """
    return sha3_concat(SESSION_DOMAIN, initiator_hello, responder_hello)


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
        hs.peer_id   # the authenticated node id
        hs.session   # the SecureSession that seals and opens every later frame

    Every message produced and consumed is one frame payload of at most ``MAX_HANDSHAKE_MESSAGE``
    bytes. The caller enforces the timeout. Any failure raises ``HandshakeFailed`` (``PeerNotAllowed``
    for a key outside the allowlist or refused) and leaves the object failed: every later call raises
    too. Calls in the wrong state (``receive`` before ``start``, after the end) are local bugs and
    raise ``RuntimeError``.
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
        refused: Mapping[Address, str] | None = None,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        version: int = PROTOCOL_VERSION,
        rekey_interval: int = REKEY_INTERVAL,
        max_message: int = DEFAULT_MAX_FRAME,
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
            refused: node ids refused for now although listed, each with the reason (bans).
            rng_bytes: source of the 32-byte nonce and of the X25519 private key (``os.urandom``;
                tests inject a fixed one). ML-KEM randomness comes from the OS inside pqcrypto.
            version: the protocol version we speak (``PROTOCOL_VERSION``; tests vary it).
            rekey_interval: frames per session key (``p2p.session``); the peer must send the same.
            max_message: largest plaintext of the session's frames after the handshake, in bytes.

        Raises:
            ValueError: ``genesis_hash`` is not 32 bytes, ``rng_bytes`` did not return 32 bytes, an
                allowlist entry's node id is not the address of its key, or ``rekey_interval`` /
                ``max_message`` is out of range (local configuration bugs).
        """
        if len(genesis_hash) != 32:
            raise ValueError("genesis_hash must be 32 bytes")
        self._identity = identity
        self._role = Role(role)
        self._expected_peer = expected_peer
        self._refused = dict(refused or {})
        self._rng_bytes = rng_bytes
        self._rekey_interval = rekey_interval
        self._max_message = max_message
        # Checks the limits now (ValueError), rather than in the middle of the handshake.
        SecureSession(bytes(32), bytes(32), rekey_interval=rekey_interval, max_message=max_message)
        self._by_key: dict[tuple[int, bytes], Address] = {}
        for node_id, (scheme_tag, public_key) in allowed.items():
            if address_of(scheme_tag, bytes(public_key)) != node_id:
                raise ValueError(f"allowlist entry 0x{bytes(node_id).hex()} is not the address of its key")
            self._by_key[(scheme_tag, bytes(public_key))] = Address(bytes(node_id))
        nonce = bytes(rng_bytes(NONCE_LEN))
        if len(nonce) != NONCE_LEN:
            raise ValueError(f"rng_bytes returned {len(nonce)} bytes, not {NONCE_LEN}")
        self._version = version
        self._chain_id = chain_id
        self._genesis_hash = Hash32(bytes(genesis_hash))
        self._nonce = nonce
        self._state = _State.NEW
        self._hello_bytes = b""  # our Hello as sent, once made
        self._x25519_private: bytes | None = None
        self._mlkem_dk: bytes | None = None
        self._peer_hello: Hello | None = None
        self._peer_id: Address | None = None
        self._transcript: tuple[bytes, bytes] | None = None  # (initiator hello, responder hello)
        self._session: SecureSession | None = None

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
    def session(self) -> SecureSession:
        """The session that seals and opens every frame after the handshake.

        Its counters are past the two sealed ``Auth`` messages (frame 0 of each direction); its
        message limit is ``max_message``. Raises ``RuntimeError`` before ``is_done``.
        """
        if self._state is not _State.DONE or self._session is None:
            raise RuntimeError("the handshake is not done")
        return self._session

    @property
    def session_hash(self) -> Hash32:
        """``session_hash(Hello_I, Hello_R)``: names this session (the salt of its keys), 32 bytes.

        Raises ``RuntimeError`` before both ``Hello`` messages are known.
        """
        if self._transcript is None:
            raise RuntimeError("the Hello messages have not been exchanged yet")
        return session_hash(*self._transcript)

    def _make_hello(self, x25519_public: bytes, mlkem: bytes) -> bytes:
        return Hello(
            version=self._version,
            chain_id=self._chain_id,
            genesis_hash=self._genesis_hash,
            rekey_interval=self._rekey_interval,
            node_scheme=self._identity.scheme_tag,
            node_public_key=self._identity.public_key,
            nonce=self._nonce,
            x25519_public=x25519_public,
            mlkem=mlkem,
        ).encode()

    def start(self) -> list[bytes]:
        """Begin: return the messages to send first (the initiator's ``Hello``; nothing for a responder).

        The initiator makes its ephemeral X25519 and ML-KEM-768 key pairs here. Raises
        ``RuntimeError`` if called twice.
        """
        if self._state is not _State.NEW:
            raise RuntimeError("start() was already called")
        self._state = _State.AWAIT_HELLO
        if self._role is Role.RESPONDER:
            return []
        self._x25519_private, x25519_public = x25519_keypair(self._rng_bytes)
        ek, self._mlkem_dk = mlkem768_keypair()
        self._hello_bytes = self._make_hello(x25519_public, ek)
        return [self._hello_bytes]

    def receive(self, message: bytes) -> list[bytes]:
        """Consume one message (frame payload) from the peer; return the messages to send in reply.

        Raises:
            HandshakeFailed: the message is malformed, mismatched or does not authenticate, or the
                handshake already failed (``PeerNotAllowed`` for a key outside the allowlist or
                refused).
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
            self._fail()
            raise

    def _fail(self) -> None:
        self._state = _State.FAILED
        self._x25519_private = self._mlkem_dk = None
        self._session = None

    def _on_hello(self, message: bytes) -> list[bytes]:
        try:
            hello = Hello.decode(message, max_size=MAX_HANDSHAKE_MESSAGE)
        except DecodeError as err:
            raise HandshakeFailed(f"malformed Hello: {err}") from err
        self._check_hello(hello)
        self._peer_hello = hello
        try:
            if self._role is Role.INITIATOR:
                return self._on_responder_hello(bytes(message), hello)
            return self._on_initiator_hello(bytes(message), hello)
        except InvalidKey as err:
            raise HandshakeFailed(f"bad ephemeral share in Hello: {err}") from err

    def _on_initiator_hello(self, message: bytes, hello: Hello) -> list[bytes]:
        """Responder: encapsulate to the initiator's key, answer with Hello_R and the sealed Auth_R."""
        if len(hello.mlkem) != MLKEM768_EK_LEN:
            raise HandshakeFailed(f"initiator's ML-KEM encapsulation key is {len(hello.mlkem)} bytes")
        ciphertext, mlkem_secret = mlkem768_encaps(hello.mlkem)
        x25519_private, x25519_public = x25519_keypair(self._rng_bytes)
        x25519_secret = x25519(x25519_private, hello.x25519_public)
        self._hello_bytes = self._make_hello(x25519_public, ciphertext)
        self._transcript = (message, self._hello_bytes)
        self._start_session(mlkem_secret, x25519_secret)
        self._state = _State.AWAIT_AUTH
        return [self._hello_bytes, self._auth_message()]

    def _on_responder_hello(self, message: bytes, hello: Hello) -> list[bytes]:
        """Initiator: decapsulate the responder's ciphertext and derive the keys; wait for Auth_R."""
        if len(hello.mlkem) != MLKEM768_CT_LEN:
            raise HandshakeFailed(f"responder's ML-KEM ciphertext is {len(hello.mlkem)} bytes")
        if self._x25519_private is None or self._mlkem_dk is None:  # unreachable: set in start()
            raise RuntimeError("no ephemeral keys")
        x25519_secret = x25519(self._x25519_private, hello.x25519_public)
        mlkem_secret = mlkem768_decaps(self._mlkem_dk, hello.mlkem)
        self._x25519_private = self._mlkem_dk = None
        self._transcript = (self._hello_bytes, message)
        self._start_session(mlkem_secret, x25519_secret)
        self._state = _State.AWAIT_AUTH
        return []

    def _start_session(self, mlkem_secret: bytes, x25519_secret: bytes) -> None:
        if self._transcript is None:  # unreachable: set just before
            raise RuntimeError("no transcript yet")
        k_i2r, k_r2i = derive_session_keys(mlkem_secret, x25519_secret, session_hash(*self._transcript))
        send, receive = (k_i2r, k_r2i) if self._role is Role.INITIATOR else (k_r2i, k_i2r)
        # The handshake's Auth frames are limited like every handshake message; the configured
        # limit applies from the first frame after it.
        self._session = SecureSession(
            send, receive, rekey_interval=self._rekey_interval, max_message=MAX_HANDSHAKE_MESSAGE - TAG_LEN
        )

    def _check_hello(self, hello: Hello) -> None:
        if hello.version != self._version:
            raise HandshakeFailed(f"peer speaks protocol version {hello.version}, we speak {self._version}")
        if hello.chain_id != self._chain_id:
            raise HandshakeFailed(f"peer is on chain {hello.chain_id!r}, we are on {self._chain_id!r}")
        if hello.genesis_hash != self._genesis_hash:
            raise HandshakeFailed(
                f"peer has genesis 0x{hello.genesis_hash.hex()}, we have 0x{self._genesis_hash.hex()}"
            )
        if hello.rekey_interval != self._rekey_interval:
            raise HandshakeFailed(f"peer rekeys every {hello.rekey_interval} frames, we every {self._rekey_interval}")
        key = (hello.node_scheme, hello.node_public_key)
        if key == (self._identity.scheme_tag, self._identity.public_key):
            raise HandshakeFailed("peer presented our own node key (connected to ourselves?)")
        peer_id = self._by_key.get(key)
        if peer_id is None:
            try:
                claimed = address_of(hello.node_scheme, hello.node_public_key)
            except (ValueError, OverflowError):  # a scheme tag that does not fit a byte
                claimed = Address(b"\x00" * 20)
            raise PeerNotAllowed(claimed, f"node key (scheme {hello.node_scheme}) is not in the allowlist")
        if peer_id == self._identity.address:
            raise HandshakeFailed("peer's node id is our own")
        reason = self._refused.get(peer_id)
        if reason is not None:
            raise PeerNotAllowed(peer_id, reason)
        if self._expected_peer is not None and peer_id != self._expected_peer:
            raise HandshakeFailed(
                f"dialed node 0x{bytes(self._expected_peer).hex()} but reached node 0x{peer_id.hex()}"
            )
        if hello.nonce == self._nonce:
            raise HandshakeFailed("peer sent our own nonce back (reflection)")
        self._peer_id = peer_id

    def _auth_message(self) -> bytes:
        if self._transcript is None or self._session is None:  # unreachable: set before any Auth
            raise RuntimeError("no transcript yet")
        digest = transcript_hash(*self._transcript, self._role)
        return self._session.seal(Auth(self._identity.sign(Context.HANDSHAKE, digest)).encode())

    def _on_auth(self, message: bytes) -> list[bytes]:
        hello, transcript, session = self._peer_hello, self._transcript, self._session
        if hello is None or transcript is None or session is None:  # unreachable: set in _on_hello
            raise RuntimeError("no peer Hello yet")
        try:
            plaintext = session.open(message)
        except RemoteProtocolError as err:  # DecryptionFailed, FrameTooLarge
            raise HandshakeFailed(f"peer's Auth does not open under the session keys: {err}") from err
        try:
            auth = Auth.decode(plaintext, max_size=MAX_HANDSHAKE_MESSAGE)
        except DecodeError as err:
            raise HandshakeFailed(f"malformed Auth: {err}") from err
        peer_role = Role.RESPONDER if self._role is Role.INITIATOR else Role.INITIATOR
        digest = transcript_hash(*transcript, peer_role)
        try:
            verify(hello.node_scheme, hello.node_public_key, Context.HANDSHAKE, digest, auth.signature)
        except InvalidSignature as err:
            raise HandshakeFailed(f"peer's transcript signature does not verify: {err}") from err
        reply = [self._auth_message()] if self._role is Role.INITIATOR else []
        session.max_message = self._max_message
        self._state = _State.DONE
        return reply
