"""The fungible token: EIP-20 semantics with OpenZeppelin 5 behaviour, and the ledger it shares.

``ERC20`` is the ledger every fungible balance in the VM uses (the token here, the LP shares of an
AMM pool in ``contracts.amm``): storage slots ``supply`` -> total supply, ``b`` + owner -> balance,
``a`` + owner + spender -> allowance (all in base units; a zero value is deleted). Events:
``Transfer`` (topics from, to; data amount), ``Approval`` (topics owner, spender; data amount). Mint
is a ``Transfer`` from the zero address, burn one to it. An allowance of 2**256 - 1 is infinite and
not decremented, and ``transferFrom`` emits no ``Approval`` (OpenZeppelin 5 ``_spendAllowance``).

``Token`` (code id ``token/v1``) adds: ``meta`` -> (name, symbol, decimals), ``minter`` -> address;
``mint``, ``burn`` and ``burnFrom`` only by the minter; ``setMinter`` hands the role on
(``MinterChanged``, topics old, new).

Revert reasons and the OpenZeppelin 5 errors they stand for (EIP-6093):

    insufficient balance: <balance> < <amount>      ERC20InsufficientBalance
    insufficient allowance: <allowance> < <amount>  ERC20InsufficientAllowance
    transfer from the zero address                  ERC20InvalidSender
    burn from the zero address                      ERC20InvalidSender (in ``_burn``)
    transfer to the zero address / mint to ...      ERC20InvalidReceiver
    approve to the zero address                     ERC20InvalidSpender
    caller is not the minter                        (AccessControlUnauthorizedAccount)
    total supply would exceed 2**256 - 1            (Solidity 0.8 overflow panic in ``_update``)

Sources: EIP-20 (https://eips.ethereum.org/EIPS/eip-20); OpenZeppelin Contracts 5
``token/ERC20/ERC20.sol`` and ``extensions/ERC20Burnable.sol``.
"""

from __future__ import annotations

from typing import ClassVar

from contracts.builtin import UINT256_MAX, Addr, BuiltinContract, Uint, method
from contracts.exceptions import Revert
from contracts.vm import CallContext
from crypto.keys import ZERO_ADDRESS


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise Revert(reason)


class ERC20(BuiltinContract):
    """The EIP-20 ledger: balances, allowances, total supply, transfers and their events.

    Subclasses give ``_meta`` (name, symbol, decimals) and decide who mints and burns.
    """

    NAME: ClassVar[str] = ""
    SYMBOL: ClassVar[str] = ""
    DECIMALS: ClassVar[int] = 18

    def _meta(self, ctx: CallContext) -> tuple[str, str, int]:
        """(name, symbol, decimals); fixed by the class unless overridden."""
        return self.NAME, self.SYMBOL, self.DECIMALS

    # --- reads --------------------------------------------------------------------------------

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

    @method(readonly=True, name="totalSupply")
    def total_supply(self, ctx: CallContext) -> int:
        """Total supply in base units."""
        return ctx.load(b"supply") or 0

    @method(Addr, readonly=True, name="balanceOf")
    def balance_of(self, ctx: CallContext, owner: bytes) -> int:
        """Balance of ``owner`` in base units."""
        return ctx.load(b"b" + owner) or 0

    @method(Addr, Addr, readonly=True)
    def allowance(self, ctx: CallContext, owner: bytes, spender: bytes) -> int:
        """What ``spender`` may still move from ``owner``, in base units."""
        return ctx.load(b"a" + owner + spender) or 0

    # --- the ledger ---------------------------------------------------------------------------

    def _move(self, ctx: CallContext, sender: bytes, to: bytes, amount: int) -> None:
        """Move ``amount`` from ``sender`` to ``to`` (``Transfer``). Raises ``Revert``."""
        _require(sender != ZERO_ADDRESS, "transfer from the zero address")
        _require(to != ZERO_ADDRESS, "transfer to the zero address")
        balance = ctx.load(b"b" + sender) or 0
        _require(balance >= amount, f"insufficient balance: {balance} < {amount}")
        ctx.store(b"b" + sender, balance - amount or None)
        ctx.store(b"b" + to, (ctx.load(b"b" + to) or 0) + amount or None)
        ctx.emit("Transfer", (sender, to), (amount,))

    def _mint(self, ctx: CallContext, to: bytes, amount: int) -> None:
        """Create ``amount`` for ``to`` (``Transfer`` from the zero address); no receiver check.

        Raises ``Revert`` if the supply would pass 2**256 - 1.
        """
        supply = (ctx.load(b"supply") or 0) + amount
        _require(supply <= UINT256_MAX, "total supply would exceed 2**256 - 1")
        ctx.store(b"supply", supply)
        ctx.store(b"b" + to, (ctx.load(b"b" + to) or 0) + amount or None)
        ctx.emit("Transfer", (ZERO_ADDRESS, to), (amount,))

    def _burn(self, ctx: CallContext, owner: bytes, amount: int) -> None:
        """Destroy ``amount`` of ``owner``'s balance (``Transfer`` to the zero address).

        Raises ``Revert``: ``burn from the zero address`` (OpenZeppelin 5 ``_burn`` reverts with
        ``ERC20InvalidSender(address(0))``, whatever the amount), insufficient balance.
        """
        _require(owner != ZERO_ADDRESS, "burn from the zero address")
        balance = ctx.load(b"b" + owner) or 0
        _require(balance >= amount, f"insufficient balance: {balance} < {amount}")
        ctx.store(b"b" + owner, balance - amount or None)
        ctx.store(b"supply", (ctx.load(b"supply") or 0) - amount)
        ctx.emit("Transfer", (owner, ZERO_ADDRESS), (amount,))

    def _spend_allowance(self, ctx: CallContext, owner: bytes, spender: bytes, amount: int) -> None:
        """Take ``amount`` off ``owner``'s allowance to ``spender`` (not if infinite). Raises ``Revert``."""
        allowed = ctx.load(b"a" + owner + spender) or 0
        if allowed != UINT256_MAX:
            _require(allowed >= amount, f"insufficient allowance: {allowed} < {amount}")
            ctx.store(b"a" + owner + spender, allowed - amount or None)

    # --- writes -------------------------------------------------------------------------------

    @method(Addr, Uint)
    def transfer(self, ctx: CallContext, to: bytes, amount: int) -> bool:
        """Move ``amount`` from the caller to ``to``; returns true. Raises ``Revert``."""
        self._move(ctx, ctx.caller, to, amount)
        return True

    @method(Addr, Uint)
    def approve(self, ctx: CallContext, spender: bytes, amount: int) -> bool:
        """Let ``spender`` move up to ``amount`` of the caller's tokens (overwrites); returns true."""
        _require(spender != ZERO_ADDRESS, "approve to the zero address")
        ctx.store(b"a" + ctx.caller + spender, amount or None)
        ctx.emit("Approval", (ctx.caller, spender), (amount,))
        return True

    @method(Addr, Addr, Uint, name="transferFrom")
    def transfer_from(self, ctx: CallContext, owner: bytes, to: bytes, amount: int) -> bool:
        """Move ``amount`` from ``owner`` to ``to`` against the caller's allowance; returns true."""
        self._spend_allowance(ctx, owner, ctx.caller, amount)
        self._move(ctx, owner, to, amount)
        return True


