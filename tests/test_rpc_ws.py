"""JSON-RPC over WebSocket ``/ws`` on a live node: the same methods, subscriptions (newHeads, events,
txStatus), unsubscribe, cutting off a slow subscriber, and the rpc.discover walk."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from crypto.hashing import Hash32
from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519
from node.config import ConsensusSection, NodeConfig, RPCSection
from node.exceptions import ConnectionClosedByNode
from node.node import Node
from node.rpc.client import AsyncClient, deploy_token_call, sign_transaction, transfer_call, ws_url
from node.rpc.errors import RPCError
from node.rpc.openrpc import SPECS
from node.rpc.pubsub import EventFilter, Hub, Subscription
from node.rpc.server import RPCApp
from node.setup import NodeKeys, validator_entry
from state.kv import MemoryStore
from state.types import Call, Event, Genesis, Transaction
from tests.conftest import LiveNode, poll_until, start_solo_node

CHAIN = "qenex-test"
TIMEOUT = 30.0
"""Upper bound of any single wait in these tests (they finish far sooner)."""


def raw(tx: Transaction) -> str:
    return "0x" + tx.encode().hex()


def hexb(b: bytes) -> str:
    return "0x" + b.hex()


def deploy(key: KeyPair, nonce: int = 0) -> Transaction:
    return sign_transaction(key, CHAIN, nonce, [deploy_token_call("Test", "TST", 6, key.address)], 200_000)


async def ticking_node(nursery: trio.Nursery, **rpc: Any) -> Node:
    """A solo node that commits an (empty) block every ~20 ms, with ``[rpc]`` overrides."""
    return await start_solo_node(nursery, RPCSection(host="127.0.0.1", port=0, max_body_bytes=64 * 1024,
                                                     max_batch=10, **rpc),
                                 ConsensusSection(block_interval_ms=20, empty_block_interval_ms=20))


class RawWS:
    """A bare WebSocket JSON-RPC client that sees every message in the order the node sent it."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.ids = iter(range(1, 10**9))

    async def send(self, payload: Any) -> None:
        await self.ws.send_message(json.dumps(payload))

    async def recv(self) -> Any:
        with trio.fail_after(TIMEOUT):
            return json.loads(await self.ws.get_message())

    async def call(self, method: str, *params: Any) -> tuple[Any, list[Any]]:
        """Send one request; return its response and the pushes that arrived before it."""
        rid = next(self.ids)
        await self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)})
        pushes = []
        while True:
            message = await self.recv()
            if isinstance(message, dict) and message.get("id") == rid:
                return message, pushes
            pushes.append(message)

    async def result(self, method: str, *params: Any) -> Any:
        response, _ = await self.call(method, *params)
        assert "result" in response, response
        return response["result"]


def raw_ws(node: Node, **kwargs: Any) -> Any:
    return trio_websocket.open_websocket_url(ws_url(node.rpc_urls[0]), **kwargs)


async def test_same_methods_and_batches_over_websocket(live_node: LiveNode) -> None:
    async with raw_ws(live_node.node) as ws:
        c = RawWS(ws)
        assert await c.result("qnx_chainId") == CHAIN
        status = await c.result("qnx_status")
        assert status["height"] == live_node.node.chain.head.height
        await c.send([{"jsonrpc": "2.0", "id": "a", "method": "qnx_chainId"},
                      {"jsonrpc": "2.0", "method": "qnx_chainId"},  # a notification: no response
                      {"jsonrpc": "2.0", "id": "b", "method": "qnx_nope"}])
        batch = await c.recv()
        assert [r["id"] for r in batch] == ["a", "b"]
        assert batch[0]["result"] == CHAIN and batch[1]["error"]["code"] == -32601
        await ws.send_message("{not json")
        assert (await c.recv())["error"]["code"] == -32700
        await c.send([])
        assert (await c.recv())["error"]["code"] == -32600
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "qnx_chainId"}).encode())  # binary
        assert (await c.recv()) == {"jsonrpc": "2.0", "id": 9, "result": CHAIN}
    # over HTTP the subscription methods answer a clear error
    for method, params in (("qnx_subscribe", ["newHeads"]), ("qnx_unsubscribe", ["0x1"])):
        body = (await live_node.rpc(method, *params)).json()
        assert body["error"]["code"] == -32601 and "WebSocket" in body["error"]["message"]


