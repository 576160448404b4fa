"""Node-level behaviour: catch-up from certified blocks, refusing bad ones, and a live 4-node network."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
import trio

from consensus.messages import COMMIT, vote_signing_bytes
from contracts.vm import DEPLOYER
from crypto.hashing import sha3
from crypto.keys import KeyPair
from crypto.signatures import ED25519, Context
from node import messages as M
from node.config import ConsensusSection, NodeConfig, P2PSection, Peer, RPCSection
from node.node import Node
from node.rpc.client import deploy_token_call, sign_transaction
from node.setup import NodeKeys, validator_entry
from state.kv import MemoryStore
from state.types import Block, Call, CommitCertificate, Genesis, Param, ValidatorSignature
from tests.test_devnet import free_block

CHAIN = "qenex-node-test"


def make_keys(n: int) -> list[NodeKeys]:
    return [NodeKeys(KeyPair.generate(ED25519), KeyPair.generate(ED25519)) for _ in range(n)]


def make_node(keys: list[NodeKeys], i: int, config: NodeConfig | None = None, checkpoint_interval: int = 100,
              store: MemoryStore | None = None) -> Node:
    """Node ``i`` of the validator set ``keys`` (the same genesis for the same keys), on ``store``
    (default: a new in-memory one; pass an old node's store to restart it)."""
    genesis = Genesis(CHAIN, 1_700_000_000_000, tuple(validator_entry(f"v{j}", k) for j, k in enumerate(keys)),
                      (Param("checkpointInterval", checkpoint_interval),))
    return Node(config=config or NodeConfig(), genesis=genesis, store=store if store is not None else MemoryStore(),
                node_key=keys[i].node, validator_key=keys[i].validator)


class FakeNet:
    """Stands in for ``PeerNetwork`` in catch-up tests: records what the node sends (``outbox``, each
    ``(peer, kind, body)`` also kept in ``sent``), what it broadcasts (``broadcasts``), whom it
    disconnects and how it penalizes."""

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, int, object]] = []
        self.sent: list[tuple[bytes, int, object]] = []
        self.disconnected: list[bytes] = []
        self.penalized: list[tuple[bytes, float]] = []
        self.broadcasts: list[tuple[int, object, bytes]] = []
        """Every message broadcast: (kind, decoded body, payload)."""

    def send(self, peer: bytes, payload: bytes, *, bulk: bool = False) -> bool:
        kind, body = M.unpack(payload, 16 * 1024 * 1024)
        self.outbox.append((bytes(peer), kind, body))
        self.sent.append((bytes(peer), kind, body))
        return True

    def broadcast(self, payload: bytes, *, bulk: bool = False) -> int:
        kind, body = M.unpack(payload, 16 * 1024 * 1024)
        self.broadcasts.append((kind, body, payload))
        return 0

    def connected(self) -> frozenset[bytes]:
        return frozenset()

    def disconnect(self, peer: bytes, reason: str) -> bool:
        self.disconnected.append(bytes(peer))
        return True

    def penalize(self, peer: bytes, reason: str, points: float = 10.0) -> bool:
        self.penalized.append((bytes(peer), points))
        return True

    def block_requests(self, peer: bytes) -> list[M.GetBlocks]:
        """Every GET_BLOCKS sent to ``peer`` so far."""
        return [body for to, kind, body in self.sent if to == peer and kind == M.GET_BLOCKS]  # type: ignore[misc]


def certify(keys: list[NodeKeys], block: Block, signers: range = range(3)) -> CommitCertificate:
    sigs = tuple(
        ValidatorSignature(j, keys[j].validator.sign(Context.CONSENSUS, vote_signing_bytes(
            CHAIN, COMMIT, block.header.view, block.height, block.hash, j)))
        for j in signers
    )
    return CommitCertificate(block.height, block.header.view, block.hash, sigs)


def grow_chain(node: Node, keys: list[NodeKeys], blocks: int) -> list[M.CertifiedBlock]:
    """Commit ``blocks`` blocks on ``node`` (as primary), each with a deploy, and return them certified."""
    out = []
    user = KeyPair.generate(ED25519)
    for nonce in range(blocks):
        node.admit(sign_transaction(user, CHAIN, nonce, [deploy_token_call("T", "T", 0, user.address)], 100_000)
                   .encode(), gossip=False)
        block = node.build_block()
        cert = certify(keys, block)
        node.commit(block, cert)
        out.append(M.CertifiedBlock(block, cert))
    return out


