"""The JSON-RPC 2.0 server of shared/RPC.md: a plain ASGI app served by hypercorn on Trio.

HTTP ``POST /`` takes a request or a batch (JSON-RPC 2.0 §6: an empty array or invalid JSON gives
one error with ``id: null``; notifications get no response; a batch of only notifications gets an
empty 204). ``GET /health`` is 200 while the node runs; ``GET /ready`` is 200 once it is
connected to a quorum and not behind its peers; ``GET /metrics`` gives the Prometheus text format
(node/metrics.py). Every error carries the code of shared/RPC.md and, in ``data``, the detail.

WebSocket ``/ws`` (RFC 6455, ``node.rpc.ws``) serves the same methods and batches, one JSON text (or
binary) message per request or batch, plus ``qnx_subscribe`` / ``qnx_unsubscribe`` (``node.rpc.pubsub``;
over HTTP they answer -32601, as geth's "notifications not supported").

Limits (``[rpc]``, each answered with -32005 and the limit in ``data``, never by a hang):

* body bytes (HTTP 413) and WebSocket message bytes (``max_body_bytes``; hypercorn itself closes a
  connection with 1009 for a message over twice that), batch size (``max_batch``);
* ``max_connections``: HTTP requests in progress plus open WebSockets (ASGI shows requests, not TCP
  connections; keep-alive connections that are idle cost nothing here) -> HTTP 503, or the WebSocket
  handshake refused with 503 and the same JSON body;
* ``requests_per_second`` / ``burst`` per client IP (``limits.RateLimiter``), each call of a batch
  counted -> -32005 ``{limit, burst, retryAfterSeconds}``, HTTP 429 with ``Retry-After`` for a single
  request. Opt-in (0 = unlimited, the default, as Besu and CometBFT), so local tools and benchmarks on
  127.0.0.1 are never throttled; the client IP is the TCP peer's (a proxy's ``X-Forwarded-For`` is not
  trusted);
* ``max_subscriptions_per_connection``; ``ws_queue_size`` per WebSocket (a client reading slower
  than its pushes arrive is cut off with close code 1008, see ``node.rpc.ws``).

CORS (Fetch standard): ``cors_origins`` lists the origins allowed (``"*"``: any). A request whose
``Origin`` is allowed gets ``Access-Control-Allow-Origin``; a preflight ``OPTIONS`` from an allowed
origin gets 204 with the methods (GET, POST, OPTIONS), headers (Content-Type, Authorization) and a
max age of 600 s, from another origin 403. A WebSocket handshake carrying an ``Origin`` that is not
allowed is refused with 403 (cross-site WebSocket hijacking; non-browser clients send no Origin).

Admin methods (``admin_peers``, ``admin_flushMempool``, ``admin_setLogLevel``) exist only with
``admin_enabled = true``; otherwise they answer -32601 like any unknown method, so a public listener
does not reveal them. With ``admin_token`` set, a call must carry ``Authorization: Bearer <token>``
(RFC 6750; over WebSocket, on the handshake); with it empty, only loopback clients may call them.
Otherwise: -32000 with ``data`` "unauthorized" (HTTP 401 with ``WWW-Authenticate: Bearer`` for a
single request). -32000 rather than a new code: shared/RPC.md's invalid-input code, told apart by
its data, so clients need no new code.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from contracts import gas as G
from contracts.amm import CANONICAL_FACTORY
from contracts.exceptions import Revert, TxRejected
from contracts.token import Token
from contracts.vm import BlockEnv, Overlay, code_key, nonce_key, storage_key
from crypto.exceptions import InvalidSignature
from crypto.keys import Address
from node.metrics import CONTENT_TYPE
from node.rpc import jsonfmt as J
from node.rpc.errors import (
    EXECUTION_REVERTED,
    INTERNAL_ERROR,
    INVALID_INPUT,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    TX_REJECTED,
    RateLimited,
    RPCError,
    Unauthorized,
)
from node.rpc.limits import RateLimiter
from node.rpc.openrpc import document
from node.rpc.pubsub import parse_subscribe_params
from node.rpc.ws import CallContext, WSConnection
from state.codec import Value
from state.exceptions import DecodeError
from state.types import Call, Transaction, TxBody

if TYPE_CHECKING:
    from node.node import Node
    from state.chain import ChainStore

log = logging.getLogger("qenex.rpc")

Handler = Callable[[list[Any]], Awaitable[Any]]
ContextHandler = Callable[[list[Any], CallContext], Awaitable[Any]]

ADMIN_METHODS = ("admin_peers", "admin_flushMempool", "admin_setLogLevel")
"""Methods served only with ``[rpc] admin_enabled`` (and the token, if one is set)."""
CORS_METHODS = b"GET, POST, OPTIONS"
CORS_HEADERS = b"content-type, authorization"
CORS_MAX_AGE = b"600"


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The value of request header ``name`` (lowercase), or None (the last one if repeated)."""
    value = None
    for key, v in scope.get("headers", []):
        if key == name:
            value = v
    return value


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, or 127.x mapped into IPv6)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _params(params: Any, names: tuple[str, ...], required: int) -> list[Any]:
    if params is None:
        params = []
    if isinstance(params, dict):
        params = [params.get(n) for n in names]
        while params and params[-1] is None:
            params.pop()
    if not isinstance(params, list):
        raise RPCError(INVALID_PARAMS, "params must be an array or an object")
    if not required <= len(params) <= len(names):
        raise RPCError(INVALID_PARAMS, f"expected {required}..{len(names)} params: {', '.join(names)}")
    return params + [None] * (len(names) - len(params))


