"""The mempool (``node.mempool``): nonce order, admission limits, byte accounting, verified lookups."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.exceptions import TxRejected
from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node.mempool import Mempool
from node.rpc.client import sign_transaction, transfer_call
from state.types import Transaction

CHAIN_ID = "qenex-test"
TOKEN = b"\x07" * 20
KEYS = [KeyPair.generate(ED25519) for _ in range(3)]
A, B, C = (k.address for k in KEYS)


def tx(key: KeyPair, nonce: int, amount: int = 1) -> Transaction:
    """A signed transfer by ``key`` with ``nonce``; ``amount`` makes different transactions of one nonce."""
    return sign_transaction(key, CHAIN_ID, nonce, [transfer_call(TOKEN, b"\x09" * 20, amount)], 50_000)


def size(t: Transaction) -> int:
    return len(t.encode())


def nonces(accounts: dict[bytes, int]) -> Callable[[bytes], int]:
    """An ``account_nonce`` reader: ``accounts`` or 0."""
    return lambda sender: accounts.get(sender, 0)


def pool(*, max_txs: int = 100, max_bytes: int = 1 << 20, nonce_window: int = 16) -> Mempool:
    return Mempool(max_txs=max_txs, max_bytes=max_bytes, nonce_window=nonce_window)


def add_all(mp: Mempool, txs: Iterable[Transaction], account_nonce: int = 0) -> None:
    for t in txs:
        assert mp.add(t, size(t), account_nonce)


def ids(txs: Iterable[Transaction]) -> list[tuple[bytes, int]]:
    """(sender, nonce) of each: readable assertion failures."""
    return [(t.body.sender, t.body.nonce) for t in txs]


# Transactions signed once for the whole module: KEYS[i] nonces 0..5.
TXS = {(i, n): tx(KEYS[i], n) for i in range(3) for n in range(6)}


def T(i: int, n: int) -> Transaction:
    return TXS[i, n]


# --- ready ---------------------------------------------------------------------------------------


def test_ready_orders_each_sender_by_nonce() -> None:
    mp = pool()
    add_all(mp, [T(0, 2), T(0, 0), T(0, 1)])
    assert ids(mp.ready(10, nonces({}))) == ids([T(0, 0), T(0, 1), T(0, 2)])
    assert len(mp) == 3  # ready does not take anything out


def test_gaps_are_held_back_until_filled() -> None:
    mp = pool()
    add_all(mp, [T(0, 0), T(0, 2), T(0, 4)])
    assert ids(mp.ready(10, nonces({}))) == ids([T(0, 0)])
    add_all(mp, [T(0, 1)])
    assert ids(mp.ready(10, nonces({}))) == ids([T(0, 0), T(0, 1), T(0, 2)])
    add_all(mp, [T(0, 3)])
    assert ids(mp.ready(10, nonces({}))) == ids([T(0, n) for n in range(5)])


def test_ready_starts_at_the_account_nonce() -> None:
    mp = pool()
    add_all(mp, [T(0, 1), T(0, 2)])
    assert mp.ready(10, nonces({})) == []  # nonce 0 missing
    assert ids(mp.ready(10, nonces({A: 1}))) == ids([T(0, 1), T(0, 2)])
    assert ids(mp.ready(10, nonces({A: 2}))) == ids([T(0, 2)])
    assert mp.ready(10, nonces({A: 3})) == []


def test_several_senders_in_order_of_arrival() -> None:
    mp = pool()
    add_all(mp, [T(1, 0), T(0, 1), T(1, 1), T(2, 0), T(0, 0), T(2, 1)])
    # B arrived first with its nonce 0; C before A's nonce 0 (A's nonce 1 came early but waited on a gap)
    expected = [T(1, 0), T(1, 1), T(2, 0), T(2, 1), T(0, 0), T(0, 1)]
    assert ids(mp.ready(10, nonces({}))) == ids(expected)
    assert mp.ready(10, nonces({})) == expected


def test_ready_respects_the_limit() -> None:
    mp = pool()
    add_all(mp, [T(0, 0), T(0, 1), T(0, 2), T(1, 0), T(1, 1)])
    everything = [T(0, 0), T(0, 1), T(0, 2), T(1, 0), T(1, 1)]
    for limit in range(len(everything) + 2):
        got = mp.ready(limit, nonces({}))
        assert got == everything[:limit]  # a run cut short stays a prefix: still valid
    assert mp.ready(0, nonces({})) == []


# --- admission ----------------------------------------------------------------------------------


def test_duplicates_return_false() -> None:
    mp = pool()
    t = T(0, 0)
    assert mp.add(t, size(t), 0) is True
    assert mp.add(t, size(t), 0) is False
    again = tx(KEYS[0], 0)  # Ed25519 signs deterministically: the same bytes again
    assert again == t and mp.add(again, size(again), 0) is False
    assert (len(mp), mp.size_bytes) == (1, size(t))
    assert t.hash in mp and mp.get(t.hash) == t


def test_same_nonce_other_transaction_is_rejected() -> None:
    mp = pool()
    add_all(mp, [T(0, 0)])
    other = tx(KEYS[0], 0, amount=2)
    assert other.hash != T(0, 0).hash
    with pytest.raises(TxRejected) as info:
        mp.add(other, size(other), 0)
    assert info.value.reason == "nonce already pending"
    assert (len(mp), mp.size_bytes) == (1, size(T(0, 0)))
    assert other.hash not in mp and mp.get(other.hash) is None
    add_all(mp, [T(1, 0)])  # another sender's nonce 0 is fine


def test_nonce_window() -> None:
    mp = pool(nonce_window=4)
    for nonce, reason in [(2, "nonce too low"), (7, "nonce too high"), (100, "nonce too high")]:
        t = tx(KEYS[0], nonce)
        with pytest.raises(TxRejected) as info:
            mp.add(t, size(t), 3)
        assert info.value.reason == reason
    assert (len(mp), mp.size_bytes) == (0, 0)
    add_all(mp, [T(0, 3), T(0, 4), T(0, 5), tx(KEYS[0], 6)], account_nonce=3)  # [3, 3 + 4) fits
    assert len(mp) == 4


def test_capacity_in_transactions() -> None:
    mp = pool(max_txs=2)
    add_all(mp, [T(0, 0), T(1, 0)])
    with pytest.raises(TxRejected) as info:
        mp.add(T(2, 0), size(T(2, 0)), 0)
    assert info.value.reason == "mempool full"
    assert mp.add(T(0, 0), size(T(0, 0)), 0) is False  # a duplicate is not an error when full
    mp.remove([T(1, 0)])
    add_all(mp, [T(2, 0)])
    assert len(mp) == 2


def test_capacity_in_bytes() -> None:
    first, second = T(0, 0), T(1, 0)
    mp = pool(max_bytes=size(first) + size(second) - 1)
    add_all(mp, [first])
    with pytest.raises(TxRejected) as info:
        mp.add(second, size(second), 0)
    assert info.value.reason == "mempool full"
    assert (len(mp), mp.size_bytes) == (1, size(first))

    exact = pool(max_bytes=size(first) + size(second))  # the limit itself is allowed
    add_all(exact, [first, second])
    assert exact.size_bytes == exact.max_bytes


# --- remove, prune, accounting ------------------------------------------------------------------


def test_remove_keeps_byte_accounting_exact() -> None:
    mp = pool()
    txs = [T(0, 0), T(0, 1), T(1, 0), T(2, 0)]
    add_all(mp, txs)
    assert mp.size_bytes == sum(size(t) for t in txs)
    mp.remove([T(0, 0), T(2, 0), T(2, 0), T(1, 5)])  # a repeat and an unknown one are ignored
    assert mp.size_bytes == size(T(0, 1)) + size(T(1, 0)) and len(mp) == 2
    assert ids(mp.ready(10, nonces({}))) == ids([T(1, 0)])  # A's nonce 0 is gone: nonce 1 waits
    mp.remove([T(0, 1), T(1, 0)])
    assert (len(mp), mp.size_bytes, mp.ready(10, nonces({}))) == (0, 0, [])
    add_all(mp, [T(0, 1)])  # the freed (sender, nonce) can be taken again
    assert mp.size_bytes == size(T(0, 1))


def test_prune_drops_stale_nonces() -> None:
    mp = pool()
    add_all(mp, [T(0, 0), T(0, 1), T(0, 2), T(1, 0), T(1, 1), T(2, 0)])
    accounts = {A: 2, B: 1, C: 1}
    mp.prune(nonces(accounts), [A, A, B])  # C not named: left alone
    assert ids(mp.ready(10, nonces({A: 2, B: 1}))) == ids([T(0, 2), T(1, 1), T(2, 0)])
    assert {t.hash for t in TXS.values() if t.hash in mp} == {T(0, 2).hash, T(1, 1).hash, T(2, 0).hash}
    assert mp.size_bytes == size(T(0, 2)) + size(T(1, 1)) + size(T(2, 0))
    mp.prune(nonces({A: 3, B: 2, C: 1}), [A, B, C, b"\x01" * 20])
    assert (len(mp), mp.size_bytes) == (0, 0)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 5)),
        st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 5)),
        st.tuples(st.just("commit"), st.integers(0, 2), st.integers(0, 6)),
    ),
    max_size=40,
)


def _held_back(model: dict[tuple[int, int], Transaction], accounts: list[int], sender: int, nonce: int) -> bool:
    """Whether the model's pending transactions leave a gap below ``nonce`` for ``sender``."""
    return not all((sender, k) in model for k in range(accounts[sender], nonce))


