"""The mempool: admitted transactions waiting for a block, in per-sender nonce order.

Admission (``Node.admit``) checks decoding, size, signature, chain id, gas and the nonce window
before ``add``; here: capacity (count and bytes), duplicates, one pending transaction per
(sender, nonce). ``ready`` gives, per sender, the run of consecutive nonces starting at the
account's next nonce (gaps are held back until filled), senders in order of arrival.
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


class Mempool:
    """Pending transactions by sender and nonce (see module docstring)."""

    def __init__(self, *, max_txs: int, max_bytes: int, nonce_window: int) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.nonce_window = nonce_window
        self._by_hash: dict[Hash32, _Entry] = {}
        self._by_sender: dict[bytes, dict[int, _Entry]] = {}
        self._bytes = 0
        self._arrivals = 0

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

    def holds_verified(self, tx: Transaction) -> bool:
        """Whether this exact transaction (body and signature) was admitted, so it was verified."""
        entry = self._by_hash.get(tx.hash)
        return entry is not None and entry.tx.signature == tx.signature

    def add(self, tx: Transaction, size: int, account_nonce: int, *, raw: bytes = b"", now: float = 0.0) -> bool:
        """Admit a verified ``tx`` of ``size`` encoded bytes; False if it is already pending.

        Raises ``TxRejected``: ``nonce too low``, ``nonce too high`` (beyond the window),
        ``nonce already pending`` (another transaction holds that nonce), ``mempool full``.
        """
        if tx.hash in self._by_hash:
            return False
        body = tx.body
        if body.nonce < account_nonce:
            raise TxRejected("nonce too low", f"next nonce is {account_nonce}, got {body.nonce}")
        if body.nonce >= account_nonce + self.nonce_window:
            raise TxRejected("nonce too high", f"next nonce is {account_nonce}; window {self.nonce_window}")
        pending = self._by_sender.get(body.sender, {})
        if body.nonce in pending:
            raise TxRejected("nonce already pending", f"another transaction of this sender holds nonce {body.nonce}")
        if len(self._by_hash) >= self.max_txs or self._bytes + size > self.max_bytes:
            raise TxRejected("mempool full", f"{len(self._by_hash)} transactions, {self._bytes} bytes pending")
        self._arrivals += 1
        entry = _Entry(tx, size, self._arrivals, raw, now)
        self._by_hash[tx.hash] = entry
        self._by_sender.setdefault(body.sender, {})[body.nonce] = entry
        self._bytes += size
        return True

    def ready(self, limit: int, account_nonce: Callable[[bytes], int]) -> list[Transaction]:
        """Up to ``limit`` transactions that can go into the next block, in a valid order."""
        runs: list[tuple[int, list[Transaction]]] = []
        for sender, by_nonce in self._by_sender.items():
            nonce = account_nonce(sender)
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
            for stale in [e for n, e in by_nonce.items() if n < nonce]:
                self._drop(stale.tx.hash)

    def _drop(self, tx_hash: Hash32) -> None:
        entry = self._by_hash.pop(tx_hash, None)
        if entry is None:
            return
        self._bytes -= entry.size
        sender = entry.tx.body.sender
        by_nonce = self._by_sender[sender]
        del by_nonce[entry.tx.body.nonce]
        if not by_nonce:
            del self._by_sender[sender]
