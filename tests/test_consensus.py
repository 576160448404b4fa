"""PBFT normal case (Castro & Liskov §4.2) in one process over a simulated, seeded network."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.exceptions import InvalidCertificate, InvalidMessage
from consensus.messages import COMMIT, PREPARE, PrePrepare, Vote, vote_signing_bytes
from consensus.replica import (
    Broadcast,
    PersistVote,
    Replica,
    ValidateBlock,
    verify_certificate,
)
from consensus.simulation import (
    BEHAVIOURS,
    CHAIN,
    FAULT_KINDS,
    LIVENESS_ROUNDS,
    RETRANSMIT_MS,
    Fault,
    LivenessFailure,
    SafetyViolation,
    Schedule,
    Sim,
    make_block,
    random_schedule,
    run_scenario,
)
from crypto.hashing import ZERO_HASH, sha3
from crypto.signatures import Context
from state.types import Block, CommitCertificate, ValidatorSignature


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
    restarted = sim._replica(1, votes=votes)
    # the primary (restarted without its own records, a byzantine primary) proposes b
    fresh_primary = sim._replica(0)
    pp_b = fresh_primary.propose(b)[1].message
    assert restarted.receive(pp_b) == []
    # the primary itself refuses to propose b once it recorded a
    primary_votes = {(p.kind, p.view, p.seq): p.block_hash for p in sim.persisted[0]}
    with pytest.raises(ValueError, match="another block"):
        sim._replica(0, votes=primary_votes).propose(b)


def test_equivocating_primary_is_recorded_and_no_fork() -> None:
    sim = Sim(4, seed=3, byzantine={0: {"equivocate"}})  # the pre-prepares below are signed by hand
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
    sim.run_until(height, rounds)


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


def test_a_replica_changing_view_moves_on_only_with_a_quorum_of_view_changes() -> None:
    """§4.4: the timer of view v starts once 2f + 1 VIEW-CHANGEs for v are in. Short of them, a
    timeout offers the replica's VIEW-CHANGE again instead of running ahead alone, view after view."""
    sim = Sim(4, seed=6)
    run_until(sim, 1)
    r2 = sim.replicas[2]  # not the primary of view 1 (validator 1)
    first = [a.message for a in r2.on_timeout() if isinstance(a, Broadcast)]
    assert r2.view == 1 and not r2.active and len(first) == 1
    for _ in range(5):  # alone in view 1: it stays there, offering its VIEW-CHANGE again
        again = r2.on_timeout()
        assert r2.view == 1 and [a.message for a in again if isinstance(a, Broadcast)] == first
    for i in (1, 3):
        r2.receive(next(a.message for a in sim.replicas[i].on_timeout() if isinstance(a, Broadcast)))
    assert r2.view == 1 and not r2.active  # 2f + 1 VIEW-CHANGEs for view 1, no NEW-VIEW yet: its timer runs
    r2.on_timeout()
    assert r2.view == 2 and not r2.active


def test_a_restarted_replica_offers_its_recorded_view_change_again() -> None:
    """Every replica times out to view 1 and all the VIEW-CHANGEs are lost; then replicas 0 and 1 crash
    and restart one after the other. Each comes back changing to view 1 with the VIEW-CHANGE it
    recorded (not a second one, not none), offers it again, and the view change completes."""
    sim = Sim(4, seed=11)
    run_until(sim, 1)
    for i in range(4):
        sim.carry_out(i, sim.replicas[i].on_timeout())
    sim.pool.clear()  # every VIEW-CHANGE lost
    recorded = {i: sim.replicas[i]._own_vc for i in (0, 1)}
    for i in (0, 1):
        sim.crash(i)
        sim.restart(i)
        r = sim.replicas[i]
        assert (r.view, r.active) == (1, False) and r._own_vc == recorded[i]
        again = [a.message for a in r.on_timeout() if isinstance(a, Broadcast)]
        assert again == [recorded[i]], "the same signed VIEW-CHANGE, offered again"
    run_until(sim, 3)
    assert all(sim.replicas[i].view >= 1 and sim.replicas[i].height >= 3 for i in range(4))
    sim.check_safety()


def test_a_replica_that_ran_ahead_alone_no_longer_strands_the_others() -> None:
    """The soak's seed 9020934055714197047 (n = 7, one byzantine validator, twins of another): before
    the rule above, one honest replica climbed to view 15 alone while the others waited in view 12
    for a quorum that could not form, and the chain stopped (LivenessFailure)."""
    result = run_scenario(random_schedule(9020934055714197047, 7))
    assert result.height >= 3 and result.max_view < 12


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
        sim.tick()
        sim.drop = 0.0
        sim.check_safety()
    for i in list(sim.crashed):
        sim.restart(i)
    target = max(r.height for r in sim.replicas) + 2
    run_until(sim, target, rounds=LIVENESS_ROUNDS)
    sim.check_safety()


