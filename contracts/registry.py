"""The VM with every built-in contract of this release."""

from __future__ import annotations

from contracts.amm import Factory, Pair, Router
from contracts.builtin import BuiltinContract, BuiltinEngine
from contracts.token import Token
from contracts.vm import VM

BUILTIN_CONTRACTS: tuple[type[BuiltinContract], ...] = (Token, Factory, Pair, Router)
"""Built-in contract classes, by code id: ``token/v1``, ``amm-factory/v1``, ``amm-pair/v1``, ``amm-router/v1``."""


def default_vm(extra: tuple[type[BuiltinContract], ...] = ()) -> VM:
    """A VM hosting every built-in contract, plus ``extra`` classes (tests add their own).

    The engine is stateless (one shared instance per contract class): safe to share.
    """
    return VM([BuiltinEngine([*BUILTIN_CONTRACTS, *extra])])
