"""PBFT normal case (Castro & Liskov §4.2) in one process over a simulated, seeded network."""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.exceptions import InvalidCertificate, InvalidMessage
from consensus.messages import COMMIT, PREPARE, PrePrepare, Vote, vote_signing_bytes
from consensus.replica import (
    Broadcast,
    CommitBlock,
    PersistPrepared,
    PersistVote,
    RecordEvidence,
    Replica,
    SyncTo,
    ValidateBlock,
    ViewInstalled,
    make_verifier,
    verify_certificate,
)
from crypto.hashing import ZERO_HASH, Hash32, sha3
from crypto.keys import KeyPair
from crypto.signatures import ED25519, Context
from state.types import Block, BlockHeader, CommitCertificate, ValidatorSignature

CHAIN = "sim"


def make_block(height: int, prev: bytes, view: int = 0, proposer: int = 0, salt: int = 0) -> Block:
    root = sha3(salt.to_bytes(8, "big"))
    header = BlockHeader(CHAIN, height, view, Hash32(prev), 1000 + height + salt, proposer, root, root, root, 0)
    return Block(header, ())


@dataclass
class Sim:
    """n replicas, a message pool delivered in a seeded random order, and their commits."""

    n: int
    seed: int = 0
    drop: float = 0.0
    keys: list[KeyPair] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    pool: list[tuple[int, PrePrepare | Vote]] = field(default_factory=list)
    committed: list[dict[int, tuple[Hash32, CommitCertificate]]] = field(default_factory=list)
    persisted: list[list[PersistVote]] = field(default_factory=list)
    invalid: set[Hash32] = field(default_factory=set)
    evidence: list[RecordEvidence] = field(default_factory=list)
    crashed: set[int] = field(default_factory=set)
    prepared: dict[int, object] = field(default_factory=dict)
    installed: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.keys = [KeyPair.generate(ED25519) for _ in range(self.n)]
        self.verifier = make_verifier([(k.scheme_tag, k.public_key) for k in self.keys], Context.CONSENSUS)
        for i in range(self.n):
            self.replicas.append(self._replica(i, height=0, head=ZERO_HASH, votes=None))
            self.committed.append({})
            self.persisted.append([])

    def _replica(self, i: int, height: int, head: Hash32, votes: dict | None) -> Replica:
        key = self.keys[i]
        return Replica(chain_id=CHAIN, n=self.n, index=i, signer=lambda m, k=key: k.sign(Context.CONSENSUS, m),
                       verifier=self.verifier, height=height, head_hash=head, votes=votes)

    def carry_out(self, i: int, actions: list) -> None:
        queue = list(actions)
        while queue:
            a = queue.pop(0)
            if i in self.crashed:
                return
            if isinstance(a, Broadcast):
                for j in range(self.n):
                    if j != i and self.rng.random() >= self.drop:
                        self.pool.append((j, a.message))
            elif isinstance(a, PersistPrepared):
                self.prepared[i] = a.certificate
            elif isinstance(a, SyncTo):
                self.catch_up()
            elif isinstance(a, ViewInstalled):
                self.installed.append((i, a.view))
            elif isinstance(a, PersistVote):
                self.persisted[i].append(a)
            elif isinstance(a, ValidateBlock):
                r = self.replicas[i]
                if a.block.hash in self.invalid:
                    queue[:0] = r.block_invalid(a.view, a.seq, a.block.hash)
                else:
                    queue[:0] = r.block_validated(a.view, a.seq, a.block.hash)
            elif isinstance(a, CommitBlock):
                assert a.block.height not in self.committed[i]
                self.committed[i][a.block.height] = (a.block.hash, a.certificate)
            elif isinstance(a, RecordEvidence):
                self.evidence.append(a)

    def deliver_all(self, limit: int = 100_000) -> None:
        steps = 0
        while self.pool and steps < limit:
            steps += 1
            j, msg = self.pool.pop(self.rng.randrange(len(self.pool)))
            if j not in self.crashed:
                self.carry_out(j, self.replicas[j].receive(msg))

    def propose(self, block: Block | None = None) -> Block:
        p = self.replicas[0].primary()
        r = self.replicas[p]
        block = block or make_block(r.next_seq, r.head_hash, r.view, p)
        self.carry_out(p, r.propose(block))
        return block

    def catch_up(self) -> None:
        """What the node's catch-up does: a lagging replica fetches certified blocks from a peer."""
        for i, r in enumerate(self.replicas):
            if i in self.crashed:
                continue
            for j, peer in enumerate(self.committed):
                if j in self.crashed:
                    continue
                while r.height + 1 in peer:
                    h = r.height + 1
                    block_hash, cert = peer[h]
                    verify_certificate(cert, block_hash, h, CHAIN, self.n, self.verifier)
                    self.committed[i][h] = (block_hash, cert)
                    self.carry_out(i, r.synced(h, block_hash, cert))

    def deliver_until_prepared(self) -> None:
        """Deliver pre-prepares and PREPAREs only; every COMMIT is lost."""
        while self.pool:
            j, msg = self.pool.pop(0)
            if isinstance(msg, Vote) and msg.kind == COMMIT:
                continue
            if j not in self.crashed:
                self.carry_out(j, self.replicas[j].receive(msg))

    def crash(self, i: int) -> None:
        self.crashed.add(i)

    def restart(self, i: int) -> None:
        """Bring replica i back with only what it persisted: committed blocks, votes, prepared cert."""
        self.crashed.discard(i)
        height = max(self.committed[i], default=0)
        head, cert = self.committed[i][height] if height else (ZERO_HASH, None)
        votes = {(p.kind, p.view, p.seq): p.block_hash for p in self.persisted[i] if p.seq > height or p.kind >= 4}
        key = self.keys[i]
        self.replicas[i] = Replica(chain_id=CHAIN, n=self.n, index=i,
                                   signer=lambda m, k=key: k.sign(Context.CONSENSUS, m), verifier=self.verifier,
                                   height=height, head_hash=head, votes=votes, head_certificate=cert,
                                   prepared=self.prepared.get(i), genesis_hash=ZERO_HASH)

    def live(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.crashed]

    def step(self) -> bool:
        """One round: primaries propose, messages flow, lagging replicas catch up, retransmit.

        Returns whether any live replica's height moved or a view was installed (either restarts a
        node's progress timer).
        """
        before = [r.height for r in self.replicas]
        installs = len(self.installed)
        for i in self.live():
            r = self.replicas[i]
            if r.is_primary and not r.proposal_pending():
                salt = self.rng.randrange(1 << 30)
                self.carry_out(i, r.propose(make_block(r.next_seq, r.head_hash, r.view, i, salt)))
        self.deliver_all()
        self.catch_up()
        for i in self.live():
            for m in self.replicas[i].retransmit():
                self.carry_out(i, [Broadcast(m)])
        self.deliver_all()
        self.catch_up()
        return len(self.installed) > installs or any(self.replicas[i].height > before[i] for i in self.live())

    def timeout(self) -> None:
        for i in self.live():
            self.carry_out(i, self.replicas[i].on_timeout())

    def check_safety(self) -> None:
        heights: dict[int, set[bytes]] = {}
        for c in self.committed:
            for h, (bh, _) in c.items():
                heights.setdefault(h, set()).add(bh)
        forks = {h: s for h, s in heights.items() if len(s) > 1}
        assert not forks, f"fork at heights {sorted(forks)} (seed {self.seed})"


