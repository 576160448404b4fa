"""The node: one validator (or observer) wired from the packages below it.

Services and their owner (one nursery; cancelling it stops them all, then LevelDB is closed)::

    Node.run ─ nursery
      ├── PeerNetwork.run            p2p: listen, dial, per-peer writers  → inbound, peer_events
      ├── Node._inbound_loop         decode each frame, dispatch (tx gossip, consensus, catch-up)
      ├── Node._peer_events_loop     a peer connected → send it our STATUS
      ├── Node._proposer_loop        primary only: build and propose the next block on time
      ├── Node._ticker_loop          retransmit own undecided messages, broadcast STATUS
      ├── Node._gossip_loop          send admitted transactions to the peers in TXS batches
      ├── Node._compact_loop         ask for the full PRE-PREPARE when a compact one waited too long
      ├── Node._prune_loop           delete state versions older than [state] retention, in small steps
      └── rpc.serve                  hypercorn (ASGI on Trio): JSON-RPC, /health, /ready

All state transitions run on the Trio thread without awaiting in between, so the replica, the
chain store and the mempool need no locks. Consensus actions are carried out in order:
``PersistVote`` is a synced write before the ``Broadcast`` of that vote.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgpack
import trio

from consensus import replica as pbft
from consensus.exceptions import InvalidMessage
from consensus.messages import (
    CHECKPOINT,
    COMMIT,
    KIND_NAMES,
    NEW_VIEW,
    PRE_PREPARE,
    VIEW_CHANGE,
    Checkpoint,
    Evidence,
    NewView,
    PreparedCertificate,
    PrePrepare,
    StableCheckpoint,
    ViewChange,
    Vote,
    vote_signing_bytes,
)
from contracts import gas as G
from contracts.exceptions import TxRejected
from contracts.registry import default_vm
from contracts.vm import VM, BlockEnv
from crypto.exceptions import InvalidSignature
from crypto.hashing import Hash32, sha3
from crypto.keys import Address, KeyPair
from crypto.signatures import Context, scheme_by_name
from node import messages as M
from node.config import NodeConfig
from node.exceptions import InvalidBlock
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.rpc.pubsub import Hub
from p2p.network import PeerNetwork
from state.abc import KeyValueStore, WriteOp
from state.chain import ChainStore
from state.codec import Struct, decode_value, encode
from state.exceptions import DecodeError, StoreCorrupted
from state.tree import merkle_root
from state.types import (
    MAX_TX_SIZE,
    Block,
    BlockHeader,
    CommitCertificate,
    Genesis,
    Receipt,
    Transaction,
    wire_id_of,
)

log = logging.getLogger("qenex.node")

GOSSIP_ON_CONNECT = 5_000
"""Pending transactions pushed to a peer when it connects."""
REGOSSIP_AFTER = 10.0
"""Seconds a transaction stays pending before it is offered to the peers again."""
REGOSSIP_BATCH = 256
"""Most transactions re-offered per status tick."""
GOSSIP_INTERVAL = 0.01
"""Seconds admitted transactions wait to be gossiped together in one TXS message."""
GOSSIP_BATCH_BYTES = 256 * 1024
"""A TXS batch this large is sent at once, without waiting for the interval."""
GOSSIP_KINDS = frozenset({M.TX, M.TXS})
"""Message types sent in the peers' bulk lane (``PeerNetwork.send(bulk=True)``)."""
MAX_TX_BACKLOG = 20_000
BUSY_BACKLOG = 2_000
"""With this many gossiped transactions waiting, clients' new transactions are refused (node busy)."""
BUSY_BLOCKS = 4
"""...and likewise with this many full blocks' worth (``max_block_txs``) of transactions pending."""
"""Gossiped transactions waiting for admission at most; more are dropped (their sender re-offers)."""
ADMIT_SLICE = 64
"""Gossiped transactions admitted between two looks at the peer messages waiting."""
R = TypeVar("R", bound=Struct)
"""A consensus record type (``_load_record``)."""
COMPACT_WAIT = 0.3
"""Seconds a compact PRE-PREPARE waits for the gossip of transactions it names that the mempool lacks;
then the full PRE-PREPARE is asked of its sender (GET_PRE_PREPARE)."""
MAX_PENDING_COMPACT = 4
"""Compact PRE-PREPAREs waiting for transactions at most (beyond it, the one of the highest slot is dropped)."""
MAX_FULL_ANSWERS = 2
"""Full PRE-PREPAREs sent to one peer for one (view, seq) at most (GET_PRE_PREPARE answers)."""
MAX_DROPPED = 10_000
"""How many dropped transactions' reasons are remembered (for waiting clients)."""

MAX_BLOCK_TXS = 10_000
"""Protocol limit on transactions per block (validity rule; config.max_block_txs is the builder's)."""


def peek_sender_nonce(raw: bytes) -> tuple[bytes, int] | None:
    """(sender, nonce) read from the front of an encoded transaction without decoding it (fields
    ``body.sender`` and ``body.nonce``, docs/protocol.md §1), or None if it does not start that way.
    Used only to decide whether to shed load; the transaction is decoded in full before admission."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(raw), 1), max_map_len=0, max_ext_len=0)
    unpacker.feed(raw)
    try:
        unpacker.read_array_header()
        unpacker.read_array_header()
        unpacker.skip()
        sender, nonce = unpacker.unpack(), unpacker.unpack()
    except Exception:  # noqa: BLE001 - any malformed prefix: not a transaction we could take anyway
        return None
    return (sender, nonce) if type(sender) is bytes and type(nonce) is int else None


def tx_root(txs: Sequence[Transaction]) -> Hash32:
    """Merkle root (``state.tree.merkle_root``) over the transaction hashes, in block order."""
    return merkle_root([tx.hash for tx in txs])


def receipts_root(receipts: Sequence[Receipt]) -> Hash32:
    """Merkle root over SHA3-256 of each receipt's canonical encoding, in block order."""
    return merkle_root([sha3(r.encode()) for r in receipts])


@dataclass
class _Executed:
    updates: dict[bytes, bytes | None]
    receipts: list[Receipt]


@dataclass
class _PendingCompact:
    """A compact PRE-PREPARE from ``peer`` that names transactions the mempool lacks (``missing``
    wire ids), received at ``since`` (Trio clock seconds); ``digest`` identifies its payload."""

    peer: bytes
    message: M.CompactPrePrepare
    digest: bytes
    since: float
    missing: set[bytes]


SYNC_REQUEST_TIMEOUT = 5.0
"""Seconds a GET_BLOCKS may stay unanswered; then its peer gets a strike and another peer is asked."""
SYNC_BACKOFF = 10.0
"""Seconds a peer is not asked for blocks after its first strike; each further strike doubles it..."""
SYNC_BACKOFF_MAX = 300.0
"""...up to this many seconds."""


@dataclass
class SyncState:
    """Catch-up bookkeeping: the request in flight, what each peer claims, and who not to ask.

    Times are seconds of the Trio clock (``trio.current_time()``). A peer gets a *strike* when it
    leaves a request unanswered for ``SYNC_REQUEST_TIMEOUT`` or answers it with none of the blocks it
    claimed to have; it is then not asked before ``backoff_until`` (``SYNC_BACKOFF`` doubling per
    strike, capped at ``SYNC_BACKOFF_MAX``). A peer that sent a bad block or certificate is in
    ``bad_peers`` and never asked again by this process.
    """

    peer: bytes | None = None
    """The peer the request in flight went to (None: no request in flight)."""
    sent_at: float = 0.0
    start: int = 0
    count: int = 0
    """The request in flight asked for blocks ``start`` .. ``start + count - 1``."""
    peer_heights: dict[bytes, int] = field(default_factory=dict)
    """The committed height each peer claims (its STATUS, lowered to what it served after a short reply)."""
    strikes: dict[bytes, int] = field(default_factory=dict)
    backoff_until: dict[bytes, float] = field(default_factory=dict)
    bad_peers: set[bytes] = field(default_factory=set)


