"""The secure transport: primitives against their RFC vectors, the sealed session under a man in the
middle, rekeying, fuzzing, admission limits, peer scoring and bans, and floods.

The sans-IO parts (``SecureSession``, ``p2p.limits``) are driven directly; the network parts run real
``PeerNetwork`` objects over TCP on 127.0.0.1 (ports picked by the OS, reported through
``task_status``, as in ``test_p2p_network.py`` whose helpers are reused), with a relay in between that
alters frames. Every wait is bounded by a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.PublicKey import MLKEM
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pqcrypto.kem import ml_kem_768 as pq_ml_kem_768

from crypto.aead import chacha20poly1305_open, chacha20poly1305_seal
from crypto.exceptions import InvalidCiphertext, InvalidKey
from crypto.kex import (
    hkdf_sha256,
    mlkem768_decaps,
    mlkem768_encaps,
    mlkem768_keypair,
    x25519,
    x25519_keypair,
)
from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519
from p2p.exceptions import (
    DecryptionFailed,
    FrameTooLarge,
    RemoteProtocolError,
    SessionClosed,
    SessionExhausted,
)
from p2p.framing import FrameDecoder, encode_frame
from p2p.handshake import Handshake, Role
from p2p.limits import PENALTY_BAD_FRAME, AttemptLimiter, PeerScores, TokenBucket
from p2p.network import PeerNetwork
from p2p.session import MAX_COUNTER, TAG_LEN, SecureSession, derive_session_keys, frame_nonce, rekey
from tests.test_p2p_network import (
    CHAIN,
    DEADLINE,
    GENESIS,
    HOST,
    Inbound,
    Node,
    RawPeer,
    allowlist,
    expect_closed,
    keys_ordered,
    raw_handshake,
    read_frame,
    start_cluster,
    start_node,
    wait_fully_connected,
    wait_until,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def session_pair(**kwargs: Any) -> tuple[SecureSession, SecureSession]:
    """Two ends of one session (what a completed handshake gives each side)."""
    return SecureSession(KEY_A, KEY_B, **kwargs), SecureSession(KEY_B, KEY_A, **kwargs)


# -- primitives against their references ------------------------------------------------------------


def test_x25519_rfc7748_vectors() -> None:
    """RFC 7748 §5.2 (one scalar multiplication) and §6.1 (Alice and Bob)."""
    scalar = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert x25519(scalar, u).hex() == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    _, alice_public = x25519_keypair(lambda n: alice)
    _, bob_public = x25519_keypair(lambda n: bob)
    assert alice_public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob_public.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert x25519(alice, bob_public).hex() == x25519(bob, alice_public).hex() == shared


@pytest.mark.parametrize("point", [bytes(32), (1).to_bytes(32, "little"), b"\x01" + bytes(30) + b"\x80"])
def test_x25519_refuses_low_order_points(point: bytes) -> None:
    private, _ = x25519_keypair()
    with pytest.raises(InvalidKey, match="low-order|32 bytes"):
        x25519(private, point)
    with pytest.raises(InvalidKey):
        x25519(private, b"short")


def test_chacha20poly1305_rfc8439_vector() -> None:
    """RFC 8439 §2.8.2: the AEAD test vector, and a flipped tag bit refused."""
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
        b"sunscreen would be it."
    )
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("070000004041424344454647")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    sealed = chacha20poly1305_seal(key, nonce, plaintext, aad)
    assert sealed[:16].hex() == "d31a8d34648e60db7b86afbc53ef7ec2"
    assert sealed[-16:].hex() == "1ae10b594f09e26a7e902ecbd0600691"
    assert chacha20poly1305_open(key, nonce, sealed, aad) == plaintext
    with pytest.raises(InvalidCiphertext):
        chacha20poly1305_open(key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad)
    with pytest.raises(InvalidCiphertext, match="shorter"):
        chacha20poly1305_open(key, nonce, sealed[:15], aad)


def test_hkdf_sha256_rfc5869_vector() -> None:
    """RFC 5869 Appendix A.1 (test case 1)."""
    okm = hkdf_sha256(b"\x0b" * 22, salt=bytes(range(13)), info=bytes(range(0xF0, 0xFA)), length=42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    with pytest.raises(ValueError, match="length"):
        hkdf_sha256(b"x", salt=b"", info=b"", length=255 * 32 + 1)


def test_ml_kem_768_interoperates_with_pycryptodome() -> None:
    """FIPS 203 keys made by pycryptodome (from a fixed seed) work with pqcrypto's encaps/decaps, and
    pycryptodome accepts pqcrypto's keys (its pairwise check encapsulates and decapsulates with them)."""
    theirs = MLKEM.construct(param_set=MLKEM.ML_KEM_768, seed=bytes(range(64)))
    ciphertext, secret = mlkem768_encaps(theirs.ek)
    assert len(ciphertext) == 1088 and len(secret) == 32
    assert mlkem768_decaps(theirs.expanded_dk, ciphertext) == secret
    assert pq_ml_kem_768.decaps(theirs.expanded_dk, ciphertext) == secret
    ek, dk = mlkem768_keypair()
    assert MLKEM.construct(param_set=MLKEM.ML_KEM_768, expanded_dk=dk).ek == ek


