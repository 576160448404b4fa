"""A PBFT replica, normal case (Castro & Liskov, "Practical Byzantine Fault Tolerance", OSDI 1999,
§4.2; TOCS 2002 §4.2), as a sans-IO state machine in the manner of h11: the node feeds it events
(``propose``, ``receive``, ``block_validated``, ``block_invalid``, ``synced``) and carries out the
actions it returns, in order (``PersistVote`` before the ``Broadcast`` that follows it).

Everything that affects the state machine lives here; there is no socket, clock or disk.

* n = 3f + 1 validators, quorum 2f + 1; the primary of view v is validator v mod n.
* Pre-prepare: the primary proposes the block for sequence number h + 1 (h = last committed).
* A backup accepts a pre-prepare in its view from the primary, for h + 1, extending its head, not
  conflicting with one it accepted (or voted for) before; it asks the node to execute the block
  (``ValidateBlock``) and sends PREPARE only once the node reports the same roots.
* Prepared (§4.2): the pre-prepare plus 2f matching PREPAREs of distinct backups; then COMMIT.
* Committed-local: prepared plus 2f + 1 matching COMMITs; the 2f + 1 COMMIT signatures are the
  block's commit certificate (``CommitBlock``).
* Before any vote leaves, ``PersistVote`` records it (double-sign protection across restarts); a
  replica restored with its records never votes for a different block at the same (view, seq).
* Messages for sequence numbers above h + 1 inside the window are kept and replayed in order;
  two conflicting signed messages of one validator become ``Evidence``: pre-prepares and votes are
  compared on arrival (in a later view too, and for a decided sequence number or an older view,
  down to the low watermark), and so are CHECKPOINTs (evidence kind ``CHECKPOINT``, view 0).

View change (§4.4), simplified by there being one undecided sequence number at a time: on
``on_timeout`` a replica stops taking part in its view and sends a signed VIEW-CHANGE for the next
one, carrying its committed height with the commit certificate that proves it and, if it prepared
the next block, that block's prepared certificate (persisted before its COMMIT left). The primary
of the new view gathers a quorum of them and sends NEW-VIEW; the re-proposal it carries (the O
set, here at most one pre-prepare) must be the prepared block of the highest view for the
height above the highest proven one, so a block that may have committed anywhere is never
replaced. Every replica checks NEW-VIEW against the VIEW-CHANGEs inside it before installing the
view; one that is behind the proven height catches up first (``SyncTo``). A replica that sees f + 1
VIEW-CHANGEs for higher views joins the smallest of them (§4.5.2). VIEW-CHANGE and NEW-VIEW are
recorded (``PersistVote``), so a restarted replica resumes in the view it had reached.

Checkpoints and watermarks (§4.3): after committing every K-th sequence number (K =
``checkpoint_interval``) a replica signs and broadcasts a CHECKPOINT naming that block (the block
hash commits to the state root through the header). 2f + 1 matching ones make it stable
(``CheckpointStable``, kept as the proof); the low watermark h moves up to it, older checkpoint
messages are discarded, and no pre-prepare or vote outside [h, h + L] (L = 2K) is accepted, except
for the one undecided sequence number. A quorum that certifies another block than the one this
replica committed there is reported (``StateDivergence``): its state is not the network's. The
commit certificate of each block proves the prefix below it, so a VIEW-CHANGE carries that
certificate (a stronger proof than the checkpoint's) instead of the checkpoint messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from consensus.exceptions import InvalidCertificate, InvalidMessage
from consensus.messages import (
    CHECKPOINT,
    COMMIT,
    NEW_VIEW,
    PRE_PREPARE,
    PREPARE,
    VIEW_CHANGE,
    Checkpoint,
    Evidence,
    NewView,
    PreparedCertificate,
    PrePrepare,
    StableCheckpoint,
    ViewChange,
    Vote,
    new_view_signing_bytes,
    view_change_signing_bytes,
    vote_signing_bytes,
)
from crypto.exceptions import InvalidSignature
from crypto.hashing import ZERO_HASH, Hash32, sha3
from state.codec import encode
from state.types import Block, CommitCertificate, ValidatorSignature

Verifier = Callable[[int, bytes, bytes], None]
"""``verify(validator_index, message, signature)``: raises ``InvalidSignature`` unless it holds."""
Signer = Callable[[bytes], bytes]
"""Signs vote bytes with this replica's consensus key (context ``Context.CONSENSUS``)."""

DEFAULT_WINDOW = 16
"""How many sequence numbers above the next one are buffered."""
MAX_ANSWERS = 16
"""Most NEW-VIEWs sent in answer to one validator's lagging VIEW-CHANGEs for one view (``_answer_lagging``)."""

DEFAULT_CHECKPOINT_INTERVAL = 100
"""K: a CHECKPOINT is sent after committing every K-th sequence number (§4.3)."""


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broadcast:
    """Send ``message`` (any consensus message of this replica) to every other validator."""

    message: PrePrepare | Vote | ViewChange | NewView | Checkpoint


@dataclass(frozen=True)
class PersistVote:
    """Durably record that this replica signed ``kind`` for ``block_hash`` at (view, seq).

    Must be written before the next action (the broadcast of that vote) is carried out.
    """

    kind: int
    view: int
    seq: int
    block_hash: Hash32
    block: Block | None = None
    """For a PRE-PREPARE: the block itself, so a restarted primary proposes the same one again."""
    view_change: ViewChange | None = None
    """For a VIEW-CHANGE: the signed message itself, so a restarted replica offers the same one again
    (``own_view_change`` of the constructor) instead of signing a second one for that view."""


