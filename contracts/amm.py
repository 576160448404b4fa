"""Constant-product AMM pools with Uniswap V2 semantics, to the wei: factory, pair and router.

Every amount is an integer in base units and every formula is the one of the Solidity sources,
evaluated with the same integer operations in the same order (floor division, SafeMath overflow and
underflow reverts, ``uint112`` reserves, ``uint32`` timestamps, ``uint256`` wrapping accumulators),
so a pool here and a pool on Ethereum given the same operations hold the same numbers.

Sources:

* Uniswap V2 whitepaper (H. Adams, N. Zinsmeister, D. Robinson, "Uniswap v2 Core", March 2020,
  https://uniswap.org/whitepaper.pdf): §2.2 price oracle (UQ112x112 accumulators over ``uint32``
  timestamps), §2.4 protocol fee (1/6 of the growth of sqrt(k) via ``kLast``, eq. 4-7), §3.2.1
  accounting by balances instead of transferred amounts, §3.4 initial liquidity sqrt(x*y) minus
  ``MINIMUM_LIQUIDITY`` locked forever.
* Uniswap/v2-core ``contracts/UniswapV2Pair.sol``, ``UniswapV2Factory.sol``, ``UniswapV2ERC20.sol``,
  ``libraries/Math.sol``, ``libraries/UQ112x112.sol``, ``libraries/SafeMath.sol``.
* Uniswap/v2-periphery ``contracts/UniswapV2Router02.sol`` and ``libraries/UniswapV2Library.sol``.

Departures, all outside the arithmetic: a pair is created by ``CallContext.create`` (our
``CREATE2``) with its tokens as init arguments, so V2's separate ``initialize`` with its
``FORBIDDEN`` check is structural here; the pair's lock is transaction-scoped (EIP-1153 style)
instead of a storage slot; the LP share token checks receivers like the token does (``contracts.token``,
OpenZeppelin 5's ``ERC20InvalidReceiver``): ``mint`` to the zero address reverts with ``mint to the zero
address`` (V2 allows it) and so do transfers to it, the ``MINIMUM_LIQUIDITY`` locked at the zero address
by the first deposit being the one mint there; a failed token transfer reverts
with V2's reason followed by the token's own in parentheses; there is no ``permit``.

Storage (slots of each instance, canonical values)::

    factory  feeTo -> address, feeToSetter -> address, p + token0 + token1 -> pair,
             n -> allPairsLength, i + index (8 bytes, big-endian) -> pair
    pair     cfg -> (factory, token0, token1), res -> (reserve0, reserve1, blockTimestampLast),
             cum -> (price0CumulativeLast, price1CumulativeLast), kLast -> int,
             supply / b + owner / a + owner + spender -> the LP share ledger (``ERC20``)
    router   factory -> address

The pair address of two tokens is ``pair_address(factory, tokenA, tokenB)``, computable offline
(``UniswapV2Library.pairFor``). ``CANONICAL_FACTORY`` and ``CANONICAL_ROUTER`` are the well-known
instances that anyone creates with the deployer's ``create`` (``node.rpc.client.deploy_amm_calls``);
the canonical factory has no fee setter, so its protocol fee is off for good (the chain charges no
fees); a factory deployed with ``deploy`` may name one.
"""

from __future__ import annotations

import functools
import math
from typing import Final

from contracts import gas as G
from contracts.builtin import UINT256_MAX, Addr, AddrList, BuiltinContract, Uint, method
from contracts.exceptions import OutOfGas, Revert
from contracts.token import ERC20
from contracts.vm import DEPLOYER, CallContext, create_address
from crypto.keys import ZERO_ADDRESS, Address
from state.codec import Value

FACTORY_CODE_ID: Final = "amm-factory/v1"
PAIR_CODE_ID: Final = "amm-pair/v1"
ROUTER_CODE_ID: Final = "amm-router/v1"

MINIMUM_LIQUIDITY: Final = 10**3
"""LP shares minted to the zero address by the first deposit, locked forever (whitepaper §3.4)."""
FEE_DENOMINATOR: Final = 1000
FEE_NUMERATOR: Final = 3
"""The swap fee is FEE_NUMERATOR / FEE_DENOMINATOR = 0.3% of the input (whitepaper §3.2.1)."""
FEE_MULTIPLIER: Final = FEE_DENOMINATOR - FEE_NUMERATOR
"""997: the share of the input that counts towards the output (``UniswapV2Library.getAmountOut``)."""
PROTOCOL_FEE_DIVISOR: Final = 5
"""rootK * 5 + rootKLast: the protocol takes 1/6 of the fees (whitepaper §2.4, phi = 1/6)."""
UINT112_MAX: Final = (1 << 112) - 1
Q112: Final = 1 << 112
"""UQ112x112 fixed point: ``encode(y) = y * 2**112`` (``libraries/UQ112x112.sol``)."""
TIMESTAMP_MODULUS: Final = 1 << 32
"""Block timestamps are kept as ``uint32(block.timestamp % 2**32)``; differences wrap."""
ACCUMULATOR_MODULUS: Final = 1 << 256
"""Price accumulators are ``uint256`` and overflow by design."""

LP_NAME: Final = "QENEX V2"
LP_SYMBOL: Final = "QNX-V2"


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise Revert(reason)


# --- SafeMath (v2-core libraries/SafeMath.sol, DappHub ds-math) -------------------------------------


