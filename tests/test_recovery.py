"""Crash recovery of the store: a torn LevelDB log tail leaves a consistent prefix of the chain."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from state.chain import ChainStore
from state.kv import LevelDBStore
from tests.test_node import grow_chain, make_keys, make_node


def newest_log(path: Path) -> Path:
    return max(path.glob("*.log"), key=lambda p: p.stat().st_mtime_ns)


@pytest.mark.parametrize("cut", [1, 64, 700, 2_000, 4_000, 10**6])
async def test_torn_log_tail_reopens_at_a_block_boundary(tmp_path: Path, cut: int) -> None:
    keys = make_keys(4)
    db = tmp_path / "data"
    node = make_node(keys, 0)
    node.chain = ChainStore(LevelDBStore(db), node.genesis)  # the same node, on LevelDB
    node.replica.height, node.replica.head_hash = 0, node.genesis.hash
    blocks = grow_chain(node, keys, 6)
    node.chain.kv.close()
    log = newest_log(db)
    size = log.stat().st_size
    with open(log, "r+b") as f:
        f.truncate(max(0, size - cut))
        f.flush()
        os.fsync(f.fileno())
    reopened = ChainStore(LevelDBStore(db), node.genesis)  # raises StoreCorrupted if inconsistent
    head = reopened.head.height
    assert head < 6, "every cut tears into the last block's records: the head goes back"
    for cb in blocks[:head]:  # what survived is exactly a prefix of what was committed
        assert reopened.block(cb.block.height) == cb.block
        assert reopened.certificate(cb.block.height) == cb.certificate
    assert reopened.block(head + 1) is None
    if head:
        assert reopened.state.root == blocks[head - 1].block.header.state_root
