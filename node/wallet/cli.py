"""``qenex-wallet``: a command-line wallet over the JSON-RPC API (shared/RPC.md).

    qenex-wallet new                                    # a new encrypted keystore (never overwrites)
    qenex-wallet address
    qenex-wallet balance [ADDRESS] --token TOKEN         # e.g. "10.5 USDC"
    qenex-wallet nonce [ADDRESS]
    qenex-wallet transfer TO AMOUNT --token TOKEN
    qenex-wallet approve SPENDER AMOUNT|max --token TOKEN
    qenex-wallet token create NAME SYMBOL DECIMALS [--supply AMOUNT]
    qenex-wallet token mint TOKEN TO AMOUNT
    qenex-wallet amm deploy                              # the canonical factory and router, once per chain
    qenex-wallet pool create TOKEN_A TOKEN_B
    qenex-wallet add-liquidity TOKEN_A TOKEN_B AMOUNT_A AMOUNT_B [--slippage 0.5%] [--deadline 300s]
    qenex-wallet remove-liquidity TOKEN_A TOKEN_B LIQUIDITY|all [--slippage 0.5%] [--deadline 300s]
    qenex-wallet swap AMOUNT TOKEN_IN TOKEN_OUT [--via TOKEN ...] [--slippage 0.5%] [--deadline 300s]
    qenex-wallet quote AMOUNT TOKEN_IN TOKEN_OUT [--via TOKEN ...]
    qenex-wallet tx HASH
    qenex-wallet watch [--token TOKEN] [--event NAME] [--address ADDRESS]   # live events
    qenex-wallet watch --heads                           # live block headers
    qenex-wallet watch --tx HASH                         # a transaction until committed or dropped

Every command takes ``--rpc URL`` (env ``QENEX_RPC``, default http://127.0.0.1:8545), ``--keystore
PATH`` (env ``QENEX_KEYSTORE``) and ``--json`` (one JSON document on stdout). The keystore password
comes from ``--password-file``, the environment (``QENEX_PASSWORD``, or ``QENEX_PASSPHRASE`` as for
``qenex-node keygen``), or a prompt when stdin is a terminal; it is never an argument.

Tokens are given by their 0x address. Amounts on the command line and on screen are human amounts
in the token's decimals (``node.wallet.amounts``); ``--json`` gives base units as decimal strings
next to them. Transaction commands fetch the nonce, sign with the keystore key, wait for the block
holding the transaction to commit (``qnx_sendRawTransactionAndWait``; ``--no-wait`` prints the hash
only) and print the receipt.

Exit status: 0 done; 1 the node or the chain said no (an RPC error, a reverted transaction, nothing
found, node unreachable); 2 unusable input (arguments, keystore, password). Expected errors are one
line on stderr, never a traceback.

``watch`` streams what the node pushes over its WebSocket subscriptions (``qnx_subscribe`` on
``/ws``, ``node.rpc.pubsub``), one item per line (``--json``: one JSON object per line), until
``--count N`` items, Ctrl-C (exit status 0) or, with ``--tx``, the commit (0; 1 if it reverted) or
the drop (1) of the transaction. A node that cannot be reached or cuts the subscription off is an
error (exit status 1).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio
import trio_websocket
from rich.console import Console
from rich.text import Text

from contracts.amm import CANONICAL_FACTORY, CANONICAL_ROUTER, pair_address
from contracts.builtin import UINT256_MAX
from contracts.vm import contract_address
from crypto.exceptions import CryptoError, KeystoreError
from crypto.keys import ADDRESS_LEN, Address, KeyPair
from crypto.keystore import load_keystore, read_passphrase, save_keystore
from crypto.signatures import scheme_by_name
from node.exceptions import ConnectionClosedByNode
from node.rpc.client import (
    AMM_GAS_LIMIT,
    DEFAULT_GAS_LIMIT,
    Client,
    Subscription,
    WSClient,
    add_liquidity_calls,
    approve_call,
    connect_websocket,
    create_pool_call,
    deploy_amm_calls,
    deploy_token_call,
    min_with_slippage,
    sign_transaction,
    swap_exact_in_calls,
    transfer_call,
    ws_url,
)
from node.rpc.errors import (
    EXECUTION_REVERTED,
    INTERNAL_ERROR,
    INVALID_INPUT,
    INVALID_PARAMS,
    LIMIT_EXCEEDED,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    TX_REJECTED,
    RPCError,
)
from node.rpc.pubsub import TOPIC_NAMES
from node.wallet.amounts import format_amount, parse_amount, parse_duration, parse_slippage
from node.wallet.exceptions import NodeUnreachable, RemoteError, UsageError, WalletError
from state.types import Call

T = TypeVar("T")

PROG = "qenex-wallet"
DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_SLIPPAGE = "0.5%"
DEFAULT_DEADLINE = "300s"
DEFAULT_WAIT_SECONDS = 60.0
TOKEN_GAS_LIMIT = 250_000
"""Gas limit of ``token create`` (a deploy and, with ``--supply``, a mint) with an ML-DSA-44 key."""
AMM_DEPLOY_GAS_LIMIT = 1_000_000
"""Gas limit of ``amm deploy`` (two contract creations)."""


# --- parsing what the user typed ----------------------------------------------------------------------


def parse_address(text: str, what: str = "address") -> bytes:
    """The 20 bytes of a ``0x``-hex address. Raises ``UsageError`` naming ``what``."""
    if not text.startswith(("0x", "0X")):
        raise UsageError(f"invalid {what} {text!r}: expected 0x followed by {2 * ADDRESS_LEN} hex digits")
    try:
        raw = bytes.fromhex(text[2:])
    except ValueError:
        raise UsageError(f"invalid {what} {text!r}: not hex") from None
    if len(raw) != ADDRESS_LEN:
        raise UsageError(f"invalid {what} {text!r}: {len(raw)} bytes, an address has {ADDRESS_LEN}")
    return raw


def parse_tx_hash(text: str) -> bytes:
    """The 32 bytes of a ``0x``-hex transaction hash. Raises ``UsageError``."""
    try:
        raw = bytes.fromhex(text[2:]) if text.startswith("0x") else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError(f"invalid transaction hash {text!r}: expected 0x followed by 64 hex digits")
    return raw


def hexa(b: bytes) -> str:
    """``0x`` + lowercase hex."""
    return "0x" + bytes(b).hex()


def rpc_error_message(err: RPCError) -> str:
    """One line for the user saying what the node's JSON-RPC error ``err`` means (codes of shared/RPC.md)."""
    data = err.data
    reason = data.get("reason") if isinstance(data, dict) else None
    detail = data.get("detail") if isinstance(data, dict) else None
    if err.code == EXECUTION_REVERTED:
        return f"execution reverted: {reason or err.message}"
    if err.code == TX_REJECTED:
        text = f"transaction rejected by the node: {reason or err.message}"
        return text + (f" ({detail})" if detail else "")
    if err.code == INVALID_INPUT:
        what = detail or reason or (data if isinstance(data, str) else None) or err.message
        return f"invalid input: {what}" + (f" ({reason})" if detail and reason else "")
    if err.code == NOT_FOUND:
        return f"not found: {err.message}" + (f" ({data})" if isinstance(data, str) else "")
    if err.code == LIMIT_EXCEEDED:
        tx_hash = data.get("txHash") if isinstance(data, dict) else None
        if tx_hash:
            return (f"limit exceeded: {err.message}; the transaction may still commit, "
                    f"see `{PROG} tx {tx_hash}`")
        retry = data.get("retryAfterSeconds") if isinstance(data, dict) else None
        if retry is not None:
            return f"limit exceeded: {err.message}; retry after {retry} s"
        return f"limit exceeded: {err.message}" + (f" ({data})" if data is not None else "")
    if err.code == METHOD_NOT_FOUND:
        return f"the node does not implement this: {err.message}"
    if err.code == INVALID_PARAMS:
        return f"invalid params: {err.message}"
    return f"RPC error {err.code}: {err.message}" + (f" ({data})" if data is not None else "")