# --- the fault-injection harness (consensus/simulation.py) -----------------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """Fault schedules within f faulty validators: byzantine ones (with any behaviours) and twins
    share the budget; the events are any list of ``Fault``s (crashes beyond the budget are skipped)."""
    n = draw(st.sampled_from([4, 7]))
    faulty = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=(n - 1) // 3))
    cut = draw(st.integers(0, len(faulty)))
    byzantine = tuple((i, tuple(sorted(draw(st.sets(st.sampled_from(BEHAVIOURS), min_size=1)))))
                      for i in faulty[:cut])
    events = draw(st.lists(st.builds(Fault, st.sampled_from(FAULT_KINDS), st.integers(0, 255)), max_size=16))
    return Schedule(n, draw(st.integers(0, 2**32 - 1)), byzantine, tuple(faulty[cut:]), tuple(events))


@settings(max_examples=int(os.environ.get("QENEX_SIM_SCENARIOS", "200")), deadline=None)
@given(schedule=schedules())
def test_fault_schedules_keep_safety_and_liveness(schedule: Schedule) -> None:
    """Hypothesis chooses (and shrinks) the whole schedule: byzantine behaviours, twins, crashes and
    restarts, loss, delay, duplication, reordering, partitions, clogging, spurious timeouts. Each run
    checks safety every round and liveness after healing."""
    result = run_scenario(schedule)
    assert result.height >= 2


@settings(max_examples=int(os.environ.get("QENEX_SIM_SEEDS", "20")), deadline=None)
@given(seed=st.integers(0, 2**63 - 1), n=st.sampled_from([4, 7]))
def test_seeded_fault_scenarios_keep_safety_and_liveness(seed: int, n: int) -> None:
    """The soak's path (``qenex-devnet simulate``): a seed stands for a schedule."""
    result = run_scenario(random_schedule(seed, n))
    assert result.height >= 2


def test_retransmission_waits_like_the_node_and_backs_off() -> None:
    """A replica re-sends its undecided messages only once ``retransmit_ms`` passed without a commit,
    then after 2x, 4x... that wait (node.node.Node._ticker_loop); a commit resets the backoff. The
    default interval is the node's."""
    from node.config import ConsensusSection

    assert RETRANSMIT_MS == ConsensusSection().retransmit_ms
    sim = Sim(4, seed=41)
    run_until(sim, 1)
    committed_at = sim.last_commit_ms[0]
    sim.crash(1)
    sim.crash(2)  # no quorum: nothing commits any more
    times = []
    for _ in range(80):
        sim.round += 1
        count = sim.retransmits[0]
        sim.retransmit()
        if sim.retransmits[0] > count:
            times.append(sim.now_ms - committed_at)
    assert times[:4] == [1000, 3000, 7000, 15000]  # waits of 1, 2, 4, 8 s
    sim.restart(1)
    sim.restart(2)
    run_until(sim, 2, rounds=LIVENESS_ROUNDS)
    assert sim.retransmits[0] == 0, "a commit resets the backoff"


def test_the_liveness_check_sees_a_replica_running_ahead_in_views_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug fixed in ``Replica.on_timeout`` (2126139): a replica whose timer expires without a
    quorum of VIEW-CHANGEs moved on to the next view, and the next. Cut off for 12 rounds, replica 3
    climbs alone to view 2; once healed it gains height by catch-up but never votes again, which
    the height check let pass: the check that it signs a commit certificate catches it."""
    from consensus.replica import Replica

    schedule = Schedule(4, 1, (), (), (Fault("split", 8),) + (Fault("none"),) * 12)
    result = run_scenario(schedule)  # fixed: it waits in view 1 and joins at the next view change
    assert result.failover_rounds is not None
    monkeypatch.setattr(Replica, "on_timeout",
                        lambda self: [] if self.index is None else self._start_view_change(self.view + 1))
    with pytest.raises(LivenessFailure, match=r"validators \[3\] signed no commit certificate.*seed 1"):
        run_scenario(schedule)


def test_the_liveness_check_sees_a_restart_without_its_view_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug fixed by ``own_view_change`` (937957a): a replica restarted during a view change
    without the VIEW-CHANGE it recorded signs no second one and offers none. Every validator is
    clogged until each times out to view 1 (every VIEW-CHANGE lost); 1 crashes and restarts, then 2
    crashes (restarted at the heal): the view change needs their VIEW-CHANGEs and stalls."""
    from consensus.replica import Replica

    schedule = Schedule(4, 5, (), (), tuple(Fault("swizzle", i) for i in range(4)) + (Fault("none"),) * 4
                        + (Fault("crash", 1), Fault("restart", 0), Fault("crash", 2)))
    result = run_scenario(schedule)
    assert result.height >= 2 and {"crash", "restart"} <= set(result.faults)
    init = Replica.__init__

    def forgetful(self: Replica, *args: object, **kwargs: object) -> None:
        kwargs["own_view_change"] = None
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Replica, "__init__", forgetful)
    with pytest.raises(LivenessFailure, match=r"seed 5.*\n.*replay: run_scenario"):
        run_scenario(schedule)


