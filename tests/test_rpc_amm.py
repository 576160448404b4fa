"""The AMM over JSON-RPC on a live node: wallet helpers of ``node.rpc.client``, ``qnx_getPool``, ``qnx_call``."""

from __future__ import annotations

from typing import Any

import trio

from contracts import amm as A
from crypto.keys import KeyPair
from node.rpc.client import (
    AMM_GAS_LIMIT,
    Client,
    add_liquidity_calls,
    amm_addresses,
    create_pool_call,
    deploy_amm_calls,
    deploy_token_call,
    max_with_slippage,
    min_with_slippage,
    sign_transaction,
    swap_exact_in_calls,
    swap_exact_out_calls,
)
from state.types import Call
from tests.conftest import LiveNode

CHAIN = "qenex-test"
DEADLINE = 2**40


async def result(live: LiveNode, method: str, *params: object) -> Any:
    body = (await live.rpc(method, *params)).json()
    assert "error" not in body, body
    return body["result"]


async def error(live: LiveNode, method: str, *params: object) -> dict[str, Any]:
    body = (await live.rpc(method, *params)).json()
    assert "error" in body, body
    return body["error"]  # type: ignore[no-any-return]


class Wallet:
    """An ML-DSA-44 account sending through the live node."""

    def __init__(self, live: LiveNode) -> None:
        self.live, self.key, self.nonce = live, KeyPair.generate(), 0

    @property
    def address(self) -> bytes:
        return self.key.address

    async def send(self, calls: list[Call]) -> dict[str, Any]:
        tx = sign_transaction(self.key, CHAIN, self.nonce, calls, AMM_GAS_LIMIT)
        self.nonce += 1
        receipt: dict[str, Any] = await result(self.live, "qnx_sendRawTransactionAndWait",
                                               "0x" + tx.encode().hex(), 30)
        return receipt


def hexa(b: bytes) -> str:
    return "0x" + b.hex()


def test_helpers() -> None:
    assert deploy_amm_calls()[0] == Call(A.DEPLOYER, "create", (A.FACTORY_CODE_ID, b"", (bytes(20),)))
    assert amm_addresses() == (A.CANONICAL_FACTORY, A.CANONICAL_ROUTER)
    assert min_with_slippage(10_000, 50) == 9_950 and min_with_slippage(999, 50) == 994  # rounds down
    assert max_with_slippage(10_000, 50) == 10_050 and max_with_slippage(999, 50) == 1_004  # rounds up
    calls = swap_exact_out_calls([b"a" * 20, b"b" * 20], 5, 1000, b"c" * 20, 9, slippage_bps=100)
    assert calls[1].args == (5, 1010, (b"a" * 20, b"b" * 20), b"c" * 20, 9)
    for bad in (-1, 10_001):
        try:
            min_with_slippage(1, bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} basis points accepted")