@dataclass(frozen=True)
class ValidateBlock:
    """Execute ``block`` on the head; answer with ``block_validated`` or ``block_invalid``."""

    view: int
    seq: int
    block: Block


@dataclass(frozen=True)
class CommitBlock:
    """``block`` is final with ``certificate``: store and apply it (the replica has moved on)."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True)
class PersistPrepared:
    """Durably record ``certificate`` (this replica prepared its block) before the COMMIT leaves."""

    certificate: PreparedCertificate


@dataclass(frozen=True)
class SyncTo:
    """Fetch certified blocks up to ``height`` (proven by ``certificate``), then call ``synced``."""

    height: int
    head_hash: Hash32
    certificate: CommitCertificate | None


@dataclass(frozen=True)
class ViewInstalled:
    """This replica now takes part in ``view`` (restart the progress timer)."""

    view: int


@dataclass(frozen=True)
class CheckpointStable:
    """A checkpoint became stable (§4.3): keep ``checkpoint`` as the proof; the low watermark moved."""

    checkpoint: StableCheckpoint


@dataclass(frozen=True)
class StateDivergence:
    """A quorum certified ``seq`` with another block than ours: our state is not the network's."""

    seq: int
    ours: Hash32
    theirs: Hash32


@dataclass(frozen=True)
class RecordEvidence:
    """A validator equivocated; keep ``evidence``."""

    evidence: Evidence


Message = PrePrepare | Vote | ViewChange | NewView | Checkpoint
Action = (
    Broadcast | PersistVote | PersistPrepared | ValidateBlock | CommitBlock | RecordEvidence | SyncTo | ViewInstalled
    | CheckpointStable | StateDivergence
)


# --- per-sequence state ----------------------------------------------------------------------------


@dataclass
class _Slot:
    """What one replica knows of one (view, seq)."""

    pre_prepare: PrePrepare | None = None
    validated: bool = False
    prepares: dict[int, Vote] = field(default_factory=dict)
    commits: dict[int, Vote] = field(default_factory=dict)
    sent_commit: bool = False