def test_ml_kem_768_refuses_malformed_inputs() -> None:
    ek, dk = mlkem768_keypair()
    with pytest.raises(InvalidKey, match="1184 bytes"):
        mlkem768_encaps(ek[:-1])
    with pytest.raises(InvalidKey, match="bad ML-KEM-768"):
        mlkem768_encaps(b"\xff" * 1184)  # coefficients over q: fails the FIPS 203 §7.2 modulus check
    with pytest.raises(InvalidKey, match="1088 bytes"):
        mlkem768_decaps(dk, b"\x00" * 1087)
    ciphertext, secret = mlkem768_encaps(ek)
    altered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    assert mlkem768_decaps(dk, altered) != secret  # implicit rejection: another secret, no error


# -- the sealed session (sans-IO) -------------------------------------------------------------------


def test_frame_nonce_layout() -> None:
    assert frame_nonce(0) == bytes(12)
    assert frame_nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert frame_nonce(MAX_COUNTER - 1) == bytes(4) + b"\xfe" + b"\xff" * 7  # little-endian
    with pytest.raises(ValueError, match="counter"):
        frame_nonce(MAX_COUNTER)


def test_seal_matches_an_independent_chacha20poly1305() -> None:
    a, _ = session_pair()
    for counter in range(3):
        sealed = a.seal(b"message %d" % counter)
        cipher = ChaCha20_Poly1305.new(key=KEY_A, nonce=bytes(4) + counter.to_bytes(8, "little"))
        assert cipher.decrypt_and_verify(sealed[:-16], sealed[-16:]) == b"message %d" % counter


def test_session_keys_differ_per_direction_and_per_input() -> None:
    k1, k2 = derive_session_keys(b"\x01" * 32, b"\x02" * 32, b"h" * 32)
    assert k1 != k2 and len(k1) == len(k2) == 32
    assert derive_session_keys(b"\x01" * 32, b"\x03" * 32, b"h" * 32) != (k1, k2)  # either secret counts
    assert derive_session_keys(b"\x04" * 32, b"\x02" * 32, b"h" * 32) != (k1, k2)
    assert derive_session_keys(b"\x01" * 32, b"\x02" * 32, b"g" * 32) != (k1, k2)  # the transcript counts


def test_round_trip_both_directions() -> None:
    a, b = session_pair()
    for i in range(50):
        assert b.open(a.seal(b"a%d" % i)) == b"a%d" % i
        assert a.open(b.seal(b"b%d" % i)) == b"b%d" % i
    assert (a.sent, a.received) == (50, 50)
    assert b.open(a.seal(b"")) == b""


# Frames as a relay sees them: ("deliver", i) passes frame i; the alterations:
Alteration = Callable[[list[bytes], int], list[bytes]]


