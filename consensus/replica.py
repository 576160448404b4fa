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
  two conflicting signed messages of one validator become ``Evidence``.

View change, checkpoints and watermarks (§4.3, §4.4) come next; the state is already keyed by
(view, seq) so they fit on top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from consensus.exceptions import InvalidCertificate, InvalidMessage
from consensus.messages import (
    COMMIT,
    PRE_PREPARE,
    PREPARE,
    Evidence,
    PrePrepare,
    Vote,
    vote_signing_bytes,
)
from crypto.exceptions import InvalidSignature
from crypto.hashing import Hash32
from state.types import Block, CommitCertificate, ValidatorSignature

Verifier = Callable[[int, bytes, bytes], None]
"""``verify(validator_index, message, signature)``: raises ``InvalidSignature`` unless it holds."""
Signer = Callable[[bytes], bytes]
"""Signs vote bytes with this replica's consensus key (context ``Context.CONSENSUS``)."""

DEFAULT_WINDOW = 16
"""How many sequence numbers above the next one are buffered (the later high watermark)."""


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broadcast:
    """Send ``message`` (a ``PrePrepare`` or ``Vote``) to every other validator."""

    message: PrePrepare | Vote


@dataclass(frozen=True)
class PersistVote:
    """Durably record that this replica signed ``kind`` for ``block_hash`` at (view, seq).

    Must be written before the next action (the broadcast of that vote) is carried out.
    """

    kind: int
    view: int
    seq: int
    block_hash: Hash32


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
class RecordEvidence:
    """A validator equivocated; keep ``evidence``."""

    evidence: Evidence


Action = Broadcast | PersistVote | ValidateBlock | CommitBlock | RecordEvidence


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
    """One validator's PBFT state machine (normal case). See the module docstring."""

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
    ) -> None:
        """Start at committed ``height`` with head ``head_hash``.

        ``index`` is this validator's position (None for an observer that never votes);
        ``votes`` are the records of earlier ``PersistVote`` actions, keyed (kind, view, seq).
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

    # --- roles ------------------------------------------------------------------------------------

    def primary(self, view: int | None = None) -> int:
        """The primary of ``view`` (default: the current view): ``view mod n``."""
        return (self.view if view is None else view) % self.n

    @property
    def is_primary(self) -> bool:
        """Whether this replica is the primary of the current view."""
        return self.index == self.primary()

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
            raise ValueError("only the primary proposes")
        if block.header.height != seq or block.header.prev_hash != self.head_hash or block.header.view != self.view:
            raise ValueError("the block does not extend the head in this view")
        earlier = self._votes.get((PRE_PREPARE, self.view, seq))
        if earlier is not None and earlier != block.hash:
            raise ValueError("already proposed another block for this view and sequence number")
        if self.proposal_pending():
            raise ValueError("a proposal for this sequence number is already out")
        msg = PrePrepare(self.view, seq, block, self.index, self._sign(self._bytes(PRE_PREPARE, self.view, seq,
                                                                                        block.hash, self.index)))
        slot = self._slot(self.view, seq)
        slot.pre_prepare = msg
        slot.validated = True
        actions: list[Action] = [PersistVote(PRE_PREPARE, self.view, seq, block.hash), Broadcast(msg)]
        self._votes[(PRE_PREPARE, self.view, seq)] = block.hash
        actions += self._advance(self.view, seq)
        return actions

    def receive(self, message: PrePrepare | Vote) -> list[Action]:
        """A message arrived from a peer. Raises ``InvalidMessage`` if it is malformed or forged."""
        if message.view != self.view or message.seq <= self.height:
            return []  # another view, or already decided
        if message.seq > self.height + 1 + self.window:
            return []  # beyond the window; the node's catch-up covers it
        self._check_signature(message)
        actions = self._note_equivocation(message)
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

    def synced(self, height: int, head_hash: Hash32) -> list[Action]:
        """The node committed blocks up to ``height`` by catch-up: move on to ``height + 1``."""
        if height <= self.height:
            return []
        return self._committed(height, head_hash)

    def retransmit(self) -> list[PrePrepare | Vote]:
        """This replica's own messages for the undecided ``next_seq``, to send again.

        PBFT retransmits on timeout (Castro & Liskov §4.2 assumes eventual delivery): a peer that
        connected late or dropped a frame still gets the pre-prepare and the votes it needs.
        """
        slot = self._slots.get((self.view, self.next_seq))
        if slot is None or self.index is None:
            return []
        out: list[PrePrepare | Vote] = []
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

    def _note_equivocation(self, m: PrePrepare | Vote) -> list[Action]:
        kind = PRE_PREPARE if isinstance(m, PrePrepare) else m.kind
        key = (kind, m.view, m.seq, m.validator)
        first = self._seen.get(key)
        if first is None:
            self._seen[key] = (m.block_hash, m.signature)
            return []
        if first[0] == m.block_hash:
            return []
        ev = Evidence(kind, m.view, m.seq, m.validator, first[0], first[1], m.block_hash, m.signature)
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
        if header.height != m.seq or header.view != m.view or header.prev_hash != self.head_hash:
            raise InvalidMessage(f"pre-prepare for seq {m.seq} does not extend our head")
        if header.proposer != m.validator or header.chain_id != self.chain_id:
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
        prepared = len(self._matching(slot.prepares, block_hash)) >= self.quorum - 1
        if prepared and not slot.sent_commit and self.index is not None:
            slot.sent_commit = True
            actions += self._vote(COMMIT, view, seq, block_hash, slot.commits)
        commits = self._matching(slot.commits, block_hash)
        if prepared and len(commits) >= self.quorum:
            chosen = sorted(commits, key=lambda v: v.validator)[: self.quorum]
            cert = CommitCertificate(
                seq, view, block_hash, tuple(ValidatorSignature(v.validator, v.signature) for v in chosen)
            )
            actions.append(CommitBlock(slot.pre_prepare.block, cert))
            actions += self._committed(seq, block_hash)
        return actions

    def _committed(self, height: int, head_hash: Hash32) -> list[Action]:
        self.height = height
        self.head_hash = head_hash
        for key in [k for k in self._slots if k[1] <= height]:
            del self._slots[key]
        for seen in [k for k in self._seen if k[2] <= height]:
            del self._seen[seen]
        for kv in [k for k in self._votes if k[2] < height - self.window]:
            del self._votes[kv]
        for seq in [s for s in self._future if s <= height]:
            del self._future[seq]
        actions: list[Action] = []
        for m in self._future.pop(self.next_seq, []):
            try:
                actions += self._apply(m)
            except InvalidMessage:
                continue  # a buffered pre-prepare that no longer extends the head
        return actions


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