# --- tokens -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenMeta:
    """What the wallet shows of a token: its address, symbol and decimals (base units = 10**-decimals)."""

    address: bytes
    symbol: str
    decimals: int

    def fmt(self, units: int) -> str:
        """``units`` base units as a human amount with the symbol (``"10.5 USDC"``)."""
        return f"{format_amount(units, self.decimals)} {self.symbol}"

    def parse(self, text: str) -> int:
        """Base units of the human amount ``text``. Raises ``AmountError``."""
        return parse_amount(text, self.decimals)


# --- output -------------------------------------------------------------------------------------------

Line = str | Text


@dataclass
class Result:
    """What a command has to say: ``doc`` for ``--json``, ``lines`` for people, and ``error`` when it
    failed after producing output (a reverted transaction): printed last, it sets the exit status.
    ``streamed``: the command printed its output as it went (``watch``); only ``error`` is left."""

    doc: dict[str, Any]
    lines: list[Line] = field(default_factory=list)
    error: WalletError | None = None
    streamed: bool = False


# --- the session: one node, one keystore ---------------------------------------------------------------


class Wallet:
    """One command's view of the node at ``url`` and of the keystore; turns transport and RPC faults
    into ``WalletError`` (``NodeUnreachable``, ``RemoteError``) and caches token metadata and the key."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url: str = args.rpc
        self.wait_seconds: float = getattr(args, "timeout", DEFAULT_WAIT_SECONDS)
        # the HTTP timeout must outlast a qnx_sendRawTransactionAndWait that waits wait_seconds
        self.client = Client(self.url, timeout=self.wait_seconds + 15.0)
        self._tokens: dict[bytes, TokenMeta] = {}
        self._key: KeyPair | None = None
        self._nonce: int | None = None
        self.clock: Callable[[], float] = time.time
        """Wall clock, seconds (only for deadlines: ``deadline``)."""

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    # transport ----------------------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """``method(params)`` on the node. Raises ``RemoteError`` (the node's JSON-RPC error) and
        ``NodeUnreachable``/``WalletError`` (transport)."""
        return self.guard(lambda: self.client.call(method, *params))

    def guard(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which talks to the node through ``self.client``), translating its errors."""
        try:
            return fn()
        except RPCError as err:
            raise remote_error(err) from err
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as err:
            raise UsageError(f"invalid node URL {self.url!r}: {err}") from err
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise NodeUnreachable(self.url) from err
        except httpx.TimeoutException as err:
            raise WalletError(f"node at {self.url} did not answer in time ({type(err).__name__})") from err
        except httpx.HTTPError as err:
            raise NodeUnreachable(self.url, f"{type(err).__name__}: {err}") from err

    # keystore -----------------------------------------------------------------------------------------

    def keystore_path(self) -> Path:
        """The keystore file (``--keystore`` or ``QENEX_KEYSTORE``). Raises ``UsageError`` if neither is set."""
        path = self.args.keystore or os.environ.get("QENEX_KEYSTORE")
        if not path:
            raise UsageError("no keystore: give --keystore PATH or set QENEX_KEYSTORE")
        return Path(path).expanduser()

    def keystore_address(self) -> bytes:
        """The address a keystore file declares, read without the password (like ``geth account list``).

        Signing commands open the keystore, which checks this address against the key. Raises
        ``UsageError`` if the file is missing or malformed.
        """
        path = self.keystore_path()
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"no keystore at {path} (create one with `{PROG} new`)") from None
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read keystore {path}: {err}") from err
        if not isinstance(doc, dict) or not isinstance(doc.get("address"), str):
            raise UsageError(f"keystore {path} has no address")
        return parse_address(doc["address"], f"address in keystore {path}")

    def key(self) -> KeyPair:
        """The keystore's key, opened with the password. Raises ``UsageError`` (no keystore, no or
        wrong password, malformed file)."""
        if self._key is None:
            path = self.keystore_path()
            if not path.exists():
                raise UsageError(f"no keystore at {path} (create one with `{PROG} new`)")
            try:
                self._key = load_keystore(path, password(self.args))
            except KeystoreError as err:
                raise UsageError(f"keystore {path}: {err}") from err
        return self._key

    def address_or_mine(self, text: str | None) -> bytes:
        """``text`` parsed as an address, or the keystore's address when it is None."""
        return self.keystore_address() if text is None else parse_address(text)

    # chain reads --------------------------------------------------------------------------------------

    def token(self, address: bytes) -> TokenMeta:
        """Symbol and decimals of the token at ``address`` (``qnx_getToken``; an AMM pool's LP shares
        through their ERC-20 reads). Raises ``RemoteError`` when no token is there."""
        if address in self._tokens:
            return self._tokens[address]
        try:
            info = self.call("qnx_getToken", hexa(address))
            meta = TokenMeta(address, str(info["symbol"]), int(info["decimals"]))
        except RemoteError as err:
            # other ERC-20s through their own reads: nodes before the qnx_getToken fix answered -32603
            # for an AMM pool's LP shares
            if err.code not in (NOT_FOUND, INTERNAL_ERROR):
                raise
            found = self.erc20(address)
            if found is None:
                raise RemoteError(f"no token at {hexa(address)}", NOT_FOUND) from None
            meta = found
        self._tokens[address] = meta
        return meta

    def erc20(self, address: bytes) -> TokenMeta | None:
        """Symbol and decimals through the ERC-20 ``symbol``/``decimals`` reads, None if ``address``
        has no such methods."""
        if address in self._tokens:
            return self._tokens[address]
        try:
            symbol = self.call("qnx_call", {"to": hexa(address), "method": "symbol", "args": []})
            decimals = int(self.call("qnx_call", {"to": hexa(address), "method": "decimals", "args": []}))
        except RemoteError as err:
            if err.code in (EXECUTION_REVERTED, INVALID_PARAMS):
                return None
            raise
        meta = TokenMeta(address, str(symbol), decimals)
        self._tokens[address] = meta
        return meta

    def balance(self, owner: bytes, token: bytes) -> int:
        """Balance of ``owner`` in ``token``, base units."""
        return int(self.call("qnx_getBalance", hexa(owner), hexa(token)))

    def deadline(self, text: str) -> int:
        """Block time (seconds) ``text`` (a duration, ``parse_duration``) after the latest block's time.

        Counted from the later of the latest block's time and this machine's clock: on a chain that
        makes no empty blocks the latest block may be hours old, and a deadline counted from it
        alone would already have passed when the transaction lands.
        """
        seconds = parse_duration(text)
        block = self.call("qnx_getBlockByNumber", "latest", False)
        return max(int(block["header"]["timestamp"]) // 1000, int(self.clock())) + seconds

    def require_amm(self) -> None:
        """Raises ``RemoteError`` with a hint when the canonical AMM router is not on this chain."""
        try:
            self.call("qnx_call", {"to": hexa(CANONICAL_ROUTER), "method": "factory", "args": []})
        except RemoteError as err:
            if err.code != EXECUTION_REVERTED:
                raise
            raise RemoteError(f"the AMM is not deployed on this chain (router {hexa(CANONICAL_ROUTER)}); "
                              f"run `{PROG} amm deploy` once", NOT_FOUND) from None

    def quote(self, amount_in: int, path: Sequence[bytes]) -> int:
        """What ``amount_in`` base units of ``path[0]`` buy of ``path[-1]`` now, base units.

        Raises ``RemoteError`` (no pool on the path, not enough liquidity, no AMM).
        """
        try:
            return self.guard(lambda: self.client.quote_out(amount_in, path))
        except RemoteError as err:
            if err.code == EXECUTION_REVERTED and (err.reason or "").startswith("no contract at"):
                self.require_amm()
                names = " -> ".join(self.token(t).symbol for t in path)
                raise RemoteError(f"no pool for every pair of the path {names}", NOT_FOUND) from None
            raise

    # transactions -------------------------------------------------------------------------------------

    def nonce(self) -> int:
        """The nonce this command's transaction uses: ``--nonce``, else the account's next nonce."""
        if self._nonce is None:
            given = getattr(self.args, "nonce", None)
            self._nonce = given if given is not None else int(self.call("qnx_getNonce", hexa(self.key().address)))
        return self._nonce

    def transact(self, calls: Sequence[Call], gas_limit: int, summary: Result,
                 describe: Callable[[dict[str, Any]], Result] | None = None) -> Result:
        """Sign ``calls`` as one transaction and send it; ``summary`` says what it does.

        Without ``--no-wait``, waits for the receipt and appends it (and what ``describe`` makes of
        a successful one) to ``summary``; a reverted transaction sets ``summary.error``.
        Raises ``RemoteError`` (rejected, timed out) and what ``key`` and ``call`` raise.
        """
        key = self.key()
        limit = self.args.gas_limit if getattr(self.args, "gas_limit", None) else gas_limit
        tx = sign_transaction(key, self.call("qnx_chainId"), self.nonce(), list(calls), limit)
        raw = hexa(tx.encode())
        summary.doc["from"] = hexa(key.address)
        if getattr(self.args, "no_wait", False):
            tx_hash = self.call("qnx_sendRawTransaction", raw)
            summary.doc.update(txHash=tx_hash, receipt=None)
            summary.lines.append(f"sent {tx_hash} (not waiting; see `{PROG} tx {tx_hash}`)")
            return summary
        receipt = self.call("qnx_sendRawTransactionAndWait", raw, self.wait_seconds)
        summary.doc.update(txHash=receipt["txHash"], receipt=receipt)
        summary.lines.extend(self.receipt_lines(receipt))
        if receipt["status"] != "success":
            reason = receipt.get("revertReason") or "no reason given"
            summary.error = RemoteError(f"execution reverted: {reason}", EXECUTION_REVERTED, reason)
        elif describe is not None:
            extra = describe(receipt)
            summary.doc.update(extra.doc)
            summary.lines.extend(extra.lines)
        return summary

    def receipt_lines(self, receipt: dict[str, Any]) -> list[Line]:
        """A receipt for people: status, block, gas, then one line per event (Transfer and Approval
        amounts in the token's human units)."""
        ok = receipt["status"] == "success"
        head = Text()
        head.append(receipt["status"], style="bold green" if ok else "bold red")
        head.append(f"  tx {receipt['txHash']}  block {receipt['blockHeight']}  gas used {receipt['gasUsed']}")
        if not ok:
            head.append(f"  reason: {receipt.get('revertReason') or 'none given'}")
        lines: list[Line] = [head]
        lines.extend("  " + self.event_line(ev) for ev in receipt.get("events") or [])
        return lines

    def event_line(self, ev: dict[str, Any]) -> str:
        """One event: ``Transfer 10.5 ALP 0xfrom -> 0xto``; other events with their raw topics and data."""
        name, topics, data = ev.get("name"), ev.get("topics") or [], ev.get("data") or []
        if name in ("Transfer", "Approval") and len(topics) == 2 and len(data) == 1:
            try:
                meta = self.erc20(parse_address(ev["contract"]))
                units = int(data[0])
                if meta is not None and name == "Transfer":
                    return f"Transfer  {meta.fmt(units)}  {topics[0]} -> {topics[1]}"
                if meta is not None:
                    amount = f"unlimited {meta.symbol}" if units == UINT256_MAX else meta.fmt(units)
                    return f"Approval  {amount}  owner {topics[0]} spender {topics[1]}"
            except (WalletError, ValueError, KeyError, TypeError):
                pass  # not an ERC-20 we can read: shown raw below
        return f"{name}  {ev.get('contract')}  topics {json.dumps(topics)}  data {json.dumps(data)}"


def password(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    """The keystore password: ``--password-file``, else ``QENEX_PASSWORD`` (or ``QENEX_PASSPHRASE``),
    else a prompt (twice with ``confirm``) when stdin is a terminal.

    Raises ``UsageError`` when there is none, it is empty, or the two entries differ.
    """
    try:
        if args.password_file:
            return read_passphrase(file=args.password_file)
        for env in ("QENEX_PASSWORD", "QENEX_PASSPHRASE"):
            if os.environ.get(env):
                return read_passphrase(env=env)
    except KeystoreError as err:
        raise UsageError(str(err)) from err
    if not sys.stdin.isatty():
        raise UsageError("no password: give --password-file FILE or set QENEX_PASSWORD "
                         "(or run in a terminal to be asked)")
    try:
        first = getpass.getpass("keystore password: ").encode()
        if not first:
            raise UsageError("empty password")
        if confirm and getpass.getpass("again: ").encode() != first:
            raise UsageError("the passwords differ")
    except EOFError:
        raise UsageError("no password entered") from None
    return first


def write_new_keystore(path: Path, key: KeyPair, passphrase: bytes) -> None:
    """Write ``key`` sealed under ``passphrase`` to ``path``, which must not exist.

    The sealed file is written aside, then hard-linked into place: the link fails if ``path``
    appeared meanwhile, so no existing keystore is ever replaced. Raises ``UsageError``.
    """
    if path.exists():
        raise UsageError(f"{path} exists; refusing to overwrite a keystore")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err}") from err
    os.close(fd)
    try:
        save_keystore(Path(tmp), key, passphrase)
        os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} exists; refusing to overwrite a keystore") from None
    except (OSError, KeystoreError) as err:
        raise UsageError(f"cannot write {path}: {err}") from err
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- commands -----------------------------------------------------------------------------------------


