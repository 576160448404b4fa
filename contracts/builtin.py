"""The engine of built-in contracts: Python classes whose methods are declared with ``@method``.

A method declares its argument types; calls with other arguments revert before any code runs.
Amounts are integers in base units in ``[0, 2**256)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts.exceptions import Revert
from contracts.vm import CallContext
from state.codec import Value

UINT256_MAX = (1 << 256) - 1


class Uint:
    """Argument type marker: an integer in [0, 2**256)."""


class Addr:
    """Argument type marker: a 20-byte address."""


_CHECKS: dict[Any, Callable[[Any], bool]] = {
    Uint: lambda v: type(v) is int and 0 <= v <= UINT256_MAX,
    Addr: lambda v: type(v) is bytes and len(v) == 20,
    str: lambda v: type(v) is str,
    int: lambda v: type(v) is int,
    bool: lambda v: type(v) is bool,
    bytes: lambda v: type(v) is bytes,
}


@dataclass(frozen=True)
class MethodSpec:
    """A declared contract method: name, argument types and whether it only reads."""

    name: str
    arg_types: tuple[Any, ...]
    readonly: bool
    func: Callable[..., Value]


def method(*arg_types: Any, readonly: bool = False, name: str | None = None) -> Callable[[Any], Any]:
    """Declare a contract method taking arguments of ``arg_types`` (``Uint``, ``Addr``, str ...)."""

    def wrap(func: Callable[..., Value]) -> Callable[..., Value]:
        func.__qenex_method__ = MethodSpec(name or func.__name__, arg_types, readonly, func)  # type: ignore[attr-defined]
        return func

    return wrap


class BuiltinContract:
    """Base of built-in contracts; subclasses set ``CODE_ID`` and define ``@method``s and ``init``."""

    CODE_ID: str = ""
    _methods: dict[str, MethodSpec]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._methods = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                spec = getattr(attr, "__qenex_method__", None)
                if spec is not None:
                    cls._methods[spec.name] = spec


class BuiltinEngine:
    """``ContractEngine`` for ``BuiltinContract`` classes, keyed by their code ids."""

    def __init__(self, contracts: list[type[BuiltinContract]]) -> None:
        self._by_code = {c.CODE_ID: c for c in contracts}

    def has_code(self, code_id: str) -> bool:
        """Whether ``code_id`` is one of the built-in contracts."""
        return code_id in self._by_code

    def _spec(self, code_id: str, name: str) -> MethodSpec:
        spec = self._by_code[code_id]._methods.get(name)
        if spec is None:
            raise Revert(f"{code_id} has no method {name!r}")
        return spec

    def is_readonly(self, code_id: str, method: str) -> bool:
        """Whether ``method`` of ``code_id`` only reads."""
        return self._spec(code_id, method).readonly

    def invoke(self, code_id: str, ctx: CallContext, method: str, args: tuple[Value, ...]) -> Value:
        """Check ``args`` against the declaration and run the method. Raises ``Revert``."""
        spec = self._spec(code_id, method)
        if len(args) != len(spec.arg_types) or not all(
            _CHECKS[t](a) for t, a in zip(spec.arg_types, args, strict=True)
        ):
            names = ", ".join(getattr(t, "__name__", str(t)) for t in spec.arg_types)
            raise Revert(f"{method} takes ({names})")
        return spec.func(self._by_code[code_id](), ctx, *args)