@settings(max_examples=150, deadline=None)
@given(ops=_ops, window=st.integers(1, 6), max_txs=st.integers(1, 20))
def test_accounting_against_a_model(ops: list[tuple[str, int, int]], window: int, max_txs: int) -> None:
    mp = pool(max_txs=max_txs, nonce_window=window)
    model: dict[tuple[int, int], Transaction] = {}
    accounts = [0, 0, 0]

    def read(sender: bytes) -> int:
        return accounts[[k.address for k in KEYS].index(sender)]

    for kind, i, n in ops:
        if kind == "add":
            t = T(i, n)
            if (i, n) in model:
                assert mp.add(t, size(t), accounts[i]) is False
            elif n < accounts[i] or n >= accounts[i] + window:
                with pytest.raises(TxRejected):
                    mp.add(t, size(t), accounts[i])
            elif len(model) >= max_txs:
                # full: an executable newcomer evicts one held-back transaction of another sender
                # (the tail of its run); otherwise it is refused
                victims = [(s, m) for (s, m) in model if s != i and _held_back(model, accounts, s, m)
                           and (s, m + 1) not in model]
                if not _held_back(model, accounts, i, n) and victims:
                    assert mp.add(t, size(t), accounts[i]) is True
                    gone = [k for k in victims if model[k].hash in mp.evicted]
                    assert len(gone) == len(mp.evicted) == 1
                    mp.evicted.clear()
                    del model[gone[0]]
                    model[i, n] = t
                else:
                    with pytest.raises(TxRejected):
                        mp.add(t, size(t), accounts[i])
            else:
                assert mp.add(t, size(t), accounts[i]) is True
                model[i, n] = t
        elif kind == "remove":
            mp.remove([T(i, n)])
            model.pop((i, n), None)
        else:  # a block used the sender's nonces below n
            accounts[i] = max(accounts[i], n)
            mp.prune(read, [KEYS[i].address])
            model = {(s, m): t for (s, m), t in model.items() if s != i or m >= accounts[i]}
        assert len(mp) == len(model)
        assert mp.size_bytes == sum(size(t) for t in model.values())
        assert all(t.hash in mp for t in model.values())
        # the wire-id index (compact proposals) holds exactly the pending transactions
        pending = {t.wire_id for t in model.values()}
        assert all((mp.by_wire_id(t.wire_id) is t) == (t.wire_id in pending) for t in TXS.values())
    ready = mp.ready(len(TXS), read)
    expected_runs = set()
    for i in range(3):
        n = accounts[i]
        while (i, n) in model:
            expected_runs.add((i, n))
            n += 1
    assert sorted(ids(ready)) == sorted(ids(model[k] for k in expected_runs))
    mp.remove(list(model.values()))
    assert (len(mp), mp.size_bytes) == (0, 0)