@pytest.mark.parametrize("n", [1, 4, 7])
def test_normal_case_commits_on_every_replica(n: int) -> None:
    sim = Sim(n)
    for _ in range(3):
        sim.propose()
        sim.deliver_all()
    sim.check_safety()
    for i in range(n):
        assert sorted(sim.committed[i]) == [1, 2, 3]
    f = (n - 1) // 3
    for h, (block_hash, cert) in sim.committed[0].items():
        assert len(cert.signatures) == 2 * f + 1
        verify_certificate(cert, block_hash, h, CHAIN, n, sim.verifier)


def test_votes_are_persisted_before_broadcast() -> None:
    sim = Sim(4)
    block = make_block(1, ZERO_HASH)
    actions = sim.replicas[0].propose(block)
    assert isinstance(actions[0], PersistVote) and isinstance(actions[1], Broadcast)
    pp = actions[1].message
    acts = sim.replicas[1].receive(pp)
    assert isinstance(acts[0], ValidateBlock)
    acts = sim.replicas[1].block_validated(0, 1, block.hash)
    kinds = [type(a) for a in acts]
    assert kinds[:2] == [PersistVote, Broadcast]
    assert acts[0].kind == PREPARE and acts[1].message.kind == PREPARE


def test_invalid_block_gets_no_votes_and_nothing_commits() -> None:
    sim = Sim(4)
    block = make_block(1, ZERO_HASH, salt=9)
    sim.invalid.add(block.hash)
    sim.propose(block)
    sim.deliver_all()
    assert all(not c for c in sim.committed)
    assert all(not any(p.kind == COMMIT for p in ps) for ps in sim.persisted)


