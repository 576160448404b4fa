"""Limits, CORS and admin methods of the JSON-RPC listener, and malformed input changing nothing.

Every limit answers -32005 (never a crash or a hang): connections, rate per client IP, subscriptions
per connection, WebSocket message size, batch size. The rate limiter is unit-tested on an injected
clock; the live nodes listen on 127.0.0.1 only (127.0.0.2 stands for a second client IP).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.keys import KeyPair
from crypto.signatures import ED25519
from node.config import NodeConfig, RPCSection, load_config, render_config
from node.exceptions import ConfigError
from node.node import Node
from node.rpc.client import AsyncClient, sign_transaction, transfer_call, ws_url
from node.rpc.errors import RPCError
from node.rpc.limits import RateLimiter, RequestBucket
from node.rpc.openrpc import SPECS
from tests.conftest import LiveNode, poll_until, start_solo_node

CHAIN = "qenex-test"
TIMEOUT = 30.0


def rpc_section(**overrides: Any) -> RPCSection:
    return RPCSection(host="127.0.0.1", port=0, max_body_bytes=64 * 1024, max_batch=10, **overrides)


def call(method: str, *params: Any, rid: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)}


def url_of(node: Node) -> str:
    return node.rpc_urls[0] + "/"


# --- the rate limiter, on a clock the test moves ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = RequestBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token comes back every 0.5 s
    assert bucket.take(0.25) == pytest.approx(0.25)  # a refused call costs nothing
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.tokens(100.0) == 3.0  # never more than the burst
    assert bucket.take(100.0) == 0.0 and bucket.tokens(100.0) == 2.0
    assert bucket.take(50.0) == 0.0 and bucket.tokens(50.0) == 1.0  # a clock going back refills nothing
    assert bucket.take(100.0, cost=4) == math.inf  # more than the burst: never
    with pytest.raises(ValueError, match="rate"):
        RequestBucket(rate=0.0, burst=1, now=0.0)


def test_rate_limiter_keeps_one_bucket_per_client_and_forgets_idle_ones() -> None:
    clock = Clock()
    limiter = RateLimiter[str](1.0, 2, clock, max_keys=2)
    assert limiter.enabled
    assert [limiter.check("a"), limiter.check("a")] == [0.0, 0.0]
    assert limiter.check("a") == pytest.approx(1.0)
    assert limiter.check("b") == 0.0  # another client has its own bucket
    clock.now += 10  # "a" and "b" are full again: forgotten first when a third client comes
    assert limiter.check("c") == 0.0 and len(limiter) <= 2
    clock.now += 1.0
    assert limiter.check("a") == 0.0
    off = RateLimiter[str](0.0, 1, clock)
    assert not off.enabled and all(off.check("x") == 0.0 for _ in range(1000)) and len(off) == 0
    with pytest.raises(ValueError, match="rate"):
        RateLimiter[str](-1.0, 1, clock)


def test_config_lists_every_rpc_option_and_checks_them(tmp_path: Any) -> None:
    text = render_config(NodeConfig())
    for option in ("max_connections", "requests_per_second", "burst", "max_subscriptions_per_connection",
                   "ws_queue_size", "cors_origins", "admin_enabled", "admin_token"):
        assert f"\n{option} = " in text, option
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert load_config(path).rpc == RPCSection()
    path.write_text(text.replace('cors_origins = []', 'cors_origins = ["https://a.example", "*"]')
                    .replace("requests_per_second = 0.0", "requests_per_second = 5"))
    rpc = load_config(path).rpc
    assert rpc.cors_origins == ("https://a.example", "*") and rpc.requests_per_second == 5.0
    path.write_text(text.replace("burst = 200", "burst = 0"))
    with pytest.raises(ConfigError, match="burst"):
        load_config(path)


# --- limits on a live node ---------------------------------------------------------------------------


async def test_rate_limit_per_client_ip(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, rpc_section(requests_per_second=0.5, burst=3))
    url = url_of(node)
    async with httpx.AsyncClient() as http:
        for _ in range(3):
            assert (await http.post(url, json=call("qnx_chainId"))).json()["result"] == CHAIN
        r = await http.post(url, json=call("qnx_chainId"))
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        err = r.json()["error"]
        assert err["code"] == -32005 and err["data"]["limit"] == 0.5 and err["data"]["burst"] == 3
        assert 0 < err["data"]["retryAfterSeconds"] <= 2
        r = await http.post(url, json=[call("qnx_chainId", rid=1), call("qnx_chainId", rid=2)])
        assert r.status_code == 200 and [x["error"]["code"] for x in r.json()] == [-32005, -32005]
        assert (await http.get(url + "health")).status_code == 200  # health and metrics are not counted
    async with trio_websocket.open_websocket_url(ws_url(url)) as ws:  # the same bucket over WebSocket
        await ws.send_message(json.dumps(call("qnx_chainId")))
        assert json.loads(await ws.get_message())["error"]["code"] == -32005
    other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")  # another client IP: its own bucket
    async with httpx.AsyncClient(transport=other) as http:
        assert (await http.post(url, json=call("qnx_chainId"))).json()["result"] == CHAIN


async def test_connection_limit(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, rpc_section(max_connections=2))
    client = AsyncClient(url_of(node))
    async with httpx.AsyncClient() as http, client.websocket() as first:
        async with client.websocket() as second:
            assert await second.call("qnx_chainId") == CHAIN
            r = await http.post(url_of(node), json=call("qnx_chainId"))
            assert r.status_code == 503 and r.json()["error"]["code"] == -32005
            assert r.json()["error"]["data"] == {"limit": 2}
            with pytest.raises(RPCError) as refused:  # the handshake is refused with the same error
                async with client.websocket():
                    pass
            assert refused.value.code == -32005
        assert await first.call("qnx_chainId") == CHAIN

        async def http_served() -> bool:
            return (await http.post(url_of(node), json=call("qnx_chainId"))).status_code == 200

        await poll_until(http_served, what="the closed WebSocket frees its slot", timeout=TIMEOUT)
    await client.aclose()


async def test_subscription_message_and_batch_limits_over_websocket(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, RPCSection(host="127.0.0.1", port=0, max_body_bytes=2048, max_batch=3,
                                                     max_subscriptions_per_connection=2, ws_queue_size=8))
    async with trio_websocket.open_websocket_url(ws_url(url_of(node))) as ws:

        async def ask(payload: Any) -> Any:
            await ws.send_message(payload if isinstance(payload, str) else json.dumps(payload))
            with trio.fail_after(TIMEOUT):
                return json.loads(await ws.get_message())

        for i in range(2):
            assert (await ask(call("qnx_subscribe", "newHeads", rid=i)))["result"].startswith("0x")
        err = (await ask(call("qnx_subscribe", "newHeads")))["error"]
        assert err["code"] == -32005 and err["data"] == {"limit": 2}
        big = json.dumps(call("qnx_getNonce", "0x" + "00" * 1100))
        assert 2048 < len(big) <= 4096
        err = (await ask(big))["error"]
        assert err["code"] == -32005 and err["data"] == {"limit": 2048}
        err = (await ask([call("qnx_chainId", rid=i) for i in range(4)]))["error"]
        assert err["code"] == -32005 and err["data"] == {"limit": 3, "size": 4}
        assert (await ask(call("qnx_chainId")))["result"] == CHAIN  # the connection still serves
        await ws.send_message("x" * 5000)  # beyond twice the limit hypercorn closes: 1009 message too big
        with trio.fail_after(TIMEOUT), pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        assert ws.closed.code == 1009


# --- CORS ---------------------------------------------------------------------------------------------


async def test_cors_headers_and_preflight(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, rpc_section(cors_origins=("https://wallet.example",)))
    url = url_of(node)
    allowed, other = {"origin": "https://wallet.example"}, {"origin": "https://evil.example"}
    async with httpx.AsyncClient() as http:
        r = await http.post(url, json=call("qnx_chainId"), headers=allowed)
        assert r.headers["access-control-allow-origin"] == "https://wallet.example" and "Origin" in r.headers["vary"]
        r = await http.post(url, json=call("qnx_chainId"), headers=other)
        assert r.json()["result"] == CHAIN and "access-control-allow-origin" not in r.headers
        preflight = {**allowed, "access-control-request-method": "POST",
                     "access-control-request-headers": "content-type"}
        r = await http.options(url, headers=preflight)
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://wallet.example"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "content-type" in r.headers["access-control-allow-headers"]
        assert int(r.headers["access-control-max-age"]) > 0
        r = await http.options(url, headers={**preflight, **other})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        assert (await http.get(url + "health", headers=allowed)).headers["access-control-allow-origin"]
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:  # a WebSocket from another site
        async with trio_websocket.open_websocket_url(ws_url(url), extra_headers=[(b"origin", b"https://evil.example")]):
            pass
    assert rejected.value.status_code == 403
    async with trio_websocket.open_websocket_url(ws_url(url), extra_headers=[(b"origin", b"https://wallet.example")]):
        pass
    anyone = await start_solo_node(nursery, rpc_section(cors_origins=("*",)))
    async with httpx.AsyncClient() as http:
        r = await http.post(url_of(anyone), json=call("qnx_chainId"), headers=other)
        assert r.headers["access-control-allow-origin"] == "*"


async def test_no_cors_headers_by_default(live_node: LiveNode) -> None:
    r = await live_node.http.post(live_node.url, json=call("qnx_chainId"), headers={"origin": "https://a.example"})
    assert "access-control-allow-origin" not in r.headers


# --- admin methods -----------------------------------------------------------------------------------


@pytest.fixture
def restore_p2p_log_level() -> Iterator[None]:
    logger = logging.getLogger("qenex.p2p")
    level = logger.level
    yield
    logger.setLevel(level)


async def test_admin_methods_are_not_served_by_default(live_node: LiveNode) -> None:
    for method in ("admin_peers", "admin_flushMempool", "admin_setLogLevel"):
        r = await live_node.http.post(live_node.url, json=call(method), headers={"authorization": "Bearer x"})
        assert r.json()["error"]["code"] == -32601, method


@pytest.mark.usefixtures("restore_p2p_log_level")
async def test_admin_methods_need_the_token(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, rpc_section(admin_enabled=True, admin_token="s3cret"))
    url = url_of(node)
    async with httpx.AsyncClient() as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            r = await http.post(url, json=call("admin_peers"), headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"] == {"code": -32000, "message": "invalid input", "data": "unauthorized"}
        r = await http.post(url, json=[call("admin_peers"), call("qnx_chainId", rid=2)])  # a batch: per item
        assert r.status_code == 200 and r.json()[0]["error"]["data"] == "unauthorized"
        assert r.json()[1]["result"] == CHAIN
    admin = AsyncClient(url, token="s3cret")
    assert await admin.call("admin_peers") == []  # a single validator has no peers
    answer = await admin.call("admin_setLogLevel", "qenex.p2p", "debug")
    assert answer["level"] == "DEBUG" and logging.getLogger("qenex.p2p").level == logging.DEBUG
    with pytest.raises(RPCError) as bad:
        await admin.call("admin_setLogLevel", "qenex.p2p", "LOUD")
    assert bad.value.code == -32602
    async with admin.websocket() as ws:  # the token on the WebSocket handshake
        assert await ws.call("admin_peers") == []
    async with AsyncClient(url).websocket() as ws:
        with pytest.raises(RPCError) as denied:
            await ws.call("admin_peers")
        assert denied.value.code == -32000 and denied.value.data == "unauthorized"
    await admin.aclose()


async def test_flush_mempool_drops_everything_and_tells_who_waits(nursery: trio.Nursery) -> None:
    node = await start_solo_node(nursery, rpc_section(admin_enabled=True))  # no token: loopback clients only
    client = AsyncClient(url_of(node))
    key = KeyPair.generate(ED25519)
    held = [sign_transaction(key, CHAIN, n, [transfer_call(b"\x01" * 20, key.address, 1)], 50_000)
            for n in (3, 4)]  # behind a nonce gap: they stay pending
    for tx in held:
        await client.call("qnx_sendRawTransaction", "0x" + tx.encode().hex())
    assert (await client.call("qnx_status"))["mempool"] == 2
    answers: list[Any] = []

    async def wait_for_it() -> None:
        try:
            await client.call("qnx_sendRawTransactionAndWait", "0x" + held[0].encode().hex(), TIMEOUT)
        except RPCError as err:
            answers.append(err)

    async with client.websocket() as ws, ws.subscribe("txStatus", "0x" + held[1].hash.hex()) as sub:
        assert (await sub.next(TIMEOUT))["status"] == "admitted"
        async with trio.open_nursery() as waiting:
            waiting.start_soon(wait_for_it)
            await poll_until(lambda: held[0].hash in node._waiters, what="the client waits", timeout=TIMEOUT)
            assert await client.call("admin_flushMempool") == {"dropped": 2}
        dropped = await sub.next(TIMEOUT)
        assert dropped["status"] == "dropped" and "admin_flushMempool" in dropped["reason"]
    assert answers[0].code == -32003 and "admin_flushMempool" in answers[0].data["reason"]
    assert (await client.call("qnx_status"))["mempool"] == 0 and len(node.mempool) == 0
    await client.aclose()


# --- malformed input changes nothing -----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
BAD_HEX = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEFxg ", max_size=70).map(lambda t: "0x" + t),
    st.binary(max_size=40).map(lambda b: "0x" + b.hex()),
    st.binary(max_size=40).map(lambda b: b.hex()),
)
BAD_TX = st.binary(max_size=400).map(lambda b: "0x" + b.hex())
METHODS = st.sampled_from(sorted(SPECS)) | st.text(max_size=24)
REQUEST = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2, None]),
     "method": METHODS},
    optional={"id": st.none() | st.integers() | st.text(max_size=6) | st.booleans() | st.lists(st.integers()),
              "params": JSON | st.lists(BAD_HEX | BAD_TX | JSON | st.sampled_from(["latest", "earliest", -1]),
                                        max_size=4)},
)
PAYLOAD = st.one_of(
    st.binary(max_size=300),
    REQUEST.map(lambda r: json.dumps(r).encode()),
    st.lists(REQUEST | JSON, max_size=12).map(lambda r: json.dumps(r).encode()),
    JSON.map(lambda j: json.dumps(j).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n),  # deep nesting
)
ERROR_CODES = {-32700, -32600, -32601, -32602, -32603, -32000, -32001, -32003, -32005, 3}


def check_response(body: Any) -> None:
    """A response (or batch of them) is well-formed JSON-RPC 2.0, errors with codes of shared/RPC.md."""
    for item in body if isinstance(body, list) else [body]:
        assert item["jsonrpc"] == "2.0" and "id" in item
        assert ("result" in item) != ("error" in item), item
        if "error" in item:
            assert item["error"]["code"] in ERROR_CODES, item
            assert item["error"]["code"] != -32603, item  # bad input is never an internal error


async def test_malformed_requests_never_change_state(live_node: LiveNode) -> None:
    node = live_node.node
    before = (await live_node.rpc("qnx_status")).json()["result"]
    sentinel = iter(range(10**9))

    async def over_http(payload: bytes) -> None:
        r = await live_node.http.post(live_node.url, content=payload, headers={"content-type": "application/json"})
        assert r.status_code in (200, 204, 413), r.status_code
        if r.status_code != 204:
            check_response(r.json())

    async with trio_websocket.open_websocket_url(ws_url(live_node.url), message_queue_size=64) as ws:

        async def over_ws(payload: bytes) -> None:
            try:
                await ws.send_message(payload.decode())
            except UnicodeDecodeError:
                await ws.send_message(payload)
            mark = f"sentinel-{next(sentinel)}"
            await ws.send_message(json.dumps(call("qnx_chainId", rid=mark)))
            with trio.fail_after(TIMEOUT):
                while True:
                    body = json.loads(await ws.get_message())
                    if isinstance(body, dict) and body.get("method") == "qnx_subscription":
                        continue
                    check_response(body)
                    if isinstance(body, dict) and body.get("id") == mark:
                        return

        def state() -> tuple[int, bytes, int]:
            head = node.chain.head
            return head.height, head.state_root, len(node.mempool)

        start = state()

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                  database=None)
        @given(payload=PAYLOAD)
        def send_garbage(payload: bytes) -> None:
            trio.from_thread.run(over_http, payload)
            trio.from_thread.run(over_ws, payload)
            assert trio.from_thread.run_sync(state) == start

        await trio.to_thread.run_sync(send_garbage)
    after = (await live_node.rpc("qnx_status")).json()["result"]
    assert (after["stateRoot"], after["height"], after["mempool"]) == (
        before["stateRoot"], before["height"], before["mempool"])
