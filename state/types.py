"""Chain data types: transactions, blocks, receipts, commit certificates, genesis.

Each is a frozen ``Struct``: its canonical encoding (``state.codec``) is the array of its fields in
the order written here; ``docs/protocol.md`` gives the same layouts for wallet authors. Hashes are
SHA3-256 of canonical encodings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import NewType

from crypto.hashing import Hash32, sha3
from crypto.keys import Address, address_of
from crypto.signatures import Context, verify
from state.codec import DEFAULT_MAX_SIZE, Struct, Value, attach_encodings, encode

Height = NewType("Height", int)
"""A block height; the genesis is height 0, the first block height 1 (PBFT sequence number)."""

MAX_TX_SIZE = 64 * 1024
"""Largest accepted transaction encoding, in bytes."""


@dataclass(frozen=True)
class Call(Struct):
    """One contract call: ``to`` (contract address), ``method`` name, positional ``args``."""

    to: Address
    method: str
    args: tuple[Value, ...]


@dataclass(frozen=True)
class TxBody(Struct):
    """The signed part of a transaction.

    ``sender`` must equal ``address_of(scheme, public_key)``; ``nonce`` is the sender's next nonce;
    ``gas_limit`` bounds the gas of all ``calls`` together; ``chain_id`` binds it to one chain.
    """

    _encoding_leaf = True  # attach_encodings: a body's slice is all its transaction's hash needs

    chain_id: str
    sender: Address
    nonce: int
    gas_limit: int
    calls: tuple[Call, ...]
    scheme: int
    public_key: bytes


def wire_id_of(raw: bytes) -> bytes:
    """``Transaction.wire_id`` of the canonical transaction encoding ``raw``, without decoding it:
    BLAKE2b-256 (RFC 7693), 32 bytes."""
    return hashlib.blake2b(raw, digest_size=32).digest()


@dataclass(frozen=True)
class Transaction(Struct):
    """A transaction: ``body`` and the sender's signature over ``encode(body)``.

    Signing input: the canonical encoding of ``body``, signed under FIPS 204 context
    ``Context.TRANSACTION`` (``b"QENEX/v1/transaction"``). Hash: SHA3-256 of the same bytes, so the
    hash names the intent, whatever the (hedged) signature.
    """

    body: TxBody
    signature: bytes

    @cached_property
    def signing_bytes(self) -> bytes:
        """The bytes that are signed: ``encode(body)``."""
        return encode(self.body)

    @cached_property
    def hash(self) -> Hash32:
        """The transaction hash, SHA3-256 of ``signing_bytes``."""
        return sha3(self.signing_bytes)

    @cached_property
    def wire_id(self) -> bytes:
        """32 bytes naming these exact transaction bytes, body and signature: BLAKE2b-256 (RFC 7693)
        of ``encode(self)``. Unlike ``hash``, which names the intent whatever the (hedged) signature,
        two encodings of one body have different wire ids. Peers use it to name transactions they
        already hold (compact proposals, ``node.messages.CompactPrePrepare``); it is no part of any
        signed or committed value. BLAKE2b rather than SHA3-256 because it is computed for every
        admitted transaction and is about twice as fast on 4 KB."""
        return wire_id_of(self.encode())

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Transaction:
        """Decode canonical bytes (``Struct.decode``); the transaction and its body keep their slices
        of ``data`` (``attach_encodings``), so ``signing_bytes`` and ``hash`` encode nothing again.
        Raises ``DecodeError``."""
        raw = bytes(data)
        tx = super().decode(raw, max_size=max_size)
        attach_encodings(tx, raw)
        return tx

    def verify_signature(self) -> None:
        """Check sender/public-key binding and the signature. Raises ``crypto.InvalidSignature``."""
        from crypto.exceptions import InvalidSignature, UnknownScheme
        from crypto.signatures import scheme_by_tag

        try:
            scheme_by_tag(self.body.scheme)
        except UnknownScheme as err:
            raise InvalidSignature(str(err)) from None
        if address_of(self.body.scheme, self.body.public_key) != self.body.sender:
            raise InvalidSignature("sender is not the address of the public key")
        verify(self.body.scheme, self.body.public_key, Context.TRANSACTION, self.signing_bytes, self.signature)


@dataclass(frozen=True)
class Event(Struct):
    """An event emitted by ``contract``: ``name``, indexed ``topics`` and unindexed ``data``."""

    contract: Address
    name: str
    topics: tuple[Value, ...]
    data: tuple[Value, ...]


STATUS_REVERTED = 0
STATUS_SUCCESS = 1


@dataclass(frozen=True)
class Receipt(Struct):
    """The outcome of one transaction in a block.

    ``status`` is 1 (success) or 0 (reverted: only the nonce changed and gas was charged);
    ``output`` holds each call's return value; ``revert_reason`` is empty on success.
    """

    tx_hash: Hash32
    status: int
    gas_used: int
    events: tuple[Event, ...]
    output: tuple[Value, ...]
    revert_reason: str


@dataclass(frozen=True)
class BlockHeader(Struct):
    """A block header; its hash is the block hash.

    ``timestamp_ms`` is the proposer's clock in milliseconds since the Unix epoch, strictly above
    the parent's; ``proposer`` is the validator index; roots are SHA3-256 Merkle roots; ``view``
    is the PBFT view the block was proposed in.
    """

    chain_id: str
    height: int
    view: int
    prev_hash: Hash32
    timestamp_ms: int
    proposer: int
    tx_root: Hash32
    state_root: Hash32
    receipts_root: Hash32
    gas_used: int

    @cached_property
    def hash(self) -> Hash32:
        """SHA3-256 of the header's canonical encoding."""
        return sha3(encode(self))


