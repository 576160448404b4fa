"""The Python SDK (``node.rpc.client``): a typed method for every JSON-RPC method the node serves, on
``Client`` (blocking, run here in a worker thread: the node serves from this test's Trio loop) and on
``AsyncClient`` (Trio), against live nodes; and the errors each one raises."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import pytest
import trio

import node.rpc.client as sdk
from contracts.vm import contract_address
from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519
from node.config import RPCSection
from node.exceptions import NodeError
from node.rpc.client import (
    SDK_METHODS,
    WEBSOCKET_METHODS,
    AsyncClient,
    Client,
    ReceiptTimeout,
    Request,
    RPCMethod,
    RPCMethods,
    Sleep,
    deploy_token_call,
    sign_transaction,
    transfer_call,
)
from node.rpc.errors import RPCError
from node.rpc.openrpc import SPECS
from state.types import Call, Transaction
from tests.conftest import LiveNode, start_solo_node

CHAIN = "qenex-test"
TIMEOUT = 30.0
TOKEN = "s3cret"
T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` (a blocking ``Client`` method) in a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def same(clients: tuple[Client, AsyncClient], name: str, *args: Any, **kwargs: Any) -> Any:
    """The typed method ``name`` on both clients with the same arguments; asserts they agree and
    returns the answer."""
    sync, aio = clients
    got = await blocking(getattr(sync, name), *args, **kwargs)
    assert got == await getattr(aio, name)(*args, **kwargs), name
    return got


async def raises(clients: tuple[Client, AsyncClient], name: str, *args: Any, **kwargs: Any) -> list[RPCError]:
    """The ``RPCError`` the typed method ``name`` raises on each client (asserting both raise one)."""
    sync, aio = clients
    errors = []
    for call in (lambda: blocking(getattr(sync, name), *args, **kwargs), lambda: getattr(aio, name)(*args, **kwargs)):
        with pytest.raises(RPCError) as err:
            await call()
        errors.append(err.value)
    return errors


@pytest.fixture
async def clients(live_node: LiveNode) -> AsyncIterator[tuple[Client, AsyncClient]]:
    with Client(live_node.url) as sync:
        async with AsyncClient(live_node.url) as aio:
            yield sync, aio


def admin_section() -> RPCSection:
    return RPCSection(host="127.0.0.1", port=0, admin_enabled=True, admin_token=TOKEN)


def signed(key: KeyPair, nonce: int, *calls: Call, gas_limit: int = 200_000) -> Transaction:
    return sign_transaction(key, CHAIN, nonce, list(calls), gas_limit)


# --- every served method has a typed method ----------------------------------------------------------


async def test_every_served_method_has_a_typed_method_on_both_clients(nursery: trio.Nursery) -> None:
    """rpc.discover of a node serving everything (admin included): each method it lists, and each the
    server can serve (``openrpc.SPECS``), has its typed method on Client and AsyncClient; the
    WebSocket-only ones have theirs on Trio."""
    node = await start_solo_node(nursery, admin_section())
    async with AsyncClient(node.rpc_urls[0] + "/", token=TOKEN) as aio:
        doc = await aio.discover()
        served = {m["name"] for m in doc["methods"]}
        assert {"qnx_getEvidence", "rpc.discover", "admin_peers", "admin_setLogLevel"} <= served <= set(SPECS)
        missing = (served | set(SPECS)) - set(SDK_METHODS) - set(WEBSOCKET_METHODS)
        assert not missing, f"served without a typed SDK method (declare one in RPCMethods): {sorted(missing)}"
        assert set(SDK_METHODS) | set(WEBSOCKET_METHODS) == served  # and none for a method not served
        with Client(aio.url) as sync:
            for rpc_name, name in SDK_METHODS.items():
                method = vars(RPCMethods)[name]
                assert isinstance(method, RPCMethod) and method.rpc_name == rpc_name
                assert getattr(Client, name) is method and getattr(AsyncClient, name) is method
                blocking_method, async_method = getattr(sync, name), getattr(aio, name)
                assert callable(blocking_method) and not inspect.iscoroutinefunction(blocking_method), name
                assert inspect.iscoroutinefunction(async_method), name
                assert inspect.signature(blocking_method) == inspect.signature(async_method), name
                assert "Raises" in (blocking_method.__doc__ or "") and "TransportError" in async_method.__doc__, name
    for rpc_name, where in WEBSOCKET_METHODS.items():
        owner, attr = where.split(".")
        assert callable(getattr(getattr(sdk, owner), attr)), rpc_name


def test_wait_for_receipt_polls_until_its_deadline() -> None:
    """The sans-IO operation, driven by hand on a made-up clock: it polls, sleeps ``interval`` (less
    at the end), polls once more at the deadline, then raises; a receipt ends it at once."""
    tx_hash = b"\x07" * 32
    poll = Request("qnx_getTransactionReceipt", ("0x" + tx_hash.hex(),))
    op = RPCMethods.wait_for_receipt.op(None, tx_hash, 1.0, interval=0.375)
    assert next(op) == Sleep(0.0)
    assert op.send(100.0) == poll
    assert op.send(None) == Sleep(0.375)
    assert op.send(100.375) == poll
    assert op.send(None) == Sleep(0.375)
    assert op.send(100.75) == poll
    assert op.send(None) == Sleep(0.25)
    assert op.send(101.0) == poll  # at the deadline
    with pytest.raises(ReceiptTimeout) as timeout:
        op.send(None)
    assert isinstance(timeout.value, TimeoutError) and isinstance(timeout.value, NodeError)
    assert (timeout.value.tx_hash, timeout.value.timeout) == (tx_hash, 1.0)

    op = RPCMethods.wait_for_receipt.op(None, tx_hash, 1.0)
    assert next(op) == Sleep(0.0)
    assert op.send(0.0) == poll
    with pytest.raises(StopIteration) as done:
        op.send({"txHash": "0x" + tx_hash.hex()})
    assert done.value.value == {"txHash": "0x" + tx_hash.hex()}


# --- each typed method on both clients, real data ------------------------------------------------------


async def test_typed_methods_on_both_clients(live_node: LiveNode, clients: tuple[Client, AsyncClient]) -> None:
    sync, aio = clients
    assert await same(clients, "chain_id") == CHAIN
    owner, alice = KeyPair.generate(), KeyPair.generate(ED25519)

    # transactions: deploy a token (async), mint (blocking), two transfers sent and waited for crosswise
    deployed = await aio.send_raw_transaction_and_wait(signed(owner, 0, deploy_token_call("Test", "TST", 6,
                                                                                          owner.address)).encode(),
                                                       TIMEOUT)
    assert deployed["status"] == "success"
    token = bytes.fromhex(deployed["output"][0][2:])
    assert token == contract_address(owner.address, 0, 0)
    mint = signed(owner, 1, Call(Address(token), "mint", (owner.address, 10**12)))
    minted = await blocking(sync.send_raw_transaction_and_wait, mint.encode())
    assert minted["status"] == "success" and minted["blockHeight"] > deployed["blockHeight"]
    first = signed(owner, 2, transfer_call(token, alice.address, 1234))
    assert await blocking(sync.send_raw_transaction, first.encode()) == first.hash  # bytes
    receipt = await aio.wait_for_receipt(first.hash, TIMEOUT)
    assert receipt["txHash"] == "0x" + first.hash.hex() and receipt["status"] == "success"
    assert await blocking(sync.wait_for_receipt, first.hash, TIMEOUT) == receipt
    second = signed(owner, 3, transfer_call(token, alice.address, 766))
    assert await aio.send_raw_transaction(second.encode()) == second.hash
    last = await blocking(sync.wait_for_receipt, second.hash, TIMEOUT)
    assert last["status"] == "success"

    # the chain and the node
    status = [await blocking(sync.status), await aio.status()]
    for view in status:
        assert view["chainId"] == CHAIN and view["height"] >= last["blockHeight"] and isinstance(view["height"], int)
    validators = await same(clients, "validators")
    assert len(validators) == 1 and validators[0]["scheme"] == "ML-DSA-44"
    assert await same(clients, "validators", "latest") == validators
    assert await same(clients, "get_evidence") == []
    assert {m["name"] for m in (await same(clients, "discover"))["methods"]} >= {"qnx_getBalance", "rpc.discover"}

    # transactions and blocks
    tx = await same(clients, "get_transaction", first.hash)
    assert tx["from"] == "0x" + owner.address.hex() and tx["nonce"] == 2
    assert (tx["blockHeight"], tx["index"]) == (receipt["blockHeight"], receipt["index"])
    assert await same(clients, "get_receipt", first.hash) == receipt
    block = await same(clients, "block_by_number", receipt["blockHeight"], True)
    assert block["hash"] == receipt["blockHash"] and block["transactions"][receipt["index"]]["hash"] == tx["hash"]
    assert await same(clients, "block_by_hash", bytes.fromhex(receipt["blockHash"][2:])) == {
        **block, "transactions": [t["hash"] for t in block["transactions"]]}
    assert (await same(clients, "block_by_number", "latest"))["header"]["height"] >= last["blockHeight"]

    # state: ints in base units, at the latest block or an earlier one
    assert await same(clients, "get_nonce", owner.address) == 4
    assert await same(clients, "nonce", owner.address) == 4
    assert await same(clients, "get_nonce", owner.address, deployed["blockHeight"]) == 1
    assert await same(clients, "get_balance", alice.address, token) == 2000
    assert await same(clients, "balance", owner.address, token, "latest") == 10**12 - 2000
    assert await same(clients, "get_balance", alice.address, token, receipt["blockHeight"]) == 1234
    assert await same(clients, "get_token", token) == {
        "address": "0x" + token.hex(), "name": "Test", "symbol": "TST", "decimals": 6, "totalSupply": 10**12,
        "minter": "0x" + owner.address.hex()}
    assert await same(clients, "get_pool", token, b"\x33" * 20) is None  # no AMM on this chain
    assert await same(clients, "pool", token, b"\x33" * 20, factory=b"\x44" * 20) is None

    # contracts
    assert await same(clients, "call_contract", token, "balanceOf", [alice.address]) == "2000"  # JSON: decimal
    assert await same(clients, "call_contract", token, "balanceOf", (alice.address,), owner.address,
                      receipt["blockHeight"]) == "1234"
    assert await same(clients, "read", token, "symbol") == "TST"
    gas = await same(clients, "estimate_gas", token, "transfer", (alice.address, 1), sender=owner.address)
    assert isinstance(gas, int) and 10_000 < gas < 100_000

    # proofs
    answer = await same(clients, "get_proof", token, [b"supply"])
    assert answer["address"] == "0x" + token.hex() and len(answer["storage"]) == 1
    genesis = [(v.scheme, v.public_key) for v in live_node.node.validators]
    for proven in (await blocking(sync.proven_account, owner.address, [], chain_id=CHAIN, validators=genesis,
                                  block=minted["blockHeight"]),
                   await aio.proven_account(owner.address, [], chain_id=CHAIN, validators=genesis,
                                            block=minted["blockHeight"])):
        assert (proven.height, proven.nonce, proven.code) == (minted["blockHeight"], 2, None)

    # the old helpers still answer as before
    hash_hex = await aio.send_transaction(signed(owner, 4, transfer_call(token, alice.address, 1)), wait=False)
    assert isinstance(hash_hex, str) and (await aio.wait_for_receipt(bytes.fromhex(hash_hex[2:]), TIMEOUT))
    receipt = await blocking(sync.send_transaction, signed(owner, 5, transfer_call(token, alice.address, 1)),
                             timeout=TIMEOUT)
    assert receipt["status"] == "success"
    assert await blocking(sync.call, "qnx_chainId") == await aio.call("qnx_chainId") == CHAIN

    # the typed methods over one WebSocket too
    async with aio.websocket() as ws:
        assert await ws.chain_id() == CHAIN
        assert await ws.get_balance(alice.address, token) == 2002
        assert await ws.get_receipt(b"\x00" * 32) is None


async def test_three_lines_in_a_notebook(live_node: LiveNode) -> None:
    """README's example: ``Client(url).status()``, nothing else to set up."""
    c = Client(live_node.url)
    assert (await blocking(c.status))["chainId"] == CHAIN
    c.close()