async def test_new_heads_arrive_in_height_order(nursery: trio.Nursery) -> None:
    node = await ticking_node(nursery)
    client = AsyncClient(node.rpc_urls[0] + "/")
    heads = []
    async with client.subscribe("newHeads") as sub:
        async for head in sub:
            heads.append(head)
            if len(heads) == 8:
                break
    heights = [h["height"] for h in heads]
    assert heights == list(range(heights[0], heights[0] + 8))
    for head in heads[:3]:  # the header JSON of qnx_getBlockByNumber
        assert (await client.call("qnx_getBlockByNumber", head["height"], False))["header"] == head
    await client.aclose()


async def test_subscribe_response_comes_before_its_pushes(nursery: trio.Nursery) -> None:
    node = await ticking_node(nursery)
    async with raw_ws(node) as ws:
        c = RawWS(ws)
        await poll_until(lambda: node.chain.head.height >= 2, what="blocks committed")
        for _ in range(5):
            response, pushes = await c.call("qnx_subscribe", "newHeads")
            sid = response["result"]
            assert all(p["params"]["subscription"] != sid for p in pushes)


async def test_events_filters_match_and_others_do_not_arrive(live_node: LiveNode) -> None:
    node = live_node.node
    client = AsyncClient(live_node.url)
    owner, alice, bob = KeyPair.generate(), KeyPair.generate(ED25519), KeyPair.generate(ED25519)
    receipt = await client.send_transaction(deploy(owner), timeout=TIMEOUT)
    token = receipt["output"][0]
    await client.send_transaction(sign_transaction(owner, CHAIN, 1, [Call(bytes.fromhex(token[2:]), "mint",
                                                                          (owner.address, 10**9))]))
    async with raw_ws(node) as ws:
        c = RawWS(ws)
        to_alice = await c.result("qnx_subscribe", "events",
                                  {"contract": token, "name": "Transfer", "indexed": {"to": hexb(alice.address)}})
        to_bob = await c.result("qnx_subscribe", "events", {"indexed": [None, [hexb(bob.address), "0x" + "11" * 20]]})
        approvals = await c.result("qnx_subscribe", "events", {"name": "Approval"})
        other_token = await c.result("qnx_subscribe", "events", {"contract": "0x" + "22" * 20})
        tx1 = sign_transaction(owner, CHAIN, 2, [transfer_call(bytes.fromhex(token[2:]), alice.address, 5)])
        tx2 = sign_transaction(owner, CHAIN, 3, [transfer_call(bytes.fromhex(token[2:]), bob.address, 7)])
        pushes: list[Any] = []
        for tx in (tx1, tx2):
            response, early = await c.call("qnx_sendRawTransactionAndWait", raw(tx), TIMEOUT)
            assert response["result"]["status"] == "success"
            pushes += early
        while len(pushes) < 2:  # the pushes arrive in commit order: tx1's event before tx2's
            message = await c.recv()
            if message.get("method") == "qnx_subscription":
                pushes.append(message)
        assert [p["params"]["subscription"] for p in pushes] == [to_alice, to_bob]
        first, second = (p["params"]["result"] for p in pushes)
        r1 = await c.result("qnx_getTransactionReceipt", hexb(tx1.hash))
        assert first == {**r1["events"][0], "txHash": hexb(tx1.hash), "blockHeight": r1["blockHeight"],
                         "blockHash": r1["blockHash"], "index": r1["index"], "eventIndex": 0}
        assert second["txHash"] == hexb(tx2.hash) and second["data"] == ["7"]
        # nothing else is queued: the unsubscribe responses come next, with no push before them
        for sid in (approvals, other_token, to_alice, to_bob):
            response, early = await c.call("qnx_unsubscribe", sid)
            assert response["result"] is True and early == []
        # bad filters
        for bad in ({"indexed": {"nobody": "0x00"}}, {"contract": "0x12"}, {"topics": []}, "x"):
            response, _ = await c.call("qnx_subscribe", "events", bad)
            assert response["error"]["code"] == -32602, bad
    await client.aclose()


