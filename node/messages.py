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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from consensus.messages import Checkpoint, NewView, PrePrepare, ViewChange, Vote
from crypto.hashing import Hash32
from state.codec import Struct, attach_encodings, decode_value, encode
from state.exceptions import DecodeError
from state.types import Block, CommitCertificate

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


_BODY: dict[int, type[Struct]] = {
    PRE_PREPARE: PrePrepare, VOTE: Vote, STATUS: Status, GET_BLOCKS: GetBlocks, BLOCKS: Blocks,
    VIEW_CHANGE: ViewChange, NEW_VIEW: NewView, CHECKPOINT: Checkpoint,
}
_KIND: dict[type[Struct], int] = {cls: kind for kind, cls in _BODY.items()}

Message = (bytes | tuple[bytes, ...] | PrePrepare | Vote | Status | GetBlocks | Blocks | ViewChange | NewView
           | Checkpoint)


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
    if kind in _CARRY_BLOCKS:  # their transactions keep their bytes: hashing them encodes nothing
        attach_encodings(message, bytes(payload), element=1)
    return kind, message  # type: ignore[return-value]


_CARRY_BLOCKS: Final = frozenset({PRE_PREPARE, BLOCKS, VIEW_CHANGE, NEW_VIEW})
