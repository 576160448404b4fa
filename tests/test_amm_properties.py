"""AMM invariants under random operation sequences (hypothesis).

* k never decreases across swaps, and more generally sqrt(k) per LP share never decreases (mint and
  burn round in the pool's favour): ``k' * s**2 >= k * s'**2`` after every operation, where with the
  protocol fee on ``s`` counts the fee's LP shares, minted before a mint or burn (``_mintFee``), and
  those shares are exactly 1/6 of the growth of sqrt(k) since ``kLast`` (whitepaper §2.4);
* a user who adds, swaps, donates and removes in any order never ends with more value than they
  started with, valued at the pool's price before their first operation (the pool's value per share
  at that price can only grow, and the user's tokens are what the pool lost);
* dust amounts and tiny reserves only ever succeed or revert with one of V2's own reasons;
* the balances of every token, LP shares included, always sum to its total supply;
* the router's quote is exactly the largest output the pair accepts (one more reverts ``K``).

The first two properties are checked with the protocol fee off (the canonical factory) and on (a
factory whose fee setter turned it on, its recipient among the holders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contracts import amm as A
from contracts.builtin import UINT256_MAX
from contracts.testing import LocalChain
from contracts.testing_amm import FAR_DEADLINE, Amm, call, send, setup_amm
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import ED25519
from state.types import STATUS_SUCCESS, Call, Receipt

OWNER, ALICE, BOB = (KeyPair.from_private(ED25519.tag, bytes([i]) * 32) for i in (1, 2, 3))
USERS = (ALICE, BOB)
FUNDS = 2**118
"""What every user holds of every token (above uint112: the pool's OVERFLOW guard is reachable)."""
FEE_TO = Address(b"\xfe" * 20)
"""The protocol fee recipient of the fee-on world (it only receives)."""

_BASE: dict[bool, tuple[LocalChain, Amm]] = {}


def _base(fee_on: bool) -> tuple[LocalChain, Amm]:
    """Three tokens, a factory and its router, both users funded and approved; no pools yet.

    Fee off: the canonical factory (no fee setter). Fee on: a factory with OWNER as fee setter,
    who has set the protocol fee recipient to ``FEE_TO``.
    """
    if fee_on not in _BASE:
        chain = LocalChain()
        amm = setup_amm(chain, OWNER, tokens=3, supply=FUNDS, holders=[u.address for u in USERS],
                        fee_to_setter=OWNER.address if fee_on else ZERO_ADDRESS)
        if fee_on:
            assert send(chain, OWNER, call(amm.factory, "setFeeTo", FEE_TO)).status == STATUS_SUCCESS
        assert chain.read(amm.factory, "feeTo") == (FEE_TO if fee_on else ZERO_ADDRESS)
        for user in USERS:
            assert send(chain, user, *amm.approve_router_calls()).status == STATUS_SUCCESS
        _BASE[fee_on] = (chain, amm)
    return _BASE[fee_on]


def fork(base: LocalChain) -> LocalChain:
    """A copy of ``base`` that can run on its own."""
    chain = LocalChain(base.chain_id, base.vm)
    chain.state, chain.height, chain.timestamp = dict(base.state), base.height, base.timestamp
    return chain


def world(reserves: Sequence[tuple[int, int]], *, users_provide: bool = False,
          fee_on: bool = False) -> tuple[LocalChain, Amm]:
    """A fork of the base (protocol fee on or off) with pools 0-1 and 1-2 seeded by OWNER with ``reserves``.

    With ``users_provide`` both users then add about as much again (so they hold LP shares to remove).
    """
    base, amm = _base(fee_on)
    chain = fork(base)
    calls: list[Call] = []
    pools = list(zip(((0, 1), (1, 2)), reserves, strict=False))
    for (a, b), (x, y) in pools:
        calls += amm.add_liquidity_calls(OWNER.address, x, y, a, b)
    assert send(chain, OWNER, *calls, gas_limit=10_000_000).status == STATUS_SUCCESS
    for user in USERS if users_provide else ():
        calls = [call(amm.router, "addLiquidity", amm.tokens[a], amm.tokens[b], x, y, 0, 0, user.address,
                      FAR_DEADLINE) for (a, b), (x, y) in pools]
        assert send(chain, user, *calls, gas_limit=10_000_000).status == STATUS_SUCCESS
    return chain, amm


def pool_state(chain: LocalChain, pair: bytes) -> tuple[int, int, int, int, int]:
    """(reserve0, reserve1, totalSupply, balance0, balance1)."""
    _, token0, token1, r0, r1, _, supply, _, _, _ = chain.read(pair, "info")
    return r0, r1, supply, chain.read(token0, "balanceOf", pair), chain.read(token1, "balanceOf", pair)


def snapshot(chain: LocalChain, pair: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(reserve0, reserve1, totalSupply, balance0, balance1, FEE_TO's LP shares, kLast)."""
    _, token0, token1, r0, r1, _, supply, _, _, k_last = chain.read(pair, "info")
    return (r0, r1, supply, chain.read(token0, "balanceOf", pair), chain.read(token1, "balanceOf", pair),
            chain.read(pair, "balanceOf", FEE_TO), k_last)


def protocol_fee(reserve0: int, reserve1: int, supply: int, k_last: int) -> int:
    """LP shares ``_mintFee`` mints to the fee recipient: supply * (sqrt(k) - sqrt(kLast)) /
    (5 * sqrt(k) + sqrt(kLast)), square roots and quotient rounded down (whitepaper §2.4, eq. 7)."""
    root_k, root_k_last = math.isqrt(reserve0 * reserve1), math.isqrt(k_last)
    if k_last == 0 or root_k <= root_k_last:
        return 0
    return supply * (root_k - root_k_last) // (5 * root_k + root_k_last)


def holders(amm: Amm) -> list[bytes]:
    return [OWNER.address, *(u.address for u in USERS), amm.pair(0, 1), amm.pair(1, 2), ZERO_ADDRESS, amm.router,
            FEE_TO]


def check_sums(chain: LocalChain, amm: Amm) -> None:
    """Balances sum to the total supply for every token and both LP share tokens."""
    everyone = holders(amm)
    for token in [*amm.tokens, amm.pair(0, 1), amm.pair(1, 2)]:
        if chain.get(b"\x02" + token) is None:
            continue
        total = sum(chain.read(token, "balanceOf", h) for h in everyone)
        assert total == chain.read(token, "totalSupply"), token.hex()


Snapshots = dict[bytes, tuple[int, int, int, int, int, int, int]]


def check_pools(chain: LocalChain, amm: Amm, before: Snapshots, receipt: Receipt, fee_on: bool) -> None:
    """After ``receipt``'s operation: sqrt(k) per share never decreases (the protocol fee's shares
    aside, which are exactly ``protocol_fee`` of the state before, minted by a mint or burn with the
    fee on, and by nothing else); ``kLast`` is set by those and only those with the fee on, is 0 with
    it off; reserves never exceed balances; the locked shares stay."""
    for pair in (amm.pair(0, 1), amm.pair(1, 2)):
        r0, r1, s, b0, b1, fee_shares, k_last = now = snapshot(chain, pair)
        assert r0 <= b0 and r1 <= b1 and r0 <= A.UINT112_MAX and r1 <= A.UINT112_MAX
        assert s >= A.MINIMUM_LIQUIDITY and chain.read(pair, "balanceOf", ZERO_ADDRESS) == A.MINIMUM_LIQUIDITY
        p0, p1, ps, _, _, p_fee_shares, p_k_last = before[pair]
        liquidity_event = any(e.contract == pair and e.name in ("Mint", "Burn") for e in receipt.events)
        minted_fee = fee_shares - p_fee_shares
        assert minted_fee == (protocol_fee(p0, p1, ps, p_k_last) if fee_on and liquidity_event else 0)
        assert r0 * r1 * (ps + minted_fee) ** 2 >= p0 * p1 * s * s, "sqrt(k) per share decreased"
        assert k_last == ((r0 * r1 if fee_on else 0) if liquidity_event else p_k_last)
        before[pair] = now


Op = tuple[str, int, int, int, int]
"""(kind, user, pool or direction, amount, second amount)."""

amounts = st.one_of(
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=1, max_value=10**24),
    st.integers(min_value=2**100, max_value=2**113),
)
KINDS = ("swapIn", "swapIn", "swapOut", "direct", "add", "remove", "donate", "sync", "skim", "hop")
ops = st.tuples(st.sampled_from(KINDS), st.integers(0, 1), st.integers(0, 3), amounts, amounts)
reserve = st.one_of(st.integers(min_value=1001, max_value=10**5), st.integers(min_value=1001, max_value=10**30))

ALLOWED = ("UniswapV2: ", "UniswapV2Library: ", "UniswapV2Router: ", "TransferHelper: ", "ds-math-",
           "insufficient balance", "insufficient allowance")


def _calls(chain: LocalChain, amm: Amm, op: Op) -> list[Call]:
    """The calls of one operation (reads the chain for direct swaps)."""
    kind, user, where, x, y = op
    me = USERS[user].address
    a, b = (0, 1) if where % 2 == 0 else (1, 2)
    if where >= 2:
        a, b = b, a
    pair = amm.pair(a, b)
    ta, tb = amm.tokens[a], amm.tokens[b]
    if kind == "swapIn":
        return [call(amm.router, "swapExactTokensForTokens", x, 0, (ta, tb), me, FAR_DEADLINE)]
    if kind == "hop":
        path = (amm.tokens[0], amm.tokens[1], amm.tokens[2]) if where % 2 else (amm.tokens[2], amm.tokens[1],
                                                                              amm.tokens[0])
        return [call(amm.router, "swapExactTokensForTokens", x, 0, path, me, FAR_DEADLINE)]
    if kind == "swapOut":
        return [call(amm.router, "swapTokensForExactTokens", x, UINT256_MAX, (ta, tb), me, FAR_DEADLINE)]
    if kind == "direct":  # pay in, then take the router's quote minus y % 3 (0: exactly the quote)
        r0, r1, _, _, _ = pool_state(chain, pair)
        token0 = chain.read(pair, "token0")
        r_in, r_out = (r0, r1) if ta == token0 else (r1, r0)
        try:
            out = max(A.get_amount_out(x, r_in, r_out) - y % 3, 0)
        except Exception:
            out = 1
        outs = (0, out) if ta == token0 else (out, 0)
        return [call(ta, "transfer", pair, x), call(pair, "swap", *outs, me, b"")]
    if kind == "add":
        return [call(amm.router, "addLiquidity", ta, tb, x, y, 0, 0, me, FAR_DEADLINE)]
    if kind == "remove":
        lp = chain.read(pair, "balanceOf", me)
        share = lp if y % 4 == 0 else lp * (y % 97) // 97
        return [call(pair, "approve", amm.router, share),
                call(amm.router, "removeLiquidity", ta, tb, share, 0, 0, me, FAR_DEADLINE)]
    if kind == "donate":
        return [call(ta, "transfer", pair, x)]
    if kind == "sync":
        return [call(pair, "sync")]
    return [call(pair, "skim", me)]


def _run(chain: LocalChain, amm: Amm, op: Op, *, timestamp_step: int = 1) -> Receipt:
    receipt = send(chain, USERS[op[1]], *_calls(chain, amm, op), timestamp=chain.timestamp + timestamp_step)
    if receipt.status != STATUS_SUCCESS:
        reason = receipt.revert_reason
        exact_out_at_reserve = op[0] == "swapOut" and reason == "division by zero"  # V2 faults the same way
        assert reason.startswith(ALLOWED) or exact_out_at_reserve, (op, reason)
    return receipt


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reserves=st.lists(st.tuples(reserve, reserve), min_size=2, max_size=2),
       sequence=st.lists(ops, min_size=1, max_size=12), fee_on=st.booleans())
@example(reserves=[(1001, 1001), (1001, 10**30)], sequence=[("swapOut", 0, 0, 1000, 0), ("direct", 1, 1, 3, 0)],
         fee_on=False)
@example(reserves=[(10**6 + 7, 3 * 10**5 + 1), (1001, 1001)], sequence=[("remove", 0, 0, 0, 5), ("remove", 1, 0, 0, 0)],
         fee_on=False)
@example(reserves=[(10**21, 3 * 10**21), (10**21, 10**21)],  # the fee's shares are minted by the add and the remove
         sequence=[("swapIn", 0, 0, 10**20, 0), ("add", 1, 0, 10**19, 10**19), ("hop", 1, 1, 10**20, 0),
                   ("remove", 0, 3, 0, 5)], fee_on=True)
def test_invariants_hold_under_any_sequence(reserves: list[tuple[int, int]], sequence: list[Op], fee_on: bool) -> None:
    chain, amm = world(reserves, users_provide=True, fee_on=fee_on)
    before = {p: snapshot(chain, p) for p in (amm.pair(0, 1), amm.pair(1, 2))}
    check_sums(chain, amm)
    for op in sequence:
        receipt = _run(chain, amm, op)
        check_pools(chain, amm, before, receipt, fee_on)
        check_sums(chain, amm)


def test_the_fee_on_world_mints_the_protocol_fee() -> None:
    # the fee-on variant is not vacuous: a swap then a remove mints the fee's shares to FEE_TO
    chain, amm = world([(10**21, 10**21), (10**21, 10**21)], users_provide=True, fee_on=True)
    pairs = (amm.pair(0, 1), amm.pair(1, 2))
    before = {p: snapshot(chain, p) for p in pairs}
    assert all(s[6] == s[0] * s[1] for s in before.values())  # kLast set by the seeding deposits
    for op in [("swapIn", 0, 0, 10**20, 0), ("remove", 1, 0, 0, 5), ("remove", 1, 1, 0, 0)]:
        receipt = _run(chain, amm, op)
        assert receipt.status == STATUS_SUCCESS, receipt.revert_reason
        check_pools(chain, amm, before, receipt, fee_on=True)
    assert chain.read(pairs[0], "balanceOf", FEE_TO) > 0  # pool 0-1 swapped: fee shares
    assert chain.read(pairs[1], "balanceOf", FEE_TO) == 0  # pool 1-2 did not grow: none
    check_sums(chain, amm)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=reserve, y=reserve, sequence=st.lists(ops.filter(lambda o: o[2] % 2 == 0 and o[0] != "hop"), min_size=1,
                                               max_size=10), fee_on=st.booleans())