def test_one_crashed_backup_does_not_stop_commits() -> None:
    sim = Sim(4)
    # replica 3 is down: drop everything addressed to it
    for _ in range(2):
        sim.propose()
        while sim.pool:
            j, msg = sim.pool.pop(0)
            if j != 3:
                sim.carry_out(j, sim.replicas[j].receive(msg))
    assert sorted(sim.committed[0]) == [1, 2] and not sim.committed[3]


def test_two_crashed_backups_stop_progress_safely() -> None:
    sim = Sim(4)
    sim.propose()
    while sim.pool:
        j, msg = sim.pool.pop(0)
        if j not in (2, 3):
            sim.carry_out(j, sim.replicas[j].receive(msg))
    assert all(not c for c in sim.committed)


def test_forged_and_misattributed_messages_are_refused() -> None:
    sim = Sim(4)
    block = make_block(1, ZERO_HASH)
    pp = sim.replicas[0].propose(block)[1].message
    r1 = sim.replicas[1]
    bad_sig = PrePrepare(pp.view, pp.seq, pp.block, pp.validator, b"\x00" * 64)
    with pytest.raises(InvalidMessage):
        r1.receive(bad_sig)
    # a backup cannot pre-prepare
    k2 = sim.keys[2]
    sig = k2.sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, 1, 0, 1, block.hash, 2))
    with pytest.raises(InvalidMessage):
        r1.receive(PrePrepare(0, 1, block, 2, sig))
    # a vote signed by 2 but claiming to be from 3
    sig = k2.sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, PREPARE, 0, 1, block.hash, 3))
    with pytest.raises(InvalidMessage):
        r1.receive(Vote(PREPARE, 0, 1, block.hash, 3, sig))
    # a signature for another chain
    sig = k2.sign(Context.CONSENSUS, vote_signing_bytes("other", PREPARE, 0, 1, block.hash, 2))
    with pytest.raises(InvalidMessage):
        r1.receive(Vote(PREPARE, 0, 1, block.hash, 2, sig))
    # an index outside the set
    with pytest.raises(InvalidMessage):
        r1.receive(Vote(PREPARE, 0, 1, block.hash, 9, sig))
    assert r1.receive(pp)  # the genuine one is still accepted


