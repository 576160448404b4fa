"""Key-agreement primitives of the P2P handshake: X25519, ML-KEM-768 and HKDF-SHA256.

* X25519 (RFC 7748) through pynacl (libsodium ``crypto_scalarmult``): 32-byte private scalars and
  public u-coordinates; a shared secret of all zeros (the peer sent a low-order point) is refused,
  as RFC 7748 §6.1 allows and Noise §12.1 discusses.
* ML-KEM-768 (FIPS 203) through pqcrypto (PQClean): 1,184-byte encapsulation keys, 2,400-byte
  decapsulation keys, 1,088-byte ciphertexts, 32-byte shared secrets. ``mlkem768_encaps`` performs the
  encapsulation-key check of FIPS 203 §7.2 (type and modulus check), so a malformed key from a peer is
  refused; decapsulation uses FIPS 203's implicit rejection: a wrong ciphertext of the right length
  yields an unrelated secret, and the session keys derived from it simply do not match.
* HKDF (RFC 5869) with SHA-256 through pycryptodome's ``Crypto.Protocol.KDF.HKDF``.

The protocol that combines them lives in ``p2p.handshake`` / ``p2p.session``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

import nacl.bindings
import nacl.exceptions
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF
from pqcrypto.kem import ml_kem_768 as _mlkem

from crypto.exceptions import InvalidKey

X25519_KEY_LEN: Final = 32
"""Length of an X25519 private scalar, public key and shared secret, in bytes (RFC 7748 §5)."""

MLKEM768_EK_LEN: Final = 1184
"""Length of an ML-KEM-768 encapsulation key, in bytes (FIPS 203 Table 3)."""

MLKEM768_DK_LEN: Final = 2400
"""Length of an ML-KEM-768 decapsulation key, in bytes (FIPS 203 Table 3)."""

MLKEM768_CT_LEN: Final = 1088
"""Length of an ML-KEM-768 ciphertext, in bytes (FIPS 203 Table 3)."""

SHARED_SECRET_LEN: Final = 32
"""Length of an ML-KEM shared secret, in bytes (FIPS 203 §1)."""

HKDF_MAX_LEN: Final = 255 * 32
"""Most output bytes HKDF-SHA256 can give from one pseudorandom key (RFC 5869 §2.3)."""

if (_mlkem.PUBLIC_KEY_SIZE, _mlkem.SECRET_KEY_SIZE, _mlkem.CIPHERTEXT_SIZE, _mlkem.SHARED_SECRET_SIZE) != (
    MLKEM768_EK_LEN,
    MLKEM768_DK_LEN,
    MLKEM768_CT_LEN,
    SHARED_SECRET_LEN,
):  # pragma: no cover - a broken install, not a runtime condition
    raise ImportError("pqcrypto's ml_kem_768 does not have the FIPS 203 ML-KEM-768 sizes")


def x25519_keypair(rng_bytes: Callable[[int], bytes] = os.urandom) -> tuple[bytes, bytes]:
    """A fresh ephemeral X25519 key pair ``(private_key, public_key)``, 32 bytes each (RFC 7748 §6.1).

    ``rng_bytes(32)`` gives the private scalar (clamped inside libsodium when used); tests may inject a
    fixed source. Raises ``ValueError`` if it does not return 32 bytes (a local bug).
    """
    private_key = bytes(rng_bytes(X25519_KEY_LEN))
    if len(private_key) != X25519_KEY_LEN:
        raise ValueError(f"rng_bytes returned {len(private_key)} bytes, not {X25519_KEY_LEN}")
    return private_key, bytes(nacl.bindings.crypto_scalarmult_base(private_key))


def x25519(private_key: bytes, peer_public_key: bytes) -> bytes:
    """The 32-byte X25519 shared secret of our ``private_key`` and the peer's ``peer_public_key``.

    Raises:
        InvalidKey: ``peer_public_key`` is not 32 bytes, or is a low-order point (the result would
            be all zeros, RFC 7748 §6.1), or ``private_key`` is not 32 bytes.
    """
    if len(private_key) != X25519_KEY_LEN or len(peer_public_key) != X25519_KEY_LEN:
        raise InvalidKey(f"X25519 keys are {X25519_KEY_LEN} bytes")
    try:
        shared = bytes(nacl.bindings.crypto_scalarmult(bytes(private_key), bytes(peer_public_key)))
    except nacl.exceptions.CryptoError as err:  # libsodium refuses an all-zero result
        raise InvalidKey("X25519 public key is a low-order point") from err
    if shared == bytes(X25519_KEY_LEN):  # pragma: no cover - libsodium already refuses it
        raise InvalidKey("X25519 public key is a low-order point")
    return shared


def mlkem768_keypair() -> tuple[bytes, bytes]:
    """A fresh ML-KEM-768 key pair ``(encapsulation_key, decapsulation_key)``: 1,184 and 2,400 bytes.

    FIPS 203 Algorithm 19 (ML-KEM.KeyGen), randomness from the OS inside pqcrypto.
    """
    ek, dk = _mlkem.keygen()
    return bytes(ek), bytes(dk)


def mlkem768_encaps(encapsulation_key: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to the peer's key: ``(ciphertext, shared_secret)``, 1,088 and 32 bytes.

    FIPS 203 Algorithm 20 (ML-KEM.Encaps), including its input check (§7.2).

    Raises:
        InvalidKey: ``encapsulation_key`` is not 1,184 bytes or fails the FIPS 203 modulus check.
    """
    if len(encapsulation_key) != MLKEM768_EK_LEN:
        raise InvalidKey(f"ML-KEM-768 encapsulation keys are {MLKEM768_EK_LEN} bytes")
    try:
        ciphertext, secret = _mlkem.encaps(bytes(encapsulation_key))
    except ValueError as err:
        raise InvalidKey(f"bad ML-KEM-768 encapsulation key: {err}") from err
    return bytes(ciphertext), bytes(secret)


def mlkem768_decaps(decapsulation_key: bytes, ciphertext: bytes) -> bytes:
    """The 32-byte shared secret of ``ciphertext`` (FIPS 203 Algorithm 21, ML-KEM.Decaps).

    A wrong ciphertext of the right length is not detected here (implicit rejection): it yields a
    secret unrelated to the sender's.

    Raises:
        InvalidKey: ``ciphertext`` is not 1,088 bytes or ``decapsulation_key`` not 2,400 bytes.
    """
    if len(ciphertext) != MLKEM768_CT_LEN or len(decapsulation_key) != MLKEM768_DK_LEN:
        raise InvalidKey(f"ML-KEM-768 ciphertexts are {MLKEM768_CT_LEN} bytes, keys {MLKEM768_DK_LEN}")
    try:
        return bytes(_mlkem.decaps(bytes(decapsulation_key), bytes(ciphertext)))
    except ValueError as err:  # pragma: no cover - lengths are checked above
        raise InvalidKey(f"bad ML-KEM-768 ciphertext: {err}") from err


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869): Extract(salt, ikm) then Expand(prk, info, length); ``length`` bytes.

    An empty ``salt`` means 32 zero bytes (RFC 5869 §2.2).

    Raises:
        ValueError: ``length`` is not in ``[1, 8160]`` (255 hash lengths, RFC 5869 §2.3).
    """
    if not 1 <= length <= HKDF_MAX_LEN:
        raise ValueError(f"HKDF-SHA256 output length must be in [1, {HKDF_MAX_LEN}], got {length}")
    out: bytes = HKDF(bytes(ikm), length, bytes(salt), SHA256, 1, bytes(info))
    return out