def cmd_new(w: Wallet, args: argparse.Namespace) -> Result:
    """``new``: generate a key and write its encrypted keystore."""
    path = w.keystore_path()
    if path.exists():
        raise UsageError(f"{path} exists; refusing to overwrite a keystore")
    try:
        scheme = scheme_by_name(args.scheme)
    except CryptoError as err:
        raise UsageError(str(err)) from err
    key = KeyPair.generate(scheme)
    write_new_keystore(path, key, password(args, confirm=True))
    doc = {"address": hexa(key.address), "scheme": scheme.name, "keystore": str(path)}
    return Result(doc, [f"new {scheme.name} account {hexa(key.address)} in {path}"])


def cmd_address(w: Wallet, args: argparse.Namespace) -> Result:
    """``address``: the keystore's address."""
    address = hexa(w.keystore_address())
    return Result({"address": address}, [address])


def cmd_balance(w: Wallet, args: argparse.Namespace) -> Result:
    """``balance``: one token balance, human and in base units (``--json``)."""
    owner, token = w.address_or_mine(args.address), parse_address(args.token, "token")
    meta = w.token(token)
    units = w.balance(owner, token)
    doc = {"address": hexa(owner), "token": hexa(token), "symbol": meta.symbol, "decimals": meta.decimals,
           "balance": str(units), "amount": format_amount(units, meta.decimals)}
    return Result(doc, [meta.fmt(units)])


