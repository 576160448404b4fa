"""The VM: state overlays, gas metering, calls, events, reverts, and block execution.

Determinism by construction: integers only, no clock (block time comes from the header), no
randomness, no I/O; writes are collected in dicts and handed to the state sorted by key.

State keys (all under the authenticated state)::

    0x01 || address            -> account nonce (canonical int)
    0x02 || address            -> contract code id (canonical str)
    0x03 || address || slot    -> contract storage (canonical value)

A transaction runs as follows: the sender's nonce is bumped and intrinsic gas charged; then its
calls run in one overlay; a ``Revert`` (or ``OutOfGas``) discards the overlay, so a reverted
transaction changes nothing but the nonce; gas used is charged either way (all of it on
``OutOfGas``). Receipts carry status, gas used, events, outputs and the revert reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from contracts import gas as G
from contracts.abc import ContractEngine
from contracts.exceptions import OutOfGas, Revert, TxRejected
from crypto.hashing import sha3
from crypto.keys import ZERO_ADDRESS, Address
from state.codec import Value, decode_value, encode
from state.types import (
    STATUS_REVERTED,
    STATUS_SUCCESS,
    Event,
    Receipt,
    Transaction,
)

StateGetter = Callable[[bytes], bytes | None]
"""Reads the committed state (``AuthenticatedState.get``)."""

NONCE_PREFIX = b"\x01"
CODE_PREFIX = b"\x02"
STORAGE_PREFIX = b"\x03"
DEPLOYER = ZERO_ADDRESS
"""The system address whose ``deploy(code_id, init_args)`` creates contract instances."""


def nonce_key(address: bytes) -> bytes:
    """State key of an account's nonce."""
    return NONCE_PREFIX + address


def code_key(address: bytes) -> bytes:
    """State key of a contract instance's code id."""
    return CODE_PREFIX + address


def storage_key(address: bytes, slot: bytes) -> bytes:
    """State key of ``slot`` in the storage of the contract at ``address``."""
    return STORAGE_PREFIX + address + slot


def contract_address(sender: bytes, nonce: int, index: int) -> Address:
    """Address of the ``index``-th contract (0-based) created by ``sender``'s transaction ``nonce``."""
    return Address(sha3(b"QENEX/v1/contract" + encode((sender, nonce, index)))[-20:])


