"""The authenticated state: a versioned Jellyfish Merkle Tree over a ``KeyValueStore``.

Design: Z. Gao, Y. Hu, Q. Wu, "Jellyfish Merkle Tree", Diem Association whitepaper, 2021
(https://developers.diem.com/papers/jellyfish-merkle-tree/2021-01-14.pdf), and Diem's
``storage/jellyfish-merkle``. As there:

* a radix-16 Merkle tree over ``SHA3-256(key)``; a subtree holding a single key is collapsed into that
  key's leaf, so a path is only as deep as needed to tell keys apart (about log16(n) nodes);
* nodes are immutable and stored under their *node key* ``(version, nibble path)``; a block's updates
  write new nodes at version = block height and leave every older version readable (copy on write);
* values are stored apart from the tree, under ``(key hash, version that wrote them)``, like Diem's
  value table; a leaf is not a stored node but an entry of its parent, so a leaf that moves up or down
  (a subtree collapsing or splitting) costs no write and no read;
* each node or value that a version replaces is listed in a *stale index* under that version, so that
  pruning the versions below a retention window is a walk over those lists, never a scan of the tree.

Hashing and proofs are defined in ``state.proof`` (one hash call per internal node; see there how that
differs from Diem's binary hashing inside a node); this module does not change them. Each block's
updates are sorted by key hash and applied in one top-down pass over the touched paths: every dirty
node is read once (from memory for the nodes of the newest version, see ``cache_nodes``), rebuilt
once and hashed once, and no leaf is ever read, so a block costs O(touched keys x log16(keys)) hashes
whatever the size of the state.

Store layout, format 2 (versions are 8-byte big-endian; a nibble path is one byte per nibble, values
0..15, from the root down, so the path of a node at depth ``d`` is ``d`` bytes)::

    j/n/<version><path>  -> internal node: 0x02 || leafmap(2) || bitmap(2) || child hashes (32 each)
                            || child versions (8 each) || key hashes of the leaf children (32 each)
    j/v/<key hash><version> -> the value the key took at that version (what a leaf of it refers to)
    j/l/<key hash>       -> the value of the key in the newest version: the latest-value index
    j/r/<version>        -> root of that version: empty for the empty tree, else hash(32) || version(8)
                            || 0x00 for an internal node, hash(32) || version(8) || 0x01 || key hash(32)
                            for a tree of one leaf
    j/s/<version>        -> the node and value keys that version made stale, each as length(1) || key
    j/m/prune            -> pruning progress: next stale list(8) || position in it(8)
    j/m/format           -> the layout's format number, one byte (2); written with the first version

Children of an internal node are listed in nibble order; bit ``i`` of ``bitmap`` marks child ``i``, bit
``i`` of ``leafmap`` says that child is a leaf (both 16 bits, big-endian). The bitmap and the hashes
are adjacent, in the order the node's hash takes them, so hashing a node is one slice of its record.
A child's version is that of its node key (internal) or of its value record (leaf). The latest-value
index holds exactly the keys of the newest version and is written in the same batch as the version
(pruning never touches it), so ``get`` of the newest version is one store read; reads of older
versions walk that version's path to its leaf's value record. Format 1 (leaves stored as nodes, no
latest-value index) is not read: such a store is refused with ``StoreCorrupted``.

The per-block update has two twins: ``state/_jmt_core.c`` (compiled; what nodes run) and the
pure-Python ``_prepare_python`` here (``JellyfishState(compiled=False)``). They return the same root and
the same writes, byte for byte and in the same order (``tests/test_jmt_core.py``). The C twin defers the
hashes of the new internal nodes to the end of the walk and computes them children first, four at a
time with AVX2 where the processor has it (SHA3-256 written out there from FIPS 202).

In memory: the internal nodes of the newest version, by nibble path (a version has one node per path),
as written by ``applied`` or loaded by reads, up to ``cache_nodes`` (all of them for a state of about
10^6 keys: about 120 MiB), so that a block reads nothing from the store and ``applied`` overwrites
the nodes it replaces in place (reads of older versions go to the store); and the latest values of
the keys read or written most recently, up to ``cache_values``. Both change only in ``applied`` (and
by loading nodes of the newest version), so a prepared version that is never applied (a competing
proposal) leaves them right.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from crypto.hashing import Hash32
from state import _jmt_core
from state.abc import KeyValueStore, WriteOp
from state.exceptions import StateError, StoreCorrupted, VersionUnavailable
from state.proof import (
    EMPTY_ROOT,
    INTERNAL_DOMAIN,
    LEAF_DOMAIN,
    ProofLeaf,
    ProofLevel,
    StateProof,
    internal_hash,
)

NODE_PREFIX = b"j/n/"
VALUE_PREFIX = b"j/v/"
LATEST_PREFIX = b"j/l/"
ROOT_PREFIX = b"j/r/"
STALE_PREFIX = b"j/s/"
PRUNE_KEY = b"j/m/prune"
FORMAT_KEY = b"j/m/format"
FORMAT = 2
"""The store layout this module reads and writes (module docstring)."""

DEFAULT_CACHE_NODES = 400_000
"""Internal nodes kept in memory: all of a tree of about 10^6 keys (about 360,000 nodes, 130 MiB)."""
DEFAULT_CACHE_VALUES = 100_000
"""Latest values kept in memory for ``get`` (the keys read or written most recently)."""

_sha3 = hashlib.sha3_256
"""SHA3-256 straight from hashlib: ``crypto.hashing.sha3`` costs two Python calls more per hash."""
_TAG = 2
_TAG_BYTE = b"\x02"
_FORMAT_RECORD = bytes((FORMAT,))
_NIBBLES = bytes.maketrans(b"0123456789abcdef", bytes(range(16)))
_TO_HEX = bytes.maketrans(bytes(range(16)), b"0123456789abcdef")
_HEX = "0123456789abcdef"
_NIBBLE_BYTE = [bytes((n,)) for n in range(17)]
_LENGTH = [bytes((n,)) for n in range(256)]
_PATH_AT = len(NODE_PREFIX) + 8
"""Where the nibble path starts in a node key."""
_WIDE = 12
"""Entries at a node from which its groups are found by bisection rather than a scan."""

_Ref = tuple[bytes, bytes, bytes | None]
"""A child: its hash, its version (8 bytes, big-endian) and, for a leaf, its key hash (None: internal)."""
_Entry = tuple[bytes, bytes, bytes | None, bytes]
"""One update of a batch: key hash, its 64 nibbles (one per byte), new value (None: delete), new leaf hash
(empty for a delete)."""
_V = TypeVar("_V")
_SAME: _Ref = (b"", b"", None)
"""What applying updates to a subtree returns when they change nothing (compared by identity)."""


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _hash(data: bytes) -> bytes:
    return _sha3(data).digest()


def _nibs(kh: bytes) -> bytes:
    """The 64 nibbles of key hash ``kh``, one per byte (values 0..15)."""
    return kh.hex().encode().translate(_NIBBLES)


def node_key(version: int, path: str) -> bytes:
    """The store key of the node at nibble ``path`` (lowercase hex, one char per nibble) of ``version``."""
    return _hex_key(_u64(version), path)


def _hex_key(vb: bytes, path: str) -> bytes:
    return NODE_PREFIX + vb + path.encode().translate(_NIBBLES)


def value_key(key_hash: bytes, version: int) -> bytes:
    """The store key of the value that the key of ``key_hash`` took at ``version``."""
    return VALUE_PREFIX + key_hash + _u64(version)


def latest_key(key_hash: bytes) -> bytes:
    """The store key of the latest-value index entry of the key of ``key_hash``."""
    return LATEST_PREFIX + key_hash


def root_key(version: int) -> bytes:
    """The store key of the root record of ``version``."""
    return ROOT_PREFIX + _u64(version)


def stale_key(version: int) -> bytes:
    """The store key of the list of nodes and values made stale by ``version``."""
    return STALE_PREFIX + _u64(version)


def _nibble(kh: bytes, depth: int) -> int:
    byte = kh[depth >> 1]
    return byte & 0x0F if depth & 1 else byte >> 4


class _Batch:
    """What one ``prepare`` produces: new nodes (all of version ``vb``), value writes, replaced keys.

    ``entries`` are the updates sorted by key hash and ``nibs`` their nibble strings, in the same order
    (for bisection).
    """

    __slots__ = ("vb", "prefix", "nodes", "ops", "stale", "removed", "entries", "nibs")

    def __init__(self, version: int, entries: list[_Entry]) -> None:
        self.vb = _u64(version)
        self.prefix = NODE_PREFIX + self.vb
        self.nodes: dict[bytes, bytes] = {}
        """The new nodes by nibble path (their store key is ``prefix`` + path)."""
        self.ops: list[WriteOp] = []
        self.stale: list[bytes] = []
        """Store keys of the nodes and values replaced."""
        self.removed: list[bytes] = []
        """Nibble paths where a node is replaced by nothing (its subtree collapsed into a leaf, or emptied)."""
        self.entries = entries
        self.nibs = [e[1] for e in entries]

    def leaf(self, e: _Entry) -> _Ref:
        """The new leaf of update ``e`` (not a delete): its value record and latest-value entry are written."""
        kh, _, value, lh = e
        if value is None:
            raise StateError("a delete cannot make a leaf")
        self.ops.append((VALUE_PREFIX + kh + self.vb, value))
        self.ops.append((LATEST_PREFIX + kh, value))
        return lh, self.vb, kh

    def drop(self, leaf: _Ref) -> None:
        """Leaf ``leaf`` is replaced or deleted: its value record goes stale."""
        kh = leaf[2]
        if kh is None:
            raise StateError("only a leaf has a value record")
        self.stale.append(VALUE_PREFIX + kh + leaf[1])

    def delete(self, leaf: _Ref) -> None:
        """Leaf ``leaf``'s key is deleted: stale value record, no latest value."""
        self.drop(leaf)
        self.ops.append((LATEST_PREFIX + (leaf[2] or b""), None))