async def test_catch_up_applies_certified_blocks() -> None:
    keys = make_keys(4)
    leader, lagging = make_node(keys, 0), make_node(keys, 3)
    blocks = grow_chain(leader, keys, 3)
    lagging._apply_blocks(b"peer", M.Blocks(tuple(blocks)))
    assert lagging.chain.head == leader.chain.head
    assert lagging.replica.height == 3 and lagging.replica.head_hash == leader.chain.head.block_hash
    # served back the same way by the protocol message (round trip through the codec)
    payload = M.pack(M.BLOCKS, M.Blocks(tuple(blocks)))
    kind, decoded = M.unpack(payload, 16 * 1024 * 1024)
    assert kind == M.BLOCKS and decoded == M.Blocks(tuple(blocks))


@pytest.mark.parametrize("tamper", ["too-few-signers", "forged-signature", "other-block", "bad-state-root"])
async def test_catch_up_refuses_bad_certified_blocks(tamper: str) -> None:
    keys = make_keys(4)
    leader, lagging = make_node(keys, 0), make_node(keys, 3)
    good = grow_chain(leader, keys, 2)
    block, cert = good[1].block, good[1].certificate
    if tamper == "too-few-signers":
        cert = dataclasses.replace(cert, signatures=cert.signatures[:2])
    elif tamper == "forged-signature":
        sigs = list(cert.signatures)
        sigs[0] = ValidatorSignature(0, keys[1].validator.sign(Context.CONSENSUS, b"something else"))
        cert = dataclasses.replace(cert, signatures=tuple(sigs))
    elif tamper == "other-block":
        cert = certify(keys, good[0].block)
    else:
        header = dataclasses.replace(block.header, state_root=sha3(b"wrong"))
        block = Block(header, block.transactions)
        cert = certify(keys, block)  # even a quorum-signed block must execute to its roots
    net = lagging.net = FakeNet()  # type: ignore[assignment]
    lagging.on_message(b"bad-peer", M.pack(M.STATUS, leader.status()))
    assert net.block_requests(b"bad-peer") == [M.GetBlocks(1, 2)]
    lagging._apply_blocks(b"bad-peer", M.Blocks((good[0], M.CertifiedBlock(block, cert))))
    assert lagging.chain.head.height == 1, "the good first block is kept, the bad one refused"
    assert b"bad-peer" in lagging.sync.bad_peers
    assert net.disconnected == [b"bad-peer"]
    assert net.penalized == [(b"bad-peer", -lagging.config.p2p.ban_threshold)], "enough to reach the p2p ban"
    # however high it claims to be, and however long, it is never asked again by this process
    for _ in range(3):
        lagging.on_message(b"bad-peer", M.pack(M.STATUS, M.Status(10**6, leader.status().head_hash)))
        lagging._sync_tick(trio.current_time() + 10**6)
    assert net.block_requests(b"bad-peer") == [M.GetBlocks(1, 2)]
    assert b"bad-peer" not in lagging.sync.peer_heights


async def test_invalid_proposals_are_not_voted_for() -> None:
    keys = make_keys(4)
    primary, backup = make_node(keys, 0), make_node(keys, 1)
    user = KeyPair.generate(ED25519)
    primary.admit(sign_transaction(user, CHAIN, 0, [Call(DEPLOYER, "deploy", ("token/v1", ("T", "T", 0,
                                                                                           user.address)))],
                                   100_000).encode(), gossip=False)
    block = primary.build_block()
    bad = Block(dataclasses.replace(block.header, receipts_root=sha3(b"x")), block.transactions)
    pre = primary.replica.propose(bad)[1].message
    persisted_before = list(backup.chain.kv.iterate(b"k/vote"))
    backup.carry_out(backup.replica.receive(pre))
    assert list(backup.chain.kv.iterate(b"k/vote")) == persisted_before  # no PREPARE was recorded
    assert backup.chain.head.height == 0


