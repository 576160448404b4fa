"""The contract VM (``contracts.vm``) and the token (``contracts.token``): semantics, gas, reverts, determinism."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import gas as G
from contracts.builtin import UINT256_MAX, BuiltinContract, BuiltinEngine, method
from contracts.exceptions import OutOfGas, Revert, TxRejected
from contracts.registry import default_vm
from contracts.testing import (
    LocalChain,
    TokenOp,
    outputs_under_hash_seeds,
    random_workload,
    sign,
    token_call,
    token_ops,
)
from contracts.token import Token
from contracts.vm import DEPLOYER, VM, CallContext, Overlay, code_key, contract_address, nonce_key, storage_key
from crypto.hashing import Hash32
from crypto.keys import ZERO_ADDRESS, Address, KeyPair
from crypto.signatures import ED25519
from node.rpc.client import deploy_token_call, sign_transaction, transfer_call
from state.codec import Value, encode
from state.types import STATUS_REVERTED, STATUS_SUCCESS, Call, Event, Receipt, Transaction

CHAIN_ID = "qenex-test"
GAS = 200_000
ALICE, BOB, CAROL = (KeyPair.generate(ED25519) for _ in range(3))
A, B, C = ALICE.address, BOB.address, CAROL.address
NOBODY = Address(b"\x42" * 20)


def tx_for(chain: LocalChain, key: KeyPair, *calls: Call, gas_limit: int = GAS) -> Transaction:
    """A transaction of ``calls`` by ``key`` with its next nonce."""
    return sign_transaction(key, chain.chain_id, chain.nonce(key.address), list(calls), gas_limit)


def send(chain: LocalChain, key: KeyPair, *calls: Call, gas_limit: int = GAS) -> Receipt:
    """Execute one transaction of ``calls`` by ``key`` as a block; its receipt."""
    (receipt,) = chain.execute([tx_for(chain, key, *calls, gas_limit=gas_limit)])
    return receipt


def ok(receipt: Receipt) -> Receipt:
    assert receipt.status == STATUS_SUCCESS, receipt.revert_reason
    assert receipt.revert_reason == ""
    return receipt


def reverted(receipt: Receipt, reason: str) -> Receipt:
    assert (receipt.status, receipt.revert_reason) == (STATUS_REVERTED, reason)
    assert receipt.events == () and receipt.output == ()
    return receipt


def intrinsic(tx: Transaction) -> int:
    return G.intrinsic_gas(len(tx.signing_bytes))


def changed_keys(before: dict[bytes, bytes], after: dict[bytes, bytes]) -> set[bytes]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain(CHAIN_ID)


@pytest.fixture
def token(chain: LocalChain) -> Address:
    """A token/v1 deployed by Alice, who is its minter."""
    receipt = ok(send(chain, ALICE, deploy_token_call("Test Token", "TST", 18, A)))
    return Address(receipt.output[0])


def T(token: bytes, method_name: str, *args: Value) -> Call:
    return Call(Address(token), method_name, args)


def transfer_event(token: bytes, frm: bytes, to: bytes, amount: int) -> Event:
    return Event(Address(token), "Transfer", (frm, to), (amount,))


# --- deploy and metadata --------------------------------------------------------------------------


def test_client_and_harness_sign_the_same_transaction() -> None:
    calls = [transfer_call(NOBODY, B, 5)]
    assert sign(ALICE, CHAIN_ID, 3, calls, GAS) == sign_transaction(ALICE, CHAIN_ID, 3, calls, GAS)


def test_deploy_address_code_and_metadata(chain: LocalChain) -> None:
    reverted(send(chain, ALICE, T(NOBODY, "x")), f"no contract at 0x{NOBODY.hex()}")  # uses nonce 0
    receipt = ok(send(chain, ALICE, deploy_token_call("Test Token", "TST", 18, B)))
    token = contract_address(A, 1, 0)
    assert receipt.output == (token,)
    assert token != contract_address(A, 0, 0) and token != contract_address(B, 1, 0)
    assert receipt.events == ()
    assert chain.get(code_key(token)) == encode("token/v1")
    assert chain.read(token, "name") == "Test Token"
    assert chain.read(token, "symbol") == "TST"
    assert chain.read(token, "decimals") == 18
    assert chain.read(token, "totalSupply") == 0
    assert chain.read(token, "minter") == B
    assert chain.read(token, "info") == ("Test Token", "TST", 18, 0, B)
    assert chain.read(token, "balanceOf", A) == 0
    assert chain.read(token, "allowance", A, B) == 0


def test_two_deploys_in_one_transaction(chain: LocalChain) -> None:
    receipt = ok(send(chain, ALICE, deploy_token_call("One", "ONE", 0, A), deploy_token_call("Two", "TWO", 36, B)))
    assert receipt.output == (contract_address(A, 0, 0), contract_address(A, 0, 1))
    assert chain.read(receipt.output[0], "info") == ("One", "ONE", 0, 0, A)
    assert chain.read(receipt.output[1], "info") == ("Two", "TWO", 36, 0, B)


@pytest.mark.parametrize(
    ("init_args", "reason"),
    [
        (("", "T", 18, A), "name 1..64 and symbol 1..16 characters"),
        (("N" * 65, "T", 18, A), "name 1..64 and symbol 1..16 characters"),
        (("N", "", 18, A), "name 1..64 and symbol 1..16 characters"),
        (("N", "S" * 17, 18, A), "name 1..64 and symbol 1..16 characters"),
        (("N", "S", 37, A), "decimals must be in 0..36"),
        (("N", "S", -1, A), "decimals must be in 0..36"),
        (("N", "S", "18", A), "init takes (str, str, int, Addr)"),
        (("N", "S", True, A), "init takes (str, str, int, Addr)"),
        ((b"N", "S", 18, A), "init takes (str, str, int, Addr)"),
        (("N", "S", 18, A[:19]), "init takes (str, str, int, Addr)"),
        (("N", "S", 18), "init takes (str, str, int, Addr)"),
        (("N", "S", 18, A, 1), "init takes (str, str, int, Addr)"),
    ],
)
def test_deploy_checks_init_args(chain: LocalChain, init_args: tuple[Value, ...], reason: str) -> None:
    before = dict(chain.state)
    reverted(send(chain, ALICE, Call(DEPLOYER, "deploy", ("token/v1", init_args))), reason)
    assert changed_keys(before, chain.state) == {nonce_key(A)}
    assert chain.get(code_key(contract_address(A, 0, 0))) is None


def test_deploy_accepts_the_bounds(chain: LocalChain) -> None:
    receipt = ok(send(chain, ALICE, deploy_token_call("N" * 64, "S" * 16, 36, ZERO_ADDRESS)))
    assert chain.read(receipt.output[0], "info") == ("N" * 64, "S" * 16, 36, 0, ZERO_ADDRESS)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (Call(DEPLOYER, "deploy", ("token/v1",)), "the deployer takes deploy(code_id: str, init_args: array)"),
        (Call(DEPLOYER, "create", ("token/v1", ("N", "S", 1, A))), "the deployer takes deploy"),
        (Call(DEPLOYER, "deploy", (b"token/v1", ("N", "S", 1, A))), "the deployer takes deploy"),
        (Call(DEPLOYER, "deploy", ("token/v1", b"")), "the deployer takes deploy"),
        (Call(DEPLOYER, "deploy", ("nope/v1", ())), "unknown code id 'nope/v1'"),
    ],
)
def test_deployer_misuse_reverts(chain: LocalChain, call: Call, reason: str) -> None:
    receipt = send(chain, ALICE, call)
    assert receipt.status == STATUS_REVERTED and receipt.revert_reason.startswith(reason)
    assert chain.state.keys() == {nonce_key(A)}


INIT_ONCE = "init runs only when the contract is deployed"


def test_init_cannot_be_called_again(chain: LocalChain, token: Address) -> None:
    # Regression: init was an ordinary method, so anyone could take over a live token's minter role.
    before = dict(chain.state)
    receipt = send(chain, BOB, T(token, "init", "Evil", "EVIL", 0, B), T(token, "mint", B, 10**30))
    reverted(receipt, INIT_ONCE)
    assert changed_keys(before, chain.state) == {nonce_key(B)}
    reverted(send(chain, ALICE, T(token, "init", "Test Token", "TST", 18, A)), INIT_ONCE)  # not even the deployer
    assert chain.read(token, "info") == ("Test Token", "TST", 18, 0, A)


# --- token semantics ----------------------------------------------------------------------------


def test_mint_only_by_the_minter(chain: LocalChain, token: Address) -> None:
    reverted(send(chain, BOB, T(token, "mint", B, 1)), "caller is not the minter")
    reverted(send(chain, ALICE, T(token, "mint", ZERO_ADDRESS, 1)), "mint to the zero address")
    receipt = ok(send(chain, ALICE, T(token, "mint", B, 1_000)))
    assert receipt.output == (True,)
    assert receipt.events == (transfer_event(token, ZERO_ADDRESS, B, 1_000),)
    assert chain.read(token, "totalSupply") == 1_000
    assert chain.read(token, "balanceOf", B) == 1_000
    assert chain.read(token, "balanceOf", A) == 0


def test_transfer(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 1_000)))
    receipt = ok(send(chain, ALICE, transfer_call(token, B, 400)))
    assert receipt.output == (True,)
    assert receipt.events == (transfer_event(token, A, B, 400),)
    assert (chain.read(token, "balanceOf", A), chain.read(token, "balanceOf", B)) == (600, 400)
    reverted(send(chain, ALICE, transfer_call(token, B, 601)), "insufficient balance: 600 < 601")
    reverted(send(chain, ALICE, transfer_call(token, ZERO_ADDRESS, 1)), "transfer to the zero address")
    reverted(send(chain, CAROL, transfer_call(token, A, 1)), "insufficient balance: 0 < 1")
    ok(send(chain, ALICE, transfer_call(token, A, 600)))  # to oneself: unchanged
    assert chain.read(token, "balanceOf", A) == 600
    ok(send(chain, BOB, transfer_call(token, A, 400)))  # whole balance: the slot is deleted
    assert chain.get(storage_key(token, b"b" + B)) is None
    assert (chain.read(token, "balanceOf", A), chain.read(token, "totalSupply")) == (1_000, 1_000)


def test_approve_allowance_transfer_from(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 1_000)))
    receipt = ok(send(chain, ALICE, T(token, "approve", B, 300)))
    assert receipt.events == (Event(token, "Approval", (A, B), (300,)),)
    assert chain.read(token, "allowance", A, B) == 300
    assert chain.read(token, "allowance", B, A) == 0
    reverted(send(chain, ALICE, T(token, "approve", ZERO_ADDRESS, 1)), "approve to the zero address")

    receipt = ok(send(chain, BOB, T(token, "transferFrom", A, C, 200)))
    assert receipt.events == (transfer_event(token, A, C, 200),)  # no Approval event (OpenZeppelin 5)
    assert chain.read(token, "allowance", A, B) == 100
    assert [chain.read(token, "balanceOf", x) for x in (A, B, C)] == [800, 0, 200]
    reverted(send(chain, BOB, T(token, "transferFrom", A, C, 101)), "insufficient allowance: 100 < 101")
    reverted(send(chain, CAROL, T(token, "transferFrom", A, C, 1)), "insufficient allowance: 0 < 1")
    reverted(send(chain, BOB, T(token, "transferFrom", A, ZERO_ADDRESS, 1)), "transfer to the zero address")
    assert chain.read(token, "allowance", A, B) == 100  # the reverted spends left it alone

    ok(send(chain, ALICE, T(token, "approve", B, 5_000)))  # approve overwrites
    reverted(send(chain, BOB, T(token, "transferFrom", A, B, 801)), "insufficient balance: 800 < 801")
    assert chain.read(token, "allowance", A, B) == 5_000
    ok(send(chain, ALICE, T(token, "approve", B, 0)))
    assert chain.read(token, "allowance", A, B) == 0
    assert chain.get(storage_key(token, b"a" + A + B)) is None


def test_infinite_allowance_is_not_decremented(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 1_000)))
    ok(send(chain, ALICE, T(token, "approve", B, UINT256_MAX)))
    ok(send(chain, BOB, T(token, "transferFrom", A, B, 600), T(token, "transferFrom", A, C, 400)))
    assert chain.read(token, "allowance", A, B) == UINT256_MAX
    assert [chain.read(token, "balanceOf", x) for x in (A, B, C)] == [0, 600, 400]
    reverted(send(chain, BOB, T(token, "transferFrom", A, B, 1)), "insufficient balance: 0 < 1")
    ok(send(chain, ALICE, T(token, "approve", B, UINT256_MAX - 1)))  # one below: an ordinary allowance
    ok(send(chain, BOB, T(token, "transferFrom", B, B, 0)))  # B's own zero allowance covers 0
    ok(send(chain, BOB, transfer_call(token, A, 10)))
    ok(send(chain, BOB, T(token, "transferFrom", A, B, 10)))
    assert chain.read(token, "allowance", A, B) == UINT256_MAX - 11


def test_burn_only_by_the_minter(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 500)))
    ok(send(chain, ALICE, T(token, "mint", B, 100)))
    reverted(send(chain, BOB, T(token, "burn", 1)), "caller is not the minter")  # a holder can not burn
    receipt = ok(send(chain, ALICE, T(token, "burn", 200)))  # the minter burns its own balance
    assert receipt.events == (transfer_event(token, A, ZERO_ADDRESS, 200),)
    assert (chain.read(token, "balanceOf", A), chain.read(token, "totalSupply")) == (300, 400)
    reverted(send(chain, ALICE, T(token, "burn", 301)), "insufficient balance: 300 < 301")
    ok(send(chain, ALICE, T(token, "burn", 300)))
    assert (chain.read(token, "balanceOf", A), chain.read(token, "totalSupply")) == (0, 100)


def test_burn_from_spends_the_minters_allowance(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", B, 100)))
    reverted(send(chain, ALICE, T(token, "burnFrom", B, 1)), "insufficient allowance: 0 < 1")
    ok(send(chain, BOB, T(token, "approve", A, 60)))
    reverted(send(chain, CAROL, T(token, "burnFrom", B, 1)), "caller is not the minter")
    reverted(send(chain, ALICE, T(token, "burnFrom", B, 61)), "insufficient allowance: 60 < 61")
    receipt = ok(send(chain, ALICE, T(token, "burnFrom", B, 40)))
    assert receipt.events == (transfer_event(token, B, ZERO_ADDRESS, 40),)
    assert chain.read(token, "allowance", B, A) == 20
    assert (chain.read(token, "balanceOf", B), chain.read(token, "totalSupply")) == (60, 60)


def test_burn_from_the_zero_address_reverts(chain: LocalChain, token: Address) -> None:
    # OpenZeppelin 5 _burn reverts with ERC20InvalidSender(address(0)), even for a zero amount;
    # this used to succeed and emit Transfer(0, 0, 0).
    before = dict(chain.state)
    reverted(send(chain, ALICE, T(token, "burnFrom", ZERO_ADDRESS, 0)), "burn from the zero address")
    assert changed_keys(before, chain.state) == {nonce_key(A)}
    reverted(send(chain, ALICE, T(token, "burnFrom", ZERO_ADDRESS, 1)), "insufficient allowance: 0 < 1")
    ok(send(chain, ALICE, T(token, "burnFrom", B, 0)))  # a zero burn from a real holder is fine (OZ5)


def test_set_minter(chain: LocalChain, token: Address) -> None:
    reverted(send(chain, BOB, T(token, "setMinter", B)), "caller is not the minter")
    receipt = ok(send(chain, ALICE, T(token, "setMinter", B)))
    assert receipt.events == (Event(token, "MinterChanged", (A, B), ()),)
    assert chain.read(token, "minter") == B
    reverted(send(chain, ALICE, T(token, "mint", A, 1)), "caller is not the minter")
    ok(send(chain, BOB, T(token, "mint", A, 1)))
    ok(send(chain, BOB, T(token, "setMinter", ZERO_ADDRESS)))  # renounce: nobody mints any more
    reverted(send(chain, BOB, T(token, "mint", A, 1)), "caller is not the minter")
    reverted(send(chain, BOB, T(token, "setMinter", B)), "caller is not the minter")
    assert chain.read(token, "totalSupply") == 1


def test_amounts_up_to_uint256_max(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", B, UINT256_MAX)))
    assert chain.read(token, "totalSupply") == UINT256_MAX
    reverted(send(chain, ALICE, T(token, "mint", C, 1)), "total supply would exceed 2**256 - 1")
    receipt = ok(send(chain, BOB, transfer_call(token, C, UINT256_MAX)))
    assert receipt.events == (transfer_event(token, B, C, UINT256_MAX),)
    assert chain.read(token, "balanceOf", C) == UINT256_MAX
    reverted(send(chain, CAROL, transfer_call(token, B, UINT256_MAX + 1)), "transfer takes (Addr, Uint)")
    ok(send(chain, CAROL, transfer_call(token, A, UINT256_MAX)))  # back to the minter, who burns it
    ok(send(chain, ALICE, T(token, "burn", UINT256_MAX)))
    assert chain.read(token, "totalSupply") == 0
    ok(send(chain, ALICE, T(token, "mint", C, UINT256_MAX)))  # room again after the burn


@pytest.mark.parametrize(
    ("method_name", "args", "reason"),
    [
        ("transfer", (B[:19], 1), "transfer takes (Addr, Uint)"),
        ("transfer", (B + b"\x00", 1), "transfer takes (Addr, Uint)"),
        ("transfer", (B, -1), "transfer takes (Addr, Uint)"),
        ("transfer", (B, True), "transfer takes (Addr, Uint)"),
        ("transfer", (B, "5"), "transfer takes (Addr, Uint)"),
        ("transfer", (B, None), "transfer takes (Addr, Uint)"),
        ("transfer", ("0x" + B.hex(), 5), "transfer takes (Addr, Uint)"),
        ("transfer", (B,), "transfer takes (Addr, Uint)"),
        ("transfer", (B, 1, 2), "transfer takes (Addr, Uint)"),
        ("transferFrom", (A, B), "transferFrom takes (Addr, Addr, Uint)"),
        ("mint", ((B,), 1), "mint takes (Addr, Uint)"),
        ("burn", (), "burn takes (Uint)"),
        ("setMinter", (None,), "setMinter takes (Addr)"),
        ("name", (1,), "name takes ()"),
    ],
)
def test_wrong_argument_types_revert(
    chain: LocalChain, token: Address, method_name: str, args: tuple[Value, ...], reason: str
) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 10)))
    before = dict(chain.state)
    reverted(send(chain, ALICE, T(token, method_name, *args)), reason)
    assert changed_keys(before, chain.state) == {nonce_key(A)}


def test_unknown_method_and_contract_revert(chain: LocalChain, token: Address) -> None:
    reverted(send(chain, ALICE, T(token, "steal", B)), "token/v1 has no method 'steal'")
    reverted(send(chain, ALICE, T(token, "_move", A, B, 1)), "token/v1 has no method '_move'")
    reverted(send(chain, ALICE, transfer_call(NOBODY, B, 1)), f"no contract at 0x{NOBODY.hex()}")
    reverted(send(chain, ALICE, transfer_call(A, B, 1)), f"no contract at 0x{A.hex()}")  # an account
    with pytest.raises(Revert, match="has no method 'steal'"):
        chain.read(token, "steal")
    with pytest.raises(Revert, match=f"no contract at 0x{NOBODY.hex()}"):
        chain.read(NOBODY, "name")


def test_read_with_wrong_arguments_reverts(chain: LocalChain, token: Address) -> None:
    with pytest.raises(Revert, match=r"balanceOf takes \(Addr\)") as info:
        chain.read(token, "balanceOf", B[:10])
    assert info.value.reason == "balanceOf takes (Addr)"


# --- reverts, gas -------------------------------------------------------------------------------


def test_reverted_tx_changes_only_the_nonce_and_charges_gas(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 100)))
    before = dict(chain.state)
    tx = tx_for(chain, ALICE, transfer_call(token, B, 60), T(token, "approve", C, 5), transfer_call(token, C, 60))
    (receipt,) = chain.execute([tx])
    reverted(receipt, "insufficient balance: 40 < 60")  # the first two calls ran, then were undone
    assert receipt.tx_hash == tx.hash
    assert changed_keys(before, chain.state) == {nonce_key(A)}
    assert chain.nonce(A) == tx.body.nonce + 1
    first_transfer = G.CALL + 2 * G.SLOAD + 2 * G.SSTORE + G.LOG + G.LOG_BYTE * len(encode(("Transfer", (A, B), (60,))))
    assert intrinsic(tx) + first_transfer < receipt.gas_used < GAS
    assert [chain.read(token, "balanceOf", x) for x in (A, B, C)] == [100, 0, 0]


def test_gas_of_a_transfer_follows_the_table(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 100)))
    tx = tx_for(chain, ALICE, transfer_call(token, B, 60))
    (receipt,) = chain.execute([tx])
    log = G.LOG + G.LOG_BYTE * len(encode(("Transfer", (A, B), (60,))))
    assert ok(receipt).gas_used == intrinsic(tx) + G.CALL + 2 * G.SLOAD + 2 * G.SSTORE + log


def test_out_of_gas_reverts_and_charges_the_whole_limit(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 100)))
    call = transfer_call(token, B, 60)
    probe = LocalChain(CHAIN_ID)
    probe.state = dict(chain.state)
    # Gas limits below 2**16 all encode in three bytes: the same intrinsic gas for each of them.
    needed = ok(probe.execute([tx_for(chain, ALICE, call, gas_limit=60_000)])[0]).gas_used

    before = dict(chain.state)
    tight = tx_for(chain, ALICE, call, gas_limit=needed - 1)
    (receipt,) = chain.execute([tight])
    assert (receipt.status, receipt.gas_used, receipt.events) == (STATUS_REVERTED, needed - 1, ())
    assert receipt.revert_reason.startswith("out of gas: needed ")
    assert changed_keys(before, chain.state) == {nonce_key(A)}

    starved = tx_for(chain, ALICE, call, gas_limit=intrinsic(tight) + G.CALL - 1)
    receipt = reverted(chain.execute([starved])[0], f"out of gas: needed {G.CALL}, {G.CALL - 1} left")
    assert receipt.gas_used == starved.body.gas_limit

    ok(send(chain, ALICE, call, gas_limit=needed))  # exactly enough
    assert chain.read(token, "balanceOf", B) == 60


def test_read_only_calls_cannot_write(chain: LocalChain, token: Address) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 100)))
    before = dict(chain.state)
    with pytest.raises(Revert, match="transfer is not a read-only method"):
        chain.read(token, "transfer", B, 1, sender=A)
    with pytest.raises(Revert, match=INIT_ONCE):
        chain.read(token, "init", "N", "S", 1, B)
    with pytest.raises(Revert, match="deploy in a read-only call"):
        chain.read(DEPLOYER, "deploy", "token/v1", ("N", "S", 1, A))
    with pytest.raises(OutOfGas):
        chain.vm.call_readonly(chain.get, chain.env(), A, token, "info", (), gas_limit=G.CALL + G.SLOAD)
    assert chain.state == before


class _Sneaky(BuiltinContract):
    """Declares a read-only method that writes: the VM must stop it at the write."""

    CODE_ID = "test/sneaky"

    @method()
    def init(self, ctx: CallContext) -> None:
        """Nothing to set up."""

    @method(readonly=True)
    def peek(self, ctx: CallContext) -> int:
        """Claims to read, but writes."""
        ctx.store(b"x", 1)
        return 1


def test_a_write_in_a_read_only_call_reverts() -> None:
    chain = LocalChain(CHAIN_ID, VM([BuiltinEngine([Token, _Sneaky])]))
    sneaky = ok(send(chain, ALICE, Call(DEPLOYER, "deploy", ("test/sneaky", ())))).output[0]
    before = dict(chain.state)
    with pytest.raises(Revert, match="state change in a read-only call"):
        chain.read(sneaky, "peek")
    assert chain.state == before
    assert ok(send(chain, ALICE, T(sneaky, "peek"))).output == (1,)  # in a transaction it may write
    assert chain.get(storage_key(sneaky, b"x")) == encode(1)


def test_ml_dsa_sender(chain: LocalChain, token: Address) -> None:
    key = KeyPair.generate()  # ML-DSA-44: 1,312-byte public key in the signing bytes
    ok(send(chain, ALICE, T(token, "mint", key.address, 50)))
    tx = sign_transaction(key, CHAIN_ID, 0, [transfer_call(token, B, 20)])  # the client's default gas limit
    tx.verify_signature()
    assert intrinsic(tx) > G.TX_BASE + G.TX_BYTE * 1_312
    (receipt,) = chain.execute([tx])
    assert ok(receipt).gas_used < tx.body.gas_limit
    assert chain.read(token, "balanceOf", B) == 20 and chain.nonce(key.address) == 1


# --- admission ----------------------------------------------------------------------------------


def _rejected_cases(chain: LocalChain, token: Address) -> dict[str, Transaction]:
    call = transfer_call(token, B, 1)
    n = chain.nonce(A)
    probe = sign_transaction(ALICE, CHAIN_ID, n, [call], 20_000)
    return {
        "wrong chain id": sign_transaction(ALICE, "other-chain", n, [call], GAS),
        "nonce too low": sign_transaction(ALICE, CHAIN_ID, n - 1, [call], GAS),
        "nonce too high": sign_transaction(ALICE, CHAIN_ID, n + 1, [call], GAS),
        "intrinsic gas too low": sign_transaction(ALICE, CHAIN_ID, n, [call], intrinsic(probe) - 1),
        "gas limit too high": sign_transaction(ALICE, CHAIN_ID, n, [call], G.MAX_TX_GAS + 1),
        "no calls": sign_transaction(ALICE, CHAIN_ID, n, [], GAS),
    }


REJECTIONS = [
    "wrong chain id", "nonce too low", "nonce too high", "intrinsic gas too low", "gas limit too high", "no calls"
]


@pytest.mark.parametrize("reason", REJECTIONS)
def test_check_tx_rejections(chain: LocalChain, token: Address, reason: str) -> None:
    ok(send(chain, ALICE, T(token, "mint", A, 10)))  # Alice's next nonce is 2
    tx = _rejected_cases(chain, token)[reason]
    with pytest.raises(TxRejected) as info:
        chain.vm.check_tx(tx, chain.get, CHAIN_ID)
    assert info.value.reason == reason and info.value.detail
    block = Overlay(chain.get)
    with pytest.raises(TxRejected) as info:
        chain.vm.execute_tx(block, chain.env(), tx)
    assert info.value.reason == reason
    assert block.writes == {}
    before, height = dict(chain.state), chain.height
    with pytest.raises(TxRejected):  # the whole block is invalid: Bob's good transaction is not kept either
        chain.execute([tx_for(chain, BOB, transfer_call(token, A, 0)), tx])
    assert (chain.state, chain.height) == (before, height)


def test_check_tx_bounds_are_inclusive(chain: LocalChain, token: Address) -> None:
    call = transfer_call(token, B, 1)  # Alice's next nonce is 1 (she deployed the token)
    chain.vm.check_tx(sign_transaction(ALICE, CHAIN_ID, 1, [call], G.MAX_TX_GAS), chain.get, CHAIN_ID)
    probe = sign_transaction(ALICE, CHAIN_ID, 2, [call], 20_000)
    exact = sign_transaction(ALICE, CHAIN_ID, 2, [call], intrinsic(probe))
    assert intrinsic(exact) == exact.body.gas_limit
    ok(send(chain, ALICE, T(token, "mint", A, 10)))
    chain.vm.check_tx(exact, chain.get, CHAIN_ID)
    # admitted, then out of gas at the first call: the whole (intrinsic) limit is charged
    (receipt,) = chain.execute([exact])
    assert (receipt.status, receipt.gas_used) == (STATUS_REVERTED, exact.body.gas_limit)
    assert chain.nonce(A) == 3


# --- determinism --------------------------------------------------------------------------------

KEYS = [ALICE, BOB, CAROL]
ADDRESSES = [k.address for k in KEYS]


class TokenModel:
    """The token's balances, allowances and supply as plain integers (minter: account 0)."""

    def __init__(self, accounts: int) -> None:
        self.balances = [0] * accounts
        self.allowances: dict[tuple[int, int], int] = {}
        self.supply = 0

    def apply(self, op: TokenOp) -> bool:
        """Apply ``op``; whether it succeeds."""
        kind, actor, other, amount = op
        bal = self.balances
        if kind == "mint":
            if actor != 0 or self.supply + amount > UINT256_MAX:
                return False
            self.supply += amount
            bal[other] += amount
        elif kind == "approve":
            self.allowances[actor, other] = amount
        elif kind == "transfer":
            if bal[actor] < amount:
                return False
            bal[actor] -= amount
            bal[other] += amount
        elif kind == "transferFrom":
            allowed = self.allowances.get((other, actor), 0)
            if (allowed != UINT256_MAX and allowed < amount) or bal[other] < amount:
                return False
            if allowed != UINT256_MAX:
                self.allowances[other, actor] = allowed - amount
            bal[other] -= amount
            bal[actor] += amount
        else:  # burn: only the minter, of its own balance
            if actor != 0 or bal[actor] < amount:
                return False
            bal[actor] -= amount
            self.supply -= amount
        return True