@dataclass
class _Staged:
    version: int
    root: _Ref | None
    nodes: dict[bytes, bytes]
    removed: list[bytes]
    updates: dict[bytes, bytes | None]


def _child(raw: bytes, nib: int) -> _Ref | None:
    """Child ``nib`` of the internal node ``raw``, or None."""
    bitmap = (raw[3] << 8) | raw[4]
    bit = 1 << nib
    if not bitmap & bit:
        return None
    k = bitmap.bit_count()
    i = (bitmap & (bit - 1)).bit_count()
    vo = 5 + 32 * k + 8 * i
    leafmap = (raw[1] << 8) | raw[2]
    if leafmap & bit:
        ko = 5 + 40 * k + 32 * (leafmap & (bit - 1)).bit_count()
        return raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], raw[ko : ko + 32]
    return raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], None


def _slots(raw: bytes) -> list[_Ref | None]:
    """The 16 child slots of the internal node ``raw``."""
    leafmap = (raw[1] << 8) | raw[2]
    bitmap = (raw[3] << 8) | raw[4]
    k = bitmap.bit_count()
    out: list[_Ref | None] = [None] * 16
    i = j = 0
    ko = 5 + 40 * k
    for nib in range(16):
        bit = 1 << nib
        if bitmap & bit:
            vo = 5 + 32 * k + 8 * i
            if leafmap & bit:
                out[nib] = raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], raw[ko + 32 * j : ko + 32 * j + 32]
                j += 1
            else:
                out[nib] = raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], None
            i += 1
    return out


