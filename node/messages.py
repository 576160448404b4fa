"""The P2P message envelope between nodes: ``encode((type, body))`` in one frame.

| type | name        | body                                                    |
|------|-------------|---------------------------------------------------------|
| 1    | TX          | the raw transaction bytes (gossip of admitted ones)    |
| 2    | PRE_PREPARE | ``consensus.messages.PrePrepare``                       |
| 3    | VOTE        | ``consensus.messages.Vote`` (PREPARE or COMMIT)         |
| 4    | STATUS      | ``Status``: the sender's committed height and head hash |
| 5    | GET_BLOCKS  | ``GetBlocks``: from height, count                       |
| 6    | BLOCKS      | ``Blocks``: certified blocks, ascending heights         |
| 7    | VIEW_CHANGE | ``consensus.messages.ViewChange``                       |
| 8    | NEW_VIEW    | ``consensus.messages.NewView``                          |
| 9    | CHECKPOINT  | ``consensus.messages.Checkpoint``                       |
| 10   | TXS         | an array of raw transactions (batched gossip, at most ``MAX_TXS_PER_MESSAGE``) |
| 11   | PRE_PREPARE_COMPACT | ``CompactPrePrepare``: a PRE-PREPARE naming its transactions by wire id |
| 12   | GET_PRE_PREPARE | ``GetPrePrepare``: ask the sender of a compact PRE-PREPARE for the full one |

Compact proposals (as BIP 152's compact blocks, for the same reason: peers already hold the
transactions through gossip). The primary sends its PRE-PREPARE as the block header, the
transactions' wire ids (``Transaction.wire_id``: BLAKE2b-256 of each exact encoding) and its
signature, which is over the header hash, as for the full message. A peer rebuilds the block from
its mempool, byte for byte (the wire id names the signature too), and hands the replica the same
``PrePrepare`` the full message would have given; if transactions are missing it waits briefly for
their gossip, then asks the sender with GET_PRE_PREPARE and gets the full PRE-PREPARE (type 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from consensus.messages import Checkpoint, NewView, PrePrepare, ViewChange, Vote
from crypto.hashing import Hash32
from state.codec import Struct, attach_encodings, decode_value, encode
from state.exceptions import DecodeError
from state.types import Block, BlockHeader, CommitCertificate, Transaction

TX: Final = 1
PRE_PREPARE: Final = 2
VOTE: Final = 3
STATUS: Final = 4
GET_BLOCKS: Final = 5
BLOCKS: Final = 6
VIEW_CHANGE: Final = 7
NEW_VIEW: Final = 8
CHECKPOINT: Final = 9
TXS: Final = 10
PRE_PREPARE_COMPACT: Final = 11
GET_PRE_PREPARE: Final = 12

MAX_TXS_PER_MESSAGE: Final = 1024
"""Most transactions in one TXS gossip message."""

MAX_BLOCKS_PER_REPLY: Final = 32


@dataclass(frozen=True)
class Status(Struct):
    """A node's committed ``height`` and ``head_hash``."""

    height: int
    head_hash: Hash32


@dataclass(frozen=True)
class GetBlocks(Struct):
    """Ask for ``count`` certified blocks from height ``start``."""

    start: int
    count: int