def test_a_seed_replays_exactly() -> None:
    for n in (4, 7):
        schedule = random_schedule(12345, n)
        assert random_schedule(12345, n) == schedule
        first = run_scenario(schedule)
        assert run_scenario(schedule) == first
        assert first.chain and first.height >= 2
    busy = Schedule(4, 7, ((2, ("double-vote", "garbage")),), (), tuple(
        Fault(k, a) for k, a in [("delay", 40), ("drop", 20), ("isolate-primary", 0), ("timeout", 1), ("heal", 0)]))
    a, b, other = run_scenario(busy), run_scenario(busy), run_scenario(dataclasses.replace(busy, seed=8))
    assert a == b and a.delayed and a.garbage and a.timer_expiries
    assert other.chain != a.chain  # the result depends on the seed: equality above is not vacuous


def test_a_failing_schedule_names_itself_for_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="more than f"):
        run_scenario(Schedule(4, 1, (), (0, 1)))
    with pytest.raises(ValueError, match="bad fault"):
        run_scenario(Schedule(4, 1, events=(Fault("meteor", 1),)))
    # a liveness bound too short to recover from an isolated primary: the error carries the schedule
    import consensus.simulation as simulation

    schedule = Schedule(4, 3, events=(Fault("isolate-primary"), Fault("none")))
    monkeypatch.setattr(simulation, "LIVENESS_ROUNDS", 1)
    with pytest.raises(LivenessFailure, match=r"seed 3\)") as info:
        run_scenario(schedule)
    replay = str(info.value).split("replay: run_scenario(", 1)[1][:-1]
    assert eval(replay, vars(simulation)) == schedule  # noqa: S307 - our own repr


def test_twins_beyond_f_fork_and_the_checker_sees_it() -> None:
    """Self-check (Twins, OPODIS 2021): with f + 1 = 2 validators twinned and the network split so
    that each side holds a quorum of keys, both sides commit a block at height 1: a fork."""
    sim = Sim(4, seed=1, twins=[0, 1])  # instances 0..3, 4 = twin of 0, 5 = twin of 1
    sim.partition([0, 1, 2], [4, 5, 3])
    sim.step()
    sides = {sim.committed[i][1][0] for i in (2, 3) if 1 in sim.committed[i]}
    assert len(sides) == 2, "each side must have committed its own block"
    with pytest.raises(SafetyViolation, match="fork at heights"):
        sim.check_safety()


def test_within_f_twins_cannot_fork() -> None:
    """The same split with only f = 1 twinned validator: neither side alone can reach a quorum
    with a conflicting block, so there is no fork, and after healing the chain moves on."""
    sim = Sim(4, seed=1, twins=[0])  # 4 = twin of 0
    sim.partition([0, 1, 2], [4, 3])
    for _ in range(5):
        sim.tick()
        sim.check_safety()
    sim.heal()
    sim.run_until(max(sim.replicas[i].height for i in sim.honest()) + 2)
    sim.check_safety()


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_byzantine_validator_cannot_break_safety_or_stop_the_chain(behaviour: str) -> None:
    # validator 0 is the first primary. An equivocation is seen when the primary's retransmission
    # reaches a replica that got the other block: retransmit within the view timeout, as the node
    # does (its defaults: every 1 s against a 5 s view timeout; the simulation's timeout is 1 s)
    sim = Sim(4, seed=3, byzantine={0: {behaviour}}, retransmit_ms=250 if behaviour == "equivocate" else 1000)
    sim.run_until(6)
    sim.check_safety()
    if behaviour in ("equivocate", "double-vote"):
        assert sim.evidence, "conflicting signed messages must be recorded"
    if behaviour == "bad-signature":
        assert sim.rejected > 0
    if behaviour == "replay":
        assert sim.replays > 0, "old messages must have been sent again"
    if behaviour == "garbage":
        assert sim.garbage > 0 and sim.decode_errors > 0 and sim.rejected >= sim.decode_errors
    if behaviour == "wrong-root":
        assert sim.wrong_root_blocks and sim.wrong_roots > 0, "the primary's blocks must have been refused"
        voted = {p.block_hash for i in sim.honest() for p in sim.persisted[i]}
        assert not voted & sim.wrong_root_blocks, "no honest replica votes for a block with a wrong state root"
        assert all(sim.replicas[i].view >= 1 for i in sim.honest()), "the chain moved on past that primary"


