"""Errors of the ``contracts`` package."""

from __future__ import annotations


class ContractError(Exception):
    """Root of every error raised by ``contracts``."""


class Revert(ContractError):
    """Raised inside a call to undo its writes; the receipt carries ``reason``.

    Attributes:
        reason: the human-readable revert reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutOfGas(Revert):
    """Raised when a call needs more gas than is left; all of the transaction's gas is charged."""

    def __init__(self, needed: int, left: int) -> None:
        super().__init__(f"out of gas: needed {needed}, {left} left")
        self.needed = needed
        self.left = left


class TxRejected(ContractError):
    """Raised when a transaction can not be included at all (nonce, chain id, gas limit, signature).

    Attributes:
        reason: a short machine-readable reason (``nonce too low``, ``nonce too high``, ...).
        detail: words for the client.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
