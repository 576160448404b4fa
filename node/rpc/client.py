"""The Python client of the JSON-RPC API, and transaction building and signing for wallets.

Three lines from a notebook::

    from node.rpc.client import Client
    c = Client("http://127.0.0.1:8545")
    c.call("qnx_status")

``AsyncClient`` is the same on Trio (httpx over anyio). Errors come back as ``RPCError`` with the
code of shared/RPC.md. Amounts are integers in base units.

Subscriptions (WebSocket ``/ws``, trio-websocket), on Trio::

    async with AsyncClient("http://127.0.0.1:8545").subscribe("newHeads") as heads:
        async for head in heads:          # header JSON, in height order
            print(head["height"])

``AsyncClient.websocket()`` opens one connection (``WSClient``) for several subscriptions and calls.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio
import trio_websocket

from consensus.exceptions import InvalidMessage
from consensus.replica import make_verifier, verify_certificate
from contracts.amm import CANONICAL_FACTORY, CANONICAL_ROUTER, FACTORY_CODE_ID, ROUTER_CODE_ID, pair_address
from contracts.builtin import UINT256_MAX
from contracts.vm import DEPLOYER, code_key, create_address, nonce_key, storage_key
from crypto.hashing import Hash32
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import Context
from node.exceptions import ConnectionClosedByNode, ProofRejected
from node.rpc.errors import RPCError
from state.codec import Value, decode_value, encode
from state.exceptions import DecodeError, InvalidProof
from state.proof import verify_proof
from state.types import BlockHeader, Call, CommitCertificate, Transaction, TxBody

DEFAULT_GAS_LIMIT = 100_000
"""Gas limit of a simple transfer with an ML-DSA-44 key (intrinsic ~ 18,000, transfer ~ 12,000)."""


def sign_transaction(key: KeyPair, chain_id: str, nonce: int, calls: list[Call] | tuple[Call, ...],
                     gas_limit: int = DEFAULT_GAS_LIMIT) -> Transaction:
    """Build and sign a transaction of ``calls`` by ``key`` (docs/protocol.md, "Signing")."""
    body = TxBody(chain_id, key.address, nonce, gas_limit, tuple(calls), key.scheme_tag, key.public_key)
    return Transaction(body, key.sign(Context.TRANSACTION, encode(body)))


def transfer_call(token: bytes, to: bytes, amount: int) -> Call:
    """The call ``token.transfer(to, amount)`` (amount in base units)."""
    return Call(Address(token), "transfer", (to, amount))


def deploy_token_call(name: str, symbol: str, decimals: int, minter: bytes) -> Call:
    """The call that creates a ``token/v1`` instance; its address is the receipt's output[0]."""
    return Call(DEPLOYER, "deploy", ("token/v1", (name, symbol, decimals, minter)))


# --- AMM (contracts/amm.py: Uniswap V2 factory, pairs and router) ---------------------------------------

AMM_GAS_LIMIT = 400_000
"""Gas limit for AMM transactions with an ML-DSA-44 key (a two-hop router swap uses about 110,000)."""


def approve_call(token: bytes, spender: bytes, amount: int = UINT256_MAX) -> Call:
    """The call ``token.approve(spender, amount)`` (default: infinite, never decremented)."""
    return Call(Address(token), "approve", (spender, amount))


def deploy_amm_calls(fee_to_setter: bytes = ZERO_ADDRESS) -> list[Call]:
    """The deployer calls creating a factory and its router (``create``: same address whoever sends them).

    With the default zero fee setter they create ``CANONICAL_FACTORY`` and ``CANONICAL_ROUTER``
    (protocol fee off for good); send them once per chain (a second time they revert "contract
    address already in use"). Other addresses: ``amm_addresses(fee_to_setter)``.
    """
    factory, _ = amm_addresses(fee_to_setter)
    return [Call(DEPLOYER, "create", (FACTORY_CODE_ID, b"", (fee_to_setter,))),
            Call(DEPLOYER, "create", (ROUTER_CODE_ID, b"", (factory,)))]


def amm_addresses(fee_to_setter: bytes = ZERO_ADDRESS) -> tuple[Address, Address]:
    """(factory, router) that ``deploy_amm_calls(fee_to_setter)`` creates."""
    factory = create_address(DEPLOYER, FACTORY_CODE_ID, b"", (fee_to_setter,))
    return factory, create_address(DEPLOYER, ROUTER_CODE_ID, b"", (factory,))