def test_a_block_with_a_wrong_state_root_gets_no_votes() -> None:
    """Backups re-execute the proposal (``ValidateBlock``) and refuse a header root not their own."""
    sim = Sim(4, seed=31)
    block = make_block(1, ZERO_HASH, salt=5, state_root=sha3(b"not the state after this block"))
    sim.propose(block)
    sim.deliver_all()
    assert sim.wrong_roots == 3 and not any(sim.committed)
    assert not any(p.kind == PREPARE for ps in sim.persisted[1:] for p in ps)
    sim.run_until(2, rounds=LIVENESS_ROUNDS)  # a view change later the chain moves on
    sim.check_safety()
    assert all(sim.committed[i][1][0] != block.hash for i in range(4))


def test_the_checker_compares_the_state_roots_each_replica_computed() -> None:
    """Self-check: each replica's own state root per height is compared, not the header's."""
    sim = Sim(4, seed=32)
    sim.run_until(3)
    sim.check_safety()
    assert len({sim.state_roots[i][3] for i in range(4)}) == 1
    assert sim.state_roots[0][3] == sim.blocks[sim.committed[0][3][0]].header.state_root
    sim.state_roots[2][2] = sha3(b"a replica whose execution went astray")
    with pytest.raises(SafetyViolation, match=r"different state roots at heights \[2\]"):
        sim.check_safety()


def test_a_replica_restarted_without_its_vote_records_is_caught_signing_twice() -> None:
    """Self-check of the double-sign check: a broken recovery (``restart(lose_votes=True)``) makes an
    honest replica sign a conflicting PRE-PREPARE, or a second different VIEW-CHANGE for one view;
    the simulator raises as it is sent. A correct restart signs nothing conflicting."""
    for lose in (False, True):
        sim = Sim(4, seed=33)
        sim.propose()  # primary 0 signs a pre-prepare for (view 0, seq 1)
        sim.pool.clear()  # ... that nobody gets
        sim.crash(0)
        sim.restart(0, lose_votes=lose)
        if not lose:
            sim.run_until(2)  # it re-proposes the same block
            sim.check_safety()
            continue
        with pytest.raises(SafetyViolation, match="validator 0 .* different pre-prepare .* view 0, sequence number 1"):
            sim.step()
    for lose in (False, True):
        sim = Sim(4, seed=34)
        sim.expire(3)  # VIEW-CHANGE to view 1 at height 0, lost
        sim.pool.clear()
        sim.crash(3)
        sim.restart(3, lose_votes=lose)
        sim.propose()
        sim.deliver_all()
        assert sim.replicas[0].height == 1
        if not lose:
            assert sim.replicas[3].view == 1  # its record keeps it out of view 0 ...
            sim.expire(3)  # ... and its next VIEW-CHANGE is for view 2
            sim.check_safety()
            continue
        assert sim.replicas[3].height == 1  # it rejoined view 0 and committed block 1
        with pytest.raises(SafetyViolation, match="validator 3 .* two different view-change .* view 1"):
            sim.expire(3)  # a VIEW-CHANGE to view 1 again, now at height 1


def test_evidence_against_an_honest_validator_is_a_safety_violation() -> None:
    """An honest replica accusing an honest validator would mean the accused double-signed: the
    simulator raises; against a declared byzantine validator it is expected."""
    for byzantine, raises in (({}, True), ({2: {"double-vote"}}, False)):
        sim = Sim(4, seed=35, byzantine=byzantine)
        for h in (sha3(b"a"), sha3(b"b")):
            vote = _vote(sim, PREPARE, 1, 1, h, 2)  # view 1 is not installed: compared on arrival
            if raises and h == sha3(b"b"):
                with pytest.raises(SafetyViolation, match="against honest validator 2"):
                    sim.carry_out(1, sim.replicas[1].receive(vote))
            else:
                sim.carry_out(1, sim.replicas[1].receive(vote))
        assert len(sim.evidence) == 1