class Replica:
    """One validator's PBFT state machine: normal case, view change, checkpoints. See the module docstring."""

    def __init__(
        self,
        *,
        chain_id: str,
        n: int,
        index: int | None,
        signer: Signer | None,
        verifier: Verifier,
        height: int,
        head_hash: Hash32,
        view: int = 0,
        votes: Mapping[tuple[int, int, int], Hash32] | None = None,
        window: int = DEFAULT_WINDOW,
        head_certificate: CommitCertificate | None = None,
        prepared: PreparedCertificate | None = None,
        genesis_hash: Hash32 | None = None,
        checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
        stable_checkpoint: StableCheckpoint | None = None,
        own_view_change: ViewChange | None = None,
    ) -> None:
        """Start at committed ``height`` with head ``head_hash``.

        ``index`` is this validator's position (None for an observer that never votes);
        ``votes`` are the records of earlier ``PersistVote`` actions, keyed (kind, view, seq), and
        ``prepared`` the last ``PersistPrepared`` one; ``head_certificate`` proves the head (None at
        height 0); ``genesis_hash`` is the head hash of height 0 (default ``head_hash``);
        ``stable_checkpoint`` is the last ``CheckpointStable`` proof (it sets the low watermark);
        ``own_view_change`` the VIEW-CHANGE of the last ``PersistVote`` that carried one (offered again
        while that view change is still under way).
        Raises ``ValueError`` for n < 1 or an index outside the set.
        """
        if n < 1 or (index is not None and not 0 <= index < n):
            raise ValueError(f"bad validator set: n={n}, index={index}")
        if index is not None and signer is None:
            raise ValueError("a voting replica needs a signer")
        self.chain_id = chain_id
        self.n = n
        self.f = (n - 1) // 3
        self.quorum = quorum_size(n)
        self.index = index
        self._sign = signer
        self._verify = verifier
        self.view = view
        self.height = height
        self.head_hash = head_hash
        self.window = window
        self._votes: dict[tuple[int, int, int], Hash32] = dict(votes or {})
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._future: dict[int, list[PrePrepare | Vote]] = {}
        self.evidence: list[Evidence] = []
        self._seen: dict[tuple[int, int, int, int], tuple[Hash32, bytes]] = {}
        self.head_certificate = head_certificate
        self.genesis_hash = genesis_hash if genesis_hash is not None else head_hash
        self._prepared = prepared if prepared is not None and prepared.pre_prepare.seq == height + 1 else None
        self._view_changes: dict[int, dict[int, ViewChange]] = {}
        self._later: dict[int, list[PrePrepare | Vote]] = {}
        self._own_vc: ViewChange | None = None
        self._own_nv: NewView | None = None
        self._installed_nv: NewView | None = None
        self._answered: dict[tuple[int, int], int] = {}
        """How often we answered a lagging VIEW-CHANGE, by (validator, view), with our NEW-VIEW."""
        """The NEW-VIEW of the installed view (a conflicting one of its primary is evidence)."""
        changed = [k[1] for k in self._votes if k[0] == VIEW_CHANGE]
        installed = [k[1] for k in self._votes if k[0] == NEW_VIEW]
        self.view = max([view, *changed, *installed])
        self.active = self.view == view or self.view in installed
        if (own_view_change is not None and not self.active and own_view_change.new_view == self.view
                and own_view_change.validator == index):
            self._own_vc = own_view_change
        if checkpoint_interval < 1:
            raise ValueError("the checkpoint interval is at least 1")
        self.checkpoint_interval = checkpoint_interval
        self.stable_checkpoint = stable_checkpoint
        self._checkpoints: dict[int, dict[int, Checkpoint]] = {}
        self._own_checkpoints: dict[int, Hash32] = {}

    # --- roles ------------------------------------------------------------------------------------

    def primary(self, view: int | None = None) -> int:
        """The primary of ``view`` (default: the current view): ``view mod n``."""
        return (self.view if view is None else view) % self.n

    @property
    def is_primary(self) -> bool:
        """Whether this replica is the primary of the current view and that view is installed."""
        return self.active and self.index == self.primary()

    @property
    def low_watermark(self) -> int:
        """h: the sequence number of the last stable checkpoint (0 before the first)."""
        return 0 if self.stable_checkpoint is None else self.stable_checkpoint.seq

    @property
    def high_watermark(self) -> int:
        """H = h + L with L = 2K: no message for a sequence number above it is accepted (§4.3)."""
        return self.low_watermark + 2 * self.checkpoint_interval

    @property
    def next_seq(self) -> int:
        """The sequence number being decided: committed height + 1."""
        return self.height + 1

    def proposal_pending(self) -> bool:
        """Whether a pre-prepare for ``next_seq`` in this view is already out."""
        slot = self._slots.get((self.view, self.next_seq))
        return slot is not None and slot.pre_prepare is not None

    def voted(self, kind: int, view: int, seq: int) -> Hash32 | None:
        """The block this replica signed ``kind`` for at (view, seq), if any."""
        return self._votes.get((kind, view, seq))

    # --- events -----------------------------------------------------------------------------------

    def propose(self, block: Block) -> list[Action]:
        """The node built ``block`` for ``next_seq`` (already executed): send the pre-prepare.

        Raises ``ValueError`` if this replica is not the primary, or the block does not fit.
        """
        seq = self.next_seq
        if not self.is_primary or self.index is None or self._sign is None:
            raise ValueError("only the primary of an installed view proposes")
        earlier = self._votes.get((PRE_PREPARE, self.view, seq))
        reproposal = earlier == block.hash  # e.g. the re-proposal of a NEW-VIEW, after a restart
        if block.header.height != seq or block.header.prev_hash != self.head_hash or (
                block.header.view != self.view and not reproposal):
            raise ValueError("the block does not extend the head in this view")
        if earlier is not None and earlier != block.hash:
            raise ValueError("already proposed another block for this view and sequence number")
        if self.proposal_pending():
            raise ValueError("a proposal for this sequence number is already out")
        msg = PrePrepare(self.view, seq, block, self.index, self._sign(self._bytes(PRE_PREPARE, self.view, seq,
                                                                                        block.hash, self.index)))
        slot = self._slot(self.view, seq)
        slot.pre_prepare = msg
        slot.validated = True
        actions: list[Action] = [PersistVote(PRE_PREPARE, self.view, seq, block.hash, block), Broadcast(msg)]
        self._votes[(PRE_PREPARE, self.view, seq)] = block.hash
        actions += self._advance(self.view, seq)
        return actions

    def receive(self, message: Message) -> list[Action]:
        """A message arrived from a peer. Raises ``InvalidMessage`` if it is malformed or forged."""
        if isinstance(message, ViewChange):
            return self._on_view_change(message)
        if isinstance(message, NewView):
            return self._on_new_view(message)
        if isinstance(message, Checkpoint):
            return self._on_checkpoint(message)
        if message.seq <= self.low_watermark or message.seq > max(self.high_watermark, self.next_seq):
            return []  # outside the watermarks (§4.3); the one undecided sequence number is always in
        if message.seq > self.height + 1 + self.window or message.view > self.view + self.window:
            return []  # beyond the window; the node's catch-up covers it
        # an older view or a decided sequence number takes no part any more, but a validator that
        # signed two blocks there still equivocated: a copy of what we saw costs nothing, anything
        # else is verified and compared (``_seen`` is kept down to the low watermark)
        stale = message.view < self.view or message.seq <= self.height
        first = self._first_seen(message)
        same_block = first is not None and first[0] == message.block_hash
        if stale and same_block:
            return []
        if not (same_block and first is not None and first[1] == message.signature):
            self._check_signature(message)  # a byte-identical copy of a verified message is as valid as it
        actions = self._note_equivocation(message)
        if stale:
            return actions
        if message.view > self.view or not self.active:
            later = self._later.setdefault(message.view, [])
            if len(later) < 64 * self.n:
                later.append(message)  # replayed once that view is installed
            return actions + (self._behind_a_quorum_view() if message.view > self.view else [])
        if message.seq > self.next_seq:
            self._future.setdefault(message.seq, []).append(message)
            return actions
        return actions + self._apply(message)

    def block_validated(self, view: int, seq: int, block_hash: Hash32) -> list[Action]:
        """The node executed the proposed block and got the header's roots: vote PREPARE."""
        slot = self._slots.get((view, seq))
        if (
            view != self.view or seq != self.next_seq or slot is None or slot.pre_prepare is None
            or slot.pre_prepare.block_hash != block_hash or slot.validated
        ):
            return []
        slot.validated = True
        actions: list[Action] = []
        if self.index is not None and self.index != self.primary(view):
            actions += self._vote(PREPARE, view, seq, block_hash, slot.prepares)
        return actions + self._advance(view, seq)

    def block_invalid(self, view: int, seq: int, block_hash: Hash32) -> list[Action]:
        """The node found the proposed block invalid: forget the pre-prepare, send nothing."""
        slot = self._slots.get((view, seq))
        if slot is not None and slot.pre_prepare is not None and slot.pre_prepare.block_hash == block_hash:
            slot.pre_prepare = None
            slot.validated = False
        return []

    def synced(self, height: int, head_hash: Hash32, certificate: CommitCertificate | None = None) -> list[Action]:
        """The node committed blocks up to ``height`` by catch-up: move on to ``height + 1``."""
        if height <= self.height:
            return []
        self.head_certificate = certificate
        return self._committed(height, head_hash)

    def on_timeout(self) -> list[Action]:
        """The node's progress timer fired: move to the next view (§4.4). Observers do nothing.

        A replica already changing to view v moves on to v + 1 only once it holds 2f + 1
        VIEW-CHANGEs for v: Castro & Liskov §4.4 start the timer of view v only then, so that no
        honest replica runs ahead alone, view after view, where the others cannot follow (the f + 1
        join rule then brings the laggards up, §4.5.2). Until then it offers its VIEW-CHANGE again.
        """
        if self.index is None:
            return []
        if not self.active and len(self._view_changes.get(self.view, {})) < self.quorum:
            own = self._own_vc
            return [Broadcast(own)] if own is not None and own.new_view == self.view else []
        return self._start_view_change(self.view + 1)

    def holds_pre_prepare(self, view: int, seq: int, block_hash: bytes) -> bool:
        """Whether the slot (``view``, ``seq``) holds a pre-prepare of ``block_hash`` (so a copy of
        it received again changes nothing, §4.2: the first pre-prepare of a slot counts)."""
        held = self.pre_prepare_at(view, seq)
        return held is not None and held.block_hash == block_hash

    def pre_prepare_at(self, view: int, seq: int) -> PrePrepare | None:
        """The pre-prepare the slot (``view``, ``seq``) holds, if any (to send a peer the full message)."""
        slot = self._slots.get((view, seq))
        return None if slot is None else slot.pre_prepare

    def retransmit(self) -> list[Message]:
        """This replica's own messages for the undecided ``next_seq``, to send again.

        PBFT retransmits on timeout (Castro & Liskov §4.2 assumes eventual delivery): a peer that
        connected late or dropped a frame still gets the pre-prepare and the votes it needs.
        """
        own_cp: list[Message] = []
        if self._own_checkpoints and self.index is not None:
            seq = max(self._own_checkpoints)
            mine = self._checkpoints.get(seq, {}).get(self.index)
            if mine is not None and seq > self.low_watermark:
                own_cp.append(mine)  # not stable yet: offer it again
        if not self.active:
            return own_cp + [m for m in (self._own_vc,) if m is not None and m.new_view == self.view]
        slot = self._slots.get((self.view, self.next_seq))
        out: list[Message] = [self._own_nv] if self._own_nv is not None and self._own_nv.view == self.view else []
        out += own_cp
        if slot is None or self.index is None:
            return out
        if slot.pre_prepare is not None and slot.pre_prepare.validator == self.index:
            out.append(slot.pre_prepare)
        for votes in (slot.prepares, slot.commits):
            own = votes.get(self.index)
            if own is not None:
                out.append(own)
        return out

    # --- internals --------------------------------------------------------------------------------

    def _bytes(self, kind: int, view: int, seq: int, block_hash: bytes, validator: int) -> bytes:
        return vote_signing_bytes(self.chain_id, kind, view, seq, block_hash, validator)

    def _slot(self, view: int, seq: int) -> _Slot:
        return self._slots.setdefault((view, seq), _Slot())

    def _check_signature(self, m: PrePrepare | Vote) -> None:
        if not 0 <= m.validator < self.n:
            raise InvalidMessage(f"validator index {m.validator} outside the set of {self.n}")
        if isinstance(m, PrePrepare):
            if m.validator != self.primary(m.view):
                raise InvalidMessage(f"pre-prepare from {m.validator}, not the primary of view {m.view}")
            kind, block_hash = PRE_PREPARE, m.block_hash
        else:
            if m.kind not in (PREPARE, COMMIT):
                raise InvalidMessage(f"unknown vote kind {m.kind}")
            kind, block_hash = m.kind, m.block_hash
        try:
            self._verify(m.validator, self._bytes(kind, m.view, m.seq, block_hash, m.validator), m.signature)
        except InvalidSignature as err:
            raise InvalidMessage(f"bad signature from validator {m.validator}: {err}") from err

    def _first_seen(self, m: PrePrepare | Vote) -> tuple[Hash32, bytes] | None:
        """The block hash and signature of the first verified message of ``m``'s signer for the same
        kind, view and sequence number (``_note_equivocation`` records it), or None."""
        kind = PRE_PREPARE if isinstance(m, PrePrepare) else m.kind
        return self._seen.get((kind, m.view, m.seq, m.validator))

    def _note_equivocation(self, m: PrePrepare | Vote) -> list[Action]:
        kind = PRE_PREPARE if isinstance(m, PrePrepare) else m.kind
        key = (kind, m.view, m.seq, m.validator)
        first = self._seen.get(key)
        if first is None:
            self._seen[key] = (m.block_hash, m.signature)
            return []
        if first[0] == m.block_hash:
            return []
        return self._record_evidence(
            Evidence(kind, m.view, m.seq, m.validator, first[0], first[1], m.block_hash, m.signature))

    def _record_evidence(self, ev: Evidence) -> list[Action]:
        if ev in self.evidence:
            return []
        self.evidence.append(ev)
        return [RecordEvidence(ev)]

    def _apply(self, m: PrePrepare | Vote) -> list[Action]:
        slot = self._slot(m.view, m.seq)
        if isinstance(m, PrePrepare):
            return self._on_pre_prepare(slot, m)
        votes = slot.prepares if m.kind == PREPARE else slot.commits
        if m.kind == PREPARE and m.validator == self.primary(m.view):
            return []  # the primary's pre-prepare stands for its prepare (§4.2)
        existing = votes.get(m.validator)
        if existing is not None and existing.block_hash != m.block_hash:
            return []  # equivocation: the first one counts, the evidence is kept
        votes[m.validator] = m
        return self._advance(m.view, m.seq)

    def _on_pre_prepare(self, slot: _Slot, m: PrePrepare) -> list[Action]:
        header = m.block.header
        if slot.pre_prepare is not None:
            return []  # the first one counts; a conflicting one was recorded as evidence
        if header.height != m.seq or header.view > m.view or header.prev_hash != self.head_hash:
            raise InvalidMessage(f"pre-prepare for seq {m.seq} does not extend our head")
        # a block re-proposed in a later view keeps the header of the view it was made in
        if header.proposer != self.primary(header.view) or header.chain_id != self.chain_id:
            raise InvalidMessage("pre-prepare header names another proposer or chain")
        for kind in (PRE_PREPARE, PREPARE, COMMIT):
            locked = self._votes.get((kind, m.view, m.seq))
            if locked is not None and locked != m.block_hash:
                return []  # we signed another block here before a restart: never sign a conflict
        slot.pre_prepare = m
        return [ValidateBlock(m.view, m.seq, m.block)]

    def _vote(self, kind: int, view: int, seq: int, block_hash: Hash32, into: dict[int, Vote]) -> list[Action]:
        if self.index is None or self._sign is None:
            raise ValueError("an observer does not vote")
        sig = self._sign(self._bytes(kind, view, seq, block_hash, self.index))
        vote = Vote(kind, view, seq, block_hash, self.index, sig)
        into[self.index] = vote
        self._votes[(kind, view, seq)] = block_hash
        return [PersistVote(kind, view, seq, block_hash), Broadcast(vote)]

    def _matching(self, votes: dict[int, Vote], block_hash: Hash32) -> list[Vote]:
        return [v for v in votes.values() if v.block_hash == block_hash]

    def _advance(self, view: int, seq: int) -> list[Action]:
        slot = self._slots.get((view, seq))
        if slot is None or slot.pre_prepare is None or not slot.validated or seq != self.next_seq:
            return []
        block_hash = slot.pre_prepare.block_hash
        actions: list[Action] = []
        matching = self._matching(slot.prepares, block_hash)
        prepared = len(matching) >= self.quorum - 1
        if prepared and not slot.sent_commit and self.index is not None:
            slot.sent_commit = True
            backups = tuple(sorted(matching, key=lambda v: v.validator)[: self.quorum - 1])
            self._prepared = PreparedCertificate(slot.pre_prepare, backups)
            actions.append(PersistPrepared(self._prepared))
            actions += self._vote(COMMIT, view, seq, block_hash, slot.commits)
        commits = self._matching(slot.commits, block_hash)
        if prepared and len(commits) >= self.quorum:
            chosen = sorted(commits, key=lambda v: v.validator)[: self.quorum]
            cert = CommitCertificate(
                seq, view, block_hash, tuple(ValidatorSignature(v.validator, v.signature) for v in chosen)
            )
            actions.append(CommitBlock(slot.pre_prepare.block, cert))
            self.head_certificate = cert
            actions += self._committed(seq, block_hash)
        return actions

    def _committed(self, height: int, head_hash: Hash32) -> list[Action]:
        start = self.height
        self.height = height
        self.head_hash = head_hash
        checkpoint_actions: list[Action] = []
        k = self.checkpoint_interval
        if self.index is not None and self._sign is not None and height // k > start // k and height % k == 0:
            cp = Checkpoint(height, head_hash, self.index,
                            self._sign(self._bytes(CHECKPOINT, 0, height, head_hash, self.index)))
            self._own_checkpoints[height] = head_hash
            checkpoint_actions = [Broadcast(cp), *self._add_checkpoint(cp)]
        for key in [k for k in self._slots if k[1] <= height]:
            del self._slots[key]
        # kept for equivocation checks down to the low watermark, and never more than L + window
        # below the head (a bound on memory while checkpoints lag behind a catch-up)
        floor = max(self.low_watermark, height - 2 * k - self.window)
        for seen in [key for key in self._seen if key[2] <= floor]:
            del self._seen[seen]
        old = height - self.window
        for kv in [k for k in self._votes if k[0] in (PRE_PREPARE, PREPARE, COMMIT) and k[2] < old]:
            del self._votes[kv]
        if self._prepared is not None and self._prepared.pre_prepare.seq <= height:
            self._prepared = None
        for seq in [s for s in self._future if s <= height]:
            del self._future[seq]
        actions: list[Action] = checkpoint_actions
        for seq in sorted(s for s in self._checkpoints if self.low_watermark < s <= height):
            hashes = {c.block_hash for c in self._checkpoints[seq].values()}
            for h in sorted(hashes):
                actions += self._try_stable(seq, h)
        for m in self._future.pop(self.next_seq, []):
            try:
                actions += self._apply(m)
            except InvalidMessage:
                continue  # a buffered pre-prepare that no longer extends the head
        return actions

    # --- view change (§4.4) ---------------------------------------------------------------------

    def _start_view_change(self, target: int) -> list[Action]:
        if self.index is None or self._sign is None or target <= self.view:
            return []
        self.view = target
        self.active = False
        vc = ViewChange(target, self.height, self.head_hash, self.head_certificate, self._prepared, self.index, b"")
        vc = dataclasses.replace(vc, signature=self._sign(view_change_signing_bytes(self.chain_id, vc)))
        self._own_vc = vc
        self._votes[(VIEW_CHANGE, target, 0)] = ZERO_HASH
        actions: list[Action] = [PersistVote(VIEW_CHANGE, target, 0, ZERO_HASH, view_change=vc), Broadcast(vc)]
        return actions + self._add_view_change(vc)

    def _check_prepared(self, p: PreparedCertificate) -> None:
        pp = p.pre_prepare
        self._check_signature(pp)
        if pp.block.header.height != pp.seq:
            raise InvalidMessage("prepared certificate: block height differs from its sequence number")
        signers = {v.validator for v in p.prepares}
        if len(signers) != len(p.prepares) or len(signers) < self.quorum - 1 or self.primary(pp.view) in signers:
            raise InvalidMessage("prepared certificate lacks a quorum of distinct backups")
        for v in p.prepares:
            if v.kind != PREPARE or v.view != pp.view or v.seq != pp.seq or v.block_hash != pp.block_hash:
                raise InvalidMessage("prepared certificate holds a non-matching PREPARE")
            self._check_signature(v)

    def _check_view_change(self, vc: ViewChange) -> None:
        if not 0 <= vc.validator < self.n:
            raise InvalidMessage(f"view change from index {vc.validator} outside the set")
        try:
            self._verify(vc.validator, view_change_signing_bytes(self.chain_id, vc), vc.signature)
        except InvalidSignature as err:
            raise InvalidMessage(f"bad view-change signature from {vc.validator}") from err
        if vc.height == 0:
            if vc.head_hash != self.genesis_hash or vc.certificate is not None:
                raise InvalidMessage("view change at height 0 must name the genesis")
        else:
            if vc.certificate is None:
                raise InvalidMessage("view change without the certificate of its height")
            verify_certificate(vc.certificate, vc.head_hash, vc.height, self.chain_id, self.n, self._verify)
        if vc.prepared is not None:
            if vc.prepared.pre_prepare.seq != vc.height + 1 or vc.prepared.pre_prepare.view >= vc.new_view:
                raise InvalidMessage("prepared certificate is not for the next height of an earlier view")
            if vc.prepared.pre_prepare.block.header.prev_hash != vc.head_hash:
                raise InvalidMessage("prepared block does not extend the sender's head")
            self._check_prepared(vc.prepared)

    def _on_view_change(self, vc: ViewChange) -> list[Action]:
        if vc.new_view < self.view or (vc.new_view == self.view and self.active):
            return self._answer_lagging(vc)  # stale: that view is installed or passed
        if vc.new_view > self.view + self.window:
            return []
        known = self._view_changes.get(vc.new_view, {}).get(vc.validator)
        if known is not None:
            return self._conflicting_view_message(VIEW_CHANGE, vc.new_view, known, vc)
        self._check_view_change(vc)
        return self._add_view_change(vc)

    def _answer_lagging(self, vc: ViewChange) -> list[Action]:
        """A VIEW-CHANGE for a view at or below our installed one: its sender missed the NEW-VIEW that
        installed our view (or a later one). Offer it that NEW-VIEW, which proves the view with its
        2f + 1 VIEW-CHANGEs, so the sender installs it and votes again instead of waiting alone for
        a quorum that has moved on. At most ``MAX_ANSWERS`` times per sender and view (its
        VIEW-CHANGE is retransmitted, and an answer can be lost too), and only for a VIEW-CHANGE whose
        signature verifies (a forged one cannot make us broadcast)."""
        nv = self._installed_nv
        key = (vc.validator, self.view)
        if (not self.active or nv is None or nv.view != self.view or vc.validator == self.index
                or not 0 <= vc.validator < self.n or self._answered.get(key, 0) >= MAX_ANSWERS):
            return []
        try:
            self._verify(vc.validator, view_change_signing_bytes(self.chain_id, vc), vc.signature)
        except InvalidSignature as err:
            raise InvalidMessage(f"bad view-change signature from {vc.validator}") from err
        self._answered[key] = self._answered.get(key, 0) + 1
        return [Broadcast(nv)]

    def _behind_a_quorum_view(self) -> list[Action]:
        """Messages of views above ours from f + 1 distinct validators (so from at least one honest
        one): the others installed a later view whose NEW-VIEW we missed. Start a view change, whose
        VIEW-CHANGE those replicas answer with their NEW-VIEW (``_answer_lagging``)."""
        if not self.active or self.index is None:
            return []
        senders = {m.validator for v, msgs in self._later.items() if v > self.view for m in msgs}
        if len(senders) < self.f + 1:
            return []
        return self._start_view_change(self.view + 1)

    def _add_view_change(self, vc: ViewChange) -> list[Action]:
        self._view_changes.setdefault(vc.new_view, {}).setdefault(vc.validator, vc)
        actions: list[Action] = []
        # §4.5.2: f + 1 replicas want a higher view, so at least one honest one: join the smallest
        higher = {v: d for v, d in self._view_changes.items() if v > self.view}
        senders = {i for d in higher.values() for i in d}
        if self.index is not None and self.index not in senders and len(senders) >= self.f + 1 and higher:
            actions += self._start_view_change(min(higher))
        target = self.view
        vcs = self._view_changes.get(target, {})
        if (not self.active and self.index == self.primary(target) and self.index in vcs
                and len(vcs) >= self.quorum and (self._own_nv is None or self._own_nv.view != target)):
            actions += self._send_new_view(target)
        return actions

    def _select(self, vcs: Sequence[ViewChange]) -> tuple[ViewChange, PreparedCertificate | None]:
        """The highest proven head and the prepared block of the highest view above it (§4.4)."""
        best = max(vcs, key=lambda v: (v.height, v.validator))
        candidates = [
            v.prepared for v in vcs if v.prepared is not None and v.prepared.pre_prepare.seq == best.height + 1
        ]
        chosen = max(candidates, key=lambda p: (p.pre_prepare.view, p.pre_prepare.block_hash), default=None)
        return best, chosen

    def _send_new_view(self, view: int) -> list[Action]:
        if self.index is None or self._sign is None:
            return []
        vcs = tuple(sorted(self._view_changes[view].values(), key=lambda v: v.validator))
        best, chosen = self._select(vcs)
        o = None
        if chosen is not None:
            block = chosen.pre_prepare.block
            seq = best.height + 1
            o = PrePrepare(view, seq, block, self.index,
                           self._sign(self._bytes(PRE_PREPARE, view, seq, block.hash, self.index)))
        nv = NewView(view, vcs, o, self.index, b"")
        nv = dataclasses.replace(nv, signature=self._sign(new_view_signing_bytes(self.chain_id, nv)))
        self._own_nv = nv
        actions: list[Action] = []
        if o is not None:
            self._votes[(PRE_PREPARE, view, o.seq)] = o.block_hash
            actions.append(PersistVote(PRE_PREPARE, view, o.seq, o.block_hash, o.block))
        self._votes[(NEW_VIEW, view, 0)] = ZERO_HASH
        actions += [PersistVote(NEW_VIEW, view, 0, ZERO_HASH), Broadcast(nv)]
        return actions + self._install(nv, best)

    def _conflicting_view_message(self, kind: int, view: int, first: ViewChange | NewView,
                                  second: ViewChange | NewView) -> list[Action]:
        """``second`` is a VIEW-CHANGE (``kind`` VIEW_CHANGE) or NEW-VIEW (NEW_VIEW) for ``view`` from
        the validator that already sent ``first`` for it. A copy changes nothing; different signed
        content under a valid signature is equivocation (an honest replica sends one per view,
        Castro & Liskov §4.2, §4.4): ``Evidence`` (kind, view, seq 0, the two messages' digests
        SHA3-256(encode(unsigned fields)) and signatures). Raises ``InvalidMessage`` for a bad signature."""
        if second.unsigned() == first.unsigned():
            return []
        if isinstance(second, ViewChange):
            signed = view_change_signing_bytes(self.chain_id, second)
        else:
            signed = new_view_signing_bytes(self.chain_id, second)
        try:
            self._verify(second.validator, signed, second.signature)
        except InvalidSignature as err:
            raise InvalidMessage(f"bad {'view-change' if kind == VIEW_CHANGE else 'new-view'} signature "
                                 f"from {second.validator}") from err
        return self._record_evidence(Evidence(kind, view, 0, second.validator, sha3(encode(first.unsigned())),
                                              first.signature, sha3(encode(second.unsigned())), second.signature))

    def _on_new_view(self, nv: NewView) -> list[Action]:
        installed = self._installed_nv
        if (nv.view == self.view and self.active and installed is not None and installed.view == nv.view
                and installed.validator == nv.validator):
            return self._conflicting_view_message(NEW_VIEW, nv.view, installed, nv)
        if nv.view < self.view or (nv.view == self.view and self.active):
            return []
        if nv.validator != self.primary(nv.view):
            raise InvalidMessage(f"new view {nv.view} from {nv.validator}, not its primary")
        try:
            self._verify(nv.validator, new_view_signing_bytes(self.chain_id, nv), nv.signature)
        except InvalidSignature as err:
            raise InvalidMessage("bad new-view signature") from err
        signers = [vc.validator for vc in nv.view_changes]
        if len(set(signers)) != len(signers) or len(signers) < self.quorum:
            raise InvalidMessage("new view without a quorum of distinct view changes")
        for vc in nv.view_changes:
            if vc.new_view != nv.view:
                raise InvalidMessage("new view holds a view change for another view")
            self._check_view_change(vc)
        best, chosen = self._select(nv.view_changes)
        o = nv.pre_prepare
        if chosen is None:
            if o is not None:
                raise InvalidMessage("new view re-proposes a block no view change prepared")
        else:
            expected = chosen.pre_prepare.block_hash
            if o is None or o.view != nv.view or o.seq != best.height + 1 or o.block_hash != expected:
                raise InvalidMessage("new view does not re-propose the prepared block it must")
            self._check_signature(o)
        actions: list[Action] = []
        if self.index is not None:
            self._votes[(NEW_VIEW, nv.view, 0)] = ZERO_HASH
            actions.append(PersistVote(NEW_VIEW, nv.view, 0, ZERO_HASH))
        return actions + self._install(nv, best)

    def _install(self, nv: NewView, best: ViewChange) -> list[Action]:
        self.view = nv.view
        self.active = True
        self._installed_nv = nv
        self._answered.clear()
        for key in [k for k in self._slots if k[0] < nv.view]:
            del self._slots[key]
        for v in [v for v in self._view_changes if v <= nv.view]:
            del self._view_changes[v]
        actions: list[Action] = [ViewInstalled(nv.view)]
        if best.height > self.height:
            actions.append(SyncTo(best.height, best.head_hash, best.certificate))
        replay: list[PrePrepare | Vote] = [nv.pre_prepare] if nv.pre_prepare is not None else []
        replay += self._later.pop(nv.view, [])
        for v in [v for v in self._later if v < nv.view]:
            del self._later[v]
        for m in replay:
            if m.seq > self.next_seq:
                self._future.setdefault(m.seq, []).append(m)
                continue
            try:
                actions += self._note_equivocation(m) + self._apply(m)
            except InvalidMessage:
                continue
        return actions

    # --- checkpoints (§4.3) -------------------------------------------------------------------------

    def _on_checkpoint(self, cp: Checkpoint) -> list[Action]:
        k = self.checkpoint_interval
        proof = self.stable_checkpoint
        if proof is not None and cp.seq == proof.seq:
            # the stable one: a signer of its proof naming another block there equivocated
            first = next((c for c in proof.signatures if c.validator == cp.validator), None)
            if first is None or first.block_hash == cp.block_hash:
                return []
            self._check_checkpoint_signature(cp)
            return self._conflicting_checkpoint(first, cp)
        # bounded by our own height too: a replica that caught up past H must still hear new checkpoints
        if cp.seq <= self.low_watermark or cp.seq % k or cp.seq > max(self.high_watermark, self.height) + k:
            return []
        self._check_checkpoint_signature(cp)
        return self._add_checkpoint(cp)

    def _check_checkpoint_signature(self, cp: Checkpoint) -> None:
        if not 0 <= cp.validator < self.n:
            raise InvalidMessage(f"checkpoint from index {cp.validator} outside the set")
        try:
            self._verify(cp.validator, self._bytes(CHECKPOINT, 0, cp.seq, cp.block_hash, cp.validator), cp.signature)
        except InvalidSignature as err:
            raise InvalidMessage(f"bad checkpoint signature from {cp.validator}") from err

    def _add_checkpoint(self, cp: Checkpoint) -> list[Action]:
        votes = self._checkpoints.setdefault(cp.seq, {})
        first = votes.get(cp.validator)
        if first is not None:
            return self._conflicting_checkpoint(first, cp)
        votes[cp.validator] = cp
        return self._try_stable(cp.seq, cp.block_hash)

    def _conflicting_checkpoint(self, first: Checkpoint, cp: Checkpoint) -> list[Action]:
        """Two verified CHECKPOINTs of one validator naming different blocks at one sequence number are
        evidence (kind ``CHECKPOINT``, view 0); the first one counts."""
        if first.block_hash == cp.block_hash:
            return []
        return self._record_evidence(Evidence(CHECKPOINT, 0, cp.seq, cp.validator, first.block_hash,
                                              first.signature, cp.block_hash, cp.signature))

    def _try_stable(self, seq: int, block_hash: Hash32) -> list[Action]:
        votes = self._checkpoints.get(seq, {})
        matching = sorted((c for c in votes.values() if c.block_hash == block_hash), key=lambda c: c.validator)
        if len(matching) < self.quorum or seq <= self.low_watermark:
            return []
        actions: list[Action] = []
        ours = self._own_checkpoints.get(seq)
        if ours is not None and ours != block_hash:
            actions.append(StateDivergence(seq, ours, block_hash))
        if seq > self.height:
            return actions  # stable elsewhere; once we caught up to it, it is ours too
        self.stable_checkpoint = StableCheckpoint(seq, block_hash, tuple(matching[: self.quorum]))
        cp = self.stable_checkpoint
        for seq in [s for s in self._checkpoints if s <= cp.seq]:
            del self._checkpoints[seq]
        for seq in [s for s in self._own_checkpoints if s < cp.seq]:
            del self._own_checkpoints[seq]
        for seen in [k for k in self._seen if k[2] <= cp.seq]:
            del self._seen[seen]  # below the low watermark nothing is accepted, so nothing is compared
        return [*actions, CheckpointStable(self.stable_checkpoint)]


