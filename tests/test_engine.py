"""A second contract engine beside the built-in one (``contracts.abc.ContractEngine``).

``TableEngine`` is a toy bytecode engine: its "code" is a table of methods, each a list of stack
instructions, uploaded through the deployer (``upload("table", code)``) and kept in state under its
hash; it reads the table through the state view the VM gives engines. The tests run it in one VM
with ``BuiltinEngine``: code stored, an instance deployed with init arguments, called in a
transaction, calling a built-in token through the normal inter-contract call path, a revert rolling
back its writes, gas charged from ``contracts.gas``, and a read-only call of a writing method refused.
"""

from __future__ import annotations

import pytest

from contracts import gas as G
from contracts.abc import StateView
from contracts.builtin import BuiltinEngine
from contracts.exceptions import Revert
from contracts.registry import BUILTIN_CONTRACTS
from contracts.testing import LocalChain, sign
from contracts.vm import DEPLOYER, MAX_CODE_SIZE, VM, CallContext, code_key, contract_address, uploaded_code_key
from crypto.hashing import sha3
from crypto.keys import Address, KeyPair
from crypto.signatures import ED25519
from node.rpc.client import deploy_token_call
from state.codec import Value, decode_value, encode
from state.exceptions import DecodeError
from state.types import STATUS_REVERTED, STATUS_SUCCESS, Call, Event, Receipt

ALICE, BOB = KeyPair.generate(ED25519), KeyPair.generate(ED25519)
A, B = ALICE.address, BOB.address
GAS = 1_000_000

OPS = {"arg": 1, "push": 1, "load": 1, "store": 1, "add": 0, "le": 0, "require": 1, "call": 2, "emit": 2,
       "return": 0}
"""Instruction name -> number of operands."""


class TableEngine:
    """Runs table programs: ``encode([[name, readonly, n_args, [[op, *operands], ...]], ...])``.

    Code id ``table/<sha3 of the code, hex>``; ``MATH`` gas per instruction, ``SLOAD`` to read the
    program, storage and calls through the ``CallContext`` like any contract.
    """

    KIND = "table"

    @staticmethod
    def parse(code: Value) -> dict[str, tuple[bool, int, tuple[tuple[Value, ...], ...]]]:
        """The methods of ``code`` by name. Raises ``Revert`` if it is not a valid program."""
        try:
            rows = decode_value(code) if type(code) is bytes else None
            methods = {}
            for name, readonly, n_args, ops in rows:  # type: ignore[union-attr]
                if not (type(name) is str and type(readonly) is bool and type(n_args) is int and type(ops) is tuple
                        and all(type(op) is tuple and op and OPS.get(op[0]) == len(op) - 1 for op in ops)):
                    raise Revert("table: invalid method")
                methods[name] = (readonly, n_args, ops)
        except (DecodeError, TypeError, ValueError):
            raise Revert("table: invalid program") from None
        return methods

    def _methods(self, code_id: str, state: StateView) -> dict[str, tuple[bool, int, tuple[tuple[Value, ...], ...]]]:
        return self.parse(state.load(uploaded_code_key(code_id)))

    def has_code(self, code_id: str, state: StateView) -> bool:
        return code_id.startswith(self.KIND + "/") and state.load(uploaded_code_key(code_id)) is not None

    def store_code(self, kind: str, code: bytes, state: StateView) -> str | None:
        if kind != self.KIND:
            return None
        self.parse(code)
        return f"{self.KIND}/{sha3(code).hex()}"

    def is_readonly(self, code_id: str, method: str, state: StateView) -> bool:
        entry = self._methods(code_id, state).get(method)
        if entry is None:
            raise Revert(f"{code_id} has no method {method!r}")
        return entry[0]

    def invoke(self, code_id: str, ctx: CallContext, method: str, args: tuple[Value, ...]) -> Value:
        entry = self._methods(code_id, ctx.state).get(method)  # ctx.state: metered
        if entry is None:
            raise Revert(f"{code_id} has no method {method!r}")
        _, n_args, ops = entry
        if len(args) != n_args:
            raise Revert(f"{method} takes {n_args} arguments")
        stack: list[Value] = []
        try:
            for op in ops:
                ctx.compute(1)
                name = op[0]
                if name == "arg":
                    stack.append(args[op[1]])  # type: ignore[index]
                elif name == "push":
                    stack.append(op[1])
                elif name == "load":
                    stack.append(ctx.load(op[1]) or 0)  # type: ignore[arg-type]
                elif name == "store":
                    ctx.store(op[1], stack.pop())  # type: ignore[arg-type]
                elif name in ("add", "le"):
                    right, left = stack.pop(), stack.pop()
                    stack.append(left + right if name == "add" else left <= right)  # type: ignore[operator]
                elif name == "require":
                    if not stack.pop():
                        raise Revert(op[1])  # type: ignore[arg-type]
                elif name == "call":
                    n = op[2]
                    call_args = tuple(stack[len(stack) - n:])  # type: ignore[operator]
                    del stack[len(stack) - n:]  # type: ignore[operator]
                    stack.append(ctx.call(stack.pop(), op[1], call_args))  # type: ignore[arg-type]
                elif name == "emit":
                    n = op[2]
                    data = tuple(stack[len(stack) - n:])  # type: ignore[operator]
                    del stack[len(stack) - n:]  # type: ignore[operator]
                    ctx.emit(op[1], (), data)  # type: ignore[arg-type]
                else:  # return
                    return stack.pop()
        except (IndexError, TypeError):
            raise Revert("table: bad instruction") from None
        return None


