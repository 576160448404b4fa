"""Signature schemes behind one interface, each with a one-byte wire tag.

* ``ML-DSA-44`` (tag 1, the default) and ``ML-DSA-65`` (tag 2): FIPS 204, through pycryptodome.
  Private keys are stored as the 32-byte seed xi (FIPS 204, Algorithm 1); signatures are hedged.
* ``SLH-DSA-SHA2-128s`` (tag 3): FIPS 205, hash-based, through pqcrypto.
* ``Ed25519`` (tag 4): RFC 8032, through pynacl; classical, for tooling and tests.

Every signature carries a purpose: the FIPS 204 / 205 context string of ``Context``. Two purposes
never accept each other's signatures, so a consensus vote can never pass as a transaction.
"""

from __future__ import annotations

import functools
import os
from typing import Final

import nacl.exceptions
import nacl.signing
from Crypto.PublicKey import MLDSA
from Crypto.Signature import mldsa
from pqcrypto.sign import slh_dsa_sha2_128s as _slh

from crypto.abc import SignatureScheme
from crypto.exceptions import InvalidKey, InvalidSignature, UnknownScheme


class Context:
    """FIPS 204 context strings, one per purpose (FIPS 204 §5.2: ctx, at most 255 bytes)."""

    TRANSACTION: Final = b"QENEX/v1/transaction"
    CONSENSUS: Final = b"QENEX/v1/consensus"
    HANDSHAKE: Final = b"QENEX/v1/p2p-handshake"


def _check_context(context: bytes) -> None:
    if len(context) > 255:
        raise ValueError("context strings are at most 255 bytes (FIPS 204 §5.2)")