def cmd_nonce(w: Wallet, args: argparse.Namespace) -> Result:
    """``nonce``: the next nonce of an account."""
    owner = w.address_or_mine(args.address)
    nonce = int(w.call("qnx_getNonce", hexa(owner)))
    return Result({"address": hexa(owner), "nonce": nonce}, [str(nonce)])


def cmd_transfer(w: Wallet, args: argparse.Namespace) -> Result:
    """``transfer``: send a token amount."""
    to, token = parse_address(args.to, "recipient"), parse_address(args.token, "token")
    meta = w.token(token)
    units = meta.parse(args.amount)
    summary = Result({"to": hexa(to), "token": hexa(token), "amount": str(units)},
                     [f"transfer {meta.fmt(units)} to {hexa(to)}"])
    return w.transact([transfer_call(token, to, units)], DEFAULT_GAS_LIMIT, summary)


def cmd_approve(w: Wallet, args: argparse.Namespace) -> Result:
    """``approve``: let a spender move up to an amount (``max``: unlimited) of a token."""
    spender, token = parse_address(args.spender, "spender"), parse_address(args.token, "token")
    meta = w.token(token)
    unlimited = args.amount.lower() in ("max", "unlimited")
    units = UINT256_MAX if unlimited else meta.parse(args.amount)
    shown = f"unlimited {meta.symbol}" if unlimited else meta.fmt(units)
    summary = Result({"spender": hexa(spender), "token": hexa(token), "amount": str(units)},
                     [f"approve {hexa(spender)} to spend {shown}"])
    return w.transact([approve_call(token, spender, units)], DEFAULT_GAS_LIMIT, summary)


def cmd_token_create(w: Wallet, args: argparse.Namespace) -> Result:
    """``token create``: deploy a ``token/v1`` with this account as minter; ``--supply`` mints to it."""
    decimals = args.decimals
    supply = parse_amount(args.supply, decimals) if args.supply is not None else None
    me = w.key().address
    calls = [deploy_token_call(args.name, args.symbol, decimals, me)]
    expected = contract_address(me, w.nonce(), 0)  # the first contract this transaction deploys
    if supply:
        calls.append(Call(expected, "mint", (me, supply)))
    meta = TokenMeta(expected, args.symbol, decimals)
    lines: list[Line] = [f"create token {args.symbol} ({args.name}, {decimals} decimals)"
                         + (f", minting {meta.fmt(supply)} to {hexa(me)}" if supply else "")]

    def describe(receipt: dict[str, Any]) -> Result:
        token = parse_address(receipt["output"][0], "token")
        return Result({"token": hexa(token)}, [f"token {args.symbol} at {hexa(token)}"])

    return w.transact(calls, TOKEN_GAS_LIMIT, Result({"name": args.name, "symbol": args.symbol,
                                                      "decimals": decimals, "supply": str(supply or 0)},
                                                     lines), describe)


def cmd_token_mint(w: Wallet, args: argparse.Namespace) -> Result:
    """``token mint``: create an amount for an account (only the token's minter may)."""
    token, to = parse_address(args.token, "token"), parse_address(args.to, "recipient")
    meta = w.token(token)
    units = meta.parse(args.amount)
    summary = Result({"token": hexa(token), "to": hexa(to), "amount": str(units)},
                     [f"mint {meta.fmt(units)} to {hexa(to)}"])
    return w.transact([Call(Address(token), "mint", (to, units))], DEFAULT_GAS_LIMIT, summary)


def cmd_amm_deploy(w: Wallet, args: argparse.Namespace) -> Result:
    """``amm deploy``: create the canonical factory and router (once per chain; anyone may)."""
    doc = {"factory": hexa(CANONICAL_FACTORY), "router": hexa(CANONICAL_ROUTER)}
    try:
        w.require_amm()
    except RemoteError as err:
        if err.code != NOT_FOUND:
            raise
    else:
        return Result({**doc, "deployed": False},
                      [f"the AMM is already deployed: factory {doc['factory']}, router {doc['router']}"])
    summary = Result({**doc, "deployed": True},
                     [f"deploy the AMM: factory {doc['factory']}, router {doc['router']}"])
    return w.transact(deploy_amm_calls(), AMM_DEPLOY_GAS_LIMIT, summary)


def cmd_pool_create(w: Wallet, args: argparse.Namespace) -> Result:
    """``pool create``: create the (empty) pool of two tokens."""
    a, b = parse_address(args.token_a, "token A"), parse_address(args.token_b, "token B")
    ma, mb = w.token(a), w.token(b)
    w.require_amm()
    pair = pair_address(CANONICAL_FACTORY, a, b)
    summary = Result({"tokenA": hexa(a), "tokenB": hexa(b), "pool": hexa(pair)},
                     [f"create pool {ma.symbol}/{mb.symbol} at {hexa(pair)}"])
    return w.transact([create_pool_call(a, b)], AMM_GAS_LIMIT, summary)