def test_restored_votes_prevent_signing_a_conflicting_block() -> None:
    """Double-sign protection: a replica restarted with its records never prepares another block."""
    sim = Sim(4)
    a = make_block(1, ZERO_HASH, salt=1)
    b = make_block(1, ZERO_HASH, salt=2)
    acts = sim.replicas[0].propose(a)
    sim.carry_out(0, acts)
    sim.pool.clear()
    pp_a = acts[1].message
    sim.carry_out(1, sim.replicas[1].receive(pp_a))
    votes = {(p.kind, p.view, p.seq): p.block_hash for p in sim.persisted[1]}
    assert votes == {(PREPARE, 0, 1): a.hash}
    sim.pool.clear()
    restarted = sim._replica(1, 0, ZERO_HASH, votes)
    # the primary (restarted without its own records, a byzantine primary) proposes b
    fresh_primary = sim._replica(0, 0, ZERO_HASH, None)
    pp_b = fresh_primary.propose(b)[1].message
    assert restarted.receive(pp_b) == []
    # the primary itself refuses to propose b once it recorded a
    primary_votes = {(p.kind, p.view, p.seq): p.block_hash for p in sim.persisted[0]}
    with pytest.raises(ValueError, match="another block"):
        sim._replica(0, 0, ZERO_HASH, primary_votes).propose(b)


def test_equivocating_primary_is_recorded_and_no_fork() -> None:
    sim = Sim(4, seed=3)
    a = make_block(1, ZERO_HASH, salt=1)
    b = make_block(1, ZERO_HASH, salt=2)
    key = sim.keys[0]
    pps = [PrePrepare(0, 1, blk, 0, key.sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, 1, 0, 1, blk.hash, 0)))
           for blk in (a, b)]
    # replicas 1 and 2 see a first, replica 3 sees b first; everyone sees both eventually
    for j, first in ((1, 0), (2, 0), (3, 1)):
        sim.carry_out(j, sim.replicas[j].receive(pps[first]))
        sim.carry_out(j, sim.replicas[j].receive(pps[1 - first]))
    sim.deliver_all()
    sim.check_safety()
    assert sim.evidence, "conflicting pre-prepares must be recorded as evidence"
    ev = sim.evidence[0].evidence
    assert ev.validator == 0 and {ev.first_hash, ev.second_hash} == {a.hash, b.hash}


def test_certificate_checks() -> None:
    sim = Sim(4)
    sim.propose()
    sim.deliver_all()
    block_hash, cert = sim.committed[1][1]
    verify_certificate(cert, block_hash, 1, CHAIN, 4, sim.verifier)
    sigs = cert.signatures
    cases = [
        CommitCertificate(1, 0, block_hash, sigs[:2]),  # too few
        CommitCertificate(1, 0, block_hash, (sigs[0], sigs[0], sigs[1])),  # duplicate signer
        CommitCertificate(1, 0, block_hash, (sigs[0], sigs[1], ValidatorSignature(sigs[2].validator, b"\x01" * 64))),
        CommitCertificate(1, 1, block_hash, sigs),  # other view: signatures do not match
    ]
    for bad in cases:
        with pytest.raises(InvalidCertificate):
            verify_certificate(bad, block_hash, 1, CHAIN, 4, sim.verifier)
    with pytest.raises(InvalidCertificate):
        verify_certificate(cert, sha3(b"other"), 1, CHAIN, 4, sim.verifier)


def test_retransmission_recovers_from_lost_messages() -> None:
    sim = Sim(4, seed=1, drop=1.0)  # every first transmission is lost
    sim.propose()
    sim.drop = 0.0
    assert not any(sim.committed)
    for _ in range(4):
        for i, r in enumerate(sim.replicas):
            for m in r.retransmit():
                sim.carry_out(i, [Broadcast(m)])
        sim.deliver_all()
    assert all(1 in c for c in sim.committed)


