"""The Python client of the JSON-RPC API, and transaction building and signing for wallets.

Three lines from a notebook::

    from node.rpc.client import Client
    c = Client("http://127.0.0.1:8545")
    c.status()

Every method the node serves has a typed method (``RPCMethods``; ``SDK_METHODS`` maps the JSON-RPC
names to them): ``chain_id()``, ``get_balance(address, token)`` -> int, ``send_raw_transaction(raw)``
-> hash bytes, ``wait_for_receipt(tx_hash, timeout)`` ... Each is written once, as a sans-IO
``Operation``, and served blocking by ``Client`` (httpx) and as ``async`` methods by ``AsyncClient``
(Trio, httpx over anyio) and ``WSClient``; ``call(method, *params)`` stays for raw JSON. Bytes,
hashes and addresses are ``bytes``, amounts ``int`` in base units, times seconds. Errors come back
as ``RPCError`` with the code of shared/RPC.md; an unreachable node raises ``httpx.TransportError``.
Both clients are context managers (``with Client(url) as c``, ``async with AsyncClient(url) as c``).

Subscriptions (WebSocket ``/ws``, trio-websocket), on Trio::

    async with AsyncClient("http://127.0.0.1:8545").subscribe("newHeads") as heads:
        async for head in heads:          # header JSON, in height order
            print(head["height"])

``AsyncClient.websocket()`` opens one connection (``WSClient``) for several subscriptions and calls.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Final, Generic, Literal, ParamSpec, Self, TypeVar, cast, overload

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
from node.exceptions import ConnectionClosedByNode, NodeError, ProofRejected
from node.rpc.errors import INTERNAL_ERROR, RPCError
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
        raise RPCError(INTERNAL_ERROR, f"HTTP {response.status_code}: not JSON") from err
    return _result(doc)


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


# --- the typed methods: each defined once (sans-IO), served by Client, AsyncClient and WSClient -------

BlockSelector = int | Literal["latest", "earliest"]
"""A block: a height, ``"latest"`` (the newest committed) or ``"earliest"`` (the oldest still readable)."""

Params = Sequence[Any]
"""The positional JSON-RPC params a typed method's declaration builds from its Python arguments."""

NODE_WAIT_SECONDS = 30.0
"""How long ``qnx_sendRawTransactionAndWait`` waits when the call names no timeout (node/rpc/server.py)."""

_WAIT_MARGIN = 15.0
"""Seconds the HTTP read timeout allows beyond a node-side wait, for the answer to come back."""

T = TypeVar("T")
P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])


class ReceiptTimeout(NodeError, TimeoutError):
    """Raised by ``wait_for_receipt`` when the transaction has no receipt after ``timeout`` seconds.

    It may still be pending, have been dropped, or be unknown to this node (``get_transaction``
    tells: a dict while pending, None when the node does not know it).

    Attributes:
        tx_hash: the 32-byte hash waited for.
        timeout: the seconds waited.
    """

    def __init__(self, tx_hash: bytes, timeout: float) -> None:
        super().__init__(f"no receipt for 0x{bytes(tx_hash).hex()} after {timeout} s")
        self.tx_hash = tx_hash
        self.timeout = timeout


@dataclass(frozen=True)
class Request:
    """One JSON-RPC call an ``Operation`` asks its client to make; the client sends back the result.

    ``waits``: seconds the node may hold the answer (``qnx_sendRawTransactionAndWait``), so that an
    HTTP client stretches its read timeout to match.
    """

    method: str
    params: tuple[Any, ...] = ()
    waits: float | None = None

    def payload(self, rid: int) -> dict[str, Any]:
        """The JSON-RPC 2.0 request object, with id ``rid``."""
        return {"jsonrpc": "2.0", "id": rid, "method": self.method, "params": list(self.params)}


@dataclass(frozen=True)
class Sleep:
    """Sleep ``seconds``, then send back the client's clock in seconds (``time.monotonic`` for
    ``Client``, ``trio.current_time`` on Trio): an operation's only way to read the time."""

    seconds: float


Operation = Generator[Request | Sleep, Any, T]
"""A typed method's body (sans-IO): yields its actions, gets each one's outcome back, returns its result.
It touches no socket and no clock, so one body serves the blocking and the Trio clients alike."""

_ERRORS_NOTE = """

Raises, as every typed method: ``httpx.TransportError`` when the node cannot be reached or does not
answer within the client's timeout (on a ``WSClient``: ``ConnectionClosedByNode``); ``RPCError``
-32005 beyond a limit of the node (request rate, connections)."""