def _flip(frames: list[bytes], k: int) -> list[bytes]:
    frame = bytearray(frames[k])
    frame[len(frame) // 2] ^= 0x04
    return [*frames[:k], bytes(frame), *frames[k + 1 :]]


ALTERATIONS: dict[str, tuple[Alteration, int]] = {
    # name: (alteration of the frame list at k, how many frames the receiver still gets: k or k + 1)
    "flip": (_flip, 0),
    "drop": (lambda f, k: f[:k] + f[k + 1 :], 0),
    "replay": (lambda f, k: f[: k + 1] + [f[k]] + f[k + 1 :], 1),
    "reorder": (lambda f, k: [*f[:k], f[k + 1], f[k], *f[k + 2 :]], 0),
    "truncate": (lambda f, k: [*f[:k], f[k][:-1], *f[k + 1 :]], 0),
    "tag-only": (lambda f, k: [*f[:k], f[k][-TAG_LEN:], *f[k + 1 :]], 0),
    "empty": (lambda f, k: [*f[:k], b"", *f[k + 1 :]], 0),
}


@pytest.mark.parametrize("name", sorted(ALTERATIONS))
@settings(max_examples=30, deadline=None)
@given(count=st.integers(2, 30), data=st.data())
def test_altered_frame_kills_the_session(name: str, count: int, data: st.DataObject) -> None:
    """A relay alters frame k: the receiver gets exactly the frames before it (plus, for a replay, the
    original once), then ``DecryptionFailed``; every later frame, genuine or not, is refused too."""
    alteration, extra = ALTERATIONS[name]
    k = data.draw(st.integers(0, count - 2), label="k")
    a, b = session_pair(rekey_interval=data.draw(st.integers(1, 8), label="rekey_interval"))
    messages = [b"message %d" % i for i in range(count)]
    frames = [a.seal(m) for m in messages]
    delivered: list[bytes] = []
    with pytest.raises(DecryptionFailed) as info:
        open_all(b, alteration(frames, k), delivered)
    assert delivered == messages[: k + extra]
    assert info.value.counter == k + extra
    assert b.failed
    for frame in frames:  # the session is dead: even the genuine frames are refused now
        with pytest.raises(DecryptionFailed, match="already failed"):
            b.open(frame)
    with pytest.raises(SessionClosed, match="failed"):
        b.seal(b"reply")


def open_all(session: SecureSession, frames: list[bytes], delivered: list[bytes]) -> None:
    """Open ``frames`` in order, appending each plaintext to ``delivered`` until one fails."""
    for frame in frames:
        delivered.append(session.open(frame))


def test_frames_of_the_other_direction_or_another_session_do_not_open() -> None:
    a, b = session_pair()
    with pytest.raises(DecryptionFailed):
        a.open(a.seal(b"reflected"))  # our own frame, sent back
    c, d = SecureSession(KEY_A, KEY_A), SecureSession(KEY_B, KEY_B)
    with pytest.raises(DecryptionFailed):
        d.open(c.seal(b"other session"))


def test_rekeying_across_many_frames() -> None:
    """Interval 3: keys change every 3 frames per direction; thousands of frames still open in order,
    and frame n is sealed under rekey^(n // 3)(k0) with nonce n (checked with pycryptodome)."""
    a, b = session_pair(rekey_interval=3)
    key = KEY_A
    for n in range(3000):
        if n and n % 3 == 0:
            key = rekey(key)
        sealed = a.seal(n.to_bytes(4, "big"))
        if n % 97 == 0 or n < 10:
            cipher = ChaCha20_Poly1305.new(key=key, nonce=frame_nonce(n))
            assert cipher.decrypt_and_verify(sealed[:-16], sealed[-16:]) == n.to_bytes(4, "big")
        assert b.open(sealed) == n.to_bytes(4, "big")
    assert rekey(KEY_A) != KEY_A and rekey(rekey(KEY_A)) != rekey(KEY_A)
    # Both sides must agree on the interval: a receiver rekeying at another point fails at once.
    c, d = SecureSession(KEY_A, KEY_B, rekey_interval=3), SecureSession(KEY_B, KEY_A, rekey_interval=4)
    frames = [c.seal(b"x") for _ in range(4)]
    assert [d.open(f) for f in frames[:3]] == [b"x"] * 3
    with pytest.raises(DecryptionFailed):
        d.open(frames[3])


def test_counter_never_wraps() -> None:
    a, b = session_pair()
    # Jump to the end of the counter space (2**64 frames cannot be sent in a test).
    a._send.counter = b._receive.counter = MAX_COUNTER - 1  # noqa: SLF001
    assert b.open(a.seal(b"last")) == b"last"
    with pytest.raises(SessionExhausted):
        a.seal(b"one too many")


def test_message_limit_is_checked_before_decryption() -> None:
    a, b = session_pair(max_message=64)
    with pytest.raises(ValueError, match="over the limit"):
        a.seal(b"x" * 65)  # our own fault
    big = SecureSession(KEY_A, KEY_B, max_message=1000).seal(b"x" * 65)
    with pytest.raises(FrameTooLarge) as info:
        b.open(big)  # the peer's fault, refused from the length alone
    assert (info.value.size, info.value.limit) == (65, 64)
    assert b.max_frame == 64 + TAG_LEN
    with pytest.raises(DecryptionFailed):
        b.open(a.seal(b"fine"))  # dead after that


@pytest.mark.parametrize(
    "kwargs", [{"rekey_interval": 0}, {"rekey_interval": 2**32 + 1}, {"max_message": -1}, {"max_message": 2**32}]
)
def test_session_configuration_errors(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="rekey_interval|max_message"):
        SecureSession(KEY_A, KEY_B, **kwargs)
    with pytest.raises(ValueError, match="32 bytes"):
        SecureSession(KEY_A[:31], KEY_B)


# -- fuzzing the frame and session decoder ----------------------------------------------------------


def _receive_all(data_chunks: list[bytes], limit: int, delivered: list[bytes]) -> None:
    """What a receiver does with bytes from the wire: frame them, open each frame, deliver it."""
    decoder = FrameDecoder(limit + TAG_LEN)
    session = SecureSession(KEY_B, KEY_A, max_message=limit)
    for chunk in data_chunks:
        for frame in decoder.feed(chunk):
            delivered.append(session.open(frame))


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=8), st.integers(0, 300))
@example([b"\x00\x00\x00\x10" + bytes(16)], 100)  # a frame holding only a (wrong) tag
@example([b"\xff\xff\xff\xff"], 100)  # the largest header
def test_arbitrary_bytes_raise_only_declared_errors(chunks: list[bytes], limit: int) -> None:
    delivered: list[bytes] = []
    try:
        _receive_all(chunks, limit, delivered)
    except (FrameTooLarge, DecryptionFailed):  # the declared errors; anything else fails the test
        pass
    assert delivered == []  # nothing forged ever opens
    assert issubclass(FrameTooLarge, RemoteProtocolError) and issubclass(DecryptionFailed, RemoteProtocolError)


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=100), min_size=1, max_size=10),
    st.integers(min_value=0),
    st.integers(1, 255),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_genuine_stream_with_one_byte_changed_delivers_only_a_genuine_prefix(
    messages: list[bytes], position: int, mask: int, cuts: list[int]
) -> None:
    """Any single byte of the wire changed (header or body), any chunking: the receiver delivers a
    prefix of what was sent, and fails or waits for more bytes; it never delivers an altered message."""
    sender = SecureSession(KEY_A, KEY_B, max_message=100)
    wire = bytearray(b"".join(encode_frame(sender.seal(m)) for m in messages))
    wire[position % len(wire)] ^= mask
    points = sorted({c % (len(wire) + 1) for c in cuts})
    bounds = [0, *points, len(wire)]
    chunks = [bytes(wire[x:y]) for x, y in zip(bounds, bounds[1:], strict=False)]
    delivered: list[bytes] = []
    decoder = FrameDecoder(100 + TAG_LEN)
    receiver = SecureSession(KEY_B, KEY_A, max_message=100)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                delivered.append(receiver.open(frame))
    except (FrameTooLarge, DecryptionFailed):
        pass
    assert delivered == messages[: len(delivered)]
    assert len(delivered) < len(messages)  # the altered frame itself never opens


