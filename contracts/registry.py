"""The VM with every built-in contract of this release."""

from __future__ import annotations

from contracts.builtin import BuiltinEngine
from contracts.token import Token
from contracts.vm import VM

BUILTIN_CONTRACTS = (Token,)
"""Built-in contract classes, by code id: ``token/v1``."""


def default_vm() -> VM:
    """A VM hosting every built-in contract (one engine, stateless: safe to share)."""
    return VM([BuiltinEngine(list(BUILTIN_CONTRACTS))])