# --- errors ----------------------------------------------------------------------------------------------


async def test_errors_map_to_the_documented_exceptions(clients: tuple[Client, AsyncClient]) -> None:
    sync, aio = clients
    unknown = b"\x11" * 32
    assert await same(clients, "get_transaction", unknown) is None
    assert await same(clients, "get_receipt", unknown) is None
    assert await same(clients, "block_by_hash", unknown) is None
    assert await same(clients, "block_by_number", 10**6) is None
    someone = KeyPair.generate(ED25519).address

    for err in await raises(clients, "get_balance", b"\x01\x02\x03", someone):  # a 3-byte address
        assert err.code == -32602 and "address" in err.message
    for err in await raises(clients, "get_receipt", b"\x01" * 31):
        assert err.code == -32602
    for err in await raises(clients, "send_raw_transaction", b"\x00\x01"):  # not a transaction
        assert err.code == -32000 and "encoding" in err.data
    starved = signed(KeyPair.generate(), 0, transfer_call(someone, someone, 1), gas_limit=1_000)
    for err in await raises(clients, "send_raw_transaction", starved.encode()):
        assert err.code == -32003 and err.data["reason"] == "intrinsic gas too low"
    elsewhere = sign_transaction(KeyPair.generate(), "another-chain", 0, [transfer_call(someone, someone, 1)])
    for err in await raises(clients, "send_raw_transaction_and_wait", elsewhere.encode(), TIMEOUT):
        assert err.code == -32000 and err.data["reason"] == "wrong chain id"
    for err in await raises(clients, "get_token", someone):  # no contract there
        assert err.code == -32001
    for err in await raises(clients, "get_nonce", someone, 10**6):  # not committed yet
        assert err.code == -32001 and set(err.data) == {"oldest", "latest"}
    for err in await raises(clients, "call_contract", someone, "balanceOf", [someone]):
        assert err.code == 3 and err.data["reason"]
    for err in await raises(clients, "estimate_gas", someone, "transfer", (someone, 1), sender=someone):
        assert err.code == 3
    for err in await raises(clients, "admin_peers"):  # not enabled on this node: as if unknown
        assert err.code == -32601

    with pytest.raises(TypeError, match="bytes.fromhex"):  # hex text where bytes go: said at once, locally
        await aio.get_nonce("0x" + someone.hex())  # type: ignore[arg-type]
    with pytest.raises(ReceiptTimeout):
        await blocking(sync.wait_for_receipt, unknown, 0.2, interval=0.05)
    with pytest.raises(TimeoutError):
        await aio.wait_for_receipt(unknown, 0.2, interval=0.05)


