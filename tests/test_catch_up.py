"""Catch-up against faulty peers, start-up checks of the consensus records, and the node's timers.

Driven without a wall clock: a ``FakeNet`` stands in for the peer network, peers are functions that
answer GET_BLOCKS, and time is Trio's ``MockClock`` (``mock_clock`` fixture, moved with ``jump``) or
explicit ``now`` arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.messages import (
    CHECKPOINT,
    PRE_PREPARE,
    PREPARE,
    Checkpoint,
    PreparedCertificate,
    PrePrepare,
    StableCheckpoint,
    vote_signing_bytes,
)
from crypto.hashing import sha3
from crypto.keys import KeyPair
from crypto.signatures import ED25519, Context
from node import messages as M
from node.config import ConsensusSection, NodeConfig
from node.node import SYNC_BACKOFF, SYNC_BACKOFF_MAX, SYNC_REQUEST_TIMEOUT, Node
from node.rpc.client import deploy_token_call, sign_transaction
from node.setup import NodeKeys
from state.codec import encode
from state.exceptions import StoreCorrupted
from state.kv import MemoryStore
from state.types import Block, ValidatorSignature
from tests.test_node import CHAIN, FakeNet, certify, grow_chain, make_keys, make_node

LIAR = b"liar-peer"
HONEST = b"honest-peer"

Server = Callable[[M.GetBlocks], M.Blocks | None]
"""A peer's answer to a GET_BLOCKS sent to it (None: it never answers)."""


def serve_from(node: Node) -> Server:
    """A peer that answers like ``node`` does (its real ``_serve_blocks``)."""

    def serve(req: M.GetBlocks) -> M.Blocks | None:
        net = node.net = FakeNet()  # type: ignore[assignment]
        node._serve_blocks(b"asker", req)
        ((_, kind, body),) = net.outbox
        assert kind == M.BLOCKS
        return body  # type: ignore[return-value]

    return serve


def deliver(node: Node, peers: dict[bytes, Server]) -> None:
    """Hand every GET_BLOCKS the node queued to its peer and feed the answers back, until none is left."""
    net: FakeNet = node.net  # type: ignore[assignment]
    while net.outbox:
        to, kind, body = net.outbox.pop(0)
        if kind == M.GET_BLOCKS and to in peers:
            reply = peers[to](body)  # type: ignore[arg-type]
            if reply is not None:
                node.on_message(to, M.pack(M.BLOCKS, reply))


@pytest.mark.parametrize("liar_answers", ["empty", "never"])
async def test_a_peer_claiming_a_height_it_cannot_serve_does_not_stall_catch_up(
    liar_answers: str, mock_clock: trio.testing.MockClock
) -> None:
    """The liar claims height 10^6 (and keeps claiming it every second) but answers every GET_BLOCKS
    with an empty BLOCKS, or never: the node still reaches the honest peer's height within one
    request timeout, and over ten virtual minutes the liar is asked only a few times (backoff)."""
    keys = make_keys(4)
    leader, lagging = make_node(keys, 0), make_node(keys, 3)
    grow_chain(leader, keys, M.MAX_BLOCKS_PER_REPLY + 3)  # two requests' worth
    net = lagging.net = FakeNet()  # type: ignore[assignment]
    liar: Server = (lambda req: M.Blocks(())) if liar_answers == "empty" else (lambda req: None)
    peers = {LIAR: liar, HONEST: serve_from(leader)}
    liar_status = M.pack(M.STATUS, M.Status(10**6, sha3(b"nothing")))
    lagging.on_message(LIAR, liar_status)
    lagging.on_message(HONEST, M.pack(M.STATUS, leader.status()))
    assert net.block_requests(LIAR) == [M.GetBlocks(1, M.MAX_BLOCKS_PER_REPLY)], "the highest claim is asked first"
    start = trio.current_time()
    deliver(lagging, peers)
    if liar_answers == "empty":  # its claim is lowered to what it served, and it backs off
        assert lagging.sync.peer_heights[LIAR] == 0
        assert lagging.sync.backoff_until[LIAR] == start + SYNC_BACKOFF
    reached_at = None
    while trio.current_time() - start < 600:
        mock_clock.jump(1)
        lagging.on_message(LIAR, liar_status)
        lagging.on_message(HONEST, M.pack(M.STATUS, leader.status()))
        lagging._sync_tick(trio.current_time())
        deliver(lagging, peers)
        if reached_at is None and lagging.chain.head == leader.chain.head:
            reached_at = trio.current_time() - start
    assert lagging.chain.head == leader.chain.head
    assert reached_at is not None and reached_at <= SYNC_REQUEST_TIMEOUT + 1
    asked = len(net.block_requests(LIAR))
    # strikes at 0 s, then after 10, 20, 40, 80, 160, 300 s of backoff (+ the timeouts when it never answers)
    assert 3 <= asked <= 7, f"liar asked {asked} times"
    assert lagging.sync.strikes[LIAR] == asked
    n = M.MAX_BLOCKS_PER_REPLY
    assert net.block_requests(HONEST) == [M.GetBlocks(1, n), M.GetBlocks(n + 1, 3)], "each block asked once"


