"""The VM: block state with a journal, gas metering, calls between contracts, events, reverts.

Determinism by construction: integers only, no clock (block time comes from the header), no
randomness, no I/O, no iteration over sets; the block's writes are handed to the state sorted by key.

State keys (all under the authenticated state)::

    0x01 || address            -> account nonce (canonical int)
    0x02 || address            -> contract code id (canonical str)
    0x03 || address || slot    -> contract storage (canonical value)
    0x04 || code id (UTF-8)    -> code uploaded for an engine that keeps code in state (bytes)

A transaction runs as follows: the sender's nonce is bumped and intrinsic gas charged; then its
calls run in order. Every write goes to the block's ``Overlay`` and is journaled: a call that raises
``Revert`` (``OutOfGas`` included) undoes its own writes and events, and a transaction whose call
reverts undoes all of its own, so a reverted transaction changes nothing but the nonce. Gas used is
charged either way (all of the limit on ``OutOfGas``). Receipts carry status, gas used, events,
outputs and the revert reason.

Calls between contracts (``CallContext.call``) go through the same path as a transaction's calls:
the callee sees the calling contract as ``caller`` (``msg.sender``), each call is charged ``CALL``
and the nesting depth is limited to ``MAX_CALL_DEPTH``. Contracts create contracts with
``CallContext.create`` at an address fixed by creator, code id, salt and init arguments (EIP-1014
``CREATE2``: the init code hashed into the address includes the constructor arguments). A contract
method may hold a transaction-scoped re-entrancy lock (``CallContext.lock``): while it runs, any
call that would take the same contract's lock reverts (Uniswap V2's ``lock`` modifier).

Code ids name either built-in code or code kept in state: the deployer's ``upload(kind, code)``
hands ``code`` to the engine that takes code of ``kind`` (``ContractEngine.store_code``), which
names it by a code id ``kind/...``; the code is stored under ``uploaded_code_key(code_id)`` and
instances of it are then deployed like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from contracts import gas as G
from contracts.abc import ContractEngine, StateView
from contracts.encoding import decode_stored, encode_stored, event_size
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

NONCE_PREFIX: Final = b"\x01"
CODE_PREFIX: Final = b"\x02"
STORAGE_PREFIX: Final = b"\x03"
UPLOADED_CODE_PREFIX: Final = b"\x04"
DEPLOYER: Final = ZERO_ADDRESS
"""The system address that creates contract instances.

