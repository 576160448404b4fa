"""A deterministic, seeded simulation of n PBFT replicas over a faulty network, in one process.

Everything (keys, delivery order, faults) comes from one ``random.Random(seed)``: the same seed
replays a run exactly, and a failing run names its seed. Time is rounds: in each round primaries
propose, messages are delivered in a random order (dropped, duplicated, held back by a partition),
lagging replicas catch up from certified blocks (as the node does), replicas retransmit, and a
round in which no replica moved fires every live replica's view-change timer.

Faults (Castro & Liskov's model: up to f of n = 3f + 1 replicas crash or lie, the network drops,
delays, duplicates and reorders):

* network: message loss, duplication, reordering; partitions including isolating the primary and
  swizzle-clogging (cut the links of a random subset one by one, heal them in random order);
* crash and restart with loss of everything not persisted (a restarted replica keeps only its
  committed blocks and the records of ``PersistVote`` / ``PersistPrepared``);
* byzantine replicas: an equivocating primary (two blocks for one sequence number, one to each half),
  double voting, bad signatures, replayed old messages, and twins (two instances holding one key,
  Bano et al., "Twins: BFT Systems Made Robust", OPODIS 2021).

Checks: safety (no two honest replicas commit different blocks at one height), and liveness (once
the faults stop, every honest replica commits new blocks within a bounded number of rounds).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from consensus.exceptions import InvalidMessage
from consensus.messages import (
    COMMIT,
    PRE_PREPARE,
    Checkpoint,
    NewView,
    PrePrepare,
    StableCheckpoint,
    ViewChange,
    Vote,
    vote_signing_bytes,
)
from consensus.replica import (
    Action,
    Broadcast,
    CheckpointStable,
    CommitBlock,
    PersistPrepared,
    PersistVote,
    RecordEvidence,
    Replica,
    StateDivergence,
    SyncTo,
    ValidateBlock,
    ViewInstalled,
    make_verifier,
    verify_certificate,
)
from crypto.hashing import ZERO_HASH, Hash32, sha3
from crypto.keys import KeyPair
from crypto.signatures import ED25519, Context
from state.types import Block, BlockHeader, CommitCertificate

CHAIN = "sim"
Message = PrePrepare | Vote | ViewChange | NewView | Checkpoint
BEHAVIOURS = ("equivocate", "double-vote", "bad-signature", "replay")


class SafetyViolation(AssertionError):
    """Raised when two honest replicas committed different blocks at one height (a fork)."""


class LivenessFailure(AssertionError):
    """Raised when honest replicas make no progress within the bound after the faults stopped."""


def make_block(height: int, prev: bytes, view: int = 0, proposer: int = 0, salt: int = 0) -> Block:
    """A small block (no transactions) whose roots depend on ``salt``, so proposals differ."""
    root = sha3(salt.to_bytes(8, "big"))
    header = BlockHeader(CHAIN, height, view, Hash32(prev), 1000 + height + salt, proposer, root, root, root, 0)
    return Block(header, ())


@dataclass
class Sim:
    """n validators (plus twin instances), a message pool and the faults of the module docstring.

    Instances are numbered; ``index_of[i]`` is the validator index instance ``i`` holds. Messages
    are addressed to validator indexes and reach every instance holding that index.
    """

    n: int
    seed: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    twins: Sequence[int] = ()
    checkpoint_interval: int = 3
    byzantine: dict[int, set[str]] = field(default_factory=dict)
    keys: list[KeyPair] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    index_of: list[int] = field(default_factory=list)
    pool: list[tuple[int, Message]] = field(default_factory=list)
    committed: list[dict[int, tuple[Hash32, CommitCertificate]]] = field(default_factory=list)
    persisted: list[list[PersistVote]] = field(default_factory=list)
    invalid: set[Hash32] = field(default_factory=set)
    evidence: list[RecordEvidence] = field(default_factory=list)
    crashed: set[int] = field(default_factory=set)
    prepared: dict[int, object] = field(default_factory=dict)
    installed: list[tuple[int, int]] = field(default_factory=list)
    cut: set[tuple[int, int]] = field(default_factory=set)
    """Cut links, as (sending instance, receiving instance)."""
    sent: list[Message] = field(default_factory=list)
    proposals: dict[tuple[int, int, int], Block] = field(default_factory=dict)
    stable: dict[int, StableCheckpoint] = field(default_factory=dict)
    divergences: list[StateDivergence] = field(default_factory=list)
    rejected: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.keys = [KeyPair.from_private(ED25519.tag, self.rng.randbytes(32)) for _ in range(self.n)]
        self.verifier = make_verifier([(k.scheme_tag, k.public_key) for k in self.keys], Context.CONSENSUS)
        for index in [*range(self.n), *self.twins]:
            self.index_of.append(index)
            self.replicas.append(self._replica(index))
            self.committed.append({})
            self.persisted.append([])

    def _replica(self, index: int, **restore: object) -> Replica:
        key = self.keys[index]
        return Replica(chain_id=CHAIN, n=self.n, index=index,
                       signer=lambda m, k=key: k.sign(Context.CONSENSUS, m),  # type: ignore[misc]
                       verifier=self.verifier, genesis_hash=ZERO_HASH, checkpoint_interval=self.checkpoint_interval,
                       **{"height": 0, "head_hash": ZERO_HASH, **restore})  # type: ignore[arg-type]

    # --- roles --------------------------------------------------------------------------------------

    def faulty_indexes(self) -> set[int]:
        """Validator indexes that are byzantine (including every twinned index)."""
        return {self.index_of[i] for i in self.byzantine} | set(self.twins)

    def honest(self) -> list[int]:
        """Instances whose commits the safety check covers."""
        bad = self.faulty_indexes()
        return [i for i in range(len(self.replicas)) if self.index_of[i] not in bad]

    def live(self) -> list[int]:
        """Instances that are not crashed."""
        return [i for i in range(len(self.replicas)) if i not in self.crashed]

    # --- the network ----------------------------------------------------------------------------------

    def _send(self, src: int, message: Message, to: Sequence[int] | None = None) -> None:
        for inst in range(len(self.replicas)):
            dst = self.index_of[inst]
            if inst == src or (to is not None and dst not in to) or (src, inst) in self.cut:
                continue
            if self.rng.random() < self.drop:
                continue
            self.pool.append((inst, message))
            if self.rng.random() < self.duplicate:
                self.pool.append((inst, message))

    def _broadcast(self, i: int, message: Message) -> None:
        behaviour = self.byzantine.get(i, set())
        others = [j for j in range(self.n) if j != self.index_of[i]]
        half = set(self.rng.sample(others, len(others) // 2))
        if "equivocate" in behaviour and isinstance(message, PrePrepare):
            b = message.block
            salt = self.rng.randrange(1 << 30)
            alt = make_block(b.height, b.header.prev_hash, b.header.view, b.header.proposer, salt)
            sig = self.keys[self.index_of[i]].sign(Context.CONSENSUS, vote_signing_bytes(
                CHAIN, PRE_PREPARE, message.view, message.seq, alt.hash, message.validator))
            self._send(i, message, sorted(half))
            self._send(i, PrePrepare(message.view, message.seq, alt, message.validator, sig),
                       [j for j in others if j not in half])
            return
        if "double-vote" in behaviour and isinstance(message, Vote):
            other = sha3(self.rng.randbytes(8))
            sig = self.keys[self.index_of[i]].sign(Context.CONSENSUS, vote_signing_bytes(
                CHAIN, message.kind, message.view, message.seq, other, message.validator))
            self._send(i, message)  # its real vote to everyone, a conflicting one to half of them
            self._send(i, dataclasses.replace(message, block_hash=other, signature=sig), sorted(half))
            return
        if "bad-signature" in behaviour and self.rng.random() < 0.5:
            message = dataclasses.replace(message, signature=self.rng.randbytes(len(message.signature)))
        if "replay" in behaviour and self.sent and self.rng.random() < 0.5:
            self._send(i, self.rng.choice(self.sent))
        self.sent.append(message)
        if len(self.sent) > 500:
            del self.sent[:250]
        self._send(i, message)

    def carry_out(self, i: int, actions: list[Action]) -> None:
        """Carry out instance ``i``'s actions as the node would."""
        queue = list(actions)
        while queue:
            a = queue.pop(0)
            if i in self.crashed:
                return
            if isinstance(a, Broadcast):
                self._broadcast(i, a.message)
            elif isinstance(a, PersistPrepared):
                self.prepared[i] = a.certificate
            elif isinstance(a, SyncTo):
                self.catch_up()
            elif isinstance(a, ViewInstalled):
                self.installed.append((i, a.view))
            elif isinstance(a, PersistVote):
                self.persisted[i].append(a)
                if a.block is not None:
                    self.proposals[(i, a.view, a.seq)] = a.block
            elif isinstance(a, ValidateBlock):
                r = self.replicas[i]
                if a.block.hash in self.invalid:
                    queue[:0] = r.block_invalid(a.view, a.seq, a.block.hash)
                else:
                    queue[:0] = r.block_validated(a.view, a.seq, a.block.hash)
            elif isinstance(a, CommitBlock):
                if a.block.height in self.committed[i]:
                    raise SafetyViolation(f"instance {i} committed height {a.block.height} twice (seed {self.seed})")
                self.committed[i][a.block.height] = (a.block.hash, a.certificate)
            elif isinstance(a, RecordEvidence):
                self.evidence.append(a)
            elif isinstance(a, CheckpointStable):
                old = self.stable.get(i)
                if old is not None and a.checkpoint.seq <= old.seq:
                    raise SafetyViolation(f"instance {i}'s low watermark went back (seed {self.seed})")
                self.stable[i] = a.checkpoint
            elif isinstance(a, StateDivergence) and i in self.honest():
                self.divergences.append(a)

    def deliver(self, inst: int, message: Message) -> None:
        """Hand ``message`` to instance ``inst``; forged or malformed ones are counted and dropped."""
        if inst in self.crashed:
            return
        try:
            self.carry_out(inst, self.replicas[inst].receive(message))
        except InvalidMessage:
            self.rejected += 1

    def deliver_all(self, limit: int = 200_000) -> None:
        """Deliver the pool in a random order until it is empty (bounded)."""
        steps = 0
        while self.pool and steps < limit:
            steps += 1
            inst, msg = self.pool.pop(self.rng.randrange(len(self.pool)))
            self.deliver(inst, msg)

    def deliver_until_prepared(self) -> None:
        """Deliver pre-prepares and PREPAREs only; every COMMIT is lost."""
        while self.pool:
            inst, msg = self.pool.pop(0)
            if isinstance(msg, Vote) and msg.kind == COMMIT:
                continue
            self.deliver(inst, msg)

    def propose(self, block: Block | None = None) -> Block:
        """Have the primary of validator 0's view propose ``block`` (or a fresh one)."""
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
                if j in self.crashed or (j, i) in self.cut:
                    continue
                while r.height + 1 in peer:
                    h = r.height + 1
                    block_hash, cert = peer[h]
                    verify_certificate(cert, block_hash, h, CHAIN, self.n, self.verifier)
                    if h in self.committed[i] and self.committed[i][h][0] != block_hash:
                        raise SafetyViolation(f"instance {i} holds another block at {h} (seed {self.seed})")
                    self.committed[i][h] = (block_hash, cert)
                    self.carry_out(i, r.synced(h, block_hash, cert))

    # --- faults -------------------------------------------------------------------------------------

    def crash(self, i: int) -> None:
        """Stop instance ``i``; what it did not persist is lost."""
        self.crashed.add(i)

    def restart(self, i: int) -> None:
        """Bring instance ``i`` back with only what it persisted: blocks, votes, prepared certificate."""
        self.crashed.discard(i)
        height = max(self.committed[i], default=0)
        head, cert = self.committed[i][height] if height else (ZERO_HASH, None)
        votes = {(p.kind, p.view, p.seq): p.block_hash for p in self.persisted[i] if p.seq > height or p.kind >= 4}
        self.replicas[i] = self._replica(self.index_of[i], height=height, head_hash=head, votes=votes,
                                         head_certificate=cert, prepared=self.prepared.get(i),
                                         stable_checkpoint=self.stable.get(i))

    def isolate(self, index: int) -> None:
        """Cut every link to and from the instances holding validator ``index``."""
        mine = [i for i, x in enumerate(self.index_of) if x == index]
        others = [i for i, x in enumerate(self.index_of) if x != index]
        self.partition(mine, others)

    def partition(self, *groups: Sequence[int]) -> None:
        """Cut every link between different ``groups`` of instances."""
        for a in groups:
            for b in groups:
                if a is not b:
                    self.cut |= {(x, y) for x in a for y in b}

    def heal(self) -> None:
        """Restore every link."""
        self.cut.clear()

    # --- rounds -------------------------------------------------------------------------------------

    def step(self) -> bool:
        """One round (see the module docstring). Returns whether a height moved or a view was installed."""
        before = [r.height for r in self.replicas]
        installs = len(self.installed)
        for i in self.live():
            r = self.replicas[i]
            if r.is_primary and not r.proposal_pending():
                block = self.proposals.get((i, r.view, r.next_seq))  # what it proposed before a restart
                if block is None:
                    salt = self.rng.randrange(1 << 30)
                    block = make_block(r.next_seq, r.head_hash, r.view, self.index_of[i], salt)
                self.carry_out(i, r.propose(block))
        self.deliver_all()
        self.catch_up()
        for i in self.live():
            for m in self.replicas[i].retransmit():
                self.carry_out(i, [Broadcast(m)])
        self.deliver_all()
        self.catch_up()
        return len(self.installed) > installs or any(self.replicas[i].height > before[i] for i in self.live())

    def timeout(self) -> None:
        """Fire every live replica's view-change timer."""
        for i in self.live():
            self.carry_out(i, self.replicas[i].on_timeout())

    def run_until(self, height: int, rounds: int = 120) -> int:
        """Rounds until every live honest replica reached ``height``; raises ``LivenessFailure``."""
        for used in range(rounds):
            if all(self.replicas[i].height >= height for i in self.live() if i in self.honest()):
                return used
            if not self.step():
                self.timeout()
        raise LivenessFailure(
            f"no progress to height {height} in {rounds} rounds (seed {self.seed}); heights "
            f"{[r.height for r in self.replicas]}, views {[r.view for r in self.replicas]}")

    def check_safety(self) -> None:
        """Raise ``SafetyViolation`` if two honest replicas committed different blocks at one height,
        or an honest replica's stable checkpoint is not the block it committed there."""
        for i in self.honest():
            cp = self.stable.get(i)
            if cp is not None and self.committed[i].get(cp.seq, (cp.block_hash,))[0] != cp.block_hash:
                raise SafetyViolation(f"instance {i}: stable checkpoint {cp.seq} is not its block (seed {self.seed})")
        if self.divergences:
            raise SafetyViolation(f"state divergence {self.divergences[0]} (seed {self.seed})")
        heights: dict[int, set[bytes]] = {}
        for i in self.honest():
            for h, (bh, _) in self.committed[i].items():
                heights.setdefault(h, set()).add(bh)
        forks = {h: s for h, s in heights.items() if len(s) > 1}
        if forks:
            raise SafetyViolation(f"fork at heights {sorted(forks)} (seed {self.seed})")

    def check_safety_all(self) -> None:
        """Like ``check_safety`` over every instance, byzantine ones included (the twins self-check)."""
        heights: dict[int, set[bytes]] = {}
        for c in self.committed:
            for h, (bh, _) in c.items():
                heights.setdefault(h, set()).add(bh)
        forks = {h: s for h, s in heights.items() if len(s) > 1}
        if forks:
            raise SafetyViolation(f"fork at heights {sorted(forks)} (seed {self.seed})")