def quorum_size(n: int) -> int:
    """Votes needed out of ``n`` validators tolerating f = (n - 1) // 3 faults: ``n - f``.

    For n = 3f + 1 this is PBFT's 2f + 1 (§4.2); for other n it still makes any two quorums share
    more than f validators (2(n - f) - n > f), so safety holds whatever the set size.
    """
    return n - (n - 1) // 3


def verify_certificate(
    cert: CommitCertificate, block_hash: Hash32, height: int, chain_id: str, n: int, verifier: Verifier
) -> None:
    """Check that ``cert`` holds ``quorum_size(n)`` (2f + 1) valid COMMIT signatures of distinct validators for
    ``block_hash`` at ``height`` (Castro & Liskov §4.2, committed certificate).

    Raises ``InvalidCertificate``.
    """
    quorum = quorum_size(n)
    if cert.block_hash != block_hash or cert.height != height:
        raise InvalidCertificate("certificate is for another block or height")
    signers = [s.validator for s in cert.signatures]
    if len(set(signers)) != len(signers) or len(signers) < quorum:
        raise InvalidCertificate(f"certificate has {len(set(signers))} distinct signers, needs {quorum}")
    for s in cert.signatures:
        if not 0 <= s.validator < n:
            raise InvalidCertificate(f"signer {s.validator} outside the validator set")
        try:
            verifier(s.validator, vote_signing_bytes(chain_id, COMMIT, cert.view, height, block_hash, s.validator),
                     s.signature)
        except InvalidSignature as err:
            raise InvalidCertificate(f"signature of validator {s.validator} does not verify") from err


def make_verifier(keys: Sequence[tuple[int, bytes]], context: bytes) -> Verifier:
    """A ``Verifier`` over the validator set's ``(scheme_tag, public_key)`` list."""
    from crypto.signatures import verify

    def check(index: int, message: bytes, signature: bytes) -> None:
        scheme, public_key = keys[index]
        verify(scheme, public_key, context, message, signature)

    return check