``deploy(code_id, init_args)`` creates one at ``contract_address(sender, nonce, index)``;
``create(code_id, salt, init_args)`` creates one at ``create_address(DEPLOYER, code_id, salt,
init_args)``, the same address whoever sends it (used for well-known instances such as the
canonical AMM factory and router).
"""
DEPLOYER_USAGE: Final = (
    "the deployer takes deploy(code_id: str, init_args: array) or "
    "create(code_id: str, salt: bytes, init_args: array) or upload(kind: str, code: bytes)"
)
INIT_ONCE: Final = "init runs only when the contract is deployed"
_SLOAD: Final = G.SLOAD
_SSTORE: Final = G.SSTORE
_CALL: Final = G.CALL
_MAX_DEPTH: Final = G.MAX_CALL_DEPTH
MAX_SALT: Final = 64
"""Longest ``salt`` of ``create``, bytes."""
MAX_CODE_SIZE: Final = 24_576
"""Longest ``code`` of ``upload``, bytes (EIP-170's contract size limit)."""


def nonce_key(address: bytes) -> bytes:
    """State key of an account's nonce."""
    return NONCE_PREFIX + address


def code_key(address: bytes) -> bytes:
    """State key of a contract instance's code id."""
    return CODE_PREFIX + address


def storage_key(address: bytes, slot: bytes) -> bytes:
    """State key of ``slot`` in the storage of the contract at ``address``."""
    return STORAGE_PREFIX + address + slot


def uploaded_code_key(code_id: str) -> bytes:
    """State key of the code uploaded under ``code_id`` (``upload``)."""
    return UPLOADED_CODE_PREFIX + code_id.encode()


def contract_address(sender: bytes, nonce: int, index: int) -> Address:
    """Address of the ``index``-th contract (0-based) deployed by ``sender``'s transaction ``nonce``."""
    return Address(sha3(b"QENEX/v1/contract" + encode((sender, nonce, index)))[-20:])


def create_address(creator: bytes, code_id: str, salt: bytes, init_args: tuple[Value, ...]) -> Address:
    """Address of the contract ``creator`` creates with ``create(code_id, salt, init_args)``.

    The last 20 bytes of ``SHA3-256("QENEX/v1/create" || encode([creator, code_id, salt,
    init_args]))``: like EIP-1014 ``CREATE2`` it commits to the creator, the salt and the code with
    its constructor arguments, so it is known before the contract exists and can not be taken by
    an instance with other arguments. Raises ``TypeError``/``ValueError`` for non-canonical values.
    """
    return Address(sha3(b"QENEX/v1/create" + encode((creator, code_id, salt, init_args)))[-20:])


class _Unset:
    """Marks a key the block has not read yet (distinct from None, an absent value)."""


_UNSET: Final = _Unset()


class Overlay:
    """A block's pending state over the committed state: decoded values and a journal of writes.

    Values are kept decoded (canonical ``Value``s); ``writes`` encodes them once, sorted by key.
    Every ``store`` is journaled so that ``revert_to`` can undo the writes of a failed call or
    transaction; ``commit`` forgets the journal at a transaction boundary.
    """

    __slots__ = ("_current", "_journal", "_read", "_written")

    def __init__(self, parent: StateGetter) -> None:
        """An overlay reading ``parent`` (the committed state) for keys it has not written."""
        self._read = parent
        self._current: dict[bytes, Value] = {}
        """Values of the keys read or written so far (None: absent)."""
        self._written: dict[bytes, None] = {}
        """Keys written by this block (a dict: ordered, and never iterated unsorted)."""
        self._journal: list[tuple[bytes, Value, bool]] = []
        """(key, previous entry of ``_current`` or ``_UNSET``, whether it was written before)."""

    def load(self, key: bytes) -> Value:
        """The decoded value of ``key`` (None if absent). Raises ``DecodeError`` on a corrupt store."""
        try:
            return self._current[key]
        except KeyError:
            raw = self._read(key)
            value = None if raw is None else decode_stored(raw)
            self._current[key] = value
            return value

    def store(self, key: bytes, value: Value) -> None:
        """Stage ``value`` (a canonical value; None deletes) for ``key``, journaled."""
        current = self._current
        self._journal.append((key, current.get(key, _UNSET), key in self._written))
        current[key] = value
        self._written[key] = None

    def checkpoint(self) -> int:
        """A mark for ``revert_to``: the journal's length."""
        return len(self._journal)

    def revert_to(self, mark: int) -> None:
        """Undo every ``store`` made after ``checkpoint`` returned ``mark``."""
        journal, current, written = self._journal, self._current, self._written
        while len(journal) > mark:
            key, old, was_written = journal.pop()
            if old is _UNSET:
                del current[key]
            else:
                current[key] = old
            if not was_written:
                del written[key]

    def commit(self) -> None:
        """Make the writes so far final for this block (they can no longer be reverted)."""
        self._journal.clear()

    def get(self, key: bytes) -> bytes | None:
        """The canonical encoding of ``key``'s value as seen through this overlay, or None."""
        value = self.load(key)
        return None if value is None else encode_stored(value)

    def put(self, key: bytes, raw: bytes | None) -> None:
        """Stage an encoded value (None deletes). Raises ``DecodeError`` if ``raw`` is not canonical."""
        self.store(key, None if raw is None else decode_value(raw))

    @property
    def writes(self) -> dict[bytes, bytes | None]:
        """Every key written, sorted, with its canonical encoding (None: deleted)."""
        current = self._current
        out: dict[bytes, bytes | None] = {}
        for key in sorted(self._written):
            value = current[key]
            out[key] = None if value is None else encode_stored(value)
        return out


class GasMeter:
    """Counts gas against a limit; ``charge`` raises ``OutOfGas`` when the limit would be passed."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        """A meter with ``limit`` gas, none used."""
        self.limit = limit
        self.used = 0

    def charge(self, amount: int) -> None:
        """Charge ``amount`` gas. Raises ``OutOfGas`` (and then all of the limit counts as used)."""
        self.used += amount
        if self.used > self.limit:
            self.exhausted(amount)

    def exhausted(self, amount: int) -> None:
        """Called once ``used`` went past the limit by charging ``amount``: use it all, raise ``OutOfGas``."""
        left = self.limit - (self.used - amount)
        self.used = self.limit
        raise OutOfGas(amount, left)


@dataclass(frozen=True)
class BlockEnv:
    """What contracts may know of the block: chain id, height and header time (seconds)."""

    chain_id: str
    height: int
    timestamp: int


class _TxScope:
    """What every call of one transaction (or read-only query) shares."""

    __slots__ = ("created", "env", "events", "locks", "meter", "nonce", "origin", "overlay", "readonly", "vm")

    def __init__(self, vm: VM, env: BlockEnv, overlay: Overlay, meter: GasMeter, origin: Address, nonce: int,
                 readonly: bool) -> None:
        self.vm, self.env, self.overlay, self.meter = vm, env, overlay, meter
        self.origin, self.nonce, self.readonly = origin, nonce, readonly
        self.events: list[Event] = []
        self.created = 0
        """Contracts deployed so far through ``deploy`` (the index of ``contract_address``)."""
        self.locks: dict[bytes, None] = {}
        """Contracts whose re-entrancy lock is held (EIP-1153 style: forgotten after the transaction)."""


class _MeteredView:
    """``StateView`` of the block's overlay that charges ``SLOAD`` per read (``CallContext.state``)."""

    __slots__ = ("_meter", "_overlay")

    def __init__(self, overlay: Overlay, meter: GasMeter) -> None:
        self._overlay, self._meter = overlay, meter

    def load(self, key: bytes) -> Value:
        """The decoded value of ``key`` (None if absent); charges ``SLOAD``. Raises ``OutOfGas``."""
        self._meter.charge(_SLOAD)
        return self._overlay.load(key)


class CallContext:
    """What a running contract sees: itself, its caller, the block, metered storage, events and calls.

    ``caller`` is the address that called this contract (the sender for a transaction's call, the
    calling contract for a nested call); ``contract`` is this instance; ``env`` is the block.
    """

    __slots__ = ("_meter", "_overlay", "_prefix", "_scope", "caller", "contract", "depth", "env")

    def __init__(self, scope: _TxScope, caller: bytes, contract: bytes, depth: int) -> None:
        self._scope = scope
        self._meter = scope.meter
        self._overlay = scope.overlay
        self._prefix = STORAGE_PREFIX + contract
        self.env = scope.env
        self.caller: bytes = caller
        self.contract: bytes = contract
        self.depth = depth

    @property
    def origin(self) -> Address:
        """The sender of the transaction (``tx.origin``)."""
        return self._scope.origin

    @property
    def readonly(self) -> bool:
        """Whether this call is part of a read-only query (writes and events revert)."""
        return self._scope.readonly

    @property
    def state(self) -> StateView:
        """A read-only view of the whole state (e.g. code kept in state); each read charges ``SLOAD``."""
        return _MeteredView(self._overlay, self._meter)

    @property
    def gas_left(self) -> int:
        """Gas the transaction has left."""
        return self._meter.limit - self._meter.used

    def charge(self, amount: int) -> None:
        """Charge ``amount`` gas (a sum of ``contracts.gas`` constants). Raises ``OutOfGas``."""
        meter = self._meter
        meter.used += amount
        if meter.used > meter.limit:
            meter.exhausted(amount)

    def compute(self, units: int) -> None:
        """Charge ``units`` of big-integer arithmetic (``MATH`` each). Raises ``OutOfGas``."""
        self.charge(G.MATH * units)

    def load(self, slot: bytes) -> Value:
        """Read ``slot`` of this contract's storage (None if unset); charges ``SLOAD``."""
        meter = self._meter
        meter.used += _SLOAD
        if meter.used > meter.limit:
            meter.exhausted(_SLOAD)
        return self._overlay.load(self._prefix + slot)

    def store(self, slot: bytes, value: Value) -> None:
        """Write ``slot`` (None deletes); charges ``SSTORE``. Reverts in a read-only call."""
        if self._scope.readonly:
            raise Revert("state change in a read-only call")
        meter = self._meter
        meter.used += _SSTORE
        if meter.used > meter.limit:
            meter.exhausted(_SSTORE)
        self._overlay.store(self._prefix + slot, value)

    def emit(self, name: str, topics: tuple[Value, ...], data: tuple[Value, ...]) -> None:
        """Record an event of this contract; charges ``LOG`` plus ``LOG_BYTE`` per encoded byte.

        Reverts in a read-only call (as ``LOG`` does under ``STATICCALL``).
        """
        if self._scope.readonly:
            raise Revert("state change in a read-only call")
        self.charge(G.LOG + G.LOG_BYTE * event_size(name, topics, data))
        self._scope.events.append(Event(Address(self.contract), name, topics, data))

    def call(self, to: bytes, method: str, args: tuple[Value, ...]) -> Value:
        """Call ``method`` of the contract at ``to`` as this contract; returns its result.

        If the callee reverts, its writes and events are undone and ``Revert`` propagates.
        """
        scope = self._scope
        return scope.vm.call_in(scope, self.contract, to, method, args, self.depth + 1)

    def create(self, code_id: str, salt: bytes, init_args: tuple[Value, ...]) -> Address:
        """Create an instance of ``code_id`` at ``create_address(self.contract, code_id, salt, init_args)``.

        Its ``init`` runs with this contract as ``caller``. Charges ``CALL`` and ``DEPLOY``.
        Raises ``Revert`` (address in use, unknown code id, read-only call, init reverted).
        """
        scope = self._scope
        if scope.readonly:
            raise Revert("create in a read-only call")
        self.charge(G.CALL)
        address = create_address(self.contract, code_id, salt, init_args)
        return scope.vm.instantiate(scope, Address(self.contract), code_id, address, init_args, self.depth + 1)

    def lock(self, reason: str) -> None:
        """Take this contract's re-entrancy lock for the rest of the call; charges ``LOCK``.

        Raises ``Revert(reason)`` if a call further up the stack holds it.
        """
        self.charge(G.LOCK)
        locks = self._scope.locks
        if self.contract in locks:
            raise Revert(reason)
        locks[self.contract] = None

    def unlock(self) -> None:
        """Release the lock taken with ``lock``."""
        del self._scope.locks[self.contract]


class VM:
    """Runs calls against contract engines; executes transactions and blocks."""

    def __init__(self, engines: Sequence[ContractEngine]) -> None:
        """A VM asking ``engines`` in order which one runs a code id."""
        self._engines = tuple(engines)
        self._by_code: dict[str, ContractEngine] = {}
        """Engines of the code ids of existing instances (see ``call_in``)."""

    def engine(self, code_id: str, state: StateView) -> ContractEngine:
        """The first engine that runs ``code_id`` in ``state``. Raises ``Revert`` if none does.

        Asked afresh every time: code kept in state may be there in one block and not in another.
        """
        for candidate in self._engines:
            if candidate.has_code(code_id, state):
                return candidate
        raise Revert(f"unknown code id {code_id!r}")

    # --- calls ---------------------------------------------------------------------------

    def call_in(self, scope: _TxScope, caller: bytes, to: bytes, method: str, args: tuple[Value, ...],
                depth: int) -> Value:
        """Run one call of the transaction ``scope`` at nesting ``depth`` (1 for a transaction's call).

        ``caller`` and ``to`` are 20-byte addresses. Raises ``Revert`` after undoing the call's
        writes and events.
        """
        if depth > _MAX_DEPTH:
            raise Revert("call depth exceeded")
        meter = scope.meter
        meter.used += _CALL
        if meter.used > meter.limit:
            meter.exhausted(_CALL)
        if to == DEPLOYER:
            return self._deployer(scope, Address(caller), method, args, depth)
        overlay = scope.overlay
        code_id = overlay.load(CODE_PREFIX + to)
        if code_id is None:
            raise Revert(f"no contract at 0x{to.hex()}")
        engine = self._by_code.get(code_id)
        if engine is None:
            # An instance of code_id exists, so its code does in every state holding the instance
            # (code is never deleted, an upload can not take a code id another engine runs): which
            # engine runs it can be remembered across blocks. The lookup reads without metering.
            engine = self._by_code[code_id] = self.engine(code_id, overlay)
        if method == "init":
            raise Revert(INIT_ONCE)
        if scope.readonly and not engine.is_readonly(code_id, method, overlay):
            raise Revert(f"{method} is not a read-only method")
        events = scope.events
        mark, n_events = len(overlay._journal), len(events)
        try:
            return engine.invoke(code_id, CallContext(scope, caller, to, depth), method, args)
        except BaseException:
            overlay.revert_to(mark)
            del events[n_events:]
            raise

    def _deployer(self, scope: _TxScope, caller: Address, method: str, args: tuple[Value, ...], depth: int) -> Value:
        if method == "deploy" and len(args) == 2 and type(args[0]) is str and type(args[1]) is tuple:
            code_id, init_args = args
            if scope.readonly:
                raise Revert("deploy in a read-only call")
            self.engine(code_id, scope.overlay)
            address = contract_address(scope.origin, scope.nonce, scope.created)
            scope.created += 1
            return self.instantiate(scope, caller, code_id, address, init_args, depth)
        if (method == "create" and len(args) == 3 and type(args[0]) is str and type(args[1]) is bytes
                and len(args[1]) <= MAX_SALT and type(args[2]) is tuple):
            code_id, salt, init_args = args
            if scope.readonly:
                raise Revert("create in a read-only call")
            self.engine(code_id, scope.overlay)
            address = create_address(DEPLOYER, code_id, salt, init_args)
            return self.instantiate(scope, DEPLOYER, code_id, address, init_args, depth)
        if method == "upload" and len(args) == 2 and type(args[0]) is str and type(args[1]) is bytes:
            if scope.readonly:
                raise Revert("upload in a read-only call")
            return self.upload(scope, args[0], args[1])
        raise Revert(DEPLOYER_USAGE)

    def upload(self, scope: _TxScope, kind: str, code: bytes) -> str:
        """Store ``code`` for the engine that takes code of ``kind``; returns its code id (``upload``).

        Charges ``SLOAD`` plus ``SSTORE`` per 32-byte word of ``code`` (whether or not the same code
        is already stored). Raises ``Revert`` (size, no engine takes ``kind``, the engine finds the
        code invalid, a code id outside ``kind/`` or run by another engine) with nothing written.
        """
        if not 0 < len(code) <= MAX_CODE_SIZE:
            raise Revert(f"code must be 1..{MAX_CODE_SIZE} bytes, got {len(code)}")
        scope.meter.charge(G.SLOAD + G.SSTORE * ((len(code) + 31) // 32))
        overlay = scope.overlay
        for engine in self._engines:
            code_id = engine.store_code(kind, code, overlay)
            if code_id is not None:
                break
        else:
            raise Revert(f"no engine takes code of kind {kind!r}")
        if not code_id.startswith(kind + "/"):
            raise Revert(f"code id {code_id!r} is outside {kind!r}/")
        key = uploaded_code_key(code_id)
        stored = overlay.load(key)
        if stored is None:
            if any(other is not engine and other.has_code(code_id, overlay) for other in self._engines):
                raise Revert(f"code id {code_id!r} is taken")
            overlay.store(key, code)
        elif stored != code:
            raise Revert(f"code id {code_id!r} is taken by other code")
        return code_id

    def instantiate(self, scope: _TxScope, creator: Address, code_id: str, address: Address,
                    init_args: tuple[Value, ...], depth: int) -> Address:
        """Create an instance of ``code_id`` at ``address`` and run its ``init`` with ``creator`` as caller.

        Charges ``DEPLOY`` (the caller charged ``CALL``).
        Raises ``Revert`` (depth, unknown code id, address in use, init reverted) with nothing written.
        """
        if depth > G.MAX_CALL_DEPTH:
            raise Revert("call depth exceeded")
        engine = self.engine(code_id, scope.overlay)
        scope.meter.charge(G.DEPLOY)
        overlay = scope.overlay
        key = CODE_PREFIX + address
        if overlay.load(key) is not None:
            raise Revert("contract address already in use")
        mark, n_events = overlay.checkpoint(), len(scope.events)
        try:
            overlay.store(key, code_id)
            engine.invoke(code_id, CallContext(scope, creator, address, depth), "init", init_args)
        except BaseException:
            overlay.revert_to(mark)
            del scope.events[n_events:]
            raise
        return address

    def call_readonly(
        self, state: StateGetter, env: BlockEnv, sender: Address, to: Address, method: str,
        args: tuple[Value, ...], gas_limit: int = G.READ_CALL_GAS,
    ) -> Value:
        """Run a read-only call against ``state`` (``qnx_call``). Raises ``Revert``."""
        scope = _TxScope(self, env, Overlay(state), GasMeter(gas_limit), sender, 0, True)
        return self.call_in(scope, sender, to, method, args, 1)

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

    @staticmethod
    def _check_nonce(nonce: int, expected: int) -> None:
        if nonce < expected:
            raise TxRejected("nonce too low", f"next nonce is {expected}, got {nonce}")
        if nonce > expected:
            raise TxRejected("nonce too high", f"next nonce is {expected}, got {nonce}")

    def check_tx(self, tx: Transaction, state: Callable[[bytes], bytes | None], chain_id: str) -> None:
        """Stateful admission checks other than the signature (chain id, nonce, gas).

        Raises ``TxRejected`` with reason ``wrong chain id``, ``nonce too low``, ``nonce too
        high``, ``gas limit too high``, ``intrinsic gas too low`` or ``no calls``.
        """
        self.check_static(tx, chain_id)
        self._check_nonce(tx.body.nonce, self.account_nonce(state, tx.body.sender))

    def execute_tx(self, block: Overlay, env: BlockEnv, tx: Transaction) -> Receipt:
        """Execute ``tx`` on top of ``block`` (writes land there). Raises ``TxRejected``, writing nothing."""
        self.check_static(tx, env.chain_id)
        body = tx.body
        key = NONCE_PREFIX + body.sender
        self._check_nonce(body.nonce, block.load(key) or 0)
        block.store(key, body.nonce + 1)
        block.commit()
        meter = GasMeter(body.gas_limit)
        meter.used = G.intrinsic_gas(len(tx.signing_bytes))  # check_static: at most the limit
        scope = _TxScope(self, env, block, meter, body.sender, body.nonce, False)
        outputs: list[Value] = []
        try:
            for call in body.calls:
                outputs.append(self.call_in(scope, body.sender, call.to, call.method, call.args, 1))
        except Revert as err:
            block.revert_to(0)
            return Receipt(tx.hash, STATUS_REVERTED, meter.used, (), (), err.reason)
        except RecursionError:
            block.revert_to(0)
            return Receipt(tx.hash, STATUS_REVERTED, meter.used, (), (), "call depth exceeded")
        block.commit()
        return Receipt(tx.hash, STATUS_SUCCESS, meter.used, tuple(scope.events), tuple(outputs), "")

    def execute_block(
        self, state: StateGetter, env: BlockEnv, txs: Sequence[Transaction], *, block_gas_limit: int | None = None,
    ) -> tuple[dict[bytes, bytes | None], list[Receipt]]:
        """Execute ``txs`` in order on ``state``; returns the block's writes (sorted by key) and receipts.

        ``block_gas_limit`` bounds the sum of the transactions' gas limits (None: the caller checks
        it, as the node does before executing). Raises ``TxRejected`` if any transaction can not
        be included (the block is invalid), with reason ``block gas limit exceeded`` for that bound.
        """
        if block_gas_limit is not None:
            reserved = sum(tx.body.gas_limit for tx in txs)
            if reserved > block_gas_limit:
                raise TxRejected("block gas limit exceeded", f"gas limits sum to {reserved} > {block_gas_limit}")
        overlay = Overlay(state)
        receipts = [self.execute_tx(overlay, env, tx) for tx in txs]
        return overlay.writes, receipts
