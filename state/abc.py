"""Interfaces of the ``state`` package: the key-value store and the authenticated state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from crypto.hashing import Hash32
from state.proof import StateProof

WriteOp = tuple[bytes, bytes | None]
"""One write of a batch: ``(key, value)``, or ``(key, None)`` to delete."""


class KeyValueStore(Protocol):
    """A byte-keyed store with atomic batches (model: py-evm ``eth/db/atomic.py``)."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        ...

    def write(self, ops: Iterable[WriteOp], *, sync: bool = True) -> None:
        """Apply every op atomically: after a crash either all of them are there or none.

        ``sync=True`` returns only once the batch is durable (fsync of the log).
        """
        ...

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        ...

    def iterate_range(self, start: bytes, stop: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``start <= key < stop``, in key order (descending if ``reverse``).

        A snapshot, like ``iterate``. ``next(iterate_range(prefix, bound, reverse=True), None)`` is a
        seek for the greatest key below ``bound`` (the newest version of a versioned key).
        """
        ...

    def close(self) -> None:
        """Release the store; later calls are errors."""
        ...


class AuthenticatedState(Protocol):
    """A key-value state with a Merkle root over its contents, versioned by block height.

    Version ``v`` is the state after block ``v`` (version 0: the genesis state). Reads and proofs
    work at any version from ``oldest_version`` to ``version``; older ones are pruned.
    """

    @property
    def root(self) -> Hash32:
        """The root over the newest committed contents."""
        ...

    @property
    def version(self) -> int:
        """The newest committed version (block height)."""
        ...

    @property
    def oldest_version(self) -> int:
        """The oldest version still readable (older ones were pruned)."""
        ...

    def root_at(self, version: int) -> Hash32:
        """The root of ``version``. Raises ``VersionUnavailable``."""
        ...

    def get(self, key: bytes, version: int | None = None) -> bytes | None:
        """The value of ``key`` at ``version`` (default: the newest), or None.

        Raises ``VersionUnavailable``.
        """
        ...

    def prove(self, key: bytes, version: int | None = None) -> tuple[bytes | None, StateProof]:
        """The value of ``key`` at ``version`` (default: the newest) and a proof of it (or of its absence)
        against ``root_at(version)``, checked by ``state.proof.verify_proof``.

        Raises ``VersionUnavailable``.
        """
        ...

    def prepare(self, updates: Mapping[bytes, bytes | None], version: int) -> tuple[Hash32, list[WriteOp]]:
        """The root ``version`` would have after ``updates`` (None deletes), and the store writes that make it so.

        ``version`` must be ``self.version + 1``. Nothing changes until the writes are applied (in the
        block's batch) and ``applied`` is called.
        """
        ...

    def applied(self, root: Hash32) -> None:
        """Tell the state that the writes ``prepare`` returned for ``root`` are now durable."""
        ...

    def prune(self, below: int, limit: int) -> int:
        """Delete, in one unsynced batch of at most ``limit`` + 1 deletions, what only versions below
        ``below`` need; returns the number of deletions (0 when there is nothing left to prune).

        Bounded so that a node can call it between block commits without delaying them.
        """
        ...
