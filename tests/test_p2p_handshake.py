"""The sans-IO handshake: both roles succeed, the keys follow the spec, every mismatch or forgery fails.

Byte-level conformance is checked against independent code: the test re-derives the session keys with
the standard library's HMAC (RFC 5869 written out) and opens the sealed ``Auth`` messages with
pycryptodome's ChaCha20-Poly1305, not with the modules under test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.PublicKey import ECC
from hypothesis import given, settings
from hypothesis import strategies as st
from pqcrypto.kem import ml_kem_768 as pq_ml_kem_768

import p2p.handshake as handshake_module
from crypto.abc import SignatureScheme
from crypto.exceptions import InvalidSignature
from crypto.hashing import sha3
from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519, ML_DSA_44, Context, verify
from p2p.exceptions import HandshakeFailed, PeerNotAllowed, RemoteProtocolError
from p2p.handshake import (
    MAX_HANDSHAKE_MESSAGE,
    PROTOCOL_VERSION,
    Auth,
    Handshake,
    Hello,
    Role,
    session_hash,
    transcript_hash,
)
from p2p.session import REKEY_INTERVAL

CHAIN = "qenex-test"
GENESIS = bytes(range(32))

ALICE = KeyPair.generate(ED25519)
BOB = KeyPair.generate(ED25519)
MALLORY = KeyPair.generate(ED25519)  # listed nowhere


def allowlist(*keys: KeyPair) -> dict[Address, tuple[int, bytes]]:
    return {k.address: (k.scheme_tag, k.public_key) for k in keys}


ALLOWED = allowlist(ALICE, BOB)


def make(
    identity: KeyPair,
    role: Role,
    *,
    chain_id: str = CHAIN,
    genesis: bytes = GENESIS,
    allowed: dict[Address, tuple[int, bytes]] | None = None,
    expected_peer: Address | None = None,
    rng_bytes: Callable[[int], bytes] | None = None,
    version: int = PROTOCOL_VERSION,
    **more: Any,
) -> Handshake:
    kwargs = {} if rng_bytes is None else {"rng_bytes": rng_bytes}
    return Handshake(
        identity,
        role,
        chain_id,
        genesis,
        ALLOWED if allowed is None else allowed,
        expected_peer=expected_peer,
        version=version,
        **kwargs,
        **more,
    )


def impostor(listed: KeyPair, signer: KeyPair) -> KeyPair:
    """A key pair presenting ``listed``'s public key but holding ``signer``'s private key.

    What an attacker who copied a validator's public key (it is in genesis) can do: run the protocol
    honestly, but not sign as that validator.
    """
    return dataclasses.replace(listed, private_key=signer.private_key)


@dataclasses.dataclass(frozen=True)
class WrongContextKey(KeyPair):
    """Signs everything under the consensus context instead of the one asked for."""

    def sign(self, context: bytes, message: bytes) -> bytes:
        return super().sign(Context.CONSENSUS, message)


@dataclasses.dataclass(frozen=True)
class OtherMessageKey(KeyPair):
    """Signs the hash of what it is asked to sign: a valid signature over another transcript."""

    def sign(self, context: bytes, message: bytes) -> bytes:
        return super().sign(context, sha3(message))


def hello_with(base: bytes, **changes: Any) -> bytes:
    """``base`` (an encoded Hello) with some fields changed, re-encoded."""
    return dataclasses.replace(Hello.decode(base), **changes).encode()


def run(initiator: Handshake, responder: Handshake) -> None:
    """Deliver messages between the two sides until both are done (or one raises)."""
    to_responder = initiator.start()
    to_initiator = responder.start()
    while to_responder or to_initiator:
        if to_responder:
            to_initiator += responder.receive(to_responder.pop(0))
        else:
            to_responder += initiator.receive(to_initiator.pop(0))


def hellos(initiator: Handshake, responder: Handshake) -> tuple[bytes, list[bytes]]:
    """Start both and let the responder answer: (Hello_I, [Hello_R, Auth_R])."""
    (hello_i,) = initiator.start()
    responder.start()
    return hello_i, responder.receive(hello_i)


@pytest.mark.parametrize("scheme", [ED25519, ML_DSA_44], ids=lambda s: s.name)
def test_success_both_ways(scheme: SignatureScheme) -> None:
    a, b = KeyPair.generate(scheme), KeyPair.generate(scheme)
    allowed = allowlist(a, b)
    for first, second in [(a, b), (b, a)]:
        initiator = make(first, Role.INITIATOR, allowed=allowed, expected_peer=second.address)
        responder = make(second, Role.RESPONDER, allowed=allowed)
        run(initiator, responder)
        assert initiator.is_done
        assert responder.is_done
        assert initiator.peer_id == second.address
        assert responder.peer_id == first.address
        assert initiator.session_hash == responder.session_hash


def test_mixed_schemes() -> None:
    pq = KeyPair.generate(ML_DSA_44)
    allowed = allowlist(ALICE, pq)
    initiator = make(ALICE, Role.INITIATOR, allowed=allowed)
    responder = make(pq, Role.RESPONDER, allowed=allowed)
    run(initiator, responder)
    assert (initiator.peer_id, responder.peer_id) == (pq.address, ALICE.address)


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with the standard library (independent of crypto.kex)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def _open(key: bytes, counter: int, sealed: bytes) -> bytes:
    """ChaCha20-Poly1305 (pycryptodome, independent of crypto.aead), nonce = 0^4 || counter LE64."""
    cipher = ChaCha20_Poly1305.new(key=key, nonce=bytes(4) + counter.to_bytes(8, "little"))
    return cipher.decrypt_and_verify(sealed[:-16], sealed[-16:])


def test_message_flow_and_key_schedule_follow_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hello_I; Hello_R + sealed Auth_R; sealed Auth_I; keys and signatures as the module docstring says."""
    made: list[tuple[bytes, bytes]] = []

    def keypair() -> tuple[bytes, bytes]:  # keep the initiator's ML-KEM key to re-derive the secret
        ek, dk = pq_ml_kem_768.keygen()
        made.append((ek, dk))
        return ek, dk

    monkeypatch.setattr(handshake_module, "mlkem768_keypair", keypair)
    draws_i = iter([b"\x11" * 32, b"\x01" * 32])  # each side draws its nonce, then its X25519 key
    draws_r = iter([b"\x22" * 32, b"\x02" * 32])
    initiator = make(ALICE, Role.INITIATOR, rng_bytes=lambda n: next(draws_i))
    responder = make(BOB, Role.RESPONDER, rng_bytes=lambda n: next(draws_r))
    hello_i, reply = hellos(initiator, responder)
    assert len(reply) == 2
    hello_r, auth_r = reply
    h_i, h_r = Hello.decode(hello_i), Hello.decode(hello_r)
    assert (h_i.node_public_key, h_r.node_public_key) == (ALICE.public_key, BOB.public_key)
    assert (h_i.nonce, h_r.nonce) == (b"\x11" * 32, b"\x22" * 32)
    assert (h_i.version, h_i.rekey_interval) == (PROTOCOL_VERSION, REKEY_INTERVAL) == (2, 65536)
    ((ek, dk),) = made
    assert h_i.mlkem == ek and len(h_r.mlkem) == 1088
    assert initiator.receive(hello_r) == []
    (auth_i,) = initiator.receive(auth_r)
    assert initiator.is_done
    assert not responder.is_done
    assert responder.receive(auth_i) == []
    assert responder.is_done

    # X25519 (RFC 7748) and ML-KEM-768 decapsulation by other implementations: pycryptodome, pqcrypto.
    ours = ECC.construct(curve="Curve25519", seed=b"\x01" * 32)
    assert h_i.x25519_public == ours.public_key().export_key(format="raw")
    ss_dh = key_agreement(static_priv=ours, static_pub=import_x25519_public_key(h_r.x25519_public), kdf=lambda x: x)
    ss_kem = pq_ml_kem_768.decaps(dk, h_r.mlkem)
    salt = sha3(b"QENEX/v2/p2p-session" + hello_i + hello_r)
    assert salt == session_hash(hello_i, hello_r) == initiator.session_hash == responder.session_hash
    okm = _hkdf_sha256(ss_kem + ss_dh, salt, b"QENEX/v2/p2p-session-keys", 64)
    k_i2r, k_r2i = okm[:32], okm[32:]

    sig_r = Auth.decode(_open(k_r2i, 0, auth_r)).signature
    sig_i = Auth.decode(_open(k_i2r, 0, auth_i)).signature
    digest_r = sha3(b"QENEX/v2/handshake" + hello_i + hello_r + b"\x01")
    digest_i = sha3(b"QENEX/v2/handshake" + hello_i + hello_r + b"\x00")
    assert digest_i == transcript_hash(hello_i, hello_r, Role.INITIATOR)
    verify(BOB.scheme_tag, BOB.public_key, Context.HANDSHAKE, digest_r, sig_r)
    verify(ALICE.scheme_tag, ALICE.public_key, Context.HANDSHAKE, digest_i, sig_i)
    with pytest.raises(InvalidSignature):  # the role byte separates the two signatures
        verify(ALICE.scheme_tag, ALICE.public_key, Context.HANDSHAKE, digest_r, sig_i)

    # The sessions continue at frame 1 under the same keys.
    assert (initiator.session.sent, initiator.session.received) == (1, 1)
    assert _open(k_i2r, 1, initiator.session.seal(b"next")) == b"next"
    assert _open(k_r2i, 1, responder.session.seal(b"reply")) == b"reply"


