"""``qenex-wallet``: exact amount parsing and formatting; the whole command line against a live node."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from contracts import amm as A
from contracts.builtin import UINT256_MAX
from contracts.vm import contract_address
from crypto.keys import KeyPair
from node.rpc.client import DEFAULT_GAS_LIMIT, deploy_token_call, sign_transaction, transfer_call
from node.rpc.errors import RPCError
from node.wallet.amounts import format_amount, parse_amount, parse_duration, parse_slippage
from node.wallet.cli import TOKEN_GAS_LIMIT, event_filters, main, rpc_error_message
from node.wallet.exceptions import AmountError
from state.types import Call, Transaction
from tests.conftest import LiveNode, poll_until

WALLET_SCRIPT = Path(sys.executable).parent / "qenex-wallet"

# --- amounts ------------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=UINT256_MAX), st.integers(min_value=0, max_value=30))
@example(0, 0)
@example(10_500_000, 6)
@example(UINT256_MAX, 30)
@example(1, 30)
def test_parse_inverts_format(units: int, decimals: int) -> None:
    text = format_amount(units, decimals)
    assert parse_amount(text, decimals) == units
    assert text == text.strip() and not text.endswith(".") and ("." not in text or not text.endswith("0"))


@st.composite
def amount_texts(draw: st.DrawFn) -> tuple[str, int]:
    """A plain decimal amount text (leading and trailing zeros allowed) that fits ``decimals``."""
    decimals = draw(st.integers(min_value=0, max_value=30))
    whole = draw(st.from_regex(r"[0-9]{1,30}", fullmatch=True))
    frac = draw(st.from_regex(rf"[0-9]{{0,{decimals}}}", fullmatch=True))
    frac += draw(st.from_regex(r"0{0,3}", fullmatch=True))  # trailing zeros are not decimals
    return (f"{whole}.{frac}" if frac else whole), decimals


@given(amount_texts())
def test_format_of_parse_is_the_canonical_text(case: tuple[str, int]) -> None:
    text, decimals = case
    whole, _, frac = text.partition(".")
    canonical = str(int(whole)) + ("." + frac.rstrip("0") if frac.rstrip("0") else "")
    assert format_amount(parse_amount(text, decimals), decimals) == canonical


def test_amount_examples() -> None:
    assert parse_amount("10.5", 6) == 10_500_000 and format_amount(10_500_000, 6) == "10.5"
    assert parse_amount("0.000001", 6) == 1 and format_amount(1, 6) == "0.000001"
    assert parse_amount("1.50", 1) == 15  # a trailing zero is not a decimal
    assert parse_amount("7", 0) == 7 and format_amount(7, 0) == "7"
    assert parse_amount("007.0", 2) == 700
    assert format_amount(10**30, 30) == "1" and format_amount(12 * 10**17, 18) == "1.2"


@pytest.mark.parametrize(("text", "decimals", "why"), [
    ("1.1234567", 6, "more than 6 decimals"),
    ("0.5", 0, "more than 0 decimals"),
    ("0.01", 1, "more than 1 decimal "),
    ("-1", 6, "negative"),
    ("-0.5", 6, "negative"),
    ("abc", 6, "plain decimal number"),
    ("1e6", 6, "plain decimal number"),
    ("1,000", 6, "plain decimal number"),
    ("1_000", 6, "plain decimal number"),
    (" 1", 6, "plain decimal number"),
    ("1.", 6, "plain decimal number"),
    (".5", 6, "plain decimal number"),
    ("", 6, "plain decimal number"),
    ("0x10", 6, "plain decimal number"),
    ("\u0661", 0, "plain decimal number"),  # ARABIC-INDIC DIGIT ONE: int() would take it
    ("NaN", 6, "plain decimal number"),
    (str(UINT256_MAX + 1), 0, "above the largest amount"),
    ("1" * 500, 0, "longer than"),
])
def test_bad_amounts_are_rejected(text: str, decimals: int, why: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text, decimals)
    assert why in str(info.value)


@given(st.text(max_size=40), st.integers(min_value=0, max_value=30))
def test_any_text_parses_exactly_or_raises_amount_error(text: str, decimals: int) -> None:
    try:
        units = parse_amount(text, decimals)
    except AmountError:
        return
    assert 0 <= units <= UINT256_MAX and parse_amount(format_amount(units, decimals), decimals) == units


def test_format_refuses_negative_units() -> None:
    with pytest.raises(ValueError, match="never negative"):
        format_amount(-1, 6)


def test_slippage_and_deadline_parsing() -> None:
    assert parse_slippage("0.5%") == parse_slippage("0.5") == 50
    assert parse_slippage("1") == 100 and parse_slippage("0.01%") == 1 and parse_slippage("100%") == 10_000
    for bad in ("0.001", "101", "-1", "half", "5%%"):
        with pytest.raises(AmountError, match="slippage"):
            parse_slippage(bad)
    assert parse_duration("300") == parse_duration("300s") == parse_duration("5m") == 300
    assert parse_duration("2h") == 7200 and parse_duration("1d") == 86_400
    for bad in ("0", "0s", "-5", "5 m", "soon", "1.5h", ""):
        with pytest.raises(AmountError):
            parse_duration(bad)


def test_rpc_errors_become_one_line_each() -> None:
    cases = [
        (RPCError(-32000, "invalid input", "bad signature: no"), "invalid input: bad signature: no"),
        (RPCError(-32000, "invalid input", {"reason": "wrong chain id", "detail": "expected x"}),
         "invalid input: expected x (wrong chain id)"),
        (RPCError(-32001, "no token at this address", "0xab"), "not found: no token at this address (0xab)"),
        (RPCError(-32003, "transaction rejected", {"reason": "nonce too low", "detail": "next nonce is 3, got 0"}),
         "transaction rejected by the node: nonce too low (next nonce is 3, got 0)"),
        (RPCError(-32005, "rate limit exceeded", {"limit": 5, "burst": 5, "retryAfterSeconds": 0.2}),
         "limit exceeded: rate limit exceeded; retry after 0.2 s"),
        (RPCError(-32005, "timed out waiting for commit", {"txHash": "0x12", "timeoutSeconds": 1}),
         "limit exceeded: timed out waiting for commit; the transaction may still commit, see `qenex-wallet tx 0x12`"),
        (RPCError(3, "execution reverted", {"reason": "UniswapV2Router: EXPIRED"}),
         "execution reverted: UniswapV2Router: EXPIRED"),
        (RPCError(-32601, "method 'x' not found"), "the node does not implement this: method 'x' not found"),
    ]
    for err, line in cases:
        assert rpc_error_message(err) == line


def test_the_console_script_is_installed() -> None:
    done = subprocess.run([str(WALLET_SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    for command in ("new", "balance", "transfer", "approve", "token", "pool", "add-liquidity", "remove-liquidity",
                    "swap", "quote", "tx", "watch"):
        assert command in done.stdout
    done = subprocess.run([str(WALLET_SCRIPT), "transfer"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "the following arguments are required" in done.stderr


# --- end to end ---------------------------------------------------------------------------------------


class CLI:
    """Runs ``main(argv)`` in a worker thread (its HTTP client is synchronous; the node runs on this
    thread's Trio loop) and returns what it printed."""

    def __init__(self, live: LiveNode, capsys: pytest.CaptureFixture[str]) -> None:
        self.url, self.capsys = live.url, capsys

    async def run(self, *argv: str) -> tuple[int, str, str]:
        """Exit status, stdout, stderr of ``qenex-wallet --rpc URL argv``."""
        args = ["--rpc", self.url, *argv]
        code = await trio.to_thread.run_sync(main, args)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def ok(self, *argv: str) -> str:
        """stdout of a run that must succeed."""
        code, out, err = await self.run(*argv)
        assert code == 0, (argv, out, err)
        assert err == ""
        return out

    async def json(self, *argv: str) -> Any:
        """The JSON document of a run with ``--json`` that must succeed."""
        return json.loads(await self.ok(*argv, "--json"))

    async def fails(self, status: int, *argv: str) -> str:
        """stderr (one line) of a run that must fail with exit status ``status``."""
        code, out, err = await self.run(*argv)
        assert code == status, (argv, code, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qenex-wallet: error: "), err
        assert "Traceback" not in err + out
        return lines[0]


@pytest.fixture
def wallet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QENEX_RPC", "QENEX_KEYSTORE", "QENEX_PASSWORD", "QENEX_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("wallet_env")
async def test_wallet_session_end_to_end(live_node: LiveNode, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cli = CLI(live_node, capsys)
    pw_file = tmp_path / "alice.pass"
    pw_file.write_text("correct horse battery staple\n")
    alice_ks, bob_ks = tmp_path / "alice.json", tmp_path / "bob.json"
    alice = ("--keystore", str(alice_ks), "--password-file", str(pw_file))

    # keystores: alice's password from a file, bob's from the environment; never overwritten
    created = await cli.json("new", *alice)
    alice_addr = created["address"]
    assert alice_ks.exists() and created["scheme"] == "ML-DSA-44"
    assert (await cli.json("address", "--keystore", str(alice_ks)))["address"] == alice_addr
    before = alice_ks.read_bytes()
    assert "refusing to overwrite" in await cli.fails(2, "new", *alice)
    assert alice_ks.read_bytes() == before
    monkeypatch.setenv("QENEX_PASSWORD", "bob's password")
    bob_addr = (await cli.json("new", "--keystore", str(bob_ks)))["address"]
    bob = ("--keystore", str(bob_ks))
    assert bob_addr != alice_addr
    assert "wrong passphrase" in await cli.fails(
        2, "token", "create", "X", "X", "0", "--keystore", str(bob_ks), "--password-file", str(pw_file))

    # tokens: ALP (6 decimals, supply minted at creation), BET (18 decimals, minted afterwards)
    doc = await cli.json("token", "create", "Alpha", "ALP", "6", "--supply", "1000000", *alice)
    alp = doc["token"]
    assert doc["receipt"]["status"] == "success" and doc["supply"] == str(10**12)
    out = await cli.ok("token", "create", "Beta", "BET", "18", *alice)
    assert "success" in out and "token BET at 0x" in out
    bet = out.split("token BET at ")[1].split()[0]
    out = await cli.ok("token", "mint", bet, alice_addr, "500.25", *alice)
    assert f"Transfer  500.25 BET  0x{'00' * 20} -> {alice_addr}" in out
    assert await cli.ok("balance", "--token", alp, *alice) == "1000000 ALP\n"
    assert (await cli.json("nonce", alice_addr))["nonce"] == 3

    # transfer a human amount; the recipient's balance in base units and human form
    out = await cli.ok("transfer", bob_addr, "10.5", "--token", alp, *alice)
    assert f"transfer 10.5 ALP to {bob_addr}" in out and f"Transfer  10.5 ALP  {alice_addr} -> {bob_addr}" in out
    got = await cli.json("balance", bob_addr, "--token", alp)
    assert got == {"address": bob_addr, "token": alp, "symbol": "ALP", "decimals": 6, "balance": "10500000",
                   "amount": "10.5"}
    assert (await cli.json("balance", "--token", alp, *bob))["balance"] == "10500000"  # default: own address
    assert "more than 6 decimals" in await cli.fails(2, "transfer", bob_addr, "1.1234567", "--token", alp, *alice)
    assert "negative" in await cli.fails(2, "transfer", bob_addr, "-1", "--token", alp, *alice)
    assert (await cli.json("nonce", alice_addr))["nonce"] == 4  # the refused transfers sent nothing

    # approve: unlimited, shown as such; the allowance is on chain
    out = await cli.ok("approve", bob_addr, "max", "--token", alp, *alice)
    assert f"Approval  unlimited ALP  owner {alice_addr} spender {bob_addr}" in out
    allowance = (await live_node.rpc("qnx_call", {"to": alp, "method": "allowance",
                                                  "args": [alice_addr, bob_addr]})).json()["result"]
    assert allowance == str(UINT256_MAX)

    # the AMM: absent at first (a clear hint), deployed once, then pools
    assert "amm deploy" in await cli.fails(1, "quote", "1", alp, bet)
    assert (await cli.json("amm", "deploy", *bob))["deployed"] is True
    assert "already deployed" in await cli.ok("amm", "deploy", *bob)
    doc = await cli.json("pool", "create", alp, bet, *alice)
    pair = "0x" + A.pair_address(A.CANONICAL_FACTORY, bytes.fromhex(alp[2:]), bytes.fromhex(bet[2:])).hex()
    assert doc["pool"] == pair and doc["receipt"]["output"][0] == pair
    assert "PAIR_EXISTS" in await cli.fails(1, "pool", "create", bet, alp, *alice)

    doc = await cli.json("add-liquidity", alp, bet, "1000", "250", "--slippage", "1%", "--deadline", "5m", *alice)
    assert doc["amountA"] == str(1000 * 10**6) and doc["amountB"] == str(250 * 10**18)
    assert doc["amountAMin"] == str(990 * 10**6)
    lp_shares = int(doc["liquidity"])
    assert lp_shares > 0
    lp = await cli.json("balance", "--token", pair, *alice)  # LP shares: 18 decimals, through ERC-20 reads
    assert lp["balance"] == str(lp_shares) and lp["decimals"] == 18 and lp["symbol"] == A.LP_SYMBOL

    # quote, then a swap with slippage; nobody else trades, so it gets exactly the quote
    pool = (await live_node.rpc("qnx_getPool", alp, bet)).json()["result"]
    reserves = {pool["token0"]: int(pool["reserve0"]), pool["token1"]: int(pool["reserve1"])}
    quoted = await cli.json("quote", "10", alp, bet)
    expected = A.get_amount_out(10 * 10**6, reserves[alp], reserves[bet])
    assert quoted["amountIn"] == str(10**7) and quoted["amountOut"] == str(expected)
    assert f"10 ALP -> {format_amount(expected, 18)} BET" in await cli.ok("quote", "10", alp, bet)
    bet_before = int((await cli.json("balance", "--token", bet, *alice))["balance"])
    head = (await live_node.rpc("qnx_getBlockByNumber", "latest", False)).json()["result"]["header"]
    swap = await cli.json("swap", "10", alp, bet, "--slippage", "0.5", "--deadline", "300", *alice)
    assert swap["receipt"]["status"] == "success"
    assert swap["quotedOut"] == swap["amountOut"] == str(expected)
    assert swap["amountOutMin"] == str(expected * 9950 // 10_000)
    assert swap["deadline"] >= head["timestamp"] // 1000 + 300
    assert int((await cli.json("balance", "--token", bet, *alice))["balance"]) == bet_before + expected

    # the swap's transaction, looked up by hash
    out = await cli.ok("tx", swap["txHash"])
    assert "success" in out and swap["txHash"] in out and "swapExactTokensForTokens" in out
    assert (await cli.json("tx", swap["txHash"]))["status"] == "success"

    # a swap whose minimum can not be met reverts on chain: the reason, a non-zero exit
    code, out, err = await cli.run("swap", "10", alp, bet, "--min-out", "1000", *alice)
    assert code == 1 and "reverted" in out
    assert err.strip() == "qenex-wallet: error: execution reverted: UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"
    code, out, err = await cli.run("swap", "10", alp, bet, "--min-out", "1000", "--json", *alice)
    failed = json.loads(out)
    assert code == 1 and failed["receipt"]["status"] == "reverted"
    assert failed["error"] == {"message": "execution reverted: UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT", "code": 3}
    assert "INSUFFICIENT_OUTPUT_AMOUNT" in await cli.fails(1, "tx", failed["txHash"])

    # remove half the liquidity, then the rest
    half = format_amount(lp_shares // 2, 18)
    doc = await cli.json("remove-liquidity", alp, bet, half, "--slippage", "0.5%", *alice)
    assert doc["receipt"]["status"] == "success" and int(doc["amountA"]) >= int(doc["amountAMin"]) > 0
    left = int((await cli.json("balance", "--token", pair, *alice))["balance"])
    assert left == lp_shares - lp_shares // 2
    assert "holds" in await cli.fails(2, "remove-liquidity", alp, bet, "1000000", *alice)
    assert "withdrew" in await cli.ok("remove-liquidity", alp, bet, "all", *alice)
    assert (await cli.json("balance", "--token", pair, *alice))["balance"] == "0"

    # --no-wait: just the hash; the commit is seen later with `tx`
    sent = await cli.json("transfer", bob_addr, "1", "--token", alp, "--no-wait", *alice)
    assert sent["receipt"] is None and sent["txHash"].startswith("0x")

    async def committed() -> bool:
        code, out, _ = await cli.run("tx", sent["txHash"], "--json")
        return code == 0 and json.loads(out)["status"] == "success"

    await poll_until(committed, what="the --no-wait transfer is committed", timeout=30)
    assert (await cli.json("balance", bob_addr, "--token", alp))["amount"] == "11.5"


@pytest.mark.usefixtures("wallet_env")
async def test_node_errors_are_one_clear_line(live_node: LiveNode, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    cli = CLI(live_node, capsys)
    ks = ("--keystore", str(tmp_path / "k.json"), "--password-file", str(tmp_path / "pw"))
    (tmp_path / "pw").write_text("pw")
    me = (await cli.json("new", *ks))["address"]
    token = (await cli.json("token", "create", "Gamma", "GAM", "2", "--supply", "5", *ks))["token"]

    # -32003: the node refuses a transaction with a used nonce, and says why
    line = await cli.fails(1, "transfer", me, "1", "--token", token, "--nonce", "0", *ks)
    assert "transaction rejected by the node: nonce too low" in line
    # a reverted transfer: more than the balance
    assert "execution reverted: insufficient balance" in await cli.fails(1, "transfer", me, "6", "--token", token, *ks)
    # -32001 and nothing found
    assert "no token at 0x" in await cli.fails(1, "balance", me, "--token", "0x" + "11" * 20)
    assert "no transaction" in await cli.fails(1, "tx", "0x" + "00" * 32)
    # local input errors: exit status 2, and JSON on stdout with --json
    code, out, err = await cli.run("transfer", "0x1234", "1", "--token", token, "--json", *ks)
    assert code == 2 and "invalid recipient" in json.loads(out)["error"]["message"] and "invalid recipient" in err
    assert "invalid transaction hash" in await cli.fails(2, "tx", "0xzz")
    assert "no password" in await cli.fails(2, "transfer", me, "1", "--token", token, "--keystore",
                                            str(tmp_path / "k.json"))
    # an unreachable node
    url = f"http://127.0.0.1:{closed_port()}"
    code = await trio.to_thread.run_sync(main, ["--rpc", url, "nonce", me])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err == f"qenex-wallet: error: cannot reach node at {url}\n"


@pytest.mark.usefixtures("wallet_env")
async def test_console_script_against_a_live_node(live_node: LiveNode, tmp_path: Path) -> None:
    """The installed script (a separate process) reads the node; QENEX_RPC picks the endpoint."""
    address = "0x" + "ab" * 20
    done = await trio.run_process([str(WALLET_SCRIPT), "nonce", address, "--json"], capture_stdout=True,
                                  capture_stderr=True, check=False, env={"QENEX_RPC": live_node.url, "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"address": address, "nonce": 0}


# --- watch --------------------------------------------------------------------------------------------


def test_watch_address_filters_cover_every_indexed_field() -> None:
    """One pubsub filter can not say "from OR to" (its positions are ANDed): one filter per position."""
    token, me = b"\x01" * 20, b"\x02" * 20
    assert event_filters(token, "Transfer", None) == [{"contract": "0x" + "01" * 20, "name": "Transfer"}]
    assert event_filters(None, None, None) == [{}]
    assert event_filters(token, "Transfer", me) == [
        {"contract": "0x" + "01" * 20, "name": "Transfer", "indexed": ["0x" + "02" * 20]},
        {"contract": "0x" + "01" * 20, "name": "Transfer", "indexed": [None, "0x" + "02" * 20]}]
    assert len(event_filters(None, "Mint", me)) == 1  # Mint has one indexed field, sender
    assert len(event_filters(token, None, me)) == 2  # any event: the two fields built-in events have at most


class Account:
    """An ML-DSA-44 key sending straight to the node (not through the CLI: capsys collects what a
    ``watch`` running meanwhile prints)."""

    def __init__(self, live: LiveNode) -> None:
        self.live, self.key, self.nonce = live, KeyPair.generate(), 0

    @property
    def address(self) -> str:
        return "0x" + self.key.address.hex()

    def sign(self, calls: list[Call], gas_limit: int = DEFAULT_GAS_LIMIT) -> Transaction:
        tx = sign_transaction(self.key, "qenex-test", self.nonce, calls, gas_limit)
        self.nonce += 1
        return tx

    async def submit(self, tx: Transaction) -> dict[str, Any]:
        """Send ``tx`` and wait for its receipt."""
        body = (await self.live.rpc("qnx_sendRawTransactionAndWait", "0x" + tx.encode().hex(), 30)).json()
        assert "result" in body, body
        return body["result"]  # type: ignore[no-any-return]

    async def send(self, calls: list[Call], gas_limit: int = DEFAULT_GAS_LIMIT) -> dict[str, Any]:
        receipt = await self.submit(self.sign(calls, gas_limit))
        assert receipt["status"] == "success", receipt
        return receipt

    async def create_token(self, symbol: str, decimals: int, supply: int) -> bytes:
        """Deploy a token/v1 and mint ``supply`` base units to this account; its address."""
        token = contract_address(self.key.address, self.nonce, 0)
        await self.send([deploy_token_call(symbol, symbol, decimals, self.key.address),
                         Call(token, "mint", (self.key.address, supply))], TOKEN_GAS_LIMIT)
        return token


@dataclass
class Watch:
    """A ``qenex-wallet watch`` running in a worker thread; ``done`` is set once it exits with ``code``."""

    code: int | None = None
    done: trio.Event = field(default_factory=trio.Event)

    async def exit_code(self) -> int | None:
        with trio.fail_after(60):
            await self.done.wait()
        return self.code


async def start_watch(nursery: trio.Nursery, live: LiveNode, *argv: str, subscriptions: int) -> Watch:
    """Run ``qenex-wallet --rpc URL watch argv`` in a worker thread; return once the node holds its
    ``subscriptions`` (what is committed from then on reaches it)."""
    hub = live.node.pubsub
    await poll_until(lambda: len(hub) == 0, what="earlier watchers are gone", timeout=30)
    watch = Watch()

    async def run() -> None:
        watch.code = await trio.to_thread.run_sync(main, ["--rpc", live.url, "watch", *argv],
                                                   abandon_on_cancel=True)
        watch.done.set()

    nursery.start_soon(run)
    await poll_until(lambda: len(hub) == subscriptions or watch.done.is_set(),
                     what=f"the watcher holds {subscriptions} subscriptions", timeout=30)
    assert not watch.done.is_set(), watch.code
    return watch


@pytest.mark.usefixtures("wallet_env")
async def test_watch_streams_a_tokens_transfers(live_node: LiveNode, nursery: trio.Nursery,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob, carol = Account(live_node), Account(live_node), Account(live_node)
    alp = "0x" + (await alice.create_token("ALP", 6, 10**12)).hex()
    token = bytes.fromhex(alp[2:])
    capsys.readouterr()
    # bob's transfers, sent to him or by him: two subscriptions (to, from) on one connection
    watch = await start_watch(nursery, live_node, "--token", alp, "--address", bob.address, "--count", "2",
                              "--json", subscriptions=2)
    await alice.send([transfer_call(token, carol.key.address, 3_000_000)])  # not bob's: not shown
    await alice.send([transfer_call(token, bob.key.address, 10_500_000)])
    await bob.send([transfer_call(token, carol.key.address, 250_000)])
    assert await watch.exit_code() == 0
    out, err = capsys.readouterr()
    assert err == ""
    seen = [json.loads(line) for line in out.splitlines()]
    assert [(e["name"], e["contract"], e["topics"], e["data"]) for e in seen] == [
        ("Transfer", alp, [alice.address, bob.address], ["10500000"]),
        ("Transfer", alp, [bob.address, carol.address], ["250000"])]
    assert [(e["amount"], e["amountFormatted"], e["symbol"], e["decimals"]) for e in seen] == [
        ("10500000", "10.5", "ALP", 6), ("250000", "0.25", "ALP", 6)]
    assert seen[0]["blockHeight"] < seen[1]["blockHeight"] and seen[0]["txHash"].startswith("0x")


@pytest.mark.usefixtures("wallet_env")
async def test_watch_a_transaction_until_committed(live_node: LiveNode, nursery: trio.Nursery,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cli = CLI(live_node, capsys)
    alice, bob = Account(live_node), Account(live_node)
    token = await alice.create_token("ALP", 6, 10**12)
    tx = alice.sign([transfer_call(token, bob.key.address, 1_000_000)])
    tx_hash = "0x" + tx.hash.hex()
    capsys.readouterr()
    watch = await start_watch(nursery, live_node, "--tx", tx_hash, subscriptions=1)  # not sent yet
    await alice.submit(tx)
    assert await watch.exit_code() == 0
    out, err = capsys.readouterr()
    assert err == "" and f"admitted  tx {tx_hash}" in out
    assert f"success  tx {tx_hash}" in out and f"Transfer  1 ALP  {alice.address} -> {bob.address}" in out
    # a transaction already committed: its status at once; one that reverted exits 1 with the reason
    assert json.loads(await cli.ok("watch", "--tx", tx_hash, "--json"))["status"] == "committed"
    reverted = await alice.submit(alice.sign([transfer_call(token, bob.key.address, 10**13)]))
    assert reverted["status"] == "reverted"
    line = await cli.fails(1, "watch", "--tx", reverted["txHash"])
    assert "execution reverted: insufficient balance" in line


@pytest.mark.usefixtures("wallet_env")
async def test_watch_errors_are_one_clear_line(live_node: LiveNode, nursery: trio.Nursery,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cli = CLI(live_node, capsys)
    # the node cuts the subscription off (what it does to a client that reads too slowly)
    watch = await start_watch(nursery, live_node, "--heads", subscriptions=1)
    (sub,) = live_node.node.pubsub._heads.values()
    sub.owner.cut_off("testing")
    assert await watch.exit_code() == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"qenex-wallet: error: the node at {live_node.url} cut this subscription off: testing\n"
    # bad input: exit status 2
    assert "not with --heads" in await cli.fails(2, "watch", "--heads", "--token", "0x" + "11" * 20)
    assert "--count" in await cli.fails(2, "watch", "--heads", "--count", "0")
    assert "invalid transaction hash" in await cli.fails(2, "watch", "--tx", "0x12")
    assert "no token at 0x" in await cli.fails(1, "watch", "--token", "0x" + "11" * 20)
    # an unreachable node: over WebSocket (--heads) as over HTTP (--token reads the decimals first)
    url = f"http://127.0.0.1:{closed_port()}"
    for argv in (["--heads"], ["--tx", "0x" + "00" * 32], ["--token", "0x" + "11" * 20]):
        code = await trio.to_thread.run_sync(main, ["--rpc", url, "watch", *argv])
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and err == f"qenex-wallet: error: cannot reach node at {url}\n", argv
    code = await trio.to_thread.run_sync(main, ["--rpc", url, "watch", "--heads", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out) == {"error": {"message": f"cannot reach node at {url}", "code": None}}
