"""The Python client of the JSON-RPC API, and transaction building and signing for wallets.

Three lines from a notebook::

    from node.rpc.client import Client
    c = Client("http://127.0.0.1:8545")
    c.call("qnx_status")

``AsyncClient`` is the same on Trio (httpx over anyio). Errors come back as ``RPCError`` with the
code of shared/RPC.md. Amounts are integers in base units.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from contracts.vm import DEPLOYER
from crypto.keys import Address, KeyPair
from crypto.signatures import Context
from node.rpc.errors import RPCError
from state.codec import Value, encode
from state.types import Call, Transaction, TxBody

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


class Client:
    """Synchronous JSON-RPC client over HTTP (httpx). Raises ``RPCError``, ``httpx.HTTPError``."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout)
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


class AsyncClient:
    """The same client for Trio code (httpx.AsyncClient runs on Trio through anyio)."""

    def __init__(self, url: str, *, timeout: float = 60.0, max_connections: int = 100) -> None:
        self.url = url
        self._http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=max_connections))
        self._ids = itertools.count(1)

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

    async def balance(self, address: bytes, token: bytes) -> int:
        """Balance of ``address`` in ``token``, base units."""
        return int(await self.call("qnx_getBalance", "0x" + address.hex(), "0x" + token.hex()))