class Overlay:
    """Writes over a parent reader; ``commit_into`` merges them into the parent overlay."""

    def __init__(self, parent: Overlay | StateGetter) -> None:
        self._parent = parent
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` as seen through this overlay."""
        if key in self.writes:
            return self.writes[key]
        p = self._parent
        return p.get(key) if isinstance(p, Overlay) else p(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        """Stage a write (None deletes)."""
        self.writes[key] = value

    def commit_into(self, parent: Overlay) -> None:
        """Merge the staged writes into ``parent``."""
        parent.writes.update(self.writes)


class GasMeter:
    """Counts gas against a limit; ``charge`` raises ``OutOfGas`` when the limit would be passed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, amount: int) -> None:
        """Charge ``amount`` gas. Raises ``OutOfGas``."""
        if self.used + amount > self.limit:
            left = self.limit - self.used
            self.used = self.limit
            raise OutOfGas(amount, left)
        self.used += amount


@dataclass(frozen=True)
class BlockEnv:
    """What contracts may know of the block: chain id, height and header time (seconds)."""

    chain_id: str
    height: int
    timestamp: int


class CallContext:
    """What a running contract sees: itself, its caller, the block, metered storage and events."""

    def __init__(
        self,
        vm: VM,
        env: BlockEnv,
        overlay: Overlay,
        meter: GasMeter,
        events: list[Event],
        origin: Address,
        caller: Address,
        contract: Address,
        depth: int,
        tx_nonce: int,
        readonly: bool,
    ) -> None:
        self.vm, self.env, self.meter = vm, env, meter
        self._overlay, self._events = overlay, events
        self.origin, self.caller, self.contract = origin, caller, contract
        self.depth, self.tx_nonce, self.readonly = depth, tx_nonce, readonly
        self._created: list[int] = [0]  # deploys so far in this transaction, shared by its call tree

    def load(self, slot: bytes) -> Value:
        """Read ``slot`` of this contract's storage (None if unset); charges ``SLOAD``."""
        self.meter.charge(G.SLOAD)
        raw = self._overlay.get(storage_key(self.contract, slot))
        return None if raw is None else decode_value(raw)

    def store(self, slot: bytes, value: Value) -> None:
        """Write ``slot`` (None deletes); charges ``SSTORE``. Reverts in a read-only call."""
        if self.readonly:
            raise Revert("state change in a read-only call")
        self.meter.charge(G.SSTORE)
        self._overlay.put(storage_key(self.contract, slot), None if value is None else encode(value))

    def emit(self, name: str, topics: tuple[Value, ...], data: tuple[Value, ...]) -> None:
        """Record an event of this contract; charges ``LOG`` plus ``LOG_BYTE`` per encoded byte."""
        self.meter.charge(G.LOG + G.LOG_BYTE * len(encode((name, topics, data))))
        self._events.append(Event(self.contract, name, topics, data))

    def call(self, to: Address, method: str, args: tuple[Value, ...]) -> Value:
        """Call another contract as this one; its writes revert with this call's."""
        return self.vm.run_call(self, to, method, args)


class VM:
    """Runs calls against contract engines; executes transactions and blocks."""

    def __init__(self, engines: Sequence[ContractEngine]) -> None:
        self._engines = tuple(engines)

    def _engine(self, code_id: str) -> ContractEngine:
        for engine in self._engines:
            if engine.has_code(code_id):
                return engine
        raise Revert(f"unknown code id {code_id!r}")

    # --- calls ---------------------------------------------------------------------------

    def run_call(self, parent: CallContext, to: Address, method: str, args: tuple[Value, ...]) -> Value:
        """Run a call from ``parent`` (or the top level) in a child overlay."""
        if parent.depth + 1 > G.MAX_CALL_DEPTH:
            raise Revert("call depth exceeded")
        parent.meter.charge(G.CALL)
        overlay = Overlay(parent._overlay)
        if to == DEPLOYER:
            result = self._deploy(parent, overlay, method, args)
        else:
            raw_code = overlay.get(code_key(to))
            if raw_code is None:
                raise Revert(f"no contract at 0x{to.hex()}")
            code_id = decode_value(raw_code)
            engine = self._engine(code_id)
            if method == "init":
                raise Revert("init runs only when the contract is deployed")
            if parent.readonly and not engine.is_readonly(code_id, method):
                raise Revert(f"{method} is not a read-only method")
            ctx = CallContext(
                self, parent.env, overlay, parent.meter, parent._events, parent.origin,
                parent.contract, to, parent.depth + 1,
                parent.tx_nonce, parent.readonly,
            )
            ctx._created = parent._created
            result = engine.invoke(code_id, ctx, method, args)
        overlay.commit_into(parent._overlay)
        return result

    def _deploy(self, parent: CallContext, overlay: Overlay, method: str, args: tuple[Value, ...]) -> Value:
        if method != "deploy" or len(args) != 2 or type(args[0]) is not str or type(args[1]) is not tuple:
            raise Revert("the deployer takes deploy(code_id: str, init_args: array)")
        if parent.readonly:
            raise Revert("deploy in a read-only call")
        code_id, init_args = args
        engine = self._engine(code_id)
        parent.meter.charge(G.DEPLOY)
        address = contract_address(parent.origin, parent.tx_nonce, parent._created[0])
        parent._created[0] += 1
        if overlay.get(code_key(address)) is not None:
            raise Revert("contract address already in use")
        overlay.put(code_key(address), encode(code_id))
        ctx = CallContext(
            self, parent.env, overlay, parent.meter, parent._events, parent.origin,
            parent.origin, address, parent.depth + 1, parent.tx_nonce, False,
        )
        ctx._created = parent._created
        engine.invoke(code_id, ctx, "init", init_args)
        return address

    def call_readonly(
        self, state: StateGetter, env: BlockEnv, sender: Address, to: Address, method: str,
        args: tuple[Value, ...], gas_limit: int = G.READ_CALL_GAS,
    ) -> Value:
        """Run a read-only call against ``state`` (``qnx_call``). Raises ``Revert``."""
        root = self._root_context(Overlay(state), env, GasMeter(gas_limit), [], sender, 0, readonly=True)
        return self.run_call(root, to, method, args)

    def _root_context(
        self, overlay: Overlay, env: BlockEnv, meter: GasMeter, events: list[Event],
        sender: Address, nonce: int, *, readonly: bool,
    ) -> CallContext:
        return CallContext(self, env, overlay, meter, events, sender, sender, sender, 0, nonce, readonly)

    # --- transactions and blocks -------------------------------------------------------------

    @staticmethod
    def account_nonce(get: Callable[[bytes], bytes | None], address: bytes) -> int:
        """The next nonce of ``address`` in the state read by ``get``."""
        raw = get(nonce_key(address))
        return 0 if raw is None else int(decode_value(raw))

    @staticmethod
    def check_static(tx: Transaction, chain_id: str, max_gas: int = G.MAX_TX_GAS) -> None:
        """The checks that need no state: chain id, at least one call, gas limit bounds.

        Raises ``TxRejected`` (``wrong chain id``, ``no calls``, ``gas limit too high``,
        ``intrinsic gas too low``).
        """
        body = tx.body
        if body.chain_id != chain_id:
            raise TxRejected("wrong chain id", f"transaction is for {body.chain_id!r}, this is {chain_id!r}")
        if not body.calls:
            raise TxRejected("no calls", "a transaction carries at least one call")
        limit = min(max_gas, G.MAX_TX_GAS)
        if body.gas_limit > limit:
            raise TxRejected("gas limit too high", f"{body.gas_limit} > {limit}")
        need = G.intrinsic_gas(len(tx.signing_bytes))
        if body.gas_limit < need:
            raise TxRejected("intrinsic gas too low", f"gas limit {body.gas_limit} < intrinsic {need}")

    def check_tx(self, tx: Transaction, state: Callable[[bytes], bytes | None], chain_id: str) -> None:
        """Stateful admission checks other than the signature (chain id, nonce, gas).

        Raises ``TxRejected`` with reason ``wrong chain id``, ``nonce too low``, ``nonce too
        high``, ``gas limit too high``, ``intrinsic gas too low`` or ``no calls``.
        """
        self.check_static(tx, chain_id)
        body = tx.body
        expected = self.account_nonce(state, body.sender)
        if body.nonce < expected:
            raise TxRejected("nonce too low", f"next nonce is {expected}, got {body.nonce}")
        if body.nonce > expected:
            raise TxRejected("nonce too high", f"next nonce is {expected}, got {body.nonce}")

    def execute_tx(self, block: Overlay, env: BlockEnv, tx: Transaction) -> Receipt:
        """Execute ``tx`` on top of ``block`` (writes land there). Raises ``TxRejected``."""
        self.check_tx(tx, block.get, env.chain_id)
        body = tx.body
        block.put(nonce_key(body.sender), encode(body.nonce + 1))
        meter = GasMeter(body.gas_limit)
        meter.charge(G.intrinsic_gas(len(tx.signing_bytes)))
        events: list[Event] = []
        overlay = Overlay(block)
        root = self._root_context(overlay, env, meter, events, body.sender, body.nonce, readonly=False)
        outputs: list[Value] = []
        try:
            for call in body.calls:
                outputs.append(self.run_call(root, call.to, call.method, call.args))
        except Revert as err:
            return Receipt(tx.hash, STATUS_REVERTED, meter.used, (), (), err.reason)
        except RecursionError:
            return Receipt(tx.hash, STATUS_REVERTED, meter.used, (), (), "call depth exceeded")
        overlay.commit_into(block)
        return Receipt(tx.hash, STATUS_SUCCESS, meter.used, tuple(events), tuple(outputs), "")

    def execute_block(
        self, state: StateGetter, env: BlockEnv, txs: Sequence[Transaction]
    ) -> tuple[dict[bytes, bytes | None], list[Receipt]]:
        """Execute ``txs`` in order on ``state``; returns the block's writes and receipts.

        Raises ``TxRejected`` if any transaction can not be included (the block is invalid).
        """
        overlay = Overlay(state)
        receipts = [self.execute_tx(overlay, env, tx) for tx in txs]
        return overlay.writes, receipts