def test_wrong_chain_id() -> None:
    with pytest.raises(HandshakeFailed, match="chain"):
        run(make(ALICE, Role.INITIATOR, chain_id="other"), make(BOB, Role.RESPONDER))


def test_wrong_genesis_hash() -> None:
    with pytest.raises(HandshakeFailed, match="genesis"):
        run(make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER, genesis=bytes(32)))


def test_wrong_version() -> None:
    with pytest.raises(HandshakeFailed, match="version"):
        run(make(ALICE, Role.INITIATOR, version=PROTOCOL_VERSION + 1), make(BOB, Role.RESPONDER))


def test_unlisted_initiator_is_refused_by_the_responder() -> None:
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    (hello_i,) = make(MALLORY, Role.INITIATOR, allowed=allowlist(MALLORY, BOB)).start()
    with pytest.raises(PeerNotAllowed, match="allowlist") as info:
        responder.receive(hello_i)  # refused from the Hello alone: no reply, nothing signed
    assert info.value.node_id == MALLORY.address


def test_unlisted_responder_is_refused_by_the_initiator() -> None:
    initiator = make(ALICE, Role.INITIATOR)
    (hello_i,) = initiator.start()
    impostor_r = make(MALLORY, Role.RESPONDER, allowed=allowlist(ALICE, MALLORY))
    impostor_r.start()
    hello_r, _auth_r = impostor_r.receive(hello_i)
    with pytest.raises(PeerNotAllowed, match="allowlist"):
        initiator.receive(hello_r)