class RPCApp:
    """The ASGI application; one per node (see the module docstring for transports, limits, CORS, admin).

    ``methods`` maps each method name to (param names, required count, handler of the params);
    ``context_methods`` likewise for the methods that need the caller's ``CallContext``
    (subscriptions, admin). ``node.rpc.openrpc.SPECS`` describes every one of them.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.limits = node.config.rpc
        self.rate = RateLimiter[str](self.limits.requests_per_second, self.limits.burst, trio.current_time)
        self.open_connections = 0
        """HTTP requests in progress plus WebSocket connections open (``[rpc] max_connections``)."""
        self.ws_cut_off = 0
        """WebSocket clients cut off so far for reading too slowly."""
        self._origins = frozenset(self.limits.cors_origins)
        self.methods: dict[str, tuple[tuple[str, ...], int, Handler]] = {
            "qnx_chainId": ((), 0, self.chain_id),
            "qnx_status": ((), 0, self.status),
            "qnx_validators": (("block",), 0, self.validators),
            "qnx_sendRawTransaction": (("tx",), 1, self.send_raw),
            "qnx_sendRawTransactionAndWait": (("tx", "timeoutSeconds"), 1, self.send_raw_and_wait),
            "qnx_getTransaction": (("txHash",), 1, self.get_transaction),
            "qnx_getTransactionReceipt": (("txHash",), 1, self.get_receipt),
            "qnx_getBlockByNumber": (("block", "fullTransactions"), 1, self.block_by_number),
            "qnx_getBlockByHash": (("blockHash", "fullTransactions"), 1, self.block_by_hash),
            "qnx_getNonce": (("address", "block"), 1, self.get_nonce),
            "qnx_getBalance": (("address", "token", "block"), 2, self.get_balance),
            "qnx_getToken": (("token", "block"), 1, self.get_token),
            "qnx_getPool": (("tokenA", "tokenB", "block", "factory"), 2, self.get_pool),
            "qnx_call": (("call", "block"), 1, self.call),
            "qnx_estimateGas": (("call",), 1, self.estimate_gas),
            "qnx_getProof": (("address", "storageKeys", "block"), 2, self.get_proof),
            "qnx_getEvidence": ((), 0, self.get_evidence),
            "rpc.discover": ((), 0, self.discover),
        }
        self.context_methods: dict[str, tuple[tuple[str, ...], int, ContextHandler]] = {
            "qnx_subscribe": (("kind", "argument"), 1, self.subscribe),
            "qnx_unsubscribe": (("subscriptionId",), 1, self.unsubscribe),
        }
        if self.limits.admin_enabled:
            self.context_methods.update({
                "admin_peers": ((), 0, self.admin_peers),
                "admin_flushMempool": ((), 0, self.admin_flush_mempool),
                "admin_setLogLevel": (("module", "level"), 2, self.admin_set_log_level),
            })

    # --- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI 3 entry point: HTTP, WebSocket and lifespan scopes."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        origin = _header(scope, b"origin")
        cors = self._cors_headers(origin)
        if method == "OPTIONS":
            await self._preflight(send, origin, cors)
            return
        if self.open_connections >= self.limits.max_connections:
            await self._send(send, 503, self._busy_error(), cors + [(b"retry-after", b"1")])
            return
        self.open_connections += 1
        try:
            await self._http(scope, receive, send, method, path, cors)
        finally:
            self.open_connections -= 1

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any, method: str, path: str,
                    cors: list[tuple[bytes, bytes]]) -> None:
        if method == "GET" and path == "/health":
            await self._send(send, 200, {"status": "ok", "height": self.node.chain.head.height}, cors)
        elif method == "GET" and path == "/ready":
            ready, detail = self.readiness()
            await self._send(send, 200 if ready else 503, {"ready": ready, **detail}, cors)
        elif method == "GET" and path == "/metrics":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE.encode()), *cors]})
            await send({"type": "http.response.body", "body": self.node.metrics.render()})
        elif method == "POST" and path == "/":
            body = await self._read_body(scope, receive)
            if body is None:
                err = RPCError(LIMIT_EXCEEDED, "request body too large", {"limit": self.limits.max_body_bytes})
                await self._send(send, 413, {"jsonrpc": "2.0", "id": None, "error": err.to_json()}, cors)
                return
            context = CallContext(client=self._client(scope), transport="http", admin=self._admin_allowed(scope))
            status, response = await self.handle_body(body, context)
            await self._send(send, status, response, cors + context.headers)
        else:
            await self._send(send, 404, {"error": "POST / for JSON-RPC, WebSocket /ws; GET /health, /ready, /metrics"},
                             cors)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A WebSocket handshake: refuse (path, origin, load) or accept and serve it (``WSConnection``)."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        origin = _header(scope, b"origin")
        if scope["path"] != "/ws":
            await self._deny(scope, send, 404, {"error": "WebSocket JSON-RPC is served at /ws"})
            return
        if origin is not None and not self._cors_headers(origin):
            await self._deny(scope, send, 403, {"error": "origin not allowed ([rpc] cors_origins)"})
            return
        if self.open_connections >= self.limits.max_connections:
            await self._deny(scope, send, 503, self._busy_error())
            return
        self.open_connections += 1
        try:
            context = CallContext(client=self._client(scope), transport="ws", admin=self._admin_allowed(scope))
            conn = WSConnection(self, context, queue_size=self.limits.ws_queue_size,
                                max_subscriptions=self.limits.max_subscriptions_per_connection,
                                max_message_bytes=self.limits.max_body_bytes)
            await send({"type": "websocket.accept"})
            await conn.run(receive, send)
        finally:
            self.open_connections -= 1

    @staticmethod
    async def _deny(scope: dict[str, Any], send: Any, status: int, payload: Any) -> None:
        """Refuse a WebSocket handshake with an HTTP ``status`` and JSON body (ASGI websocket denial
        response extension), or a plain 403 where the server lacks it."""
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "websocket.http.response.body", "body": json.dumps(payload).encode()})

    def _busy_error(self) -> dict[str, Any]:
        err = RPCError(LIMIT_EXCEEDED, "too many connections", {"limit": self.limits.max_connections})
        return {"jsonrpc": "2.0", "id": None, "error": err.to_json()}

    @staticmethod
    def _client(scope: dict[str, Any]) -> str:
        client = scope.get("client")
        return str(client[0]) if client else ""

    def _admin_allowed(self, scope: dict[str, Any]) -> bool:
        """Whether this request may call admin methods (see the module docstring)."""
        if not self.limits.admin_enabled:
            return False
        token = self.limits.admin_token
        if not token:
            return _is_loopback(self._client(scope))
        given = _header(scope, b"authorization") or b""
        return hmac.compare_digest(given, b"Bearer " + token.encode())

    def _cors_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """``Access-Control-Allow-Origin`` (and ``Vary``) for an allowed ``origin``, else nothing."""
        if origin is None or not self._origins:
            return []
        if "*" in self._origins:
            return [(b"access-control-allow-origin", b"*"), (b"access-control-expose-headers", b"retry-after")]
        if origin.decode("latin-1") in self._origins:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                    (b"access-control-expose-headers", b"retry-after")]
        return []

    async def _preflight(self, send: Any, origin: bytes | None, cors: list[tuple[bytes, bytes]]) -> None:
        """``OPTIONS``: a CORS preflight (Fetch §3.2) from an allowed origin gets 204 with what it may do."""
        if origin is None:
            await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", CORS_METHODS)]})
            await send({"type": "http.response.body", "body": b""})
        elif not cors:
            await self._send(send, 403, {"error": "origin not allowed ([rpc] cors_origins)"}, [(b"vary", b"Origin")])
        else:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *cors, (b"access-control-allow-methods", CORS_METHODS),
                (b"access-control-allow-headers", CORS_HEADERS), (b"access-control-max-age", CORS_MAX_AGE)]})
            await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes | None:
        limit = self.limits.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    async def _send(send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json")] if payload is not None else []
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": body})

    # --- JSON-RPC 2.0 -------------------------------------------------------------------------------

    async def handle_body(self, body: bytes, context: CallContext | None = None) -> tuple[int, Any]:
        """Process a request body (HTTP) or message (WebSocket) from the caller ``context`` (default: an
        HTTP caller without admin rights); returns (HTTP status, response JSON or None for no body).

        A single request answered with an error that has an HTTP status (429 rate limited, 401
        unauthorized) gets that status, and its headers land in ``context.headers``.
        """
        context = context if context is not None else CallContext()
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            return 200, _error(None, RPCError(PARSE_ERROR, "parse error", str(err)[:200]))
        if isinstance(request, list):
            if not request:
                return 200, _error(None, RPCError(INVALID_REQUEST, "empty batch"))
            if len(request) > self.limits.max_batch:
                return 200, _error(None, RPCError(LIMIT_EXCEEDED, "batch too large",
                                                  {"limit": self.limits.max_batch, "size": len(request)}))
            responses = []
            for item in request:
                response = await self.handle_one(item, context)
                if response is not None:
                    responses.append(response)
                # each item may verify a signature: let consensus and the other clients run between
                await trio.lowlevel.checkpoint()
            context.status = None
            context.headers.clear()
            return (200, responses) if responses else (204, None)
        response = await self.handle_one(request, context)
        return (context.status or 200, response) if response is not None else (204, None)

    async def handle_one(self, request: Any, context: CallContext | None = None) -> dict[str, Any] | None:
        """One request object; None for a notification. Charges the caller's rate limit first."""
        context = context if context is not None else CallContext()
        rid = request.get("id") if isinstance(request, dict) else None
        wait = self.rate.check(context.client)
        if wait:
            err = RateLimited(self.rate.rate, self.rate.burst, wait)
            self._note_status(context, err)
            valid_id = rid is None or (isinstance(rid, str | int) and not isinstance(rid, bool))
            return None if isinstance(request, dict) and "id" not in request else _error(rid if valid_id else None,
                                                                                         err)
        if not isinstance(request, dict):
            return _error(None, RPCError(INVALID_REQUEST, "a request is a JSON object"))
        is_notification = "id" not in request
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int | float)
                                or (isinstance(rid, float) and not math.isfinite(rid))):
            return _error(None, RPCError(INVALID_REQUEST, "id must be a string, number or null"))
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(rid, RPCError(INVALID_REQUEST, 'need "jsonrpc": "2.0" and a string "method"'))
        try:
            entry = self.methods.get(method)
            if entry is not None:
                names, required, handler = entry
                result = await handler(_params(request.get("params"), names, required))
            else:
                found = self.context_methods.get(method)
                if found is None:
                    raise RPCError(METHOD_NOT_FOUND, f"method {method[:100]!r} not found")
                if method in ADMIN_METHODS and not context.admin:
                    raise Unauthorized()
                names, required, context_handler = found
                result = await context_handler(_params(request.get("params"), names, required), context)
        except RPCError as err:
            self._note_status(context, err)
            return None if is_notification else _error(rid, err)
        except Exception as err:
            log.exception("internal error in %s", method)
            return None if is_notification else _error(rid, RPCError(INTERNAL_ERROR, "internal error", str(err)))
        return None if is_notification else {"jsonrpc": "2.0", "id": rid, "result": result}

    @staticmethod
    def _note_status(context: CallContext, err: RPCError) -> None:
        """Remember the HTTP status and headers an error asks for (used when it is the whole response)."""
        if err.http_status is None:
            return
        context.status = err.http_status
        if isinstance(err, RateLimited):
            retry = math.ceil(err.retry_after) if math.isfinite(err.retry_after) else 60
            context.headers[:] = [(b"retry-after", str(max(1, retry)).encode())]
        elif isinstance(err, Unauthorized):
            context.headers[:] = [(b"www-authenticate", b'Bearer realm="qenex-admin"')]

    # --- helpers -----------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when connected to 2f validators (a quorum with us: observers do not count, see
        ``Node.validator_peers``) and not behind any peer. Detail: ``peers`` (all connected, observers
        included), ``validatorPeers``, ``height``, ``bestPeerHeight``."""
        node = self.node
        peers = len(node.net.connected()) if node.net is not None else 0
        validator_peers = node.validator_peers()
        best = max(node.sync.peer_heights.values(), default=0)
        height = node.chain.head.height
        ready = node.started and validator_peers >= 2 * node.replica.f and height >= best - 1
        return ready, {"peers": peers, "validatorPeers": validator_peers, "height": height, "bestPeerHeight": best}

    def _latest(self, selector: Any) -> int:
        """The state version (block height) a state query's ``block`` selector names, checked to be readable.

        ``None``/``"latest"``: the head; ``"earliest"``: the oldest version not pruned yet (the node
        keeps ``[state] retention_versions`` of them); an integer: that height. -32001 outside the
        readable range (``data``: ``oldest``, ``latest``), -32602 for anything else.
        """
        state = self.node.chain.state
        head = self.node.chain.head.height
        if selector is None or selector == "latest":
            return head
        if selector == "earliest":
            return state.oldest_version
        if isinstance(selector, int) and not isinstance(selector, bool) and selector >= 0:
            if not state.oldest_version <= selector <= head:
                where = "pruned by this node" if selector < head else "not committed yet"
                raise RPCError(NOT_FOUND, f"the state at height {selector} is {where}",
                               {"oldest": state.oldest_version, "latest": head})
            return selector
        raise RPCError(INVALID_PARAMS, "block must be a non-negative integer height, 'latest' or 'earliest'")

    def _getter(self, version: int | None) -> Callable[[bytes], bytes | None]:
        state = self.node.chain.state
        if version is None or version == state.version:
            return state.get
        return lambda key: state.get(key, version)

    def _height(self, selector: Any) -> int:
        head = self.node.chain.head.height
        if selector == "latest":
            return head
        if selector == "earliest":
            return 1 if head >= 1 else 0
        if isinstance(selector, int) and not isinstance(selector, bool) and selector >= 0:
            return selector
        raise RPCError(INVALID_PARAMS, "block must be a non-negative integer height, 'latest' or 'earliest'")

    def _env(self, version: int | None = None) -> BlockEnv:
        chain = self.node.chain
        if version is None or version == chain.head.height:
            return BlockEnv(self.node.chain_id, chain.head.height, chain.head.timestamp_ms // 1000)
        block = chain.block(version)
        ms = block.header.timestamp_ms if block is not None else self.node.genesis.genesis_time_ms
        return BlockEnv(self.node.chain_id, version, ms // 1000)

    def _read(self, to: bytes, method: str, args: tuple[Value, ...], sender: bytes = b"\x00" * 20,
              version: int | None = None) -> Value:
        try:
            return self.node.vm.call_readonly(self._getter(version), self._env(version), Address(sender),
                                              Address(to), method, args)
        except Revert as err:
            raise RPCError(EXECUTION_REVERTED, "execution reverted", {"reason": err.reason}) from None

    @staticmethod
    def _raw(tx_hex: Any) -> bytes:
        if not isinstance(tx_hex, str) or not tx_hex.startswith("0x"):
            raise RPCError(INVALID_INPUT, "invalid input", "the transaction must be 0x-prefixed hex")
        try:
            return bytes.fromhex(tx_hex[2:])
        except ValueError:
            raise RPCError(INVALID_INPUT, "invalid input", "the transaction is not valid hex") from None

    def _admit(self, raw: bytes) -> Any:
        try:
            return self.node.admit(raw)
        except DecodeError as err:
            raise RPCError(INVALID_INPUT, "invalid input", f"bad encoding: {err}") from None
        except InvalidSignature as err:
            raise RPCError(INVALID_INPUT, "invalid input", f"bad signature: {err}") from None
        except TxRejected as err:
            code = INVALID_INPUT if err.reason == "wrong chain id" else TX_REJECTED
            raise RPCError(code, "transaction rejected" if code == TX_REJECTED else "invalid input",
                           {"reason": err.reason, "detail": err.detail}) from None

    def _receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        found = self.node.chain.receipt(tx_hash)
        if found is None:
            return None
        receipt, loc = found
        block = self.node.chain.block(loc.height)
        return J.receipt_json(receipt, loc.height, block.hash if block else b"", loc.index)

    # --- methods -----------------------------------------------------------------------------------

    async def chain_id(self, p: list[Any]) -> str:
        """``qnx_chainId``."""
        return self.node.chain_id

    async def status(self, p: list[Any]) -> dict[str, Any]:
        """``qnx_status``."""
        node = self.node
        head = node.chain.head
        ready, detail = self.readiness()
        return {
            "chainId": node.chain_id, "nodeId": J.hexb(node.node_key.address), "moniker": node.config.node.moniker,
            "height": head.height, "blockHash": J.hexb(head.block_hash), "stateRoot": J.hexb(head.state_root),
            "timestamp": head.timestamp_ms, "view": node.replica.view, "validators": node.n,
            "validatorIndex": node.index, "peers": detail["peers"], "syncing": head.height < detail["bestPeerHeight"],
            "mempool": len(node.mempool), "oldestStateHeight": node.chain.state.oldest_version,
            "stableCheckpoint": None if node.replica.stable_checkpoint is None else {
                "height": node.replica.stable_checkpoint.seq,
                "blockHash": J.hexb(node.replica.stable_checkpoint.block_hash),
                "signers": [c.validator for c in node.replica.stable_checkpoint.signatures],
            },
        }

    async def validators(self, p: list[Any]) -> list[dict[str, Any]]:
        """``qnx_validators``: the genesis set (it does not change in this release)."""
        from crypto.signatures import scheme_by_tag

        return [
            {"index": i, "name": v.name, "address": J.hexb(v.address), "publicKey": J.hexb(v.public_key),
             "scheme": scheme_by_tag(v.scheme).name, "nodeId": J.hexb(v.node_id)}
            for i, v in enumerate(self.node.validators)
        ]

    async def send_raw(self, p: list[Any]) -> str:
        """``qnx_sendRawTransaction``: admit to the mempool; returns the tx hash."""
        return J.hexb(self._admit(self._raw(p[0])))

    async def send_raw_and_wait(self, p: list[Any]) -> dict[str, Any]:
        """``qnx_sendRawTransactionAndWait``: admit, then return the receipt once committed."""
        timeout = 30.0 if p[1] is None else p[1]
        limit = self.limits.max_wait_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= limit:
            raise RPCError(INVALID_PARAMS, f"timeoutSeconds must be in (0, {self.limits.max_wait_seconds}]")
        raw = self._raw(p[0])
        try:
            tx_hash = Transaction.decode(raw).hash
        except DecodeError:
            tx_hash = None
        if tx_hash is None or self.node.chain.tx_location(tx_hash) is None:
            tx_hash = self._admit(raw)
        with trio.move_on_after(timeout):
            await self.node.waiter(tx_hash).wait()
        receipt = self._receipt(tx_hash)
        if receipt is None and tx_hash in self.node.dropped:
            raise RPCError(TX_REJECTED, "transaction dropped from the mempool",
                           {"txHash": J.hexb(tx_hash), "reason": self.node.dropped[tx_hash]})
        if receipt is None:
            raise RPCError(LIMIT_EXCEEDED, "timed out waiting for commit",
                           {"txHash": J.hexb(tx_hash), "timeoutSeconds": timeout})
        return receipt

    async def get_transaction(self, p: list[Any]) -> dict[str, Any] | None:
        """``qnx_getTransaction``: committed (with position) or pending (without)."""
        tx_hash = J.parse_hex(p[0], "txHash", 32)
        loc = self.node.chain.tx_location(tx_hash)
        if loc is not None:
            block = self.node.chain.block(loc.height)
            if block is not None:
                return J.tx_json(block.transactions[loc.index], (loc.height, block.hash, loc.index))
        pending = self.node.mempool.get(tx_hash)
        return None if pending is None else J.tx_json(pending)

    async def get_receipt(self, p: list[Any]) -> dict[str, Any] | None:
        """``qnx_getTransactionReceipt``."""
        return self._receipt(J.parse_hex(p[0], "txHash", 32))

    def _block_result(self, height: int | None, full: Any) -> dict[str, Any] | None:
        if full is not None and not isinstance(full, bool):
            raise RPCError(INVALID_PARAMS, "fullTransactions must be a boolean")
        if height is None:
            return None
        block = self.node.chain.block(height)
        if block is None:
            return None
        return J.block_json(block, self.node.chain.certificate(height), bool(full))

    async def block_by_number(self, p: list[Any]) -> dict[str, Any] | None:
        """``qnx_getBlockByNumber``."""
        return self._block_result(self._height(p[0]), p[1])

    async def block_by_hash(self, p: list[Any]) -> dict[str, Any] | None:
        """``qnx_getBlockByHash``."""
        return self._block_result(self.node.chain.height_of(J.parse_hex(p[0], "blockHash", 32)), p[1])

    async def get_nonce(self, p: list[Any]) -> int:
        """``qnx_getNonce``: the next nonce the account must use (committed state)."""
        address = J.parse_hex(p[0], "address", 20)
        return self.node.vm.account_nonce(self._getter(self._latest(p[1])), address)

    async def get_balance(self, p: list[Any]) -> str:
        """``qnx_getBalance``: balance in base units, a decimal string."""
        address, token = J.parse_hex(p[0], "address", 20), J.parse_hex(p[1], "token", 20)
        return str(self._read(token, "balanceOf", (address,), version=self._latest(p[2])))

    async def get_token(self, p: list[Any]) -> dict[str, Any]:
        """``qnx_getToken``: name, symbol, decimals, totalSupply, minter of the fungible token at an address.

        A ``token/v1`` answers with its one-read ``info``. Any other contract is read through the
        ERC-20 methods ``name``, ``symbol``, ``decimals`` and ``totalSupply``: that is how an AMM
        pool (``amm-pair/v1``, whose ``info`` describes the pool, not its shares) gives its LP
        token, ``"QENEX V2"``/``"QNX-V2"`` with 18 decimals. ``minter`` is the address holding a
        minter role, null where none does: a pool's shares have no minter (the pool mints them
        itself to whoever deposits, and anyone may call its ``mint``), so for a pool it is null.
        -32001 when the address holds no contract at that block, or one without those reads.
        """
        token = J.parse_hex(p[0], "token", 20)
        version = self._latest(p[1])
        code_id = Overlay(self._getter(version)).load(code_key(token))
        if code_id is None:
            raise RPCError(NOT_FOUND, "no token at this address: no contract there", J.hexb(token))
        try:
            if code_id == Token.CODE_ID:
                name, symbol, decimals, supply, minter = self._read(token, "info", (), version=version)
            else:
                name, symbol, decimals, supply = (self._read(token, method, (), version=version)
                                                  for method in ("name", "symbol", "decimals", "totalSupply"))
                minter = None
        except RPCError as err:
            if err.code == EXECUTION_REVERTED:
                raise RPCError(NOT_FOUND, f"no token at this address: a {code_id} contract without the "
                                          "ERC-20 reads name, symbol, decimals, totalSupply", J.hexb(token)) from None
            raise
        if not (isinstance(name, str) and isinstance(symbol, str) and isinstance(decimals, int)
                and isinstance(supply, int)):
            raise RPCError(NOT_FOUND, f"no token at this address: the {code_id} contract's ERC-20 reads "
                                      "are not a token's", J.hexb(token))
        return {"address": J.hexb(token), "name": name, "symbol": symbol, "decimals": decimals,
                "totalSupply": str(supply), "minter": J.hexb(minter) if minter else None}

    async def get_pool(self, p: list[Any]) -> dict[str, Any] | None:
        """``qnx_getPool``: the AMM pool of two tokens (either order), or null if there is none.

        Looks in the canonical factory (``contracts.amm.CANONICAL_FACTORY``) unless ``factory`` names
        another. Amounts, accumulators and ``totalSupply`` are decimal strings (base units; the
        accumulators are UQ112x112 times seconds, mod 2**256); ``blockTimestampLast`` is the block
        time in seconds mod 2**32 of the pool's last update.
        """
        token_a, token_b = J.parse_hex(p[0], "tokenA", 20), J.parse_hex(p[1], "tokenB", 20)
        if token_a == token_b:
            raise RPCError(INVALID_PARAMS, "tokenA and tokenB must differ")
        version = self._latest(p[2])
        factory = CANONICAL_FACTORY if p[3] is None else J.parse_hex(p[3], "factory", 20)
        try:
            pair = self._read(factory, "getPair", (token_a, token_b), version=version)
        except RPCError as err:
            if err.code == EXECUTION_REVERTED:  # no factory there: no pool either
                return None
            raise
        if pair == b"\x00" * 20:
            return None
        _, token0, token1, reserve0, reserve1, timestamp, supply, price0, price1, k_last = self._read(
            pair, "info", (), version=version)
        return {"address": J.hexb(pair), "token0": J.hexb(token0), "token1": J.hexb(token1),
                "reserve0": str(reserve0), "reserve1": str(reserve1), "totalSupply": str(supply),
                "price0CumulativeLast": str(price0), "price1CumulativeLast": str(price1),
                "blockTimestampLast": timestamp, "kLast": str(k_last), "factory": J.hexb(factory)}

    def _call_params(self, call: Any) -> tuple[bytes, bytes, str, tuple[Value, ...]]:
        if not isinstance(call, dict):
            raise RPCError(INVALID_PARAMS, "call must be an object {from?, to, method, args}")
        sender = J.parse_hex(call["from"], "from", 20) if call.get("from") is not None else b"\x00" * 20
        to = J.parse_hex(call.get("to"), "to", 20)
        method = call.get("method")
        if not isinstance(method, str):
            raise RPCError(INVALID_PARAMS, "method must be a string")
        args = call.get("args", [])
        if not isinstance(args, list):
            raise RPCError(INVALID_PARAMS, "args must be an array")
        return sender, to, method, tuple(J.value_from_json(a) for a in args)

    async def call(self, p: list[Any]) -> Any:
        """``qnx_call``: a read-only contract call on the state of ``block`` (default: the head)."""
        sender, to, method, args = self._call_params(p[0])
        return J.value_to_json(self._read(to, method, args, sender, self._latest(p[1])))

    async def estimate_gas(self, p: list[Any]) -> int:
        """``qnx_estimateGas``: gas the call would use as a transaction now (ML-DSA-44 sized)."""
        sender, to, method, args = self._call_params(p[0])
        if p[0].get("from") is None:
            raise RPCError(INVALID_PARAMS, "estimateGas needs from")
        node = self.node
        from crypto.signatures import ML_DSA_44

        body = TxBody(node.chain_id, Address(sender), node.account_nonce(sender), G.MAX_TX_GAS,
                      (Call(Address(to), method, args),), ML_DSA_44.tag, b"\x00" * ML_DSA_44.public_key_len)
        tx = Transaction(body, b"\x00" * ML_DSA_44.signature_len)
        receipt = node.vm.execute_tx(Overlay(node.chain.state.get), self._env(), tx)
        if receipt.status != 1:
            raise RPCError(EXECUTION_REVERTED, "execution reverted", {"reason": receipt.revert_reason})
        return receipt.gas_used

    async def get_proof(self, p: list[Any]) -> dict[str, Any]:
        """``qnx_getProof``: the account's nonce and code and the given storage slots, with Merkle proofs
        against the state root of ``block`` (default: the head), that block's header and its commit
        certificate (``proof_result``)."""
        address = J.parse_hex(p[0], "address", 20)
        if not isinstance(p[1], list):
            raise RPCError(INVALID_PARAMS, "storageKeys must be an array of 0x-hex slots")
        if len(p[1]) > MAX_PROOF_KEYS:
            raise RPCError(LIMIT_EXCEEDED, "too many storage keys", {"limit": MAX_PROOF_KEYS, "size": len(p[1])})
        slots = [J.parse_hex(k, f"storageKeys[{i}]") for i, k in enumerate(p[1])]
        return proof_result(self.node.chain, address, slots, self._latest(p[2]))

    async def get_evidence(self, p: list[Any]) -> list[dict[str, Any]]:
        """``qnx_getEvidence``: equivocations seen (two signed, conflicting messages of one validator)."""
        from consensus.messages import KIND_NAMES

        return [
            {"validator": e.validator, "kind": KIND_NAMES.get(e.kind, str(e.kind)), "view": e.view, "height": e.seq,
             "first": {"blockHash": J.hexb(e.first_hash), "signature": J.hexb(e.first_signature)},
             "second": {"blockHash": J.hexb(e.second_hash), "signature": J.hexb(e.second_signature)}}
            for e in self.node.evidence()
        ]

    async def discover(self, p: list[Any]) -> dict[str, Any]:
        """``rpc.discover``: the OpenRPC 1.2.6 document of the methods this node serves (``node.rpc.openrpc``;
        the admin methods only when ``[rpc] admin_enabled``)."""
        return document([*self.methods, *self.context_methods])

    # --- subscriptions (WebSocket only) ------------------------------------------------------------

    async def subscribe(self, p: list[Any], context: CallContext) -> str:
        """``qnx_subscribe``: ``["newHeads"]``, ``["events", filter]`` or ``["txStatus", txHash]``; the
        subscription id (``node.rpc.pubsub`` gives what each push carries). A txStatus already known
        (pending, committed or dropped) is pushed at once. -32601 over HTTP, -32602 for bad params,
        -32005 beyond ``[rpc] max_subscriptions_per_connection``."""
        if context.ws is None:
            raise RPCError(METHOD_NOT_FOUND, "qnx_subscribe is served over WebSocket only",
                           {"websocket": "/ws"})
        kind, argument = parse_subscribe_params(p)
        initial = self._tx_status(argument) if kind == "txStatus" else None  # type: ignore[arg-type]
        return context.ws.subscribe(kind, argument, context, initial)

    def _tx_status(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The txStatus push of what is known of ``tx_hash`` now, or None."""
        receipt = self._receipt(tx_hash)
        if receipt is not None:
            return {"status": "committed", "txHash": J.hexb(tx_hash), "receipt": receipt}
        if tx_hash in self.node.mempool:
            return {"status": "admitted", "txHash": J.hexb(tx_hash)}
        reason = self.node.dropped.get(tx_hash)  # type: ignore[call-overload]
        if reason is not None:
            return {"status": "dropped", "txHash": J.hexb(tx_hash), "reason": reason}
        return None

    async def unsubscribe(self, p: list[Any], context: CallContext) -> bool:
        """``qnx_unsubscribe``: ``true``; -32001 if this connection has no such subscription, -32601 over
        HTTP. Pushes queued before the response still arrive; none after it."""
        if context.ws is None:
            raise RPCError(METHOD_NOT_FOUND, "qnx_unsubscribe is served over WebSocket only",
                           {"websocket": "/ws"})
        return context.ws.unsubscribe(p[0])

    # --- admin (only with [rpc] admin_enabled) ----------------------------------------------------

    async def admin_peers(self, p: list[Any], context: CallContext) -> list[dict[str, Any]]:
        """``admin_peers``: each connected peer's ``nodeId``, validator ``name`` (null for an observer),
        remote ``address`` (host:port), ``direction`` and ``score`` (0 neutral; at ``[p2p]
        ban_threshold`` it is banned)."""
        net = self.node.net
        if net is None:
            return []
        names = {v.node_id: v.name for v in self.node.validators}
        return [{"nodeId": J.hexb(peer), "name": names.get(peer), "address": remote, "direction": direction,
                 "score": net.score(peer)} for peer, remote, direction in net.peer_info()]

    async def admin_flush_mempool(self, p: list[Any], context: CallContext) -> dict[str, int]:
        """``admin_flushMempool``: drop every pending transaction; ``{"dropped": n}``. Clients waiting in
        ``qnx_sendRawTransactionAndWait`` get -32003 and txStatus subscribers a dropped push, with the reason."""
        dropped = self.node.flush_mempool()
        log.warning("admin_flushMempool from %s: %d pending transactions dropped", context.client, dropped)
        return {"dropped": dropped}

    async def admin_set_log_level(self, p: list[Any], context: CallContext) -> dict[str, str]:
        """``admin_setLogLevel [module, level]``: set logger ``module`` ("" or "root": the root logger) to
        DEBUG, INFO, WARNING, ERROR or CRITICAL until the next SIGHUP reload of ``[log]``; returns
        ``{module, level, previous}``. -32602 for a bad name or level."""
        from node.exceptions import ConfigError
        from node.logs import set_module_level

        module, level = p
        if not isinstance(module, str) or not isinstance(level, str) or len(module) > 200:
            raise RPCError(INVALID_PARAMS, "module and level must be strings")
        try:
            previous = set_module_level(module, level)
        except ConfigError as err:
            raise RPCError(INVALID_PARAMS, str(err)) from None
        log.warning("admin_setLogLevel from %s: %s=%s", context.client, module or "root", level.upper())
        return {"module": module, "level": level.upper(), "previous": previous}


