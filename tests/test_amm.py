"""The AMM (``contracts.amm``): Uniswap V2's own test vectors, factory, pair, router, attacks, determinism.

The vectors are ``tests/vectors/uniswap_v2_pair.json`` (v2-core ``test/UniswapV2Pair.spec.ts``): each
case runs as in the spec (tokens sent to the pair, then the low-level call, in separate blocks) and
its amount + 1 must revert.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contracts import amm as A
from contracts.builtin import UINT256_MAX, Addr, BuiltinContract, Uint, method
from contracts.exceptions import Revert
from contracts.registry import default_vm
from contracts.testing import LocalChain, outputs_under_hash_seeds, sign
from contracts.testing_amm import (
    FAR_DEADLINE,
    WORKLOAD_FEE_TO,
    Amm,
    amm_workload,
    call,
    deploy_amm_calls,
    send,
    setup_amm,
)
from contracts.vm import DEPLOYER, CallContext, code_key, create_address
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import ED25519
from state.codec import Value, decode_value, encode
from state.types import STATUS_REVERTED, STATUS_SUCCESS, Call, Event, Receipt

VECTORS = json.loads((Path(__file__).parent / "vectors" / "uniswap_v2_pair.json").read_text())
UNIT = int(VECTORS["unit"])
E18 = 10**18
WALLET, OTHER, THIRD = (KeyPair.generate(ED25519) for _ in range(3))
W, OA, T3 = WALLET.address, OTHER.address, THIRD.address


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, receipt.revert_reason
    return receipt


def reverted(receipt: Receipt, reason: str) -> Receipt:
    assert (receipt.status, receipt.revert_reason) == (STATUS_REVERTED, reason)
    assert receipt.events == () and receipt.output == ()
    return receipt


def num(value: int | str) -> int:
    """A vector number: an int counts in units of 1e18 (``expandTo18Decimals``), a string is raw."""
    return int(value) if isinstance(value, str) else value * UNIT


def changed_keys(before: dict[bytes, bytes], after: dict[bytes, bytes]) -> set[bytes]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


@dataclass
class V2:
    """The ``pairFixture`` of v2-core: two tokens (10000e18 to the wallet), a factory, one pair."""

    chain: LocalChain
    amm: Amm
    pair: Address
    token0: Address
    token1: Address

    def send(self, *calls: Call, key: KeyPair = WALLET, timestamp: int | None = None) -> Receipt:
        return send(self.chain, key, *calls, timestamp=timestamp)

    def read(self, to: bytes, method_name: str, *args: Value) -> Any:
        return self.chain.read(to, method_name, *args)

    def balance(self, token: bytes, owner: bytes) -> int:
        return int(self.read(token, "balanceOf", owner))

    def add_liquidity(self, amount0: int, amount1: int) -> Receipt:
        return ok(self.send(call(self.token0, "transfer", self.pair, amount0),
                            call(self.token1, "transfer", self.pair, amount1), call(self.pair, "mint", W)))

    def reserves(self) -> tuple[int, int, int]:
        return tuple(self.read(self.pair, "getReserves"))  # type: ignore[return-value]


def v2_fixture(fee_to_setter: bytes = ZERO_ADDRESS, vm_extra: tuple[type[BuiltinContract], ...] = ()) -> V2:
    chain = LocalChain(vm=default_vm(vm_extra))
    amm = setup_amm(chain, WALLET, supply=10_000 * E18, fee_to_setter=fee_to_setter)
    ok(send(chain, WALLET, call(amm.factory, "createPair", amm.tokens[0], amm.tokens[1])))
    pair = amm.pair()
    return V2(chain, amm, pair, chain.read(pair, "token0"), chain.read(pair, "token1"))


# --- the vectors of v2-core test/UniswapV2Pair.spec.ts ---------------------------------------------


def test_vector_file_is_the_shared_one() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "uniswap_v2_pair.json"
    if shared.exists():
        assert json.loads(shared.read_text()) == VECTORS
    assert len(VECTORS["swap_cases"]["rows"]) == 7 and len(VECTORS["optimistic_cases"]["rows"]) == 4


@pytest.mark.parametrize("row", VECTORS["swap_cases"]["rows"], ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}")
def test_swap_cases(row: list[Any]) -> None:
    swap_amount, amount0, amount1, expected = (num(v) for v in row)
    assert A.get_amount_out(swap_amount, amount0, amount1) == expected  # the router's formula agrees
    f = v2_fixture()
    f.add_liquidity(amount0, amount1)
    ok(f.send(call(f.token0, "transfer", f.pair, swap_amount)))
    before = dict(f.chain.state)
    reverted(f.send(call(f.pair, "swap", 0, expected + 1, W, b"")), "UniswapV2: K")
    assert changed_keys(before, f.chain.state) == {b"\x01" + W}  # only the nonce
    receipt = ok(f.send(call(f.pair, "swap", 0, expected, W, b"")))
    assert receipt.events == (
        Event(f.token1, "Transfer", (f.pair, W), (expected,)),
        Event(f.pair, "Sync", (), (amount0 + swap_amount, amount1 - expected)),
        Event(f.pair, "Swap", (W, W), (swap_amount, 0, 0, expected)),
    )
    assert f.reserves()[:2] == (amount0 + swap_amount, amount1 - expected)
    assert f.balance(f.token0, f.pair) == amount0 + swap_amount
    assert f.balance(f.token1, f.pair) == amount1 - expected
    assert f.balance(f.token0, W) == 10_000 * E18 - amount0 - swap_amount
    assert f.balance(f.token1, W) == 10_000 * E18 - amount1 + expected


@pytest.mark.parametrize("row", VECTORS["optimistic_cases"]["rows"], ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}")
def test_optimistic_cases(row: list[Any]) -> None:
    output, amount0, amount1, input_amount = (num(v) for v in row)
    f = v2_fixture()
    f.add_liquidity(amount0, amount1)
    ok(f.send(call(f.token0, "transfer", f.pair, input_amount)))
    reverted(f.send(call(f.pair, "swap", output + 1, 0, W, b"")), "UniswapV2: K")
    receipt = ok(f.send(call(f.pair, "swap", output, 0, W, b"")))
    assert receipt.events[-1] == Event(f.pair, "Swap", (W, W), (input_amount, 0, output, 0))
    assert f.reserves()[:2] == (amount0 + input_amount - output, amount1)


def test_mint_vector() -> None:
    m = re.fullmatch(r"deposit \((\d+)e18, (\d+)e18\) into an empty pool: totalSupply (\d+)e18, "
                     r"depositor gets (\d+)e18 - (\d+), (\d+) locked", VECTORS["mint"])
    assert m is not None, VECTORS["mint"]
    amount0, amount1, supply, got, minus, locked = (int(x) for x in m.groups())
    amount0, amount1, supply, got = amount0 * E18, amount1 * E18, supply * E18, got * E18 - minus
    assert locked == minus == A.MINIMUM_LIQUIDITY
    f = v2_fixture()
    receipt = f.add_liquidity(amount0, amount1)
    assert receipt.events[2:] == (  # after the two token transfers to the pair
        Event(f.pair, "Transfer", (ZERO_ADDRESS, ZERO_ADDRESS), (locked,)),
        Event(f.pair, "Transfer", (ZERO_ADDRESS, W), (got,)),
        Event(f.pair, "Sync", (), (amount0, amount1)),
        Event(f.pair, "Mint", (W,), (amount0, amount1)),
    )
    assert receipt.output[-1] == got
    assert f.read(f.pair, "totalSupply") == supply
    assert f.balance(f.pair, W) == got and f.balance(f.pair, ZERO_ADDRESS) == locked
    assert f.balance(f.token0, f.pair) == amount0 and f.balance(f.token1, f.pair) == amount1
    assert f.reserves()[:2] == (amount0, amount1)
    # amount + 1: the depositor holds exactly got LP shares, so moving got + 1 of them (to the pair,
    # as a burn would) reverts and changes nothing; got itself moves.
    before = dict(f.chain.state)
    reverted(f.send(call(f.pair, "transfer", f.pair, got + 1)), f"insufficient balance: {got} < {got + 1}")
    assert changed_keys(before, f.chain.state) == {b"\x01" + W}
    ok(f.send(call(f.pair, "transfer", f.pair, got)))  # held by the pair, not burned: supply stays
    # amount + 1 at the pool: a second deposit through the router, token1 as A (so the quote rounds
    # down), B's minimum one above the optimal amount reverts; the optimal amount mints exactly
    # min(amount0 * supply / reserve0, amount1 * supply / reserve1) (UniswapV2Router02._addLiquidity,
    # UniswapV2Pair.mint).
    desired_a, desired_b = 10**17 + 7, 10 * E18
    optimal_b = desired_a * amount0 // amount1  # quote(amountADesired, reserveA, reserveB)
    assert optimal_b * amount1 != desired_a * amount0  # the quote rounds here
    liquidity = min(optimal_b * supply // amount0, desired_a * supply // amount1)

    def second_deposit(min_b: int) -> Receipt:
        return f.send(*f.amm.approve_router_calls(), call(f.amm.router, "addLiquidity", f.token1, f.token0, desired_a,
                                                          desired_b, 0, min_b, W, FAR_DEADLINE))

    before = dict(f.chain.state)
    reverted(second_deposit(optimal_b + 1), "UniswapV2Router: INSUFFICIENT_B_AMOUNT")
    assert changed_keys(before, f.chain.state) == {b"\x01" + W}  # only the nonce
    receipt = ok(second_deposit(optimal_b))
    assert receipt.output[-1] == (desired_a, optimal_b, liquidity)
    assert receipt.events[-1] == Event(f.pair, "Mint", (f.amm.router,), (optimal_b, desired_a))
    assert f.balance(f.pair, W) == liquidity and f.read(f.pair, "totalSupply") == supply + liquidity
    assert f.reserves()[:2] == (amount0 + optimal_b, amount1 + desired_a)
    assert f.balance(f.token0, W) == 10_000 * E18 - amount0 - optimal_b
    assert f.balance(f.token1, W) == 10_000 * E18 - amount1 - desired_a


def test_mint_to_the_zero_address_reverts() -> None:
    # V2 lets Pair.mint(address(0)) credit the zero address; our LP token refuses the zero receiver
    # as OpenZeppelin 5 _mint does (ERC20InvalidReceiver), like token/v1's mint.
    f = v2_fixture()
    pay = (call(f.token0, "transfer", f.pair, E18), call(f.token1, "transfer", f.pair, 4 * E18))
    before = dict(f.chain.state)
    reverted(f.send(*pay, call(f.pair, "mint", ZERO_ADDRESS)), "mint to the zero address")
    assert changed_keys(before, f.chain.state) == {b"\x01" + W}
    ok(f.send(*pay))  # a deposit made first, minted by a later call, meets the same check
    reverted(f.send(call(f.pair, "mint", ZERO_ADDRESS)), "mint to the zero address")
    assert f.read(f.pair, "totalSupply") == 0
    assert ok(f.send(call(f.pair, "mint", W))).output == (2 * E18 - A.MINIMUM_LIQUIDITY,)
    reverted(f.send(*f.amm.approve_router_calls(), call(f.amm.router, "addLiquidity", f.token0, f.token1, E18, E18,
                                                         0, 0, ZERO_ADDRESS, FAR_DEADLINE)), "mint to the zero address")


def burn_vector() -> tuple[int, int, int, int, int, int, int]:
    """The v2-core burn case: (deposit0, deposit1, LP burned, amount returned of each token,
    reserve0 after, reserve1 after, totalSupply after), in base units."""
    m = re.fullmatch(r"deposit \((\d+)e18, (\d+)e18\), burn (\d+)e18 - (\d+) LP: returns (\d+)e18 - (\d+) of each "
                     r"token; reserves \((\d+), (\d+)\); totalSupply (\d+)", VECTORS["burn"])
    assert m is not None, VECTORS["burn"]
    d0, d1, lp, lp_minus, ret, ret_minus, res0, res1, supply = (int(x) for x in m.groups())
    return d0 * E18, d1 * E18, lp * E18 - lp_minus, ret * E18 - ret_minus, res0, res1, supply


def test_burn_vector() -> None:
    amount0, amount1, burned, returned, res0, res1, supply = burn_vector()
    f = v2_fixture()
    f.add_liquidity(amount0, amount1)
    # amount + 1: the 1000 locked shares are not the depositor's to burn
    reverted(f.send(call(f.pair, "transfer", f.pair, burned + 1)), f"insufficient balance: {burned} < {burned + 1}")
    ok(f.send(call(f.pair, "transfer", f.pair, burned)))
    receipt = ok(f.send(call(f.pair, "burn", W)))
    assert receipt.events == (
        Event(f.pair, "Transfer", (f.pair, ZERO_ADDRESS), (burned,)),
        Event(f.token0, "Transfer", (f.pair, W), (returned,)),
        Event(f.token1, "Transfer", (f.pair, W), (returned,)),
        Event(f.pair, "Sync", (), (res0, res1)),
        Event(f.pair, "Burn", (W, W), (returned, returned)),
    )
    assert receipt.output == ((returned, returned),)
    assert f.balance(f.pair, W) == 0 and f.read(f.pair, "totalSupply") == supply
    assert (f.balance(f.token0, f.pair), f.balance(f.token1, f.pair)) == (res0, res1)
    assert f.balance(f.token0, W) == 10_000 * E18 - res0 and f.balance(f.token1, W) == 10_000 * E18 - res1


def test_burn_vector_through_the_router_plus_one_reverts() -> None:
    # amount + 1 at the pool: the burn vector through the router's removeLiquidity with A's minimum
    # one above what the pair pays (liquidity * balance / supply, rounded down: UniswapV2Pair.burn)
    # reverts; with exactly that amount the router pays it.
    amount0, amount1, burned, returned, res0, res1, supply = burn_vector()
    minted = math.isqrt(amount0 * amount1)  # the supply after the first deposit
    out0, out1 = burned * amount0 // minted, burned * amount1 // minted
    assert (out0, out1) == (returned, returned) and (amount0 - out0, amount1 - out1) == (res0, res1)
    f = v2_fixture()
    f.add_liquidity(amount0, amount1)

    def remove(min_a: int, min_b: int) -> Receipt:
        return f.send(call(f.pair, "approve", f.amm.router, burned),
                      call(f.amm.router, "removeLiquidity", f.token0, f.token1, burned, min_a, min_b, W, FAR_DEADLINE))

    before = dict(f.chain.state)
    reverted(remove(out0 + 1, out1), "UniswapV2Router: INSUFFICIENT_A_AMOUNT")
    reverted(remove(out0, out1 + 1), "UniswapV2Router: INSUFFICIENT_B_AMOUNT")
    assert changed_keys(before, f.chain.state) == {b"\x01" + W}  # only the nonce
    receipt = ok(remove(out0, out1))
    assert receipt.output[-1] == (out0, out1)
    assert receipt.events[-1] == Event(f.pair, "Burn", (f.amm.router, W), (out0, out1))
    assert f.balance(f.pair, W) == 0 and f.read(f.pair, "totalSupply") == supply
    assert f.reserves()[:2] == (res0, res1)
    assert f.balance(f.token0, W) == 10_000 * E18 - res0 and f.balance(f.token1, W) == 10_000 * E18 - res1


def _fee_run(fee_on: bool) -> tuple[V2, dict[str, int]]:
    m = re.search(r"pool (\d+)e18/(\d+)e18, swap (\d+)e18 token1 in for (\d+) token0 out, then burn all but (\d+): "
                  r"fee liquidity minted to feeTo = (\d+); pool keeps (\d+) \+ (\d+) token0 and (\d+) \+ (\d+) token1",
                  VECTORS["fee_on"])
    assert m is not None, VECTORS["fee_on"]
    g = [int(x) for x in m.groups()]
    v = {"r0": g[0] * E18, "r1": g[1] * E18, "in": g[2] * E18, "out": g[3], "keep": g[4], "fee": g[5],
         "pool0": g[6] + g[7], "pool1": g[8] + g[9]}
    f = v2_fixture(fee_to_setter=W)
    if fee_on:
        ok(f.send(call(f.amm.factory, "setFeeTo", OA)))
    f.add_liquidity(v["r0"], v["r1"])
    ok(f.send(call(f.token1, "transfer", f.pair, v["in"])))
    reverted(f.send(call(f.pair, "swap", v["out"] + 1, 0, W, b"")), "UniswapV2: K")
    ok(f.send(call(f.pair, "swap", v["out"], 0, W, b"")))
    liquidity = int(f.read(f.pair, "totalSupply")) - v["keep"]
    ok(f.send(call(f.pair, "transfer", f.pair, liquidity)))
    ok(f.send(call(f.pair, "burn", W)))
    return f, v


def test_fee_off_vector() -> None:
    f, v = _fee_run(fee_on=False)
    assert f.read(f.pair, "totalSupply") == v["keep"] == A.MINIMUM_LIQUIDITY
    assert f.read(f.pair, "kLast") == 0


def test_fee_on_vector() -> None:
    f, v = _fee_run(fee_on=True)
    assert f.read(f.pair, "totalSupply") == v["keep"] + v["fee"]
    assert f.balance(f.pair, OA) == v["fee"]
    assert f.balance(f.token0, f.pair) == v["pool0"]
    assert f.balance(f.token1, f.pair) == v["pool1"]
    assert f.read(f.pair, "kLast") == v["pool0"] * v["pool1"]
    # turning the fee off again clears kLast on the next liquidity event
    ok(f.send(call(f.amm.factory, "setFeeTo", ZERO_ADDRESS)))
    f.add_liquidity(10**9, 10**9)
    assert f.read(f.pair, "kLast") == 0


def test_price_cumulative_vector() -> None:
    text = VECTORS["price_cumulative"]
    assert "encodePrice(r0, r1) = [r1 * 2**112 // r0, r0 * 2**112 // r1]" in text
    m = re.search(r"reserves (\d+)e18/(\d+)e18 held (\d+) s adds (\d+) \* encodePrice\((\d+)e18, (\d+)e18\)", text)
    assert m is not None, text
    r0, r1, held, times, p0, p1 = (int(x) for x in m.groups())
    assert (held, times, r0, r1) == (held, held, p0, p1)
    r0, r1 = r0 * E18, r1 * E18
    f = v2_fixture()
    f.add_liquidity(r0, r1)
    t = f.reserves()[2]
    assert t == f.chain.timestamp
    initial = A.encode_price(r0, r1)
    assert initial == (r1 * 2**112 // r0, r0 * 2**112 // r1)
    ok(f.send(call(f.pair, "sync"), timestamp=t + 1))
    assert (f.read(f.pair, "price0CumulativeLast"), f.read(f.pair, "price1CumulativeLast")) == initial
    assert f.reserves()[2] == t + 1
    # the spec's swap to a "nice" price at t + held: 3e18 token0 in, 1e18 token1 out
    ok(f.send(call(f.token0, "transfer", f.pair, 3 * E18), timestamp=t + 1))
    ok(f.send(call(f.pair, "swap", 0, E18, W, b""), timestamp=t + held))
    assert f.read(f.pair, "price0CumulativeLast") == initial[0] * held
    assert f.read(f.pair, "price1CumulativeLast") == initial[1] * held
    assert f.reserves()[2] == t + held
    ok(f.send(call(f.pair, "sync"), timestamp=t + 2 * held))
    new = A.encode_price(6 * E18, 2 * E18)
    assert f.read(f.pair, "price0CumulativeLast") == initial[0] * held + new[0] * held
    assert f.read(f.pair, "price1CumulativeLast") == initial[1] * held + new[1] * held
    assert f.reserves()[2] == t + 2 * held


def test_price_accumulators_wrap_uint32_time_and_skip_same_second() -> None:
    f = v2_fixture()
    start = 2**32 - 3  # three seconds before uint32 time wraps (February 2106)
    ok(f.send(call(f.token0, "transfer", f.pair, 2 * E18), call(f.token1, "transfer", f.pair, 5 * E18),
              call(f.pair, "mint", W), timestamp=start))
    assert f.reserves() == (2 * E18, 5 * E18, start)
    ok(f.send(call(f.pair, "sync"), timestamp=start))  # same second: no time elapsed, nothing added
    assert f.read(f.pair, "price0CumulativeLast") == 0
    ok(f.send(call(f.pair, "sync"), timestamp=start + 10))
    assert f.reserves()[2] == (start + 10) % 2**32 == 7
    p0, p1 = A.encode_price(2 * E18, 5 * E18)
    assert (f.read(f.pair, "price0CumulativeLast"), f.read(f.pair, "price1CumulativeLast")) == (10 * p0, 10 * p1)


# --- factory ---------------------------------------------------------------------------------------


def test_factory_create_pair_both_directions() -> None:
    chain = LocalChain()
    amm = setup_amm(chain, WALLET, tokens=3)
    a, b, c = amm.tokens
    token0, token1 = sorted((a, b))
    receipt = ok(send(chain, WALLET, call(amm.factory, "createPair", b, a)))
    pair = receipt.output[0]
    assert pair == A.pair_address(amm.factory, a, b) == A.pair_address(amm.factory, b, a)
    assert pair == create_address(amm.factory, A.PAIR_CODE_ID, token0 + token1, (token0, token1))
    assert chain.get(code_key(pair)) == encode(A.PAIR_CODE_ID)
    assert receipt.events[-1] == Event(amm.factory, "PairCreated", (token0, token1), (pair, 1))
    assert chain.read(amm.factory, "getPair", a, b) == chain.read(amm.factory, "getPair", b, a) == pair
    assert chain.read(amm.factory, "getPair", a, c) == ZERO_ADDRESS
    assert chain.read(amm.factory, "getPair", a, a) == ZERO_ADDRESS
    assert (chain.read(pair, "token0"), chain.read(pair, "token1"), chain.read(pair, "factory")) == (
        token0, token1, amm.factory)
    assert chain.read(pair, "info") == (amm.factory, token0, token1, 0, 0, 0, 0, 0, 0, 0)
    for x, y in ((a, b), (b, a)):
        reverted(send(chain, OTHER, call(amm.factory, "createPair", x, y)), "UniswapV2: PAIR_EXISTS")
    reverted(send(chain, OTHER, call(amm.factory, "createPair", a, a)), "UniswapV2: IDENTICAL_ADDRESSES")
    reverted(send(chain, OTHER, call(amm.factory, "createPair", a, ZERO_ADDRESS)), "UniswapV2: ZERO_ADDRESS")
    second = ok(send(chain, OTHER, call(amm.factory, "createPair", c, a))).output[0]
    assert chain.read(amm.factory, "allPairsLength") == 2
    assert (chain.read(amm.factory, "allPairs", 0), chain.read(amm.factory, "allPairs", 1)) == (pair, second)
    with pytest.raises(Revert, match="index out of range"):
        chain.read(amm.factory, "allPairs", 2)
    # the pair's init ran once, at creation: nobody can re-initialise it
    reverted(send(chain, OTHER, call(pair, "init", c, b)), "init runs only when the contract is deployed")


def test_factory_fee_admin() -> None:
    chain = LocalChain()
    amm = setup_amm(chain, WALLET, fee_to_setter=OA)
    assert chain.read(amm.factory, "feeToSetter") == OA and chain.read(amm.factory, "feeTo") == ZERO_ADDRESS
    reverted(send(chain, WALLET, call(amm.factory, "setFeeTo", W)), "UniswapV2: FORBIDDEN")
    reverted(send(chain, WALLET, call(amm.factory, "setFeeToSetter", W)), "UniswapV2: FORBIDDEN")
    ok(send(chain, OTHER, call(amm.factory, "setFeeTo", T3)))
    assert chain.read(amm.factory, "feeTo") == T3
    ok(send(chain, OTHER, call(amm.factory, "setFeeToSetter", W)))
    reverted(send(chain, OTHER, call(amm.factory, "setFeeTo", OA)), "UniswapV2: FORBIDDEN")
    ok(send(chain, WALLET, call(amm.factory, "setFeeTo", ZERO_ADDRESS)))
    assert chain.read(amm.factory, "feeTo") == ZERO_ADDRESS


def test_canonical_factory_and_router() -> None:
    calls, factory, router = deploy_amm_calls()
    assert (factory, router) == (A.CANONICAL_FACTORY, A.CANONICAL_ROUTER)
    chain = LocalChain()
    ok(send(chain, OTHER, *calls))
    assert chain.read(router, "factory") == factory
    assert chain.read(factory, "feeToSetter") == ZERO_ADDRESS
    for key in (WALLET, OTHER):  # nobody can turn the canonical factory's protocol fee on
        reverted(send(chain, key, call(factory, "setFeeTo", key.address)), "UniswapV2: FORBIDDEN")
    # created once, whoever sends it: the same arguments give the same address, which is now taken
    reverted(send(chain, WALLET, calls[0]), "contract address already in use")
    with pytest.raises(Revert, match="create in a read-only call"):
        chain.read(DEPLOYER, "create", A.FACTORY_CODE_ID, b"x", (ZERO_ADDRESS,))


# --- router ----------------------------------------------------------------------------------------


@pytest.fixture
def market() -> tuple[LocalChain, Amm]:
    """Three tokens; pools 0-1 (1000e18 / 2000e18) and 1-2 (500e18 / 500e18); OTHER holds tokens too."""
    chain = LocalChain()
    amm = setup_amm(chain, WALLET, tokens=3, holders=[OA])
    ok(send(chain, WALLET, *amm.add_liquidity_calls(W, 1000 * E18, 2000 * E18, 0, 1),
            *amm.add_liquidity_calls(W, 500 * E18, 500 * E18, 1, 2)))
    return chain, amm


def test_router_add_liquidity_creates_the_pool_and_keeps_the_ratio() -> None:
    chain = LocalChain()
    amm = setup_amm(chain, WALLET, holders=[OA])
    a, b = amm.tokens
    receipt = ok(send(chain, WALLET, *amm.add_liquidity_calls(W, 4 * E18, E18)))
    liquidity = 2 * E18 - A.MINIMUM_LIQUIDITY
    assert receipt.output[-1] == (4 * E18, E18, liquidity)
    pair = amm.pair()
    assert chain.read(amm.factory, "getPair", a, b) == pair
    assert chain.read(pair, "balanceOf", W) == liquidity
    # B is scarce: the router takes all of B and the matching A (quote rounds down)
    receipt = ok(send(chain, OTHER, *amm.add_liquidity_calls(OA, 100 * E18, 3 * 10**17 + 1)))
    amount_a = A.quote(3 * 10**17 + 1, E18, 4 * E18)
    assert receipt.output[-1][:2] == (amount_a, 3 * 10**17 + 1)
    # A is scarce
    ra, rb = 4 * E18 + amount_a, E18 + 3 * 10**17 + 1
    receipt = ok(send(chain, OTHER, *amm.add_liquidity_calls(OA, 10**18, 100 * E18)))
    assert receipt.output[-1][:2] == (10**18, A.quote(10**18, ra, rb))
    reverted(send(chain, OTHER, *amm.add_liquidity_calls(OA, 10**18, 100 * E18, min_a=0, min_b=10**18)),
             "UniswapV2Router: INSUFFICIENT_B_AMOUNT")
    reverted(send(chain, OTHER, *amm.add_liquidity_calls(OA, 100 * E18, 10**17, min_a=100 * E18)),
             "UniswapV2Router: INSUFFICIENT_A_AMOUNT")
    expired = call(amm.router, "addLiquidity", a, b, E18, E18, 0, 0, OA, chain.timestamp)  # next block is later
    reverted(send(chain, OTHER, expired), "UniswapV2Router: EXPIRED")
    no_allowance = call(amm.router, "addLiquidity", a, b, E18, E18, 0, 0, T3, FAR_DEADLINE)
    receipt = send(chain, THIRD, no_allowance)
    assert receipt.revert_reason == f"TransferHelper: TRANSFER_FROM_FAILED (insufficient allowance: 0 < {E18})"


def test_router_remove_liquidity(market: tuple[LocalChain, Amm]) -> None:
    chain, amm = market
    a, b = amm.tokens[0], amm.tokens[1]
    pair = amm.pair(0, 1)
    lp = chain.read(pair, "balanceOf", W)
    supply = chain.read(pair, "totalSupply")
    ra, rb = 1000 * E18, 2000 * E18
    share = lp // 3
    want_a, want_b = share * ra // supply, share * rb // supply
    remove = call(amm.router, "removeLiquidity", b, a, share, want_b, want_a + 1, W, FAR_DEADLINE)
    reverted(send(chain, WALLET, call(pair, "approve", amm.router, share), remove),
             "UniswapV2Router: INSUFFICIENT_B_AMOUNT")  # A is this call's B (arguments in the b, a order)
    before_a, before_b = chain.read(a, "balanceOf", W), chain.read(b, "balanceOf", W)
    remove = call(amm.router, "removeLiquidity", b, a, share, want_b, want_a, W, FAR_DEADLINE)
    receipt = ok(send(chain, WALLET, call(pair, "approve", amm.router, share), remove))
    assert receipt.output[-1] == (want_b, want_a)
    assert chain.read(a, "balanceOf", W) == before_a + want_a and chain.read(b, "balanceOf", W) == before_b + want_b
    assert chain.read(pair, "balanceOf", W) == lp - share
    assert chain.read(pair, "allowance", W, amm.router) == 0


def test_router_multi_hop_exact_input(market: tuple[LocalChain, Amm]) -> None:
    chain, amm = market
    path = tuple(amm.tokens)  # 0 -> 1 -> 2
    amount_in = 7 * E18
    quoted = chain.read(amm.router, "getAmountsOut", amount_in, path)
    first = A.get_amount_out(amount_in, 1000 * E18, 2000 * E18)
    second = A.get_amount_out(first, 500 * E18, 500 * E18)
    assert quoted == (amount_in, first, second)
    before = [chain.read(t, "balanceOf", OA) for t in path]
    reverted(send(chain, OTHER, *amm.swap_calls(OA, amount_in, [0, 1, 2], min_out=second + 1)),
             "UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT")
    receipt = ok(send(chain, OTHER, *amm.swap_calls(OA, amount_in, [0, 1, 2], min_out=second)))
    assert receipt.output[-1] == quoted
    after = [chain.read(t, "balanceOf", OA) for t in path]
    assert after == [before[0] - amount_in, before[1], before[2] + second]  # the middle token only passed through
    assert sorted(chain.read(amm.pair(0, 1), "getReserves")[:2]) == sorted((1000 * E18 + amount_in, 2000 * E18 - first))
    swaps = [e for e in receipt.events if e.name == "Swap"]
    assert [e.contract for e in swaps] == [amm.pair(0, 1), amm.pair(1, 2)]
    assert swaps[0].topics == (amm.router, amm.pair(1, 2))  # the first pool pays straight into the second
    reverted(send(chain, OTHER, *amm.swap_calls(OA, amount_in, [0])), "UniswapV2Library: INVALID_PATH")
    reverted(send(chain, OTHER, *amm.swap_calls(OA, amount_in, [0, 0])), "UniswapV2Library: IDENTICAL_ADDRESSES")
    missing = send(chain, OTHER, *amm.swap_calls(OA, amount_in, [0, 2]))  # no pool 0-2
    assert missing.revert_reason == f"no contract at 0x{amm.pair(0, 2).hex()}"


def test_router_exact_output_and_deadline(market: tuple[LocalChain, Amm]) -> None:
    chain, amm = market
    path = (amm.tokens[2], amm.tokens[1], amm.tokens[0])
    out = 3 * E18
    quoted = chain.read(amm.router, "getAmountsIn", out, path)
    middle = A.get_amount_in(out, 2000 * E18, 1000 * E18)
    assert quoted == (A.get_amount_in(middle, 500 * E18, 500 * E18), middle, out)
    approve = call(path[0], "approve", amm.router, UINT256_MAX)
    swap = call(amm.router, "swapTokensForExactTokens", out, quoted[0] - 1, path, OA, FAR_DEADLINE)
    reverted(send(chain, OTHER, approve, swap), "UniswapV2Router: EXCESSIVE_INPUT_AMOUNT")
    next_time = chain.timestamp + 1
    late = call(amm.router, "swapTokensForExactTokens", out, quoted[0], path, OA, next_time - 1)
    reverted(send(chain, OTHER, approve, late), "UniswapV2Router: EXPIRED")
    before = chain.read(path[2], "balanceOf", OA)
    on_time = call(amm.router, "swapTokensForExactTokens", out, quoted[0], path, OA, next_time + 1)
    assert ok(send(chain, OTHER, approve, on_time, timestamp=next_time + 1)).output[-1] == quoted  # deadline == now
    assert chain.read(path[2], "balanceOf", OA) == before + out


def test_router_quotes_are_read_only(market: tuple[LocalChain, Amm]) -> None:
    chain, amm = market
    r = amm.router
    assert chain.read(r, "quote", 10, 100, 250) == 25
    assert chain.read(r, "getAmountOut", E18, 5 * E18, 10 * E18) == 1662497915624478906
    assert chain.read(r, "getAmountIn", 1662497915624478906, 5 * E18, 10 * E18) == A.get_amount_in(
        1662497915624478906, 5 * E18, 10 * E18)
    for method_name, args, reason in (
        ("quote", (0, 1, 1), "UniswapV2Library: INSUFFICIENT_AMOUNT"),
        ("quote", (1, 0, 1), "UniswapV2Library: INSUFFICIENT_LIQUIDITY"),
        ("getAmountOut", (0, 1, 1), "UniswapV2Library: INSUFFICIENT_INPUT_AMOUNT"),
        ("getAmountOut", (1, 1, 0), "UniswapV2Library: INSUFFICIENT_LIQUIDITY"),
        ("getAmountIn", (0, 1, 1), "UniswapV2Library: INSUFFICIENT_OUTPUT_AMOUNT"),
        ("getAmountIn", (5, 10, 5), "division by zero"),  # the whole reserve: Solidity's invalid opcode
        ("getAmountIn", (5, 10, 4), "ds-math-sub-underflow"),
        ("getAmountOut", (2**255, 1, 1), "ds-math-mul-overflow"),
    ):
        with pytest.raises(Revert) as info:
            chain.read(r, method_name, *args)
        assert info.value.reason == reason
    with pytest.raises(Revert, match="swapExactTokensForTokens is not a read-only method"):
        chain.read(r, "swapExactTokensForTokens", 1, 0, tuple(amm.tokens[:2]), OA, FAR_DEADLINE, sender=OA)
    with pytest.raises(Revert, match=r"getAmountsOut takes \(Uint, AddrList\)"):
        chain.read(r, "getAmountsOut", 1, (amm.tokens[0], b"short"))


# --- attacks ---------------------------------------------------------------------------------------


class FlashCallee(BuiltinContract):
    """A flash-swap receiver (``IUniswapV2Callee``): ``data`` is an encoded list of actions.

    ``("pay", token, amount)`` transfers to the pair; ``("call", to, method, args)`` calls anything
    (the pair itself, to try re-entering it).
    """

    CODE_ID = "test/flash-callee"

    @method()
    def init(self, ctx: CallContext) -> None:
        """Nothing to set up."""

    @method(Addr, Uint, Uint, bytes, name="uniswapV2Call")
    def uniswap_v2_call(self, ctx: CallContext, sender: bytes, amount0: int, amount1: int, data: bytes) -> None:
        """Run the actions of ``data`` (sender and amounts recorded for the test)."""
        ctx.store(b"last", (sender, amount0, amount1))
        for action in decode_value(data):
            if action[0] == "pay":
                ctx.call(action[1], "transfer", (ctx.caller, action[2]))
            else:
                ctx.call(action[1], action[2], action[3])


def _flash_fixture() -> tuple[V2, Address]:
    f = v2_fixture(vm_extra=(FlashCallee,))
    callee = ok(f.send(Call(DEPLOYER, "deploy", (FlashCallee.CODE_ID, ())))).output[0]
    f.add_liquidity(10 * E18, 10 * E18)
    ok(f.send(call(f.token0, "transfer", callee, 5 * E18), call(f.token1, "transfer", callee, 5 * E18)))
    return f, callee


def test_flash_swap_repaid_with_the_fee_succeeds() -> None:
    f, callee = _flash_fixture()
    borrowed = E18
    fee_inclusive = borrowed * 1000 // 997 + 1  # ceil(borrowed / 0.997)
    short = encode((("pay", f.token0, fee_inclusive - 1),))
    reverted(f.send(call(f.pair, "swap", borrowed, 0, callee, short)), "UniswapV2: K")
    receipt = ok(f.send(call(f.pair, "swap", borrowed, 0, callee, encode((("pay", f.token0, fee_inclusive),)))))
    assert receipt.events[-1] == Event(f.pair, "Swap", (W, callee), (fee_inclusive, 0, borrowed, 0))
    assert f.chain.get(b"\x03" + callee + b"last") == encode((W, borrowed, 0))


@pytest.mark.parametrize("reentry", [
    ("swap", (1, 0, ZERO_ADDRESS, b"")), ("sync", ()), ("skim", (ZERO_ADDRESS,)), ("mint", (ZERO_ADDRESS,)),
    ("burn", (ZERO_ADDRESS,)),
])
def test_reentrancy_through_the_callback_is_refused(reentry: tuple[str, tuple[Value, ...]]) -> None:
    f, callee = _flash_fixture()
    name, args = reentry
    args = tuple(callee if a == ZERO_ADDRESS else a for a in args)
    data = encode((("call", f.pair, name, args), ("pay", f.token0, 2 * E18)))
    before = dict(f.chain.state)
    reverted(f.send(call(f.pair, "swap", E18, 0, callee, data)), "UniswapV2: LOCKED")
    assert changed_keys(before, f.chain.state) == {b"\x01" + W}
    # reading the pool from the callback is fine (getReserves is not locked), and so is another pool
    data = encode((("call", f.pair, "getReserves", ()), ("pay", f.token0, 2 * E18)))
    ok(f.send(call(f.pair, "swap", E18, 0, callee, data)))


def test_donation_before_the_first_deposit_does_not_pay() -> None:
    """The share-inflation attack: a first depositor mints dust, then donates to inflate the share price.

    MINIMUM_LIQUIDITY makes the attacker own at most 1/1001 of what it donates (whitepaper §3.4);
    a victim depositing afterwards loses at most one share's worth to rounding.
    """
    f = v2_fixture()
    attacker, victim = OTHER, THIRD
    start = 2 * 10**21
    ok(f.send(call(f.token0, "transfer", OA, start), call(f.token1, "transfer", OA, start),
              call(f.token0, "transfer", T3, start), call(f.token1, "transfer", T3, start)))
    # a donation to the empty pool before anyone deposits goes to the first minter, or to anyone who skims
    ok(f.send(call(f.token0, "transfer", f.pair, 5), key=attacker))
    ok(f.send(call(f.pair, "skim", T3), key=victim))
    assert f.balance(f.token0, f.pair) == 0
    # the attack: mint 1 share for 1001 wei of each, then donate 10**21 of each and sync
    ok(f.send(call(f.token0, "transfer", f.pair, 1001), call(f.token1, "transfer", f.pair, 1001),
              call(f.pair, "mint", OA), key=attacker))
    assert f.balance(f.pair, OA) == 1
    donation = 10**21
    ok(f.send(call(f.token0, "transfer", f.pair, donation), call(f.token1, "transfer", f.pair, donation),
              call(f.pair, "sync"), key=attacker))
    # a deposit too small for one share reverts instead of being swallowed
    reverted(f.send(call(f.token0, "transfer", f.pair, 10**17), call(f.token1, "transfer", f.pair, 10**17),
                    call(f.pair, "mint", T3), key=victim), "UniswapV2: INSUFFICIENT_LIQUIDITY_MINTED")
    deposit = 5 * 10**20
    ok(f.send(call(f.token0, "transfer", f.pair, deposit), call(f.token1, "transfer", f.pair, deposit),
              call(f.pair, "mint", T3), key=victim))
    shares = f.balance(f.pair, T3)
    for key, holder in ((victim, T3), (attacker, OA)):
        ok(f.send(call(f.pair, "transfer", f.pair, f.balance(f.pair, holder)), call(f.pair, "burn", holder), key=key))
    victim_loss = start - f.balance(f.token0, T3)
    attacker_loss = start - f.balance(f.token0, OA)
    per_share = (donation + 1001) // 1001
    assert shares == deposit * 1001 // (donation + 1001)
    assert 0 < victim_loss <= per_share  # rounding costs the victim less than one share
    assert attacker_loss * 1000 >= donation * 999  # the locked shares keep 99.9% of the donation


def test_output_off_by_one_through_the_router(market: tuple[LocalChain, Amm]) -> None:
    chain, amm = market
    pair = amm.pair(0, 1)
    t0 = chain.read(pair, "token0")
    r0, r1, _ = chain.read(pair, "getReserves")
    amount_in = 123_456_789
    out = chain.read(amm.router, "getAmountOut", amount_in, r0, r1)
    pay = call(t0, "transfer", pair, amount_in)
    reverted(send(chain, WALLET, pay, call(pair, "swap", 0, out + 1, W, b"")), "UniswapV2: K")
    ok(send(chain, WALLET, pay, call(pair, "swap", 0, out, W, b"")))
    r0, r1, _ = chain.read(pair, "getReserves")
    want = 10**15
    need = chain.read(amm.router, "getAmountIn", want, r0, r1)
    reverted(send(chain, WALLET, call(t0, "transfer", pair, need - 1), call(pair, "swap", 0, want, W, b"")),
             "UniswapV2: K")
    ok(send(chain, WALLET, call(t0, "transfer", pair, need), call(pair, "swap", 0, want, W, b"")))


def test_fee_constants_are_consistent_and_the_pair_enforces_them(market: tuple[LocalChain, Amm]) -> None:
    assert A.FEE_MULTIPLIER == A.FEE_DENOMINATOR - A.FEE_NUMERATOR == 997
    assert (A.FEE_NUMERATOR, A.FEE_DENOMINATOR) == (3, 1000)  # 0.3%, V2's fee in the pair and the library
    chain, amm = market
    pair = amm.pair(0, 1)
    t0 = chain.read(pair, "token0")
    r0, r1, _ = chain.read(pair, "getReserves")
    amount_in = 10**20
    # a router quoting a lower fee (0.2%) than the pair charges asks for more than the K check allows
    cheap = amount_in * 998 * r1 // (r0 * 1000 + amount_in * 998)
    fair = A.get_amount_out(amount_in, r0, r1)
    assert cheap > fair
    reverted(send(chain, WALLET, call(t0, "transfer", pair, amount_in), call(pair, "swap", 0, cheap, W, b"")),
             "UniswapV2: K")
    ok(send(chain, WALLET, call(t0, "transfer", pair, amount_in), call(pair, "swap", 0, fair, W, b"")))


def test_pair_guards() -> None:
    f = v2_fixture()
    reverted(f.send(call(f.pair, "swap", 0, 0, W, b"")), "UniswapV2: INSUFFICIENT_OUTPUT_AMOUNT")
    reverted(f.send(call(f.pair, "swap", 1, 0, W, b"")), "UniswapV2: INSUFFICIENT_LIQUIDITY")
    f.add_liquidity(10**4, 10**4)
    reverted(f.send(call(f.pair, "swap", 0, 10**4, W, b"")), "UniswapV2: INSUFFICIENT_LIQUIDITY")
    reverted(f.send(call(f.pair, "swap", 1, 0, f.token0, b"")), "UniswapV2: INVALID_TO")
    reverted(f.send(call(f.pair, "swap", 1, 0, W, b"")), "UniswapV2: INSUFFICIENT_INPUT_AMOUNT")
    reverted(f.send(call(f.pair, "burn", W)), "UniswapV2: INSUFFICIENT_LIQUIDITY_BURNED")
    reverted(f.send(call(f.pair, "mint", W)), "UniswapV2: INSUFFICIENT_LIQUIDITY_MINTED")
    reverted(f.send(call(f.pair, "swap", 1, 0, ZERO_ADDRESS, b"")),
             "UniswapV2: TRANSFER_FAILED (transfer to the zero address)")
    reverted(f.send(call(f.token0, "mint", f.pair, 2**112), call(f.pair, "sync")), "UniswapV2: OVERFLOW")
    ok(f.send(call(f.token0, "mint", f.pair, 2**112 - 1 - 10**4), call(f.pair, "sync")))  # uint112 max fits
    g = v2_fixture()  # a first deposit worth less than MINIMUM_LIQUIDITY
    reverted(g.send(call(g.token0, "transfer", g.pair, 1000), call(g.token1, "transfer", g.pair, 1000),
                    call(g.pair, "mint", W)), "UniswapV2: INSUFFICIENT_LIQUIDITY_MINTED")
    reverted(g.send(call(g.token0, "transfer", g.pair, 999), call(g.token1, "transfer", g.pair, 999),
                    call(g.pair, "mint", W)), "ds-math-sub-underflow")


def test_skim_and_sync() -> None:
    f = v2_fixture()
    f.add_liquidity(10**6, 10**6)
    ok(f.send(call(f.token0, "transfer", f.pair, 777)))
    before = f.balance(f.token0, OA)
    receipt = ok(f.send(call(f.pair, "skim", OA)))
    assert f.balance(f.token0, OA) == before + 777 and f.reserves()[:2] == (10**6, 10**6)
    assert receipt.events == (Event(f.token0, "Transfer", (f.pair, OA), (777,)),
                              Event(f.token1, "Transfer", (f.pair, OA), (0,)))
    ok(f.send(call(f.token1, "transfer", f.pair, 5)))
    receipt = ok(f.send(call(f.pair, "sync")))
    assert receipt.events == (Event(f.pair, "Sync", (), (10**6, 10**6 + 5)),)


# --- gas ---------------------------------------------------------------------------------------------


def test_out_of_gas_in_a_swap_reverts_everything_and_charges_the_limit(market: tuple[LocalChain, Amm]) -> None:
    chain, amm = market
    calls = amm.swap_calls(OA, 5 * E18, [0, 1, 2])
    probe = LocalChain()
    probe.state, probe.height, probe.timestamp = dict(chain.state), chain.height, chain.timestamp
    needed = ok(send(probe, OTHER, *calls, gas_limit=300_000)).gas_used
    before = dict(chain.state)
    tx = sign(OTHER, chain.chain_id, chain.nonce(OA), calls, needed - 1)
    (receipt,) = chain.execute([tx])
    assert (receipt.status, receipt.gas_used, receipt.events) == (STATUS_REVERTED, needed - 1, ())
    assert receipt.revert_reason.startswith("out of gas: needed ")
    assert changed_keys(before, chain.state) == {b"\x01" + OA}
    assert ok(send(chain, OTHER, *calls, gas_limit=needed)).gas_used == needed


def test_gas_of_a_sync_follows_the_table() -> None:
    from contracts import gas as G

    f = v2_fixture()
    f.add_liquidity(10**6, 10**6)
    tx = sign(WALLET, f.chain.chain_id, f.chain.nonce(W), [call(f.pair, "sync")], 200_000)
    (receipt,) = f.chain.execute([tx], timestamp=f.chain.timestamp)  # same second: accumulators untouched
    balance_of = G.CALL + G.SLOAD
    sync_log = G.LOG + G.LOG_BYTE * len(encode(("Sync", (), (10**6, 10**6))))
    expected = (G.intrinsic_gas(len(tx.signing_bytes)) + G.CALL + G.LOCK + 2 * G.SLOAD + 2 * balance_of
                + G.SSTORE + sync_log)
    assert ok(receipt).gas_used == expected


def test_gas_of_a_first_mint_follows_the_table() -> None:
    from contracts import gas as G

    f = v2_fixture()
    amount0, amount1 = E18, 4 * E18
    got = 2 * E18 - A.MINIMUM_LIQUIDITY
    calls = [call(f.token0, "transfer", f.pair, amount0), call(f.token1, "transfer", f.pair, amount1),
             call(f.pair, "mint", W)]
    tx = sign(WALLET, f.chain.chain_id, f.chain.nonce(W), calls, 500_000)
    (receipt,) = f.chain.execute([tx])

    def log(name: str, topics: tuple[Value, ...], data: tuple[Value, ...]) -> int:
        return G.LOG + G.LOG_BYTE * len(encode((name, topics, data)))

    transfers = sum(G.CALL + 2 * G.SLOAD + 2 * G.SSTORE + log("Transfer", (W, f.pair), (amount,))
                    for amount in (amount0, amount1))
    balance_of = G.CALL + G.SLOAD
    fee_to = G.CALL + G.SLOAD  # factory.feeTo()
    ledger_mint = 2 * G.SLOAD + 2 * G.SSTORE  # supply and the receiver's balance
    mint = (G.CALL + G.LOCK + 2 * G.SLOAD + 2 * balance_of  # cfg, reserves, the two balances
            + fee_to + G.SLOAD + G.SLOAD  # kLast, supply
            + G.MATH * (1 + (amount0 * amount1).bit_length())  # amount0 * amount1, then its square root
            + ledger_mint + log("Transfer", (ZERO_ADDRESS, ZERO_ADDRESS), (A.MINIMUM_LIQUIDITY,))
            + ledger_mint + log("Transfer", (ZERO_ADDRESS, W), (got,))
            + G.SSTORE + log("Sync", (), (amount0, amount1))  # reserves; no price before the first deposit
            + log("Mint", (W,), (amount0, amount1)))
    assert ok(receipt).gas_used == G.intrinsic_gas(len(tx.signing_bytes)) + transfers + mint


class _ComputeMeter:
    """The parts of a ``CallContext`` that ``Pair._mint_fee`` uses, counting compute units."""

    def __init__(self, slots: dict[bytes, Value], fee_to: bytes) -> None:
        self.slots, self.fee_to, self.units = slots, fee_to, 0
        self.contract = b"\x77" * 20

    def compute(self, units: int) -> None:
        self.units += units

    def call(self, to: bytes, method_name: str, args: tuple[Value, ...]) -> Value:
        assert method_name == "feeTo"
        return self.fee_to

    def load(self, slot: bytes) -> Value:
        return self.slots.get(slot)

    def store(self, slot: bytes, value: Value) -> None:
        self.slots[slot] = value

    def emit(self, name: str, topics: tuple[Value, ...], data: tuple[Value, ...]) -> None:
        pass


def test_protocol_fee_charges_its_multiplications() -> None:
    # reserve0 * reserve1 is a big-integer multiplication like any other: MATH for it, MATH per bit
    # for each square root, 4 for the fee's two multiplications and its division and addition.
    reserve0, reserve1, k_last = 1001 * E18, 999 * E18 + 10**15, 10**42
    ctx = _ComputeMeter({b"kLast": k_last, b"supply": 10**21}, OA)
    fee_on, fee_to = A.Pair()._mint_fee(ctx, b"\x01" * 20, reserve0, reserve1)  # type: ignore[arg-type]
    assert (fee_on, fee_to) == (True, OA)
    assert ctx.units == 1 + (reserve0 * reserve1).bit_length() + k_last.bit_length() + 4
    assert ctx.slots[b"b" + OA] > 0  # the fee was minted, so all four were needed


# --- determinism ---------------------------------------------------------------------------------------

WORKLOAD = (
    "from contracts.testing_amm import amm_workload\n"
    "chain, roots = amm_workload(20240607, blocks=10)\n"
    "print(' '.join(r.hex() for r in roots))\n"
    "print(' '.join(str(r.status) + ':' + str(r.gas_used) for r in chain.receipts))\n"
)


@pytest.mark.slow
def test_the_same_amm_blocks_give_the_same_roots_under_any_hash_seed() -> None:
    outputs = [out.split("\n") for out in outputs_under_hash_seeds(WORKLOAD, ("1", "2718281828"), timeout=300)]
    assert outputs[0] == outputs[1]
    roots = outputs[0][0].split()
    assert len(roots) == 12 and len(set(roots)) == 12  # every block changed the state
    chain, here = amm_workload(20240607, blocks=10)
    assert roots == [r.hex() for r in here]
    statuses = [r.status for r in chain.receipts]
    assert statuses.count(STATUS_SUCCESS) > 20 and STATUS_REVERTED in statuses
    names = {e.name for r in chain.receipts for e in r.events}
    assert {"Swap", "Mint", "Burn", "Sync"} <= names
    # the protocol fee is on: some liquidity events minted the fee's LP shares (_mintFee with kLast)
    fee_mints = [e for r in chain.receipts for e in r.events
                 if e.name == "Transfer" and e.topics == (ZERO_ADDRESS, WORKLOAD_FEE_TO)]
    assert fee_mints and all(e.data[0] > 0 for e in fee_mints)
