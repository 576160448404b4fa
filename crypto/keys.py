"""Key pairs and addresses.

An address is the last 20 bytes of ``SHA3-256(scheme_tag || public_key)``: the scheme tag is
hashed in, so one public key under two schemes never shares an address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

from crypto.abc import SignatureScheme
from crypto.hashing import sha3
from crypto.signatures import DEFAULT_SCHEME, scheme_by_tag

Address = NewType("Address", bytes)
"""A 20-byte account or contract address."""

ADDRESS_LEN = 20
ZERO_ADDRESS = Address(b"\x00" * ADDRESS_LEN)


def address_of(scheme_tag: int, public_key: bytes) -> Address:
    """The 20-byte address of ``public_key`` under the scheme with tag ``scheme_tag``."""
    return Address(sha3(bytes([scheme_tag]) + public_key)[-ADDRESS_LEN:])


@dataclass(frozen=True)
class KeyPair:
    """A private key with its scheme, public key and address (all raw bytes)."""

    scheme_tag: int
    private_key: bytes = field(repr=False)
    public_key: bytes
    address: Address

    @classmethod
    def generate(cls, scheme: SignatureScheme = DEFAULT_SCHEME) -> KeyPair:
        """A fresh key pair (OS randomness) under ``scheme`` (ML-DSA-44 by default)."""
        private_key, public_key = scheme.generate()
        return cls(scheme.tag, private_key, public_key, address_of(scheme.tag, public_key))

    @classmethod
    def from_private(cls, scheme_tag: int, private_key: bytes) -> KeyPair:
        """Rebuild a key pair from its private key. Raises ``UnknownScheme``, ``InvalidKey``."""
        scheme = scheme_by_tag(scheme_tag)
        public_key = scheme.public_key(private_key)
        return cls(scheme_tag, private_key, public_key, address_of(scheme_tag, public_key))

    @property
    def scheme(self) -> SignatureScheme:
        """The scheme object of this key."""
        return scheme_by_tag(self.scheme_tag)

    def sign(self, context: bytes, message: bytes) -> bytes:
        """Sign ``message`` for the purpose ``context`` (see ``crypto.signatures.Context``)."""
        return self.scheme.sign(self.private_key, context, message)
