"""Consensus messages and what their signatures cover (Castro & Liskov 1999, §4.2).

Every vote is signed under FIPS 204 context ``Context.CONSENSUS`` over
``vote_signing_bytes(chain_id, kind, view, seq, block_hash, validator)`` =
``encode(("QENEX/v1/vote", chain_id, kind, view, seq, block_hash, validator))``: the kind, view,
sequence number and signer are all inside the signed bytes, so no signature serves twice.
The sequence number is the block height.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from crypto.hashing import Hash32
from state.codec import Struct, encode
from state.types import Block

PRE_PREPARE: Final = 1
PREPARE: Final = 2
COMMIT: Final = 3
KIND_NAMES: Final = {PRE_PREPARE: "pre-prepare", PREPARE: "prepare", COMMIT: "commit"}


def vote_signing_bytes(chain_id: str, kind: int, view: int, seq: int, block_hash: bytes, validator: int) -> bytes:
    """The exact bytes a validator signs for a vote (and a primary for its pre-prepare)."""
    return encode(("QENEX/v1/vote", chain_id, kind, view, seq, block_hash, validator))


@dataclass(frozen=True)
class Vote(Struct):
    """A PREPARE or COMMIT: validator ``validator`` votes for ``block_hash`` at (``view``, ``seq``)."""

    kind: int
    view: int
    seq: int
    block_hash: Hash32
    validator: int
    signature: bytes


@dataclass(frozen=True)
class PrePrepare(Struct):
    """The primary's proposal of ``block`` for (``view``, ``seq``), signed like a vote."""

    view: int
    seq: int
    block: Block
    validator: int
    signature: bytes

    @property
    def block_hash(self) -> Hash32:
        """The hash of the proposed block."""
        return self.block.hash


@dataclass(frozen=True)
class Evidence(Struct):
    """Two conflicting signed messages of one validator for the same kind, view and sequence."""

    kind: int
    view: int
    seq: int
    validator: int
    first_hash: Hash32
    first_signature: bytes
    second_hash: Hash32
    second_signature: bytes