class RPCMethod(Generic[P, T]):
    """A typed SDK method, written once as an ``Operation`` and served by every client class.

    On a ``Client`` it is a blocking method returning ``T``; on an ``AsyncClient`` or a ``WSClient``
    an ``async`` one. ``rpc_name`` is the JSON-RPC method it wraps (None for a helper composed of
    other calls); ``op(client, *args)`` is the operation itself, for composing in other operations.
    """

    def __init__(self, op: Callable[Concatenate[Any, P], Operation[T]], rpc_name: str | None) -> None:
        self.op = op
        self.rpc_name = rpc_name
        self.__name__ = op.__name__
        self.__doc__ = inspect.cleandoc(op.__doc__ or "") + _ERRORS_NOTE
        signature = inspect.signature(op)
        returns = signature.return_annotation
        if isinstance(returns, str) and returns.startswith("Operation["):
            returns = returns.removeprefix("Operation[")[:-1]
        self.__signature__: inspect.Signature = signature.replace(
            parameters=list(signature.parameters.values())[1:], return_annotation=returns)

    def __repr__(self) -> str:
        return f"<typed method {self.__name__} ({self.rpc_name or 'helper'})>"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> RPCMethod[P, T]: ...

    @overload
    def __get__(self, obj: Client, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: _AsyncRunner, owner: type | None = None) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Client | _AsyncRunner | None, owner: type | None = None) -> Any:
        """The method bound to the client ``obj`` (through its ``_bind``); on the class, this descriptor."""
        return self if obj is None else obj._bind(self)


def operation(rpc_name: str | None = None) -> Callable[[Callable[Concatenate[Any, P], Operation[T]]],
                                                        RPCMethod[P, T]]:
    """Declare a typed method from an ``Operation`` generator function (``rpc_name``: the JSON-RPC
    method it serves, if it serves one)."""

    def declare(op: Callable[Concatenate[Any, P], Operation[T]]) -> RPCMethod[P, T]:
        return RPCMethod(op, rpc_name)

    return declare


def rpc(name: str, result: Callable[[Any], T]) -> Callable[[Callable[Concatenate[Any, P], Params]], RPCMethod[P, T]]:
    """Declare a typed method that is one call of the JSON-RPC method ``name``: the decorated function
    turns its Python arguments into the positional params, ``result`` turns the JSON result into the
    method's return value."""

    def declare(params: Callable[Concatenate[Any, P], Params]) -> RPCMethod[P, T]:
        @functools.wraps(params)
        def op(client: Any, /, *args: P.args, **kwargs: P.kwargs) -> Operation[T]:
            return result((yield Request(name, tuple(params(client, *args, **kwargs)))))

        method = RPCMethod(op, name)
        returns = result.__name__ if isinstance(result, type) else inspect.signature(result).return_annotation
        method.__signature__ = method.__signature__.replace(return_annotation=returns)
        return method

    return declare


def _named(bound: F, method: RPCMethod[Any, Any], client: object) -> F:
    """``bound`` (a client's closure over ``method``) named, documented and signed as the method."""
    fn: Any = bound
    fn.__name__ = method.__name__
    fn.__qualname__ = f"{type(client).__name__}.{method.__name__}"
    fn.__doc__ = method.__doc__
    fn.__signature__ = method.__signature__
    return bound


# parameter conversions (Python -> JSON)


def _hex(value: bytes) -> str:
    """A bytes param as ``0x``-hex. Raises ``TypeError`` for anything else (hex text: ``bytes.fromhex``)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(value).__name__} (hex text: use bytes.fromhex)")
    return "0x" + bytes(value).hex()


def _trim(*params: Any) -> list[Any]:
    """Positional params less the trailing Nones: optional params left out take the node's defaults."""
    end = len(params)
    while end and params[end - 1] is None:
        end -= 1
    return list(params[:end])


def _call_object(to: bytes, method: str, args: Sequence[Value], sender: bytes | None) -> dict[str, Any]:
    """The ``{from?, to, method, args}`` object of ``qnx_call`` and ``qnx_estimateGas``."""
    call = {"to": _hex(to), "method": method, "args": _jsonable(tuple(args))}
    if sender is not None:
        call["from"] = _hex(sender)
    return call