async def test_tx_status_admitted_committed_and_dropped(live_node: LiveNode) -> None:
    client = AsyncClient(live_node.url)
    key = KeyPair.generate()
    tx = deploy(key)
    async with client.websocket() as ws, ws.subscribe("txStatus", hexb(tx.hash)) as sub:
        assert await client.call("qnx_sendRawTransaction", raw(tx)) == hexb(tx.hash)
        assert await sub.next(TIMEOUT) == {"status": "admitted", "txHash": hexb(tx.hash)}
        committed = await sub.next(TIMEOUT)
        assert committed["status"] == "committed"
        assert committed["receipt"] == await client.call("qnx_getTransactionReceipt", hexb(tx.hash))
        # subscribing once it is committed: the committed push comes at once
        async with ws.subscribe("txStatus", hexb(tx.hash)) as late:
            assert (await late.next(TIMEOUT))["receipt"] == committed["receipt"]
        # a held-back transaction (nonce gap) replaced by another of the same nonce is dropped
        held = sign_transaction(key, CHAIN, 5, [transfer_call(b"\x01" * 20, key.address, 1)])
        other = sign_transaction(key, CHAIN, 5, [transfer_call(b"\x01" * 20, key.address, 2)])
        await client.call("qnx_sendRawTransaction", raw(held))
        async with ws.subscribe("txStatus", hexb(held.hash)) as watch:
            assert (await watch.next(TIMEOUT))["status"] == "admitted"  # already pending: pushed at once
            await client.call("qnx_sendRawTransaction", raw(other))
            dropped = await watch.next(TIMEOUT)
            assert dropped["status"] == "dropped" and "replaced" in dropped["reason"]
        async with ws.subscribe("txStatus", hexb(held.hash)) as again:  # known dropped: pushed at once
            assert (await again.next(TIMEOUT))["status"] == "dropped"
        with pytest.raises(RPCError) as bad:
            async with ws.subscribe("txStatus", "0x1234"):
                pass
        assert bad.value.code == -32602
    await client.aclose()


async def test_unsubscribe_stops_pushes(nursery: trio.Nursery) -> None:
    node = await ticking_node(nursery)
    async with raw_ws(node) as ws:
        c = RawWS(ws)
        gone = await c.result("qnx_subscribe", "newHeads")
        clock = await c.result("qnx_subscribe", "newHeads")
        seen = 0
        while seen < 2:
            message = await c.recv()
            seen += message["params"]["subscription"] == gone
        assert await c.result("qnx_unsubscribe", gone) is True
        ticks = 0
        while ticks < 5:  # five more heads of the other subscription, none of the ended one
            message = await c.recv()
            assert message["params"]["subscription"] == clock
            ticks += 1
        response, _ = await c.call("qnx_unsubscribe", gone)
        assert response["error"]["code"] == -32001
    assert len(node.pubsub) == 0  # the connection closed: its subscriptions are gone


async def small_window_ws(nursery: trio.Nursery, node: Node) -> trio_websocket.WebSocketConnection:
    """A WebSocket to ``node`` whose TCP receive buffer is 4 KiB and whose client queues one message:
    once the test stops reading, the node's writes to it soon block (TCP flow control)."""
    port = int(node.rpc_urls[0].rsplit(":", 1)[1])
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    return await trio_websocket.wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/ws",
                                                   message_queue_size=1)


async def test_slow_subscriber_is_cut_off_while_the_node_keeps_committing(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, RPCSection(host="127.0.0.1", port=0, ws_queue_size=32,
                                                     max_subscriptions_per_connection=16),
                                 ConsensusSection(block_interval_ms=50, empty_block_interval_ms=50))
    client = AsyncClient(node.rpc_urls[0] + "/")
    slow = await small_window_ws(nursery, node)
    async with client.websocket() as fast:
        c = RawWS(slow)
        for _ in range(16):  # 16 pushes of about 600 bytes per block, and the test stops reading
            await c.result("qnx_subscribe", "newHeads")
        async with fast.subscribe("newHeads") as heads:
            first = await heads.next(TIMEOUT)
            await poll_until(lambda: len(node.pubsub) == 1, what="the slow client is cut off", timeout=TIMEOUT)
            last, target = first["height"], node.chain.head.height + 5
            while last < target:  # the node keeps committing and the fast subscriber keeps up, in order
                head = await heads.next(TIMEOUT)
                assert head["height"] == last + 1
                last = head["height"]
    with trio.fail_after(TIMEOUT):  # reading again: the queued pushes, then the close frame
        while True:
            try:
                await slow.get_message()
            except trio_websocket.ConnectionClosed:
                break
    assert slow.closed.code == 1008 and "too slow" in slow.closed.reason
    await client.aclose()


@pytest.fixture
def restore_rpc_log_level() -> Iterator[None]:
    """Put logger qenex.rpc back as it was (admin_setLogLevel changes it for the whole process)."""
    logger = logging.getLogger("qenex.rpc")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("restore_rpc_log_level")