def test_refused_peer_is_refused_although_listed() -> None:
    """The network passes its bans as ``refused``: the listed peer is turned away at its Hello."""
    responder = make(BOB, Role.RESPONDER, refused={ALICE.address: "banned for another 30.0 s"})
    responder.start()
    with pytest.raises(PeerNotAllowed, match="banned for another 30.0 s") as info:
        responder.receive(make(ALICE, Role.INITIATOR).start()[0])
    assert info.value.node_id == ALICE.address
    run(make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER, refused={MALLORY.address: "banned"}))


def test_dialed_node_must_be_the_one_reached() -> None:
    carol = KeyPair.generate(ED25519)
    allowed = allowlist(ALICE, BOB, carol)
    initiator = make(ALICE, Role.INITIATOR, allowed=allowed, expected_peer=carol.address)
    with pytest.raises(HandshakeFailed, match="dialed node"):
        run(initiator, make(BOB, Role.RESPONDER, allowed=allowed))


def test_connection_to_ourselves_is_refused() -> None:
    with pytest.raises(HandshakeFailed, match="our own node key"):
        run(make(ALICE, Role.INITIATOR), make(ALICE, Role.RESPONDER))


def test_reflected_nonce_is_refused() -> None:
    """A listed peer whose Hello carries our own nonce (here both RNGs return the same bytes)."""
    nonce = b"\x07" * 32
    initiator = make(ALICE, Role.INITIATOR, rng_bytes=lambda n: nonce)
    responder = make(BOB, Role.RESPONDER, rng_bytes=lambda n: nonce)
    with pytest.raises(HandshakeFailed, match="nonce"):
        run(initiator, responder)
    # The initiator checks it too, whoever answers with its nonce.
    initiator = make(ALICE, Role.INITIATOR, rng_bytes=lambda n: nonce)
    (hello_i,) = initiator.start()
    genuine = make(BOB, Role.RESPONDER)
    genuine.start()
    hello_r, _ = genuine.receive(hello_i)
    with pytest.raises(HandshakeFailed, match="nonce"):
        initiator.receive(hello_with(hello_r, nonce=nonce))