def test_liveness_failure_is_reported_with_its_seed() -> None:
    sim = Sim(4, seed=77)
    sim.crash(1)
    sim.crash(2)  # more than f down: no quorum
    with pytest.raises(LivenessFailure, match="seed 77"):
        sim.run_until(1, rounds=10)


# --- checkpoints and watermarks (§4.3) -------------------------------------------------------------


def test_checkpoints_become_stable_and_move_the_low_watermark() -> None:
    sim = Sim(4, seed=11, checkpoint_interval=3)
    sim.run_until(7)
    for i in range(4):
        cp = sim.stable[i]
        assert cp.seq == 6 and sim.replicas[i].low_watermark == 6 and sim.replicas[i].high_watermark == 12
        assert cp.block_hash == sim.committed[i][6][0]
        assert len({c.validator for c in cp.signatures}) >= 3
        for c in cp.signatures:  # each signature is a real CHECKPOINT signature
            sim.verifier(c.validator, vote_signing_bytes(CHAIN, 6, 0, c.seq, c.block_hash, c.validator), c.signature)


def count_verifications(r: Replica) -> list[int]:
    """Wrap ``r``'s signature verifier: the returned list gets the signer index of every check."""
    verified: list[int] = []
    verify = r._verify

    def counting(index: int, message: bytes, signature: bytes) -> None:
        verified.append(index)
        verify(index, message, signature)

    r._verify = counting
    return verified


def test_messages_outside_the_watermarks_are_ignored() -> None:
    sim = Sim(4, seed=12, checkpoint_interval=2)
    sim.run_until(5)
    r = sim.replicas[1]
    assert r.low_watermark == 4 and r.high_watermark == 8
    key = sim.keys[2]
    verified = count_verifications(r)
    for seq in (3, 9):  # below h, above H (and not the next one)
        h = sha3(bytes([seq]))
        vote = Vote(PREPARE, r.view, seq, h, 2, key.sign(Context.CONSENSUS, vote_signing_bytes(
            CHAIN, PREPARE, r.view, seq, h, 2)))
        assert r.receive(vote) == []
    assert verified == [], "refused before any signature check (a decided seq would be verified and noted)"
    assert not any(k[2] in (3, 9) for k in r._seen) and 9 not in r._future


def test_a_quorum_certifying_another_block_is_reported_as_divergence() -> None:
    from consensus.messages import Checkpoint
    from consensus.replica import StateDivergence

    sim = Sim(4, seed=13, checkpoint_interval=2)
    sim.run_until(1)
    sim.crash(3)  # it will not hear the real checkpoint
    sim.run_until(2)
    sim.restart(3)
    r = sim.replicas[3]
    other = sha3(b"not our block")
    # replica 3 commits block 2 by catch-up, then three validators claim another block at 2
    sim.catch_up()
    r._own_checkpoints[2] = sim.committed[3][2][0]
    out = []
    for v in (0, 1, 2):
        cp = Checkpoint(2, other, v, sim.keys[v].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, 6, 0, 2, other, v)))
        out += r.receive(cp)
    assert any(isinstance(a, StateDivergence) and a.theirs == other for a in out)


# --- delay, garbage bytes, the virtual clock (consensus/simulation.py) ------------------------------


def test_delayed_messages_are_held_then_delivered() -> None:
    sim = Sim(4, seed=21, delay=1.0, max_delay=3)
    sim.propose()
    assert not sim.pool and sim.held and sim.delayed == len(sim.held) == 3
    assert all(sim.round < release <= sim.round + 3 for release, _, _, _ in sim.held)
    sim.delay = 0.0
    sim.run_until(1, rounds=20)
    assert all(1 in c for c in sim.committed)
    sim.check_safety()


def test_cut_links_hold_messages_until_healed() -> None:
    sim = Sim(4, seed=22, checkpoint_interval=100)
    sim.cut_holds = True
    sim.clogged.add(3)
    for _ in range(10):  # 0, 1 and 2 move on without 3
        sim.tick()
    assert min(r.height for r in sim.replicas[:3]) >= 2 and sim.replicas[3].height == 0
    assert any(dst == 3 for _, _, dst, _ in sim.held), "messages to the clogged validator wait"
    sim.clogged.clear()
    sim.run_until(max(r.height for r in sim.replicas) + 1, rounds=40)
    sim.check_safety()