async def test_discover_lists_every_method_and_each_answers(nursery: trio.Nursery) -> None:
    """Fetch rpc.discover and call every method it lists with valid params: none answers an error."""
    node = await start_solo_node(nursery, RPCSection(host="127.0.0.1", port=0, admin_enabled=True,
                                                     admin_token="s3cret"))
    client = AsyncClient(node.rpc_urls[0] + "/", token="s3cret")
    owner, alice = KeyPair.generate(), KeyPair.generate(ED25519)
    receipt = await client.send_transaction(deploy(owner), timeout=TIMEOUT)
    token = receipt["output"][0]
    await client.send_transaction(sign_transaction(owner, CHAIN, 1, [Call(bytes.fromhex(token[2:]), "mint",
                                                                          (owner.address, 10**9))]))
    doc = await client.call("rpc.discover")
    assert doc["openrpc"] == "1.2.6" and doc["info"]["title"]
    names = [m["name"] for m in doc["methods"]]
    transfer = sign_transaction(owner, CHAIN, 2, [transfer_call(bytes.fromhex(token[2:]), alice.address, 3)])
    who, tok = hexb(owner.address), token
    balance_of = {"to": tok, "method": "balanceOf", "args": [who]}
    async with client.websocket() as ws:
        sub_id = await ws.call("qnx_subscribe", "newHeads")
        params: dict[str, list[Any]] = {  # called in this order
            "rpc.discover": [], "qnx_chainId": [], "qnx_status": [], "qnx_validators": [], "qnx_getEvidence": [],
            "qnx_sendRawTransaction": [raw(transfer)],
            "qnx_sendRawTransactionAndWait": [raw(transfer), TIMEOUT],
            "qnx_getTransaction": [hexb(transfer.hash)], "qnx_getTransactionReceipt": [hexb(transfer.hash)],
            "qnx_getBlockByNumber": ["latest", True], "qnx_getBlockByHash": [receipt["blockHash"], False],
            "qnx_getNonce": [who], "qnx_getBalance": [who, tok, "latest"], "qnx_getToken": [tok],
            "qnx_getPool": [tok, "0x" + "33" * 20], "qnx_call": [balance_of, 1],
            "qnx_estimateGas": [{"from": who, "to": tok, "method": "transfer", "args": [hexb(alice.address), 1]}],
            "qnx_getProof": [tok, ["0x" + b"supply".hex()]],
            "qnx_subscribe": ["events", {"contract": tok}], "qnx_unsubscribe": [sub_id],
            "admin_peers": [], "admin_flushMempool": [], "admin_setLogLevel": ["qenex.rpc", "INFO"],
        }
        assert set(names) == set(params), "a method was added: give it params here"
        listed = {m["name"]: m for m in doc["methods"]}
        for name, args in params.items():
            method = listed[name]
            required = [p for p in method["params"] if p["required"]]
            assert len(required) <= len(args) <= len(method["params"]), name
            assert method["result"]["schema"] is not None and method["summary"], name
            result = await ws.call(name, *args)  # raises RPCError on an error answer
            assert result is not None or name == "qnx_getPool", name  # no pool of these tokens: null
    await client.aclose()
    # without admin_enabled the admin methods are neither listed nor served
    plain = await start_solo_node(nursery)
    async with httpx.AsyncClient() as http:
        body = (await http.post(plain.rpc_urls[0] + "/", json={"jsonrpc": "2.0", "id": 1,
                                                                "method": "rpc.discover"})).json()
    listed = {m["name"] for m in body["result"]["methods"]}
    assert "qnx_subscribe" in listed and not listed & {"admin_peers", "admin_flushMempool", "admin_setLogLevel"}


async def drain(sub: AsyncIterator[Any]) -> None:
    async for _ in sub:
        pass


async def test_the_sdk_reports_a_cut_off(nursery: trio.Nursery) -> None:
    node = await ticking_node(nursery)
    client = AsyncClient(node.rpc_urls[0] + "/")
    async with client.subscribe("newHeads") as heads:
        await heads.next(TIMEOUT)
        (sub,) = node.pubsub._heads.values()
        sub.owner.cut_off("testing")  # what a full queue does
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosedByNode) as closed:
            await drain(heads)  # the pushes already queued, then the close
    assert closed.value.code == 1008 and closed.value.reason == "testing"
    await client.aclose()


# --- the hub and filters, without a node ---------------------------------------------------------------