# --- holds_verified -----------------------------------------------------------------------------


def test_holds_verified_only_for_the_identical_signature() -> None:
    key = KeyPair.generate()  # ML-DSA-44 signs hedged: the same body gets a new signature each time
    first = sign_transaction(key, CHAIN_ID, 0, [transfer_call(TOKEN, b"\x09" * 20, 1)])
    second = sign_transaction(key, CHAIN_ID, 0, [transfer_call(TOKEN, b"\x09" * 20, 1)])
    assert first.hash == second.hash and first.signature != second.signature
    second.verify_signature()
    mp = pool()
    assert mp.add(first, size(first), 0)
    assert mp.holds_verified(first)
    assert not mp.holds_verified(second)  # valid too, but not the bytes that were checked
    assert mp.add(second, size(second), 0) is False  # same hash: a duplicate
    assert mp.get(first.hash) == first
    forged = dataclasses.replace(first, signature=b"\x00" * len(first.signature))
    assert not mp.holds_verified(forged)
    assert not mp.holds_verified(T(0, 0))  # not pending at all
    mp.remove([first])
    assert not mp.holds_verified(first)


def test_holds_verified_with_ed25519() -> None:
    mp = pool()
    add_all(mp, [T(0, 0)])
    assert mp.holds_verified(tx(KEYS[0], 0))  # deterministic signature: identical bytes
    flipped = bytes([T(0, 0).signature[0] ^ 1]) + T(0, 0).signature[1:]
    assert not mp.holds_verified(dataclasses.replace(T(0, 0), signature=flipped))


