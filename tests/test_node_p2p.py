"""Nodes on a real P2P network in one process: readiness counts validators only, and a flood from one
listed peer does not stop the validators committing (issue 7, "Secure P2P")."""

from __future__ import annotations

import random

import httpx
import pytest
import trio

from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node import messages as M
from node.config import ConsensusSection, NodeConfig, Observer, P2PSection, Peer, RPCSection
from node.node import Node
from node.rpc.client import deploy_token_call, sign_transaction
from node.setup import NodeKeys, validator_entry
from state.kv import MemoryStore
from state.types import Genesis
from tests.conftest import poll_until
from tests.test_devnet import free_block
from tests.test_p2p_network import HOST, RawPeer, raw_handshake

CHAIN = "qenex-p2p-test"


def make_keys(n: int) -> list[NodeKeys]:
    """``n`` key sets: node keys of the default (post-quantum) scheme, as observers' must be; Ed25519
    validator keys (fast)."""
    return [NodeKeys(validator=KeyPair.generate(ED25519), node=KeyPair.generate()) for _ in range(n)]


def by_node_id(keys: list[NodeKeys]) -> list[NodeKeys]:
    """``keys`` sorted by node id, lowest first: a node dials only the peers whose node id is higher."""
    return sorted(keys, key=lambda k: k.node.address)


def genesis_of(validators: list[NodeKeys]) -> Genesis:
    """A genesis listing ``validators`` in this order (index 0 is the primary of view 0)."""
    return Genesis(CHAIN, 1_700_000_000_000, tuple(validator_entry(f"v{j}", k) for j, k in enumerate(validators)))


def observer_entry(keys: NodeKeys) -> str:
    """``keys``' node key as a ``[p2p] observers`` entry."""
    return Observer(keys.node.scheme.name, keys.node.public_key).render()


def new_node(genesis: Genesis, keys: NodeKeys, *, validator: bool, p2p: P2PSection,
             consensus: ConsensusSection) -> Node:
    config = NodeConfig(rpc=RPCSection(host=HOST, port=0), p2p=p2p, consensus=consensus)
    return Node(config=config, genesis=genesis, store=MemoryStore(), node_key=keys.node,
                validator_key=keys.validator if validator else None)


async def get_ready(http: httpx.AsyncClient, node: Node) -> tuple[int, dict]:
    response = await http.get(node.rpc_urls[0] + "/ready")
    return response.status_code, response.json()


async def test_ready_counts_validator_peers_only(nursery: trio.Nursery) -> None:
    """n = 4 (f = 1): a validator connected to one validator and one observer has 2 peers but not a
    quorum (RPC.md: ready means connected to a quorum), so /ready is 503; with a second validator, 200."""
    observer, v_a, v_b, v_c, target = by_node_id(make_keys(5))  # everyone dials the target (the highest id)
    genesis = genesis_of([target, v_a, v_b, v_c])  # v_c never runs
    consensus = ConsensusSection(block_interval_ms=50, empty_block_interval_ms=0, status_interval_ms=200)
    hub = new_node(genesis, target, validator=True, consensus=consensus,
                   p2p=P2PSection(host=HOST, port=0, observers=(observer_entry(observer),)))
    await nursery.start(hub.run)
    assert hub.p2p_port is not None
    to_hub = P2PSection(host=HOST, port=0, peers=(Peer(target.node.address, HOST, hub.p2p_port).render(),))
    for keys, is_validator in ((v_a, True), (observer, False)):
        await nursery.start(new_node(genesis, keys, validator=is_validator, p2p=to_hub, consensus=consensus).run)
    await poll_until(lambda: hub.net is not None and hub.net.connected() == {v_a.node.address,
                                                                             observer.node.address},
                     what="a validator and the observer are connected to the hub")
    assert hub.validator_peers() == 1
    async with httpx.AsyncClient(timeout=30) as http:
        status, body = await get_ready(http, hub)
        assert (status, body["ready"], body["peers"], body["validatorPeers"]) == (503, False, 2, 1)
        await nursery.start(new_node(genesis, v_b, validator=True, p2p=to_hub, consensus=consensus).run)
        await poll_until(lambda: hub.validator_peers() == 2, what="a second validator is connected to the hub")
        status, body = await get_ready(http, hub)
        assert (status, body["ready"], body["peers"], body["validatorPeers"]) == (200, True, 3, 2)


