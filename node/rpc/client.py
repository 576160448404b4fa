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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from consensus.exceptions import InvalidMessage
from consensus.replica import make_verifier, verify_certificate
from contracts.amm import CANONICAL_FACTORY, CANONICAL_ROUTER, FACTORY_CODE_ID, ROUTER_CODE_ID, pair_address
from contracts.builtin import UINT256_MAX
from contracts.vm import DEPLOYER, code_key, create_address, nonce_key, storage_key
from crypto.hashing import Hash32
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import Context
from node.exceptions import ProofRejected
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
