"""A deterministic, seeded simulation of n PBFT replicas over a faulty network, in one process.

Everything (keys, delivery order, the random part of faults) comes from one ``random.Random(seed)``
and the fault ``Schedule``: the same schedule replays a run exactly, and a failing run names its
seed and schedule. Time is rounds of ``tick_ms`` virtual milliseconds: in each round held-back
messages due are released, primaries propose, messages are delivered through the node's wire codec
(``node.messages.pack_consensus`` / ``unpack``) in an order the ``reorder`` rate shuffles (dropped,
duplicated, held back for a few rounds, or stopped by a partition), lagging replicas catch up from
certified blocks (as the node does), replicas retransmit (each once no block committed for
``retransmit_ms``, with the node's backoff), and every replica's view-change timer is
checked against the virtual clock. The timer follows ``node.node.Node._check_view_timer``: it
expires ``view_timeout_ms * 2 ** min(expiries, 5)`` after the last progress, an expiry doubles the
next wait, an installed view restarts it and a commit resets the backoff. A round in which nothing
moved and no message is lost or held lets the clock jump to the next deadline (like Trio's
``MockClock(autojump_threshold=0)``): the rounds skipped would only have retransmitted in vain.

Faults (Castro & Liskov's model: up to f of n = 3f + 1 replicas crash or lie, the network drops,
delays, duplicates and reorders):

* network: message loss, delay (held for 1..``max_delay`` rounds), duplication, reordering;
  partitions including isolating the primary, any split, and swizzle-clogging (clog validators one
  by one, unclog them in another order); cut links drop, or hold messages while ``cut_holds``;
* crash and restart with loss of everything not persisted (a restarted replica keeps only its
  committed blocks and the records of ``PersistVote`` / ``PersistPrepared``);
* byzantine replicas: an equivocating primary (two blocks for one sequence number, one to each half),
  double voting (conflicting PREPAREs, COMMITs and CHECKPOINTs), bad signatures, replayed old
  messages, garbage bytes (flipped, truncated or random frames, refused by the decoder), a primary
  proposing blocks with a wrong state root, and twins (two instances holding one key, Bano et al.,
  "Twins: BFT Systems Made Robust", OPODIS 2021).

Replicas hold a tiny deterministic state: a block's payload digest is its header's ``tx_root`` and
the state root after it is ``next_state_root(root before, payload)``. The proposer puts the root it
computed in the header; a backup re-computes it on ``ValidateBlock`` (and a catching-up replica on
every fetched block) and refuses a block whose header root is not its own.

Checks: safety (no two honest replicas commit different blocks at one height; the state roots each
honest replica computed itself agree at every committed height and equal the committed headers'),
no double signing (an honest instance never signs two different PRE-PREPAREs, PREPAREs, COMMITs,
VIEW-CHANGEs, NEW-VIEWs or CHECKPOINTs for one view and sequence number, even across a restart:
§4.2's "a replica never sends conflicting messages" and the node's persisted vote records), every
equivocation evidence recorded by an honest replica names a faulty validator, and liveness (once
the faults stop, every honest replica commits new blocks within a bounded number of
rounds). ``run_scenario`` runs one explicit ``Schedule`` (Hypothesis draws them in the tests);
``random_schedule`` makes one from a seed (the ``qenex-devnet simulate`` soak).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from consensus.exceptions import InvalidMessage
from consensus.messages import (
    CHECKPOINT,
    COMMIT,
    KIND_NAMES,
    NEW_VIEW,
    PRE_PREPARE,
    VIEW_CHANGE,
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
from node.messages import pack_consensus, unpack
from state.codec import DEFAULT_MAX_SIZE, encode
from state.exceptions import DecodeError
from state.types import Block, BlockHeader, CommitCertificate

CHAIN = "sim"
Message = PrePrepare | Vote | ViewChange | NewView | Checkpoint
BEHAVIOURS: Final = ("equivocate", "double-vote", "bad-signature", "replay", "garbage", "wrong-root")
FAULT_KINDS: Final = ("none", "drop", "delay", "duplicate", "reorder", "calm", "isolate-primary", "split",
                      "swizzle", "unclog", "heal", "hold-cut", "crash", "restart", "timeout")
"""The kinds of ``Fault``; see its docstring for what each does with its argument."""
MAX_BACKOFF_EXPONENT: Final = 5
"""The view-change timeout doubles per expiry up to 2 ** 5 times the base (as the node does)."""
LIVENESS_ROUNDS: Final = 600
"""Rounds (of ``tick_ms``) within which every honest replica must move on once the faults stopped:
enough for the longest backed-off timeout (32 x 1 s = 128 rounds) to expire a few times."""
RETRANSMIT_MS: Final = 1000
"""Default ``Sim.retransmit_ms``: ``node.config.ConsensusSection.retransmit_ms``'s default."""
MAX_RETRANSMIT_EXPONENT: Final = 4
"""The wait between retransmissions doubles per retransmission without a commit, up to 2 ** 4 times
(``node.node.Node._ticker_loop``)."""
MAX_HELD: Final = 20_000
"""Most messages held back at once; beyond it a held message is lost."""


class SafetyViolation(AssertionError):
    """Raised when two honest replicas committed different blocks or computed different state roots
    at one height (a fork), or an honest replica signed two conflicting messages or accused an
    honest validator of equivocation."""


class LivenessFailure(AssertionError):
    """Raised when honest replicas make no progress within the bound after the faults stopped."""


GENESIS_ROOT: Final = sha3(b"QENEX/sim/genesis-state")
"""The simulated state root at height 0."""


def next_state_root(parent_root: bytes, payload: bytes) -> Hash32:
    """The simulated state transition: the 32-byte state root after a block with payload digest
    ``payload`` (its header's ``tx_root``) executed on state ``parent_root``: SHA3-256(parent || payload)."""
    return sha3(parent_root + payload)