def create_pool_call(token_a: bytes, token_b: bytes, factory: bytes = CANONICAL_FACTORY) -> Call:
    """The call creating the pool of two tokens; its address is ``pair_address(factory, token_a, token_b)``.

    (``add_liquidity_calls`` creates it too, on the first deposit.)
    """
    return Call(Address(factory), "createPair", (token_a, token_b))


def min_with_slippage(amount: int, slippage_bps: int) -> int:
    """``amount`` less ``slippage_bps`` basis points, rounded down. Raises ``ValueError`` outside 0..10000."""
    if not 0 <= slippage_bps <= 10_000:
        raise ValueError(f"slippage must be 0..10000 basis points, got {slippage_bps}")
    return amount * (10_000 - slippage_bps) // 10_000


def max_with_slippage(amount: int, slippage_bps: int) -> int:
    """``amount`` plus ``slippage_bps`` basis points, rounded up. Raises ``ValueError`` outside 0..10000."""
    if not 0 <= slippage_bps <= 10_000:
        raise ValueError(f"slippage must be 0..10000 basis points, got {slippage_bps}")
    return -(-amount * (10_000 + slippage_bps) // 10_000)


def add_liquidity_calls(token_a: bytes, token_b: bytes, amount_a: int, amount_b: int, to: bytes, deadline: int, *,
                        slippage_bps: int = 50, router: bytes = CANONICAL_ROUTER) -> list[Call]:
    """Approve the router for both amounts, then ``addLiquidity`` (creates the pool if needed).

    The router deposits at the pool's ratio, at most the desired amounts and at least these less
    ``slippage_bps``; ``deadline`` is a block time in seconds. The LP shares go to ``to``.
    """
    return [approve_call(token_a, router, amount_a), approve_call(token_b, router, amount_b),
            Call(Address(router), "addLiquidity", (token_a, token_b, amount_a, amount_b,
                                                   min_with_slippage(amount_a, slippage_bps),
                                                   min_with_slippage(amount_b, slippage_bps), to, deadline))]


def remove_liquidity_calls(token_a: bytes, token_b: bytes, liquidity: int, amount_a_min: int, amount_b_min: int,
                           to: bytes, deadline: int, *, router: bytes = CANONICAL_ROUTER,
                           factory: bytes = CANONICAL_FACTORY) -> list[Call]:
    """Approve the router for ``liquidity`` LP shares of the pool, then ``removeLiquidity`` to ``to``.

    ``Client.remove_liquidity_calls`` computes the minimums from the pool's reserves.
    """
    pair = pair_address(factory, token_a, token_b)
    return [approve_call(pair, router, liquidity),
            Call(Address(router), "removeLiquidity", (token_a, token_b, liquidity, amount_a_min, amount_b_min, to,
                                                      deadline))]


def swap_exact_in_calls(path: Sequence[bytes], amount_in: int, quoted_out: int, to: bytes, deadline: int, *,
                        slippage_bps: int = 50, router: bytes = CANONICAL_ROUTER) -> list[Call]:
    """Approve ``amount_in`` of ``path[0]``, then swap it along ``path`` for at least ``quoted_out``
    less ``slippage_bps`` of ``path[-1]`` (``swapExactTokensForTokens``).

    ``quoted_out`` comes from ``Client.quote_out`` (the router's ``getAmountsOut``).
    """
    return [approve_call(path[0], router, amount_in),
            Call(Address(router), "swapExactTokensForTokens",
                 (amount_in, min_with_slippage(quoted_out, slippage_bps), tuple(path), to, deadline))]


def swap_exact_out_calls(path: Sequence[bytes], amount_out: int, quoted_in: int, to: bytes, deadline: int, *,
                         slippage_bps: int = 50, router: bytes = CANONICAL_ROUTER) -> list[Call]:
    """Approve and swap at most ``quoted_in`` plus ``slippage_bps`` of ``path[0]`` for exactly
    ``amount_out`` of ``path[-1]`` (``swapTokensForExactTokens``)."""
    most = max_with_slippage(quoted_in, slippage_bps)
    return [approve_call(path[0], router, most),
            Call(Address(router), "swapTokensForExactTokens", (amount_out, most, tuple(path), to, deadline))]


def _unwrap(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    try:
        doc = response.json()
    except ValueError as err:
        raise RPCError(-32603, f"HTTP {response.status_code}: not JSON") from err
    if isinstance(doc, dict) and "error" in doc:
        e = doc["error"]
        raise RPCError(e.get("code", -32603), e.get("message", ""), e.get("data"))
    if not isinstance(doc, dict):
        raise RPCError(-32603, "unexpected response", doc)
    return doc.get("result")


def _jsonable(v: Value) -> Any:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


@dataclass(frozen=True)
class ProvenAccount:
    """What a verified ``qnx_getProof`` answer proves about one account at one block.

    ``height``, ``block_hash`` and ``state_root`` name the certified block; ``nonce`` is the account's
    next nonce (0 when never used); ``code`` the code id of a contract (None for a plain account);
    ``storage`` maps each asked slot to its raw canonical value (None when empty: decode it with
    ``state.codec.decode_value``).
    """

    height: int
    block_hash: Hash32
    state_root: Hash32
    nonce: int
    code: str | None
    storage: dict[bytes, bytes | None]


def _hex_field(obj: Any, name: str) -> bytes:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ProofRejected(f"{name} is not 0x-hex")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ProofRejected(f"{name} is not valid hex") from None


def _proven_entry(entry: Any, key: bytes, root: bytes, what: str) -> bytes | None:
    if _hex_field(entry, "key") != key:
        raise ProofRejected(f"{what}: the answer is for another state key")
    if not isinstance(entry, dict) or "value" not in entry:
        raise ProofRejected(f"{what}: no value (null for an absent key)")
    value = None if entry["value"] is None else _hex_field(entry, "value")
    try:
        verify_proof(root, key, value, _hex_field(entry, "proof"))
    except InvalidProof as err:
        raise ProofRejected(f"{what}: {err.reason}") from err
    return value


def verify_proof_result(
    result: Any,
    *,
    chain_id: str,
    validators: Sequence[tuple[int, bytes]],
    address: bytes,
    storage_keys: Sequence[bytes] = (),
    height: int | None = None,
) -> ProvenAccount:
    """Check a ``qnx_getProof`` result without trusting the node that served it; what it proves.

    ``validators`` is the validator set as ``(scheme tag, consensus public key)`` in genesis order,
    from a source you trust (your pinned genesis.json); ``address``, ``storage_keys`` and ``height``
    (None: any) are what you asked for. The chain of evidence, each link checked:

    1. ``certificateRaw`` holds a quorum (n - f) of valid, distinct COMMIT signatures of the
       validators for ``SHA3-256(headerRaw)`` at the header's height (docs/protocol.md 9.2);
    2. the header is of ``chain_id`` (and at ``height`` when given);
    3. each entry's proof leads from its value (or its absence) at the state key of ``address`` (and
       each slot, in the order asked) to the header's ``state_root`` (``state.proof.verify_proof``).

    Raises ``ProofRejected`` naming the first link that does not hold (or what is malformed).
    """
    try:
        header = BlockHeader.decode(_hex_field(result, "headerRaw"))
        certificate = CommitCertificate.decode(_hex_field(result, "certificateRaw"))
    except DecodeError as err:
        raise ProofRejected(f"undecodable header or certificate: {err}") from err
    if header.chain_id != chain_id:
        raise ProofRejected(f"the header is of chain {header.chain_id!r}, not {chain_id!r}")
    if height is not None and header.height != height:
        raise ProofRejected(f"the header is of height {header.height}, not {height}")
    try:
        verify_certificate(certificate, header.hash, header.height, chain_id, len(validators),
                           make_verifier(list(validators), Context.CONSENSUS))
    except InvalidMessage as err:
        raise ProofRejected(f"commit certificate: {err}") from err
    root = header.state_root
    nonce_raw = _proven_entry(result.get("nonce"), nonce_key(address), root, "nonce")
    code_raw = _proven_entry(result.get("code"), code_key(address), root, "code")
    entries = result.get("storage")
    if not isinstance(entries, list) or len(entries) != len(storage_keys):
        raise ProofRejected("the answer does not hold one storage entry per slot asked")
    storage = {
        bytes(slot): _proven_entry(entry, storage_key(address, slot), root, f"slot 0x{bytes(slot).hex()}")
        for slot, entry in zip(storage_keys, entries, strict=True)
    }
    try:
        nonce = 0 if nonce_raw is None else decode_value(nonce_raw)
        code = None if code_raw is None else decode_value(code_raw)
    except DecodeError as err:  # proven, so the chain itself holds it: not expected
        raise ProofRejected(f"a proven value is not canonical: {err}") from err
    if type(nonce) is not int or not (code is None or type(code) is str):
        raise ProofRejected("the proven nonce or code id has the wrong type")
    return ProvenAccount(header.height, header.hash, root, nonce, code, storage)


class Client:
    """Synchronous JSON-RPC client over HTTP (httpx). Raises ``RPCError``, ``httpx.HTTPError``."""

    def __init__(self, url: str, *, timeout: float = 30.0, token: str | None = None) -> None:
        """``url``: the node's HTTP JSON-RPC endpoint; ``token``: the ``[rpc] admin_token``, sent as
        ``Authorization: Bearer`` (needed for admin methods only)."""
        self.url = url
        self._http = httpx.Client(timeout=timeout, headers={"authorization": f"Bearer {token}"} if token else None)
        self._ids = itertools.count(1)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params``; returns the result."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return _unwrap(self._http.post(self.url, json=payload))

    def send_transaction(self, tx: Transaction, *, wait: bool = True, timeout: float = 60.0) -> Any:
        """Submit ``tx``; with ``wait`` returns its receipt once committed, else its hash."""
        raw = "0x" + tx.encode().hex()
        if wait:
            return self.call("qnx_sendRawTransactionAndWait", raw, timeout)
        return self.call("qnx_sendRawTransaction", raw)

    def balance(self, address: bytes, token: bytes) -> int:
        """Balance of ``address`` in ``token``, base units."""
        return int(self.call("qnx_getBalance", "0x" + address.hex(), "0x" + token.hex()))

    def nonce(self, address: bytes) -> int:
        """The next nonce of ``address``."""
        return int(self.call("qnx_getNonce", "0x" + address.hex()))

    def read(self, to: bytes, method: str, *args: Value) -> Any:
        """A read-only contract call (``qnx_call``)."""
        return self.call("qnx_call", {"to": "0x" + to.hex(), "method": method, "args": _jsonable(args)})

    def pool(self, token_a: bytes, token_b: bytes, *, factory: bytes | None = None) -> dict[str, Any] | None:
        """``qnx_getPool`` (the canonical factory's pool unless ``factory``), or None."""
        params: list[Any] = ["0x" + token_a.hex(), "0x" + token_b.hex()]
        if factory is not None:
            params += ["latest", "0x" + factory.hex()]
        result: dict[str, Any] | None = self.call("qnx_getPool", *params)
        return result

    def quote_out(self, amount_in: int, path: Sequence[bytes], *, router: bytes = CANONICAL_ROUTER) -> int:
        """What ``amount_in`` of ``path[0]`` buys of ``path[-1]`` now (the router's ``getAmountsOut``)."""
        return int(self.read(router, "getAmountsOut", amount_in, tuple(path))[-1])

    def quote_in(self, amount_out: int, path: Sequence[bytes], *, router: bytes = CANONICAL_ROUTER) -> int:
        """What ``amount_out`` of ``path[-1]`` costs of ``path[0]`` now (the router's ``getAmountsIn``)."""
        return int(self.read(router, "getAmountsIn", amount_out, tuple(path))[0])

    def swap_calls(self, path: Sequence[bytes], amount_in: int, to: bytes, deadline: int, *,
                   slippage_bps: int = 50, router: bytes = CANONICAL_ROUTER) -> list[Call]:
        """Quote now, then build approve + ``swapExactTokensForTokens`` with amountOutMin = quote less slippage."""
        quoted = self.quote_out(amount_in, path, router=router)
        return swap_exact_in_calls(path, amount_in, quoted, to, deadline, slippage_bps=slippage_bps, router=router)

    def remove_liquidity_calls(self, token_a: bytes, token_b: bytes, liquidity: int, to: bytes, deadline: int, *,
                               slippage_bps: int = 50, router: bytes = CANONICAL_ROUTER,
                               factory: bytes = CANONICAL_FACTORY) -> list[Call]:
        """``remove_liquidity_calls`` with minimums = this share of the pool's reserves now, less slippage.

        Raises ``ValueError`` if the pool does not exist.
        """
        pool = self.pool(token_a, token_b, factory=None if factory == CANONICAL_FACTORY else factory)
        if pool is None:
            raise ValueError("no pool for these tokens")
        supply = int(pool["totalSupply"])
        reserves = {bytes.fromhex(pool["token0"][2:]): int(pool["reserve0"]),
                    bytes.fromhex(pool["token1"][2:]): int(pool["reserve1"])}
        want_a, want_b = (liquidity * reserves[bytes(t)] // supply for t in (token_a, token_b))
        return remove_liquidity_calls(token_a, token_b, liquidity, min_with_slippage(want_a, slippage_bps),
                                      min_with_slippage(want_b, slippage_bps), to, deadline, router=router,
                                      factory=factory)

    def proven_account(self, address: bytes, storage_keys: Sequence[bytes], *, chain_id: str,
                       validators: Sequence[tuple[int, bytes]], block: int | str = "latest") -> ProvenAccount:
        """``qnx_getProof`` for ``address`` and ``storage_keys`` at ``block``, verified with
        ``verify_proof_result`` against ``validators`` (from your pinned genesis). Raises ``ProofRejected``."""
        result = self.call("qnx_getProof", "0x" + address.hex(), ["0x" + bytes(k).hex() for k in storage_keys], block)
        return verify_proof_result(result, chain_id=chain_id, validators=validators, address=address,
                                   storage_keys=storage_keys, height=block if isinstance(block, int) else None)


class AsyncClient:
    """The same client for Trio code (httpx.AsyncClient runs on Trio through anyio)."""

    def __init__(self, url: str, *, timeout: float = 60.0, max_connections: int = 100,
                 token: str | None = None) -> None:
        """``url``: the node's HTTP JSON-RPC endpoint (``http://host:port``); ``token``: the ``[rpc]
        admin_token``, sent as ``Authorization: Bearer`` for admin methods (HTTP and WebSocket)."""
        self.url = url
        self.token = token
        headers = {"authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=max_connections),
                                       headers=headers)
        self._ids = itertools.count(1)

    @asynccontextmanager
    async def websocket(self, *, queue_size: int = 1024) -> AsyncIterator[WSClient]:
        """One WebSocket connection to the node's ``/ws`` (``ws_url(self.url)``), closed on exit; see
        ``connect_websocket``."""
        async with connect_websocket(ws_url(self.url), token=self.token, queue_size=queue_size) as ws:
            yield ws

    @asynccontextmanager
    async def subscribe(self, kind: str, *args: Any, queue_size: int = 1024) -> AsyncIterator[Subscription]:
        """Subscribe on a connection of its own: ``async with client.subscribe("newHeads") as sub: async
        for head in sub: ...``. ``kind`` and ``args`` as ``WSClient.subscribe``; the connection closes on
        exit. Raises ``RPCError`` (bad params -32602, limits -32005), ``ConnectionClosedByNode``."""
        async with self.websocket(queue_size=queue_size) as ws, ws.subscribe(kind, *args) as sub:
            yield sub

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params``; returns the result."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return _unwrap(await self._http.post(self.url, json=payload))

    async def send_transaction(self, tx: Transaction, *, wait: bool = True, timeout: float = 60.0) -> Any:
        """Submit ``tx``; with ``wait`` returns its receipt once committed, else its hash."""
        raw = "0x" + tx.encode().hex()
        if wait:
            return await self.call("qnx_sendRawTransactionAndWait", raw, timeout)
        return await self.call("qnx_sendRawTransaction", raw)

    async def batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send a JSON-RPC 2.0 batch (§6) of request objects; returns the response objects as the
        node sent them (any order; match them by ``id``), errors included, not raised.

        Raises ``httpx.TransportError`` when the node cannot be reached, and ``RPCError`` when the
        whole batch is refused (oversize batch or body: -32005; parse error).
        """
        response = await self._http.post(self.url, json=requests)
        if response.status_code == 204:
            return []
        body = response.json()
        if isinstance(body, dict):  # one error for the whole batch
            _unwrap(response)
        return list(body)

    async def balance(self, address: bytes, token: bytes) -> int:
        """Balance of ``address`` in ``token``, base units."""
        return int(await self.call("qnx_getBalance", "0x" + address.hex(), "0x" + token.hex()))


# --- WebSocket: calls and subscriptions on /ws -------------------------------------------------------


def ws_url(url: str) -> str:
    """The WebSocket endpoint of a node from its HTTP one: ``http://h:p/`` -> ``ws://h:p/ws`` (https: wss).
    A ``ws://`` or ``wss://`` URL is returned as given."""
    if url.startswith(("ws://", "wss://")):
        return url
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'wss' if scheme == 'https' else 'ws'}://{host}/ws"


class Subscription:
    """An active subscription: an async iterator of its results (``params.result`` of each push).

    Shapes by kind (node/rpc/pubsub.py): ``newHeads`` header JSON; ``events`` the event JSON with
    ``txHash``, ``blockHeight``, ``blockHash``, ``index``, ``eventIndex``; ``txStatus``
    ``{"status": "admitted"|"committed"|"dropped", "txHash", "receipt"?, "reason"?}``. Iteration ends
    after ``unsubscribe`` or when the client closes the connection; it raises
    ``ConnectionClosedByNode`` when the node closes it (1008: this client read too slowly).
    """

    def __init__(self, client: WSClient, sid: str, kind: str, receive: trio.MemoryReceiveChannel[Any]) -> None:
        self.client = client
        self.id = sid
        self.kind = kind
        self._receive = receive

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.client.closed_by_node is not None:
                raise self.client.closed_by_node from None
            raise StopAsyncIteration from None

    async def next(self, timeout: float | None = None) -> Any:
        """The next result, waiting at most ``timeout`` seconds (None: forever). Raises
        ``trio.TooSlowError``, ``StopAsyncIteration`` (ended) or ``ConnectionClosedByNode``."""
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            return await self.__anext__()

    async def unsubscribe(self) -> bool:
        """``qnx_unsubscribe``; pushes already received stay readable, then iteration ends."""
        try:
            return bool(await self.client.call("qnx_unsubscribe", self.id))
        finally:
            self.client._end_subscription(self.id)


class WSClient:
    """JSON-RPC 2.0 over one WebSocket (RFC 6455) to ``/ws``: calls and subscriptions multiplexed.

    Open it with ``connect_websocket`` or ``AsyncClient.websocket``. One task reads every message and
    routes responses by ``id`` and pushes by subscription id, each subscription into a buffer of
    ``queue_size`` results; when a buffer is full the reader waits for its consumer, and so do all the
    other calls of the connection (and, past the node's ``[rpc] ws_queue_size``, the node cuts the
    connection off): read subscriptions promptly, or give each its own connection.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, *, queue_size: int = 1024) -> None:
        self._ws = ws
        self._queue_size = queue_size
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[trio.MemorySendChannel[Any], Callable[[Any], Any] | None]] = {}
        self._subs: dict[str, trio.MemorySendChannel[Any]] = {}
        self.closed_by_node: ConnectionClosedByNode | None = None
        """Set when the node closed the connection (its code and reason)."""
        self._done = False

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params``; returns the result. Raises ``RPCError`` or
        ``ConnectionClosedByNode``."""
        response = await self._request(method, list(params))
        return _result(response)

    async def _request(self, method: str, params: list[Any], on_result: Callable[[Any], Any] | None = None) -> Any:
        if self._done:
            raise self.closed_by_node or ConnectionClosedByNode(None, "connection closed")
        rid = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._pending[rid] = (send, on_result)
        try:
            try:
                await self._ws.send_message(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                                        "params": params}))
            except trio_websocket.ConnectionClosed as err:
                raise self._closed(err) from None
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                raise self.closed_by_node or ConnectionClosedByNode(None, "connection closed") from None
        finally:
            self._pending.pop(rid, None)

    @asynccontextmanager
    async def subscribe(self, kind: str, *args: Any) -> AsyncIterator[Subscription]:
        """``qnx_subscribe [kind, *args]``: ``("newHeads")``, ``("events", {contract?, name?, indexed?})`` or
        ``("txStatus", "0x<tx hash>")``; yields the ``Subscription`` and unsubscribes on exit (if the
        connection is still open). Raises ``RPCError`` (-32602 bad params, -32005 too many
        subscriptions), ``ConnectionClosedByNode``."""

        def register(result: Any) -> Any:  # in the reader, before it reads the first push
            if isinstance(result, str):
                send, receive = trio.open_memory_channel[Any](self._queue_size)
                self._subs[result] = send
                return Subscription(self, result, kind, receive)
            return result

        response = await self._request("qnx_subscribe", [kind, *args], register)
        sub = _result(response)
        if not isinstance(sub, Subscription):
            raise RPCError(-32603, "qnx_subscribe did not return a subscription id", sub)
        try:
            yield sub
        finally:
            if sub.id in self._subs and not self._done:
                with trio.move_on_after(5), trio.CancelScope(shield=True):
                    try:
                        await sub.unsubscribe()
                    except (RPCError, ConnectionClosedByNode):
                        pass
            self._end_subscription(sub.id)

    def _end_subscription(self, sid: str) -> None:
        send = self._subs.pop(sid, None)
        if send is not None:
            send.close()

    def _closed(self, err: trio_websocket.ConnectionClosed) -> ConnectionClosedByNode:
        reason = err.reason
        if self.closed_by_node is None and not self._done:
            self.closed_by_node = ConnectionClosedByNode(reason.code if reason else None,
                                                         (reason.reason or "") if reason else "")
        return self.closed_by_node or ConnectionClosedByNode(None, "connection closed")

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    text = await self._ws.get_message()
                except trio_websocket.ConnectionClosed as err:
                    self._closed(err)
                    return
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                for item in message if isinstance(message, list) else [message]:
                    await self._route(item)
        finally:
            self._done = True
            for send, _ in list(self._pending.values()):
                send.close()
            for send in list(self._subs.values()):
                send.close()
            self._subs.clear()

    async def _route(self, item: Any) -> None:
        if not isinstance(item, dict):
            return
        if item.get("method") == "qnx_subscription":
            params = item.get("params")
            params = params if isinstance(params, dict) else {}
            sid = params.get("subscription")
            send = self._subs.get(sid) if isinstance(sid, str) else None
            if send is not None:
                try:
                    await send.send(params.get("result"))
                except trio.ClosedResourceError:  # unsubscribed meanwhile
                    pass
            return
        entry = self._pending.get(item.get("id"))  # type: ignore[arg-type]
        if entry is None:
            return
        send, on_result = entry
        if on_result is not None and "result" in item:
            item = {**item, "result": on_result(item["result"])}
        send.send_nowait(item)


