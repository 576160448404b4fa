"""State proofs: the hashing rules of the state tree, the proof format, and a pure verifier for wallets.

The state tree (``state.jmt``) is a Jellyfish Merkle Tree (Z. Gao, Y. Hu, Q. Wu, "Jellyfish Merkle
Tree", Diem Association whitepaper, 2021): a radix-16 Merkle tree over ``SHA3-256(key)`` in which a
subtree holding one key is collapsed into that key's leaf. The hashes, with domain separation
(tags are ASCII, ``||`` is concatenation)::

    key_hash      = SHA3-256(key)
    value_hash    = SHA3-256(value)
    leaf hash     = SHA3-256("QENEX/v1/jmt/leaf" || key_hash || value_hash)
    internal hash = SHA3-256("QENEX/v1/jmt/node" || bitmap (2 bytes, big-endian)
                             || the hashes of the non-empty children, in nibble order)
    empty root    = SHA3-256("")

Bit ``i`` of an internal node's ``bitmap`` is set when its child ``i`` (nibble ``i`` of the key hash
at the node's depth, high nibble of each byte first) is not empty. Diem's JMT hashes the 16 children
of a node as a 4-level binary subtree, so that its proofs are those of a 256-level sparse Merkle tree;
this tree hashes the 16 child hashes in one call instead (one hash per dirty node per block, which is
what a Python node can afford), so a proof carries, for each node on the path, up to 15 sibling hashes
and the bitmap.

A proof (``StateProof``) lists the internal nodes from the root down the key's path, then ends in one
of three ways:

* a leaf with the key's hash: the key is present, and the leaf's ``value_hash`` is its value's hash;
* a leaf with another key hash (sharing the path so far): the key is absent;
* no leaf: the path's slot in the last node is empty, or the tree is empty (no levels, the empty
  root): the key is absent.

``verify_proof`` checks a proof against a root with nothing but SHA3-256; it raises ``InvalidProof``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto.hashing import HASH_LEN, Hash32, sha3
from state.codec import Struct
from state.exceptions import DecodeError, InvalidProof

LEAF_DOMAIN = b"QENEX/v1/jmt/leaf"
"""Prefix of every leaf hash input."""
INTERNAL_DOMAIN = b"QENEX/v1/jmt/node"
"""Prefix of every internal-node hash input."""
EMPTY_ROOT = sha3(b"")
"""The root of the empty state."""
RADIX = 16
"""Children per internal node (one per nibble)."""
MAX_DEPTH = 2 * HASH_LEN
"""Most internal nodes on a path: one per nibble of a 32-byte key hash."""
MAX_PROOF_BYTES = 64 * 1024
"""Largest accepted proof encoding, in bytes (a full 64-level proof is about 33 KiB)."""


def key_hash(key: bytes) -> Hash32:
    """The tree position of ``key``: SHA3-256 of it, 32 bytes."""
    return sha3(key)


def value_hash(value: bytes) -> Hash32:
    """What a leaf holds of its value: SHA3-256 of it, 32 bytes."""
    return sha3(value)


def leaf_hash(kh: bytes, vh: bytes) -> Hash32:
    """The hash of the leaf of key hash ``kh`` and value hash ``vh`` (both 32 bytes)."""
    return sha3(LEAF_DOMAIN + kh + vh)


def internal_hash(bitmap: int, children: bytes) -> Hash32:
    """The hash of an internal node: ``bitmap`` (16 bits) and its children's hashes concatenated in nibble order."""
    return sha3(INTERNAL_DOMAIN + bitmap.to_bytes(2, "big") + children)


def nibble(kh: bytes, depth: int) -> int:
    """Nibble ``depth`` (0-based, high nibble of each byte first) of the key hash ``kh``."""
    byte = kh[depth >> 1]
    return byte & 0x0F if depth & 1 else byte >> 4


def common_nibbles(a: bytes, b: bytes) -> int:
    """How many leading nibbles ``a`` and ``b`` (equal length) share."""
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return 2 * i + (1 if (x ^ y) < 0x10 else 0)
    return 2 * len(a)