MAX_PROOF_KEYS = 256
"""Most storage keys one ``qnx_getProof`` request may ask for."""


def proof_result(chain: ChainStore, address: bytes, slots: list[bytes], height: int) -> dict[str, Any]:
    """The result of ``qnx_getProof(address, slots, height)``: proven state entries and their evidence.

    An account maps to state keys as the VM lays them out (``contracts.vm``): its nonce is
    ``0x01 || address``, its code id ``0x02 || address``, storage slot ``s`` of a contract
    ``0x03 || address || s``. Each entry is ``{key, value, proof}``: the state key, the raw stored value
    (a canonical encoding) or null when absent, and the canonical ``StateProof`` (``state.proof``)
    against ``stateRoot``; storage entries add their ``slot``. ``headerRaw`` and ``certificateRaw`` are
    the canonical encodings of the block header holding that root and of its commit certificate (the
    JSON ``header`` and ``commitCertificate`` repeat them for reading): a client checks the
    certificate against the validator set, hashes ``headerRaw`` and verifies each proof against its
    ``state_root`` (``node.rpc.client.verify_proof_result``).

    Raises ``RPCError`` -32001 for height 0 (the genesis has no certificate) or a height without a
    certified block; ``height`` must be a readable state version (``RPCApp._latest``).
    """
    if height == 0:
        raise RPCError(NOT_FOUND, "the genesis state (height 0) has no commit certificate: ask for height 1 or more")
    block, cert = chain.block(height), chain.certificate(height)
    if block is None or cert is None:
        raise RPCError(NOT_FOUND, f"no certified block at height {height}")

    def entry(key: bytes) -> dict[str, Any]:
        value, proof = chain.state.prove(key, height)
        return {"key": J.hexb(key), "value": None if value is None else J.hexb(value),
                "proof": J.hexb(proof.encode())}

    return {
        "address": J.hexb(address), "height": height, "blockHash": J.hexb(block.hash),
        "stateRoot": J.hexb(block.header.state_root),
        "nonce": entry(nonce_key(address)), "code": entry(code_key(address)),
        "storage": [{"slot": J.hexb(slot), **entry(storage_key(address, slot))} for slot in slots],
        "header": J.header_json(block.header), "headerRaw": J.hexb(block.header.encode()),
        "commitCertificate": J.certificate_json(cert), "certificateRaw": J.hexb(cert.encode()),
    }


def _error(rid: Any, err: RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": err.to_json()}


async def serve_rpc(node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the node's JSON-RPC (HTTP ``POST /``, WebSocket ``/ws``) on ``[rpc] host:port`` with hypercorn
    until cancelled; ``task_status.started`` gets the bound URLs (``http://host:port``)."""
    cfg = HyperConfig()
    cfg.bind = [f"{node.config.rpc.host}:{node.config.rpc.port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("qenex.rpc.http")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30.0
    # Messages up to max_body_bytes are served; up to twice that the app answers -32005; beyond, hypercorn
    # closes the connection with 1009 (message too big) before buffering more.
    cfg.websocket_max_message_size = 2 * node.config.rpc.max_body_bytes
    await serve(RPCApp(node), cfg, task_status=task_status)  # type: ignore[arg-type]