def _well_formed(raw: bytes) -> bool:
    """Whether ``raw`` has the shape of an internal node record (not whether its hashes are right)."""
    if len(raw) < 5 or raw[0] != _TAG:
        return False
    leafmap = (raw[1] << 8) | raw[2]
    bitmap = (raw[3] << 8) | raw[4]
    return bitmap != 0 and not leafmap & ~bitmap and len(raw) == 5 + 40 * bitmap.bit_count() + 32 * leafmap.bit_count()


def _encode_root(ref: _Ref | None) -> bytes:
    if ref is None:
        return b""
    return ref[0] + ref[1] + (b"\x00" if ref[2] is None else b"\x01" + ref[2])


def _decode_root(raw: bytes, version: int) -> _Ref | None:
    if raw == b"":
        return None
    if len(raw) == 41 and raw[40] == 0:
        return raw[:32], raw[32:40], None
    if len(raw) == 73 and raw[40] == 1:
        return raw[:32], raw[32:40], raw[41:]
    raise StoreCorrupted(f"unreadable state root record of version {version}")


def _split_keys(raw: bytes) -> list[bytes]:
    keys, i = [], 0
    while i < len(raw):
        n = raw[i]
        keys.append(raw[i + 1 : i + 1 + n])
        i += 1 + n
    if i != len(raw):
        raise StoreCorrupted("unreadable stale-node list")
    return keys


def _where(key: bytes) -> str:
    """A node key in words, for error messages."""
    path = key[_PATH_AT:]
    if len(key) < _PATH_AT or any(n > 15 for n in path):
        return f"state node {key.hex()}"
    return f"state node {path.translate(_TO_HEX).decode()!r} of version {int.from_bytes(key[4:12], 'big')}"