def test_no_round_trip_leaves_a_user_with_more_value(x: int, y: int, sequence: list[Op], fee_on: bool) -> None:
    chain, amm = world([(x, y)], fee_on=fee_on)
    pair = amm.pair(0, 1)
    token0, token1 = chain.read(pair, "token0"), chain.read(pair, "token1")
    r0, r1, _, _, _ = pool_state(chain, pair)
    me = ALICE.address

    def value() -> int:  # the user's two tokens, valued at the initial price, times reserve1
        return chain.read(token0, "balanceOf", me) * r1 + chain.read(token1, "balanceOf", me) * r0

    start = value()
    for op in sequence:
        _run(chain, amm, (op[0], 0, op[2], op[3], op[4]))
    lp = chain.read(pair, "balanceOf", me)
    if lp:
        _run(chain, amm, ("remove", 0, 0, 0, 0))
    assert value() <= start


@settings(max_examples=100, deadline=None)
@given(r_in=st.integers(min_value=1, max_value=A.UINT112_MAX // 2),
       r_out=st.integers(min_value=2, max_value=A.UINT112_MAX // 2),
       amount_in=st.integers(min_value=1, max_value=A.UINT112_MAX // 2))
def test_get_amount_out_is_the_largest_output_the_k_check_accepts(r_in: int, r_out: int, amount_in: int) -> None:
    def k_ok(out: int) -> bool:  # the pair's check, token in = token0, out of token1
        balance0, balance1 = r_in + amount_in, r_out - out
        return (balance0 * 1000 - amount_in * 3) * (balance1 * 1000) >= r_in * r_out * 1000**2

    out = A.get_amount_out(amount_in, r_in, r_out)
    assert out < r_out and k_ok(out) and not k_ok(out + 1)
    if out > 0:
        need = A.get_amount_in(out, r_in, r_out)
        assert need <= amount_in
        paid = need - 1  # one less than the quote does not buy ``out``
        assert paid == 0 or (paid * 997 * r_out) // (r_in * 1000 + paid * 997) < out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=reserve, y=reserve, amount=amounts, zero_for_one=st.booleans())
def test_router_quote_plus_one_reverts_on_chain(x: int, y: int, amount: int, zero_for_one: bool) -> None:
    chain, amm = world([(x, y)])
    pair = amm.pair(0, 1)
    t0, t1 = chain.read(pair, "token0"), chain.read(pair, "token1")
    r0, r1, _ = chain.read(pair, "getReserves")
    if amount == 0 or amount > FUNDS // 4:
        return
    t_in, r_in, r_out = (t0, r0, r1) if zero_for_one else (t1, r1, r0)
    out = A.get_amount_out(amount, r_in, r_out)

    def outs(o: int) -> tuple[int, int]:
        return (0, o) if zero_for_one else (o, 0)

    bigger = send(chain, ALICE, call(t_in, "transfer", pair, amount), call(pair, "swap", *outs(out + 1), ALICE.address,
                                                                         b""))
    assert bigger.status != STATUS_SUCCESS
    exact = send(chain, ALICE, call(t_in, "transfer", pair, amount), call(pair, "swap", *outs(out), ALICE.address, b""))
    if out == 0:
        assert exact.revert_reason == "UniswapV2: INSUFFICIENT_OUTPUT_AMOUNT"
    elif r_in + amount > A.UINT112_MAX:
        assert exact.revert_reason == "UniswapV2: OVERFLOW"
    else:
        assert exact.status == STATUS_SUCCESS, exact.revert_reason
        assert bigger.revert_reason == ("UniswapV2: K" if out + 1 < r_out else "UniswapV2: INSUFFICIENT_LIQUIDITY")
