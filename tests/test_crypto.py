"""SHA3-256, the four signature schemes, FIPS 204 interop, addresses and key pairs."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import nacl.signing
import pqcrypto
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pqcrypto.sign import ml_dsa_44 as pq_ml_dsa_44
from pqcrypto.sign import ml_dsa_65 as pq_ml_dsa_65

from crypto.abc import SignatureScheme
from crypto.exceptions import InvalidKey, InvalidSignature, UnknownScheme
from crypto.hashing import HASH_LEN, ZERO_HASH, sha3, sha3_concat
from crypto.keys import ADDRESS_LEN, KeyPair, address_of
from crypto.signatures import (
    DEFAULT_SCHEME,
    ED25519,
    ML_DSA_44,
    ML_DSA_65,
    SLH_DSA_SHA2_128S,
    Context,
    MLDSAScheme,
    scheme_by_name,
    scheme_by_tag,
    verify,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "fips204.json").read_text())

SCHEMES: list[SignatureScheme] = [ML_DSA_44, ML_DSA_65, SLH_DSA_SHA2_128S, ED25519]
ML_DSA: dict[str, tuple[MLDSAScheme, ModuleType]] = {
    "ML-DSA-44": (ML_DSA_44, pq_ml_dsa_44),
    "ML-DSA-65": (ML_DSA_65, pq_ml_dsa_65),
}
MESSAGE = b"transfer 10 QNX to 0x00..01"
CONTEXTS = [Context.TRANSACTION, Context.CONSENSUS, Context.HANDSHAKE]

# One key per fast scheme for the property tests: (private_key, public_key).
_keys = {s.name: s.generate() for s in (ML_DSA_44, ML_DSA_65, ED25519)}

# Signing is fast except for SLH-DSA (about 0.3 s a signature): one signature per scheme, made once.
few = settings(max_examples=20, deadline=None)


def _flip(data: bytes, index: int, mask: int = 1) -> bytes:
    out = bytearray(data)
    out[index % len(out)] ^= mask
    return bytes(out)


# --- SHA3-256 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "digest"),
    [
        # FIPS 202 examples (NIST CSRC "SHA3-256" example values).
        (b"", "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"),
        (b"abc", "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "41c0dba2a9d6240849100376a8235e2c82e1b9998a999e21db32dd97496d3376",
        ),
        (b"\xa3" * 200, "79f38adec5c20307a98ef76e8324afbfd46cfd81b22e3973c65fa1bd9de31787"),
    ],
    ids=["empty", "abc", "448-bit", "1600-bit-a3"],
)
def test_sha3_known_answers(message: bytes, digest: str) -> None:
    assert sha3(message).hex() == digest
    assert sha3_concat(message).hex() == digest


def test_sha3_is_not_keccak_or_sha256() -> None:
    # Guards against swapping in SHA-256 or pre-standard Keccak-256 (c5d246...).
    assert sha3(b"") != hashlib.sha256(b"").digest()
    assert sha3(b"").hex() != "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@given(st.lists(st.binary(max_size=100), max_size=6))
def test_sha3_concat_is_hash_of_concatenation(parts: list[bytes]) -> None:
    digest = sha3_concat(*parts)
    assert digest == sha3(b"".join(parts))
    assert len(digest) == HASH_LEN


def test_zero_hash() -> None:
    assert ZERO_HASH == bytes(32)
    assert len(ZERO_HASH) == HASH_LEN == 32


# --- signature schemes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    scheme: SignatureScheme
    private_key: bytes
    public_key: bytes
    signature: bytes
    other_public_key: bytes


@pytest.fixture(scope="module", params=SCHEMES, ids=lambda s: s.name)
def signed(request: pytest.FixtureRequest) -> Signed:
    scheme: SignatureScheme = request.param
    sk, pk = scheme.generate()
    _, other_pk = scheme.generate()
    return Signed(scheme, sk, pk, scheme.sign(sk, Context.TRANSACTION, MESSAGE), other_pk)


def test_round_trip(signed: Signed) -> None:
    s = signed
    assert len(s.public_key) == s.scheme.public_key_len
    assert len(s.signature) == s.scheme.signature_len
    assert s.scheme.public_key(s.private_key) == s.public_key
    assert s.public_key != s.other_public_key
    assert s.scheme.verify(s.public_key, Context.TRANSACTION, MESSAGE, s.signature) is None
    assert verify(s.scheme.tag, s.public_key, Context.TRANSACTION, MESSAGE, s.signature) is None


@few
@given(bit=st.integers(min_value=0, max_value=8 * len(MESSAGE) - 1))
def test_flipped_message_bit_fails(signed: Signed, bit: int) -> None:
    message = _flip(MESSAGE, bit // 8, 1 << (bit % 8))
    with pytest.raises(InvalidSignature):
        signed.scheme.verify(signed.public_key, Context.TRANSACTION, message, signed.signature)


@few
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_flipped_signature_byte_fails(signed: Signed, index: int, mask: int) -> None:
    signature = _flip(signed.signature, index, mask)
    with pytest.raises(InvalidSignature):
        signed.scheme.verify(signed.public_key, Context.TRANSACTION, MESSAGE, signature)


@pytest.mark.parametrize("where", [0, -1], ids=["first", "last"])
def test_flipped_signature_ends_fail(signed: Signed, where: int) -> None:
    with pytest.raises(InvalidSignature):
        signed.scheme.verify(signed.public_key, Context.TRANSACTION, MESSAGE, _flip(signed.signature, where))


def test_other_key_fails(signed: Signed) -> None:
    with pytest.raises(InvalidSignature):
        signed.scheme.verify(signed.other_public_key, Context.TRANSACTION, MESSAGE, signed.signature)


@pytest.mark.parametrize("context", [Context.CONSENSUS, Context.HANDSHAKE, b"", Context.TRANSACTION + b"\x00"])
def test_other_context_fails(signed: Signed, context: bytes) -> None:
    with pytest.raises(InvalidSignature):
        signed.scheme.verify(signed.public_key, context, MESSAGE, signed.signature)


@few
@given(context=st.binary(max_size=255).filter(lambda c: c != Context.TRANSACTION))
def test_any_other_context_fails(signed: Signed, context: bytes) -> None:
    with pytest.raises(InvalidSignature):
        signed.scheme.verify(signed.public_key, context, MESSAGE, signed.signature)


def test_signature_of_another_scheme_fails(signed: Signed) -> None:
    for other in SCHEMES:
        if other is signed.scheme:
            continue
        with pytest.raises(InvalidSignature):
            verify(other.tag, signed.public_key, Context.TRANSACTION, MESSAGE, signed.signature)


def _wrong_lengths(data: bytes) -> list[bytes]:
    return [b"", data[:-1], data + b"\x00", data + data]


def test_wrong_length_public_key_fails(signed: Signed) -> None:
    for public_key in _wrong_lengths(signed.public_key):
        with pytest.raises(InvalidSignature):
            signed.scheme.verify(public_key, Context.TRANSACTION, MESSAGE, signed.signature)


def test_wrong_length_signature_fails(signed: Signed) -> None:
    for signature in _wrong_lengths(signed.signature):
        with pytest.raises(InvalidSignature):
            signed.scheme.verify(signed.public_key, Context.TRANSACTION, MESSAGE, signature)


def test_wrong_length_private_key_is_invalid_key(signed: Signed) -> None:
    # Only the key is checked, and before any signing work: no slow SLH-DSA signature is made here.
    for private_key in _wrong_lengths(signed.private_key):
        with pytest.raises(InvalidKey):
            signed.scheme.public_key(private_key)
        with pytest.raises(InvalidKey):
            signed.scheme.sign(private_key, Context.TRANSACTION, MESSAGE)
        with pytest.raises(InvalidKey):
            KeyPair.from_private(signed.scheme.tag, private_key)


@few
@given(seed=st.integers(min_value=0, max_value=2**64))
def test_random_key_and_signature_only_raise_invalid_signature(signed: Signed, seed: int) -> None:
    # Keys and signatures of the right length are kilobytes: expand them from a seeded generator.
    scheme = signed.scheme
    rng = random.Random(seed)
    public_key = rng.randbytes(scheme.public_key_len)
    signature = rng.randbytes(scheme.signature_len)
    with pytest.raises(InvalidSignature):
        scheme.verify(public_key, Context.TRANSACTION, MESSAGE, signature)


@pytest.mark.parametrize("scheme", [ML_DSA_44, ML_DSA_65, ED25519], ids=lambda s: s.name)
def test_longest_context_is_accepted_and_longer_refused(scheme: SignatureScheme) -> None:
    sk, pk = scheme.generate()
    context = b"c" * 255
    scheme.verify(pk, context, MESSAGE, scheme.sign(sk, context, MESSAGE))
    with pytest.raises(ValueError, match="255"):
        scheme.sign(sk, context + b"c", MESSAGE)


@few
@given(message=st.binary(max_size=512), context=st.sampled_from(CONTEXTS))
@pytest.mark.parametrize("scheme", [ML_DSA_44, ML_DSA_65, ED25519], ids=lambda s: s.name)
def test_sign_verify_any_message(scheme: SignatureScheme, message: bytes, context: bytes) -> None:
    sk, pk = _keys[scheme.name]
    signature = scheme.sign(sk, context, message)
    scheme.verify(pk, context, message, signature)
    with pytest.raises(InvalidSignature):
        scheme.verify(pk, context, message + b"\x00", signature)


@pytest.mark.parametrize("scheme", [ML_DSA_44, ML_DSA_65], ids=lambda s: s.name)
def test_ml_dsa_signatures_are_hedged(scheme: MLDSAScheme) -> None:
    sk, pk = _keys[scheme.name]
    first = scheme.sign(sk, Context.TRANSACTION, MESSAGE)
    second = scheme.sign(sk, Context.TRANSACTION, MESSAGE)
    assert first != second
    scheme.verify(pk, Context.TRANSACTION, MESSAGE, first)
    scheme.verify(pk, Context.TRANSACTION, MESSAGE, second)


def test_ed25519_is_deterministic_and_context_prefixed() -> None:
    sk, pk = _keys[ED25519.name]
    signature = ED25519.sign(sk, Context.TRANSACTION, MESSAGE)
    assert signature == ED25519.sign(sk, Context.TRANSACTION, MESSAGE)
    # A context-free Ed25519 signature of the bare message must not pass as a contextual one.
    bare = nacl.signing.SigningKey(sk).sign(MESSAGE).signature
    with pytest.raises(InvalidSignature):
        ED25519.verify(pk, Context.TRANSACTION, MESSAGE, bare)
    with pytest.raises(InvalidSignature):
        ED25519.verify(pk, b"", MESSAGE, bare)


def test_slh_dsa_public_key_is_tail_of_private_key() -> None:
    private_key, public_key = SLH_DSA_SHA2_128S.generate()
    assert len(private_key) == 64
    assert private_key[-32:] == public_key
    assert SLH_DSA_SHA2_128S.public_key(private_key) == public_key


# --- scheme registry --------------------------------------------------------------------------------


def test_scheme_registry() -> None:
    assert [s.tag for s in SCHEMES] == [1, 2, 3, 4]
    assert DEFAULT_SCHEME is ML_DSA_44
    for scheme in SCHEMES:
        assert scheme_by_tag(scheme.tag) is scheme
        assert scheme_by_name(scheme.name) is scheme
    assert [s.name for s in SCHEMES] == ["ML-DSA-44", "ML-DSA-65", "SLH-DSA-SHA2-128s", "Ed25519"]


@pytest.mark.parametrize("tag", [0, 5, 255, -1, 2**70, "ML-DSA-44", None, [1]])
def test_unknown_tag(tag: object) -> None:
    with pytest.raises(UnknownScheme) as info:
        scheme_by_tag(tag)  # type: ignore[arg-type]
    assert info.value.scheme == tag
    sk, pk = _keys[ML_DSA_44.name]
    signature = ML_DSA_44.sign(sk, Context.TRANSACTION, MESSAGE)
    with pytest.raises(InvalidSignature):
        verify(tag, pk, Context.TRANSACTION, MESSAGE, signature)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "ml-dsa-44", "ML-DSA-87", "ed25519", "SLH-DSA-SHA2-128f"])
def test_unknown_name(name: str) -> None:
    with pytest.raises(UnknownScheme):
        scheme_by_name(name)


def test_contexts_are_distinct_and_short() -> None:
    assert len(set(CONTEXTS)) == len(CONTEXTS)
    assert all(0 < len(c) <= 255 for c in CONTEXTS)
    # No context is a prefix of another (Ed25519 prefixes len || ctx, so that is safe anyway).
    assert not any(a != b and b.startswith(a) for a in CONTEXTS for b in CONTEXTS)


# --- FIPS 204 interop: pycryptodome (ours) and pqcrypto --------------------------------------------

ML_DSA_IDS = list(ML_DSA)


@pytest.fixture(scope="module", params=ML_DSA_IDS)
def pq_keys(request: pytest.FixtureRequest) -> tuple[MLDSAScheme, ModuleType, bytes, bytes]:
    ours, pq = ML_DSA[request.param]
    pk, sk = pq.keygen()
    return ours, pq, pk, sk


@few
@given(message=st.binary(max_size=300), context=st.one_of(st.sampled_from(CONTEXTS), st.binary(max_size=255)))
@pytest.mark.parametrize("name", ML_DSA_IDS)
def test_ours_verifies_under_pqcrypto(name: str, message: bytes, context: bytes) -> None:
    ours, pq = ML_DSA[name]
    seed, pk = _keys[name]
    signature = ours.sign(seed, context, message)
    assert pq.verify(pk, message, signature, context=context) is None
    with pytest.raises(pqcrypto.InvalidSignatureError):
        pq.verify(pk, message, _flip(signature, len(message)), context=context)
    with pytest.raises(pqcrypto.InvalidSignatureError):
        pq.verify(pk, message + b"!", signature, context=context)
    with pytest.raises(pqcrypto.InvalidSignatureError):
        pq.verify(pk, message, signature, context=context + b"!")


@few
@given(message=st.binary(max_size=300), context=st.one_of(st.sampled_from(CONTEXTS), st.binary(max_size=255)))
def test_pqcrypto_verifies_under_ours(
    pq_keys: tuple[MLDSAScheme, ModuleType, bytes, bytes], message: bytes, context: bytes
) -> None:
    ours, pq, pk, sk = pq_keys
    signature = pq.sign(sk, message, context=context)
    assert ours.verify(pk, context, message, signature) is None
    with pytest.raises(InvalidSignature):
        ours.verify(pk, context, message, _flip(signature, len(message)))
    with pytest.raises(InvalidSignature):
        ours.verify(pk, context + b"!", message, signature)


@pytest.mark.parametrize("case", VECTORS["keygen"], ids=lambda c: f"{c['parameterSet']}-tc{c['tcId']}")
def test_acvp_keygen_known_answer(case: dict[str, object]) -> None:
    ours, _ = ML_DSA[str(case["parameterSet"])]
    public_key = ours.public_key(bytes.fromhex(str(case["seed"])))
    assert len(public_key) == ours.public_key_len
    assert public_key[:32].hex().upper() == case["pkPrefix"]
    assert hashlib.sha256(public_key).hexdigest().upper() == case["pkSha256"]


@pytest.mark.parametrize("case", VECTORS["interop"], ids=lambda c: f"{c['parameterSet']}-by-{c['producer']}")
def test_stored_interop_vectors(case: dict[str, str]) -> None:
    ours, pq = ML_DSA[case["parameterSet"]]
    pk, message, context, signature = (bytes.fromhex(case[k]) for k in ("pk", "message", "context", "signature"))
    if case["seed"] is not None:  # made by us: the seed must still give the same public key
        assert ours.public_key(bytes.fromhex(case["seed"])) == pk
    ours.verify(pk, context, message, signature)
    assert pq.verify(pk, message, signature, context=context) is None
    tampered = _flip(signature, 100)
    with pytest.raises(InvalidSignature):
        ours.verify(pk, context, message, tampered)
    with pytest.raises(pqcrypto.InvalidSignatureError):
        pq.verify(pk, message, tampered, context=context)


# --- addresses and key pairs ------------------------------------------------------------------------


@given(tag=st.integers(min_value=0, max_value=255), public_key=st.binary(max_size=2000))
def test_address_is_tail_of_tagged_hash(tag: int, public_key: bytes) -> None:
    address = address_of(tag, public_key)
    assert len(address) == ADDRESS_LEN == 20
    assert address == hashlib.sha3_256(bytes([tag]) + public_key).digest()[-20:]


@given(
    tags=st.lists(st.integers(min_value=0, max_value=255), min_size=2, max_size=2, unique=True),
    public_key=st.binary(max_size=64),
)
def test_address_differs_by_scheme_tag(tags: list[int], public_key: bytes) -> None:
    assert address_of(tags[0], public_key) != address_of(tags[1], public_key)


def test_address_differs_by_scheme_for_real_key() -> None:
    _, pk = _keys[ML_DSA_44.name]
    assert len({address_of(s.tag, pk) for s in SCHEMES}) == len(SCHEMES)


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
def test_key_pair_from_private_rebuilds_same_key(scheme: SignatureScheme) -> None:
    key = KeyPair.generate(scheme)
    assert key.scheme is scheme
    assert key.address == address_of(scheme.tag, key.public_key)
    assert len(key.address) == 20
    rebuilt = KeyPair.from_private(scheme.tag, key.private_key)
    assert rebuilt == key
    assert rebuilt.address == key.address
    assert rebuilt.public_key == key.public_key
    assert KeyPair.generate(scheme).address != key.address


def test_key_pair_default_scheme_and_signing() -> None:
    key = KeyPair.generate()
    assert key.scheme_tag == ML_DSA_44.tag
    signature = key.sign(Context.CONSENSUS, MESSAGE)
    verify(key.scheme_tag, key.public_key, Context.CONSENSUS, MESSAGE, signature)
    with pytest.raises(InvalidSignature):
        verify(key.scheme_tag, key.public_key, Context.TRANSACTION, MESSAGE, signature)


def test_key_pair_repr_hides_private_key() -> None:
    key = KeyPair.generate(ED25519)
    text = repr(key)
    assert key.private_key.hex() not in text
    assert repr(key.private_key) not in text
    assert "private_key" not in text


def test_key_pair_from_private_unknown_scheme() -> None:
    with pytest.raises(UnknownScheme):
        KeyPair.from_private(9, bytes(32))
