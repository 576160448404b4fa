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
from state.types import Block, CommitCertificate

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


VIEW_CHANGE: Final = 4
NEW_VIEW: Final = 5
KIND_NAMES.update({VIEW_CHANGE: "view-change", NEW_VIEW: "new-view"})


@dataclass(frozen=True)
class PreparedCertificate(Struct):
    """Proof that a block was prepared (§4.2): its pre-prepare and quorum - 1 matching PREPAREs of
    distinct backups, all in the pre-prepare's view and sequence number."""

    pre_prepare: PrePrepare
    prepares: tuple[Vote, ...]


@dataclass(frozen=True)
class ViewChange(Struct):
    """VIEW-CHANGE to ``new_view`` (§4.4): the sender's committed ``height`` and ``head_hash`` with
    the commit ``certificate`` proving them (None at height 0), and its prepared certificate for
    ``height + 1`` if it has one. Signed over ``view_change_signing_bytes``."""

    new_view: int
    height: int
    head_hash: Hash32
    certificate: CommitCertificate | None
    prepared: PreparedCertificate | None
    validator: int
    signature: bytes

    def unsigned(self) -> tuple[object, ...]:
        """The fields the signature covers (all but the signature)."""
        return (self.new_view, self.height, self.head_hash, self.certificate, self.prepared, self.validator)


@dataclass(frozen=True)
class NewView(Struct):
    """NEW-VIEW for ``view`` (§4.4): the quorum of VIEW-CHANGEs it rests on and, if one of them
    holds a prepared certificate for the next height, the re-proposal of that block (the O set,
    here at most one pre-prepare). Signed by the primary of ``view``."""

    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepare: PrePrepare | None
    validator: int
    signature: bytes

    def unsigned(self) -> tuple[object, ...]:
        """The fields the signature covers (all but the signature)."""
        return (self.view, self.view_changes, self.pre_prepare, self.validator)


def view_change_signing_bytes(chain_id: str, vc: ViewChange) -> bytes:
    """The exact bytes a validator signs for its VIEW-CHANGE."""
    return encode(("QENEX/v1/view-change", chain_id, *vc.unsigned()))


def new_view_signing_bytes(chain_id: str, nv: NewView) -> bytes:
    """The exact bytes the new primary signs for its NEW-VIEW."""
    return encode(("QENEX/v1/new-view", chain_id, *nv.unsigned()))


CHECKPOINT: Final = 6
KIND_NAMES[CHECKPOINT] = "checkpoint"


@dataclass(frozen=True)
class Checkpoint(Struct):
    """CHECKPOINT (§4.3): validator ``validator`` committed ``block_hash`` at sequence number ``seq``
    (a multiple of the checkpoint interval). The block hash commits to the state root through the
    header, so matching checkpoints are matching state digests. Signed like a vote, kind 6."""

    seq: int
    block_hash: Hash32
    validator: int
    signature: bytes


@dataclass(frozen=True)
class StableCheckpoint(Struct):
    """A checkpoint with a quorum of matching signatures: the proof of a stable prefix (§4.3)."""

    seq: int
    block_hash: Hash32
    signatures: tuple[Checkpoint, ...]
