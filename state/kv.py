"""Key-value stores: LevelDB through plyvel, and an in-memory store with the same semantics."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import plyvel

from state.abc import WriteOp
from state.exceptions import StateError


class LevelDBStore:
    """A ``KeyValueStore`` on LevelDB (plyvel). Batches are LevelDB write batches (atomic)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """Open (or create) the database at ``path``. Raises ``StateError`` if it cannot be opened."""
        try:
            self._db = plyvel.DB(str(path), create_if_missing=create, paranoid_checks=True)
        except plyvel.Error as err:
            raise StateError(f"cannot open LevelDB at {path}: {err}") from err
        self.path = Path(path)

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key`` or None."""
        value: bytes | None = self._db.get(key)
        return value

    def write(self, ops: Iterable[WriteOp], *, sync: bool = True) -> None:
        """Apply ``ops`` in one LevelDB write batch (``sync`` fsyncs the log before returning).

        ``transaction=True``: if building the batch raises, nothing is written.
        """
        with self._db.write_batch(sync=sync, transaction=True) as batch:
            for key, value in ops:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``prefix``, in key order."""
        yield from self._db.iterator(prefix=prefix)

    def close(self) -> None:
        """Close the database (idempotent)."""
        if not self._db.closed:
            self._db.close()


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"keys and values are bytes, not {type(value).__name__}")
    return bytes(value)


class MemoryStore:
    """An in-memory ``KeyValueStore`` for tests: same atomicity, no durability."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key`` or None."""
        return self._data.get(key)

    def write(self, ops: Iterable[WriteOp], *, sync: bool = True) -> None:
        """Apply ``ops`` atomically: all are checked and converted first, then applied under a lock.

        Raises ``TypeError`` (nothing applied) for a key or value that is not bytes-like.
        """
        staged = [(_as_bytes(k), None if v is None else _as_bytes(v)) for k, v in ops]
        with self._lock:
            for key, value in staged:
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``prefix``, in key order (a snapshot)."""
        with self._lock:
            items = sorted((k, v) for k, v in self._data.items() if k.startswith(prefix))
        yield from items

    def close(self) -> None:
        """Nothing to release."""