# -- limits and scores (sans-IO) --------------------------------------------------------------------


def test_token_bucket_charges_and_refills() -> None:
    bucket = TokenBucket(rate=100.0, burst=50.0, now=0.0)
    assert bucket.charge(50, 0.0) == 0.0  # the burst
    assert bucket.charge(30, 0.0) == pytest.approx(0.3)  # 30 bytes of debt at 100 B/s
    assert bucket.tokens(0.3) == pytest.approx(0.0)
    assert bucket.charge(10, 0.5) == 0.0  # 20 bytes refilled by then
    assert bucket.tokens(100.0) == 50.0  # never above the burst
    assert bucket.charge(1000, 100.0) == pytest.approx(9.5)  # a big read: wait it off
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0.0, burst=1.0, now=0.0)


def test_token_bucket_long_run_rate() -> None:
    """Reading as fast as allowed, a reader that waits what ``charge`` says gets ``rate`` bytes/s."""
    bucket = TokenBucket(rate=1000.0, burst=100.0, now=0.0)
    now, total = 0.0, 0
    while now < 60.0:
        total += 4096
        now += bucket.charge(4096, now)
    assert total <= 1000.0 * now + 100 + 4096


def test_attempt_limiter_sliding_window_and_memory_bound() -> None:
    limiter: AttemptLimiter[str] = AttemptLimiter(3, 10.0, max_keys=4)
    assert [limiter.allow("1.2.3.4", t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    assert limiter.allow("5.6.7.8", 3.0)  # another address is not affected
    assert not limiter.allow("1.2.3.4", 9.9)
    assert limiter.allow("1.2.3.4", 10.5)  # the attempt at 0.0 left the window
    for i in range(100):
        limiter.allow(f"10.0.0.{i}", 11.0)
    assert len(limiter) <= 4


def test_scores_penalize_recover_ban_and_unban() -> None:
    scores: PeerScores[str] = PeerScores(threshold=-100.0, decay=5.0, ban_seconds=60.0)
    assert scores.score("p", 0.0) == 0.0
    assert not scores.penalize("p", 50.0, 0.0)
    assert scores.score("p", 0.0) == -50.0
    assert scores.score("p", 4.0) == -30.0  # recovering at 5 points/s
    assert scores.score("p", 100.0) == 0.0  # never above neutral
    assert not scores.penalize("p", 50.0, 4.0)  # -80
    assert scores.penalize("p", 20.0, 4.0)  # -100: banned
    assert scores.banned_until("p", 4.0) == 64.0
    assert scores.bans(10.0) == {"p": 64.0}
    assert not scores.penalize("p", 1000.0, 10.0)  # already banned; the ban is not extended
    assert scores.banned_until("p", 63.9) == 64.0
    assert scores.banned_until("p", 64.0) is None  # over: a fresh start
    assert scores.score("p", 64.0) == 0.0
    assert scores.bans(64.0) == {}
    with pytest.raises(ValueError, match="points"):
        scores.penalize("p", -1.0, 70.0)


def test_occasional_bad_messages_below_the_recovery_rate_never_ban() -> None:
    scores: PeerScores[str] = PeerScores(threshold=-100.0, decay=5.0, ban_seconds=60.0)
    assert not any(scores.penalize("p", 10.0, 2.0 * i) for i in range(10_000))  # 5 points/s on average
    assert any(scores.penalize("q", 10.0, 0.1 * i) for i in range(100))  # 100 points/s: banned


# -- a man in the middle between two PeerNetworks ---------------------------------------------------


class TamperingRelay:
    """A TCP relay on 127.0.0.1 in front of ``target_port`` that alters the frames of its first
    connection in one direction ("to_responder": initiator -> responder, or "to_initiator").

    Frames are counted from the first handshake message: towards the responder they are Hello_I (0),
    Auth_I (1), then the messages; towards the initiator Hello_R (0), Auth_R (1), then the messages.
    Later connections are relayed untouched, so the peers can reconnect through it. ``window`` is how
    many frames from ``index`` on the alteration needs to see (2 to swap two frames).
    """

    def __init__(self, target_port: int, direction: str, alteration: Alteration, index: int, window: int = 1) -> None:
        self.target_port = target_port
        self.direction = direction
        self.alteration = alteration
        self.index = index
        self.window = window
        self.port = 0
        self.connections = 0
        self.altered = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        first = self.connections == 1
        async with client:
            try:
                upstream = await trio.open_tcp_stream(HOST, self.target_port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                tamper_up = first and self.direction == "to_responder"
                tamper_down = first and self.direction == "to_initiator"
                nursery.start_soon(self._pump, client, upstream, tamper_up, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, tamper_down, nursery.cancel_scope)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, tamper: bool, done: trio.CancelScope) -> None:
        decoder = FrameDecoder(1 << 24)
        held: list[bytes] = []  # frames from index on, until the alteration can be applied
        count = 0
        try:
            while data := await src.receive_some(65536):
                if not tamper or self.altered.is_set():
                    await dst.send_all(data if not tamper else b"".join(encode_frame(f) for f in decoder.feed(data)))
                    continue
                out: list[bytes] = []
                for frame in decoder.feed(data):
                    if count < self.index:
                        out.append(frame)
                    else:
                        held.append(frame)
                    count += 1
                if len(held) >= self.window:  # alter frame ``index`` (held[0]) now
                    out += self.alteration([*out, *held], len(out))[len(out) :]
                    held.clear()
                    self.altered.set()
                await dst.send_all(b"".join(encode_frame(f) for f in out))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()


async def _events_until(node: Node, expected: list[tuple[str, Address]]) -> None:
    """Read ``node``'s peer events until ``expected`` has been seen in order (others may interleave)."""
    with trio.fail_after(DEADLINE):
        remaining = list(expected)
        while remaining:
            if await node.events.receive() == remaining[0]:
                remaining.pop(0)


@pytest.mark.parametrize(
    ("name", "direction"),
    [(name, "to_responder") for name in sorted(ALTERATIONS)] + [("flip", "to_initiator"), ("replay", "to_initiator")],
)
async def test_man_in_the_middle_breaks_the_session_and_nothing_altered_arrives(
    name: str, direction: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages 0..9 go through a relay that alters message 3 (its frame): the receiver gets messages
    0..2 (0..3 for a replay), never an altered one, drops the session, and scores the sender down; the
    peers then reconnect through the relay (untouched now) and talk again."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    alteration, extra = ALTERATIONS[name]
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        responder = await start_node(nursery, high, allowed, {}, score_recovery=0.0)
        relay = TamperingRelay(responder.port, direction, alteration, 2 + 3, window=2 if name == "reorder" else 1)
        await nursery.start(relay.run)
        initiator = await start_node(nursery, low, allowed, {high.address: (HOST, relay.port)}, score_recovery=0.0)
        sender, receiver = (initiator, responder) if direction == "to_responder" else (responder, initiator)
        await _events_until(receiver, [("connected", sender.id)])
        await _events_until(sender, [("connected", receiver.id)])

        messages = [b"message %d" % i for i in range(10)]
        for m in messages:
            assert sender.net.send(receiver.id, m)
        await _events_until(receiver, [("disconnected", sender.id), ("connected", sender.id)])
        await _events_until(sender, [("disconnected", receiver.id), ("connected", receiver.id)])
        assert relay.altered.is_set() and relay.connections >= 2

        assert sender.net.send(receiver.id, b"after reconnecting")
        got: list[bytes] = []
        with trio.fail_after(DEADLINE):
            while not got or got[-1] != b"after reconnecting":
                peer, payload = await receiver.inbound.receive()
                assert peer == sender.id
                got.append(payload)
        assert got[:-1] == messages[: 3 + extra]  # a genuine prefix: nothing altered, nothing after it
        assert any("DecryptionFailed" in r.getMessage() for r in caplog.records)
        assert receiver.net.score(sender.id) == -PENALTY_BAD_FRAME  # scored (no recovery in this test)
        assert sender.net.score(receiver.id) == 0.0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("index", [0, 1])
async def test_tampered_handshake_never_connects_and_blames_no_one(
    index: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A bit flipped in Hello_I (here inside the ML-KEM key, so the initiator finds the responder's Auth
    sealed under other keys) or in the sealed Auth_I (the responder cannot open it): the handshake
    fails, no one scores the key it saw (no peer was authenticated), and the honest retry through the
    now-clean relay connects."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        responder = await start_node(nursery, high, allowed, {})
        relay = TamperingRelay(responder.port, "to_responder", _flip, index)
        await nursery.start(relay.run)
        initiator = await start_node(nursery, low, allowed, {high.address: (HOST, relay.port)})
        await wait_until(lambda: responder.net.connected() == {low.address}, "the retry connected")
        assert relay.altered.is_set() and relay.connections >= 2
        failed = [r.getMessage() for r in caplog.records if "HandshakeFailed" in r.getMessage()]
        assert any("does not open under the session keys" in m for m in failed)
        assert responder.net.score(low.address) == initiator.net.score(high.address) == 0.0
        await wait_fully_connected([initiator, responder])
        assert initiator.net.send(high.address, b"hello")
        with trio.fail_after(DEADLINE):
            assert await responder.inbound.receive() == (low.address, b"hello")
        nursery.cancel_scope.cancel()


# -- admission ---------------------------------------------------------------------------------------


async def test_unlisted_key_is_refused_before_the_responder_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    (key,) = keys_ordered(1)
    mallory = KeyPair.generate(ED25519)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, key, allowlist(key), {})
        stream = await trio.open_tcp_stream(HOST, server.port)
        hs = Handshake(mallory, Role.INITIATOR, CHAIN, GENESIS, allowlist(mallory, key))
        await stream.send_all(encode_frame(hs.start()[0]))
        with trio.fail_after(DEADLINE):
            assert await read_frame(stream, FrameDecoder()) is None  # closed without a single frame back
        await stream.aclose()
        await wait_until(lambda: any("PeerNotAllowed" in r.getMessage() for r in caplog.records), "it is logged")
        assert server.net.connected() == frozenset()
        nursery.cancel_scope.cancel()


async def test_listed_key_with_a_bad_signature_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Mallory presents Alice's listed key and completes the key agreement, but cannot sign as Alice:
    refused, nothing delivered, and Alice (whose key was presented) is not blamed."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    alice, bob = keys_ordered(2)
    mallory = KeyPair.generate(ED25519)
    fake_alice = KeyPair(alice.scheme_tag, mallory.private_key, alice.public_key, alice.address)
    allowed = allowlist(alice, bob)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, bob, allowed, {})
        peer = await raw_handshake(server.port, fake_alice, allowed)  # done on Mallory's side...
        assert peer is not None
        await peer.stream.send_all(peer.seal(b"forged"))
        await expect_closed(peer.stream)  # ...but Bob checks Alice's signature and hangs up
        assert any("signature does not verify" in r.getMessage() for r in caplog.records)
        assert server.net.connected() == frozenset()
        assert server.net.score(alice.address) == 0.0
        assert server.inbound.statistics().current_buffer_used == 0  # "forged" never reached it
        nursery.cancel_scope.cancel()


async def test_silent_and_half_finished_handshakes_time_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, high, allowed, {}, handshake_timeout=0.3)
        silent = await trio.open_tcp_stream(HOST, server.port)
        half = await trio.open_tcp_stream(HOST, server.port)
        hs = Handshake(low, Role.INITIATOR, CHAIN, GENESIS, allowed)
        await half.send_all(encode_frame(hs.start()[0]))  # Hello_I, then never the Auth
        with trio.fail_after(DEADLINE):
            decoder = FrameDecoder()
            for _ in range(2):  # Bob answers with Hello_R and Auth_R ...
                frame = await read_frame(half, decoder)
                assert frame is not None
                hs.receive(frame)
        await expect_closed(half)  # ... and hangs up when the timeout passes
        await expect_closed(silent)
        timeouts = [r for r in caplog.records if "not completed within 0.3 s" in r.getMessage()]
        assert len(timeouts) == 2
        assert server.net.connected() == frozenset()
        nursery.cancel_scope.cancel()


async def test_attempts_per_ip_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="qenex.p2p")
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, high, allowed, {}, max_attempts_per_ip=3, attempt_window=600.0)
        peers = [await raw_handshake(server.port, low, allowed) for _ in range(3)]
        assert all(p is not None for p in peers)  # three attempts: all served
        assert await raw_handshake(server.port, low, allowed) is None  # the fourth: closed at accept
        assert any("over 3 attempts in 600 s" in r.getMessage() for r in caplog.records)
        for p in peers:
            assert p is not None
            await p.stream.aclose()
        nursery.cancel_scope.cancel()


