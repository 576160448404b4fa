"""The fungible token: EIP-20 semantics with OpenZeppelin 5 behaviour.

Storage slots: ``meta`` -> (name, symbol, decimals); ``supply`` -> total supply; ``minter`` ->
address; ``b`` + owner -> balance; ``a`` + owner + spender -> allowance. Events: ``Transfer``
(topics from, to; data amount), ``Approval`` (topics owner, spender; data amount),
``MinterChanged`` (topics old, new). Mint is ``Transfer`` from the zero address; burn to it.
An allowance of 2**256 - 1 is infinite and not decremented (OpenZeppelin ``_spendAllowance``).
"""

from __future__ import annotations

from contracts.builtin import UINT256_MAX, Addr, BuiltinContract, Uint, method
from contracts.exceptions import Revert
from contracts.vm import CallContext
from crypto.keys import ZERO_ADDRESS


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise Revert(reason)


class Token(BuiltinContract):
    """ERC-20-style token, code id ``token/v1``; init(name, symbol, decimals, minter)."""

    CODE_ID = "token/v1"

    @method(str, str, int, Addr)
    def init(self, ctx: CallContext, name: str, symbol: str, decimals: int, minter: bytes) -> None:
        """Create the token; ``minter`` may mint (the zero address means nobody can)."""
        _require(0 < len(name) <= 64 and 0 < len(symbol) <= 16, "name 1..64 and symbol 1..16 characters")
        _require(0 <= decimals <= 36, "decimals must be in 0..36")
        ctx.store(b"meta", (name, symbol, decimals))
        ctx.store(b"minter", minter)

    # --- reads --------------------------------------------------------------------------------

    def _meta(self, ctx: CallContext) -> tuple[str, str, int]:
        meta = ctx.load(b"meta")
        _require(meta is not None, "token not initialised")
        return meta  # type: ignore[no-any-return]

    @method(readonly=True)
    def name(self, ctx: CallContext) -> str:
        """The token name."""
        return self._meta(ctx)[0]

    @method(readonly=True)
    def symbol(self, ctx: CallContext) -> str:
        """The ticker symbol."""
        return self._meta(ctx)[1]

    @method(readonly=True)
    def decimals(self, ctx: CallContext) -> int:
        """How many decimals one whole token has (base units = 10**decimals)."""
        return self._meta(ctx)[2]

    @method(readonly=True)
    def info(self, ctx: CallContext) -> tuple[object, ...]:
        """(name, symbol, decimals, totalSupply, minter) in one read."""
        name, symbol, decimals = self._meta(ctx)
        return (name, symbol, decimals, ctx.load(b"supply") or 0, ctx.load(b"minter"))

    @method(readonly=True, name="totalSupply")
    def total_supply(self, ctx: CallContext) -> int:
        """Total supply in base units."""
        return ctx.load(b"supply") or 0

    @method(readonly=True)
    def minter(self, ctx: CallContext) -> bytes:
        """The address holding the minter role."""
        return ctx.load(b"minter")  # type: ignore[no-any-return]

    @method(Addr, readonly=True, name="balanceOf")
    def balance_of(self, ctx: CallContext, owner: bytes) -> int:
        """Balance of ``owner`` in base units."""
        return ctx.load(b"b" + owner) or 0

    @method(Addr, Addr, readonly=True)
    def allowance(self, ctx: CallContext, owner: bytes, spender: bytes) -> int:
        """What ``spender`` may still move from ``owner``, in base units."""
        return ctx.load(b"a" + owner + spender) or 0

    # --- writes -------------------------------------------------------------------------------

    def _move(self, ctx: CallContext, sender: bytes, to: bytes, amount: int) -> None:
        _require(sender != ZERO_ADDRESS, "transfer from the zero address")
        _require(to != ZERO_ADDRESS, "transfer to the zero address")
        balance = ctx.load(b"b" + sender) or 0
        _require(balance >= amount, f"insufficient balance: {balance} < {amount}")
        ctx.store(b"b" + sender, balance - amount or None)
        ctx.store(b"b" + to, (ctx.load(b"b" + to) or 0) + amount or None)
        ctx.emit("Transfer", (sender, to), (amount,))

    @method(Addr, Uint)
    def transfer(self, ctx: CallContext, to: bytes, amount: int) -> bool:
        """Move ``amount`` from the caller to ``to``."""
        self._move(ctx, ctx.caller, to, amount)
        return True

    @method(Addr, Uint)
    def approve(self, ctx: CallContext, spender: bytes, amount: int) -> bool:
        """Let ``spender`` move up to ``amount`` of the caller's tokens."""
        _require(spender != ZERO_ADDRESS, "approve to the zero address")
        ctx.store(b"a" + ctx.caller + spender, amount or None)
        ctx.emit("Approval", (ctx.caller, spender), (amount,))
        return True

    @method(Addr, Addr, Uint, name="transferFrom")
    def transfer_from(self, ctx: CallContext, owner: bytes, to: bytes, amount: int) -> bool:
        """Move ``amount`` from ``owner`` to ``to`` against the caller's allowance."""
        allowed = ctx.load(b"a" + owner + ctx.caller) or 0
        if allowed != UINT256_MAX:
            _require(allowed >= amount, f"insufficient allowance: {allowed} < {amount}")
            ctx.store(b"a" + owner + ctx.caller, allowed - amount or None)
        self._move(ctx, owner, to, amount)
        return True

    @method(Addr, Uint)
    def mint(self, ctx: CallContext, to: bytes, amount: int) -> bool:
        """Create ``amount`` for ``to``; only the minter. Supply stays below 2**256."""
        _require(ctx.caller == ctx.load(b"minter") and ctx.caller != ZERO_ADDRESS, "caller is not the minter")
        _require(to != ZERO_ADDRESS, "mint to the zero address")
        supply = (ctx.load(b"supply") or 0) + amount
        _require(supply <= UINT256_MAX, "total supply would exceed 2**256 - 1")
        ctx.store(b"supply", supply)
        ctx.store(b"b" + to, (ctx.load(b"b" + to) or 0) + amount or None)
        ctx.emit("Transfer", (ZERO_ADDRESS, to), (amount,))
        return True

    @method(Uint)
    def burn(self, ctx: CallContext, amount: int) -> bool:
        """Destroy ``amount`` of the caller's tokens."""
        balance = ctx.load(b"b" + ctx.caller) or 0
        _require(balance >= amount, f"insufficient balance: {balance} < {amount}")
        ctx.store(b"b" + ctx.caller, balance - amount or None)
        ctx.store(b"supply", (ctx.load(b"supply") or 0) - amount)
        ctx.emit("Transfer", (ctx.caller, ZERO_ADDRESS), (amount,))
        return True

    @method(Addr, name="setMinter")
    def set_minter(self, ctx: CallContext, new_minter: bytes) -> bool:
        """Hand the minter role to ``new_minter``; only the minter."""
        old = ctx.load(b"minter")
        _require(ctx.caller == old, "caller is not the minter")
        ctx.store(b"minter", new_minter)
        ctx.emit("MinterChanged", (old, new_minter), ())
        return True

