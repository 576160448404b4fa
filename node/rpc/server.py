"""The JSON-RPC 2.0 server of shared/RPC.md: a plain ASGI app served by hypercorn on Trio.

HTTP ``POST /`` takes a request or a batch (JSON-RPC 2.0 §6: an empty array or invalid JSON gives
one error with ``id: null``; notifications get no response; a batch of only notifications gets an
empty 204). ``GET /health`` is 200 while the node runs; ``GET /ready`` is 200 once it is
connected to a quorum and not behind its peers; ``GET /metrics`` gives the Prometheus text format
(node/metrics.py). Limits: body bytes and batch size (-32005).
Every error carries the code of shared/RPC.md and, in ``data``, the detail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from contracts import gas as G
from contracts.exceptions import Revert, TxRejected
from contracts.vm import BlockEnv, Overlay
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
    RPCError,
)
from state.codec import Value
from state.exceptions import DecodeError
from state.types import Call, Transaction, TxBody

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger("qenex.rpc")

Handler = Callable[[list[Any]], Awaitable[Any]]


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
    """The ASGI application; one per node. ``methods`` maps each method name to its handler."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.limits = node.config.rpc
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
            "qnx_call": (("call", "block"), 1, self.call),
            "qnx_estimateGas": (("call",), 1, self.estimate_gas),
            "qnx_getEvidence": ((), 0, self.get_evidence),
            "rpc.discover": ((), 0, self.discover),
        }

    # --- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry point (HTTP and lifespan)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/health":
            await self._send(send, 200, {"status": "ok", "height": self.node.chain.head.height})
        elif method == "GET" and path == "/ready":
            ready, detail = self.readiness()
            await self._send(send, 200 if ready else 503, {"ready": ready, **detail})
        elif method == "GET" and path == "/metrics":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE.encode())]})
            await send({"type": "http.response.body", "body": self.node.metrics.render()})
        elif method == "POST" and path == "/":
            body = await self._read_body(scope, receive)
            if body is None:
                err = RPCError(LIMIT_EXCEEDED, "request body too large", {"limit": self.limits.max_body_bytes})
                await self._send(send, 413, {"jsonrpc": "2.0", "id": None, "error": err.to_json()})
                return
            status, response = await self.handle_body(body)
            await self._send(send, status, response)
        else:
            await self._send(send, 404, {"error": "POST / for JSON-RPC; GET /health, /ready, /metrics"})

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
    async def _send(send: Any, status: int, payload: Any) -> None:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json")] if payload is not None else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- JSON-RPC 2.0 -------------------------------------------------------------------------------

    async def handle_body(self, body: bytes) -> tuple[int, Any]:
        """Process a request body; returns (HTTP status, response JSON or None for no body)."""
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            return 200, _error(None, RPCError(PARSE_ERROR, "parse error", str(err)))
        if isinstance(request, list):
            if not request:
                return 200, _error(None, RPCError(INVALID_REQUEST, "empty batch"))
            if len(request) > self.limits.max_batch:
                return 200, _error(None, RPCError(LIMIT_EXCEEDED, "batch too large",
                                                  {"limit": self.limits.max_batch, "size": len(request)}))
            responses = [r for r in [await self.handle_one(item) for item in request] if r is not None]
            return (200, responses) if responses else (204, None)
        response = await self.handle_one(request)
        return (200, response) if response is not None else (204, None)

    async def handle_one(self, request: Any) -> dict[str, Any] | None:
        """One request object; None for a notification."""
        if not isinstance(request, dict):
            return _error(None, RPCError(INVALID_REQUEST, "a request is a JSON object"))
        rid = request.get("id")
        is_notification = "id" not in request
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int | float)):
            return _error(None, RPCError(INVALID_REQUEST, "id must be a string, number or null"))
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(rid, RPCError(INVALID_REQUEST, 'need "jsonrpc": "2.0" and a string "method"'))
        try:
            entry = self.methods.get(method)
            if entry is None:
                raise RPCError(METHOD_NOT_FOUND, f"method {method!r} not found")
            names, required, handler = entry
            result = await handler(_params(request.get("params"), names, required))
        except RPCError as err:
            return None if is_notification else _error(rid, err)
        except Exception as err:
            log.exception("internal error in %s", method)
            return None if is_notification else _error(rid, RPCError(INTERNAL_ERROR, "internal error", str(err)))
        return None if is_notification else {"jsonrpc": "2.0", "id": rid, "result": result}

    # --- helpers -----------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when connected to 2f peers (a quorum with us) and not behind any of them."""
        node = self.node
        peers = len(node.net.connected()) if node.net is not None else 0
        best = max(node.sync.peer_heights.values(), default=0)
        height = node.chain.head.height
        ready = node.started and peers >= 2 * node.replica.f and height >= best - 1
        return ready, {"peers": peers, "height": height, "bestPeerHeight": best}

    def _latest(self, selector: Any) -> None:
        """State queries read the committed head; older versions come with the versioned tree."""
        head = self.node.chain.head.height
        if selector is None or selector == "latest" or selector == head:
            return
        if selector == "earliest" or (isinstance(selector, int) and not isinstance(selector, bool)):
            raise RPCError(NOT_FOUND, "historical state is not retained by this node", {"latest": head})
        raise RPCError(INVALID_PARAMS, "block must be an integer height, 'latest' or 'earliest'")

    def _height(self, selector: Any) -> int:
        head = self.node.chain.head.height
        if selector == "latest":
            return head
        if selector == "earliest":
            return 1 if head >= 1 else 0
        if isinstance(selector, int) and not isinstance(selector, bool) and selector >= 0:
            return selector
        raise RPCError(INVALID_PARAMS, "block must be a non-negative integer height, 'latest' or 'earliest'")

    def _env(self) -> BlockEnv:
        head = self.node.chain.head
        return BlockEnv(self.node.chain_id, head.height, head.timestamp_ms // 1000)

    def _read(self, to: bytes, method: str, args: tuple[Value, ...], sender: bytes = b"\x00" * 20) -> Value:
        try:
            return self.node.vm.call_readonly(self.node.chain.state.get, self._env(), Address(sender), Address(to),
                                              method, args)
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
            "mempool": len(node.mempool),
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
        self._latest(p[1])
        return self.node.account_nonce(address)

    async def get_balance(self, p: list[Any]) -> str:
        """``qnx_getBalance``: balance in base units, a decimal string."""
        address, token = J.parse_hex(p[0], "address", 20), J.parse_hex(p[1], "token", 20)
        self._latest(p[2])
        return str(self._read(token, "balanceOf", (address,)))

    async def get_token(self, p: list[Any]) -> dict[str, Any]:
        """``qnx_getToken``: name, symbol, decimals, totalSupply, minter."""
        token = J.parse_hex(p[0], "token", 20)
        self._latest(p[1])
        try:
            name, symbol, decimals, supply, minter = self._read(token, "info", ())
        except RPCError as err:
            if err.code == EXECUTION_REVERTED:
                raise RPCError(NOT_FOUND, "no token at this address", J.hexb(token)) from None
            raise
        return {"address": J.hexb(token), "name": name, "symbol": symbol, "decimals": decimals,
                "totalSupply": str(supply), "minter": J.hexb(minter) if minter else None}

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
        """``qnx_call``: a read-only contract call on the head state."""
        sender, to, method, args = self._call_params(p[0])
        self._latest(p[1])
        return J.value_to_json(self._read(to, method, args, sender))

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
        """``rpc.discover``: an OpenRPC document of the methods served."""
        return {
            "openrpc": "1.2.6",
            "info": {"title": "QENEX Ledger JSON-RPC", "version": "1.0.0"},
            "methods": [
                {"name": name, "params": [{"name": n, "required": i < req, "schema": {}} for i, n in enumerate(names)],
                 "result": {"name": "result", "schema": {}},
                 "description": (handler.__doc__ or "").strip()}
                for name, (names, req, handler) in sorted(self.methods.items())
            ],
        }


def _error(rid: Any, err: RPCError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": err.to_json()}


async def serve_rpc(node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the node's JSON-RPC on ``[rpc] host:port`` with hypercorn until cancelled."""
    cfg = HyperConfig()
    cfg.bind = [f"{node.config.rpc.host}:{node.config.rpc.port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("qenex.rpc.http")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30.0
    await serve(RPCApp(node), cfg, task_status=task_status)  # type: ignore[arg-type]