@dataclass(frozen=True)
class CertifiedBlock(Struct):
    """A block and its commit certificate."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True)
class Blocks(Struct):
    """Certified blocks in ascending height order."""

    blocks: tuple[CertifiedBlock, ...]


MAX_COMPACT_TXS: Final = 10_000
"""Most wire ids in one compact PRE-PREPARE (the protocol's limit on transactions per block)."""


@dataclass(frozen=True)
class CompactPrePrepare(Struct):
    """A PRE-PREPARE (``consensus.messages.PrePrepare``) whose block is sent as its ``header`` and
    the wire ids (``Transaction.wire_id``, 32 bytes each) of its transactions, in block order.
    ``signature`` is the primary's, over the same vote bytes as the full message's (the header hash
    is the block hash), so the full message is rebuilt exactly (``of`` / ``rebuild``)."""

    view: int
    seq: int
    header: BlockHeader
    tx_ids: tuple[bytes, ...]
    validator: int
    signature: bytes

    @classmethod
    def of(cls, pre_prepare: PrePrepare) -> CompactPrePrepare:
        """The compact form of ``pre_prepare``."""
        return cls(pre_prepare.view, pre_prepare.seq, pre_prepare.block.header,
                   tuple(tx.wire_id for tx in pre_prepare.block.transactions), pre_prepare.validator,
                   pre_prepare.signature)

    def rebuild(self, transactions: tuple[Transaction, ...]) -> PrePrepare:
        """The full PRE-PREPARE, given the transactions named by ``tx_ids`` in order. Raises
        ``ValueError`` if they are not those (count or wire ids differ)."""
        if len(transactions) != len(self.tx_ids) or any(
                tx.wire_id != wid for tx, wid in zip(transactions, self.tx_ids, strict=True)):
            raise ValueError("the transactions are not the ones the compact PRE-PREPARE names")
        # encoded now, each joined from the encodings it holds (the transactions' own bytes), so that
        # the prepared certificate holding the PRE-PREPARE is joined too instead of packed whole
        block = Block(self.header, transactions)
        block.encode()
        pre_prepare = PrePrepare(self.view, self.seq, block, self.validator, self.signature)
        pre_prepare.encode()
        return pre_prepare


@dataclass(frozen=True)
class GetPrePrepare(Struct):
    """Ask for the full PRE-PREPARE of (``view``, ``seq``) after a compact one could not be rebuilt."""

    view: int
    seq: int


_BODY: dict[int, type[Struct]] = {
    PRE_PREPARE: PrePrepare, VOTE: Vote, STATUS: Status, GET_BLOCKS: GetBlocks, BLOCKS: Blocks,
    VIEW_CHANGE: ViewChange, NEW_VIEW: NewView, CHECKPOINT: Checkpoint,
    PRE_PREPARE_COMPACT: CompactPrePrepare, GET_PRE_PREPARE: GetPrePrepare,
}
_KIND: dict[type[Struct], int] = {cls: kind for kind, cls in _BODY.items()}

Message = (bytes | tuple[bytes, ...] | PrePrepare | Vote | Status | GetBlocks | Blocks | ViewChange | NewView
           | Checkpoint | CompactPrePrepare | GetPrePrepare)


def kind_of(message: PrePrepare | Vote | ViewChange | NewView | Checkpoint) -> int:
    """The message type of a consensus message, taken from its class."""
    return _KIND[type(message)]


def pack_consensus(message: PrePrepare | Vote | ViewChange | NewView | Checkpoint) -> bytes:
    """The frame payload of a consensus message, its type taken from its class."""
    return pack(kind_of(message), message)


def txs_batches(raws: list[bytes]) -> list[tuple[bytes, ...]]:
    """``raws`` cut into TXS message bodies of at most ``MAX_TXS_PER_MESSAGE`` transactions, in order."""
    return [tuple(raws[i:i + MAX_TXS_PER_MESSAGE]) for i in range(0, len(raws), MAX_TXS_PER_MESSAGE)]


def pack(kind: int, body: Struct | bytes | tuple[bytes, ...]) -> bytes:
    """The frame payload of a message: ``encode((kind, body))``, joined from the body's own
    (cached) encoding."""
    if isinstance(body, Struct):
        return _PAIR + encode(kind) + body.encode()
    return encode((kind, body))


_PAIR: Final = b"\x92"
"""msgpack's header of a two-element array."""


def unpack(payload: bytes, max_size: int) -> tuple[int, Message]:
    """Decode a frame payload. Raises ``DecodeError`` for anything but a known, well-formed message."""
    value = decode_value(payload, max_size=max_size)
    if type(value) is not tuple or len(value) != 2 or type(value[0]) is not int:
        raise DecodeError("a message is an array (type, body)")
    kind, body = value
    if kind == TX:
        if type(body) is not bytes:
            raise DecodeError("TX carries the raw transaction bytes")
        return kind, body
    if kind == TXS:
        if type(body) is not tuple or not 0 < len(body) <= MAX_TXS_PER_MESSAGE \
                or any(type(raw) is not bytes for raw in body):
            raise DecodeError(f"TXS carries 1..{MAX_TXS_PER_MESSAGE} raw transactions")
        return kind, body
    cls = _BODY.get(kind)
    if cls is None:
        raise DecodeError(f"unknown message type {kind}")
    message = cls.from_value(body)
    if kind == PRE_PREPARE_COMPACT:
        ids = message.tx_ids  # type: ignore[attr-defined]
        if len(ids) > MAX_COMPACT_TXS or any(len(wid) != 32 for wid in ids):
            raise DecodeError(f"PRE_PREPARE_COMPACT carries at most {MAX_COMPACT_TXS} wire ids of 32 bytes")
    if kind in _CARRY_BLOCKS:  # their transactions keep their bytes: hashing them encodes nothing
        attach_encodings(message, bytes(payload), element=1)
    return kind, message  # type: ignore[return-value]


_CARRY_BLOCKS: Final = frozenset({PRE_PREPARE, BLOCKS, VIEW_CHANGE, NEW_VIEW})