async def test_an_unreachable_node_raises_transport_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/"
    with Client(url, timeout=5.0) as sync, pytest.raises(httpx.TransportError):
        await blocking(sync.status)
    async with AsyncClient(url, timeout=5.0) as aio:
        with pytest.raises(httpx.TransportError):
            await aio.get_balance(b"\x01" * 20, b"\x02" * 20)
        with pytest.raises(httpx.TransportError):
            await aio.wait_for_receipt(b"\x03" * 32, TIMEOUT)  # a transport error is not waited out


# --- admin methods -----------------------------------------------------------------------------------------


async def test_admin_methods_on_both_clients(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, admin_section())
    url = node.rpc_urls[0] + "/"
    with Client(url, token=TOKEN) as sync:
        async with AsyncClient(url, token=TOKEN) as aio:
            admin = (sync, aio)
            assert await same(admin, "admin_peers") == []  # a single validator has no peers
            assert await same(admin, "admin_flush_mempool") == {"dropped": 0}
            module = "qenex.test_sdk"  # a logger of this test's own: nothing to put back afterwards
            assert await blocking(sync.admin_set_log_level, module, "info") == {
                "module": module, "level": "INFO", "previous": "NOTSET"}
            assert await aio.admin_set_log_level(module, "DEBUG") == {
                "module": module, "level": "DEBUG", "previous": "INFO"}
            assert logging.getLogger(module).level == logging.DEBUG
            for err in await raises(admin, "admin_set_log_level", module, "LOUD"):
                assert err.code == -32602
    with Client(url) as sync:
        async with AsyncClient(url) as aio:
            for err in await raises((sync, aio), "admin_peers"):  # without the token
                assert (err.code, err.data) == (-32000, "unauthorized")