async def test_pool_lifecycle_over_rpc(live_node: LiveNode) -> None:
    live = live_node
    lp, trader = Wallet(live), Wallet(live)
    receipt = await lp.send([deploy_token_call("Alpha", "ALP", 18, lp.address),
                             deploy_token_call("Beta", "BET", 6, lp.address)])
    assert receipt["status"] == "success", receipt
    token_a, token_b = (bytes.fromhex(x[2:]) for x in receipt["output"])
    supply = 10**30
    receipt = await lp.send([*deploy_amm_calls(),
                             Call(token_a, "mint", (lp.address, supply)), Call(token_b, "mint", (lp.address, supply)),
                             Call(token_a, "mint", (trader.address, supply)), create_pool_call(token_a, token_b)])
    assert receipt["status"] == "success", receipt
    pair = A.pair_address(A.CANONICAL_FACTORY, token_a, token_b)
    assert receipt["output"][-1] == hexa(pair)

    empty = await result(live, "qnx_getPool", hexa(token_b), hexa(token_a))
    assert empty["address"] == hexa(pair) and empty["reserve0"] == "0" and empty["totalSupply"] == "0"

    receipt = await lp.send(add_liquidity_calls(token_a, token_b, 4 * 10**21, 10**21, lp.address, DEADLINE))
    assert receipt["status"] == "success", receipt
    token0, token1 = sorted((token_a, token_b))
    reserves = {token_a: 4 * 10**21, token_b: 10**21}
    for first, second in ((token_a, token_b), (token_b, token_a)):
        pool = await result(live, "qnx_getPool", hexa(first), hexa(second), "latest")
        assert pool == {
            "address": hexa(pair), "token0": hexa(token0), "token1": hexa(token1),
            "reserve0": str(reserves[token0]), "reserve1": str(reserves[token1]), "totalSupply": str(2 * 10**21),
            "price0CumulativeLast": "0", "price1CumulativeLast": "0", "blockTimestampLast": pool["blockTimestampLast"],
            "kLast": "0", "factory": hexa(A.CANONICAL_FACTORY),
        }
    assert 0 < pool["blockTimestampLast"] < 2**32

    quoted = await result(live, "qnx_call", {"to": hexa(A.CANONICAL_ROUTER), "method": "getAmountsOut",
                                             "args": [10**18, [hexa(token_a), hexa(token_b)]]})
    out = A.get_amount_out(10**18, 4 * 10**21, 10**21)
    assert quoted == [str(10**18), str(out)]
    # a quote gone stale (someone swapped first) with no slippage tolerance reverts; with 1% it goes through
    stale = swap_exact_in_calls([token_a, token_b], 10**18, out, trader.address, DEADLINE, slippage_bps=0)
    receipt = await trader.send(swap_exact_in_calls([token_a, token_b], 10**19, 0, trader.address, DEADLINE))
    assert receipt["status"] == "success"
    first_out = int(receipt["output"][-1][-1])
    receipt = await trader.send(stale)
    assert receipt["status"] == "reverted"
    assert receipt["revertReason"] == "UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"

    client = Client(live.url)
    try:
        calls = await trio.to_thread.run_sync(lambda: client.swap_calls([token_a, token_b], 10**18, trader.address,
                                                                         DEADLINE, slippage_bps=100))
        receipt = await trader.send(calls)
        assert receipt["status"] == "success", receipt
        got = int(receipt["output"][-1][-1])
        assert got >= calls[1].args[1] > 0
        assert await result(live, "qnx_getBalance", hexa(trader.address), hexa(token_b)) == str(first_out + got)
        lp_shares = int(await result(live, "qnx_getBalance", hexa(lp.address), hexa(pair)))
        remove = await trio.to_thread.run_sync(lambda: client.remove_liquidity_calls(
            token_a, token_b, lp_shares // 2, lp.address, DEADLINE, slippage_bps=10))
        receipt = await lp.send(remove)
        assert receipt["status"] == "success", receipt
        none = await trio.to_thread.run_sync(lambda: client.pool(token_a, bytes(20)))
        assert none is None
    finally:
        client.close()

    assert await result(live, "qnx_getPool", hexa(token_a), hexa(b"\x01" * 20)) is None
    assert await result(live, "qnx_getPool", hexa(token_a), hexa(token_b), "latest", hexa(b"\x02" * 20)) is None
    assert (await error(live, "qnx_getPool", hexa(token_a), hexa(token_a)))["code"] == -32602
    assert (await error(live, "qnx_getPool", hexa(token_a)))["code"] == -32602
    assert (await error(live, "qnx_getPool", "0x12", hexa(token_a)))["code"] == -32602



async def test_get_token_of_a_pool_gives_its_lp_token(live_node: LiveNode) -> None:
    """``qnx_getToken`` on a pool's address describes its LP shares (minter null), never -32603."""
    live = live_node
    lp = Wallet(live)
    receipt = await lp.send([deploy_token_call("Alpha", "ALP", 18, lp.address),
                             deploy_token_call("Beta", "BET", 6, lp.address)])
    assert receipt["status"] == "success", receipt
    token_a, token_b = (bytes.fromhex(x[2:]) for x in receipt["output"])
    receipt = await lp.send([*deploy_amm_calls(), Call(token_a, "mint", (lp.address, 10**30)),
                             Call(token_b, "mint", (lp.address, 10**30)), create_pool_call(token_a, token_b)])
    assert receipt["status"] == "success", receipt
    created_at = receipt["blockHeight"]
    pair = A.pair_address(A.CANONICAL_FACTORY, token_a, token_b)
    receipt = await lp.send(add_liquidity_calls(token_a, token_b, 4 * 10**21, 10**21, lp.address, DEADLINE))
    assert receipt["status"] == "success", receipt

    lp_token = {"address": hexa(pair), "name": A.LP_NAME, "symbol": A.LP_SYMBOL, "decimals": 18,
                "totalSupply": str(2 * 10**21), "minter": None}
    assert await result(live, "qnx_getToken", hexa(pair)) == lp_token
    assert await result(live, "qnx_getToken", hexa(pair), created_at) == {**lp_token, "totalSupply": "0"}
    # before the pool existed, and contracts that are no token: -32001 with a reason
    for address, block in ((pair, created_at - 1), (A.CANONICAL_FACTORY, "latest"), (b"\x07" * 20, "latest")):
        err = await error(live, "qnx_getToken", hexa(address), block)
        assert err["code"] == -32001 and "no token at this address" in err["message"], err
    # a token/v1 still answers with its minter
    token = await result(live, "qnx_getToken", hexa(token_b))
    assert token == {"address": hexa(token_b), "name": "Beta", "symbol": "BET", "decimals": 6,
                     "totalSupply": str(10**30), "minter": hexa(lp.address)}