def test_synced_replica_moves_on_and_replays_buffered_messages() -> None:
    sim = Sim(4)
    sim.propose()
    # replica 3 misses block 1 entirely
    while sim.pool:
        j, msg = sim.pool.pop(0)
        if j != 3:
            sim.carry_out(j, sim.replicas[j].receive(msg))
    block2 = sim.propose()
    sim.deliver_all()  # replica 3 buffers messages of seq 2 (it is at height 0)
    assert 2 not in sim.committed[3]
    h1 = sim.committed[0][1][0]
    sim.carry_out(3, sim.replicas[3].synced(1, h1))
    sim.deliver_all()
    for m in [m for i in range(3) for m in sim.replicas[i].retransmit()]:
        sim.carry_out(3, sim.replicas[3].receive(m))
    assert sim.committed[3].get(2, (None,))[0] == block2.hash


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([4, 7]), drop=st.sampled_from([0.0, 0.1, 0.3]))
def test_random_delivery_orders_never_fork(seed: int, n: int, drop: float) -> None:
    """Safety under any delivery order and message loss; liveness once retransmission runs."""
    sim = Sim(n, seed=seed, drop=drop)
    for target in (1, 2, 3):
        sim.propose()
        for _ in range(50):  # bounded: deliver, then retransmit on "timeout"
            sim.deliver_all()
            if all(r.height >= target for r in sim.replicas):
                break
            for i, r in enumerate(sim.replicas):
                for m in r.retransmit():
                    sim.carry_out(i, [Broadcast(m)])
            sim.catch_up()
        assert all(r.height >= target for r in sim.replicas), f"no progress to {target} (seed {seed})"
    sim.check_safety()
    roots = {tuple(sorted((h, bh) for h, (bh, _) in c.items())) for c in sim.committed}
    assert len(roots) == 1


def test_safety_checker_sees_a_fork_with_f_plus_one_byzantine() -> None:
    """Self-check: two conflicting blocks can both gather certificates when f + 1 validators equivocate."""
    sim = Sim(4)
    a, b = make_block(1, ZERO_HASH, salt=1), make_block(1, ZERO_HASH, salt=2)

    def signed(kind: int, blk: Block, i: int) -> bytes:
        return sim.keys[i].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, kind, 0, 1, blk.hash, i))

    # byzantine 0 (primary) and 1 vote for both blocks; honest 2 goes with a, honest 3 with b
    for honest, blk in ((2, a), (3, b)):
        r = sim.replicas[honest]
        sim.carry_out(honest, r.receive(PrePrepare(0, 1, blk, 0, signed(1, blk, 0))))
        for byz in (1,):
            sim.carry_out(honest, r.receive(Vote(PREPARE, 0, 1, blk.hash, byz, signed(PREPARE, blk, byz))))
        for byz in (0, 1):
            sim.carry_out(honest, r.receive(Vote(COMMIT, 0, 1, blk.hash, byz, signed(COMMIT, blk, byz))))
    sim.pool.clear()
    assert sim.committed[2][1][0] == a.hash and sim.committed[3][1][0] == b.hash
    with pytest.raises(AssertionError, match="fork"):
        sim.check_safety()


# --- view change (§4.4) --------------------------------------------------------------------------


def run_until(sim: Sim, height: int, rounds: int = 60) -> None:
    """Step; on a round without progress, fire every live replica's timer (bounded)."""
    for _ in range(rounds):
        if all(sim.replicas[i].height >= height for i in sim.live()):
            return
        if not sim.step():
            sim.timeout()
    raise AssertionError(f"no progress to height {height} (seed {sim.seed}); heights "
                         f"{[r.height for r in sim.replicas]}, views {[r.view for r in sim.replicas]}")


def test_crashed_primary_is_replaced_by_a_view_change() -> None:
    sim = Sim(4, seed=5)
    run_until(sim, 2)
    sim.crash(0)
    run_until(sim, 5)
    assert all(sim.replicas[i].view >= 1 for i in sim.live())
    assert {sim.replicas[i].primary() for i in sim.live()} != {0}
    sim.check_safety()
    late_blocks = [sim.committed[1][h][1] for h in (3, 4, 5)]
    assert all(cert.view >= 1 for cert in late_blocks)


