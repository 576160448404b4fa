"""The versioned Jellyfish Merkle Tree (``state.jmt``) and its proofs (``state.proof``).

The tree is checked against a plain dict per version and against a root computed here, independently,
from the hashing rules written in ``state.proof``'s docstring.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crypto.hashing import Hash32, sha3
from state import jmt
from state import testing as sst
from state.abc import KeyValueStore
from state.exceptions import DecodeError, InvalidProof, StateError, StoreCorrupted, VersionUnavailable
from state.jmt import (
    LATEST_PREFIX,
    NODE_PREFIX,
    ROOT_PREFIX,
    VALUE_PREFIX,
    JellyfishState,
    node_key,
    root_key,
    root_of,
    value_key,
)
from state.kv import LevelDBStore, MemoryStore
from state.proof import EMPTY_ROOT, ProofLeaf, ProofLevel, StateProof, decode_proof, verify_proof

# --- an independent reference -------------------------------------------------------------------


def reference_root(contents: dict[bytes, bytes]) -> Hash32:
    """The root as ``state.proof`` defines it, written out again from the text (not from the code)."""

    def nibbles(kh: bytes) -> str:
        return kh.hex()

    def subtree(items: list[tuple[str, bytes, bytes]], depth: int) -> bytes:
        if len(items) == 1:
            _, kh, vh = items[0]
            return sha3(b"QENEX/v1/jmt/leaf" + kh + vh)
        bitmap, hashes = 0, b""
        for n in "0123456789abcdef":
            group = [item for item in items if item[0][depth] == n]
            if group:
                bitmap |= 1 << int(n, 16)
                hashes += subtree(group, depth + 1)
        return sha3(b"QENEX/v1/jmt/node" + bitmap.to_bytes(2, "big") + hashes)

    if not contents:
        return sha3(b"")
    items = [(nibbles(sha3(k)), sha3(k), sha3(v)) for k, v in contents.items()]
    return Hash32(subtree(items, 0))


@cache
def mined_keys() -> tuple[bytes, ...]:
    """Keys whose hashes share 1, 2, 3 and 4 leading nibbles with ``sha3(b"base")``'s (two each for 3 and 4).

    Random keys rarely share more than two nibbles in small trees; these make the tree split, collapse
    and grow single-child internal nodes several levels down.
    """
    base = sha3(b"base").hex()
    wanted = {1: 1, 2: 1, 3: 2, 4: 2}
    found: list[bytes] = [b"base"]
    i = 0
    while any(wanted.values()):
        key = b"k%d" % i
        h = sha3(key).hex()
        shared = next(d for d in range(65) if d == 64 or h[d] != base[d])
        if wanted.get(shared):
            wanted[shared] -= 1
            found.append(key)
        i += 1
    return tuple(found)


def test_mined_keys_share_prefixes() -> None:
    base = sha3(b"base").hex()
    shared = sorted(next(d for d in range(64) if sha3(k).hex()[d] != base[d]) for k in mined_keys()[1:])
    assert shared == [1, 2, 3, 3, 4, 4]


def test_reference_agrees_on_small_cases() -> None:
    assert reference_root({}) == root_of({}) == EMPTY_ROOT == sha3(b"")
    one = sha3(b"QENEX/v1/jmt/leaf" + sha3(b"k") + sha3(b"v"))
    assert reference_root({b"k": b"v"}) == root_of({b"k": b"v"}) == one
    contents = {k: k + b"!" for k in mined_keys()}
    assert reference_root(contents) == root_of(contents)


# --- helpers ----------------------------------------------------------------------------------------


def commit(tree: JellyfishState, store: KeyValueStore, updates: dict[bytes, bytes | None]) -> Hash32:
    """prepare, write, applied: what the chain store does per block."""
    root, ops = tree.prepare(updates, tree.version + 1)
    store.write(ops)
    tree.applied(root)
    return root


def new_tree(store: KeyValueStore, **kwargs: Any) -> JellyfishState:
    tree = JellyfishState(store, **kwargs)
    commit(tree, store, {})  # version 0, as the chain store writes with the genesis
    return tree


def reachable(store: KeyValueStore, version: int) -> set[bytes]:
    """The node and value keys of ``version``, found by decoding the documented layout (not through the tree)."""
    record = store.get(root_key(version))
    assert record is not None
    if record == b"":
        return set()
    out: set[bytes] = set()

    def value(kh: bytes, value_version: int) -> None:
        key = value_key(kh, value_version)
        assert store.get(key) is not None, f"value {kh.hex()}@{value_version} of version {version} is missing"
        out.add(key)

    def walk(node_version: int, path: str) -> None:
        key = node_key(node_version, path)
        raw = store.get(key)
        assert raw is not None, f"node {path!r}@{node_version} of version {version} is missing"
        assert raw[0] == 2, "format 2: every stored node is internal"
        out.add(key)
        leafmap, bitmap = int.from_bytes(raw[1:3], "big"), int.from_bytes(raw[3:5], "big")
        k = bitmap.bit_count()
        present = [n for n in range(16) if bitmap >> n & 1]
        leaf_hashes = iter(raw[5 + 40 * k + 32 * j : 5 + 40 * k + 32 * j + 32] for j in range(leafmap.bit_count()))
        for i, n in enumerate(present):
            v = int.from_bytes(raw[5 + 32 * k + 8 * i : 13 + 32 * k + 8 * i], "big")
            if leafmap >> n & 1:
                value(next(leaf_hashes), v)
            else:
                walk(v, path + "0123456789abcdef"[n])

    root_version = int.from_bytes(record[32:40], "big")
    if record[40] == 1:  # a tree of one leaf
        value(record[41:], root_version)
    else:
        walk(root_version, "")
    return out


def latest_index(store: KeyValueStore) -> dict[bytes, bytes]:
    """The latest-value index as stored: key hash -> value."""
    return {k[len(LATEST_PREFIX) :]: v for k, v in store.iterate(LATEST_PREFIX)}


def snapshot(store: KeyValueStore) -> dict[bytes, bytes]:
    return dict(store.iterate(b""))


# --- the state machine --------------------------------------------------------------------------------

_values = st.binary(max_size=5)
_updates = st.dictionaries(st.binary(max_size=2), st.none() | _values, max_size=5)


def _keys() -> st.SearchStrategy[bytes]:
    return st.sampled_from(mined_keys()) | st.binary(max_size=2)


class JellyfishMachine(RuleBasedStateMachine):
    """``JellyfishState`` against a dict per version: commits, reads and proofs at past versions, pruning."""

    cache_sizes: tuple[int, ...] = (0, 3, 1000)  # none; tiny, so that eviction runs all the time; all nodes
    value_cache_sizes: tuple[int, ...] = (0, 2, 1000)

    def open_store(self) -> KeyValueStore:
        return MemoryStore()

    def reopen_store(self) -> KeyValueStore:
        """The store as a restarted process finds it (the same object for a memory store)."""
        return self.store

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        self.cache_nodes = data.draw(st.sampled_from(self.cache_sizes), label="cache_nodes")
        self.cache_values = data.draw(st.sampled_from(self.value_cache_sizes), label="cache_values")
        self.compiled = data.draw(st.booleans(), label="compiled")  # the C core or its pure-Python twin
        self.store = self.open_store()
        self.tree = new_tree(self.store, cache_nodes=self.cache_nodes, cache_values=self.cache_values,
                             compiled=self.compiled)
        self.history: dict[int, dict[bytes, bytes]] = {0: {}}
        self.model: dict[bytes, bytes] = {}
        self.pending: dict[bytes, bytes | None] = {}
        self.keys_seen: set[bytes] = set(mined_keys()[:2])

    def teardown(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    def _retained(self) -> st.SearchStrategy[int]:
        return st.integers(min_value=self.tree.oldest_version, max_value=self.tree.version)

    @rule(key=_keys(), value=_values)
    def put(self, key: bytes, value: bytes) -> None:
        self.pending[key] = value
        self.keys_seen.add(key)

    @rule(key=_keys())
    def delete(self, key: bytes) -> None:
        self.pending[key] = None

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_existing(self, data: st.DataObject) -> None:
        self.pending[data.draw(st.sampled_from(sorted(self.model)))] = None

    @precondition(lambda self: self.model)
    @rule(data=st.data(), value=_values)
    def update_existing(self, data: st.DataObject, value: bytes) -> None:
        self.pending[data.draw(st.sampled_from(sorted(self.model)))] = value

    @rule(decoys=st.lists(_updates, max_size=2))
    def commit(self, decoys: list[dict[bytes, bytes | None]]) -> None:
        before = snapshot(self.store)
        for decoy in decoys:  # competing proposals, prepared and never committed
            root, _ = self.tree.prepare(decoy, self.tree.version + 1)
            assert root == reference_root(_applied(self.model, decoy))
        assert snapshot(self.store) == before, "prepare writes nothing"
        expected = _applied(self.model, self.pending)
        root = commit(self.tree, self.store, self.pending)
        assert root == reference_root(expected)
        self.model, self.pending = expected, {}
        self.history[self.tree.version] = dict(expected)

    @rule()
    def delete_everything(self) -> None:
        commit(self.tree, self.store, {k: None for k in self.model})
        self.model, self.pending = {}, {}
        self.history[self.tree.version] = {}
        assert self.tree.root == EMPTY_ROOT
        assert reachable(self.store, self.tree.version) == set()

    @rule(data=st.data())
    def read_at_a_past_version(self, data: st.DataObject) -> None:
        version = data.draw(self._retained())
        key = data.draw(st.sampled_from(sorted(self.keys_seen)))
        assert self.tree.get(key, version) == self.history[version].get(key)
        assert self.tree.root_at(version) == reference_root(self.history[version])

    @rule(data=st.data())
    def prove_at_a_past_version(self, data: st.DataObject) -> None:
        version = data.draw(self._retained())
        key = data.draw(st.sampled_from(sorted(self.keys_seen)) | st.binary(max_size=2))
        root = self.tree.root_at(version)
        value, proof = self.tree.prove(key, version)
        assert value == self.history[version].get(key)
        verify_proof(root, key, value, proof)
        verify_proof(root, key, value, proof.encode())
        assert decode_proof(proof.encode()) == proof
        for wrong in ([b"x", b""] if value is None else [None, value + b"!"]):
            with pytest.raises(InvalidProof):
                verify_proof(root, key, wrong, proof)
        if self.tree.root_at(self.tree.version) != root:
            with pytest.raises(InvalidProof):
                verify_proof(self.tree.root_at(self.tree.version), key, value, proof)

    @precondition(lambda self: self.tree.version >= 1)
    @rule(data=st.data(), limit=st.integers(min_value=1, max_value=12))
    def prune(self, data: st.DataObject, limit: int) -> None:
        target = data.draw(st.integers(min_value=0, max_value=self.tree.version))
        before = self.tree.oldest_version
        while True:
            done = self.tree.prune(target, limit)
            assert done <= limit + 1
            if done == 0:
                break
        oldest = self.tree.oldest_version
        assert oldest == max(before, target)
        if oldest > 0:
            with pytest.raises(VersionUnavailable, match="is pruned"):
                self.tree.get(b"k", oldest - 1)
        # nothing left but what the retained versions use; the latest values all there
        stored = {k for prefix in (NODE_PREFIX, VALUE_PREFIX) for k, _ in self.store.iterate(prefix)}
        needed = set().union(*(reachable(self.store, v) for v in range(oldest, self.tree.version + 1)))
        assert stored == needed
        assert latest_index(self.store) == {sha3(k): v for k, v in self.model.items()}
        for version in range(oldest, self.tree.version + 1):
            for key in sorted(self.keys_seen)[:4]:
                assert self.tree.get(key, version) == self.history[version].get(key)
        roots = [int.from_bytes(k[len(ROOT_PREFIX) :], "big") for k, _ in self.store.iterate(ROOT_PREFIX)]
        assert roots == list(range(oldest, self.tree.version + 1))

    @rule(data=st.data())
    def read_the_newest_version(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.keys_seen)) | st.binary(max_size=2))
        assert self.tree.get(key) == self.tree.get(key, self.tree.version) == self.model.get(key)
        value, _ = self.tree.prove(key)
        assert value == self.model.get(key)

    @rule()
    def reopen(self) -> None:
        self.store = self.reopen_store()
        self.compiled = not self.compiled  # each twin continues the other's store
        again = JellyfishState(self.store, cache_nodes=self.cache_nodes, cache_values=self.cache_values,
                               compiled=self.compiled)
        assert (again.root, again.version, again.oldest_version) == (
            self.tree.root, self.tree.version, self.tree.oldest_version)
        self.tree = again

    @rule(root=sst.hashes())
    def applied_unknown_root_raises(self, root: Hash32) -> None:
        before = self.tree.root
        with pytest.raises(StateError, match="no prepared update leads to root"):
            self.tree.applied(root)
        assert self.tree.root == before

    @invariant()
    def tree_matches_the_model(self) -> None:
        if not hasattr(self, "tree"):
            return
        assert self.tree.root == reference_root(self.model) == root_of(self.model)
        assert self.tree.audit() == len(self.model)
        assert sorted(self.tree.leaves()) == sorted((sha3(k), v) for k, v in self.model.items())
        assert latest_index(self.store) == {sha3(k): v for k, v in self.model.items()}
        for key in mined_keys()[:3]:
            assert self.tree.get(key) == self.model.get(key)


def _applied(model: dict[bytes, bytes], updates: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    out = dict(model)
    for k, v in updates.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


JellyfishMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_jellyfish_state_on_memory = JellyfishMachine.TestCase


class LevelDBJellyfishMachine(JellyfishMachine):
    """The same machine on LevelDB (plyvel), with the default node cache or none; ``reopen`` closes the database."""

    cache_sizes = (0, jmt.DEFAULT_CACHE_NODES)
    value_cache_sizes = (0, jmt.DEFAULT_CACHE_VALUES)

    def open_store(self) -> KeyValueStore:
        self.directory = tempfile.mkdtemp(prefix="jmt-")
        return LevelDBStore(self.directory)

    def reopen_store(self) -> KeyValueStore:
        self.store.close()
        return LevelDBStore(self.directory, create=False)

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(getattr(self, "directory", ""), ignore_errors=True)


LevelDBJellyfishMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=30, deadline=None)
test_jellyfish_state_on_leveldb = LevelDBJellyfishMachine.TestCase


# --- roots, batching, cost ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(contents=st.dictionaries(_keys(), _values, max_size=30), data=st.data())
def test_root_does_not_depend_on_order_or_batching(contents: dict[bytes, bytes], data: st.DataObject) -> None:
    order = data.draw(st.permutations(sorted(contents)))
    store = MemoryStore()
    tree = new_tree(store)
    chunk = data.draw(st.integers(min_value=1, max_value=7))
    for i in range(0, len(order), chunk):
        commit(tree, store, {k: contents[k] for k in order[i : i + chunk]})
    assert tree.root == root_of(contents) == reference_root(contents)


class CountingStore(MemoryStore):
    """A memory store that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)