@pytest.mark.slow
async def test_four_nodes_commit_and_a_late_node_catches_up(nursery: trio.Nursery) -> None:
    keys = make_keys(4)
    rpc = free_block(8)
    p2p = rpc + 4
    nodes = []
    for i in range(4):
        peers = tuple(Peer(keys[j].node.address, "127.0.0.1", p2p + j).render() for j in range(4) if j != i)
        cfg = NodeConfig(rpc=RPCSection(port=rpc + i), p2p=P2PSection(port=p2p + i, peers=peers),
                         consensus=ConsensusSection(block_interval_ms=50, empty_block_interval_ms=200,
                                                    status_interval_ms=200, retransmit_ms=300))
        nodes.append(make_node(keys, i, cfg, checkpoint_interval=2))
    # node 1 admits a transaction while it has no peer at all: gossip must still bring it to the
    # primary once they connect (pending transactions are pushed on connect, and re-offered)
    await nursery.start(nodes[1].run)
    user = KeyPair.generate()
    tx = sign_transaction(user, CHAIN, 0, [deploy_token_call("T", "T", 0, user.address)], 200_000)
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(f"http://127.0.0.1:{rpc + 1}/", json={
            "jsonrpc": "2.0", "id": 1, "method": "qnx_sendRawTransaction", "params": ["0x" + tx.encode().hex()]})
        assert r.json()["result"] == "0x" + tx.hash.hex()
        assert len(nodes[1].net.connected()) == 0
        for node in (nodes[0], nodes[2]):
            await nursery.start(node.run)
        r = await http.post(f"http://127.0.0.1:{rpc + 1}/", json={
            "jsonrpc": "2.0", "id": 2, "method": "qnx_sendRawTransactionAndWait",
            "params": ["0x" + tx.encode().hex(), 45]})
        assert r.json()["result"]["status"] == "success", r.json()
    with trio.fail_after(30):
        while min(n.chain.head.height for n in nodes[:3]) < 5:
            await nodes[0].commit_event.wait()
    await nursery.start(nodes[3].run)  # joins late: must fetch the certified blocks it missed
    with trio.fail_after(30):
        while nodes[3].chain.head.height < 6:
            await nodes[3].commit_event.wait()
    h = nodes[3].chain.head.height
    for n in nodes[:3]:
        assert n.chain.block(h) is None or n.chain.block(h).hash == nodes[3].chain.block(h).hash
    assert nodes[3].chain.receipt(tx.hash) is not None
    assert len({n.chain.block(3).header.state_root for n in nodes}) == 1
    try:
        with trio.fail_after(30):  # checkpoints every 2 blocks become stable on every node, late one included
            while min(n.replica.low_watermark for n in nodes) < 6:
                await nodes[3].commit_event.wait()
    except trio.TooSlowError:
        raise AssertionError([(n.chain.head.height, n.replica.height, n.replica.view, n.replica.active,
                               n.replica.low_watermark) for n in nodes]) from None
    for n in nodes:
        cp = n.replica.stable_checkpoint
        assert cp is not None and cp.block_hash == n.chain.block(cp.seq).hash
        assert n.chain.get_record(b"checkpoint") == cp.encode()


async def test_clients_are_refused_with_node_busy_beyond_four_blocks_pending_except_gap_fillers() -> None:
    """Load shedding at the edge: with ``BUSY_BLOCKS`` blocks' worth pending, a client's new
    transaction gets "node busy" (nothing changes), but one that fills its sender's nonce gap is
    still taken, and gossip from the other validators is never refused for it."""
    from contracts.exceptions import TxRejected
    from node.node import BUSY_BLOCKS
    from node.rpc.client import transfer_call

    keys = make_keys(4)
    config = make_node(keys, 0).config
    config = dataclasses.replace(config, consensus=dataclasses.replace(config.consensus, max_block_txs=2))
    node = make_node(keys, 0, config)
    token = b"\x05" * 20
    senders = [KeyPair.generate(ED25519) for _ in range(BUSY_BLOCKS * 2 + 2)]
    limit = BUSY_BLOCKS * 2

    def tx(key: KeyPair, nonce: int) -> bytes:
        return sign_transaction(key, node.chain_id, nonce, [transfer_call(token, key.address, 1)]).encode()

    for key in senders[:limit - 1]:
        node.admit(tx(key, 0))
    node.admit(tx(senders[limit - 1], 1))  # held back behind its nonce 0: the pool is now at the limit
    assert len(node.mempool) == limit
    with pytest.raises(TxRejected, match="node busy"):
        node.admit(tx(senders[limit], 0))
    assert len(node.mempool) == limit
    node.admit(tx(senders[limit - 1], 0))  # fills the gap: taken
    node.admit(tx(senders[limit + 1], 0), gossip=False)  # gossip of another validator's client: taken
    assert len(node.mempool) == limit + 2


async def test_checkpoint_evidence_is_counted_once_per_stored_record_across_restarts() -> None:
    """Every evidence kind the replica records (CHECKPOINT included) has its label from the start;
    the evidence gauge equals the stored records, also when a restarted node detects one again."""
    from consensus.messages import CHECKPOINT, Evidence
    from consensus.replica import RecordEvidence
    from node.metrics import EVIDENCE_KINDS

    assert "checkpoint" in EVIDENCE_KINDS
    keys = make_keys(4)
    store = MemoryStore()
    node = make_node(keys, 0, store=store)
    registry = node.metrics.registry
    assert registry.get_sample_value("qenex_equivocations_detected_total", {"kind": "checkpoint"}) == 0
    ev = Evidence(CHECKPOINT, 0, 4, 2, sha3(b"a"), b"sig-a", sha3(b"b"), b"sig-b")
    node.carry_out([RecordEvidence(ev)])
    assert registry.get_sample_value("qenex_equivocations_detected_total", {"kind": "checkpoint"}) == 1
    assert registry.get_sample_value("qenex_equivocation_evidence") == 1 and node.evidence() == [ev]
    restarted = make_node(keys, 0, store=store)
    assert restarted.evidence_count == 1
    restarted.carry_out([RecordEvidence(ev)])  # detected again after the restart: the same record
    assert restarted.evidence_count == 1 and restarted.evidence() == [ev]
    other = dataclasses.replace(ev, validator=3)
    restarted.carry_out([RecordEvidence(other)])
    assert restarted.metrics.registry.get_sample_value("qenex_equivocation_evidence") == 2