def run_ops(txs: Sequence[Transaction], block_size: int) -> tuple[LocalChain, list[dict[bytes, bytes | None]]]:
    chain = LocalChain(CHAIN_ID, default_vm())
    ok(send(chain, ALICE, deploy_token_call("Model", "MDL", 2, A)))
    writes = []
    for i in range(0, len(txs), block_size):
        chain.execute(txs[i : i + block_size])
        writes.append(chain.last_writes)
    return chain, writes


@settings(max_examples=100, deadline=None)
@given(ops=token_ops(len(KEYS)), block_size=st.integers(min_value=1, max_value=5))
def test_random_token_ops_are_deterministic_and_follow_the_model(ops: list[TokenOp], block_size: int) -> None:
    token = contract_address(A, 0, 0)
    nonces = [1, 0, 0]  # Alice deploys with nonce 0
    txs = []
    for op in ops:
        actor = op[1]
        txs.append(sign_transaction(KEYS[actor], CHAIN_ID, nonces[actor], [token_call(token, op, ADDRESSES)], GAS))
        nonces[actor] += 1
    first, first_writes = run_ops(txs, block_size)
    second, second_writes = run_ops(txs, block_size)
    assert first_writes == second_writes
    assert first.receipts == second.receipts
    assert first.state == second.state

    model = TokenModel(len(KEYS))
    statuses = [model.apply(op) for op in ops]
    assert [r.status == STATUS_SUCCESS for r in first.receipts[1:]] == statuses
    assert [first.read(token, "balanceOf", a) for a in ADDRESSES] == model.balances
    assert first.read(token, "totalSupply") == model.supply == sum(model.balances)
    for (owner, spender), amount in model.allowances.items():
        assert first.read(token, "allowance", ADDRESSES[owner], ADDRESSES[spender]) == amount
    assert [first.nonce(a) for a in ADDRESSES] == nonces


WORKLOAD = (
    "from contracts.testing import random_workload\n"
    "roots = []\n"
    "chain = random_workload(20240601, roots=roots)\n"
    "print(' '.join(r.hex() for r in roots))\n"
    "print(' '.join(str(r.status) + ':' + str(r.gas_used) for r in chain.receipts))\n"
)


@pytest.mark.slow
def test_same_blocks_give_the_same_root_under_any_hash_seed() -> None:
    outputs = [out.split("\n") for out in outputs_under_hash_seeds(WORKLOAD, ("0", "3141592653"), timeout=120)]
    assert outputs[0] == outputs[1]  # every block's root, every receipt's status and gas
    here: list[Hash32] = []
    chain = random_workload(20240601, roots=here)
    roots = outputs[0][0].split()
    assert roots == [r.hex() for r in here] and len(roots) == 7  # the deploy block and 6 random blocks
    assert len(set(roots)) > 1
    statuses = [r.status for r in chain.receipts]
    assert STATUS_SUCCESS in statuses[1:] and STATUS_REVERTED in statuses  # the workload does both
