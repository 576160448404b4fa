"""The first authenticated state: a binary Merkle tree over the sorted leaves of a flat state.

Leaves are ``SHA3-256(0x00 || SHA3(key) || SHA3(value))`` sorted by ``SHA3(key)``; inner nodes are
``SHA3-256(0x01 || left || right)``, an odd node is carried up unchanged (RFC 6962 §2.1 style
domain separation); the empty state's root is ``SHA3-256(b"")``.

This version keeps every leaf hash in memory and rebuilds the root per block, so a block costs
O(number of keys) hashes. The versioned radix tree with proofs replaces it behind the same
``AuthenticatedState`` interface (issue 4); the root is what every header commits to.
"""

from __future__ import annotations

from collections.abc import Mapping

from crypto.hashing import Hash32, sha3, sha3_concat
from state.abc import KeyValueStore, WriteOp
from state.exceptions import StateError

STATE_PREFIX = b"s/"
"""Store prefix under which the flat state lives: ``b"s/" + key -> value``."""

EMPTY_ROOT = sha3(b"")


def _leaf(key_hash: bytes, value: bytes) -> bytes:
    return sha3_concat(b"\x00", key_hash, sha3(value))


def merkle_root(leaves: list[bytes]) -> Hash32:
    """The binary Merkle root of ``leaves`` (already hashed), as described above."""
    if not leaves:
        return EMPTY_ROOT
    level: list[bytes] = list(leaves)
    while len(level) > 1:
        nxt: list[bytes] = [sha3_concat(b"\x01", level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return Hash32(level[0])


class FlatMerkleState:
    """``AuthenticatedState`` over a ``KeyValueStore``: flat values plus an in-memory leaf index."""

    def __init__(self, store: KeyValueStore) -> None:
        """Load the leaf index from ``store`` (one pass over the ``s/`` prefix)."""
        self._store = store
        self._leaves: dict[bytes, bytes] = {}
        n = len(STATE_PREFIX)
        for key, value in store.iterate(STATE_PREFIX):
            self._leaves[sha3(key[n:])] = _leaf(sha3(key[n:]), value)
        self._root = self._compute(self._leaves)
        self._staged: dict[bytes, dict[bytes, bytes]] = {}

    @staticmethod
    def _compute(leaves: Mapping[bytes, bytes]) -> Hash32:
        return merkle_root([leaves[k] for k in sorted(leaves)])

    @property
    def root(self) -> Hash32:
        """The root over the committed state."""
        return self._root

    def __len__(self) -> int:
        return len(self._leaves)

    def get(self, key: bytes) -> bytes | None:
        """The committed value of ``key`` or None."""
        return self._store.get(STATE_PREFIX + key)

    def _updated(self, updates: Mapping[bytes, bytes | None]) -> dict[bytes, bytes]:
        leaves = dict(self._leaves)
        for key, value in updates.items():
            kh = sha3(key)
            if value is None:
                leaves.pop(kh, None)
            else:
                leaves[kh] = _leaf(kh, value)
        return leaves

    def prepare(self, updates: Mapping[bytes, bytes | None]) -> tuple[Hash32, list[WriteOp]]:
        """The root after ``updates`` and the store writes for them; changes nothing."""
        if not updates:
            return self._root, []
        leaves = self._updated(updates)
        root = self._compute(leaves)
        if len(self._staged) >= 8:  # proposals that never committed
            self._staged.clear()
        self._staged[root] = leaves
        return root, [(STATE_PREFIX + k, v) for k, v in sorted(updates.items())]

    def applied(self, root: Hash32) -> None:
        """Adopt the contents prepared for ``root``, after their writes became durable.

        Raises ``StateError`` if no prepared update leads to ``root``.
        """
        if root == self._root:
            return
        try:
            self._leaves = self._staged.pop(root)
        except KeyError:
            raise StateError(f"no prepared update leads to root {root.hex()}") from None
        self._root = root
        self._staged.clear()