class JellyfishState:
    """``AuthenticatedState`` as a versioned Jellyfish Merkle Tree (module docstring) over ``store``.

    Versions are block heights. ``prepare(updates, version)`` computes the next version's root and its
    store writes without changing anything; the chain store writes them in the block's batch and calls
    ``applied(root)``. ``get``/``prove``/``root_at`` work at any version from ``oldest_version`` to
    ``version``; ``prune`` deletes older ones in bounded steps. Not thread-safe: one owner thread.
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        cache_nodes: int = DEFAULT_CACHE_NODES,
        cache_values: int = DEFAULT_CACHE_VALUES,
        compiled: bool = True,
    ) -> None:
        """Open the tree in ``store`` at its newest version (an empty store: no version yet, ``version`` -1).

        ``cache_nodes`` bounds the internal nodes of the newest version kept in memory, ``cache_values``
        the latest values kept for ``get`` (0 turns either off; module docstring). ``compiled`` picks
        the compiled core ``state._jmt_core`` for ``prepare`` (False: its pure-Python twin, the same
        result byte for byte, 2 to 3 times slower; tests run both). Raises
        ``StoreCorrupted`` if the store is in another format, or the newest root record is unreadable
        or does not hash to its node.
        """
        self._store = store
        self._compiled = compiled
        self._read = store.get
        self._cache: dict[bytes, bytes] = {}
        self._cache_cap = max(cache_nodes, 0)
        self._values: dict[bytes, bytes | None] = {}
        self._values_cap = max(cache_values, 0)
        self._staged: dict[Hash32, _Staged] = {}
        self._memo: list[tuple[int, dict[bytes, bytes | None], Hash32, list[WriteOp]]] = []
        last = next(store.iterate_range(ROOT_PREFIX, ROOT_PREFIX + b"\xff" * 9, reverse=True), None)
        self._version = -1
        self._root_ref: _Ref | None = None
        if last is not None:
            key, raw = last
            stored_format = store.get(FORMAT_KEY)
            if stored_format != _FORMAT_RECORD:
                found = "1 (no format record)" if stored_format is None else stored_format.hex()
                raise StoreCorrupted(
                    f"the state tree is stored in format {found}; this release reads format {FORMAT} only: "
                    "move the data directory away and let the node catch up from its peers"
                )
            if len(key) != len(ROOT_PREFIX) + 8:
                raise StoreCorrupted(f"unreadable state root key {key.hex()}")
            self._version = int.from_bytes(key[len(ROOT_PREFIX) :], "big")
            self._root_ref = _decode_root(raw, self._version)
            self._check_root(self._root_ref, self._version)
        progress = store.get(PRUNE_KEY)
        self._prune_next, self._prune_offset = 1, 0
        if progress is not None:
            if len(progress) != 16:
                raise StoreCorrupted("unreadable pruning progress record")
            self._prune_next = int.from_bytes(progress[:8], "big")
            self._prune_offset = int.from_bytes(progress[8:], "big")

    def _check_root(self, ref: _Ref | None, version: int) -> None:
        if ref is None:
            return
        if ref[2] is None:
            actual = _hash_of(self._read_node(_hex_key(ref[1], "")))
            what = "node"
        else:
            actual = _leaf_hash(ref[2], self._value_of(ref))
            what = "leaf"
        if actual != ref[0]:
            raise StoreCorrupted(
                f"state root {what} of version {version} hashes to {actual.hex()}, not the recorded root {ref[0].hex()}"
            )

    # --- reading ---------------------------------------------------------------------------------

    @property
    def root(self) -> Hash32:
        """The root of the newest committed version (the empty root before any)."""
        return EMPTY_ROOT if self._root_ref is None else Hash32(self._root_ref[0])

    @property
    def version(self) -> int:
        """The newest committed version (block height); -1 for a store that never committed one."""
        return self._version

    @property
    def oldest_version(self) -> int:
        """The oldest version still readable: below it, pruning has begun or finished."""
        oldest = self._prune_next - 1 if self._prune_offset == 0 else self._prune_next
        return max(0, min(oldest, self._version))

    def _check_version(self, version: int) -> None:
        if not self.oldest_version <= version <= self._version:
            raise VersionUnavailable(version, self.oldest_version, self._version)

    def _root_ref_at(self, version: int) -> _Ref | None:
        self._check_version(version)
        if version == self._version:
            return self._root_ref
        raw = self._read(root_key(version))
        if raw is None:
            raise StoreCorrupted(f"no state root recorded for retained version {version}")
        return _decode_root(raw, version)

    def root_at(self, version: int) -> Hash32:
        """The root of ``version``. Raises ``VersionUnavailable``, or ``StoreCorrupted`` if its record is gone."""
        ref = self._root_ref_at(version)
        return EMPTY_ROOT if ref is None else Hash32(ref[0])

    def _latest(self, path: bytes, vb: bytes) -> bytes:
        """The node of the newest version at nibble ``path``, whose version is ``vb``: cached, or loaded.

        Raises ``StoreCorrupted``.
        """
        raw = self._cache.get(path)
        if raw is not None:
            return raw
        raw = self._read_node(NODE_PREFIX + vb + path)
        if self._cache_cap:
            self._cache[path] = raw
            if len(self._cache) > self._cache_cap:
                _evict(self._cache, self._cache_cap)
        return raw

    def _read_node(self, key: bytes) -> bytes:
        """The internal node stored under ``key``, read from the store. Raises ``StoreCorrupted``."""
        raw = self._read(key)
        if raw is None or not _well_formed(raw):
            raise StoreCorrupted(f"{_where(key)} ({key.hex()}) is missing or unreadable")
        return raw

    def _value_of(self, leaf: _Ref) -> bytes:
        """The value record that ``leaf`` refers to. Raises ``StoreCorrupted`` if it is missing."""
        kh = leaf[2] or b""
        raw = self._read(VALUE_PREFIX + kh + leaf[1])
        if raw is None:
            version = int.from_bytes(leaf[1], "big")
            raise StoreCorrupted(f"the value of key hash {kh.hex()} written at version {version} is missing")
        return raw

    def _walk(self, kh: bytes, version: int | None) -> tuple[list[bytes], _Ref | None]:
        """The internal nodes on the path of key hash ``kh`` at ``version`` and the leaf that ends it (or None)."""
        if version is None or version == self._version:
            if self._version < 0:
                raise VersionUnavailable(0 if version is None else version, 0, self._version)
            ref, latest = self._root_ref, True
        else:
            ref, latest = self._root_ref_at(version), False
        internals: list[bytes] = []
        nibs = _nibs(kh)
        depth = 0
        while ref is not None and ref[2] is None:
            path = nibs[:depth]
            raw = self._latest(path, ref[1]) if latest else self._read_node(NODE_PREFIX + ref[1] + path)
            internals.append(raw)
            ref = _child(raw, nibs[depth])
            depth += 1
        return internals, ref

    def get(self, key: bytes, version: int | None = None) -> bytes | None:
        """The value of ``key`` at ``version`` (default: the newest committed), or None.

        The newest version is one read of the latest-value index (none if the value is cached); an
        older one walks its path. Raises ``VersionUnavailable`` for a version outside
        ``oldest_version..version``.
        """
        if version is None or version == self._version:
            values = self._values
            if key in values:
                return values[key]
            if self._version < 0:
                raise VersionUnavailable(0 if version is None else version, 0, self._version)
            value = self._read(LATEST_PREFIX + _sha3(key).digest())
            if self._values_cap:
                values[key] = value
                if len(values) > self._values_cap:
                    _evict(values, self._values_cap)
            return value
        kh = _hash(key)
        _, leaf = self._walk(kh, version)
        if leaf is None or leaf[2] != kh:
            return None
        return self._value_of(leaf)

    def prove(self, key: bytes, version: int | None = None) -> tuple[bytes | None, StateProof]:
        """The value of ``key`` at ``version`` (default: the newest) and its proof against ``root_at(version)``.

        The proof shows presence with that value, or absence (value None); ``state.proof.verify_proof``
        checks it. Raises ``VersionUnavailable``, or ``StoreCorrupted`` if the leaf's value does not
        hash to the leaf.
        """
        kh = _hash(key)
        internals, leaf = self._walk(kh, version)
        levels = []
        for depth, raw in enumerate(internals):
            bitmap = (raw[3] << 8) | raw[4]
            k = bitmap.bit_count()
            hashes = [Hash32(raw[5 + 32 * i : 37 + 32 * i]) for i in range(k)]
            bit = 1 << _nibble(kh, depth)
            if bitmap & bit:
                del hashes[(bitmap & (bit - 1)).bit_count()]
            levels.append(ProofLevel(bitmap, tuple(hashes)))
        if leaf is None or leaf[2] is None:
            return None, StateProof(tuple(levels), None)
        value = self._value_of(leaf)
        vh = _hash(value)
        if _hash(LEAF_DOMAIN + leaf[2] + vh) != leaf[0]:
            raise StoreCorrupted(f"the value of key hash {leaf[2].hex()} does not hash to its leaf")
        proof = StateProof(tuple(levels), ProofLeaf(Hash32(leaf[2]), Hash32(vh)))
        return (value if leaf[2] == kh else None), proof

    # --- writing ---------------------------------------------------------------------------------

    def prepare(self, updates: Mapping[bytes, bytes | None], version: int) -> tuple[Hash32, list[WriteOp]]:
        """The root of ``version`` after ``updates`` (key -> new value, None deletes) and the store writes.

        ``version`` must be ``self.version + 1``. The writes are the new nodes, the values and their
        latest-value entries, the root record and the stale list of ``version``; nothing changes until
        they are written and ``applied`` is called. The same updates prepared twice are computed once.
        Raises ``StateError`` for another version.
        """
        if version != self._version + 1:
            raise StateError(f"cannot prepare version {version} on version {self._version}")
        frozen = dict(updates)
        for m_version, m_updates, m_root, m_ops in self._memo:
            if m_version == version and m_updates == frozen:
                return m_root, list(m_ops)
        if self._compiled:
            new_ref, nodes, ops, stale, removed = _jmt_core.prepare(
                frozen, self._root_ref, _u64(version), self._cache, self._latest)
        else:
            new_ref, nodes, ops, stale, removed = self._prepare_python(frozen, version)
        root_hash = EMPTY_ROOT if new_ref is None else Hash32(new_ref[0])
        ops.append((root_key(version), _encode_root(new_ref)))
        if stale:
            ops.append((stale_key(version), stale))
        if self._version < 0:
            ops.append((FORMAT_KEY, _FORMAT_RECORD))
        if len(self._staged) >= 8:  # proposals that never committed
            self._staged.clear()
            self._memo.clear()
        self._staged[root_hash] = _Staged(version, new_ref, nodes, removed, frozen)
        self._memo.append((version, frozen, root_hash, ops))
        return root_hash, list(ops)

    def _prepare_python(
        self, updates: dict[bytes, bytes | None], version: int
    ) -> tuple[_Ref | None, dict[bytes, bytes], list[WriteOp], bytes, list[bytes]]:
        """The pure-Python twin of ``state._jmt_core.prepare``: the same result, byte for byte and in order.

        Returns the new root ref, the new nodes by nibble path, the writes (the new nodes under their
        store keys, then the values and latest-value entries), the stale list record and the removed
        nibble paths.
        """
        entries: list[_Entry] = []
        append, sha3, leaf_domain, nibbles = entries.append, _sha3, LEAF_DOMAIN, _NIBBLES
        for key, value in updates.items():
            kh = sha3(key).digest()
            if value is None:
                append((kh, kh.hex().encode().translate(nibbles), None, b""))
            else:
                append((kh, kh.hex().encode().translate(nibbles), value,
                        sha3(leaf_domain + kh + sha3(value).digest()).digest()))
        entries.sort()
        b = _Batch(version, entries)
        root = self._root_ref
        new: _Ref | None
        if not entries:
            new = _SAME
        elif root is None:
            new = self._build(b, 0, [b.leaf(e) for e in entries if e[2] is not None])
        elif root[2] is not None:
            new = self._apply_leaf(b, root, 0, entries)
        elif len(entries) == 1:
            new = self._apply_one(b, root[1], 0, entries[0])
        else:
            new = self._apply_many(b, root[1], 0, 0, len(entries))
        prefix, lengths = b.prefix, _LENGTH
        ops: list[WriteOp] = [(prefix + path, raw) for path, raw in b.nodes.items()]
        ops += b.ops
        stale = b"".join([lengths[len(k)] + k for k in b.stale])
        return (root if new is _SAME else new), b.nodes, ops, stale, b.removed

    def applied(self, root: Hash32) -> None:
        """Adopt the version prepared for ``root``, once its writes are durable.

        Raises ``StateError`` if no prepared update leads to ``root``.
        """
        staged = self._staged.get(root)
        if staged is None or staged.version != self._version + 1:
            raise StateError(f"no prepared update leads to root {root.hex()}")
        self._version, self._root_ref = staged.version, staged.root
        cache = self._cache
        for path in staged.removed:
            cache.pop(path, None)
        if self._cache_cap:  # the new nodes replace the old ones at their paths
            cache.update(staged.nodes)
            if len(cache) > self._cache_cap:
                _evict(cache, self._cache_cap)
        if self._values_cap:
            self._values.update(staged.updates)
            if len(self._values) > self._values_cap:
                _evict(self._values, self._values_cap)
        self._staged.clear()
        self._memo.clear()

    def _apply_many(self, b: _Batch, vb: bytes, depth: int, lo: int, hi: int) -> _Ref | None:
        """Apply entries ``lo:hi`` (two or more, on its path) to the internal node of version ``vb`` at ``depth``.

        Returns ``_SAME`` when nothing changed, else the new subtree: a new internal node, a leaf (the
        node collapsed) or None (it is empty).
        """
        entries, nibs = b.entries, b.nibs
        path = nibs[lo][:depth]
        raw = self._cache.get(path) or self._latest(path, vb)
        leafmap = (raw[1] << 8) | raw[2]
        bitmap = (raw[3] << 8) | raw[4]
        k = bitmap.bit_count()
        he, ko = 5 + 32 * k, 5 + 40 * k
        changes: list[tuple[int, int, _Ref | None]] = []  # nibble, child index, new child
        same_shape = True
        start = lo
        while start < hi:  # the entries of each child in turn
            nib = nibs[start][depth]
            if hi - start > _WIDE:
                end = bisect_left(nibs, path + _NIBBLE_BYTE[nib + 1], start + 1, hi)
            else:
                end = start + 1
                while end < hi and nibs[end][depth] == nib:
                    end += 1
            bit = 1 << nib
            if not bitmap & bit:  # an empty child: new leaves
                leaves = [b.leaf(e) for e in entries[start:end] if e[2] is not None]
                if leaves:
                    changes.append((nib, -1, self._build(b, depth + 1, leaves)))
                    same_shape = False
                start = end
                continue
            i = (bitmap & (bit - 1)).bit_count()
            child_vb = raw[he + 8 * i : he + 8 * i + 8]
            old_kh: bytes | None = None
            if leafmap & bit:
                j = ko + 32 * (leafmap & (bit - 1)).bit_count()
                old_kh = raw[j : j + 32]
                leaf = raw[5 + 32 * i : 37 + 32 * i], child_vb, old_kh
                new = self._apply_leaf(b, leaf, depth + 1, entries[start:end])
            elif end - start == 1:
                new = self._apply_one(b, child_vb, depth + 1, entries[start])
            else:
                new = self._apply_many(b, child_vb, depth + 1, start, end)
            if new is not _SAME:
                changes.append((nib, i, new))
                if new is None or new[2] != old_kh:
                    same_shape = False
            start = end
        if not changes:
            return _SAME
        b.stale.append(NODE_PREFIX + vb + path)
        if not same_shape:  # a child added, removed, or changing kind (a lone child may become a leaf)
            slots = _slots(raw)
            for nib, _, new in changes:
                slots[nib] = new
            return self._remake(b, depth, path, slots)
        node = bytearray(raw)
        for _, i, new in changes:
            if new is not None:  # (always: same shape)
                node[5 + 32 * i : 37 + 32 * i] = new[0]
                node[he + 8 * i : he + 8 * i + 8] = new[1]
        encoded = bytes(node)
        b.nodes[path] = encoded
        return _sha3(INTERNAL_DOMAIN + encoded[3:he]).digest(), b.vb, None

    def _apply_one(self, b: _Batch, vb: bytes, depth: int, e: _Entry) -> _Ref | None:
        """``_apply_many`` of the single entry ``e``: what most nodes of a block see.

        Walks down the entry's path, then rebuilds upwards. The hot path of a block, written out inline
        (each operation here costs, per touched node).
        """
        kh, nibs, value, lh = e
        cache = self._cache
        path: list[tuple[bytes, bytes, bytes, int, int, bytes | None, int]] = []
        # per level: nibble path, version and record of the node, child index, end of its hashes, what the
        # child was (its key hash if a leaf, None if internal, b"" if empty), nibble
        while True:
            pk = nibs[:depth]
            raw = cache.get(pk) or self._latest(pk, vb)
            bitmap = (raw[3] << 8) | raw[4]
            nib = nibs[depth]
            bit = 1 << nib
            depth += 1
            if not bitmap & bit:
                path.append((pk, vb, raw, 0, 0, b"", nib))
                child_kh: bytes | None = b""
                break
            k = bitmap.bit_count()
            i = (bitmap & (bit - 1)).bit_count()
            he = 5 + 32 * k
            vo = he + 8 * i
            leafmap = (raw[1] << 8) | raw[2]
            if leafmap & bit:
                ko = 5 + 40 * k + 32 * (leafmap & (bit - 1)).bit_count()
                child_kh = raw[ko : ko + 32]
                path.append((pk, vb, raw, i, he, child_kh, nib))
                vb = raw[vo : vo + 8]
                break
            path.append((pk, vb, raw, i, he, None, nib))
            vb = raw[vo : vo + 8]
        # the path ends at ``depth`` in an empty child, or in a leaf of version ``vb`` (child ``i`` of ``raw``)
        stale, ops, bvb = b.stale, b.ops, b.vb
        new: _Ref | None
        if child_kh == kh:
            if value is None:  # a delete
                stale.append(VALUE_PREFIX + kh + vb)
                ops.append((LATEST_PREFIX + kh, None))
                new = None
            elif lh == raw[5 + 32 * i : 37 + 32 * i]:  # the same value again
                return _SAME
            else:  # a new value for an existing key: the common case
                stale.append(VALUE_PREFIX + kh + vb)
                ops.append((VALUE_PREFIX + kh + bvb, value))
                ops.append((LATEST_PREFIX + kh, value))
                new = lh, bvb, kh
        elif value is None:  # deleting an absent key
            return _SAME
        else:
            ops.append((VALUE_PREFIX + kh + bvb, value))
            ops.append((LATEST_PREFIX + kh, value))
            new = lh, bvb, kh
            if child_kh:  # another key's leaf: both go under a new internal node
                new = self._build(b, depth, [new, (raw[5 + 32 * i : 37 + 32 * i], vb, child_kh)])
        nodes, sha3, domain, join = b.nodes, _sha3, INTERNAL_DOMAIN, b"".join
        for pk, node_vb, raw, i, he, old, nib in reversed(path):
            depth -= 1
            stale.append(NODE_PREFIX + node_vb + pk)
            if new is None or new[2] != old:  # a child added, removed or changing kind
                slots = _slots(raw)
                slots[nib] = new
                new = self._remake(b, depth, pk, slots)
                continue
            o = 5 + 32 * i
            vo = he + 8 * i
            encoded = join((raw[:o], new[0], raw[o + 32 : vo], bvb, raw[vo + 8 :]))
            nodes[pk] = encoded
            new = sha3(domain + encoded[3:he]).digest(), bvb, None
        return new

    def _apply_leaf(self, b: _Batch, ref: _Ref, depth: int, entries: list[_Entry]) -> _Ref | None:
        """Apply ``entries`` to the subtree that is the leaf ``ref``; ``_SAME`` if nothing changes."""
        okh = ref[2]
        leaves: list[_Ref] = []
        match: _Entry | None = None
        for e in entries:
            if e[0] == okh:
                match = e
            elif e[2] is not None:
                leaves.append(b.leaf(e))
        if match is None or match[3] == ref[0]:  # untouched, or the same value again
            if not leaves:
                return _SAME
            leaves.append(ref)  # it moves down, under a new internal node: nothing to write for it
        elif match[2] is None:
            b.delete(ref)
        else:
            b.drop(ref)
            leaves.append(b.leaf(match))
        return self._build(b, depth, leaves)

    def _build(self, b: _Batch, depth: int, leaves: list[_Ref]) -> _Ref | None:
        """The subtree at ``depth`` holding exactly ``leaves`` (distinct key hashes on one path)."""
        if len(leaves) <= 1:
            return leaves[0] if leaves else None
        groups: dict[int, list[_Ref]] = {}
        for leaf in leaves:
            groups.setdefault(_nibble(leaf[2] or b"", depth), []).append(leaf)
        slots: list[_Ref | None] = [None] * 16
        for nib, group in groups.items():
            slots[nib] = self._build(b, depth + 1, group)
        return self._make(b, depth, _nibs(leaves[0][2] or b"")[:depth], slots)

    def _remake(self, b: _Batch, depth: int, path: bytes, slots: list[_Ref | None]) -> _Ref | None:
        """``_make`` in place of a stored node at ``path``: if it collapses, its path is recorded as removed."""
        new = self._make(b, depth, path, slots)
        if new is None or new[2] is not None:
            b.removed.append(path)
        return new

    def _make(self, b: _Batch, depth: int, path: bytes, slots: list[_Ref | None]) -> _Ref | None:
        """The internal node at ``depth`` and nibble ``path`` with ``slots``, or its collapse.

        No child: None. One child that is a leaf: that leaf (it moves up). Otherwise a new node.
        """
        present = [(nib, s) for nib, s in enumerate(slots) if s is not None]
        if not present:
            return None
        if len(present) == 1 and present[0][1][2] is not None:
            return present[0][1]
        bitmap = leafmap = 0
        hashes: list[bytes] = []
        versions: list[bytes] = []
        khs: list[bytes] = []
        for nib, (h, vb, leaf_kh) in present:
            bit = 1 << nib
            bitmap |= bit
            hashes.append(h)
            versions.append(vb)
            if leaf_kh is not None:
                leafmap |= bit
                khs.append(leaf_kh)
        children = b"".join(hashes)
        head = bitmap.to_bytes(2, "big")
        b.nodes[path] = (
            _TAG_BYTE + leafmap.to_bytes(2, "big") + head + children + b"".join(versions) + b"".join(khs))
        return _sha3(INTERNAL_DOMAIN + head + children).digest(), b.vb, None

    # --- pruning ---------------------------------------------------------------------------------

    def prune(self, below: int, limit: int = 10_000) -> int:
        """Delete what only versions below ``below`` need: at most ``limit`` + 1 deletions, in one batch.

        Walks the stale lists of versions 1..``below`` in order (a version's list names the nodes and
        values only older versions use) and deletes the listed keys and the root records of the
        versions left behind; progress is stored in the same (unsynced: redoing it is harmless) batch.
        The latest-value index is never pruned: it holds the newest version only. ``below`` is capped
        at the newest version. Returns the number of nodes, values and root records deleted, 0 when
        nothing is left to prune; ``oldest_version`` is ``below`` once it is done.
        """
        below = min(below, self._version)
        s, o = self._prune_next, self._prune_offset
        if s > below or limit <= 0:
            return 0
        ops: list[WriteOp] = []
        done = 0
        while s <= below and done < limit:
            raw = self._read(stale_key(s))
            keys = _split_keys(raw) if raw is not None else []
            if o == 0:
                ops.append((root_key(s - 1), None))
                done += 1
            take = keys[o : o + max(limit - done, 1)]
            ops.extend((k, None) for k in take)
            done += len(take)
            o += len(take)
            if o >= len(keys):
                ops.append((stale_key(s), None))
                s, o = s + 1, 0
        ops.append((PRUNE_KEY, _u64(s) + _u64(o)))
        self._store.write(ops, sync=False)
        self._prune_next, self._prune_offset = s, o
        return done

    # --- checking --------------------------------------------------------------------------------

    def leaves(self, version: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(key_hash, value)`` of ``version`` (default: the newest), in key-hash order, from its tree.

        Raises ``VersionUnavailable``.
        """
        v = self._version if version is None else version
        ref = self._root_ref_at(v) if v >= 0 else None
        if ref is not None:
            yield from self._leaves(ref, "", v == self._version)

    def _leaves(self, ref: _Ref, path: str, latest: bool) -> Iterator[tuple[bytes, bytes]]:
        if ref[2] is not None:
            yield ref[2], self._value_of(ref)
            return
        nibble_path = path.encode().translate(_NIBBLES)
        raw = self._latest(nibble_path, ref[1]) if latest else self._read_node(NODE_PREFIX + ref[1] + nibble_path)
        for nib, child in enumerate(_slots(raw)):
            if child is not None:
                yield from self._leaves(child, path + _HEX[nib], latest)

    def audit(self, version: int | None = None) -> int:
        """Recompute every hash of ``version`` (default: the newest) from its stored nodes and values; the key count.

        Reads the store, not the node cache. Checks that each node hashes to what its parent (or the
        root record) says, that each leaf's key hash lies on its path and its value hashes to it, that
        the tree is in its collapsed form and, for the newest version, that the latest-value index
        holds exactly its keys and values. Costs a read of the whole version. Raises
        ``StoreCorrupted``, ``VersionUnavailable``.
        """
        v = self._version if version is None else version
        ref = self._root_ref_at(v) if v >= 0 else None
        found = [] if ref is None else self._audit(ref, "")
        if v == self._version:
            indexed = list(self._store.iterate(LATEST_PREFIX))
            if indexed != [(LATEST_PREFIX + kh, value) for kh, value in found]:
                raise StoreCorrupted("the latest-value index disagrees with the tree")
        return len(found)

    def _audit(self, ref: _Ref, path: str) -> list[tuple[bytes, bytes]]:
        if ref[2] is not None:
            kh = ref[2]
            value = self._value_of(ref)
            if len(kh) != 32 or kh.hex()[: len(path)] != path:
                raise StoreCorrupted(f"the leaf of key hash {kh.hex()} is off its path {path!r}")
            if _leaf_hash(kh, value) != ref[0]:
                raise StoreCorrupted(f"the leaf of key hash {kh.hex()}: value hash mismatch")
            return [(kh, value)]
        key = _hex_key(ref[1], path)
        raw = self._read_node(key)
        where = _where(key)
        slots = _slots(raw)
        present = [s for s in slots if s is not None]
        if len(present) == 1 and present[0][2] is not None:
            raise StoreCorrupted(f"{where}: a lone leaf child was not collapsed")
        if _hash_of(raw) != ref[0]:
            raise StoreCorrupted(f"{where} does not hash to its parent's record")
        found: list[tuple[bytes, bytes]] = []
        for nib, child in enumerate(slots):
            if child is not None:
                found += self._audit(child, path + _HEX[nib])
        return found