def test_corrupted_frames_are_refused_by_the_wire_decoder() -> None:
    sim = Sim(4, seed=23)
    block = make_block(1, ZERO_HASH)
    pp = sim.replicas[0].propose(block)[1].message
    from node.messages import pack_consensus

    frame = pack_consensus(pp)
    for bad in (frame[:-7], frame[:1], b"\xc1", b"\x92\x02\x93"):
        sim.deliver(1, bad)
    assert sim.decode_errors == 4 and sim.rejected == 4
    flipped = frame[:-3] + bytes([frame[-3] ^ 1]) + frame[-2:]  # inside the signature
    sim.deliver(1, flipped)
    assert sim.rejected == 5 and sim.decode_errors == 4, "decodes, then the signature check refuses it"
    sim.deliver(1, frame)
    assert sim.rejected == 5 and sim.replicas[1].holds_pre_prepare(0, 1, block.hash)


def test_view_timer_backs_off_exponentially_and_a_commit_resets_it() -> None:
    """Mirrors the node's ``_check_view_timer``: each expiry without progress doubles the wait, up
    to 32 times the base; a commit resets it."""
    sim = Sim(4, seed=24)
    sim.crash(1)
    sim.crash(2)  # no quorum: nothing can progress, the timers keep expiring
    fired: list[int] = []
    while len(fired) < 8:
        before = sim.expiries[0]
        sim.tick()
        if sim.expiries[0] > before:
            fired.append(sim.now_ms)
    gaps = [b - a for a, b in zip([0, *fired], fired, strict=False)]
    assert gaps == [1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000]
    assert sim.expiries[0] == 8 and all(r.height == 0 for r in sim.replicas)
    sim.restart(1)
    sim.restart(2)
    sim.run_until(1, rounds=LIVENESS_ROUNDS)
    assert sim.expiries[0] == 0, "a commit resets the backoff"
    sim.check_safety()


# --- equivocation evidence ---------------------------------------------------------------------------


def _vote(sim: Sim, kind: int, view: int, seq: int, block_hash: bytes, i: int) -> Vote:
    sig = sim.keys[i].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, kind, view, seq, block_hash, i))
    return Vote(kind, view, seq, block_hash, i, sig)  # type: ignore[arg-type]


def test_equivocation_on_a_committed_slot_is_recorded() -> None:
    """A conflicting vote for a sequence number already decided is still evidence (it used to be
    dropped as stale before the comparison, and the record was forgotten at commit)."""
    from consensus.replica import RecordEvidence

    sim = Sim(4, seed=25, checkpoint_interval=100)
    sim.run_until(2)
    r = sim.replicas[1]
    committed = sim.committed[1][1][0]
    other = sha3(b"another block")
    assert r.receive(_vote(sim, COMMIT, 0, 1, committed, 2)) == [], "a copy of its real vote: nothing"
    out = r.receive(_vote(sim, COMMIT, 0, 1, other, 2))
    ev = [a.evidence for a in out if isinstance(a, RecordEvidence)]
    assert len(ev) == 1 and ev[0].validator == 2 and ev[0].seq == 1 and ev[0].kind == COMMIT
    assert {ev[0].first_hash, ev[0].second_hash} == {committed, other}
    assert r.receive(_vote(sim, COMMIT, 0, 1, other, 2)) == [], "recorded once"
    # a forged stale vote is refused, not silently dropped
    with pytest.raises(InvalidMessage):
        r.receive(Vote(COMMIT, 0, 1, sha3(b"x"), 2, b"\x00" * 64))  # type: ignore[arg-type]
    # an older view: a vote first seen there, then a conflicting one
    sim.timeout()
    sim.run_until(4, rounds=LIVENESS_ROUNDS)
    assert r.view >= 1
    seq = r.height
    r.receive(_vote(sim, PREPARE, 0, seq, sha3(b"a"), 3))
    out = r.receive(_vote(sim, PREPARE, 0, seq, sha3(b"b"), 3))
    assert any(isinstance(a, RecordEvidence) and a.evidence.view == 0 for a in out)


def test_equivocation_records_are_discarded_below_the_low_watermark() -> None:
    sim = Sim(4, seed=26, checkpoint_interval=3)
    sim.run_until(7)
    r = sim.replicas[1]
    assert r.low_watermark == 6
    assert r._seen and all(key[2] > 6 for key in r._seen)
    assert r.receive(_vote(sim, COMMIT, 0, 5, sha3(b"below h"), 2)) == []  # outside the watermarks


def test_votes_for_a_later_view_are_compared_on_arrival() -> None:
    from consensus.replica import RecordEvidence

    sim = Sim(4, seed=27)
    r = sim.replicas[1]
    r.receive(_vote(sim, PREPARE, 1, 1, sha3(b"a"), 2))  # view 1 is not installed: buffered
    out = r.receive(_vote(sim, PREPARE, 1, 1, sha3(b"b"), 2))
    assert any(isinstance(a, RecordEvidence) for a in out)