def test_each_dirty_node_is_hashed_once_and_no_leaf_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted on the pure-Python twin, whose hash calls can be seen; the compiled core computes the same
    writes byte for byte (``tests/test_jmt_core.py``) and makes the same store reads."""
    store = CountingStore()
    tree = new_tree(store, compiled=False)
    commit(tree, store, {b"acct%d" % i: b"%d" % i for i in range(3000)})
    calls: list[bytes] = []
    real = jmt._sha3

    def counting(data: bytes = b"") -> Any:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(jmt, "_sha3", counting)
    updates: dict[bytes, bytes | None] = {b"acct%d" % i: b"new" for i in range(0, 3000, 97)}
    updates.update({b"fresh%d" % i: b"x" for i in range(20)})
    updates[b"acct5"] = None
    updates[b"acct7"] = b"7"  # its value already
    reads = store.reads
    root, ops = tree.prepare(updates, tree.version + 1)
    assert store.reads == reads, "the nodes of the newest version are cached; leaves are never read"
    nodes = [k for k, _ in ops if k.startswith(NODE_PREFIX)]
    values = sum(v is not None for v in updates.values())
    assert len(calls) == len(updates) + 2 * values + len(nodes), "one hash per key, 2 per value, 1 per new node"
    assert len(set(nodes)) == len(nodes)
    depth = max(len(k) for k in nodes)  # a block writes only along the touched paths
    assert len(nodes) <= len(updates) * 4 and depth < len(NODE_PREFIX) + 8 + 1 + 4
    written = {k for k, v in ops if k.startswith(VALUE_PREFIX)}
    assert written == {value_key(sha3(k), tree.version + 1) for k, v in updates.items() if v not in (None, b"7")}
    monkeypatch.setattr(jmt, "_sha3", real)
    store.write(ops)
    tree.applied(root)
    assert tree.audit() == 3000 + 20 - 1


def test_a_read_of_the_newest_version_is_one_store_read() -> None:
    store = CountingStore()
    tree = new_tree(store, cache_nodes=0, cache_values=0)
    commit(tree, store, {b"acct%d" % i: b"%d" % i for i in range(500)})
    commit(tree, store, {b"acct%d" % i: b"new" for i in range(0, 500, 7)})
    for key, expected in ((b"acct7", b"new"), (b"acct8", b"8"), (b"absent", None)):
        reads = store.reads
        assert tree.get(key) == expected
        assert store.reads == reads + 1
        assert tree.get(key, tree.version - 1) == (b"7" if key == b"acct7" else expected)
        assert store.reads > reads + 3, "an older version walks its path"


def test_cached_latest_values_follow_the_commits() -> None:
    store = CountingStore()
    tree = new_tree(store, cache_values=4)
    commit(tree, store, {b"a": b"1", b"b": b"2"})
    assert [tree.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", None]
    reads = store.reads
    assert [tree.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", None]
    assert store.reads == reads, "read from memory"
    root, ops = tree.prepare({b"a": None, b"c": b"3", b"d": b"4"}, tree.version + 1)
    assert [tree.get(k) for k in (b"a", b"c", b"d")] == [b"1", None, None], "prepared, not applied"
    store.write(ops)
    tree.applied(root)
    assert [tree.get(k) for k in (b"a", b"b", b"c", b"d")] == [None, b"2", b"3", b"4"]
    for i in range(10):  # evictions keep the cache bounded and right
        commit(tree, store, {b"k%d" % i: b"%d" % i, b"b": b"%d" % i})
        assert [tree.get(b"k%d" % j) for j in range(i + 1)] == [b"%d" % j for j in range(i + 1)]
        assert tree.get(b"b") == b"%d" % i and len(tree._values) <= 4
    assert JellyfishState(store).get(b"b") == b"9"


def test_a_block_costs_what_it_touches_not_the_tree_size() -> None:
    written = {}
    for n in (500, 5000):
        store = MemoryStore()
        tree = new_tree(store)
        commit(tree, store, {b"a%d" % i: b"v" for i in range(n)})
        _, ops = tree.prepare({b"a7": b"w"}, tree.version + 1)
        written[n] = sum(1 for k, _ in ops if k.startswith(NODE_PREFIX))
    assert written[500] <= written[5000] <= 5  # one path: leaf plus at most four internal nodes


def test_deletes_collapse_paths_at_every_depth() -> None:
    # Mined keys share 1..4 leading nibbles of their hashes, so deleting them in any order collapses
    # single-leaf subtrees at several depths, through nodes whose only child is internal.
    rng = random.Random(4)
    keys = list(mined_keys())
    for _ in range(40):
        store = MemoryStore()
        tree = new_tree(store)
        model = {k: k for k in rng.sample(keys, rng.randint(2, len(keys)))}
        commit(tree, store, dict(model))
        for key in rng.sample(sorted(model), len(model)):
            del model[key]
            commit(tree, store, {key: None})
            assert tree.root == reference_root(model)
            assert tree.audit() == len(model)
        assert tree.root == EMPTY_ROOT and reachable(store, tree.version) == set()


def test_updates_that_change_nothing_write_nothing() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    contents = {**{k: b"v" for k in mined_keys()}, **{b"%d" % i: b"w" for i in range(300)}}
    commit(tree, store, contents)
    absent = [b"absent%d" % i for i in range(50)]  # each lands on an empty slot or on another key's leaf
    for updates in ({k: None for k in absent}, {k: contents[k] for k in sorted(contents)[:40]},
                    {**{k: None for k in absent}, **{k: contents[k] for k in mined_keys()}}, {absent[0]: None}):
        root, ops = tree.prepare(updates, tree.version + 1)
        assert root == tree.root and ops == [(root_key(tree.version + 1), store.get(root_key(tree.version)))]


def test_prepare_checks_the_version() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    for wrong in (0, 2, -1):
        with pytest.raises(StateError, match=f"cannot prepare version {wrong} on version 0"):
            tree.prepare({b"k": b"v"}, wrong)


def test_reads_outside_the_retained_versions_raise() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    for i in range(5):
        commit(tree, store, {b"k": b"%d" % i})
    with pytest.raises(VersionUnavailable, match=r"version 6 is not committed yet \(readable: 0..5\)") as info:
        tree.get(b"k", 6)
    assert (info.value.version, info.value.oldest, info.value.latest) == (6, 0, 5)
    while tree.prune(3, 1):
        pass
    assert tree.oldest_version == 3 and tree.get(b"k", 3) == b"2" and tree.get(b"k") == b"4"
    for call in (lambda: tree.get(b"k", 2), lambda: tree.prove(b"k", 1), lambda: tree.root_at(0)):
        with pytest.raises(VersionUnavailable, match=r"is pruned \(readable: 3..5\)"):
            call()


def test_pruning_is_bounded_and_resumes_after_reopen() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    for v in range(1, 11):
        commit(tree, store, {b"acct%d" % i: b"%d" % v for i in range(40)})
    steps = []
    while True:
        done = tree.prune(8, 25)
        if not done:
            break
        steps.append(done)
        tree = JellyfishState(store)  # progress survives a restart
    assert max(steps) <= 26 and len(steps) > 3
    assert tree.oldest_version == 8
    assert [tree.root_at(v) for v in (8, 9, 10)] == [tree.root_at(8), tree.root_at(9), tree.root]
    assert tree.get(b"acct3", 8) == b"8"


def test_audit_and_open_detect_corruption() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    commit(tree, store, {k: k for k in mined_keys()})
    value = next(k for k, _ in store.iterate(VALUE_PREFIX))
    raw = store.get(value)
    assert raw is not None
    store.write([(value, raw + b"tampered")])
    with pytest.raises(StoreCorrupted, match="value hash mismatch"):
        JellyfishState(store).audit()
    store.write([(value, None)])
    with pytest.raises(StoreCorrupted, match="is missing"):
        JellyfishState(store).audit()
    store.write([(value, raw)])
    assert JellyfishState(store).audit() == len(mined_keys())
    latest = next(k for k, _ in store.iterate(LATEST_PREFIX))
    for tampered in ([(latest, b"other")], [(latest, None)], [(LATEST_PREFIX + sha3(b"extra"), b"x")]):
        before = snapshot(store)
        store.write(tampered)
        with pytest.raises(StoreCorrupted, match="latest-value index disagrees"):
            JellyfishState(store).audit()
        store.write([(k, None) for k in snapshot(store)] + list(before.items()))
    node = next(k for k, _ in store.iterate(NODE_PREFIX) if len(k) > len(NODE_PREFIX) + 8)  # not the root
    raw = store.get(node)
    assert raw is not None
    store.write([(node, raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])])
    with pytest.raises(StoreCorrupted, match="does not hash to its parent"):
        JellyfishState(store).audit()
    store.write([(node, raw[:-1])])
    with pytest.raises(StoreCorrupted, match="missing or unreadable"):
        JellyfishState(store, cache_nodes=0).audit()


def test_a_store_of_format_1_is_refused() -> None:
    store = MemoryStore()
    new_tree(store)
    commit(JellyfishState(store), store, {b"k": b"v"})
    store.write([(jmt.FORMAT_KEY, None)])  # what a release before format 2 left behind
    with pytest.raises(StoreCorrupted, match=r"stored in format 1 \(no format record\); this release reads format 2"):
        JellyfishState(store)
    store.write([(jmt.FORMAT_KEY, b"\x03")])
    with pytest.raises(StoreCorrupted, match="stored in format 03"):
        JellyfishState(store)


# --- proofs ---------------------------------------------------------------------------------------------


def test_proofs_of_the_empty_and_one_key_trees() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    value, proof = tree.prove(b"k")
    assert value is None and proof == StateProof((), None)
    verify_proof(EMPTY_ROOT, b"k", None, proof)
    with pytest.raises(InvalidProof, match="empty root only"):
        verify_proof(sha3(b"x"), b"k", None, proof)
    commit(tree, store, {b"k": b"v"})
    value, proof = tree.prove(b"k")
    assert value == b"v" and proof == StateProof((), ProofLeaf(sha3(b"k"), sha3(b"v")))
    verify_proof(tree.root, b"k", b"v", proof)
    absent_value, absent = tree.prove(b"other")
    assert absent_value is None and absent == proof  # the lone leaf proves every other key absent
    verify_proof(tree.root, b"other", None, absent)
    with pytest.raises(InvalidProof, match="holds another key"):
        verify_proof(tree.root, b"other", b"v", absent)


def test_proof_shapes_are_checked() -> None:
    store = MemoryStore()
    tree = new_tree(store)
    commit(tree, store, {k: b"v" for k in mined_keys()})
    key = mined_keys()[-1]
    value, proof = tree.prove(key)
    assert value == b"v" and len(proof.levels) >= 4 and proof.leaf is not None
    verify_proof(tree.root, key, b"v", proof)
    i = next(d for d, level in enumerate(proof.levels) if level.siblings)  # a node with another child
    levels, node = list(proof.levels), proof.levels[i]

    def with_level(level: ProofLevel) -> StateProof:
        return StateProof((*levels[:i], level, *levels[i + 1 :]), proof.leaf)

    cases = {
        "a level dropped": StateProof(proof.levels[1:], proof.leaf),
        "a sibling dropped": with_level(ProofLevel(node.bitmap, node.siblings[1:])),
        "siblings reordered": with_level(ProofLevel(node.bitmap, node.siblings[::-1])) if len(node.siblings) > 1
        else with_level(ProofLevel(node.bitmap, (sha3(b"x"),))),
        "bitmap changed": with_level(ProofLevel(node.bitmap ^ (node.bitmap & -node.bitmap) << 1 or 1, node.siblings)),
        "leaf removed": StateProof(proof.levels, None),
        "leaf of another key": StateProof(proof.levels, ProofLeaf(sha3(b"base"), proof.leaf.value_hash)),
    }
    for bad in cases.values():
        with pytest.raises(InvalidProof):
            verify_proof(tree.root, key, b"v", bad)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_byte_of_a_proof_matters(data: st.DataObject) -> None:
    tree, store = _proof_tree()
    key = data.draw(st.sampled_from(mined_keys()) | st.binary(max_size=3))
    value, proof = tree.prove(key)
    encoded = bytearray(proof.encode())
    at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(InvalidProof):
        verify_proof(tree.root, key, value, bytes(encoded))


@cache
def _proof_tree() -> tuple[JellyfishState, MemoryStore]:
    store = MemoryStore()
    tree = new_tree(store)
    commit(tree, store, {**{k: k * 3 for k in mined_keys()}, **{b"%d" % i: b"v" for i in range(200)}})
    return tree, store


@settings(max_examples=200, deadline=None)
@given(sst.state_proofs())
def test_proof_codec_round_trip(proof: StateProof) -> None:
    encoded = proof.encode()
    assert decode_proof(encoded) == proof
    assert decode_proof(encoded).encode() == encoded


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | sst.state_proofs().map(lambda p: p.encode()[:-1]))
def test_proof_decoder_raises_only_decode_error(data: bytes) -> None:
    try:
        proof = decode_proof(data)
    except DecodeError:
        return
    assert proof.encode() == data  # anything accepted is canonical


def test_proof_decoder_limits() -> None:
    level = ProofLevel(0xFFFF, tuple(Hash32(bytes([i]) * 32) for i in range(15)))
    with pytest.raises(ValueError, match="65 levels"):
        StateProof((level,) * 65, None)
    with pytest.raises(DecodeError):
        decode_proof(b"\x92" + b"\xdc\x00\x41" + b"\x92\x00\x90" * 65 + b"\xc0")  # 65 levels
    with pytest.raises(DecodeError, match="bitmap"):
        decode_proof(b"\x92\x91\x92\x00\x90\xc0")  # a level with an empty bitmap
    with pytest.raises(DecodeError, match="over the limit"):
        decode_proof(b"\x00" * (64 * 1024 + 1))
    big = StateProof((level,) * 64, ProofLeaf(Hash32(b"\x01" * 32), Hash32(b"\x02" * 32)))
    assert decode_proof(big.encode()) == big


def test_bench_state_command_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from devnet.cli import main

    args = ["bench-state", "--sizes", "300,1000", "--blocks", "2", "--warmup", "1", "--touched", "40",
            "--fill-batch", "400", "--proofs", "5", "--reads", "20", "--dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()
            if line.strip().startswith(("300 ", "1,000 ")) and "filled" not in line]
    assert [r[0] for r in rows] == ["300", "1,000"] and all(len(r) == 13 for r in rows)
    assert "goal: commit at 1,000 keys within 2x of 300:" in out and "key updates/s on one core" in out
    assert list(tmp_path.iterdir()) == [], "the LevelDB directories are removed"
    assert "tree update by the compiled core" in out
    assert main([*args, "--python-twin"]) == 0
    assert "tree update by the pure-Python twin" in capsys.readouterr().out
    assert main([*args, "--no-simd"]) == 0
    assert "one-at-a-time node hashing" in capsys.readouterr().out


async def test_the_node_prunes_outside_its_retention_window() -> None:
    from node.config import NodeConfig, StateSection
    from node.rpc.server import RPCApp
    from tests.test_node import grow_chain, make_keys, make_node

    keys = make_keys(4)
    node = make_node(keys, 0, NodeConfig(state=StateSection(retention_versions=2, prune_batch=3,
                                                            cache_nodes=7, cache_values=0)))
    grow_chain(node, keys, 6)
    state = node.chain.state
    assert isinstance(state, JellyfishState) and (state._cache_cap, state._values_cap) == (7, 0)
    assert state.oldest_version == 0
    steps = 0
    while node.prune_state():  # what its pruning service does, one bounded step at a time
        steps += 1
    assert state.oldest_version == 4 and steps > 2
    assert (await RPCApp(node).status([]))["oldestStateHeight"] == 4  # what qnx_status tells a wallet
    for height in (4, 5, 6):
        assert state.root_at(height) == node.chain.block(height).header.state_root
    with pytest.raises(VersionUnavailable, match="is pruned"):
        state.root_at(3)
    grow_chain(node, keys, 1)  # commits go on; the next step prunes version 4
    assert node.prune_state() > 0 and state.oldest_version == 5


def test_config_lists_the_state_options_and_checks_them(tmp_path: Path) -> None:
    from node.config import NodeConfig, StateSection, load_config, render_config
    from node.exceptions import ConfigError

    text = render_config(NodeConfig())
    for option in ("retention_versions", "prune_batch", "prune_interval_ms", "cache_nodes", "cache_values"):
        assert f"\n{option} = " in text, option
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert load_config(path).state == StateSection()
    path.write_text(text.replace("cache_values = 100000", "cache_values = 5"))
    assert load_config(path).state.cache_values == 5
    for bad in ("cache_nodes = -1", "retention_versions = 0"):
        option = bad.split(" = ")[0]
        line = next(line for line in text.splitlines() if line.startswith(f"{option} = "))
        path.write_text(text.replace(line, bad))
        with pytest.raises(ConfigError, match=r"\[state\]"):
            load_config(path)