def _evict(cache: dict[bytes, _V], cap: int) -> None:
    """Drop the oldest entries of ``cache`` down to nine tenths of ``cap``.

    Oldest by insertion: the nodes near the root are rewritten by every block, so they stay.
    """
    for key in list(islice(cache, len(cache) - cap * 9 // 10)):
        del cache[key]


def _leaf_hash(kh: bytes, value: bytes) -> bytes:
    return _hash(LEAF_DOMAIN + kh + _hash(value))


def _hash_of(raw: bytes) -> bytes:
    """The hash of a stored internal node from its record."""
    k = ((raw[3] << 8) | raw[4]).bit_count()
    return _hash(INTERNAL_DOMAIN + raw[3 : 5 + 32 * k])


def root_of(contents: Mapping[bytes, bytes]) -> Hash32:
    """The state root of exactly ``contents`` (key -> value), computed in memory from the hashing rules.

    Used by tests and tools to cross-check ``JellyfishState`` (which must give the same root whatever
    the order and batching of updates).
    """
    items = sorted((_hash(k), _hash(v)) for k, v in contents.items())
    return Hash32(_subtree_root(items, 0)) if items else EMPTY_ROOT


def _subtree_root(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    if len(items) == 1:
        kh, vh = items[0]
        return _hash(LEAF_DOMAIN + kh + vh)
    groups: dict[int, list[tuple[bytes, bytes]]] = {}
    for item in items:
        groups.setdefault(_nibble(item[0], depth), []).append(item)
    bitmap = 0
    hashes = []
    for nib in sorted(groups):
        bitmap |= 1 << nib
        hashes.append(_subtree_root(groups[nib], depth + 1))
    return internal_hash(bitmap, b"".join(hashes))
