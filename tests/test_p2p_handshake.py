"""The sans-IO handshake: both roles succeed, and every mismatch or forgery raises HandshakeFailed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.abc import SignatureScheme
from crypto.exceptions import InvalidSignature
from crypto.hashing import sha3
from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519, ML_DSA_44, Context, verify
from p2p.exceptions import HandshakeFailed, RemoteProtocolError
from p2p.handshake import (
    MAX_HANDSHAKE_MESSAGE,
    PROTOCOL_VERSION,
    Auth,
    Handshake,
    Hello,
    Role,
    transcript_hash,
)

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
    )


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


def test_message_flow_and_transcript_follow_the_spec() -> None:
    """Hello_I; Hello_R + Auth_R; Auth_I; each Auth signs SHA3-256(domain || Hello_I || Hello_R || role)."""
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    hello_i, reply = hellos(initiator, responder)
    assert len(reply) == 2
    hello_r, auth_r = reply
    assert Hello.decode(hello_i).node_public_key == ALICE.public_key
    assert Hello.decode(hello_r).node_public_key == BOB.public_key
    assert initiator.receive(hello_r) == []
    (auth_i,) = initiator.receive(auth_r)
    assert initiator.is_done
    assert not responder.is_done
    assert responder.receive(auth_i) == []
    assert responder.is_done

    digest_r = sha3(b"QENEX/v1/handshake" + hello_i + hello_r + b"\x01")
    digest_i = sha3(b"QENEX/v1/handshake" + hello_i + hello_r + b"\x00")
    assert digest_i == transcript_hash(hello_i, hello_r, Role.INITIATOR)
    verify(BOB.scheme_tag, BOB.public_key, Context.HANDSHAKE, digest_r, Auth.decode(auth_r).signature)
    verify(ALICE.scheme_tag, ALICE.public_key, Context.HANDSHAKE, digest_i, Auth.decode(auth_i).signature)
    with pytest.raises(InvalidSignature):  # the role byte separates the two signatures
        verify(ALICE.scheme_tag, ALICE.public_key, Context.HANDSHAKE, digest_r, Auth.decode(auth_i).signature)


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
    with pytest.raises(HandshakeFailed, match="allowlist"):
        run(make(MALLORY, Role.INITIATOR, allowed=allowlist(MALLORY, BOB)), responder)


def test_unlisted_responder_is_refused_by_the_initiator() -> None:
    initiator = make(ALICE, Role.INITIATOR)
    (hello_i,) = initiator.start()
    impostor = make(MALLORY, Role.RESPONDER, allowed=allowlist(ALICE, MALLORY))
    impostor.start()
    hello_r, _auth_r = impostor.receive(hello_i)
    with pytest.raises(HandshakeFailed, match="allowlist"):
        initiator.receive(hello_r)


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
    initiator.start()
    hello_r = Hello(PROTOCOL_VERSION, CHAIN, GENESIS, BOB.scheme_tag, BOB.public_key, nonce).encode()
    with pytest.raises(HandshakeFailed, match="nonce"):
        initiator.receive(hello_r)


def test_signature_by_another_key_is_refused() -> None:
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    hello_i, (hello_r, _auth_r) = hellos(initiator, responder)
    initiator.receive(hello_r)
    digest = transcript_hash(hello_i, hello_r, Role.RESPONDER)
    forged = Auth(MALLORY.sign(Context.HANDSHAKE, digest)).encode()  # right transcript, wrong key
    with pytest.raises(HandshakeFailed, match="does not verify"):
        initiator.receive(forged)


def test_signature_over_another_transcript_is_refused() -> None:
    """Bob's real signature from an earlier session does not verify in a new one (fresh nonces)."""
    old_i, old_r = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (_, old_auth_r) = hellos(old_i, old_r)
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (hello_r, _auth_r) = hellos(initiator, responder)
    initiator.receive(hello_r)
    with pytest.raises(HandshakeFailed, match="does not verify"):
        initiator.receive(old_auth_r)


def test_reflected_auth_is_refused() -> None:
    """The responder gets its own Auth back: same transcript, but signed for the other role."""
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    _, (_, auth_r) = hellos(initiator, responder)
    with pytest.raises(HandshakeFailed, match="does not verify"):
        responder.receive(auth_r)


def test_wrong_context_signature_is_refused() -> None:
    initiator, responder = make(ALICE, Role.INITIATOR), make(BOB, Role.RESPONDER)
    hello_i, (hello_r, _auth_r) = hellos(initiator, responder)
    initiator.receive(hello_r)
    digest = transcript_hash(hello_i, hello_r, Role.RESPONDER)
    wrong_purpose = Auth(BOB.sign(Context.CONSENSUS, digest)).encode()
    with pytest.raises(HandshakeFailed, match="does not verify"):
        initiator.receive(wrong_purpose)


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
    big = Hello(PROTOCOL_VERSION, CHAIN, GENESIS, ALICE.scheme_tag, b"k" * MAX_HANDSHAKE_MESSAGE, b"n" * 32)
    with pytest.raises(HandshakeFailed, match="malformed Hello"):
        responder.receive(big.encode())


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
        node_scheme=st.integers(-(2**70), 2**70),
        node_public_key=st.binary(max_size=64),
        nonce=st.binary(min_size=32, max_size=32),
    )
)
def test_well_formed_but_wrong_hellos(hello: Hello) -> None:
    """Decodable Hellos with arbitrary field values (huge scheme tags too) raise only HandshakeFailed."""
    responder = make(BOB, Role.RESPONDER)
    responder.start()
    _expect_only_handshake_failed(responder, hello.encode())