# A payout vault: pays a built-in token out of its own balance, up to a limit over its lifetime.
INIT_OPS = (("arg", 0), ("store", b"token"), ("arg", 1), ("store", b"limit"))
PAY_OPS = (
    ("load", b"paid"), ("arg", 1), ("add",), ("store", b"paid"),  # paid += amount (written first)
    ("load", b"paid"), ("load", b"limit"), ("le",), ("require", "vault: over the limit"),
    ("load", b"token"), ("arg", 0), ("arg", 1), ("call", "transfer", 2), ("require", "vault: transfer failed"),
    ("arg", 1), ("emit", "Paid", 1),
    ("push", True), ("return",),
)
VAULT = encode((
    ("init", False, 2, INIT_OPS),
    ("pay", False, 2, PAY_OPS),
    ("paid", True, 0, (("load", b"paid"), ("return",))),
))
VAULT_ID = f"table/{sha3(VAULT).hex()}"


def two_engine_chain() -> LocalChain:
    return LocalChain(vm=VM([BuiltinEngine(list(BUILTIN_CONTRACTS)), TableEngine()]))


def send(chain: LocalChain, key: KeyPair, *calls: Call, gas_limit: int = GAS) -> tuple[Receipt, int]:
    """Execute one transaction; its receipt and intrinsic gas."""
    tx = sign(key, chain.chain_id, chain.nonce(key.address), calls, gas_limit)
    (receipt,) = chain.execute([tx])
    return receipt, G.intrinsic_gas(len(tx.signing_bytes))


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, receipt.revert_reason
    return receipt


def reverted(receipt: Receipt, reason: str) -> Receipt:
    assert (receipt.status, receipt.revert_reason, receipt.events) == (STATUS_REVERTED, reason, ())
    return receipt