class Token(ERC20):
    """ERC-20 token with a minter role, code id ``token/v1``; init(name, symbol, decimals, minter)."""

    CODE_ID = "token/v1"

    @method(str, str, int, Addr)
    def init(self, ctx: CallContext, name: str, symbol: str, decimals: int, minter: bytes) -> None:
        """Create the token; ``minter`` may mint and burn (the zero address means nobody can)."""
        _require(0 < len(name) <= 64 and 0 < len(symbol) <= 16, "name 1..64 and symbol 1..16 characters")
        _require(0 <= decimals <= 36, "decimals must be in 0..36")
        ctx.store(b"meta", (name, symbol, decimals))
        ctx.store(b"minter", minter)

    def _meta(self, ctx: CallContext) -> tuple[str, str, int]:
        meta = ctx.load(b"meta")
        _require(meta is not None, "token not initialised")
        return meta  # type: ignore[no-any-return]

    def _only_minter(self, ctx: CallContext) -> None:
        _require(ctx.caller == ctx.load(b"minter") and ctx.caller != ZERO_ADDRESS, "caller is not the minter")

    @method(readonly=True)
    def info(self, ctx: CallContext) -> tuple[object, ...]:
        """(name, symbol, decimals, totalSupply, minter) in one read."""
        name, symbol, decimals = self._meta(ctx)
        return (name, symbol, decimals, ctx.load(b"supply") or 0, ctx.load(b"minter"))

    @method(readonly=True)
    def minter(self, ctx: CallContext) -> bytes:
        """The address holding the minter role."""
        return ctx.load(b"minter")  # type: ignore[no-any-return]

    @method(Addr, Uint)
    def mint(self, ctx: CallContext, to: bytes, amount: int) -> bool:
        """Create ``amount`` for ``to``; only the minter. Supply stays below 2**256. Raises ``Revert``."""
        self._only_minter(ctx)
        _require(to != ZERO_ADDRESS, "mint to the zero address")
        self._mint(ctx, to, amount)
        return True

    @method(Uint)
    def burn(self, ctx: CallContext, amount: int) -> bool:
        """Destroy ``amount`` of the minter's own tokens; only the minter. Raises ``Revert``.

        (A holder redeems by transferring to the minter, or by approving it for ``burnFrom``.)
        """
        self._only_minter(ctx)
        self._burn(ctx, ctx.caller, amount)
        return True

    @method(Addr, Uint, name="burnFrom")
    def burn_from(self, ctx: CallContext, owner: bytes, amount: int) -> bool:
        """Destroy ``amount`` of ``owner``'s tokens against the minter's allowance; only the minter.

        OpenZeppelin 5 ``ERC20Burnable.burnFrom`` restricted to the minter. Raises ``Revert``.
        """
        self._only_minter(ctx)
        self._spend_allowance(ctx, owner, ctx.caller, amount)
        self._burn(ctx, owner, amount)
        return True

    @method(Addr, name="setMinter")
    def set_minter(self, ctx: CallContext, new_minter: bytes) -> bool:
        """Hand the minter role to ``new_minter`` (zero renounces it); only the minter."""
        old = ctx.load(b"minter")
        _require(ctx.caller == old and ctx.caller != ZERO_ADDRESS, "caller is not the minter")
        ctx.store(b"minter", new_minter)
        ctx.emit("MinterChanged", (old, new_minter), ())
        return True
