"""Interfaces of ``contracts``: what an engine of contract code offers the executor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from state.codec import Value

if TYPE_CHECKING:
    from contracts.vm import CallContext


class ContractEngine(Protocol):
    """Runs the code identified by a code id (a built-in Python contract now, bytecode later).

    The VM records each instance's code id in state (``0x02 || address``) and asks its engines, in
    order, which one ``has_code`` it; the built-in engine answers for ``token/v1`` and the AMM's
    code ids. A bytecode engine is added beside it with its own code-id namespace (for example
    ``wasm/<sha3 of the module>``, the module itself kept in state by that engine) and needs nothing
    else from the VM: ``invoke`` runs ``method`` of the instance at ``ctx.contract`` with ``args``,
    reading and writing only through ``ctx`` (storage, events, calls to other contracts, creation,
    the re-entrancy lock, and ``charge``/``compute`` for its own instructions, all metered from
    ``contracts.gas``), and raises ``Revert`` to undo its writes. Calls between engines go through
    ``ctx.call``, so msg.sender, gas, depth and reverts work the same across them.

    ``init`` is the constructor: the VM invokes it once, when an instance is created, and refuses
    it afterwards.
    """

    def has_code(self, code_id: str) -> bool:
        """Whether this engine runs ``code_id``."""
        ...

    def invoke(self, code_id: str, ctx: CallContext, method: str, args: tuple[Value, ...]) -> Value:
        """Run ``method``; returns its result (a canonical value). Raises ``Revert`` (and ``OutOfGas``)."""
        ...

    def is_readonly(self, code_id: str, method: str) -> bool:
        """Whether ``method`` only reads state (callable through ``qnx_call``). Raises ``Revert`` if unknown."""
        ...