def changed_keys(before: dict[bytes, bytes], after: dict[bytes, bytes]) -> set[bytes]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def test_a_table_contract_beside_the_builtin_engine() -> None:
    chain = two_engine_chain()
    deploy_vault = Call(DEPLOYER, "deploy", (VAULT_ID, (b"", 0)))
    # the code id is unknown until its code is stored: has_code reads the state
    reverted(send(chain, ALICE, deploy_vault)[0], f"unknown code id {VAULT_ID!r}")

    receipt, _ = send(chain, ALICE, Call(DEPLOYER, "upload", ("table", VAULT)))
    assert ok(receipt).output == (VAULT_ID,)
    assert decode_value(chain.state[uploaded_code_key(VAULT_ID)]) == VAULT
    before = dict(chain.state)
    assert ok(send(chain, BOB, Call(DEPLOYER, "upload", ("table", VAULT)))[0]).output == (VAULT_ID,)  # idempotent
    assert changed_keys(before, chain.state) == {b"\x01" + B}

    # a token (built-in) and a vault (table code) with init args, in one transaction
    nonce = chain.nonce(A)
    token, vault = contract_address(A, nonce, 0), contract_address(A, nonce, 1)
    receipt, _ = send(chain, ALICE, deploy_token_call("Vault Dollar", "VD", 6, A),
                      Call(DEPLOYER, "deploy", (VAULT_ID, (token, 500))), Call(token, "mint", (vault, 1_000)))
    assert ok(receipt).output == (token, vault, True)
    assert decode_value(chain.state[code_key(vault)]) == VAULT_ID
    assert chain.read(vault, "paid") == 0

    # a call of the table contract that calls the token as itself (msg.sender = the vault)
    receipt, intrinsic = send(chain, BOB, Call(vault, "pay", (B, 300)))
    assert ok(receipt).output == (True,)
    assert receipt.events == (Event(token, "Transfer", (vault, B), (300,)), Event(vault, "Paid", (), (300,)))
    assert (chain.read(token, "balanceOf", vault), chain.read(token, "balanceOf", B)) == (700, 300)
    assert chain.read(vault, "paid") == 300

    # gas, from the table: the call, the program read, one MATH per instruction, its storage,
    # the token's transfer (a call like any other) and the two events
    def log(name: str, topics: tuple[Value, ...], data: tuple[Value, ...]) -> int:
        return G.LOG + G.LOG_BYTE * len(encode((name, topics, data)))

    transfer = G.CALL + 2 * G.SLOAD + 2 * G.SSTORE + log("Transfer", (vault, B), (300,))
    pay = G.CALL + G.SLOAD + G.MATH * len(PAY_OPS) + 4 * G.SLOAD + G.SSTORE + transfer + log("Paid", (), (300,))
    assert receipt.gas_used == intrinsic + pay

    # a revert undoes the vault's own write (paid += amount comes first) ...
    before = dict(chain.state)
    reverted(send(chain, BOB, Call(vault, "pay", (B, 201)))[0], "vault: over the limit")
    assert changed_keys(before, chain.state) == {b"\x01" + B}
    # ... and the writes of the calls before it in the transaction, the token's included
    reverted(send(chain, BOB, Call(token, "transfer", (A, 300)), Call(vault, "pay", (B, 200)),
                  Call(vault, "pay", (A, 1)))[0], "vault: over the limit")
    assert changed_keys(before, chain.state) == {b"\x01" + B}
    ok(send(chain, BOB, Call(vault, "pay", (B, 200)))[0])
    assert chain.read(vault, "paid") == 500 and chain.read(token, "balanceOf", vault) == 500


def test_a_nested_revert_undoes_the_table_contracts_writes() -> None:
    chain = two_engine_chain()
    nonce = chain.nonce(A)
    token, vault = contract_address(A, nonce, 0), contract_address(A, nonce, 1)  # deploys counted from 0
    ok(send(chain, ALICE, Call(DEPLOYER, "upload", ("table", VAULT)), deploy_token_call("T", "T", 0, A),
            Call(DEPLOYER, "deploy", (VAULT_ID, (token, 10**6))), Call(token, "mint", (vault, 10)))[0])
    before = dict(chain.state)
    receipt, _ = send(chain, BOB, Call(vault, "pay", (B, 11)))  # within the limit, more than the balance
    reverted(receipt, "insufficient balance: 10 < 11")
    assert changed_keys(before, chain.state) == {b"\x01" + B}  # paid += 11 was undone
    assert chain.read(vault, "paid") == 0