class MLDSAScheme:
    """ML-DSA (FIPS 204) through pycryptodome's ``Crypto.Signature.mldsa``.

    Keys: private key = 32-byte seed; public key = FIPS 204 pkEncode (1,312 bytes for ML-DSA-44,
    1,952 for ML-DSA-65). Signatures: 2,420 / 3,309 bytes.
    """

    def __init__(self, tag: int, name: str, param_set: MLDSA.ParamSet, pk_len: int, sig_len: int) -> None:
        self.tag = tag
        self.name = name
        self.post_quantum = True
        self.public_key_len = pk_len
        self.signature_len = sig_len
        self._param_set = param_set
        # Expanding a seed costs a key generation: keep the few keys a node signs with.
        self._private = functools.lru_cache(maxsize=64)(self._load_private)
        self._public = functools.lru_cache(maxsize=4096)(self._load_public)

    def _load_private(self, private_key: bytes) -> MLDSA.MLDSAKey:
        if len(private_key) != 32:
            raise InvalidKey(f"{self.name} private keys are 32-byte seeds, got {len(private_key)} bytes")
        return MLDSA.construct(param_set=self._param_set, seed=private_key)

    def _load_public(self, public_key: bytes) -> MLDSA.MLDSAKey:
        if len(public_key) != self.public_key_len:
            raise InvalidKey(f"{self.name} public keys are {self.public_key_len} bytes")
        try:
            return MLDSA.construct(param_set=self._param_set, pk=public_key)
        except ValueError as err:
            raise InvalidKey(f"bad {self.name} public key: {err}") from err

    def generate(self) -> tuple[bytes, bytes]:
        """A new ``(seed, public_key)`` pair; the seed comes from ``os.urandom``."""
        seed = os.urandom(32)
        return seed, self.public_key(seed)

    def public_key(self, private_key: bytes) -> bytes:
        """The public key (pkEncode) of a 32-byte seed."""
        return bytes(self._private(bytes(private_key)).pk)

    def sign(self, private_key: bytes, context: bytes, message: bytes) -> bytes:
        """ML-DSA.Sign (FIPS 204 Algorithm 2, hedged) of ``message`` under ``context``."""
        _check_context(context)
        return bytes(mldsa.new(self._private(bytes(private_key)), context=context).sign(message))

    def verify(self, public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
        """ML-DSA.Verify (FIPS 204 Algorithm 3). Raises ``InvalidSignature``."""
        _check_context(context)
        if len(signature) != self.signature_len:
            raise InvalidSignature(f"{self.name} signatures are {self.signature_len} bytes")
        try:
            key = self._public(bytes(public_key))
            mldsa.new(key, context=context).verify(message, signature)
        except (ValueError, InvalidKey) as err:
            raise InvalidSignature(f"{self.name} signature does not verify") from err


class SLHDSAScheme:
    """SLH-DSA-SHA2-128s (FIPS 205) through pqcrypto: 32-byte public keys, 7,856-byte signatures.

    The private key is pqcrypto's 64-byte encoding (SK.seed, SK.prf, PK.seed, PK.root), whose last
    32 bytes are the public key (FIPS 205 §9.1).
    """

    tag = 3
    name = "SLH-DSA-SHA2-128s"
    post_quantum = True
    public_key_len = _slh.PUBLIC_KEY_SIZE
    signature_len = _slh.SIGNATURE_SIZE

    def generate(self) -> tuple[bytes, bytes]:
        """A new ``(private_key, public_key)`` pair from the OS RNG (inside pqcrypto)."""
        pk, sk = _slh.keygen()
        return bytes(sk), bytes(pk)

    def public_key(self, private_key: bytes) -> bytes:
        """The public key (PK.seed || PK.root) held in the private key."""
        if len(private_key) != _slh.SECRET_KEY_SIZE:
            raise InvalidKey(f"{self.name} private keys are {_slh.SECRET_KEY_SIZE} bytes")
        return bytes(private_key[-self.public_key_len :])

    def sign(self, private_key: bytes, context: bytes, message: bytes) -> bytes:
        """SLH-DSA.Sign (FIPS 205 Algorithm 22) of ``message`` under ``context``."""
        _check_context(context)
        self.public_key(private_key)
        return bytes(_slh.sign(bytes(private_key), message, context=context))

    def verify(self, public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
        """SLH-DSA.Verify (FIPS 205 Algorithm 24). Raises ``InvalidSignature``."""
        _check_context(context)
        if len(public_key) != self.public_key_len or len(signature) != self.signature_len:
            raise InvalidSignature(f"{self.name}: wrong key or signature length")
        try:
            _slh.verify(bytes(public_key), message, bytes(signature), context=context)
        except Exception as err:  # pqcrypto raises its own InvalidSignatureError
            raise InvalidSignature(f"{self.name} signature does not verify") from err


class Ed25519Scheme:
    """Ed25519 (RFC 8032) through pynacl; the context is prefixed as ``len(ctx) || ctx`` (one byte)."""

    tag = 4
    name = "Ed25519"
    post_quantum = False
    public_key_len = 32
    signature_len = 64

    def generate(self) -> tuple[bytes, bytes]:
        """A new ``(seed, public_key)`` pair from ``os.urandom``."""
        seed = os.urandom(32)
        return seed, self.public_key(seed)

    def public_key(self, private_key: bytes) -> bytes:
        """The 32-byte public key of a 32-byte seed."""
        if len(private_key) != 32:
            raise InvalidKey("Ed25519 private keys are 32-byte seeds")
        return bytes(nacl.signing.SigningKey(bytes(private_key)).verify_key)

    def sign(self, private_key: bytes, context: bytes, message: bytes) -> bytes:
        """Ed25519 signature of ``len(ctx) || ctx || message``."""
        _check_context(context)
        if len(private_key) != 32:
            raise InvalidKey("Ed25519 private keys are 32-byte seeds")
        key = nacl.signing.SigningKey(bytes(private_key))
        return bytes(key.sign(bytes([len(context)]) + context + message).signature)

    def verify(self, public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
        """Raises ``InvalidSignature`` unless ``signature`` holds."""
        _check_context(context)
        if len(public_key) != 32 or len(signature) != 64:
            raise InvalidSignature("Ed25519: wrong key or signature length")
        try:
            nacl.signing.VerifyKey(bytes(public_key)).verify(
                bytes([len(context)]) + context + message, bytes(signature)
            )
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as err:
            raise InvalidSignature("Ed25519 signature does not verify") from err


ML_DSA_44: Final = MLDSAScheme(1, "ML-DSA-44", MLDSA.ML_DSA_44, 1312, 2420)
ML_DSA_65: Final = MLDSAScheme(2, "ML-DSA-65", MLDSA.ML_DSA_65, 1952, 3309)
SLH_DSA_SHA2_128S: Final = SLHDSAScheme()
ED25519: Final = Ed25519Scheme()

DEFAULT_SCHEME: Final[SignatureScheme] = ML_DSA_44

_BY_TAG: dict[int, SignatureScheme] = {s.tag: s for s in (ML_DSA_44, ML_DSA_65, SLH_DSA_SHA2_128S, ED25519)}
_BY_NAME: dict[str, SignatureScheme] = {s.name: s for s in _BY_TAG.values()}


def scheme_by_tag(tag: int) -> SignatureScheme:
    """The scheme with wire tag ``tag``. Raises ``UnknownScheme``."""
    try:
        return _BY_TAG[tag]
    except (KeyError, TypeError):
        raise UnknownScheme(tag) from None


def scheme_by_name(name: str) -> SignatureScheme:
    """The scheme named ``name`` (``"ML-DSA-44"`` ...). Raises ``UnknownScheme``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownScheme(name) from None


def verify(tag: int, public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
    """Verify a scheme-tagged signature. Raises ``InvalidSignature`` (also for an unknown tag)."""
    try:
        scheme = scheme_by_tag(tag)
    except UnknownScheme as err:
        raise InvalidSignature(str(err)) from err
    scheme.verify(public_key, context, message, signature)
