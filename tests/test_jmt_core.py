"""The compiled core of the state tree (``state/_jmt_core.c``) against its pure-Python twin and hashlib.

The two twins of ``JellyfishState.prepare`` must give the same root and the same store writes, byte for
byte and in the same order (the stale list's record depends on its order), on every tree shape: splits
and collapses several nibbles deep (mined keys), deletes, values set again, empty batches, one-leaf and
empty trees, with the node cache on, tiny or off. ``tests/test_jmt.py`` runs its state machine on both.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state import _jmt_core, jmt
from state.exceptions import StoreCorrupted
from state.jmt import JellyfishState, root_of
from state.kv import MemoryStore
from tests.test_jmt import commit, mined_keys


@given(st.binary(max_size=700))
def test_sha3_matches_hashlib(data: bytes) -> None:
    assert _jmt_core.sha3_256(data) == hashlib.sha3_256(data).digest()


def test_sha3_at_every_length_around_the_rate() -> None:
    """FIPS 202 padding at each length around one and several 136-byte blocks (0x06 and 0x80 in one byte at 135)."""
    rng = random.Random(5)
    for n in [*range(0, 300), 407, 408, 409, 543, 544, 545, 4096]:
        data = rng.randbytes(n)
        assert _jmt_core.sha3_256(data) == hashlib.sha3_256(data).digest(), n


_keys = st.sampled_from(mined_keys()) | st.binary(max_size=2)
_batch = st.dictionaries(_keys, st.none() | st.binary(max_size=4), max_size=12)


def _twins(cache_nodes: int) -> tuple[tuple[JellyfishState, MemoryStore], tuple[JellyfishState, MemoryStore]]:
    out = []
    for compiled in (True, False):
        store = MemoryStore()
        tree = JellyfishState(store, cache_nodes=cache_nodes, compiled=compiled)
        commit(tree, store, {})
        out.append((tree, store))
    return out[0], out[1]


@pytest.fixture(params=[True, False], ids=["simd", "one-at-a-time"])
def simd(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The compiled core with its four-way node hashing (where the processor has AVX2) and without.

    The setting is the same for every example of a test, so the function-scoped fixture is safe.
    """
    before = _jmt_core.set_simd(request.param)
    yield request.param
    _jmt_core.set_simd(before)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_batch, max_size=8), cache_nodes=st.sampled_from([0, 2, 10_000]))
def test_the_twins_write_the_same_bytes(batches: list[dict[bytes, bytes | None]], cache_nodes: int, simd: bool) -> None:
    (c_tree, c_store), (p_tree, p_store) = _twins(cache_nodes)
    model: dict[bytes, bytes] = {}
    for updates in batches:
        version = c_tree.version + 1
        c_root, c_ops = c_tree.prepare(updates, version)
        p_root, p_ops = p_tree.prepare(updates, version)
        assert c_root == p_root
        assert c_ops == p_ops, "the same writes in the same order"
        c_store.write(c_ops)
        p_store.write(p_ops)
        c_tree.applied(c_root)
        p_tree.applied(p_root)
        for key, value in updates.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        assert c_root == root_of(model)
    assert list(c_store.iterate(b"")) == list(p_store.iterate(b""))
    assert c_tree.audit() == len(model)


def test_the_twins_agree_on_a_larger_tree(simd: bool) -> None:
    """Thousands of keys, so that nodes are full down to depth 2 and groups are wider than ``_WIDE``."""
    rng = random.Random(11)
    (c_tree, c_store), (p_tree, p_store) = _twins(jmt.DEFAULT_CACHE_NODES)
    keys = [b"acct%d" % i for i in range(6000)]
    for round_ in range(6):
        updates: dict[bytes, bytes | None] = {}
        for key in rng.sample(keys, 1500):
            updates[key] = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(1, 9))
        updates.update({b"new%d-%d" % (round_, i): b"v" for i in range(200)})
        c = c_tree.prepare(updates, c_tree.version + 1)
        p = p_tree.prepare(updates, p_tree.version + 1)
        assert c == p
        c_store.write(c[1])
        p_store.write(p[1])
        c_tree.applied(c[0])
        p_tree.applied(p[0])
    assert list(c_store.iterate(b"")) == list(p_store.iterate(b""))


def _state(tree: JellyfishState) -> Any:
    return tree._root_ref  # noqa: SLF001 - the root ref handed to the core


def test_arguments_of_the_wrong_shape_are_refused() -> None:
    def latest(path: bytes, version: bytes) -> bytes:
        raise AssertionError("not read")

    version = (1).to_bytes(8, "big")
    with pytest.raises(TypeError):
        _jmt_core.prepare({b"k": 1}, None, version, {}, latest)  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        _jmt_core.prepare({"k": b"v"}, None, version, {}, latest)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="a root is None or"):
        _jmt_core.prepare({b"k": b"v"}, (b"short", version, None), version, {}, latest)
    with pytest.raises(ValueError, match="8 bytes"):
        _jmt_core.prepare({b"k": b"v"}, None, b"\x01", {}, latest)


def test_an_unreadable_node_is_store_corrupted_and_changes_nothing() -> None:
    """A malformed record in the node cache, or one that the store read refuses, raises ``StoreCorrupted``."""
    store = MemoryStore()
    tree = JellyfishState(store)
    commit(tree, store, {b"a%d" % i: b"x" for i in range(40)})
    root, version = tree.root, tree.version
    ref = _state(tree)
    with pytest.raises(StoreCorrupted, match="state node '' of the newest version is unreadable"):
        _jmt_core.prepare({b"a1": b"y", b"a2": b"y"}, ref, (version + 1).to_bytes(8, "big"),
                          {b"": b"\x02\x00\x00\x00\x01"}, tree._latest)  # noqa: SLF001
    assert (tree.root, tree.version) == (root, version)
    cold = JellyfishState(store, cache_nodes=0)
    store.write([(jmt.node_key(version, ""), b"\x02garbage")])
    with pytest.raises(StoreCorrupted):
        cold.prepare({b"a1": b"y"}, version + 1)
    assert (cold.root, cold.version) == (root, version)
