"""Human amounts and base units, exactly: no floats, no Decimal.

A token with ``decimals`` d counts in base units; one whole token is ``10**d`` base units. The wallet
takes and shows human amounts (``"10.5"`` of a 6-decimal token is 10,500,000 base units) and the
chain only ever sees the integer. ``parse_amount`` and ``format_amount`` are inverse:
``parse_amount(format_amount(n, d), d) == n`` for every base-unit integer ``n`` and ``d`` in
0..``MAX_DECIMALS``.
"""

from __future__ import annotations

import re
from typing import Final

from contracts.builtin import UINT256_MAX
from node.wallet.exceptions import AmountError

MAX_DECIMALS: Final = 77
"""Most decimals an amount may have here (10**77 < 2**256 <= 10**78)."""

_MAX_TEXT: Final = 200
"""Longest amount text looked at (2**256 has 78 digits): longer input is refused before any int()."""

_AMOUNT: Final = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?", re.ASCII)
_DURATION: Final = re.compile(r"(?P<n>[0-9]{1,12})(?P<unit>[smhd]?)", re.ASCII)
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_amount(text: str, decimals: int, *, maximum: int = UINT256_MAX) -> int:
    """Base units of the human amount ``text`` of a token with ``decimals`` decimals.

    ``text`` is plain decimal notation: digits, optionally a point and more digits (``"10"``,
    ``"10.5"``, ``"0.000001"``); no sign, exponent, separators, spaces or non-ASCII digits. Trailing
    zeros after the point do not count as decimals (``"1.50"`` is fine for a 1-decimal token).

    Raises ``AmountError`` when ``text`` is not such a number, has more significant fractional
    digits than ``decimals`` (it can not be paid exactly), or is above ``maximum`` base units
    (default 2**256 - 1); ``ValueError`` (as ``AmountError``) when ``decimals`` is outside
    0..``MAX_DECIMALS``.
    """
    if not 0 <= decimals <= MAX_DECIMALS:
        raise AmountError(text, f"decimals must be 0..{MAX_DECIMALS}, got {decimals}")
    if len(text) > _MAX_TEXT:
        raise AmountError(text[:20] + "...", f"longer than {_MAX_TEXT} characters")
    match = _AMOUNT.fullmatch(text)
    if match is None:
        if text.strip().startswith("-"):
            raise AmountError(text, "amounts can not be negative")
        raise AmountError(text, "expected a plain decimal number such as 10 or 10.5")
    frac = (match["frac"] or "").rstrip("0")
    if len(frac) > decimals:
        raise AmountError(text, f"more than {decimals} decimal{'s' if decimals != 1 else ''} "
                                f"(the smallest unit is {format_amount(1, decimals)})")
    scale: int = 10**decimals
    units = int(match["whole"]) * scale + (int(frac.ljust(decimals, "0")) if frac else 0)
    if units > maximum:
        raise AmountError(text, f"above the largest amount, {format_amount(maximum, decimals)}")
    return units


def format_amount(units: int, decimals: int) -> str:
    """The human form of ``units`` base units of a token with ``decimals`` decimals.

    Shortest exact form: no trailing zeros after the point, no point for whole amounts
    (``format_amount(10_500_000, 6) == "10.5"``). Raises ``ValueError`` for negative ``units`` or
    ``decimals`` outside 0..``MAX_DECIMALS``.
    """
    if units < 0:
        raise ValueError(f"base units are never negative, got {units}")
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals must be 0..{MAX_DECIMALS}, got {decimals}")
    whole, frac = divmod(units, 10**decimals)
    if frac == 0:
        return str(whole)
    return f"{whole}.{str(frac).rjust(decimals, '0').rstrip('0')}"


def parse_slippage(text: str) -> int:
    """Basis points of a slippage tolerance in percent: ``"0.5"`` or ``"0.5%"`` -> 50.

    At most two decimals (one basis point), at most 100%. Raises ``AmountError``.
    """
    body = text[:-1] if text.endswith("%") else text
    try:
        return parse_amount(body, 2, maximum=10_000)
    except AmountError as err:
        raise AmountError(text, f"slippage is a percentage 0..100 with at most 2 decimals ({err.why})") from None


def parse_duration(text: str) -> int:
    """Seconds of a positive duration: ``"300"``, ``"300s"``, ``"5m"``, ``"2h"``, ``"1d"``.

    Raises ``AmountError`` for anything else, and for zero.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise AmountError(text, "expected a duration such as 300, 300s, 5m, 2h or 1d")
    seconds = int(match["n"]) * _UNIT_SECONDS[match["unit"]]
    if seconds <= 0:
        raise AmountError(text, "the duration must be positive")
    return seconds
