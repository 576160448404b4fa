"""The mempool: admitted transactions waiting for a block, in per-sender nonce order.

Admission (``Node.admit``) checks decoding, size, signature, chain id, gas and the nonce window
before ``add``; here: capacity (count and bytes), duplicates, one pending transaction per
(sender, nonce). ``ready`` gives, per sender, the run of consecutive nonces starting at the
account's next nonce (gaps are held back until filled), senders in order of arrival.

Priority. Transactions carry no fee, so a pending transaction is either *executable* (every nonce
from the account's next one up to it is pending: it can go into the next block) or *held back*
(behind a gap). Executable ones outrank held-back ones; within a class the older one stays.

* Replacement: a transaction with the sender and nonce of a pending one replaces it only while the
  pending one is held back. An executable one may already be in a proposal on some validator, so
  it stays until committed or expired (``nonce already pending``). (Besu and geth replace by a fee
  bump; with no fee, this rule keeps replacement from racing block production.)
* Capacity: when a new transaction does not fit (count or bytes), held-back transactions are
  evicted for an executable newcomer, oldest first, each time the highest nonce of its sender (so
  no gap opens behind a transaction that stays). Otherwise the newcomer is refused
  (``mempool full``): nothing executable is ever evicted for a newcomer.
* Time to live: ``expire`` drops transactions pending longer than the TTL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from contracts.exceptions import TxRejected
from crypto.hashing import Hash32
from state.types import Transaction


@dataclass
class _Entry:
    tx: Transaction
    size: int
    arrival: int
    raw: bytes = b""
    gossiped_at: float = 0.0
    added_at: float = 0.0


class Mempool:
    """Pending transactions by sender and nonce (see module docstring)."""

    def __init__(self, *, max_txs: int, max_bytes: int, nonce_window: int) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.nonce_window = nonce_window
        self._by_hash: dict[Hash32, _Entry] = {}
        self._by_wire_id: dict[bytes, _Entry] = {}
        """The same entries by ``Transaction.wire_id`` (compact proposals name transactions by it)."""
        self.evicted: list[Hash32] = []
        """Hashes evicted for higher-priority transactions since the owner last cleared the list."""
        self.replaced: list[Hash32] = []
        """Hashes replaced by another transaction of the same sender and nonce, likewise."""
        self._by_sender: dict[bytes, dict[int, _Entry]] = {}
        self._bytes = 0
        self._arrivals = 0
        self._base: dict[bytes, int] = {}
        """Each pending sender's account nonce, as of its last ``add`` or ``prune``."""

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    @property
    def size_bytes(self) -> int:
        """Bytes of all pending transaction encodings."""
        return self._bytes

    def get(self, tx_hash: bytes) -> Transaction | None:
        """The pending transaction with ``tx_hash``, or None."""
        entry = self._by_hash.get(Hash32(tx_hash))
        return None if entry is None else entry.tx

    def by_wire_id(self, wire_id: bytes) -> Transaction | None:
        """The pending transaction whose exact encoding has ``wire_id`` (``Transaction.wire_id``), or None."""
        entry = self._by_wire_id.get(wire_id)
        return None if entry is None else entry.tx

    def holds_verified(self, tx: Transaction) -> bool:
        """Whether this exact transaction (body and signature) was admitted, so it was verified."""
        entry = self._by_hash.get(tx.hash)
        return entry is not None and entry.tx.signature == tx.signature

    def executable(self, sender: bytes, nonce: int) -> bool:
        """Whether every nonce of ``sender`` from its account nonce below ``nonce`` is pending."""
        pending = self._by_sender.get(sender, {})
        base = self._base.get(sender, 0)
        return all(n in pending for n in range(base, nonce))

    def add(self, tx: Transaction, size: int, account_nonce: int, *, raw: bytes = b"", now: float = 0.0) -> bool:
        """Admit a verified ``tx`` of ``size`` encoded bytes at time ``now`` (seconds); False if it is
        already pending. ``account_nonce`` is the sender's committed next nonce.

        Replaces a held-back transaction of the same sender and nonce, and evicts held-back
        transactions to make room for an executable one (see the module docstring).
        Raises ``TxRejected``: ``nonce too low``, ``nonce too high`` (beyond the window),
        ``nonce already pending`` (an executable transaction holds that nonce), ``mempool full``.
        """
        if tx.hash in self._by_hash:
            return False
        body = tx.body
        if body.nonce < account_nonce:
            raise TxRejected("nonce too low", f"next nonce is {account_nonce}, got {body.nonce}")
        if body.nonce >= account_nonce + self.nonce_window:
            raise TxRejected("nonce too high", f"next nonce is {account_nonce}; window {self.nonce_window}")
        self._base[body.sender] = account_nonce
        pending = self._by_sender.get(body.sender, {})
        executable = self.executable(body.sender, body.nonce)
        replaced = pending.get(body.nonce)
        if replaced is not None and executable:
            raise TxRejected("nonce already pending",
                             f"transaction 0x{replaced.tx.hash.hex()} holds nonce {body.nonce} and is executable; "
                             "it can be replaced only while held back behind a nonce gap")
        freed = (1, replaced.size) if replaced is not None else (0, 0)
        victims = self._victims(size, freed, body.sender) if executable else []
        count = len(self._by_hash) - freed[0] - len(victims) + 1
        total = self._bytes - freed[1] - sum(v.size for v in victims) + size
        if count > self.max_txs or total > self.max_bytes:
            if body.sender not in self._by_sender:
                self._base.pop(body.sender, None)
            raise TxRejected("mempool full", f"{len(self._by_hash)} transactions, {self._bytes} bytes pending; "
                             "nothing of lower priority to evict")
        if replaced is not None:
            self._drop(replaced.tx.hash)
            self.replaced.append(replaced.tx.hash)
        for v in victims:
            self._drop(v.tx.hash)
            self.evicted.append(v.tx.hash)
        self._arrivals += 1
        entry = _Entry(tx, size, self._arrivals, raw, now, now)
        self._by_hash[tx.hash] = entry
        self._by_wire_id[tx.wire_id] = entry
        self._by_sender.setdefault(body.sender, {})[body.nonce] = entry
        self._base[body.sender] = account_nonce
        self._bytes += size
        return True

    def _victims(self, size: int, freed: tuple[int, int], newcomer: bytes) -> list[_Entry]:
        """Held-back transactions to evict, in order, so that ``size`` more bytes and one more
        transaction fit; stops early if there are not enough (the caller then refuses)."""
        count, total = len(self._by_hash) - freed[0], self._bytes - freed[1]
        if count + 1 <= self.max_txs and total + size <= self.max_bytes:
            return []
        tails = {s: dict(p) for s, p in self._by_sender.items() if s != newcomer}
        out: list[_Entry] = []
        while count + 1 > self.max_txs or total + size > self.max_bytes:
            best: _Entry | None = None
            for sender, pending in tails.items():
                if not pending:
                    continue
                tail = pending[max(pending)]
                base = self._base.get(sender, 0)
                if all(n in pending for n in range(base, tail.tx.body.nonce)):
                    continue  # executable: never evicted for a newcomer
                if best is None or tail.arrival < best.arrival:
                    best = tail
            if best is None:
                break
            del tails[best.tx.body.sender][best.tx.body.nonce]
            out.append(best)
            count, total = count - 1, total - best.size
        return out

    def expire(self, now: float, ttl: float) -> list[Hash32]:
        """Drop the transactions added ``ttl`` seconds or more before ``now``; returns their hashes."""
        old = [h for h, e in self._by_hash.items() if now - e.added_at >= ttl]
        for h in old:
            self._drop(h)
        return old

    def ready(self, limit: int, account_nonce: Callable[[bytes], int] | None = None) -> list[Transaction]:
        """Up to ``limit`` transactions that can go into the next block, in a valid order.

        ``account_nonce`` gives each sender's committed next nonce; without it, the nonce recorded
        at the sender's last ``add`` or ``prune`` is used (the node prunes every committed block's
        senders, so that record is current and no state is read).
        """
        runs: list[tuple[int, list[Transaction]]] = []
        for sender, by_nonce in self._by_sender.items():
            nonce = account_nonce(sender) if account_nonce is not None else self._base.get(sender, 0)
            run = []
            while nonce in by_nonce:
                run.append(by_nonce[nonce].tx)
                nonce += 1
            if run:
                runs.append((by_nonce[run[0].body.nonce].arrival, run))
        runs.sort(key=lambda r: r[0])
        out: list[Transaction] = []
        for _, run in runs:
            out.extend(run[: limit - len(out)])
            if len(out) >= limit:
                break
        return out

    def fills_gap(self, sender: bytes, nonce: int) -> bool:
        """Whether a transaction of ``sender`` with ``nonce`` would fill a nonce gap: not pending
        itself, with pending transactions of higher nonce waiting behind it (refusing it would
        strand them)."""
        pending = self._by_sender.get(sender)
        return bool(pending) and nonce not in pending and max(pending) > nonce  # type: ignore[arg-type]

    def has_executable(self) -> bool:
        """Whether some pending transaction could go into the next block (its sender's next nonce,
        as recorded at the last ``add`` or ``prune``, is pending)."""
        return any(self._base.get(sender, 0) in by_nonce for sender, by_nonce in self._by_sender.items())

    def regossip(self, now: float, older_than: float, limit: int) -> list[bytes]:
        """Raw bytes of up to ``limit`` transactions last gossiped ``older_than`` seconds before
        ``now`` (oldest first); marks them gossiped at ``now``.

        Gossip is best effort (a peer may have been disconnected, or its queue full), so pending
        transactions are offered again until a block takes them.
        """
        due = [e for e in self._by_hash.values() if e.raw and now - e.gossiped_at >= older_than]
        due.sort(key=lambda e: e.arrival)
        for e in due[:limit]:
            e.gossiped_at = now
        return [e.raw for e in due[:limit]]

    def pending_raw(self, limit: int) -> list[bytes]:
        """Raw bytes of up to ``limit`` pending transactions, oldest first (for a peer that connects)."""
        entries = sorted(self._by_hash.values(), key=lambda e: e.arrival)
        return [e.raw for e in entries[:limit] if e.raw]

    def clear(self) -> list[Hash32]:
        """Drop every pending transaction; returns their hashes, oldest first."""
        hashes = [e.tx.hash for e in sorted(self._by_hash.values(), key=lambda e: e.arrival)]
        self._by_hash.clear()
        self._by_wire_id.clear()
        self._by_sender.clear()
        self._base.clear()
        self._bytes = 0
        return hashes

    def remove(self, txs: Iterable[Transaction]) -> None:
        """Drop ``txs`` (committed or invalid) by hash."""
        for tx in txs:
            self._drop(tx.hash)

    def prune(self, account_nonce: Callable[[bytes], int], senders: Iterable[bytes]) -> None:
        """Drop the pending transactions of ``senders`` whose nonce is now used."""
        for sender in set(senders):
            by_nonce = self._by_sender.get(sender)
            if not by_nonce:
                continue
            nonce = account_nonce(sender)
            self._base[sender] = nonce
            for stale in [e for n, e in by_nonce.items() if n < nonce]:
                self._drop(stale.tx.hash)

    def _drop(self, tx_hash: Hash32) -> None:
        entry = self._by_hash.pop(tx_hash, None)
        if entry is None:
            return
        del self._by_wire_id[entry.tx.wire_id]
        self._bytes -= entry.size
        sender = entry.tx.body.sender
        by_nonce = self._by_sender[sender]
        del by_nonce[entry.tx.body.nonce]
        if not by_nonce:
            del self._by_sender[sender]
            self._base.pop(sender, None)