def test_prepared_block_survives_the_view_change() -> None:
    """The primary crashes right after its block was prepared: the next view commits that block."""
    sim = Sim(4, seed=2)
    block = make_block(1, ZERO_HASH, salt=77)
    sim.carry_out(0, sim.replicas[0].propose(block))
    sim.deliver_until_prepared()  # everybody prepares, every COMMIT is lost
    assert sorted(sim.prepared) == [0, 1, 2, 3] and not any(sim.committed)
    sim.crash(0)
    run_until(sim, 2)
    assert all(sim.committed[i][1][0] == block.hash for i in sim.live()), "block 1 must be the prepared block"
    sim.check_safety()


def test_restarted_replica_resumes_in_its_view() -> None:
    sim = Sim(4, seed=9)
    run_until(sim, 1)
    sim.crash(0)
    run_until(sim, 3)
    view = sim.replicas[2].view
    sim.crash(2)
    sim.restart(2)
    assert sim.replicas[2].view == view, "the recorded NEW-VIEW puts it back in its view"
    run_until(sim, 5)
    sim.check_safety()


def test_new_view_must_re_propose_the_prepared_block() -> None:
    """A byzantine new primary that drops the prepared block from NEW-VIEW is refused."""
    sim = Sim(4, seed=4)
    block = make_block(1, ZERO_HASH, salt=1)
    sim.carry_out(0, sim.replicas[0].propose(block))
    sim.deliver_until_prepared()
    sim.crash(0)
    vcs = []
    for i in (1, 2, 3):
        acts = sim.replicas[i].on_timeout()
        vcs += [a.message for a in acts if isinstance(a, Broadcast)]
    assert any(vc.prepared is not None for vc in vcs)
    from consensus.messages import NewView, new_view_signing_bytes

    primary = sim.replicas[1].primary(1)
    forged = NewView(1, tuple(sorted(vcs, key=lambda v: v.validator)), None, primary, b"")
    forged = dataclasses.replace(
        forged, signature=sim.keys[primary].sign(Context.CONSENSUS, new_view_signing_bytes(CHAIN, forged)))
    target = 3 if primary != 3 else 2
    with pytest.raises(InvalidMessage, match="re-propose"):
        sim.replicas[target].receive(forged)


def test_f_plus_one_view_changes_pull_a_replica_along() -> None:
    sim = Sim(4, seed=6)
    run_until(sim, 1)
    acts = [sim.replicas[i].on_timeout() for i in (1, 2)]
    msgs = [a.message for group in acts for a in group if isinstance(a, Broadcast)]
    r3 = sim.replicas[3]
    out = r3.receive(msgs[0])
    assert r3.view == 0 and r3.active  # one is not enough
    out = r3.receive(msgs[1])
    assert r3.view == 1 and not r3.active
    assert any(isinstance(a, Broadcast) for a in out), "it sends its own VIEW-CHANGE"


@settings(max_examples=int(os.environ.get("QENEX_SIM_EXAMPLES", "60")), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([4, 7]),
       events=st.lists(st.tuples(st.sampled_from(["crash", "restart", "timeout", "drop"]), st.integers(0, 6)),
                       max_size=12))
def test_random_crashes_restarts_and_timeouts_never_fork(seed: int, n: int, events: list) -> None:
    """Any schedule of crashes (at most f at once), restarts, spurious timeouts and message loss:
    no fork, and once the faults stop every live replica moves on."""
    sim = Sim(n, seed=seed)
    f = (n - 1) // 3
    for kind, who in events:
        who %= n
        if kind == "crash" and len(sim.crashed) < f:
            sim.crash(who)
        elif kind == "restart" and who in sim.crashed:
            sim.restart(who)
        elif kind == "timeout" and who not in sim.crashed:
            sim.carry_out(who, sim.replicas[who].on_timeout())
        elif kind == "drop":
            sim.drop = 0.3
        if not sim.step():
            sim.timeout()
        sim.drop = 0.0
        sim.check_safety()
    for i in list(sim.crashed):
        sim.restart(i)
    target = max(r.height for r in sim.replicas) + 2
    run_until(sim, target, rounds=120)
    sim.check_safety()