def test_conflicting_checkpoints_are_recorded_as_evidence() -> None:
    from consensus.messages import CHECKPOINT, Checkpoint
    from consensus.replica import RecordEvidence

    sim = Sim(4, seed=28, checkpoint_interval=3)

    def checkpoint(seq: int, block_hash: bytes, i: int) -> Checkpoint:
        sig = sim.keys[i].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, CHECKPOINT, 0, seq, block_hash, i))
        return Checkpoint(seq, block_hash, i, sig)  # type: ignore[arg-type]

    r = sim.replicas[1]
    a, b = sha3(b"a"), sha3(b"b")
    assert r.receive(checkpoint(3, a, 2)) == []
    assert r.receive(checkpoint(3, a, 2)) == []  # the same one again
    out = r.receive(checkpoint(3, b, 2))
    ev = [x.evidence for x in out if isinstance(x, RecordEvidence)]
    assert len(ev) == 1 and ev[0].kind == CHECKPOINT and ev[0].seq == 3 and ev[0].validator == 2
    assert (ev[0].first_hash, ev[0].second_hash) == (a, b)
    # against the proof of the stable checkpoint (seq = the low watermark)
    sim2 = Sim(4, seed=28, checkpoint_interval=3)
    sim2.run_until(4)
    r2 = sim2.replicas[1]
    assert r2.low_watermark == 3
    signer = r2.stable_checkpoint.signatures[0].validator  # type: ignore[union-attr]
    sim = sim2
    out = r2.receive(checkpoint(3, b, signer))
    assert any(isinstance(x, RecordEvidence) and x.evidence.kind == CHECKPOINT for x in out)
    with pytest.raises(InvalidMessage):
        r2.receive(Checkpoint(3, a, signer, b"\x01" * 64))  # type: ignore[arg-type]


def test_conflicting_view_changes_are_recorded_as_evidence() -> None:
    """Two different signed VIEW-CHANGEs of one validator for one new view are equivocation (§4.4):
    evidence of kind VIEW_CHANGE, view = the new view, seq 0, the digests of both messages' signed
    fields. A copy records nothing; a forged second one is refused and records nothing."""
    from consensus.messages import VIEW_CHANGE, view_change_signing_bytes
    from consensus.replica import RecordEvidence
    from state.codec import encode

    sim = Sim(4, seed=31)
    run_until(sim, 2)
    vc = next(a.message for a in sim.replicas[2].on_timeout() if isinstance(a, Broadcast))
    r = sim.replicas[3]
    assert r.receive(vc) == [] and r.receive(vc) == []  # one VIEW-CHANGE for view 1, then a copy
    other = dataclasses.replace(vc, height=1, head_hash=sim.committed[2][1][0], certificate=sim.committed[2][1][1])
    with pytest.raises(InvalidMessage):
        r.receive(dataclasses.replace(other, signature=vc.signature))  # not signed by validator 2
    assert r.evidence == []
    other = dataclasses.replace(other, signature=sim.keys[2].sign(
        Context.CONSENSUS, view_change_signing_bytes(CHAIN, other)))
    ev = [a.evidence for a in r.receive(other) if isinstance(a, RecordEvidence)]
    assert len(ev) == 1
    e = ev[0]
    assert (e.kind, e.view, e.seq, e.validator) == (VIEW_CHANGE, 1, 0, 2)
    assert (e.first_hash, e.first_signature) == (sha3(encode(vc.unsigned())), vc.signature)
    assert (e.second_hash, e.second_signature) == (sha3(encode(other.unsigned())), other.signature)
    assert r.receive(other) == [], "recorded once"


def test_conflicting_new_views_are_recorded_as_evidence() -> None:
    """A primary that signs a second, different NEW-VIEW for the view a replica installed
    equivocates: evidence of kind NEW_VIEW (view, seq 0, digests of both signed messages)."""
    from consensus.messages import NEW_VIEW, new_view_signing_bytes
    from consensus.replica import RecordEvidence
    from state.codec import encode

    sim = Sim(4, seed=32)
    run_until(sim, 1)
    for i in range(4):
        sim.carry_out(i, sim.replicas[i].on_timeout())
    sim.deliver_all()
    nv = sim.replicas[1]._own_nv
    r = sim.replicas[2]
    assert nv is not None and (r.view, r.active) == (1, True)
    assert r.receive(nv) == []  # a copy of the installed NEW-VIEW
    other = dataclasses.replace(nv, view_changes=nv.view_changes[1:])  # another quorum of 3
    other = dataclasses.replace(other, signature=sim.keys[1].sign(
        Context.CONSENSUS, new_view_signing_bytes(CHAIN, other)))
    ev = [a.evidence for a in r.receive(other) if isinstance(a, RecordEvidence)]
    assert len(ev) == 1
    e = ev[0]
    assert (e.kind, e.view, e.seq, e.validator) == (NEW_VIEW, 1, 0, 1)
    assert (e.first_hash, e.second_hash) == (sha3(encode(nv.unsigned())), sha3(encode(other.unsigned())))
    assert (e.first_signature, e.second_signature) == (nv.signature, other.signature)
    with pytest.raises(InvalidMessage):
        sim.replicas[3].receive(dataclasses.replace(other, signature=nv.signature))
    assert sim.replicas[3].evidence == []


