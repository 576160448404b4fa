"""The chain store: blocks, commit certificates, receipts, the tx index and the state, in one store.

Each committed block lands in ONE atomic, synced write batch holding its state writes, the block,
its commit certificate, its receipts, the tx index and the new head (DESIGN.md "State"). On open,
the stored genesis, head, latest block and state root must agree, or ``StoreCorrupted`` names
what disagrees: the node never starts on inconsistent data.

Key layout (all heights 8-byte big-endian)::

    m/genesis          -> genesis hash
    m/head             -> encode((height, block_hash, state_root, timestamp_ms))
    b/<height>         -> encode(Block)
    c/<height>         -> encode(CommitCertificate)
    h/<block_hash>     -> height
    r/<height><index>  -> encode(Receipt)
    t/<tx_hash>        -> encode((height, index))
    j/...              -> the state tree: nodes, values, latest-value index, roots, stale lists (state.jmt)
    k/<name>           -> consensus records (vote locks), see ``put_record``

The state version of block ``h`` is ``h`` (version 0: the genesis state, written with the genesis
record).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from crypto.hashing import Hash32
from state.abc import AuthenticatedState, KeyValueStore, WriteOp
from state.codec import decode_value, encode
from state.exceptions import DecodeError, StoreCorrupted
from state.jmt import DEFAULT_CACHE_NODES, DEFAULT_CACHE_VALUES, JellyfishState
from state.types import Block, CommitCertificate, Genesis, Receipt


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


RECENT_BLOCKS = 8
"""Committed blocks kept in memory with their certificates (a full block of 500 ML-DSA-44 transfers is
about 2 MB encoded)."""


@dataclass(frozen=True)
class Head:
    """The newest committed block: ``height``, ``block_hash``, ``state_root``, ``timestamp_ms``."""

    height: int
    block_hash: Hash32
    state_root: Hash32
    timestamp_ms: int


@dataclass(frozen=True)
class TxLocation:
    """Where a transaction was committed: block ``height`` and ``index`` in it."""

    height: int
    index: int


class ChainStore:
    """Blocks, certificates, receipts, tx index and authenticated state over one ``KeyValueStore``."""

    def __init__(
        self,
        store: KeyValueStore,
        genesis: Genesis,
        *,
        cache_nodes: int = DEFAULT_CACHE_NODES,
        cache_values: int = DEFAULT_CACHE_VALUES,
    ) -> None:
        """Open the chain of ``genesis`` in ``store`` (initialising an empty store).

        ``cache_nodes`` and ``cache_values`` size the state tree's memory (``JellyfishState``: internal
        nodes of the newest version, and latest values; counts, 0 turns either off).

        Raises ``StoreCorrupted`` if the store holds another chain, or its head, latest block and
        state root disagree.
        """
        self.kv = store
        self.genesis = genesis
        self._recent: dict[int, tuple[Block, CommitCertificate]] = {}
        """The newest committed blocks with their certificates, by height (at most ``RECENT_BLOCKS``)."""
        stored = store.get(b"m/genesis")
        if stored is None:
            if next(iter(store.iterate(b"")), None) is not None:
                raise StoreCorrupted("the data directory holds data but no genesis record")
            self.state: AuthenticatedState = JellyfishState(
                store, cache_nodes=cache_nodes, cache_values=cache_values)
            root, ops = self.state.prepare({}, 0)
            head = Head(0, genesis.hash, root, genesis.genesis_time_ms)
            store.write([*ops, (b"m/genesis", genesis.hash), (b"m/head", self._encode_head(head))])
            self.state.applied(root)
        elif stored != genesis.hash:
            raise StoreCorrupted(
                f"the data directory belongs to genesis {stored.hex()}, not {genesis.hash.hex()}"
            )
        else:
            if next(iter(store.iterate(b"s/")), None) is not None:
                raise StoreCorrupted(
                    "the data directory holds a flat state (s/ keys) of a release before the Merkle tree "
                    "format; move it away and let the node catch up from its peers"
                )
            self.state = JellyfishState(store, cache_nodes=cache_nodes, cache_values=cache_values)
        self._head = self._load_head()
        self._check_consistency()

    @staticmethod
    def _encode_head(head: Head) -> bytes:
        return encode((head.height, head.block_hash, head.state_root, head.timestamp_ms))

    def _load_head(self) -> Head:
        raw = self.kv.get(b"m/head")
        if raw is None:
            raise StoreCorrupted("no head record")
        try:
            height, block_hash, root, ts = decode_value(raw)
            return Head(int(height), Hash32(block_hash), Hash32(root), int(ts))
        except (DecodeError, ValueError, TypeError) as err:
            raise StoreCorrupted(f"unreadable head record: {err}") from err

    def _check_consistency(self) -> None:
        try:
            self._check_records()
        except DecodeError as err:
            raise StoreCorrupted(f"unreadable record: {err}") from err

    def _check_records(self) -> None:
        head = self._head
        if head.height > 0:
            block = self.block(head.height)
            if block is None:
                raise StoreCorrupted(f"head is height {head.height} but that block is missing")
            if block.hash != head.block_hash:
                raise StoreCorrupted(f"block {head.height} hash {block.hash.hex()} != head {head.block_hash.hex()}")
            if block.header.state_root != head.state_root:
                raise StoreCorrupted(f"block {head.height} state root differs from the head record")
        if self.kv.get(b"b/" + _h(head.height + 1)) is not None:
            raise StoreCorrupted(f"a block above the head ({head.height + 1}) is stored")
        if self.state.version != head.height:
            raise StoreCorrupted(f"the state is at version {self.state.version} but the head at height {head.height}")
        if self.state.root != head.state_root:
            raise StoreCorrupted(
                f"state root {self.state.root.hex()} != head state root {head.state_root.hex()} "
                f"at height {head.height}"
            )

    @property
    def head(self) -> Head:
        """The newest committed block."""
        return self._head

    def commit(
        self,
        block: Block,
        certificate: CommitCertificate,
        receipts: Sequence[Receipt],
        state_updates: Mapping[bytes, bytes | None],
        extra: Iterable[WriteOp] = (),
    ) -> int:
        """Commit ``block`` on top of the head in one synced batch; returns the block's encoded size, bytes.

        ``state_updates`` are the block's state writes (their root must be the header's
        ``state_root``); ``extra`` are further writes of the same batch (consensus records).
        Raises ``StoreCorrupted`` if the block does not extend the head or its root differs.
        """
        head = self._head
        header = block.header
        if header.height != head.height + 1 or header.prev_hash != head.block_hash:
            raise StoreCorrupted(f"block {header.height} does not extend head {head.height}")
        root, ops = self.state.prepare(state_updates, header.height)
        if root != header.state_root:
            raise StoreCorrupted(f"block {header.height}: state root {root.hex()} != header")
        h = _h(header.height)
        encoded = block.encode()
        ops.append((b"b/" + h, encoded))
        ops.append((b"c/" + h, certificate.encode()))
        ops.append((b"h/" + block.hash, h))
        for i, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            ops.append((b"r/" + h + i.to_bytes(4, "big"), receipt.encode()))
            ops.append((b"t/" + tx.hash, encode((header.height, i))))
        new_head = Head(header.height, block.hash, root, header.timestamp_ms)
        ops.append((b"m/head", self._encode_head(new_head)))
        ops.extend(extra)
        self.kv.write(ops, sync=True)
        self.state.applied(root)
        self._head = new_head
        recent = self._recent
        recent[header.height] = (block, certificate)
        if len(recent) > RECENT_BLOCKS:
            del recent[min(recent)]
        return len(encoded)

    def block(self, height: int) -> Block | None:
        """The committed block at ``height`` (1..head), or None.

        The newest ``RECENT_BLOCKS`` are served from memory (what wallets, explorers and catching-up
        peers ask for most), older ones are read and decoded from the store.
        """
        hit = self._recent.get(height)
        if hit is not None:
            return hit[0]
        raw = self.kv.get(b"b/" + _h(height)) if height >= 1 else None
        return None if raw is None else Block.decode(raw)

    def height_of(self, block_hash: bytes) -> int | None:
        """The height of the committed block with ``block_hash``, or None."""
        raw = self.kv.get(b"h/" + block_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def certificate(self, height: int) -> CommitCertificate | None:
        """The stored commit certificate of the block at ``height``, or None (the newest from memory)."""
        hit = self._recent.get(height)
        if hit is not None:
            return hit[1]
        raw = self.kv.get(b"c/" + _h(height)) if height >= 1 else None
        return None if raw is None else CommitCertificate.decode(raw)

    def tx_location(self, tx_hash: bytes) -> TxLocation | None:
        """Where the transaction ``tx_hash`` was committed, or None."""
        raw = self.kv.get(b"t/" + tx_hash)
        if raw is None:
            return None
        height, index = decode_value(raw)
        return TxLocation(height, index)

    def receipt(self, tx_hash: bytes) -> tuple[Receipt, TxLocation] | None:
        """The receipt of a committed transaction with its location, or None."""
        loc = self.tx_location(tx_hash)
        if loc is None:
            return None
        raw = self.kv.get(b"r/" + _h(loc.height) + loc.index.to_bytes(4, "big"))
        if raw is None:
            raise StoreCorrupted(f"tx index points to a missing receipt at {loc}")
        return Receipt.decode(raw), loc

    def receipts(self, height: int) -> list[Receipt]:
        """The receipts of the block at ``height``, in transaction order."""
        return [Receipt.decode(v) for _, v in self.kv.iterate(b"r/" + _h(height))]

    def put_record(self, name: bytes, value: bytes) -> None:
        """Durably store a consensus record (synced write) before a vote leaves the node."""
        self.kv.write([(b"k/" + name, value)], sync=True)

    def get_record(self, name: bytes) -> bytes | None:
        """A consensus record stored with ``put_record``, or None."""
        return self.kv.get(b"k/" + name)