# result conversions (JSON -> Python); a node answering another shape is a -32603 RPCError


def _unexpected(result: Any) -> RPCError:
    return RPCError(INTERNAL_ERROR, "unexpected result", result)


def _as_json(result: Any) -> Any:
    """The JSON result as the node sent it."""
    return result


def _to_str(result: Any) -> str:
    if not isinstance(result, str):
        raise _unexpected(result)
    return result


def _to_int(result: Any) -> int:
    """A JSON integer, or a decimal string (amounts), as ``int``."""
    if isinstance(result, bool) or not isinstance(result, int | str):
        raise _unexpected(result)
    try:
        return int(result, 10) if isinstance(result, str) else result
    except ValueError:
        raise _unexpected(result) from None


def _to_bytes(result: Any) -> bytes:
    """A ``0x``-hex result as bytes."""
    if not isinstance(result, str) or not result.startswith("0x"):
        raise _unexpected(result)
    try:
        return bytes.fromhex(result[2:])
    except ValueError:
        raise _unexpected(result) from None


def _object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise _unexpected(result)
    return result


def _object_or_none(result: Any) -> dict[str, Any] | None:
    return None if result is None else _object(result)


def _objects(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, list):
        raise _unexpected(result)
    return [_object(item) for item in result]


def _amounts(result: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The object ``result`` with its decimal-string amount ``fields`` as ``int``."""
    obj = _object(result)
    return {**obj, **{name: _to_int(obj[name]) for name in fields if name in obj}}


def _token_info(result: Any) -> dict[str, Any]:
    return _amounts(result, ("totalSupply",))


POOL_AMOUNTS = ("reserve0", "reserve1", "totalSupply", "price0CumulativeLast", "price1CumulativeLast", "kLast")
"""The fields of a ``qnx_getPool`` result the SDK turns from decimal strings into ``int``."""


def _pool_info(result: Any) -> dict[str, Any] | None:
    return None if result is None else _amounts(result, POOL_AMOUNTS)


class RPCMethods:
    """Every typed method of the SDK, each defined once as an ``Operation`` (sans-IO): ``Client`` serves
    them blocking, ``AsyncClient`` and ``WSClient`` as ``async`` methods on Trio.

    Conventions: bytes, 32-byte hashes and 20-byte addresses are ``bytes`` (sent as 0x-hex); amounts
    are ``int`` in base units (the node's decimal strings converted); heights, nonces, indexes and gas
    are ``int``; times are seconds; ``block`` is a ``BlockSelector`` (None: the latest). Object
    results keep the JSON shape of shared/RPC.md (0x-hex strings inside) but for their amount fields,
    which become ``int``. ``RPCError.code`` is the node's (shared/RPC.md): -32602 invalid params (a
    hash or an address of the wrong length, a bad block selector), -32000 invalid input, -32001 not
    found, -32003 transaction rejected, -32005 limit exceeded, 3 execution reverted.
    ``SDK_METHODS`` maps each JSON-RPC method to its typed method.
    """

    # --- the chain and the node --------------------------------------------------------------------

    @rpc("qnx_chainId", _to_str)
    def chain_id(self) -> Params:
        """The chain id (``str``), which every transaction signs over."""
        return ()

    @rpc("qnx_status", _object)
    def status(self) -> Params:
        """The node's view of the chain: ``{chainId, nodeId, moniker, height, blockHash, stateRoot,
        timestamp (ms), view, validators (count), validatorIndex, peers, syncing, mempool,
        stableCheckpoint}``."""
        return ()

    @rpc("qnx_validators", _objects)
    def validators(self, block: BlockSelector | None = None) -> Params:
        """The validator set, in genesis order: ``[{index, name, address, publicKey, scheme, nodeId}]``
        (it does not change in this release, so ``block`` makes no difference)."""
        return _trim(block)

    @rpc("qnx_getEvidence", _objects)
    def get_evidence(self) -> Params:
        """Equivocations the node has seen (two signed, conflicting messages of one validator):
        ``[{validator (index), kind, view, height, first: {blockHash, signature}, second: {...}}]``."""
        return ()

    @rpc("rpc.discover", _object)
    def discover(self) -> Params:
        """The OpenRPC 1.2.6 document of the methods this node serves (``methods[].name``; the admin
        methods only where ``[rpc] admin_enabled``)."""
        return ()

    # --- transactions --------------------------------------------------------------------------------

    @rpc("qnx_sendRawTransaction", _to_bytes)
    def send_raw_transaction(self, raw: bytes) -> Params:
        """Submit a signed transaction (its canonical encoding, ``tx.encode()``); its 32-byte hash once
        the node admitted it to its mempool (committed later: ``wait_for_receipt``).

        Raises ``RPCError`` -32000 (bad encoding or signature, wrong chain id), -32003 (rejected:
        ``data.reason`` says nonce too low or too high, mempool full, gas limit, insufficient funds).
        """
        return (_hex(raw),)

    @operation("qnx_sendRawTransactionAndWait")
    def send_raw_transaction_and_wait(self, raw: bytes,
                                      timeout_seconds: float | None = None) -> Operation[dict[str, Any]]:
        """Submit ``raw`` as ``send_raw_transaction`` does (again with the same transaction: no harm) and
        return its receipt once the block holding it is committed (shape: ``get_receipt``).

        ``timeout_seconds``: how long the node waits (None: its default, 30 s; at most its ``[rpc]
        max_wait_seconds``); the HTTP read timeout stretches to outlast it. Raises ``RPCError`` as
        ``send_raw_transaction``, -32003 if the transaction is dropped from the mempool meanwhile,
        -32005 if it is not committed in time (``data.txHash``), -32602 for a timeout out of range.
        """
        waits = NODE_WAIT_SECONDS if timeout_seconds is None else timeout_seconds
        return _object((yield Request("qnx_sendRawTransactionAndWait", tuple(_trim(_hex(raw), timeout_seconds)),
                                      waits)))

    @operation()
    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 60.0, *,
                         interval: float = 0.25) -> Operation[dict[str, Any]]:
        """Poll ``qnx_getTransactionReceipt`` every ``interval`` seconds until the transaction
        ``tx_hash`` (32 bytes) is committed; its receipt (shape: ``get_receipt``).

        The last poll is at ``timeout`` seconds. Raises ``ReceiptTimeout`` (a ``TimeoutError``) when
        there is still no receipt then, ``RPCError`` -32602 for a hash that is not 32 bytes.
        """
        now = yield Sleep(0.0)
        deadline = now + timeout
        while (receipt := (yield from RPCMethods.get_receipt.op(self, tx_hash))) is None:
            if now >= deadline:
                raise ReceiptTimeout(tx_hash, timeout)
            now = yield Sleep(min(interval, deadline - now))
        return receipt

    @operation()
    def send_transaction(self, tx: Transaction, *, wait: bool = True, timeout: float = 60.0) -> Operation[Any]:
        """Submit the signed ``tx``. With ``wait``: its receipt dict once committed
        (``send_raw_transaction_and_wait`` with ``timeout`` seconds); without: its hash as the node
        sent it, 0x-hex ``str`` (``send_raw_transaction`` gives bytes). Raises as those two."""
        if wait:
            return (yield from RPCMethods.send_raw_transaction_and_wait.op(self, tx.encode(), timeout))
        return (yield Request("qnx_sendRawTransaction", (_hex(tx.encode()),)))

    @rpc("qnx_getTransaction", _object_or_none)
    def get_transaction(self, tx_hash: bytes) -> Params:
        """The transaction ``tx_hash`` (32 bytes), committed or pending: ``{hash, chainId, from, nonce,
        gasLimit, calls: [{to, method, args}], scheme, publicKey, signature, raw, blockHeight, blockHash,
        index}`` (the last three None while pending); None if the node does not know it.

        Raises ``RPCError`` -32602 for a hash that is not 32 bytes.
        """
        return (_hex(tx_hash),)

    @rpc("qnx_getTransactionReceipt", _object_or_none)
    def get_receipt(self, tx_hash: bytes) -> Params:
        """The receipt of the committed transaction ``tx_hash`` (32 bytes): ``{txHash, blockHeight,
        blockHash, index, status: "success" | "reverted", gasUsed, events: [{contract, name, topics,
        data}], output, revertReason}``; None while it is not committed (or unknown).

        Raises ``RPCError`` -32602 for a hash that is not 32 bytes.
        """
        return (_hex(tx_hash),)

    # --- blocks ----------------------------------------------------------------------------------------

    @rpc("qnx_getBlockByNumber", _object_or_none)
    def block_by_number(self, block: BlockSelector, full: bool = False) -> Params:
        """The committed block at ``block``: ``{hash, header: {chainId, height, view, hash, prevHash,
        timestamp (ms), proposer, txRoot, stateRoot, receiptsRoot, gasUsed}, transactions,
        commitCertificate: {height, view, blockHash, signatures}}``; ``transactions`` are 0x-hex hashes,
        or with ``full`` transaction objects (shape: ``get_transaction``). None past the head.

        Raises ``RPCError`` -32602 for a bad block selector.
        """
        return (block, full)

    @rpc("qnx_getBlockByHash", _object_or_none)
    def block_by_hash(self, block_hash: bytes, full: bool = False) -> Params:
        """The committed block whose hash is ``block_hash`` (32 bytes), as ``block_by_number``; None if
        there is none. Raises ``RPCError`` -32602 for a hash that is not 32 bytes."""
        return (_hex(block_hash), full)

    # --- state -----------------------------------------------------------------------------------------

    @rpc("qnx_getNonce", _to_int)
    def get_nonce(self, address: bytes, block: BlockSelector | None = None) -> Params:
        """The nonce the next transaction of ``address`` (20 bytes) must use, in the state of ``block``
        (0 for an account never used).

        Raises ``RPCError`` -32602 (an address not 20 bytes, a bad selector), -32001 (``block`` pruned
        or not committed yet; ``data.oldest`` and ``data.latest`` give the readable range).
        """
        return _trim(_hex(address), block)

    nonce = get_nonce

    @rpc("qnx_getBalance", _to_int)
    def get_balance(self, address: bytes, token: bytes, block: BlockSelector | None = None) -> Params:
        """The balance of ``address`` in the token contract ``token`` (both 20 bytes) at ``block``, in
        base units.

        Raises ``RPCError`` -32602 and -32001 as ``get_nonce``, 3 when ``token`` is not a token
        (execution reverted).
        """
        return _trim(_hex(address), _hex(token), block)

    balance = get_balance

    @rpc("qnx_getToken", _token_info)
    def get_token(self, token: bytes, block: BlockSelector | None = None) -> Params:
        """The token at ``token`` (20 bytes): ``{address, name, symbol, decimals, totalSupply (int, base
        units), minter (0x-hex, or None)}``.

        Raises ``RPCError`` -32001 (no token at this address, or ``block`` out of range), -32602.
        """
        return _trim(_hex(token), block)

    @rpc("qnx_getPool", _pool_info)
    def get_pool(self, token_a: bytes, token_b: bytes, block: BlockSelector | None = None, *,
                 factory: bytes | None = None) -> Params:
        """The AMM pool of ``token_a`` and ``token_b`` (either order) in the canonical factory, or in
        ``factory``: ``{address, token0, token1, factory, reserve0, reserve1, totalSupply,
        price0CumulativeLast, price1CumulativeLast, kLast, blockTimestampLast}`` (``POOL_AMOUNTS`` as
        ``int``; ``blockTimestampLast`` a block time in seconds mod 2**32); None if there is none.

        Raises ``RPCError`` -32602 (equal tokens, an address not 20 bytes), -32001 (``block`` out of range).
        """
        return _trim(_hex(token_a), _hex(token_b), block, None if factory is None else _hex(factory))

    pool = get_pool

    @rpc("qnx_getProof", _object)
    def get_proof(self, address: bytes, storage_keys: Sequence[bytes], block: BlockSelector | None = None) -> Params:
        """The account ``address`` (20 bytes) at ``block``: its nonce, code id and the ``storage_keys``
        slots (bytes), each ``{key, value, proof}`` (0x-hex; value None when absent), with the block's
        ``header``/``headerRaw`` and ``commitCertificate``/``certificateRaw``. Unverified: check it with
        ``verify_proof_result``, or call ``proven_account``.

        Raises ``RPCError`` -32001 (height 0, which has no certificate, or ``block`` out of range),
        -32005 (more than 256 keys), -32602.
        """
        return _trim(_hex(address), [_hex(key) for key in storage_keys], block)

    @operation()
    def proven_account(self, address: bytes, storage_keys: Sequence[bytes], *, chain_id: str,
                       validators: Sequence[tuple[int, bytes]],
                       block: BlockSelector = "latest") -> Operation[ProvenAccount]:
        """``get_proof`` for ``address`` and ``storage_keys`` at ``block``, verified with
        ``verify_proof_result`` against ``validators`` (``(scheme tag, public key)`` from your pinned
        genesis). Raises ``ProofRejected`` when the answer does not prove itself, and as ``get_proof``."""
        result = yield from RPCMethods.get_proof.op(self, address, storage_keys, block)
        return verify_proof_result(result, chain_id=chain_id, validators=validators, address=address,
                                   storage_keys=storage_keys, height=block if isinstance(block, int) else None)

    # --- contracts -------------------------------------------------------------------------------------

    @rpc("qnx_call", _as_json)
    def call_contract(self, to: bytes, method: str, args: Sequence[Value] = (), sender: bytes | None = None,
                      block: BlockSelector | None = None) -> Params:
        """Run ``method`` of the contract at ``to`` with ``args`` read-only (nothing is committed) on the
        state of ``block``, as ``sender`` (None: the zero address). ``args``: bytes, int, str, bool,
        None and tuples of them. The result as JSON: integers as decimal strings (``int()`` them),
        bytes as 0x-hex, arrays as lists.

        Raises ``RPCError`` 3 (execution reverted; ``data.reason``), -32602, -32001 (``block`` out of range).
        """
        return _trim(_call_object(to, method, args, sender), block)

    @operation()
    def read(self, to: bytes, method: str, *args: Value) -> Operation[Any]:
        """``call_contract(to, method, args)``, the arguments spread: on the latest state, as the zero
        address. Raises as ``call_contract``."""
        return (yield from RPCMethods.call_contract.op(self, to, method, args))

    @rpc("qnx_estimateGas", _to_int)
    def estimate_gas(self, to: bytes, method: str, args: Sequence[Value] = (), *, sender: bytes) -> Params:
        """The gas that ``method`` of ``to`` with ``args``, sent by ``sender`` as a transaction now, would
        use (with an ML-DSA-44 signature; add the margin you like for ``gas_limit``).

        Raises ``RPCError`` 3 (it would revert; ``data.reason``), -32602.
        """
        return (_call_object(to, method, args, sender),)

    # --- AMM helpers (contracts/amm.py) ------------------------------------------------------------

    @operation()
    def quote_out(self, amount_in: int, path: Sequence[bytes], *, router: bytes = CANONICAL_ROUTER) -> Operation[int]:
        """What ``amount_in`` of ``path[0]`` buys of ``path[-1]`` now, base units (the router's
        ``getAmountsOut``). Raises ``RPCError`` 3 (no pool along ``path``, a bad path)."""
        amounts = yield from RPCMethods.read.op(self, router, "getAmountsOut", amount_in, tuple(path))
        return int(amounts[-1])

    @operation()
    def quote_in(self, amount_out: int, path: Sequence[bytes], *, router: bytes = CANONICAL_ROUTER) -> Operation[int]:
        """What ``amount_out`` of ``path[-1]`` costs of ``path[0]`` now, base units (the router's
        ``getAmountsIn``). Raises ``RPCError`` 3 (no pool along ``path``, a bad path)."""
        amounts = yield from RPCMethods.read.op(self, router, "getAmountsIn", amount_out, tuple(path))
        return int(amounts[0])

    @operation()
    def swap_calls(self, path: Sequence[bytes], amount_in: int, to: bytes, deadline: int, *, slippage_bps: int = 50,
                   router: bytes = CANONICAL_ROUTER) -> Operation[list[Call]]:
        """Quote now, then build approve + ``swapExactTokensForTokens`` with amountOutMin = the quote less
        ``slippage_bps`` (``deadline``: a block time, seconds). Raises as ``quote_out``."""
        quoted = yield from RPCMethods.quote_out.op(self, amount_in, path, router=router)
        return swap_exact_in_calls(path, amount_in, quoted, to, deadline, slippage_bps=slippage_bps, router=router)

    @operation()
    def remove_liquidity_calls(self, token_a: bytes, token_b: bytes, liquidity: int, to: bytes, deadline: int, *,
                               slippage_bps: int = 50, router: bytes = CANONICAL_ROUTER,
                               factory: bytes = CANONICAL_FACTORY) -> Operation[list[Call]]:
        """``remove_liquidity_calls`` with minimums = this share of the pool's reserves now, less slippage.

        Raises ``ValueError`` if the pool does not exist, and as ``get_pool``.
        """
        pool = yield from RPCMethods.get_pool.op(self, token_a, token_b,
                                                 factory=None if factory == CANONICAL_FACTORY else factory)
        if pool is None:
            raise ValueError("no pool for these tokens")
        reserves = {_to_bytes(pool["token0"]): pool["reserve0"], _to_bytes(pool["token1"]): pool["reserve1"]}
        want_a, want_b = (liquidity * reserves[bytes(t)] // pool["totalSupply"] for t in (token_a, token_b))
        return remove_liquidity_calls(token_a, token_b, liquidity, min_with_slippage(want_a, slippage_bps),
                                      min_with_slippage(want_b, slippage_bps), to, deadline, router=router,
                                      factory=factory)

    # --- admin (served only with [rpc] admin_enabled) ----------------------------------------------

    @rpc("admin_peers", _objects)
    def admin_peers(self) -> Params:
        """The connected peers: ``[{nodeId, name (a validator's, None for an observer), address
        ("host:port"), direction, score}]``.

        Admin: raises ``RPCError`` -32601 unless the node has ``[rpc] admin_enabled``, and -32000 with
        ``data`` "unauthorized" without the client's ``token`` matching ``[rpc] admin_token`` (with no
        token configured, only loopback clients may call).
        """
        return ()

    @rpc("admin_flushMempool", _object)
    def admin_flush_mempool(self) -> Params:
        """Drop every pending transaction: ``{"dropped": n}`` (those waiting on them get -32003).
        Admin: raises as ``admin_peers``."""
        return ()

    @rpc("admin_setLogLevel", _object)
    def admin_set_log_level(self, module: str, level: str) -> Params:
        """Set the logger ``module`` ("" or "root": the root logger) to ``level`` (DEBUG, INFO, WARNING,
        ERROR or CRITICAL, any case) until the node reloads ``[log]``: ``{module, level, previous}``.
        Raises ``RPCError`` -32602 for a bad name or level; admin: as ``admin_peers``."""
        return (module, level)


SDK_METHODS: Final[dict[str, str]] = {
    method.rpc_name: method.__name__ for method in vars(RPCMethods).values()
    if isinstance(method, RPCMethod) and method.rpc_name is not None
}
"""Each JSON-RPC method -> the name of the typed method serving it in ``Client``, ``AsyncClient``, ``WSClient``."""

WEBSOCKET_METHODS: Final[dict[str, str]] = {"qnx_subscribe": "AsyncClient.subscribe",
                                            "qnx_unsubscribe": "Subscription.unsubscribe"}
"""The methods served over WebSocket only (HTTP answers -32601), and where the SDK has them: on Trio
(``AsyncClient.subscribe``, ``WSClient.subscribe``); ``Client``, blocking on HTTP, has none."""


def _http_timeout(request: Request, timeout: httpx.Timeout) -> httpx.Timeout:
    """The client's HTTP ``timeout``, its read timeout stretched to outlast a node-side wait of ``request``."""
    if request.waits is None or timeout.read is None or timeout.read >= request.waits + _WAIT_MARGIN:
        return timeout
    return httpx.Timeout(connect=timeout.connect, read=request.waits + _WAIT_MARGIN, write=timeout.write,
                         pool=timeout.pool)