def cmd_add_liquidity(w: Wallet, args: argparse.Namespace) -> Result:
    """``add-liquidity``: deposit up to both amounts at the pool's ratio (creates the pool if needed)."""
    a, b = parse_address(args.token_a, "token A"), parse_address(args.token_b, "token B")
    ma, mb = w.token(a), w.token(b)
    units_a, units_b = ma.parse(args.amount_a), mb.parse(args.amount_b)
    bps = parse_slippage(args.slippage)
    w.require_amm()
    deadline = w.deadline(args.deadline)
    me = w.key().address
    calls = add_liquidity_calls(a, b, units_a, units_b, me, deadline, slippage_bps=bps)
    pair = pair_address(CANONICAL_FACTORY, a, b)
    min_a, min_b = min_with_slippage(units_a, bps), min_with_slippage(units_b, bps)  # as add_liquidity_calls sets
    summary = Result(
        {"tokenA": hexa(a), "tokenB": hexa(b), "pool": hexa(pair), "amountADesired": str(units_a),
         "amountBDesired": str(units_b), "amountAMin": str(min_a), "amountBMin": str(min_b),
         "deadline": deadline},
        [f"add liquidity: up to {ma.fmt(units_a)} + {mb.fmt(units_b)} (at least {ma.fmt(min_a)} "
         f"+ {mb.fmt(min_b)}, slippage {format_amount(bps, 2)}%)"])

    def describe(receipt: dict[str, Any]) -> Result:
        got_a, got_b, liquidity = (int(x) for x in receipt["output"][-1])
        lp = w.erc20(pair)
        shares = lp.fmt(liquidity) if lp else f"{liquidity} base units of {hexa(pair)}"
        return Result({"amountA": str(got_a), "amountB": str(got_b), "liquidity": str(liquidity)},
                      [f"deposited {ma.fmt(got_a)} + {mb.fmt(got_b)}, received {shares}"])

    return w.transact(calls, AMM_GAS_LIMIT, summary, describe)


def cmd_remove_liquidity(w: Wallet, args: argparse.Namespace) -> Result:
    """``remove-liquidity``: burn LP shares (a human amount of the pool's 18-decimal shares, or ``all``)."""
    a, b = parse_address(args.token_a, "token A"), parse_address(args.token_b, "token B")
    ma, mb = w.token(a), w.token(b)
    bps = parse_slippage(args.slippage)
    w.require_amm()
    pool = w.call("qnx_getPool", hexa(a), hexa(b))
    if pool is None:
        raise RemoteError(f"no pool for {ma.symbol}/{mb.symbol}", NOT_FOUND)
    pair = parse_address(pool["address"], "pool")
    lp = w.erc20(pair) or TokenMeta(pair, "LP", 18)
    me = w.key().address
    held = w.balance(me, pair)
    liquidity = held if args.liquidity.lower() == "all" else lp.parse(args.liquidity)
    if liquidity == 0 or liquidity > held:
        raise UsageError(f"cannot remove {lp.fmt(liquidity)}: {hexa(me)} holds {lp.fmt(held)} of this pool")
    deadline = w.deadline(args.deadline)
    calls = w.guard(lambda: w.client.remove_liquidity_calls(a, b, liquidity, me, deadline, slippage_bps=bps))
    min_a, min_b = int(calls[-1].args[3]), int(calls[-1].args[4])
    summary = Result(
        {"tokenA": hexa(a), "tokenB": hexa(b), "pool": hexa(pair), "liquidity": str(liquidity),
         "amountAMin": str(min_a), "amountBMin": str(min_b), "deadline": deadline},
        [f"remove {lp.fmt(liquidity)}: at least {ma.fmt(min_a)} + {mb.fmt(min_b)} "
         f"(slippage {format_amount(bps, 2)}%)"])

    def describe(receipt: dict[str, Any]) -> Result:
        got_a, got_b = (int(x) for x in receipt["output"][-1])
        return Result({"amountA": str(got_a), "amountB": str(got_b)},
                      [f"withdrew {ma.fmt(got_a)} + {mb.fmt(got_b)}"])

    return w.transact(calls, AMM_GAS_LIMIT, summary, describe)


def _path(args: argparse.Namespace) -> list[bytes]:
    path = [parse_address(args.token_in, "input token"), *(parse_address(t, "--via token") for t in args.via),
            parse_address(args.token_out, "output token")]
    if any(x == y for x, y in zip(path, path[1:], strict=False)):
        raise UsageError("a swap path can not trade a token for itself")
    return path


def cmd_quote(w: Wallet, args: argparse.Namespace) -> Result:
    """``quote``: what an amount of one token buys of another now (no transaction)."""
    path = _path(args)
    metas = [w.token(t) for t in path]
    units_in = metas[0].parse(args.amount)
    out = w.quote(units_in, path)
    route = " -> ".join(m.symbol for m in metas)
    return Result({"path": [hexa(t) for t in path], "amountIn": str(units_in), "amountOut": str(out),
                   "amountInFormatted": format_amount(units_in, metas[0].decimals),
                   "amountOutFormatted": format_amount(out, metas[-1].decimals)},
                  [f"{metas[0].fmt(units_in)} -> {metas[-1].fmt(out)}  ({route})"])


def cmd_swap(w: Wallet, args: argparse.Namespace) -> Result:
    """``swap``: sell an exact amount, for at least the quote less the slippage (or ``--min-out``)."""
    path = _path(args)
    metas = [w.token(t) for t in path]
    m_in, m_out = metas[0], metas[-1]
    units_in = m_in.parse(args.amount)
    bps = parse_slippage(args.slippage)
    deadline = w.deadline(args.deadline)
    quoted = w.quote(units_in, path)
    min_out = m_out.parse(args.min_out) if args.min_out is not None else min_with_slippage(quoted, bps)
    calls = swap_exact_in_calls(path, units_in, min_out, w.key().address, deadline, slippage_bps=0)
    route = " -> ".join(m.symbol for m in metas)
    summary = Result(
        {"path": [hexa(t) for t in path], "amountIn": str(units_in), "quotedOut": str(quoted),
         "amountOutMin": str(min_out), "deadline": deadline},
        [f"swap {m_in.fmt(units_in)} for at least {m_out.fmt(min_out)} (quote {m_out.fmt(quoted)}, "
         + (f"slippage {format_amount(bps, 2)}%" if args.min_out is None else "--min-out") + f"; {route})"])

    def describe(receipt: dict[str, Any]) -> Result:
        got = int(receipt["output"][-1][-1])
        return Result({"amountOut": str(got)}, [f"received {m_out.fmt(got)}"])

    return w.transact(calls, AMM_GAS_LIMIT, summary, describe)