class BusNet(FakeNet):
    """A ``FakeNet`` whose broadcasts go on a shared ``bus`` as ``(sender, payload)``."""

    def __init__(self, me: bytes, bus: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.me, self.bus = me, bus

    def broadcast(self, payload: bytes, *, bulk: bool = False) -> int:
        self.bus.append((self.me, payload))
        return 3


async def test_view_change_records_of_old_views_are_deleted_and_a_restart_keeps_its_view() -> None:
    """Five view changes in a row (every replica's timer fires, no block in between): each store keeps
    the VIEW-CHANGE and NEW-VIEW records of the current view only, and a validator restarted on its
    store resumes in that view, installed (Castro & Liskov §4.4)."""
    from consensus.messages import NEW_VIEW, VIEW_CHANGE
    from state.codec import decode_value

    keys = make_keys(4)
    stores = [MemoryStore() for _ in keys]
    nodes = [make_node(keys, i, store=stores[i]) for i in range(4)]
    bus: list[tuple[bytes, bytes]] = []
    for node in nodes:
        node.net = BusNet(node.node_key.address, bus)  # type: ignore[assignment]

    def view_records(node: Node) -> list[tuple[int, int]]:
        out = []
        for key, _ in node.chain.kv.iterate(b"k/vote"):
            kind, view, _seq = decode_value(key[len(b"k/vote"):])
            if kind in (VIEW_CHANGE, NEW_VIEW):
                out.append((kind, view))
        return sorted(out)

    for view in range(1, 6):
        for node in nodes:
            node.carry_out(node.replica.on_timeout())
        while bus:
            sender, payload = bus.pop(0)
            for node in nodes:
                if node.node_key.address != sender:
                    node.on_message(sender, payload)
        assert [(n.replica.view, n.replica.active) for n in nodes] == [(view, True)] * 4
        for node in nodes:
            assert view_records(node) == [(VIEW_CHANGE, view), (NEW_VIEW, view)]
    restarted = make_node(keys, 2, store=stores[2])
    assert (restarted.replica.view, restarted.replica.active) == (5, True)


async def test_gossip_that_proves_its_sender_faulty_costs_it_score_once_per_message() -> None:
    """Honest nodes gossip only transactions that decoded, verified and carry our chain id: a TXS
    message holding undecodable ones, a forged signature or another chain's transaction costs its
    sender one ``PENALTY_BAD_MESSAGE`` (however many bad ones it holds); refusals that happen to
    honest senders (nonce too high, already pending, already committed) cost nothing."""
    from p2p.limits import PENALTY_BAD_MESSAGE

    keys = make_keys(4)
    node = make_node(keys, 1)
    net = node.net = FakeNet()  # type: ignore[assignment]
    user = KeyPair.generate(ED25519)

    def tx(nonce: int, chain: str = CHAIN) -> bytes:
        return sign_transaction(user, chain, nonce, [deploy_token_call("T", "T", 0, user.address)], 100_000).encode()

    good = tx(0)
    forged = sign_transaction(user, CHAIN, 1, [deploy_token_call("T", "T", 0, user.address)], 100_000)
    forged = dataclasses.replace(forged, signature=bytes(len(forged.signature)))
    cases = {
        b"junk": (b"\xc1junk", b"\x93\x01\x02", b"more junk"),
        b"forger": (forged.encode(),),
        b"other-chain": (tx(2, "another-chain"),),
        b"honest": (good, good, tx(10**6)),  # pending twice (the second is a no-op), then nonce too high
    }
    for peer, raws in cases.items():
        node.on_message(peer, M.pack(M.TXS, raws))
    node.on_message(b"junk", M.pack(M.TXS, (b"junk again",)))  # a second message: a second penalty
    while node.admit_backlog(2):
        pass
    assert not node.tx_backlog and good in node.mempool.pending_raw(10)
    assert sorted(net.penalized) == sorted([(b"junk", PENALTY_BAD_MESSAGE)] * 2 + [
        (b"forger", PENALTY_BAD_MESSAGE), (b"other-chain", PENALTY_BAD_MESSAGE)])
    registry = node.metrics.registry
    assert registry.get_sample_value("qenex_transactions_rejected_total", {"reason": "nonce too high"}) == 1
