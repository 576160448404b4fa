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
from contracts.amm import CANONICAL_FACTORY
from contracts.exceptions import Revert, TxRejected
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
    RPCError,
)
from state.codec import Value
from state.exceptions import DecodeError
from state.types import Call, Transaction, TxBody

if TYPE_CHECKING:
    from node.node import Node
    from state.chain import ChainStore

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
            "qnx_getPool": (("tokenA", "tokenB", "block", "factory"), 2, self.get_pool),
            "qnx_call": (("call", "block"), 1, self.call),
            "qnx_estimateGas": (("call",), 1, self.estimate_gas),
            "qnx_getProof": (("address", "storageKeys", "block"), 2, self.get_proof),
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
        """``qnx_getToken``: name, symbol, decimals, totalSupply, minter."""
        token = J.parse_hex(p[0], "token", 20)
        version = self._latest(p[1])
        try:
            name, symbol, decimals, supply, minter = self._read(token, "info", (), version=version)
        except RPCError as err:
            if err.code == EXECUTION_REVERTED:
                raise RPCError(NOT_FOUND, "no token at this address", J.hexb(token)) from None
            raise
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
    """Serve the node's JSON-RPC on ``[rpc] host:port`` with hypercorn until cancelled."""
    cfg = HyperConfig()
    cfg.bind = [f"{node.config.rpc.host}:{node.config.rpc.port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("qenex.rpc.http")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30.0
    await serve(RPCApp(node), cfg, task_status=task_status)  # type: ignore[arg-type]