@dataclass(frozen=True)
class Block(Struct):
    """A header and the transactions it commits to (through ``tx_root``)."""

    header: BlockHeader
    transactions: tuple[Transaction, ...]

    @property
    def hash(self) -> Hash32:
        """The block hash (the header hash)."""
        return self.header.hash

    @property
    def height(self) -> int:
        """The block height."""
        return self.header.height


@dataclass(frozen=True)
class ValidatorSignature(Struct):
    """One validator's signature, by its index in the validator set."""

    validator: int
    signature: bytes


@dataclass(frozen=True)
class CommitCertificate(Struct):
    """2f + 1 COMMIT signatures for ``block_hash`` at ``height`` in ``view`` (PBFT §4.2).

    Each signature is over ``consensus.messages.vote_signing_bytes`` of the COMMIT it came from.
    """

    height: int
    view: int
    block_hash: Hash32
    signatures: tuple[ValidatorSignature, ...]


@dataclass(frozen=True)
class Validator(Struct):
    """A genesis validator: its consensus key (``scheme``, ``public_key``) and P2P node key."""

    name: str
    address: Address
    scheme: int
    public_key: bytes
    node_scheme: int
    node_public_key: bytes

    @cached_property
    def node_id(self) -> Address:
        """The node identity: the address of the node key."""
        return address_of(self.node_scheme, self.node_public_key)


@dataclass(frozen=True)
class Param(Struct):
    """A named integer chain parameter of the genesis (``blockGasLimit`` ...)."""

    name: str
    value: int


@dataclass(frozen=True)
class Genesis(Struct):
    """The genesis: chain id, genesis time (ms) and the validator set (order fixes the indexes)."""

    chain_id: str
    genesis_time_ms: int
    validators: tuple[Validator, ...]
    params: tuple[Param, ...] = field(default=())

    def param(self, name: str, default: int) -> int:
        """The value of parameter ``name``, or ``default``."""
        for p in self.params:
            if p.name == name:
                return p.value
        return default

    @cached_property
    def hash(self) -> Hash32:
        """SHA3-256 of the canonical genesis: the ``prev_hash`` of block 1."""
        return sha3(encode(self))