def make_block(height: int, prev: bytes, view: int = 0, proposer: int = 0, salt: int = 0,
               parent_root: bytes = GENESIS_ROOT, state_root: bytes | None = None) -> Block:
    """A small block (no transactions) with payload digest ``tx_root`` = SHA3-256(``salt``), so
    proposals differ, and the state root of executing it on ``parent_root`` (the root at
    ``height - 1``), or ``state_root`` if given (a wrong one, for the tests of refused blocks)."""
    payload = sha3(salt.to_bytes(8, "big"))
    root = next_state_root(parent_root, payload) if state_root is None else Hash32(state_root)
    header = BlockHeader(CHAIN, height, view, Hash32(prev), 1000 + height + salt, proposer, payload, root, payload, 0)
    return Block(header, ())


@dataclass
class Sim:
    """n validators (plus twin instances), a message pool, a virtual clock and the faults of the
    module docstring.

    Instances are numbered; ``index_of[i]`` is the validator index instance ``i`` holds. Messages
    are addressed to validator indexes and reach every instance holding that index. Rates (``drop``,
    ``delay``, ``duplicate``, ``reorder``) are probabilities per message; ``max_delay`` is in rounds,
    ``tick_ms`` and ``view_timeout_ms`` in virtual milliseconds.
    """

    n: int
    seed: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 1.0
    """Chance that the next message delivered is any pending one rather than the oldest."""
    max_delay: int = 3
    twins: Sequence[int] = ()
    checkpoint_interval: int = 3
    tick_ms: int = 250
    view_timeout_ms: int = 1000
    retransmit_ms: int = RETRANSMIT_MS
    """A live replica re-sends its own undecided messages once no block committed for this long,
    then after twice that, four times... (up to 16x; reset by a commit), as the node's ticker does."""
    byzantine: dict[int, set[str]] = field(default_factory=dict)
    keys: list[KeyPair] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    index_of: list[int] = field(default_factory=list)
    pool: list[tuple[int, Message | bytes]] = field(default_factory=list)
    """Messages in flight as (receiving instance, message or raw frame bytes)."""
    held: list[tuple[int, int, int, Message | bytes]] = field(default_factory=list)
    """Delayed messages as (release round, sending instance, receiving instance, message)."""
    committed: list[dict[int, tuple[Hash32, CommitCertificate]]] = field(default_factory=list)
    persisted: list[list[PersistVote]] = field(default_factory=list)
    invalid: set[Hash32] = field(default_factory=set)
    evidence: list[RecordEvidence] = field(default_factory=list)
    crashed: set[int] = field(default_factory=set)
    prepared: dict[int, object] = field(default_factory=dict)
    installed: list[tuple[int, int]] = field(default_factory=list)
    cut: set[tuple[int, int]] = field(default_factory=set)
    """Cut links, as (sending instance, receiving instance)."""
    clogged: set[int] = field(default_factory=set)
    """Validator indexes whose every link is clogged (swizzle-clogging)."""
    cut_holds: bool = False
    """Whether a cut or clogged link holds messages back (until it heals) instead of dropping them."""
    sent: list[Message] = field(default_factory=list)
    proposals: dict[tuple[int, int, int], Block] = field(default_factory=dict)
    stable: dict[int, StableCheckpoint] = field(default_factory=dict)
    divergences: list[StateDivergence] = field(default_factory=list)
    rejected: int = 0
    """Forged or malformed messages refused (bad signature, undecodable bytes...)."""
    decode_errors: int = 0
    """Frames the wire decoder refused (part of ``rejected``)."""
    garbage: int = 0
    """Corrupted frames byzantine replicas sent."""
    replays: int = 0
    """Old messages (of any sender) byzantine replicas sent again (the ``replay`` behaviour)."""
    delayed: int = 0
    """Messages held back (by ``delay`` or a holding cut link)."""
    round: int = 0
    """Rounds so far; the virtual clock reads ``round * tick_ms`` ms."""
    expiries: list[int] = field(default_factory=list)
    """Per instance: view-change timer expiries since its last commit (the backoff exponent)."""
    timer_start: list[int] = field(default_factory=list)
    """Per instance: virtual ms of its last progress (the timer runs from there)."""
    last_commit_ms: list[int] = field(default_factory=list)
    """Per instance: virtual ms of its last commit (or start); retransmission waits from there."""
    last_retransmit_ms: list[int] = field(default_factory=list)
    """Per instance: virtual ms of its last retransmission (or start)."""
    retransmits: list[int] = field(default_factory=list)
    """Per instance: retransmissions since its last commit (the retransmission backoff exponent)."""
    timeouts_fired: int = 0
    max_expiries: int = 0
    blocks: dict[Hash32, Block] = field(default_factory=dict)
    """Every block proposed, validated or committed, by hash: the store catch-up fetches from."""
    state_roots: list[dict[int, Hash32]] = field(default_factory=list)
    """Per instance: the state root it computed itself after each height it committed."""
    signed: dict[tuple[int, int, int, int], object] = field(default_factory=dict)
    """What honest validators signed, keyed (validator, kind, view, seq) (see ``_check_signed_once``)."""
    wrong_roots: int = 0
    """Proposals a replica refused because their header's state root is not the one it computed."""
    wrong_root_blocks: set[Hash32] = field(default_factory=set)
    """Hashes of the blocks with a wrong state root that byzantine primaries proposed."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._decoded: dict[bytes, object] = {}
        self.keys = [KeyPair.from_private(ED25519.tag, self.rng.randbytes(32)) for _ in range(self.n)]
        self.verifier = make_verifier([(k.scheme_tag, k.public_key) for k in self.keys], Context.CONSENSUS)
        for index in [*range(self.n), *self.twins]:
            self.index_of.append(index)
            self.replicas.append(self._replica(index))
            self.committed.append({})
            self.persisted.append([])
            self.state_roots.append({})
            self.expiries.append(0)
            self.timer_start.append(0)
            self.last_commit_ms.append(0)
            self.last_retransmit_ms.append(0)
            self.retransmits.append(0)

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

    def linked(self, src: int, dst: int) -> bool:
        """Whether the link from instance ``src`` to instance ``dst`` is up (not cut, neither end clogged)."""
        return ((src, dst) not in self.cut and self.index_of[src] not in self.clogged
                and self.index_of[dst] not in self.clogged)

    def _hold(self, src: int, dst: int, message: Message | bytes) -> None:
        if len(self.held) < MAX_HELD:
            self.delayed += 1
            self.held.append((self.round + self.rng.randint(1, self.max_delay), src, dst, message))

    def _send(self, src: int, message: Message | bytes, to: Sequence[int] | None = None) -> None:
        for inst in range(len(self.replicas)):
            dst = self.index_of[inst]
            if inst == src or (to is not None and dst not in to):
                continue
            if not self.linked(src, inst):
                if self.cut_holds:
                    self._hold(src, inst, message)
                continue
            if self.drop and self.rng.random() < self.drop:
                continue
            copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                if self.delay and self.rng.random() < self.delay:
                    self._hold(src, inst, message)
                else:
                    self.pool.append((inst, message))

    def release_held(self) -> None:
        """Move the held messages due this round into the pool; over a link still down they wait
        again (``cut_holds``) or are lost."""
        due = [h for h in self.held if h[0] <= self.round]
        if not due:
            return
        self.held = [h for h in self.held if h[0] > self.round]
        for _, src, dst, message in due:
            if self.linked(src, dst):
                self.pool.append((dst, message))
            elif self.cut_holds:
                self._hold(src, dst, message)

    def _corrupt(self, frame: bytes) -> bytes:
        """``frame`` with one byte flipped, cut short, or replaced by random bytes (one of three)."""
        how = self.rng.randrange(3)
        if how == 0:
            pos = self.rng.randrange(len(frame))
            return frame[:pos] + bytes([frame[pos] ^ self.rng.randrange(1, 256)]) + frame[pos + 1:]
        if how == 1:
            return frame[: self.rng.randrange(len(frame))]
        return self.rng.randbytes(self.rng.randrange(1, 64))

    def _check_signed_once(self, i: int, message: Message) -> None:
        """Remember what honest instance ``i`` signs in ``message``, keyed (validator, kind, view, seq)
        (a VIEW-CHANGE by its new view, a NEW-VIEW by its view, a CHECKPOINT by its sequence number,
        a NEW-VIEW's re-proposal as a PRE-PREPARE), and raise ``SafetyViolation`` naming it if the
        validator signed something else under that key before: an honest replica never sends
        conflicting messages (Castro & Liskov §4.2), not even after a restart (its persisted vote
        records). Content compared: the block hash, or every signed field of a view change or new view."""
        v = self.index_of[i]
        entries: list[tuple[tuple[int, int, int, int], object]]
        if isinstance(message, PrePrepare):
            entries = [((v, PRE_PREPARE, message.view, message.seq), message.block_hash)]
        elif isinstance(message, Vote):
            entries = [((v, message.kind, message.view, message.seq), message.block_hash)]
        elif isinstance(message, Checkpoint):
            entries = [((v, CHECKPOINT, 0, message.seq), message.block_hash)]
        elif isinstance(message, ViewChange):
            entries = [((v, VIEW_CHANGE, message.new_view, 0), message.unsigned())]
        else:
            entries = [((v, NEW_VIEW, message.view, 0), message.unsigned())]
            o = message.pre_prepare
            if o is not None:
                entries.append(((v, PRE_PREPARE, o.view, o.seq), o.block_hash))
        for key, content in entries:
            first = self.signed.setdefault(key, content)
            if first != content:
                _, kind, view, seq = key
                raise SafetyViolation(
                    f"honest validator {v} (instance {i}) signed two different {KIND_NAMES[kind]} messages "
                    f"for view {view}, sequence number {seq} (seed {self.seed})")

    def _broadcast(self, i: int, message: Message) -> None:
        if isinstance(message, PrePrepare):
            self.blocks.setdefault(message.block_hash, message.block)
        elif isinstance(message, NewView) and message.pre_prepare is not None:
            self.blocks.setdefault(message.pre_prepare.block_hash, message.pre_prepare.block)
        behaviour = self.byzantine.get(i, set())
        if self.index_of[i] not in self.faulty_indexes():
            self._check_signed_once(i, message)
        if not behaviour:
            self._send(i, message)
            return
        others = [j for j in range(self.n) if j != self.index_of[i]]
        half = set(self.rng.sample(others, len(others) // 2))
        key = self.keys[self.index_of[i]]
        if "garbage" in behaviour and self.rng.random() < 0.5:
            self.garbage += 1
            self._send(i, self._corrupt(pack_consensus(message)))
        if "wrong-root" in behaviour and isinstance(message, PrePrepare):
            b = message.block
            bad = Block(dataclasses.replace(b.header, state_root=sha3(self.rng.randbytes(8))), b.transactions)
            self.blocks[bad.hash] = bad
            self.wrong_root_blocks.add(bad.hash)
            sig = key.sign(Context.CONSENSUS, vote_signing_bytes(
                CHAIN, PRE_PREPARE, message.view, message.seq, bad.hash, message.validator))
            self._send(i, PrePrepare(message.view, message.seq, bad, message.validator, sig))
            return
        if "equivocate" in behaviour and isinstance(message, PrePrepare):
            b = message.block
            salt = self.rng.randrange(1 << 30)
            alt = make_block(b.height, b.header.prev_hash, b.header.view, b.header.proposer, salt,
                             self.root_at(i, b.height - 1, b.header.prev_hash))
            self.blocks[alt.hash] = alt
            sig = key.sign(Context.CONSENSUS, vote_signing_bytes(
                CHAIN, PRE_PREPARE, message.view, message.seq, alt.hash, message.validator))
            self._send(i, message, sorted(half))
            self._send(i, PrePrepare(message.view, message.seq, alt, message.validator, sig),
                       [j for j in others if j not in half])
            return
        if "double-vote" in behaviour and isinstance(message, Vote | Checkpoint):
            other = sha3(self.rng.randbytes(8))
            kind = CHECKPOINT if isinstance(message, Checkpoint) else message.kind
            view = 0 if isinstance(message, Checkpoint) else message.view
            sig = key.sign(Context.CONSENSUS, vote_signing_bytes(CHAIN, kind, view, message.seq, other,
                                                                 message.validator))
            self._send(i, message)  # its real vote to everyone, a conflicting one to half of them
            self._send(i, dataclasses.replace(message, block_hash=other, signature=sig), sorted(half))
            return
        if "bad-signature" in behaviour and self.rng.random() < 0.5:
            message = dataclasses.replace(message, signature=self.rng.randbytes(len(message.signature)))
        if "replay" in behaviour and self.sent and self.rng.random() < 0.5:
            self.replays += 1
            self._send(i, self.rng.choice(self.sent))
        self.sent.append(message)
        if len(self.sent) > 500:
            del self.sent[:250]
        self._send(i, message)

    def _progress(self, i: int, commit: bool) -> None:
        """Instance ``i`` moved: restart its view-change timer; a commit also resets the backoff."""
        self.timer_start[i] = self.now_ms
        if commit:
            self.expiries[i] = 0
            self.last_commit_ms[i] = self.now_ms
            self.retransmits[i] = 0

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
                self._progress(i, commit=False)
            elif isinstance(a, PersistVote):
                self.persisted[i].append(a)
                if a.block is not None:
                    self.proposals[(i, a.view, a.seq)] = a.block
            elif isinstance(a, ValidateBlock):
                r = self.replicas[i]
                self.blocks.setdefault(a.block.hash, a.block)
                if a.block.hash in self.invalid or not self._executes(i, a.block):
                    queue[:0] = r.block_invalid(a.view, a.seq, a.block.hash)
                else:
                    queue[:0] = r.block_validated(a.view, a.seq, a.block.hash)
            elif isinstance(a, CommitBlock):
                if a.block.height in self.committed[i]:
                    raise SafetyViolation(f"instance {i} committed height {a.block.height} twice (seed {self.seed})")
                self.blocks.setdefault(a.block.hash, a.block)
                self.state_roots[i][a.block.height] = self.state_root_after(i, a.block)
                self.committed[i][a.block.height] = (a.block.hash, a.certificate)
                self._progress(i, commit=True)
            elif isinstance(a, RecordEvidence):
                self.evidence.append(a)
                faulty = self.faulty_indexes()
                if self.index_of[i] not in faulty and a.evidence.validator not in faulty:
                    ev = a.evidence
                    raise SafetyViolation(
                        f"honest instance {i} recorded {KIND_NAMES.get(ev.kind, ev.kind)} equivocation evidence "
                        f"against honest validator {ev.validator} (view {ev.view}, sequence number {ev.seq}; "
                        f"seed {self.seed})")
            elif isinstance(a, CheckpointStable):
                old = self.stable.get(i)
                if old is not None and a.checkpoint.seq <= old.seq:
                    raise SafetyViolation(f"instance {i}'s low watermark went back (seed {self.seed})")
                self.stable[i] = a.checkpoint
            elif isinstance(a, StateDivergence) and i in self.honest():
                self.divergences.append(a)

    def deliver(self, inst: int, message: Message | bytes) -> None:
        """Hand ``message`` to instance ``inst`` through the wire codec (``pack_consensus`` then
        ``unpack``, as between two nodes); undecodable, forged or malformed ones are counted in
        ``rejected`` and dropped. A decoder error other than ``DecodeError`` propagates (a bug).
        Each distinct frame is decoded once (copies reuse the immutable result, as the node skips a
        pre-prepare's bytes seen before), so the run time goes to the protocol, not the codec."""
        if inst in self.crashed:
            return
        frame = message if isinstance(message, bytes) else pack_consensus(message)
        decoded = self._decoded.get(frame)
        if decoded is None:
            try:
                _, decoded = unpack(frame, DEFAULT_MAX_SIZE)
            except DecodeError:
                self.rejected += 1
                self.decode_errors += 1
                return
            if len(self._decoded) >= 4096:
                self._decoded.clear()
            self._decoded[frame] = decoded
        if not isinstance(decoded, Message):
            self.rejected += 1  # a corrupted frame that decodes to a non-consensus message
            return
        try:
            self.carry_out(inst, self.replicas[inst].receive(decoded))
        except InvalidMessage:
            self.rejected += 1

    def _next_index(self) -> int:
        if self.reorder >= 1.0 or (self.reorder > 0.0 and self.rng.random() < self.reorder):
            return self.rng.randrange(len(self.pool))
        return 0

    def deliver_all(self, limit: int = 200_000) -> None:
        """Deliver the pool (in the order ``reorder`` shuffles) until it is empty (bounded)."""
        steps = 0
        while self.pool and steps < limit:
            steps += 1
            inst, msg = self.pool.pop(self._next_index())
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
        block = block or make_block(r.next_seq, r.head_hash, r.view, p,
                                    parent_root=self.root_at(p, r.height, r.head_hash))
        self.carry_out(p, r.propose(block))
        return block

    # --- the simulated state ----------------------------------------------------------------------

    def root_at(self, i: int, height: int, block_hash: bytes) -> Hash32:
        """The state root instance ``i`` has after block ``block_hash`` at ``height``: the one it
        computed when it committed that block, else (a head it only holds by hash, e.g. a test's
        manual ``synced``) re-executed from the last root it knows through the block store.
        Raises ``SafetyViolation`` if a block on the way is in no store (nobody could execute it)."""
        pending: list[Block] = []
        root = GENESIS_ROOT
        while height > 0:
            mine = self.committed[i].get(height)
            if mine is not None and mine[0] == block_hash and height in self.state_roots[i]:
                root = self.state_roots[i][height]
                break
            block = self.blocks.get(Hash32(block_hash))
            if block is None:
                raise SafetyViolation(f"instance {i}: block {height} is unknown, cannot execute (seed {self.seed})")
            pending.append(block)
            height, block_hash = height - 1, block.header.prev_hash
        for block in reversed(pending):
            root = next_state_root(root, block.header.tx_root)
        return root

    def state_root_after(self, i: int, block: Block) -> Hash32:
        """Execute ``block`` on instance ``i``'s own state at the block's parent; returns the root."""
        return next_state_root(self.root_at(i, block.height - 1, block.header.prev_hash), block.header.tx_root)

    def _executes(self, i: int, block: Block) -> bool:
        """Whether ``block``'s header state root is the one instance ``i`` computes (the node's
        ``ValidateBlock``: execute, compare the header's roots); counts refusals in ``wrong_roots``."""
        if self.state_root_after(i, block) == block.header.state_root:
            return True
        self.wrong_roots += 1
        return False

    def catch_up(self) -> None:
        """What the node's catch-up does: a lagging replica fetches certified blocks from a peer."""
        for i, r in enumerate(self.replicas):
            if i in self.crashed:
                continue
            for j, peer in enumerate(self.committed):
                if j in self.crashed or not self.linked(j, i):
                    continue
                while r.height + 1 in peer:
                    h = r.height + 1
                    block_hash, cert = peer[h]
                    verify_certificate(cert, block_hash, h, CHAIN, self.n, self.verifier)
                    if h in self.committed[i] and self.committed[i][h][0] != block_hash:
                        raise SafetyViolation(f"instance {i} holds another block at {h} (seed {self.seed})")
                    block = self.blocks[block_hash]
                    root = self.state_root_after(i, block)  # re-executed, as the node's catch-up does
                    if root != block.header.state_root:
                        raise SafetyViolation(f"certified block {h} does not re-execute to its header's state "
                                              f"root at instance {i} (seed {self.seed})")
                    self.state_roots[i][h] = root
                    self.committed[i][h] = (block_hash, cert)
                    self._progress(i, commit=True)
                    self.carry_out(i, r.synced(h, block_hash, cert))

    # --- faults -------------------------------------------------------------------------------------

    def crash(self, i: int) -> None:
        """Stop instance ``i``; what it did not persist is lost."""
        self.crashed.add(i)

    def restart(self, i: int, *, lose_votes: bool = False) -> None:
        """Bring instance ``i`` back with only what it persisted: blocks (and their state), votes,
        prepared certificate. ``lose_votes`` is a test-only broken recovery that also loses the vote
        records, the prepared certificate and its own proposals (the double-sign self-check)."""
        self.crashed.discard(i)
        if lose_votes:
            self.persisted[i].clear()
            self.prepared.pop(i, None)
            for key in [k for k in self.proposals if k[0] == i]:
                del self.proposals[key]
        height = max(self.committed[i], default=0)
        head, cert = self.committed[i][height] if height else (ZERO_HASH, None)
        votes = {(p.kind, p.view, p.seq): p.block_hash for p in self.persisted[i] if p.seq > height or p.kind >= 4}
        own_vc = next((p.view_change for p in reversed(self.persisted[i]) if p.view_change is not None), None)
        self.replicas[i] = self._replica(self.index_of[i], height=height, head_hash=head, votes=votes,
                                         head_certificate=cert, prepared=self.prepared.get(i),
                                         stable_checkpoint=self.stable.get(i), own_view_change=own_vc)
        self.timer_start[i] = self.now_ms  # a new process: a fresh timer
        self.expiries[i] = 0
        self.last_commit_ms[i] = self.last_retransmit_ms[i] = self.now_ms
        self.retransmits[i] = 0

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
        """Restore every link (cut or clogged)."""
        self.cut.clear()
        self.clogged.clear()

    # --- the virtual clock --------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The virtual clock, in ms."""
        return self.round * self.tick_ms

    def deadline(self, i: int) -> int:
        """Virtual ms at which instance ``i``'s view-change timer expires (node: ``_check_view_timer``)."""
        return self.timer_start[i] + (self.view_timeout_ms << min(self.expiries[i], MAX_BACKOFF_EXPONENT))

    def expire(self, i: int) -> None:
        """Instance ``i``'s timer expired: count it, double its next wait, start a view change (§4.4)."""
        self.expiries[i] += 1
        self.max_expiries = max(self.max_expiries, self.expiries[i])
        self.timeouts_fired += 1
        self.timer_start[i] = self.now_ms
        self.carry_out(i, self.replicas[i].on_timeout())

    def fire_timers(self) -> None:
        """Expire every live replica whose deadline has come, in instance order."""
        for i in self.live():
            if self.deadline(i) <= self.now_ms:
                self.expire(i)

    def jump(self) -> None:
        """Move the clock to the next event (a timer deadline or a held message's release) and fire
        the timers due; a quiet network makes the skipped rounds pointless (see the module docstring)."""
        ticks = [-(-min(self.deadline(i), self.retransmit_due(i)) // self.tick_ms) for i in self.live()]
        ticks += [h[0] for h in self.held]
        self.round = max(self.round, min(ticks, default=self.round + 1))
        self.fire_timers()

    def retransmit_due(self, i: int) -> int:
        """Virtual ms from which instance ``i`` retransmits (``node.node.Node._ticker_loop``): once
        ``retransmit_ms`` passed without a commit (or at once while it changes view) and
        ``retransmit_ms * 2 ** min(retransmissions since that commit, 4)`` since its last retransmission."""
        wait = self.retransmit_ms << min(self.retransmits[i], MAX_RETRANSMIT_EXPONENT)
        if not self.replicas[i].active:  # changing view: commits learnt by catch-up do not hold it back
            return self.last_retransmit_ms[i] + wait
        return max(self.last_commit_ms[i] + self.retransmit_ms, self.last_retransmit_ms[i] + wait)

    def retransmit(self) -> None:
        """Every live instance whose ``retransmit_due`` has come re-sends its own undecided messages
        (``Replica.retransmit``)."""
        for i in self.live():
            if self.retransmit_due(i) <= self.now_ms:
                self.last_retransmit_ms[i] = self.now_ms
                self.retransmits[i] += 1
                for m in self.replicas[i].retransmit():
                    self.carry_out(i, [Broadcast(m)])

    def timeout(self) -> None:
        """Fire every live replica's view-change timer now (a spurious expiry everywhere)."""
        for i in self.live():
            self.expire(i)

    # --- rounds -------------------------------------------------------------------------------------

    def step(self) -> bool:
        """One round (see the module docstring). Returns whether a height moved or a view was installed."""
        self.round += 1
        self.release_held()
        before = [r.height for r in self.replicas]
        installs = len(self.installed)
        for i in self.live():
            r = self.replicas[i]
            if r.is_primary and not r.proposal_pending():
                block = self.proposals.get((i, r.view, r.next_seq))  # what it proposed before a restart
                if block is None:
                    salt = self.rng.randrange(1 << 30)
                    block = make_block(r.next_seq, r.head_hash, r.view, self.index_of[i], salt,
                                       self.root_at(i, r.height, r.head_hash))
                self.carry_out(i, r.propose(block))
        self.deliver_all()
        self.catch_up()
        self.retransmit()
        self.deliver_all()
        self.catch_up()
        self.fire_timers()
        return len(self.installed) > installs or any(self.replicas[i].height > before[i] for i in self.live())

    def tick(self) -> bool:
        """One round, then, if nothing moved and no message can be lost, a jump to the next event."""
        progressed = self.step()
        if not progressed and not self.drop:
            self.jump()
        return progressed

    def run_until(self, height: int, rounds: int = 120) -> int:
        """Rounds of virtual time until every live honest replica reached ``height``; raises
        ``LivenessFailure`` after ``rounds``."""
        start = self.round
        while self.round - start < rounds:
            if all(self.replicas[i].height >= height for i in self.live() if i in self.honest()):
                return self.round - start
            self.tick()
        raise LivenessFailure(
            f"no progress to height {height} in {rounds} rounds (seed {self.seed}); heights "
            f"{[r.height for r in self.replicas]}, views {[r.view for r in self.replicas]}, "
            f"timer expiries {self.expiries}")

    def signers_above(self, height: int) -> set[int]:
        """Validator indexes among the signers of a commit certificate that an honest instance holds
        for a block above ``height``."""
        return {s.validator for i in self.honest() for h, (_, cert) in self.committed[i].items() if h > height
                for s in cert.signatures}

    def waiting_one_view_ahead(self) -> set[int]:
        """Validator indexes of live honest instances changing (not active) to exactly one view above
        the highest view the other live honest instances installed. That is where Castro & Liskov's
        §4.4 leave a replica whose timer expired alone: it may not go back to the view it left (its
        VIEW-CHANGE could then miss what it prepares there) and joins the others at their next view
        change. Two or more views ahead it ran ahead alone (the bug fixed in ``Replica.on_timeout``)."""
        live = [i for i in self.live() if i in self.honest()]
        waiting = set()
        for i in live:
            r = self.replicas[i]
            installed = [self.replicas[j].view for j in live if j != i and self.replicas[j].active]
            if not r.active and installed and r.view == max(installed) + 1:
                waiting.add(self.index_of[i])
        return waiting

    def run_until_signed(self, height: int, rounds: int = 120, *, excuse_waiting: bool = False) -> int:
        """Rounds of virtual time until every live honest instance's validator signed (is among the
        signers of) a commit certificate of a block above ``height``: it votes again, not only
        catches up. ``excuse_waiting``: a validator in ``waiting_one_view_ahead`` need not sign.
        Raises ``LivenessFailure`` naming the silent validators after ``rounds``."""
        start = self.round
        while True:
            silent = sorted({self.index_of[i] for i in self.live() if i in self.honest()} - self.signers_above(height)
                            - (self.waiting_one_view_ahead() if excuse_waiting else set()))
            if not silent:
                return self.round - start
            if self.round - start >= rounds:
                raise LivenessFailure(
                    f"validators {silent} signed no commit certificate above height {height} in {rounds} rounds "
                    f"(seed {self.seed}): they catch up but do not take part; heights "
                    f"{[r.height for r in self.replicas]}, views {[r.view for r in self.replicas]}, "
                    f"active {[r.active for r in self.replicas]}")
            self.tick()

    def check_safety(self) -> None:
        """Raise ``SafetyViolation`` if two honest replicas committed different blocks at one height,
        computed different state roots at one height (each its own, from executing the blocks), or
        committed a block whose header root is not the one it computed, or an honest replica's
        stable checkpoint is not the block it committed there. (Double signing and evidence against
        an honest validator raise as they happen, in ``carry_out``.)"""
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
        roots: dict[int, set[bytes]] = {}
        wrong: list[tuple[int, int]] = []
        for i in self.honest():
            for h, (bh, _) in self.committed[i].items():
                mine = self.state_roots[i].get(h)
                if mine is None:
                    raise SafetyViolation(f"instance {i} committed block {h} without executing it (seed {self.seed})")
                roots.setdefault(h, set()).add(mine)
                if mine != self.blocks[bh].header.state_root:
                    wrong.append((i, h))
        split = sorted(h for h, s in roots.items() if len(s) > 1)
        if split:
            raise SafetyViolation(f"honest replicas computed different state roots at heights {split} "
                                  f"(seed {self.seed})")
        if wrong:
            raise SafetyViolation(f"(instance, height) {wrong}: committed a block whose header state root is not "
                                  f"the one the instance computed (seed {self.seed})")

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
class Fault:
    """One event of a fault schedule, applied just before one round. ``arg`` (0..255) is read per kind:

    * ``none``: nothing; ``calm``: every rate back to 0 (reordering back to full);
    * ``drop``, ``delay``, ``duplicate``, ``reorder``: set that rate to ``min(arg, 60)`` percent;
    * ``isolate-primary``: cut the links of the primary honest replicas follow; ``split``: cut the
      validators whose bit is set in ``arg`` from the others; ``swizzle``: clog validator
      ``arg mod n`` (one more each time); ``unclog``: unclog validator ``arg mod n``; ``heal``:
      restore every link; ``hold-cut``: cut links hold messages (odd ``arg``) or drop them (even);
    * ``crash``: crash honest instance ``arg`` (mod their count) if fewer than the budget are down;
      ``restart``: restart crashed instance ``arg`` (mod their count);
    * ``timeout``: a spurious timer expiry at live instance ``arg`` (mod their count).
    """

    kind: str
    arg: int = 0


@dataclass(frozen=True)
class Schedule:
    """A whole scenario: ``n`` validators, the ``seed`` of keys and network randomness, which
    validators are byzantine (with which ``BEHAVIOURS``) or twinned, and one ``Fault`` per round
    before healing. ``repr`` of a schedule is Python that rebuilds it, so a failure replays exactly."""

    n: int
    seed: int = 0
    byzantine: tuple[tuple[int, tuple[str, ...]], ...] = ()
    twins: tuple[int, ...] = ()
    events: tuple[Fault, ...] = ()

    @property
    def f(self) -> int:
        """Faults tolerated: (n - 1) // 3."""
        return (self.n - 1) // 3

    def check(self) -> None:
        """Raise ``ValueError`` unless the schedule is well formed and within f faulty validators."""
        if self.n < 1:
            raise ValueError(f"n = {self.n}: at least one validator")
        faulty = [i for i, _ in self.byzantine] + list(self.twins)
        if len(set(faulty)) != len(faulty) or any(not 0 <= i < self.n for i in faulty):
            raise ValueError(f"byzantine {self.byzantine} and twins {self.twins}: distinct indexes below n")
        if len(faulty) > self.f:
            raise ValueError(f"{len(faulty)} faulty validators, more than f = {self.f}")
        for _, behaviours in self.byzantine:
            if not behaviours or not set(behaviours) <= set(BEHAVIOURS):
                raise ValueError(f"behaviours {behaviours}: a non-empty subset of {BEHAVIOURS}")
        for e in self.events:
            if e.kind not in FAULT_KINDS or not 0 <= e.arg < 256:
                raise ValueError(f"bad fault {e!r}: kind in FAULT_KINDS, 0 <= arg < 256")


def random_schedule(seed: int, n: int = 4, fault_rounds: int = 12) -> Schedule:
    """The schedule seed ``seed`` stands for (the ``qenex-devnet simulate`` soak): within f, at most
    one byzantine validator with random behaviours and one twinned validator, crashes allowed or
    not, then ``fault_rounds`` random faults."""
    rng = random.Random(seed)
    f = (n - 1) // 3
    kinds = rng.sample(["byzantine", "twin", "crash"], k=rng.randint(0, 2))
    budget = f
    byzantine: list[tuple[int, tuple[str, ...]]] = []
    twins: list[int] = []
    if "byzantine" in kinds and budget:
        who = rng.randrange(n)
        byzantine.append((who, tuple(sorted(rng.sample(BEHAVIOURS, k=rng.randint(1, len(BEHAVIOURS)))))))
        budget -= 1
    if "twin" in kinds and budget:
        twins.append(rng.choice([i for i in range(n) if i not in dict(byzantine)]))
    allowed = [k for k in FAULT_KINDS if "crash" in kinds or k not in ("crash", "restart")]
    events = tuple(Fault(rng.choice(allowed), rng.randrange(256)) for _ in range(fault_rounds))
    return Schedule(n, seed, tuple(byzantine), tuple(twins), events)


@dataclass(frozen=True)
class ScenarioResult:
    """What one scenario did: its seed and size, the faults applied (byzantine roles first, then each
    fault event that changed something), the lowest honest height at the end, the highest view,
    counters of the run, and how long recovery took after healing (rounds and virtual ms).
    ``chain`` hashes every honest replica's committed (height, block hash) pairs; ``wrong_roots``
    counts proposals refused for a wrong state root."""

    seed: int
    n: int
    faults: tuple[str, ...]
    height: int
    max_view: int
    rejected: int
    recovery_rounds: int
    recovery_ms: int = 0
    decode_errors: int = 0
    garbage: int = 0
    delayed: int = 0
    evidence: int = 0
    timer_expiries: int = 0
    max_backoff: int = 0
    chain: bytes = b""
    wrong_roots: int = 0
    failover_rounds: int | None = None
    """Rounds the live replicas took, once healed, to commit two blocks further and each sign a
    commit certificate again after the primary of the highest view crashed (None: not run, as
    the faulty validators leave no crash to spare)."""


def _apply(sim: Sim, fault: Fault, budget: int) -> bool:
    """Apply ``fault`` to ``sim`` (see ``Fault``); returns whether it changed anything."""
    k, arg, rate = fault.kind, fault.arg, min(fault.arg, 60) / 100
    honest = [i for i in sim.honest() if i not in sim.crashed]
    if k in ("drop", "delay", "duplicate", "reorder"):
        setattr(sim, k, rate)
    elif k == "calm":
        sim.drop = sim.delay = sim.duplicate = 0.0
        sim.reorder = 1.0
    elif k == "isolate-primary" and honest:
        sim.isolate(sim.replicas[honest[0]].primary())
    elif k == "split":
        side = [i for i, x in enumerate(sim.index_of) if arg >> x & 1]
        rest = [i for i in range(len(sim.replicas)) if i not in side]
        if not side or not rest:
            return False
        sim.partition(side, rest)
    elif k == "swizzle":
        sim.clogged.add(arg % sim.n)
    elif k == "unclog" and arg % sim.n in sim.clogged:
        sim.clogged.discard(arg % sim.n)
    elif k == "heal" and (sim.cut or sim.clogged):
        sim.heal()
    elif k == "hold-cut":
        sim.cut_holds = bool(arg & 1)
    elif k == "crash" and len(sim.crashed) < budget and honest:
        sim.crash(honest[arg % len(honest)])
    elif k == "restart" and sim.crashed:
        crashed = sorted(sim.crashed)
        sim.restart(crashed[arg % len(crashed)])
    elif k == "timeout":
        live = sim.live()
        sim.expire(live[arg % len(live)])
    else:
        return False
    return True


def run_scenario(schedule: Schedule) -> ScenarioResult:
    """Run ``schedule``: each fault then one round (checking safety after every round), then heal
    every link, stop loss and delay, restart the crashed, and check liveness:

    1. every live honest replica gets two blocks further within ``LIVENESS_ROUNDS`` rounds, and then
       (within ``LIVENESS_ROUNDS`` more) each one's validator signs the commit certificate of a
       block committed after the heal: it takes part again, not only catches up (a replica that
       only fetches certified blocks gains height without voting). Excused: a replica changing
       alone to one view above the others' (``Sim.waiting_one_view_ahead``), which PBFT lets rejoin
       only at the others' next view change;
    2. if the faulty validators (byzantine and twinned) leave a crash to spare (fewer than f), the
       primary of the highest honest view is crashed and stays down, and the same two conditions
       must hold again, each within ``LIVENESS_ROUNDS`` rounds, with no one excused (§4.4: the
       view change that follows brings every live replica back). The primary crashed is that of
       the highest view a live honest replica installed (a replica waiting one view ahead has
       installed none).

    The result's ``recovery_rounds`` counts step 1, ``failover_rounds`` step 2.

    Raises ``ValueError`` for a malformed schedule, ``SafetyViolation`` or ``LivenessFailure``
    naming the seed and the schedule (``run_scenario(<that schedule>)`` replays it).
    """
    schedule.check()
    n = schedule.n
    byzantine = {i: set(b) for i, b in schedule.byzantine}
    faults = [f"byzantine {i}: {','.join(sorted(b))}" for i, b in sorted(byzantine.items())]
    faults += [f"twins of {i}" for i in schedule.twins]
    sim = Sim(n, seed=schedule.seed, twins=list(schedule.twins), byzantine=byzantine)
    budget = schedule.f - len(byzantine) - len(schedule.twins)
    try:
        for fault in schedule.events:
            if _apply(sim, fault, budget):
                faults.append(fault.kind)
            sim.tick()
            sim.check_safety()
        sim.heal()
        sim.drop = sim.delay = sim.duplicate = 0.0
        sim.cut_holds = False
        for i in sorted(sim.crashed):
            sim.restart(i)
        healed = max(sim.replicas[i].height for i in sim.honest())
        rounds = sim.run_until(healed + 2, LIVENESS_ROUNDS)
        rounds += sim.run_until_signed(healed, LIVENESS_ROUNDS, excuse_waiting=True)
        sim.check_safety()
        failover = None
        if len(sim.faulty_indexes()) + len(sim.crashed) < schedule.f:
            live = [i for i in sim.honest() if i in sim.live()]
            views = [sim.replicas[i].view for i in live if sim.replicas[i].active]
            primary = sim.replicas[live[0]].primary(max(views, default=max(sim.replicas[i].view for i in live)))
            for i, x in enumerate(sim.index_of):
                if x == primary:
                    sim.crash(i)
            faults.append(f"crash primary {primary} after healing")
            top = max(sim.replicas[i].height for i in sim.honest() if i in sim.live())
            failover = sim.run_until(top + 2, LIVENESS_ROUNDS)
            failover += sim.run_until_signed(top, LIVENESS_ROUNDS)
            sim.check_safety()
    except (SafetyViolation, LivenessFailure) as err:
        raise type(err)(f"{err}\nreplay: run_scenario({schedule!r})") from err
    honest = sim.honest()
    chain = sha3(encode(tuple(tuple((h, bh) for h, (bh, _) in sorted(sim.committed[i].items())) for i in honest)))
    return ScenarioResult(schedule.seed, n, tuple(faults), min(sim.replicas[i].height for i in honest),
                          max(r.view for r in sim.replicas), sim.rejected, rounds,
                          rounds * sim.tick_ms, sim.decode_errors, sim.garbage, sim.delayed,
                          len(sim.evidence), sim.timeouts_fired, sim.max_expiries, chain, sim.wrong_roots,
                          failover)