def test_a_replica_that_missed_the_new_view_is_answered_with_it_and_votes_again() -> None:
    """Replicas 0..2 change to view 1 and install it; replica 3 misses every VIEW-CHANGE and the
    NEW-VIEW. Its own VIEW-CHANGE (here: started because f + 1 validators send it view-1 votes) is
    answered with the NEW-VIEW that installed view 1, which it checks and installs, and it votes
    again. A replica never answers a forged VIEW-CHANGE, and answers one sender at most
    ``MAX_ANSWERS`` times per view."""
    from consensus.messages import NewView, ViewChange
    from consensus.replica import MAX_ANSWERS, ViewInstalled

    sim = Sim(4, seed=8)
    run_until(sim, 1)
    vcs = [next(a.message for a in sim.replicas[i].on_timeout() if isinstance(a, Broadcast)) for i in (0, 1, 2)]
    new_views: list[NewView] = []
    for i in (0, 1, 2):
        for vc in vcs:
            if vc.validator != i:
                for a in sim.replicas[i].receive(vc):
                    if isinstance(a, Broadcast) and isinstance(a.message, NewView):
                        new_views.append(a.message)
    nv = new_views[0]
    for i in (0, 2):
        sim.replicas[i].receive(nv)
    assert all(sim.replicas[i].view == 1 and sim.replicas[i].active for i in (0, 1, 2))
    lagging = sim.replicas[3]
    assert (lagging.view, lagging.active) == (0, True)
    # view-1 votes from f + 1 = 2 validators: the network moved on without it
    block = make_block(2, sim.replicas[1].head_hash, salt=5)
    own_vc: list[ViewChange] = []
    for i in (0, 2):
        sig = sim.keys[i].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, PREPARE, 1, 2, block.hash, i))
        out = lagging.receive(Vote(PREPARE, 1, 2, block.hash, i, sig))  # type: ignore[arg-type]
        own_vc += [a.message for a in out if isinstance(a, Broadcast) and isinstance(a.message, ViewChange)]
    assert len(own_vc) == 1 and lagging.view == 1 and not lagging.active
    answer = sim.replicas[0].receive(own_vc[0])  # a VIEW-CHANGE for the view it installed: answered
    assert [a.message for a in answer if isinstance(a, Broadcast)] == [nv]
    installed = lagging.receive(nv)
    assert any(isinstance(a, ViewInstalled) for a in installed) and (lagging.view, lagging.active) == (1, True)
    forged = dataclasses.replace(own_vc[0], signature=bytes(len(own_vc[0].signature)))
    with pytest.raises(InvalidMessage, match="bad view-change signature"):
        sim.replicas[2].receive(forged)
    answers = sum(1 for _ in range(MAX_ANSWERS + 5)
                  if any(isinstance(a, Broadcast) for a in sim.replicas[2].receive(own_vc[0])))
    assert answers == MAX_ANSWERS


def test_a_byte_identical_copy_is_verified_once_and_a_reforged_one_is_refused() -> None:
    sim = Sim(4, seed=3)
    block = make_block(1, ZERO_HASH)
    pre_prepare = next(a.message for a in sim.replicas[0].propose(block) if isinstance(a, Broadcast))
    backup = sim.replicas[1]
    sim.carry_out(1, backup.receive(pre_prepare))
    calls = count_verifications(backup)
    sig = sim.keys[2].sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, PREPARE, 0, 1, block.hash, 2))
    vote = Vote(PREPARE, 0, 1, block.hash, 2, sig)
    backup.receive(vote)
    for _ in range(100):  # replayed: byte-identical copies
        assert backup.receive(vote) == []
    assert calls == [2], "one verification for the vote and its 100 copies"
    forged = dataclasses.replace(vote, signature=bytes(len(vote.signature)))  # same vote, other bytes
    with pytest.raises(InvalidMessage, match="bad signature"):
        backup.receive(forged)
    assert calls == [2, 2], "anything but an exact copy is verified"
