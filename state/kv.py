"""Key-value stores: LevelDB through plyvel, and an in-memory store with the same semantics."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import plyvel

from state.abc import WriteOp
from state.exceptions import StateError

DEFAULT_BLOCK_CACHE_MIB = 64
"""LevelDB's block cache (its default is 8 MiB, a small share of a state of 10^6 keys)."""
DEFAULT_WRITE_BUFFER_MIB = 16
"""LevelDB's memtable (its default, 4 MiB, is about two blocks of state writes: a level-0 table every other block)."""
DEFAULT_BLOOM_FILTER_BITS = 10
"""Bits per key of LevelDB's Bloom filters (about 1% false positives); LevelDB's default is no filter."""
COMPRESSIONS = ("none", "snappy")
"""LevelDB's table-block compressions."""
DEFAULT_COMPRESSION = "none"
"""LevelDB's default is snappy, but most bytes stored here are ML-DSA signatures and public keys and
SHA3 hashes, which do not compress, and LevelDB compresses and decompresses every table block again
at each compaction: with snappy its background thread took 200-300 of a node's 1,700-2,000 CPU ticks
at 450 tx/s, without it 80-120, and the validators' CPU per finalized transfer fell about 8%
(``qenex-devnet bench --rate 450 --duration 40``, alternating runs)."""


class LevelDBStore:
    """A ``KeyValueStore`` on LevelDB (plyvel). Batches are LevelDB write batches (atomic)."""

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        block_cache_mib: int = DEFAULT_BLOCK_CACHE_MIB,
        write_buffer_mib: int = DEFAULT_WRITE_BUFFER_MIB,
        bloom_filter_bits: int = DEFAULT_BLOOM_FILTER_BITS,
        compression: str = DEFAULT_COMPRESSION,
    ) -> None:
        """Open (or create) the database at ``path``. Raises ``StateError`` if it cannot be opened.

        ``block_cache_mib``: LevelDB's cache of uncompressed table blocks. ``write_buffer_mib``: the
        memtable (and log) size at which LevelDB writes a table. ``bloom_filter_bits``: bits per key of
        the tables' Bloom filters (0: none); a read then looks into one table per level, not every
        table of level 0 and one of each other level. ``compression``: of the table blocks written
        from now on, one of ``COMPRESSIONS`` (each block records its own, so a database written with
        the other reads as before). All four are settings of the open database, not of its format: a
        database written with others opens with these. Raises ``ValueError`` for an unknown
        compression.
        """
        if compression not in COMPRESSIONS:
            raise ValueError(f"LevelDB compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        try:
            self._db = plyvel.DB(
                str(path),
                create_if_missing=create,
                paranoid_checks=True,
                lru_cache_size=block_cache_mib << 20,
                write_buffer_size=write_buffer_mib << 20,
                bloom_filter_bits=bloom_filter_bits,
                compression=None if compression == "none" else compression,
            )
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
            put, delete = batch.put, batch.delete
            for key, value in ops:
                if value is None:
                    delete(key)
                else:
                    put(key, value)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``prefix``, in key order."""
        yield from self._db.iterator(prefix=prefix)

    def iterate_range(self, start: bytes, stop: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``start <= key < stop``, ascending (descending if ``reverse``).

        A LevelDB iterator, which reads from an implicit snapshot. Reverse scans bound ``start`` here, not
        in plyvel: plyvel 1.5.1 skips the key equal to ``start`` when it is the only key of a reverse range.
        """
        if start >= stop:
            return
        if not reverse:
            yield from self._db.iterator(start=start, stop=stop)
            return
        for key, value in self._db.iterator(stop=stop, reverse=True):
            if key < start:
                return
            yield key, value

    def close(self) -> None:
        """Close the database (idempotent)."""
        if not self._db.closed:
            self._db.close()


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"keys and values are bytes, not {type(value).__name__}")
    return bytes(value)


class MemoryStore:
    """An in-memory ``KeyValueStore`` for tests: same atomicity, no durability.

    A dict plus the sorted list of its keys, so prefix and range scans cost O(log n + results).
    """

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
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
            data, keys = self._data, self._keys
            for key, value in staged:
                if value is None:
                    if data.pop(key, None) is not None:
                        del keys[bisect.bisect_left(keys, key)]
                else:
                    if key not in data:
                        bisect.insort(keys, key)
                    data[key] = value

    def _snapshot(self, start: bytes, stop: bytes | None) -> list[tuple[bytes, bytes]]:
        with self._lock:
            keys = self._keys
            lo = bisect.bisect_left(keys, start)
            hi = len(keys) if stop is None else bisect.bisect_left(keys, stop, lo)
            return [(k, self._data[k]) for k in keys[lo:hi]]

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``prefix``, in key order (a snapshot)."""
        yield from self._snapshot(prefix, _prefix_end(prefix))

    def iterate_range(self, start: bytes, stop: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key, value)`` with ``start <= key < stop``, ascending (descending if ``reverse``); a snapshot."""
        if start >= stop:
            return
        items = self._snapshot(start, stop)
        yield from reversed(items) if reverse else items

    def close(self) -> None:
        """Nothing to release."""


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with ``prefix`` (None: no such key, scan to the end)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