@dataclass(frozen=True)
class ProofLevel(Struct):
    """One internal node on the proven path.

    ``bitmap``: its non-empty children (bit ``i`` for nibble ``i``), 1..0xFFFF. ``siblings``: the hashes
    of its non-empty children except the one on the path, in nibble order (all of them when the
    path's slot is empty, which only the last level of an absence proof may show).
    """

    bitmap: int
    siblings: tuple[Hash32, ...]

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for a bitmap outside 1..0xFFFF or more siblings than it has children."""
        if not 0 < self.bitmap <= 0xFFFF:
            raise ValueError(f"bitmap {self.bitmap} outside 1..0xFFFF")
        if len(self.siblings) > self.bitmap.bit_count():
            raise ValueError(f"{len(self.siblings)} siblings for {self.bitmap.bit_count()} children")


@dataclass(frozen=True)
class ProofLeaf(Struct):
    """The leaf that ends a path: its ``key_hash`` and ``value_hash`` (32 bytes each)."""

    key_hash: Hash32
    value_hash: Hash32


@dataclass(frozen=True)
class StateProof(Struct):
    """A proof of presence or absence of one key against a state root (module docstring).

    ``levels``: the internal nodes from the root down the key's path (at most 64). ``leaf``: the leaf
    the path ends in, or None when it ends in an empty slot (or the tree is empty). Its canonical
    encoding (``encode()``, ``decode_proof``) is what ``qnx_getProof`` serves.
    """

    levels: tuple[ProofLevel, ...]
    leaf: ProofLeaf | None

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for more than ``MAX_DEPTH`` levels."""
        if len(self.levels) > MAX_DEPTH:
            raise ValueError(f"{len(self.levels)} levels, at most {MAX_DEPTH}")


def decode_proof(data: bytes) -> StateProof:
    """Decode the canonical encoding of a ``StateProof`` (at most ``MAX_PROOF_BYTES``). Raises ``DecodeError``."""
    return StateProof.decode(data, max_size=MAX_PROOF_BYTES)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: StateProof | bytes) -> None:
    """Check that ``proof`` shows ``key`` holding ``value`` (None: ``key`` absent) in the state of ``root``.

    ``root`` is a 32-byte state root (from a header whose commit certificate you checked), ``proof`` a
    ``StateProof`` or its canonical encoding. Needs no database: SHA3-256 only (module docstring for
    the rules; Gao et al., "Jellyfish Merkle Tree", 2021, for the tree). Returns None when it holds.

    Raises ``InvalidProof`` naming what does not hold (an undecodable proof included).
    """
    if not isinstance(proof, StateProof):
        try:
            proof = decode_proof(bytes(proof))
        except DecodeError as err:
            raise InvalidProof(f"undecodable proof: {err}") from err
    kh = key_hash(key)
    levels = proof.levels
    depth = len(levels)
    leaf = proof.leaf
    current: bytes | None = None
    if leaf is None:
        if value is not None:
            raise InvalidProof("the proof shows the key absent, but a value was claimed")
        if depth == 0:
            if root != EMPTY_ROOT:
                raise InvalidProof("a proof without levels or leaf is for the empty root only")
            return
    else:
        if common_nibbles(leaf.key_hash, kh) < depth:
            raise InvalidProof(f"the proof's leaf is not on the key's path at depth {depth}")
        if value is None:
            if leaf.key_hash == kh:
                raise InvalidProof("the proof shows the key present, but absence was claimed")
        elif leaf.key_hash != kh:
            raise InvalidProof("the proof's leaf holds another key: the key is absent")
        elif leaf.value_hash != value_hash(value):
            raise InvalidProof("the value's hash differs from the proven value hash")
        current = leaf_hash(leaf.key_hash, leaf.value_hash)
    for d in range(depth - 1, -1, -1):
        level = levels[d]
        bitmap, siblings = level.bitmap, level.siblings
        bit = 1 << nibble(kh, d)
        children = bitmap.bit_count()
        if current is None:
            if bitmap & bit:
                raise InvalidProof(f"level {d}: the path's slot is not empty")
            if len(siblings) != children:
                raise InvalidProof(f"level {d}: {len(siblings)} hashes for {children} children")
            concatenated = b"".join(siblings)
        else:
            if not bitmap & bit:
                raise InvalidProof(f"level {d}: the path's slot is empty")
            if len(siblings) != children - 1:
                raise InvalidProof(f"level {d}: {len(siblings)} siblings for {children} children")
            if children == 1 and d == depth - 1 and leaf is not None:
                raise InvalidProof(f"level {d}: a lone leaf below an internal node is never stored")
            index = (bitmap & (bit - 1)).bit_count()
            concatenated = b"".join(siblings[:index]) + current + b"".join(siblings[index:])
        current = internal_hash(bitmap, concatenated)
    if current is None or current != root:
        shown = "nothing" if current is None else current.hex()
        raise InvalidProof(f"the proof leads to root {shown}, not {bytes(root).hex()}")