class Recorder:
    """A ``pubsub.Subscriber`` that keeps what it gets, with room for ``room`` batches."""

    def __init__(self, room: int = 100) -> None:
        self.got: list[tuple[str, Any]] = []
        self.room = room
        self.cut: str | None = None

    def deliver(self, subscription: str, results: list[Any]) -> bool:
        if self.cut is not None:
            return False
        if self.room == 0:
            self.cut_off("full")
            return False
        self.room -= 1
        self.got += [(subscription, r) for r in results]
        return True

    def cut_off(self, reason: str) -> None:
        self.cut = reason


def test_event_filters() -> None:
    token, alice, bob = b"\x01" * 20, b"\x0a" * 20, b"\x0b" * 20
    transfer = Event(Address(token), "Transfer", (alice, bob), (5,))
    approval = Event(Address(token), "Approval", (alice, bob), (5,))
    assert EventFilter.parse({}).matches(transfer)
    assert EventFilter.parse({"name": "Transfer", "indexed": {"to": hexb(bob)}}).matches(transfer)
    assert not EventFilter.parse({"name": "Transfer", "indexed": {"to": hexb(alice)}}).matches(transfer)
    assert EventFilter.parse({"indexed": {"1": [hexb(alice), hexb(bob).upper().replace("0X", "0x")]}}).matches(
        transfer)
    assert EventFilter.parse({"indexed": [None, None]}).matches(transfer)
    assert not EventFilter.parse({"indexed": [None, None, None, 1]}).matches(transfer)  # fewer topics
    assert not EventFilter.parse({"contract": hexb(bob)}).matches(transfer)
    assert not EventFilter.parse({"name": "Transfer"}).matches(approval)
    assert EventFilter.parse({"name": "Approval", "indexed": {"spender": hexb(bob)}}).matches(approval)
    numbers = Event(Address(token), "Custom", (7, "x"), ())
    assert EventFilter.parse({"indexed": [7, "x"]}).matches(numbers)
    assert EventFilter.parse({"indexed": [{"int": "7"}]}).matches(numbers)
    assert not EventFilter.parse({"indexed": ["7x"]}).matches(numbers)
    for bad in ({"indexed": {"from": "0x00"}}, {"indexed": "x"}, {"indexed": {"99": 1}}, {"extra": 1},
                {"indexed": [[]]}, {"name": 5}, {"indexed": [1.5]}):
        with pytest.raises(RPCError) as err:
            EventFilter.parse(bad)
        assert err.value.code == -32602, bad


def test_hub_buffers_until_active_keeps_order_and_forgets() -> None:
    hub = Hub()
    assert len(hub) == 0
    hub.tx_admitted(Hash32(b"\x00" * 32))  # nobody listens: nothing happens
    rec = Recorder()
    tx_hash = Hash32(b"\x05" * 32)
    sub = Subscription(hub.new_id(), "txStatus", rec, tx_hash=tx_hash, max_buffered=2)
    hub.add(sub)
    hub.tx_admitted(tx_hash)
    hub.tx_admitted(Hash32(b"\x06" * 32))  # another transaction: not for this subscription
    assert rec.got == []  # buffered until the subscribe response is out
    sub.activate()
    hub.tx_dropped(tx_hash, "replaced")
    assert [r["status"] for _, r in rec.got] == ["admitted", "dropped"]
    assert hub.remove(sub) and not hub.remove(sub) and len(hub) == 0
    hub.tx_admitted(tx_hash)
    assert len(rec.got) == 2
    lagging = Recorder()
    waiting = Subscription(hub.new_id(), "txStatus", lagging, tx_hash=tx_hash, max_buffered=2)
    hub.add(waiting)
    for _ in range(3):  # never activated, more than it may buffer: cut off
        hub.tx_admitted(tx_hash)
    assert lagging.cut is not None and lagging.got == []


def test_openrpc_params_are_the_served_params() -> None:
    """rpc.discover describes each method with the param names and required count the server uses."""
    keys = NodeKeys(KeyPair.generate(ED25519), KeyPair.generate(ED25519))
    node = Node(config=NodeConfig(rpc=RPCSection(admin_enabled=True)), store=MemoryStore(), node_key=keys.node,
                genesis=Genesis(CHAIN, 1_700_000_000_000, (validator_entry("solo", keys),)),
                validator_key=keys.validator)
    app = RPCApp(node)
    served = {**app.methods, **app.context_methods}
    assert set(served) == set(SPECS)
    for name, (names, required, _) in served.items():
        params = SPECS[name].params
        assert tuple(p.name for p in params) == names, name
        assert [p.required for p in params] == [i < required for i in range(len(names))], name