async def _connect_when_room(port: int, key: KeyPair, allowed: dict[Address, tuple[int, bytes]]) -> RawPeer:
    """Handshake as ``key``, retrying (bounded) while the node still refuses at accept: after we close
    a connection, the node notices the close only once its handshake task runs."""
    with trio.fail_after(DEADLINE):
        while True:
            await trio.testing.wait_all_tasks_blocked()
            peer = await raw_handshake(port, key, allowed)
            if peer is not None:
                return peer


async def test_half_open_handshakes_from_one_ip_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    """Beyond ``max_pending_per_ip`` connections in the handshake from one IP, the next is refused at
    accept (even a listed peer's); once one closes, the listed peer gets in."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, high, allowed, {}, max_pending_per_ip=2, handshake_timeout=60.0)
        idle = [await trio.open_tcp_stream(HOST, server.port) for _ in range(2)]  # both in the handshake
        await trio.testing.wait_all_tasks_blocked()
        assert await raw_handshake(server.port, low, allowed) is None  # a third from 127.0.0.1: refused
        assert any("2 connections from that IP in the handshake" in r.getMessage() for r in caplog.records)
        await idle[0].aclose()
        peer = await _connect_when_room(server.port, low, allowed)
        await wait_until(lambda: server.net.connected() == {low.address}, "the peer is connected")
        await peer.stream.aclose()
        await idle[1].aclose()
        nursery.cancel_scope.cancel()


async def test_pending_handshakes_never_take_a_listed_peers_slot(caplog: pytest.LogCaptureFixture) -> None:
    """``max_pending_handshakes`` caps connections in the handshake; authenticated ones are not counted
    against it, and connections in the handshake are not counted against ``max_inbound_connections``:
    with more half-open handshakes than inbound slots, listed peers still connect."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    a, b, c, hub = keys_ordered(4)
    allowed = allowlist(a, b, c, hub)
    async with trio.open_nursery() as nursery:
        server = await start_node(
            nursery, hub, allowed, {}, max_inbound_connections=2, max_pending_handshakes=3, max_pending_per_ip=10,
            handshake_timeout=60.0,
        )
        idle = [await trio.open_tcp_stream(HOST, server.port) for _ in range(3)]  # 3 half-open > 2 inbound slots
        await trio.testing.wait_all_tasks_blocked()
        assert await raw_handshake(server.port, a, allowed) is None  # the pending cap is full: refused
        assert any("3 connections in the handshake already" in r.getMessage() for r in caplog.records)
        await idle.pop().aclose()
        peer_a = await _connect_when_room(server.port, a, allowed)  # a slot freed: the listed peer gets in
        await wait_until(lambda: server.net.connected() == {a.address}, "a is connected")
        # a, now authenticated, no longer holds a pending slot: b can handshake beside the 2 half-open ones
        peer_b = await raw_handshake(server.port, b, allowed)
        assert peer_b is not None
        await wait_until(lambda: server.net.connected() == {a.address, b.address}, "a and b are connected")
        # the 2 inbound slots are full with authenticated peers: a third listed peer is refused after
        # its handshake (the cap on authenticated connections is what refuses it, not the pending one)
        peer_c = await raw_handshake(server.port, c, allowed)
        assert peer_c is not None  # our side finished the handshake; the node then hangs up
        await expect_closed(peer_c.stream)
        assert any("2 authenticated connections open already" in r.getMessage() for r in caplog.records)
        assert server.net.connected() == {a.address, b.address}
        for stream in (peer_a.stream, peer_b.stream, *idle):
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_different_rekey_interval_is_refused_in_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    low, high = keys_ordered(2)
    allowed = allowlist(low, high)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, high, allowed, {}, rekey_interval=8)
        assert await raw_handshake(server.port, low, allowed) is None  # we speak 65,536
        assert await raw_handshake(server.port, low, allowed, rekey_interval=8) is not None
        assert any("rekeys every 65536 frames, we every 8" in r.getMessage() for r in caplog.records)
        nursery.cancel_scope.cancel()