@dataclass(frozen=True)
class ScenarioResult:
    """What one scenario did: its seed, size, faults injected, final heights, view changes."""

    seed: int
    n: int
    faults: tuple[str, ...]
    height: int
    max_view: int
    rejected: int
    recovery_rounds: int


def run_scenario(seed: int, n: int = 4, fault_rounds: int = 12) -> ScenarioResult:
    """One seeded scenario: byzantine replicas and twins chosen within f, ``fault_rounds`` rounds of
    random faults, then healing; checks safety every round and liveness after healing.

    Raises ``SafetyViolation`` or ``LivenessFailure`` naming the seed.
    """
    rng = random.Random(seed)
    f = (n - 1) // 3
    kinds = rng.sample(["byzantine", "twin", "crash"], k=rng.randint(0, 2))
    budget = f
    byzantine: dict[int, set[str]] = {}
    twins: list[int] = []
    faults: list[str] = []
    if "byzantine" in kinds and budget:
        who = rng.randrange(n)
        byzantine[who] = set(rng.sample(BEHAVIOURS, k=rng.randint(1, len(BEHAVIOURS))))
        budget -= 1
        faults.append(f"byzantine {who}: {','.join(sorted(byzantine[who]))}")
    if "twin" in kinds and budget:
        who = rng.choice([i for i in range(n) if i not in byzantine])
        twins.append(who)
        budget -= 1
        faults.append(f"twins of {who}")
    sim = Sim(n, seed=seed, twins=twins, byzantine=byzantine)
    honest_indexes = [i for i in range(n) if i not in sim.faulty_indexes()]
    for _ in range(fault_rounds):
        event = rng.choice(["none", "drop", "duplicate", "isolate-primary", "swizzle", "heal", "crash",
                            "restart", "timeout"])
        applied = True
        if event == "drop":
            sim.drop = rng.choice([0.1, 0.3, 0.5])
        elif event == "duplicate":
            sim.duplicate = rng.choice([0.1, 0.5])
        elif event == "isolate-primary":
            sim.isolate(sim.replicas[honest_indexes[0]].primary())
        elif event == "swizzle":  # cut one more random validator's links each time it is drawn
            sim.isolate(rng.randrange(n))
        elif event == "heal" and sim.cut:  # heal half the cut links, in random order
            links = sorted(sim.cut)
            rng.shuffle(links)
            for link in links[: max(1, len(links) // 2)]:
                sim.cut.discard(link)
        elif event == "crash" and "crash" in kinds and len(sim.crashed) < budget:
            victims = [i for i in honest_indexes if i not in sim.crashed]
            sim.crash(rng.choice(victims))
        elif event == "restart" and sim.crashed:
            sim.restart(rng.choice(sorted(sim.crashed)))
        elif event == "timeout":
            inst = rng.choice(sim.live())
            sim.carry_out(inst, sim.replicas[inst].on_timeout())
        else:
            applied = False
        if applied:
            faults.append(event)
        if not sim.step():
            sim.timeout()
        sim.drop = sim.duplicate = 0.0 if rng.random() < 0.5 else sim.drop
        sim.check_safety()
    sim.heal()
    sim.drop = sim.duplicate = 0.0
    for i in sorted(sim.crashed):
        sim.restart(i)
    target = max(sim.replicas[i].height for i in sim.honest()) + 2
    rounds = sim.run_until(target)
    sim.check_safety()
    return ScenarioResult(seed, n, tuple(faults), min(sim.replicas[i].height for i in sim.honest()),
                          max(r.view for r in sim.replicas), sim.rejected, rounds)