def test_a_read_only_call_refuses_a_writing_table_method() -> None:
    chain = two_engine_chain()
    nonce = chain.nonce(A)
    vault = contract_address(A, nonce, 0)  # the index counts deploy calls only
    ok(send(chain, ALICE, Call(DEPLOYER, "upload", ("table", VAULT)),
            Call(DEPLOYER, "deploy", (VAULT_ID, (Address(b"\x11" * 20), 5))))[0])
    with pytest.raises(Revert, match="^pay is not a read-only method$"):
        chain.read(vault, "pay", B, 1)
    with pytest.raises(Revert, match="has no method 'steal'"):
        chain.read(vault, "steal")
    with pytest.raises(Revert, match="^upload in a read-only call$"):
        chain.read(DEPLOYER, "upload", "table", VAULT)
    assert chain.read(vault, "paid") == 0


def test_a_reverted_upload_leaves_no_code() -> None:
    chain = two_engine_chain()
    vault = contract_address(A, 0, 0)
    # upload, deploy and call the instance (the VM learns which engine runs it), then revert it all
    receipt, _ = send(chain, ALICE, Call(DEPLOYER, "upload", ("table", VAULT)),
                      Call(DEPLOYER, "deploy", (VAULT_ID, (Address(b"\x11" * 20), 5))),
                      Call(vault, "pay", (B, 6)))
    reverted(receipt, "vault: over the limit")
    assert uploaded_code_key(VAULT_ID) not in chain.state
    reverted(send(chain, ALICE, Call(DEPLOYER, "deploy", (VAULT_ID, (b"", 0))))[0], f"unknown code id {VAULT_ID!r}")


class _RogueEngine(TableEngine):
    """Names code with a fixed code id, right or wrong."""

    def __init__(self, kind: str, code_id: str) -> None:
        self.kind, self.code_id = kind, code_id

    def store_code(self, kind: str, code: bytes, state: StateView) -> str | None:
        return self.code_id if kind == self.kind else None


@pytest.mark.parametrize(
    ("engine", "kind", "code", "reason"),
    [
        (TableEngine(), "wasm", VAULT, "no engine takes code of kind 'wasm'"),
        (TableEngine(), "table", b"\xc1", "table: invalid program"),
        (TableEngine(), "table", encode((("m", False, 0, (("jump", 3),)),)), "table: invalid method"),
        (TableEngine(), "table", b"", f"code must be 1..{MAX_CODE_SIZE} bytes, got 0"),
        (TableEngine(), "table", b"\x00" * (MAX_CODE_SIZE + 1),
         f"code must be 1..{MAX_CODE_SIZE} bytes, got {MAX_CODE_SIZE + 1}"),
        (_RogueEngine("token", "token/v1"), "token", b"x", "code id 'token/v1' is taken"),
        (_RogueEngine("table", "other/x"), "table", b"x", "code id 'other/x' is outside 'table'/"),
    ],
)
def test_upload_refusals_write_nothing(engine: TableEngine, kind: str, code: bytes, reason: str) -> None:
    chain = LocalChain(vm=VM([BuiltinEngine(list(BUILTIN_CONTRACTS)), engine]))
    reverted(send(chain, ALICE, Call(DEPLOYER, "upload", (kind, code)), gas_limit=20_000_000)[0], reason)
    assert set(chain.state) == {b"\x01" + A}


def test_upload_gas_follows_the_table() -> None:
    chain = two_engine_chain()
    receipt, intrinsic = send(chain, ALICE, Call(DEPLOYER, "upload", ("table", VAULT)))
    words = (len(VAULT) + 31) // 32
    assert ok(receipt).gas_used == intrinsic + G.CALL + G.SLOAD + G.SSTORE * words