def cmd_tx(w: Wallet, args: argparse.Namespace) -> Result:
    """``tx``: a transaction's status and receipt (exit status 1 when it reverted or is unknown)."""
    tx_hash = hexa(parse_tx_hash(args.hash))
    receipt = w.call("qnx_getTransactionReceipt", tx_hash)
    tx = w.call("qnx_getTransaction", tx_hash)
    if receipt is None and tx is None:
        raise RemoteError(f"not found: no transaction {tx_hash} on this node (committed or pending)", NOT_FOUND)
    doc: dict[str, Any] = {"txHash": tx_hash, "transaction": tx, "receipt": receipt}
    lines: list[Line] = []
    if tx is not None:
        lines.append(f"from {tx['from']}  nonce {tx['nonce']}  gas limit {tx['gasLimit']}  "
                     f"calls {', '.join(c['method'] for c in tx['calls'])}")
    if receipt is None:
        doc["status"] = "pending"
        lines.append(Text("pending  in the mempool, not committed yet", style="bold yellow"))
        return Result(doc, lines)
    doc["status"] = receipt["status"]
    lines.extend(w.receipt_lines(receipt))
    result = Result(doc, lines)
    if receipt["status"] != "success":
        reason = receipt.get("revertReason") or "no reason given"
        result.error = RemoteError(f"execution reverted: {reason}", EXECUTION_REVERTED, reason)
    return result


# --- watch: live pushes over WebSocket subscriptions -------------------------------------------------

WATCH_QUEUE_SIZE = 1024
"""Pushes buffered per subscription on this side (``WSClient``); the node cuts off a client that falls
``[rpc] ws_queue_size`` behind, so ``watch`` prints as it receives."""

ADDRESS_POSITIONS = max(len(names) for names in TOPIC_NAMES.values())
"""How many indexed fields ``watch --address`` looks in when ``--event`` names no built-in event: every
built-in event has at most this many (``node.rpc.pubsub.TOPIC_NAMES``)."""

Subscribe = tuple[str, ...] | tuple[str, dict[str, Any]]
"""The params of one ``qnx_subscribe``: ``("newHeads",)``, ``("events", filter)``, ``("txStatus", hash)``."""


def event_filters(token: bytes | None, name: str | None, address: bytes | None) -> list[dict[str, Any]]:
    """The ``events`` filters of ``watch [--token] [--event] [--address]``: one, or with ``address`` one
    per indexed field it may be in.

    A filter's ``indexed`` constraints all hold at once (position 0 is X *and* position 1 is Y), and
    its alternatives are values of one position (``node.rpc.pubsub.EventFilter``): "the address is
    the first *or* the second topic" (a Transfer from *or* to it, an Approval by *or* for it) is not
    one filter but one per position. ``watch`` opens them on one connection and shows an event that
    matches more than one (a transfer to oneself) once. Blocks still come in order, but within one
    block the events of different filters arrive filter by filter, not in event order.
    """
    base: dict[str, Any] = {}
    if token is not None:
        base["contract"] = hexa(token)
    if name is not None:
        base["name"] = name
    if address is None:
        return [base]
    positions = len(TOPIC_NAMES.get(name or "", ())) or ADDRESS_POSITIONS
    return [{**base, "indexed": [None] * i + [hexa(address)]} for i in range(positions)]


def remote_error(err: RPCError) -> RemoteError:
    """The node's JSON-RPC error ``err`` as the one-line ``RemoteError`` the user sees."""
    reason = err.data.get("reason") if isinstance(err.data, dict) else None
    return RemoteError(rpc_error_message(err), err.code, reason)


def closed_error(url: str, err: ConnectionClosedByNode) -> WalletError:
    """What to tell the user when the node at ``url`` closed the WebSocket under a running ``watch``."""
    if err.code == 1008:  # RFC 6455 policy violation: the node cut off a client that read too slowly
        return WalletError(f"the node at {url} cut this subscription off: {err.reason or 'no reason given'}")
    how = f"close code {err.code}" if err.code is not None else "no close code"
    return WalletError(f"the node at {url} closed the subscription ({how}" + (f": {err.reason})" if err.reason
                                                                               else ")"))


class Watcher:
    """What ``watch`` does with each push: prints it (human lines, or one JSON object per line with
    ``--json``) and says when to stop (``--count`` items shown; a ``txStatus`` that is final)."""

    def __init__(self, w: Wallet, args: argparse.Namespace, console: Console) -> None:
        self.w = w
        self.as_json: bool = args.json
        self.count: int | None = args.count
        self.console = console
        self.shown = 0
        self._seen: dict[tuple[Any, ...], None] = {}
        """Events already shown (block hash, transaction index, event index), the latest 4,096: with
        several filters (``event_filters``) one event can arrive more than once."""

    def show(self, kind: str, result: Any) -> tuple[bool, WalletError | None]:
        """Print one push of a ``kind`` subscription; returns (stop now, the error to end with).

        Blocking (it may read a token's symbol and decimals over HTTP): ``watch`` runs it in a worker
        thread. A push not of the shape node/rpc/pubsub.py gives ends the watch with an error.
        """
        try:
            if kind == "events":
                key = (result["blockHash"], result["index"], result["eventIndex"])
                if key in self._seen:
                    return False, None
                self._seen[key] = None
                if len(self._seen) > 4096:
                    del self._seen[next(iter(self._seen))]
                doc, lines, stop, error = *self.event(result), False, None
            elif kind == "newHeads":
                doc, lines, stop, error = result, [self.head_line(result)], False, None
            else:
                doc, lines, stop, error = self.tx_status(result)
        except (KeyError, TypeError, ValueError) as err:
            return True, WalletError(f"unexpected {kind} push from the node: {type(err).__name__}: {err}")
        if self.as_json:
            print(json.dumps(doc), flush=True)
        else:
            for line in lines:
                self.console.print(line, markup=False, highlight=False)
            self.console.file.flush()
        self.shown += 1
        return stop or (self.count is not None and self.shown >= self.count), error

    def event(self, ev: dict[str, Any]) -> tuple[dict[str, Any], list[Line]]:
        """An ``events`` push: the event as the node sent it, plus for a Transfer or Approval of an
        ERC-20 ``amount`` (base units), ``amountFormatted``, ``symbol`` and ``decimals``."""
        doc = dict(ev)
        topics, data = ev.get("topics") or [], ev.get("data") or []
        if ev.get("name") in ("Transfer", "Approval") and len(topics) == 2 and len(data) == 1:
            try:
                meta = self.w.erc20(parse_address(ev["contract"]))
                units = int(data[0])
                if meta is not None:
                    doc.update(amount=str(units), amountFormatted=format_amount(units, meta.decimals),
                               symbol=meta.symbol, decimals=meta.decimals)
            except (WalletError, ValueError, KeyError, TypeError):
                pass  # not an ERC-20 we can read: the event as it came
        return doc, [f"block {ev['blockHeight']}  {self.w.event_line(ev)}  tx {ev['txHash']}"]

    @staticmethod
    def head_line(head: dict[str, Any]) -> str:
        """A ``newHeads`` push: height, hash, proposer, gas used and block time (UTC)."""
        when = datetime.fromtimestamp(int(head["timestamp"]) // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"block {head['height']}  {head['hash']}  proposer {head['proposer']}  "
                f"gas used {head['gasUsed']}  {when}")

    def tx_status(self, push: dict[str, Any]) -> tuple[dict[str, Any], list[Line], bool, WalletError | None]:
        """A ``txStatus`` push; final (stop) once committed (an error if it reverted) or dropped (an error)."""
        status, tx_hash = push["status"], push["txHash"]
        if status == "committed":
            receipt = push["receipt"]
            error = None
            if receipt["status"] != "success":
                reason = receipt.get("revertReason") or "no reason given"
                error = RemoteError(f"execution reverted: {reason}", EXECUTION_REVERTED, reason)
            return push, self.w.receipt_lines(receipt), True, error
        if status == "dropped":
            reason = push.get("reason") or "no reason given"
            line = Text("dropped", style="bold red")
            line.append(f"  tx {tx_hash}  left the mempool uncommitted: {reason}")
            return push, [line], True, WalletError(f"transaction {tx_hash} was dropped by the node: {reason}")
        line = Text(str(status), style="bold yellow")
        line.append(f"  tx {tx_hash}  in the mempool, not committed yet")
        return push, [line], False, None


