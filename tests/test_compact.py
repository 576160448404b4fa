"""Compact proposals (node/messages.py): the primary sends its PRE-PREPARE as the header and the
transactions' wire ids; a backup rebuilds the block from its mempool byte for byte, takes what it
lacks from the gossip backlog or from gossip arriving while it waits, and otherwise asks for the full
PRE-PREPARE, which the primary sends a bounded number of times.

Driven without a network: ``FakeNet`` records what each node sends and broadcasts, and the tests hand
the payloads to the other node's ``on_message``.
"""

from __future__ import annotations

import pytest
import trio

from consensus.messages import PREPARE, PrePrepare, Vote
from crypto.keys import KeyPair
from crypto.signatures import ED25519, ML_DSA_44, Context
from node import messages as M
from node.config import ConsensusSection, NodeConfig
from node.node import COMPACT_WAIT, MAX_FULL_ANSWERS, Node
from node.rpc.client import deploy_token_call, sign_transaction
from state.codec import encode
from state.types import Transaction, TxBody, wire_id_of
from tests.test_node import CHAIN, FakeNet, make_keys, make_node


def deploys(count: int, key: KeyPair | None = None) -> list[Transaction]:
    """``count`` token deploys by one new account, nonces 0.. (executable without funding)."""
    key = key or KeyPair.generate(ED25519)
    return [sign_transaction(key, CHAIN, n, [deploy_token_call("T", "T", 0, key.address)], 100_000)
            for n in range(count)]


def network(config: NodeConfig | None = None) -> tuple[Node, Node, FakeNet, FakeNet]:
    """Primary (validator 0) and one backup (validator 1) of a 4-validator set, each on a ``FakeNet``."""
    keys = make_keys(4)
    primary, backup = make_node(keys, 0, config), make_node(keys, 1, config)
    primary.net, backup.net = FakeNet(), FakeNet()  # type: ignore[assignment]
    return primary, backup, primary.net, backup.net  # type: ignore[return-value]


def proposal(primary: Node, txs: list[Transaction]) -> tuple[PrePrepare, bytes]:
    """Admit ``txs`` at the primary, let it propose, and return its PRE-PREPARE and the payload it broadcast."""
    for tx in txs:
        primary.admit(tx.encode(), gossip=False)
    net: FakeNet = primary.net  # type: ignore[assignment]
    assert primary.propose() is not None
    ((kind, _, payload),) = [b for b in net.broadcasts if b[0] in (M.PRE_PREPARE, M.PRE_PREPARE_COMPACT)]
    held = primary.replica.pre_prepare_at(0, 1)
    assert held is not None and len(held.block.transactions) == len(txs)
    return held, payload


def prepares_sent(net: FakeNet) -> list[Vote]:
    return [body for kind, body, _ in net.broadcasts if kind == M.VOTE and body.kind == PREPARE]  # type: ignore[attr-defined]


def outcomes(node: Node) -> dict[str, float]:
    return {o: node.metrics.compact.labels(o)._value.get() for o in ("rebuilt", "fetched", "stale")}


def primary_id(node: Node) -> bytes:
    return bytes(node.validators[0].node_id)


async def test_the_backup_rebuilds_the_block_byte_for_byte_from_its_mempool() -> None:
    primary, backup, pnet, bnet = network()
    txs = deploys(5)
    for tx in txs:
        backup.admit(tx.encode(), gossip=False)
    full, payload = proposal(primary, txs)
    kind, compact = M.unpack(payload, 1 << 24)
    assert kind == M.PRE_PREPARE_COMPACT and isinstance(compact, M.CompactPrePrepare)
    assert compact.tx_ids == tuple(tx.wire_id for tx in txs)
    assert len(payload) < len(M.pack(M.PRE_PREPARE, full)) / 3
    backup.on_message(primary_id(backup), payload)
    rebuilt = backup.replica.pre_prepare_at(0, 1)
    assert rebuilt is not None and rebuilt.encode() == full.encode()
    assert [v.block_hash for v in prepares_sent(bnet)] == [full.block_hash]  # it validated the block and voted
    assert outcomes(backup) == {"rebuilt": 1, "fetched": 0, "stale": 0}
    assert bnet.penalized == [] and bnet.outbox == []


async def test_with_compact_proposals_off_the_full_pre_prepare_is_sent() -> None:
    primary, backup, _, bnet = network(NodeConfig(consensus=ConsensusSection(compact_proposals=False)))
    txs = deploys(2)
    full, payload = proposal(primary, txs)
    assert M.unpack(payload, 1 << 24)[0] == M.PRE_PREPARE
    backup.on_message(primary_id(backup), payload)  # the backup holds none of them: the block carries them
    assert [v.block_hash for v in prepares_sent(bnet)] == [full.block_hash]


