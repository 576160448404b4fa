"""The binary Merkle root of a list: what block headers commit to for transactions and receipts.

Leaves are 32-byte hashes (already hashed, e.g. transaction hashes); inner nodes are
``SHA3-256(0x01 || left || right)``; pairs are formed from the left and an odd last node is carried up
unchanged (RFC 6962 §2.1 style domain separation for the inner nodes); one leaf is its own root; the
empty list's root is ``SHA3-256(b"")``.

The authenticated *state* is not a list: it is the Jellyfish Merkle Tree of ``state.jmt`` (hashing
rules and proofs in ``state.proof``).
"""

from __future__ import annotations

from crypto.hashing import Hash32, sha3, sha3_concat

EMPTY_ROOT = sha3(b"")
"""The root of the empty list (and, by the same value, of the empty state: ``state.proof.EMPTY_ROOT``)."""


def merkle_root(leaves: list[bytes]) -> Hash32:
    """The binary Merkle root of ``leaves`` (already hashed, 32 bytes each), as described above."""
    if not leaves:
        return EMPTY_ROOT
    level: list[bytes] = list(leaves)
    while len(level) > 1:
        nxt: list[bytes] = [sha3_concat(b"\x01", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return Hash32(level[0])