def test_pending_transactions_are_offered_again_until_taken() -> None:
    """Gossip is best effort: what is still pending is re-offered, oldest first, after a delay."""
    from crypto.keys import KeyPair
    from crypto.signatures import ED25519
    from node.mempool import Mempool
    from node.rpc.client import sign_transaction, transfer_call

    key = KeyPair.generate(ED25519)
    pool = Mempool(max_txs=10, max_bytes=10**6, nonce_window=10)
    txs = [sign_transaction(key, "c", n, [transfer_call(b"\x01" * 20, b"\x02" * 20, 1)]) for n in range(3)]
    for i, tx in enumerate(txs):
        raw = tx.encode()
        pool.add(tx, len(raw), 0, raw=raw, now=float(i))
    assert pool.pending_raw(2) == [txs[0].encode(), txs[1].encode()]
    assert pool.regossip(now=3.0, older_than=2.5, limit=10) == [txs[0].encode()]
    assert pool.regossip(now=3.5, older_than=2.5, limit=10) == [txs[1].encode()]  # 0 was just re-offered
    pool.remove([txs[2]])
    assert pool.regossip(now=10.0, older_than=2.5, limit=1) == [txs[0].encode()]  # limit, oldest first
    assert pool.regossip(now=10.0, older_than=2.5, limit=5) == [txs[1].encode()]


# --- priority: replacement, eviction, time to live -----------------------------------------------