async def test_transactions_still_in_the_gossip_backlog_are_admitted_at_once() -> None:
    primary, backup, _, bnet = network()
    txs = deploys(4)
    backup.on_message(b"gossiper", M.pack(M.TXS, tuple(tx.encode() for tx in txs[1:])))
    unrelated = deploys(2)
    backup.on_message(b"gossiper", M.pack(M.TXS, tuple(tx.encode() for tx in unrelated)))
    backup.admit(txs[0].encode(), gossip=False)
    assert len(backup.tx_backlog) == 5 and len(backup.mempool) == 1
    full, payload = proposal(primary, txs)
    backup.on_message(primary_id(backup), payload)
    assert [v.block_hash for v in prepares_sent(bnet)] == [full.block_hash]
    assert len(backup.tx_backlog) == 2  # the unrelated ones wait their turn
    assert outcomes(backup)["rebuilt"] == 1


async def test_a_compact_pre_prepare_waits_for_the_gossip_of_what_it_lacks() -> None:
    primary, backup, _, bnet = network()
    txs = deploys(3)
    backup.admit(txs[0].encode(), gossip=False)
    full, payload = proposal(primary, txs)
    backup.on_message(primary_id(backup), payload)
    assert prepares_sent(bnet) == [] and backup.replica.pre_prepare_at(0, 1) is None
    backup.on_message(primary_id(backup), payload)  # a retransmission changes nothing
    backup.on_message(b"gossiper", M.pack(M.TXS, (txs[1].encode(),)))
    assert prepares_sent(bnet) == []
    backup.on_message(b"gossiper", M.pack(M.TXS, (deploys(1)[0].encode(), txs[2].encode())))
    assert [v.block_hash for v in prepares_sent(bnet)] == [full.block_hash]
    assert len(backup.tx_backlog) == 1  # the unrelated transaction of that TXS message
    backup.expire_compacts(trio.current_time() + 10 * COMPACT_WAIT)
    assert bnet.outbox == [] and outcomes(backup) == {"rebuilt": 1, "fetched": 0, "stale": 0}


async def test_after_the_wait_the_full_pre_prepare_is_asked_for_and_answered_a_bounded_number_of_times() -> None:
    primary, backup, pnet, bnet = network()
    txs = deploys(3)
    full, payload = proposal(primary, txs)
    backup.on_message(primary_id(backup), payload)
    now = trio.current_time()
    backup.expire_compacts(now + COMPACT_WAIT / 2)
    assert bnet.outbox == []  # still waiting
    backup.expire_compacts(now + COMPACT_WAIT)
    ((to, kind, request),) = bnet.outbox
    assert (to, kind, request) == (primary_id(backup), M.GET_PRE_PREPARE, M.GetPrePrepare(0, 1))
    assert outcomes(backup)["fetched"] == 1
    asker = b"backup-node-id"
    for _ in range(MAX_FULL_ANSWERS + 3):
        primary.on_message(asker, M.pack(M.GET_PRE_PREPARE, request))  # type: ignore[arg-type]
    answers = [body for peer, kind, body in pnet.outbox if peer == asker and kind == M.PRE_PREPARE]
    assert len(answers) == MAX_FULL_ANSWERS and answers[0] == full
    primary.on_message(asker, M.pack(M.GET_PRE_PREPARE, M.GetPrePrepare(0, 7)))  # a slot it holds nothing for
    assert len(pnet.outbox) == MAX_FULL_ANSWERS
    backup.on_message(primary_id(backup), M.pack(M.PRE_PREPARE, answers[0]))
    assert [v.block_hash for v in prepares_sent(bnet)] == [full.block_hash]


async def test_another_signature_of_the_same_body_is_not_substituted() -> None:
    """ML-DSA signing is hedged: one body, two valid encodings. The backup holds the other one, so the
    wire id differs and it does not rebuild a block with other bytes than the primary's."""
    primary, backup, _, bnet = network()
    key = KeyPair.generate(ML_DSA_44)
    tx = deploys(1, key)[0]
    body: TxBody = tx.body
    other = Transaction(body, key.sign(Context.TRANSACTION, encode(body)))
    assert other.hash == tx.hash and other.signature != tx.signature and other.wire_id != tx.wire_id
    backup.admit(other.encode(), gossip=False)
    full, payload = proposal(primary, [tx])
    backup.on_message(primary_id(backup), payload)
    assert backup.replica.pre_prepare_at(0, 1) is None and prepares_sent(bnet) == []
    backup.expire_compacts(trio.current_time() + COMPACT_WAIT)
    assert [kind for _, kind, _ in bnet.outbox] == [M.GET_PRE_PREPARE]
    backup.on_message(primary_id(backup), M.pack(M.PRE_PREPARE, full))
    held = backup.replica.pre_prepare_at(0, 1)
    assert held is not None and held.encode() == full.encode()