def _batch_answer(response: httpx.Response) -> list[dict[str, Any]]:
    """The response objects of a batch; raises ``RPCError`` when the node refused it whole."""
    if response.status_code == 204:
        return []
    body = response.json()
    if isinstance(body, dict):  # one error for the whole batch
        _unwrap(response)
    return list(body)


class Client(RPCMethods):
    """Blocking JSON-RPC client over HTTP (httpx): ``call`` and every typed method of ``RPCMethods``.

    ``with Client("http://127.0.0.1:8545") as c: c.status()``. Raises ``RPCError`` (the node's
    answer, with the code of shared/RPC.md) and ``httpx.TransportError`` (unreachable, timed out).
    """

    def __init__(self, url: str, *, timeout: float = 30.0, token: str | None = None) -> None:
        """``url``: the node's HTTP JSON-RPC endpoint; ``timeout``: seconds per HTTP request; ``token``:
        the ``[rpc] admin_token``, sent as ``Authorization: Bearer`` (needed for admin methods only)."""
        self.url = url
        self._http = httpx.Client(timeout=timeout, headers={"authorization": f"Bearer {token}"} if token else None)
        self._ids = itertools.count(1)

    def __enter__(self) -> Self:
        """The client; ``close`` on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the connection pool."""
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params`` (JSON values); returns the JSON result. Raises
        ``RPCError`` (the node's error) and ``httpx.TransportError``."""
        return self._send(Request(method, params))

    def batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send a JSON-RPC 2.0 batch of request objects; returns the response objects as the node sent
        them (any order: match them by ``id``), errors included, not raised.

        Raises ``httpx.TransportError`` when the node cannot be reached, and ``RPCError`` when the
        whole batch is refused (oversize batch or body: -32005; parse error).
        """
        return _batch_answer(self._http.post(self.url, json=requests))

    def _send(self, request: Request) -> Any:
        return _unwrap(self._http.post(self.url, json=request.payload(next(self._ids)),
                                       timeout=_http_timeout(request, self._http.timeout)))

    def _perform(self, action: Request | Sleep) -> Any:
        if isinstance(action, Sleep):
            time.sleep(action.seconds)
            return time.monotonic()
        return self._send(action)

    def _run(self, op: Operation[T]) -> T:
        """Run ``op`` to its result, blocking."""
        try:
            action = next(op)
            while True:
                action = op.send(self._perform(action))
        except StopIteration as done:
            return cast(T, done.value)

    def _bind(self, method: RPCMethod[P, T]) -> Callable[P, T]:
        def bound(*args: P.args, **kwargs: P.kwargs) -> T:
            return self._run(method.op(self, *args, **kwargs))

        return _named(bound, method, self)


class _AsyncRunner(RPCMethods):
    """Serves the typed methods on Trio, as ``async`` methods; subclasses send the requests."""

    _send: Callable[[Request], Awaitable[Any]]
    """One request to the node, answered with its result (``AsyncClient``: HTTP; ``WSClient``: WebSocket)."""

    async def _perform(self, action: Request | Sleep) -> Any:
        if isinstance(action, Sleep):
            await trio.sleep(action.seconds)
            return trio.current_time()
        return await self._send(action)

    async def _run(self, op: Operation[T]) -> T:
        """Run ``op`` to its result."""
        try:
            action = next(op)
            while True:
                action = op.send(await self._perform(action))
        except StopIteration as done:
            return cast(T, done.value)

    def _bind(self, method: RPCMethod[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
        async def bound(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self._run(method.op(self, *args, **kwargs))

        return _named(bound, method, self)


class AsyncClient(_AsyncRunner):
    """The same client for Trio code (httpx.AsyncClient runs on Trio through anyio): ``call`` and every
    typed method of ``RPCMethods`` as ``async`` methods, plus WebSocket subscriptions.

    ``async with AsyncClient("http://127.0.0.1:8545") as c: await c.status()``. Raises ``RPCError`` and
    ``httpx.TransportError`` as ``Client``.
    """

    def __init__(self, url: str, *, timeout: float = 60.0, max_connections: int = 100,
                 token: str | None = None) -> None:
        """``url``: the node's HTTP JSON-RPC endpoint (``http://host:port``); ``timeout``: seconds per HTTP
        request; ``token``: the ``[rpc] admin_token``, sent as ``Authorization: Bearer`` for admin
        methods (HTTP and WebSocket)."""
        self.url = url
        self.token = token
        headers = {"authorization": f"Bearer {token}"} if token else None
        self._http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=max_connections),
                                       headers=headers)
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        """The client; ``aclose`` on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connection pool."""
        await self.aclose()

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
        """Call ``method`` with positional ``params`` (JSON values); returns the JSON result. Raises
        ``RPCError`` (the node's error) and ``httpx.TransportError``."""
        return await self._send(Request(method, params))

    async def batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send a JSON-RPC 2.0 batch (§6) of request objects; returns the response objects as the
        node sent them (any order; match them by ``id``), errors included, not raised.

        Raises ``httpx.TransportError`` when the node cannot be reached, and ``RPCError`` when the
        whole batch is refused (oversize batch or body: -32005; parse error).
        """
        return _batch_answer(await self._http.post(self.url, json=requests))

    async def _send(self, request: Request) -> Any:
        return _unwrap(await self._http.post(self.url, json=request.payload(next(self._ids)),
                                             timeout=_http_timeout(request, self._http.timeout)))


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


class WSClient(_AsyncRunner):
    """JSON-RPC 2.0 over one WebSocket (RFC 6455) to ``/ws``: calls, every typed method of
    ``RPCMethods`` (``async``), and subscriptions, multiplexed.

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
        return await self._send(Request(method, params))

    async def _send(self, request: Request) -> Any:
        return _result(await self._request(request.method, list(request.params)))

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
