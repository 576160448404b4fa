"""Interfaces of the ``state`` package: the key-value store and the authenticated state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from crypto.hashing import Hash32

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

    def close(self) -> None:
        """Release the store; later calls are errors."""
        ...


class AuthenticatedState(Protocol):
    """A key-value state with a Merkle root over its contents, versioned by block height."""

    @property
    def root(self) -> Hash32:
        """The root over the committed contents."""
        ...

    def get(self, key: bytes) -> bytes | None:
        """The committed value of ``key``, or None."""
        ...

    def prepare(self, updates: Mapping[bytes, bytes | None]) -> tuple[Hash32, list[WriteOp]]:
        """The root the state would have after ``updates``, and the store writes that make it so.

        Nothing changes until the writes are applied (in the block's batch) and ``applied`` is called.
        """
        ...

    def applied(self, root: Hash32) -> None:
        """Tell the state that the writes ``prepare`` returned for ``root`` are now durable."""
        ...