async def test_a_peer_that_sent_a_bad_certificate_is_dropped_for_good(mock_clock: trio.testing.MockClock) -> None:
    """A peer claiming the highest height serves a block with a forged certificate: it is
    disconnected, penalized to the p2p ban, and never asked again, while the honest peer is."""
    keys = make_keys(4)
    leader, lagging = make_node(keys, 0), make_node(keys, 3)
    good = grow_chain(leader, keys, 3)
    forged = dataclasses.replace(good[0].certificate, signatures=tuple(
        ValidatorSignature(s.validator, keys[3].validator.sign(Context.CONSENSUS, b"forged"))
        for s in good[0].certificate.signatures))
    net = lagging.net = FakeNet()  # type: ignore[assignment]
    peers: dict[bytes, Server] = {LIAR: lambda req: M.Blocks((M.CertifiedBlock(good[0].block, forged),)),
                                  HONEST: serve_from(leader)}
    liar_status = M.pack(M.STATUS, M.Status(100, sha3(b"nothing")))
    lagging.on_message(LIAR, liar_status)
    lagging.on_message(HONEST, M.pack(M.STATUS, leader.status()))
    deliver(lagging, peers)
    assert lagging.chain.head == leader.chain.head, "the honest peer is asked at once"
    assert net.disconnected == [LIAR]
    assert net.penalized == [(LIAR, -lagging.config.p2p.ban_threshold)]
    for _ in range(30):
        mock_clock.jump(SYNC_BACKOFF_MAX)
        lagging.on_message(LIAR, liar_status)
        lagging._sync_tick(trio.current_time())
        deliver(lagging, peers)
    assert len(net.block_requests(LIAR)) == 1
    assert LIAR not in lagging.sync.peer_heights


# --- start-up consistency of the consensus records ---------------------------------------------------


def stable_checkpoint(keys: list[NodeKeys], seq: int, block_hash: bytes, signers: range = range(3)) -> StableCheckpoint:
    """A stable checkpoint proof for ``block_hash`` at ``seq`` signed by ``signers``."""
    sigs = tuple(Checkpoint(seq, block_hash, j, keys[j].validator.sign(  # type: ignore[arg-type]
        Context.CONSENSUS, vote_signing_bytes(CHAIN, CHECKPOINT, 0, seq, block_hash, j))) for j in signers)
    return StableCheckpoint(seq, block_hash, sigs)  # type: ignore[arg-type]


def prepared(keys: list[NodeKeys], seq: int, block: Block) -> bytes:
    """An encoded prepared-certificate record for ``block`` at ``seq`` in view 0 (no PREPAREs: the
    start-up check looks at its sequence number and parent only)."""
    pre = PrePrepare(0, seq, block, 0, keys[0].validator.sign(
        Context.CONSENSUS, vote_signing_bytes(CHAIN, PRE_PREPARE, 0, seq, block.hash, 0)))
    return PreparedCertificate(pre, ()).encode()


def stored_chain(blocks: int) -> tuple[list[NodeKeys], Node, MemoryStore]:
    keys = make_keys(4)
    store = MemoryStore()
    node = make_node(keys, 1, store=store)
    grow_chain(node, keys, blocks)
    return keys, node, store


@pytest.mark.parametrize("tamper", ["checkpoint-above-head", "checkpoint-other-block", "checkpoint-bad-signature",
                                    "checkpoint-too-few-signers", "head-certificate", "prepared-ahead",
                                    "prepared-other-parent", "vote-unreadable-key", "vote-short-hash"])