# -- rekeying, floods, scoring and bans over the network ---------------------------------------------


async def test_rekeying_over_the_network() -> None:
    """Rekey every 4 frames: 300 messages each way, in batches the writers join, all arrive in order."""
    async with trio.open_nursery() as nursery:
        a, b = await start_cluster(nursery, keys_ordered(2), rekey_interval=4)
        await wait_fully_connected([a, b])
        for i in range(300):
            assert a.net.send(b.id, b"a%d" % i)
            assert b.net.send(a.id, b"b%d" % i)
        with trio.fail_after(DEADLINE):
            assert [await b.inbound.receive() for _ in range(300)] == [(a.id, b"a%d" % i) for i in range(300)]
            assert [await a.inbound.receive() for _ in range(300)] == [(b.id, b"b%d" % i) for i in range(300)]
        assert a.net.connected() == {b.id}
        nursery.cancel_scope.cancel()


async def test_flood_from_one_peer_does_not_stop_the_others() -> None:
    """A listed peer floods the hub with valid 32 KiB messages as fast as TCP lets it; the hub reads it
    at its inbound byte rate. An honest peer's messages all arrive, in order, while the flood is still
    going; the flooder is slowed, not banned (it broke no rule)."""
    flooder_key, honest_key, hub_key = keys_ordered(3)  # both dial the hub (the highest id)
    allowed = allowlist(flooder_key, honest_key, hub_key)
    async with trio.open_nursery() as nursery:
        hub = await start_node(
            nursery, hub_key, allowed, {}, inbound_bytes_per_second=1024 * 1024, inbound_burst_bytes=128 * 1024
        )
        flooder = await raw_handshake(hub.port, flooder_key, allowed)
        assert flooder is not None
        flood_sent = 0
        flood_scope = trio.CancelScope()

        async def flood() -> None:
            nonlocal flood_sent
            frame = b"F" * 32768
            with flood_scope:
                for _ in range(100_000):  # bounded; far more than the test waits for
                    await flooder.send(frame)
                    flood_sent += 1

        nursery.start_soon(flood)
        honest = await start_node(nursery, honest_key, allowed, {hub_key.address: (HOST, hub.port)})
        await wait_until(lambda: hub.net.connected() == {flooder_key.address, honest_key.address}, "both connected")

        flood_got = 0
        with trio.fail_after(DEADLINE):
            while flood_got < 8:  # the flood is under way
                peer, _ = await hub.inbound.receive()
                flood_got += peer == flooder_key.address
        messages = [b"vote %d" % i for i in range(20)]
        for m in messages:
            assert honest.net.send(hub_key.address, m)
        honest_got: list[bytes] = []
        with trio.fail_after(DEADLINE):
            while len(honest_got) < len(messages):
                peer, payload = await hub.inbound.receive()
                if peer == honest_key.address:
                    honest_got.append(payload)
                else:
                    flood_got += 1
        assert honest_got == messages
        assert flood_sent < 100_000  # still flooding when the honest messages were all in
        assert hub.net.connected() == {flooder_key.address, honest_key.address}
        assert hub.net.score(flooder_key.address) == 0.0
        flood_scope.cancel()
        await flooder.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_fast_honest_peer_loses_nothing_under_the_rate_limit() -> None:
    """1.5 MiB through a 512 KiB/s inbound limit: slower, but every message arrives, in order."""
    async with trio.open_nursery() as nursery:
        low, high = await start_cluster(
            nursery, keys_ordered(2), inbound_bytes_per_second=512 * 1024, inbound_burst_bytes=64 * 1024
        )
        await wait_fully_connected([low, high])
        messages = [bytes([i % 256]) * 4096 for i in range(384)]
        for m in messages:
            assert low.net.send(high.id, m)
        with trio.fail_after(DEADLINE):
            got = [await high.inbound.receive() for _ in messages]
        assert got == [(low.id, m) for m in messages]
        assert high.net.score(low.id) == 0.0 and high.net.connected() == {low.id}
        nursery.cancel_scope.cancel()


