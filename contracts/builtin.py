"""The engine of built-in contracts: Python classes whose methods are declared with ``@method``.

A method declares its argument types; calls with other arguments revert before any code runs.
Amounts are integers in base units in ``[0, 2**256)``. A method declared with ``lock=True`` holds
its contract's re-entrancy lock while it runs (Uniswap V2's ``lock`` modifier): a call that
re-enters any locked method of the same instance reverts with the class's ``LOCKED_REASON``.

Contract classes keep no state of their own (everything lives in storage through the
``CallContext``), so the engine runs every call on one shared instance per class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from contracts.abc import StateView
from contracts.exceptions import Revert
from contracts.vm import CallContext
from state.codec import Value

UINT256_MAX = (1 << 256) - 1

MAX_ADDRESS_LIST = 32
"""Longest address list argument (a swap path of up to 31 hops)."""


class Uint:
    """Argument type marker: an integer in [0, 2**256)."""


class Addr:
    """Argument type marker: a 20-byte address."""


class AddrList:
    """Argument type marker: an array of at most ``MAX_ADDRESS_LIST`` 20-byte addresses."""


def _is_addr_list(v: Any) -> bool:
    return (type(v) is tuple and len(v) <= MAX_ADDRESS_LIST
            and all(type(a) is bytes and len(a) == 20 for a in v))


_CHECKS: dict[Any, Callable[[Any], bool]] = {
    Uint: lambda v: type(v) is int and 0 <= v <= UINT256_MAX,
    Addr: lambda v: type(v) is bytes and len(v) == 20,
    AddrList: _is_addr_list,
    str: lambda v: type(v) is str,
    int: lambda v: type(v) is int,
    bool: lambda v: type(v) is bool,
    bytes: lambda v: type(v) is bytes,
}


@dataclass(frozen=True)
class MethodSpec:
    """A declared contract method: name, argument types, whether it only reads, whether it locks."""

    name: str
    arg_types: tuple[Any, ...]
    readonly: bool
    func: Callable[..., Value]
    lock: bool = False

    @property
    def checks(self) -> tuple[Callable[[Any], bool], ...]:
        """One predicate per argument."""
        return tuple(_CHECKS[t] for t in self.arg_types)

    @property
    def signature(self) -> str:
        """``name(Type, ...)`` as revert reasons show it."""
        return f"{self.name} takes ({', '.join(getattr(t, '__name__', str(t)) for t in self.arg_types)})"


def method(*arg_types: Any, readonly: bool = False, name: str | None = None,
           lock: bool = False) -> Callable[[Any], Any]:
    """Declare a contract method taking arguments of ``arg_types`` (``Uint``, ``Addr``, str ...).

    ``readonly`` methods may be called through ``qnx_call``; ``lock`` methods hold the instance's
    re-entrancy lock while they run. Raises ``KeyError`` at import time for an unknown type marker.
    """
    unknown = [t for t in arg_types if t not in _CHECKS]
    if unknown:  # fail at declaration, not at the first call
        raise KeyError(f"unknown argument types {unknown}")

    def wrap(func: Callable[..., Value]) -> Callable[..., Value]:
        spec = MethodSpec(name or func.__name__, arg_types, readonly, func, lock)
        func.__qenex_method__ = spec  # type: ignore[attr-defined]
        return func

    return wrap


class BuiltinContract:
    """Base of built-in contracts; subclasses set ``CODE_ID`` and define ``@method``s and ``init``."""

    CODE_ID: ClassVar[str] = ""
    LOCKED_REASON: ClassVar[str] = "locked"
    """Revert reason of a re-entrant call into a ``lock`` method."""
    _methods: ClassVar[dict[str, MethodSpec]]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._methods = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                spec = getattr(attr, "__qenex_method__", None)
                if spec is not None:
                    cls._methods[spec.name] = spec


class _Entry:
    """A method ready to run: the shared instance, the function, the argument predicates."""

    __slots__ = ("checks", "func", "instance", "lock_reason", "spec")

    def __init__(self, instance: BuiltinContract, spec: MethodSpec) -> None:
        self.instance, self.spec, self.func = instance, spec, spec.func
        self.checks = spec.checks
        self.lock_reason = type(instance).LOCKED_REASON if spec.lock else None


_NO_METHODS: dict[str, _Entry] = {}


class BuiltinEngine:
    """``ContractEngine`` for ``BuiltinContract`` classes, keyed by their code ids."""

    def __init__(self, contracts: list[type[BuiltinContract]]) -> None:
        """An engine running ``contracts`` (each class's ``CODE_ID`` must be unique)."""
        self._by_code = {c.CODE_ID: c for c in contracts}
        self._entries: dict[str, dict[str, _Entry]] = {}
        for c in contracts:
            instance = c()
            self._entries[c.CODE_ID] = {name: _Entry(instance, spec) for name, spec in c._methods.items()}

    def has_code(self, code_id: str, state: StateView) -> bool:
        """Whether ``code_id`` is one of the built-in contracts (the same in every state)."""
        return code_id in self._by_code

    def store_code(self, kind: str, code: bytes, state: StateView) -> str | None:
        """None: built-in code is part of the node, never uploaded."""
        return None

    def _entry(self, code_id: str, name: str) -> _Entry:
        entry = self._entries.get(code_id, {}).get(name)
        if entry is None:
            raise Revert(f"{code_id} has no method {name!r}")
        return entry

    def is_readonly(self, code_id: str, method: str, state: StateView) -> bool:
        """Whether ``method`` of ``code_id`` only reads. Raises ``Revert`` if there is no such method."""
        return self._entry(code_id, method).spec.readonly

    def invoke(self, code_id: str, ctx: CallContext, method: str, args: tuple[Value, ...]) -> Value:
        """Check ``args`` against the declaration and run the method.

        Raises ``Revert`` (bad arguments, the method's own reverts, a re-entrant call into a locked
        method, a division by zero in the contract's arithmetic).
        """
        entry = self._entries.get(code_id, _NO_METHODS).get(method)
        if entry is None:
            raise Revert(f"{code_id} has no method {method!r}")
        checks = entry.checks
        if len(args) != len(checks):
            raise Revert(entry.spec.signature)
        i = 0
        for check in checks:
            if not check(args[i]):
                raise Revert(entry.spec.signature)
            i += 1
        try:
            if entry.lock_reason is None:
                return entry.func(entry.instance, ctx, *args)
            ctx.lock(entry.lock_reason)
            try:
                return entry.func(entry.instance, ctx, *args)
            finally:
                ctx.unlock()
        except ZeroDivisionError:  # Solidity 0.8 panics (0x12): a revert, never a crashed node
            raise Revert("division by zero") from None