def test_mismatched_rekey_interval_is_refused() -> None:
    with pytest.raises(HandshakeFailed, match="rekeys every 16 frames, we every 65536"):
        run(make(ALICE, Role.INITIATOR, rekey_interval=16), make(BOB, Role.RESPONDER))


# -- a listed key without its private key, and forged or misdirected signatures ---------------------


def test_listed_key_with_a_bad_signature_is_refused_by_the_initiator() -> None:
    """Mallory presents Bob's (public, listed) key and runs the protocol, but signs with her own key."""
    with pytest.raises(HandshakeFailed, match="signature does not verify"):
        run(make(ALICE, Role.INITIATOR), make(impostor(BOB, MALLORY), Role.RESPONDER))


def test_listed_key_with_a_bad_signature_is_refused_by_the_responder() -> None:
    responder = make(BOB, Role.RESPONDER)
    with pytest.raises(HandshakeFailed, match="signature does not verify"):
        run(make(impostor(ALICE, MALLORY), Role.INITIATOR), responder)
    assert not responder.is_done
    with pytest.raises(RuntimeError):
        _ = responder.session


def test_signature_under_another_context_is_refused() -> None:
    wrong = WrongContextKey(BOB.scheme_tag, BOB.private_key, BOB.public_key, BOB.address)
    with pytest.raises(HandshakeFailed, match="signature does not verify"):
        run(make(ALICE, Role.INITIATOR), make(wrong, Role.RESPONDER))


def test_signature_over_another_transcript_is_refused() -> None:
    other = OtherMessageKey(ALICE.scheme_tag, ALICE.private_key, ALICE.public_key, ALICE.address)
    with pytest.raises(HandshakeFailed, match="signature does not verify"):
        run(make(other, Role.INITIATOR), make(BOB, Role.RESPONDER))


def test_auth_from_an_earlier_session_is_refused() -> None:
    """Bob's real Auth from an earlier session does not open in a new one (fresh shares, new keys)."""
    old_i, old_r = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (_, old_auth_r) = hellos(old_i, old_r)
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (hello_r, _auth_r) = hellos(initiator, responder)
    initiator.receive(hello_r)
    with pytest.raises(HandshakeFailed, match="does not open"):
        initiator.receive(old_auth_r)


def test_reflected_auth_is_refused() -> None:
    """The responder gets its own Auth back: sealed under the other direction's key."""
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (_, auth_r) = hellos(initiator, responder)
    with pytest.raises(HandshakeFailed, match="does not open"):
        responder.receive(auth_r)