async def test_penalized_peer_is_banned_refused_and_readmitted_after_the_ban(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The node reports bad messages from a peer: its score falls, at the threshold it is disconnected
    and banned; its redials are refused during the ban; after the ban it reconnects."""
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    async with trio.open_nursery() as nursery:
        low, high = await start_cluster(nursery, keys_ordered(2), ban_seconds=1.0, score_recovery=0.0)
        await wait_fully_connected([low, high])
        assert high.net.penalize(low.id, "undecodable message", 60.0) is False
        assert high.net.score(low.id) == -60.0 and high.net.connected() == {low.id}
        assert high.net.penalize(low.id, "undecodable message", 60.0) is True  # -120: banned
        assert low.id in high.net.banned()
        await wait_until(lambda: high.net.connected() == frozenset(), "the peer was disconnected")
        await wait_until(
            lambda: any("banned for another" in r.getMessage() for r in caplog.records), "a redial was refused"
        )
        await wait_fully_connected([low, high])  # after the ban
        assert high.net.banned() == {} and high.net.score(low.id) == 0.0
        assert low.net.send(high.id, b"welcome back")
        with trio.fail_after(DEADLINE):
            assert await high.inbound.receive() == (low.id, b"welcome back")
        nursery.cancel_scope.cancel()


async def test_banned_peer_is_not_dialed_until_the_ban_ends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qenex.p2p")
    async with trio.open_nursery() as nursery:
        low, high = await start_cluster(nursery, keys_ordered(2), ban_seconds=1.0)
        await wait_fully_connected([low, high])
        assert low.net.penalize(high.id, "forged vote", 1000.0) is True  # the dialing side bans
        await wait_until(lambda: any("not dialing banned peer" in r.getMessage() for r in caplog.records), "logged")
        assert high.id not in low.net.connected()
        await wait_fully_connected([low, high])
        nursery.cancel_scope.cancel()


async def test_send_queue_is_bounded_in_bytes() -> None:
    slow, hub = keys_ordered(2)
    allowed = allowlist(slow, hub)
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, hub, allowed, {}, send_queue_size=10_000, send_queue_bytes=100_000)
        conn = await raw_handshake(server.port, slow, allowed)  # never reads
        assert conn is not None
        await wait_until(lambda: server.net.connected() == {slow.address}, "connected")
        sent = 0
        with trio.fail_after(DEADLINE):
            while server.net.send(slow.address, b"y" * 30_000):
                sent += 1
                await trio.testing.wait_all_tasks_blocked()
        assert sent > 3  # the kernel buffers took some, then the queue filled: 3 x 30,000 bytes
        assert not server.net.send(slow.address, b"y" * 10_001)  # 100,001 bytes would be over the bound
        assert server.net.send(slow.address, b"z" * 10_000)  # exactly 100,000 bytes: fits
        assert not server.net.send(slow.address, b"z")
        await conn.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_full_bulk_lane_never_refuses_a_consensus_message() -> None:
    """Gossip fills the bulk lane toward a peer that does not read; an urgent (consensus) send is still
    taken, counted apart, and overtakes every queued gossip payload once the peer reads."""
    slow, hub = keys_ordered(2)
    allowed = allowlist(slow, hub)
    big = 1 << 20
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, hub, allowed, {}, send_queue_size=1, bulk_queue_size=4)
        conn = await raw_handshake(server.port, slow, allowed)  # reads nothing until told
        assert conn is not None
        await wait_until(lambda: server.net.connected() == {slow.address}, "connected")
        gossip: list[bytes] = []
        with trio.fail_after(DEADLINE):  # kernel buffers fill up, then the bulk lane (4 payloads)
            while server.net.send(slow.address, (b"gossip %d " % len(gossip)).ljust(big, b"g"), bulk=True):
                gossip.append((b"gossip %d " % len(gossip)).ljust(big, b"g"))
                await trio.testing.wait_all_tasks_blocked()
        assert len(gossip) > 4
        counters = server.net.counters
        assert (counters.refused_bulk, counters.refused_urgent) == (1, 0)
        assert server.net.send(slow.address, b"vote")  # its own lane: taken although gossip is full
        assert not server.net.send(slow.address, b"second vote")  # the urgent lane holds 1 at most
        assert (counters.refused_bulk, counters.refused_urgent) == (1, 1)
        with trio.fail_after(DEADLINE):
            got = [await conn.receive() for _ in range(len(gossip) + 1)]
        assert got == gossip[:-4] + [b"vote"] + gossip[-4:]  # written ahead of the 4 queued gossip payloads
        await conn.stream.aclose()
        nursery.cancel_scope.cancel()


def test_new_configuration_errors() -> None:
    (key,) = keys_ordered(1)
    inbound_send, _ = trio.open_memory_channel[Inbound](1)
    base: dict[str, Any] = {
        "identity": key,
        "chain_id": CHAIN,
        "genesis_hash": GENESIS,
        "listen_host": HOST,
        "listen_port": 0,
        "peers": {},
        "allowed": allowlist(key),
        "inbound": inbound_send,
    }
    for bad, match in [
        ({"max_frame_size": 2**32 - 16}, "max_frame_size"),
        ({"send_queue_bytes": 0}, "send_queue_bytes"),
        ({"bulk_queue_size": 0}, "bulk_queue_size"),
        ({"max_inbound_connections": 0}, "max_inbound_connections"),
        ({"max_pending_handshakes": 0}, "max_pending_handshakes"),
        ({"max_pending_per_ip": 0}, "max_pending_per_ip"),
        ({"attempt_window": 0.0}, "attempt_window"),
        ({"inbound_bytes_per_second": 0.0}, "inbound_bytes_per_second"),
        ({"ban_threshold": 1.0}, "ban_threshold"),
        ({"ban_seconds": 0.0}, "ban_seconds"),
        ({"rekey_interval": 0}, "rekey_interval"),
    ]:
        with pytest.raises(ValueError, match=match):
            PeerNetwork(**{**base, **bad})
    PeerNetwork(**{**base, "max_frame_size": 2**32 - 17})  # the largest that fits a sealed frame