def _result(response: Any) -> Any:
    if isinstance(response, dict) and "error" in response:
        e = response["error"]
        raise RPCError(e.get("code", -32603), e.get("message", ""), e.get("data"))
    if not isinstance(response, dict):
        raise RPCError(-32603, "unexpected response", response)
    return response.get("result")


@asynccontextmanager
async def connect_websocket(url: str, *, token: str | None = None, queue_size: int = 1024,
                            max_message_bytes: int = 64 * 1024 * 1024) -> AsyncIterator[WSClient]:
    """Open a ``WSClient`` on ``url`` (``ws://host:port/ws``; ``ws_url`` converts an HTTP URL), closed
    (code 1000) on exit. ``token``: the admin bearer token, sent on the handshake. ``queue_size``:
    results buffered per subscription; ``max_message_bytes``: the largest message accepted from the node.

    Raises ``RPCError`` when the node refuses the handshake with a JSON-RPC error (-32005: its
    ``[rpc] max_connections`` is reached), ``trio_websocket.HandshakeError`` or ``OSError`` when
    it cannot be reached.
    """
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    entered = False
    try:
        async with trio_websocket.open_websocket_url(url, extra_headers=headers, message_queue_size=16,
                                                     max_message_size=max_message_bytes) as ws:
            entered = True
            client = WSClient(ws, queue_size=queue_size)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read_loop)
                try:
                    yield client
                finally:
                    client._done = True
                    nursery.cancel_scope.cancel()
    except trio_websocket.ConnectionRejected as err:
        if entered:
            raise
        try:
            body = json.loads(err.body or b"")
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            e = body["error"]
            raise RPCError(e.get("code", -32603), e.get("message", ""), e.get("data")) from None
        raise