def test_unsealed_auth_is_refused() -> None:
    """A correct signature sent in the clear (the version 1 wire) does not open."""
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    hello_i, (hello_r, _auth_r) = hellos(initiator, responder)
    initiator.receive(hello_r)
    clear = Auth(BOB.sign(Context.HANDSHAKE, transcript_hash(hello_i, hello_r, Role.RESPONDER))).encode()
    with pytest.raises(HandshakeFailed, match="does not open"):
        initiator.receive(clear)


# -- ephemeral shares: a relay that swaps them, malformed ones ---------------------------------------


def test_relay_swapping_the_initiators_shares_cannot_finish() -> None:
    """A man in the middle replaces Alice's X25519 key and ML-KEM key with his own in Hello_I.

    Bob answers the relay's shares and signs that transcript; Alice holds another transcript, derives
    other keys, and Bob's Auth does not open for her. Neither side finishes.
    """
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    (hello_i,) = initiator.start()
    responder.start()
    relay = make(ALICE, Role.INITIATOR)  # only to make fresh shares of the right form
    relay_hello = Hello.decode(relay.start()[0])
    forged = hello_with(hello_i, x25519_public=relay_hello.x25519_public, mlkem=relay_hello.mlkem)
    hello_r, auth_r = responder.receive(forged)
    assert initiator.receive(hello_r) == []
    with pytest.raises(HandshakeFailed, match="does not open"):
        initiator.receive(auth_r)


def test_relay_swapping_the_responders_x25519_share_cannot_finish() -> None:
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (hello_r, auth_r) = hellos(initiator, responder)
    other = Hello.decode(make(BOB, Role.INITIATOR).start()[0]).x25519_public
    initiator.receive(hello_with(hello_r, x25519_public=other))
    with pytest.raises(HandshakeFailed, match="does not open"):
        initiator.receive(auth_r)


def test_altered_mlkem_ciphertext_cannot_finish() -> None:
    """ML-KEM's implicit rejection: a changed ciphertext gives another secret, so Auth_R fails to open."""
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (hello_r, auth_r) = hellos(initiator, responder)
    ct = bytearray(Hello.decode(hello_r).mlkem)
    ct[100] ^= 1
    initiator.receive(hello_with(hello_r, mlkem=bytes(ct)))
    with pytest.raises(HandshakeFailed, match="does not open"):
        initiator.receive(auth_r)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mlkem", b"\x00" * 1088, "encapsulation key is 1088 bytes"),
        ("mlkem", b"\xff" * 1184, "bad ephemeral share"),  # fails the FIPS 203 modulus check
        ("x25519_public", bytes(32), "low-order point"),
        ("x25519_public", (1).to_bytes(32, "little"), "low-order point"),
    ],
)
def test_malformed_initiator_shares_are_refused(field: str, value: bytes, message: str) -> None:
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    (hello_i,) = make(ALICE, Role.INITIATOR).start()
    with pytest.raises(HandshakeFailed, match=message):
        responder.receive(hello_with(hello_i, **{field: value}))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("mlkem", b"\x00" * 1184, "ciphertext is 1184 bytes"), ("x25519_public", bytes(32), "low-order point")],
)
def test_malformed_responder_shares_are_refused(field: str, value: bytes, message: str) -> None:
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (hello_r, _auth_r) = hellos(initiator, responder)
    with pytest.raises(HandshakeFailed, match=message):
        initiator.receive(hello_with(hello_r, **{field: value}))


def test_sessions_of_both_sides_talk_to_each_other() -> None:
    initiator, responder = make(ALICE, Role.INITIATOR, max_message=100), make(BOB, Role.RESPONDER, max_message=100)
    run(initiator, responder)
    a, b = initiator.session, responder.session
    assert a.max_message == b.max_message == 100
    for i in range(5):
        assert b.open(a.seal(b"ping %d" % i)) == b"ping %d" % i
        assert a.open(b.seal(b"pong %d" % i)) == b"pong %d" % i
    assert (a.sent, a.received, b.sent, b.received) == (6, 6, 6, 6)  # frame 0 of each was the Auth
    with pytest.raises(ValueError, match="over the limit"):
        a.seal(b"x" * 101)


