"""The authenticated state: a versioned Jellyfish Merkle Tree over a ``KeyValueStore``.

Design: Z. Gao, Y. Hu, Q. Wu, "Jellyfish Merkle Tree", Diem Association whitepaper, 2021
(https://developers.diem.com/papers/jellyfish-merkle-tree/2021-01-14.pdf), and Diem's
``storage/jellyfish-merkle``. As there:

* a radix-16 Merkle tree over ``SHA3-256(key)``; a subtree holding a single key is collapsed into that
  key's leaf, so a path is only as deep as needed to tell keys apart (about log16(n) nodes);
* nodes are immutable and stored under their *node key* ``(version, nibble path)``; a block's updates
  write new nodes at version = block height and leave every older version readable (copy on write);
* each node that a version replaces is listed in a *stale node index* under that version, so that
  pruning the versions below a retention window is a walk over those lists, never a scan of the tree.

Hashing and proofs are defined in ``state.proof`` (one hash call per internal node; see there how that
differs from Diem's binary hashing inside a node). Each block's updates are applied in one pass over
the touched paths: every dirty node is read once, rebuilt once and hashed once, so a block costs
O(touched keys x log16(keys)) hashes and reads, whatever the size of the state.

Store layout (versions are 8-byte big-endian; a nibble path is its length in one byte, then the
nibbles packed two per byte, high nibble first, zero-padded)::

    j/n/<version><path>  -> node: 0x00 || key_hash || value_hash || value         (leaf)
                                  0x01 || bitmap(2) || leafmap(2)                 (internal)
                                       || child hashes (32 each) || child versions (8 each)
    j/r/<version>        -> root of that version: hash(32) || node version(8) || is_leaf(1);
                            empty for the empty tree
    j/s/<version>        -> the node keys that version made stale, each as length(1) || key
    j/m/prune            -> pruning progress: next stale list(8) || position in it(8)

Children of an internal node are listed in nibble order; bit ``i`` of ``bitmap`` marks child ``i``,
bit ``i`` of ``leafmap`` says that child is a leaf. Values live in their leaves, so reading a key at
any retained version walks that version's path (internal nodes of the newest version are cached).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from crypto.hashing import Hash32, sha3
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
ROOT_PREFIX = b"j/r/"
STALE_PREFIX = b"j/s/"
PRUNE_KEY = b"j/m/prune"

DEFAULT_CACHE_NODES = 200_000
"""Internal nodes of the newest version kept in memory (at most 645 bytes each, most far smaller)."""

_LEAF = 0
_INTERNAL = 1
_HEX = "0123456789abcdef"
_NIB = {c: i for i, c in enumerate(_HEX)}
_DEPTH = [bytes((d,)) for d in range(2 * 32 + 1)]
_HIGH = [bytes((b & 0xF0,)) for b in range(256)]
_DELETE = b""
"""The ``vh`` of an update that deletes its key (a real value hash is 32 bytes)."""

_Ref = tuple[bytes, bytes, bool]
"""A stored child: its hash, the version of its node key (8 bytes, big-endian), whether it is a leaf."""


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def node_key(version: int, path: str) -> bytes:
    """The store key of the node at nibble ``path`` (lowercase hex, one char per nibble) of ``version``."""
    return _hex_key(_u64(version), path)


def _hex_key(vb: bytes, path: str) -> bytes:
    n = len(path)
    return NODE_PREFIX + vb + _DEPTH[n] + bytes.fromhex(path + "0" if n & 1 else path)


def _key(vb: bytes, kh: bytes, depth: int) -> bytes:
    """The store key of the node of version ``vb`` at the first ``depth`` nibbles of key hash ``kh``."""
    half = depth >> 1
    if depth & 1:
        return NODE_PREFIX + vb + _DEPTH[depth] + kh[:half] + _HIGH[kh[half]]
    return NODE_PREFIX + vb + _DEPTH[depth] + kh[:half]


def root_key(version: int) -> bytes:
    """The store key of the root record of ``version``."""
    return ROOT_PREFIX + _u64(version)


def stale_key(version: int) -> bytes:
    """The store key of the list of nodes made stale by ``version``."""
    return STALE_PREFIX + _u64(version)


class _Leaf:
    """A leaf being placed by a batch: new, or an existing one that moves (``origin`` = its store key).

    Also the form of one update of a batch, where ``vh == _DELETE`` marks a delete.
    """

    __slots__ = ("kh", "hx", "vh", "value", "origin")

    def __init__(self, kh: bytes, hx: str, vh: bytes, value: bytes, origin: bytes | None = None) -> None:
        self.kh, self.hx, self.vh, self.value, self.origin = kh, hx, vh, value, origin


_Child = _Ref | _Leaf


class _Batch:
    """What one ``prepare`` produces: new nodes (all of version ``vb``) and the keys of the nodes they replace."""

    __slots__ = ("vb", "prefix", "puts", "stale")

    def __init__(self, version: int) -> None:
        self.vb = _u64(version)
        self.prefix = NODE_PREFIX + self.vb
        self.puts: dict[bytes, bytes] = {}
        self.stale: list[bytes] = []

    def key(self, kh: bytes, depth: int) -> bytes:
        """The key of the new node at the first ``depth`` nibbles of ``kh``."""
        half = depth >> 1
        if depth & 1:
            return self.prefix + _DEPTH[depth] + kh[:half] + _HIGH[kh[half]]
        return self.prefix + _DEPTH[depth] + kh[:half]


@dataclass
class _Staged:
    version: int
    root: _Ref | None
    nodes: dict[bytes, bytes]
    stale: list[bytes]


def _child(raw: bytes, nib: int) -> _Ref | None:
    """Child ``nib`` of the internal node ``raw``, or None."""
    bitmap = (raw[1] << 8) | raw[2]
    bit = 1 << nib
    if not bitmap & bit:
        return None
    i = (bitmap & (bit - 1)).bit_count()
    vo = 5 + 32 * bitmap.bit_count() + 8 * i
    return raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], bool(((raw[3] << 8) | raw[4]) & bit)


def _children(raw: bytes) -> dict[str, _Ref]:
    """Every child of the internal node ``raw``, by nibble (hex char), in nibble order."""
    bitmap = (raw[1] << 8) | raw[2]
    leafmap = (raw[3] << 8) | raw[4]
    k = bitmap.bit_count()
    out: dict[str, _Ref] = {}
    i = 0
    for nib in range(16):
        bit = 1 << nib
        if bitmap & bit:
            vo = 5 + 32 * k + 8 * i
            out[_HEX[nib]] = (raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], bool(leafmap & bit))
            i += 1
    return out


def _encode_root(ref: _Ref | None) -> bytes:
    return b"" if ref is None else ref[0] + ref[1] + (b"\x01" if ref[2] else b"\x00")


def _decode_root(raw: bytes, version: int) -> _Ref | None:
    if raw == b"":
        return None
    if len(raw) != 41 or raw[40] > 1:
        raise StoreCorrupted(f"unreadable state root record of version {version}")
    return raw[:32], raw[32:40], raw[40] == 1


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
    body = key[len(NODE_PREFIX) :]
    if len(body) < 9:
        return f"state node {key.hex()}"
    depth = body[8]
    return f"state node {body[9:].hex()[:depth]!r} of version {int.from_bytes(body[:8], 'big')}"


class JellyfishState:
    """``AuthenticatedState`` as a versioned Jellyfish Merkle Tree (module docstring) over ``store``.

    Versions are block heights. ``prepare(updates, version)`` computes the next version's root and its
    store writes without changing anything; the chain store writes them in the block's batch and calls
    ``applied(root)``. ``get``/``prove``/``root_at`` work at any version from ``oldest_version`` to
    ``version``; ``prune`` deletes older ones in bounded steps. Not thread-safe: one owner thread.
    """

    def __init__(self, store: KeyValueStore, *, cache_nodes: int = DEFAULT_CACHE_NODES) -> None:
        """Open the tree in ``store`` at its newest version (an empty store: no version yet, ``version`` -1).

        ``cache_nodes`` bounds the internal nodes kept in memory. Raises ``StoreCorrupted`` if the newest
        root record is unreadable or its root node does not hash to it.
        """
        self._store = store
        self._cache: dict[bytes, bytes] = {}
        self._cache_cap = max(cache_nodes, 0)
        self._staged: dict[Hash32, _Staged] = {}
        self._memo: dict[tuple[int, tuple[tuple[bytes, bytes | None], ...]], tuple[Hash32, list[WriteOp]]] = {}
        last = next(store.iterate_range(ROOT_PREFIX, ROOT_PREFIX + b"\xff" * 9, reverse=True), None)
        self._version = -1
        self._root_ref: _Ref | None = None
        if last is not None:
            key, raw = last
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
        raw = self._load(_hex_key(ref[1], ""), cache=False)
        actual = _hash_of(raw)
        if actual != ref[0] or (raw[0] == _LEAF) != ref[2]:
            raise StoreCorrupted(
                f"state root node of version {version} hashes to {actual.hex()}, not the recorded root {ref[0].hex()}"
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
        raw = self._store.get(root_key(version))
        if raw is None:
            raise StoreCorrupted(f"no state root recorded for retained version {version}")
        return _decode_root(raw, version)

    def root_at(self, version: int) -> Hash32:
        """The root of ``version``. Raises ``VersionUnavailable``, or ``StoreCorrupted`` if its record is gone."""
        ref = self._root_ref_at(version)
        return EMPTY_ROOT if ref is None else Hash32(ref[0])

    def _load(self, key: bytes, *, cache: bool = True) -> bytes:
        raw = self._cache.get(key)
        if raw is not None:
            return raw
        raw = self._store.get(key)
        if raw is None or len(raw) < 5 or raw[0] > _INTERNAL:
            raise StoreCorrupted(f"{_where(key)} ({key.hex()}) is missing or unreadable")
        if cache and raw[0] == _INTERNAL and self._cache_cap:
            self._cache[key] = raw
            if len(self._cache) > self._cache_cap:
                self._evict()
        return raw

    def _load_as(self, key: bytes, kind: int, *, cache: bool = True) -> bytes:
        raw = self._load(key, cache=cache)
        if raw[0] != kind or (kind == _LEAF and len(raw) < 65):
            raise StoreCorrupted(f"{_where(key)} is not {'a leaf' if kind == _LEAF else 'an internal node'}")
        return raw

    def _evict(self) -> None:
        cache = self._cache
        for key in list(cache)[: len(cache) - self._cache_cap * 9 // 10]:
            del cache[key]

    def _walk(self, key: bytes, version: int | None) -> tuple[bytes, list[bytes], bytes | None]:
        """The key hash, the internal nodes on its path and the leaf that ends it (or None)."""
        if version is None or version == self._version:
            if self._version < 0:
                raise VersionUnavailable(0 if version is None else version, 0, self._version)
            ref, latest = self._root_ref, True
        else:
            ref, latest = self._root_ref_at(version), False
        kh = sha3(key)
        internals: list[bytes] = []
        depth = 0
        while ref is not None and not ref[2]:
            raw = self._load_as(_key(ref[1], kh, depth), _INTERNAL, cache=latest)
            internals.append(raw)
            ref = _child(raw, kh[depth >> 1] & 0x0F if depth & 1 else kh[depth >> 1] >> 4)
            depth += 1
        if ref is None:
            return kh, internals, None
        return kh, internals, self._load_as(_key(ref[1], kh, depth), _LEAF, cache=False)

    def get(self, key: bytes, version: int | None = None) -> bytes | None:
        """The value of ``key`` at ``version`` (default: the newest committed), or None.

        Raises ``VersionUnavailable`` for a version outside ``oldest_version..version``.
        """
        kh, _, leaf = self._walk(key, version)
        if leaf is None or leaf[1:33] != kh:
            return None
        return leaf[65:]

    def prove(self, key: bytes, version: int | None = None) -> tuple[bytes | None, StateProof]:
        """The value of ``key`` at ``version`` (default: the newest) and its proof against ``root_at(version)``.

        The proof shows presence with that value, or absence (value None); ``state.proof.verify_proof``
        checks it. Raises ``VersionUnavailable``.
        """
        kh, internals, leaf = self._walk(key, version)
        hx = kh.hex()
        levels = []
        for depth, raw in enumerate(internals):
            bitmap = (raw[1] << 8) | raw[2]
            k = bitmap.bit_count()
            hashes = [Hash32(raw[5 + 32 * i : 37 + 32 * i]) for i in range(k)]
            bit = 1 << _NIB[hx[depth]]
            if bitmap & bit:
                del hashes[(bitmap & (bit - 1)).bit_count()]
            levels.append(ProofLevel(bitmap, tuple(hashes)))
        if leaf is None:
            return None, StateProof(tuple(levels), None)
        proof = StateProof(tuple(levels), ProofLeaf(Hash32(leaf[1:33]), Hash32(leaf[33:65])))
        return (leaf[65:] if leaf[1:33] == kh else None), proof

    # --- writing ---------------------------------------------------------------------------------

    def prepare(self, updates: Mapping[bytes, bytes | None], version: int) -> tuple[Hash32, list[WriteOp]]:
        """The root of ``version`` after ``updates`` (key -> new value, None deletes) and the store writes.

        ``version`` must be ``self.version + 1``. The writes are the new nodes, the root record and the
        stale-node list of ``version``; nothing changes until they are written and ``applied`` is called.
        The same updates prepared twice are computed once. Raises ``StateError`` for another version.
        """
        if version != self._version + 1:
            raise StateError(f"cannot prepare version {version} on version {self._version}")
        memo_key = (version, tuple(sorted(updates.items())))
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit[0], list(hit[1])
        batch = _Batch(version)
        entries = []
        for key, value in memo_key[1]:
            kh = sha3(key)
            if value is None:
                entries.append(_Leaf(kh, kh.hex(), _DELETE, b""))
            else:
                entries.append(_Leaf(kh, kh.hex(), sha3(value), value))
        ref = self._root_ref
        result: _Child | None = self._update(batch, ref, 0, entries) if entries else ref
        new_ref = None if result is None else self._place(batch, 0, result)
        root = EMPTY_ROOT if new_ref is None else Hash32(new_ref[0])
        ops: list[WriteOp] = list(batch.puts.items())
        ops.append((root_key(version), _encode_root(new_ref)))
        if batch.stale:
            ops.append((stale_key(version), b"".join(_DEPTH[len(k)] + k for k in batch.stale)))
        if len(self._staged) >= 8:  # proposals that never committed
            self._staged.clear()
            self._memo.clear()
        self._staged[root] = _Staged(version, new_ref, batch.puts, batch.stale)
        self._memo[memo_key] = (root, ops)
        return root, list(ops)

    def applied(self, root: Hash32) -> None:
        """Adopt the version prepared for ``root``, once its writes are durable.

        Raises ``StateError`` if no prepared update leads to ``root``.
        """
        staged = self._staged.get(root)
        if staged is None or staged.version != self._version + 1:
            raise StateError(f"no prepared update leads to root {root.hex()}")
        self._version, self._root_ref = staged.version, staged.root
        cache = self._cache
        for key in staged.stale:
            cache.pop(key, None)
        if self._cache_cap:
            for key, raw in staged.nodes.items():
                if raw[0] == _INTERNAL:
                    cache[key] = raw
            if len(cache) > self._cache_cap:
                self._evict()
        self._staged.clear()
        self._memo.clear()

    def _update(self, b: _Batch, ref: _Ref | None, depth: int, entries: list[_Leaf]) -> _Child | None:
        """Apply ``entries`` (distinct key hashes, all on the path of this subtree) to the subtree ``ref``.

        Returns the new subtree: ``ref`` itself when nothing changed, a ``_Leaf`` to place when it holds
        one key, a stored internal node's reference, or None when it is empty.
        """
        if len(entries) == 1:
            return self._update_one(b, ref, depth, entries[0])
        if ref is None:
            return self._build(b, depth, [e for e in entries if e.vh])
        if ref[2]:
            return self._update_leaf(b, ref, depth, entries)
        rep = entries[0].kh
        key = _key(ref[1], rep, depth)
        raw = self._load_as(key, _INTERNAL)
        changed: dict[str, _Child | None] = {}
        same_shape = ((raw[1] << 8) | raw[2]).bit_count() > 1  # (a node with one child may collapse)
        groups: dict[str, list[_Leaf]] = {}
        for e in entries:
            c = e.hx[depth]
            group = groups.get(c)
            if group is None:
                groups[c] = [e]
            else:
                group.append(e)
        for c, group in groups.items():
            old = _child(raw, _NIB[c])
            new = self._update(b, old, depth + 1, group)
            if new != old:
                changed[c] = new
                if new is None or old is None:
                    same_shape = False
        if not changed:
            return ref
        b.stale.append(key)
        if same_shape:
            return self._splice(b, depth, rep, raw, changed)
        return self._reshape(b, depth, rep, raw, changed)

    def _reshape(
        self, b: _Batch, depth: int, rep: bytes, raw: bytes, changed: dict[str, _Child | None]
    ) -> _Child | None:
        """Internal node ``raw`` with children added or removed: rebuilt, or collapsed."""
        slots: dict[str, _Child] = dict(_children(raw))
        for c, new in changed.items():
            if new is None:
                del slots[c]
            else:
                slots[c] = new
        return self._make(b, depth, rep, slots)

    def _update_one(self, b: _Batch, ref: _Ref | None, depth: int, e: _Leaf) -> _Child | None:
        """``_update`` for a single entry (most nodes of a block): walk down its path, then rebuild upwards.

        The hot path of a block: node keys, child lookups and splices are written out inline.
        """
        kh, hx = e.kh, e.hx
        cache = self._cache
        path: list[tuple[bytes, bytes, int, int, int, int]] = []  # per level: key, node, bitmap, bit, index, k
        while ref is not None and not ref[2]:
            half = depth >> 1
            key = NODE_PREFIX + ref[1] + _DEPTH[depth] + (kh[:half] + _HIGH[kh[half]] if depth & 1 else kh[:half])
            raw = cache.get(key) or self._load_as(key, _INTERNAL)
            bitmap = (raw[1] << 8) | raw[2]
            bit = 1 << _NIB[hx[depth]]
            i = (bitmap & (bit - 1)).bit_count()
            k = bitmap.bit_count()
            path.append((key, raw, bitmap, bit, i, k))
            if bitmap & bit:
                vo = 5 + 32 * k + 8 * i
                ref = raw[5 + 32 * i : 37 + 32 * i], raw[vo : vo + 8], bool(((raw[3] << 8) | raw[4]) & bit)
            else:
                ref = None
            depth += 1
        if ref is None:
            if not e.vh:  # deleting an absent key
                return None if not path else self._root_of_path(path[0][0], path[0][1])
            new: _Child | None = e
        else:
            half = depth >> 1
            key = NODE_PREFIX + ref[1] + _DEPTH[depth] + (kh[:half] + _HIGH[kh[half]] if depth & 1 else kh[:half])
            leaf = self._load_as(key, _LEAF, cache=False)
            if leaf[1:33] == kh and e.vh:  # a new value for an existing key: the common case
                if leaf[33:65] == e.vh:
                    return ref if not path else self._root_of_path(path[0][0], path[0][1])
                b.stale.append(key)
                new = e
            else:
                new = self._update_leaf(b, ref, depth, [e], leaf)
                if new == ref:  # deleting a key that the leaf on its path does not hold
                    return ref if not path else self._root_of_path(path[0][0], path[0][1])
        puts, prefix = b.puts, b.prefix
        for key, raw, bitmap, bit, i, k in reversed(path):
            depth -= 1
            b.stale.append(key)
            if new is None or k == 1 or not bitmap & bit:
                new = self._reshape(b, depth, kh, raw, {_HEX[bit.bit_length() - 1]: new})
                continue
            h, vb, is_leaf = self._place(b, depth + 1, new) if isinstance(new, _Leaf) else new
            he = 5 + 32 * k
            leafmap = (raw[3] << 8) | raw[4]
            leafmap = leafmap | bit if is_leaf else leafmap & ~bit
            o, vo = 5 + 32 * i, he + 8 * i
            hashes = raw[5:o] + h + raw[o + 32 : he]
            half = depth >> 1
            puts[prefix + _DEPTH[depth] + (kh[:half] + _HIGH[kh[half]] if depth & 1 else kh[:half])] = (
                raw[:3] + leafmap.to_bytes(2, "big") + hashes + raw[he:vo] + vb + raw[vo + 8 :])
            new = sha3(INTERNAL_DOMAIN + raw[1:3] + hashes), b.vb, False
        return new

    @staticmethod
    def _root_of_path(key: bytes, raw: bytes) -> _Ref:
        """The reference to the unchanged internal node ``raw`` stored under ``key``."""
        return _hash_of(raw), key[len(NODE_PREFIX) : len(NODE_PREFIX) + 8], False

    def _splice(self, b: _Batch, depth: int, rep: bytes, raw: bytes, changed: dict[str, _Child | None]) -> _Ref:
        """A copy of internal node ``raw`` with its ``changed`` children (none of them added or removed)."""
        node = bytearray(raw)
        bitmap = (raw[1] << 8) | raw[2]
        leafmap = (raw[3] << 8) | raw[4]
        hashes_end = 5 + 32 * bitmap.bit_count()
        for c, new in changed.items():
            if new is None:  # excluded by the caller (same shape)
                raise StateError("a removed child reached _splice")
            h, vb, is_leaf = self._place(b, depth + 1, new)
            bit = 1 << _NIB[c]
            i = (bitmap & (bit - 1)).bit_count()
            node[5 + 32 * i : 37 + 32 * i] = h
            node[hashes_end + 8 * i : hashes_end + 8 * i + 8] = vb
            leafmap = leafmap | bit if is_leaf else leafmap & ~bit
        node[3] = leafmap >> 8
        node[4] = leafmap & 0xFF
        encoded = bytes(node)
        b.puts[b.key(rep, depth)] = encoded
        return sha3(INTERNAL_DOMAIN + encoded[1:3] + encoded[5:hashes_end]), b.vb, False

    def _update_leaf(
        self, b: _Batch, ref: _Ref, depth: int, entries: list[_Leaf], raw: bytes | None = None
    ) -> _Child | None:
        """Apply ``entries`` to the subtree that is the stored leaf ``ref`` (its record ``raw`` if already read)."""
        key = _key(ref[1], entries[0].kh, depth)
        if raw is None:
            raw = self._load_as(key, _LEAF, cache=False)
        okh, ovh = raw[1:33], raw[33:65]
        match: _Leaf | None = None
        merged: list[_Leaf] = []
        for e in entries:
            if e.kh == okh:
                match = e
            elif e.vh:
                merged.append(e)
        if match is None or match.vh == ovh:
            if not merged:
                return ref  # unchanged
            merged.append(_Leaf(okh, okh.hex(), ovh, raw[65:], key))  # it moves down: see _place
        else:
            b.stale.append(key)  # deleted or overwritten
            if match.vh:
                merged.append(match)
        return self._build(b, depth, merged)

    def _build(self, b: _Batch, depth: int, leaves: list[_Leaf]) -> _Child | None:
        """The subtree at ``depth`` holding exactly ``leaves`` (distinct key hashes on one path)."""
        if len(leaves) <= 1:
            return leaves[0] if leaves else None
        groups: dict[str, list[_Leaf]] = {}
        for e in leaves:
            groups.setdefault(e.hx[depth], []).append(e)
        slots: dict[str, _Child] = {}
        for c, group in groups.items():
            built = self._build(b, depth + 1, group)
            if built is not None:
                slots[c] = built
        return self._make(b, depth, leaves[0].kh, slots)

    def _make(self, b: _Batch, depth: int, rep: bytes, slots: dict[str, _Child]) -> _Child | None:
        """The internal node at ``depth`` on the path of ``rep`` with ``slots``, or its collapse."""
        if not slots:
            return None
        if len(slots) == 1:
            ((c, only),) = slots.items()
            if isinstance(only, _Leaf):
                return only
            if only[2]:  # a stored leaf, alone now: it moves up
                key = _hex_key(only[1], rep.hex()[:depth] + c)
                raw = self._load_as(key, _LEAF, cache=False)
                return _Leaf(raw[1:33], raw[1:33].hex(), raw[33:65], raw[65:], key)
        bitmap = leafmap = 0
        hashes: list[bytes] = []
        versions: list[bytes] = []
        for c in sorted(slots):
            h, vb, is_leaf = self._place(b, depth + 1, slots[c])
            bit = 1 << _NIB[c]
            bitmap |= bit
            if is_leaf:
                leafmap |= bit
            hashes.append(h)
            versions.append(vb)
        children = b"".join(hashes)
        head = bitmap.to_bytes(2, "big")
        b.puts[b.key(rep, depth)] = b"\x01" + head + leafmap.to_bytes(2, "big") + children + b"".join(versions)
        return sha3(INTERNAL_DOMAIN + head + children), b.vb, False

    def _place(self, b: _Batch, depth: int, child: _Child) -> _Ref:
        """Store ``child`` at ``depth`` (on its own key's path) if it is a leaf to place; its reference."""
        if not isinstance(child, _Leaf):
            return child
        if child.origin is not None:  # an existing leaf that moves (up on a collapse, down on a split)
            b.stale.append(child.origin)
        b.puts[b.key(child.kh, depth)] = b"\x00" + child.kh + child.vh + child.value
        return sha3(LEAF_DOMAIN + child.kh + child.vh), b.vb, True

    # --- pruning ---------------------------------------------------------------------------------

    def prune(self, below: int, limit: int = 10_000) -> int:
        """Delete what only versions below ``below`` need: at most ``limit`` + 1 deletions, in one batch.

        Walks the stale-node lists of versions 1..``below`` in order (a version's list names the nodes
        only older versions use) and deletes the listed nodes and the root records of the versions
        left behind; progress is stored in the same (unsynced: redoing it is harmless) batch.
        ``below`` is capped at the newest version. Returns the number of nodes and root records
        deleted, 0 when nothing is left to prune; ``oldest_version`` is ``below`` once it is done.
        """
        below = min(below, self._version)
        s, o = self._prune_next, self._prune_offset
        if s > below or limit <= 0:
            return 0
        ops: list[WriteOp] = []
        done = 0
        while s <= below and done < limit:
            raw = self._store.get(stale_key(s))
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
        """Every ``(key_hash, value)`` of ``version`` (default: the newest), in key-hash order.

        Raises ``VersionUnavailable``.
        """
        v = self._version if version is None else version
        ref = self._root_ref_at(v) if v >= 0 else None
        if ref is not None:
            yield from self._leaves(ref, "", v == self._version)

    def _leaves(self, ref: _Ref, path: str, latest: bool) -> Iterator[tuple[bytes, bytes]]:
        raw = self._load(_hex_key(ref[1], path), cache=latest)
        if raw[0] == _LEAF:
            yield raw[1:33], raw[65:]
            return
        for c, child in _children(raw).items():
            yield from self._leaves(child, path + c, latest)

    def audit(self, version: int | None = None) -> int:
        """Recompute every hash of ``version`` (default: the newest) from its nodes and values; the key count.

        Checks that each node hashes to what its parent (or the root record) says, that each leaf's
        value hashes to its value hash and its key hash lies on its path, and that the tree is in its
        collapsed form. Costs a read of the whole version. Raises ``StoreCorrupted``, ``VersionUnavailable``.
        """
        v = self._version if version is None else version
        ref = self._root_ref_at(v) if v >= 0 else None
        return 0 if ref is None else self._audit(ref, "", v == self._version)

    def _audit(self, ref: _Ref, path: str, latest: bool) -> int:
        key = _hex_key(ref[1], path)
        raw = self._load(key, cache=latest)
        where = _where(key)
        if (raw[0] == _LEAF) != ref[2]:
            raise StoreCorrupted(f"{where} has the wrong type")
        if raw[0] == _LEAF:
            if len(raw) < 65 or raw[1:33].hex()[: len(path)] != path or sha3(raw[65:]) != raw[33:65]:
                raise StoreCorrupted(f"{where}: leaf off its path or value hash mismatch")
            if _hash_of(raw) != ref[0]:
                raise StoreCorrupted(f"{where} does not hash to its parent's record")
            return 1
        bitmap = (raw[1] << 8) | raw[2]
        k = bitmap.bit_count()
        if len(raw) != 5 + 40 * k or k == 0 or ((raw[3] << 8) | raw[4]) & ~bitmap:
            raise StoreCorrupted(f"{where}: malformed internal node")
        children = _children(raw)
        if k == 1 and next(iter(children.values()))[2]:
            raise StoreCorrupted(f"{where}: a lone leaf child was not collapsed")
        if internal_hash(bitmap, raw[5 : 5 + 32 * k]) != ref[0]:
            raise StoreCorrupted(f"{where} does not hash to its parent's record")
        return sum(self._audit(child, path + c, latest) for c, child in children.items())


def _hash_of(raw: bytes) -> Hash32:
    """The hash of a stored node (leaf or internal) from its record."""
    if raw[0] == _LEAF:
        return sha3(LEAF_DOMAIN + raw[1:65])
    k = ((raw[1] << 8) | raw[2]).bit_count()
    return sha3(INTERNAL_DOMAIN + raw[1:3] + raw[5 : 5 + 32 * k])


def root_of(contents: Mapping[bytes, bytes]) -> Hash32:
    """The state root of exactly ``contents`` (key -> value), computed in memory from the hashing rules.

    Used by tests and tools to cross-check ``JellyfishState`` (which must give the same root whatever
    the order and batching of updates).
    """
    items = sorted((sha3(k), sha3(v)) for k, v in contents.items())
    return _subtree_root(items, 0) if items else EMPTY_ROOT


def _subtree_root(items: list[tuple[Hash32, Hash32]], depth: int) -> Hash32:
    if len(items) == 1:
        kh, vh = items[0]
        return sha3(LEAF_DOMAIN + kh + vh)
    groups: dict[int, list[tuple[Hash32, Hash32]]] = {}
    for item in items:
        kh = item[0]
        groups.setdefault(kh[depth >> 1] >> 4 if depth % 2 == 0 else kh[depth >> 1] & 0x0F, []).append(item)
    bitmap = 0
    hashes = []
    for nib in sorted(groups):
        bitmap |= 1 << nib
        hashes.append(_subtree_root(groups[nib], depth + 1))
    return internal_hash(bitmap, b"".join(hashes))