async def _pump(sub: Subscription, send: trio.MemorySendChannel[Any]) -> None:
    """Forward ``sub``'s results to ``send`` as (kind, result); then None when it ends, or the
    ``ConnectionClosedByNode`` that ended it."""
    async with send:
        try:
            async for result in sub:
                await send.send((sub.kind, result))
        except ConnectionClosedByNode as err:
            await send.send(err)
            return
        await send.send(None)


async def _follow(ws: WSClient, subscriptions: Sequence[Subscribe], watcher: Watcher,
                  url: str) -> WalletError | None:
    """Subscribe on ``ws`` and hand every push, in arrival order, to ``watcher`` until it says stop;
    returns the error to end with (None: done). Returns rather than raises, so no error leaves as an
    exception group through the connection's nursery."""
    async with AsyncExitStack() as stack:
        subs: list[Subscription] = []
        try:
            for kind, *params in subscriptions:
                subs.append(await stack.enter_async_context(ws.subscribe(kind, *params)))
        except RPCError as err:
            return remote_error(err)
        except ConnectionClosedByNode as err:
            return closed_error(url, err)
        send, receive = trio.open_memory_channel[Any](0)
        error: WalletError | None = None
        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(_pump, sub, send.clone())
            send.close()
            async for item in receive:
                if item is None:
                    error = WalletError(f"the node at {url} ended the subscription")
                    break
                if isinstance(item, ConnectionClosedByNode):
                    error = closed_error(url, item)
                    break
                stop, error = await trio.to_thread.run_sync(watcher.show, *item)
                if stop:
                    break
            nursery.cancel_scope.cancel()
        return error


async def _watch(w: Wallet, subscriptions: Sequence[Subscribe], watcher: Watcher) -> WalletError | None:
    """One WebSocket to the node's ``/ws`` for the whole watch; the error to end with (None: done)."""
    endpoint = ws_url(w.url)
    ended = False
    error: WalletError | None = None
    try:
        async with connect_websocket(endpoint, queue_size=WATCH_QUEUE_SIZE) as ws:
            error = await _follow(ws, subscriptions, watcher, w.url)
            ended = True
    except (trio_websocket.HandshakeError, OSError, RPCError) as err:
        if ended:  # the close handshake timed out after the end (DisconnectionTimeout): what was seen counts
            return error
        if isinstance(err, RPCError):  # the node refused the handshake (-32005: too many connections)
            return remote_error(err)
        if isinstance(err, trio_websocket.ConnectionRejected):
            return NodeUnreachable(w.url, f"WebSocket {endpoint} refused with HTTP {err.status_code}")
        if isinstance(err, trio_websocket.ConnectionTimeout):
            return WalletError(f"node at {w.url} did not answer the WebSocket handshake in time")
        cause = err if isinstance(err, OSError) else err.__cause__
        if isinstance(cause, OSError):  # refused, no route, no such host: as the HTTP commands say it
            return NodeUnreachable(w.url)
        return NodeUnreachable(w.url, f"WebSocket {endpoint}: {type(err).__name__} {err}".rstrip())
    return error


def cmd_watch(w: Wallet, args: argparse.Namespace) -> Result:
    """``watch``: stream events (``--token``, ``--event``, ``--address``), new block headers (``--heads``)
    or one transaction's status (``--tx``) as the node pushes them, one item per line; see the module
    docstring for when it stops. Ctrl-C ends it quietly, exit status 0."""
    try:
        return _run_watch(w, args)
    except KeyboardInterrupt:
        return Result({}, streamed=True)
    except BaseExceptionGroup as group:  # Ctrl-C while a Trio nursery was waiting
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
        return Result({}, streamed=True)


def _run_watch(w: Wallet, args: argparse.Namespace) -> Result:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if (args.heads or args.tx is not None) and any(x is not None for x in (args.token, args.event, args.address)):
        raise UsageError("--token, --event and --address choose events: not with --heads or --tx")
    if not w.url.startswith(("http://", "https://", "ws://", "wss://")):
        raise UsageError(f"invalid node URL {w.url!r}: expected http://HOST:PORT")
    subscriptions: list[Subscribe]
    if args.heads:
        subscriptions = [("newHeads",)]
    elif args.tx is not None:
        subscriptions = [("txStatus", hexa(parse_tx_hash(args.tx)))]
    else:
        token = parse_address(args.token, "token") if args.token is not None else None
        address = parse_address(args.address) if args.address is not None else None
        if token is not None:
            w.token(token)  # symbol and decimals, read once now; no node or no token there fails here
        subscriptions = [("events", f) for f in event_filters(token, args.event, address)]
    watcher = Watcher(w, args, Console(soft_wrap=True, highlight=False))
    return Result({}, error=trio.run(_watch, w, subscriptions, watcher), streamed=True)


# --- argument parser ----------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser these have defaults; on subcommands they are SUPPRESSed unless given, so
    # ``qenex-wallet --json balance`` and ``qenex-wallet balance --json`` both work.
    d: Any = None if top else argparse.SUPPRESS
    g = p.add_argument_group("node and keystore")
    g.add_argument("--rpc", metavar="URL", default=d,
                   help=f"JSON-RPC endpoint (env QENEX_RPC; default {DEFAULT_RPC})")
    g.add_argument("--keystore", metavar="PATH", default=d, help="encrypted keystore file (env QENEX_KEYSTORE)")
    g.add_argument("--password-file", "--passphrase-file", dest="password_file", metavar="FILE", default=d,
                   help="file holding the keystore password (else env QENEX_PASSWORD, else a prompt)")
    g.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="print one JSON document (amounts also in base units)")


def _tx_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transaction")
    g.add_argument("--no-wait", action="store_true", help="print the transaction hash without waiting for commit")
    g.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                   help=f"how long the node waits for the commit (default {DEFAULT_WAIT_SECONDS:g})")
    g.add_argument("--gas-limit", type=int, metavar="GAS", help="gas limit (default: enough for the command)")
    g.add_argument("--nonce", type=int, help="nonce to use (default: the account's next nonce)")


