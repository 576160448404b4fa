"""Interfaces of ``contracts``: what an engine of contract code offers the executor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from state.codec import Value

if TYPE_CHECKING:
    from contracts.vm import CallContext


class StateView(Protocol):
    """A read-only view of the state a call runs against (the block's pending writes included).

    Keys are the VM's state keys (``contracts.vm``: ``code_key``, ``storage_key``, and
    ``uploaded_code_key`` for code kept in state by an engine); values are canonical values.
    """

    def load(self, key: bytes) -> Value:
        """The decoded value of ``key``, or None if absent. Raises ``DecodeError`` on a corrupt store."""
        ...


class ContractEngine(Protocol):
    """Runs the code identified by a code id (a built-in Python contract now, bytecode later).

    The VM records each instance's code id in state (``0x02 || address``). Code ids are namespaced
    per engine (``token/v1`` and the AMM's for the built-in engine; a bytecode engine would take
    ``wasm/<sha3 of the module>``). The engine's methods get a read-only ``StateView``, so code
    that lives in state works like built-in code:

    * ``store_code``: the deployer's ``upload(kind, code)`` asks the engines in order which one
      takes code of ``kind``; that engine checks the code and names it by a code id in its own
      namespace (``kind/...``); the VM keeps the code in state under ``uploaded_code_key(code_id)``.
    * ``has_code``: whether this engine runs ``code_id`` in this state (for code in state: whether
      it was uploaded), asked before an instance is created.
    * ``is_readonly``: whether a method only reads (``qnx_call`` refuses the others).
    * ``invoke`` runs ``method`` of the instance at ``ctx.contract`` with ``args``, reading and
      writing only through ``ctx`` (storage, ``ctx.state`` for reading code kept in state,
      events, calls to other contracts, creation, the re-entrancy lock, and ``charge``/``compute``
      for its own instructions, all metered from ``contracts.gas``), and raises ``Revert`` to undo
      its writes. Calls between engines go through ``ctx.call``, so msg.sender, gas, depth and
      reverts work the same across them.

    Reads through the ``StateView`` given to ``has_code``, ``is_readonly`` and ``store_code`` are
    the engine's own bookkeeping and are not metered (the VM charges ``CALL``, ``DEPLOY`` and the
    upload); what ``invoke`` reads through ``ctx`` is. ``init`` is the constructor: the VM invokes
    it once, when an instance is created, and refuses it afterwards.
    """

    def has_code(self, code_id: str, state: StateView) -> bool:
        """Whether this engine runs ``code_id`` in ``state``."""
        ...

    def store_code(self, kind: str, code: bytes, state: StateView) -> str | None:
        """The code id of ``code`` if this engine takes code of ``kind`` (None if it does not).

        The code id must start with ``kind + "/"``. Raises ``Revert`` if the code is not valid.
        """
        ...

    def invoke(self, code_id: str, ctx: CallContext, method: str, args: tuple[Value, ...]) -> Value:
        """Run ``method``; returns its result (a canonical value). Raises ``Revert`` (and ``OutOfGas``)."""
        ...

    def is_readonly(self, code_id: str, method: str, state: StateView) -> bool:
        """Whether ``method`` only reads state (callable through ``qnx_call``). Raises ``Revert`` if unknown."""
        ...
