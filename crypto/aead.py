"""ChaCha20-Poly1305 AEAD (RFC 8439 §2.8, the IETF variant: 96-bit nonce) through pynacl.

pynacl's ``crypto_aead_chacha20poly1305_ietf_*`` bindings call libsodium in one step, several times
faster per small message than building a cipher object per frame; the P2P session seals every frame
with it. The sealed form is ``ciphertext || tag`` (16-byte Poly1305 tag), as RFC 8439 §2.8 outputs.
"""

from __future__ import annotations

from typing import Final

import nacl.bindings
import nacl.exceptions

from crypto.exceptions import InvalidCiphertext

KEY_LEN: Final = 32
"""ChaCha20-Poly1305 key length, in bytes (RFC 8439 §2.8)."""

NONCE_LEN: Final = 12
"""ChaCha20-Poly1305 (IETF) nonce length, in bytes (RFC 8439 §2.8)."""

TAG_LEN: Final = 16
"""Poly1305 tag length, in bytes (RFC 8439 §2.8)."""


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_LEN or len(nonce) != NONCE_LEN:
        raise ValueError(f"ChaCha20-Poly1305 needs a {KEY_LEN}-byte key and a {NONCE_LEN}-byte nonce")


def chacha20poly1305_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AEAD_CHACHA20_POLY1305 encryption (RFC 8439 §2.8): ``ciphertext || tag``, ``len(plaintext) + 16``.

    A (key, nonce) pair must never seal two messages; the caller's counter guarantees that.

    Raises:
        ValueError: ``key`` is not 32 bytes or ``nonce`` not 12 bytes (a local bug).
    """
    _check(key, nonce)
    return bytes(nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(bytes(plaintext), bytes(aad), nonce, key))


def chacha20poly1305_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes:
    """AEAD_CHACHA20_POLY1305 decryption (RFC 8439 §2.8): the plaintext of ``sealed`` (ciphertext || tag).

    Raises:
        InvalidCiphertext: ``sealed`` is shorter than a tag, or the tag does not verify for this key,
            nonce and ``aad`` (altered, truncated, or sealed under another key or nonce).
        ValueError: ``key`` is not 32 bytes or ``nonce`` not 12 bytes (a local bug).
    """
    _check(key, nonce)
    if len(sealed) < TAG_LEN:
        raise InvalidCiphertext(f"sealed message of {len(sealed)} bytes is shorter than a {TAG_LEN}-byte tag")
    try:
        return bytes(nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(bytes(sealed), bytes(aad), nonce, key))
    except nacl.exceptions.CryptoError as err:
        raise InvalidCiphertext("ChaCha20-Poly1305 tag does not verify") from err