class Node:
    """A QENEX node: chain store, VM, mempool, PBFT replica, P2P and JSON-RPC."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        genesis: Genesis,
        store: KeyValueStore,
        node_key: KeyPair,
        validator_key: KeyPair | None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        """Open the chain in ``store`` and restore consensus records.

        ``validator_key`` None (or a key not in genesis) makes an observer that never votes.
        Raises ``state.exceptions.StoreCorrupted`` if the stored data disagrees with itself.
        """
        self.config = config
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.chain = ChainStore(store, genesis, cache_nodes=config.state.cache_nodes,
                                cache_values=config.state.cache_values)
        self.vm: VM = default_vm()
        self.node_key = node_key
        self.validator_key = validator_key
        self.clock_ms = clock_ms
        self.validators = genesis.validators
        self.n = len(self.validators)
        self.index: int | None = None
        if validator_key is not None:
            for i, v in enumerate(self.validators):
                if v.public_key == validator_key.public_key and v.scheme == validator_key.scheme_tag:
                    self.index = i
        mp = config.mempool
        self.mempool = Mempool(max_txs=mp.max_txs, max_bytes=mp.max_bytes, nonce_window=mp.nonce_window)
        self.block_gas_limit = genesis.param("blockGasLimit", G.DEFAULT_BLOCK_GAS_LIMIT)
        self._verifier = pbft.make_verifier([(v.scheme, v.public_key) for v in self.validators], Context.CONSENSUS)
        self._check_consensus_records()
        head = self.chain.head
        self.replica = pbft.Replica(
            chain_id=self.chain_id, n=self.n, index=self.index,
            signer=(lambda m: validator_key.sign(Context.CONSENSUS, m)) if self.index is not None else None,
            verifier=self._verifier, height=head.height, head_hash=head.block_hash,
            votes=self._load_votes(), head_certificate=self.chain.certificate(head.height),
            prepared=self._load_record(b"prepared", PreparedCertificate), genesis_hash=genesis.hash,
            checkpoint_interval=genesis.param("checkpointInterval", pbft.DEFAULT_CHECKPOINT_INTERVAL),
            stable_checkpoint=self._load_record(b"checkpoint", StableCheckpoint),
            own_view_change=self._load_record(b"viewchange", ViewChange),
        )
        self._executed: dict[Hash32, _Executed] = {}
        self._waiters: dict[Hash32, trio.Event] = {}
        self.sync = SyncState()
        self.net: PeerNetwork | None = None
        self.commit_event = trio.Event()
        self.last_commit_time = 0.0
        self.started = False
        self.p2p_port: int | None = None
        self.last_progress = 0.0
        """Trio clock seconds at which the view-change timer last (re)started (``_check_view_timer``)."""
        self._timer_running = False
        """Whether the last look of ``_check_view_timer`` found work waiting (the timer runs)."""
        self.last_proposal = 0.0
        """When the primary last proposed (``_proposer_tick``), Trio clock seconds."""
        self.timeouts = 0
        self.sync_target = 0
        self.rpc_urls: list[str] = []
        self.evidence_count = sum(1 for _ in self.chain.kv.iterate(b"k/evidence"))
        """Evidence records in the store (``k/evidence`` keys): the ``qenex_equivocation_evidence`` gauge."""
        self.dropped: dict[Hash32, str] = {}
        """Why recently dropped pending transactions left the mempool (newest ``MAX_DROPPED``)."""
        self.pubsub = Hub()
        """Subscriptions of RPC clients (``qnx_subscribe``): told of commits, admissions and drops."""
        self.metrics = NodeMetrics(self)
        self._gossip_out: list[bytes] = []
        """Admitted raw transactions not yet gossiped (sent in TXS batches, ``flush_gossip``)."""
        self._gossip_bytes = 0
        self.tx_backlog: collections.deque[tuple[bytes, int, bytes]] = collections.deque()
        """Gossiped transactions waiting for admission, each ``(peer, message number, raw)``: who sent
        it, in which TXS/TX message (``_gossip_messages`` counts them), so that one message proving
        its sender faulty costs it one penalty (``admit_backlog``)."""
        self._gossip_messages = 0
        self._penalized_message = -1
        """The number of the last gossip message whose sender was penalized (``admit_backlog``)."""
        self.retransmits = 0
        """Retransmissions since the last commit (each doubles the wait before the next)."""
        self._seen_proposals: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        """Digests of PRE-PREPARE payloads the replica holds: a retransmitted copy is not decoded again."""
        self._pending_compact: dict[tuple[int, int], _PendingCompact] = {}
        """Compact PRE-PREPAREs waiting for the gossip of transactions they name, by (view, seq)."""
        self._full_answers: collections.OrderedDict[tuple[bytes, int, int], int] = collections.OrderedDict()
        """Full PRE-PREPAREs sent per (peer, view, seq) in answer to GET_PRE_PREPARE (capped)."""

    # --- consensus records --------------------------------------------------------------------

    def _load_votes(self) -> dict[tuple[int, int, int], Hash32]:
        """The vote records (``k/vote`` + encoded (kind, view, seq) -> 32-byte block hash) that still
        bind this replica: votes above the head, and VIEW-CHANGE / NEW-VIEW records. They are its
        double-sign protection, so an unreadable one stops the start (``StoreCorrupted``) rather than
        being skipped."""
        votes = {}
        for key, value in self.chain.kv.iterate(b"k/vote"):
            try:
                record = decode_value(key[len(b"k/vote") :])
            except DecodeError as err:
                raise StoreCorrupted(f"unreadable vote record key 0x{key.hex()}: {err}") from err
            if (type(record) is not tuple or len(record) != 3 or not all(type(x) is int for x in record)
                    or record[0] not in KIND_NAMES or len(value) != 32):
                raise StoreCorrupted(f"malformed vote record 0x{key.hex()} -> {len(value)} bytes (want an "
                                     "encoded (kind, view, seq) naming a 32-byte block hash)")
            kind, view, seq = record
            if seq > self.chain.head.height or kind in (VIEW_CHANGE, NEW_VIEW):
                votes[(kind, view, seq)] = Hash32(value)
        return votes

    def _load_record(self, name: bytes, cls: type[R]) -> R | None:
        """The consensus record ``name`` decoded as ``cls``, or None. Raises ``StoreCorrupted``."""
        raw = self.chain.get_record(name)
        if raw is None:
            return None
        try:
            return cls.decode(raw)
        except DecodeError as err:
            raise StoreCorrupted(f"unreadable {name.decode()} record: {err}") from err

    def _check_consensus_records(self) -> None:
        """Check at start that the consensus records agree with the block store (crash recovery).

        * height > 0: the head block's commit certificate is stored and holds 2f + 1 valid COMMIT
          signatures of the genesis validator set (Castro & Liskov §4.2, committed certificate);
        * ``k/checkpoint``: the stable checkpoint's seq is at most the head height, it names the block
          stored at that height, and it holds a quorum of distinct, valid CHECKPOINT signatures for
          that seq and block (§4.3, the proof of a stable checkpoint);
        * ``k/prepared``: the prepared certificate (§4.4, carried in VIEW-CHANGEs) is for the next
          height, head + 1, and its block extends the head. One for a height already committed is the
          normal leftover of a shutdown between the commit and the record's cleanup: it is deleted,
          with a log line.

        Raises ``StoreCorrupted`` naming the record and what disagrees (the node must not start).
        """
        head = self.chain.head
        if head.height > 0:
            cert = self.chain.certificate(head.height)
            if cert is None:
                raise StoreCorrupted(f"head block {head.height} has no commit certificate stored")
            try:
                pbft.verify_certificate(cert, head.block_hash, head.height, self.chain_id, self.n, self._verifier)
            except InvalidMessage as err:
                raise StoreCorrupted(f"commit certificate of head block {head.height} does not verify against "
                                     f"the genesis validator set: {err}") from err
        cp = self._load_record(b"checkpoint", StableCheckpoint)
        if cp is not None:
            self._check_stable_checkpoint(cp, head.height)
        prepared = self._load_record(b"prepared", PreparedCertificate)
        if prepared is not None:
            seq = prepared.pre_prepare.seq
            if seq <= head.height:
                log.info("dropping the stale prepared certificate record for seq %d (head is %d): left by a "
                         "shutdown right after the commit", seq, head.height)
                self.chain.kv.write([(b"k/prepared", None)], sync=True)
            elif seq != head.height + 1:
                raise StoreCorrupted(f"prepared certificate record is for seq {seq}, but the head is at height "
                                     f"{head.height}: only {head.height + 1} can be prepared")
            elif prepared.pre_prepare.block.header.prev_hash != head.block_hash:
                raise StoreCorrupted(f"prepared certificate record for seq {seq} holds a block that does not "
                                     f"extend the head block 0x{head.block_hash.hex()}")

    def _check_stable_checkpoint(self, cp: StableCheckpoint, head_height: int) -> None:
        """Check the stored stable checkpoint ``cp`` against the block store (``_check_consensus_records``).

        Raises ``StoreCorrupted`` naming what disagrees.
        """
        if not 0 < cp.seq <= head_height:
            raise StoreCorrupted(f"stable checkpoint record is for seq {cp.seq}, above the head height "
                                 f"{head_height}" if cp.seq > 0 else f"stable checkpoint record has seq {cp.seq}")
        block = self.chain.block(cp.seq)
        if block is None or block.hash != cp.block_hash:
            stored = "no block" if block is None else f"block 0x{block.hash.hex()}"
            raise StoreCorrupted(f"stable checkpoint record for seq {cp.seq} names block 0x{cp.block_hash.hex()}, "
                                 f"but the block store holds {stored} at that height")
        signers = [c.validator for c in cp.signatures]
        quorum = pbft.quorum_size(self.n)
        if len(set(signers)) != len(signers) or len(signers) < quorum:
            raise StoreCorrupted(f"stable checkpoint record for seq {cp.seq} has {len(set(signers))} distinct "
                                 f"signers, needs {quorum}")
        for c in cp.signatures:
            if c.seq != cp.seq or c.block_hash != cp.block_hash or not 0 <= c.validator < self.n:
                raise StoreCorrupted(f"stable checkpoint record for seq {cp.seq} holds a CHECKPOINT for another "
                                     f"seq, block or validator ({c.seq}, 0x{c.block_hash.hex()}, {c.validator})")
            try:
                self._verifier(c.validator, vote_signing_bytes(self.chain_id, CHECKPOINT, 0, c.seq, c.block_hash,
                                                               c.validator), c.signature)
            except InvalidSignature as err:
                raise StoreCorrupted(f"stable checkpoint record for seq {cp.seq}: the signature of validator "
                                     f"{c.validator} does not verify") from err

    def _persist_vote(self, a: pbft.PersistVote) -> None:
        if a.block is not None:  # a pre-prepare: keep the block, so a restart proposes the same one
            self.chain.put_record(b"proposal" + encode((a.view, a.seq)), a.block.encode())
        if a.view_change is not None:  # the signed VIEW-CHANGE, offered again after a restart
            self.chain.kv.write([(b"k/viewchange", a.view_change.encode()),
                                 (b"k/vote" + encode((a.kind, a.view, a.seq)), a.block_hash)], sync=True)
            return
        self.chain.put_record(b"vote" + encode((a.kind, a.view, a.seq)), a.block_hash)

    def _stale_record_ops(self, height: int) -> list[WriteOp]:
        """Deletes of the vote and proposal records that committing ``height`` makes moot (seq 1..height,
        all views; 0: none), and of the VIEW-CHANGE and NEW-VIEW vote records (seq 0) of views below
        the replica's current view, in one pass over the records. A restart needs only the current
        view's: the replica resumes in the highest view recorded (installed if its NEW-VIEW is
        recorded), and never signs a VIEW-CHANGE or accepts a NEW-VIEW for a view at or below it
        (Castro & Liskov §4.4), so older ones protect nothing."""
        ops: list[WriteOp] = []
        view = self.replica.view
        for prefix in (b"k/vote", b"k/proposal"):
            for key, _ in self.chain.kv.iterate(prefix):
                try:
                    fields = decode_value(key[len(prefix):])
                except DecodeError:
                    continue
                if type(fields) is not tuple or not fields or not all(type(x) is int for x in fields):
                    continue
                if prefix == b"k/vote" and fields[0] in (VIEW_CHANGE, NEW_VIEW):
                    if fields[1] < view:
                        ops.append((key, None))
                elif 0 < fields[-1] <= height and (prefix == b"k/proposal" or fields[0] <= COMMIT):
                    ops.append((key, None))
        return ops

    def _cleanup_ops(self, height: int) -> list[WriteOp]:
        """Deletes of the consensus records that committing ``height`` makes moot (``_stale_record_ops``)
        and of a prepared certificate it decided."""
        ops = self._stale_record_ops(height)
        prepared = self.replica._prepared
        if prepared is None or prepared.pre_prepare.seq <= height:
            ops.append((b"k/prepared", None))
        return ops

    # --- transactions --------------------------------------------------------------------------

    def account_nonce(self, address: bytes) -> int:
        """The committed next nonce of ``address``."""
        return self.vm.account_nonce(self.chain.state.get, address)

    def decode_tx(self, raw: bytes) -> Transaction:
        """Decode a raw transaction and check what needs no state or signature: size, encoding,
        chain id, gas bounds. (``_admit`` verifies the signature once it knows the transaction is
        neither pending nor committed: each transaction is verified once per node.)

        Raises ``DecodeError`` or ``TxRejected``.
        """
        if len(raw) > MAX_TX_SIZE:
            raise DecodeError(f"transaction is {len(raw)} bytes, over the limit of {MAX_TX_SIZE}")
        tx = Transaction.decode(raw, max_size=MAX_TX_SIZE)
        self.vm.check_static(tx, self.chain_id, self.block_gas_limit)
        return tx

    def admit(self, raw: bytes, *, gossip: bool = True) -> Hash32:
        """Admit a raw transaction to the mempool and gossip it; returns its hash.

        Idempotent for a transaction already pending. Raises ``DecodeError``,
        ``InvalidSignature`` or ``TxRejected`` (chain id, nonce, gas, mempool full).
        """
        try:
            return self._admit(raw, gossip)
        except TxRejected as err:
            self.metrics.rejected.labels(err.reason).inc()
            raise
        except InvalidSignature:
            self.metrics.rejected.labels("bad signature").inc()
            raise
        except DecodeError:
            self.metrics.rejected.labels("malformed").inc()
            raise

    def _admit(self, raw: bytes, gossip: bool) -> Hash32:
        if gossip and (len(self.tx_backlog) >= BUSY_BACKLOG
                       or len(self.mempool) >= BUSY_BLOCKS * self.config.consensus.max_block_txs):
            # shed load at the edge, before spending a decode on it: more than the next blocks can
            # take already waits, so more would only lengthen every wait and starve consensus of
            # CPU. A transaction that fills its sender's nonce gap is still taken (refusing it
            # would strand the ones behind it).
            peeked = peek_sender_nonce(raw)
            if peeked is None or not self.mempool.fills_gap(*peeked):
                raise TxRejected("node busy", f"{len(self.mempool)} transactions pending and {len(self.tx_backlog)} "
                                 "gossiped ones waiting for verification; retry later or at another validator")
        tx = self.decode_tx(raw)
        if self.mempool.holds_verified(tx):
            return tx.hash
        if self.chain.tx_location(tx.hash) is not None:
            raise TxRejected("already committed", f"transaction 0x{tx.hash.hex()} is in the chain")
        tx.verify_signature()
        if tx.hash in self.mempool:  # the same body under another (hedged) signature
            return tx.hash
        body = tx.body
        now = trio.current_time()
        added = self.mempool.add(tx, len(raw), self.account_nonce(body.sender), raw=raw, now=now)
        self._note_dropped()
        if added:
            self.dropped.pop(tx.hash, None)
            self.pubsub.tx_admitted(tx.hash)
            if gossip:
                self._gossip_out.append(raw)
                self._gossip_bytes += len(raw)
                if len(self._gossip_out) >= M.MAX_TXS_PER_MESSAGE or self._gossip_bytes >= GOSSIP_BATCH_BYTES:
                    self.flush_gossip()
        return tx.hash

    def _note_dropped(self, expired: Sequence[Hash32] = ()) -> None:
        """Record why transactions left the mempool uncommitted and wake their waiters."""
        mp = self.mempool
        for reason, hashes in (("evicted for higher-priority transactions (mempool full)", mp.evicted),
                               ("replaced by another transaction with the same nonce", mp.replaced),
                               ("expired: pending longer than the mempool TTL", expired)):
            for h in hashes:
                self._record_dropped(h, reason)
        mp.evicted.clear()
        mp.replaced.clear()

    def _record_dropped(self, tx_hash: Hash32, reason: str) -> None:
        """``tx_hash`` left the mempool uncommitted: remember why, wake its waiters, tell subscribers."""
        self.dropped[tx_hash] = reason
        self.metrics.dropped.labels(reason.split(" ")[0]).inc()
        event = self._waiters.pop(tx_hash, None)
        if event is not None:
            event.set()
        self.pubsub.tx_dropped(tx_hash, reason)
        while len(self.dropped) > MAX_DROPPED:
            del self.dropped[next(iter(self.dropped))]

    def flush_mempool(self, reason: str = "flushed by the operator (admin_flushMempool)") -> int:
        """Drop every pending transaction for ``reason`` (waiters and subscribers hear it); returns how many."""
        hashes = self.mempool.clear()
        for h in hashes:
            self._record_dropped(h, reason)
        return len(hashes)

    def waiter(self, tx_hash: Hash32) -> trio.Event:
        """An event set when ``tx_hash`` is committed (for ``qnx_sendRawTransactionAndWait``)."""
        event = self._waiters.get(tx_hash)
        if event is None:
            event = self._waiters[tx_hash] = trio.Event()
        if self.chain.tx_location(tx_hash) is not None:
            event.set()
        return event

    def evidence(self) -> list[Evidence]:
        """Every equivocation this node recorded, oldest view first."""
        out = []
        for _, raw in self.chain.kv.iterate(b"k/evidence"):
            try:
                out.append(Evidence.decode(raw))
            except DecodeError:
                continue
        return out

    # --- blocks --------------------------------------------------------------------------------

    def env_for(self, header: BlockHeader) -> BlockEnv:
        """The block environment contracts see (time in seconds, from the header)."""
        return BlockEnv(self.chain_id, header.height, header.timestamp_ms // 1000)

    def build_block(self) -> Block:
        """Execute ready mempool transactions on the head and build the next block (as primary)."""
        head = self.chain.head
        view = self.replica.view
        ts = max(self.clock_ms(), head.timestamp_ms + 1)
        env = BlockEnv(self.chain_id, head.height + 1, ts // 1000)
        from contracts.vm import Overlay

        overlay = Overlay(self.chain.state.get)
        included: list[Transaction] = []
        receipts: list[Receipt] = []
        dropped: list[Transaction] = []
        gas_budget = self.block_gas_limit
        candidates = self.mempool.ready(self.config.consensus.max_block_txs)
        for tx in candidates:
            if tx.body.gas_limit > gas_budget:
                break
            try:
                receipts.append(self.vm.execute_tx(overlay, env, tx))
            except TxRejected as err:
                log.warning("dropping tx 0x%s from the mempool: %s", tx.hash.hex()[:16], err)
                dropped.append(tx)
                continue
            gas_budget -= tx.body.gas_limit
            included.append(tx)
        self.mempool.remove(dropped)
        for tx in dropped:
            self._record_dropped(tx.hash, "rejected while building a block (no longer executable)")
        state_root, _ = self.chain.state.prepare(overlay.writes, head.height + 1)
        header = BlockHeader(
            self.chain_id, head.height + 1, view, head.block_hash, ts, self.index if self.index is not None else 0,
            tx_root(included), state_root, receipts_root(receipts), sum(r.gas_used for r in receipts),
        )
        block = Block(header, tuple(included))
        self._executed[block.hash] = _Executed(overlay.writes, receipts)
        return block

    def validate_block(self, block: Block, *, check_clock: bool) -> None:
        """Re-execute ``block`` on the head and check every header field; caches the result.

        Raises ``InvalidBlock`` naming what does not hold.
        """
        if block.hash in self._executed:
            return
        head = self.chain.head
        h = block.header
        if h.chain_id != self.chain_id:
            raise InvalidBlock(f"chain id {h.chain_id!r}")
        if h.height != head.height + 1 or h.prev_hash != head.block_hash:
            raise InvalidBlock(f"block {h.height} does not extend head {head.height}")
        if h.timestamp_ms <= head.timestamp_ms:
            raise InvalidBlock("timestamp not after the parent's")
        if check_clock and h.timestamp_ms > self.clock_ms() + self.config.consensus.max_clock_drift_ms:
            raise InvalidBlock("timestamp too far in the future")
        if not 0 <= h.proposer < self.n:
            raise InvalidBlock("proposer outside the validator set")
        if len(block.transactions) > MAX_BLOCK_TXS:
            raise InvalidBlock(f"more than {MAX_BLOCK_TXS} transactions")
        if tx_root(block.transactions) != h.tx_root:
            raise InvalidBlock("tx root mismatch")
        if sum(tx.body.gas_limit for tx in block.transactions) > self.block_gas_limit:
            raise InvalidBlock("block gas limit exceeded")
        seen: set[Hash32] = set()
        for tx in block.transactions:
            if tx.hash in seen or self.chain.tx_location(tx.hash) is not None:
                raise InvalidBlock(f"duplicate transaction 0x{tx.hash.hex()}")
            seen.add(tx.hash)
            if not self.mempool.holds_verified(tx):
                try:
                    tx.verify_signature()
                except InvalidSignature as err:
                    raise InvalidBlock(f"transaction 0x{tx.hash.hex()}: {err}") from err
        try:
            updates, receipts = self.vm.execute_block(self.chain.state.get, self.env_for(h), block.transactions)
        except TxRejected as err:
            raise InvalidBlock(f"transaction can not be included: {err}") from err
        if receipts_root(receipts) != h.receipts_root:
            raise InvalidBlock("receipts root mismatch")
        if sum(r.gas_used for r in receipts) != h.gas_used:
            raise InvalidBlock("gas used mismatch")
        state_root, _ = self.chain.state.prepare(updates, h.height)
        if state_root != h.state_root:
            raise InvalidBlock("state root mismatch")
        self._executed[block.hash] = _Executed(updates, receipts)

    def commit(self, block: Block, certificate: CommitCertificate) -> None:
        """Store ``block`` with ``certificate`` (one synced batch), update mempool and waiters."""
        done = self._executed.pop(block.hash, None)
        if done is None:
            self.validate_block(block, check_clock=False)
            done = self._executed.pop(block.hash)
        size = self.chain.commit(block, certificate, done.receipts, done.updates,
                                 extra=self._cleanup_ops(block.height))
        self._executed.clear()
        self.mempool.remove(block.transactions)
        self.mempool.prune(self.account_nonce, [tx.body.sender for tx in block.transactions])
        for tx in block.transactions:
            event = self._waiters.pop(tx.hash, None)
            if event is not None:
                event.set()
        self.pubsub.block_committed(block, done.receipts)
        self.last_commit_time = self.last_progress = trio.current_time()
        self.timeouts = 0
        self.retransmits = 0
        self.metrics.on_commit(len(block.transactions), size,
                               (self.clock_ms() - block.header.timestamp_ms) / 1000)
        self.commit_event.set()
        self.commit_event = trio.Event()
        log.info("committed block %d hash=%s txs=%d root=%s mempool=%d", block.height, block.hash.hex()[:16],
                 len(block.transactions), block.header.state_root.hex()[:16], len(self.mempool),
                 extra={"height": block.height, "hash": "0x" + block.hash.hex(), "txs": len(block.transactions),
                        "view": block.header.view})

    # --- consensus driver ------------------------------------------------------------------------

    def carry_out(self, actions: list[pbft.Action]) -> None:
        """Carry out replica actions in order (persist before broadcast), feeding back results."""
        queue = list(actions)
        while queue:
            a = queue.pop(0)
            if isinstance(a, pbft.PersistVote):
                self._persist_vote(a)
            elif isinstance(a, pbft.PersistPrepared):
                self.chain.put_record(b"prepared", a.certificate.encode())
            elif isinstance(a, pbft.Broadcast):
                if self.net is not None:
                    self._broadcast(M.kind_of(a.message), a.message)
            elif isinstance(a, pbft.SyncTo):
                self.sync_target = max(self.sync_target, a.height)
                self._maybe_sync()  # whom to ask: _pick_sync_peer, as for every catch-up request
            elif isinstance(a, pbft.CheckpointStable):
                self.chain.put_record(b"checkpoint", a.checkpoint.encode())
                self.metrics.checkpoints.inc()
                log.info("checkpoint %d stable with %d signatures", a.checkpoint.seq, len(a.checkpoint.signatures))
            elif isinstance(a, pbft.StateDivergence):
                self.metrics.divergences.inc()
                log.critical("a quorum certified block 0x%s at %d, but this node committed 0x%s: its state "
                             "is not the network's; stop it and resync from a peer", a.theirs.hex(), a.seq,
                             a.ours.hex())
            elif isinstance(a, pbft.ViewInstalled):
                self.last_progress = trio.current_time()
                old = self._stale_record_ops(0)
                if old:  # not synced: a record left by a crash is deleted at the next commit or view
                    self.chain.kv.write(old, sync=False)
                self.metrics.view_changes.inc()
                log.info("view %d installed (primary: validator %d)", a.view, self.replica.primary(),
                         extra={"view": a.view})
            elif isinstance(a, pbft.ValidateBlock):
                try:
                    self.validate_block(a.block, check_clock=True)
                except InvalidBlock as err:
                    log.warning("rejecting block %d from view %d: %s", a.seq, a.view, err.reason)
                    queue[:0] = self.replica.block_invalid(a.view, a.seq, a.block.hash)
                else:
                    queue[:0] = self.replica.block_validated(a.view, a.seq, a.block.hash)
            elif isinstance(a, pbft.CommitBlock):
                self.commit(a.block, a.certificate)
            elif isinstance(a, pbft.RecordEvidence):
                ev = a.evidence
                name = b"evidence" + encode((ev.view, ev.seq, ev.validator, ev.kind))
                if self.chain.get_record(name) is None:  # a restarted node may detect the same one again
                    self.evidence_count += 1
                self.chain.put_record(name, ev.encode())
                self.metrics.evidence.labels(KIND_NAMES.get(ev.kind, str(ev.kind))).inc()
                log.warning("equivocation by validator %d at view %d seq %d", ev.validator, ev.view, ev.seq)

    def propose(self) -> Block | None:
        """As primary with nothing pending: build, persist and propose the next block."""
        if not self.replica.is_primary or self.replica.proposal_pending():
            return None
        seq, view = self.replica.next_seq, self.replica.view
        saved = self.chain.get_record(b"proposal" + encode((view, seq)))
        block = Block.decode(saved) if saved is not None else self.build_block()
        if saved is not None:
            try:
                self.validate_block(block, check_clock=False)
            except InvalidBlock as err:  # proposed before a restart, but no longer fits the head
                log.error("saved proposal for view %d seq %d is invalid now: %s", view, seq, err.reason)
                return None
        try:
            actions = self.replica.propose(block)
        except ValueError as err:
            log.error("not proposing block %d: %s", seq, err)
            return None
        self.carry_out(actions)
        return block

    def on_message(self, peer: bytes, payload: bytes) -> None:
        """Handle one frame from ``peer``; a bad one is logged and dropped, never fatal."""
        digest = b""
        if len(payload) > 2 and payload[1] in (M.PRE_PREPARE, M.PRE_PREPARE_COMPACT):
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            if digest in self._seen_proposals:
                self.metrics.on_message(payload[1], len(payload))
                return  # the same bytes again (a retransmission): the replica already holds it
        try:
            kind, body = M.unpack(payload, self.config.p2p.max_frame_bytes)
            self.metrics.on_message(kind, len(payload))
            if kind == M.TX or kind == M.TXS:
                raws: tuple[bytes, ...] = (body,) if isinstance(body, bytes) else body  # type: ignore[assignment]
                self._gossip_messages += 1
                if self._pending_compact:  # what a waiting compact PRE-PREPARE lacks is admitted first
                    raws = self._admit_awaited(peer, self._gossip_messages, raws)
                room = MAX_TX_BACKLOG - len(self.tx_backlog)
                self.tx_backlog.extend((peer, self._gossip_messages, raw) for raw in raws[:room])
                if len(raws) > room:  # the sender re-offers them, and blocks carry them anyway
                    self.metrics.rejected.labels("gossip backlog full").inc(len(raws) - max(room, 0))
            elif kind == M.PRE_PREPARE_COMPACT:
                assert isinstance(body, M.CompactPrePrepare)  # noqa: S101
                self._on_compact(peer, body, digest)
            elif kind == M.GET_PRE_PREPARE:
                assert isinstance(body, M.GetPrePrepare)  # noqa: S101
                self._serve_pre_prepare(peer, body)
            elif kind == M.PRE_PREPARE:
                assert isinstance(body, PrePrepare)  # noqa: S101
                self._receive_pre_prepare(peer, body, digest)
            elif kind == M.VOTE:
                assert isinstance(body, Vote)  # noqa: S101
                if body.seq > self.replica.next_seq:  # the sender is ahead: it committed body.seq - 1
                    self._note_peer_height(peer, body.seq - 1, at_least=True)
                    self._maybe_sync()
                self.carry_out(self.replica.receive(body))
            elif kind in (M.VIEW_CHANGE, M.NEW_VIEW, M.CHECKPOINT):
                assert isinstance(body, ViewChange | NewView | Checkpoint)  # noqa: S101
                self.carry_out(self.replica.receive(body))
            elif kind == M.STATUS:
                assert isinstance(body, M.Status)  # noqa: S101
                self._note_peer_height(peer, body.height)
                self._maybe_sync()
            elif kind == M.GET_BLOCKS:
                assert isinstance(body, M.GetBlocks)  # noqa: S101
                self._serve_blocks(peer, body)
            elif kind == M.BLOCKS:
                assert isinstance(body, M.Blocks)  # noqa: S101
                self._apply_blocks(peer, body)
        except (DecodeError, InvalidMessage) as err:
            self.metrics.bad_messages.inc()
            log.warning("bad message from peer %s: %s", peer.hex()[:8], err)
            if self.net is not None:  # lowers its score; at the threshold it is disconnected and banned
                self.net.penalize(Address(peer), f"bad message: {err}")

    # --- proposals: full and compact PRE-PREPAREs --------------------------------------------------

    def _receive_pre_prepare(self, peer: bytes, pre_prepare: PrePrepare, digest: bytes) -> None:
        """Hand a PRE-PREPARE (full, or rebuilt from a compact one whose payload has ``digest``) to the
        replica; once the replica holds it, copies with the same payload are not decoded again."""
        if pre_prepare.seq > self.replica.next_seq:  # the sender is ahead: it committed seq - 1
            self._note_peer_height(peer, pre_prepare.seq - 1, at_least=True)
            self._maybe_sync()
        self.carry_out(self.replica.receive(pre_prepare))
        if digest and self.replica.holds_pre_prepare(pre_prepare.view, pre_prepare.seq, pre_prepare.block_hash):
            self._seen_proposals[digest] = None
            while len(self._seen_proposals) > 64:
                self._seen_proposals.popitem(last=False)

    def _pending_txs(self, compact: M.CompactPrePrepare) -> tuple[list[Transaction], set[bytes]]:
        """The mempool's transactions named by ``compact``, in order, and the wire ids it lacks."""
        txs: list[Transaction] = []
        missing: set[bytes] = set()
        for wid in compact.tx_ids:
            tx = self.mempool.by_wire_id(wid)
            if tx is None:
                missing.add(wid)
            else:
                txs.append(tx)
        return txs, missing

    def _on_compact(self, peer: bytes, compact: M.CompactPrePrepare, digest: bytes) -> None:
        """A compact PRE-PREPARE (node/messages.py): rebuild its block from the mempool and hand the
        replica the full PRE-PREPARE, which checks it as it checks any.

        If transactions are missing and it is the current view's primary's signed proposal for an
        undecided sequence number within the watermarks, the gossip backlog is searched for them
        (once per slot) and, if some are still missing, it waits for their gossip
        (``_admit_awaited``) up to ``COMPACT_WAIT``; then the full one is asked of ``peer``
        (``expire_compacts``). Any other compact PRE-PREPARE that cannot be rebuilt at once is asked
        for in full at once (for a decided sequence number or an older view: dropped), so a peer
        cannot make the node search its backlog or hold messages for it."""
        key = (compact.view, compact.seq)
        txs, missing = self._pending_txs(compact)
        if missing:
            replica = self.replica
            if compact.seq < replica.next_seq or compact.view < replica.view:
                self.metrics.compact.labels("stale").inc()
                return
            if key in self._pending_compact:
                return  # a retransmitted copy does not restart the wait
            if not (compact.view == replica.view and compact.validator == replica.primary()
                    and compact.seq <= replica.high_watermark and self._signed_by_primary(compact)):
                self._fetch_full(peer, key, len(missing))
                return
            self._admit_from_backlog(missing)
            txs, missing = self._pending_txs(compact)
            if missing:
                self._pending_compact[key] = _PendingCompact(peer, compact, digest, trio.current_time(), missing)
                while len(self._pending_compact) > MAX_PENDING_COMPACT:
                    del self._pending_compact[max(self._pending_compact)]
                return
        self._pending_compact.pop(key, None)
        self.metrics.compact.labels("rebuilt").inc()
        self._receive_pre_prepare(peer, compact.rebuild(tuple(txs)), digest)

    def _signed_by_primary(self, compact: M.CompactPrePrepare) -> bool:
        """Whether ``compact`` carries its validator's valid signature over the PRE-PREPARE vote bytes of
        its header hash (the replica checks the rebuilt message again)."""
        try:
            self._verifier(compact.validator, vote_signing_bytes(self.chain_id, PRE_PREPARE, compact.view,
                                                                 compact.seq, compact.header.hash,
                                                                 compact.validator), compact.signature)
        except InvalidSignature:
            return False
        return True

    def _fetch_full(self, peer: bytes, key: tuple[int, int], missing: int) -> None:
        """Ask ``peer`` for the full PRE-PREPARE of slot ``key`` = (view, seq), which lacks ``missing``
        transactions here."""
        self.metrics.compact.labels("fetched").inc()
        log.debug("compact pre-prepare %d/%d lacks %d transactions: asking %s for the full one", key[0], key[1],
                  missing, peer.hex()[:8])
        self._send(peer, M.GET_PRE_PREPARE, M.GetPrePrepare(*key))

    def _admit_gossiped(self, peer: bytes, message: int, raw: bytes) -> None:
        """Admit one gossiped transaction (``admit_backlog`` gives the rules): an invalid one proves its
        sender faulty (penalized once per gossip message ``message``); other refusals cost nothing."""
        try:
            self.admit(raw, gossip=False)
        except (TxRejected, InvalidSignature, DecodeError) as err:
            faulty = not isinstance(err, TxRejected) or err.reason == "wrong chain id"
            if faulty and message != self._penalized_message and self.net is not None:
                self._penalized_message = message
                self.net.penalize(Address(peer), f"gossiped an invalid transaction: {err}")
            log.debug("gossiped tx from %s refused: %s", peer.hex()[:8], err)

    def _admit_from_backlog(self, wanted: set[bytes]) -> None:
        """Admit now the gossiped transactions in ``tx_backlog`` whose wire id is in ``wanted``."""
        keep: collections.deque[tuple[bytes, int, bytes]] = collections.deque()
        for item in self.tx_backlog:
            if wire_id_of(item[2]) in wanted:
                self._admit_gossiped(*item)
            else:
                keep.append(item)
        self.tx_backlog = keep

    def _admit_awaited(self, peer: bytes, message: int, raws: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """Admit at once the gossiped ``raws`` that a waiting compact PRE-PREPARE lacks, hand the replica
        those it completes, and return the other raws (for the backlog)."""
        wanted = set().union(*(p.missing for p in self._pending_compact.values()))
        rest = []
        for raw in raws:
            wid = wire_id_of(raw)
            if wid in wanted:
                self._admit_gossiped(peer, message, raw)
            else:
                rest.append(raw)
        if len(rest) < len(raws):
            for key, pending in list(self._pending_compact.items()):
                pending.missing = {wid for wid in pending.missing if self.mempool.by_wire_id(wid) is None}
                if not pending.missing:
                    del self._pending_compact[key]
                    self._on_compact(pending.peer, pending.message, pending.digest)
        return tuple(rest)

    def expire_compacts(self, now: float) -> None:
        """Ask the sender of each compact PRE-PREPARE that waited ``COMPACT_WAIT`` seconds or more at
        ``now`` (Trio clock seconds) for the full one (GET_PRE_PREPARE); forget those of decided
        sequence numbers or older views."""
        for key, pending in list(self._pending_compact.items()):
            view, seq = key
            if seq < self.replica.next_seq or view < self.replica.view:
                del self._pending_compact[key]
            elif now - pending.since >= COMPACT_WAIT:
                del self._pending_compact[key]
                self._fetch_full(pending.peer, key, len(pending.missing))

    def _serve_pre_prepare(self, peer: bytes, request: M.GetPrePrepare) -> None:
        """Answer GET_PRE_PREPARE with the full PRE-PREPARE of that slot, if the replica holds one, at
        most ``MAX_FULL_ANSWERS`` times per peer and slot (a peer cannot make us resend a block
        without bound)."""
        pre_prepare = self.replica.pre_prepare_at(request.view, request.seq)
        if pre_prepare is None:
            return
        key = (peer, request.view, request.seq)
        answered = self._full_answers.get(key, 0)
        if answered >= MAX_FULL_ANSWERS:
            return
        self._full_answers[key] = answered + 1
        while len(self._full_answers) > 256:
            self._full_answers.popitem(last=False)
        self._send(peer, M.PRE_PREPARE, pre_prepare)

    # --- catch-up ---------------------------------------------------------------------------------

    def _send(self, peer: bytes, kind: int, body: Struct | bytes | tuple[bytes, ...]) -> bool:
        """Queue one message for ``peer`` (counted in the metrics); False if it was not queued.
        Transaction gossip goes in the peer's bulk lane, behind every consensus message."""
        if self.net is None:
            return False
        payload = M.pack(kind, body)
        ok = self.net.send(Address(peer), payload, bulk=kind in GOSSIP_KINDS)
        if ok:
            self.metrics.on_message(kind, len(payload), sent=1)
        return ok

    def _broadcast(self, kind: int, body: Struct | bytes | tuple[bytes, ...]) -> None:
        """Queue one message for every connected peer (counted in the metrics); gossip as in ``_send``.
        A PRE-PREPARE goes out compact (``[consensus] compact_proposals``, node/messages.py)."""
        if self.net is None:
            return
        if kind == M.PRE_PREPARE and self.config.consensus.compact_proposals:
            assert isinstance(body, PrePrepare)  # noqa: S101
            kind, body = M.PRE_PREPARE_COMPACT, M.CompactPrePrepare.of(body)
        payload = M.pack(kind, body)
        self.metrics.on_message(kind, len(payload), sent=self.net.broadcast(payload, bulk=kind in GOSSIP_KINDS))

    def status(self) -> M.Status:
        """Our committed height and head hash."""
        head = self.chain.head
        return M.Status(head.height, head.block_hash)

    def validator_peers(self) -> int:
        """How many other validators of the genesis set are connected over P2P now (observers are not
        counted). A quorum is 2f+1 validators (Castro & Liskov §4), so a validator needs 2f of them
        besides itself: the proposer waits for that, and ``GET /ready`` requires it."""
        if self.net is None:
            return 0
        return len(self.net.connected() & {v.node_id for v in self.validators})

    def _note_peer_height(self, peer: bytes, height: int, *, at_least: bool = False) -> None:
        """Record the committed ``height`` that ``peer`` claims (``at_least``: only raise the claim,
        for a hint such as a vote for a later sequence number). Claims of bad peers are ignored."""
        if peer in self.sync.bad_peers:
            return
        if at_least:
            height = max(height, self.sync.peer_heights.get(peer, 0))
        self.sync.peer_heights[peer] = height

    def _pick_sync_peer(self, now: float) -> bytes | None:
        """The peer to ask for the blocks above our head: the one claiming the highest height above
        it that is neither in ``bad_peers`` nor backing off after a strike (ties: fewer strikes, then
        the lower node id, so the choice is deterministic). None if no peer qualifies."""
        head = self.chain.head.height
        sync = self.sync
        candidates = [(-height, sync.strikes.get(peer, 0), peer) for peer, height in sync.peer_heights.items()
                      if height > head and peer not in sync.bad_peers and sync.backoff_until.get(peer, 0.0) <= now]
        return min(candidates)[2] if candidates else None

    def _strike(self, peer: bytes, now: float, reason: str) -> None:
        """Give ``peer`` a sync strike: it is not asked for blocks for ``SYNC_BACKOFF`` seconds, doubled
        for each earlier strike (capped at ``SYNC_BACKOFF_MAX``)."""
        strikes = self.sync.strikes[peer] = self.sync.strikes.get(peer, 0) + 1
        wait = min(SYNC_BACKOFF * 2 ** min(strikes - 1, 16), SYNC_BACKOFF_MAX)
        self.sync.backoff_until[peer] = now + wait
        log.warning("catch-up: peer %s %s; not asking it for %.0f s (strike %d)", peer.hex()[:8], reason, wait,
                    strikes)

    def _reject_bad_peer(self, peer: bytes, reason: str) -> None:
        """``peer`` sent a bad certified block: never ask it for blocks again (``bad_peers``), forget its
        claimed height, disconnect it and penalize it in the p2p scoring down to its ban threshold."""
        self.sync.bad_peers.add(peer)
        self.sync.peer_heights.pop(peer, None)
        if self.sync.peer == peer:
            self.sync.peer = None
        log.warning("catch-up: peer %s sent %s; disconnecting it and never asking it again", peer.hex()[:8], reason)
        if self.net is not None:
            self.net.disconnect(Address(peer), reason)
            # enough to reach the ban at once (the threshold is negative, scores start at 0)
            self.net.penalize(Address(peer), reason, points=-self.config.p2p.ban_threshold)

    def _maybe_sync(self, now: float | None = None) -> None:
        """Ask one peer (``_pick_sync_peer``) for the next blocks above our head, unless a request is
        in flight and younger than ``SYNC_REQUEST_TIMEOUT``; an older one strikes its peer (it is not
        asked again for a while) and is sent to another. ``now``: Trio clock seconds (default: now)."""
        if self.net is None:
            return
        now = trio.current_time() if now is None else now
        sync = self.sync
        if sync.peer is not None:
            if now - sync.sent_at < SYNC_REQUEST_TIMEOUT:
                return
            silent, sync.peer = sync.peer, None
            self._strike(silent, now, f"left blocks {sync.start}..{sync.start + sync.count - 1} unanswered for "
                         f"{SYNC_REQUEST_TIMEOUT:.0f} s")
        peer = self._pick_sync_peer(now)
        if peer is None:
            return
        head = self.chain.head.height
        start = head + 1
        count = min(M.MAX_BLOCKS_PER_REPLY, sync.peer_heights[peer] - head)
        if self._send(peer, M.GET_BLOCKS, M.GetBlocks(start, count)):
            sync.peer, sync.sent_at, sync.start, sync.count = peer, now, start, count
            log.info("catching up: asking %s for blocks %d..%d", peer.hex()[:8], start, start + count - 1)

    def _sync_tick(self, now: float) -> None:
        """Periodic catch-up step (``_ticker_loop``) at ``now`` (Trio clock seconds): ``_maybe_sync``, so
        that a request left unanswered for ``SYNC_REQUEST_TIMEOUT`` is sent to another peer even when
        no message arrives, and a peer whose backoff ended is asked again."""
        self._maybe_sync(now)

    def _serve_blocks(self, peer: bytes, req: M.GetBlocks) -> None:
        out: list[M.CertifiedBlock] = []
        size = 0
        for height in range(max(1, req.start), min(self.chain.head.height, req.start + min(req.count, 64) - 1) + 1):
            block, cert = self.chain.block(height), self.chain.certificate(height)
            if block is None or cert is None:
                break
            out.append(M.CertifiedBlock(block, cert))
            size += len(block.encode())
            if size > self.config.p2p.max_frame_bytes // 2:
                break
        if self.net is not None:
            self._send(peer, M.BLOCKS, M.Blocks(tuple(out)))

    def _apply_blocks(self, peer: bytes, reply: M.Blocks) -> None:
        """Verify and commit the certified blocks ``peer`` sent (catch-up), then ask for more.

        Each block's commit certificate is checked against the validator set and the block is
        re-executed (``validate_block``). A bad one makes ``peer`` a bad peer (``_reject_bad_peer``).
        An answer to our request that brings no new block although ``peer`` claimed more lowers its
        claim to what it served and gives it a strike (``_strike``), so a peer claiming a height it
        cannot serve cannot stall catch-up. (A non-empty short reply is progress: replies are also
        cut at half a frame.) Blocks from a bad peer are ignored.
        """
        if peer in self.sync.bad_peers:
            return
        now = trio.current_time()
        answered = self.sync.peer == peer
        if answered:
            self.sync.peer = None
        applied = 0
        for item in reply.blocks:
            block = item.block
            if block.height <= self.chain.head.height:
                continue
            try:
                pbft.verify_certificate(item.certificate, block.hash, block.height, self.chain_id, self.n,
                                        self._verifier)
                self.validate_block(block, check_clock=False)
            except (InvalidMessage, InvalidBlock) as err:
                self._reject_bad_peer(peer, f"a bad certified block {block.height}: {err}")
                self._maybe_sync(now)
                return
            self.commit(block, item.certificate)
            applied += 1
            self.metrics.synced_blocks.inc()
            self.carry_out(self.replica.synced(block.height, block.hash, item.certificate))
        head = self.chain.head.height
        if applied:
            self.sync.strikes.pop(peer, None)
        elif answered and self.sync.peer_heights.get(peer, 0) > head:
            served = max((item.block.height for item in reply.blocks), default=self.sync.start - 1)
            self.sync.peer_heights[peer] = min(self.sync.peer_heights[peer], max(served, head))
            self._strike(peer, now, f"claimed more blocks but served none of {self.sync.start}.."
                         f"{self.sync.start + self.sync.count - 1}")
        self._maybe_sync(now)

    # --- services ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every service until cancelled (see the module docstring for the tree)."""
        from node.rpc.server import serve_rpc

        cfg = self.config
        allowed = {v.node_id: (v.node_scheme, v.node_public_key) for v in self.validators}
        for o in cfg.observers():  # non-validators that follow the chain ([p2p] observers)
            allowed.setdefault(Address(o.node_id), (scheme_by_name(o.scheme).tag, o.public_key))
        peers = {p.node_id: (p.host, p.port) for p in cfg.peers()}
        inbound_send, inbound_recv = trio.open_memory_channel[tuple[bytes, bytes]](4096)
        events_send, events_recv = trio.open_memory_channel[tuple[str, bytes]](256)
        self.net = PeerNetwork(
            identity=self.node_key, chain_id=self.chain_id, genesis_hash=self.genesis.hash,
            listen_host=cfg.p2p.host, listen_port=cfg.p2p.port, peers=peers, allowed=allowed,
            inbound=inbound_send, peer_events=events_send, max_frame_size=cfg.p2p.max_frame_bytes,
            handshake_timeout=cfg.p2p.handshake_timeout_seconds,
            max_inbound_connections=cfg.p2p.max_inbound_connections,
            max_pending_handshakes=cfg.p2p.max_pending_handshakes, max_pending_per_ip=cfg.p2p.max_pending_per_ip,
            max_attempts_per_ip=cfg.p2p.max_attempts_per_ip, attempt_window=cfg.p2p.attempt_window_seconds,
            send_queue_bytes=cfg.p2p.send_queue_bytes, inbound_bytes_per_second=cfg.p2p.inbound_bytes_per_second,
            inbound_burst_bytes=cfg.p2p.inbound_burst_bytes, ban_threshold=cfg.p2p.ban_threshold,
            ban_seconds=cfg.p2p.ban_seconds, send_queue_size=cfg.p2p.send_queue_messages,
            bulk_queue_size=cfg.p2p.bulk_queue_messages, bulk_queue_bytes=cfg.p2p.bulk_queue_bytes,
            score_recovery=cfg.p2p.score_recovery_per_second,
            backoff_initial=cfg.p2p.reconnect_backoff_initial_seconds,
            backoff_max=cfg.p2p.reconnect_backoff_max_seconds,
            counters=self.metrics.p2p,
        )
        async with trio.open_nursery() as nursery:
            self.p2p_port = await nursery.start(self.net.run)
            nursery.start_soon(self._inbound_loop, inbound_recv)
            nursery.start_soon(self._peer_events_loop, events_recv)
            nursery.start_soon(self._proposer_loop)
            nursery.start_soon(self._ticker_loop)
            nursery.start_soon(self._gossip_loop)
            nursery.start_soon(self._compact_loop)
            nursery.start_soon(self._prune_loop)
            self.rpc_urls = await nursery.start(serve_rpc, self)
            self.started = True
            log.info("node %s started: height %d, validator index %s, %d validators",
                     cfg.node.moniker, self.chain.head.height, self.index, self.n)
            task_status.started()

    async def _inbound_loop(self, inbound: trio.MemoryReceiveChannel[tuple[bytes, bytes]]) -> None:
        """Handle peer messages: every waiting message first (consensus ones at once, gossiped
        transactions into ``tx_backlog``), then up to ``ADMIT_SLICE`` backlog admissions, so that
        a flood of transactions never holds a vote or a proposal behind it."""
        while True:
            if not self.tx_backlog:
                peer, payload = await inbound.receive()
                self.on_message(peer, payload)
            while True:
                try:
                    peer, payload = inbound.receive_nowait()
                except trio.WouldBlock:
                    break
                self.on_message(peer, payload)
            self.admit_backlog(ADMIT_SLICE)
            await trio.lowlevel.checkpoint()

    def admit_backlog(self, limit: int) -> int:
        """Admit up to ``limit`` gossiped transactions from ``tx_backlog`` (no re-gossip: the sender
        already offered them to every validator); returns how many were taken.

        An honest node gossips only transactions that decoded, verified and carry our chain id
        (``_admit``), so one that does not decode (``DecodeError``), has a bad signature
        (``InvalidSignature``) or names another chain (``TxRejected`` "wrong chain id") proves its
        sender faulty: the sender loses ``p2p.limits.PENALTY_BAD_MESSAGE`` points
        (``PeerNetwork.penalize``), at most once per TXS message. Refusals for nonce, capacity or
        state reasons happen to honest senders too (races, full mempools) and cost nothing.
        """
        taken = 0
        while self.tx_backlog and taken < limit:
            self._admit_gossiped(*self.tx_backlog.popleft())
            taken += 1
        return taken

    def flush_gossip(self) -> None:
        """Send the admitted transactions not yet gossiped to every peer, in TXS batches."""
        out, self._gossip_out, self._gossip_bytes = self._gossip_out, [], 0
        for batch in M.txs_batches(out):
            self._broadcast(M.TXS, batch)

    async def _compact_loop(self) -> None:
        # a compact PRE-PREPARE waiting for transactions is asked for in full within COMPACT_WAIT * 4/3
        while True:
            await trio.sleep(COMPACT_WAIT / 3)
            if self._pending_compact:
                self.expire_compacts(trio.current_time())

    async def _gossip_loop(self) -> None:
        while True:
            await trio.sleep(GOSSIP_INTERVAL)
            if self._gossip_out:
                self.flush_gossip()

    async def _peer_events_loop(self, events: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
        async for kind, peer in events:
            if kind == "connected" and self.net is not None:
                self._send(peer, M.STATUS, self.status())
                pending = self.mempool.pending_raw(GOSSIP_ON_CONNECT)
                for batch in M.txs_batches(pending):
                    if not self._send(peer, M.TXS, batch):
                        break  # its queue is full; the periodic re-gossip offers the rest
            elif kind == "disconnected":
                self.sync.peer_heights.pop(peer, None)
                if self.sync.peer == peer:
                    self.sync.peer = None
                    self._maybe_sync()  # ask another peer at once

    async def _proposer_loop(self) -> None:
        self.last_proposal = trio.current_time()
        while True:
            await trio.sleep(self.config.consensus.block_interval_ms / 1000)
            self._proposer_tick(trio.current_time())

    def _proposer_tick(self, now: float) -> Block | None:
        """One look of the primary at ``now`` (Trio clock seconds; ``_proposer_loop`` calls it every
        ``block_interval_ms``): propose if executable transactions wait, or an empty block once
        ``empty_block_interval_ms`` passed since ``last_proposal`` (0 disables empty blocks).
        Returns the block proposed, or None."""
        if not self.replica.is_primary or self.replica.proposal_pending():
            return None
        if self.net is not None and self.validator_peers() < 2 * self.replica.f:
            return None  # no quorum reachable: proposing would only stall
        idle = self.config.consensus.empty_block_interval_ms / 1000
        if not (self.mempool.has_executable() or (idle > 0 and now - self.last_proposal >= idle)):
            return None
        self.last_proposal = now
        return self.propose()

    def work_waiting(self) -> bool:
        """Whether a commit is expected soon: a view change, a proposal, transactions, or empty blocks."""
        r = self.replica
        return (not r.active or r.proposal_pending() or len(self.mempool) > 0
                or self.config.consensus.empty_block_interval_ms > 0)

    def _check_view_timer(self, now: float) -> None:
        """PBFT's view-change timer (§4.4) at ``now`` (Trio clock seconds; ``_ticker_loop`` calls it every
        tick): no progress for ``view_timeout`` while work waits moves to the next view; each further
        expiry without progress doubles the wait (capped at 32x).

        The timer runs only while work waits (``work_waiting``): a look that finds nothing waiting,
        and the first look that finds work after one that did not, restart it (``last_progress =
        now``), so the timeout counts only time during which work waited without a commit, and a
        quiet spell longer than the timeout does not make the first request after it start a view
        change. Castro & Liskov §4.4: a backup starts its timer when it receives a request and the
        timer is not already running; it stops it when it no longer waits to execute a request."""
        timeout = self.config.consensus.view_timeout_ms / 1000 * (2 ** min(self.timeouts, 5))
        waiting = self.work_waiting()
        running, self._timer_running = self._timer_running, waiting
        if not (waiting and running):
            self.last_progress = now
            return
        if now - self.last_progress < timeout or self.index is None:
            return
        self.timeouts += 1
        self.metrics.timeouts.inc()
        self.last_progress = now
        before = self.replica.view
        self.carry_out(self.replica.on_timeout())
        if self.replica.view > before:
            log.warning("no progress for %.1f s in view %d: moving to view %d", timeout, before,
                        self.replica.view, extra={"view": self.replica.view})
        else:  # changing view already, short of 2f + 1 VIEW-CHANGEs: offered ours again (§4.4)
            log.warning("no progress for %.1f s while changing to view %d: waiting for a quorum of "
                        "VIEW-CHANGEs", timeout, before, extra={"view": before})

    async def _ticker_loop(self) -> None:
        c = self.config.consensus
        last_status = last_retransmit = trio.current_time()
        while True:
            await trio.sleep(min(c.retransmit_ms, c.status_interval_ms) / 1000)
            now = trio.current_time()
            if self.net is None:
                continue
            if now - last_status >= c.status_interval_ms / 1000:
                last_status = now
                self._broadcast(M.STATUS, self.status())
                again = self.mempool.regossip(now, REGOSSIP_AFTER, REGOSSIP_BATCH)
                for batch in M.txs_batches(again):
                    self._broadcast(M.TXS, batch)
                self._note_dropped(self.mempool.expire(now, self.config.mempool.ttl_seconds))
            # retransmit while no block commits, each time waiting twice as long (up to 16x): an
            # overloaded network is not sent its megabyte proposals again every second. A replica
            # changing view retransmits its VIEW-CHANGE whatever it commits by catch-up: if the others
            # installed the view without it, they answer with their NEW-VIEW (Replica._answer_lagging)
            wait = c.retransmit_ms / 1000 * (2 ** min(self.retransmits, 4))
            stalled = now - self.last_commit_time >= c.retransmit_ms / 1000 or not self.replica.active
            if stalled and now - last_retransmit >= wait:
                last_retransmit = now
                self.retransmits += 1
                for message in self.replica.retransmit():
                    self._broadcast(M.kind_of(message), message)
            self._check_view_timer(now)
            self._sync_tick(now)

    def prune_state(self) -> int:
        """One bounded step (``[state] prune_batch`` deletions) of pruning the state versions older than
        ``[state] retention_versions`` below the head; returns the deletions made (0: nothing left)."""
        cfg = self.config.state
        return self.chain.state.prune(self.chain.head.height - cfg.retention_versions, cfg.prune_batch)

    async def _prune_loop(self) -> None:
        # Between two steps the Trio thread is free: block commits never wait for more than one step.
        while True:
            await trio.sleep(self.config.state.prune_interval_ms / 1000)
            self.prune_state()


def data_path(home: Path, config: NodeConfig) -> Path:
    """The LevelDB directory of the node at ``home``."""
    return home / config.node.data_dir