async def test_start_refuses_consensus_records_that_disagree_with_the_blocks(tamper: str) -> None:
    keys, node, store = stored_chain(3)
    chain = node.chain
    if tamper == "checkpoint-above-head":
        chain.put_record(b"checkpoint", stable_checkpoint(keys, 5, sha3(b"future")).encode())
        expect = "stable checkpoint record is for seq 5, above the head height 3"
    elif tamper == "checkpoint-other-block":
        chain.put_record(b"checkpoint", stable_checkpoint(keys, 2, chain.block(3).hash).encode())
        expect = "stable checkpoint record for seq 2 names block"
    elif tamper == "checkpoint-bad-signature":
        cp = stable_checkpoint(keys, 2, chain.block(2).hash)
        sigs = (dataclasses.replace(cp.signatures[0], signature=cp.signatures[1].signature), *cp.signatures[1:])
        chain.put_record(b"checkpoint", dataclasses.replace(cp, signatures=sigs).encode())
        expect = "stable checkpoint record for seq 2: the signature of validator 0 does not verify"
    elif tamper == "checkpoint-too-few-signers":
        chain.put_record(b"checkpoint", stable_checkpoint(keys, 2, chain.block(2).hash, range(2)).encode())
        expect = "stable checkpoint record for seq 2 has 2 distinct signers, needs 3"
    elif tamper == "head-certificate":
        key, _ = list(store.iterate(b"c/"))[-1]
        store.write([(key, certify(keys, chain.block(3), range(2)).encode())])
        expect = "commit certificate of head block 3 does not verify"
    elif tamper == "vote-unreadable-key":  # double-sign protection must not be skipped silently
        store.write([(b"k/vote\xc1", sha3(b"x"))])
        expect = "unreadable vote record key"
    elif tamper == "vote-short-hash":
        store.write([(b"k/vote" + encode((PREPARE, 0, 4)), b"\x01" * 31)])
        expect = "malformed vote record"
    elif tamper == "prepared-ahead":
        chain.put_record(b"prepared", prepared(keys, 5, node.build_block()))
        expect = "prepared certificate record is for seq 5, but the head is at height 3"
    else:
        block = node.build_block()
        block = Block(dataclasses.replace(block.header, prev_hash=chain.block(2).hash), block.transactions)
        chain.put_record(b"prepared", prepared(keys, 4, block))
        expect = "prepared certificate record for seq 4 holds a block that does not extend the head"
    with pytest.raises(StoreCorrupted, match=expect):
        make_node(keys, 1, store=store)


async def test_start_drops_a_stale_prepared_record_and_keeps_good_ones() -> None:
    keys, node, store = stored_chain(3)
    chain = node.chain
    cp = stable_checkpoint(keys, 2, chain.block(2).hash)
    chain.put_record(b"checkpoint", cp.encode())
    chain.put_record(b"prepared", prepared(keys, 3, chain.block(3)))  # prepared at seq 3, committed since
    restarted = make_node(keys, 1, store=store)
    assert restarted.chain.get_record(b"prepared") is None, "the torn-shutdown leftover is deleted"
    current = prepared(keys, 4, restarted.build_block())  # prepared for the next height: kept
    restarted.chain.put_record(b"prepared", current)
    assert make_node(keys, 1, store=store).chain.get_record(b"prepared") == current
    assert restarted.replica.stable_checkpoint == cp and restarted.replica.low_watermark == 2
    assert restarted.chain.head.height == 3


