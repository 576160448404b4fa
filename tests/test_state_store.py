"""The key-value stores (``state.kv``), the list Merkle root (``state.tree``) and the chain store (``state.chain``).

The state tree itself (``state.jmt``, ``state.proof``) is tested in ``tests/test_jmt.py``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crypto.hashing import Hash32, sha3
from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node.rpc.client import sign_transaction, transfer_call
from state.abc import KeyValueStore
from state.chain import ChainStore, Head, TxLocation
from state.codec import encode
from state.exceptions import StateError, StoreCorrupted
from state.jmt import JellyfishState, node_key, root_key
from state.kv import LevelDBStore, MemoryStore
from state.proof import EMPTY_ROOT
from state.tree import merkle_root
from state.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    Event,
    Genesis,
    Receipt,
    Transaction,
    ValidatorSignature,
)

STORE_KINDS = ["memory", "leveldb"]


def open_store(kind: str, path: Path) -> KeyValueStore:
    """A fresh store of ``kind``; LevelDB lives under ``path``."""
    if kind == "memory":
        return MemoryStore()
    return LevelDBStore(path / "db")


@pytest.fixture(params=STORE_KINDS)
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    store = open_store(request.param, tmp_path)
    yield store
    store.close()


def snapshot(store: KeyValueStore) -> dict[bytes, bytes]:
    """Everything in ``store``."""
    return dict(store.iterate(b""))


# --- key-value stores ---------------------------------------------------------------------------


def test_get_write_delete(kv: KeyValueStore) -> None:
    assert kv.get(b"a") is None
    kv.write([(b"a", b"1"), (b"b", b"2"), (b"empty", b"")])
    assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"empty")) == (b"1", b"2", b"")
    kv.write([(b"a", b"3"), (b"b", None), (b"never-there", None)])
    assert (kv.get(b"a"), kv.get(b"b"), kv.get(b"never-there")) == (b"3", None, None)
    assert snapshot(kv) == {b"a": b"3", b"empty": b""}


def test_later_op_of_a_batch_wins(kv: KeyValueStore) -> None:
    kv.write([(b"k", b"1"), (b"k", None), (b"j", None), (b"j", b"2"), (b"i", b"1"), (b"i", b"3")], sync=False)
    assert (kv.get(b"k"), kv.get(b"j"), kv.get(b"i")) == (None, b"2", b"3")


def test_iterate_by_prefix_in_key_order(kv: KeyValueStore) -> None:
    keys = [b"b/\x02", b"a", b"b/", b"b/\x00\xff", b"b0", b"b/\x01", b"b", b"c/\x00", b"b/\xff\xff", b"\x00"]
    kv.write([(k, b"v" + k) for k in keys])
    assert list(kv.iterate(b"b/")) == [(k, b"v" + k) for k in sorted(keys) if k.startswith(b"b/")]
    assert [k for k, _ in kv.iterate(b"b/")] == [b"b/", b"b/\x00\xff", b"b/\x01", b"b/\x02", b"b/\xff\xff"]
    assert [k for k, _ in kv.iterate(b"")] == sorted(keys)
    assert list(kv.iterate(b"z")) == []
    assert list(kv.iterate(b"b/\x00")) == [(b"b/\x00\xff", b"vb/\x00\xff")]


def test_iterate_range_both_ways(kv: KeyValueStore) -> None:
    keys = [b"v/a" + bytes([0, 0, 0, h]) for h in (1, 4, 9)] + [b"v/b\x00\x00\x00\x02", b"v/", b"w"]
    kv.write([(k, k[-1:]) for k in keys])
    inside = sorted(k for k in keys if b"v/a" <= k < b"v/b")
    assert [k for k, _ in kv.iterate_range(b"v/a", b"v/b")] == inside
    assert [k for k, _ in kv.iterate_range(b"v/a", b"v/b", reverse=True)] == inside[::-1]
    # a seek: the newest version <= 5 of key "a" is version 4; none <= 0
    newest = next(kv.iterate_range(b"v/a", b"v/a" + (6).to_bytes(4, "big"), reverse=True), None)
    assert newest == (b"v/a\x00\x00\x00\x04", b"\x04")
    assert next(kv.iterate_range(b"v/a", b"v/a" + (1).to_bytes(4, "big"), reverse=True), None) is None
    assert list(kv.iterate_range(b"v/b", b"v/a")) == [] and list(kv.iterate_range(b"x", b"x")) == []
    # pinned: plyvel's own reverse iterator drops the key equal to ``start`` when it is alone in the range
    assert list(kv.iterate_range(b"v/", b"v/a", reverse=True)) == [(b"v/", b"/")]
    assert [k for k, _ in kv.iterate_range(b"", b"\xff")] == sorted(keys)


def test_iteration_is_a_snapshot(kv: KeyValueStore) -> None:
    kv.write([(b"p/1", b"1"), (b"p/2", b"2")])
    it = kv.iterate(b"p/")
    assert next(it) == (b"p/1", b"1")
    kv.write([(b"p/3", b"3"), (b"p/2", None)])
    assert list(it) == [(b"p/2", b"2")]
    assert list(kv.iterate(b"p/")) == [(b"p/1", b"1"), (b"p/3", b"3")]


def _ops_then_raise() -> Iterator[tuple[bytes, bytes | None]]:
    yield (b"first", b"1")
    yield (b"old", None)
    raise RuntimeError("producer failed mid-batch")


def _ops_with(bad: object) -> Callable[[], Iterator[tuple[bytes, bytes | None]]]:
    def ops() -> Iterator[tuple[bytes, bytes | None]]:
        yield (b"first", b"1")
        yield (b"old", None)
        yield (b"bad", bad)  # type: ignore[misc]  # not bytes: the store must refuse the whole batch

    return ops


# Pinned: MemoryStore once turned an int value 42 into 42 zero bytes instead of raising TypeError.


@pytest.mark.parametrize(
    ("kind", "ops", "error"),
    [
        ("memory", _ops_then_raise, RuntimeError),
        ("leveldb", _ops_then_raise, RuntimeError),
        ("memory", _ops_with("text"), TypeError),
        ("leveldb", _ops_with("text"), TypeError),
        ("memory", _ops_with(42), TypeError),
        ("leveldb", _ops_with(42), TypeError),
    ],
    ids=["raises-memory", "raises-leveldb", "str-memory", "str-leveldb", "int-memory", "int-leveldb"],
)
def test_failing_batch_writes_nothing(
    kind: str, ops: Callable[[], Iterator[tuple[bytes, bytes | None]]], error: type[Exception], tmp_path: Path
) -> None:
    store = open_store(kind, tmp_path)
    store.write([(b"old", b"0")])
    with pytest.raises(error):
        store.write(ops())
    assert snapshot(store) == {b"old": b"0"}
    store.close()


def test_leveldb_survives_close_and_reopen(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    store.write([(b"a", b"1"), (b"b", b"2")])
    store.write([(b"b", None), (b"c", b"3")], sync=False)
    store.close()
    store.close()  # idempotent
    again = LevelDBStore(tmp_path / "db", create=False)
    assert snapshot(again) == {b"a": b"1", b"c": b"3"}
    again.close()


def test_leveldb_tuning_is_not_part_of_the_format(tmp_path: Path) -> None:
    # Bloom filters, block cache, write buffer and compression are settings of the open database: a
    # database written with one set opens and reads the same with another (older releases opened with
    # LevelDB's defaults, snappy compression among them). The values compress, so snappy really
    # writes compressed blocks that the next round, without compression, must read.
    settings: list[dict[str, Any]] = [
        {"compression": "snappy"}, {},
        {"bloom_filter_bits": 0, "block_cache_mib": 8, "write_buffer_mib": 4, "compression": "snappy"},
        {"bloom_filter_bits": 16, "block_cache_mib": 1, "write_buffer_mib": 1, "compression": "none"}]
    expected: dict[bytes, bytes] = {}
    for i, options in enumerate(settings * 2):
        store = LevelDBStore(tmp_path / "db", **options)
        assert snapshot(store) == expected
        batch = [(b"k%d/%d" % (i, j), bytes([j % 256]) * 300) for j in range(3000)]  # several tables per round
        store.write(batch, sync=False)
        expected.update(batch)
        assert all(store.get(k) == v for k, v in batch[::97]) and store.get(b"absent") is None
        store.close()


def test_an_unknown_leveldb_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression must be one of none, snappy"):
        LevelDBStore(tmp_path / "db", compression="zstd")
    assert not (tmp_path / "db").exists()


def test_leveldb_open_errors_are_state_errors(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot open LevelDB"):
        LevelDBStore(tmp_path / "missing", create=False)
    store = LevelDBStore(tmp_path / "db")
    with pytest.raises(StateError, match="cannot open LevelDB"):  # the LevelDB lock: one opener at a time
        LevelDBStore(tmp_path / "db")
    store.close()


_ops = st.lists(st.tuples(st.binary(max_size=3), st.none() | st.binary(max_size=4)), max_size=12)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(_ops, max_size=4), prefix=st.binary(max_size=2))
@example(batches=[[(b"", b"")]], prefix=b"")  # pinned: the plyvel reverse-range bug (see state.kv)
def test_stores_agree_with_a_dict(batches: list[list[tuple[bytes, bytes | None]]], prefix: bytes) -> None:
    model: dict[bytes, bytes] = {}
    with tempfile.TemporaryDirectory() as d:
        stores = [MemoryStore(), LevelDBStore(d)]
        for batch in batches:
            for store in stores:
                store.write(batch, sync=False)
            for k, v in batch:
                if v is None:
                    model.pop(k, None)
                else:
                    model[k] = v
        for store in stores:
            assert list(store.iterate(prefix)) == sorted((k, v) for k, v in model.items() if k.startswith(prefix))
            between = sorted((k, v) for k, v in model.items() if prefix <= k < prefix + b"\x80")
            assert list(store.iterate_range(prefix, prefix + b"\x80")) == between
            assert list(store.iterate_range(prefix, prefix + b"\x80", reverse=True)) == between[::-1]
            for k, _ in batches[-1] if batches else []:
                assert store.get(k) == model.get(k)
            store.close()


# --- list Merkle root ----------------------------------------------------------------------------


def test_merkle_root_small_cases() -> None:
    a, b, c = sha3(b"a"), sha3(b"b"), sha3(b"c")
    assert EMPTY_ROOT == sha3(b"") == merkle_root([])
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == sha3(b"\x01" + a + b)
    assert merkle_root([a, b, c]) == sha3(b"\x01" + sha3(b"\x01" + a + b) + c)  # odd node carried up
    assert merkle_root([a, b]) != merkle_root([b, a])


# --- chain store --------------------------------------------------------------------------------

GENESIS = Genesis("qenex-test", 1_700_000_000_000, ())
KEY = KeyPair.generate(ED25519)
TOKEN = b"\x07" * 20


def make_tx(nonce: int) -> Transaction:
    return sign_transaction(KEY, GENESIS.chain_id, nonce, [transfer_call(TOKEN, b"\x09" * 20, nonce + 1)], 50_000)


def make_block(
    chain: ChainStore,
    updates: dict[bytes, bytes | None],
    txs: tuple[Transaction, ...] = (),
    *,
    height: int | None = None,
    prev_hash: Hash32 | None = None,
    state_root: Hash32 | None = None,
) -> tuple[Block, CommitCertificate, tuple[Receipt, ...]]:
    """A block on the head of ``chain`` (or as overridden), its certificate and receipts."""
    head = chain.head
    receipts = tuple(
        Receipt(tx.hash, 1, 20_000 + i, (Event(TOKEN, "Transfer", (KEY.address,), (i,)),), (True,), "")
        for i, tx in enumerate(txs)
    )
    header = BlockHeader(
        GENESIS.chain_id,
        head.height + 1 if height is None else height,
        0,
        head.block_hash if prev_hash is None else prev_hash,
        head.timestamp_ms + 1_000,
        0,
        merkle_root([tx.hash for tx in txs]),
        chain.state.prepare(updates, head.height + 1)[0] if state_root is None else state_root,
        merkle_root([sha3(r.encode()) for r in receipts]),
        sum(r.gas_used for r in receipts),
    )
    block = Block(header, txs)
    cert = CommitCertificate(header.height, 0, block.hash, (ValidatorSignature(0, b"\x01" * 64),))
    return block, cert, receipts


def grow(chain: ChainStore, n: int) -> list[tuple[Block, CommitCertificate, tuple[Receipt, ...]]]:
    """Commit ``n`` blocks, each with two transactions and a few state writes."""
    out = []
    for _ in range(n):
        h = chain.head.height
        updates: dict[bytes, bytes | None] = {b"counter": encode(h + 1), b"at/%d" % h: b"x", b"at/%d" % (h - 1): None}
        txs = (make_tx(2 * h), make_tx(2 * h + 1))
        block, cert, receipts = make_block(chain, updates, txs)
        chain.commit(block, cert, receipts, updates)
        out.append((block, cert, receipts))
    return out


def test_new_store_starts_at_genesis(kv: KeyValueStore) -> None:
    chain = ChainStore(kv, GENESIS)
    assert chain.head == Head(0, GENESIS.hash, EMPTY_ROOT, GENESIS.genesis_time_ms)
    assert kv.get(b"m/genesis") == GENESIS.hash
    assert chain.block(0) is None and chain.block(1) is None and chain.certificate(0) is None
    assert ChainStore(kv, GENESIS).head == chain.head


def test_commit_and_read_back(kv: KeyValueStore) -> None:
    chain = ChainStore(kv, GENESIS)
    committed = grow(chain, 3)
    for height, (block, cert, receipts) in enumerate(committed, start=1):
        assert chain.block(height) == block
        assert chain.certificate(height) == cert
        assert chain.height_of(block.hash) == height
        assert chain.receipts(height) == list(receipts)
        for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            assert chain.tx_location(tx.hash) == TxLocation(height, index)
            assert chain.receipt(tx.hash) == (receipt, TxLocation(height, index))
    last = committed[-1][0]
    assert chain.head == Head(3, last.hash, last.header.state_root, last.header.timestamp_ms)
    assert chain.state.root == last.header.state_root
    assert chain.state.get(b"counter") == encode(3)
    assert chain.state.get(b"at/2") == b"x" and chain.state.get(b"at/1") is None
    assert chain.block(4) is None and chain.certificate(4) is None and chain.receipts(4) == []
    assert chain.height_of(sha3(b"unknown")) is None
    assert chain.tx_location(sha3(b"unknown")) is None and chain.receipt(sha3(b"unknown")) is None


def test_the_newest_blocks_are_served_from_memory_and_older_ones_from_the_store(kv: KeyValueStore) -> None:
    from state.chain import RECENT_BLOCKS

    chain = ChainStore(kv, GENESIS)
    committed = grow(chain, RECENT_BLOCKS + 3)
    for height, (block, cert, _) in enumerate(committed, start=1):
        recent = height > 3
        assert (chain.block(height) is block) == recent and (chain.certificate(height) is cert) == recent
        assert chain.block(height) == block == Block.decode(kv.get(b"b/" + height.to_bytes(8, "big")) or b"")
        assert chain.certificate(height) == cert
    reopened = ChainStore(kv, GENESIS)  # a restart reads everything from the store
    assert all(reopened.block(h) == b for h, (b, _, _) in enumerate(committed, start=1))


def test_empty_block_and_records(kv: KeyValueStore) -> None:
    chain = ChainStore(kv, GENESIS)
    block, cert, receipts = make_block(chain, {})
    chain.commit(block, cert, receipts, {}, extra=[(b"k/lock", b"view 3")])
    assert chain.head.height == 1 and chain.state.root == EMPTY_ROOT
    assert chain.get_record(b"lock") == b"view 3"
    chain.put_record(b"vote", b"v")
    assert chain.get_record(b"vote") == b"v" and chain.get_record(b"none") is None
    assert ChainStore(kv, GENESIS).head == chain.head


def _bad_block(chain: ChainStore, case: str) -> tuple[Block, CommitCertificate, tuple[Receipt, ...]]:
    updates: dict[bytes, bytes | None] = {b"k": b"v"}
    head = chain.head
    return {
        "skips a height": lambda: make_block(chain, updates, height=head.height + 2),
        "same height": lambda: make_block(chain, updates, height=head.height),
        "wrong parent": lambda: make_block(chain, updates, prev_hash=sha3(b"other")),
        "wrong state root": lambda: make_block(chain, updates, state_root=sha3(b"wrong")),
        "root of other writes": lambda: make_block(chain, {b"k": b"w"}),
    }[case]()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("skips a height", "block 4 does not extend head 2"),
        ("same height", "block 2 does not extend head 2"),
        ("wrong parent", "block 3 does not extend head 2"),
        ("wrong state root", "block 3: state root [0-9a-f]{64} != header"),
        ("root of other writes", "block 3: state root [0-9a-f]{64} != header"),
    ],
)
def test_bad_block_raises_and_writes_nothing(kv: KeyValueStore, case: str, message: str) -> None:
    chain = ChainStore(kv, GENESIS)
    grow(chain, 2)
    block, cert, receipts = _bad_block(chain, case)
    head, root, before = chain.head, chain.state.root, snapshot(kv)
    with pytest.raises(StoreCorrupted, match=message):
        chain.commit(block, cert, receipts, {b"k": b"v"})
    assert snapshot(kv) == before
    assert (chain.head, chain.state.root) == (head, root)
    assert chain.state.get(b"k") is None
    grow(chain, 1)  # the chain still extends normally afterwards
    assert chain.head.height == 3 and ChainStore(kv, GENESIS).head == chain.head


def test_leveldb_chain_reopens_on_the_same_head(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "chain")
    chain = ChainStore(store, GENESIS)
    committed = grow(chain, 3)
    head, root = chain.head, chain.state.root
    store.close()
    store = LevelDBStore(tmp_path / "chain", create=False)
    again = ChainStore(store, GENESIS)
    assert again.head == head and again.state.root == root == committed[-1][0].header.state_root
    assert again.block(2) == committed[1][0]
    tx = committed[2][0].transactions[1]
    assert again.receipt(tx.hash) == (committed[2][2][1], TxLocation(3, 1))
    grow(again, 1)
    assert again.head.height == 4
    store.close()


def test_store_of_another_genesis_is_refused(kv: KeyValueStore) -> None:
    grow(ChainStore(kv, GENESIS), 1)
    other = Genesis("qenex-other", GENESIS.genesis_time_ms, ())
    before = snapshot(kv)
    with pytest.raises(StoreCorrupted, match=f"belongs to genesis {GENESIS.hash.hex()}, not {other.hash.hex()}"):
        ChainStore(kv, other)
    assert snapshot(kv) == before


def _put(key: bytes, value: bytes | None) -> Callable[[KeyValueStore, list[Block]], None]:
    return lambda kv, blocks: kv.write([(key, value)])


def _head_record(height: int, block_hash: bytes, root: bytes, ts: int) -> bytes:
    return encode((height, block_hash, root, ts))


def _root_node_key(kv: KeyValueStore, version: int) -> bytes:
    record = kv.get(root_key(version))
    assert record is not None and len(record) == 41
    return node_key(int.from_bytes(record[32:40], "big"), "")


def _flip_root_node(kv: KeyValueStore, version: int) -> None:
    key = _root_node_key(kv, version)
    raw = bytearray(kv.get(key) or b"")
    raw[10] ^= 1  # a byte of a child hash (internal node) or of the key hash (leaf)
    kv.write([(key, bytes(raw))])


ROOT_MISMATCH_AT_2 = r"state root [0-9a-f]{64} != head state root [0-9a-f]{64} at height 2"

CORRUPTIONS: list[tuple[str, Callable[[KeyValueStore, list[Block]], None], str]] = [
    ("head block missing", _put(b"b/" + (2).to_bytes(8, "big"), None), r"head is height 2 but that block is missing"),
    (
        "head beyond the blocks",
        lambda kv, b: kv.write([(b"m/head", _head_record(5, b[1].hash, b[1].header.state_root, 0))]),
        r"head is height 5 but that block is missing",
    ),
    (
        "block above the head",
        lambda kv, b: kv.write([(b"b/" + (3).to_bytes(8, "big"), b[1].encode())]),
        r"a block above the head \(3\) is stored",
    ),
    (
        "head block replaced",
        lambda kv, b: kv.write([(b"b/" + (2).to_bytes(8, "big"), b[0].encode())]),
        r"block 2 hash [0-9a-f]{64} != head [0-9a-f]{64}",
    ),
    (
        "head record with another root",
        lambda kv, b: kv.write([(b"m/head", _head_record(2, b[1].hash, sha3(b"x"), 0))]),
        r"block 2 state root differs from the head record",
    ),
    ("state root of another version", lambda kv, b: kv.write([(root_key(2), kv.get(root_key(1)))]), ROOT_MISMATCH_AT_2),
    ("state root node changed", lambda kv, b: _flip_root_node(kv, 2), r"state root node of version 2 hashes to"),
    ("state root node missing", lambda kv, b: kv.write([(_root_node_key(kv, 2), None)]),
     r"state node '' of version 2 \([0-9a-f]+\) is missing"),
    ("state root record missing", _put(root_key(2), None), r"the state is at version 1 but the head at height 2"),
    ("state version above the head", lambda kv, b: kv.write([(root_key(3), kv.get(root_key(2)))]),
     r"the state is at version 3 but the head at height 2"),
    ("unreadable state root record", _put(root_key(2), b"\x00" * 7), r"unreadable state root record of version 2"),
    ("flat state of an older release", _put(b"s/counter", encode(99)), r"holds a flat state \(s/ keys\)"),
    ("no genesis record", _put(b"m/genesis", None), r"holds data but no genesis record"),
    ("no head record", _put(b"m/head", None), r"no head record"),
    ("unreadable head record", _put(b"m/head", b"\xc1garbage"), r"unreadable head record"),
    ("head record of wrong shape", _put(b"m/head", encode((1, 2))), r"unreadable head record"),
]


@pytest.mark.parametrize(("name", "corrupt", "message"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corruption_is_detected_on_open(
    kv: KeyValueStore, name: str, corrupt: Callable[[KeyValueStore, list[Block]], None], message: str
) -> None:
    blocks = [b for b, _, _ in grow(ChainStore(kv, GENESIS), 2)]
    assert ChainStore(kv, GENESIS).head.height == 2  # consistent before
    corrupt(kv, blocks)
    before = snapshot(kv)
    with pytest.raises(StoreCorrupted, match=message) as info:
        ChainStore(kv, GENESIS)
    assert info.value.detail == str(info.value)
    assert snapshot(kv) == before, "opening a corrupted store must not write"


def test_state_written_at_genesis_is_detected(kv: KeyValueStore) -> None:
    ChainStore(kv, GENESIS)
    state = JellyfishState(kv)  # a state version written without its block
    kv.write(state.prepare({b"x": b"1"}, 1)[1])
    with pytest.raises(StoreCorrupted, match=r"the state is at version 1 but the head at height 0"):
        ChainStore(kv, GENESIS)
    kv.write([(root_key(1), None)])
    kv.write([(root_key(0), kv.get(root_key(0)) or b"" + b"x")])  # version 0 is empty: b"" -> b"x"
    with pytest.raises(StoreCorrupted, match=r"unreadable state root record of version 0"):
        ChainStore(kv, GENESIS)


def test_block_above_a_genesis_head_is_detected(kv: KeyValueStore) -> None:
    # Regression: the check used to run only when head.height > 0.
    chain = ChainStore(kv, GENESIS)
    block, _, _ = make_block(chain, {})
    kv.write([(b"b/" + (1).to_bytes(8, "big"), block.encode())])
    with pytest.raises(StoreCorrupted, match=r"a block above the head \(1\) is stored"):
        ChainStore(kv, GENESIS)