def test_handshake_failed_is_a_remote_protocol_error() -> None:
    assert issubclass(HandshakeFailed, RemoteProtocolError)


def test_failed_handshake_stays_failed() -> None:
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    with pytest.raises(HandshakeFailed):
        responder.receive(b"garbage")
    with pytest.raises(HandshakeFailed, match="already failed"):
        responder.receive(make(ALICE, Role.INITIATOR).start()[0])
    with pytest.raises(RuntimeError):
        _ = responder.peer_id


def test_local_misuse_is_a_runtime_error() -> None:
    hs = make(ALICE, Role.INITIATOR)
    with pytest.raises(RuntimeError):
        hs.receive(b"")
    hs.start()
    with pytest.raises(RuntimeError):
        hs.start()


def test_misconfigured_allowlist_is_refused() -> None:
    with pytest.raises(ValueError, match="not the address"):
        make(ALICE, Role.INITIATOR, allowed={BOB.address: (ALICE.scheme_tag, ALICE.public_key)})


def test_oversize_handshake_message_is_refused() -> None:
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    (hello_i,) = make(ALICE, Role.INITIATOR).start()
    big = hello_with(hello_i, node_public_key=b"k" * MAX_HANDSHAKE_MESSAGE)
    with pytest.raises(HandshakeFailed, match="malformed Hello"):
        responder.receive(big)


# -- garbage: arbitrary bytes at every step raise only HandshakeFailed ------------------------------


def _expect_only_handshake_failed(hs: Handshake, data: bytes) -> None:
    with pytest.raises(HandshakeFailed, match=".+"):  # anything else escapes and fails the test
        hs.receive(data)


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_garbage_as_initiator_hello(data: bytes) -> None:
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    _expect_only_handshake_failed(responder, data)


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_garbage_as_responder_hello(data: bytes) -> None:
    initiator = make(ALICE, Role.INITIATOR)
    initiator.start()
    _expect_only_handshake_failed(initiator, data)


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_garbage_as_auth(data: bytes) -> None:
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (hello_r, _auth_r) = hellos(initiator, responder)
    initiator.receive(hello_r)
    _expect_only_handshake_failed(initiator, data)


@given(
    st.builds(
        Hello,
        version=st.integers(-(2**70), 2**70),
        chain_id=st.text(max_size=20),
        genesis_hash=st.binary(min_size=32, max_size=32),
        rekey_interval=st.integers(-(2**70), 2**70),
        node_scheme=st.integers(-(2**70), 2**70),
        node_public_key=st.binary(max_size=64),
        nonce=st.binary(min_size=32, max_size=32),
        x25519_public=st.binary(min_size=32, max_size=32),
        mlkem=st.binary(max_size=1200),
    )
)
def test_well_formed_but_wrong_hellos(hello: Hello) -> None:
    """Decodable Hellos with arbitrary field values (huge scheme tags too) raise only HandshakeFailed."""
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    _expect_only_handshake_failed(responder, hello.encode())


@settings(max_examples=50, deadline=None)
@given(
    field=st.sampled_from(["x25519_public", "mlkem", "nonce"]),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_listed_hello_with_arbitrary_shares_raises_only_handshake_failed(field: str, index: int, mask: int) -> None:
    """Alice's own Hello with one byte of a share changed: the responder answers or refuses cleanly,
    and the initiator, whose transcript differs, never accepts the answer."""
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    (hello_i,) = initiator.start()
    responder.start()
    value = bytearray(getattr(Hello.decode(hello_i), field))
    value[index % len(value)] ^= mask
    try:
        hello_r, auth_r = responder.receive(hello_with(hello_i, **{field: bytes(value)}))
    except HandshakeFailed:
        return
    with pytest.raises(HandshakeFailed):  # at the Hello (a reflected nonce) or at the Auth
        run_to_end(initiator, [hello_r, auth_r])


def run_to_end(hs: Handshake, messages: list[bytes]) -> None:
    for message in messages:
        hs.receive(message)