def test_start_refusal_is_printed_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    """``qenex-node start`` on a store whose records disagree exits 2 and names the record."""
    from node.cli import main
    from node.node import data_path
    from node.setup import open_home
    from state.chain import ChainStore
    from state.kv import LevelDBStore

    monkeypatch.setenv("QENEX_PASSPHRASE", "correct horse battery staple")
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--chain-id", "cli-test", "--write-passphrase-file"]) == 0
    loaded = open_home(home)
    store = LevelDBStore(data_path(home, loaded.config))
    try:
        ChainStore(store, loaded.genesis).put_record(b"checkpoint", StableCheckpoint(7, sha3(b"x"), ()).encode())
    finally:
        store.close()
    capsys.readouterr()
    assert main(["start", "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "stable checkpoint record is for seq 7, above the head height 0" in err, err


# --- timers ------------------------------------------------------------------------------------------


async def test_view_timer_doubles_on_each_expiry_up_to_its_cap_and_resets_on_commit(
    mock_clock: trio.testing.MockClock,
) -> None:
    keys = make_keys(4)
    leader, node = make_node(keys, 0), make_node(keys, 2)
    blocks = grow_chain(leader, keys, 1)
    base = node.config.consensus.view_timeout_ms / 1000
    t0 = trio.current_time()
    node._check_view_timer(t0)  # starts the timer
    expiries = []
    now = t0
    while len(expiries) < 8:
        now += 0.5
        before = node.timeouts
        node._check_view_timer(now)
        if node.timeouts > before:
            expiries.append(now)
    waits = [b - a for a, b in zip([t0, *expiries], expiries, strict=False)]
    assert waits == pytest.approx([base * 2**i for i in (0, 1, 2, 3, 4, 5, 5, 5)], abs=0.5)
    assert node.timeouts == 8 and node.replica.view >= 1
    mock_clock.jump(now - trio.current_time())  # the commit happens at `now` on the Trio clock
    node._apply_blocks(HONEST, M.Blocks(tuple(blocks)))
    assert node.chain.head.height == 1 and node.timeouts == 0
    node._check_view_timer(now + base - 0.5)
    assert node.timeouts == 0
    node._check_view_timer(now + base)
    assert node.timeouts == 1, "after a commit the timer starts again from view_timeout"


@pytest.mark.parametrize("empty_ms", [0, 1000])
async def test_idle_primary_proposes_empty_blocks_only_when_enabled(empty_ms: int) -> None:
    keys = make_keys(4)
    config = NodeConfig(consensus=ConsensusSection(empty_block_interval_ms=empty_ms))
    primary = make_node(keys, 0, config)
    assert primary.replica.is_primary and not primary.mempool.has_executable()
    primary.last_proposal = 0.0
    proposed = [t for t in (0.5, 0.999, 1.0, 5.0, 60.0) if primary._proposer_tick(t) is not None]
    if empty_ms == 0:
        assert proposed == [] and not primary.replica.proposal_pending()
    else:
        assert proposed == [1.0], "one empty block after the interval; then it waits for its commit"
        assert primary.replica.proposal_pending()
        assert primary.chain.get_record(b"proposal" + encode((0, 1))) is not None


async def test_view_timer_counts_only_time_during_which_work_waits(mock_clock: trio.testing.MockClock) -> None:
    """Empty blocks off: a backup idle for longer than the view timeout does not change view 50 ms
    after the first transaction arrives (the idle time is not counted, Castro & Liskov §4.4: the timer
    starts when a request arrives), but it does once that transaction waits a whole timeout uncommitted."""
    keys = make_keys(4)
    node = make_node(keys, 2, NodeConfig(consensus=ConsensusSection(empty_block_interval_ms=0)))
    timeout = node.config.consensus.view_timeout_ms / 1000
    assert timeout < 60
    t0 = trio.current_time()
    node._check_view_timer(t0)
    assert not node.work_waiting()
    mock_clock.jump(60)  # quiet for 60 s, no look of the timer in between
    user = KeyPair.generate(ED25519)
    node.admit(sign_transaction(user, CHAIN, 0, [deploy_token_call("T", "T", 0, user.address)], 100_000).encode(),
               gossip=False)
    assert node.work_waiting()
    node._check_view_timer(t0 + 60.05)
    assert (node.timeouts, node.replica.view) == (0, 0)
    assert node.metrics.registry.get_sample_value("qenex_view_timeouts_total") == 0
    # the same with the ticker's looks every second while idle: each restarts the timer
    idle = make_node(keys, 3, NodeConfig(consensus=ConsensusSection(empty_block_interval_ms=0)))
    for second in range(61):
        idle._check_view_timer(t0 + second)
    idle.admit(sign_transaction(user, CHAIN, 0, [deploy_token_call("T", "T", 0, user.address)], 100_000).encode(),
               gossip=False)
    idle._check_view_timer(t0 + 60.05)
    assert (idle.timeouts, idle.replica.view) == (0, 0)
    # work that waits a whole timeout without a commit does start a view change
    now, fired_at = t0 + 60.05, None
    while fired_at is None and now < t0 + 60.05 + 4 * timeout:
        now += 0.25
        node._check_view_timer(now)
        if node.timeouts:
            fired_at = now
    assert fired_at == pytest.approx(t0 + 60.05 + timeout, abs=0.3)
    assert node.timeouts == 1 and node.replica.view == 1 and not node.replica.active
