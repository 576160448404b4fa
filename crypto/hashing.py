"""SHA3-256 (FIPS 202), the one hash of the chain: block ids, tx ids, Merkle nodes, addresses."""

from __future__ import annotations

import hashlib
from typing import NewType

Hash32 = NewType("Hash32", bytes)
"""A 32-byte SHA3-256 digest."""

HASH_LEN = 32
ZERO_HASH = Hash32(b"\x00" * HASH_LEN)


def sha3(data: bytes) -> Hash32:
    """SHA3-256 of ``data`` (FIPS 202), 32 bytes."""
    return Hash32(hashlib.sha3_256(data).digest())


def sha3_concat(*parts: bytes) -> Hash32:
    """SHA3-256 of the concatenation of ``parts`` without copying them into one buffer."""
    h = hashlib.sha3_256()
    for part in parts:
        h.update(part)
    return Hash32(h.digest())
