"""The open-loop bench's bookkeeping (devnet/bench.py): the sending schedule and the ledger."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from devnet.bench import Ledger, schedule


def _signed(per_sender: list[int]) -> list[list[tuple[bytes, bytes]]]:
    return [[(bytes([s, n]), b"raw%d.%d" % (s, n)) for n in range(count)] for s, count in enumerate(per_sender)]


@given(per_sender=st.lists(st.integers(0, 6), min_size=1, max_size=9), endpoints=st.integers(1, 4),
       batch=st.integers(1, 5))
def test_schedule_sends_everything_once_in_nonce_order_to_each_senders_own_endpoint(
        per_sender: list[int], endpoints: int, batch: int) -> None:
    plan = schedule(_signed(per_sender), endpoints, batch)
    sent = [(endpoint, h) for endpoint, txs in plan for h, _ in txs]
    assert sorted(h for _, h in sent) == sorted(bytes([s, n]) for s, c in enumerate(per_sender) for n in range(c))
    assert all(1 <= len(txs) <= batch for _, txs in plan)
    for endpoint, h in sent:
        assert endpoint == h[0] % endpoints  # a sender keeps its node
    order = [h for _, h in sent]
    for s, count in enumerate(per_sender):  # and its nonces go out in order
        mine = [h[1] for h in order if h[0] == s]
        assert mine == list(range(count))


def test_transfers_behind_a_refused_nonce_are_stranded_not_lost() -> None:
    ledger = Ledger()
    for n in range(4):
        ledger.position[bytes([7, n])] = (7, n)
    ledger.first_refused[7] = 1
    assert [ledger.stranded(bytes([7, n])) for n in range(4)] == [False, False, True, True]