def _amm_options(p: argparse.ArgumentParser, *, slippage: bool = True) -> None:
    if slippage:
        p.add_argument("--slippage", default=DEFAULT_SLIPPAGE, metavar="PERCENT",
                       help=f"tolerated price move, percent (default {DEFAULT_SLIPPAGE})")
    p.add_argument("--deadline", default=DEFAULT_DEADLINE, metavar="DURATION",
                   help=f"valid until the latest block time plus this, e.g. 300s, 5m (default {DEFAULT_DEADLINE})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qenex-wallet``."""
    p = argparse.ArgumentParser(prog=PROG, description="QENEX Ledger wallet: keys, tokens, AMM pools over JSON-RPC",
                                epilog="Amounts are human amounts in the token's decimals (10.5); tokens are "
                                       "0x addresses. Exit status: 0 done, 1 refused by the node or chain, "
                                       "2 bad input.")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, func: Callable[[Wallet, argparse.Namespace], Result], help: str,
                *, tx: bool = False) -> argparse.ArgumentParser:
        s: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        _common(s, top=False)
        if tx:
            _tx_options(s)
        s.set_defaults(func=func)
        return s

    s = command(sub, "new", cmd_new, "create a key and write it to a new encrypted keystore (never overwrites)")
    s.add_argument("--scheme", default="ML-DSA-44", help="signature scheme (default ML-DSA-44)")
    command(sub, "address", cmd_address, "the keystore's address")
    s = command(sub, "balance", cmd_balance, "token balance of an address (default: the keystore's)")
    s.add_argument("address", nargs="?")
    s.add_argument("--token", required=True, help="token address")
    s = command(sub, "nonce", cmd_nonce, "next nonce of an address (default: the keystore's)")
    s.add_argument("address", nargs="?")
    s = command(sub, "transfer", cmd_transfer, "send tokens", tx=True)
    s.add_argument("to")
    s.add_argument("amount", help="human amount, e.g. 10.5")
    s.add_argument("--token", required=True, help="token address")
    s = command(sub, "approve", cmd_approve, "allow a spender to move tokens", tx=True)
    s.add_argument("spender")
    s.add_argument("amount", help="human amount, or max for unlimited")
    s.add_argument("--token", required=True, help="token address")

    token = sub.add_parser("token", help="create and mint tokens").add_subparsers(dest="token_command",
                                                                                  required=True, metavar="COMMAND")
    s = command(token, "create", cmd_token_create, "deploy a token with this account as minter", tx=True)
    s.add_argument("name")
    s.add_argument("symbol")
    s.add_argument("decimals", type=int)
    s.add_argument("--supply", metavar="AMOUNT", help="human amount to mint to this account in the same transaction")
    s = command(token, "mint", cmd_token_mint, "mint tokens (the minter only)", tx=True)
    s.add_argument("token")
    s.add_argument("to")
    s.add_argument("amount", help="human amount")

    amm = sub.add_parser("amm", help="the AMM contracts").add_subparsers(dest="amm_command", required=True,
                                                                         metavar="COMMAND")
    command(amm, "deploy", cmd_amm_deploy, "deploy the canonical AMM factory and router (once per chain)", tx=True)
    pool = sub.add_parser("pool", help="AMM pools").add_subparsers(dest="pool_command", required=True,
                                                                   metavar="COMMAND")
    s = command(pool, "create", cmd_pool_create, "create the pool of two tokens", tx=True)
    s.add_argument("token_a")
    s.add_argument("token_b")

    s = command(sub, "add-liquidity", cmd_add_liquidity, "deposit two tokens into their pool", tx=True)
    for name in ("token_a", "token_b", "amount_a", "amount_b"):
        s.add_argument(name)
    _amm_options(s)
    s = command(sub, "remove-liquidity", cmd_remove_liquidity, "withdraw from a pool by burning LP shares", tx=True)
    for name in ("token_a", "token_b"):
        s.add_argument(name)
    s.add_argument("liquidity", help="human amount of LP shares (18 decimals), or all")
    _amm_options(s)
    s = command(sub, "swap", cmd_swap, "sell an exact amount of a token for another", tx=True)
    for name in ("amount", "token_in", "token_out"):
        s.add_argument(name)
    s.add_argument("--via", action="append", default=[], metavar="TOKEN", help="intermediate token (repeatable)")
    s.add_argument("--min-out", metavar="AMOUNT", help="least human amount to receive (instead of --slippage)")
    _amm_options(s)
    s = command(sub, "quote", cmd_quote, "what an amount buys now (no transaction)")
    for name in ("amount", "token_in", "token_out"):
        s.add_argument(name)
    s.add_argument("--via", action="append", default=[], metavar="TOKEN", help="intermediate token (repeatable)")
    s = command(sub, "tx", cmd_tx, "a transaction's status and receipt")
    s.add_argument("hash")
    s = command(sub, "watch", cmd_watch, "follow the chain live (WebSocket): token events, new blocks or "
                                         "one transaction")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--heads", action="store_true", help="new block headers instead of events")
    what.add_argument("--tx", metavar="HASH", help="this transaction's status until it is committed (exit status "
                                                   "0, or 1 if it reverted) or dropped (1)")
    g = s.add_argument_group("events (the default: every event of every contract)")
    g.add_argument("--token", help="only events of this token (or other contract)")
    g.add_argument("--event", metavar="NAME", help="only events with this name, e.g. Transfer")
    g.add_argument("--address", metavar="ADDRESS",
                   help="only events where ADDRESS is an indexed field (Transfer from or to, Approval owner or "
                        "spender)")
    s.add_argument("--count", type=int, metavar="N", help="exit after N items")
    return p


# --- entry point --------------------------------------------------------------------------------------


def _error_doc(err: WalletError) -> dict[str, Any]:
    return {"message": str(err), "code": getattr(err, "code", None)}


def _emit(result: Result, as_json: bool, console: Console) -> None:
    if result.streamed:
        if as_json and result.error is not None:
            print(json.dumps({"error": _error_doc(result.error)}))
        return
    if as_json:
        doc = result.doc if result.error is None else {**result.doc, "error": _error_doc(result.error)}
        print(json.dumps(doc, indent=2))
        return
    for line in result.lines:
        console.print(line, markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``qenex-wallet``: run one command; returns the exit status (0, 1 or 2).

    Expected failures (``WalletError``: bad input, the node's JSON-RPC errors, a reverted
    transaction, an unreachable node) print one line on stderr, ``qenex-wallet: error: ...`` (and
    with ``--json`` also ``{"error": ...}`` on stdout); they never raise.
    """
    args = build_parser().parse_args(argv)
    args.rpc = args.rpc or os.environ.get("QENEX_RPC") or DEFAULT_RPC
    console = Console(soft_wrap=True, highlight=False)
    wallet = Wallet(args)
    error: WalletError | None
    try:
        result: Result = args.func(wallet, args)
        _emit(result, args.json, console)
        error = result.error
    except WalletError as err:
        error = err
        if args.json:
            print(json.dumps({"error": _error_doc(err)}))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        wallet.close()
    if error is None:
        return 0
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