@pytest.mark.slow
async def test_flood_from_one_peer_does_not_delay_commits_among_the_others(nursery: trio.Nursery) -> None:
    """Four validators commit empty blocks while a listed observer identity floods the primary as
    fast as TCP lets it with valid but useless TXS messages (1024 copies of a committed transaction
    each): the primary reads it at its inbound byte rate (the limiter engages), the flooder loses no
    score (nothing it sent was invalid), and every validator, the primary included, commits K more
    blocks during the flood without a view-change timeout or a view change, each within the view
    timeout of its proposal. Then the same identity gossips transactions that do not decode: each
    TXS message costs it score until it is disconnected and banned, and its next handshake is refused."""
    keys = by_node_id(make_keys(5))
    flooder = keys[0]  # the lowest node id: it dials the primary, as a listed observer would
    validators = keys[1:]
    random.Random(7).shuffle(validators)  # the primary (index 0) is any of them
    genesis = genesis_of(validators)
    ports = free_block(4)
    consensus = ConsensusSection(block_interval_ms=50, empty_block_interval_ms=200, status_interval_ms=300,
                                 retransmit_ms=500)
    timeout = consensus.view_timeout_ms / 1000
    nodes = []
    for i, k in enumerate(validators):
        p2p = P2PSection(host=HOST, port=ports + i, observers=(observer_entry(flooder),),
                         peers=tuple(Peer(o.node.address, HOST, ports + j).render()
                                     for j, o in enumerate(validators) if j != i),
                         inbound_bytes_per_second=1024 * 1024, inbound_burst_bytes=256 * 1024)
        nodes.append(new_node(genesis, k, validator=True, p2p=p2p, consensus=consensus))
    for node in nodes:
        await nursery.start(node.run)
    primary = nodes[0]
    assert primary.replica.is_primary
    user = KeyPair.generate(ED25519)
    committed = sign_transaction(user, CHAIN, 0, [deploy_token_call("T", "T", 0, user.address)], 100_000)
    primary.admit(committed.encode())
    await poll_until(lambda: all(n.chain.tx_location(committed.hash) is not None for n in nodes),
                     what="the validators commit a transaction")

    allowed = {primary.node_key.address: (primary.node_key.scheme_tag, primary.node_key.public_key)}
    assert primary.p2p_port is not None

    async def handshake() -> RawPeer | None:
        return await raw_handshake(primary.p2p_port, flooder.node, allowed, chain_id=CHAIN,
                                   genesis_hash=genesis.hash)

    def sample(node: Node, name: str, labels: dict[str, str] | None = None) -> float:
        return node.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def consensus_state(node: Node) -> tuple[float, float, int]:
        return (sample(node, "qenex_view_timeouts_total"), sample(node, "qenex_view_changes_total"),
                node.replica.view)

    def latency(node: Node) -> tuple[float, float]:
        """(commits observed, commits observed within the view timeout) of the commit-latency histogram."""
        within = node.metrics.registry.get_sample_value("qenex_commit_latency_seconds_bucket", {"le": str(timeout)})
        assert within is not None, f"the view timeout {timeout} s is a bucket bound of the histogram"
        return sample(node, "qenex_commit_latency_seconds_count"), within

    peer = await handshake()
    assert peer is not None
    useless = M.pack(M.TXS, (committed.encode(),) * M.MAX_TXS_PER_MESSAGE)
    flood_scope = trio.CancelScope()
    flood_sent = 0

    flood_done = trio.Event()

    async def flood() -> None:
        nonlocal flood_sent
        try:
            with flood_scope:
                while True:  # never reads what the primary sends it either
                    await peer.send(useless)
                    flood_sent += 1
        finally:
            flood_done.set()

    nursery.start_soon(flood)
    traffic = primary.metrics.p2p
    await poll_until(lambda: traffic.throttled_reads > 0 and flood_sent > 8,
                     what="the flood is under way and the primary's inbound rate limit engaged")
    start = min(n.chain.head.height for n in nodes)
    throttled = traffic.throttled_reads
    before = [consensus_state(n) for n in nodes]
    latency_before = [latency(n) for n in nodes]
    K = 5
    await poll_until(lambda: min(n.chain.head.height for n in nodes) >= start + K,
                     what=f"every validator commits {K} more blocks during the flood")
    assert not flood_scope.cancel_called and flooder.node.address in primary.net.connected()  # still flooding
    assert traffic.throttled_reads > throttled  # ...and still being slowed down
    # no validator's progress timer expired and none left its view while the flood went on
    assert [consensus_state(n) for n in nodes] == before
    # every block committed during the flood did so within the view timeout of its proposal (a
    # protocol bound: beyond it the backups would have asked for a view change)
    for (count_0, fast_0), (count_1, fast_1) in zip(latency_before, (latency(n) for n in nodes), strict=True):
        assert count_1 - count_0 >= K and fast_1 - fast_0 == count_1 - count_0
    assert primary.net.score(flooder.node.address) == 0.0  # useless is not invalid: slowed, not penalized
    assert sample(primary, "qenex_p2p_messages_received_total", {"type": "txs"}) > 0
    assert sample(primary, "qenex_transactions_rejected_total", {"reason": "already committed"}) > 0
    flood_scope.cancel()
    await flood_done.wait()  # the flooder is out of send_all before its socket closes
    await peer.stream.aclose()
    await poll_until(lambda: flooder.node.address not in primary.net.connected(), what="the flooder left")

    # now it gossips transactions that do not decode: each TXS message costs it PENALTY_BAD_MESSAGE
    bad = await handshake()
    assert bad is not None
    junk = random.Random(1)
    invalid = M.pack(M.TXS, tuple(junk.randbytes(512) for _ in range(M.MAX_TXS_PER_MESSAGE)))
    malformed = sample(primary, "qenex_transactions_rejected_total", {"reason": "malformed"})
    undecodable_frames = sample(primary, "qenex_p2p_bad_messages_total")
    for _ in range(40):  # more than enough: the ban threshold is -100
        try:
            await bad.send(invalid)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
    await poll_until(lambda: flooder.node.address in primary.net.banned()
                     and flooder.node.address not in primary.net.connected(),
                     what="the flooder is banned and disconnected")
    await bad.stream.aclose()
    assert sample(primary, "qenex_transactions_rejected_total", {"reason": "malformed"}) > malformed
    assert sample(primary, "qenex_p2p_bad_messages_total") == undecodable_frames, "each TXS message decoded"
    assert await handshake() is None  # refused while banned
    start = min(n.chain.head.height for n in nodes)
    await poll_until(lambda: min(n.chain.head.height for n in nodes) >= start + 2, what="commits go on")