def test_a_held_back_transaction_can_be_replaced_an_executable_one_cannot() -> None:
    mp = pool()
    add_all(mp, [T(0, 0), T(0, 2)])  # nonce 1 missing: nonce 2 is held back
    assert mp.executable(A, 1) and not mp.executable(A, 2)
    replacement = tx(KEYS[0], 2, amount=9)
    assert mp.add(replacement, size(replacement), 0)
    assert mp.replaced == [T(0, 2).hash] and T(0, 2).hash not in mp and replacement.hash in mp
    assert (len(mp), mp.size_bytes) == (2, size(T(0, 0)) + size(replacement))
    with pytest.raises(TxRejected, match="executable") as info:
        mp.add(tx(KEYS[0], 0, amount=9), size(T(0, 0)), 0)
    assert info.value.reason == "nonce already pending" and T(0, 0).hash in mp
    add_all(mp, [T(0, 1)])  # the gap closes: nonce 2 is executable now, and locked
    with pytest.raises(TxRejected):
        mp.add(tx(KEYS[0], 2, amount=10), size(replacement), 0)
    assert ids(mp.ready(10, nonces({}))) == [(A, 0), (A, 1), (A, 2)]


def test_a_full_pool_evicts_held_back_transactions_for_an_executable_one() -> None:
    mp = pool(max_txs=4)
    add_all(mp, [T(0, 0), T(1, 3), T(1, 4), T(2, 0)])  # B's 3 and 4 are held back (account nonce 0)
    assert mp.add(T(0, 1), size(T(0, 1)), 0)  # executable newcomer: B's highest nonce goes first
    assert mp.evicted == [T(1, 4).hash] and T(1, 3).hash in mp
    assert mp.add(T(2, 1), size(T(2, 1)), 0)
    assert mp.evicted == [T(1, 4).hash, T(1, 3).hash] and len(mp) == 4
    with pytest.raises(TxRejected) as info:  # only executable ones left: nothing is evicted for it
        mp.add(T(0, 2), size(T(0, 2)), 0)
    assert info.value.reason == "mempool full" and len(mp) == 4
    with pytest.raises(TxRejected):  # a held-back newcomer never evicts anything
        mp.add(T(1, 5), size(T(1, 5)), 0)
    assert set(ids(mp.ready(10, nonces({})))) == {(A, 0), (A, 1), (C, 0), (C, 1)}


def test_eviction_frees_enough_bytes() -> None:
    big = [T(1, n) for n in (2, 3, 4)]  # held back
    mp = pool(max_bytes=sum(size(t) for t in big) + size(T(0, 0)))
    add_all(mp, [*big, T(0, 0)])
    assert mp.add(T(0, 1), size(T(0, 1)), 0)
    assert mp.evicted == [T(1, 4).hash] and mp.size_bytes <= mp.max_bytes


def test_expire_drops_transactions_past_their_time_to_live() -> None:
    mp = pool()
    mp.add(T(0, 0), size(T(0, 0)), 0, now=100.0)
    mp.add(T(1, 0), size(T(1, 0)), 0, now=160.0)
    assert mp.expire(159.0, ttl=60.0) == []
    assert mp.expire(160.0, ttl=60.0) == [T(0, 0).hash]
    assert (len(mp), mp.size_bytes) == (1, size(T(1, 0)))
    assert mp.expire(10_000.0, ttl=60.0) == [T(1, 0).hash] and len(mp) == 0


def test_the_wire_id_index_follows_replacement_expiry_and_clear() -> None:
    mp = pool()
    held, other = T(0, 1), tx(KEYS[0], 1, amount=2)
    mp.add(held, size(held), 0, now=0.0)
    assert mp.by_wire_id(held.wire_id) is held
    assert mp.add(other, size(other), 0, now=50.0)  # replaces the held-back one
    assert mp.by_wire_id(held.wire_id) is None and mp.by_wire_id(other.wire_id) is other
    mp.add(T(1, 0), size(T(1, 0)), 0, now=100.0)
    mp.expire(60.0, ttl=10.0)
    assert mp.by_wire_id(other.wire_id) is None and mp.by_wire_id(T(1, 0).wire_id) is T(1, 0)
    mp.clear()
    assert mp.by_wire_id(T(1, 0).wire_id) is None