async def test_ids_that_do_not_match_the_header_make_the_block_invalid() -> None:
    """A faulty primary names other pending transactions than its header's tx root commits to: the
    rebuilt block fails validation and the backup signs no PREPARE."""
    primary, backup, _, bnet = network()
    txs, others = deploys(2), deploys(2)
    for tx in txs + others:
        backup.admit(tx.encode(), gossip=False)
    _, payload = proposal(primary, txs)
    _, compact = M.unpack(payload, 1 << 24)
    assert isinstance(compact, M.CompactPrePrepare)
    forged = M.CompactPrePrepare(compact.view, compact.seq, compact.header, tuple(t.wire_id for t in others),
                                 compact.validator, compact.signature)
    backup.on_message(primary_id(backup), M.pack(M.PRE_PREPARE_COMPACT, forged))
    assert prepares_sent(bnet) == [] and backup.replica.voted(PREPARE, 0, 1) is None


@pytest.mark.parametrize("ids", [(b"\x01" * 31,), (b"\x01" * 33,), (b"\x01" * 32,) * (M.MAX_COMPACT_TXS + 1)])
async def test_malformed_compact_pre_prepares_are_refused_and_penalized(ids: tuple[bytes, ...]) -> None:
    primary, backup, _, bnet = network()
    _, payload = proposal(primary, deploys(1))
    _, compact = M.unpack(payload, 1 << 24)
    assert isinstance(compact, M.CompactPrePrepare)
    bad = M.CompactPrePrepare(compact.view, compact.seq, compact.header, ids, compact.validator, compact.signature)
    backup.on_message(b"peer", M.pack(M.PRE_PREPARE_COMPACT, bad))
    assert [p for p, _ in bnet.penalized] == [b"peer"]
    assert backup.metrics.bad_messages._value.get() == 1
    assert backup.replica.pre_prepare_at(0, 1) is None and not backup._pending_compact


async def test_rebuild_refuses_other_transactions_than_the_ids_name() -> None:
    txs = deploys(2)
    keys = make_keys(4)
    node = make_node(keys, 0)
    for tx in txs:
        node.admit(tx.encode(), gossip=False)
    block = node.build_block()
    compact = M.CompactPrePrepare(0, 1, block.header, tuple(t.wire_id for t in txs), 0, b"sig")
    assert compact.rebuild(tuple(txs)).block.encode() == block.encode()
    with pytest.raises(ValueError, match="not the ones"):
        compact.rebuild((txs[1], txs[0]))
    with pytest.raises(ValueError, match="not the ones"):
        compact.rebuild(tuple(txs[:1]))
    assert [wire_id_of(t.encode()) for t in txs] == list(compact.tx_ids)


@pytest.mark.parametrize("forgery", ["bad-signature", "not-the-primary", "other-view"])
async def test_only_the_primarys_signed_proposal_may_search_the_backlog_or_wait(forgery: str) -> None:
    """A compact PRE-PREPARE that lacks transactions and is not the current view's primary's validly
    signed proposal is asked for in full at once: no backlog search, nothing held for it."""
    primary, backup, _, bnet = network()
    txs = deploys(2)
    backup.on_message(b"gossiper", M.pack(M.TXS, tuple(tx.encode() for tx in txs)))
    _, payload = proposal(primary, txs)
    _, compact = M.unpack(payload, 1 << 24)
    assert isinstance(compact, M.CompactPrePrepare)
    view, validator, signature = compact.view, compact.validator, compact.signature
    if forgery == "bad-signature":
        signature = bytes(64)
    elif forgery == "not-the-primary":
        validator = 2
    else:
        view = 1
    forged = M.CompactPrePrepare(view, compact.seq, compact.header, compact.tx_ids, validator, signature)
    backup.on_message(b"liar", M.pack(M.PRE_PREPARE_COMPACT, forged))
    assert len(backup.tx_backlog) == 2 and len(backup.mempool) == 0  # not searched
    assert not backup._pending_compact
    assert bnet.outbox == [(b"liar", M.GET_PRE_PREPARE, M.GetPrePrepare(view, compact.seq))]
    assert outcomes(backup)["fetched"] == 1 and prepares_sent(bnet) == []
    backup.on_message(primary_id(backup), payload)  # the genuine one still works
    assert len(backup.tx_backlog) == 0 and len(prepares_sent(bnet)) == 1