def mul(a: int, b: int) -> int:
    """``a * b`` as SafeMath ``mul``. Raises ``Revert("ds-math-mul-overflow")`` past 2**256 - 1."""
    c = a * b
    if c > UINT256_MAX:
        raise Revert("ds-math-mul-overflow")
    return c


def add(a: int, b: int) -> int:
    """``a + b`` as SafeMath ``add``. Raises ``Revert("ds-math-add-overflow")`` past 2**256 - 1."""
    c = a + b
    if c > UINT256_MAX:
        raise Revert("ds-math-add-overflow")
    return c


def sub(a: int, b: int) -> int:
    """``a - b`` as SafeMath ``sub``. Raises ``Revert("ds-math-sub-underflow")`` below zero."""
    if b > a:
        raise Revert("ds-math-sub-underflow")
    return a - b


def babylonian_sqrt(y: int) -> int:
    """v2-core ``Math.sqrt`` exactly as written (Babylonian method); ``math.isqrt`` gives the same."""
    if y > 3:
        z = y
        x = y // 2 + 1
        while x < z:
            z = x
            x = (y // x + x) // 2
        return z
    return 1 if y != 0 else 0


def sqrt(ctx: CallContext, y: int) -> int:
    """floor(sqrt(y)) (= ``Math.sqrt``); charges ``MATH`` per bit of ``y``."""
    ctx.compute(max(1, y.bit_length()))
    return math.isqrt(y)


# --- UniswapV2Library (v2-periphery libraries/UniswapV2Library.sol) ----------------------------------


def sort_tokens(token_a: bytes, token_b: bytes) -> tuple[bytes, bytes]:
    """(token0, token1): the two addresses in byte order (``sortTokens``).

    Raises ``Revert`` ``UniswapV2Library: IDENTICAL_ADDRESSES`` or ``UniswapV2Library: ZERO_ADDRESS``.
    """
    _require(token_a != token_b, "UniswapV2Library: IDENTICAL_ADDRESSES")
    token0, token1 = (token_a, token_b) if token_a < token_b else (token_b, token_a)
    _require(token0 != ZERO_ADDRESS, "UniswapV2Library: ZERO_ADDRESS")
    return token0, token1


@functools.lru_cache(maxsize=4096)
def _pair_address(factory: bytes, token0: bytes, token1: bytes) -> Address:
    return create_address(factory, PAIR_CODE_ID, token0 + token1, (token0, token1))


def pair_address(factory: bytes, token_a: bytes, token_b: bytes) -> Address:
    """The address of the pair of ``token_a`` and ``token_b`` created by ``factory`` (``pairFor``).

    ``create_address(factory, "amm-pair/v1", token0 + token1, [token0, token1])``: known before
    the pair exists, the same in both directions. Raises ``Revert`` as ``sort_tokens``.
    """
    token0, token1 = sort_tokens(token_a, token_b)
    return _pair_address(bytes(factory), token0, token1)


def quote(amount_a: int, reserve_a: int, reserve_b: int) -> int:
    """The amount of B worth ``amount_a`` of A at the reserves' ratio, rounded down (``quote``).

    Raises ``Revert`` ``UniswapV2Library: INSUFFICIENT_AMOUNT`` / ``INSUFFICIENT_LIQUIDITY``.
    """
    _require(amount_a > 0, "UniswapV2Library: INSUFFICIENT_AMOUNT")
    _require(reserve_a > 0 and reserve_b > 0, "UniswapV2Library: INSUFFICIENT_LIQUIDITY")
    return mul(amount_a, reserve_b) // reserve_a


def get_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """The most a swap of ``amount_in`` can take out, after the 0.3% fee, rounded down (``getAmountOut``).

    ``amount_in * 997 * reserve_out // (reserve_in * 1000 + amount_in * 997)``. Raises ``Revert``
    ``UniswapV2Library: INSUFFICIENT_INPUT_AMOUNT`` / ``INSUFFICIENT_LIQUIDITY`` (or SafeMath).
    """
    _require(amount_in > 0, "UniswapV2Library: INSUFFICIENT_INPUT_AMOUNT")
    _require(reserve_in > 0 and reserve_out > 0, "UniswapV2Library: INSUFFICIENT_LIQUIDITY")
    amount_in_with_fee = mul(amount_in, FEE_MULTIPLIER)
    numerator = mul(amount_in_with_fee, reserve_out)
    denominator = add(mul(reserve_in, FEE_DENOMINATOR), amount_in_with_fee)
    return numerator // denominator


def get_amount_in(amount_out: int, reserve_in: int, reserve_out: int) -> int:
    """The least input that takes ``amount_out`` out, after the fee, rounded up (``getAmountIn``).

    ``reserve_in * amount_out * 1000 // ((reserve_out - amount_out) * 997) + 1``. Raises
    ``Revert`` ``UniswapV2Library: INSUFFICIENT_OUTPUT_AMOUNT`` / ``INSUFFICIENT_LIQUIDITY``, or
    ``ds-math-sub-underflow`` when ``amount_out`` exceeds the reserve (SafeMath).
    """
    _require(amount_out > 0, "UniswapV2Library: INSUFFICIENT_OUTPUT_AMOUNT")
    _require(reserve_in > 0 and reserve_out > 0, "UniswapV2Library: INSUFFICIENT_LIQUIDITY")
    numerator = mul(mul(reserve_in, amount_out), FEE_DENOMINATOR)
    denominator = mul(sub(reserve_out, amount_out), FEE_MULTIPLIER)
    return add(numerator // denominator, 1)


def encode_price(reserve0: int, reserve1: int) -> tuple[int, int]:
    """(price0, price1) in UQ112x112: ``reserve1 * 2**112 // reserve0`` and the inverse (``_update``)."""
    return reserve1 * Q112 // reserve0, reserve0 * Q112 // reserve1


# --- contracts ---------------------------------------------------------------------------------------


def _balance_of(ctx: CallContext, token: bytes) -> int:
    """``IERC20(token).balanceOf(this)``; a result that is not a uint reverts."""
    balance = ctx.call(token, "balanceOf", (ctx.contract,))
    _require(type(balance) is int and 0 <= balance <= UINT256_MAX, "UniswapV2: BALANCE_NOT_UINT")
    return balance  # type: ignore[no-any-return]


def _checked_transfer(ctx: CallContext, token: bytes, method_name: str, args: tuple[Value, ...],
                      reason: str) -> None:
    """Call a token transfer method; its revert (not running out of gas) becomes ``reason (cause)``."""
    try:
        ok = ctx.call(token, method_name, args)
    except OutOfGas:
        raise
    except Revert as err:
        raise Revert(f"{reason} ({err.reason})") from None
    _require(ok is True or ok is None, reason)


class Factory(BuiltinContract):
    """The pair factory (``UniswapV2Factory``), code id ``amm-factory/v1``; init(feeToSetter).

    One pair per unordered token pair; ``getPair`` answers in both directions; ``feeTo`` (the
    protocol fee recipient, zero: fee off) is settable only by ``feeToSetter``.
    """

    CODE_ID = FACTORY_CODE_ID

    @method(Addr)
    def init(self, ctx: CallContext, fee_to_setter: bytes) -> None:
        """Create the factory with ``fee_to_setter`` as the fee admin (zero: nobody, fee off for good)."""
        if fee_to_setter != ZERO_ADDRESS:
            ctx.store(b"feeToSetter", fee_to_setter)

    @method(readonly=True, name="feeTo")
    def fee_to(self, ctx: CallContext) -> bytes:
        """The protocol fee recipient (the zero address: fee off)."""
        return ctx.load(b"feeTo") or ZERO_ADDRESS

    @method(readonly=True, name="feeToSetter")
    def fee_to_setter(self, ctx: CallContext) -> bytes:
        """The address that may change ``feeTo`` and itself."""
        return ctx.load(b"feeToSetter") or ZERO_ADDRESS

    @method(Addr, Addr, readonly=True, name="getPair")
    def get_pair(self, ctx: CallContext, token_a: bytes, token_b: bytes) -> bytes:
        """The pair of the two tokens in either order, or the zero address."""
        if token_a == token_b:
            return ZERO_ADDRESS
        token0, token1 = (token_a, token_b) if token_a < token_b else (token_b, token_a)
        return ctx.load(b"p" + token0 + token1) or ZERO_ADDRESS

    @method(readonly=True, name="allPairsLength")
    def all_pairs_length(self, ctx: CallContext) -> int:
        """How many pairs this factory created."""
        return ctx.load(b"n") or 0

    @method(Uint, readonly=True, name="allPairs")
    def all_pairs(self, ctx: CallContext, index: int) -> bytes:
        """The ``index``-th pair created (0-based). Raises ``Revert`` past the end."""
        _require(index < (ctx.load(b"n") or 0), "index out of range")
        return ctx.load(b"i" + index.to_bytes(8, "big"))  # type: ignore[no-any-return]

    @method(Addr, Addr, name="createPair")
    def create_pair(self, ctx: CallContext, token_a: bytes, token_b: bytes) -> bytes:
        """Create the pair of two tokens (``PairCreated``); returns its address.

        Raises ``Revert`` ``UniswapV2: IDENTICAL_ADDRESSES``, ``UniswapV2: ZERO_ADDRESS``,
        ``UniswapV2: PAIR_EXISTS``.
        """
        _require(token_a != token_b, "UniswapV2: IDENTICAL_ADDRESSES")
        token0, token1 = (token_a, token_b) if token_a < token_b else (token_b, token_a)
        _require(token0 != ZERO_ADDRESS, "UniswapV2: ZERO_ADDRESS")
        key = b"p" + token0 + token1
        _require(ctx.load(key) is None, "UniswapV2: PAIR_EXISTS")
        ctx.charge(G.HASH)
        pair = ctx.create(PAIR_CODE_ID, token0 + token1, (token0, token1))
        ctx.store(key, pair)
        count = ctx.load(b"n") or 0
        ctx.store(b"i" + count.to_bytes(8, "big"), pair)
        ctx.store(b"n", count + 1)
        ctx.emit("PairCreated", (token0, token1), (pair, count + 1))
        return pair

    def _only_setter(self, ctx: CallContext) -> None:
        setter = ctx.load(b"feeToSetter")
        _require(setter is not None and ctx.caller == setter, "UniswapV2: FORBIDDEN")

    @method(Addr, name="setFeeTo")
    def set_fee_to(self, ctx: CallContext, fee_to: bytes) -> bool:
        """Set the protocol fee recipient (zero turns the fee off); only ``feeToSetter``."""
        self._only_setter(ctx)
        ctx.store(b"feeTo", None if fee_to == ZERO_ADDRESS else fee_to)
        return True

    @method(Addr, name="setFeeToSetter")
    def set_fee_to_setter(self, ctx: CallContext, setter: bytes) -> bool:
        """Hand the fee admin role on (zero renounces it); only ``feeToSetter``."""
        self._only_setter(ctx)
        ctx.store(b"feeToSetter", None if setter == ZERO_ADDRESS else setter)
        return True


class Pair(ERC20):
    """A pool of two tokens with LP shares (``UniswapV2Pair``), code id ``amm-pair/v1``.

    Created by its factory with init(token0, token1). ``mint``, ``burn``, ``swap``, ``skim`` and
    ``sync`` are V2's low-level functions: they measure what was paid in as balance - reserve, so
    the tokens must be transferred to the pair first (the router does both in one transaction).
    """

    CODE_ID = PAIR_CODE_ID
    NAME = LP_NAME
    SYMBOL = LP_SYMBOL
    DECIMALS = 18
    LOCKED_REASON = "UniswapV2: LOCKED"

    @method(Addr, Addr)
    def init(self, ctx: CallContext, token0: bytes, token1: bytes) -> None:
        """Record the factory (the creator) and the two tokens, ``token0 < token1``."""
        _require(token0 < token1, "UniswapV2: tokens must be sorted")
        ctx.store(b"cfg", (ctx.caller, token0, token1))

    # --- reads --------------------------------------------------------------------------------

    @staticmethod
    def _cfg(ctx: CallContext) -> tuple[bytes, bytes, bytes]:
        return ctx.load(b"cfg")  # type: ignore[no-any-return]

    @staticmethod
    def _reserves(ctx: CallContext) -> tuple[int, int, int]:
        reserves = ctx.load(b"res")
        return (0, 0, 0) if reserves is None else reserves

    @method(readonly=True, name="getReserves")
    def get_reserves(self, ctx: CallContext) -> tuple[int, int, int]:
        """(reserve0, reserve1, blockTimestampLast): base units, and seconds mod 2**32."""
        return self._reserves(ctx)

    @method(readonly=True)
    def factory(self, ctx: CallContext) -> bytes:
        """The factory that created this pair."""
        return self._cfg(ctx)[0]

    @method(readonly=True)
    def token0(self, ctx: CallContext) -> bytes:
        """The lower token address."""
        return self._cfg(ctx)[1]

    @method(readonly=True)
    def token1(self, ctx: CallContext) -> bytes:
        """The higher token address."""
        return self._cfg(ctx)[2]

    @method(readonly=True, name="price0CumulativeLast")
    def price0_cumulative_last(self, ctx: CallContext) -> int:
        """Sum of UQ112x112 price of token0 (in token1) times seconds, mod 2**256, at the last update."""
        return (ctx.load(b"cum") or (0, 0))[0]

    @method(readonly=True, name="price1CumulativeLast")
    def price1_cumulative_last(self, ctx: CallContext) -> int:
        """Sum of UQ112x112 price of token1 (in token0) times seconds, mod 2**256, at the last update."""
        return (ctx.load(b"cum") or (0, 0))[1]

    @method(readonly=True, name="kLast")
    def k_last(self, ctx: CallContext) -> int:
        """reserve0 * reserve1 after the last liquidity event while the protocol fee is on (else 0)."""
        return ctx.load(b"kLast") or 0

    @method(readonly=True, name="MINIMUM_LIQUIDITY")
    def minimum_liquidity(self, ctx: CallContext) -> int:
        """1000 LP shares, locked at the zero address by the first deposit."""
        return MINIMUM_LIQUIDITY

    @method(readonly=True)
    def info(self, ctx: CallContext) -> tuple[Value, ...]:
        """(factory, token0, token1, reserve0, reserve1, blockTimestampLast, totalSupply,
        price0CumulativeLast, price1CumulativeLast, kLast) in one read (``qnx_getPool``)."""
        factory, token0, token1 = self._cfg(ctx)
        reserve0, reserve1, timestamp = self._reserves(ctx)
        price0, price1 = ctx.load(b"cum") or (0, 0)
        return (factory, token0, token1, reserve0, reserve1, timestamp, ctx.load(b"supply") or 0, price0, price1,
                ctx.load(b"kLast") or 0)

    # --- internals ----------------------------------------------------------------------------

    def _update(self, ctx: CallContext, balance0: int, balance1: int, reserve0: int, reserve1: int,
                timestamp_last: int) -> None:
        """Store the balances as reserves; on the first update of a block, grow the price accumulators."""
        _require(balance0 <= UINT112_MAX and balance1 <= UINT112_MAX, "UniswapV2: OVERFLOW")
        timestamp = ctx.env.timestamp % TIMESTAMP_MODULUS
        elapsed = (timestamp - timestamp_last) % TIMESTAMP_MODULUS  # overflow is desired
        if elapsed > 0 and reserve0 != 0 and reserve1 != 0:
            ctx.compute(8)
            price0, price1 = ctx.load(b"cum") or (0, 0)
            price0 = (price0 + reserve1 * Q112 // reserve0 * elapsed) % ACCUMULATOR_MODULUS
            price1 = (price1 + reserve0 * Q112 // reserve1 * elapsed) % ACCUMULATOR_MODULUS
            ctx.store(b"cum", (price0, price1))
        ctx.store(b"res", (balance0, balance1, timestamp))
        ctx.emit("Sync", (), (balance0, balance1))

    def _mint_fee(self, ctx: CallContext, factory: bytes, reserve0: int, reserve1: int) -> tuple[bool, bytes]:
        """Mint the protocol's 1/6 of the fees grown since ``kLast`` to ``feeTo`` (whitepaper §2.4).

        Returns (fee on, feeTo).
        """
        fee_to: bytes = ctx.call(factory, "feeTo", ())
        fee_on = fee_to != ZERO_ADDRESS
        k_last = ctx.load(b"kLast") or 0
        if fee_on:
            if k_last != 0:
                ctx.compute(1)
                root_k = sqrt(ctx, mul(reserve0, reserve1))
                root_k_last = sqrt(ctx, k_last)
                if root_k > root_k_last:
                    ctx.compute(4)
                    numerator = mul(ctx.load(b"supply") or 0, sub(root_k, root_k_last))
                    denominator = add(mul(root_k, PROTOCOL_FEE_DIVISOR), root_k_last)
                    liquidity = numerator // denominator
                    if liquidity > 0:
                        self._mint(ctx, fee_to, liquidity)
        elif k_last != 0:
            ctx.store(b"kLast", None)
        return fee_on, fee_to

    # --- the pool -----------------------------------------------------------------------------

    @method(Addr, lock=True)
    def mint(self, ctx: CallContext, to: bytes) -> int:
        """Mint LP shares to ``to`` for what was deposited since the last update; returns them.

        First deposit: sqrt(amount0 * amount1) - 1000, with 1000 locked at the zero address; later:
        min(amount0 * supply / reserve0, amount1 * supply / reserve1), rounded down. Raises
        ``Revert`` ``UniswapV2: INSUFFICIENT_LIQUIDITY_MINTED``, ``mint to the zero address`` (or
        SafeMath, ``UniswapV2: OVERFLOW``).
        """
        _require(to != ZERO_ADDRESS, "mint to the zero address")  # OZ5 _mint's ERC20InvalidReceiver
        factory, token0, token1 = self._cfg(ctx)
        reserve0, reserve1, timestamp_last = self._reserves(ctx)
        balance0 = _balance_of(ctx, token0)
        balance1 = _balance_of(ctx, token1)
        amount0 = sub(balance0, reserve0)
        amount1 = sub(balance1, reserve1)
        fee_on, _ = self._mint_fee(ctx, factory, reserve0, reserve1)
        supply = ctx.load(b"supply") or 0  # after _mint_fee, which may have minted
        if supply == 0:
            ctx.compute(1)
            liquidity = sub(sqrt(ctx, mul(amount0, amount1)), MINIMUM_LIQUIDITY)
            self._mint(ctx, ZERO_ADDRESS, MINIMUM_LIQUIDITY)  # permanently locked
        else:
            ctx.compute(4)
            liquidity = min(mul(amount0, supply) // reserve0, mul(amount1, supply) // reserve1)
        _require(liquidity > 0, "UniswapV2: INSUFFICIENT_LIQUIDITY_MINTED")
        self._mint(ctx, to, liquidity)
        self._update(ctx, balance0, balance1, reserve0, reserve1, timestamp_last)
        if fee_on:
            ctx.compute(1)
            ctx.store(b"kLast", balance0 * balance1)  # the reserves just set
        ctx.emit("Mint", (ctx.caller,), (amount0, amount1))
        return liquidity

    @method(Addr, lock=True)
    def burn(self, ctx: CallContext, to: bytes) -> tuple[int, int]:
        """Burn the LP shares held by the pair itself; sends ``to`` their part of each balance.

        amount = liquidity * balance / supply, rounded down; returns (amount0, amount1). Raises
        ``Revert`` ``UniswapV2: INSUFFICIENT_LIQUIDITY_BURNED``.
        """
        factory, token0, token1 = self._cfg(ctx)
        reserve0, reserve1, timestamp_last = self._reserves(ctx)
        balance0 = _balance_of(ctx, token0)
        balance1 = _balance_of(ctx, token1)
        liquidity = ctx.load(b"b" + ctx.contract) or 0
        fee_on, _ = self._mint_fee(ctx, factory, reserve0, reserve1)
        supply = ctx.load(b"supply") or 0
        ctx.compute(4)
        amount0 = mul(liquidity, balance0) // supply  # pro-rata of the balances
        amount1 = mul(liquidity, balance1) // supply
        _require(amount0 > 0 and amount1 > 0, "UniswapV2: INSUFFICIENT_LIQUIDITY_BURNED")
        self._burn(ctx, ctx.contract, liquidity)
        _checked_transfer(ctx, token0, "transfer", (to, amount0), "UniswapV2: TRANSFER_FAILED")
        _checked_transfer(ctx, token1, "transfer", (to, amount1), "UniswapV2: TRANSFER_FAILED")
        balance0 = _balance_of(ctx, token0)
        balance1 = _balance_of(ctx, token1)
        self._update(ctx, balance0, balance1, reserve0, reserve1, timestamp_last)
        if fee_on:
            ctx.compute(1)
            ctx.store(b"kLast", balance0 * balance1)
        ctx.emit("Burn", (ctx.caller, to), (amount0, amount1))
        return amount0, amount1

    @method(Uint, Uint, Addr, bytes, lock=True)
    def swap(self, ctx: CallContext, amount0_out: int, amount1_out: int, to: bytes, data: bytes) -> None:
        """Send out the amounts (optimistically), call ``to.uniswapV2Call`` if ``data`` is not
        empty (flash swap), then require that what came in pays the 0.3% fee on the K invariant:
        (balance0 * 1000 - amount0In * 3) * (balance1 * 1000 - amount1In * 3) >= reserve0 * reserve1 * 1000**2.

        Raises ``Revert`` ``UniswapV2: INSUFFICIENT_OUTPUT_AMOUNT``, ``INSUFFICIENT_LIQUIDITY``,
        ``INVALID_TO``, ``INSUFFICIENT_INPUT_AMOUNT``, ``K``, ``LOCKED``, ``TRANSFER_FAILED``.
        """
        _require(amount0_out > 0 or amount1_out > 0, "UniswapV2: INSUFFICIENT_OUTPUT_AMOUNT")
        reserve0, reserve1, timestamp_last = self._reserves(ctx)
        _require(amount0_out < reserve0 and amount1_out < reserve1, "UniswapV2: INSUFFICIENT_LIQUIDITY")
        _, token0, token1 = self._cfg(ctx)
        _require(to != token0 and to != token1, "UniswapV2: INVALID_TO")
        if amount0_out > 0:
            _checked_transfer(ctx, token0, "transfer", (to, amount0_out), "UniswapV2: TRANSFER_FAILED")
        if amount1_out > 0:
            _checked_transfer(ctx, token1, "transfer", (to, amount1_out), "UniswapV2: TRANSFER_FAILED")
        if data:
            ctx.call(to, "uniswapV2Call", (ctx.caller, amount0_out, amount1_out, data))
        balance0 = _balance_of(ctx, token0)
        balance1 = _balance_of(ctx, token1)
        left0, left1 = reserve0 - amount0_out, reserve1 - amount1_out
        amount0_in = balance0 - left0 if balance0 > left0 else 0
        amount1_in = balance1 - left1 if balance1 > left1 else 0
        _require(amount0_in > 0 or amount1_in > 0, "UniswapV2: INSUFFICIENT_INPUT_AMOUNT")
        ctx.compute(8)
        adjusted0 = sub(mul(balance0, FEE_DENOMINATOR), mul(amount0_in, FEE_NUMERATOR))
        adjusted1 = sub(mul(balance1, FEE_DENOMINATOR), mul(amount1_in, FEE_NUMERATOR))
        _require(mul(adjusted0, adjusted1) >= mul(mul(reserve0, reserve1), FEE_DENOMINATOR**2), "UniswapV2: K")
        self._update(ctx, balance0, balance1, reserve0, reserve1, timestamp_last)
        ctx.emit("Swap", (ctx.caller, to), (amount0_in, amount1_in, amount0_out, amount1_out))

    @method(Addr, lock=True)
    def skim(self, ctx: CallContext, to: bytes) -> None:
        """Send ``to`` whatever the balances hold above the reserves. Raises ``Revert``."""
        _, token0, token1 = self._cfg(ctx)
        reserve0, reserve1, _ = self._reserves(ctx)
        excess0 = sub(_balance_of(ctx, token0), reserve0)
        _checked_transfer(ctx, token0, "transfer", (to, excess0), "UniswapV2: TRANSFER_FAILED")
        excess1 = sub(_balance_of(ctx, token1), reserve1)
        _checked_transfer(ctx, token1, "transfer", (to, excess1), "UniswapV2: TRANSFER_FAILED")

    @method(lock=True)
    def sync(self, ctx: CallContext) -> None:
        """Set the reserves to the balances (``Sync``). Raises ``Revert`` ``UniswapV2: OVERFLOW``."""
        _, token0, token1 = self._cfg(ctx)
        reserve0, reserve1, timestamp_last = self._reserves(ctx)
        balance0 = _balance_of(ctx, token0)
        balance1 = _balance_of(ctx, token1)
        self._update(ctx, balance0, balance1, reserve0, reserve1, timestamp_last)


class Router(BuiltinContract):
    """Liquidity and multi-hop swaps with slippage bounds (``UniswapV2Router02``), code id ``amm-router/v1``.

    init(factory). Every state-changing method takes a ``deadline`` (block timestamp, seconds) and
    reverts ``UniswapV2Router: EXPIRED`` after it. Tokens are pulled from the caller with
    ``transferFrom``, so the caller approves the router first. Rounding always favours the pool:
    outputs round down, required inputs round up.
    """

    CODE_ID = ROUTER_CODE_ID

    @method(Addr)
    def init(self, ctx: CallContext, factory: bytes) -> None:
        """Create the router of ``factory``."""
        ctx.store(b"factory", factory)

    @method(readonly=True)
    def factory(self, ctx: CallContext) -> bytes:
        """The factory whose pairs this router trades."""
        return ctx.load(b"factory")  # type: ignore[no-any-return]

    # --- library calls ------------------------------------------------------------------------

    @staticmethod
    def _ensure(ctx: CallContext, deadline: int) -> None:
        _require(deadline >= ctx.env.timestamp, "UniswapV2Router: EXPIRED")

    @staticmethod
    def _pair(ctx: CallContext, factory: bytes, token_a: bytes, token_b: bytes) -> Address:
        ctx.charge(G.HASH)
        return pair_address(factory, token_a, token_b)

    def _get_reserves(self, ctx: CallContext, factory: bytes, token_a: bytes, token_b: bytes) -> tuple[int, int]:
        token0, _ = sort_tokens(token_a, token_b)
        reserve0, reserve1, _ = ctx.call(self._pair(ctx, factory, token_a, token_b), "getReserves", ())
        return (reserve0, reserve1) if token_a == token0 else (reserve1, reserve0)

    def _amounts_out(self, ctx: CallContext, factory: bytes, amount_in: int, path: tuple[bytes, ...]) -> list[int]:
        _require(len(path) >= 2, "UniswapV2Library: INVALID_PATH")
        amounts = [amount_in]
        for i in range(len(path) - 1):
            reserve_in, reserve_out = self._get_reserves(ctx, factory, path[i], path[i + 1])
            ctx.compute(4)
            amounts.append(get_amount_out(amounts[i], reserve_in, reserve_out))
        return amounts

    def _amounts_in(self, ctx: CallContext, factory: bytes, amount_out: int, path: tuple[bytes, ...]) -> list[int]:
        _require(len(path) >= 2, "UniswapV2Library: INVALID_PATH")
        amounts = [0] * len(path)
        amounts[-1] = amount_out
        for i in range(len(path) - 1, 0, -1):
            reserve_in, reserve_out = self._get_reserves(ctx, factory, path[i - 1], path[i])
            ctx.compute(5)
            amounts[i - 1] = get_amount_in(amounts[i], reserve_in, reserve_out)
        return amounts

    @method(Uint, Uint, Uint, readonly=True)
    def quote(self, ctx: CallContext, amount_a: int, reserve_a: int, reserve_b: int) -> int:
        """``UniswapV2Library.quote``: amount_a * reserve_b / reserve_a, rounded down."""
        ctx.compute(2)
        return quote(amount_a, reserve_a, reserve_b)

    @method(Uint, Uint, Uint, readonly=True, name="getAmountOut")
    def get_amount_out(self, ctx: CallContext, amount_in: int, reserve_in: int, reserve_out: int) -> int:
        """``UniswapV2Library.getAmountOut`` (see ``contracts.amm.get_amount_out``)."""
        ctx.compute(4)
        return get_amount_out(amount_in, reserve_in, reserve_out)

    @method(Uint, Uint, Uint, readonly=True, name="getAmountIn")
    def get_amount_in(self, ctx: CallContext, amount_out: int, reserve_in: int, reserve_out: int) -> int:
        """``UniswapV2Library.getAmountIn`` (see ``contracts.amm.get_amount_in``)."""
        ctx.compute(5)
        return get_amount_in(amount_out, reserve_in, reserve_out)

    @method(Uint, AddrList, readonly=True, name="getAmountsOut")
    def get_amounts_out(self, ctx: CallContext, amount_in: int, path: tuple[bytes, ...]) -> tuple[int, ...]:
        """The amounts along ``path`` (token addresses) for ``amount_in`` of ``path[0]``, from the reserves."""
        return tuple(self._amounts_out(ctx, ctx.load(b"factory"), amount_in, path))

    @method(Uint, AddrList, readonly=True, name="getAmountsIn")
    def get_amounts_in(self, ctx: CallContext, amount_out: int, path: tuple[bytes, ...]) -> tuple[int, ...]:
        """The amounts along ``path`` needed to receive ``amount_out`` of ``path[-1]``."""
        return tuple(self._amounts_in(ctx, ctx.load(b"factory"), amount_out, path))

    # --- liquidity ----------------------------------------------------------------------------

    @method(Addr, Addr, Uint, Uint, Uint, Uint, Addr, Uint, name="addLiquidity")
    def add_liquidity(self, ctx: CallContext, token_a: bytes, token_b: bytes, amount_a_desired: int,
                      amount_b_desired: int, amount_a_min: int, amount_b_min: int, to: bytes,
                      deadline: int) -> tuple[int, int, int]:
        """Deposit at the pool's ratio (creating the pool if needed); returns (amountA, amountB, liquidity).

        At most the desired amounts, at least the minimums (unchecked on the first deposit, as in
        V2). Raises ``Revert`` ``UniswapV2Router: EXPIRED``, ``INSUFFICIENT_A_AMOUNT``,
        ``INSUFFICIENT_B_AMOUNT``, ``TransferHelper: TRANSFER_FROM_FAILED``, or the pair's reverts.
        """
        self._ensure(ctx, deadline)
        factory: bytes = ctx.load(b"factory")
        if ctx.call(factory, "getPair", (token_a, token_b)) == ZERO_ADDRESS:
            ctx.call(factory, "createPair", (token_a, token_b))
        reserve_a, reserve_b = self._get_reserves(ctx, factory, token_a, token_b)
        if reserve_a == 0 and reserve_b == 0:
            amount_a, amount_b = amount_a_desired, amount_b_desired
        else:
            ctx.compute(2)
            amount_b_optimal = quote(amount_a_desired, reserve_a, reserve_b)
            if amount_b_optimal <= amount_b_desired:
                _require(amount_b_optimal >= amount_b_min, "UniswapV2Router: INSUFFICIENT_B_AMOUNT")
                amount_a, amount_b = amount_a_desired, amount_b_optimal
            else:
                ctx.compute(2)
                amount_a_optimal = quote(amount_b_desired, reserve_b, reserve_a)
                _require(amount_a_optimal <= amount_a_desired, "UniswapV2Router: assertion failed")
                _require(amount_a_optimal >= amount_a_min, "UniswapV2Router: INSUFFICIENT_A_AMOUNT")
                amount_a, amount_b = amount_a_optimal, amount_b_desired
        pair = self._pair(ctx, factory, token_a, token_b)
        for token, amount in ((token_a, amount_a), (token_b, amount_b)):
            _checked_transfer(ctx, token, "transferFrom", (ctx.caller, pair, amount),
                              "TransferHelper: TRANSFER_FROM_FAILED")
        liquidity: int = ctx.call(pair, "mint", (to,))
        return amount_a, amount_b, liquidity

    @method(Addr, Addr, Uint, Uint, Uint, Addr, Uint, name="removeLiquidity")
    def remove_liquidity(self, ctx: CallContext, token_a: bytes, token_b: bytes, liquidity: int, amount_a_min: int,
                         amount_b_min: int, to: bytes, deadline: int) -> tuple[int, int]:
        """Burn ``liquidity`` LP shares of the caller (approved to the router); returns (amountA, amountB).

        Raises ``Revert`` ``UniswapV2Router: EXPIRED``, ``INSUFFICIENT_A_AMOUNT``,
        ``INSUFFICIENT_B_AMOUNT``, or the pair's reverts.
        """
        self._ensure(ctx, deadline)
        factory: bytes = ctx.load(b"factory")
        pair = self._pair(ctx, factory, token_a, token_b)
        ctx.call(pair, "transferFrom", (ctx.caller, pair, liquidity))
        amount0, amount1 = ctx.call(pair, "burn", (to,))
        token0, _ = sort_tokens(token_a, token_b)
        amount_a, amount_b = (amount0, amount1) if token_a == token0 else (amount1, amount0)
        _require(amount_a >= amount_a_min, "UniswapV2Router: INSUFFICIENT_A_AMOUNT")
        _require(amount_b >= amount_b_min, "UniswapV2Router: INSUFFICIENT_B_AMOUNT")
        return amount_a, amount_b

    # --- swaps --------------------------------------------------------------------------------

    def _swap(self, ctx: CallContext, factory: bytes, amounts: list[int], path: tuple[bytes, ...], to: bytes) -> None:
        """Pay ``amounts[0]`` in first, then swap hop by hop; each pair sends straight to the next."""
        last = len(path) - 2
        for i in range(len(path) - 1):
            token_in, token_out = path[i], path[i + 1]
            token0, _ = sort_tokens(token_in, token_out)
            amount_out = amounts[i + 1]
            amount0_out, amount1_out = (0, amount_out) if token_in == token0 else (amount_out, 0)
            dest = self._pair(ctx, factory, token_out, path[i + 2]) if i < last else to
            ctx.call(self._pair(ctx, factory, token_in, token_out), "swap", (amount0_out, amount1_out, dest, b""))

    @method(Uint, Uint, AddrList, Addr, Uint, name="swapExactTokensForTokens")
    def swap_exact_tokens_for_tokens(self, ctx: CallContext, amount_in: int, amount_out_min: int,
                                     path: tuple[bytes, ...], to: bytes, deadline: int) -> tuple[int, ...]:
        """Swap exactly ``amount_in`` of ``path[0]`` for at least ``amount_out_min`` of ``path[-1]``.

        Returns the amounts along the path. Raises ``Revert`` ``UniswapV2Router: EXPIRED``,
        ``UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT``, ``UniswapV2Library: INVALID_PATH`` ...
        """
        self._ensure(ctx, deadline)
        factory: bytes = ctx.load(b"factory")
        amounts = self._amounts_out(ctx, factory, amount_in, path)
        _require(amounts[-1] >= amount_out_min, "UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT")
        _checked_transfer(ctx, path[0], "transferFrom", (ctx.caller, self._pair(ctx, factory, path[0], path[1]),
                                                         amounts[0]), "TransferHelper: TRANSFER_FROM_FAILED")
        self._swap(ctx, factory, amounts, path, to)
        return tuple(amounts)

    @method(Uint, Uint, AddrList, Addr, Uint, name="swapTokensForExactTokens")
    def swap_tokens_for_exact_tokens(self, ctx: CallContext, amount_out: int, amount_in_max: int,
                                     path: tuple[bytes, ...], to: bytes, deadline: int) -> tuple[int, ...]:
        """Receive exactly ``amount_out`` of ``path[-1]`` for at most ``amount_in_max`` of ``path[0]``.

        Returns the amounts along the path. Raises ``Revert`` ``UniswapV2Router: EXPIRED``,
        ``UniswapV2Router: EXCESSIVE_INPUT_AMOUNT``, ``UniswapV2Library: INVALID_PATH`` ...
        """
        self._ensure(ctx, deadline)
        factory: bytes = ctx.load(b"factory")
        amounts = self._amounts_in(ctx, factory, amount_out, path)
        _require(amounts[0] <= amount_in_max, "UniswapV2Router: EXCESSIVE_INPUT_AMOUNT")
        _checked_transfer(ctx, path[0], "transferFrom", (ctx.caller, self._pair(ctx, factory, path[0], path[1]),
                                                         amounts[0]), "TransferHelper: TRANSFER_FROM_FAILED")
        self._swap(ctx, factory, amounts, path, to)
        return tuple(amounts)


CANONICAL_FACTORY: Final = create_address(DEPLOYER, FACTORY_CODE_ID, b"", (ZERO_ADDRESS,))
"""The well-known factory: ``create("amm-factory/v1", b"", [zero address])`` through the deployer.

Its fee setter is the zero address, so its protocol fee stays off; ``qnx_getPool`` looks pools up here
unless told another factory."""
CANONICAL_ROUTER: Final = create_address(DEPLOYER, ROUTER_CODE_ID, b"", (CANONICAL_FACTORY,))
"""The well-known router of ``CANONICAL_FACTORY``: ``create("amm-router/v1", b"", [CANONICAL_FACTORY])``."""

AMM_CONTRACTS: Final = (Factory, Pair, Router)
"""The built-in contract classes of this module."""
