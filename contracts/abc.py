"""Interfaces of ``contracts``: what an engine of contract code offers the executor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from state.codec import Value

if TYPE_CHECKING:
    from contracts.vm import CallContext


class ContractEngine(Protocol):
    """Runs the code identified by a code id (a built-in Python contract now, bytecode later).

    ``invoke`` runs ``method`` of the instance at ``ctx.contract`` with ``args``; it reads and
    writes only through ``ctx`` (which meters gas) and raises ``Revert`` to undo its writes.
    """

    def has_code(self, code_id: str) -> bool:
        """Whether this engine runs ``code_id``."""
        ...

    def invoke(self, code_id: str, ctx: CallContext, method: str, args: tuple[Value, ...]) -> Value:
        """Run ``method``; returns its result. Raises ``Revert`` (and ``OutOfGas``)."""
        ...

    def is_readonly(self, code_id: str, method: str) -> bool:
        """Whether ``method`` only reads state (callable through ``qnx_call``)."""
        ...
